//! When keys were last used: the `key_usage` table, one narrow row per key
//! that has been used, written in batches by the usage writer (`crate::usage`).

use sqlx::PgExecutor;

use super::StoreError;
use crate::token::KeyId;

/// Records `ids` as used now; returns how many rows changed. Ids of keys
/// that no longer exist are skipped. A key deleted between this statement's
/// snapshot and its insert fails the whole call on the foreign key (the
/// caller drops those marks, as it drops any it cannot write).
#[tracing::instrument(name = "keygate.store.record_key_uses", level = "debug", skip_all, fields(keys = ids.len()))]
pub async fn record_key_uses(
    executor: impl PgExecutor<'_>,
    ids: &[KeyId],
) -> Result<u64, StoreError> {
    let uuids: Vec<uuid::Uuid> = ids.iter().map(KeyId::as_uuid).collect();
    let written = sqlx::query(
        "INSERT INTO key_usage (key_id, last_used_at) \
         SELECT id, now() FROM api_keys WHERE id = ANY($1) \
         ON CONFLICT (key_id) DO UPDATE SET last_used_at = excluded.last_used_at \
         WHERE key_usage.last_used_at < excluded.last_used_at",
    )
    .bind(&uuids)
    .execute(executor)
    .await?;
    Ok(written.rows_affected())
}

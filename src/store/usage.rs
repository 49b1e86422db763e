//! When keys were last used: the `key_usage` table, one narrow row per key
//! that has been used, written in batches by the usage writer (`crate::authorizer::usage`).

use sqlx::PgExecutor;

use super::StoreError;
use crate::domain::token::KeyId;

/// Records `ids` as used now; returns how many rows changed. Ids of keys
/// that no longer exist are skipped, also one deleted while this runs (the
/// key's row is share-locked before its usage row is inserted).
///
/// Keys in use already have a row, which the update moves on in place; only
/// the rest are looked up among the keys and inserted, in key id order, so
/// that replicas inserting the same new keys at once mostly wait for each
/// other. They can still deadlock (the update and the insert take their
/// locks in two runs), which fails the call with [`StoreError::Conflict`]
/// and writes nothing; the caller may retry. (An upsert of every key, in one
/// order, through the keys table, cost about 1.6 times as much per batch.)
#[tracing::instrument(
    name = "keygate.store.record_key_uses",
    level = "debug",
    skip_all,
    fields(db.system = "postgresql", db.operation = "UPDATE", keys = ids.len())
)]
pub async fn record_key_uses(
    executor: impl PgExecutor<'_>,
    ids: &[KeyId],
) -> Result<u64, StoreError> {
    let uuids: Vec<uuid::Uuid> = ids.iter().map(KeyId::as_uuid).collect();
    let written: i64 = sqlx::query_scalar(
        "WITH updated AS ( \
           UPDATE key_usage SET last_used_at = now() \
           WHERE key_id = ANY($1) AND last_used_at < now() RETURNING key_id), \
         inserted AS ( \
           INSERT INTO key_usage (key_id, last_used_at) \
           SELECT api_keys.id, now() \
           FROM unnest($1::uuid[]) AS marked (id) JOIN api_keys ON api_keys.id = marked.id \
           WHERE marked.id NOT IN (SELECT key_id FROM updated) \
           ORDER BY marked.id FOR KEY SHARE OF api_keys \
           ON CONFLICT (key_id) DO NOTHING RETURNING key_id) \
         SELECT (SELECT count(*) FROM updated) + (SELECT count(*) FROM inserted)",
    )
    .bind(&uuids)
    .fetch_one(executor)
    .await?;
    Ok(u64::try_from(written).unwrap_or_default())
}

//! The `api_keys` table.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use ipnet::IpNet;
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::query::Query;
use sqlx::types::Json;
use sqlx::{PgExecutor, Postgres, Row};
use uuid::Uuid;

use super::StoreError;
use crate::domain::hashing::SecretHash;
use crate::domain::key::{Key, KeyKind};
use crate::domain::permission::Scope;
use crate::domain::token::{Environment, KeyId};

/// A key with its secret hashes, as loaded for verification or mutation.
pub struct StoredKey {
    pub key: Key,
    pub secret_hash: SecretHash,
    pub previous_secret_hash: Option<SecretHash>,
}

/// The editable fields of a key: as created, or as they should be after an
/// update.
pub struct KeyFields<'a> {
    pub name: &'a str,
    pub description: &'a str,
    pub scopes: &'a [Scope],
    pub allowed_cidrs: &'a [IpNet],
    pub expires_at: Option<DateTime<Utc>>,
    pub metadata: &'a BTreeMap<String, String>,
}

/// Binds `fields` as the next six parameters, in the order of the struct.
pub(super) fn bind_fields<'q>(
    query: Query<'q, Postgres, PgArguments>,
    fields: &KeyFields<'q>,
) -> Query<'q, Postgres, PgArguments> {
    query
        .bind(fields.name)
        .bind(fields.description)
        .bind(scope_texts(fields.scopes))
        .bind(cidr_texts(fields.allowed_cidrs))
        .bind(fields.expires_at)
        .bind(Json(fields.metadata))
}

/// What CreateKey writes.
pub struct NewKey<'a> {
    pub id: KeyId,
    pub organization_id: Option<Uuid>,
    pub kind: KeyKind,
    pub environment: Environment,
    pub fields: KeyFields<'a>,
    pub lock_scopes: bool,
    pub secret_hash: &'a SecretHash,
    pub created_by: Option<KeyId>,
}

/// Which keys a listing may return.
pub struct KeyFilter {
    pub organization_id: Option<Uuid>,
    pub organization_keys_only: bool,
    pub environment: Option<Environment>,
}

/// A key's columns, for a statement that reads or returns `api_keys` rows
/// under that name (its last use comes from `key_usage`, see `usage`). The
/// changes in `changes` spell them out in their own statements.
pub(super) const KEY_COLUMNS: &str =
    "id, seq, organization_id, kind, environment, name, description, scopes, \
    allowed_cidrs, expires_at, metadata, lock_scopes, secret_hash, previous_secret_hash, \
    previous_secret_expires_at, disabled_at, revoked_at, version, created_by, created_at, \
    updated_at, (SELECT key_usage.last_used_at FROM key_usage \
    WHERE key_usage.key_id = api_keys.id) AS last_used_at";

fn scope_texts(scopes: &[Scope]) -> Vec<String> {
    scopes.iter().map(Scope::to_string).collect()
}

fn cidr_texts(cidrs: &[IpNet]) -> Vec<String> {
    cidrs.iter().map(IpNet::to_string).collect()
}

fn corrupt(what: &str, id: Uuid) -> StoreError {
    StoreError::Corrupt(format!("api_keys row {id}: invalid {what}"))
}

pub(super) fn stored_key_from_row(row: &PgRow) -> Result<StoredKey, StoreError> {
    let id: Uuid = row.try_get("id")?;
    let kind_text: String = row.try_get("kind")?;
    let environment_text: String = row.try_get("environment")?;
    let scope_texts: Vec<String> = row.try_get("scopes")?;
    let cidr_texts: Vec<String> = row.try_get("allowed_cidrs")?;
    let Json(metadata): Json<BTreeMap<String, String>> = row.try_get("metadata")?;
    let scopes = scope_texts
        .iter()
        .map(|text| Scope::parse(text))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| corrupt("scopes", id))?;
    let allowed_cidrs = cidr_texts
        .iter()
        .map(|text| text.parse::<IpNet>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| corrupt("allowed_cidrs", id))?;
    let key = Key {
        id: KeyId::from_uuid(id),
        organization_id: row.try_get("organization_id")?,
        kind: KeyKind::parse(&kind_text).ok_or_else(|| corrupt("kind", id))?,
        environment: Environment::parse(&environment_text)
            .ok_or_else(|| corrupt("environment", id))?,
        name: row.try_get("name")?,
        description: row.try_get("description")?,
        scopes,
        allowed_cidrs,
        expires_at: row.try_get("expires_at")?,
        metadata,
        lock_scopes: row.try_get("lock_scopes")?,
        version: row.try_get("version")?,
        created_by: row
            .try_get::<Option<Uuid>, _>("created_by")?
            .map(KeyId::from_uuid),
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        disabled_at: row.try_get("disabled_at")?,
        revoked_at: row.try_get("revoked_at")?,
        previous_secret_expires_at: row.try_get("previous_secret_expires_at")?,
        last_used_at: row.try_get("last_used_at")?,
    };
    Ok(StoredKey {
        key,
        secret_hash: SecretHash::from_stored(row.try_get("secret_hash")?),
        previous_secret_hash: row
            .try_get::<Option<String>, _>("previous_secret_hash")?
            .map(SecretHash::from_stored),
    })
}

#[tracing::instrument(
    name = "keygate.store.insert_key",
    level = "debug",
    skip_all,
    fields(db.system = "postgresql", db.operation = "INSERT")
)]
pub async fn insert_key(
    executor: impl PgExecutor<'_>,
    new_key: &NewKey<'_>,
) -> Result<Key, StoreError> {
    let sql = format!(
        "INSERT INTO api_keys (id, organization_id, kind, environment, name, description, scopes, \
         allowed_cidrs, expires_at, metadata, lock_scopes, secret_hash, created_by) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) RETURNING {KEY_COLUMNS}"
    );
    let query = sqlx::query(&sql)
        .bind(new_key.id.as_uuid())
        .bind(new_key.organization_id)
        .bind(new_key.kind.as_str())
        .bind(new_key.environment.as_str());
    let row = bind_fields(query, &new_key.fields)
        .bind(new_key.lock_scopes)
        .bind(new_key.secret_hash.as_str())
        .bind(new_key.created_by.map(|id| id.as_uuid()))
        .fetch_one(executor)
        .await?;
    Ok(stored_key_from_row(&row)?.key)
}

/// Loads a key with its hashes; `None` when there is no such key.
#[tracing::instrument(
    name = "keygate.store.find_key_by_id",
    level = "debug",
    skip_all,
    fields(db.system = "postgresql", db.operation = "SELECT")
)]
pub async fn find_key_by_id(
    executor: impl PgExecutor<'_>,
    id: &KeyId,
) -> Result<Option<StoredKey>, StoreError> {
    let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1");
    let row = sqlx::query(&sql)
        .bind(id.as_uuid())
        .fetch_optional(executor)
        .await?;
    row.as_ref().map(stored_key_from_row).transpose()
}

/// The key's current version; `None` when the key does not exist. A cheap
/// indexed read used to confirm a cached entry without argon2.
#[tracing::instrument(
    name = "keygate.store.find_key_version",
    level = "debug",
    skip_all,
    fields(db.system = "postgresql", db.operation = "SELECT")
)]
pub async fn find_key_version(
    executor: impl PgExecutor<'_>,
    id: &KeyId,
) -> Result<Option<i64>, StoreError> {
    let version = sqlx::query_scalar("SELECT version FROM api_keys WHERE id = $1")
        .bind(id.as_uuid())
        .fetch_optional(executor)
        .await?;
    Ok(version)
}

/// What gates whether a calling key may act.
pub struct CallerState {
    pub version: i64,
    pub revoked: bool,
    pub disabled: bool,
    pub expires_at: Option<DateTime<Utc>>,
}

/// The columns of a caller's state, each named after `prefix`, as
/// [`state_from_row`] reads them.
fn state_columns(prefix: &str) -> String {
    format!(
        "version AS {prefix}version, revoked_at IS NOT NULL AS {prefix}revoked, \
         disabled_at IS NOT NULL AS {prefix}disabled, expires_at AS {prefix}expires_at"
    )
}

fn state_from_row(row: &PgRow, prefix: &str) -> Result<Option<CallerState>, StoreError> {
    let column = |name: &str| format!("{prefix}{name}");
    let Some(version) = row.try_get::<Option<i64>, _>(column("version").as_str())? else {
        return Ok(None);
    };
    Ok(Some(CallerState {
        version,
        revoked: row.try_get(column("revoked").as_str())?,
        disabled: row.try_get(column("disabled").as_str())?,
        expires_at: row.try_get(column("expires_at").as_str())?,
    }))
}

/// The state of a calling key, share-locked for the rest of the transaction.
#[tracing::instrument(
    name = "keygate.store.lock_caller_state",
    level = "debug",
    skip_all,
    fields(db.system = "postgresql", db.operation = "SELECT")
)]
pub async fn lock_caller_state(
    executor: impl PgExecutor<'_>,
    id: &KeyId,
) -> Result<Option<CallerState>, StoreError> {
    let sql = format!(
        "SELECT {} FROM api_keys WHERE id = $1 FOR SHARE",
        state_columns("")
    );
    let row = sqlx::query(&sql)
        .bind(id.as_uuid())
        .fetch_optional(executor)
        .await?;
    match row {
        Some(row) => state_from_row(&row, ""),
        None => Ok(None),
    }
}

/// A key locked for a change, and the state of the key changing it; `None`
/// for either that does not exist (the caller is read only beside an
/// existing key).
pub struct LockedForChange {
    pub target: Option<StoredKey>,
    pub caller: Option<CallerState>,
}

/// Loads and row-locks a key inside a transaction, so that changes to one key
/// serialize, and share-locks the calling key's row to read its state, in one
/// round trip.
#[tracing::instrument(
    name = "keygate.store.lock_key_for_change",
    level = "debug",
    skip_all,
    fields(db.system = "postgresql", db.operation = "SELECT")
)]
pub async fn lock_key_for_change(
    executor: impl PgExecutor<'_>,
    target: &KeyId,
    caller: &KeyId,
) -> Result<LockedForChange, StoreError> {
    // One row whatever exists: each side is NULL when its key is missing. The
    // caller's side names the target's, so that it is read second: the key
    // changed is always locked first, as when they are one key.
    let sql = format!(
        "SELECT target.*, caller.* \
         FROM (SELECT) AS one \
         LEFT JOIN LATERAL (SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1 FOR UPDATE) \
         AS target ON true \
         LEFT JOIN LATERAL (SELECT {} FROM api_keys \
         WHERE id = $2 AND target.id IS NOT NULL FOR SHARE) AS caller ON true",
        state_columns("caller_")
    );
    let row = sqlx::query(&sql)
        .bind(target.as_uuid())
        .bind(caller.as_uuid())
        .fetch_one(executor)
        .await?;
    let target_exists = row.try_get::<Option<Uuid>, _>("id")?.is_some();
    Ok(LockedForChange {
        target: target_exists
            .then(|| stored_key_from_row(&row))
            .transpose()?,
        caller: state_from_row(&row, "caller_")?,
    })
}

/// One page of keys, newest first, strictly older than `before_seq`; also returns
/// each key's sequence number for the page token.
#[tracing::instrument(
    name = "keygate.store.list_keys",
    level = "debug",
    skip_all,
    fields(db.system = "postgresql", db.operation = "SELECT")
)]
pub async fn list_keys(
    executor: impl PgExecutor<'_>,
    filter: &KeyFilter,
    before_seq: Option<i64>,
    limit: i64,
) -> Result<Vec<(i64, Key)>, StoreError> {
    let sql = format!(
        "SELECT {KEY_COLUMNS} FROM api_keys \
         WHERE ($1::uuid IS NULL OR organization_id = $1) \
           AND (NOT $2 OR kind = 'organization') \
           AND ($3::text IS NULL OR environment = $3) \
           AND ($4::bigint IS NULL OR seq < $4) \
         ORDER BY seq DESC LIMIT $5"
    );
    let rows = sqlx::query(&sql)
        .bind(filter.organization_id)
        .bind(filter.organization_keys_only)
        .bind(filter.environment.map(Environment::as_str))
        .bind(before_seq)
        .bind(limit)
        .fetch_all(executor)
        .await?;
    rows.iter()
        .map(|row| Ok((row.try_get("seq")?, stored_key_from_row(row)?.key)))
        .collect()
}

/// Whether any system key exists (bootstrap refuses then).
#[tracing::instrument(
    name = "keygate.store.system_key_exists",
    level = "debug",
    skip_all,
    fields(db.system = "postgresql", db.operation = "SELECT")
)]
pub async fn system_key_exists(executor: impl PgExecutor<'_>) -> Result<bool, StoreError> {
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM api_keys WHERE kind = 'system')")
            .fetch_one(executor)
            .await?;
    Ok(exists)
}

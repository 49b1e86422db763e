//! The `api_keys` table.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use ipnet::IpNet;
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::query::Query;
use sqlx::types::Json;
use sqlx::{PgConnection, PgExecutor, Postgres, Row};
use uuid::Uuid;

use super::events::{bind_event, event_sql, inserted_from_row, InsertedEvent, NewEvent};
use super::StoreError;
use crate::hashing::SecretHash;
use crate::key::{Key, KeyKind};
use crate::permission::Scope;
use crate::token::{Environment, KeyId};

/// A key with its secret hashes, as loaded for verification or mutation.
pub struct StoredKey {
    pub key: Key,
    pub secret_hash: SecretHash,
    pub previous_secret_hash: Option<SecretHash>,
}

/// What CreateKey writes.
pub struct NewKey<'a> {
    pub id: KeyId,
    pub organization_id: Option<Uuid>,
    pub kind: KeyKind,
    pub environment: Environment,
    pub name: &'a str,
    pub description: &'a str,
    pub scopes: &'a [Scope],
    pub allowed_cidrs: &'a [IpNet],
    pub expires_at: Option<DateTime<Utc>>,
    pub metadata: &'a BTreeMap<String, String>,
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

const KEY_COLUMNS: &str =
    "id, seq, organization_id, kind, environment, name, description, scopes, \
    allowed_cidrs, expires_at, metadata, lock_scopes, secret_hash, previous_secret_hash, \
    previous_secret_expires_at, disabled_at, revoked_at, version, created_by, created_at, \
    updated_at, last_used_at";

fn scope_texts(scopes: &[Scope]) -> Vec<String> {
    scopes.iter().map(Scope::to_string).collect()
}

fn cidr_texts(cidrs: &[IpNet]) -> Vec<String> {
    cidrs.iter().map(IpNet::to_string).collect()
}

fn corrupt(what: &str, id: Uuid) -> StoreError {
    StoreError::Corrupt(format!("api_keys row {id}: invalid {what}"))
}

fn stored_key_from_row(row: &PgRow) -> Result<StoredKey, StoreError> {
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

#[tracing::instrument(name = "keygate.store.insert_key", level = "debug", skip_all)]
pub async fn insert_key(
    executor: impl PgExecutor<'_>,
    new_key: &NewKey<'_>,
) -> Result<Key, StoreError> {
    let sql = format!(
        "INSERT INTO api_keys (id, organization_id, kind, environment, name, description, scopes, \
         allowed_cidrs, expires_at, metadata, lock_scopes, secret_hash, created_by) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) RETURNING {KEY_COLUMNS}"
    );
    let row = sqlx::query(&sql)
        .bind(new_key.id.as_uuid())
        .bind(new_key.organization_id)
        .bind(new_key.kind.as_str())
        .bind(new_key.environment.as_str())
        .bind(new_key.name)
        .bind(new_key.description)
        .bind(scope_texts(new_key.scopes))
        .bind(cidr_texts(new_key.allowed_cidrs))
        .bind(new_key.expires_at)
        .bind(Json(new_key.metadata))
        .bind(new_key.lock_scopes)
        .bind(new_key.secret_hash.as_str())
        .bind(new_key.created_by.map(|id| id.as_uuid()))
        .fetch_one(executor)
        .await?;
    Ok(stored_key_from_row(&row)?.key)
}

/// Loads a key with its hashes; `None` when there is no such key.
#[tracing::instrument(name = "keygate.store.find_key_by_id", level = "debug", skip_all)]
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
#[tracing::instrument(name = "keygate.store.find_key_version", level = "debug", skip_all)]
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

/// What gates whether a key may act.
pub struct KeyState {
    pub version: i64,
    pub revoked: bool,
    pub disabled: bool,
    pub expires_at: Option<DateTime<Utc>>,
}

/// The columns of a key's state, as `KeyState` reads them.
const STATE_COLUMNS: &str = "version, revoked_at IS NOT NULL AS revoked, \
    disabled_at IS NOT NULL AS disabled, expires_at";

fn state_from_row(row: &PgRow, prefix: &str) -> Result<Option<KeyState>, StoreError> {
    let column = |name: &str| format!("{prefix}{name}");
    let Some(version) = row.try_get::<Option<i64>, _>(column("version").as_str())? else {
        return Ok(None);
    };
    Ok(Some(KeyState {
        version,
        revoked: row.try_get(column("revoked").as_str())?,
        disabled: row.try_get(column("disabled").as_str())?,
        expires_at: row.try_get(column("expires_at").as_str())?,
    }))
}

/// The state of a key, share-locked for the rest of the transaction.
#[tracing::instrument(name = "keygate.store.lock_key_state", level = "debug", skip_all)]
pub async fn lock_key_state(
    executor: impl PgExecutor<'_>,
    id: &KeyId,
) -> Result<Option<KeyState>, StoreError> {
    let sql = format!("SELECT {STATE_COLUMNS} FROM api_keys WHERE id = $1 FOR SHARE");
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
/// for either that does not exist.
pub struct LockedForChange {
    pub target: Option<StoredKey>,
    pub actor: Option<KeyState>,
}

/// Loads and row-locks a key inside a transaction, so mutations of one key
/// serialize, and share-locks the acting key's row to read its state, in one
/// round trip. The target is locked first, then the actor.
#[tracing::instrument(name = "keygate.store.lock_key_for_change", level = "debug", skip_all)]
pub async fn lock_key_for_change(
    executor: impl PgExecutor<'_>,
    target: &KeyId,
    actor: &KeyId,
) -> Result<LockedForChange, StoreError> {
    // One row whatever exists: each side is NULL when its key is missing.
    let sql = format!(
        "SELECT target.*, actor.version AS actor_version, actor.revoked AS actor_revoked, \
         actor.disabled AS actor_disabled, actor.expires_at AS actor_expires_at \
         FROM (SELECT) AS one \
         LEFT JOIN LATERAL (SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1 FOR UPDATE) \
         AS target ON true \
         LEFT JOIN LATERAL (SELECT {STATE_COLUMNS} FROM api_keys WHERE id = $2 FOR SHARE) \
         AS actor ON true"
    );
    let row = sqlx::query(&sql)
        .bind(target.as_uuid())
        .bind(actor.as_uuid())
        .fetch_one(executor)
        .await?;
    let target_exists = row.try_get::<Option<Uuid>, _>("id")?.is_some();
    Ok(LockedForChange {
        target: target_exists
            .then(|| stored_key_from_row(&row))
            .transpose()?,
        actor: state_from_row(&row, "actor_")?,
    })
}

/// One page of keys, newest first, strictly older than `before_seq`; also returns
/// each key's sequence number for the page token.
#[tracing::instrument(name = "keygate.store.list_keys", level = "debug", skip_all)]
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

/// The editable fields of a key, as they should be after an update.
pub struct KeyFields<'a> {
    pub name: &'a str,
    pub description: &'a str,
    pub scopes: &'a [Scope],
    pub allowed_cidrs: &'a [IpNet],
    pub expires_at: Option<DateTime<Utc>>,
    pub metadata: &'a BTreeMap<String, String>,
}

type PgQuery<'q> = Query<'q, Postgres, PgArguments>;

/// A statement that makes `change` to one key (an UPDATE returning the key's
/// columns, or a DELETE returning its id; its own parameters are $1 to
/// $`parameters`) and records the change's event, in one round trip.
fn with_event(change: &str, parameters: usize) -> String {
    let (ctes, columns) = event_sql(parameters + 1);
    format!("WITH changed AS ({change}), {ctes} SELECT changed.*, {columns} FROM changed, event")
}

/// Runs an update built by [`with_event`], its own parameters bound, and
/// returns the key as changed and its event.
async fn update_recording(
    connection: &mut PgConnection,
    query: PgQuery<'_>,
    event: NewEvent<'_>,
) -> Result<(Key, InsertedEvent), StoreError> {
    let recorded_version = event.key_version;
    let row = bind_event(query, event).fetch_one(connection).await?;
    let key = stored_key_from_row(&row)?.key;
    // The row is locked by its transaction: the event was told the version
    // every update gives it, one more.
    if key.version != recorded_version {
        return Err(StoreError::Corrupt(format!(
            "api_keys row {}: version {} after a change recorded as version {recorded_version}",
            key.id.as_uuid(),
            key.version
        )));
    }
    Ok((key, inserted_from_row(&row)?))
}

/// Writes the editable fields and records `event`.
#[tracing::instrument(name = "keygate.store.update_fields", level = "debug", skip_all)]
pub async fn update_fields(
    connection: &mut PgConnection,
    id: &KeyId,
    fields: &KeyFields<'_>,
    event: NewEvent<'_>,
) -> Result<(Key, InsertedEvent), StoreError> {
    let sql = with_event(
        &format!(
            "UPDATE api_keys SET name = $2, description = $3, scopes = $4, allowed_cidrs = $5, \
             expires_at = $6, metadata = $7, version = version + 1, updated_at = now() \
             WHERE id = $1 RETURNING {KEY_COLUMNS}"
        ),
        7,
    );
    let query = sqlx::query(&sql)
        .bind(id.as_uuid())
        .bind(fields.name)
        .bind(fields.description)
        .bind(scope_texts(fields.scopes))
        .bind(cidr_texts(fields.allowed_cidrs))
        .bind(fields.expires_at)
        .bind(Json(fields.metadata));
    update_recording(connection, query, event).await
}

/// Replaces the secret, and records `event`; the old one stays valid until
/// `previous_valid_until`, or is dropped at once when that is `None`.
#[tracing::instrument(name = "keygate.store.rotate_secret", level = "debug", skip_all)]
pub async fn rotate_secret(
    connection: &mut PgConnection,
    id: &KeyId,
    new_hash: &SecretHash,
    previous_valid_until: Option<DateTime<Utc>>,
    event: NewEvent<'_>,
) -> Result<(Key, InsertedEvent), StoreError> {
    let sql = with_event(
        &format!(
            "UPDATE api_keys SET \
               previous_secret_hash = CASE WHEN $3::timestamptz IS NULL THEN NULL ELSE secret_hash END, \
               previous_secret_expires_at = $3, secret_hash = $2, \
               version = version + 1, updated_at = now() \
             WHERE id = $1 RETURNING {KEY_COLUMNS}"
        ),
        3,
    );
    let query = sqlx::query(&sql)
        .bind(id.as_uuid())
        .bind(new_hash.as_str())
        .bind(previous_valid_until);
    update_recording(connection, query, event).await
}

/// Sets or clears `disabled_at`, and records `event`.
#[tracing::instrument(name = "keygate.store.set_disabled", level = "debug", skip_all)]
pub async fn set_disabled(
    connection: &mut PgConnection,
    id: &KeyId,
    disabled: bool,
    event: NewEvent<'_>,
) -> Result<(Key, InsertedEvent), StoreError> {
    let sql = with_event(
        &format!(
            "UPDATE api_keys SET disabled_at = CASE WHEN $2 THEN now() ELSE NULL END, \
             version = version + 1, updated_at = now() WHERE id = $1 RETURNING {KEY_COLUMNS}"
        ),
        2,
    );
    let query = sqlx::query(&sql).bind(id.as_uuid()).bind(disabled);
    update_recording(connection, query, event).await
}

/// Revokes the key (dropping a rotated-out secret), and records `event`.
#[tracing::instrument(name = "keygate.store.set_revoked", level = "debug", skip_all)]
pub async fn set_revoked(
    connection: &mut PgConnection,
    id: &KeyId,
    event: NewEvent<'_>,
) -> Result<(Key, InsertedEvent), StoreError> {
    let sql = with_event(
        &format!(
            "UPDATE api_keys SET revoked_at = now(), previous_secret_hash = NULL, \
             previous_secret_expires_at = NULL, version = version + 1, updated_at = now() \
             WHERE id = $1 RETURNING {KEY_COLUMNS}"
        ),
        1,
    );
    let query = sqlx::query(&sql).bind(id.as_uuid());
    update_recording(connection, query, event).await
}

/// Deletes the key, and records `event`.
#[tracing::instrument(name = "keygate.store.delete_key", level = "debug", skip_all)]
pub async fn delete_key(
    connection: &mut PgConnection,
    id: &KeyId,
    event: NewEvent<'_>,
) -> Result<InsertedEvent, StoreError> {
    let sql = with_event("DELETE FROM api_keys WHERE id = $1 RETURNING id", 1);
    let query = sqlx::query(&sql).bind(id.as_uuid());
    let row = bind_event(query, event).fetch_one(connection).await?;
    inserted_from_row(&row)
}

/// Whether any system key exists (bootstrap refuses then).
#[tracing::instrument(name = "keygate.store.system_key_exists", level = "debug", skip_all)]
pub async fn system_key_exists(executor: impl PgExecutor<'_>) -> Result<bool, StoreError> {
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM api_keys WHERE kind = 'system')")
            .fetch_one(executor)
            .await?;
    Ok(exists)
}

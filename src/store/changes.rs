//! Changes to an existing key's row. Each runs as one statement that also
//! records the change's audit event, inside the caller's transaction, which
//! has row-locked the key (`keys::lock_key_for_change`). The statements are
//! written out in full: the change (`changed`), the events lock (`locked`, see
//! [`super::events`]) and the event (`event`), returning the key as changed
//! and the event's sequence number.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, Row};

use super::events::{bind_event, NewEvent};
use super::keys::{bind_fields, stored_key_from_row, KeyFields};
use super::StoreError;
use crate::domain::hashing::SecretHash;
use crate::domain::key::Key;
use crate::domain::token::KeyId;

const UPDATE_FIELDS: &str = "\
WITH changed AS (
    UPDATE api_keys
    SET name = $2, description = $3, scopes = $4, allowed_cidrs = $5, expires_at = $6,
        metadata = $7, version = version + 1, updated_at = now()
    WHERE id = $1
    RETURNING id, seq, organization_id, kind, environment, name, description, scopes,
        allowed_cidrs, expires_at, metadata, lock_scopes, secret_hash, previous_secret_hash,
        previous_secret_expires_at, disabled_at, revoked_at, version, created_by, created_at,
        updated_at, (SELECT key_usage.last_used_at FROM key_usage
                     WHERE key_usage.key_id = api_keys.id) AS last_used_at
),
locked AS MATERIALIZED (SELECT pg_advisory_xact_lock(hashtext('keygate.key_events'))),
event AS (
    INSERT INTO key_events (key_id, organization_id, environment, actor_key_id, action, changes)
    SELECT $8, $9, $10, $11, $12, $13 FROM locked
    RETURNING seq
)
SELECT changed.*, event.seq AS event_seq FROM changed, event";

/// Writes the editable fields, and records `event`; returns the key as
/// changed and the event's sequence number.
#[tracing::instrument(
    name = "keygate.store.update_fields",
    level = "debug",
    skip_all,
    fields(db.system = "postgresql", db.operation = "UPDATE")
)]
pub async fn update_fields(
    connection: &mut PgConnection,
    id: &KeyId,
    fields: &KeyFields<'_>,
    event: NewEvent<'_>,
) -> Result<(Key, i64), StoreError> {
    let query = bind_fields(sqlx::query(UPDATE_FIELDS).bind(id.as_uuid()), fields);
    let row = bind_event(query, event).fetch_one(connection).await?;
    Ok((stored_key_from_row(&row)?.key, row.try_get("event_seq")?))
}

const ROTATE_SECRET: &str = "\
WITH changed AS (
    UPDATE api_keys
    SET previous_secret_hash = CASE WHEN $3::timestamptz IS NULL THEN NULL ELSE secret_hash END,
        previous_secret_expires_at = $3, secret_hash = $2,
        version = version + 1, updated_at = now()
    WHERE id = $1
    RETURNING id, seq, organization_id, kind, environment, name, description, scopes,
        allowed_cidrs, expires_at, metadata, lock_scopes, secret_hash, previous_secret_hash,
        previous_secret_expires_at, disabled_at, revoked_at, version, created_by, created_at,
        updated_at, (SELECT key_usage.last_used_at FROM key_usage
                     WHERE key_usage.key_id = api_keys.id) AS last_used_at
),
locked AS MATERIALIZED (SELECT pg_advisory_xact_lock(hashtext('keygate.key_events'))),
event AS (
    INSERT INTO key_events (key_id, organization_id, environment, actor_key_id, action, changes)
    SELECT $4, $5, $6, $7, $8, $9 FROM locked
    RETURNING seq
)
SELECT changed.*, event.seq AS event_seq FROM changed, event";

/// Replaces the secret, and records `event`; the old one stays valid until
/// `previous_valid_until`, or is dropped at once when that is `None`.
#[tracing::instrument(
    name = "keygate.store.rotate_secret",
    level = "debug",
    skip_all,
    fields(db.system = "postgresql", db.operation = "UPDATE")
)]
pub async fn rotate_secret(
    connection: &mut PgConnection,
    id: &KeyId,
    new_hash: &SecretHash,
    previous_valid_until: Option<DateTime<Utc>>,
    event: NewEvent<'_>,
) -> Result<(Key, i64), StoreError> {
    let query = sqlx::query(ROTATE_SECRET)
        .bind(id.as_uuid())
        .bind(new_hash.as_str())
        .bind(previous_valid_until);
    let row = bind_event(query, event).fetch_one(connection).await?;
    Ok((stored_key_from_row(&row)?.key, row.try_get("event_seq")?))
}

const SET_DISABLED: &str = "\
WITH changed AS (
    UPDATE api_keys
    SET disabled_at = CASE WHEN $2 THEN now() ELSE NULL END,
        version = version + 1, updated_at = now()
    WHERE id = $1
    RETURNING id, seq, organization_id, kind, environment, name, description, scopes,
        allowed_cidrs, expires_at, metadata, lock_scopes, secret_hash, previous_secret_hash,
        previous_secret_expires_at, disabled_at, revoked_at, version, created_by, created_at,
        updated_at, (SELECT key_usage.last_used_at FROM key_usage
                     WHERE key_usage.key_id = api_keys.id) AS last_used_at
),
locked AS MATERIALIZED (SELECT pg_advisory_xact_lock(hashtext('keygate.key_events'))),
event AS (
    INSERT INTO key_events (key_id, organization_id, environment, actor_key_id, action, changes)
    SELECT $3, $4, $5, $6, $7, $8 FROM locked
    RETURNING seq
)
SELECT changed.*, event.seq AS event_seq FROM changed, event";

/// Sets or clears `disabled_at`, and records `event`.
#[tracing::instrument(
    name = "keygate.store.set_disabled",
    level = "debug",
    skip_all,
    fields(db.system = "postgresql", db.operation = "UPDATE")
)]
pub async fn set_disabled(
    connection: &mut PgConnection,
    id: &KeyId,
    disabled: bool,
    event: NewEvent<'_>,
) -> Result<(Key, i64), StoreError> {
    let query = sqlx::query(SET_DISABLED).bind(id.as_uuid()).bind(disabled);
    let row = bind_event(query, event).fetch_one(connection).await?;
    Ok((stored_key_from_row(&row)?.key, row.try_get("event_seq")?))
}

const SET_REVOKED: &str = "\
WITH changed AS (
    UPDATE api_keys
    SET revoked_at = now(), previous_secret_hash = NULL, previous_secret_expires_at = NULL,
        version = version + 1, updated_at = now()
    WHERE id = $1
    RETURNING id, seq, organization_id, kind, environment, name, description, scopes,
        allowed_cidrs, expires_at, metadata, lock_scopes, secret_hash, previous_secret_hash,
        previous_secret_expires_at, disabled_at, revoked_at, version, created_by, created_at,
        updated_at, (SELECT key_usage.last_used_at FROM key_usage
                     WHERE key_usage.key_id = api_keys.id) AS last_used_at
),
locked AS MATERIALIZED (SELECT pg_advisory_xact_lock(hashtext('keygate.key_events'))),
event AS (
    INSERT INTO key_events (key_id, organization_id, environment, actor_key_id, action, changes)
    SELECT $2, $3, $4, $5, $6, $7 FROM locked
    RETURNING seq
)
SELECT changed.*, event.seq AS event_seq FROM changed, event";

/// Revokes the key (dropping a rotated-out secret), and records `event`.
#[tracing::instrument(
    name = "keygate.store.set_revoked",
    level = "debug",
    skip_all,
    fields(db.system = "postgresql", db.operation = "UPDATE")
)]
pub async fn set_revoked(
    connection: &mut PgConnection,
    id: &KeyId,
    event: NewEvent<'_>,
) -> Result<(Key, i64), StoreError> {
    let query = sqlx::query(SET_REVOKED).bind(id.as_uuid());
    let row = bind_event(query, event).fetch_one(connection).await?;
    Ok((stored_key_from_row(&row)?.key, row.try_get("event_seq")?))
}

const DELETE_KEY: &str = "\
WITH changed AS (
    DELETE FROM api_keys WHERE id = $1 RETURNING id
),
locked AS MATERIALIZED (SELECT pg_advisory_xact_lock(hashtext('keygate.key_events'))),
event AS (
    INSERT INTO key_events (key_id, organization_id, environment, actor_key_id, action, changes)
    SELECT $2, $3, $4, $5, $6, $7 FROM locked
    RETURNING seq
)
SELECT event.seq AS event_seq FROM changed, event";

/// Deletes the key, and records `event`; returns its sequence number.
#[tracing::instrument(
    name = "keygate.store.delete_key",
    level = "debug",
    skip_all,
    fields(db.system = "postgresql", db.operation = "DELETE")
)]
pub async fn delete_key(
    connection: &mut PgConnection,
    id: &KeyId,
    event: NewEvent<'_>,
) -> Result<i64, StoreError> {
    let query = sqlx::query(DELETE_KEY).bind(id.as_uuid());
    let row = bind_event(query, event).fetch_one(connection).await?;
    Ok(row.try_get("event_seq")?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::events::EVENTS_LOCK;
    use crate::store::keys::KEY_COLUMNS;

    fn squeezed(sql: &str) -> String {
        sql.split_whitespace().collect::<Vec<_>>().join(" ")
    }

    const STATEMENTS: [(&str, &str, usize); 5] = [
        ("update_fields", UPDATE_FIELDS, 7),
        ("rotate_secret", ROTATE_SECRET, 3),
        ("set_disabled", SET_DISABLED, 2),
        ("set_revoked", SET_REVOKED, 1),
        ("delete_key", DELETE_KEY, 1),
    ];

    /// Every statement takes its event's sequence number under the events
    /// lock, and numbers the event's six values right after its own.
    #[test]
    fn each_change_records_its_event_under_the_events_lock() {
        let lock = format!("pg_advisory_xact_lock(hashtext('{EVENTS_LOCK}'))");
        for (name, statement, own_parameters) in STATEMENTS {
            assert!(statement.contains(&lock), "{name}: no events lock");
            let event_values: Vec<String> = (1..=6)
                .map(|offset| format!("${}", own_parameters + offset))
                .collect();
            let select = format!("SELECT {} FROM locked", event_values.join(", "));
            assert!(statement.contains(&select), "{name}: expected {select}");
            let past_the_last = format!("${}", own_parameters + 7);
            assert!(
                !statement.contains(&past_the_last),
                "{name}: {past_the_last}"
            );
        }
    }

    /// The updates return the columns every read of a key returns.
    #[test]
    fn updates_return_every_key_column() {
        let returning = format!("RETURNING {}", squeezed(KEY_COLUMNS));
        for (name, statement, _) in &STATEMENTS[..4] {
            assert!(squeezed(statement).contains(&returning), "{name}");
        }
    }
}

//! Changes to an existing key's row. Each runs as one statement with the
//! change's audit event (its insert and notification), inside the caller's
//! transaction, which has row-locked the key (`keys::lock_key_for_change`).

use chrono::{DateTime, Utc};
use sqlx::postgres::PgArguments;
use sqlx::query::Query;
use sqlx::{PgConnection, Postgres, Row};

use super::events::{bind_event, event_sql, NewEvent};
use super::keys::{bind_fields, stored_key_from_row, KeyFields, KEY_COLUMNS};
use super::StoreError;
use crate::domain::hashing::SecretHash;
use crate::domain::key::Key;
use crate::domain::token::KeyId;

type PgQuery<'q> = Query<'q, Postgres, PgArguments>;

/// The highest `$n` parameter `sql` names. Not a SQL parser: a `$n` inside a
/// literal counts too, so the changes here keep none there (a count too high
/// fails every call on the bind count; it is never too low).
fn highest_parameter(sql: &str) -> usize {
    sql.split('$')
        .skip(1)
        .filter_map(|after| {
            let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .max()
        .unwrap_or(0)
}

/// A statement that makes `change` to one key (an UPDATE returning the key's
/// columns, or a DELETE) and records the change's event, whose parameters
/// follow the change's own; `version` is the SQL for the key's version after
/// the change.
fn with_event(change: &str, version: &str) -> String {
    let (ctes, columns) = event_sql(highest_parameter(change) + 1, version);
    format!("WITH changed AS ({change}), {ctes} SELECT changed.*, {columns} FROM changed, event")
}

/// An update of one key: its SQL, which returns the key's columns, made
/// into a statement that also records its event at the updated version.
fn update_with_event(update: &str) -> String {
    with_event(update, "changed.version")
}

/// Runs an update built by [`update_with_event`], its own parameters bound,
/// and returns the key as changed and its event's sequence number.
async fn update_recording(
    connection: &mut PgConnection,
    query: PgQuery<'_>,
    event: NewEvent<'_>,
) -> Result<(Key, i64), StoreError> {
    let row = bind_event(query, event).fetch_one(connection).await?;
    Ok((stored_key_from_row(&row)?.key, row.try_get("event_seq")?))
}

/// Writes the editable fields, and records `event`.
#[tracing::instrument(name = "keygate.store.update_fields", level = "debug", skip_all)]
pub async fn update_fields(
    connection: &mut PgConnection,
    id: &KeyId,
    fields: &KeyFields<'_>,
    event: NewEvent<'_>,
) -> Result<(Key, i64), StoreError> {
    let sql = update_with_event(&format!(
        "UPDATE api_keys SET name = $2, description = $3, scopes = $4, allowed_cidrs = $5, \
         expires_at = $6, metadata = $7, version = version + 1, updated_at = now() \
         WHERE id = $1 RETURNING {KEY_COLUMNS}"
    ));
    let query = bind_fields(sqlx::query(&sql).bind(id.as_uuid()), fields);
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
) -> Result<(Key, i64), StoreError> {
    let sql = update_with_event(&format!(
        "UPDATE api_keys SET \
           previous_secret_hash = CASE WHEN $3::timestamptz IS NULL THEN NULL ELSE secret_hash END, \
           previous_secret_expires_at = $3, secret_hash = $2, \
           version = version + 1, updated_at = now() \
         WHERE id = $1 RETURNING {KEY_COLUMNS}"
    ));
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
) -> Result<(Key, i64), StoreError> {
    let sql = update_with_event(&format!(
        "UPDATE api_keys SET disabled_at = CASE WHEN $2 THEN now() ELSE NULL END, \
         version = version + 1, updated_at = now() WHERE id = $1 RETURNING {KEY_COLUMNS}"
    ));
    let query = sqlx::query(&sql).bind(id.as_uuid()).bind(disabled);
    update_recording(connection, query, event).await
}

/// Revokes the key (dropping a rotated-out secret), and records `event`.
#[tracing::instrument(name = "keygate.store.set_revoked", level = "debug", skip_all)]
pub async fn set_revoked(
    connection: &mut PgConnection,
    id: &KeyId,
    event: NewEvent<'_>,
) -> Result<(Key, i64), StoreError> {
    let sql = update_with_event(&format!(
        "UPDATE api_keys SET revoked_at = now(), previous_secret_hash = NULL, \
         previous_secret_expires_at = NULL, version = version + 1, updated_at = now() \
         WHERE id = $1 RETURNING {KEY_COLUMNS}"
    ));
    let query = sqlx::query(&sql).bind(id.as_uuid());
    update_recording(connection, query, event).await
}

/// Deletes the key, and records `event`; returns its sequence number.
#[tracing::instrument(name = "keygate.store.delete_key", level = "debug", skip_all)]
pub async fn delete_key(
    connection: &mut PgConnection,
    id: &KeyId,
    event: NewEvent<'_>,
) -> Result<i64, StoreError> {
    let sql = with_event(
        "DELETE FROM api_keys WHERE id = $1 RETURNING id",
        &i64::MAX.to_string(),
    );
    let query = sqlx::query(&sql).bind(id.as_uuid());
    let row = bind_event(query, event).fetch_one(connection).await?;
    Ok(row.try_get("event_seq")?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_event_takes_the_parameters_after_the_change() {
        assert_eq!(
            highest_parameter("UPDATE t SET a = $2, b = $10 WHERE id = $1"),
            10
        );
        assert_eq!(highest_parameter("SELECT 1"), 0);
        assert_eq!(highest_parameter("SELECT '$' || $3"), 3);
        let statement = update_with_event("UPDATE t SET a = $2 WHERE id = $1 RETURNING version");
        // Two of the change's, then the event's eight, none skipped.
        assert_eq!(highest_parameter(&statement), 10);
        for parameter in 1..=10 {
            let placeholder = format!("${parameter}");
            let named = statement.match_indices(&placeholder).any(|(at, _)| {
                !statement[at + placeholder.len()..].starts_with(|next: char| next.is_ascii_digit())
            });
            assert!(named, "{placeholder} in {statement}");
        }
    }
}

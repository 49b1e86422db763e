//! The `key_events` table: the audit log, written in the same transaction as
//! the change it records.

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::query::Query;
use sqlx::{PgConnection, PgExecutor, Postgres, Row};
use uuid::Uuid;

use super::StoreError;
use crate::domain::events::{EventAction, KeyEvent};
use crate::domain::token::{Environment, KeyId};

/// The advisory lock event sequence numbers are taken under (by its
/// `hashtext`; every statement that records an event spells it out).
///
/// The lock is transaction-scoped, and taken as the materialized `locked`
/// expression is scanned, before the event's row, and so its sequence
/// number, exists. So sequence numbers grow in commit order, and "applied up
/// to N" means all events up to N: what replicas report and mutations wait for.
pub const EVENTS_LOCK: &str = "keygate.key_events";

/// What a mutation records about itself.
pub struct NewEvent<'a> {
    pub key_id: &'a KeyId,
    pub organization_id: Option<Uuid>,
    pub environment: Environment,
    pub actor_key_id: Option<&'a KeyId>,
    pub action: EventAction,
    pub changes: serde_json::Value,
}

/// Which events a listing may return.
pub struct EventFilter {
    pub key_id: Option<KeyId>,
    pub organization_id: Option<Uuid>,
    pub organization_events_only: bool,
    pub environment: Option<Environment>,
}

/// Binds an event's six values, in the order every statement that records
/// one numbers them: key id, organization id, environment, actor key id,
/// action, changes.
pub(super) fn bind_event<'q>(
    query: Query<'q, Postgres, PgArguments>,
    event: NewEvent<'_>,
) -> Query<'q, Postgres, PgArguments> {
    query
        .bind(event.key_id.as_uuid())
        .bind(event.organization_id)
        .bind(event.environment.as_str())
        .bind(event.actor_key_id.map(|id| id.as_uuid()))
        .bind(event.action.as_str())
        .bind(event.changes)
}

const INSERT_EVENT: &str = "\
WITH locked AS MATERIALIZED (SELECT pg_advisory_xact_lock(hashtext('keygate.key_events')))
INSERT INTO key_events (key_id, organization_id, environment, actor_key_id, action, changes)
SELECT $1, $2, $3, $4, $5, $6 FROM locked
RETURNING seq";

/// Inserts the event of a key's creation inside the caller's transaction, and
/// returns its sequence number. A change to an existing key records its event
/// in the change's own statement instead (see `store::changes`).
#[tracing::instrument(
    name = "keygate.store.insert_event",
    level = "debug",
    skip_all,
    fields(db.system = "postgresql", db.operation = "INSERT")
)]
pub async fn insert_event(
    connection: &mut PgConnection,
    event: NewEvent<'_>,
) -> Result<i64, StoreError> {
    let row = bind_event(sqlx::query(INSERT_EVENT), event)
        .fetch_one(&mut *connection)
        .await?;
    Ok(row.try_get("seq")?)
}

fn event_from_row(row: &PgRow) -> Result<KeyEvent, StoreError> {
    let action_text: String = row.try_get("action")?;
    let sequence: i64 = row.try_get("seq")?;
    let action = EventAction::parse(&action_text)
        .ok_or_else(|| StoreError::Corrupt(format!("key_events row {sequence}: invalid action")))?;
    let occurred_at: DateTime<Utc> = row.try_get("occurred_at")?;
    Ok(KeyEvent {
        sequence,
        action,
        key_id: KeyId::from_uuid(row.try_get("key_id")?),
        organization_id: row.try_get("organization_id")?,
        actor_key_id: row
            .try_get::<Option<Uuid>, _>("actor_key_id")?
            .map(KeyId::from_uuid),
        occurred_at,
        changes: row.try_get("changes")?,
    })
}

/// One page of events, newest first, strictly older than `before_seq`.
#[tracing::instrument(
    name = "keygate.store.list_events",
    level = "debug",
    skip_all,
    fields(db.system = "postgresql", db.operation = "SELECT")
)]
pub async fn list_events(
    executor: impl PgExecutor<'_>,
    filter: &EventFilter,
    before_seq: Option<i64>,
    limit: i64,
) -> Result<Vec<KeyEvent>, StoreError> {
    let rows = sqlx::query(
        "SELECT seq, key_id, organization_id, actor_key_id, action, changes, occurred_at \
         FROM key_events \
         WHERE ($1::uuid IS NULL OR key_id = $1) \
           AND ($2::uuid IS NULL OR organization_id = $2) \
           AND (NOT $3 OR organization_id IS NOT NULL) \
           AND ($4::text IS NULL OR environment = $4) \
           AND ($5::bigint IS NULL OR seq < $5) \
         ORDER BY seq DESC LIMIT $6",
    )
    .bind(filter.key_id.map(|id| id.as_uuid()))
    .bind(filter.organization_id)
    .bind(filter.organization_events_only)
    .bind(filter.environment.map(Environment::as_str))
    .bind(before_seq)
    .bind(limit)
    .fetch_all(executor)
    .await?;
    rows.iter().map(event_from_row).collect()
}

/// The sequence number of the latest `action` event of key `key_id`, if its
/// events still hold one.
#[tracing::instrument(
    name = "keygate.store.latest_event_sequence",
    level = "debug",
    skip_all,
    fields(db.system = "postgresql", db.operation = "SELECT")
)]
pub async fn latest_event_sequence(
    executor: impl PgExecutor<'_>,
    key_id: &KeyId,
    action: EventAction,
) -> Result<Option<i64>, StoreError> {
    let sequence =
        sqlx::query_scalar("SELECT MAX(seq) FROM key_events WHERE key_id = $1 AND action = $2")
            .bind(key_id.as_uuid())
            .bind(action.as_str())
            .fetch_one(executor)
            .await?;
    Ok(sequence)
}

/// Deletes events older than `retention`, once an hour, for as long as the
/// server runs.
pub async fn prune_events_forever(pool: sqlx::PgPool, retention: std::time::Duration) {
    let mut ticker = tokio::time::interval(std::time::Duration::from_secs(3600));
    loop {
        ticker.tick().await;
        let cutoff =
            Utc::now() - chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
        match sqlx::query("DELETE FROM key_events WHERE occurred_at < $1")
            .bind(cutoff)
            .execute(&pool)
            .await
        {
            Ok(done) if done.rows_affected() > 0 => {
                tracing::info!(
                    deleted = done.rows_affected(),
                    "pruned key events past retention"
                )
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "failed to prune key events"),
        }
    }
}

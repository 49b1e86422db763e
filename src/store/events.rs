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

/// The channel every replica listens on; payload
/// `<seq> <key uuid> <version> <unix ms when written> <waiter> <action>`, where
/// the waiter is the origin replica's uuid, `-` (nobody waits for the event) or
/// `*` (a waiter not named), and the action is the event's (`revoked`, …).
/// Readers take the last two fields as optional: writers from before them
/// sent neither, or no action.
pub const NOTIFY_CHANNEL: &str = "keygate_key_events";
/// Replicas report the last event they applied (payload
/// `<replica uuid> <last applied seq>`) on this channel followed by `_` and the
/// simple form of the origin replica's id, or on this channel itself for
/// events without an origin; events nobody waits for are not reported.
pub const PROGRESS_CHANNEL: &str = "keygate_replica_progress";

/// The advisory lock event sequence numbers are taken under (by its `hashtext`).
pub const EVENTS_LOCK: &str = "keygate.key_events";

/// What a mutation records about itself.
pub struct NewEvent<'a> {
    pub key_id: &'a KeyId,
    pub organization_id: Option<Uuid>,
    pub environment: Environment,
    pub actor_key_id: Option<&'a KeyId>,
    pub action: EventAction,
    pub changes: serde_json::Value,
    /// Who waits for every replica to apply the event: only they are told.
    pub waiter: Waiter,
}

/// Who waits for replicas to apply an event, and so is told when they have:
/// the last field of the event's notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waiter {
    /// The replica whose mutation wrote the event (its id).
    Origin(Uuid),
    /// Not named (a writer outside a server, or a replica from before
    /// origins; no field): reports go to the shared channel.
    Unnamed,
    /// Nobody: the mutation did not ask to wait (`-`); no report is sent.
    Nobody,
}

impl Waiter {
    /// Reads the notification's waiter field, if it has one.
    pub fn parse(field: Option<&str>) -> Waiter {
        match field {
            Some("-") => Waiter::Nobody,
            Some(origin) => Uuid::parse_str(origin).map_or(Waiter::Unnamed, Waiter::Origin),
            None => Waiter::Unnamed,
        }
    }
}

/// The notification's waiter field. `*` for a waiter not named: a reader from
/// before the action field reads it as not named too (not a uuid).
impl std::fmt::Display for Waiter {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Waiter::Origin(origin) => write!(formatter, "{origin}"),
            Waiter::Unnamed => formatter.write_str("*"),
            Waiter::Nobody => formatter.write_str("-"),
        }
    }
}

/// Which events a listing may return.
pub struct EventFilter {
    pub key_id: Option<KeyId>,
    pub organization_id: Option<Uuid>,
    pub organization_events_only: bool,
    pub environment: Option<Environment>,
}

/// The parts of a statement that records an event: common table expressions
/// (`locked`, `event`) to follow `WITH`, and the columns that notify and
/// return its sequence (`event_seq`), to select `FROM event`. Parameters are
/// numbered from `first`, in the order [`bind_event`] binds them; `version`
/// is the SQL for the key's version after the change, which the notification
/// carries (`i64::MAX` for a deletion: gone for good).
///
/// Event sequence numbers are taken under a transaction-scoped advisory lock:
/// it is taken as the materialized `locked` is scanned, before the insert's
/// row, and so its sequence number, exists. So sequence numbers grow in
/// commit order, and "applied up to N" means all events up to N. The
/// notification is delivered only if, and when, the transaction commits.
pub(super) fn event_sql(first: usize, version: &str) -> (String, String) {
    let parameter = |offset: usize| format!("${}", first + offset);
    let values: Vec<String> = (0..6).map(parameter).collect();
    let ctes = format!(
        "locked AS MATERIALIZED \
         (SELECT pg_advisory_xact_lock(hashtext('{EVENTS_LOCK}'))), \
         event AS (INSERT INTO key_events \
         (key_id, organization_id, environment, actor_key_id, action, changes) \
         SELECT {} FROM locked RETURNING seq)",
        values.join(", ")
    );
    // The key id is the first value; the rest of the payload is bound.
    let columns = format!(
        "event.seq AS event_seq, pg_notify({}, event.seq::text || ' ' || {}::text || ' ' || \
         ({version})::text || ' ' || {})",
        parameter(6),
        parameter(0),
        parameter(7)
    );
    (ctes, columns)
}

/// A key event's notification after its sequence, key id and version (which
/// the statement writes): when it was written, who waits for it, and what
/// happened, as the listener parses them.
pub fn notification_tail(written_at_millis: i64, waiter: Waiter, action: EventAction) -> String {
    format!("{written_at_millis} {waiter} {}", action.as_str())
}

/// Binds an event's parameters, as [`event_sql`] numbers them.
pub(super) fn bind_event<'q>(
    query: Query<'q, Postgres, PgArguments>,
    event: NewEvent<'_>,
) -> Query<'q, Postgres, PgArguments> {
    let payload_tail = notification_tail(Utc::now().timestamp_millis(), event.waiter, event.action);
    query
        .bind(event.key_id.as_uuid())
        .bind(event.organization_id)
        .bind(event.environment.as_str())
        .bind(event.actor_key_id.map(|id| id.as_uuid()))
        .bind(event.action.as_str())
        .bind(event.changes)
        .bind(NOTIFY_CHANNEL)
        .bind(payload_tail)
}

/// Inserts the event of a key's creation (the key is at `key_version`) and
/// notifies every replica, inside the caller's transaction. A change to an
/// existing key records its event in the change's statement instead (see
/// `store::changes`).
#[tracing::instrument(name = "keygate.store.insert_event", level = "debug", skip_all)]
pub async fn insert_event(
    connection: &mut PgConnection,
    event: NewEvent<'_>,
    key_version: i64,
) -> Result<(), StoreError> {
    let (ctes, columns) = event_sql(1, "$9");
    let sql = format!("WITH {ctes} SELECT {columns} FROM event");
    bind_event(sqlx::query(&sql), event)
        .bind(key_version)
        .execute(&mut *connection)
        .await?;
    Ok(())
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
#[tracing::instrument(name = "keygate.store.list_events", level = "debug", skip_all)]
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
    skip_all
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_waiter_reads_back_as_written() {
        for waiter in [
            Waiter::Origin(Uuid::new_v4()),
            Waiter::Unnamed,
            Waiter::Nobody,
        ] {
            let field = waiter.to_string();
            let read = Waiter::parse(Some(&field));
            assert_eq!(read, waiter, "field {field:?}");
        }
        assert_eq!(Waiter::parse(Some("not-a-uuid")), Waiter::Unnamed);
    }
}

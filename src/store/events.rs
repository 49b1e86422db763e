//! The `key_events` table: the audit log, written in the same transaction as
//! the change it records.

use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{PgExecutor, Row};
use uuid::Uuid;

use super::StoreError;
use crate::events::{EventAction, KeyEvent};
use crate::token::{Environment, KeyId};

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

pub async fn insert_event(
    executor: impl PgExecutor<'_>,
    event: NewEvent<'_>,
) -> Result<i64, StoreError> {
    let sequence: i64 = sqlx::query_scalar(
        "INSERT INTO key_events (key_id, organization_id, environment, actor_key_id, action, changes) \
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING seq",
    )
    .bind(event.key_id.as_uuid())
    .bind(event.organization_id)
    .bind(event.environment.as_str())
    .bind(event.actor_key_id.map(|id| id.as_uuid()))
    .bind(event.action.as_str())
    .bind(event.changes)
    .fetch_one(executor)
    .await?;
    Ok(sequence)
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

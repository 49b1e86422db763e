//! Key events: every mutation records one, in the same transaction as the change.
//! They form the audit log (who did what to which key, when, and what changed);
//! they never hold a secret or a hash.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::domain::token::KeyId;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventAction {
    Created,
    Updated,
    Rotated,
    Disabled,
    Enabled,
    Revoked,
    Deleted,
}

impl EventAction {
    pub fn as_str(self) -> &'static str {
        match self {
            EventAction::Created => "created",
            EventAction::Updated => "updated",
            EventAction::Rotated => "rotated",
            EventAction::Disabled => "disabled",
            EventAction::Enabled => "enabled",
            EventAction::Revoked => "revoked",
            EventAction::Deleted => "deleted",
        }
    }

    pub fn parse(text: &str) -> Option<EventAction> {
        [
            EventAction::Created,
            EventAction::Updated,
            EventAction::Rotated,
            EventAction::Disabled,
            EventAction::Enabled,
            EventAction::Revoked,
            EventAction::Deleted,
        ]
        .into_iter()
        .find(|action| action.as_str() == text)
    }
}

/// A change to a key as a cached copy may follow it: the event's action and
/// when it happened (see [`crate::domain::key::Key::after_state_change`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateChange {
    pub action: EventAction,
    pub at: DateTime<Utc>,
}

/// One audit log entry.
#[derive(Debug, Clone)]
pub struct KeyEvent {
    pub sequence: i64,
    pub action: EventAction,
    pub key_id: KeyId,
    pub organization_id: Option<Uuid>,
    pub actor_key_id: Option<KeyId>,
    pub occurred_at: DateTime<Utc>,
    pub changes: serde_json::Value,
}

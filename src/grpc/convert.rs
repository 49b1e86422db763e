//! Conversions between generated proto types and domain types. Parsing failures
//! name the request field.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::pb;
use crate::domain::events::KeyEvent;
use crate::domain::key::{FieldError, Key, KeyKind, KeyState};
use crate::domain::organization::Organization;
use crate::domain::token::{Environment, KeyId, TokenPrefix};

pub fn parse_key_id(field: &'static str, text: &str) -> Result<KeyId, FieldError> {
    if text.is_empty() {
        return Err(FieldError::new(field, "is required"));
    }
    KeyId::parse(text)
        .ok_or_else(|| FieldError::new(field, "is not a key id (22 base62 characters)"))
}

pub fn parse_optional_key_id(field: &'static str, text: &str) -> Result<Option<KeyId>, FieldError> {
    if text.is_empty() {
        return Ok(None);
    }
    parse_key_id(field, text).map(Some)
}

pub fn parse_organization_id(field: &'static str, text: &str) -> Result<Option<Uuid>, FieldError> {
    if text.is_empty() {
        return Ok(None);
    }
    Uuid::parse_str(text)
        .map(Some)
        .map_err(|_| FieldError::new(field, "is not an organization id (a UUID)"))
}

const NANOS_PER_SECOND: i32 = 1_000_000_000;

pub fn parse_timestamp(
    field: &'static str,
    timestamp: &prost_types::Timestamp,
) -> Result<DateTime<Utc>, FieldError> {
    // Proto timestamps keep nanos below one second (chrono would read more as a
    // leap second).
    u32::try_from(timestamp.nanos)
        .ok()
        .filter(|nanos| *nanos < NANOS_PER_SECOND as u32)
        .and_then(|nanos| DateTime::from_timestamp(timestamp.seconds, nanos))
        .ok_or_else(|| FieldError::new(field, "is not a valid timestamp"))
}

pub fn parse_duration(
    field: &'static str,
    duration: &prost_types::Duration,
) -> Result<chrono::Duration, FieldError> {
    let invalid = || FieldError::new(field, "is not a valid duration");
    // Proto durations keep nanos below one second, with the sign of the seconds.
    let opposite_signs = (duration.seconds > 0 && duration.nanos < 0)
        || (duration.seconds < 0 && duration.nanos > 0);
    if duration.nanos.unsigned_abs() >= NANOS_PER_SECOND as u32 || opposite_signs {
        return Err(invalid());
    }
    let seconds = chrono::Duration::try_seconds(duration.seconds).ok_or_else(invalid)?;
    seconds
        .checked_add(&chrono::Duration::nanoseconds(i64::from(duration.nanos)))
        .ok_or_else(invalid)
}

pub fn parse_environment(value: i32) -> Result<Environment, FieldError> {
    match pb::Environment::try_from(value) {
        Ok(pb::Environment::Live) => Ok(Environment::Live),
        Ok(pb::Environment::Test) => Ok(Environment::Test),
        Ok(pb::Environment::Unspecified) => {
            Err(FieldError::new("environment", "is required (live or test)"))
        }
        Err(_) => Err(FieldError::new("environment", "is not a known environment")),
    }
}

pub fn parse_kind(value: i32) -> Result<KeyKind, FieldError> {
    match pb::KeyKind::try_from(value) {
        Ok(pb::KeyKind::Unspecified | pb::KeyKind::Organization) => Ok(KeyKind::Organization),
        Ok(pb::KeyKind::System) => Ok(KeyKind::System),
        Err(_) => Err(FieldError::new("kind", "is not a known key kind")),
    }
}

/// The proto's timestamp for a time.
pub fn timestamp(time: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: time.timestamp(),
        nanos: i32::try_from(time.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

fn optional_timestamp(time: Option<DateTime<Utc>>) -> Option<prost_types::Timestamp> {
    time.map(timestamp)
}

pub fn kind_to_proto(kind: KeyKind) -> pb::KeyKind {
    match kind {
        KeyKind::Organization => pb::KeyKind::Organization,
        KeyKind::System => pb::KeyKind::System,
    }
}

pub fn environment_to_proto(environment: Environment) -> pb::Environment {
    match environment {
        Environment::Live => pb::Environment::Live,
        Environment::Test => pb::Environment::Test,
    }
}

fn state_to_proto(state: KeyState) -> pb::KeyState {
    match state {
        KeyState::Active => pb::KeyState::Active,
        KeyState::Disabled => pb::KeyState::Disabled,
        KeyState::Revoked => pb::KeyState::Revoked,
        KeyState::Expired => pb::KeyState::Expired,
    }
}

pub fn key_to_proto(key: &Key, prefix: &TokenPrefix, now: DateTime<Utc>) -> pb::Key {
    let kind = kind_to_proto(key.kind);
    pb::Key {
        id: key.id.to_string(),
        organization_id: key
            .organization_id
            .map(|id| id.to_string())
            .unwrap_or_default(),
        kind: kind.into(),
        environment: environment_to_proto(key.environment).into(),
        name: key.name.clone(),
        description: key.description.clone(),
        scopes: key.scopes.iter().map(ToString::to_string).collect(),
        allowed_cidrs: key.allowed_cidrs.iter().map(ToString::to_string).collect(),
        expire_time: optional_timestamp(key.expires_at),
        metadata: key.metadata.clone().into_iter().collect(),
        display_hint: prefix.display_hint(key.environment, &key.id),
        state: state_to_proto(key.state(now)).into(),
        lock_scopes: key.lock_scopes,
        version: key.version,
        create_time: Some(timestamp(key.created_at)),
        update_time: Some(timestamp(key.updated_at)),
        disable_time: optional_timestamp(key.disabled_at),
        revoke_time: optional_timestamp(key.revoked_at),
        previous_secret_expire_time: optional_timestamp(key.previous_secret_expires_at),
        created_by_key_id: key.created_by.map(|id| id.to_string()).unwrap_or_default(),
        last_used_time: optional_timestamp(key.last_used_at),
    }
}

pub fn event_to_proto(event: &KeyEvent) -> pb::KeyEvent {
    pb::KeyEvent {
        sequence: event.sequence,
        action: event.action.as_str().to_owned(),
        key_id: event.key_id.to_string(),
        organization_id: event
            .organization_id
            .map(|id| id.to_string())
            .unwrap_or_default(),
        actor_key_id: event
            .actor_key_id
            .map(|id| id.to_string())
            .unwrap_or_default(),
        occur_time: Some(timestamp(event.occurred_at)),
        changes_json: event.changes.to_string(),
    }
}

pub fn organization_to_proto(organization: &Organization) -> pb::Organization {
    pb::Organization {
        id: organization.id.to_string(),
        display_name: organization.display_name.clone(),
        create_time: Some(timestamp(organization.created_at)),
    }
}

//! The notifications replicas exchange through Postgres `NOTIFY`, written and
//! parsed here and nowhere else.
//!
//! | channel | payload | sent by | heard by |
//! |---|---|---|---|
//! | `keygate_key_events` | `<seq> <key uuid> <version> <unix ms written> <waiter> <action>` | every mutation, in its own transaction | every replica's listener |
//! | `keygate_replica_progress_<replica, simple uuid>` | `<replica uuid> <last applied seq>` | replicas that applied an event this replica waits for; its own heartbeat | that replica |
//! | `keygate_replica_progress` | the same | reports for events whose waiter is not named, and after a catch-up | every replica |
//!
//! A key event's version is the key's version after the change
//! ([`DELETED_VERSION`] for a deletion: gone for good). The waiter is the
//! replica whose mutation waits for every replica to apply the event (its
//! uuid), `-` when nobody waits, or `*` when the waiter is not named. Postgres
//! delivers a notification only if, and when, its transaction commits, in
//! commit order.
//!
//! Readers take the fields after the version as optional: writers from
//! before them sent only some (see the tests), and a rolling update runs
//! both releases side by side.

use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use super::feed::ReplicaProgress;
use crate::domain::events::EventAction;
use crate::domain::token::KeyId;
use crate::store::StoreError;

/// The channel every replica listens on for key events.
pub const KEY_EVENTS_CHANNEL: &str = "keygate_key_events";

/// The channel progress reports go to when their waiter is not named; a
/// replica's own channel is this name followed by `_` and its simple uuid.
pub const PROGRESS_CHANNEL: &str = "keygate_replica_progress";

/// The version a deletion's notification carries: no later version of the key
/// can exist, so every cached copy is stale.
pub const DELETED_VERSION: i64 = i64::MAX;

/// The channel on which `replica` hears reports for the events it wrote.
pub fn own_progress_channel(replica: Uuid) -> String {
    format!("{PROGRESS_CHANNEL}_{}", replica.simple())
}

/// Who waits for replicas to apply an event, and so is told when they have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waiter {
    /// The replica whose mutation wrote the event (its id).
    Origin(Uuid),
    /// Not named (a writer outside a server, or a replica from before
    /// origins): reports go to the shared channel.
    Unnamed,
    /// Nobody: the mutation did not ask to wait; no report is sent.
    Nobody,
}

impl Waiter {
    /// Reads the payload's waiter field, if it has one.
    fn parse(field: Option<&str>) -> Waiter {
        match field {
            Some("-") => Waiter::Nobody,
            Some(origin) => Uuid::parse_str(origin).map_or(Waiter::Unnamed, Waiter::Origin),
            None => Waiter::Unnamed,
        }
    }
}

/// The payload's waiter field. `*` for a waiter not named: a reader from
/// before the action field reads it as not named too (it is not a uuid).
impl std::fmt::Display for Waiter {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Waiter::Origin(origin) => write!(formatter, "{origin}"),
            Waiter::Unnamed => formatter.write_str("*"),
            Waiter::Nobody => formatter.write_str("-"),
        }
    }
}

/// A key event as its notification carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyEventNotice {
    pub sequence: i64,
    pub key_id: KeyId,
    /// The key's version after the change ([`DELETED_VERSION`]: deleted).
    pub version: i64,
    /// When the change was written, by the writer's clock; `None` only from
    /// writers that sent no time.
    pub written_at_millis: Option<i64>,
    pub waiter: Waiter,
    /// `None` when absent or not known to this replica: a cached copy older
    /// than the event is then evicted rather than followed in place.
    pub action: Option<EventAction>,
}

impl KeyEventNotice {
    /// The payload as the listener parses it. Without a written time, the
    /// fields after it are left out too (positions carry their meaning).
    pub fn to_payload(&self) -> String {
        let head = format!(
            "{} {} {}",
            self.sequence,
            self.key_id.as_uuid(),
            self.version
        );
        let Some(written_at_millis) = self.written_at_millis else {
            return head;
        };
        match self.action {
            Some(action) => format!(
                "{head} {written_at_millis} {} {}",
                self.waiter,
                action.as_str()
            ),
            None => format!("{head} {written_at_millis} {}", self.waiter),
        }
    }

    /// Reads a payload; `None` when its sequence, key id or version is not there.
    pub fn parse(payload: &str) -> Option<KeyEventNotice> {
        let mut parts = payload.split(' ');
        let sequence = parts.next()?.parse().ok()?;
        let key_id = KeyId::from_uuid(Uuid::parse_str(parts.next()?).ok()?);
        let version = parts.next()?.parse().ok()?;
        let written_at_millis = parts.next().and_then(|millis| millis.parse().ok());
        let waiter = Waiter::parse(parts.next());
        let action = parts.next().and_then(EventAction::parse);
        Some(KeyEventNotice {
            sequence,
            key_id,
            version,
            written_at_millis,
            waiter,
            action,
        })
    }
}

/// A progress report's payload: `<replica uuid> <last applied seq>`.
pub fn progress_payload(progress: ReplicaProgress) -> String {
    format!("{} {}", progress.replica, progress.applied)
}

/// Reads a progress report's payload.
pub fn parse_progress(payload: &str) -> Option<ReplicaProgress> {
    let (replica, applied) = payload.split_once(' ')?;
    Some(ReplicaProgress {
        replica: Uuid::parse_str(replica).ok()?,
        applied: applied.parse().ok()?,
    })
}

/// Sends a key event's notification inside the mutation's transaction, so
/// that it is delivered when, and only if, the change commits.
#[tracing::instrument(
    name = "keygate.replication.notify_key_event",
    level = "debug",
    skip_all
)]
pub async fn notify_key_event(
    connection: &mut PgConnection,
    notice: &KeyEventNotice,
) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(KEY_EVENTS_CHANNEL)
        .bind(notice.to_payload())
        .execute(connection)
        .await?;
    Ok(())
}

/// Sends one progress report on each of `channels`.
pub async fn notify_progress(
    executor: impl PgExecutor<'_>,
    channels: &[String],
    progress: ReplicaProgress,
) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_notify(channel, $2) FROM unnest($1::text[]) AS channel")
        .bind(channels)
        .bind(progress_payload(progress))
        .execute(executor)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice(waiter: Waiter, action: Option<EventAction>) -> KeyEventNotice {
        KeyEventNotice {
            sequence: 42,
            key_id: KeyId::from_uuid(Uuid::from_u128(7)),
            version: 7,
            written_at_millis: Some(1_700_000_000_000),
            waiter,
            action,
        }
    }

    #[test]
    fn a_key_event_reads_back_as_written() {
        let origin = Uuid::new_v4();
        for waiter in [Waiter::Origin(origin), Waiter::Unnamed, Waiter::Nobody] {
            for action in [None, Some(EventAction::Revoked), Some(EventAction::Deleted)] {
                let written = notice(waiter, action);
                let payload = written.to_payload();
                assert_eq!(KeyEventNotice::parse(&payload), Some(written), "{payload}");
            }
        }
        let deleted = KeyEventNotice {
            version: DELETED_VERSION,
            ..notice(Waiter::Nobody, Some(EventAction::Deleted))
        };
        assert_eq!(KeyEventNotice::parse(&deleted.to_payload()), Some(deleted));
        let timeless = KeyEventNotice {
            written_at_millis: None,
            ..notice(Waiter::Unnamed, None)
        };
        assert_eq!(
            timeless.to_payload(),
            format!("42 {} 7", Uuid::from_u128(7))
        );
        assert_eq!(
            KeyEventNotice::parse(&timeless.to_payload()),
            Some(timeless)
        );
    }

    #[test]
    fn payloads_of_earlier_writers_still_parse() {
        let id = Uuid::from_u128(7);
        let payload = format!("42 {id} 7 1700000000000");
        // As writers from before the waiter and the action fields sent them.
        assert_eq!(
            KeyEventNotice::parse(&payload),
            Some(notice(Waiter::Unnamed, None))
        );
        let origin = Uuid::new_v4();
        assert_eq!(
            KeyEventNotice::parse(&format!("{payload} {origin}")),
            Some(notice(Waiter::Origin(origin), None))
        );
        assert_eq!(
            KeyEventNotice::parse(&format!("{payload} -")),
            Some(notice(Waiter::Nobody, None))
        );
        // As they are written now.
        assert_eq!(
            KeyEventNotice::parse(&format!("{payload} {origin} revoked")),
            Some(notice(Waiter::Origin(origin), Some(EventAction::Revoked)))
        );
        assert_eq!(
            KeyEventNotice::parse(&format!("{payload} * disabled")),
            Some(notice(Waiter::Unnamed, Some(EventAction::Disabled)))
        );
        assert_eq!(
            KeyEventNotice::parse(&format!("{payload} - updated")),
            Some(notice(Waiter::Nobody, Some(EventAction::Updated)))
        );
        // An action this replica does not know: the key is evicted.
        assert_eq!(
            KeyEventNotice::parse(&format!("{payload} - renamed")),
            Some(notice(Waiter::Nobody, None))
        );
        assert_eq!(KeyEventNotice::parse("42 nope 7"), None);
        assert_eq!(KeyEventNotice::parse(""), None);
    }

    #[test]
    fn a_waiter_reads_back_as_written() {
        for waiter in [
            Waiter::Origin(Uuid::new_v4()),
            Waiter::Unnamed,
            Waiter::Nobody,
        ] {
            let field = waiter.to_string();
            assert_eq!(Waiter::parse(Some(&field)), waiter, "field {field:?}");
        }
        assert_eq!(Waiter::parse(Some("not-a-uuid")), Waiter::Unnamed);
        assert_eq!(Waiter::parse(None), Waiter::Unnamed);
    }

    #[test]
    fn progress_reads_back_as_written() {
        let report = ReplicaProgress {
            replica: Uuid::new_v4(),
            applied: 42,
        };
        assert_eq!(parse_progress(&progress_payload(report)), Some(report));
        let replica = report.replica;
        assert_eq!(parse_progress(&format!("{replica}")), None);
        assert_eq!(parse_progress(&format!("{replica} x")), None);
        assert_eq!(parse_progress("nope 42"), None);
        assert_eq!(parse_progress(""), None);
        assert_eq!(
            own_progress_channel(Uuid::from_u128(1)),
            "keygate_replica_progress_00000000000000000000000000000001"
        );
    }
}

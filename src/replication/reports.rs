//! Reporting how far this replica has applied events, to the mutations that
//! wait for it.
//!
//! A key event names its *origin*, the replica whose mutation wrote it and may
//! be waiting for it, or says that nobody waits (then it is not reported: the
//! heartbeat records it in the table within a second). A report goes to the
//! origins of the events applied since the last one, each on that replica's
//! own channel, so a replica hears only the reports its own waits need: with n
//! replicas an awaited event costs n - 1 notifications, not n² (the origin
//! learns of its own application in process). Events without an
//! origin (written by a replica from before origins) and a catch-up after
//! reconnecting are reported on the shared channel, which every replica also
//! listens on.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{Connection, Executor, PgPool};
use tokio::sync::Notify;
use uuid::Uuid;

use super::feed::ReplicaProgress;
use super::notification::{notify_progress, own_progress_channel, Waiter, PROGRESS_CHANNEL};
use super::Replica;

/// Who the next report goes to.
#[derive(Debug, Default, PartialEq, Eq)]
struct Audience {
    origins: HashSet<Uuid>,
    shared: bool,
}

impl Audience {
    fn is_empty(&self) -> bool {
        self.origins.is_empty() && !self.shared
    }

    fn channels(&self) -> Vec<String> {
        let own = self
            .origins
            .iter()
            .map(|origin| own_progress_channel(*origin));
        let shared = self.shared.then(|| PROGRESS_CHANNEL.to_owned());
        own.chain(shared).collect()
    }

    fn merge(&mut self, other: Audience) {
        self.origins.extend(other.origins);
        self.shared |= other.shared;
    }
}

/// Events applied but not yet reported, filled by the listener and drained by
/// the reporter.
#[derive(Clone, Default)]
pub struct PendingReports {
    audience: Arc<Mutex<Audience>>,
    changed: Arc<Notify>,
}

impl PendingReports {
    /// An event that `waiter` waits for has been applied. One nobody waits
    /// for is not reported: the heartbeat records it in the table.
    pub fn applied_for(&self, waiter: Waiter) {
        {
            let mut audience = self.lock();
            match waiter {
                Waiter::Origin(replica) => {
                    audience.origins.insert(replica);
                }
                Waiter::Unnamed => audience.shared = true,
                Waiter::Nobody => return,
            }
        }
        self.changed.notify_one();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Audience> {
        // The audience stays consistent whatever a panicking holder did.
        self.audience.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn take(&self) -> Audience {
        std::mem::take(&mut *self.lock())
    }

    fn put_back(&self, audience: Audience) {
        self.lock().merge(audience);
    }
}

/// The longest one attempt to report (connecting included) may take: a
/// report stuck on a dead or unanswering connection would hold back every
/// later one.
const REPORT_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a report did not go out.
#[derive(Debug, thiserror::Error)]
enum ReportError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error("no answer within {} s", REPORT_TIMEOUT.as_secs())]
    TimedOut,
}

/// The first pause before a report that failed twice is tried again; it
/// doubles up to [`REPORT_TIMEOUT`] while reports keep failing.
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(100);

/// Reports on a connection of its own (one per replica, beside the pool):
/// reports follow every awaited event on every replica but its origin, and a
/// pooled connection would add sqlx's pings to each. A report that fails is tried once more on a new
/// connection (the old one may have died since the last event); if that fails
/// too, it is tried again after a pause, and the heartbeat carries the sequence
/// to the table meanwhile.
pub async fn report_applied(pool: PgPool, replica: Replica, pending: PendingReports) {
    let options = pool.connect_options().as_ref().clone();
    let mut connection: Option<PgConnection> = None;
    let mut retry_delay: Option<Duration> = None;
    loop {
        match retry_delay {
            // Events meanwhile only join the audience: a database that refuses
            // connections is not asked again at the rate events arrive.
            Some(delay) => tokio::time::sleep(delay).await,
            None => pending.changed.notified().await,
        }
        let audience = pending.take();
        if audience.is_empty() {
            continue;
        }
        let channels = audience.channels();
        let applied = replica.applied_sequence();
        let first = attempt_report(&options, &mut connection, replica.id, applied, &channels).await;
        let outcome = match first {
            Ok(()) => Ok(()),
            // Once more, on a new connection.
            Err(_) => {
                attempt_report(&options, &mut connection, replica.id, applied, &channels).await
            }
        };
        match outcome {
            Ok(()) => {
                if retry_delay.take().is_some() {
                    tracing::info!("reporting the applied event sequence again");
                }
            }
            Err(error) => {
                // Once per run of failures; waiting mutations fall back to the
                // heartbeat's copy in the table.
                if retry_delay.is_none() {
                    tracing::warn!(%error, "failed to report the applied event sequence");
                }
                retry_delay = Some(
                    retry_delay.map_or(FIRST_RETRY_DELAY, |delay| (delay * 2).min(REPORT_TIMEOUT)),
                );
                pending.put_back(audience);
            }
        }
    }
}

/// Records `applied` in this replica's row and notifies `channels`, within
/// [`REPORT_TIMEOUT`]; a failed report drops the connection, so that the next
/// opens a new one.
async fn attempt_report(
    options: &PgConnectOptions,
    connection: &mut Option<PgConnection>,
    replica_id: Uuid,
    applied: i64,
    channels: &[String],
) -> Result<(), ReportError> {
    let report = async {
        let open = match connection.as_mut() {
            Some(open) => open,
            None => connection.insert(connect(options).await?),
        };
        // Never beyond the newest event (every event applied is committed, so
        // visible here): a forged notification could claim any sequence, and
        // the row is what later waits read first.
        let recorded: Option<i64> = sqlx::query_scalar(
            "UPDATE replicas SET last_applied_seq = GREATEST(last_applied_seq, \
             LEAST($2, (SELECT COALESCE(MAX(seq), $2) FROM key_events))) \
             WHERE id = $1 RETURNING last_applied_seq",
        )
        .bind(replica_id)
        .bind(applied)
        .fetch_optional(&mut *open)
        .await?;
        // No row: the replica was deregistered, and nobody waits for it.
        if let Some(applied) = recorded {
            let progress = ReplicaProgress {
                replica: replica_id,
                applied,
            };
            notify_progress(&mut *open, channels, progress).await?;
        }
        Ok(())
    };
    let outcome = tokio::time::timeout(REPORT_TIMEOUT, report)
        .await
        .unwrap_or(Err(ReportError::TimedOut));
    if outcome.is_err() {
        *connection = None;
    }
    outcome
}

/// How the reporting connection names itself in `pg_stat_activity`.
pub const REPORTER_APPLICATION_NAME: &str = "keygate progress reporter";

/// Opens the reporting connection, with commits that do not wait for the disk:
/// a report states what this replica has done, and losing the latest one in a
/// database crash costs nothing the next heartbeat does not redo.
async fn connect(options: &PgConnectOptions) -> Result<PgConnection, sqlx::Error> {
    let options = options.clone().application_name(REPORTER_APPLICATION_NAME);
    let mut connection = PgConnection::connect_with(&options).await?;
    connection.execute("SET synchronous_commit = off").await?;
    Ok(connection)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_go_to_each_origin_once_to_the_shared_channel_when_asked_and_not_for_nobody() {
        let pending = PendingReports::default();
        let (first, second) = (Uuid::new_v4(), Uuid::new_v4());
        pending.applied_for(Waiter::Origin(first));
        pending.applied_for(Waiter::Origin(second));
        pending.applied_for(Waiter::Origin(first));
        pending.applied_for(Waiter::Nobody);
        let mut channels = pending.take().channels();
        channels.sort();
        let mut expected = vec![own_progress_channel(first), own_progress_channel(second)];
        expected.sort();
        assert_eq!(channels, expected);
        assert!(pending.take().is_empty());

        pending.applied_for(Waiter::Unnamed);
        assert_eq!(pending.take().channels(), vec![PROGRESS_CHANNEL.to_owned()]);
    }

    #[test]
    fn an_undelivered_audience_is_kept_for_the_next_report() {
        let pending = PendingReports::default();
        let (first, second) = (Uuid::new_v4(), Uuid::new_v4());
        pending.applied_for(Waiter::Origin(first));
        let undelivered = pending.take();
        pending.applied_for(Waiter::Origin(second));
        pending.put_back(undelivered);
        let audience = pending.take();
        assert_eq!(audience.origins, HashSet::from([first, second]));
        assert!(!audience.shared);
    }

    #[test]
    fn channel_names_fit_postgres_identifiers() {
        assert!(own_progress_channel(Uuid::new_v4()).len() <= 63);
    }
}

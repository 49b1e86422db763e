//! Waiting, after a mutation commits, until every live replica has applied its
//! event (evicted the key from its cache, or followed the change in place).
//! A replica counts as live while its heartbeat is younger than the lease; one
//! whose lease ran out has stopped trusting its cache by itself, so it is safe
//! not to wait for it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::pool::PoolConnection;
use sqlx::{PgExecutor, PgPool, Postgres, Row};
use tokio::sync::broadcast;
use uuid::Uuid;

use super::feed::{ProgressFeed, ReplicaProgress};
use super::notification::Waiter;
use crate::store::StoreError;

/// How far a mutation's event had spread when the RPC returned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Propagation {
    /// Whether the call waited at all.
    pub waited: bool,
    /// Names of live replicas that had not applied it when the wait timed out.
    pub unconfirmed: Vec<String>,
    /// Names of replicas that were live when the wait began and whose lease ran
    /// out before they confirmed: they no longer trust their caches.
    pub lease_expired: Vec<String>,
    /// Names of the live replicas that applied the event.
    pub confirmed_names: Vec<String>,
}

impl Propagation {
    /// How many live replicas applied the event.
    pub fn confirmed(&self) -> usize {
        self.confirmed_names.len()
    }

    /// Every live replica applied the event.
    pub fn complete(&self) -> bool {
        self.waited && self.unconfirmed.is_empty()
    }
}

/// The longest a waiter goes without reading the replicas table when no
/// report arrives (a lease may run out meanwhile).
const POLL_FALLBACK: Duration = Duration::from_millis(25);

/// A live replica as the replicas table shows it.
struct ReplicaRow {
    id: Uuid,
    name: String,
    applied: bool,
}

/// Replicas' reports of their progress, as a wait receives them.
type Reports = broadcast::Receiver<Option<ReplicaProgress>>;

async fn live_replicas(
    executor: impl PgExecutor<'_>,
    sequence: i64,
    lease: Duration,
) -> Result<Vec<ReplicaRow>, StoreError> {
    let rows = sqlx::query(
        "SELECT id, name, last_applied_seq >= $1 AS applied FROM replicas \
         WHERE heartbeat_at > now() - make_interval(secs => $2)",
    )
    .bind(sequence)
    .bind(lease.as_secs_f64())
    .fetch_all(executor)
    .await?;
    let mut replicas = Vec::with_capacity(rows.len());
    for row in rows {
        replicas.push(ReplicaRow {
            id: row.try_get("id")?,
            name: row.try_get("name")?,
            applied: row.try_get("applied")?,
        });
    }
    Ok(replicas)
}

/// What a waiter knows about the live replicas and event `sequence`.
struct Tally {
    sequence: i64,
    confirmed: BTreeMap<Uuid, String>,
    pending: BTreeMap<Uuid, String>,
    /// Every replica ever pending, to name those whose lease ran out.
    ever_pending: BTreeMap<Uuid, String>,
}

impl Tally {
    fn new(sequence: i64) -> Tally {
        Tally {
            sequence,
            confirmed: BTreeMap::new(),
            pending: BTreeMap::new(),
            ever_pending: BTreeMap::new(),
        }
    }

    /// Takes in a fresh read of the table: pending are the live replicas that
    /// have not applied the event yet.
    fn read(&mut self, replicas: Vec<ReplicaRow>) {
        self.pending.clear();
        for replica in replicas {
            if replica.applied {
                self.confirmed.insert(replica.id, replica.name);
            } else if !self.confirmed.contains_key(&replica.id) {
                self.ever_pending.insert(replica.id, replica.name.clone());
                self.pending.insert(replica.id, replica.name);
            }
        }
    }

    /// Takes in one replica's report.
    fn report(&mut self, progress: ReplicaProgress) {
        if progress.applied < self.sequence {
            return;
        }
        if let Some(name) = self.pending.remove(&progress.replica) {
            self.confirmed.insert(progress.replica, name);
        }
    }

    fn outcome(self) -> Propagation {
        let lease_expired = self
            .ever_pending
            .iter()
            .filter(|(id, _)| !self.pending.contains_key(id) && !self.confirmed.contains_key(id))
            .map(|(_, name)| name.clone())
            .collect();
        let mut confirmed_names: Vec<String> = self.confirmed.into_values().collect();
        confirmed_names.sort();
        let mut unconfirmed: Vec<String> = self.pending.into_values().collect();
        unconfirmed.sort();
        Propagation {
            waited: true,
            unconfirmed,
            lease_expired,
            confirmed_names,
        }
    }
}

/// Counts reports until every pending replica has confirmed (true), or until
/// the table must be read again (false): at `until` however many reports come
/// meanwhile, or at once on a report without details or when reports were missed.
async fn count_reports(reports: &mut Reports, tally: &mut Tally, until: Instant) -> bool {
    let until = tokio::time::Instant::from_std(until);
    loop {
        match tokio::time::timeout_at(until, reports.recv()).await {
            Ok(Ok(Some(progress))) => {
                tally.report(progress);
                if tally.pending.is_empty() {
                    return true;
                }
            }
            Ok(Ok(None) | Err(_)) | Err(_) => return false,
        }
    }
}

/// The wait after a mutation commits: how long it may take, how long a
/// replica's lease lasts, and where this replica hears progress reports.
#[derive(Clone)]
pub struct PropagationWait {
    pool: PgPool,
    feed: Arc<ProgressFeed>,
    timeout: Duration,
    lease: Duration,
    /// The replica whose mutations wait, named as their events' origin so
    /// that replicas report their progress to it alone.
    origin: Option<Uuid>,
}

impl PropagationWait {
    /// A wait of at most 2 s for leases of 3 s, hearing reports on `feed`.
    pub fn new(pool: PgPool, feed: Arc<ProgressFeed>) -> PropagationWait {
        PropagationWait {
            pool,
            feed,
            timeout: Duration::from_secs(2),
            lease: Duration::from_secs(3),
            origin: None,
        }
    }

    /// Sets how long a wait may take and how long a replica's lease lasts.
    pub fn with_timing(mut self, timeout: Duration, lease: Duration) -> PropagationWait {
        self.timeout = timeout;
        self.lease = lease;
        self
    }

    /// Names `replica` as the origin of the events whose application is awaited.
    pub fn with_origin(mut self, replica: Uuid) -> PropagationWait {
        self.origin = Some(replica);
        self
    }

    /// The replica named as the origin of awaited events, if any.
    pub fn origin(&self) -> Option<Uuid> {
        self.origin
    }

    /// Who an event's notification names as waiting for it. `awaited`: the
    /// mutation will wait for every replica to apply it.
    pub fn waiter(&self, awaited: bool) -> Waiter {
        match (awaited, self.origin) {
            (false, _) => Waiter::Nobody,
            (true, Some(origin)) => Waiter::Origin(origin),
            (true, None) => Waiter::Unnamed,
        }
    }

    /// Where this replica hears progress reports (its listener publishes them).
    pub fn feed(&self) -> &Arc<ProgressFeed> {
        &self.feed
    }

    /// Waits (when asked) until every live replica has applied event
    /// `sequence`, at most the configured timeout. Never fails the already
    /// committed change. The replicas table is read once, on the mutation's
    /// own `connection` (let go of before the wait), after the event
    /// committed: a replica that becomes live after that read renews its
    /// trust after the commit too. Then replicas' reports are counted as
    /// they arrive; the table is read again only when reports do not settle it.
    pub async fn wait_for(
        &self,
        sequence: i64,
        wait: bool,
        connection: PoolConnection<Postgres>,
    ) -> Propagation {
        if !wait {
            return Propagation::default();
        }
        let deadline = Instant::now() + self.timeout;
        // Subscribed before the first read, so no report made meanwhile is missed.
        let feed = &self.feed;
        let mut reports: Reports = feed.subscribe();
        let mut tally = Tally::new(sequence);
        let mut first_read_on = Some(connection);
        loop {
            let read = match first_read_on.take() {
                Some(mut connection) => live_replicas(&mut *connection, sequence, self.lease).await,
                None => live_replicas(&self.pool, sequence, self.lease).await,
            };
            match read {
                Ok(replicas) => {
                    tally.read(replicas);
                    // This replica's own progress is not reported through
                    // the table, and may have been published before the
                    // subscription.
                    if let Some(own) = self.origin {
                        tally.report(feed.own_progress(own));
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, sequence, "cannot read replica progress");
                    if Instant::now() >= deadline {
                        let mut progress = tally.outcome();
                        progress
                            .unconfirmed
                            .push("(replica progress unreadable)".to_owned());
                        return progress;
                    }
                    tokio::time::sleep(POLL_FALLBACK).await;
                    continue;
                }
            }
            let mut settled = tally.pending.is_empty();
            let next_read = (Instant::now() + POLL_FALLBACK).min(deadline);
            if !settled && Instant::now() < deadline {
                settled = count_reports(&mut reports, &mut tally, next_read).await;
            }
            if settled || Instant::now() >= deadline {
                let progress = tally.outcome();
                if !progress.unconfirmed.is_empty() {
                    tracing::warn!(sequence, unconfirmed = ?progress.unconfirmed, "propagation wait timed out");
                }
                return progress;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: Uuid, name: &str, applied: bool) -> ReplicaRow {
        ReplicaRow {
            id,
            name: name.to_owned(),
            applied,
        }
    }

    #[test]
    fn reports_confirm_pending_replicas_without_another_read() {
        let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let mut tally = Tally::new(10);
        tally.read(vec![
            row(a, "a", true),
            row(b, "b", false),
            row(c, "c", false),
        ]);
        tally.report(ReplicaProgress {
            replica: b,
            applied: 9,
        });
        assert_eq!(tally.pending.len(), 2, "an older sequence confirms nothing");
        tally.report(ReplicaProgress {
            replica: b,
            applied: 10,
        });
        tally.report(ReplicaProgress {
            replica: Uuid::new_v4(),
            applied: 10,
        });
        assert_eq!(tally.pending.len(), 1, "unknown replicas are ignored");
        tally.report(ReplicaProgress {
            replica: c,
            applied: 12,
        });
        let outcome = tally.outcome();
        assert_eq!(outcome.confirmed(), 3);
        assert_eq!(outcome.confirmed_names, ["a", "b", "c"]);
        assert!(outcome.complete() && outcome.lease_expired.is_empty());
    }

    #[test]
    fn the_waiting_replica_counts_itself_from_its_own_progress() {
        let (own, other) = (Uuid::new_v4(), Uuid::new_v4());
        let mut tally = Tally::new(10);
        // Its row lags (the heartbeat has not written it yet).
        let rows = || vec![row(own, "own", false), row(other, "other", true)];
        let behind = ReplicaProgress {
            replica: own,
            applied: 9,
        };
        tally.read(rows());
        tally.report(behind);
        assert_eq!(tally.pending.len(), 1);
        let caught_up = ReplicaProgress {
            replica: own,
            applied: 10,
        };
        tally.read(rows());
        tally.report(caught_up);
        assert!(tally.pending.is_empty());
        assert_eq!(tally.outcome().confirmed_names, ["other", "own"]);
    }

    #[test]
    fn a_pending_replica_that_leaves_the_live_set_is_named_lease_expired() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let mut tally = Tally::new(10);
        tally.read(vec![row(a, "a", false), row(b, "b", false)]);
        tally.read(vec![row(a, "a", true)]);
        let outcome = tally.outcome();
        assert_eq!(outcome.confirmed_names, ["a"]);
        assert!(outcome.unconfirmed.is_empty());
        assert_eq!(outcome.lease_expired, ["b"]);
    }

    #[tokio::test]
    async fn counting_stops_in_time_however_many_reports_arrive() {
        let (sender, mut reports) = broadcast::channel(1024);
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let mut tally = Tally::new(10);
        tally.read(vec![row(a, "a", false), row(b, "b", false)]);
        // A steady stream of reports that settle nothing (an older event).
        let stream = tokio::spawn(async move {
            for _ in 0..400 {
                let _ = sender.send(Some(ReplicaProgress {
                    replica: a,
                    applied: 9,
                }));
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            sender
        });
        let started = Instant::now();
        let until = started + Duration::from_millis(30);
        assert!(!count_reports(&mut reports, &mut tally, until).await);
        assert!(started.elapsed() < Duration::from_millis(200));
        let sender = stream.await.unwrap();
        // Reports that do settle it end the count at once.
        let mut fresh = sender.subscribe();
        for (replica, applied) in [(a, 10), (b, 11)] {
            let _ = sender.send(Some(ReplicaProgress { replica, applied }));
        }
        let far = Instant::now() + Duration::from_secs(30);
        assert!(count_reports(&mut fresh, &mut tally, far).await);
        assert!(tally.outcome().complete());
        // A report without details asks for a read.
        let mut other = Tally::new(10);
        other.read(vec![row(a, "a", false)]);
        let mut detailless = sender.subscribe();
        let _ = sender.send(None);
        assert!(!count_reports(&mut detailless, &mut other, far).await);
    }

    #[test]
    fn replicas_still_pending_at_the_end_are_unconfirmed() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let mut tally = Tally::new(10);
        tally.read(vec![row(a, "a", true), row(b, "b", false)]);
        let outcome = tally.outcome();
        assert_eq!(outcome.confirmed(), 1);
        assert_eq!(outcome.unconfirmed, ["b"]);
        assert!(!outcome.complete());
    }
}

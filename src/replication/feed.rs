//! How far each replica has applied key events, as waiting mutations learn it:
//! reports from other replicas as they arrive, and this replica's own
//! progress, recorded in process.

use std::sync::atomic::{AtomicI64, Ordering};

/// A replica's report that it has applied every event up to `applied`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaProgress {
    pub replica: uuid::Uuid,
    pub applied: i64,
}

/// Reports waiting mutations may miss before they read the table again.
const PROGRESS_FEED_CAPACITY: usize = 1024;

/// Progress reports as they arrive; `None` is a report without details
/// (waiters read the replicas table again). This replica's own progress goes
/// here directly, not through the database: its own waits read it in process.
pub struct ProgressFeed {
    reports: tokio::sync::broadcast::Sender<Option<ReplicaProgress>>,
    /// The last event sequence this replica has applied to its cache (0:
    /// none yet); the one record of it.
    own_applied: AtomicI64,
}

impl Default for ProgressFeed {
    fn default() -> Self {
        ProgressFeed {
            reports: tokio::sync::broadcast::channel(PROGRESS_FEED_CAPACITY).0,
            own_applied: AtomicI64::new(0),
        }
    }
}

impl ProgressFeed {
    /// Tells every waiting mutation of `report` (`None`: read the table).
    pub fn publish(&self, report: Option<ReplicaProgress>) {
        // An error only means that nobody is waiting.
        let _ = self.reports.send(report);
    }

    /// Records that this replica has applied every event up to `applied`,
    /// for its waits to read (see [`ProgressFeed::own_applied`]).
    pub fn record_own(&self, applied: i64) {
        self.own_applied.fetch_max(applied, Ordering::SeqCst);
    }

    /// Takes back a recorded sequence beyond `latest`, the newest event
    /// committed when `claimed` had been read: only a forged notification can
    /// claim one (anyone who can connect to the database can send one).
    /// Leaves a value recorded since `claimed` was read alone (a forger who
    /// keeps raising the claim keeps it; see the README). A real event applied
    /// meanwhile that did not raise the value (it was below the claim) is not
    /// counted: the value falls back to `latest` and this replica reports
    /// itself behind until its next event, which errs on the safe side.
    /// Whether it took one back.
    pub fn bound_own(&self, claimed: i64, latest: i64) -> bool {
        claimed > latest
            && self
                .own_applied
                .compare_exchange(claimed, latest, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
    }

    /// Tells this replica's waits (it is `replica`) how far it has applied
    /// events, as recorded.
    pub fn publish_own(&self, replica: uuid::Uuid) {
        self.publish(Some(self.own_progress(replica)));
    }

    /// This replica's (it is `replica`) progress as recorded: a wait that
    /// subscribed after it was published reads it here.
    pub fn own_progress(&self, replica: uuid::Uuid) -> ReplicaProgress {
        ReplicaProgress {
            replica,
            applied: self.own_applied(),
        }
    }

    /// The last event sequence this replica has applied, as recorded.
    pub fn own_applied(&self) -> i64 {
        self.own_applied.load(Ordering::SeqCst)
    }

    /// Reports from now on, for a mutation waiting on replicas.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Option<ReplicaProgress>> {
        self.reports.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_progress_is_told_only_when_published_and_never_goes_back() {
        let feed = ProgressFeed::default();
        assert_eq!(feed.own_applied(), 0);
        let mut waiting = feed.subscribe();
        feed.record_own(4);
        assert!(waiting.try_recv().is_err(), "recording tells nobody");
        let replica = uuid::Uuid::new_v4();
        feed.record_own(5);
        feed.publish_own(replica);
        assert_eq!(
            waiting.try_recv().unwrap().map(|heard| heard.applied),
            Some(5)
        );
        feed.record_own(3);
        assert_eq!(feed.own_applied(), 5);
    }

    #[test]
    fn a_claim_beyond_the_newest_event_is_taken_back_unless_it_moved_since() {
        let feed = ProgressFeed::default();
        feed.record_own(i64::MAX);
        assert!(!feed.bound_own(i64::MAX, i64::MAX), "not beyond");
        assert!(!feed.bound_own(7, 3), "not what is recorded");
        assert!(feed.bound_own(i64::MAX, 3));
        assert_eq!(feed.own_applied(), 3);
        feed.record_own(5);
        assert!(!feed.bound_own(5, 9));
        assert_eq!(feed.own_applied(), 5);
    }
}

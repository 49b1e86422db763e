//! Whether this replica may trust its cache right now.
//!
//! The cache is trusted only while the replica's event listener is connected
//! and its lease (the heartbeat in the `replicas` table) is current. Every
//! loss or regain of either starts a new *epoch*. A cached entry remembers the
//! epoch in which it was last confirmed against the database; an entry from an
//! older epoch, or any entry while the cache is untrusted, is checked against
//! the key's current version (one indexed read, no argon2) before use.
//!
//! Evictions from notifications also leave a *tombstone* (the key's new
//! version) for a minute, so that a load that read the row before the change
//! committed can never put the old state back: an entry older than its
//! tombstone is treated as stale.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use crate::token::KeyId;

/// How long a tombstone outlives its eviction.
pub const TOMBSTONE_LIFETIME: Duration = Duration::from_secs(60);

/// What Authorize does with a cached key it cannot confirm because the
/// database is unreachable while the cache is untrusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StalePolicy {
    /// Deny with reason `unverifiable` (the default).
    FailClosed,
    /// Keep answering from the cache for at most this long after trust was lost.
    ServeStale(Duration),
}

#[derive(Default)]
pub struct Freshness {
    listener_connected: AtomicBool,
    lease_valid: AtomicBool,
    epoch: AtomicU64,
    /// Unix milliseconds when trust was last lost; 0 while trusted.
    lost_at_millis: AtomicI64,
    tombstones: ArcSwap<HashMap<KeyId, (i64, Instant)>>,
    tombstone_writer: Mutex<()>,
    /// Unix milliseconds of the last failed version check; 0 if none.
    check_failed_at_millis: AtomicI64,
    /// Woken whenever any replica reports progress (for propagation waits).
    pub replica_progress: tokio::sync::Notify,
}

/// How long one version check may take before it counts as failed.
pub const VERSION_CHECK_TIMEOUT: Duration = Duration::from_millis(250);
/// After a failed version check, how long checks are skipped (the policy for an
/// unreachable database applies at once instead of waiting again).
pub const CHECK_BACKOFF: Duration = Duration::from_secs(1);

fn now_millis() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Freshness {
    pub fn new() -> Arc<Freshness> {
        Arc::new(Freshness::default())
    }

    /// A cache that never loses trust: for tools and benchmarks that run no listener.
    pub fn always_trusted() -> Arc<Freshness> {
        let freshness = Freshness::default();
        freshness.listener_connected.store(true, Ordering::SeqCst);
        freshness.lease_valid.store(true, Ordering::SeqCst);
        freshness.epoch.store(1, Ordering::SeqCst);
        Arc::new(freshness)
    }

    pub fn is_trusted(&self) -> bool {
        self.listener_connected.load(Ordering::SeqCst) && self.lease_valid.load(Ordering::SeqCst)
    }

    pub fn listener_connected(&self) -> bool {
        self.listener_connected.load(Ordering::SeqCst)
    }

    /// The current epoch if the cache is trusted, else 0 (which no entry matches).
    pub fn trusted_epoch(&self) -> u64 {
        let epoch = self.epoch.load(Ordering::SeqCst);
        if self.is_trusted() {
            epoch
        } else {
            0
        }
    }

    fn set(&self, flag: &AtomicBool, value: bool) {
        let was_trusted = self.is_trusted();
        if flag.swap(value, Ordering::SeqCst) == value {
            return;
        }
        self.epoch.fetch_add(1, Ordering::SeqCst);
        match (was_trusted, self.is_trusted()) {
            (true, false) => self.lost_at_millis.store(now_millis(), Ordering::SeqCst),
            (false, true) => self.lost_at_millis.store(0, Ordering::SeqCst),
            _ => {}
        }
    }

    pub fn set_listener_connected(&self, connected: bool) {
        self.set(&self.listener_connected, connected);
    }

    pub fn set_lease_valid(&self, valid: bool) {
        self.set(&self.lease_valid, valid);
    }

    /// How long the cache has been untrusted; zero while trusted.
    pub fn untrusted_for(&self) -> Duration {
        match self.lost_at_millis.load(Ordering::SeqCst) {
            0 => Duration::ZERO,
            lost => Duration::from_millis(u64::try_from(now_millis() - lost).unwrap_or(0)),
        }
    }

    /// Notes that a version check failed (the database is unreachable).
    pub fn note_check_failed(&self) {
        self.check_failed_at_millis
            .store(now_millis(), Ordering::SeqCst);
    }

    /// Whether a version check failed so recently that trying again is pointless.
    pub fn checks_backing_off(&self) -> bool {
        let failed_at = self.check_failed_at_millis.load(Ordering::SeqCst);
        failed_at != 0 && now_millis() - failed_at < CHECK_BACKOFF.as_millis() as i64
    }

    /// Whether a cached entry of `version` is older than a recent change.
    pub fn is_superseded(&self, id: &KeyId, version: i64) -> bool {
        let tombstones = self.tombstones.load();
        !tombstones.is_empty()
            && tombstones
                .get(id)
                .is_some_and(|(newer, _)| version < *newer)
    }

    /// Records that `id` changed to `version`; drops expired tombstones and
    /// returns their key ids (to be evicted once more).
    pub fn add_tombstone(&self, id: KeyId, version: i64) -> Vec<KeyId> {
        let _writer = self
            .tombstone_writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = Instant::now();
        let current = self.tombstones.load();
        let mut next = HashMap::with_capacity(current.len() + 1);
        let mut expired = Vec::new();
        for (key_id, (newer, at)) in current.iter() {
            if now.duration_since(*at) < TOMBSTONE_LIFETIME {
                next.insert(*key_id, (*newer, *at));
            } else {
                expired.push(*key_id);
            }
        }
        let previous = next.get(&id).map_or(i64::MIN, |(newer, _)| *newer);
        next.insert(id, (version.max(previous), now));
        self.tombstones.store(Arc::new(next));
        expired
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trust_needs_both_listener_and_lease_and_each_change_is_a_new_epoch() {
        let freshness = Freshness::new();
        assert_eq!(freshness.trusted_epoch(), 0);
        freshness.set_listener_connected(true);
        assert_eq!(freshness.trusted_epoch(), 0);
        freshness.set_lease_valid(true);
        let first = freshness.trusted_epoch();
        assert_ne!(first, 0);
        freshness.set_listener_connected(false);
        assert_eq!(freshness.trusted_epoch(), 0);
        freshness.set_listener_connected(true);
        let second = freshness.trusted_epoch();
        assert!(second > first);
        assert_eq!(freshness.untrusted_for(), Duration::ZERO);
    }

    #[test]
    fn tombstones_supersede_older_versions_only() {
        let freshness = Freshness::new();
        let id = KeyId::generate();
        freshness.add_tombstone(id, 5);
        assert!(freshness.is_superseded(&id, 4));
        assert!(!freshness.is_superseded(&id, 5));
        freshness.add_tombstone(id, 3);
        assert!(
            freshness.is_superseded(&id, 4),
            "a tombstone never moves back"
        );
        assert!(!freshness.is_superseded(&KeyId::generate(), 1));
    }
}

//! Whether this replica may trust its cache right now.
//!
//! The cache is trusted only while the replica's event listener is connected
//! and its lease (the heartbeat in the `replicas` table) is current. Every
//! loss or regain of either starts a new *epoch*. A cached entry remembers the
//! epoch in which it was last confirmed against the database; an entry from an
//! older epoch, or any entry while the cache is untrusted, is checked against
//! the key's current version (one indexed read, no argon2) before use.
//!
//! Every change a notification brings also leaves a *tombstone* (the key's new
//! version) for a minute, so that a load that read the row before the change
//! committed can never put the old state back: an entry older than its
//! tombstone is treated as stale.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use crate::domain::token::KeyId;

/// How long a tombstone outlives its eviction.
pub const TOMBSTONE_LIFETIME: Duration = Duration::from_secs(60);

/// The newest version each recently changed key has reached, and when its
/// tombstone was last left.
type Tombstones = imbl::HashMap<KeyId, (i64, Instant)>;

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
    /// Unix milliseconds until which this replica's lease holds (0: none yet).
    lease_until_millis: AtomicI64,
    epoch: AtomicU64,
    /// Unix milliseconds when the listener was last lost (or tracking began).
    listener_lost_at_millis: AtomicI64,
    /// Serializes changes of trust and the epoch bumps that go with them;
    /// holds whether the replica has stopped (see [`Freshness::stop`]).
    transitions: Mutex<bool>,
    tombstones: ArcSwap<Tombstones>,
    /// Every tombstone left, oldest first, to retire them as they expire (a
    /// renewed one is also listed again); held by the one writer at a time.
    tombstone_writer: Mutex<VecDeque<(Instant, KeyId)>>,
    /// Unix milliseconds of the last failed version check; 0 if none.
    check_failed_at_millis: AtomicI64,
}

/// How long one version check may take before it counts as failed.
pub const VERSION_CHECK_TIMEOUT: Duration = Duration::from_millis(250);
/// After a failed version check, how long checks are skipped (the policy for an
/// unreachable database applies at once instead of waiting again).
pub const CHECK_BACKOFF: Duration = Duration::from_secs(1);

pub fn now_millis() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Freshness {
    /// Untrusted until the listener connects and the lease is first renewed.
    pub fn new() -> Arc<Freshness> {
        let freshness = Freshness::default();
        let now = now_millis();
        freshness
            .listener_lost_at_millis
            .store(now, Ordering::SeqCst);
        // No lease yet: it counts as having lapsed now.
        freshness.lease_until_millis.store(now, Ordering::SeqCst);
        Arc::new(freshness)
    }

    /// A cache that never loses trust: for tools and benchmarks that run no listener.
    pub fn always_trusted() -> Arc<Freshness> {
        let freshness = Freshness::default();
        freshness.listener_connected.store(true, Ordering::SeqCst);
        freshness
            .lease_until_millis
            .store(i64::MAX, Ordering::SeqCst);
        freshness.epoch.store(1, Ordering::SeqCst);
        Arc::new(freshness)
    }

    fn lease_holds(&self, now: i64) -> bool {
        now < self.lease_until_millis.load(Ordering::SeqCst)
    }

    /// Listener connected and lease current, checked against the clock on every call.
    pub fn is_trusted(&self) -> bool {
        self.listener_connected.load(Ordering::SeqCst) && self.lease_holds(now_millis())
    }

    pub fn listener_connected(&self) -> bool {
        self.listener_connected.load(Ordering::SeqCst)
    }

    /// The current epoch if the cache is trusted, else 0 (which no entry matches).
    /// Transitions to trusted start a new epoch before trust shows, so an epoch
    /// read on both sides of the trust check, and unchanged, was trusted.
    pub fn trusted_epoch(&self) -> u64 {
        let epoch = self.epoch.load(Ordering::SeqCst);
        if !self.is_trusted() || self.epoch.load(Ordering::SeqCst) != epoch {
            return 0;
        }
        epoch
    }

    fn lock_transitions(&self) -> MutexGuard<'_, bool> {
        self.transitions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn set_listener_connected(&self, connected: bool) {
        let stopped = self.lock_transitions();
        if self.listener_connected.load(Ordering::SeqCst) == connected || (connected && *stopped) {
            return;
        }
        if connected {
            // The new epoch first: nothing validated before counts once trusted.
            self.epoch.fetch_add(1, Ordering::SeqCst);
            self.listener_connected.store(true, Ordering::SeqCst);
        } else {
            self.listener_lost_at_millis
                .store(now_millis(), Ordering::SeqCst);
            self.listener_connected.store(false, Ordering::SeqCst);
            self.epoch.fetch_add(1, Ordering::SeqCst);
        }
        metrics::gauge!("keygate_event_listener_connected").set(if connected { 1.0 } else { 0.0 });
    }

    /// Takes trust away for good, when the replica stops listening and
    /// heartbeating: an aborted task may still be in the middle of a poll on
    /// another thread, and a listener that marks itself connected after this
    /// is ignored.
    pub fn stop(&self) {
        *self.lock_transitions() = true;
        self.set_listener_connected(false);
    }

    /// Extends the lease to `until_millis`. A lease that had lapsed (or never
    /// held) starts a new epoch, so entries are confirmed again.
    pub fn renew_lease(&self, until_millis: i64) {
        let _transition = self.lock_transitions();
        if !self.lease_holds(now_millis()) {
            self.epoch.fetch_add(1, Ordering::SeqCst);
        }
        self.lease_until_millis
            .store(until_millis, Ordering::SeqCst);
    }

    /// How long the cache has been untrusted; zero while trusted.
    pub fn untrusted_for(&self) -> Duration {
        let now = now_millis();
        if self.is_trusted() {
            return Duration::ZERO;
        }
        let mut since = now;
        if !self.listener_connected() {
            since = since.min(self.listener_lost_at_millis.load(Ordering::SeqCst));
        }
        if !self.lease_holds(now) {
            since = since.min(self.lease_until_millis.load(Ordering::SeqCst));
        }
        Duration::from_millis(u64::try_from(now - since).unwrap_or(u64::MAX))
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

    /// Records that `id` changed to `version`, and retires expired tombstones:
    /// `evict` is called with each one's key id and version before the
    /// tombstone goes (to evict entries older than that version), so
    /// that a stale entry it was guarding is never seen unguarded.
    pub fn add_tombstone(&self, id: KeyId, version: i64, evict: impl FnMut(KeyId, i64)) {
        let mut left = self.lock_tombstone_queue();
        // Read under the lock, so that the queue stays in time order.
        let now = Instant::now();
        self.leave_tombstone(&mut left, id, version, now, evict);
    }

    fn lock_tombstone_queue(&self) -> MutexGuard<'_, VecDeque<(Instant, KeyId)>> {
        self.tombstone_writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The map is persistent: the copy that readers keep using shares all but
    /// a few nodes with the new one, so leaving a tombstone costs O(log n)
    /// however many are live.
    fn leave_tombstone(
        &self,
        left: &mut VecDeque<(Instant, KeyId)>,
        id: KeyId,
        version: i64,
        now: Instant,
        mut evict: impl FnMut(KeyId, i64),
    ) {
        let mut next = Tombstones::clone(&self.tombstones.load());
        while let Some(&(left_at, old_id)) = left.front() {
            if now.saturating_duration_since(left_at) < TOMBSTONE_LIFETIME {
                break;
            }
            left.pop_front();
            // Only the latest listing of a tombstone retires it.
            if let Some(&(guarded, renewed_at)) = next.get(&old_id) {
                if renewed_at == left_at {
                    evict(old_id, guarded);
                    next.remove(&old_id);
                }
            }
        }
        // After a burst, give back most of what the queue grew to.
        if left.capacity() > 1024 && left.len() < left.capacity() / 4 {
            left.shrink_to(left.len() * 2);
        }
        let previous = next.get(&id).map_or(i64::MIN, |(newer, _)| *newer);
        next.insert(id, (version.max(previous), now));
        left.push_back((now, id));
        self.tombstones.store(Arc::new(next));
    }

    /// `add_tombstone` at a given time; returns the retired tombstones' key ids.
    #[cfg(test)]
    fn add_tombstone_at(&self, id: KeyId, version: i64, now: Instant) -> Vec<KeyId> {
        let mut left = self.lock_tombstone_queue();
        let mut evicted = Vec::new();
        self.leave_tombstone(&mut left, id, version, now, |expired, _| {
            evicted.push(expired)
        });
        evicted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trust_needs_both_listener_and_lease_and_each_change_is_a_new_epoch() {
        let freshness = Freshness::new();
        assert_eq!(freshness.trusted_epoch(), 0);
        assert!(freshness.untrusted_for() < Duration::from_secs(1));
        freshness.set_listener_connected(true);
        assert_eq!(freshness.trusted_epoch(), 0);
        freshness.renew_lease(now_millis() + 60_000);
        let first = freshness.trusted_epoch();
        assert_ne!(first, 0);
        freshness.renew_lease(now_millis() + 60_000);
        assert_eq!(
            freshness.trusted_epoch(),
            first,
            "renewing a held lease keeps the epoch"
        );
        freshness.set_listener_connected(false);
        assert_eq!(freshness.trusted_epoch(), 0);
        freshness.set_listener_connected(true);
        let second = freshness.trusted_epoch();
        assert!(second > first);
        assert_eq!(freshness.untrusted_for(), Duration::ZERO);
    }

    #[test]
    fn a_lapsed_lease_is_untrusted_by_the_clock_and_renewal_starts_a_new_epoch() {
        let freshness = Freshness::new();
        freshness.set_listener_connected(true);
        freshness.renew_lease(now_millis() + 60_000);
        let before = freshness.trusted_epoch();
        freshness.renew_lease(now_millis() - 1);
        assert_eq!(
            freshness.trusted_epoch(),
            0,
            "lapsed without anyone saying so"
        );
        assert!(freshness.untrusted_for() > Duration::ZERO);
        freshness.renew_lease(now_millis() + 60_000);
        assert!(freshness.trusted_epoch() > before);
    }

    #[test]
    fn a_stopped_replica_never_trusts_its_cache_again() {
        let freshness = Freshness::new();
        freshness.set_listener_connected(true);
        freshness.renew_lease(now_millis() + 60_000);
        assert_ne!(freshness.trusted_epoch(), 0);
        freshness.stop();
        assert_eq!(freshness.trusted_epoch(), 0);
        // As a listener aborted in the middle of connecting would, and a
        // heartbeat aborted after its renewal.
        freshness.set_listener_connected(true);
        freshness.renew_lease(now_millis() + 60_000);
        assert!(!freshness.listener_connected());
        assert_eq!(freshness.trusted_epoch(), 0);
    }

    #[test]
    fn tombstones_supersede_older_versions_only() {
        let freshness = Freshness::new();
        let id = KeyId::generate();
        freshness.add_tombstone(id, 5, |_, _| {});
        assert!(freshness.is_superseded(&id, 4));
        assert!(!freshness.is_superseded(&id, 5));
        freshness.add_tombstone(id, 3, |_, _| {});
        assert!(
            freshness.is_superseded(&id, 4),
            "a tombstone never moves back"
        );
        assert!(!freshness.is_superseded(&KeyId::generate(), 1));
    }

    #[test]
    fn tombstones_expire_a_minute_after_they_were_last_left() {
        let freshness = Freshness::new();
        let start = Instant::now();
        let at = |seconds: u64| start + Duration::from_secs(seconds);
        let (renewed, kept, other) = (KeyId::generate(), KeyId::generate(), KeyId::generate());
        assert!(freshness.add_tombstone_at(renewed, 2, at(0)).is_empty());
        assert!(freshness.add_tombstone_at(kept, 2, at(30)).is_empty());
        assert!(freshness.add_tombstone_at(renewed, 3, at(40)).is_empty());
        // The first listing of `renewed` is past its minute, but it was renewed.
        assert!(freshness.add_tombstone_at(other, 2, at(61)).is_empty());
        assert!(freshness.is_superseded(&renewed, 2));
        assert!(freshness.is_superseded(&kept, 1));
        let mut expired = freshness.add_tombstone_at(other, 3, at(101));
        expired.sort_by_key(|id| id.as_uuid());
        let mut expected = vec![renewed, kept];
        expected.sort_by_key(|id| id.as_uuid());
        assert_eq!(expired, expected);
        assert!(!freshness.is_superseded(&renewed, 2));
        assert!(!freshness.is_superseded(&kept, 1));
        assert!(freshness.is_superseded(&other, 2));
    }

    #[test]
    fn a_retired_tombstone_still_guards_its_key_while_the_key_is_evicted() {
        let freshness = Freshness::new();
        let start = Instant::now();
        let id = KeyId::generate();
        freshness.add_tombstone_at(id, 4, start);
        let later = start + TOMBSTONE_LIFETIME;
        let mut left = freshness.lock_tombstone_queue();
        let mut evicted = Vec::new();
        freshness.leave_tombstone(
            &mut left,
            KeyId::generate(),
            1,
            later,
            |expired, guarded| {
                assert!(freshness.is_superseded(&expired, 3));
                evicted.push((expired, guarded));
            },
        );
        assert_eq!(evicted, vec![(id, 4)]);
        assert!(!freshness.is_superseded(&id, 3));
    }

    #[test]
    fn many_tombstones_are_all_kept_until_they_expire() {
        let freshness = Freshness::new();
        let start = Instant::now();
        let ids: Vec<KeyId> = (0..20_000).map(|_| KeyId::generate()).collect();
        for (index, id) in ids.iter().enumerate() {
            let left_at = start + Duration::from_micros(index as u64);
            assert!(freshness.add_tombstone_at(*id, 7, left_at).is_empty());
        }
        assert!(ids.iter().all(|id| freshness.is_superseded(id, 6)));
        let later = start + TOMBSTONE_LIFETIME + Duration::from_secs(1);
        let expired = freshness.add_tombstone_at(KeyId::generate(), 1, later);
        assert_eq!(expired.len(), ids.len());
        assert!(ids.iter().all(|id| !freshness.is_superseded(id, 6)));
    }
}

//! Confirm: may a cached entry still be decided on? While the event stream and
//! the lease hold, an entry is current unless a tombstone supersedes it or a
//! policy reload replaced the catalog it was built under. An entry from before
//! the current trusted epoch is checked against the key's version in the
//! database; when that is impossible, the stale policy answers.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use super::decision::Reason;
use super::{Authorizer, VerifyError, MAX_ATTEMPTS_AFTER_A_CHANGE};
use crate::cache::CachedKey;
use crate::domain::token::KeyId;
use crate::freshness::{StalePolicy, TOMBSTONE_LIFETIME, VERSION_CHECK_TIMEOUT};
use crate::store::keys::{find_key_by_id, find_key_version};
use crate::store::StoreError;

/// A key's entry as the slow path settles it.
pub(super) enum Current {
    /// The entry, confirmed current.
    Entry(Arc<CachedKey>),
    /// No key has this id.
    UnknownKey,
    /// The entry cannot be confirmed (`Unverifiable`).
    Denied(Reason),
}

/// What confirming a cached entry off the hot path found.
enum Confirmation {
    Current(Arc<CachedKey>),
    Denied(Reason),
    /// The cache changed (evicted or rebuilt): look the key up again.
    Changed,
}

/// What the database said about a key's version.
enum StoredVersion {
    At(i64),
    /// The row is gone.
    Deleted,
    /// No answer: checks are backing off after a failure, or this one failed
    /// or timed out.
    NoAnswer,
}

impl Authorizer {
    /// The hot path's check: not superseded, built under the catalog in force,
    /// and confirmed in the current trusted epoch. The lease is checked
    /// against the clock here, not the request's start time: a retry after
    /// argon2 or a load may come seconds later, after the lease ran out.
    pub(super) fn is_confirmed(&self, entry: &CachedKey) -> bool {
        entry.validated_in(self.freshness.trusted_epoch())
            && !self
                .freshness
                .is_superseded(&entry.key.id, entry.key.version)
            && entry.permissions.catalog_generation() == self.policy.load().catalog.generation()
    }

    /// Whether `entry`, confirmed at `confirmed_at`, is still good to decide
    /// on after a wait: not superseded by a change, built under the catalog in
    /// force, confirmed in the current trusted epoch, and confirmed recently
    /// enough that any change since would still have its tombstone. Not
    /// whether the cache still holds it: a full cache may drop an entry the
    /// moment it is inserted (moka's admission), which says nothing about the
    /// key, and asking would send the request to argon2 again.
    pub(super) fn still_current(&self, entry: &CachedKey, confirmed_at: Instant) -> bool {
        confirmed_at.elapsed() < TOMBSTONE_LIFETIME / 2 && self.is_confirmed(entry)
    }

    /// The cached entry for `key_id`, confirmed current: trusted as is while the
    /// event stream and lease hold, else checked against the key's version in
    /// the database first. `Denied(Unverifiable)` when that is impossible and
    /// the policy is to fail closed.
    pub(super) async fn current_entry(&self, key_id: KeyId) -> Result<Current, VerifyError> {
        for _attempt in 0..MAX_ATTEMPTS_AFTER_A_CHANGE {
            let Some(entry) = self.cache.get_or_load(key_id, || self.load(key_id)).await? else {
                return Ok(Current::UnknownKey);
            };
            if self.is_confirmed(&entry) {
                return Ok(Current::Entry(entry));
            }
            // Boxed: the rare paths' futures are large, and every call would
            // otherwise carry (and allocate) their size.
            match Box::pin(self.confirm(key_id, entry)).await {
                Confirmation::Current(entry) => return Ok(Current::Entry(entry)),
                Confirmation::Denied(reason) => return Ok(Current::Denied(reason)),
                Confirmation::Changed => continue,
            }
        }
        Ok(Current::Denied(Reason::Unverifiable))
    }

    /// A future that loads `key_id` from the database into a cache entry.
    fn load(
        &self,
        key_id: KeyId,
    ) -> impl std::future::Future<Output = Result<Option<Arc<CachedKey>>, StoreError>> {
        let policy = self.policy.load_full();
        let pool = self.pool.clone();
        // Read before the row: a change during the load starts a new epoch.
        let epoch = self.freshness.trusted_epoch();
        async move {
            let stored = find_key_by_id(&pool, &key_id).await?;
            Ok(stored.map(|stored| Arc::new(CachedKey::new(stored, &policy, epoch))))
        }
    }

    /// Everything `is_confirmed` did not settle: a superseded entry is evicted,
    /// one built under a replaced catalog rebuilt, and an entry from before
    /// the current trusted epoch checked against the database.
    async fn confirm(&self, key_id: KeyId, entry: Arc<CachedKey>) -> Confirmation {
        if self.freshness.is_superseded(&key_id, entry.key.version) {
            self.cache.evict(&key_id);
            return Confirmation::Changed;
        }
        // Loaded under a catalog that a reload has since replaced.
        let policy = self.policy.load_full();
        if entry.permissions.catalog_generation() != policy.catalog.generation() {
            self.cache.apply_policy_to(key_id, &policy);
            return Confirmation::Changed;
        }
        let epoch = self.freshness.trusted_epoch();
        if entry.validated_in(epoch) {
            return Confirmation::Current(entry);
        }
        match self.stored_version(key_id).await {
            StoredVersion::At(version) if version == entry.key.version => {
                if epoch != 0 {
                    entry.validated_epoch.store(epoch, Ordering::SeqCst);
                }
                Confirmation::Current(entry)
            }
            StoredVersion::At(_) | StoredVersion::Deleted => {
                self.cache.evict(&key_id);
                Confirmation::Changed
            }
            StoredVersion::NoAnswer => self.unconfirmed(entry),
        }
    }

    /// The key's version in the database, asked within `VERSION_CHECK_TIMEOUT`
    /// and not at all while checks back off after a failure.
    async fn stored_version(&self, key_id: KeyId) -> StoredVersion {
        if self.freshness.checks_backing_off() {
            return StoredVersion::NoAnswer;
        }
        let check = find_key_version(&self.pool, &key_id);
        match tokio::time::timeout(VERSION_CHECK_TIMEOUT, check).await {
            Ok(Ok(Some(version))) => StoredVersion::At(version),
            Ok(Ok(None)) => StoredVersion::Deleted,
            Ok(Err(error)) => {
                tracing::warn!(key_id = %key_id, %error, "cannot confirm a cached key");
                self.freshness.note_check_failed();
                StoredVersion::NoAnswer
            }
            Err(_) => {
                tracing::warn!(key_id = %key_id, "confirming a cached key timed out");
                self.freshness.note_check_failed();
                StoredVersion::NoAnswer
            }
        }
    }

    /// The answer for an entry the database could not confirm: the entry as
    /// it is under `StalePolicy::ServeStale`, within its limit, else
    /// `Unverifiable`.
    fn unconfirmed(&self, entry: Arc<CachedKey>) -> Confirmation {
        // Stale answers only while the cache is untrusted (never to paper over
        // a failed check in a trusted epoch), and only for a bounded time after
        // trust was lost.
        if let StalePolicy::ServeStale(limit) = self.stale_policy {
            let untrusted = !self.freshness.is_trusted();
            if untrusted && self.freshness.untrusted_for() <= limit {
                return Confirmation::Current(entry);
            }
        }
        Confirmation::Denied(Reason::Unverifiable)
    }
}

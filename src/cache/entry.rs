//! A cached key: what a decision needs, the digests of the secrets argon2
//! has accepted for it, and the bookkeeping that travels with it (argon2
//! attempts, usage reports, the epoch it was confirmed in).

use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use subtle::ConstantTimeEq;

use super::{IdText, SecretDigest};
use crate::domain::events::StateChange;
use crate::domain::hashing::SecretHash;
use crate::domain::key::Key;
use crate::domain::permission::EffectivePermissions;
use crate::domain::policy::Policy;
use crate::store::keys::StoredKey;

/// Counts argon2 attempts for one key in the current one-second window.
pub struct AttemptWindow {
    pub(super) started: Instant,
    pub(super) attempts: u32,
}

impl AttemptWindow {
    fn new() -> AttemptWindow {
        AttemptWindow {
            started: Instant::now(),
            attempts: 0,
        }
    }

    /// Takes one attempt if the window has room.
    pub fn try_take(&mut self, limit: u32, now: Instant) -> bool {
        if now.duration_since(self.started) >= Duration::from_secs(1) {
            self.started = now;
            self.attempts = 0;
        }
        if self.attempts >= limit {
            return false;
        }
        self.attempts += 1;
        true
    }
}

/// A cached key: the stored record, its precomputed permissions, and digests of
/// the secrets argon2 has accepted.
pub struct CachedKey {
    pub key: Key,
    /// The key id and organization id (empty for a system key) as the API
    /// spells them, computed once and held inline.
    pub key_id_text: IdText,
    pub organization_id_text: IdText,
    pub permissions: EffectivePermissions,
    pub secret_hash: SecretHash,
    pub previous_secret_hash: Option<SecretHash>,
    pub(super) current_digest: OnceLock<SecretDigest>,
    pub(super) previous_digest: OnceLock<SecretDigest>,
    /// Serializes argon2 for this key (so a burst of first requests pays once)
    /// and limits how many run per second.
    pub verification: tokio::sync::Mutex<AttemptWindow>,
    /// Unix second from which this key's next use is reported to
    /// `last_used_at` (0: at once; see `usage`).
    pub usage_report_due: AtomicI64,
    /// The freshness epoch in which this entry was last confirmed against the
    /// database (0: never; see `freshness`).
    pub validated_epoch: std::sync::atomic::AtomicU64,
    /// When the row was read: the time to live counts from here, through
    /// rebuilds (a policy reload, a change followed in place).
    pub(super) loaded_at: Instant,
}

impl fmt::Debug for CachedKey {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("CachedKey")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl CachedKey {
    /// An entry read from the database in freshness epoch `epoch` (0 if untrusted).
    pub fn new(stored: StoredKey, policy: &Policy, epoch: u64) -> CachedKey {
        let permissions = policy.catalog.effective(&stored.key.scopes);
        CachedKey {
            key_id_text: IdText::of_key(&stored.key.id),
            organization_id_text: stored
                .key
                .organization_id
                .map(|id| IdText::of_uuid(&id))
                .unwrap_or_default(),
            key: stored.key,
            permissions,
            secret_hash: stored.secret_hash,
            previous_secret_hash: stored.previous_secret_hash,
            current_digest: OnceLock::new(),
            previous_digest: OnceLock::new(),
            verification: tokio::sync::Mutex::new(AttemptWindow::new()),
            usage_report_due: AtomicI64::new(0),
            validated_epoch: std::sync::atomic::AtomicU64::new(epoch),
            loaded_at: Instant::now(),
        }
    }

    /// The same entry with permissions recomputed under a new policy; the
    /// accepted digests carry over.
    pub(super) fn with_policy(&self, policy: &Policy) -> CachedKey {
        let permissions = policy.catalog.effective(&self.key.scopes);
        self.rebuilt(self.key.clone(), permissions)
    }

    /// The entry after a change that only takes access away (see
    /// [`Key::after_state_change`]); the scopes, and so the permissions, are
    /// unchanged.
    pub(super) fn after_state_change(&self, change: &StateChange) -> Option<CachedKey> {
        let key = self.key.after_state_change(change)?;
        Some(self.rebuilt(key, self.permissions.clone()))
    }

    /// This entry's secrets and bookkeeping around `key` and its
    /// `permissions`. The accepted digests carry over; the rotated-out secret
    /// only while `key` still has its grace deadline (a revocation ends it).
    fn rebuilt(&self, key: Key, permissions: EffectivePermissions) -> CachedKey {
        let keeps_previous = key.previous_secret_expires_at.is_some();
        let (previous_secret_hash, previous_digest) = if keeps_previous {
            (
                self.previous_secret_hash.clone(),
                self.previous_digest.clone(),
            )
        } else {
            (None, OnceLock::new())
        };
        CachedKey {
            permissions,
            key,
            key_id_text: self.key_id_text,
            organization_id_text: self.organization_id_text,
            secret_hash: self.secret_hash.clone(),
            previous_secret_hash,
            current_digest: self.current_digest.clone(),
            previous_digest,
            verification: tokio::sync::Mutex::new(AttemptWindow::new()),
            usage_report_due: AtomicI64::new(self.usage_report_due.load(Ordering::Relaxed)),
            validated_epoch: std::sync::atomic::AtomicU64::new(
                self.validated_epoch.load(Ordering::SeqCst),
            ),
            loaded_at: self.loaded_at,
        }
    }

    /// What is left of `ttl`, counted from when the row was read: zero once
    /// the entry has outlived it (moka's expiry and warm reads both use this).
    pub(super) fn time_to_live_left(&self, ttl: Duration) -> Duration {
        ttl.saturating_sub(self.loaded_at.elapsed())
    }

    /// Whether this entry was confirmed in `epoch`, a trusted epoch (never
    /// true for 0, the answer while the cache is untrusted).
    pub fn validated_in(&self, epoch: u64) -> bool {
        epoch != 0 && self.validated_epoch.load(Ordering::SeqCst) == epoch
    }

    /// Whether the previous secret is still inside its grace period at `now`.
    pub fn previous_in_grace(&self, now: chrono::DateTime<chrono::Utc>) -> bool {
        self.previous_secret_hash.is_some()
            && self
                .key
                .previous_secret_expires_at
                .is_some_and(|deadline| now < deadline)
    }

    /// Compares a digest with the accepted ones, in constant time.
    pub fn match_current(&self, digest: &SecretDigest) -> bool {
        self.current_digest
            .get()
            .is_some_and(|accepted| digests_match(accepted, digest))
    }

    pub fn match_previous(&self, digest: &SecretDigest) -> bool {
        self.previous_digest
            .get()
            .is_some_and(|accepted| digests_match(accepted, digest))
    }

    /// Records that argon2 accepted the secret with this digest.
    pub fn accept_current(&self, digest: SecretDigest) {
        let _ = self.current_digest.set(digest);
    }

    pub fn accept_previous(&self, digest: SecretDigest) {
        let _ = self.previous_digest.set(digest);
    }
}

/// Compares two digests in constant time: every byte's difference is folded
/// in, with no branch on the contents, and only the folded result is tested
/// (by `subtle`). `subtle`'s own slice comparison puts an optimization
/// barrier on every byte, which cost this hot-path step about ten times more.
pub(super) fn digests_match(accepted: &SecretDigest, presented: &SecretDigest) -> bool {
    let difference = accepted
        .iter()
        .zip(presented)
        .fold(0u8, |folded, (left, right)| folded | (left ^ right));
    bool::from(difference.ct_eq(&0))
}

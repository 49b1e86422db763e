//! The per-replica cache of keys, so that a warm Authorize does no I/O and no
//! argon2: a moka cache keyed by key id whose entries hold what a decision needs,
//! the key's effective permissions, and a keyed digest (HMAC-SHA256 under a
//! per-process random key) of each secret that argon2 has already accepted.
//!
//! Unknown key ids are cached too (as `None`) for a short time. A wrong secret
//! is never recorded; argon2 attempts per key id are limited, so a flood of bad
//! secrets for one key cannot burn the CPU.

use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use moka::future::Cache;
use moka::ops::compute::Op;
use moka::Expiry;
use rand::rngs::OsRng;
use rand::RngCore;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::hashing::SecretHash;
use crate::key::Key;
use crate::permission::EffectivePermissions;
use crate::policy::Policy;
use crate::store::keys::StoredKey;
use crate::token::KeyId;

/// HMAC-SHA256 of an accepted secret.
pub type SecretDigest = [u8; 32];

/// Cache sizing and lifetimes.
#[derive(Debug, Clone, Copy)]
pub struct CacheSettings {
    /// Most keys held at once.
    pub capacity: u64,
    /// How long a key stays cached; the backstop, not the invalidation mechanism.
    pub ttl: Duration,
    /// How long an unknown key id is remembered as unknown.
    pub negative_ttl: Duration,
    /// Most argon2 verifications per key id per second.
    pub verifications_per_second: u32,
}

impl Default for CacheSettings {
    fn default() -> Self {
        CacheSettings {
            capacity: 100_000,
            ttl: Duration::from_secs(300),
            negative_ttl: Duration::from_secs(5),
            verifications_per_second: 10,
        }
    }
}

/// Counts argon2 attempts for one key in the current one-second window.
pub struct AttemptWindow {
    started: Instant,
    attempts: u32,
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
    /// The key id and organization id as the API spells them, computed once.
    pub key_id_text: String,
    pub organization_id_text: String,
    pub permissions: EffectivePermissions,
    pub secret_hash: SecretHash,
    pub previous_secret_hash: Option<SecretHash>,
    current_digest: OnceLock<SecretDigest>,
    previous_digest: OnceLock<SecretDigest>,
    /// Serializes argon2 for this key (so a burst of first requests pays once)
    /// and limits how many run per second.
    pub verification: tokio::sync::Mutex<AttemptWindow>,
    /// Unix second of the last `last_used_at` report for this key.
    pub last_used_reported: AtomicI64,
    /// The freshness epoch in which this entry was last confirmed against the
    /// database (0: never; see `freshness`).
    pub validated_epoch: std::sync::atomic::AtomicU64,
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
            key_id_text: stored.key.id.to_string(),
            organization_id_text: stored
                .key
                .organization_id
                .map(|id| id.to_string())
                .unwrap_or_default(),
            key: stored.key,
            permissions,
            secret_hash: stored.secret_hash,
            previous_secret_hash: stored.previous_secret_hash,
            current_digest: OnceLock::new(),
            previous_digest: OnceLock::new(),
            verification: tokio::sync::Mutex::new(AttemptWindow::new()),
            last_used_reported: AtomicI64::new(0),
            validated_epoch: std::sync::atomic::AtomicU64::new(epoch),
        }
    }

    /// The same entry with permissions recomputed under a new policy; the
    /// accepted digests carry over.
    fn with_policy(&self, policy: &Policy) -> CachedKey {
        CachedKey {
            key: self.key.clone(),
            key_id_text: self.key_id_text.clone(),
            organization_id_text: self.organization_id_text.clone(),
            permissions: policy.catalog.effective(&self.key.scopes),
            secret_hash: self.secret_hash.clone(),
            previous_secret_hash: self.previous_secret_hash.clone(),
            current_digest: self.current_digest.clone(),
            previous_digest: self.previous_digest.clone(),
            verification: tokio::sync::Mutex::new(AttemptWindow::new()),
            last_used_reported: AtomicI64::new(self.last_used_reported.load(Ordering::Relaxed)),
            validated_epoch: std::sync::atomic::AtomicU64::new(
                self.validated_epoch.load(Ordering::SeqCst),
            ),
        }
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
fn digests_match(accepted: &SecretDigest, presented: &SecretDigest) -> bool {
    let difference = accepted
        .iter()
        .zip(presented)
        .fold(0u8, |folded, (left, right)| folded | (left ^ right));
    bool::from(difference.ct_eq(&0))
}

type Entry = Option<Arc<CachedKey>>;

struct EntryLifetime {
    ttl: Duration,
    negative_ttl: Duration,
}

impl Expiry<KeyId, Entry> for EntryLifetime {
    fn expire_after_create(
        &self,
        _id: &KeyId,
        entry: &Entry,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(if entry.is_some() {
            self.ttl
        } else {
            self.negative_ttl
        })
    }
}

/// The cache and the per-process digest key.
#[derive(Clone)]
pub struct KeyCache {
    entries: Cache<KeyId, Entry>,
    /// HMAC-SHA256 already keyed with a per-process random key; cloned per digest.
    keyed_mac: Hmac<Sha256>,
    settings: CacheSettings,
}

impl KeyCache {
    pub fn new(settings: CacheSettings) -> KeyCache {
        // A block-sized (64-byte) key makes keying infallible.
        let mut digest_key = [0u8; 64];
        OsRng.fill_bytes(&mut digest_key);
        let keyed_mac = <Hmac<Sha256> as KeyInit>::new(&digest_key.into());
        let entries = Cache::builder()
            .max_capacity(settings.capacity)
            .expire_after(EntryLifetime {
                ttl: settings.ttl,
                negative_ttl: settings.negative_ttl,
            })
            .build();
        KeyCache {
            entries,
            keyed_mac,
            settings,
        }
    }

    pub fn settings(&self) -> &CacheSettings {
        &self.settings
    }

    /// The keyed digest of a presented secret.
    pub fn digest(&self, secret: &str) -> SecretDigest {
        let mut mac = self.keyed_mac.clone();
        mac.update(secret.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// The cached entry for `id`, loading it with `load` on a miss; concurrent
    /// misses for one id share one load.
    pub async fn get_or_load<L, F, E>(&self, id: KeyId, load: L) -> Result<Entry, Arc<E>>
    where
        L: FnOnce() -> F,
        F: std::future::Future<Output = Result<Entry, E>>,
        E: Send + Sync + 'static,
    {
        if let Some(entry) = self.entries.get(&id).await {
            crate::observability::hot_path().cache_hits.increment(1);
            return Ok(entry);
        }
        crate::observability::hot_path().cache_misses.increment(1);
        // The loader is only built, and its (large) future only allocated, on a
        // miss, so the hit path stays small.
        Box::pin(self.entries.try_get_with(id, load())).await
    }

    /// Puts a key in the cache directly (benchmarks warm the cache this way).
    pub async fn insert(&self, entry: CachedKey) {
        self.entries
            .insert(entry.key.id, Some(Arc::new(entry)))
            .await;
    }

    /// Whether the cache currently holds exactly this entry for its key.
    pub async fn holds(&self, entry: &Arc<CachedKey>) -> bool {
        matches!(self.entries.get(&entry.key.id).await, Some(Some(held)) if Arc::ptr_eq(&held, entry))
    }

    /// Forgets a key (positive or negative entry).
    pub async fn evict(&self, id: &KeyId) {
        metrics::counter!("keygate_cache_evictions_total").increment(1);
        self.entries.invalidate(id).await;
    }

    /// Recomputes every entry's permissions under a new policy.
    pub async fn apply_policy(&self, policy: &Policy) {
        let ids: Vec<KeyId> = self.entries.iter().map(|(id, _)| *id).collect();
        for id in ids {
            self.apply_policy_to(id, policy).await;
        }
    }

    /// Recomputes one entry's permissions under `policy`, atomically with
    /// respect to other writes of that key.
    pub async fn apply_policy_to(&self, id: KeyId, policy: &Policy) {
        self.entries
            .entry(id)
            .and_compute_with(|existing| {
                let rebuilt = existing
                    .and_then(|entry| entry.into_value())
                    .map(|cached| Op::Put(Some(Arc::new(cached.with_policy(policy)))))
                    .unwrap_or(Op::Nop);
                std::future::ready(rebuilt)
            })
            .await;
    }

    pub fn entry_count(&self) -> u64 {
        self.entries.entry_count()
    }

    /// Applies pending evictions and expirations (for measurements and tests).
    pub async fn run_pending_tasks(&self) {
        self.entries.run_pending_tasks().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempt_windows_refill_each_second() {
        let start = Instant::now();
        let mut window = AttemptWindow {
            started: start,
            attempts: 0,
        };
        assert!(window.try_take(2, start));
        assert!(window.try_take(2, start));
        assert!(!window.try_take(2, start + Duration::from_millis(500)));
        assert!(window.try_take(2, start + Duration::from_millis(1000)));
    }

    #[test]
    fn digests_match_only_when_every_byte_does() {
        let accepted: SecretDigest = std::array::from_fn(|index| index as u8);
        assert!(digests_match(&accepted, &accepted.clone()));
        for index in 0..accepted.len() {
            for flipped_bit in [0x01u8, 0x80] {
                let mut presented = accepted;
                presented[index] ^= flipped_bit;
                assert!(!digests_match(&accepted, &presented), "byte {index}");
            }
        }
    }

    #[test]
    fn digests_are_keyed_per_cache() {
        let first = KeyCache::new(CacheSettings::default());
        let second = KeyCache::new(CacheSettings::default());
        assert_eq!(first.digest("secret"), first.digest("secret"));
        assert_ne!(first.digest("secret"), first.digest("secreT"));
        assert_ne!(first.digest("secret"), second.digest("secret"));
    }
}

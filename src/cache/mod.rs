//! The per-replica cache of keys, so that a warm Authorize does no I/O and no
//! argon2: a moka cache keyed by key id whose entries hold what a decision needs,
//! the key's effective permissions, and a keyed digest (HMAC-SHA256 under a
//! per-process random key) of each secret that argon2 has already accepted.
//!
//! Unknown key ids are cached too (a read finds `Lookup::UnknownKey`) for a
//! short time. A wrong secret is never recorded; argon2 attempts per key id are
//! limited, so a flood of bad secrets for one key cannot burn the CPU.
//!
//! Reads are synchronous (moka's `sync` cache), so that a warm Authorize runs
//! start to finish without an await; reads go to the read index that
//! mirrors moka (see `read_index`). Loads are asynchronous and single-flight:
//! requests that miss the same key while it loads share that one load.

mod accepted_digests;
mod entry;
mod id_text;
mod read_index;
mod single_flight;

pub use entry::{AttemptWindow, CachedKey};
pub use id_text::IdText;

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use moka::notification::RemovalCause;
use moka::ops::compute::{CompResult, Op};
use moka::sync::Cache;
use moka::Expiry;
use rand::rngs::OsRng;
use rand::RngCore;
use sha2::Sha256;

use crate::domain::events::StateChange;
use crate::domain::policy::Policy;
use crate::domain::token::KeyId;
use crate::store::StoreError;
use read_index::ReadIndex;

/// Cache hits and misses, counted by the reads that answer requests.
pub struct CacheCounters {
    pub hits: metrics::Counter,
    pub misses: metrics::Counter,
}

static COUNTERS: OnceLock<CacheCounters> = OnceLock::new();

/// The cache's hit and miss counters, registered once so that a read only
/// does an atomic add.
pub fn counters() -> &'static CacheCounters {
    COUNTERS.get_or_init(|| CacheCounters {
        hits: metrics::counter!("keygate_cache_hits_total"),
        misses: metrics::counter!("keygate_cache_misses_total"),
    })
}

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

/// A cached key, or `None` for a key id known not to exist.
pub type Entry = Option<Arc<CachedKey>>;

/// What a warm read found for a key id.
#[derive(Debug)]
pub enum Lookup {
    /// The key's entry.
    Cached(Arc<CachedKey>),
    /// The id is remembered as not existing (for `negative_ttl`).
    UnknownKey,
    /// Nothing is cached for the id: it must be loaded.
    NotCached,
}

impl Lookup {
    /// The key's entry, if one is cached.
    pub fn into_entry(self) -> Option<Arc<CachedKey>> {
        match self {
            Lookup::Cached(entry) => Some(entry),
            Lookup::UnknownKey | Lookup::NotCached => None,
        }
    }
}

/// What loading a key from the database gave.
pub type LoadResult = Result<Entry, Arc<StoreError>>;

/// Keys expire `ttl` after their row was read (`CachedKey::loaded_at`), the
/// deadline warm reads check too. Rebuilding an entry under a new policy or
/// following a change in place keeps it (moka's `time_to_live` would restart
/// it, and frequent rebuilds would then keep a key cached forever); a reload
/// starts a new one.
struct LoadedLifetime {
    ttl: Duration,
}

impl LoadedLifetime {
    fn left(&self, entry: &CachedKey) -> Option<Duration> {
        Some(entry.time_to_live_left(self.ttl))
    }
}

impl Expiry<KeyId, Arc<CachedKey>> for LoadedLifetime {
    fn expire_after_create(
        &self,
        _id: &KeyId,
        entry: &Arc<CachedKey>,
        _created_at: Instant,
    ) -> Option<Duration> {
        self.left(entry)
    }

    fn expire_after_update(
        &self,
        _id: &KeyId,
        entry: &Arc<CachedKey>,
        _updated_at: Instant,
        _left: Option<Duration>,
    ) -> Option<Duration> {
        self.left(entry)
    }
}

/// The cache and the per-process digest key.
#[derive(Clone)]
pub struct KeyCache {
    /// Keys found in the database.
    keys: Cache<KeyId, Arc<CachedKey>>,
    /// What warm reads use: `keys`' entries in a plain sharded map.
    index: Arc<ReadIndex>,
    /// Key ids found not to exist, remembered for `negative_ttl` (a cache of
    /// its own, so that a flood of unknown ids cannot push out real keys).
    unknown: Cache<KeyId, ()>,
    loads: Arc<single_flight::Loads>,
    /// What argon2 accepted for keys evicted lately, for their reloads.
    accepted_digests: accepted_digests::AcceptedDigests,
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
        let index = Arc::new(ReadIndex::new());
        let listener_index = index.clone();
        let keys = Cache::builder()
            .max_capacity(settings.capacity)
            .expire_after(LoadedLifetime { ttl: settings.ttl })
            // Called with no index lock held: moka is never called under one.
            .eviction_listener(
                move |id: Arc<KeyId>, removed: Arc<CachedKey>, _cause: RemovalCause| {
                    listener_index.remove_if_same(&id, &removed);
                },
            )
            .build();
        let unknown = Cache::builder()
            .max_capacity(settings.capacity)
            .time_to_live(settings.negative_ttl)
            .build();
        KeyCache {
            keys,
            index,
            unknown,
            loads: Arc::default(),
            accepted_digests: accepted_digests::AcceptedDigests::new(),
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

    /// What is cached for `id`; a read with no await, from the read index
    /// (see `read_index`), which holds every entry moka holds: asking moka
    /// too would only cost a miss, an unknown key's above all.
    pub fn get(&self, id: &KeyId) -> Lookup {
        if let Some(cached) = self.indexed(id) {
            return Lookup::Cached(cached);
        }
        if self.unknown.contains_key(id) {
            return Lookup::UnknownKey;
        }
        Lookup::NotCached
    }

    /// The cached entry for `id`, loading it with `load` on a miss; concurrent
    /// misses for one id share one load.
    pub async fn get_or_load<L, F>(&self, id: KeyId, load: L) -> LoadResult
    where
        L: FnOnce() -> F,
        F: Future<Output = Result<Entry, StoreError>>,
    {
        let known = match self.get(&id) {
            Lookup::Cached(entry) => Some(entry),
            Lookup::UnknownKey => None,
            Lookup::NotCached => {
                counters().misses.increment(1);
                // Boxed: the loader's future is large and only needed on a miss.
                return Box::pin(self.load_once(id, load)).await;
            }
        };
        counters().hits.increment(1);
        Ok(known)
    }

    /// Runs `load` for `id` and caches its result, unless a load of `id` is
    /// already running: then waits for that one and shares its result.
    async fn load_once<L, F>(&self, id: KeyId, load: L) -> LoadResult
    where
        L: FnOnce() -> F,
        F: Future<Output = Result<Entry, StoreError>>,
    {
        self.loads
            .run(id, || async {
                // A load that finished just before this one started has
                // already filled the cache.
                match self.get(&id) {
                    Lookup::Cached(entry) => return Ok(Some(entry)),
                    Lookup::UnknownKey => return Ok(None),
                    Lookup::NotCached => {}
                }
                let entry = load().await.map_err(Arc::new)?;
                self.put(id, entry.clone());
                Ok(entry)
            })
            .await
    }

    fn put(&self, id: KeyId, entry: Entry) {
        match entry {
            Some(cached) => {
                self.accepted_digests.carry_into(&cached);
                self.write(id, |_| Op::Put(cached));
                self.unknown.invalidate(&id);
            }
            None => {
                self.unknown.insert(id, ());
                self.write(id, |_| Op::Remove);
            }
        }
    }

    /// Puts a key in the cache directly (benchmarks warm the cache this way).
    pub fn insert(&self, entry: CachedKey) {
        self.put(entry.key.id, Some(Arc::new(entry)));
    }

    /// Forgets a key (positive or negative entry); the secrets argon2
    /// accepted for it carry over to its reload if its hashes are unchanged.
    pub fn evict(&self, id: &KeyId) {
        if let CompResult::Removed(evicted) = self.write(*id, |_| Op::Remove) {
            self.evicted(evicted.value());
        }
        self.unknown.invalidate(id);
    }

    /// Counts an entry that left the cache and remembers what argon2
    /// accepted for it.
    fn evicted(&self, entry: &CachedKey) {
        metrics::counter!("keygate_cache_evictions_total").increment(1);
        self.accepted_digests.remember(entry);
    }

    /// Follows a key event that brought key `id` to `version`: an entry at
    /// that version or later already holds the change and stays; one exactly
    /// one version behind takes a disable or a revocation in place, so that
    /// the next request needs no database read; any other
    /// entry is evicted as by [`KeyCache::evict`]. With no change, it evicts
    /// only an entry older than `version` (what a retiring tombstone guarded
    /// against).
    ///
    /// Serialized only with other computes of the key, not with a load's
    /// insert or an eviction racing it. Either order is safe: the entry put
    /// here is exactly the row at `version`, and the caller has left a
    /// tombstone at `version` first, so an older entry landing afterwards is
    /// never used.
    pub fn follow_event(&self, id: KeyId, version: i64, change: Option<StateChange>) {
        let outcome = self.write(id, |existing| {
            let Some(cached) = existing else {
                return Op::Nop;
            };
            if cached.key.version >= version {
                return Op::Nop;
            }
            let followed = change
                .and_then(|change| cached.after_state_change(&change))
                .filter(|changed| changed.key.version == version);
            match followed {
                Some(changed) => Op::Put(Arc::new(changed)),
                None => Op::Remove,
            }
        });
        match outcome {
            CompResult::ReplacedWith(_) => {
                metrics::counter!("keygate_cache_changes_followed_total").increment(1);
            }
            CompResult::Removed(evicted) => self.evicted(evicted.value()),
            CompResult::StillNone(_) | CompResult::Unchanged(_) | CompResult::Inserted(_) => {}
        }
        self.unknown.invalidate(&id);
    }

    /// Recomputes every entry's permissions under a new policy. Takes time in
    /// proportion to the cache's size: call it off the async workers.
    pub fn apply_policy(&self, policy: &Policy) {
        let ids: Vec<KeyId> = self.keys.iter().map(|(id, _)| *id).collect();
        for id in ids {
            self.apply_policy_to(id, policy);
        }
    }

    /// Recomputes one entry's permissions under `policy`, atomically with
    /// respect to other writes of that key.
    pub fn apply_policy_to(&self, id: KeyId, policy: &Policy) {
        self.write(id, |existing| match existing {
            Some(cached) => Op::Put(Arc::new(cached.with_policy(policy))),
            None => Op::Nop,
        });
    }

    /// Keys cached now (unknown key ids not counted).
    pub fn entry_count(&self) -> u64 {
        self.keys.entry_count()
    }

    /// Applies pending evictions and expirations (for measurements and tests).
    pub fn run_pending_tasks(&self) {
        self.keys.run_pending_tasks();
        self.unknown.run_pending_tasks();
    }
}

#[cfg(test)]
mod tests;

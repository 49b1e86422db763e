//! The warm path's view of the cache: a sharded hash map from key id to the
//! entry moka holds for it, read on every warm Authorize instead of moka.
//!
//! Why: a moka read follows about half a dozen dependent pointers (bucket
//! array, bucket, key, value entry, entry info, then the value) and records
//! the read for its eviction policy (a frequency sketch and an access-order
//! list). With 100,000 keys each of those is a cache miss, and moka's read
//! cost about 2 µs against 0.17 µs for one key (`cargo bench --bench
//! hot_path`). Here a read is one shard lock, one probe and the value.
//!
//! moka stays the cache: it decides what is held (capacity, time to live,
//! eviction) and every write goes through it. The index mirrors it: a write
//! (`KeyCache::write`) sets the index inside moka's per-key compute, so that
//! writes of one key reach both in the same order, and moka's eviction
//! listener drops what moka evicts or expires. An entry can be in the index
//! without being in moka only between moka dropping it and the listener
//! running; a read then decides on an entry moka held a moment ago, which is
//! what the hot path's checks (tombstones, epoch, catalog) are for anyway.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;

use super::CachedKey;
use crate::token::KeyId;

/// Shards: enough that replicas on many cores rarely contend for one lock.
const SHARDS: usize = 64;

type Shard = HashMap<KeyId, Arc<CachedKey>, foldhash::fast::RandomState>;

/// One shard on its own cache lines, so that readers of neighbouring shards
/// on different cores do not invalidate each other's lock word.
#[repr(align(128))]
struct PaddedShard(RwLock<Shard>);

pub(super) struct ReadIndex {
    shards: Box<[PaddedShard]>,
}

impl ReadIndex {
    pub(super) fn new() -> ReadIndex {
        let shards = (0..SHARDS)
            .map(|_| PaddedShard(RwLock::new(Shard::default())))
            .collect();
        ReadIndex { shards }
    }

    /// Key ids are random (UUIDv4), so their low bits spread keys evenly;
    /// each shard's map hashes with its own random seed.
    fn shard(&self, id: &KeyId) -> &RwLock<Shard> {
        let low_bits = id.as_uuid().as_u128() as usize;
        &self.shards[low_bits % SHARDS].0
    }

    pub(super) fn get(&self, id: &KeyId) -> Option<Arc<CachedKey>> {
        self.shard(id).read().get(id).cloned()
    }

    /// Makes the index hold `entry` for `id` (`None`: nothing).
    pub(super) fn set(&self, id: KeyId, entry: Option<&Arc<CachedKey>>) {
        let mut shard = self.shard(&id).write();
        match entry {
            Some(entry) => {
                shard.insert(id, entry.clone());
            }
            None => {
                shard.remove(&id);
            }
        }
    }

    /// Drops `id`'s entry if it is `removed` (moka evicted or expired it),
    /// and not a newer entry that a write put in meanwhile.
    pub(super) fn remove_if_same(&self, id: &KeyId, removed: &Arc<CachedKey>) {
        let mut shard = self.shard(id).write();
        if shard.get(id).is_some_and(|held| Arc::ptr_eq(held, removed)) {
            shard.remove(id);
        }
    }

    /// Entries held (for tests and measurements).
    pub(super) fn len(&self) -> usize {
        self.shards.iter().map(|shard| shard.0.read().len()).sum()
    }
}

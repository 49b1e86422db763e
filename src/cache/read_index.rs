//! The cache's view for reads: a sharded hash map from key id to the entry
//! moka holds for it, read on every Authorize (and every lookup) instead of
//! moka.
//!
//! Why: a moka read follows about half a dozen dependent pointers (bucket
//! array, bucket, key, value entry, entry info, then the value) and records
//! the read for its eviction policy (a frequency sketch and an access-order
//! list). With 100,000 keys each of those is a cache miss, and moka's read
//! cost about 1.6–2.2 µs against 0.13–0.18 µs for one key (`cargo bench
//! --bench hot_path -- read_`). Here a read is one shard lock, one probe and the value.
//!
//! moka stays the cache: it decides what is held (capacity, time to live,
//! eviction) and every write goes through it. The index mirrors it: a write
//! ([`KeyCache::write`]) sets the index inside moka's per-key compute, so
//! that writes of one key reach both in the same order, and moka's eviction
//! listener drops what moka evicts or expires. Only a write that puts an
//! entry adds it to the index (moka applies the put right after), so an entry
//! is in the index without being in moka only between moka dropping it and
//! the listener running; a read then decides on an entry moka held a moment
//! ago, which the hot path's checks (tombstones, epoch, catalog) are for.

use std::collections::HashMap;
use std::sync::Arc;

use moka::ops::compute::{CompResult, Op};
use parking_lot::RwLock;
use rand::Rng;

use super::{CachedKey, KeyCache};
use crate::domain::token::KeyId;

/// One warm read in this many, at random, is also made through moka, so that
/// its eviction policy still sees which keys are in use. A key read fewer
/// than this many times within its time to live may go unrecorded and then
/// looks to moka's admission like a key seen once; with a cache sized above
/// the active keys (the default: 100,000), nothing is evicted for that.
const RECORD_ONE_READ_IN: u32 = 32;

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

    fn insert(&self, id: KeyId, entry: Arc<CachedKey>) {
        self.shard(&id).write().insert(id, entry);
    }

    fn remove(&self, id: &KeyId) {
        self.shard(id).write().remove(id);
    }

    /// Drops `id`'s entry if it is `removed` (moka evicted or expired it),
    /// and not a newer entry that a write put in meanwhile.
    pub(super) fn remove_if_same(&self, id: &KeyId, removed: &Arc<CachedKey>) {
        let mut shard = self.shard(id).write();
        if shard.get(id).is_some_and(|held| Arc::ptr_eq(held, removed)) {
            shard.remove(id);
        }
    }

    /// Entries held.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.shards.iter().map(|shard| shard.0.read().len()).sum()
    }
}

impl KeyCache {
    /// `id`'s entry from the read index: `None` when the index holds none,
    /// or one past its time to live (moka's expiry reaches the index only
    /// with moka's upkeep), which is dropped here.
    pub(super) fn indexed(&self, id: &KeyId) -> Option<Arc<CachedKey>> {
        let entry = self.index.get(id)?;
        if entry.time_to_live_left(self.settings.ttl).is_zero() {
            self.index.remove_if_same(id, &entry);
            return None;
        }
        if rand::thread_rng().gen_ratio(1, RECORD_ONE_READ_IN) {
            // Only to tell moka's eviction policy: the entry is already known.
            let _recorded = self.keys.get(id);
        }
        Some(entry)
    }

    /// Changes `id`'s entry through `change` (given the entry moka holds, if
    /// any) in moka's per-key compute, so that it is serialized with every
    /// other write of that key, and brings the read index along in the same
    /// step: a put puts, a removal (or nothing held) removes, and leaving
    /// the entry as it is leaves the index as it is (an entry moka evicts
    /// meanwhile must not come back through it). Every write of `keys` goes
    /// through here.
    pub(super) fn write(
        &self,
        id: KeyId,
        change: impl FnOnce(Option<Arc<CachedKey>>) -> Op<Arc<CachedKey>>,
    ) -> CompResult<KeyId, Arc<CachedKey>> {
        self.keys.entry(id).and_compute_with(|existing| {
            let existing = existing.map(|entry| entry.into_value());
            let nothing_held = existing.is_none();
            let op = change(existing);
            match &op {
                Op::Put(entry) => self.index.insert(id, entry.clone()),
                Op::Remove => self.index.remove(&id),
                Op::Nop if nothing_held => self.index.remove(&id),
                Op::Nop => {}
            }
            op
        })
    }
}

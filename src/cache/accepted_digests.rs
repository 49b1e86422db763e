//! Digests of the secrets that argon2 accepted for keys evicted lately,
//! remembered with the hash each was accepted against, so that a key reloaded
//! after a change is not verified with argon2 again on every replica. A change
//! that kept the key's secret (an update, a disable, a revocation) finds its
//! digest under the same current hash; a rotation finds the old one under the
//! previous hash. A digest only carries over to an entry holding the very hash
//! it was accepted against (salt included), so it can never admit a secret
//! argon2 would refuse.

use std::sync::Arc;
use std::time::Duration;

use moka::ops::compute::Op;
use moka::sync::Cache;

use super::{CachedKey, SecretDigest};
use crate::domain::hashing::SecretHash;
use crate::domain::token::KeyId;

/// How long the accepted digests of an evicted key are remembered: a key in
/// use is reloaded by its next request, within moments.
const REMEMBERED_FOR: Duration = Duration::from_secs(60);

/// Most evicted keys remembered at once (past it, moka keeps the keys it has
/// seen most; the others pay argon2 once more).
const MOST_REMEMBERED: u64 = 10_000;

/// A digest and the hash argon2 accepted its secret against.
#[derive(Clone)]
struct AcceptedDigest {
    hash: SecretHash,
    digest: SecretDigest,
}

/// The accepted digests of evicted keys, by key id, for their reloads.
#[derive(Clone)]
pub struct AcceptedDigests {
    by_key: Cache<KeyId, Arc<[AcceptedDigest]>>,
}

impl AcceptedDigests {
    pub fn new() -> AcceptedDigests {
        AcceptedDigests {
            by_key: Cache::builder()
                .max_capacity(MOST_REMEMBERED)
                .time_to_live(REMEMBERED_FOR)
                .build(),
        }
    }

    /// Remembers what argon2 accepted for an entry that leaves the cache,
    /// keeping what was remembered earlier for the hashes it still holds (an
    /// entry evicted before it verified a secret must not erase a digest).
    pub fn remember(&self, evicted: &CachedKey) {
        // Atomic per key: two evictions racing cannot drop each other's digests.
        self.by_key
            .entry(evicted.key.id)
            .and_compute_with(|earlier| {
                let earlier = earlier.map(|entry| entry.into_value());
                let accepted = accepted_by(evicted, earlier.as_deref());
                if accepted.is_empty() {
                    Op::Nop
                } else {
                    Op::Put(accepted.into())
                }
            });
    }

    /// Gives a freshly loaded entry the digests accepted against its hashes.
    pub fn carry_into(&self, loaded: &CachedKey) {
        let Some(remembered) = self.by_key.get(&loaded.key.id) else {
            return;
        };
        for accepted in remembered.iter() {
            if accepted.hash == loaded.secret_hash {
                loaded.accept_current(accepted.digest);
            } else if loaded.previous_secret_hash.as_ref() == Some(&accepted.hash) {
                loaded.accept_previous(accepted.digest);
            }
        }
    }
}

/// The digests accepted for `evicted`'s hashes: its own, and those
/// remembered earlier for a hash it still holds.
fn accepted_by(evicted: &CachedKey, earlier: Option<&[AcceptedDigest]>) -> Vec<AcceptedDigest> {
    let current = evicted.current_digest.get().map(|digest| AcceptedDigest {
        hash: evicted.secret_hash.clone(),
        digest: *digest,
    });
    let previous = evicted
        .previous_secret_hash
        .as_ref()
        .zip(evicted.previous_digest.get())
        .map(|(hash, digest)| AcceptedDigest {
            hash: hash.clone(),
            digest: *digest,
        });
    let mut accepted: Vec<AcceptedDigest> = current.into_iter().chain(previous).collect();
    for earlier_accepted in earlier.unwrap_or_default() {
        let still_held = earlier_accepted.hash == evicted.secret_hash
            || evicted.previous_secret_hash.as_ref() == Some(&earlier_accepted.hash);
        let known = accepted
            .iter()
            .any(|kept| kept.hash == earlier_accepted.hash);
        if still_held && !known {
            accepted.push(earlier_accepted.clone());
        }
    }
    accepted
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::tests::entry;

    #[test]
    fn digests_go_only_to_the_slot_holding_their_hash() {
        let carried = AcceptedDigests::new();
        let id = KeyId::generate();
        let first = [1u8; 32];
        let evicted = entry(id, "salt1$one", None);
        evicted.accept_current(first);
        carried.remember(&evicted);

        // The same secret after an update: the current slot.
        let updated = entry(id, "salt1$one", None);
        carried.carry_into(&updated);
        assert!(updated.match_current(&first));
        assert!(!updated.match_previous(&first));

        // After a rotation the old secret is the previous one.
        carried.remember(&updated);
        let rotated = entry(id, "salt2$two", Some("salt1$one"));
        carried.carry_into(&rotated);
        assert!(rotated.match_previous(&first));
        assert!(!rotated.match_current(&first));

        // Another key, or the same hash under another salt, gets nothing.
        let stranger = entry(KeyId::generate(), "salt1$one", None);
        carried.carry_into(&stranger);
        assert!(!stranger.match_current(&first));
        let resalted = entry(id, "salt3$one", Some("salt4$one"));
        carried.carry_into(&resalted);
        assert!(!resalted.match_current(&first) && !resalted.match_previous(&first));
    }

    #[test]
    fn earlier_digests_survive_entries_that_did_not_carry_them() {
        let carried = AcceptedDigests::new();
        let id = KeyId::generate();
        let (old_secret, new_secret) = ([1u8; 32], [2u8; 32]);
        let rotated = entry(id, "salt2$two", Some("salt1$one"));
        rotated.accept_previous(old_secret);
        carried.remember(&rotated);
        // Evicted again before it verified anything.
        let unused = entry(id, "salt2$two", Some("salt1$one"));
        carried.remember(&unused);
        // A load that raced an eviction (it never took the digests) verifies
        // the new secret, and is evicted in turn.
        let raced = entry(id, "salt2$two", Some("salt1$one"));
        raced.accept_current(new_secret);
        carried.remember(&raced);

        let reloaded = entry(id, "salt2$two", Some("salt1$one"));
        carried.carry_into(&reloaded);
        assert!(reloaded.match_previous(&old_secret));
        assert!(reloaded.match_current(&new_secret));

        // Once the previous hash is gone (a revocation), its digest is dropped.
        let revoked = entry(id, "salt2$two", None);
        carried.carry_into(&revoked);
        carried.remember(&revoked);
        let after_revocation = entry(id, "salt2$two", Some("salt1$one"));
        carried.carry_into(&after_revocation);
        assert!(!after_revocation.match_previous(&old_secret));
        assert!(after_revocation.match_current(&new_secret));
    }
}

//! Secrets that argon2 accepted for keys evicted lately, remembered by the
//! hash they matched, so that a key reloaded after a change is not verified
//! with argon2 again on every replica. A change that kept the key's secret (an
//! update, a disable, a revocation) finds its digest under the same current
//! hash; a rotation finds the old one under the previous hash. A digest only
//! carries over to an entry holding the very hash it was accepted against
//! (salt included), so it can never admit a secret argon2 would refuse.

use std::sync::Arc;
use std::time::Duration;

use moka::sync::Cache;

use super::{CachedKey, SecretDigest};
use crate::hashing::SecretHash;
use crate::token::KeyId;

/// How long the accepted secrets of an evicted key are remembered: a key in
/// use is reloaded by its next request, within moments.
const REMEMBERED_FOR: Duration = Duration::from_secs(60);

/// Most evicted keys remembered at once (a mass revocation forgets the rest,
/// which then pay argon2 once more).
const MOST_REMEMBERED: u64 = 10_000;

/// A secret's digest and the hash argon2 accepted it against.
struct Accepted {
    hash: SecretHash,
    digest: SecretDigest,
}

#[derive(Clone)]
pub struct CarriedSecrets {
    evicted: Cache<KeyId, Arc<[Accepted]>>,
}

impl CarriedSecrets {
    pub fn new() -> CarriedSecrets {
        CarriedSecrets {
            evicted: Cache::builder()
                .max_capacity(MOST_REMEMBERED)
                .time_to_live(REMEMBERED_FOR)
                .build(),
        }
    }

    /// Remembers what argon2 accepted for an entry that leaves the cache.
    pub fn remember(&self, evicted: &CachedKey) {
        let current = evicted.current_digest.get().map(|digest| Accepted {
            hash: evicted.secret_hash.clone(),
            digest: *digest,
        });
        let previous = evicted
            .previous_secret_hash
            .as_ref()
            .zip(evicted.previous_digest.get())
            .map(|(hash, digest)| Accepted {
                hash: hash.clone(),
                digest: *digest,
            });
        let accepted: Arc<[Accepted]> = current.into_iter().chain(previous).collect();
        // An entry that never verified a secret leaves what an earlier one
        // remembered in place.
        if !accepted.is_empty() {
            self.evicted.insert(evicted.key.id, accepted);
        }
    }

    /// Gives a freshly loaded entry the digests accepted against its hashes.
    pub fn carry_into(&self, loaded: &CachedKey) {
        let Some(accepted) = self.evicted.get(&loaded.key.id) else {
            return;
        };
        for secret in accepted.iter() {
            if secret.hash == loaded.secret_hash {
                loaded.accept_current(secret.digest);
            } else if loaded.previous_secret_hash.as_ref() == Some(&secret.hash) {
                loaded.accept_previous(secret.digest);
            }
        }
    }
}

//! The hot path. A request is decided in two steps:
//!
//! 1. [`verify`](Authorizer::verify) (`verify.rs`): the presented token is
//!    parsed (no I/O), its key found in the cache (a miss loads the row once)
//!    and its secret matched against cached digests (a secret new to the cache
//!    is checked with argon2 on the blocking pool, rate limited per key). An
//!    entry the cache can no longer vouch for is confirmed first
//!    (`confirm.rs`).
//! 2. `judge` (`judge.rs`): the key's state, IP allowlist, route and
//!    permission give the [`Decision`].
//!
//! Lifecycle callers are identified through this same path, so the rules for who
//! is a valid caller and for what Authorize accepts can never drift apart.

mod confirm;
pub mod decision;
mod judge;
pub mod log_throttle;
pub mod metrics;
pub mod usage;
mod verify;

pub use verify::{Verified, VerifyError};

use std::sync::Arc;

use arc_swap::ArcSwap;
use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::authorizer::decision::{AuthorizeRequest, Decision};
use crate::authorizer::usage::UsageRecorder;
use crate::cache::KeyCache;
use crate::domain::events::StateChange;
use crate::domain::hashing::SecretHasher;
use crate::domain::policy::Policy;
use crate::domain::token::{KeyId, TokenPrefix};
use crate::freshness::{Freshness, StalePolicy};

/// How many times a request tries to settle on its key's entry. The entry can
/// change under a request while it waits (on a load, argon2 or a version
/// check): an event evicts it, a policy reload rebuilds it. The request then
/// looks again, but not forever: after this many attempts it answers
/// `Unverifiable` rather than chase a key that keeps changing.
const MAX_ATTEMPTS_AFTER_A_CHANGE: usize = 3;

#[derive(Clone)]
pub struct Authorizer {
    pool: PgPool,
    hasher: SecretHasher,
    prefix: TokenPrefix,
    policy: Arc<ArcSwap<Policy>>,
    cache: KeyCache,
    usage: UsageRecorder,
    freshness: Arc<Freshness>,
    stale_policy: StalePolicy,
}

impl Authorizer {
    pub fn new(
        pool: PgPool,
        hasher: SecretHasher,
        prefix: TokenPrefix,
        policy: Arc<Policy>,
        cache: KeyCache,
        usage: UsageRecorder,
    ) -> Authorizer {
        Authorizer {
            pool,
            hasher,
            prefix,
            policy: Arc::new(ArcSwap::new(policy)),
            cache,
            usage,
            freshness: Freshness::always_trusted(),
            stale_policy: StalePolicy::FailClosed,
        }
    }

    /// Makes cache trust follow `freshness` (driven by the event listener and
    /// the lease) and decides what happens when a key cannot be confirmed.
    pub fn with_freshness(
        mut self,
        freshness: Arc<Freshness>,
        stale_policy: StalePolicy,
    ) -> Authorizer {
        self.freshness = freshness;
        self.stale_policy = stale_policy;
        self
    }

    pub fn freshness(&self) -> &Arc<Freshness> {
        &self.freshness
    }

    /// The policy in force now.
    pub fn policy(&self) -> Arc<Policy> {
        self.policy.load_full()
    }

    pub fn cache(&self) -> &KeyCache {
        &self.cache
    }

    pub fn hasher(&self) -> &SecretHasher {
        &self.hasher
    }

    /// Puts a new policy in force and recomputes cached permissions under it
    /// (on the blocking pool: the work grows with the cache).
    pub async fn replace_policy(&self, policy: Arc<Policy>) {
        self.policy.store(policy.clone());
        let cache = self.cache.clone();
        let recomputed = tokio::task::spawn_blocking(move || cache.apply_policy(&policy)).await;
        if let Err(error) = recomputed {
            // Entries left under the old catalog are rebuilt on their next use.
            tracing::error!(%error, "recomputing cached permissions failed");
        }
    }

    /// Forgets a key so that the next request reloads it.
    pub fn evict(&self, id: &KeyId) {
        self.cache.evict(id);
    }

    /// Follows a change of key `id` to `version` (`i64::MAX`: deleted),
    /// leaving a tombstone so that a load that read an older row cannot bring
    /// it back: a cached entry one version behind takes a disable or a
    /// revocation in place (no reload needed), one at `version` or later
    /// stays, and any other is evicted (with `change` `None`, every entry
    /// older than `version`).
    pub fn follow_change(&self, id: &KeyId, version: i64, change: Option<StateChange>) {
        self.freshness
            .add_tombstone(*id, version, |expired, guarded| {
                self.cache.follow_event(expired, guarded, None)
            });
        self.cache.follow_event(*id, version, change);
    }

    /// Decides an Authorize request: whose key is it (and does its secret
    /// match), then may that key make this request. A warm key is decided
    /// without an await.
    pub async fn decide(
        &self,
        request: &AuthorizeRequest<'_>,
        now: DateTime<Utc>,
    ) -> Result<Decision, VerifyError> {
        let identity = match self.verify(request.presented, now).await? {
            Verified::Key(identity) => identity,
            Verified::Denied(reason) => return Ok(Decision::denied(reason)),
        };
        Ok(self.judge(identity, request, now))
    }
}

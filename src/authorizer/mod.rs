//! The hot path. A presented token is parsed (no I/O), its key found in the cache
//! (a miss loads the row once), its secret matched against cached digests (a new
//! secret is checked with argon2 on the blocking pool, rate limited per key),
//! then the key's state, IP allowlist, route and permission decide.
//!
//! Lifecycle callers are identified through this same path, so the rules for who
//! is a valid caller and for what Authorize accepts can never drift apart.

pub mod decision;
pub mod metrics;
pub mod usage;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use chrono::{DateTime, Utc};
use secrecy::SecretString;
use sqlx::PgPool;

use crate::authorizer::decision::{
    AuthorizeRequest, Decision, KeyIdentity, Reason, SecretSlot, Target,
};
use crate::authorizer::usage::UsageRecorder;
use crate::cache::{CachedKey, KeyCache, Lookup, SecretDigest};
use crate::domain::events::StateChange;
use crate::domain::hashing::{HashingError, SecretHasher};
use crate::domain::policy::Policy;
use crate::domain::token::{KeyId, Token, TokenPrefix};
use crate::freshness::{Freshness, StalePolicy, TOMBSTONE_LIFETIME, VERSION_CHECK_TIMEOUT};
use crate::store::keys::{find_key_by_id, find_key_version};
use crate::store::StoreError;

/// A failure to reach a verdict (as opposed to a verdict of "denied").
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Store(#[from] Arc<StoreError>),
    #[error(transparent)]
    Hashing(#[from] HashingError),
}

/// What confirming a cached entry off the hot path found.
enum Confirmation {
    Current(Arc<CachedKey>),
    Denied(Reason),
    /// The cache changed (evicted or rebuilt): look the key up again.
    Changed,
}

/// Accepts `Bearer <token>` (any case) as well as the bare token.
fn strip_bearer(presented: &str) -> &str {
    let trimmed = presented.trim();
    let scheme = trimmed
        .get(..6)
        .filter(|scheme| scheme.eq_ignore_ascii_case("bearer"));
    let rest = trimmed.get(6..).unwrap_or_default();
    if scheme.is_some() && (rest.is_empty() || rest.starts_with(' ')) {
        return rest.trim();
    }
    trimmed
}

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

    /// Checks the token and its secret; says nothing yet about the key's state.
    /// A warm key is answered without an await; only a miss, an entry to
    /// confirm or a secret new to the cache takes the slow path.
    pub async fn verify(
        &self,
        presented: &str,
        now: DateTime<Utc>,
    ) -> Result<Result<KeyIdentity, Reason>, VerifyError> {
        let token_text = strip_bearer(presented);
        if token_text.is_empty() {
            return Ok(Err(Reason::MissingKey));
        }
        let Ok(token) = Token::parse(token_text, &self.prefix) else {
            return Ok(Err(Reason::MalformedKey));
        };
        let digest = self.cache.digest(token.secret());
        if let Some(verified) = self.verify_cached(&token, &digest, now) {
            return Ok(verified);
        }
        // Boxed: the slow path's future is large and rarely needed.
        Box::pin(self.verify_slowly(&token, digest, now)).await
    }

    /// The answer from the cache alone, when it has one: `None` when the key
    /// is not cached, its entry must be confirmed, or the secret is new to it.
    fn verify_cached(
        &self,
        token: &Token<'_>,
        digest: &SecretDigest,
        now: DateTime<Utc>,
    ) -> Option<Result<KeyIdentity, Reason>> {
        let verified = match self.cache.get(token.key_id()) {
            Lookup::NotCached => return None,
            Lookup::UnknownKey => Err(Reason::UnknownKey),
            Lookup::Cached(entry) if !self.is_confirmed(&entry) => return None,
            Lookup::Cached(entry) if entry.key.environment != token.environment() => {
                Err(Reason::InvalidSecret)
            }
            Lookup::Cached(entry) => {
                let secret = self.match_cached(&entry, digest, now)?;
                Ok(KeyIdentity { entry, secret })
            }
        };
        // Counted only when the cache answered: otherwise the slow path's
        // lookup counts the hit or the miss.
        crate::cache::counters().hits.increment(1);
        Some(verified)
    }

    async fn verify_slowly(
        &self,
        token: &Token<'_>,
        digest: SecretDigest,
        now: DateTime<Utc>,
    ) -> Result<Result<KeyIdentity, Reason>, VerifyError> {
        let key_id = *token.key_id();
        for _attempt in 0..3 {
            let entry = match self.current_entry(key_id).await? {
                Ok(Some(entry)) => entry,
                Ok(None) => return Ok(Err(Reason::UnknownKey)),
                Err(reason) => return Ok(Err(reason)),
            };
            if entry.key.environment != token.environment() {
                return Ok(Err(Reason::InvalidSecret));
            }
            if let Some(secret) = self.match_cached(&entry, &digest, now) {
                return Ok(Ok(KeyIdentity { entry, secret }));
            }
            let confirmed_at = Instant::now();
            // Boxed: the argon2 path's future is large and rarely needed.
            let slot =
                Box::pin(self.verify_with_argon2(&entry, token.secret(), digest, now)).await?;
            let Some(secret) = slot else {
                return Ok(Err(Reason::InvalidSecret));
            };
            // The wait for argon2 may have outlived the entry (a change landed
            // meanwhile): decide only on an entry that is still the current one.
            if self.still_current(&entry, confirmed_at) {
                return Ok(Ok(KeyIdentity { entry, secret }));
            }
        }
        Ok(Err(Reason::Unverifiable))
    }

    /// Whether `entry`, confirmed at `confirmed_at`, is still good to decide
    /// on after a wait: not superseded by a change, built under the catalog in
    /// force, confirmed in the current trusted epoch, and confirmed recently
    /// enough that any change since would still have its tombstone. Not
    /// whether the cache still holds it: a full cache may drop an entry the
    /// moment it is inserted (moka's admission), which says nothing about the
    /// key, and asking would send the request to argon2 again.
    fn still_current(&self, entry: &CachedKey, confirmed_at: Instant) -> bool {
        confirmed_at.elapsed() < TOMBSTONE_LIFETIME / 2 && self.is_confirmed(entry)
    }

    fn match_cached(
        &self,
        entry: &CachedKey,
        digest: &SecretDigest,
        now: DateTime<Utc>,
    ) -> Option<SecretSlot> {
        if entry.match_current(digest) {
            return Some(SecretSlot::Current);
        }
        if entry.previous_in_grace(now) && entry.match_previous(digest) {
            return Some(SecretSlot::Previous);
        }
        None
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

    /// The cached entry for `key_id`, confirmed current: trusted as is while the
    /// event stream and lease hold, else checked against the key's version in
    /// the database first. `Err(Unverifiable)` when that is impossible and the
    /// policy is to fail closed.
    async fn current_entry(
        &self,
        key_id: KeyId,
    ) -> Result<Result<Option<Arc<CachedKey>>, Reason>, VerifyError> {
        for _attempt in 0..3 {
            let Some(entry) = self.cache.get_or_load(key_id, || self.load(key_id)).await? else {
                return Ok(Ok(None));
            };
            if self.is_confirmed(&entry) {
                return Ok(Ok(Some(entry)));
            }
            // Boxed: the rare paths' futures are large, and every call would
            // otherwise carry (and allocate) their size.
            match Box::pin(self.confirm(key_id, entry)).await {
                Confirmation::Current(entry) => return Ok(Ok(Some(entry))),
                Confirmation::Denied(reason) => return Ok(Err(reason)),
                Confirmation::Changed => continue,
            }
        }
        Ok(Err(Reason::Unverifiable))
    }

    /// The hot path's check: not superseded, built under the catalog in force,
    /// and confirmed in the current trusted epoch. The lease is checked
    /// against the clock here, not the request's start time: a retry after
    /// argon2 or a load may come seconds later, after the lease ran out.
    fn is_confirmed(&self, entry: &CachedKey) -> bool {
        entry.validated_in(self.freshness.trusted_epoch())
            && !self
                .freshness
                .is_superseded(&entry.key.id, entry.key.version)
            && entry.permissions.catalog_generation() == self.policy.load().catalog.generation()
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
        let checked = if self.freshness.checks_backing_off() {
            None
        } else {
            let check = find_key_version(&self.pool, &key_id);
            match tokio::time::timeout(VERSION_CHECK_TIMEOUT, check).await {
                Ok(Ok(version)) => Some(version),
                Ok(Err(error)) => {
                    tracing::warn!(key_id = %key_id, %error, "cannot confirm a cached key");
                    self.freshness.note_check_failed();
                    None
                }
                Err(_) => {
                    tracing::warn!(key_id = %key_id, "confirming a cached key timed out");
                    self.freshness.note_check_failed();
                    None
                }
            }
        };
        match checked {
            Some(Some(version)) if version == entry.key.version => {
                if epoch != 0 {
                    entry.validated_epoch.store(epoch, Ordering::SeqCst);
                }
                Confirmation::Current(entry)
            }
            Some(_) => {
                self.cache.evict(&key_id);
                Confirmation::Changed
            }
            None => {
                // Stale answers only while the cache is untrusted (never to
                // paper over a failed check in a trusted epoch), and only
                // for a bounded time after trust was lost.
                if let StalePolicy::ServeStale(limit) = self.stale_policy {
                    let untrusted = !self.freshness.is_trusted();
                    if untrusted && self.freshness.untrusted_for() <= limit {
                        return Confirmation::Current(entry);
                    }
                }
                Confirmation::Denied(Reason::Unverifiable)
            }
        }
    }

    /// The slow path for a secret not seen before: one at a time per key, and at
    /// most `verifications_per_second` argon2 runs per key.
    async fn verify_with_argon2(
        &self,
        entry: &CachedKey,
        secret: &str,
        digest: SecretDigest,
        now: DateTime<Utc>,
    ) -> Result<Option<SecretSlot>, HashingError> {
        let mut window = entry.verification.lock().await;
        if let Some(slot) = self.match_cached(entry, &digest, now) {
            return Ok(Some(slot));
        }
        let limit = self.cache.settings().verifications_per_second;
        let owned_secret = SecretString::from(secret.to_owned());
        if !window.try_take(limit, Instant::now()) {
            tracing::warn!(key_id = %entry.key.id, "argon2 attempts for key over the limit");
            return Ok(None);
        }
        if self
            .hasher
            .verify(&owned_secret, &entry.secret_hash)
            .await?
        {
            entry.accept_current(digest);
            return Ok(Some(SecretSlot::Current));
        }
        let Some(previous_hash) = entry
            .previous_secret_hash
            .as_ref()
            .filter(|_| entry.previous_in_grace(now))
        else {
            return Ok(None);
        };
        if !window.try_take(limit, Instant::now()) {
            return Ok(None);
        }
        if self.hasher.verify(&owned_secret, previous_hash).await? {
            entry.accept_previous(digest);
            return Ok(Some(SecretSlot::Previous));
        }
        Ok(None)
    }

    /// Decides an Authorize request.
    pub async fn decide(
        &self,
        request: &AuthorizeRequest<'_>,
        now: DateTime<Utc>,
    ) -> Result<Decision, VerifyError> {
        let identity = match self.verify(request.presented, now).await? {
            Ok(identity) => identity,
            Err(reason) => return Ok(Decision::denied(reason)),
        };
        let mut decision = Decision::denied(Reason::Ok);
        decision.reason = self.judge(&identity, request, now, &mut decision);
        decision.key = Some(identity);
        Ok(decision)
    }

    /// Everything after the secret checked out: the key's state, the client's
    /// address, the route and the permission. Fills in the route and the
    /// permission on `decision` as they become known.
    fn judge(
        &self,
        identity: &KeyIdentity,
        request: &AuthorizeRequest<'_>,
        now: DateTime<Utc>,
        decision: &mut Decision,
    ) -> Reason {
        if let Some(reason) = identity.state_denial(now) {
            return reason;
        }
        let entry = &identity.entry;
        self.usage.touch(entry, now.timestamp());
        if !entry.key.allows_address(request.client_ip) {
            return Reason::IpNotAllowed;
        }
        let policy = self.policy.load();
        let (permission, index) = match &request.target {
            Target::Permission(permission) => (
                permission.clone(),
                policy.catalog.permission_index(permission.as_str()),
            ),
            Target::Route { method, path } => {
                let Some(matched) = policy.routes.find(method, path) else {
                    return Reason::UnknownRoute;
                };
                decision.route = Some(matched.route.template.clone());
                // Inserted one by one: `collect` into a BTreeMap sorts a
                // temporary Vec first, which costs more for the usual one or
                // two parameters.
                for (name, value) in matched.params.iter() {
                    decision
                        .path_params
                        .insert(name.to_owned(), value.to_owned());
                }
                (
                    matched.route.permission.clone(),
                    Some(matched.route.permission_index),
                )
            }
        };
        let permissions = &entry.permissions;
        let allowed = match index
            .and_then(|index| permissions.allows_indexed(policy.catalog.generation(), index))
        {
            Some(allowed) => allowed,
            None => permissions.allows(&permission),
        };
        decision.permission = Some(permission);
        if allowed {
            Reason::Ok
        } else {
            Reason::PermissionDenied
        }
    }
}

#[cfg(test)]
mod tests {
    use super::strip_bearer;

    #[test]
    fn bearer_scheme_is_optional_and_case_insensitive() {
        assert_eq!(strip_bearer("Bearer abc"), "abc");
        assert_eq!(strip_bearer("bearer   abc "), "abc");
        assert_eq!(strip_bearer("Bearer"), "");
        assert_eq!(strip_bearer("Bearer "), "");
        assert_eq!(strip_bearer("abc"), "abc");
        assert_eq!(strip_bearer("Bearerabc"), "Bearerabc");
        assert_eq!(strip_bearer("Beé"), "Beé");
    }
}

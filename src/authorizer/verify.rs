//! Verify: from the presented token text to the key's entry and the secret
//! slot that matched. A warm key answers from the cache alone; a miss, an
//! entry to confirm or a secret new to the cache takes the slow path, where
//! argon2 runs at most `verifications_per_second` times per key.

use std::sync::{Arc, LazyLock};
use std::time::Instant;

use chrono::{DateTime, Utc};
use secrecy::SecretString;

use super::confirm::Current;
use super::decision::{KeyIdentity, Reason, SecretSlot};
use super::log_throttle::{LogThrottle, Throttled, LOG_INTERVAL, TRACKED_KEYS};
use super::{Authorizer, MAX_ATTEMPTS_AFTER_A_CHANGE};
use crate::cache::{CachedKey, Lookup, SecretDigest};
use crate::domain::hashing::HashingError;
use crate::domain::token::{KeyId, Token};
use crate::store::StoreError;

/// Keys over their argon2 limit, logged at most once an interval each: every
/// refused attempt would otherwise write a line, at the attacker's pace.
static OVER_THE_LIMIT_LOG: LazyLock<LogThrottle<KeyId>> =
    LazyLock::new(|| LogThrottle::new(LOG_INTERVAL, TRACKED_KEYS));

/// A failure to reach a verdict (as opposed to a verdict of "denied").
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Store(#[from] Arc<StoreError>),
    #[error(transparent)]
    Hashing(#[from] HashingError),
}

/// The verdict on a presented token, before the key's state is looked at.
#[derive(Debug)]
pub enum Verified {
    /// The token names a key and carries one of its secrets.
    Key(KeyIdentity),
    /// The token does not identify a key (missing, malformed, unknown key,
    /// wrong secret), or the key cannot be confirmed (`Unverifiable`).
    Denied(Reason),
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

/// Which of `entry`'s secrets have the digest `digest`, by the digests argon2
/// accepted before; the previous secret only inside its grace period.
fn match_cached(
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

impl Authorizer {
    /// Checks the token and its secret; says nothing yet about the key's state.
    /// A warm key is answered without an await; only a miss, an entry to
    /// confirm or a secret new to the cache takes the slow path.
    pub async fn verify(
        &self,
        presented: &str,
        now: DateTime<Utc>,
    ) -> Result<Verified, VerifyError> {
        let token_text = strip_bearer(presented);
        if token_text.is_empty() {
            return Ok(Verified::Denied(Reason::MissingKey));
        }
        let Ok(token) = Token::parse(token_text, &self.prefix) else {
            return Ok(Verified::Denied(Reason::MalformedKey));
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
    ) -> Option<Verified> {
        let verified = match self.cache.get(token.key_id()) {
            Lookup::NotCached => return None,
            Lookup::UnknownKey => Verified::Denied(Reason::UnknownKey),
            Lookup::Cached(entry) if !self.is_confirmed(&entry) => return None,
            Lookup::Cached(entry) if entry.key.environment != token.environment() => {
                Verified::Denied(Reason::InvalidSecret)
            }
            Lookup::Cached(entry) => {
                let secret = match_cached(&entry, digest, now)?;
                Verified::Key(KeyIdentity { entry, secret })
            }
        };
        // Counted only when the cache answered: otherwise the slow path's
        // lookup counts the hit or the miss.
        crate::cache::counters().hits.increment(1);
        Some(verified)
    }

    /// The key's current entry (loaded or confirmed if need be), then its
    /// secret, by digest or else by argon2.
    async fn verify_slowly(
        &self,
        token: &Token<'_>,
        digest: SecretDigest,
        now: DateTime<Utc>,
    ) -> Result<Verified, VerifyError> {
        let key_id = *token.key_id();
        for _attempt in 0..MAX_ATTEMPTS_AFTER_A_CHANGE {
            let entry = match self.current_entry(key_id).await? {
                Current::Entry(entry) => entry,
                Current::UnknownKey => return Ok(Verified::Denied(Reason::UnknownKey)),
                Current::Denied(reason) => return Ok(Verified::Denied(reason)),
            };
            if entry.key.environment != token.environment() {
                return Ok(Verified::Denied(Reason::InvalidSecret));
            }
            if let Some(secret) = match_cached(&entry, &digest, now) {
                return Ok(Verified::Key(KeyIdentity { entry, secret }));
            }
            let confirmed_at = Instant::now();
            // Boxed: the argon2 path's future is large and rarely needed.
            let slot =
                Box::pin(self.verify_with_argon2(&entry, token.secret(), digest, now)).await?;
            let Some(secret) = slot else {
                return Ok(Verified::Denied(Reason::InvalidSecret));
            };
            // The wait for argon2 may have outlived the entry (a change landed
            // meanwhile): decide only on an entry that is still the current one.
            if self.still_current(&entry, confirmed_at) {
                return Ok(Verified::Key(KeyIdentity { entry, secret }));
            }
        }
        Ok(Verified::Denied(Reason::Unverifiable))
    }

    /// The slow path for a secret not seen before: one at a time per key, and at
    /// most `verifications_per_second` argon2 runs per key. `None`: the secret
    /// is wrong, or the key is over its limit.
    async fn verify_with_argon2(
        &self,
        entry: &CachedKey,
        secret: &str,
        digest: SecretDigest,
        now: DateTime<Utc>,
    ) -> Result<Option<SecretSlot>, HashingError> {
        let mut window = entry.verification.lock().await;
        if let Some(slot) = match_cached(entry, &digest, now) {
            return Ok(Some(slot));
        }
        let limit = self.cache.settings().verifications_per_second;
        let owned_secret = SecretString::from(secret.to_owned());
        if !window.try_take(limit, Instant::now()) {
            let throttled = OVER_THE_LIMIT_LOG.check(&entry.key.id, Instant::now());
            if let Throttled::Log { suppressed_before } = throttled {
                tracing::warn!(
                    key_id = %entry.key.id,
                    suppressed_before,
                    "argon2 attempts for key over the limit"
                );
            }
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

//! Verifying a presented token: parse (no I/O) → load the key by id → argon2id
//! verify on the blocking pool → status checks.
//!
//! Lifecycle callers are identified through this same path, so the rules for who
//! is a valid caller and for what `Authorize` accepts can never drift apart.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use secrecy::SecretString;
use sqlx::PgPool;

use crate::hashing::{HashingError, SecretHasher};
use crate::key::{Key, KeyState};
use crate::permission::EffectivePermissions;
use crate::policy::Policy;
use crate::store::keys::{find_key_by_id, StoredKey};
use crate::store::StoreError;
use crate::token::{Token, TokenPrefix};

/// Why a presented token is not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    MissingKey,
    MalformedKey,
    UnknownKey,
    InvalidSecret,
    Expired,
    Disabled,
    Revoked,
}

impl Denial {
    pub fn as_str(self) -> &'static str {
        match self {
            Denial::MissingKey => "missing_key",
            Denial::MalformedKey => "malformed_key",
            Denial::UnknownKey => "unknown_key",
            Denial::InvalidSecret => "invalid_secret",
            Denial::Expired => "expired",
            Denial::Disabled => "disabled",
            Denial::Revoked => "revoked",
        }
    }
}

/// Which of a key's secrets the token carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretUsed {
    Current,
    /// The rotated-out secret, still inside its grace period.
    Previous,
}

/// A key whose token checked out, with its scopes expanded for permission checks.
#[derive(Debug, Clone)]
pub struct VerifiedKey {
    pub key: Key,
    pub permissions: EffectivePermissions,
    pub secret_used: SecretUsed,
}

/// A failure to reach a verdict (as opposed to a verdict of "denied").
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Hashing(#[from] HashingError),
}

#[derive(Clone)]
pub struct Authorizer {
    pool: PgPool,
    hasher: SecretHasher,
    prefix: TokenPrefix,
    policy: Arc<Policy>,
}

impl Authorizer {
    pub fn new(
        pool: PgPool,
        hasher: SecretHasher,
        prefix: TokenPrefix,
        policy: Arc<Policy>,
    ) -> Authorizer {
        Authorizer {
            pool,
            hasher,
            prefix,
            policy,
        }
    }

    pub fn policy(&self) -> &Arc<Policy> {
        &self.policy
    }

    /// Decides whether `presented` is a valid token of an active key at `now`.
    pub async fn verify(
        &self,
        presented: &str,
        now: DateTime<Utc>,
    ) -> Result<Result<VerifiedKey, Denial>, VerifyError> {
        if presented.is_empty() {
            return Ok(Err(Denial::MissingKey));
        }
        let Ok(token) = Token::parse(presented, &self.prefix) else {
            return Ok(Err(Denial::MalformedKey));
        };
        let Some(stored) = find_key_by_id(&self.pool, token.key_id()).await? else {
            return Ok(Err(Denial::UnknownKey));
        };
        if stored.key.environment != token.environment() {
            return Ok(Err(Denial::InvalidSecret));
        }
        let Some(secret_used) = self.match_secret(&stored, token.secret(), now).await? else {
            return Ok(Err(Denial::InvalidSecret));
        };
        match stored.key.state(now) {
            KeyState::Active => {}
            KeyState::Revoked => return Ok(Err(Denial::Revoked)),
            KeyState::Disabled => return Ok(Err(Denial::Disabled)),
            KeyState::Expired => return Ok(Err(Denial::Expired)),
        }
        let permissions = self.policy.catalog.effective(&stored.key.scopes);
        Ok(Ok(VerifiedKey {
            key: stored.key,
            permissions,
            secret_used,
        }))
    }

    /// Checks the current secret, then the previous one while its grace period lasts.
    async fn match_secret(
        &self,
        stored: &StoredKey,
        secret: &SecretString,
        now: DateTime<Utc>,
    ) -> Result<Option<SecretUsed>, HashingError> {
        if self.hasher.verify(secret, &stored.secret_hash).await? {
            return Ok(Some(SecretUsed::Current));
        }
        let in_grace = stored
            .key
            .previous_secret_expires_at
            .is_some_and(|deadline| now < deadline);
        if let (true, Some(previous_hash)) = (in_grace, &stored.previous_secret_hash) {
            if self.hasher.verify(secret, previous_hash).await? {
                return Ok(Some(SecretUsed::Previous));
            }
        }
        Ok(None)
    }
}

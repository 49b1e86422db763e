//! argon2id hashing of token secrets, on the blocking pool under a concurrency bound.
//!
//! A stored hash is a PHC string that carries its own parameters, so changing the
//! configured defaults never invalidates existing keys: verification always uses
//! the parameters written in the hash.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use argon2::password_hash::SaltString;
use argon2::{Algorithm, Argon2, Params, PasswordHash, PasswordHasher, PasswordVerifier, Version};
use rand::rngs::OsRng;
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Semaphore;

/// argon2id cost parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashingParams {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl HashingParams {
    /// Keygate's default: see the README's "Hashing" section for the reasoning.
    pub const DEFAULT: HashingParams = HashingParams {
        memory_kib: 4096,
        iterations: 1,
        parallelism: 1,
    };

    /// The cheapest parameters argon2 accepts; for tests only.
    pub const FASTEST: HashingParams = HashingParams {
        memory_kib: 8,
        iterations: 1,
        parallelism: 1,
    };

    /// Checks the parameters without hashing anything.
    pub fn validate(self) -> Result<(), HashingError> {
        self.to_argon2().map(|_| ())
    }

    fn to_argon2(self) -> Result<Params, HashingError> {
        Params::new(self.memory_kib, self.iterations, self.parallelism, None)
            .map_err(|error| HashingError::InvalidParams(error.to_string()))
    }
}

/// An argon2id PHC string. Not secret in itself, but never shown to anyone.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretHash(String);

impl SecretHash {
    pub fn from_stored(phc: String) -> SecretHash {
        SecretHash(phc)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretHash {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("SecretHash([redacted])")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HashingError {
    #[error("invalid argon2 parameters: {0}")]
    InvalidParams(String),
    #[error("argon2 failed: {0}")]
    Argon2(String),
    #[error("hashing task failed")]
    TaskFailed,
}

/// Hashes and verifies secrets on the blocking pool, at most `max_concurrent` at a time.
#[derive(Clone)]
pub struct SecretHasher {
    params: Params,
    permits: Arc<Semaphore>,
    verifications: Arc<AtomicU64>,
}

impl SecretHasher {
    pub fn new(params: HashingParams, max_concurrent: usize) -> Result<SecretHasher, HashingError> {
        Ok(SecretHasher {
            params: params.to_argon2()?,
            permits: Arc::new(Semaphore::new(max_concurrent.max(1))),
            verifications: Arc::new(AtomicU64::new(0)),
        })
    }

    fn argon2(params: Params) -> Argon2<'static> {
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
    }

    /// How many verifications have run since start.
    pub fn verifications(&self) -> u64 {
        self.verifications.load(Ordering::Relaxed)
    }

    /// Hashes a secret with the configured parameters and a fresh random salt.
    #[tracing::instrument(name = "keygate.argon2.hash", level = "debug", skip_all)]
    pub async fn hash(&self, secret: &SecretString) -> Result<SecretHash, HashingError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| HashingError::TaskFailed)?;
        let params = self.params.clone();
        let secret = secret.clone();
        tokio::task::spawn_blocking(move || {
            let mut salt_bytes = [0u8; 16];
            OsRng.fill_bytes(&mut salt_bytes);
            let salt = SaltString::encode_b64(&salt_bytes)
                .map_err(|error| HashingError::Argon2(error.to_string()))?;
            let hash = Self::argon2(params)
                .hash_password(secret.expose_secret().as_bytes(), &salt)
                .map_err(|error| HashingError::Argon2(error.to_string()))?;
            Ok(SecretHash(hash.to_string()))
        })
        .await
        .map_err(|_| HashingError::TaskFailed)?
    }

    /// Whether `secret` matches `hash`, using the parameters stored in the hash.
    #[tracing::instrument(name = "keygate.argon2.verify", level = "debug", skip_all)]
    pub async fn verify(
        &self,
        secret: &SecretString,
        hash: &SecretHash,
    ) -> Result<bool, HashingError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| HashingError::TaskFailed)?;
        self.verifications.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("keygate_argon2_verifications_total").increment(1);
        let started = std::time::Instant::now();
        let secret = secret.clone();
        let hash = hash.clone();
        tokio::task::spawn_blocking(move || {
            let parsed = PasswordHash::new(hash.as_str())
                .map_err(|error| HashingError::Argon2(error.to_string()))?;
            let matches = Argon2::default()
                .verify_password(secret.expose_secret().as_bytes(), &parsed)
                .is_ok();
            Ok(matches)
        })
        .await
        .map_err(|_| HashingError::TaskFailed)
        .inspect(|_| {
            metrics::histogram!("keygate_argon2_verify_seconds")
                .record(started.elapsed().as_secs_f64());
        })?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hash_then_verify() {
        let hasher = SecretHasher::new(HashingParams::FASTEST, 2).unwrap();
        let secret = SecretString::from("correct horse".to_owned());
        let hash = hasher.hash(&secret).await.unwrap();
        assert!(hash.as_str().starts_with("$argon2id$v=19$m=8,t=1,p=1$"));
        assert!(hasher.verify(&secret, &hash).await.unwrap());
        let wrong = SecretString::from("battery staple".to_owned());
        assert!(!hasher.verify(&wrong, &hash).await.unwrap());
    }

    #[tokio::test]
    async fn verification_uses_the_parameters_stored_in_the_hash() {
        let old = SecretHasher::new(HashingParams::FASTEST, 1).unwrap();
        let secret = SecretString::from("s".repeat(43));
        let hash = old.hash(&secret).await.unwrap();
        let new = SecretHasher::new(
            HashingParams {
                memory_kib: 64,
                iterations: 2,
                parallelism: 1,
            },
            1,
        )
        .unwrap();
        assert!(new.verify(&secret, &hash).await.unwrap());
    }

    #[test]
    fn invalid_parameters_are_refused() {
        let params = HashingParams {
            memory_kib: 1,
            iterations: 0,
            parallelism: 1,
        };
        assert!(matches!(
            SecretHasher::new(params, 1),
            Err(HashingError::InvalidParams(_))
        ));
    }

    #[test]
    fn debug_hides_the_hash() {
        let hash = SecretHash::from_stored("$argon2id$v=19$m=8,t=1,p=1$c2FsdA$aGFzaA".to_owned());
        assert_eq!(format!("{hash:?}"), "SecretHash([redacted])");
    }
}

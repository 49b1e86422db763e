//! Who may do what through the lifecycle RPCs.
//!
//! - System keys manage every organization; organization keys only their own.
//! - Test keys see and manage only test keys.
//! - Nobody grants a scope they do not hold, wildcards and implications included,
//!   nor an expiry later than their own.
//! - Rotating or editing a key requires holding every scope that key holds, so
//!   a narrow key can never obtain (or reshape) a broader key's credentials.
//!
//! Keys a caller may not see answer NOT_FOUND, never revealing that they exist.

use chrono::{DateTime, Utc};
use ipnet::IpNet;
use uuid::Uuid;

use crate::authorizer::decision::KeyIdentity;
use crate::domain::key::{FieldError, Key, KeyKind};
use crate::domain::permission::{Permission, Scope};
use crate::domain::token::Environment;
use crate::lifecycle::error::ServiceError;

/// An identified lifecycle caller.
#[derive(Debug, Clone)]
pub struct Caller {
    verified: KeyIdentity,
}

impl Caller {
    pub fn new(verified: KeyIdentity) -> Caller {
        Caller { verified }
    }

    pub fn key(&self) -> &Key {
        &self.verified.entry.key
    }

    pub fn is_system(&self) -> bool {
        self.verified.entry.key.kind == KeyKind::System
    }

    /// Test keys are confined to test keys; live keys see both environments.
    pub fn environment_filter(&self) -> Option<Environment> {
        match self.verified.entry.key.environment {
            Environment::Test => Some(Environment::Test),
            Environment::Live => None,
        }
    }

    /// Requires a Keygate permission such as `api_keys:create`.
    pub fn require(&self, permission: &str) -> Result<(), ServiceError> {
        let allowed = Permission::parse(permission)
            .map(|needed| self.verified.entry.permissions.allows(&needed))
            .unwrap_or(false);
        if allowed {
            return Ok(());
        }
        Err(ServiceError::PermissionDenied(format!(
            "the calling key lacks {permission}"
        )))
    }

    /// Organization-wide operations are for system keys.
    pub fn require_system(&self, permission: &str) -> Result<(), ServiceError> {
        if !self.is_system() {
            return Err(ServiceError::PermissionDenied(format!(
                "{permission} needs a system key"
            )));
        }
        self.require(permission)
    }

    /// Whether the caller may see (and so manage) `key`.
    pub fn can_see(&self, key: &Key) -> bool {
        let environment_ok = self
            .environment_filter()
            .is_none_or(|only| key.environment == only);
        let organization_ok = self.is_system()
            || (key.kind == KeyKind::Organization
                && key.organization_id == self.key().organization_id);
        environment_ok && organization_ok
    }

    /// Which organization a listing is confined to.
    pub fn organization_filter(
        &self,
        requested: Option<Uuid>,
    ) -> Result<Option<Uuid>, ServiceError> {
        if self.is_system() {
            return Ok(requested);
        }
        let own = self.key().organization_id;
        match requested {
            Some(other) if Some(other) != own => Err(ServiceError::PermissionDenied(
                "organization keys may only act in their own organization".to_owned(),
            )),
            _ => Ok(own),
        }
    }

    /// Resolves and checks the organization and kind of a key to be created.
    pub fn organization_for_new_key(
        &self,
        kind: KeyKind,
        requested: Option<Uuid>,
        environment: Environment,
    ) -> Result<Option<Uuid>, ServiceError> {
        if self
            .environment_filter()
            .is_some_and(|only| only != environment)
        {
            return Err(ServiceError::PermissionDenied(
                "test keys may only create test keys".to_owned(),
            ));
        }
        match kind {
            KeyKind::System if !self.is_system() => Err(ServiceError::PermissionDenied(
                "only a system key may create a system key".to_owned(),
            )),
            KeyKind::System if requested.is_some() => {
                Err(FieldError::new("organization_id", "must be empty for a system key").into())
            }
            KeyKind::System => Ok(None),
            KeyKind::Organization if self.is_system() => match requested {
                Some(organization) => Ok(Some(organization)),
                None => Err(FieldError::new(
                    "organization_id",
                    "is required for an organization key",
                )
                .into()),
            },
            KeyKind::Organization => self.organization_filter(requested),
        }
    }

    /// Refuses scopes the caller does not hold itself.
    pub fn check_grant(&self, scopes: &[Scope]) -> Result<(), ServiceError> {
        let beyond: Vec<String> = scopes
            .iter()
            .filter(|scope| !self.verified.entry.permissions.covers(scope))
            .map(Scope::to_string)
            .collect();
        if beyond.is_empty() {
            return Ok(());
        }
        Err(ServiceError::PermissionDenied(format!(
            "scopes: the calling key cannot grant {}",
            beyond.join(", ")
        )))
    }

    /// Refuses an expiry beyond the caller's own (a caller that expires may only
    /// create or leave keys that expire no later).
    pub fn check_expiry_within_own(
        &self,
        expires_at: Option<DateTime<Utc>>,
    ) -> Result<(), ServiceError> {
        let Some(own_expiry) = self.key().expires_at else {
            return Ok(());
        };
        match expires_at {
            Some(expiry) if expiry <= own_expiry => Ok(()),
            _ => Err(ServiceError::PermissionDenied(
                "expire_time: may not be later than the calling key's own expiry".to_owned(),
            )),
        }
    }

    /// A caller with an IP allowlist may only give out keys confined to (a part
    /// of) its own networks: never an empty allowlist, never a wider network.
    pub fn check_networks_within_own(&self, networks: &[IpNet]) -> Result<(), ServiceError> {
        let own = &self.key().allowed_cidrs;
        if own.is_empty() {
            return Ok(());
        }
        let within = !networks.is_empty()
            && networks
                .iter()
                .all(|network| own.iter().any(|held| held.contains(network)));
        if within {
            return Ok(());
        }
        Err(ServiceError::PermissionDenied(
            "allowed_cidrs: must be within the calling key's own allowlist".to_owned(),
        ))
    }

    /// Rotating a key hands out its credentials: the caller must be able to
    /// create that key itself (scopes, expiry, networks).
    pub fn check_may_reissue(&self, target: &Key) -> Result<(), ServiceError> {
        self.check_holds_all_of(target)?;
        self.check_expiry_within_own(target.expires_at)?;
        self.check_networks_within_own(&target.allowed_cidrs)
    }

    /// Rotating or editing `target` needs every scope it holds.
    pub fn check_holds_all_of(&self, target: &Key) -> Result<(), ServiceError> {
        self.check_grant(&target.scopes).map_err(|_| {
            ServiceError::PermissionDenied(
                "the target key holds scopes the calling key does not".to_owned(),
            )
        })
    }
}

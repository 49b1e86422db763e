//! What Authorize answers: allowed or not, why, and what a gateway needs to act
//! on it. Denials are answers, not errors.

use std::net::IpAddr;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::cache::CachedKey;
use crate::domain::key::KeyState;
use crate::domain::permission::Permission;

/// Why a request was allowed or denied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    Ok,
    MissingKey,
    MalformedKey,
    UnknownKey,
    InvalidSecret,
    Expired,
    Disabled,
    Revoked,
    IpNotAllowed,
    PermissionDenied,
    UnknownRoute,
    /// The replica cannot confirm the key's current state (its event stream and
    /// the database are both out of reach) and its policy is to fail closed.
    Unverifiable,
}

impl Reason {
    /// Every reason, in declaration order (`reason as usize` indexes it).
    pub const ALL: [Reason; 12] = [
        Reason::Ok,
        Reason::MissingKey,
        Reason::MalformedKey,
        Reason::UnknownKey,
        Reason::InvalidSecret,
        Reason::Expired,
        Reason::Disabled,
        Reason::Revoked,
        Reason::IpNotAllowed,
        Reason::PermissionDenied,
        Reason::UnknownRoute,
        Reason::Unverifiable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Ok => "ok",
            Reason::MissingKey => "missing_key",
            Reason::MalformedKey => "malformed_key",
            Reason::UnknownKey => "unknown_key",
            Reason::InvalidSecret => "invalid_secret",
            Reason::Expired => "expired",
            Reason::Disabled => "disabled",
            Reason::Revoked => "revoked",
            Reason::IpNotAllowed => "ip_not_allowed",
            Reason::PermissionDenied => "permission_denied",
            Reason::UnknownRoute => "unknown_route",
            Reason::Unverifiable => "unverifiable",
        }
    }

    /// The HTTP status a gateway should answer: 401 when the key itself is the
    /// problem, 403 when a valid key may not do this, 404 for a route the policy
    /// does not know (only ever reported to a valid key, so unauthenticated
    /// callers cannot map the routes).
    pub fn http_status(self) -> u16 {
        match self {
            Reason::Ok => 200,
            Reason::MissingKey
            | Reason::MalformedKey
            | Reason::UnknownKey
            | Reason::InvalidSecret
            | Reason::Expired
            | Reason::Disabled
            | Reason::Revoked => 401,
            Reason::IpNotAllowed | Reason::PermissionDenied => 403,
            Reason::UnknownRoute => 404,
            Reason::Unverifiable => 503,
        }
    }
}

/// Which of a key's secrets the token carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretSlot {
    Current,
    /// The rotated-out secret, inside its grace period.
    Previous,
}

/// What an Authorize request asks about.
#[derive(Debug)]
pub enum Target<'a> {
    /// An HTTP request, matched against the route table.
    Route { method: &'a str, path: &'a str },
    /// A permission named directly, for callers that are not HTTP.
    Permission(Permission),
}

/// A parsed Authorize request. Its `Debug` never shows the presented token.
pub struct AuthorizeRequest<'a> {
    /// The token, or the whole `Authorization` header value (`Bearer …`).
    pub presented: &'a str,
    pub target: Target<'a>,
    pub client_ip: Option<IpAddr>,
}

impl std::fmt::Debug for AuthorizeRequest<'_> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("AuthorizeRequest")
            .field("presented", &"[redacted]")
            .field("target", &self.target)
            .field("client_ip", &self.client_ip)
            .finish()
    }
}

/// A key whose secret checked out, and which of its secrets the token carried.
#[derive(Debug, Clone)]
pub struct KeyIdentity {
    pub entry: Arc<CachedKey>,
    pub secret: SecretSlot,
}

impl KeyIdentity {
    /// Why the key may not be used at `now`, if it may not.
    pub fn state_denial(&self, now: DateTime<Utc>) -> Option<Reason> {
        match self.entry.key.state(now) {
            KeyState::Active => None,
            KeyState::Revoked => Some(Reason::Revoked),
            KeyState::Disabled => Some(Reason::Disabled),
            KeyState::Expired => Some(Reason::Expired),
        }
    }
}

/// The answer to an Authorize request.
#[derive(Debug, Clone)]
pub struct Decision {
    pub reason: Reason,
    /// The permission the request needed, when known.
    pub permission: Option<Permission>,
    /// The matched route template and its path parameters.
    pub route: Option<String>,
    pub path_params: std::collections::BTreeMap<String, String>,
    /// Set once the key's secret has been verified.
    pub key: Option<KeyIdentity>,
}

impl Decision {
    pub fn allowed(&self) -> bool {
        self.reason == Reason::Ok
    }

    pub fn denied(reason: Reason) -> Decision {
        Decision {
            reason,
            permission: None,
            route: None,
            path_params: std::collections::BTreeMap::new(),
            key: None,
        }
    }

    /// A denial of a key whose secret checked out (expired, wrong address,
    /// unknown route): the answer still says whose key it was.
    pub fn denied_to(identity: KeyIdentity, reason: Reason) -> Decision {
        Decision {
            key: Some(identity),
            ..Decision::denied(reason)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Reason;

    #[test]
    fn reasons_index_their_own_table() {
        for (index, reason) in Reason::ALL.iter().enumerate() {
            assert_eq!(*reason as usize, index, "{}", reason.as_str());
        }
    }
}

//! A key's fields as domain types, each parsed once at the edge with an error
//! that names the field.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use ipnet::IpNet;
use uuid::Uuid;

use crate::domain::events::{EventAction, StateChange};
use crate::domain::permission::Scope;
use crate::domain::quoted::Quoted;
use crate::domain::token::{Environment, KeyId};

pub const MAX_NAME_CHARS: usize = 64;
pub const MAX_DESCRIPTION_CHARS: usize = 500;
pub const MAX_ALLOWED_CIDRS: usize = 100;
pub const MAX_METADATA_BYTES: usize = 4096;
pub const MAX_METADATA_KEY_CHARS: usize = 64;

/// Invalid input, naming the request field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    pub field: &'static str,
    pub message: String,
}

impl FieldError {
    pub fn new(field: &'static str, message: impl Into<String>) -> FieldError {
        FieldError {
            field,
            message: message.into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Organization,
    System,
}

impl KeyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyKind::Organization => "organization",
            KeyKind::System => "system",
        }
    }

    pub fn parse(text: &str) -> Option<KeyKind> {
        match text {
            "organization" => Some(KeyKind::Organization),
            "system" => Some(KeyKind::System),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    Active,
    Disabled,
    Revoked,
    Expired,
}

/// A human name: 1 to 64 ASCII letters, digits, `_`, `-` or spaces, not only spaces.
/// Used for key names and organization display names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisplayName(String);

impl DisplayName {
    pub fn parse(field: &'static str, text: &str) -> Result<DisplayName, FieldError> {
        let length = text.chars().count();
        if length == 0 || text.trim().is_empty() {
            return Err(FieldError::new(field, "is required"));
        }
        if length > MAX_NAME_CHARS {
            return Err(FieldError::new(
                field,
                format!("must be at most {MAX_NAME_CHARS} characters"),
            ));
        }
        let allowed = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == ' ';
        if !text.chars().all(allowed) {
            return Err(FieldError::new(
                field,
                "may contain only letters, digits, `_`, `-` and spaces",
            ));
        }
        Ok(DisplayName(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Free text of at most 500 characters.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Description(String);

impl Description {
    pub fn parse(text: &str) -> Result<Description, FieldError> {
        if text.contains('\0') {
            return Err(FieldError::new(
                "description",
                "may not contain NUL characters",
            ));
        }
        if text.chars().count() > MAX_DESCRIPTION_CHARS {
            return Err(FieldError::new(
                "description",
                format!("must be at most {MAX_DESCRIPTION_CHARS} characters"),
            ));
        }
        Ok(Description(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Parses allowed client networks: CIDRs or bare addresses, IPv4 or IPv6, at most 100.
pub fn parse_allowed_cidrs(texts: &[String]) -> Result<Vec<IpNet>, FieldError> {
    const FIELD: &str = "allowed_cidrs";
    if texts.len() > MAX_ALLOWED_CIDRS {
        return Err(FieldError::new(
            FIELD,
            format!("at most {MAX_ALLOWED_CIDRS} entries"),
        ));
    }
    let mut networks = Vec::with_capacity(texts.len());
    for text in texts {
        let network = match text.parse::<IpNet>() {
            Ok(network) => network,
            Err(_) => match text.parse::<std::net::IpAddr>() {
                Ok(address) => IpNet::from(address),
                Err(_) => {
                    return Err(FieldError::new(
                        FIELD,
                        format!("{} is not a CIDR or IP address", Quoted(text)),
                    ))
                }
            },
        };
        if network.trunc() != network {
            return Err(FieldError::new(
                FIELD,
                format!(
                    "{} has host bits set; did you mean {}?",
                    Quoted(text),
                    network.trunc()
                ),
            ));
        }
        if let IpNet::V6(v6) = network {
            // Client addresses are matched as IPv4, so such a network matches nothing.
            if let Some(v4) = v6.network().to_ipv4_mapped() {
                return Err(FieldError::new(
                    FIELD,
                    format!(
                        "{} is an IPv4-mapped IPv6 network; give it as IPv4 ({v4})",
                        Quoted(text)
                    ),
                ));
            }
        }
        if !networks.contains(&network) {
            networks.push(network);
        }
    }
    Ok(networks)
}

/// Checks caller-defined labels: non-empty keys of at most 64 characters, at most 4 KiB in all.
pub fn check_metadata(metadata: &BTreeMap<String, String>) -> Result<(), FieldError> {
    const FIELD: &str = "metadata";
    let mut total_bytes = 0;
    for (name, value) in metadata {
        if name.contains('\0') || value.contains('\0') {
            return Err(FieldError::new(FIELD, "may not contain NUL characters"));
        }
        if name.is_empty() || name.chars().count() > MAX_METADATA_KEY_CHARS {
            return Err(FieldError::new(
                FIELD,
                format!("keys must be 1 to {MAX_METADATA_KEY_CHARS} characters"),
            ));
        }
        total_bytes += name.len() + value.len();
    }
    if total_bytes > MAX_METADATA_BYTES {
        return Err(FieldError::new(
            FIELD,
            format!("keys and values add up to {total_bytes} bytes; at most {MAX_METADATA_BYTES}"),
        ));
    }
    Ok(())
}

/// Checks that an expiry, when given, lies in the future.
pub fn check_expiry(
    expires_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<(), FieldError> {
    match expires_at {
        Some(expiry) if expiry <= now => {
            Err(FieldError::new("expire_time", "must be in the future"))
        }
        _ => Ok(()),
    }
}

/// A key as stored, without its secret hashes.
#[derive(Clone, PartialEq, Eq)]
pub struct Key {
    pub id: KeyId,
    pub organization_id: Option<Uuid>,
    pub kind: KeyKind,
    pub environment: Environment,
    pub name: String,
    pub description: String,
    pub scopes: Vec<Scope>,
    pub allowed_cidrs: Vec<IpNet>,
    pub expires_at: Option<DateTime<Utc>>,
    pub metadata: BTreeMap<String, String>,
    pub lock_scopes: bool,
    pub version: i64,
    pub created_by: Option<KeyId>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub disabled_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
}

impl Key {
    /// Revoked wins over disabled, which wins over expired.
    pub fn state(&self, now: DateTime<Utc>) -> KeyState {
        if self.revoked_at.is_some() {
            KeyState::Revoked
        } else if self.disabled_at.is_some() {
            KeyState::Disabled
        } else if self.expires_at.is_some_and(|expiry| expiry <= now) {
            KeyState::Expired
        } else {
            KeyState::Active
        }
    }

    /// The key after a change that only takes access away: disabled or
    /// revoked at `change.at`, one version on, as the store writes it (a
    /// revocation also ends a rotated-out secret's grace). Lets a cached copy
    /// follow such an event without reading the row again.
    ///
    /// `None` for any other action: those whose changes an event does not
    /// carry, and an enable. Any role that can connect to the database can
    /// send a notification, so one is trusted only to take access away; a
    /// key that gains access back is read again.
    pub fn after_state_change(&self, change: &StateChange) -> Option<Key> {
        let revoked = match change.action {
            EventAction::Disabled => false,
            EventAction::Revoked => true,
            EventAction::Enabled
            | EventAction::Created
            | EventAction::Updated
            | EventAction::Rotated
            | EventAction::Deleted => return None,
        };
        let mut next = self.clone();
        if revoked {
            next.revoked_at = Some(change.at);
            next.previous_secret_expires_at = None;
        } else {
            next.disabled_at = Some(change.at);
        }
        next.version = self.version.checked_add(1)?;
        next.updated_at = change.at;
        Some(next)
    }

    /// Whether a call from `client` may use this key: any address when the key
    /// has no allowlist, else a known address inside one of its networks
    /// (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn allows_address(&self, client: Option<std::net::IpAddr>) -> bool {
        if self.allowed_cidrs.is_empty() {
            return true;
        }
        client.is_some_and(|address| {
            let address = address.to_canonical();
            self.allowed_cidrs
                .iter()
                .any(|network| network.contains(&address))
        })
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Key")
            .field("id", &self.id)
            .field("organization_id", &self.organization_id)
            .field("kind", &self.kind)
            .field("environment", &self.environment)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for good in ["a", "Billing sync", "ci_deploy-2", &"x".repeat(64)] {
            assert!(DisplayName::parse("name", good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "   ",
            "naïve",
            "semi;colon",
            "tab\there",
            &"x".repeat(65),
        ] {
            let error = DisplayName::parse("name", bad).unwrap_err();
            assert_eq!(error.field, "name");
        }
    }

    #[test]
    fn descriptions() {
        assert!(Description::parse(&"é".repeat(500)).is_ok());
        assert_eq!(
            Description::parse("nul\0byte").unwrap_err().field,
            "description"
        );
        assert_eq!(
            Description::parse(&"x".repeat(501)).unwrap_err().field,
            "description"
        );
    }

    #[test]
    fn cidrs() {
        let parsed = parse_allowed_cidrs(&[
            "10.0.0.0/8".into(),
            "192.0.2.7".into(),
            "2001:db8::/32".into(),
            "::1".into(),
        ])
        .unwrap();
        assert_eq!(parsed[1].to_string(), "192.0.2.7/32");
        assert_eq!(parsed[3].to_string(), "::1/128");
        for bad in ["10.0.0.0/33", "not-an-ip", "10.0.0.5/24", ""] {
            assert_eq!(
                parse_allowed_cidrs(&[bad.into()]).unwrap_err().field,
                "allowed_cidrs",
                "{bad}"
            );
        }
        let too_many: Vec<String> = (0..101).map(|i| format!("10.0.{i}.0/24")).collect();
        assert!(parse_allowed_cidrs(&too_many).is_err());
    }

    #[test]
    fn metadata_limits() {
        let mut metadata = BTreeMap::new();
        metadata.insert("team".to_owned(), "payments".to_owned());
        assert!(check_metadata(&metadata).is_ok());
        metadata.insert("blob".to_owned(), "x".repeat(4096));
        assert!(check_metadata(&metadata).is_err());
        let nul = BTreeMap::from([("team".to_owned(), "a\0b".to_owned())]);
        assert!(check_metadata(&nul).is_err());
        let empty_name = BTreeMap::from([(String::new(), "v".to_owned())]);
        assert!(check_metadata(&empty_name).is_err());
    }

    #[test]
    fn expiry_must_be_future() {
        let now = Utc::now();
        assert!(check_expiry(None, now).is_ok());
        assert!(check_expiry(Some(now + chrono::Duration::seconds(5)), now).is_ok());
        assert!(check_expiry(Some(now), now).is_err());
    }
}

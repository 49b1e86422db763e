//! Permissions (`resource:action`, resources may nest: `account_updater:schedules:create`)
//! and the scopes a key holds (a permission, `prefix:*`, or `*`).
//!
//! A key's scopes are expanded once, with the catalog's implications, into
//! [`EffectivePermissions`], so that a check is a few set lookups, not a parse.

use std::collections::HashSet;
use std::fmt;

use crate::domain::quoted::Quoted;

const MAX_SEGMENTS: usize = 8;
const MAX_SEGMENT_LEN: usize = 64;

/// Why a string is not a valid permission or scope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SyntaxError(String);

fn check_segment(segment: &str, whole: &str) -> Result<(), SyntaxError> {
    let valid_characters = segment.bytes().all(|byte| {
        byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'_' || byte == b'-'
    });
    if segment.is_empty() || segment.len() > MAX_SEGMENT_LEN || !valid_characters {
        return Err(SyntaxError(format!(
            "{}: each segment must be 1 to {MAX_SEGMENT_LEN} of [a-z0-9_-]",
            Quoted(whole)
        )));
    }
    Ok(())
}

fn split_segments(text: &str) -> Result<Vec<&str>, SyntaxError> {
    let segments: Vec<&str> = text.split(':').collect();
    if segments.len() > MAX_SEGMENTS {
        return Err(SyntaxError(format!(
            "{}: at most {MAX_SEGMENTS} segments",
            Quoted(text)
        )));
    }
    Ok(segments)
}

/// A concrete permission: a resource path and an action, e.g. `customers:read`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Permission(String);

impl Permission {
    pub fn parse(text: &str) -> Result<Permission, SyntaxError> {
        let segments = split_segments(text)?;
        if segments.len() < 2 {
            return Err(SyntaxError(format!(
                "{}: expected resource:action",
                Quoted(text)
            )));
        }
        for segment in &segments {
            check_segment(segment, text)?;
        }
        Ok(Permission(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }

    /// The resource path: everything before the last `:`.
    pub fn resource(&self) -> &str {
        self.0.rsplit_once(':').map_or("", |(resource, _)| resource)
    }

    /// The action: everything after the last `:`.
    pub fn action(&self) -> &str {
        self.0.rsplit_once(':').map_or("", |(_, action)| action)
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

impl fmt::Debug for Permission {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "Permission({})", self.0)
    }
}

/// What a key may be granted: one permission, everything below a prefix, or everything.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// `*`
    Everything,
    /// `prefix:*`, holding the prefix (`payments`, `account_updater:schedules`).
    Below(String),
    /// `resource:action`
    Exactly(Permission),
}

impl Scope {
    pub fn parse(text: &str) -> Result<Scope, SyntaxError> {
        if text == "*" {
            return Ok(Scope::Everything);
        }
        if let Some(prefix) = text.strip_suffix(":*") {
            for segment in split_segments(prefix)? {
                check_segment(segment, text)?;
            }
            return Ok(Scope::Below(prefix.to_owned()));
        }
        if text.contains('*') {
            return Err(SyntaxError(format!(
                "{}: `*` may only be the last segment",
                Quoted(text)
            )));
        }
        Permission::parse(text).map(Scope::Exactly)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Everything => formatter.write_str("*"),
            Scope::Below(prefix) => write!(formatter, "{prefix}:*"),
            Scope::Exactly(permission) => formatter.write_str(permission.as_str()),
        }
    }
}

impl fmt::Debug for Scope {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "Scope({self})")
    }
}

/// Whether `prefix` is `path` or a whole-segment ancestor of it.
pub(crate) fn is_segment_prefix(prefix: &str, path: &str) -> bool {
    path == prefix
        || (path.len() > prefix.len()
            && path.starts_with(prefix)
            && path.as_bytes()[prefix.len()] == b':')
}

/// A key's scopes after expanding implications: what a check looks up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EffectivePermissions {
    everything: bool,
    below: HashSet<String>,
    exactly: HashSet<String>,
    granted: CatalogBits,
}

/// Which of a catalog's permissions are allowed, one bit per catalog index, so the
/// hot path tests a bit instead of hashing strings. Valid only for the catalog
/// generation it was computed against.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct CatalogBits {
    generation: u64,
    inline: [u64; 4],
    overflow: Box<[u64]>,
}

const INLINE_BITS: usize = 256;

impl CatalogBits {
    fn set(&mut self, index: usize) {
        if index < INLINE_BITS {
            self.inline[index / 64] |= 1 << (index % 64);
        } else if let Some(word) = self.overflow.get_mut((index - INLINE_BITS) / 64) {
            *word |= 1 << (index % 64);
        }
    }

    fn get(&self, index: usize) -> bool {
        let word = if index < INLINE_BITS {
            self.inline.get(index / 64)
        } else {
            self.overflow.get((index - INLINE_BITS) / 64)
        };
        word.is_some_and(|word| word & (1 << (index % 64)) != 0)
    }
}

impl EffectivePermissions {
    /// Builds the set from scopes and already-expanded implied permissions.
    pub fn new(scopes: &[Scope], implied: impl IntoIterator<Item = Permission>) -> Self {
        let mut effective = EffectivePermissions::default();
        for scope in scopes {
            match scope {
                Scope::Everything => effective.everything = true,
                Scope::Below(prefix) => {
                    effective.below.insert(prefix.clone());
                }
                Scope::Exactly(permission) => {
                    effective.exactly.insert(permission.as_str().to_owned());
                }
            }
        }
        effective
            .exactly
            .extend(implied.into_iter().map(|permission| permission.0));
        effective
    }

    /// Records, for each permission of a catalog (in index order), whether these
    /// scopes allow it.
    pub fn index_catalog(&mut self, generation: u64, catalog_permissions: &[Permission]) {
        let overflow_words = catalog_permissions
            .len()
            .saturating_sub(INLINE_BITS)
            .div_ceil(64);
        let mut granted = CatalogBits {
            generation,
            inline: [0; 4],
            overflow: vec![0; overflow_words].into_boxed_slice(),
        };
        for (index, permission) in catalog_permissions.iter().enumerate() {
            if self.allows(permission) {
                granted.set(index);
            }
        }
        self.granted = granted;
    }

    /// The catalog generation these permissions were indexed against (0: none).
    pub fn catalog_generation(&self) -> u64 {
        self.granted.generation
    }

    /// The fast check by catalog index; `None` when these permissions were indexed
    /// against another catalog generation (use [`Self::allows`] then).
    pub fn allows_indexed(&self, generation: u64, index: u32) -> Option<bool> {
        if self.granted.generation != generation || generation == 0 {
            return None;
        }
        Some(self.granted.get(index as usize))
    }

    /// Whether a request needing `permission` is allowed. Allocation-free.
    pub fn allows(&self, permission: &Permission) -> bool {
        if self.everything || self.exactly.contains(permission.as_str()) {
            return true;
        }
        let text = permission.as_str();
        text.match_indices(':')
            .any(|(colon, _)| self.below.contains(&text[..colon]))
    }

    /// Whether holding `scope` would give nothing beyond these permissions: a
    /// wildcard is covered only by an equal or broader wildcard.
    pub fn covers(&self, scope: &Scope) -> bool {
        match scope {
            Scope::Everything => self.everything,
            Scope::Below(prefix) => {
                self.everything
                    || self
                        .below
                        .iter()
                        .any(|held| is_segment_prefix(held, prefix))
            }
            Scope::Exactly(permission) => self.allows(permission),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn effective(scopes: &[&str]) -> EffectivePermissions {
        let scopes: Vec<Scope> = scopes.iter().map(|s| Scope::parse(s).unwrap()).collect();
        EffectivePermissions::new(&scopes, [])
    }

    fn permission(text: &str) -> Permission {
        Permission::parse(text).unwrap()
    }

    #[test]
    fn scope_syntax() {
        for good in [
            "*",
            "payments:*",
            "payments:read",
            "pcx:account_updater:schedules:create",
            "a-b:c_d:*",
        ] {
            assert!(Scope::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "payments",
            "payments:",
            ":read",
            "Payments:read",
            "pay*:read",
            "*:read",
            "payments:*:read",
            "a:b:c:d:e:f:g:h:i",
            "users.view",
            "payments:read ",
            "payments::read",
        ] {
            assert!(Scope::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn permission_parts() {
        let nested = permission("pcx:account_updater:schedules:create");
        assert_eq!(nested.resource(), "pcx:account_updater:schedules");
        assert_eq!(nested.action(), "create");
    }

    #[test]
    fn allows_table() {
        let cases = [
            (vec!["*"], "customers:read", true),
            (vec!["customers:read"], "customers:read", true),
            (vec!["customers:read"], "customers:write", false),
            (vec!["customers:*"], "customers:write", true),
            (vec!["customers:*"], "customersx:write", false),
            (
                vec!["account_updater:*"],
                "account_updater:schedules:create",
                true,
            ),
            (
                vec!["account_updater:results:*"],
                "account_updater:schedules:create",
                false,
            ),
            (
                vec!["account_updater:results:*"],
                "account_updater:results:read",
                true,
            ),
            (vec!["pcx:*"], "pcx:webhooks:delete", true),
            (vec!["payments:read"], "payments:read:extra", false),
            (vec![], "customers:read", false),
        ];
        for (scopes, needed, expected) in cases {
            assert_eq!(
                effective(&scopes).allows(&permission(needed)),
                expected,
                "{scopes:?} {needed}"
            );
        }
    }

    #[test]
    fn implied_permissions_are_allowed() {
        let scopes = vec![Scope::parse("customers:write").unwrap()];
        let with_implied = EffectivePermissions::new(&scopes, [permission("customers:read")]);
        assert!(with_implied.allows(&permission("customers:read")));
    }

    #[test]
    fn indexed_checks_agree_with_string_checks() {
        let catalog: Vec<Permission> = (0..300)
            .map(|i| permission(&format!("r{i}:read")))
            .collect();
        let mut effective = effective(&["r3:read", "r299:*"]);
        assert_eq!(effective.allows_indexed(7, 3), None);
        effective.index_catalog(7, &catalog);
        for (index, needed) in catalog.iter().enumerate() {
            assert_eq!(
                effective.allows_indexed(7, index as u32),
                Some(effective.allows(needed))
            );
        }
        assert_eq!(effective.allows_indexed(7, 299), Some(true));
        assert_eq!(effective.allows_indexed(8, 3), None, "another generation");
    }

    #[test]
    fn covers_table() {
        let cases = [
            (vec!["payments:read"], "payments:*", false),
            (vec!["payments:read"], "payments:read", true),
            (vec!["payments:*"], "payments:*", true),
            (vec!["payments:*"], "payments:read", true),
            (
                vec!["account_updater:*"],
                "account_updater:schedules:*",
                true,
            ),
            (
                vec!["account_updater:schedules:*"],
                "account_updater:*",
                false,
            ),
            (vec!["payments:*"], "*", false),
            (vec!["*"], "*", true),
            (vec!["pay:*"], "payments:*", false),
        ];
        for (scopes, wanted, expected) in cases {
            let scope = Scope::parse(wanted).unwrap();
            assert_eq!(
                effective(&scopes).covers(&scope),
                expected,
                "{scopes:?} {wanted}"
            );
        }
    }
}

//! Whether a change to an existing key takes access away: leaves some request
//! the key could make before it refused after. Such a change waits, unless
//! its caller says otherwise, until every live replica has applied it, so
//! that it is in force everywhere when its call returns; a change that takes
//! nothing away (a rename, an enable, a widening, a rotation with a grace
//! period) does not wait unless asked.

use chrono::{DateTime, Duration, Utc};
use ipnet::IpNet;

use crate::domain::key::Key;
use crate::domain::permission::Scope;
use crate::domain::policy::Catalog;

/// A change to an existing key, as far as access goes.
#[derive(Debug, Clone, Copy)]
pub enum KeyChange<'a> {
    /// UpdateKey: each field that bears on access, `Some` when the update
    /// names it (name, description and metadata never do).
    Update {
        scopes: Option<&'a [Scope]>,
        allowed_cidrs: Option<&'a [IpNet]>,
        /// `Some(None)` clears the expiry.
        expires_at: Option<Option<DateTime<Utc>>>,
    },
    /// RotateKey: the current secret is kept for `grace_period` (zero: not at all).
    Rotate {
        grace_period: Duration,
    },
    Disable,
    Enable,
    Revoke,
    Delete,
}

/// Whether `change`, made to `before` at `now`, takes access away. Scopes
/// are compared with `catalog`'s implications (`customers:write` still
/// grants `customers:read`); a wildcard is kept only by an equal or broader
/// one, since it also grants actions the catalog adds later.
pub fn takes_access_away(
    before: &Key,
    change: &KeyChange<'_>,
    catalog: &Catalog,
    now: DateTime<Utc>,
) -> bool {
    match *change {
        KeyChange::Update {
            scopes,
            allowed_cidrs,
            expires_at,
        } => {
            scopes.is_some_and(|after| scopes_narrowed(&before.scopes, after, catalog))
                || allowed_cidrs
                    .is_some_and(|after| networks_narrowed(&before.allowed_cidrs, after))
                || expires_at.is_some_and(|after| expiry_brought_forward(before.expires_at, after))
        }
        // Rotating drops the secret rotated out before, if it still works;
        // without a grace period it also ends the current one at once.
        KeyChange::Rotate { grace_period } => {
            grace_period <= Duration::zero()
                || before
                    .previous_secret_expires_at
                    .is_some_and(|deadline| now < deadline)
        }
        KeyChange::Disable | KeyChange::Revoke | KeyChange::Delete => true,
        KeyChange::Enable => false,
    }
}

/// Some scope held before is not covered by the scopes after.
fn scopes_narrowed(before: &[Scope], after: &[Scope], catalog: &Catalog) -> bool {
    let granted_after = catalog.effective(after);
    before.iter().any(|held| !granted_after.covers(held))
}

/// Some address allowed before is refused after (an empty list allows any).
fn networks_narrowed(before: &[IpNet], after: &[IpNet]) -> bool {
    if after.is_empty() {
        return false;
    }
    if before.is_empty() {
        return true;
    }
    // Merged, so that a network split across several of the new ones counts
    // as kept.
    let merged_after = IpNet::aggregate(&after.to_vec());
    !before
        .iter()
        .all(|held| merged_after.iter().any(|network| network.contains(held)))
}

/// The key now stops working sooner (or at all).
fn expiry_brought_forward(before: Option<DateTime<Utc>>, after: Option<DateTime<Utc>>) -> bool {
    match (before, after) {
        (_, None) => false,
        (None, Some(_)) => true,
        (Some(before), Some(after)) => after < before,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::domain::key::KeyKind;
    use crate::domain::policy::{Policy, EMBEDDED_DEFAULT_POLICY};
    use crate::domain::token::{Environment, KeyId};

    fn scopes(texts: &[&str]) -> Vec<Scope> {
        texts
            .iter()
            .map(|text| Scope::parse(text).unwrap())
            .collect()
    }

    fn networks(texts: &[&str]) -> Vec<IpNet> {
        texts.iter().map(|text| text.parse().unwrap()).collect()
    }

    fn at(hours: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_900_000_000, 0).unwrap() + Duration::hours(hours)
    }

    /// The key before a change: what a case does not set is empty.
    #[derive(Clone, Copy)]
    struct Before {
        scopes: &'static [&'static str],
        networks: &'static [&'static str],
        expires_at: Option<DateTime<Utc>>,
        previous_secret_until: Option<DateTime<Utc>>,
    }

    const PLAIN: Before = Before {
        scopes: &["customers:read", "payments:write"],
        networks: &[],
        expires_at: None,
        previous_secret_until: None,
    };

    fn key(before: &Before) -> Key {
        Key {
            id: KeyId::generate(),
            organization_id: None,
            kind: KeyKind::Organization,
            environment: Environment::Live,
            name: "before".into(),
            description: String::new(),
            scopes: scopes(before.scopes),
            allowed_cidrs: networks(before.networks),
            expires_at: before.expires_at,
            metadata: BTreeMap::new(),
            lock_scopes: false,
            version: 3,
            created_by: None,
            created_at: at(-100),
            updated_at: at(-1),
            disabled_at: None,
            revoked_at: None,
            previous_secret_expires_at: before.previous_secret_until,
            last_used_at: None,
        }
    }

    /// An update naming only the fields given.
    #[derive(Default)]
    struct Fields {
        scopes: Option<&'static [&'static str]>,
        networks: Option<&'static [&'static str]>,
        expires_at: Option<Option<DateTime<Utc>>>,
    }

    fn scopes_to(texts: &'static [&'static str]) -> Fields {
        Fields {
            scopes: Some(texts),
            ..Fields::default()
        }
    }

    fn networks_to(texts: &'static [&'static str]) -> Fields {
        Fields {
            networks: Some(texts),
            ..Fields::default()
        }
    }

    fn expiry_to(expiry: Option<DateTime<Utc>>) -> Fields {
        Fields {
            expires_at: Some(expiry),
            ..Fields::default()
        }
    }

    enum Case {
        Update(Before, Fields),
        Other(Before, KeyChange<'static>),
    }

    #[test]
    fn takes_access_away_table() {
        use Case::{Other, Update};
        let scoped = |scopes| Before { scopes, ..PLAIN };
        let with_networks = |networks| Before { networks, ..PLAIN };
        let expiring = |hours| Before {
            expires_at: Some(at(hours)),
            ..PLAIN
        };
        let rotated_out_until = |hours| Before {
            previous_secret_until: Some(at(hours)),
            ..PLAIN
        };
        let rotate = |seconds| KeyChange::Rotate {
            grace_period: Duration::seconds(seconds),
        };
        #[rustfmt::skip]
        let cases: Vec<(&str, Case, bool)> = vec![
            // Updates that take nothing away.
            ("rename", Update(PLAIN, Fields::default()), false),
            ("same scopes", Update(PLAIN, scopes_to(&["payments:write", "customers:read"])), false),
            ("scope added", Update(PLAIN, scopes_to(&["customers:read", "payments:write", "plans:read"])), false),
            (
                "implied scope dropped: write still grants read",
                Update(scoped(&["customers:read", "customers:write"]), scopes_to(&["customers:write"])),
                false,
            ),
            ("read raised to write, which implies it", Update(PLAIN, scopes_to(&["customers:write", "payments:write"])), false),
            ("wildcard widened to everything", Update(scoped(&["customers:*"]), scopes_to(&["*"])), false),
            ("networks cleared: any address", Update(with_networks(&["10.0.0.0/8"]), networks_to(&[])), false),
            ("network widened", Update(with_networks(&["10.1.0.0/16"]), networks_to(&["10.0.0.0/8"])), false),
            (
                "network split in two halves",
                Update(with_networks(&["10.0.0.0/23"]), networks_to(&["10.0.1.0/24", "10.0.0.0/24"])),
                false,
            ),
            ("expiry pushed back", Update(expiring(5), expiry_to(Some(at(9)))), false),
            ("expiry cleared", Update(expiring(5), expiry_to(None)), false),
            ("expiry set to what it was", Update(expiring(5), expiry_to(Some(at(5)))), false),
            // Updates that take access away.
            ("scope removed", Update(PLAIN, scopes_to(&["payments:write"])), true),
            ("write lowered to read", Update(PLAIN, scopes_to(&["customers:read", "payments:read"])), true),
            ("scopes swapped", Update(PLAIN, scopes_to(&["plans:read", "payments:write"])), true),
            (
                "wildcard spelled out: no longer grants what the catalog adds",
                Update(scoped(&["customers:*"]), scopes_to(&["customers:read", "customers:write"])),
                true,
            ),
            ("first network: any address before", Update(PLAIN, networks_to(&["10.0.0.0/8"])), true),
            ("network narrowed", Update(with_networks(&["10.0.0.0/8"]), networks_to(&["10.1.0.0/16"])), true),
            (
                "one of two networks dropped",
                Update(with_networks(&["10.0.0.0/8", "192.0.2.0/24"]), networks_to(&["10.0.0.0/8"])),
                true,
            ),
            ("half of a network left", Update(with_networks(&["10.0.0.0/23"]), networks_to(&["10.0.1.0/24"])), true),
            ("IPv4 network replaced by IPv6", Update(with_networks(&["10.0.0.0/8"]), networks_to(&["2001:db8::/32"])), true),
            ("expiry brought forward", Update(expiring(9), expiry_to(Some(at(5)))), true),
            ("expiry set where there was none", Update(PLAIN, expiry_to(Some(at(9)))), true),
            (
                "widened scopes, narrowed networks",
                Update(
                    with_networks(&["10.0.0.0/8"]),
                    Fields { scopes: Some(&["*"]), networks: Some(&["10.1.0.0/16"]), ..Fields::default() },
                ),
                true,
            ),
            // The other changes.
            ("rotation without grace", Other(PLAIN, rotate(0)), true),
            ("rotation with grace", Other(PLAIN, rotate(3600)), false),
            ("rotation with grace, an earlier secret still in grace", Other(rotated_out_until(1), rotate(3600)), true),
            ("rotation with grace, the earlier grace over", Other(rotated_out_until(-1), rotate(3600)), false),
            ("disable", Other(PLAIN, KeyChange::Disable), true),
            ("enable", Other(PLAIN, KeyChange::Enable), false),
            ("revoke", Other(PLAIN, KeyChange::Revoke), true),
            ("delete", Other(PLAIN, KeyChange::Delete), true),
        ];
        let policy = Policy::parse(EMBEDDED_DEFAULT_POLICY).unwrap();
        let now = at(0);
        for (name, case, expected) in cases {
            let found = match case {
                Update(before, update) => {
                    let new_scopes = update.scopes.map(scopes);
                    let new_networks = update.networks.map(networks);
                    let change = KeyChange::Update {
                        scopes: new_scopes.as_deref(),
                        allowed_cidrs: new_networks.as_deref(),
                        expires_at: update.expires_at,
                    };
                    takes_access_away(&key(&before), &change, &policy.catalog, now)
                }
                Other(before, change) => {
                    takes_access_away(&key(&before), &change, &policy.catalog, now)
                }
            };
            assert_eq!(found, expected, "{name}");
        }
    }
}

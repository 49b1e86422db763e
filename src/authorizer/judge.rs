//! Judge: everything after the secret checked out. The key's state, the
//! client's address, the route and the permission, in that order, give the
//! [`Decision`]; the first that fails is its reason.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::decision::{AuthorizeRequest, Decision, KeyIdentity, Reason, Target};
use super::Authorizer;
use crate::domain::permission::{EffectivePermissions, Permission};
use crate::domain::policy::Policy;

/// The permission a request needs, and the route that asked for it.
struct Needed {
    permission: Permission,
    /// The permission's index in the policy's catalog: the fast check.
    index: Option<u32>,
    /// The matched route template, for an HTTP request.
    route: Option<String>,
    path_params: BTreeMap<String, String>,
}

impl Authorizer {
    /// Whether the verified key may make this request, and the details a
    /// gateway acts on: the route, its path parameters, the permission.
    pub(super) fn judge(
        &self,
        identity: KeyIdentity,
        request: &AuthorizeRequest<'_>,
        now: DateTime<Utc>,
    ) -> Decision {
        if let Some(reason) = identity.state_denial(now) {
            return Decision::denied_to(identity, reason);
        }
        self.usage.touch(&identity.entry, now.timestamp());
        if !identity.entry.key.allows_address(request.client_ip) {
            return Decision::denied_to(identity, Reason::IpNotAllowed);
        }
        let policy = self.policy.load();
        let Some(needed) = needed_permission(&policy, &request.target) else {
            return Decision::denied_to(identity, Reason::UnknownRoute);
        };
        let reason = if grants(&identity.entry.permissions, &policy, &needed) {
            Reason::Ok
        } else {
            Reason::PermissionDenied
        };
        Decision {
            reason,
            permission: Some(needed.permission),
            route: needed.route,
            path_params: needed.path_params,
            key: Some(identity),
        }
    }
}

/// The permission `target` needs under `policy`: named directly, or the one
/// its route requires. `None`: no route matches.
fn needed_permission(policy: &Policy, target: &Target<'_>) -> Option<Needed> {
    let (method, path) = match target {
        Target::Permission(permission) => {
            return Some(Needed {
                permission: permission.clone(),
                index: policy.catalog.permission_index(permission.as_str()),
                route: None,
                path_params: BTreeMap::new(),
            })
        }
        Target::Route { method, path } => (method, path),
    };
    let matched = policy.routes.find(method, path)?;
    // Inserted one by one: `collect` into a BTreeMap sorts a temporary Vec
    // first, which costs more for the usual one or two parameters.
    let mut path_params = BTreeMap::new();
    for (name, value) in matched.params.iter() {
        path_params.insert(name.to_owned(), value.to_owned());
    }
    Some(Needed {
        permission: matched.route.permission.clone(),
        index: Some(matched.route.permission_index),
        route: Some(matched.route.template.clone()),
        path_params,
    })
}

/// Whether `permissions` grant what is needed: by the permission's catalog
/// index when they were computed under the catalog in force, else by name.
fn grants(permissions: &EffectivePermissions, policy: &Policy, needed: &Needed) -> bool {
    let by_index = needed
        .index
        .and_then(|index| permissions.allows_indexed(policy.catalog.generation(), index));
    match by_index {
        Some(allowed) => allowed,
        None => permissions.allows(&needed.permission),
    }
}

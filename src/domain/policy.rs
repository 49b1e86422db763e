//! The policy file: the permission catalog keys are granted from, and the route
//! table Authorize checks requests against.
//!
//! ```yaml
//! catalog:
//!   resources:            # resource path -> the actions it offers
//!     customers: [read, write]
//!     refunds: [write]
//!     account_updater:schedules: [create, read]
//!   implications:         # holding the action on the left implies the ones on the right,
//!     write: [read]       # where the resource offers them
//!   presets:              # named scope sets CreateKey may ask for instead of scopes
//!     read_only: [customers:read]
//! routes:                 # METHOD /path/{param} -> the permission it needs
//!   - GET /customers/{id}: customers:read
//! ```
//!
//! Keygate's own resources, `api_keys` and `organizations`, are always in the catalog.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;

use crate::domain::permission::{EffectivePermissions, Permission, Scope};
use crate::domain::quoted::Quoted;
use crate::domain::routes::RouteTable;

mod file;

use file::{item, CatalogFile, Entries, Item};

/// The policy used when no `--policy` file is given: the PayNext example.
pub const EMBEDDED_DEFAULT_POLICY: &str = include_str!("../../policies/paynext.yaml");

const BUILT_IN_RESOURCES: [(&str, &[&str]); 2] = [
    ("api_keys", &["create", "read", "update", "delete"]),
    ("organizations", &["create", "read"]),
];

/// A loaded, validated policy.
#[derive(Debug, Clone)]
pub struct Policy {
    pub catalog: Catalog,
    pub routes: RouteTable,
}

impl Policy {
    pub fn load(path: Option<&Path>) -> anyhow::Result<Policy> {
        let Some(path) = path else {
            return Policy::parse(EMBEDDED_DEFAULT_POLICY)
                .context("failed to load the embedded policy");
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("failed to read policy file {}", path.display()))?;
        Policy::parse(&text).with_context(|| format!("invalid policy file {}", path.display()))
    }

    /// Parses and validates a policy; every error names the line at fault.
    pub fn parse(text: &str) -> anyhow::Result<Policy> {
        let file = file::read(text).map_err(|error| anyhow::anyhow!("{error}"))?;
        let catalog = Catalog::build(file.catalog)?;
        let routes = build_routes(&catalog, &file.routes)?;
        Ok(Policy { catalog, routes })
    }
}

/// Compiles `routes`, naming the offending entry (`line 7: routes[3] GET /x: …`) on error.
fn build_routes(catalog: &Catalog, items: &[Entries<String>]) -> anyhow::Result<RouteTable> {
    let mut table = RouteTable::default();
    for (index, route_item) in items.iter().enumerate() {
        let [entry] = route_item.0.as_slice() else {
            let line = route_item
                .0
                .get(1)
                .map_or(String::new(), |extra| format!("line {}: ", extra.line));
            anyhow::bail!("{line}routes[{index}]: expected one `METHOD /path: permission` entry");
        };
        let (spec, line) = (&entry.key, entry.line);
        let at = |error: String| anyhow::anyhow!("line {line}: routes[{index}] {spec}: {error}");
        let permission = Permission::parse(&entry.value).map_err(|error| at(error.to_string()))?;
        catalog
            .check_offered(&Scope::Exactly(permission.clone()))
            .map_err(at)?;
        let Some(permission_index) = catalog.permission_index(permission.as_str()) else {
            return Err(at(format!("{permission} is not in the catalog")));
        };
        table
            .insert(spec, permission, permission_index)
            .map_err(at)?;
    }
    Ok(table)
}

/// Resources, the actions each offers, implications between actions, and presets.
#[derive(Debug, Clone)]
pub struct Catalog {
    resources: BTreeMap<String, BTreeSet<String>>,
    /// Action -> every action it implies, transitively.
    implications: BTreeMap<String, BTreeSet<String>>,
    presets: BTreeMap<String, Vec<Scope>>,
    /// Every concrete permission, in index order, and each one's index.
    permissions: Vec<Permission>,
    permission_indices: HashMap<String, u32>,
    /// Unique per loaded catalog, so indices from different loads never mix.
    generation: u64,
}

static NEXT_GENERATION: AtomicU64 = AtomicU64::new(1);

impl Catalog {
    fn build(file: CatalogFile) -> anyhow::Result<Catalog> {
        let resources = build_resources(file.resources)?;
        let direct_implications = check_implications(&resources, file.implications)?;
        let implications = transitive_closure(&direct_implications);
        let mut permissions = Vec::new();
        for (resource, actions) in &resources {
            for action in actions {
                permissions.push(Permission::parse(&format!("{resource}:{action}"))?);
            }
        }
        let permission_indices = permissions
            .iter()
            .enumerate()
            .map(|(index, permission)| (permission.as_str().to_owned(), index as u32))
            .collect();
        let mut catalog = Catalog {
            resources,
            implications,
            presets: BTreeMap::new(),
            permissions,
            permission_indices,
            generation: NEXT_GENERATION.fetch_add(1, Ordering::Relaxed),
        };
        for preset in file.presets.0 {
            let mut scopes = Vec::with_capacity(preset.value.len());
            for scope_item in &preset.value {
                let (text, scope_line) = item(scope_item);
                let scope = catalog.parse_scope(text).map_err(|error| {
                    anyhow::anyhow!("line {scope_line}: presets.{}: {error}", preset.key)
                })?;
                if !scopes.contains(&scope) {
                    scopes.push(scope);
                }
            }
            catalog.presets.insert(preset.key, scopes);
        }
        Ok(catalog)
    }

    /// Parses and validates scopes against the catalog; the error names what is valid.
    pub fn parse_scopes(&self, texts: &[String]) -> Result<Vec<Scope>, String> {
        let mut scopes = Vec::with_capacity(texts.len());
        for text in texts {
            let scope = self.parse_scope(text)?;
            if !scopes.contains(&scope) {
                scopes.push(scope);
            }
        }
        Ok(scopes)
    }

    fn parse_scope(&self, text: &str) -> Result<Scope, String> {
        let scope = Scope::parse(text).map_err(|error| error.to_string())?;
        self.check_offered(&scope)?;
        Ok(scope)
    }

    /// Checks that `scope` is in the catalog; the error names what is valid. The
    /// scope is shown whole (its syntax bounds it: 8 segments of 64 characters).
    pub fn check_offered(&self, scope: &Scope) -> Result<(), String> {
        match scope {
            Scope::Everything => Ok(()),
            Scope::Below(prefix) => {
                let known = self
                    .resources
                    .keys()
                    .any(|resource| crate::domain::permission::is_segment_prefix(prefix, resource));
                if known {
                    return Ok(());
                }
                Err(format!(
                    "{prefix}:*: unknown resource {}; valid resources: {}",
                    Quoted(prefix),
                    self.resource_list()
                ))
            }
            Scope::Exactly(permission) => {
                let Some(actions) = self.resources.get(permission.resource()) else {
                    return Err(format!(
                        "{permission}: unknown resource {}; valid resources: {}",
                        Quoted(permission.resource()),
                        self.resource_list()
                    ));
                };
                if actions.contains(permission.action()) {
                    return Ok(());
                }
                let offered: Vec<&str> = actions.iter().map(String::as_str).collect();
                Err(format!(
                    "{permission}: resource {} offers only {}",
                    Quoted(permission.resource()),
                    offered.join(", ")
                ))
            }
        }
    }

    fn resource_list(&self) -> String {
        self.resources
            .keys()
            .cloned()
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The scopes of a named preset; the error lists the presets there are.
    pub fn preset(&self, name: &str) -> Result<&[Scope], String> {
        self.presets.get(name).map(Vec::as_slice).ok_or_else(|| {
            let names: Vec<&str> = self.presets.keys().map(String::as_str).collect();
            format!(
                "unknown preset {}; valid presets: {}",
                Quoted(name),
                names.join(", ")
            )
        })
    }

    /// This catalog's generation: the key to its permission indices.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The index of a catalog permission, for [`EffectivePermissions::allows_indexed`].
    pub fn permission_index(&self, permission: &str) -> Option<u32> {
        self.permission_indices.get(permission).copied()
    }

    /// Expands scopes with the catalog's implications into what checks look up.
    pub fn effective(&self, scopes: &[Scope]) -> EffectivePermissions {
        let mut implied = Vec::new();
        for scope in scopes {
            let Scope::Exactly(permission) = scope else {
                continue;
            };
            let (Some(implied_actions), Some(offered)) = (
                self.implications.get(permission.action()),
                self.resources.get(permission.resource()),
            ) else {
                continue;
            };
            for action in implied_actions.intersection(offered) {
                let text = format!("{}:{action}", permission.resource());
                if let Ok(implied_permission) = Permission::parse(&text) {
                    implied.push(implied_permission);
                }
            }
        }
        let mut effective = EffectivePermissions::new(scopes, implied);
        effective.index_catalog(self.generation, &self.permissions);
        effective
    }
}

/// Keygate's own resources and the file's, each with the actions it offers.
fn build_resources(
    entries: Entries<Vec<Item>>,
) -> anyhow::Result<BTreeMap<String, BTreeSet<String>>> {
    let mut resources = BTreeMap::new();
    for (resource, actions) in BUILT_IN_RESOURCES {
        let actions = actions.iter().map(|action| action.to_string()).collect();
        resources.insert(resource.to_owned(), actions);
    }
    for entry in entries.0 {
        let (resource, line) = (entry.key, entry.line);
        if resources.contains_key(&resource) {
            anyhow::bail!(
                "line {line}: resources.{resource}: reserved for Keygate's own permissions"
            );
        }
        let mut offered = BTreeSet::new();
        for action_item in &entry.value {
            let (action, action_line) = item(action_item);
            let at = |error: String| {
                anyhow::anyhow!("line {action_line}: resources.{resource}: {error}")
            };
            // `customers: [a:b]` would offer `customers:a:b`, which reads as
            // action `b` of a resource `customers:a` that does not exist.
            if action.contains(':') {
                return Err(at(format!(
                    "action {} may not contain `:`; nested resources are keys of their own (`{resource}:sub: [read]`)",
                    Quoted(action)
                )));
            }
            Permission::parse(&format!("{resource}:{action}"))
                .map_err(|error| at(error.to_string()))?;
            if !offered.insert(action.to_owned()) {
                return Err(at(format!("action {} listed twice", Quoted(action))));
            }
        }
        if offered.is_empty() {
            anyhow::bail!("line {line}: resources.{resource}: offers no action");
        }
        resources.insert(resource, offered);
    }
    Ok(resources)
}

/// The implications as written, each action on either side offered by some resource
/// (a misspelt action would otherwise load and imply nothing).
fn check_implications(
    resources: &BTreeMap<String, BTreeSet<String>>,
    entries: Entries<Vec<Item>>,
) -> anyhow::Result<BTreeMap<String, Vec<String>>> {
    let offered: BTreeSet<&str> = resources.values().flatten().map(String::as_str).collect();
    let unknown = |action: &str| {
        let valid: Vec<&str> = offered.iter().copied().collect();
        format!(
            "no resource offers the action {}; actions offered: {}",
            Quoted(action),
            valid.join(", ")
        )
    };
    let mut implications = BTreeMap::new();
    for entry in entries.0 {
        let (action, line) = (entry.key, entry.line);
        if !offered.contains(action.as_str()) {
            anyhow::bail!("line {line}: implications.{action}: {}", unknown(&action));
        }
        let mut implied = Vec::with_capacity(entry.value.len());
        for implied_item in &entry.value {
            let (implied_action, implied_line) = item(implied_item);
            if !offered.contains(implied_action) {
                anyhow::bail!(
                    "line {implied_line}: implications.{action}: {}",
                    unknown(implied_action)
                );
            }
            implied.push(implied_action.to_owned());
        }
        implications.insert(action, implied);
    }
    Ok(implications)
}

fn transitive_closure(
    direct: &BTreeMap<String, Vec<String>>,
) -> BTreeMap<String, BTreeSet<String>> {
    let mut closure = BTreeMap::new();
    for start in direct.keys() {
        let mut reached = BTreeSet::new();
        let mut pending: Vec<&String> = direct[start].iter().collect();
        while let Some(action) = pending.pop() {
            if action != start && reached.insert(action.clone()) {
                pending.extend(direct.get(action).into_iter().flatten());
            }
        }
        closure.insert(start.clone(), reached);
    }
    closure
}

#[cfg(test)]
mod tests;

//! The domain: what Keygate's words mean, as types parsed once at the edge,
//! and the pure rules over them. Nothing here does I/O or knows about gRPC,
//! the database or the cache (argon2 runs on the blocking pool, the one
//! exception to "no async", see [`hashing`]).

/// Audit events: what happened to a key, by whom, when.
pub mod events;
/// argon2id hashing of token secrets, on the blocking pool under a bound.
pub mod hashing;
/// A key's fields as domain types, each parsed with an error naming the field.
pub mod key;
/// Whether a change to a key takes access away (and so waits for replicas).
pub mod key_change;
/// Organizations, which own organization keys.
pub mod organization;
/// Page sizes and opaque page tokens for the List RPCs.
pub mod paging;
/// Permissions (`resource:action`), scopes with wildcards, effective permissions.
pub mod permission;
/// The policy file: the permission catalog and the route table.
pub mod policy;
/// How error messages quote refused input: escaped, and cut when long.
pub mod quoted;
/// `METHOD /path/{param}` → the permission it needs, compiled with matchit.
pub mod routes;
/// What a client holds: `<prefix>_<env>_<key id><secret><checksum>`.
pub mod token;

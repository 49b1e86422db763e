//! Keygate: a gRPC authorization service for scoped API keys.
//!
//! Start reading here. The modules below are listed by layer, top to bottom;
//! each one uses only the layers beneath it. `docs/architecture.md` walks a
//! warm Authorize and a RevokeKey through them file by file.
//!
//! A client holds a token (`kg_live_…`, [`domain::token`]); Keygate stores only
//! an argon2id hash of its secret. The [`authorizer`] answers Authorize from the
//! [`cache`] while [`freshness`] says the cache may be trusted; [`replication`]
//! keeps every replica's cache in step with the database ([`store`]) and lets a
//! mutation wait until all of them have applied it; [`lifecycle`] creates and
//! changes keys for callers identified through that same authorizer.

// Wiring and the edges: the server process, its command line, the gRPC API.
/// The admin CLI: a gRPC client of a running server's KeyService.
pub mod cli;
/// The binary's command line: `serve`, `bootstrap`, `migrate`, `keys`, `orgs`.
pub mod commands;
/// Generated `keygate.v1` types and the services that convert them to domain calls.
pub mod grpc;
/// Wiring, configuration, health, the `/metrics` endpoint, logs and traces.
pub mod server;

// What Keygate does.
/// The hot path: token → cached key (or argon2) → Decision.
pub mod authorizer;
/// The per-replica cache of verified keys (moka and its read index).
pub mod cache;
/// May this replica trust its cache right now (listener, lease, tombstones).
pub mod freshness;
/// Create, read, change and remove keys for an identified caller; who may do what.
pub mod lifecycle;
/// Cross-replica invalidation: change notifications, the listener, the lease,
/// progress reports and the wait for every replica to apply a change.
pub mod replication;

// Where it is kept, and what it is made of.
/// Pure types and rules, no I/O: tokens, keys, permissions, the policy file,
/// routes, audit events, hashing, page tokens, organizations.
pub mod domain;
/// Postgres: plain functions with their SQL, errors classified once.
pub mod store;

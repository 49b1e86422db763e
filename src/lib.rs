//! Keygate: a gRPC authorization service for scoped API keys.
//!
//! Start reading here. A client holds a [`token`] (`kg_live_…`); Keygate stores
//! only an argon2id hash of its secret ([`hashing`]). A key ([`key`]) holds scopes
//! ([`permission`]) granted from the catalog in the policy file ([`policy`]),
//! which also maps routes to permissions ([`routes`]). [`authorizer`] answers
//! Authorize with a [`decision`], serving warm keys from the [`cache`] and
//! recording use off the hot path ([`usage`]); [`lifecycle`] creates and manages
//! keys for callers identified through that same path, under the rules in
//! [`access`]; every change writes an audit event ([`events`]) in the same
//! transaction ([`store`]). [`grpc`] converts between proto and domain types;
//! [`server`] wires it together from [`config`]; [`observability`] serves
//! metrics, [`telemetry`] logs and traces, and [`health`] the health service.
//! The admin CLI ([`cli`]) is a client of a running server's KeyService.

pub mod access;
pub mod authorizer;
pub mod cache;
pub mod cli;
pub mod config;
pub mod decision;
pub mod error;
pub mod events;
pub mod freshness;
pub mod grpc;
pub mod hashing;
pub mod health;
pub mod key;
pub mod lifecycle;
pub mod observability;
pub mod paging;
pub mod permission;
pub mod policy;
pub mod replica;
pub mod routes;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod token;
pub mod usage;

//! Store tests: the SQL functions of `keygate::store` against a fresh,
//! migrated database each, with no server. What a function promises its
//! callers (the rows it returns, the order, the errors it maps) is pinned
//! here; what a caller makes of it is the integration tests' business.

// Test support code may unwrap: a failure there is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failure there is a failed test"
)]

#[allow(
    dead_code,
    reason = "the integration tests' TestDatabase, of which these use a part"
)]
#[path = "../api/support/database.rs"]
mod database;
mod support;

mod changes;
mod events;
mod keys;
mod migrations;
mod organizations;
mod usage;

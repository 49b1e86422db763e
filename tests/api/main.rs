//! Integration tests: the real server over real gRPC against a real Postgres,
//! one throwaway database per test.

// Test support code may unwrap: a failure there is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failure there is a failed test"
)]

mod access;
mod authorize;
mod bad_input;
mod bad_mutations;
mod binary;
mod callers;
mod cli;
mod cli_failures;
mod conflicts;
mod default_waits;
mod events;
mod forged_notifications;
mod hardening_input;
mod hardening_telemetry;
mod health_command;
mod lifecycle;
mod log_volume;
mod migrations;
mod operations;
mod organizations;
mod outage;
mod propagation_stress;
mod reloads;
mod replicas;
mod rotation;
mod state_changes;
mod support;
mod telemetry;
mod tls;

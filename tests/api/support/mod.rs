//! What the integration tests stand on, one concern a file:
//!
//! - [`database`]: `TestDatabase`, a throwaway database per test;
//! - [`app`]: `TestApp`, the real server on loopback with connected clients;
//! - [`replicas`]: three replicas on one database, and asking them all;
//! - [`calls`]: bearer credentials, Authorize, key RPCs for tables of calls;
//! - [`keys`]: creating organizations and keys through the API;
//! - [`mutations`]: changing a key through a given replica;
//! - [`tokens`]: the parts of a token, and made-up tokens;
//! - [`rows`]: row counts and sums, to show what a call wrote;
//! - [`assertions`]: how a call ended;
//! - [`process`], [`cli_runner`], [`pki`]: the binary as a server process,
//!   as the admin CLI, and the certificates for TLS;
//! - [`postgres`]: a private Postgres cluster a test may stop and start.

pub mod app;
pub mod assertions;
pub mod calls;
pub mod cli_runner;
pub mod database;
pub mod keys;
pub mod mutations;
pub mod otlp;
pub mod pki;
pub mod postgres;
pub mod process;
pub mod replicas;
pub mod rows;
pub mod tokens;

pub use app::TestApp;
pub use assertions::{assert_case_status, assert_complete, assert_status};
pub use calls::{authed, KeyRpc};
pub use database::TestDatabase;
pub use keys::key_request;
pub use mutations::{revoke_through, rotate_through, set_disabled_through, set_scopes_through};
pub use replicas::{
    authorize_on_all, decisions_on_all, three_replicas, three_replicas_each, three_replicas_with,
    warm_key,
};
pub use tokens::{key_id_of, secret_of, token_for};

//! Input that used to be accepted too readily: policy files with a key written
//! twice, and refused values echoed whole into status messages.

use std::time::Duration;

use keygate::grpc::pb::{Environment, Reason};
use keygate::server::reload_policy;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::binary::{database_url, keygate};
use crate::helpers::{key_request, spawn_app};

/// A policy whose second `customers` line would silently take `write` away.
const WEAKENED_POLICY: &str = "\
catalog:
  resources:
    customers: [read, write]
    customers: [read]
routes:
  - GET /customers: customers:read
";

/// A file holding `text` in a directory of its own; removed with the directory.
fn policy_file(text: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let directory =
        std::env::temp_dir().join(format!("keygate-hardening-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&directory).unwrap();
    let path = directory.join("policy.yaml");
    std::fs::write(&path, text).unwrap();
    (directory, path)
}

#[sqlx::test(migrations = false)]
async fn a_policy_with_a_duplicate_key_is_refused_at_start_and_on_reload(
    _pool: PgPoolOptions,
    db: PgConnectOptions,
) {
    let (directory, path) = policy_file(WEAKENED_POLICY);
    let policy_argument = path.to_str().unwrap();

    let serve = keygate(
        &database_url(&db),
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--policy",
            policy_argument,
        ],
    )
    .output();
    // A server that accepted the policy would serve until killed.
    let started = tokio::time::timeout(Duration::from_secs(20), serve)
        .await
        .expect("a weakened policy was served")
        .unwrap();
    assert!(!started.status.success(), "a weakened policy was served");
    let log = String::from_utf8_lossy(&started.stderr);
    assert!(
        log.contains("line 4") && log.contains("customers"),
        "the error does not name the line and the key:\n{log}"
    );

    // SIGHUP reloads through the same parse: refused, the policy in force stays.
    let app = spawn_app(db).await;
    let org = app.create_organization("Acme").await;
    let (_, token) = app
        .create_key(key_request(&org, Environment::Live, &["customers:write"]))
        .await;
    assert!(!reload_policy(&app.authorizer, &path).await);
    let decision = app.authorize(&token, "POST", "/customers", "").await;
    assert_eq!(decision.reason(), Reason::Ok);
    std::fs::remove_dir_all(&directory).unwrap();
}

//! Input and settings that used to be handled badly: policy files with a key
//! written twice, refused values echoed whole into status messages, `1` or
//! `yes` in boolean `KEYGATE_*` variables, replicas on one host sharing a
//! name, and a Postgres notice logged at every start.

use std::time::Duration;

use keygate::grpc::pb::{self, Environment, Reason};
use keygate::server::reload_policy;
use prost_types::FieldMask;
use tonic::{Code, Status};
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::ServerReflectionRequest;

use crate::support::process::{keygate, ServerProcess};
use crate::support::{authed, key_request, TestApp, TestDatabase};

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

#[tokio::test]
async fn a_policy_with_a_duplicate_key_is_refused_at_start_and_on_reload() {
    let db = TestDatabase::create().await;
    let (directory, path) = policy_file(WEAKENED_POLICY);
    let policy_argument = path.to_str().unwrap();

    let serve = keygate(
        &db.url(),
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
    let app = TestApp::spawn_with(&db, db.settings()).await;
    let org = app.create_organization("Acme").await;
    let (_, token) = app
        .create_key(key_request(&org, Environment::Live, &["customers:write"]))
        .await;
    assert!(!reload_policy(&app.authorizer, &path).await);
    let decision = app.authorize(&token, "POST", "/customers", "").await;
    assert_eq!(decision.reason(), Reason::Ok);
    std::fs::remove_dir_all(&directory).unwrap();
}

/// The start of a status message, for assertion failures.
fn excerpt(status: &Status) -> String {
    status.message().chars().take(200).collect()
}

#[tokio::test]
async fn huge_bad_values_get_a_short_invalid_argument() {
    let db = TestDatabase::create().await;
    let app = TestApp::spawn_with(&db, db.settings()).await;
    let org = app.create_organization("Acme").await;
    let (key, token) = app
        .org_key(&org, Environment::Live, &["customers:read"])
        .await;
    let before = (app.row_counts().await, app.version_sum().await);

    // Plain letters, and U+007F, which `{:?}` escapes to six bytes each.
    for filler in ["a", "\u{7f}"].map(|character| character.repeat(1 << 20)) {
        let mut scope = key_request(&org, Environment::Live, &[filler.as_str()]);
        scope.name = "huge scope".into();
        let mut network = key_request(&org, Environment::Live, &["customers:read"]);
        network.allowed_cidrs = vec![filler.clone()];
        let mut preset = key_request(&org, Environment::Live, &[]);
        preset.preset = filler.clone();
        let mut refusals = Vec::new();
        for (field, request) in [
            ("scopes", scope),
            ("allowed_cidrs", network),
            ("preset", preset),
        ] {
            let refused = app.create_key_as(&app.admin_token, request).await;
            refusals.push((field, refused.unwrap_err()));
        }
        let update = pb::UpdateKeyRequest {
            key: Some(key.clone()),
            update_mask: Some(FieldMask {
                paths: vec![filler.clone()],
            }),
            ..Default::default()
        };
        let updated = app
            .client
            .clone()
            .update_key(authed(&app.admin_token, update))
            .await;
        refusals.push(("update_mask", updated.unwrap_err()));
        let question = pb::AuthorizeRequest {
            token: token.clone(),
            permission: filler.clone(),
            ..Default::default()
        };
        let answered = app.authorizer_client.clone().authorize(question).await;
        refusals.push(("permission", answered.unwrap_err()));

        for (field, status) in refusals {
            let message = excerpt(&status);
            assert_eq!(status.code(), Code::InvalidArgument, "{field}: {message}");
            assert!(status.message().starts_with(field), "{field}: {message}");
            assert!(
                status.message().len() < 300,
                "{field}: a {} byte message: {message}",
                status.message().len()
            );
            assert!(status.message().contains("(1048576 bytes)"), "{message}");
        }
    }
    let after = (app.row_counts().await, app.version_sum().await);
    assert_eq!(after, before, "a refused call wrote to the database");
}

/// Whether sqlx's migration table exists in the database.
async fn migrated(db: &TestDatabase) -> bool {
    let pool = sqlx::PgPool::connect_with(db.connect_options())
        .await
        .unwrap();
    let found: bool =
        sqlx::query_scalar("SELECT to_regclass('public._sqlx_migrations') IS NOT NULL")
            .fetch_one(&pool)
            .await
            .unwrap();
    pool.close().await;
    found
}

#[tokio::test]
async fn boolean_variables_take_1_0_yes_and_on() {
    let db = TestDatabase::create().await;
    let url = db.url();

    // `1` skips the migrations, so serving the empty database fails: after the
    // command line was accepted (a usage error would exit 2).
    let skipping = keygate(&url, &["serve", "--listen", "127.0.0.1:0"])
        .env("KEYGATE_NO_MIGRATE", "1")
        .output();
    let skipped = tokio::time::timeout(Duration::from_secs(30), skipping)
        .await
        .expect("served an unmigrated database")
        .unwrap();
    let log = String::from_utf8_lossy(&skipped.stderr);
    assert_eq!(skipped.status.code(), Some(1), "{log}");
    assert!(!log.contains("invalid value"), "{log}");
    assert!(!migrated(&db).await, "KEYGATE_NO_MIGRATE=1 migrated");

    // `0` migrates; `yes` and `on` switch /metrics and reflection off.
    let mut command = keygate(&url, &["serve", "--listen", "127.0.0.1:0"]);
    command
        .env("KEYGATE_NO_MIGRATE", "0")
        .env("KEYGATE_NO_METRICS", "yes")
        .env("KEYGATE_NO_REFLECTION", "on");
    let mut server = ServerProcess::spawn(command).await;
    assert!(migrated(&db).await, "KEYGATE_NO_MIGRATE=0 did not migrate");
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.address))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let listed = reflection
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await;
    assert_eq!(listed.unwrap_err().code(), Code::Unimplemented);
    assert!(server.stop().await.success());
}

#[tokio::test]
async fn replicas_on_one_host_get_names_of_their_own() {
    let db = TestDatabase::create().await;
    let url = db.url();
    let serve_on_host = |replica_name: Option<&str>| {
        let mut command = keygate(&url, &["serve", "--listen", "127.0.0.1:0"]);
        command
            .env("HOSTNAME", "shared-host")
            .env_remove("KEYGATE_REPLICA_NAME");
        if let Some(name) = replica_name {
            command.env("KEYGATE_REPLICA_NAME", name);
        }
        command
    };
    let mut first = ServerProcess::spawn(serve_on_host(None)).await;
    let mut second = ServerProcess::spawn(serve_on_host(None)).await;
    let mut named = ServerProcess::spawn(serve_on_host(Some("billing-east"))).await;

    let pool = db.pool().await;
    let mut names: Vec<String> = sqlx::query_scalar("SELECT name FROM replicas ORDER BY name")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(names.len(), 3, "{names:?}");
    assert_eq!(
        names.remove(0),
        "billing-east",
        "a given name is kept as given"
    );
    assert_ne!(names[0], names[1], "two replicas share a name");
    for name in &names {
        assert!(name.starts_with("shared-host-"), "{name}");
    }
    for server in [&mut first, &mut second, &mut named] {
        assert!(server.stop().await.success());
    }
}

#[tokio::test]
async fn a_second_start_logs_no_postgres_notice() {
    let db = TestDatabase::create().await;
    let url = db.url();
    for run in ["first", "second"] {
        // The default log filter: what an operator sees without RUST_LOG.
        let migrated = keygate(&url, &["migrate"])
            .env_remove("RUST_LOG")
            .output()
            .await
            .unwrap();
        let log = String::from_utf8_lossy(&migrated.stderr);
        assert!(migrated.status.success(), "{run} run: {log}");
        assert!(log.contains("database migrated"), "{run} run: {log}");
        assert!(
            !log.contains("sqlx::postgres::notice") && !log.contains("already exists"),
            "{run} run logged a notice: {log}"
        );
    }
}

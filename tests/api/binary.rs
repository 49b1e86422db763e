//! The `keygate` binary end to end: migrate, bootstrap, serve, stop on SIGTERM,
//! and no secret material anywhere in what it printed.

use std::process::Stdio;
use std::time::Duration;

use keygate::grpc::pb::key_service_client::KeyServiceClient;
use keygate::grpc::pb::{self, Environment};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::Command;

use crate::helpers::{authed, key_request};

const KEYGATE: &str = env!("CARGO_BIN_EXE_keygate");

fn database_url(options: &PgConnectOptions) -> String {
    format!(
        "postgres://{}@{}:{}/{}",
        options.get_username(),
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap_or_default()
    )
}

fn keygate(url: &str, arguments: &[&str]) -> Command {
    let mut command = Command::new(KEYGATE);
    command
        .args(arguments)
        .env("KEYGATE_DATABASE_URL", url)
        .env("KEYGATE_ARGON2_MEMORY_KIB", "64")
        .env("RUST_LOG", "debug")
        .kill_on_drop(true);
    command
}

#[sqlx::test(migrations = false)]
async fn migrate_bootstrap_serve_and_stop_without_leaking_secrets(
    _pool: PgPoolOptions,
    db: PgConnectOptions,
) {
    let url = database_url(&db);
    let migrated = keygate(&url, &["migrate"]).output().await.unwrap();
    assert!(
        migrated.status.success(),
        "{}",
        String::from_utf8_lossy(&migrated.stderr)
    );

    let bootstrapped = keygate(&url, &["bootstrap", "--name", "first admin"])
        .output()
        .await
        .unwrap();
    assert!(bootstrapped.status.success());
    let stdout = String::from_utf8(bootstrapped.stdout).unwrap();
    let admin_token = stdout
        .lines()
        .find_map(|line| line.strip_prefix("token (shown once, store it now): "))
        .unwrap()
        .to_owned();
    let again = keygate(&url, &["bootstrap"]).output().await.unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("a system key already exists"));

    let policy_directory =
        std::env::temp_dir().join(format!("keygate-binary-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&policy_directory).unwrap();
    let policy_path = policy_directory.join("policy.yaml");
    std::fs::write(&policy_path, keygate::policy::EMBEDDED_DEFAULT_POLICY).unwrap();
    let policy_argument = policy_path.to_str().unwrap();
    let mut server = keygate(
        &url,
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--policy",
            policy_argument,
        ],
    )
    .stderr(Stdio::piped())
    .stdout(Stdio::piped())
    .spawn()
    .unwrap();
    let mut stderr = BufReader::new(server.stderr.take().unwrap());
    let mut log = String::new();
    let address = loop {
        let mut line = String::new();
        let read = tokio::time::timeout(Duration::from_secs(30), stderr.read_line(&mut line))
            .await
            .unwrap()
            .unwrap();
        assert!(read > 0, "server exited early:\n{log}");
        log.push_str(&line);
        if line.contains("keygate serving") {
            let start = line.find("address=").unwrap() + "address=".len();
            break line[start..].split_whitespace().next().unwrap().to_owned();
        }
    };
    let log_reader = tokio::spawn(async move {
        let mut rest = String::new();
        stderr.read_to_string(&mut rest).await.unwrap();
        rest
    });

    let mut client = KeyServiceClient::connect(format!("http://{address}"))
        .await
        .unwrap();
    let request = pb::CreateOrganizationRequest {
        display_name: "Acme".into(),
    };
    let org = client
        .create_organization(authed(&admin_token, request))
        .await
        .unwrap()
        .into_inner()
        .id;
    let request = key_request(&org, Environment::Live, &["api_keys:read"]);
    let created = client
        .create_key(authed(&admin_token, request))
        .await
        .unwrap()
        .into_inner();
    let created_key_id = created.key.clone().unwrap().id;
    let request = pb::RotateKeyRequest {
        key_id: created_key_id.clone(),
        grace_period: None,
        ..Default::default()
    };
    let rotated = client
        .rotate_key(authed(&admin_token, request))
        .await
        .unwrap()
        .into_inner();
    let refused = client
        .list_keys(authed(&created.token, pb::ListKeysRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);

    let pid = server.id().unwrap().to_string();
    // SIGHUP reloads the policy; SIGTERM then stops the server gracefully.
    let hangup = Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .await
        .unwrap();
    assert!(hangup.success());
    let mut authorizer = keygate::grpc::pb::authorizer_client::AuthorizerClient::connect(format!(
        "http://{address}"
    ))
    .await
    .unwrap();
    let request = pb::AuthorizeRequest {
        token: rotated.token.clone(),
        method: "GET".into(),
        path: "/customers".into(),
        ..Default::default()
    };
    let decision = authorizer.authorize(request).await.unwrap().into_inner();
    assert_eq!(decision.reason(), pb::Reason::PermissionDenied);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let terminated = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(terminated.success());
    let exit = tokio::time::timeout(Duration::from_secs(30), server.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "server exit: {exit:?}");
    log.push_str(&log_reader.await.unwrap());
    let mut stdout = String::new();
    server
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .await
        .unwrap();
    log.push_str(&stdout);
    assert!(log.contains("keygate stopped"));
    assert!(
        log.contains("policy reloaded"),
        "SIGHUP did not reload the policy"
    );
    std::fs::remove_dir_all(&policy_directory).unwrap();
    // The log was captured: it names the keys it acted on, by id only.
    assert!(log.contains(&format!("key_id={created_key_id}")));

    let pool = sqlx::PgPool::connect_with(db).await.unwrap();
    let hashes: Vec<String> = sqlx::query_scalar("SELECT secret_hash FROM api_keys")
        .fetch_all(&pool)
        .await
        .unwrap();
    let secret_of = |token: &str| token[token.len() - 49..].to_owned();
    for secret in [
        secret_of(&admin_token),
        secret_of(&created.token),
        secret_of(&rotated.token),
    ] {
        assert!(!log.contains(&secret), "a secret reached the log");
    }
    for hash in hashes {
        assert!(!log.contains(&hash), "a hash reached the log");
    }
    assert!(!log.contains("$argon2id$"));
}

#[sqlx::test(migrations = false)]
async fn sigterm_lets_in_flight_calls_finish(_pool: PgPoolOptions, db: PgConnectOptions) {
    let url = database_url(&db);
    // Costly hashing, so that CreateKey calls are still running when SIGTERM lands.
    let slow = |arguments: &[&str]| {
        let mut command = keygate(&url, arguments);
        command
            .env("KEYGATE_ARGON2_MEMORY_KIB", "65536")
            .env("KEYGATE_ARGON2_ITERATIONS", "3");
        command
    };
    let bootstrapped = slow(&["bootstrap"]).output().await.unwrap();
    let stdout = String::from_utf8(bootstrapped.stdout).unwrap();
    let admin_token = stdout
        .lines()
        .find_map(|line| line.strip_prefix("token (shown once, store it now): "))
        .unwrap()
        .to_owned();
    let mut server = slow(&["serve", "--listen", "127.0.0.1:0", "--drain-seconds", "20"])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(server.stderr.take().unwrap());
    let address = loop {
        let mut line = String::new();
        let read = tokio::time::timeout(Duration::from_secs(30), stderr.read_line(&mut line))
            .await
            .unwrap()
            .unwrap();
        assert!(read > 0, "server exited early");
        if let Some(start) = line.find("address=") {
            break line[start + "address=".len()..]
                .split_whitespace()
                .next()
                .unwrap()
                .to_owned();
        }
    };
    tokio::spawn(async move {
        let mut rest = String::new();
        let _ = stderr.read_to_string(&mut rest).await;
    });
    let client = KeyServiceClient::connect(format!("http://{address}"))
        .await
        .unwrap();
    let organization = pb::CreateOrganizationRequest {
        display_name: "Acme".into(),
    };
    let org = client
        .clone()
        .create_organization(authed(&admin_token, organization))
        .await
        .unwrap()
        .into_inner()
        .id;

    let calls: Vec<_> = (0..4)
        .map(|_| {
            let mut client = client.clone();
            let request = authed(
                &admin_token,
                key_request(&org, Environment::Live, &["customers:read"]),
            );
            tokio::spawn(async move { client.create_key(request).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(30)).await;
    let pid = server.id().unwrap().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap()
        .success());
    for call in calls {
        let created = call.await.unwrap().expect("an in-flight call was lost");
        assert!(!created.into_inner().token.is_empty());
    }
    let exit = tokio::time::timeout(Duration::from_secs(30), server.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "server exit: {exit:?}");
    let pool = sqlx::PgPool::connect_with(db).await.unwrap();
    let keys: i64 = sqlx::query_scalar("SELECT count(*) FROM api_keys")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        keys, 5,
        "the bootstrap key and the four created during the drain"
    );
}

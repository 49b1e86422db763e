//! The `keygate` binary end to end: migrate, bootstrap, serve, stop on SIGTERM,
//! and no secret material anywhere in what it printed.

use std::process::Stdio;
use std::time::Duration;

use keygate::grpc::pb::key_service_client::KeyServiceClient;
use keygate::grpc::pb::{self, Environment};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::Command;

use crate::cli_runner::printed_token;
use crate::helpers::{authed, key_request, secret_of};

pub const KEYGATE: &str = env!("CARGO_BIN_EXE_keygate");

pub fn database_url(options: &PgConnectOptions) -> String {
    format!(
        "postgres://{}@{}:{}/{}",
        options.get_username(),
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap_or_default()
    )
}

pub fn keygate(url: &str, arguments: &[&str]) -> Command {
    let mut command = Command::new(KEYGATE);
    command
        .args(arguments)
        .env("KEYGATE_DATABASE_URL", url)
        .env("KEYGATE_ARGON2_MEMORY_KIB", "64")
        // Loopback only, and a free port for each server.
        .env("KEYGATE_METRICS_LISTEN", "127.0.0.1:0")
        .env("RUST_LOG", "debug")
        .kill_on_drop(true);
    command
}

/// Runs `keygate bootstrap` on `url` and returns the printed token.
pub async fn bootstrap_token(url: &str) -> String {
    let bootstrapped = keygate(url, &["bootstrap"]).output().await.unwrap();
    assert!(
        bootstrapped.status.success(),
        "{}",
        String::from_utf8_lossy(&bootstrapped.stderr)
    );
    printed_token(&String::from_utf8(bootstrapped.stdout).unwrap())
}

/// A `keygate serve` child process, its address and its log.
pub struct ServerProcess {
    child: tokio::process::Child,
    pub address: String,
    startup_log: String,
    rest_of_log: tokio::task::JoinHandle<String>,
}

/// Spawns `command` (a `serve`) and waits until it logs its address.
pub async fn spawn_server(mut command: Command) -> ServerProcess {
    let mut child = command.stderr(Stdio::piped()).spawn().unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut startup_log = String::new();
    let address = loop {
        let mut line = String::new();
        let read = tokio::time::timeout(Duration::from_secs(30), stderr.read_line(&mut line))
            .await
            .unwrap()
            .unwrap();
        assert!(read > 0, "server exited early:\n{startup_log}");
        startup_log.push_str(&line);
        if line.contains("keygate serving") {
            let start = line.find("address=").unwrap() + "address=".len();
            break line[start..].split_whitespace().next().unwrap().to_owned();
        }
    };
    let rest_of_log = tokio::spawn(async move {
        let mut rest = String::new();
        let _ = stderr.read_to_string(&mut rest).await;
        rest
    });
    ServerProcess {
        child,
        address,
        startup_log,
        rest_of_log,
    }
}

impl ServerProcess {
    /// Sends a signal (`HUP`, `TERM`, ...) to the server.
    pub async fn signal(&self, name: &str) {
        let pid = self.child.id().unwrap().to_string();
        let sent = Command::new("kill")
            .args([format!("-{name}"), pid])
            .status()
            .await
            .unwrap();
        assert!(sent.success());
    }

    /// SIGTERM, then waits for the exit.
    pub async fn stop(&mut self) -> std::process::ExitStatus {
        self.signal("TERM").await;
        self.wait().await
    }

    /// Waits (at most 30 s) for the server to exit.
    pub async fn wait(&mut self) -> std::process::ExitStatus {
        tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .unwrap()
            .unwrap()
    }

    /// Everything the stopped server printed (stderr, then stdout if piped).
    pub async fn output(mut self) -> String {
        let mut log = self.startup_log;
        log.push_str(&self.rest_of_log.await.unwrap());
        if let Some(mut stdout) = self.child.stdout.take() {
            stdout.read_to_string(&mut log).await.unwrap();
        }
        log
    }
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
    let admin_token = printed_token(&String::from_utf8(bootstrapped.stdout).unwrap());
    let again = keygate(&url, &["bootstrap"]).output().await.unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("a system key already exists"));

    let policy_directory =
        std::env::temp_dir().join(format!("keygate-binary-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&policy_directory).unwrap();
    let policy_path = policy_directory.join("policy.yaml");
    std::fs::write(
        &policy_path,
        keygate::domain::policy::EMBEDDED_DEFAULT_POLICY,
    )
    .unwrap();
    let policy_argument = policy_path.to_str().unwrap();
    let mut command = keygate(
        &url,
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--policy",
            policy_argument,
        ],
    );
    command.stdout(Stdio::piped());
    let mut server = spawn_server(command).await;
    let address = server.address.clone();

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

    // SIGHUP reloads the policy; SIGTERM then stops the server gracefully.
    server.signal("HUP").await;
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
    let exit = server.stop().await;
    assert!(exit.success(), "server exit: {exit:?}");
    let log = server.output().await;
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
    for secret in [
        secret_of(&admin_token),
        secret_of(&created.token),
        secret_of(&rotated.token),
    ] {
        assert!(!log.contains(secret), "a secret reached the log");
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
    assert!(bootstrapped.status.success());
    let admin_token = printed_token(&String::from_utf8(bootstrapped.stdout).unwrap());
    let mut command = slow(&["serve", "--listen", "127.0.0.1:0", "--drain-seconds", "20"]);
    command.stdout(Stdio::null());
    let mut server = spawn_server(command).await;
    let address = server.address.clone();
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
    server.signal("TERM").await;
    for call in calls {
        let created = call.await.unwrap().expect("an in-flight call was lost");
        assert!(!created.into_inner().token.is_empty());
    }
    let exit = server.wait().await;
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

//! Postgres stopped and restarted under load, on a private Postgres cluster that
//! this test starts (on a free loopback port) so the shared server is untouched.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use keygate::freshness::StalePolicy;
use keygate::grpc::pb::{self, Environment, Reason};
use sqlx::postgres::PgConnectOptions;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::support::{authed, key_request, TestApp, TestDatabase};

/// A throwaway Postgres cluster run as the `postgres` user; removed on drop.
struct PrivatePostgres {
    directory: PathBuf,
    port: u16,
    bin: PathBuf,
}

fn postgres_bin() -> Option<PathBuf> {
    let root = PathBuf::from("/usr/lib/postgresql");
    let mut versions: Vec<PathBuf> = std::fs::read_dir(&root)
        .ok()?
        .flatten()
        .map(|entry| entry.path())
        .collect();
    versions.sort();
    versions.pop().map(|version| version.join("bin"))
}

fn as_postgres(program: &PathBuf, arguments: &[&str]) -> bool {
    Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .arg(program)
        .args(arguments)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

impl PrivatePostgres {
    fn start() -> PrivatePostgres {
        let bin = postgres_bin().expect("no PostgreSQL binaries under /usr/lib/postgresql");
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let directory =
            std::env::temp_dir().join(format!("keygate-pg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&directory).unwrap();
        assert!(Command::new("chown")
            .arg("postgres")
            .arg(&directory)
            .status()
            .unwrap()
            .success());
        let data = directory.join("data");
        assert!(as_postgres(
            &bin.join("initdb"),
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                "postgres",
                "--auth=trust"
            ]
        ));
        let cluster = PrivatePostgres {
            directory,
            port,
            bin,
        };
        cluster.start_server();
        cluster
    }

    fn start_server(&self) {
        let data = self.directory.join("data");
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            self.directory.display()
        );
        let log = self.directory.join("log");
        assert!(as_postgres(
            &self.bin.join("pg_ctl"),
            &[
                "-D",
                data.to_str().unwrap(),
                "-o",
                &options,
                "-l",
                log.to_str().unwrap(),
                "-w",
                "start"
            ],
        ));
    }

    fn stop_server(&self) {
        let data = self.directory.join("data");
        assert!(as_postgres(
            &self.bin.join("pg_ctl"),
            &["-D", data.to_str().unwrap(), "-m", "fast", "-w", "stop"]
        ));
    }

    /// The cluster's own `postgres` database, where test databases are made.
    fn connect_options(&self) -> PgConnectOptions {
        PgConnectOptions::new()
            .host("127.0.0.1")
            .port(self.port)
            .username("postgres")
            .database("postgres")
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let data = self.directory.join("data");
        let _ = as_postgres(
            &self.bin.join("pg_ctl"),
            &[
                "-D",
                data.to_str().unwrap(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        );
        let _ = std::fs::remove_dir_all(&self.directory);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restart_under_load_loses_nothing_and_recovers_by_itself() {
    let cluster = PrivatePostgres::start();
    let db = TestDatabase::create_on(cluster.connect_options()).await;
    let mut closed_settings = db.settings();
    closed_settings.database_unhealthy_after = Duration::from_secs(1);
    let closed = TestApp::spawn_with(&db, closed_settings).await;
    let mut stale_settings = db.settings();
    stale_settings.replication.stale_policy = StalePolicy::ServeStale(Duration::from_secs(60));
    let stale = closed.spawn_replica(stale_settings).await;
    let org = closed.create_organization("Acme").await;
    let (_, token) = closed
        .org_key(&org, Environment::Live, &["customers:read"])
        .await;
    assert!(
        closed
            .authorize(&token, "GET", "/customers", "")
            .await
            .allowed
    );
    assert!(
        stale
            .authorize(&token, "GET", "/customers", "")
            .await
            .allowed
    );

    // Writes acknowledged before the outage.
    let mut acknowledged = Vec::new();
    for _ in 0..5 {
        let (key, _) = closed
            .org_key(&org, Environment::Live, &["customers:read"])
            .await;
        acknowledged.push(key.id);
    }

    // Load keeps flowing while Postgres goes away.
    let load_token = token.clone();
    let load_client = closed.authorizer_client.clone();
    let load = tokio::spawn(async move {
        let started = Instant::now();
        let mut answered = 0u32;
        while started.elapsed() < Duration::from_secs(6) && answered < 100_000 {
            let request = pb::AuthorizeRequest {
                token: load_token.clone(),
                method: "GET".into(),
                path: "/customers".into(),
                ..Default::default()
            };
            if load_client.clone().authorize(request).await.is_ok() {
                answered += 1;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        answered
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster.stop_server();

    // The listeners notice; cached keys follow each replica's policy.
    let mut closed_reason = Reason::Ok;
    for _ in 0..100 {
        closed_reason = closed
            .authorize(&token, "GET", "/customers", "")
            .await
            .reason();
        if closed_reason == Reason::Unverifiable {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        closed_reason,
        Reason::Unverifiable,
        "fail_closed denies unconfirmable keys"
    );
    assert_eq!(
        stale
            .authorize(&token, "GET", "/customers", "")
            .await
            .reason(),
        Reason::Ok,
        "serve_stale keeps serving"
    );

    // Lifecycle calls answer UNAVAILABLE, and nothing they tried is acknowledged.
    let result = closed
        .create_key_as(
            &closed.admin_token,
            key_request(&org, Environment::Live, &["customers:read"]),
        )
        .await;
    assert_eq!(result.unwrap_err().code(), Code::Unavailable);
    let request = pb::GetKeyRequest {
        key_id: acknowledged[0].clone(),
    };
    let status = closed
        .client
        .clone()
        .get_key(authed(&closed.admin_token, request))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);

    // Readiness follows the database; liveness does not.
    assert!(
        wait_for_health(&closed, "", ServingStatus::NotServing).await,
        "health still SERVING with the database down"
    );
    assert_eq!(
        closed.health("keygate.v1.Authorizer").await,
        ServingStatus::NotServing
    );
    assert_eq!(closed.health("liveness").await, ServingStatus::Serving);

    cluster.start_server();
    assert!(
        wait_for_health(&closed, "", ServingStatus::Serving).await,
        "health did not recover with the database"
    );
    // Both replicas recover by themselves.
    closed.wait_until_trusted().await;
    stale.wait_until_trusted().await;
    let mut recovered = false;
    for _ in 0..250 {
        if closed
            .authorize(&token, "GET", "/customers", "")
            .await
            .allowed
        {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(recovered, "authorize recovers once Postgres is back");
    let mut created = None;
    for _ in 0..250 {
        match closed
            .create_key_as(
                &closed.admin_token,
                key_request(&org, Environment::Live, &["customers:read"]),
            )
            .await
        {
            Ok(pair) => {
                created = Some(pair);
                break;
            }
            Err(status) => assert_eq!(status.code(), Code::Unavailable, "{status:?}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        created.is_some(),
        "lifecycle calls recover once Postgres is back"
    );
    for key_id in &acknowledged {
        let request = pb::GetKeyRequest {
            key_id: key_id.clone(),
        };
        closed
            .client
            .clone()
            .get_key(authed(&closed.admin_token, request))
            .await
            .unwrap();
    }
    let answered = load.await.unwrap();
    assert!(
        answered > 0,
        "the load got answers (no panic, no dead server)"
    );
}

/// Polls (at most 10 s) until `service` reports `status`.
async fn wait_for_health(app: &TestApp, service: &str, status: ServingStatus) -> bool {
    for _ in 0..100 {
        if app.health(service).await == status {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

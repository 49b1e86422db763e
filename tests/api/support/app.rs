//! `TestApp`: the real server on `127.0.0.1:0` against a test database, with a
//! bootstrapped system key and connected clients.
//!
//! ```ignore
//! let app = TestApp::spawn().await;                  // a fresh database of its own
//!
//! let db = TestDatabase::create().await;             // settings of the test's own
//! let mut settings = db.settings();
//! settings.reflection = false;
//! let app = TestApp::spawn_with(&db, settings).await;
//! let replica = app.spawn_replica(db.settings()).await;
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use keygate::authorizer::Authorizer;
use keygate::cache::CacheSettings;
use keygate::domain::hashing::HashingParams;
use keygate::domain::key::DisplayName;
use keygate::domain::policy::{Policy, EMBEDDED_DEFAULT_POLICY};
use keygate::domain::token::TokenPrefix;
use keygate::grpc::pb::authorizer_client::AuthorizerClient;
use keygate::grpc::pb::key_service_client::KeyServiceClient;
use keygate::replication::Replica;
use keygate::server::config::{DatabaseSettings, KeySettings, ReplicationSettings, Settings};
use keygate::server::Application;
use secrecy::ExposeSecret;
use sqlx::PgPool;
use tokio::sync::oneshot;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use super::database::TestDatabase;

pub struct TestApp {
    pub client: KeyServiceClient<Channel>,
    pub authorizer_client: AuthorizerClient<Channel>,
    /// A connection to the server, for other clients (health).
    pub channel: Channel,
    /// Where the server listens (loopback), for clients run as processes.
    pub address: SocketAddr,
    /// Where the server serves `/metrics`, when it does (used by the metrics test).
    #[allow(dead_code, reason = "read only by the metrics test binary")]
    pub metrics_addr: Option<SocketAddr>,
    /// The server's own pool: closing it cuts the server off from the database.
    pub server_pool: PgPool,
    pub authorizer: Authorizer,
    pub replica: Replica,
    /// The test's own pool on the server's database.
    pub pool: PgPool,
    /// Token of the bootstrapped system key, which holds `*`.
    pub admin_token: String,
    pub admin_key_id: String,
    shutdown: Option<oneshot::Sender<()>>,
    /// Kept until the server is gone: the database goes with its last handle.
    database: TestDatabase,
}

/// Whose admin key a new server gets.
enum Admin {
    /// Bootstraps the system key on its (empty) database.
    Bootstrap,
    /// Shares the admin key another server on its database bootstrapped.
    Shared { token: String, key_id: String },
}

impl TestApp {
    /// A server with test settings on a fresh database of its own.
    pub async fn spawn() -> TestApp {
        let database = TestDatabase::create().await;
        let settings = database.settings();
        TestApp::spawn_with(&database, settings).await
    }

    /// A server on `database`, with `settings` (from `database.settings()`).
    pub async fn spawn_with(database: &TestDatabase, settings: Settings) -> TestApp {
        start(database, settings, Admin::Bootstrap).await
    }

    /// A server on a database that already has its bootstrap key (from an
    /// earlier server in the same test); this one gets no admin token.
    pub async fn spawn_with_existing_admin(database: &TestDatabase, settings: Settings) -> TestApp {
        let admin = Admin::Shared {
            token: String::new(),
            key_id: String::new(),
        };
        start(database, settings, admin).await
    }

    /// The database this server runs on.
    pub fn database(&self) -> &TestDatabase {
        &self.database
    }

    /// Another replica on this one's database, sharing its admin key.
    pub async fn spawn_replica(&self, settings: Settings) -> TestApp {
        let admin = Admin::Shared {
            token: self.admin_token.clone(),
            key_id: self.admin_key_id.clone(),
        };
        start(&self.database, settings, admin).await
    }
}

impl TestDatabase {
    /// Settings for a server on this database: loopback on a free port, the
    /// fastest argon2, the embedded policy, a replica name of its own.
    pub fn settings(&self) -> Settings {
        Settings {
            listen: "127.0.0.1:0".parse().unwrap(),
            database: DatabaseSettings {
                connect_options: self.connect_options(),
                max_connections: 8,
                create_if_missing_url: None,
            },
            keys: KeySettings {
                prefix: TokenPrefix::default(),
                hashing: HashingParams::FASTEST,
                hash_concurrency: 2,
            },
            cache: CacheSettings::default(),
            policy: Arc::new(Policy::parse(EMBEDDED_DEFAULT_POLICY).unwrap()),
            policy_path: None,
            migrate: true,
            reflection: true,
            drain: Duration::from_secs(5),
            database_unhealthy_after: Duration::from_secs(10),
            tls: None,
            metrics_listen: None,
            usage_flush_interval: Duration::from_millis(200),
            replication: ReplicationSettings {
                replica_name: format!(
                    "replica-{}",
                    &uuid::Uuid::new_v4().simple().to_string()[..8]
                ),
                ..Default::default()
            },
            authorizer_callers: Default::default(),
        }
    }
}

async fn start(database: &TestDatabase, settings: Settings, admin: Admin) -> TestApp {
    assert_eq!(
        settings.database.connect_options.get_database(),
        Some(database.name()),
        "the settings name another database"
    );
    let pool = database.pool().await;
    let application = Application::build(settings).await.unwrap();
    let address = application.local_addr();
    let metrics_addr = application.metrics_addr();
    let server_pool = application.pool().clone();
    let authorizer = application.manager().authorizer().clone();
    let replica = application.replica().clone();
    let (admin_token, admin_key_id) = match admin {
        Admin::Shared { token, key_id } => (token, key_id),
        Admin::Bootstrap => {
            let bootstrapped = application
                .manager()
                .bootstrap(DisplayName::parse("name", "test admin").unwrap())
                .await
                .unwrap();
            (
                bootstrapped.token.expose_secret().to_owned(),
                bootstrapped.key.id.to_string(),
            )
        }
    };
    let (shutdown, shutdown_signal) = oneshot::channel::<()>();
    tokio::spawn(application.run_until(async move {
        let _ = shutdown_signal.await;
    }));
    let client = KeyServiceClient::connect(format!("http://{address}"))
        .await
        .unwrap();
    let channel = Endpoint::from_shared(format!("http://{address}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let authorizer_client = AuthorizerClient::new(channel.clone());
    let app = TestApp {
        client,
        authorizer_client,
        channel,
        address,
        metrics_addr,
        server_pool,
        authorizer,
        replica,
        pool,
        admin_token,
        admin_key_id,
        shutdown: Some(shutdown),
        database: database.clone(),
    };
    app.wait_until_trusted().await;
    app
}

impl Drop for TestApp {
    /// Lets go of the database at once (listener, pools), so that the test
    /// database can be dropped without waiting for a graceful shutdown.
    fn drop(&mut self) {
        self.replica.stop();
        let server_pool = self.server_pool.clone();
        let pool = self.pool.clone();
        tokio::spawn(async move {
            server_pool.close().await;
            pool.close().await;
        });
    }
}

impl TestApp {
    /// The health status the server reports for `service` ("" = overall).
    pub async fn health(&self, service: &str) -> ServingStatus {
        let mut client = HealthClient::new(self.channel.clone());
        let request = HealthCheckRequest {
            service: service.to_owned(),
        };
        client.check(request).await.unwrap().into_inner().status()
    }

    /// Sends the server its stop signal: it drains, then exits.
    pub fn begin_shutdown(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }

    /// Polls (at most 2 s) until `service` reports `status`.
    pub async fn wait_for_health(&self, service: &str, status: ServingStatus) -> bool {
        for _ in 0..40 {
            if self.health(service).await == status {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// Waits (at most 5 s) until this replica's event listener is connected.
    pub async fn wait_until_trusted(&self) {
        for _ in 0..500 {
            if self.authorizer.freshness().is_trusted() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("replica never connected its event listener");
    }
}

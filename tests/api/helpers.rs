//! `spawn_app()`: the real server on `127.0.0.1:0` against a throwaway database,
//! with a bootstrapped system key and a connected client.

use std::sync::Arc;

use keygate::domain::hashing::HashingParams;
use keygate::domain::key::DisplayName;
use keygate::domain::policy::{Policy, EMBEDDED_DEFAULT_POLICY};
use keygate::domain::token::TokenPrefix;
use keygate::grpc::pb::authorizer_client::AuthorizerClient;
use keygate::grpc::pb::key_service_client::KeyServiceClient;
use keygate::grpc::pb::{self, CreateKeyRequest, Environment, Reason};
use keygate::server::config::{DatabaseSettings, KeySettings, Settings};
use keygate::server::Application;
use prost_types::FieldMask;
use secrecy::ExposeSecret;
use sqlx::postgres::PgConnectOptions;
use sqlx::PgPool;
use tokio::sync::oneshot;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

pub struct TestApp {
    pub client: KeyServiceClient<Channel>,
    pub authorizer_client: AuthorizerClient<Channel>,
    /// A connection to the server, for other clients (health).
    pub channel: Channel,
    /// Where the server listens (loopback), for clients run as processes.
    #[allow(dead_code, reason = "read by only some of the test binaries that share this file")]
    pub address: std::net::SocketAddr,
    /// Where the server serves `/metrics`, when it does (used by the metrics test).
    #[allow(dead_code, reason = "read by only some of the test binaries that share this file")]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// The server's own pool: closing it cuts the server off from the database.
    pub server_pool: PgPool,
    pub authorizer: keygate::authorizer::Authorizer,
    pub replica: keygate::replication::Replica,
    pub pool: PgPool,
    /// Token of the bootstrapped system key, which holds `*`.
    pub admin_token: String,
    pub admin_key_id: String,
    shutdown: Option<oneshot::Sender<()>>,
}

pub fn test_settings(connect_options: PgConnectOptions) -> Settings {
    Settings {
        listen: "127.0.0.1:0".parse().unwrap(),
        database: DatabaseSettings {
            connect_options,
            max_connections: 8,
            create_if_missing_url: None,
        },
        keys: KeySettings {
            prefix: TokenPrefix::default(),
            hashing: HashingParams::FASTEST,
            hash_concurrency: 2,
        },
        cache: keygate::cache::CacheSettings::default(),
        policy: Arc::new(Policy::parse(EMBEDDED_DEFAULT_POLICY).unwrap()),
        policy_path: None,
        migrate: true,
        reflection: true,
        drain: std::time::Duration::from_secs(5),
        database_unhealthy_after: std::time::Duration::from_secs(10),
        tls: None,
        metrics_listen: None,
        usage_flush_interval: std::time::Duration::from_millis(200),
        replication: keygate::server::config::ReplicationSettings {
            replica_name: format!(
                "replica-{}",
                &uuid::Uuid::new_v4().simple().to_string()[..8]
            ),
            ..Default::default()
        },
    }
}

pub async fn spawn_app(connect_options: PgConnectOptions) -> TestApp {
    spawn_app_with(test_settings(connect_options)).await
}

pub async fn spawn_app_with(settings: Settings) -> TestApp {
    spawn_server(settings, None).await
}

/// A server on a database that already has its bootstrap key (from an earlier
/// server in the same test); this one gets no admin token.
pub async fn spawn_app_with_existing_admin(settings: Settings) -> TestApp {
    spawn_server(settings, Some((String::new(), String::new()))).await
}

/// Another replica on the same database as `first`, sharing its admin key.
pub async fn spawn_replica(settings: Settings, first: &TestApp) -> TestApp {
    spawn_server(
        settings,
        Some((first.admin_token.clone(), first.admin_key_id.clone())),
    )
    .await
}

async fn spawn_server(settings: Settings, admin: Option<(String, String)>) -> TestApp {
    let pool = PgPool::connect_with(settings.database.connect_options.clone())
        .await
        .unwrap();
    let application = Application::build(settings).await.unwrap();
    let address = application.local_addr();
    let metrics_addr = application.metrics_addr();
    let server_pool = application.pool().clone();
    let authorizer = application.manager().authorizer().clone();
    let replica = application.replica().clone();
    let (admin_token, admin_key_id) = match admin {
        Some(admin) => admin,
        None => {
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
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let authorizer_client = AuthorizerClient::new(channel.clone());
    let app = TestApp {
        client,
        authorizer_client,
        metrics_addr,
        channel,
        address,
        server_pool,
        authorizer,
        replica,
        pool,
        admin_token,
        admin_key_id,
        shutdown: Some(shutdown),
    };
    app.wait_until_trusted().await;
    app
}

/// Wraps a message with `authorization: Bearer <token>`.
pub fn authed<T>(token: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

/// Asserts a call failed with `code` and a message mentioning `needle`.
pub fn assert_status<T: std::fmt::Debug>(result: Result<T, Status>, code: Code, needle: &str) {
    let status = result.expect_err("call should have failed");
    assert_eq!(status.code(), code, "message: {}", status.message());
    assert!(
        status.message().contains(needle),
        "expected {needle:?} in {:?}",
        status.message()
    );
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
    pub async fn health(
        &self,
        service: &str,
    ) -> tonic_health::pb::health_check_response::ServingStatus {
        let mut client = tonic_health::pb::health_client::HealthClient::new(self.channel.clone());
        let request = tonic_health::pb::HealthCheckRequest {
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
    pub async fn wait_for_health(
        &self,
        service: &str,
        status: tonic_health::pb::health_check_response::ServingStatus,
    ) -> bool {
        for _ in 0..40 {
            if self.health(service).await == status {
                return true;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        false
    }

    /// Waits (at most 5 s) until this replica's event listener is connected.
    pub async fn wait_until_trusted(&self) {
        for _ in 0..500 {
            if self.authorizer.freshness().is_trusted() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("replica never connected its event listener");
    }

    /// Asks Authorize about `method path` with `token`.
    pub async fn authorize(
        &self,
        token: &str,
        method: &str,
        path: &str,
        client_ip: &str,
    ) -> pb::Decision {
        let request = pb::AuthorizeRequest {
            token: token.to_owned(),
            method: method.to_owned(),
            path: path.to_owned(),
            client_ip: client_ip.to_owned(),
            permission: String::new(),
        };
        self.authorizer_client
            .clone()
            .authorize(request)
            .await
            .unwrap()
            .into_inner()
    }

    /// Asks Authorize about a permission named directly.
    pub async fn authorize_permission(&self, token: &str, permission: &str) -> pb::Decision {
        let request = pb::AuthorizeRequest {
            token: token.to_owned(),
            permission: permission.to_owned(),
            ..Default::default()
        };
        self.authorizer_client
            .clone()
            .authorize(request)
            .await
            .unwrap()
            .into_inner()
    }

    /// The newest event's sequence number (0 with no event).
    pub async fn latest_sequence(&self) -> i64 {
        sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM key_events")
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    pub async fn count(&self, table: &str) -> i64 {
        sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    /// (keys, events) row counts, to assert that a refused call wrote nothing.
    pub async fn row_counts(&self) -> (i64, i64) {
        (self.count("api_keys").await, self.count("key_events").await)
    }

    /// The sum of every key's version: unchanged unless some key was changed.
    pub async fn version_sum(&self) -> i64 {
        sqlx::query_scalar("SELECT COALESCE(sum(version), 0)::bigint FROM api_keys")
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    pub async fn create_organization(&self, name: &str) -> String {
        let request = pb::CreateOrganizationRequest {
            display_name: name.to_owned(),
        };
        let response = self
            .client
            .clone()
            .create_organization(authed(&self.admin_token, request))
            .await
            .unwrap();
        response.into_inner().id
    }

    /// Creates a key with the admin token.
    pub async fn create_key(&self, request: CreateKeyRequest) -> (pb::Key, String) {
        self.create_key_as(&self.admin_token, request)
            .await
            .unwrap()
    }

    pub async fn create_key_as(
        &self,
        token: &str,
        request: CreateKeyRequest,
    ) -> Result<(pb::Key, String), Status> {
        let response = self
            .client
            .clone()
            .create_key(authed(token, request))
            .await?
            .into_inner();
        Ok((response.key.unwrap(), response.token))
    }

    /// An organization key in `organization_id` holding `scopes`.
    pub async fn org_key(
        &self,
        organization_id: &str,
        environment: Environment,
        scopes: &[&str],
    ) -> (pb::Key, String) {
        self.create_key(key_request(organization_id, environment, scopes))
            .await
    }

    /// `count` live keys holding `customers:read`, in a new organization.
    pub async fn customer_readers(&self, count: usize) -> Vec<(pb::Key, String)> {
        let org = self.create_organization("Acme").await;
        let mut keys = Vec::with_capacity(count);
        for _ in 0..count {
            keys.push(
                self.org_key(&org, Environment::Live, &["customers:read"])
                    .await,
            );
        }
        keys
    }
}

pub fn key_request(
    organization_id: &str,
    environment: Environment,
    scopes: &[&str],
) -> CreateKeyRequest {
    CreateKeyRequest {
        organization_id: organization_id.to_owned(),
        environment: environment.into(),
        name: "integration key".to_owned(),
        scopes: scopes.iter().map(|scope| scope.to_string()).collect(),
        ..Default::default()
    }
}

/// Asks every replica the same question; returns their reasons in order.
pub async fn authorize_on_all(
    replicas: &[&TestApp],
    token: &str,
    method: &str,
    path: &str,
) -> Vec<pb::Reason> {
    let decisions = decisions_on_all(replicas, token, method, path).await;
    decisions.iter().map(pb::Decision::reason).collect()
}

/// Each replica's decision on the same request, asked one after another.
pub async fn decisions_on_all(
    replicas: &[&TestApp],
    token: &str,
    method: &str,
    path: &str,
) -> Vec<pb::Decision> {
    let mut decisions = Vec::with_capacity(replicas.len());
    for replica in replicas {
        decisions.push(replica.authorize(token, method, path, "").await);
    }
    decisions
}

/// A well-formed live token (valid checksum) for `key_id` with a new secret:
/// someone else's secret for that key, or a key id nobody issued.
pub fn token_for(key_id: &keygate::domain::token::KeyId) -> String {
    let issued = keygate::domain::token::Token::issue(
        &keygate::domain::token::TokenPrefix::default(),
        keygate::domain::token::Environment::Live,
        key_id,
    );
    secrecy::ExposeSecret::expose_secret(&issued.token).to_owned()
}

/// The secret part of a token (what is hashed): the 43 characters before the
/// checksum. A leak check looks for this, not the whole token.
pub fn secret_of(token: &str) -> &str {
    use keygate::domain::token::{CHECKSUM_LEN, SECRET_LEN};
    let end = token.len() - CHECKSUM_LEN;
    &token[end - SECRET_LEN..end]
}

/// The key id part of a token (the 22 characters after `kg_<env>_`).
pub fn key_id_of(token: &str) -> String {
    let start = "kg_live_".len();
    token[start..start + keygate::domain::token::KEY_ID_LEN].to_owned()
}

/// Three replicas on one database, the first with the bootstrap admin.
pub async fn three_replicas(db: PgConnectOptions) -> (TestApp, TestApp, TestApp) {
    three_replicas_with(test_settings(db)).await
}

/// The same, all three with `settings`.
pub async fn three_replicas_with(settings: Settings) -> (TestApp, TestApp, TestApp) {
    let first = spawn_app_with(settings.clone()).await;
    let second = spawn_replica(settings.clone(), &first).await;
    let third = spawn_replica(settings, &first).await;
    (first, second, third)
}

/// Creates a key and warms it on every replica.
pub async fn warm_key(replicas: &[&TestApp], scopes: &[&str]) -> (pb::Key, String) {
    let first = replicas[0];
    let org = first.create_organization("Acme").await;
    let (key, token) = first.org_key(&org, Environment::Live, scopes).await;
    for reason in authorize_on_all(replicas, &token, "GET", "/customers").await {
        assert_eq!(reason, Reason::Ok);
    }
    (key, token)
}

pub fn assert_complete(propagation: Option<pb::Propagation>, replicas: i32) {
    let propagation = propagation.unwrap();
    assert!(propagation.waited);
    assert!(propagation.complete, "{propagation:?}");
    assert_eq!(propagation.confirmed_replicas, replicas);
    assert!(propagation.unconfirmed_replicas.is_empty());
}

/// Revokes `key` through `replica` (waiting, RevokeKey's default) and returns
/// how far the revocation had spread.
pub async fn revoke_through(
    replica: &TestApp,
    admin_token: &str,
    key: &pb::Key,
) -> pb::Propagation {
    let request = pb::RevokeKeyRequest {
        key_id: key.id.clone(),
        ..Default::default()
    };
    let revoked = replica
        .client
        .clone()
        .revoke_key(authed(admin_token, request))
        .await
        .unwrap();
    revoked.into_inner().propagation.unwrap()
}

/// Disables (`disabled`) or re-enables `key` through `replica`, waiting for
/// propagation if `wait`; returns the response's account of how far the
/// change had spread.
pub async fn set_disabled_through(
    replica: &TestApp,
    admin_token: &str,
    key: &pb::Key,
    disabled: bool,
    wait: bool,
) -> Option<pb::Propagation> {
    let mut client = replica.client.clone();
    let key_id = key.id.clone();
    let wait_for_propagation = Some(wait);
    if disabled {
        let request = pb::DisableKeyRequest {
            key_id,
            wait_for_propagation,
        };
        let response = client.disable_key(authed(admin_token, request)).await;
        response.unwrap().into_inner().propagation
    } else {
        let request = pb::EnableKeyRequest {
            key_id,
            wait_for_propagation,
        };
        let response = client.enable_key(authed(admin_token, request)).await;
        response.unwrap().into_inner().propagation
    }
}

/// Replaces `key`'s scopes through `replica`, waiting for every replica;
/// returns the response's account of how far the change had spread.
pub async fn set_scopes_through(
    replica: &TestApp,
    admin_token: &str,
    key: &pb::Key,
    scopes: &[&str],
) -> Option<pb::Propagation> {
    let mut changed = key.clone();
    changed.scopes = scopes.iter().map(|scope| scope.to_string()).collect();
    let request = pb::UpdateKeyRequest {
        key: Some(changed),
        update_mask: Some(FieldMask {
            paths: vec!["scopes".into()],
        }),
        wait_for_propagation: Some(true),
    };
    let updated = replica
        .client
        .clone()
        .update_key(authed(admin_token, request))
        .await
        .unwrap();
    updated.into_inner().propagation
}

/// Rotates `key_id` through `replica`, keeping the old secret for
/// `grace_seconds`, waiting for every replica when `wait`.
pub async fn rotate_through(
    replica: &TestApp,
    admin_token: &str,
    key_id: &str,
    grace_seconds: i64,
    wait: bool,
) -> pb::RotateKeyResponse {
    let request = pb::RotateKeyRequest {
        key_id: key_id.to_owned(),
        grace_period: Some(prost_types::Duration {
            seconds: grace_seconds,
            nanos: 0,
        }),
        wait_for_propagation: Some(wait),
    };
    replica
        .client
        .clone()
        .rotate_key(authed(admin_token, request))
        .await
        .unwrap()
        .into_inner()
}

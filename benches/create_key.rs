//! How long one CreateKey takes end to end over gRPC (mostly argon2id), and what
//! one argon2id verification costs at Keygate's default and at OWASP's password
//! parameters. Run: `cargo bench --bench create_key`.
//!
//! Uses a throwaway database on `DATABASE_URL` (default: the local server), and
//! drops it afterwards.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a benchmark: a failure is a failed run"
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use keygate::domain::hashing::{HashingParams, SecretHasher};
use keygate::domain::key::DisplayName;
use keygate::domain::policy::{Policy, EMBEDDED_DEFAULT_POLICY};
use keygate::domain::token::TokenPrefix;
use keygate::grpc::pb::key_service_client::KeyServiceClient;
use keygate::grpc::pb::{CreateKeyRequest, CreateOrganizationRequest, Environment};
use keygate::server::config::{DatabaseSettings, KeySettings, Settings};
use keygate::server::Application;
use secrecy::{ExposeSecret, SecretString};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};
use tonic::Request;

const CREATES: usize = 100;
const VERIFIES: usize = 50;

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn authed<T>(token: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

async fn verify_cost(params: HashingParams) -> Duration {
    let hasher = SecretHasher::new(params, 1).unwrap();
    let secret = SecretString::from("s".repeat(43));
    let hash = hasher.hash(&secret).await.unwrap();
    let mut samples = Vec::with_capacity(VERIFIES);
    for _ in 0..VERIFIES {
        let started = Instant::now();
        assert!(hasher.verify(&secret, &hash).await.unwrap());
        samples.push(started.elapsed());
    }
    median(&mut samples)
}

#[tokio::main]
async fn main() {
    let server_url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let server_options: PgConnectOptions = server_url.parse().unwrap();
    let database = format!("keygate_bench_{}", uuid::Uuid::new_v4().simple());
    let mut admin_connection = server_options.connect().await.unwrap();
    sqlx::query(&format!("CREATE DATABASE {database}"))
        .execute(&mut admin_connection)
        .await
        .unwrap();

    let default_verify = verify_cost(HashingParams::DEFAULT).await;
    let owasp = HashingParams {
        memory_kib: 19_456,
        iterations: 2,
        parallelism: 1,
    };
    let owasp_verify = verify_cost(owasp).await;
    let HashingParams {
        memory_kib,
        iterations,
        parallelism,
    } = HashingParams::DEFAULT;
    println!("argon2id verify, median of {VERIFIES}: default m={memory_kib} t={iterations} p={parallelism}: {default_verify:?}; OWASP m=19456 t=2 p=1: {owasp_verify:?}");

    let settings = Settings {
        listen: "127.0.0.1:0".parse().unwrap(),
        database: DatabaseSettings {
            connect_options: server_options.clone().database(&database),
            max_connections: 4,
            create_if_missing_url: None,
        },
        keys: KeySettings {
            prefix: TokenPrefix::default(),
            hashing: HashingParams::DEFAULT,
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
        replication: keygate::server::config::ReplicationSettings::default(),
        authorizer_callers: Default::default(),
    };
    let application = Application::build(settings).await.unwrap();
    let address = application.local_addr();
    let admin = application
        .manager()
        .bootstrap(DisplayName::parse("name", "bench").unwrap())
        .await
        .unwrap();
    let admin_token = admin.token.expose_secret().to_owned();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(application.run_until(async move {
        let _ = stopped.await;
    }));

    let mut client = KeyServiceClient::connect(format!("http://{address}"))
        .await
        .unwrap();
    let organization = CreateOrganizationRequest {
        display_name: "bench".into(),
    };
    let organization_id = client
        .create_organization(authed(&admin_token, organization))
        .await
        .unwrap()
        .into_inner()
        .id;
    let mut samples = Vec::with_capacity(CREATES);
    for index in 0..CREATES {
        let request = CreateKeyRequest {
            organization_id: organization_id.clone(),
            environment: Environment::Live.into(),
            name: format!("bench key {index}"),
            scopes: vec!["customers:read".into()],
            ..Default::default()
        };
        let started = Instant::now();
        client
            .create_key(authed(&admin_token, request))
            .await
            .unwrap();
        samples.push(started.elapsed());
    }
    let create_median = median(&mut samples);
    println!(
        "CreateKey over gRPC, {CREATES} sequential calls: median {create_median:?}, p90 {:?}, max {:?} (each verifies the caller and hashes one secret)",
        samples[CREATES * 9 / 10],
        samples[CREATES - 1]
    );

    let _ = stop.send(());
    server.await.unwrap().unwrap();
    admin_connection.close().await.unwrap();
    let mut cleanup = server_options.connect().await.unwrap();
    sqlx::query(&format!("DROP DATABASE {database} WITH (FORCE)"))
        .execute(&mut cleanup)
        .await
        .unwrap();
}

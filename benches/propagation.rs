//! Revocation propagation across three replicas. Run: `cargo bench --bench propagation`.
//!
//! Three Keygate replicas (the real binary, pinned to CPU 0) share one database;
//! steady Authorize load runs against all three from this process (CPU 1).
//! 1,000 keys are revoked one by one through replica A; for each, the time from
//! RevokeKey returning until every replica denies the key is measured, once with
//! RevokeKey's default wait for propagation and once without it (pure
//! notification latency). The background load's requests/s before and during
//! the revocations are compared.
//!
//! Only loopback addresses are used; every loop is bounded in count and time.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[allow(dead_code)]
#[path = "authorize/load.rs"]
mod load;
#[allow(dead_code)]
#[path = "authorize/servers.rs"]
mod servers;

use std::sync::Arc;
use std::time::{Duration, Instant};

use keygate::grpc::pb::{self, key_service_client::KeyServiceClient};
use keygate::hashing::HashingParams;
use keygate::token::{Token, TokenPrefix};
use load::{grpc_frame, LoadShape, RunResult};
use prost::Message;

const LOAD_KEYS: usize = 1_000;
const REVOKED_PER_MODE: usize = 500;
/// How long the background load runs beside the revocations (they take longer).
const DURING: Duration = Duration::from_secs(5);

fn authorize_frame(token: &str) -> bytes::Bytes {
    grpc_frame(&pb::AuthorizeRequest {
        token: token.to_owned(),
        method: "GET".into(),
        path: "/customers".into(),
        ..Default::default()
    })
}

fn allowed(answer: &[u8]) -> bool {
    pb::Decision::decode(answer).is_ok_and(|decision| decision.allowed)
}

fn percentile(sorted: &[f64], fraction: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * fraction).round() as usize]
}

fn main() {
    servers::pin_self_to_cpu(1);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(bench());
}

async fn bootstrap(database_url: &str) -> String {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_keygate"))
        .args(["bootstrap", "--name", "propagation bench"])
        .env("KEYGATE_DATABASE_URL", database_url)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    stdout
        .lines()
        .find_map(|line| line.strip_prefix("token (shown once, store it now): "))
        .unwrap()
        .to_owned()
}

/// Background load on every replica for `duration`; returns the results.
async fn background_load(
    addresses: Vec<std::net::SocketAddr>,
    bodies: Arc<Vec<bytes::Bytes>>,
    duration: Duration,
) -> Vec<RunResult> {
    let shape = LoadShape {
        connections: 1,
        streams_per_connection: 8,
        duration,
        max_requests: 5_000_000,
    };
    let runs = addresses
        .into_iter()
        .map(|address| load::run(address, bodies.clone(), shape, false, allowed));
    futures_util::future::join_all(runs).await
}

fn total_rate(results: &[RunResult]) -> f64 {
    results.iter().map(RunResult::requests_per_second).sum()
}

async fn bench() {
    let database = servers::BenchDatabase::create().await;
    let load_tokens = database.seed_keys(LOAD_KEYS, HashingParams::FASTEST).await;
    let victims = database
        .seed_keys(REVOKED_PER_MODE * 2, HashingParams::FASTEST)
        .await;
    let admin = bootstrap(&database.url).await;
    let replicas = vec![
        servers::Child::keygate(&database.url, 0).await,
        servers::Child::keygate(&database.url, 0).await,
        servers::Child::keygate(&database.url, 0).await,
    ];
    let addresses: Vec<_> = replicas.iter().map(|replica| replica.address).collect();
    let load_bodies = Arc::new(
        load_tokens
            .iter()
            .map(|token| authorize_frame(token))
            .collect::<Vec<_>>(),
    );
    let victim_bodies: Vec<_> = victims.iter().map(|token| authorize_frame(token)).collect();

    // Warm every key on every replica.
    for address in &addresses {
        let warm = LoadShape {
            connections: 2,
            streams_per_connection: 8,
            duration: Duration::from_secs(60),
            max_requests: usize::MAX,
        };
        let all: Vec<_> = load_bodies
            .iter()
            .chain(victim_bodies.iter())
            .cloned()
            .collect();
        let result = load::run(*address, Arc::new(all), warm, true, allowed).await;
        assert_eq!(result.errors, 0, "warm-up failed");
    }
    let before = background_load(
        addresses.clone(),
        load_bodies.clone(),
        Duration::from_secs(3),
    )
    .await;
    println!(
        "background Authorize load before revocations: {:.0} req/s over 3 replicas",
        total_rate(&before)
    );

    let probes: Vec<_> =
        futures_util::future::join_all(addresses.iter().map(|address| load::connect(*address)))
            .await;
    let mut admin_client = KeyServiceClient::connect(format!("http://{}", addresses[0]))
        .await
        .unwrap();
    let during = background_load(addresses.clone(), load_bodies.clone(), DURING);
    let revocations = async {
        let during_started = Instant::now();
        for (mode, wait) in [
            ("with RevokeKey's default wait", true),
            ("without waiting (notification only)", false),
        ] {
            let offset = if wait { 0 } else { REVOKED_PER_MODE };
            let mut latencies = Vec::with_capacity(REVOKED_PER_MODE);
            let mut rpc_times = Vec::with_capacity(REVOKED_PER_MODE);
            for index in offset..offset + REVOKED_PER_MODE {
                let key_id = Token::parse(&victims[index], &TokenPrefix::default())
                    .unwrap()
                    .key_id()
                    .to_string();
                let mut request = tonic::Request::new(pb::RevokeKeyRequest {
                    key_id,
                    wait_for_propagation: Some(wait),
                });
                request
                    .metadata_mut()
                    .insert("authorization", format!("Bearer {admin}").parse().unwrap());
                let sent = Instant::now();
                let response = admin_client.revoke_key(request).await.unwrap().into_inner();
                let returned = Instant::now();
                rpc_times.push(returned.duration_since(sent).as_secs_f64() * 1000.0);
                if wait {
                    assert!(response.propagation.unwrap().complete);
                }
                let mut pending: Vec<usize> = (0..addresses.len()).collect();
                while !pending.is_empty() && returned.elapsed() < Duration::from_secs(2) {
                    let mut still = Vec::new();
                    for replica in pending {
                        let answer = load::call(
                            &probes[replica],
                            addresses[replica],
                            victim_bodies[index].clone(),
                        )
                        .await
                        .unwrap();
                        if allowed(&answer) {
                            still.push(replica);
                        }
                    }
                    pending = still;
                }
                assert!(
                    pending.is_empty(),
                    "a replica still allowed a revoked key after 2 s"
                );
                latencies.push(returned.elapsed().as_secs_f64() * 1000.0);
            }
            latencies.sort_by(f64::total_cmp);
            rpc_times.sort_by(f64::total_cmp);
            println!(
            "{REVOKED_PER_MODE} revocations {mode}: RevokeKey returned -> all 3 replicas deny: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (RevokeKey itself: p50 {:.2} ms, p99 {:.2} ms)",
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.99),
            latencies[latencies.len() - 1],
            percentile(&rpc_times, 0.5),
            percentile(&rpc_times, 0.99),
        );
        }
        during_started.elapsed()
    };
    let (during, revoking) = tokio::join!(during, revocations);
    println!(
        "background Authorize load during the first {} s of revocations: {:.0} req/s ({:.3}x of before); all revocations took {:.1} s",
        DURING.as_secs(),
        total_rate(&during),
        total_rate(&during) / total_rate(&before),
        revoking.as_secs_f64()
    );
    drop(replicas);
    database.drop_database().await;
}

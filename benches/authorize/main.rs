//! End-to-end Authorize load bench. Run: `cargo bench --bench authorize`.
//!
//! One Postgres database with 100,000 warm-path keys and 10,000 cold-path keys.
//! Two Keygate replicas (the real binary) and a no-op tonic Authorizer with the
//! same message shapes, runtime and log subscriber run pinned to CPU 0: one
//! replica serves (and caches) 1,000 keys, the other all 100,000. This process,
//! the load generator, is pinned to CPU 1, and so is the database server (as on
//! hosts of its own in a deployment; `KEYGATE_BENCH_DATABASE_CPU=any` leaves it
//! on both CPUs, where the replicas' usage writes take their core's time too).
//! Rounds alternate no-op / Keygate
//! with 1,000 keys / Keygate with 100,000 keys; the medians of the per-round
//! ratios are reported with their range. Then a cold run (every request a new
//! key, argon2 at the default parameters) with warm probes beside it, and a
//! cold start of a fresh replica facing 10,000 distinct keys.
//!
//! Only loopback addresses are used; every load loop is bounded in count and time.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a benchmark: a failure is a failed run"
)]

mod cpu;
mod load;
mod servers;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use keygate::grpc::pb;
use load::{grpc_frame, run, LoadShape, RunResult};
use prost::Message;

/// The no-op server runs from this binary: same allocator as Keygate's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const WARM_KEYS: usize = 100_000;
const SMALL_SET: usize = 1_000;
const COLD_KEYS: usize = 10_000;
/// Rounds unless `KEYGATE_BENCH_ROUNDS` sets another number (more, on a noisy day).
const DEFAULT_ROUNDS: usize = 5;
const ROUND_DURATION: Duration = Duration::from_secs(2);
const SHAPE: LoadShape = LoadShape {
    connections: 4,
    streams_per_connection: 16,
    duration: ROUND_DURATION,
    max_requests: 2_000_000,
};

fn allowed(answer: &[u8]) -> bool {
    pb::Decision::decode(answer).is_ok_and(|decision| decision.allowed)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    if values.len().is_multiple_of(2) {
        (values[middle - 1] + values[middle]) / 2.0
    } else {
        values[middle]
    }
}

fn rounds_from_env() -> usize {
    let Ok(text) = std::env::var("KEYGATE_BENCH_ROUNDS") else {
        return DEFAULT_ROUNDS;
    };
    match text.parse::<usize>() {
        Ok(rounds) if rounds > 0 => rounds,
        _ => panic!("KEYGATE_BENCH_ROUNDS must be a whole number above 0, not {text:?}"),
    }
}

fn range(values: &[f64]) -> (f64, f64) {
    let low = values.iter().copied().fold(f64::INFINITY, f64::min);
    let high = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (low, high)
}

fn bodies(tokens: &[String]) -> Arc<Vec<Bytes>> {
    let frames = tokens
        .iter()
        .map(|token| {
            grpc_frame(&pb::AuthorizeRequest {
                token: token.clone(),
                method: "GET".into(),
                path: "/customers/cus_123".into(),
                client_ip: "10.1.2.3".into(),
                permission: String::new(),
            })
        })
        .collect();
    Arc::new(frames)
}

fn report(label: &str, result: &RunResult) {
    println!(
        "  {label:<26} {:>9.0} req/s  p50 {:>6.0} µs  p99 {:>6.0} µs  ({} ok, {} errors)",
        result.requests_per_second(),
        result.percentile(0.50),
        result.percentile(0.99),
        result.requests,
        result.errors
    );
}

/// A round against one server, with the server's own CPU time over it and
/// the database server's.
struct Measured {
    result: RunResult,
    /// Server CPU seconds per second of the round: below 1, the server was
    /// not the bound (or another process took its core).
    server_cores: f64,
    server_micros_per_request: f64,
    /// The database server's CPU over the round (its postmaster and
    /// backends): it shares the machine's two cores with the bench.
    database_cores: f64,
}

async fn measure(
    label: &str,
    server: &servers::Child,
    bodies: &Arc<Vec<Bytes>>,
    postmaster: u32,
) -> Measured {
    let pid = server.pid().unwrap();
    let cpu_before = cpu::live_process_cpu(pid);
    let database_before = cpu::GroupReading::now(postmaster);
    let result = run(server.address, bodies.clone(), SHAPE, false, allowed).await;
    let server_cpu = cpu::live_process_cpu(pid)
        .saturating_sub(cpu_before)
        .as_secs_f64();
    let database_cpu = cpu::GroupReading::now(postmaster)
        .used_since(&database_before)
        .as_secs_f64();
    let measured = Measured {
        server_cores: server_cpu / result.seconds,
        server_micros_per_request: server_cpu * 1e6 / result.requests.max(1) as f64,
        database_cores: database_cpu / result.seconds,
        result,
    };
    report(label, &measured.result);
    println!(
        "  {:<26} server CPU {:.2} cores, {:.1} µs per request; database server {:.2} cores",
        "", measured.server_cores, measured.server_micros_per_request, measured.database_cores
    );
    measured
}

fn main() {
    if std::env::args().any(|argument| argument == "noop-server") {
        servers::run_noop_server();
        return;
    }
    servers::pin_self_to_cpu(1);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(bench());
}

async fn bench() {
    let database = servers::BenchDatabase::create().await;
    println!("seeding {WARM_KEYS} warm-path keys and {COLD_KEYS} cold-path keys");
    let warm_tokens = database
        .seed_keys(WARM_KEYS, keygate::domain::hashing::HashingParams::FASTEST)
        .await;
    let cold_tokens = database
        .seed_keys(COLD_KEYS, keygate::domain::hashing::HashingParams::DEFAULT)
        .await;
    let postmaster = cpu::postmaster_of(database.backend_pid().await);
    let _pinned_database = cpu::pin_database(postmaster);
    let keygate_small = servers::Child::keygate(&database.url, 0).await;
    let keygate = servers::Child::keygate(&database.url, 0).await;
    let noop = servers::Child::noop(0).await;

    let warm_bodies = bodies(&warm_tokens);
    let small_bodies = Arc::new(warm_bodies[..SMALL_SET].to_vec());
    warm_up(&keygate_small, &small_bodies).await;
    let rss_before = keygate.rss_kib();
    let warmed = warm_up(&keygate, &warm_bodies).await;
    let rss_after = keygate.rss_kib();
    println!(
        "warmed {} keys in {:.1} s; server RSS {} KiB -> {} KiB: about {:.0} bytes per cached key",
        warmed.requests,
        warmed.seconds,
        rss_before,
        rss_after,
        (rss_after.saturating_sub(rss_before) as f64 * 1024.0) / WARM_KEYS as f64
    );

    let mut throughput_small = Vec::new();
    let mut throughput_large = Vec::new();
    let mut p99_small = Vec::new();
    let mut p99_large = Vec::new();
    let mut large_vs_small = Vec::new();
    let mut warm_p99 = Vec::new();
    let mut cpu_small = Vec::new();
    let mut cpu_large = Vec::new();
    let mut cpu_large_vs_small = Vec::new();
    let mut cores_noop = Vec::new();
    let mut cores_small = Vec::new();
    let mut cores_large = Vec::new();
    let mut database_cores_large = Vec::new();
    let rounds = rounds_from_env();
    for round in 1..=rounds {
        println!("round {round}/{rounds}");
        let noop_round = measure("no-op server", &noop, &small_bodies, postmaster).await;
        let small_round = measure(
            "keygate, 1,000 keys",
            &keygate_small,
            &small_bodies,
            postmaster,
        )
        .await;
        let large_round =
            measure("keygate, 100,000 keys", &keygate, &warm_bodies, postmaster).await;
        let (baseline, small, large) =
            (&noop_round.result, &small_round.result, &large_round.result);
        assert_eq!(
            small.errors + large.errors + baseline.errors,
            0,
            "answers were wrong"
        );
        cpu_small
            .push(noop_round.server_micros_per_request / small_round.server_micros_per_request);
        cpu_large
            .push(noop_round.server_micros_per_request / large_round.server_micros_per_request);
        // Unlike requests/s, not lowered when the load generator is starved
        // (by the database server's usage writes, say, on the generator's core).
        cpu_large_vs_small
            .push(small_round.server_micros_per_request / large_round.server_micros_per_request);
        cores_noop.push(noop_round.server_cores);
        cores_small.push(small_round.server_cores);
        cores_large.push(large_round.server_cores);
        database_cores_large.push(large_round.database_cores);
        throughput_small.push(small.requests_per_second() / baseline.requests_per_second());
        throughput_large.push(large.requests_per_second() / baseline.requests_per_second());
        p99_small.push(small.percentile(0.99) / baseline.percentile(0.99));
        p99_large.push(large.percentile(0.99) / baseline.percentile(0.99));
        large_vs_small.push(large.requests_per_second() / small.requests_per_second());
        warm_p99.push(small.percentile(0.99));
    }
    println!("median over {rounds} rounds [range]:");
    for (label, values) in [
        ("req/s keygate 1k / no-op", &mut throughput_small),
        ("req/s keygate 100k / no-op", &mut throughput_large),
        ("p99 keygate 1k / no-op", &mut p99_small),
        ("p99 keygate 100k / no-op", &mut p99_large),
        ("req/s keygate 100k / 1k", &mut large_vs_small),
        ("CPU/request no-op / 1k", &mut cpu_small),
        ("CPU/request no-op / 100k", &mut cpu_large),
        ("CPU/request 1k / 100k", &mut cpu_large_vs_small),
        ("no-op server's CPU, cores", &mut cores_noop),
        ("1k server's CPU, cores", &mut cores_small),
        ("100k server's CPU, cores", &mut cores_large),
        ("database CPU, 100k rounds", &mut database_cores_large),
    ] {
        let (low, high) = range(values);
        println!(
            "  {label:<28} {:.3}  [{low:.3} .. {high:.3}]",
            median(values)
        );
    }

    drop(keygate_small);
    cold_run(&keygate, &cold_tokens, &small_bodies).await;
    drop(keygate);
    drop(noop);
    cold_start(&database.url, &cold_tokens, median(&mut warm_p99)).await;
    database.drop_database().await;
}

/// Sends each of `bodies` once, so that the replica caches every key.
async fn warm_up(replica: &servers::Child, bodies: &Arc<Vec<Bytes>>) -> RunResult {
    let shape = LoadShape {
        duration: Duration::from_secs(120),
        max_requests: bodies.len(),
        ..SHAPE
    };
    let warmed = run(replica.address, bodies.clone(), shape, true, allowed).await;
    assert_eq!(warmed.errors, 0, "warm-up failed");
    warmed
}

/// Every request a new key (argon2 at the default parameters), with warm probes
/// beside it to show the service stays responsive.
async fn cold_run(keygate: &servers::Child, cold_tokens: &[String], warm_bodies: &Arc<Vec<Bytes>>) {
    println!("cold run: each request a key this replica has not seen, argon2 m=4096 t=1 p=1");
    let probe_shape = LoadShape {
        connections: 1,
        streams_per_connection: 2,
        duration: Duration::from_secs(3),
        max_requests: 1_000_000,
    };
    let quiet = run(
        keygate.address,
        warm_bodies.clone(),
        probe_shape,
        false,
        allowed,
    )
    .await;
    report("warm probes, idle server", &quiet);
    let cold_bodies = bodies(&cold_tokens[..COLD_KEYS / 2]);
    let cold_shape = LoadShape {
        connections: 2,
        streams_per_connection: 8,
        duration: Duration::from_secs(3),
        max_requests: COLD_KEYS / 2,
    };
    let (cold, busy) = tokio::join!(
        run(keygate.address, cold_bodies, cold_shape, true, allowed),
        run(
            keygate.address,
            warm_bodies.clone(),
            probe_shape,
            false,
            allowed
        ),
    );
    report("cold keys (argon2 each)", &cold);
    report("warm probes meanwhile", &busy);
}

/// A fresh replica facing 10,000 distinct keys: seconds until its p99 is back
/// to the warm level (the median p99 of the warm rounds, same load shape).
async fn cold_start(database_url: &str, cold_tokens: &[String], warm_level: f64) {
    println!(
        "cold start: a fresh replica, {COLD_KEYS} distinct active keys, 64 concurrent streams"
    );
    let fresh = servers::Child::keygate(database_url, 0).await;
    let all = bodies(cold_tokens);
    let window = Duration::from_millis(250);
    let started = std::time::Instant::now();
    let mut first_p99 = None;
    while started.elapsed() < Duration::from_secs(90) {
        let shape = LoadShape {
            duration: window,
            ..SHAPE
        };
        let result = run(fresh.address, all.clone(), shape, false, allowed).await;
        let p99 = result.percentile(0.99);
        first_p99.get_or_insert(p99);
        if p99 <= warm_level * 1.5 {
            println!(
                "  p99 {p99:.0} µs, back within 1.5x of the warm level ({warm_level:.0} µs), after {:.1} s (first window's p99: {:.0} µs)",
                started.elapsed().as_secs_f64(),
                first_p99.unwrap_or(p99)
            );
            return;
        }
    }
    println!("  p99 did not return to the warm level ({warm_level:.0} µs) within 90 s");
}

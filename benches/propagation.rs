//! Revocation propagation across three replicas. Run: `cargo bench --bench propagation`.
//!
//! Three Keygate replicas (the real binary, pinned to CPU 0) share one database;
//! steady Authorize load runs against all three from this process (CPU 1).
//! The database server runs on CPU 1 too, as on hosts of its own in a
//! deployment (`KEYGATE_BENCH_DATABASE_CPU=any` leaves it on both).
//! Keys are revoked one by one through replica A, 500 in each pass; for each,
//! the time from RevokeKey returning until every replica denies the key is
//! measured: back to back with RevokeKey's default wait for propagation, back
//! to back without it (pure notification latency), and with the default wait
//! at a steady 20 a second. Revocations run only in every other one-second
//! window of the load, and each revoking window's requests/s is compared with
//! the quiet windows beside it; a last control pass revokes nothing in its
//! "revoking" windows, to show what the comparison reads with no difference.
//!
//! Only loopback addresses are used; every loop is bounded in count and time.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a benchmark: a failure is a failed run"
)]

#[path = "authorize/cpu.rs"]
mod cpu;
#[expect(
    dead_code,
    reason = "shared with the authorize bench, which uses the rest"
)]
#[path = "authorize/load.rs"]
mod load;
#[expect(
    dead_code,
    reason = "shared with the authorize bench, which uses the rest"
)]
#[path = "authorize/servers.rs"]
mod servers;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keygate::domain::hashing::HashingParams;
use keygate::domain::token::{Token, TokenPrefix};
use keygate::grpc::pb::{self, key_service_client::KeyServiceClient};
use load::{grpc_frame, LoadShape, RunResult};
use prost::Message;

const LOAD_KEYS: usize = 1_000;
const REVOKED_PER_MODE: usize = 500;

/// One pass of `REVOKED_PER_MODE` revocations.
struct Mode {
    label: &'static str,
    /// `false` for the control pass, which revokes nothing: its windows show
    /// how far revoking and quiet windows differ when nothing else does.
    revoke: bool,
    /// Whether RevokeKey waits for propagation (its default) or not.
    wait: bool,
    /// Back to back when `None`; else one revocation started per interval.
    pace: Option<Duration>,
}

/// Whether the pass that ran (if one did) revoked keys, unlike the control.
fn revokes(pass: Option<usize>) -> bool {
    pass.is_some_and(|pass| MODES[pass].revoke)
}

/// The passes, in order: back to back (with the default wait, then without
/// it, where the probes poll until every replica denies), then the default
/// wait again at a steady 20 revocations a second, then the control.
const MODES: [Mode; 4] = [
    Mode {
        label: "with RevokeKey's default wait",
        revoke: true,
        wait: true,
        pace: None,
    },
    Mode {
        label: "without waiting (probes poll)",
        revoke: true,
        wait: false,
        pace: None,
    },
    Mode {
        label: "with the default wait, 20 a second",
        revoke: true,
        wait: true,
        pace: Some(Duration::from_millis(50)),
    },
    Mode {
        label: "nothing (control)",
        revoke: false,
        wait: false,
        pace: Some(Duration::from_millis(50)),
    },
];
/// Length of each quiet or revoking window of background load.
const WINDOW: Duration = Duration::from_secs(1);
/// Most windows (quiet and revoking together) before the bench stops pausing.
const MAX_WINDOWS: usize = 200;
/// Longest any single RevokeKey or probe call may take before the bench fails.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

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
    // Interrupted, the bench still ends its replicas and gives the database
    // server its CPUs back (both on drop); its database is left behind.
    runtime.block_on(async {
        tokio::select! {
            () = bench() => {}
            _ = tokio::signal::ctrl_c() => {
                eprintln!("interrupted; the bench database keygate_bench_* is left to drop by hand");
            }
        }
    });
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
    // Deep enough that a replica finds many requests waiting whenever it wakes,
    // through the load generator's own pauses (its core also runs the
    // database server and the revocation driver): with 8 streams the replicas
    // answered 8-16% fewer requests per CPU second, and every pause of this
    // core showed up as load the revocations had taken from them.
    let shape = LoadShape {
        connections: 1,
        streams_per_connection: 32,
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

/// One window of background load, with the CPU time each side used in it.
struct Window {
    revoking: bool,
    requests_per_second: f64,
    /// Revocations finished before the window began and by its end.
    revoked_before: usize,
    revoked_after: usize,
    cpu: CpuShares,
}

impl Window {
    fn revocations(&self) -> usize {
        self.revoked_after - self.revoked_before
    }

    /// Whether keys were revoked in the window (in one pass, not the control).
    fn revoked_keys(&self) -> bool {
        self.revoking && revokes(self.mode())
    }

    /// Which pass of [`MODES`] ran in the window; `None` when it held two.
    fn mode(&self) -> Option<usize> {
        // The revocation in flight at the end is number `revoked_after`.
        let first = self.revoked_before / REVOKED_PER_MODE;
        (self.revoked_after / REVOKED_PER_MODE == first).then_some(first)
    }
}

/// CPU time over a window, in cores (CPU seconds per second).
#[derive(Clone, Copy)]
struct CpuShares {
    replicas: f64,
    database: f64,
    bench: f64,
}

/// Cumulative CPU time of the replicas, the database server and this process.
struct CpuReading {
    taken: Instant,
    replicas: Duration,
    database: cpu::GroupReading,
    bench: Duration,
}

impl CpuReading {
    fn now(replica_pids: &[u32], postmaster: u32) -> CpuReading {
        CpuReading {
            taken: Instant::now(),
            replicas: replica_pids
                .iter()
                .map(|pid| cpu::live_process_cpu(*pid))
                .sum(),
            database: cpu::GroupReading::now(postmaster),
            bench: cpu::live_process_cpu(std::process::id()),
        }
    }

    fn shares_since(&self, earlier: &CpuReading) -> CpuShares {
        let seconds = self.taken.duration_since(earlier.taken).as_secs_f64();
        let cores = |used: Duration| used.as_secs_f64() / seconds;
        CpuShares {
            replicas: cores(self.replicas.saturating_sub(earlier.replicas)),
            database: cores(self.database.used_since(&earlier.database)),
            bench: cores(self.bench.saturating_sub(earlier.bench)),
        }
    }
}

/// A figure of the windows that revoked keys (or of the quiet windows beside
/// them), sorted; the control pass's windows are neither.
fn sorted_by(windows: &[Window], revoking: bool, figure: impl Fn(&Window) -> f64) -> Vec<f64> {
    let beside_revoked_keys = |position: usize| {
        let before = position
            .checked_sub(1)
            .and_then(|before| windows.get(before));
        before
            .into_iter()
            .chain(windows.get(position + 1))
            .any(Window::revoked_keys)
    };
    let mut values: Vec<f64> = windows
        .iter()
        .enumerate()
        .filter(|(position, window)| {
            if revoking {
                window.revoked_keys()
            } else {
                !window.revoking && beside_revoked_keys(*position)
            }
        })
        .map(|(_, window)| figure(window))
        .collect();
    values.sort_by(f64::total_cmp);
    values
}

/// Each revoking window's load over the mean of the quiet windows just before
/// and after it, with the pass that ran in it (see [`Window::mode`]).
fn load_ratios(windows: &[Window]) -> Vec<(f64, Option<usize>)> {
    let mut ratios = Vec::new();
    for (position, window) in windows.iter().enumerate() {
        if !window.revoking {
            continue;
        }
        let quiet_before = position
            .checked_sub(1)
            .and_then(|before| windows.get(before))
            .filter(|neighbour| !neighbour.revoking);
        let quiet_after = windows
            .get(position + 1)
            .filter(|neighbour| !neighbour.revoking);
        let quiet: Vec<f64> = quiet_before
            .into_iter()
            .chain(quiet_after)
            .map(|neighbour| neighbour.requests_per_second)
            .collect();
        if !quiet.is_empty() {
            let quiet_mean = quiet.iter().sum::<f64>() / quiet.len() as f64;
            ratios.push((window.requests_per_second / quiet_mean, window.mode()));
        }
    }
    ratios
}

/// Median and range of the ratios that `include` keeps, or `None` if none.
fn ratio_summary(
    ratios: &[(f64, Option<usize>)],
    include: impl Fn(Option<usize>) -> bool,
) -> Option<String> {
    let mut kept: Vec<f64> = ratios
        .iter()
        .filter(|(_, mode)| include(*mode))
        .map(|(ratio, _)| *ratio)
        .collect();
    if kept.is_empty() {
        return None;
    }
    kept.sort_by(f64::total_cmp);
    Some(format!(
        "{} windows, median ratio {:.3} [{:.3} .. {:.3}]",
        kept.len(),
        percentile(&kept, 0.5),
        kept[0],
        kept[kept.len() - 1]
    ))
}

/// The median number of revocations in the revoking windows of pass `pass`.
fn median_revocations(windows: &[Window], pass: usize) -> f64 {
    let mut revocations: Vec<f64> = windows
        .iter()
        .filter(|window| window.revoking && window.mode() == Some(pass))
        .map(|window| window.revocations() as f64)
        .collect();
    revocations.sort_by(f64::total_cmp);
    percentile(&revocations, 0.5)
}

/// Compares each revoking window's load with the quiet windows beside it;
/// prints the median ratio and its range, overall and for each kind of
/// revocation, and where the CPU went.
fn report_load_impact(windows: &[Window]) {
    let ratios = load_ratios(windows);
    let Some(overall) = ratio_summary(&ratios, revokes) else {
        println!("background Authorize load: no complete revoking window to compare");
        return;
    };
    println!(
        "background Authorize load over 3 replicas, revoking windows of {} s against the quiet windows beside them: {overall} (median {:.0} req/s revoking, {:.0} req/s quiet)",
        WINDOW.as_secs(),
        percentile(&sorted_by(windows, true, |window| window.requests_per_second), 0.5),
        percentile(&sorted_by(windows, false, |window| window.requests_per_second), 0.5),
    );
    for (index, mode) in MODES.iter().enumerate() {
        let Some(summary) = ratio_summary(&ratios, |ran| ran == Some(index)) else {
            println!("  revoking {:<36} no window", mode.label);
            continue;
        };
        // How hard the pass pushed: fewer revocations a second would also
        // read as less impact.
        let pushed = if mode.revoke {
            format!(
                ", median {:.0} revocations a window",
                median_revocations(windows, index)
            )
        } else {
            String::new()
        };
        println!("  revoking {:<36} {summary}{pushed}", mode.label);
    }
    println!("  CPU in cores, median of quiet / revoking windows:");
    for (label, share) in [
        (
            "3 replicas",
            (|cpu: CpuShares| cpu.replicas) as fn(CpuShares) -> f64,
        ),
        ("database server", |cpu| cpu.database),
        ("load generator and driver", |cpu| cpu.bench),
    ] {
        let quiet = percentile(&sorted_by(windows, false, |window| share(window.cpu)), 0.5);
        let revoking = percentile(&sorted_by(windows, true, |window| share(window.cpu)), 0.5);
        println!("    {label:<26} {quiet:.3} / {revoking:.3}");
    }
}

async fn bench() {
    let database = servers::BenchDatabase::create().await;
    let postmaster = cpu::postmaster_of(database.backend_pid().await);
    let _pinned_database = cpu::pin_database(postmaster);
    let load_tokens = database.seed_keys(LOAD_KEYS, HashingParams::FASTEST).await;
    let victims = database
        .seed_keys(REVOKED_PER_MODE * MODES.len(), HashingParams::FASTEST)
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
    // Quiet and revoking windows alternate, and each revoking window is
    // compared with the quiet windows beside it: this shared machine drifts
    // between seconds by more than the effect measured.
    let (revoking, mut driver_turn) = tokio::sync::watch::channel(false);
    let in_flight = Arc::new(AtomicBool::new(false));
    let revoked = Arc::new(AtomicUsize::new(0));
    // The revocation driver runs as a task of this runtime, beside the load
    // generator (on a thread of its own it would wait for the core in
    // scheduler time slices, which stretched its latency figures many times).
    let driver = {
        let addresses = addresses.clone();
        let in_flight = in_flight.clone();
        let revoked = revoked.clone();
        tokio::spawn(async move {
            let flags = DriverFlags {
                revoking: &mut driver_turn,
                in_flight: &in_flight,
                revoked: &revoked,
            };
            revoke_all(&addresses, &victims, &victim_bodies, &admin, flags).await
        })
    };
    let replica_pids: Vec<u32> = replicas.iter().filter_map(servers::Child::pid).collect();
    let mut windows: Vec<Window> = Vec::new();
    let mut windows_run = 0;
    for window in 0..MAX_WINDOWS {
        windows_run = window + 1;
        if driver.is_finished() {
            break;
        }
        let revoke_now = window % 2 == 1;
        revoking.send_replace(revoke_now);
        // A quiet window starts only once the last revocation (with its
        // probes) is done, so none spills into it.
        if !revoke_now {
            let settling = Instant::now();
            // One revocation takes at most its call, 2 s of probing and a probe.
            while in_flight.load(Ordering::SeqCst) && settling.elapsed() < CALL_TIMEOUT * 3 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        let revoked_before = revoked.load(Ordering::SeqCst);
        let cpu_before = CpuReading::now(&replica_pids, postmaster);
        let rate =
            total_rate(&background_load(addresses.clone(), load_bodies.clone(), WINDOW).await);
        let cpu = CpuReading::now(&replica_pids, postmaster).shares_since(&cpu_before);
        // A revoking window counts only if revocations ran all through it.
        if !revoke_now || !driver.is_finished() {
            windows.push(Window {
                revoking: revoke_now,
                requests_per_second: rate,
                revoked_before,
                revoked_after: revoked.load(Ordering::SeqCst),
                cpu,
            });
        }
    }
    // Out of windows: let the driver finish regardless.
    revoking.send_replace(true);
    let revoking_took = driver.await.unwrap();
    report_load_impact(&windows);
    println!(
        "all revocations took {:.1} s over {windows_run} windows, revoking in every other one",
        revoking_took.as_secs_f64()
    );
    drop(replicas);
    database.drop_database().await;
}

/// How the bench steers the revocation driver: revoke only while `revoking`
/// is set; `in_flight` says a revocation (with its probes) is under way;
/// `revoked` counts the revocations done.
struct DriverFlags<'a> {
    revoking: &'a mut tokio::sync::watch::Receiver<bool>,
    in_flight: &'a AtomicBool,
    revoked: &'a AtomicUsize,
}

/// Revokes every victim through replica A, pass by pass (see [`MODES`]),
/// printing the propagation figures; returns the time taken.
async fn revoke_all(
    addresses: &[std::net::SocketAddr],
    victims: &[String],
    victim_bodies: &[bytes::Bytes],
    admin: &str,
    flags: DriverFlags<'_>,
) -> Duration {
    let probes: Vec<_> =
        futures_util::future::join_all(addresses.iter().map(|address| load::connect(*address)))
            .await;
    let mut admin_client = KeyServiceClient::connect(format!("http://{}", addresses[0]))
        .await
        .unwrap();
    let during_started = Instant::now();
    for (pass, mode) in MODES.iter().enumerate() {
        let offset = pass * REVOKED_PER_MODE;
        let mut latencies = Vec::with_capacity(REVOKED_PER_MODE);
        let mut rpc_times = Vec::with_capacity(REVOKED_PER_MODE);
        let mut next_start = Instant::now();
        for index in offset..offset + REVOKED_PER_MODE {
            // Bounded: the bench sets the flag for good once out of windows.
            // Idle until told, not polling: a task waking every millisecond
            // would keep this runtime awake in quiet windows only, and so
            // make them faster than the revoking ones for no other reason.
            loop {
                flags.revoking.wait_for(|revoking| *revoking).await.unwrap();
                if mode.pace.is_some() {
                    // A quiet window in between restarts the pace.
                    next_start = next_start.max(Instant::now());
                    tokio::time::sleep_until(next_start.into()).await;
                }
                // In flight before the flag is read again, so that a quiet
                // window begun meanwhile waits for this revocation, or this
                // revocation for the next revoking window.
                flags.in_flight.store(true, Ordering::SeqCst);
                if *flags.revoking.borrow() {
                    break;
                }
                flags.in_flight.store(false, Ordering::SeqCst);
            }
            if let Some(pace) = mode.pace {
                next_start += pace;
            }
            if !mode.revoke {
                flags.in_flight.store(false, Ordering::SeqCst);
                flags.revoked.fetch_add(1, Ordering::SeqCst);
                continue;
            }
            let key_id = Token::parse(&victims[index], &TokenPrefix::default())
                .unwrap()
                .key_id()
                .to_string();
            let mut request = tonic::Request::new(pb::RevokeKeyRequest {
                key_id,
                wait_for_propagation: Some(mode.wait),
            });
            request
                .metadata_mut()
                .insert("authorization", format!("Bearer {admin}").parse().unwrap());
            let sent = Instant::now();
            let response = tokio::time::timeout(CALL_TIMEOUT, admin_client.revoke_key(request))
                .await
                .expect("RevokeKey took too long")
                .unwrap()
                .into_inner();
            let returned = Instant::now();
            rpc_times.push(returned.duration_since(sent).as_secs_f64() * 1000.0);
            if mode.wait {
                assert!(response.propagation.unwrap().complete);
            }
            let mut pending: Vec<usize> = (0..addresses.len()).collect();
            while !pending.is_empty() && returned.elapsed() < Duration::from_secs(2) {
                // All pending replicas at once: a replica's time is not
                // stretched by waiting for the others' answers first.
                let answers = futures_util::future::join_all(pending.iter().map(|&replica| {
                    let probe = load::call(
                        &probes[replica],
                        addresses[replica],
                        victim_bodies[index].clone(),
                    );
                    tokio::time::timeout(CALL_TIMEOUT, probe)
                }))
                .await;
                pending = pending
                    .into_iter()
                    .zip(answers)
                    .filter(|(_, outcome)| {
                        let answer = outcome.as_ref().expect("a probe took too long");
                        allowed(answer.as_ref().unwrap())
                    })
                    .map(|(replica, _)| replica)
                    .collect();
            }
            assert!(
                pending.is_empty(),
                "a replica still allowed a revoked key after 2 s"
            );
            flags.in_flight.store(false, Ordering::SeqCst);
            flags.revoked.fetch_add(1, Ordering::SeqCst);
            latencies.push(returned.elapsed().as_secs_f64() * 1000.0);
        }
        if !mode.revoke {
            continue;
        }
        latencies.sort_by(f64::total_cmp);
        rpc_times.sort_by(f64::total_cmp);
        println!(
            "{REVOKED_PER_MODE} revocations {}: RevokeKey returned -> all 3 replicas deny: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (RevokeKey itself: p50 {:.2} ms, p99 {:.2} ms)",
            mode.label,
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.99),
            latencies[latencies.len() - 1],
            percentile(&rpc_times, 0.5),
            percentile(&rpc_times, 0.99),
        );
    }
    during_started.elapsed()
}

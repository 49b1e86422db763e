//! Thousands of changes that take access away, each probed on every replica
//! while and after its call returns, with both CPUs kept busy: a replica
//! that a confirmed change reached must never allow what it took away.
//!
//! A trial takes something away from a key cached on all three replicas (a
//! scope, by default or with an explicit wait; every address but one
//! network; the key itself, by disabling it) through one of them, then sends
//! the same request to all three at once. Then it gives the access back
//! without waiting, and asks every replica until it allows the key again, so
//! that the next trial finds the key cached.
//!
//! Meanwhile *watchers* send that request for every trial key to every
//! replica, back to back: each is checked against the key's *window*, open
//! from the moment a confirmed change returned until just before the access
//! is given back, so that requests sent microseconds after the return are
//! checked too. And busy threads (one per CPU) spin, so that the replicas'
//! tasks are preempted at any point.
//!
//! `KEYGATE_STRESS_TRIALS` sets the number of trials (default
//! [`DEFAULT_TRIALS`]); `--nocapture` shows the summary.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keygate::grpc::pb::authorizer_client::AuthorizerClient;
use keygate::grpc::pb::key_service_client::KeyServiceClient;
use keygate::grpc::pb::{self, Reason};
use prost_types::FieldMask;
use tonic::transport::Channel;

use crate::support::{authed, three_replicas, warm_key, TestApp};

/// Trials in the normal suite.
const DEFAULT_TRIALS: usize = 300;
/// Keys changed at once, each by a trial loop of its own.
const KEYS: usize = 3;
/// However the run goes, the busy threads stop after this long.
const BUSY_AT_MOST: Duration = Duration::from_secs(30 * 60);
/// How long a replica may take to allow a key again once access came back.
const REWARM_AT_MOST: Duration = Duration::from_secs(5);
/// The request every probe sends: refused by each narrowing below, allowed
/// by the key as it is between trials.
const PROBED_PATH: &str = "/customers";
const PROBE_ADDRESS: &str = "198.51.100.7";
/// The network a narrowed key keeps: [`PROBE_ADDRESS`] is outside it.
const KEPT_NETWORK: &str = "192.0.2.0/24";
const FULL_SCOPES: [&str; 2] = ["customers:read", "payments:read"];

fn trials() -> usize {
    let configured = std::env::var("KEYGATE_STRESS_TRIALS").ok();
    configured
        .and_then(|text| text.parse().ok())
        .unwrap_or(DEFAULT_TRIALS)
}

/// One replica, as trials and watchers call it.
#[derive(Clone)]
struct Replica {
    /// A, B or C.
    label: &'static str,
    keys: KeyServiceClient<Channel>,
    authorizer: AuthorizerClient<Channel>,
}

impl Replica {
    fn of(app: &TestApp, label: &'static str) -> Replica {
        let (keys, authorizer) = (app.client.clone(), app.authorizer_client.clone());
        Replica {
            label,
            keys,
            authorizer,
        }
    }

    async fn authorize(&self, token: &str, client_ip: &str) -> pb::Decision {
        let request = pb::AuthorizeRequest {
            token: token.to_owned(),
            method: "GET".to_owned(),
            path: PROBED_PATH.to_owned(),
            client_ip: client_ip.to_owned(),
            permission: String::new(),
        };
        let mut client = self.authorizer.clone();
        client.authorize(request).await.unwrap().into_inner()
    }
}

/// A key the trials narrow and widen, and its window: odd while a confirmed
/// change that took access away is in force, bumped as it opens and closes.
struct TrialKey {
    key: pb::Key,
    token: String,
    window: AtomicU64,
    /// When the window last opened, in microseconds after `since`.
    opened_micros: AtomicU64,
    since: Instant,
}

impl TrialKey {
    fn now_micros(&self) -> u64 {
        self.since.elapsed().as_micros() as u64
    }
}

/// What a trial takes away, and how.
#[derive(Debug, Clone, Copy)]
enum Narrowing {
    /// `customers:read` removed, waiting left to the server's default.
    ScopeByDefault,
    /// `customers:read` removed, with `wait_for_propagation: true`.
    ScopeWaiting,
    /// Every address but [`KEPT_NETWORK`], by default.
    Networks,
    /// DisableKey, by default.
    Disable,
}

const NARROWINGS: [Narrowing; 4] = [
    Narrowing::ScopeByDefault,
    Narrowing::ScopeWaiting,
    Narrowing::Networks,
    Narrowing::Disable,
];

impl Narrowing {
    /// Takes access away through `origin`, or gives it back (`undo`, not
    /// waiting); returns the propagation.
    async fn send(
        self,
        origin: &Replica,
        admin: &str,
        trial_key: &TrialKey,
        undo: bool,
    ) -> pb::Propagation {
        let mut client = origin.keys.clone();
        let mut key = trial_key.key.clone();
        let wait = match (undo, self) {
            (true, _) => Some(false),
            (false, Narrowing::ScopeWaiting) => Some(true),
            (false, _) => None,
        };
        let field = match self {
            Narrowing::ScopeByDefault | Narrowing::ScopeWaiting => {
                let scopes: &[&str] = if undo {
                    &FULL_SCOPES
                } else {
                    &["payments:read"]
                };
                key.scopes = scopes.iter().map(|scope| scope.to_string()).collect();
                "scopes"
            }
            Narrowing::Networks => {
                key.allowed_cidrs = if undo {
                    Vec::new()
                } else {
                    vec![KEPT_NETWORK.to_owned()]
                };
                "allowed_cidrs"
            }
            Narrowing::Disable if undo => {
                let request = pb::EnableKeyRequest {
                    key_id: key.id,
                    wait_for_propagation: wait,
                };
                let response = client.enable_key(authed(admin, request)).await.unwrap();
                return response.into_inner().propagation.unwrap();
            }
            Narrowing::Disable => {
                let request = pb::DisableKeyRequest {
                    key_id: key.id,
                    wait_for_propagation: wait,
                };
                let response = client.disable_key(authed(admin, request)).await.unwrap();
                return response.into_inner().propagation.unwrap();
            }
        };
        let update_mask = Some(FieldMask {
            paths: vec![field.to_owned()],
        });
        let request = pb::UpdateKeyRequest {
            key: Some(key),
            update_mask,
            wait_for_propagation: wait,
        };
        let response = client.update_key(authed(admin, request)).await.unwrap();
        response.into_inner().propagation.unwrap()
    }
}

/// What trials and watchers saw.
#[derive(Default)]
struct Tally {
    trials: u64,
    /// Trials whose change every live replica confirmed (or whose lease ran out).
    confirmed: u64,
    /// Probes sent inside an open window, by trials and watchers.
    probes_in_window: u64,
    /// Those allowed, described: must stay empty.
    allowed_in_window: Vec<String>,
    /// Probes in a window denied for another reason than the change's.
    other_denials: u64,
    watcher_probes: u64,
    /// Watchers' probes in a window sent within a millisecond of its opening.
    watcher_probes_within_a_millisecond: u64,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.trials += other.trials;
        self.confirmed += other.confirmed;
        self.probes_in_window += other.probes_in_window;
        self.allowed_in_window.extend(other.allowed_in_window);
        self.other_denials += other.other_denials;
        self.watcher_probes += other.watcher_probes;
        self.watcher_probes_within_a_millisecond += other.watcher_probes_within_a_millisecond;
    }

    /// Counts a probe sent while `window` was open and still open when its
    /// answer came: access had not been given back meanwhile.
    fn probe_in_window(&mut self, decision: &pb::Decision, what: impl FnOnce() -> String) {
        self.probes_in_window += 1;
        if decision.allowed {
            self.allowed_in_window.push(what());
        } else if ![
            Reason::PermissionDenied,
            Reason::IpNotAllowed,
            Reason::Disabled,
        ]
        .contains(&decision.reason())
        {
            self.other_denials += 1;
        }
    }
}

/// Spins one thread per CPU until dropped (or [`BUSY_AT_MOST`]).
struct BusyCpus {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl BusyCpus {
    fn start() -> BusyCpus {
        let stop = Arc::new(AtomicBool::new(false));
        let cpus = std::thread::available_parallelism().map_or(2, |count| count.get());
        let deadline = Instant::now() + BUSY_AT_MOST;
        let spin = |stop: Arc<AtomicBool>| {
            move || {
                let mut spins = 0u64;
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    for _ in 0..10_000 {
                        spins = std::hint::black_box(spins.wrapping_add(1));
                    }
                }
            }
        };
        let threads = (0..cpus)
            .map(|_| std::thread::spawn(spin(stop.clone())))
            .collect();
        BusyCpus { stop, threads }
    }
}

impl Drop for BusyCpus {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// Probes every trial key on `replica`, back to back, until `stop`.
async fn watch(replica: Replica, keys: Arc<Vec<TrialKey>>, stop: Arc<AtomicBool>) -> Tally {
    let mut tally = Tally::default();
    let mut turn = 0usize;
    while !stop.load(Ordering::SeqCst) {
        let trial_key = &keys[turn % keys.len()];
        turn += 1;
        let before = trial_key.window.load(Ordering::SeqCst);
        let sent_micros = trial_key.now_micros();
        let decision = replica.authorize(&trial_key.token, PROBE_ADDRESS).await;
        tally.watcher_probes += 1;
        if before % 2 == 1 && trial_key.window.load(Ordering::SeqCst) == before {
            let opened_micros = trial_key.opened_micros.load(Ordering::SeqCst);
            let soon_after = sent_micros.saturating_sub(opened_micros) < 1_000;
            tally.watcher_probes_within_a_millisecond += u64::from(soon_after);
            tally.probe_in_window(&decision, || {
                format!(
                    "watcher: key {} window {before}, allowed by {}",
                    trial_key.key.id, replica.label
                )
            });
        }
    }
    tally
}

/// Asks `replica` until it allows the key again (access came back without
/// waiting, so its event may still be on its way).
async fn rewarm(replica: &Replica, token: &str) {
    let started = Instant::now();
    while !replica.authorize(token, PROBE_ADDRESS).await.allowed {
        let label = replica.label;
        assert!(
            started.elapsed() < REWARM_AT_MOST,
            "{label} never allowed the key again"
        );
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
}

/// Runs `count` trials on key `index`, the origin and the narrowing taking turns.
async fn trial_loop(
    index: usize,
    count: usize,
    replicas: Vec<Replica>,
    admin: String,
    keys: Arc<Vec<TrialKey>>,
) -> Tally {
    let trial_key = &keys[index];
    let mut tally = Tally::default();
    for trial in 0..count {
        let origin = &replicas[(trial + index) % replicas.len()];
        let narrowing = NARROWINGS[(trial / replicas.len()) % NARROWINGS.len()];
        let propagation = narrowing.send(origin, &admin, trial_key, false).await;
        assert!(propagation.waited, "{narrowing:?} did not wait");
        tally.trials += 1;
        if propagation.complete {
            tally.confirmed += 1;
            let opened_micros = trial_key.now_micros();
            trial_key
                .opened_micros
                .store(opened_micros, Ordering::SeqCst);
            trial_key.window.fetch_add(1, Ordering::SeqCst);
            let token = trial_key.token.as_str();
            let (first, second, third) = tokio::join!(
                replicas[0].authorize(token, PROBE_ADDRESS),
                replicas[1].authorize(token, PROBE_ADDRESS),
                replicas[2].authorize(token, PROBE_ADDRESS),
            );
            for (replica, decision) in replicas.iter().zip([first, second, third]) {
                tally.probe_in_window(&decision, || {
                    let through = origin.label;
                    format!("trial {trial} on key {}: {narrowing:?} through {through}, allowed by {} ({propagation:?})", trial_key.key.id, replica.label)
                });
            }
            // Closed before access comes back: a watcher's probe that saw it
            // open and still sees it open when answered was decided before.
            trial_key.window.fetch_add(1, Ordering::SeqCst);
        }
        narrowing.send(origin, &admin, trial_key, true).await;
        for replica in &replicas {
            rewarm(replica, &trial_key.token).await;
        }
    }
    tally
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn propagation_stress_no_replica_allows_what_a_confirmed_change_took_away() {
    let trial_count = trials();
    let (a, b, c) = three_replicas().await;
    let all = [&a, &b, &c];
    let mut trial_keys = Vec::with_capacity(KEYS);
    for _ in 0..KEYS {
        let (key, token) = warm_key(&all, &FULL_SCOPES).await;
        trial_keys.push(TrialKey {
            key,
            token,
            window: AtomicU64::new(0),
            opened_micros: AtomicU64::new(0),
            since: Instant::now(),
        });
    }
    let keys = Arc::new(trial_keys);
    let replicas = vec![
        Replica::of(&a, "A"),
        Replica::of(&b, "B"),
        Replica::of(&c, "C"),
    ];

    let busy = BusyCpus::start();
    let stop_watching = Arc::new(AtomicBool::new(false));
    let watchers: Vec<_> = replicas
        .iter()
        .map(|replica| tokio::spawn(watch(replica.clone(), keys.clone(), stop_watching.clone())))
        .collect();
    let started = Instant::now();
    let loops: Vec<_> = (0..KEYS)
        .map(|index| {
            let count = trial_count / KEYS + usize::from(index < trial_count % KEYS);
            let admin = a.admin_token.clone();
            tokio::spawn(trial_loop(
                index,
                count,
                replicas.clone(),
                admin,
                keys.clone(),
            ))
        })
        .collect();
    let mut total = Tally::default();
    for finished in loops {
        total.add(finished.await.unwrap());
    }
    let elapsed = started.elapsed();
    stop_watching.store(true, Ordering::SeqCst);
    for watcher in watchers {
        total.add(watcher.await.unwrap());
    }
    drop(busy);

    eprintln!(
        "propagation stress: {} trials ({} confirmed) in {:.1} s; {} probes inside a confirmed \
         change's window ({} from watchers, of {} they sent; {} of those within 1 ms of the \
         return), {} allowed, {} denied for another reason",
        total.trials,
        total.confirmed,
        elapsed.as_secs_f64(),
        total.probes_in_window,
        total.probes_in_window - 3 * total.confirmed,
        total.watcher_probes,
        total.watcher_probes_within_a_millisecond,
        total.allowed_in_window.len(),
        total.other_denials,
    );
    assert_eq!(total.trials, trial_count as u64);
    assert_eq!(
        total.allowed_in_window.len(),
        0,
        "allows observed after a confirmed change returned:\n{}",
        total.allowed_in_window.join("\n")
    );
}

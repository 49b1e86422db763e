//! Prometheus metrics: one process-wide recorder, rendered on a separate HTTP
//! port at `/metrics`. Gauges that describe current state (cache size, pool
//! usage, cache trust, the process's CPU, memory and file descriptors) are
//! refreshed on every scrape. Latencies are histograms with fixed buckets, so
//! that replicas' series add up (quantiles of summaries cannot be combined).
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `keygate_authorize_decisions_total` | counter | `reason` |
//! | `keygate_authorizer_callers_refused_total` | counter | `cause` (`missing_certificate`, `client_not_allowed`, `missing_token`, `wrong_token`) |
//! | `keygate_rpc_duration_seconds` | histogram ([`RPC_DURATION_BUCKETS`]) | `method` (a known method's path, or `_OTHER`), `code` (`OK`, `NOT_FOUND`, …) |
//! | `keygate_cache_hits_total`, `keygate_cache_misses_total`, `keygate_cache_evictions_total`, `keygate_cache_changes_followed_total` | counter | |
//! | `keygate_cache_entries` | gauge | |
//! | `keygate_argon2_verifications_total` | counter | |
//! | `keygate_argon2_verify_seconds` | histogram ([`ARGON2_VERIFY_BUCKETS`]) | |
//! | `keygate_event_listener_connected`, `keygate_cache_trusted` | gauge (0/1) | |
//! | `keygate_event_apply_lag_seconds` | histogram ([`EVENT_APPLY_LAG_BUCKETS`]) | |
//! | `keygate_db_pool_connections`, `keygate_db_pool_idle_connections` | gauge | |
//! | `keygate_build_info` | gauge (1) | `version` |
//! | `process_cpu_seconds_total` | counter | |
//! | `process_resident_memory_bytes`, `process_virtual_memory_bytes`, `process_virtual_memory_max_bytes`, `process_open_fds`, `process_max_fds`, `process_threads`, `process_start_time_seconds` | gauge | |

use std::sync::{Arc, OnceLock};

use metrics::{describe_counter, describe_gauge, describe_histogram};
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};
use sqlx::PgPool;
use tokio::net::TcpListener;

use crate::cache::KeyCache;
use crate::freshness::Freshness;

/// Upper bounds (seconds) of `keygate_rpc_duration_seconds`: from a cached
/// Authorize (tens of microseconds) to a mutation waiting for every replica.
pub const RPC_DURATION_BUCKETS: [f64; 17] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
];

/// Upper bounds (seconds) of `keygate_argon2_verify_seconds`: around the cost
/// of the configured argon2id parameters (milliseconds by default).
pub const ARGON2_VERIFY_BUCKETS: [f64; 11] = [
    0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

/// Upper bounds (seconds) of `keygate_event_apply_lag_seconds`: milliseconds
/// normally, seconds when a replica falls behind (the lease is 3 s).
pub const EVENT_APPLY_LAG_BUCKETS: [f64; 14] = [
    0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

static RECORDER: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide recorder on first use; later calls share it.
pub fn recorder() -> Option<PrometheusHandle> {
    RECORDER
        .get_or_init(|| match install() {
            Ok(handle) => Some(handle),
            Err(error) => {
                tracing::warn!(%error, "metrics recorder not installed");
                None
            }
        })
        .clone()
}

fn install() -> Result<PrometheusHandle, BuildError> {
    let histogram = |name: &str| Matcher::Full(name.to_owned());
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            histogram("keygate_rpc_duration_seconds"),
            &RPC_DURATION_BUCKETS,
        )?
        .set_buckets_for_metric(
            histogram("keygate_argon2_verify_seconds"),
            &ARGON2_VERIFY_BUCKETS,
        )?
        .set_buckets_for_metric(
            histogram("keygate_event_apply_lag_seconds"),
            &EVENT_APPLY_LAG_BUCKETS,
        )?
        .install_recorder()?;
    describe();
    metrics::gauge!("keygate_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    Ok(handle)
}

/// The `# HELP` text of every family.
fn describe() {
    describe_counter!(
        "keygate_authorize_decisions_total",
        "Authorize answers, by the decision's reason."
    );
    describe_counter!(
        "keygate_authorizer_callers_refused_total",
        "Authorize callers refused by caller authentication, by cause."
    );
    describe_histogram!(
        "keygate_rpc_duration_seconds",
        "Time to answer a gRPC call, by method (_OTHER for unknown methods) and status code."
    );
    describe_counter!(
        "keygate_cache_hits_total",
        "Key lookups served from the cache."
    );
    describe_counter!(
        "keygate_cache_misses_total",
        "Key lookups loaded from the database."
    );
    describe_counter!(
        "keygate_cache_evictions_total",
        "Cached keys removed by a change (notifications, local changes, expiring tombstones)."
    );
    describe_counter!(
        "keygate_cache_changes_followed_total",
        "Disables and revocations a cached key took in place."
    );
    describe_gauge!(
        "keygate_cache_entries",
        "Keys cached now (unknown key ids not counted)."
    );
    describe_counter!(
        "keygate_argon2_verifications_total",
        "argon2id verifications run."
    );
    describe_histogram!(
        "keygate_argon2_verify_seconds",
        "Time of one argon2id verification."
    );
    describe_gauge!(
        "keygate_event_listener_connected",
        "1 while the event listener is connected, else 0."
    );
    describe_gauge!(
        "keygate_cache_trusted",
        "1 while the cache is trusted (listener connected and lease current), else 0."
    );
    describe_histogram!(
        "keygate_event_apply_lag_seconds",
        "From a key event being written to this replica applying it."
    );
    describe_gauge!(
        "keygate_db_pool_connections",
        "Connections in the database pool."
    );
    describe_gauge!(
        "keygate_db_pool_idle_connections",
        "Idle connections in the database pool."
    );
    describe_gauge!(
        "keygate_build_info",
        "Always 1; the version label names the running build."
    );
    process_metrics().describe();
}

/// The process's CPU, memory, file descriptors and start time (`process_*`).
fn process_metrics() -> &'static metrics_process::Collector {
    static COLLECTOR: OnceLock<metrics_process::Collector> = OnceLock::new();
    COLLECTOR.get_or_init(metrics_process::Collector::default)
}

/// What a scrape refreshes before rendering.
#[derive(Clone)]
pub struct ScrapeSources {
    pub cache: KeyCache,
    pub freshness: Arc<Freshness>,
    pub pool: PgPool,
}

async fn refresh(sources: &ScrapeSources) {
    let cache = &sources.cache;
    // moka counts entries lazily; settle pending work so the size is current.
    cache.run_pending_tasks();
    metrics::gauge!("keygate_cache_entries").set(cache.entry_count() as f64);
    let freshness = &sources.freshness;
    let connected = freshness.listener_connected();
    metrics::gauge!("keygate_event_listener_connected").set(if connected { 1.0 } else { 0.0 });
    let trusted = freshness.is_trusted();
    metrics::gauge!("keygate_cache_trusted").set(if trusted { 1.0 } else { 0.0 });
    metrics::gauge!("keygate_db_pool_connections").set(f64::from(sources.pool.size()));
    metrics::gauge!("keygate_db_pool_idle_connections").set(sources.pool.num_idle() as f64);
    process_metrics().collect();
}

/// Serves `/metrics` on `listener` until the task is aborted, and drains
/// histogram samples every few seconds so that memory stays bounded even when
/// nobody scrapes.
pub async fn serve_metrics(
    listener: TcpListener,
    handle: PrometheusHandle,
    sources: ScrapeSources,
) {
    let upkeep_handle = handle.clone();
    let upkeep = tokio::spawn(async move {
        let mut ticker = tokio::time::interval(std::time::Duration::from_secs(5));
        loop {
            ticker.tick().await;
            upkeep_handle.run_upkeep();
        }
    });
    let _stop_upkeep = AbortOnDrop(upkeep);
    let shared = Arc::new((handle, sources));
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let shared = shared.clone();
            async move {
                refresh(&shared.1).await;
                shared.0.render()
            }
        }),
    );
    if let Err(error) = axum::serve(listener, app).await {
        tracing::warn!(%error, "metrics server stopped");
    }
}

/// Aborts a task when dropped (so the upkeep stops with the metrics server).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

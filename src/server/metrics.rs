//! Prometheus metrics: one process-wide recorder, rendered on a separate HTTP
//! port at `/metrics`. Gauges that describe current state (cache size, pool
//! usage, cache trust) are refreshed on every scrape.
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `keygate_authorize_decisions_total` | counter | `reason` |
//! | `keygate_rpc_duration_seconds` | histogram | `method`, `code` |
//! | `keygate_cache_hits_total`, `keygate_cache_misses_total`, `keygate_cache_evictions_total`, `keygate_cache_changes_followed_total` | counter | |
//! | `keygate_cache_entries` | gauge | |
//! | `keygate_argon2_verifications_total` | counter | |
//! | `keygate_argon2_verify_seconds` | histogram | |
//! | `keygate_event_listener_connected`, `keygate_cache_trusted` | gauge (0/1) | |
//! | `keygate_event_apply_lag_seconds` | histogram | |
//! | `keygate_db_pool_connections`, `keygate_db_pool_idle_connections` | gauge | |

use std::sync::{Arc, OnceLock};

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use sqlx::PgPool;
use tokio::net::TcpListener;

use crate::cache::KeyCache;
use crate::freshness::Freshness;

static RECORDER: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide recorder on first use; later calls share it.
pub fn recorder() -> Option<PrometheusHandle> {
    RECORDER
        .get_or_init(|| match PrometheusBuilder::new().install_recorder() {
            Ok(handle) => Some(handle),
            Err(error) => {
                tracing::warn!(%error, "metrics recorder not installed");
                None
            }
        })
        .clone()
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

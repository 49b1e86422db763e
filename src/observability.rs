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

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use sqlx::PgPool;
use tokio::net::TcpListener;

use crate::authorizer::Authorizer;
use crate::decision::Reason;

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
    pub authorizer: Authorizer,
    pub pool: PgPool,
}

async fn refresh(sources: &ScrapeSources) {
    let cache = sources.authorizer.cache();
    // moka counts entries lazily; settle pending work so the size is current.
    cache.run_pending_tasks();
    metrics::gauge!("keygate_cache_entries").set(cache.entry_count() as f64);
    let freshness = sources.authorizer.freshness();
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

/// Handles for the metrics Authorize records on every call, registered once
/// (after the recorder is installed) so the hot path only does atomic adds.
pub struct HotPathMetrics {
    decisions: Vec<metrics::Counter>,
    authorize_ok_seconds: metrics::Histogram,
    pub cache_hits: metrics::Counter,
    pub cache_misses: metrics::Counter,
}

static HOT_PATH: OnceLock<HotPathMetrics> = OnceLock::new();

pub const AUTHORIZE_METHOD: &str = "/keygate.v1.Authorizer/Authorize";

/// The hot path's metric handles.
pub fn hot_path() -> &'static HotPathMetrics {
    HOT_PATH.get_or_init(|| HotPathMetrics {
        decisions: Reason::ALL
            .iter()
            .map(|reason| metrics::counter!("keygate_authorize_decisions_total", "reason" => reason.as_str()))
            .collect(),
        authorize_ok_seconds: metrics::histogram!(
            "keygate_rpc_duration_seconds",
            "method" => AUTHORIZE_METHOD,
            "code" => "0"
        ),
        cache_hits: metrics::counter!("keygate_cache_hits_total"),
        cache_misses: metrics::counter!("keygate_cache_misses_total"),
    })
}

impl HotPathMetrics {
    pub fn record_decision(&self, reason: Reason, started: Instant) {
        if let Some(counter) = self.decisions.get(reason as usize) {
            counter.increment(1);
        }
        self.authorize_ok_seconds
            .record(started.elapsed().as_secs_f64());
    }
}

/// Records a failed Authorize call (a malformed request or an unreachable database).
pub fn record_authorize_error(code: tonic::Code, started: Instant) {
    crate::telemetry::record_status(code);
    let code_label = (code as i32).to_string();
    metrics::histogram!("keygate_rpc_duration_seconds", "method" => AUTHORIZE_METHOD, "code" => code_label)
        .record(started.elapsed().as_secs_f64());
}

/// Aborts a task when dropped (so the upkeep stops with the metrics server).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A tower layer that times every call of the service it wraps by method and
/// status code (used for KeyService; Authorize records its own, more cheaply).
#[derive(Clone, Copy, Default)]
pub struct RpcMetricsLayer;

impl<S> tower::Layer<S> for RpcMetricsLayer {
    type Service = RpcMetrics<S>;

    fn layer(&self, inner: S) -> RpcMetrics<S> {
        RpcMetrics { inner }
    }
}

#[derive(Clone)]
pub struct RpcMetrics<S> {
    inner: S,
}

impl<S: tonic::server::NamedService> tonic::server::NamedService for RpcMetrics<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, RequestBody, ResponseBody> tower::Service<http::Request<RequestBody>> for RpcMetrics<S>
where
    S: tower::Service<http::Request<RequestBody>, Response = http::Response<ResponseBody>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, context: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(context)
    }

    fn call(&mut self, request: http::Request<RequestBody>) -> Self::Future {
        let method = request.uri().path().to_owned();
        let started = Instant::now();
        let call = self.inner.call(request);
        Box::pin(async move {
            let response = call.await?;
            // Errors are sent trailers-only, with grpc-status in the headers;
            // a response without it in the headers is a success.
            let status_code = response
                .headers()
                .get("grpc-status")
                .map_or(tonic::Code::Ok, |value| {
                    tonic::Code::from_bytes(value.as_bytes())
                });
            crate::telemetry::record_status(status_code);
            let code_label = (status_code as i32).to_string();
            metrics::histogram!("keygate_rpc_duration_seconds", "method" => method, "code" => code_label)
                .record(started.elapsed().as_secs_f64());
            Ok(response)
        })
    }
}

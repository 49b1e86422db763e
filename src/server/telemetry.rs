//! Logs and traces: `tracing` to stderr (human-readable, or JSON lines), and
//! OpenTelemetry traces over OTLP/gRPC when the standard
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`)
//! variable is set. `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES` describe
//! the service (its name defaults to `keygate`); `OTEL_SDK_DISABLED=true` keeps
//! the exporter off.
//!
//! Every gRPC call gets one span (`rpc_span`), parented on the caller's W3C
//! `traceparent` when one arrives; store calls and argon2 get child spans.

use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::{EnvFilter, LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

/// The target of the per-call spans. Logs leave it out by default (it costs
/// time on every Authorize); `RUST_LOG=info,keygate::rpc=info` brings it back.
pub const RPC_TARGET: &str = "keygate::rpc";

/// The target sqlx logs the server's notices under, at the level of their
/// severity (NOTICE at INFO, WARNING at WARN).
const POSTGRES_NOTICE_TARGET: &str = "sqlx::postgres::notice";

/// Whether traces are exported (so incoming `traceparent`s are worth parsing).
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// The installed logging and tracing; `shutdown` flushes what is buffered.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

/// Which log output a command wants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogStyle {
    Text,
    Json,
}

/// Installs the global subscriber: logs filtered by `RUST_LOG` (default
/// `default_level`), plus the OTLP trace exporter when `export_traces` is set
/// and the environment configures it.
pub fn init(
    style: LogStyle,
    default_level: LevelFilter,
    export_traces: bool,
) -> anyhow::Result<Telemetry> {
    let rust_log = std::env::var("RUST_LOG").ok();
    let log_filter = log_filter(rust_log.as_deref(), default_level);
    let provider = if export_traces {
        otlp_provider()?
    } else {
        None
    };
    let installed = match &provider {
        // Each output with its own filter: traces want spans the logs leave out.
        Some(provider) => {
            let traces = tracing_opentelemetry::layer()
                .with_tracer(provider.tracer("keygate"))
                .with_filter(Targets::new().with_target("keygate", LevelFilter::DEBUG));
            tracing_subscriber::registry()
                .with(log_layer(style).with_filter(log_filter))
                .with(traces)
                .try_init()
        }
        // One global filter: spans it turns off are never created.
        None => tracing_subscriber::registry()
            .with(log_filter)
            .with(log_layer(style))
            .try_init(),
    };
    installed.context("failed to install the log subscriber")?;
    if provider.is_some() {
        EXPORTING.store(true, Ordering::Relaxed);
        tracing::info!("exporting traces over OTLP");
    }
    Ok(Telemetry { provider })
}

/// Human-readable lines, or one JSON object per line, on stderr.
fn log_layer<S>(style: LogStyle) -> Box<dyn Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'span> LookupSpan<'span>,
{
    match style {
        LogStyle::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .boxed(),
        LogStyle::Text => tracing_subscriber::fmt::layer()
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(std::io::stderr)
            .boxed(),
    }
}

/// The log filter: `rust_log` (the `RUST_LOG` value), else `default_level`, with
/// two targets quieted unless `rust_log` names them: the per-call spans
/// (`keygate::rpc=off`), and Postgres notices below WARNING
/// (`sqlx::postgres::notice=warn`), such as the `relation "_sqlx_migrations"
/// already exists, skipping` every start would log. Postgres warnings still show.
fn log_filter(rust_log: Option<&str>, default_level: LevelFilter) -> EnvFilter {
    let named = |target: &str| rust_log.is_some_and(|value| value.contains(target));
    let rpc_spans = if named(RPC_TARGET) {
        format!("{RPC_TARGET}=info")
    } else {
        format!("{RPC_TARGET}=off")
    };
    let mut filter = EnvFilter::builder()
        .with_default_directive(default_level.into())
        .parse_lossy(rust_log.unwrap_or_default());
    let mut quieted = vec![rpc_spans];
    if !named(POSTGRES_NOTICE_TARGET) {
        quieted.push(format!("{POSTGRES_NOTICE_TARGET}=warn"));
    }
    for directive in quieted {
        // Fixed directives, which parse.
        if let Ok(directive) = directive.parse() {
            filter = filter.add_directive(directive);
        }
    }
    filter
}

fn otlp_configured() -> bool {
    let set = |name: &str| std::env::var(name).is_ok_and(|value| !value.trim().is_empty());
    let disabled = std::env::var("OTEL_SDK_DISABLED")
        .is_ok_and(|value| value.trim().eq_ignore_ascii_case("true"));
    !disabled && (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
}

fn otlp_provider() -> anyhow::Result<Option<SdkTracerProvider>> {
    if !otlp_configured() {
        return Ok(None);
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .build()
        .context("failed to build the OTLP exporter (check OTEL_EXPORTER_OTLP_ENDPOINT)")?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource())
        .build();
    Ok(Some(provider))
}

/// The SDK's resource (from `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES`),
/// named `keygate` when neither names the service.
fn resource() -> Resource {
    let detected = Resource::builder().build();
    let unnamed = detected
        .get(&opentelemetry::Key::from_static_str("service.name"))
        .is_none_or(|name| name.as_str().starts_with("unknown_service"));
    if unnamed {
        Resource::builder().with_service_name("keygate").build()
    } else {
        detected
    }
}

impl Telemetry {
    /// Exports every buffered span; called once the server has drained.
    pub async fn shutdown(self) {
        let Some(provider) = self.provider else {
            return;
        };
        let flushed = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        match flushed {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, "failed to flush traces"),
            Err(error) => tracing::warn!(%error, "failed to flush traces"),
        }
    }
}

/// The span of one gRPC call, for tonic's `trace_fn`. Handlers record the
/// outcome on it (`reason`, `key_id`, `rpc.grpc.status_code`); it never holds
/// the token.
pub fn rpc_span(request: &http::Request<()>) -> tracing::Span {
    let path = request.uri().path();
    let (service, method) = path
        .trim_start_matches('/')
        .split_once('/')
        .unwrap_or(("", path));
    let span = tracing::info_span!(
        target: RPC_TARGET,
        "grpc",
        otel.name = %path.trim_start_matches('/'),
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.service = %service,
        rpc.method = %method,
        rpc.grpc.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
        key_id = tracing::field::Empty,
        reason = tracing::field::Empty,
    );
    if EXPORTING.load(Ordering::Relaxed) && !span.is_disabled() {
        let parent = TraceContextPropagator::new().extract(&HeaderExtractor(request.headers()));
        // Fails only when the span has already started, which it has not.
        let _ = span.set_parent(parent);
    }
    span
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

#[cfg(test)]
mod tests {
    use tracing::Level;
    use tracing_subscriber::filter::LevelFilter;
    use tracing_subscriber::layer::SubscriberExt;

    use super::log_filter;

    /// Whether a Postgres notice at `level` is logged under `rust_log`.
    fn notice_logged(rust_log: Option<&str>, level: Level) -> bool {
        let subscriber =
            tracing_subscriber::registry().with(log_filter(rust_log, LevelFilter::INFO));
        tracing::subscriber::with_default(subscriber, || match level {
            Level::INFO => tracing::enabled!(target: "sqlx::postgres::notice", Level::INFO),
            _ => tracing::enabled!(target: "sqlx::postgres::notice", Level::WARN),
        })
    }

    #[test]
    fn postgres_notices_are_logged_from_warning_up_unless_rust_log_names_them() {
        assert!(!notice_logged(None, Level::INFO));
        assert!(notice_logged(None, Level::WARN));
        assert!(!notice_logged(Some("info"), Level::INFO));
        assert!(notice_logged(
            Some("info,sqlx::postgres::notice=info"),
            Level::INFO
        ));
    }
}

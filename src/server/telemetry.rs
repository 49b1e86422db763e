//! Logs and traces: `tracing` to stderr (human-readable, or JSON lines), and
//! OpenTelemetry traces over OTLP/gRPC when the standard
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`)
//! variable is set. `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES` describe
//! the service (its name defaults to `keygate`); `OTEL_SDK_DISABLED=true` keeps
//! the exporter off.
//!
//! Every gRPC call gets one span (`rpc_span`), parented on the caller's W3C
//! `traceparent` when one arrives; store calls and argon2 get child spans.
//! Health checks and reflection get none unless asked.

mod rpc_span;
mod uncached_filter;

use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::KeyValue;
use opentelemetry_sdk::trace::{SdkTracerProvider, Tracer};
use opentelemetry_sdk::Resource;
use tracing_subscriber::filter::{EnvFilter, LevelFilter, Targets};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;
use uncached_filter::UncachedFilter;

pub use rpc_span::rpc_span;

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

/// Which traces a command produces.
#[derive(Clone, Copy, Debug, Default)]
pub struct TraceOptions {
    /// Export over OTLP when the environment names an endpoint (the server
    /// commands do; the admin CLI does not).
    pub export: bool,
    /// Give health checks and server reflection spans too (`serve
    /// --trace-health-checks`).
    pub health_checks: bool,
}

/// Installs the global subscriber: logs filtered by `RUST_LOG` (default
/// `default_level`), plus the OTLP trace exporter when `traces.export` is set
/// and the environment configures it.
pub fn init(
    style: LogStyle,
    default_level: LevelFilter,
    traces: TraceOptions,
) -> anyhow::Result<Telemetry> {
    let rust_log = std::env::var("RUST_LOG").ok();
    let log_filter = log_filter(rust_log.as_deref(), default_level);
    let provider = if traces.export {
        otlp_provider()?
    } else {
        None
    };
    rpc_span::TRACE_HEALTH_CHECKS.store(traces.health_checks, Ordering::Relaxed);
    let tracer = provider.as_ref().map(|provider| provider.tracer("keygate"));
    subscriber(style, log_filter, tracer, std::io::stderr)
        .try_init()
        .context("failed to install the log subscriber")?;
    if provider.is_some() {
        EXPORTING.store(true, Ordering::Relaxed);
        tracing::info!("exporting traces over OTLP");
    }
    Ok(Telemetry { provider })
}

/// Logs through `log_filter` to `writer`, and spans to `tracer` when there is one.
fn subscriber<W>(
    style: LogStyle,
    log_filter: EnvFilter,
    tracer: Option<Tracer>,
    writer: W,
) -> tracing::Dispatch
where
    W: for<'writer> MakeWriter<'writer> + Send + Sync + 'static,
{
    match tracer {
        // Each output with its own filter: traces want spans the logs leave out.
        Some(tracer) => {
            let trace_filter = Targets::new().with_target("keygate", LevelFilter::DEBUG);
            let traces = tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_filter(UncachedFilter(trace_filter));
            let logs = log_layer(style, writer).with_filter(UncachedFilter(log_filter));
            tracing::Dispatch::new(tracing_subscriber::registry().with(logs).with(traces))
        }
        // One global filter: spans it turns off are never created.
        None => tracing::Dispatch::new(
            tracing_subscriber::registry()
                .with(log_filter)
                .with(log_layer(style, writer)),
        ),
    }
}

/// Human-readable lines, or one JSON object per line.
fn log_layer<S, W>(style: LogStyle, writer: W) -> Box<dyn Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'span> LookupSpan<'span>,
    W: for<'writer> MakeWriter<'writer> + Send + Sync + 'static,
{
    match style {
        LogStyle::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(writer)
            .boxed(),
        LogStyle::Text => tracing_subscriber::fmt::layer()
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(writer)
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
/// with `service.name` `keygate` and `service.version` this build's, unless
/// the environment names them.
fn resource() -> Resource {
    let detected = Resource::builder().build();
    let unnamed = detected
        .get(&opentelemetry::Key::from_static_str("service.name"))
        .is_none_or(|name| name.as_str().starts_with("unknown_service"));
    let mut defaults = Vec::new();
    if unnamed {
        defaults.push(KeyValue::new("service.name", "keygate"));
    }
    let versioned = detected
        .get(&opentelemetry::Key::from_static_str("service.version"))
        .is_some();
    if !versioned {
        defaults.push(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")));
    }
    Resource::builder().with_attributes(defaults).build()
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

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use tracing_log::AsTrace;
    use tracing_subscriber::filter::LevelFilter;

    use super::{log_filter, subscriber, LogStyle};

    /// A log destination the test reads back.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    #[test]
    fn info_lines_are_logged_while_traces_are_exported() {
        let log = Captured::default();
        let writer = log.clone();
        let log_filter = log_filter(None, LevelFilter::INFO);
        let tracer = SdkTracerProvider::builder().build().tracer("test");
        let dispatch = subscriber(LogStyle::Text, log_filter, Some(tracer), move || {
            writer.clone()
        });
        tracing::dispatcher::with_default(&dispatch, || {
            tracing::info!("first line");
            // What the `log` bridge does for `log::log_enabled!`, which sqlx
            // asks after its queries: whether a record would be wanted, with
            // no record following.
            let record = log::Metadata::builder()
                .level(log::Level::Debug)
                .target("sqlx::query")
                .build();
            let _ = dispatch.enabled(&record.as_trace());
            tracing::info!("second line");
            tracing::warn!("third line");
        });
        let text = log.text();
        for line in ["first line", "second line", "third line"] {
            assert!(text.contains(line), "{line:?} missing from:\n{text}");
        }
    }

    /// Whether a Postgres notice at `level` is logged under `rust_log`.
    fn notice_logged(rust_log: Option<&str>, level: tracing::Level) -> bool {
        let subscriber = tracing_subscriber::layer::SubscriberExt::with(
            tracing_subscriber::registry(),
            log_filter(rust_log, LevelFilter::INFO),
        );
        tracing::subscriber::with_default(subscriber, || match level {
            tracing::Level::INFO => {
                tracing::enabled!(target: "sqlx::postgres::notice", tracing::Level::INFO)
            }
            _ => tracing::enabled!(target: "sqlx::postgres::notice", tracing::Level::WARN),
        })
    }

    #[test]
    fn postgres_notices_are_logged_from_warning_up_unless_rust_log_names_them() {
        assert!(!notice_logged(None, tracing::Level::INFO));
        assert!(notice_logged(None, tracing::Level::WARN));
        assert!(!notice_logged(Some("info"), tracing::Level::INFO));
        assert!(notice_logged(
            Some("info,sqlx::postgres::notice=info"),
            tracing::Level::INFO
        ));
    }
}

//! The span of one gRPC call, after OpenTelemetry's conventions for RPC
//! servers: named `package.Service/Method` for the methods this server offers,
//! and `grpc` with `rpc.method = "_OTHER"` for any other path, so that callers
//! cannot mint span names. Health checks and server reflection get no span
//! unless asked (`--trace-health-checks`): probes every few seconds would
//! outnumber the calls worth tracing.

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::{EXPORTING, RPC_TARGET};
use crate::grpc::labels::{known_method, OTHER_METHOD};

/// Whether health checks and server reflection get spans.
pub(super) static TRACE_HEALTH_CHECKS: AtomicBool = AtomicBool::new(false);

/// The span of one gRPC call, for tonic's `trace_fn`. Handlers and layers
/// record the outcome on it (`rpc.grpc.status_code`, `otel.status_code`, and
/// for Authorize `reason` and `key_id`); it never holds the token.
pub fn rpc_span(request: &http::Request<()>) -> tracing::Span {
    let path = request.uri().path();
    if is_probe_or_reflection(path) && !TRACE_HEALTH_CHECKS.load(Ordering::Relaxed) {
        return tracing::Span::none();
    }
    let span = match known_method(path) {
        Some(known) => {
            let name = known.trim_start_matches('/');
            let (service, method) = name.split_once('/').unwrap_or((name, ""));
            tracing::info_span!(
                target: RPC_TARGET,
                "grpc",
                otel.name = name,
                otel.kind = "server",
                rpc.system = "grpc",
                rpc.service = service,
                rpc.method = method,
                rpc.grpc.status_code = Empty,
                otel.status_code = Empty,
                key_id = Empty,
                reason = Empty,
            )
        }
        None => tracing::info_span!(
            target: RPC_TARGET,
            "grpc",
            otel.name = "grpc",
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.method = OTHER_METHOD,
            rpc.method_original = %path.trim_start_matches('/'),
            rpc.grpc.status_code = Empty,
            otel.status_code = Empty,
        ),
    };
    if EXPORTING.load(Ordering::Relaxed) && !span.is_disabled() {
        let parent = TraceContextPropagator::new().extract(&HeaderExtractor(request.headers()));
        // Fails only when the span has already started, which it has not.
        let _ = span.set_parent(parent);
    }
    span
}

/// `/grpc.health.v1.Health/…` and `/grpc.reflection.…`.
fn is_probe_or_reflection(path: &str) -> bool {
    path.starts_with("/grpc.health.v1.Health/") || path.starts_with("/grpc.reflection.")
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
    use super::is_probe_or_reflection;

    #[test]
    fn probes_and_reflection_are_recognised_by_path() {
        for path in [
            "/grpc.health.v1.Health/Check",
            "/grpc.health.v1.Health/Watch",
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        ] {
            assert!(is_probe_or_reflection(path), "{path}");
        }
        for path in [
            "/keygate.v1.Authorizer/Authorize",
            "/grpc.other.Service/Call",
            "/",
        ] {
            assert!(!is_probe_or_reflection(path), "{path}");
        }
    }
}

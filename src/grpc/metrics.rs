//! What every RPC records: its duration by method and status code
//! (`keygate_rpc_duration_seconds`), and its status on the call's span. Label
//! values come from closed sets ([`super::labels`]), so callers cannot add
//! series. Health checks and reflection only put their status on the span.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use super::labels::{code_name, method_label};

/// Records a call's gRPC status code on the current call span, and marks the
/// span as an error when the code says the server failed.
pub fn record_status(code: tonic::Code) {
    let span = tracing::Span::current();
    span.record("rpc.grpc.status_code", code as i32);
    if is_server_error(code) {
        span.record("otel.status_code", "ERROR");
    }
}

/// The codes that mean the server failed, which OpenTelemetry's gRPC
/// conventions mark as errors on server spans. The others (INVALID_ARGUMENT,
/// NOT_FOUND, PERMISSION_DENIED, …) answer a caller's mistake, which the
/// server handled correctly.
fn is_server_error(code: tonic::Code) -> bool {
    matches!(
        code,
        tonic::Code::Unknown
            | tonic::Code::DeadlineExceeded
            | tonic::Code::Unimplemented
            | tonic::Code::Internal
            | tonic::Code::Unavailable
            | tonic::Code::DataLoss
    )
}

/// The status of a response: errors are sent trailers-only, with
/// `grpc-status` in the headers; a response without it there is a success
/// (or, for a stream, one that started well).
fn response_code<B>(response: &http::Response<B>) -> tonic::Code {
    response
        .headers()
        .get("grpc-status")
        .map_or(tonic::Code::Ok, |value| {
            tonic::Code::from_bytes(value.as_bytes())
        })
}

/// Records a failed Authorize call (a malformed request or an unreachable database).
pub fn record_authorize_error(code: tonic::Code, started: Instant) {
    record_status(code);
    metrics::histogram!("keygate_rpc_duration_seconds", "method" => crate::authorizer::metrics::AUTHORIZE_METHOD, "code" => code_name(code))
        .record(started.elapsed().as_secs_f64());
}

/// A tower layer that puts each call's status on its span and, when timed,
/// records the call's duration by method and status code.
#[derive(Clone, Copy)]
pub struct RpcOutcomeLayer {
    timed: bool,
}

impl RpcOutcomeLayer {
    /// Status and duration: KeyService (Authorize records its own, more cheaply).
    pub const TIMED: RpcOutcomeLayer = RpcOutcomeLayer { timed: true };
    /// The status alone: health checks and server reflection, whose spans are
    /// optional and whose calls are not worth a series.
    pub const STATUS_ONLY: RpcOutcomeLayer = RpcOutcomeLayer { timed: false };
}

impl<S> tower::Layer<S> for RpcOutcomeLayer {
    type Service = RpcOutcome<S>;

    fn layer(&self, inner: S) -> RpcOutcome<S> {
        RpcOutcome {
            inner,
            timed: self.timed,
        }
    }
}

#[derive(Clone)]
pub struct RpcOutcome<S> {
    inner: S,
    timed: bool,
}

impl<S: tonic::server::NamedService> tonic::server::NamedService for RpcOutcome<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, RequestBody, ResponseBody> tower::Service<http::Request<RequestBody>> for RpcOutcome<S>
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
        let timing = self
            .timed
            .then(|| (method_label(request.uri().path()), Instant::now()));
        let call = self.inner.call(request);
        Box::pin(async move {
            let response = call.await?;
            let status_code = response_code(&response);
            record_status(status_code);
            if let Some((method, started)) = timing {
                metrics::histogram!("keygate_rpc_duration_seconds", "method" => method, "code" => code_name(status_code))
                    .record(started.elapsed().as_secs_f64());
            }
            Ok(response)
        })
    }
}

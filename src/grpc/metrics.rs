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
        let method = method_label(request.uri().path());
        let started = Instant::now();
        let call = self.inner.call(request);
        Box::pin(async move {
            let response = call.await?;
            let status_code = response_code(&response);
            record_status(status_code);
            metrics::histogram!("keygate_rpc_duration_seconds", "method" => method, "code" => code_name(status_code))
                .record(started.elapsed().as_secs_f64());
            Ok(response)
        })
    }
}

/// A tower layer that puts each call's status on its span, without timing it
/// (health checks and server reflection, whose spans are optional).
#[derive(Clone, Copy, Default)]
pub struct RpcStatusLayer;

impl<S> tower::Layer<S> for RpcStatusLayer {
    type Service = RpcStatus<S>;

    fn layer(&self, inner: S) -> RpcStatus<S> {
        RpcStatus { inner }
    }
}

#[derive(Clone)]
pub struct RpcStatus<S> {
    inner: S,
}

impl<S: tonic::server::NamedService> tonic::server::NamedService for RpcStatus<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, RequestBody, ResponseBody> tower::Service<http::Request<RequestBody>> for RpcStatus<S>
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
        let call = self.inner.call(request);
        Box::pin(async move {
            let response = call.await?;
            record_status(response_code(&response));
            Ok(response)
        })
    }
}

//! Who may call the Authorizer: an optional check in front of a service, as a
//! tower layer applied per service (ext_authz `Check`, served on the same port,
//! takes the same layer). Off by default, and then no layer is added at all.
//!
//! Two credentials, each turned on by one setting; a caller must present every
//! one that is on:
//! - with mutual TLS, the client certificate must name an identity of
//!   `--authorizer-allowed-clients` among its SANs ([`AllowedClients`]);
//! - a preshared caller token from `--authorizer-token-file`, sent as
//!   `x-keygate-caller-token` metadata ([`CallerTokens`]), never as
//!   `authorization`, which carries the API key Authorize is asked about.
//!
//! A caller that fails gets `UNAUTHENTICATED` with one message whatever the
//! cause; the cause is counted and logged, at most once a minute per cause
//! ([`refusals`]).

mod clients;
mod refusals;
mod tokens;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

pub use clients::AllowedClients;
pub use refusals::Cause;
pub use tokens::{CallerTokens, TokenFileError, CALLER_TOKEN_METADATA, MIN_TOKEN_LENGTH};

use super::metrics::record_status;
use refusals::Refusals;

/// What Authorize's callers must present. The default asks nothing.
#[derive(Clone, Default, Debug)]
pub struct CallerAuthSettings {
    /// Client certificate identities allowed to call (needs mutual TLS).
    pub allowed_clients: Option<AllowedClients>,
    /// Caller tokens, from their file.
    pub tokens: Option<CallerTokens>,
}

impl CallerAuthSettings {
    /// Whether any check is on.
    pub fn is_on(&self) -> bool {
        self.allowed_clients.is_some() || self.tokens.is_some()
    }
}

/// The caller check as a tower layer; cloned for every service it guards.
#[derive(Clone)]
pub struct CallerAuthLayer {
    check: Arc<CallerCheck>,
}

struct CallerCheck {
    allowed_clients: Option<AllowedClients>,
    tokens: Option<CallerTokens>,
    refusals: &'static Refusals,
}

impl CallerAuthLayer {
    /// The layer for `settings`, or `None` when they ask nothing (then add no
    /// layer: an open service costs nothing per call).
    pub fn new(settings: &CallerAuthSettings) -> Option<CallerAuthLayer> {
        if !settings.is_on() {
            return None;
        }
        let check = CallerCheck {
            allowed_clients: settings.allowed_clients.clone(),
            tokens: settings.tokens.clone(),
            refusals: refusals::refusals(),
        };
        Some(CallerAuthLayer {
            check: Arc::new(check),
        })
    }
}

impl<S> tower::Layer<S> for CallerAuthLayer {
    type Service = CallerAuth<S>;

    fn layer(&self, inner: S) -> CallerAuth<S> {
        CallerAuth {
            inner,
            check: self.check.clone(),
        }
    }
}

/// A service whose callers are checked before it sees their calls.
#[derive(Clone)]
pub struct CallerAuth<S> {
    inner: S,
    check: Arc<CallerCheck>,
}

impl<S: tonic::server::NamedService> tonic::server::NamedService for CallerAuth<S> {
    const NAME: &'static str = S::NAME;
}

impl CallerCheck {
    /// Passes a caller that presents every credential asked for.
    fn check<B>(&self, request: &http::Request<B>) -> Result<(), Cause> {
        if let Some(allowed_clients) = &self.allowed_clients {
            let certificates = request
                .extensions()
                .get::<TlsConnectInfo<TcpConnectInfo>>()
                .and_then(TlsConnectInfo::peer_certs);
            let Some(leaf) = certificates.as_ref().and_then(|chain| chain.first()) else {
                return Err(Cause::MissingCertificate);
            };
            if !allowed_clients.admits(leaf.as_ref()) {
                return Err(Cause::ClientNotAllowed);
            }
        }
        if let Some(tokens) = &self.tokens {
            let Some(presented) = request.headers().get(CALLER_TOKEN_METADATA) else {
                return Err(Cause::MissingToken);
            };
            if !tokens.admits(presented.as_bytes()) {
                return Err(Cause::WrongToken);
            }
        }
        Ok(())
    }

    /// Counts and (sparingly) logs a refusal; the answer says only that the
    /// caller was not authenticated.
    fn refuse<B, R: Default>(&self, cause: Cause, request: &http::Request<B>) -> http::Response<R> {
        let peer = request
            .extensions()
            .get::<TcpConnectInfo>()
            .and_then(TcpConnectInfo::remote_addr);
        let client_names = || {
            request
                .extensions()
                .get::<TlsConnectInfo<TcpConnectInfo>>()
                .and_then(TlsConnectInfo::peer_certs)
                .and_then(|chain| chain.first().map(|leaf| clients::names_of(leaf.as_ref())))
                .unwrap_or_default()
        };
        self.refusals
            .record(cause, request.uri().path(), peer, client_names);
        tonic::Status::unauthenticated(REFUSAL_MESSAGE).into_http()
    }
}

/// The one message a refused caller gets, whatever the cause.
const REFUSAL_MESSAGE: &str = "caller not authenticated: missing or invalid caller credentials";

impl<S, RequestBody, ResponseBody> tower::Service<http::Request<RequestBody>> for CallerAuth<S>
where
    S: tower::Service<http::Request<RequestBody>, Response = http::Response<ResponseBody>>,
    S::Future: Unpin,
    ResponseBody: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Checked<S::Future, S::Response, S::Error>;

    fn poll_ready(&mut self, context: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(context)
    }

    fn call(&mut self, request: http::Request<RequestBody>) -> Self::Future {
        match self.check.check(&request) {
            Ok(()) => Checked::Passed(self.inner.call(request)),
            Err(cause) => {
                let refusal = self.check.refuse(cause, &request);
                Checked::Refused(std::future::ready(Ok(refusal)))
            }
        }
    }
}

/// The answer to a checked call: the service's own, or a refusal made without
/// it. A plain enum, so that a passed call costs no allocation of ours.
pub enum Checked<F, R, E> {
    Passed(F),
    Refused(std::future::Ready<Result<R, E>>),
}

impl<F, R, E> Future for Checked<F, R, E>
where
    F: Future<Output = Result<R, E>> + Unpin,
{
    type Output = Result<R, E>;

    fn poll(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Checked::Passed(call) => Pin::new(call).poll(context),
            Checked::Refused(refusal) => {
                // Here, not in `call`: the call's span is entered only while
                // its future is polled.
                record_status(tonic::Code::Unauthenticated);
                Pin::new(refusal).poll(context)
            }
        }
    }
}

//! The gRPC layer: generated `keygate.v1` types, conversion between them and the
//! domain, and the one mapping from [`ServiceError`] to `tonic::Status`.
//! Nothing outside this module names a generated type, except the admin CLI
//! (`crate::cli`), which is a client of this API and speaks it through [`pb`].

mod authorizer_service;
pub mod caller_auth;
mod convert;
mod key_service;
pub mod labels;
pub mod metrics;

pub use authorizer_service::AuthorizerHandler;
/// The proto's well-known `Timestamp` to and from a time: shared with the
/// admin CLI, which sends and prints them.
pub use convert::{parse_timestamp, timestamp};
pub use key_service::KeyServiceHandler;

use tonic::metadata::MetadataMap;
use tonic::Status;

use crate::authorizer::log_throttle::{LogThrottle, Throttled, LOG_INTERVAL, TRACKED_KEYS};
use crate::authorizer::Authorizer;
use crate::lifecycle::error::ServiceError;
use crate::lifecycle::KeyManager;
use metrics::{RpcOutcome, RpcOutcomeLayer};
use pb::authorizer_server::AuthorizerServer;
use pb::key_service_server::KeyServiceServer;

/// `keygate.v1.KeyService` over `manager`, each call timed by method and status.
pub fn key_service(manager: KeyManager) -> RpcOutcome<KeyServiceServer<KeyServiceHandler>> {
    let service = KeyServiceServer::new(KeyServiceHandler::new(manager));
    tower::Layer::layer(&RpcOutcomeLayer::TIMED, service)
}

/// `service` (health checks, server reflection) with each call's status on its span.
pub fn with_status_on_span<S>(service: S) -> RpcOutcome<S> {
    tower::Layer::layer(&RpcOutcomeLayer::STATUS_ONLY, service)
}

/// `keygate.v1.Authorizer` over `authorizer` (it times its own calls, more cheaply).
pub fn authorizer_service(authorizer: Authorizer) -> AuthorizerServer<AuthorizerHandler> {
    AuthorizerServer::new(AuthorizerHandler::new(authorizer))
}

/// Encoded descriptors of every Keygate proto file, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = pb::FILE_DESCRIPTOR_SET;

/// Generated code for the `keygate.v1` package.
#[allow(
    clippy::all,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::allow_attributes_without_reason,
    reason = "generated code"
)]
pub mod pb {
    tonic::include_proto!("keygate.v1");

    /// Encoded descriptors of every Keygate proto file, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/keygate_descriptor.bin"));
}

/// Redacting `Debug` for the generated messages that carry a token.
mod redacted_debug {
    use std::fmt;

    use super::pb;

    impl fmt::Debug for pb::AuthorizeRequest {
        fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
            formatter
                .debug_struct("AuthorizeRequest")
                .field("token", &"[redacted]")
                .field("method", &self.method)
                .field("path", &self.path)
                .field("client_ip", &self.client_ip)
                .field("permission", &self.permission)
                .finish()
        }
    }

    impl fmt::Debug for pb::CreateKeyResponse {
        fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
            formatter
                .debug_struct("CreateKeyResponse")
                .field("key", &self.key)
                .field("token", &"[redacted]")
                .finish()
        }
    }

    impl fmt::Debug for pb::RotateKeyResponse {
        fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
            formatter
                .debug_struct("RotateKeyResponse")
                .field("key", &self.key)
                .field("token", &"[redacted]")
                .field("propagation", &self.propagation)
                .finish()
        }
    }
}

/// Unauthenticated lifecycle calls, logged at most once an interval per cause.
static UNAUTHENTICATED_LOG: std::sync::LazyLock<LogThrottle<&'static str>> =
    std::sync::LazyLock::new(|| LogThrottle::new(LOG_INTERVAL, TRACKED_KEYS));

/// Maps a lifecycle error to the status the caller sees. Causes of internal and
/// availability errors are logged here and never sent.
pub fn status_from_error(error: ServiceError) -> Status {
    match error {
        ServiceError::InvalidArgument(field_error) => {
            Status::invalid_argument(field_error.to_string())
        }
        ServiceError::Unauthenticated(cause) => {
            // Once an interval per cause: anyone can send calls without a key.
            let throttled = UNAUTHENTICATED_LOG.check(&cause, std::time::Instant::now());
            if let Throttled::Log { suppressed_before } = throttled {
                tracing::info!(cause, suppressed_before, "caller not authenticated");
            }
            Status::unauthenticated(
                "missing, malformed or invalid bearer token, or the key is not active",
            )
        }
        ServiceError::PermissionDenied(message) => Status::permission_denied(message),
        ServiceError::NotFound(what) => Status::not_found(format!("{what} not found")),
        ServiceError::FailedPrecondition(message) => Status::failed_precondition(message),
        ServiceError::Unavailable(cause) => {
            tracing::warn!(
                error = format!("{:#}", anyhow::Error::from(cause)),
                "database unavailable"
            );
            Status::unavailable("database unavailable; retry later")
        }
        ServiceError::Aborted(cause) => {
            tracing::info!(
                error = format!("{:#}", anyhow::Error::from(cause)),
                "change rolled back by a concurrent one"
            );
            Status::aborted("a concurrent change got in the way; nothing was written, retry")
        }
        ServiceError::Unverifiable => Status::unavailable(
            "the calling key's state cannot be confirmed right now; retry later",
        ),
        ServiceError::Internal(cause) => {
            tracing::error!(error = format!("{cause:#}"), "internal error");
            Status::internal("internal error")
        }
    }
}

/// The token from `authorization: Bearer <token>`, if the header is there and readable.
pub fn bearer_token(metadata: &MetadataMap) -> Result<Option<&str>, ServiceError> {
    let Some(value) = metadata.get("authorization") else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| ServiceError::Unauthenticated("malformed_key"))?;
    match text.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => Ok(Some(token.trim())),
        _ => Err(ServiceError::Unauthenticated("malformed_key")),
    }
}

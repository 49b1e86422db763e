//! The lifecycle layer's one error type. The gRPC layer maps it to a status in
//! one place (`grpc::status_from_error`).

use crate::authorizer::VerifyError;
use crate::domain::hashing::HashingError;
use crate::domain::key::FieldError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// Bad input; names the field.
    #[error(transparent)]
    InvalidArgument(#[from] FieldError),
    /// The caller could not be identified; holds the precise cause for the log.
    #[error("caller not authenticated")]
    Unauthenticated(&'static str),
    /// The caller is identified but not allowed; the message says what is missing.
    #[error("{0}")]
    PermissionDenied(String),
    /// Names the kind of thing that was not found (never whether it exists elsewhere).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The request is valid but the resource is in the wrong state for it.
    #[error("{0}")]
    FailedPrecondition(String),
    /// A concurrent change made the database roll this one back; nothing was
    /// written, and the caller may retry.
    #[error("aborted by a concurrent change")]
    Aborted(#[source] std::sync::Arc<StoreError>),
    /// The database could not be reached; the caller may retry.
    #[error("service unavailable")]
    Unavailable(#[source] std::sync::Arc<StoreError>),
    /// The caller's key could not be confirmed: this replica lost its event
    /// stream and cannot reach the database.
    #[error("key state cannot be confirmed")]
    Unverifiable,
    /// Anything else; the cause is logged, never sent to the caller.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

/// The one mapping of store errors (shared: a load's error reaches every
/// request that waited on it).
impl From<std::sync::Arc<StoreError>> for ServiceError {
    fn from(error: std::sync::Arc<StoreError>) -> ServiceError {
        match error.as_ref() {
            StoreError::Unavailable(_) => ServiceError::Unavailable(error),
            StoreError::Conflict(_) => ServiceError::Aborted(error),
            _ => ServiceError::Internal(anyhow::Error::from(error)),
        }
    }
}

impl From<StoreError> for ServiceError {
    fn from(error: StoreError) -> ServiceError {
        std::sync::Arc::new(error).into()
    }
}

impl From<HashingError> for ServiceError {
    fn from(error: HashingError) -> ServiceError {
        ServiceError::Internal(error.into())
    }
}

impl From<VerifyError> for ServiceError {
    fn from(error: VerifyError) -> ServiceError {
        match error {
            VerifyError::Store(store_error) => store_error.into(),
            VerifyError::Hashing(hashing_error) => hashing_error.into(),
        }
    }
}

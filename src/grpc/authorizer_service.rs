//! `keygate.v1.Authorizer`: converts an AuthorizeRequest, asks the
//! [`Authorizer`], converts the [`Decision`] back.

use std::net::IpAddr;

use chrono::Utc;
use tonic::{Request, Response, Status};

use super::convert::{environment_to_proto, kind_to_proto};
use super::metrics::record_authorize_error;
use super::pb::authorizer_server::Authorizer as AuthorizerRpc;
use super::pb::{self};
use super::status_from_error;
use crate::authorizer::decision::{AuthorizeRequest, Decision, Reason, SecretSlot, Target};
use crate::authorizer::metrics::decision_metrics;
use crate::authorizer::Authorizer;
use crate::domain::key::FieldError;
use crate::domain::permission::Permission;
use crate::lifecycle::error::ServiceError;

pub struct AuthorizerHandler {
    authorizer: Authorizer,
}

impl AuthorizerHandler {
    pub fn new(authorizer: Authorizer) -> AuthorizerHandler {
        AuthorizerHandler { authorizer }
    }
}

fn parse_request(request: &pb::AuthorizeRequest) -> Result<AuthorizeRequest<'_>, FieldError> {
    let by_route = !request.method.is_empty() || !request.path.is_empty();
    let target = match (by_route, request.permission.is_empty()) {
        (true, false) => {
            return Err(FieldError::new(
                "permission",
                "give either method and path, or a permission",
            ))
        }
        (false, true) => {
            return Err(FieldError::new(
                "method",
                "give method and path, or a permission",
            ))
        }
        (false, false) => Target::Permission(
            Permission::parse(&request.permission)
                .map_err(|error| FieldError::new("permission", error.to_string()))?,
        ),
        (true, true) if request.method.is_empty() => {
            return Err(FieldError::new("method", "is required with path"))
        }
        (true, true) if !request.path.starts_with('/') => {
            return Err(FieldError::new("path", "must start with `/`"))
        }
        (true, true) => Target::Route {
            method: &request.method,
            path: &request.path,
        },
    };
    let client_ip = match request.client_ip.as_str() {
        "" => None,
        text => Some(
            text.parse::<IpAddr>()
                .map_err(|_| FieldError::new("client_ip", "is not an IPv4 or IPv6 address"))?,
        ),
    };
    Ok(AuthorizeRequest {
        presented: &request.token,
        target,
        client_ip,
    })
}

fn reason_to_proto(reason: Reason) -> pb::Reason {
    match reason {
        Reason::Ok => pb::Reason::Ok,
        Reason::MissingKey => pb::Reason::MissingKey,
        Reason::MalformedKey => pb::Reason::MalformedKey,
        Reason::UnknownKey => pb::Reason::UnknownKey,
        Reason::InvalidSecret => pb::Reason::InvalidSecret,
        Reason::Expired => pb::Reason::Expired,
        Reason::Disabled => pb::Reason::Disabled,
        Reason::Revoked => pb::Reason::Revoked,
        Reason::IpNotAllowed => pb::Reason::IpNotAllowed,
        Reason::PermissionDenied => pb::Reason::PermissionDenied,
        Reason::UnknownRoute => pb::Reason::UnknownRoute,
        Reason::Unverifiable => pb::Reason::Unverifiable,
    }
}

fn decision_to_proto(decision: Decision) -> pb::Decision {
    let mut answer = pb::Decision {
        allowed: decision.allowed(),
        reason: reason_to_proto(decision.reason).into(),
        permission: decision
            .permission
            .map(Permission::into_string)
            .unwrap_or_default(),
        route: decision.route.unwrap_or_default(),
        path_params: decision.path_params,
        http_status: i32::from(decision.reason.http_status()),
        ..Default::default()
    };
    let Some(identity) = decision.key else {
        return answer;
    };
    let entry = &identity.entry;
    answer.key_id = entry.key_id_text.as_str().to_owned();
    answer.organization_id = entry.organization_id_text.as_str().to_owned();
    answer.environment = environment_to_proto(entry.key.environment).into();
    answer.kind = kind_to_proto(entry.key.kind).into();
    answer.metadata = entry.key.metadata.clone();
    answer.secret = match identity.secret {
        SecretSlot::Current => pb::SecretSlot::Current,
        SecretSlot::Previous => pb::SecretSlot::Previous,
    }
    .into();
    answer
}

/// Puts the outcome on the call's span (when traces or span logs are on):
/// the reason and the key id, never the token.
fn record_on_span(decision: &Decision) {
    let span = tracing::Span::current();
    if span.is_disabled() {
        return;
    }
    span.record("reason", decision.reason.as_str());
    if let Some(identity) = &decision.key {
        span.record("key_id", identity.entry.key_id_text.as_str());
    }
    span.record("rpc.grpc.status_code", tonic::Code::Ok as i32);
}

#[tonic::async_trait]
impl AuthorizerRpc for AuthorizerHandler {
    async fn authorize(
        &self,
        request: Request<pb::AuthorizeRequest>,
    ) -> Result<Response<pb::Decision>, Status> {
        let started = std::time::Instant::now();
        let message = request.get_ref();
        let parsed = parse_request(message).map_err(|error| {
            record_authorize_error(tonic::Code::InvalidArgument, started);
            Status::invalid_argument(error.to_string())
        })?;
        let decision = match self.authorizer.decide(&parsed, Utc::now()).await {
            Ok(decision) => decision,
            Err(error) => {
                let status = status_from_error(ServiceError::from(error));
                record_authorize_error(status.code(), started);
                return Err(status);
            }
        };
        decision_metrics().record_decision(decision.reason, started);
        record_on_span(&decision);
        Ok(Response::new(decision_to_proto(decision)))
    }
}

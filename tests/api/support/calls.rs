//! Calling the server: bearer credentials, Authorize, and the key RPCs that
//! take only a key id, for tables of calls.

use std::fmt::Debug;

use keygate::grpc::pb;
use tonic::{Request, Response, Status};

use super::app::TestApp;

/// Wraps a message with `authorization: Bearer <token>`.
pub fn authed<T>(token: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

impl TestApp {
    /// Asks Authorize about `method path` with `token`.
    pub async fn authorize(
        &self,
        token: &str,
        method: &str,
        path: &str,
        client_ip: &str,
    ) -> pb::Decision {
        let request = pb::AuthorizeRequest {
            token: token.to_owned(),
            method: method.to_owned(),
            path: path.to_owned(),
            client_ip: client_ip.to_owned(),
            permission: String::new(),
        };
        self.authorizer_client
            .clone()
            .authorize(request)
            .await
            .unwrap()
            .into_inner()
    }

    /// Asks Authorize about a permission named directly.
    pub async fn authorize_permission(&self, token: &str, permission: &str) -> pb::Decision {
        let request = pb::AuthorizeRequest {
            token: token.to_owned(),
            permission: permission.to_owned(),
            ..Default::default()
        };
        self.authorizer_client
            .clone()
            .authorize(request)
            .await
            .unwrap()
            .into_inner()
    }
}

/// A KeyService RPC whose request names one key and leaves every other field
/// at its default (no grace period, no waiting asked for).
// Named as the RPCs are, so that a failing case names its call.
#[expect(
    clippy::enum_variant_names,
    reason = "each case prints as the RPC it calls"
)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRpc {
    GetKey,
    DisableKey,
    EnableKey,
    RevokeKey,
    DeleteKey,
    RotateKey,
}

impl KeyRpc {
    /// Calls this RPC on `key_id` as `token`: the response, printed, or the
    /// refusal.
    pub async fn call(self, app: &TestApp, token: &str, key_id: &str) -> Result<String, Status> {
        let mut client = app.client.clone();
        let key_id = key_id.to_owned();
        match self {
            KeyRpc::GetKey => {
                let request = pb::GetKeyRequest { key_id };
                printed(client.get_key(authed(token, request)).await)
            }
            KeyRpc::DisableKey => {
                let request = pb::DisableKeyRequest {
                    key_id,
                    ..Default::default()
                };
                printed(client.disable_key(authed(token, request)).await)
            }
            KeyRpc::EnableKey => {
                let request = pb::EnableKeyRequest {
                    key_id,
                    ..Default::default()
                };
                printed(client.enable_key(authed(token, request)).await)
            }
            KeyRpc::RevokeKey => {
                let request = pb::RevokeKeyRequest {
                    key_id,
                    ..Default::default()
                };
                printed(client.revoke_key(authed(token, request)).await)
            }
            KeyRpc::DeleteKey => {
                let request = pb::DeleteKeyRequest {
                    key_id,
                    ..Default::default()
                };
                printed(client.delete_key(authed(token, request)).await)
            }
            KeyRpc::RotateKey => {
                let request = pb::RotateKeyRequest {
                    key_id,
                    ..Default::default()
                };
                printed(client.rotate_key(authed(token, request)).await)
            }
        }
    }
}

fn printed<T: Debug>(answer: Result<Response<T>, Status>) -> Result<String, Status> {
    answer.map(|response| format!("{:?}", response.into_inner()))
}

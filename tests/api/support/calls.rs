//! Calling the server: bearer credentials and Authorize.

use keygate::grpc::pb;
use tonic::Request;

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

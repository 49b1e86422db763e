//! Shortcuts that create organizations and keys through the API, as the
//! bootstrapped admin unless a token is given.

use keygate::grpc::pb::{self, CreateKeyRequest, Environment};
use tonic::Status;

use super::app::TestApp;
use super::calls::authed;

/// A request for a key named "integration key" in `organization_id` holding
/// `scopes`; every other field at its default.
pub fn key_request(
    organization_id: &str,
    environment: Environment,
    scopes: &[&str],
) -> CreateKeyRequest {
    CreateKeyRequest {
        organization_id: organization_id.to_owned(),
        environment: environment.into(),
        name: "integration key".to_owned(),
        scopes: scopes.iter().map(|scope| scope.to_string()).collect(),
        ..Default::default()
    }
}

impl TestApp {
    /// Creates an organization; returns its id.
    pub async fn create_organization(&self, name: &str) -> String {
        let request = pb::CreateOrganizationRequest {
            display_name: name.to_owned(),
        };
        let response = self
            .client
            .clone()
            .create_organization(authed(&self.admin_token, request))
            .await
            .unwrap();
        response.into_inner().id
    }

    /// Creates a key with the admin token.
    pub async fn create_key(&self, request: CreateKeyRequest) -> (pb::Key, String) {
        self.create_key_as(&self.admin_token, request)
            .await
            .unwrap()
    }

    /// Creates a key with `token`; the key and its token, or the refusal.
    pub async fn create_key_as(
        &self,
        token: &str,
        request: CreateKeyRequest,
    ) -> Result<(pb::Key, String), Status> {
        let response = self
            .client
            .clone()
            .create_key(authed(token, request))
            .await?
            .into_inner();
        Ok((response.key.unwrap(), response.token))
    }

    /// An organization key in `organization_id` holding `scopes`.
    pub async fn org_key(
        &self,
        organization_id: &str,
        environment: Environment,
        scopes: &[&str],
    ) -> (pb::Key, String) {
        self.create_key(key_request(organization_id, environment, scopes))
            .await
    }

    /// `count` live keys holding `customers:read`, in a new organization.
    pub async fn customer_readers(&self, count: usize) -> Vec<(pb::Key, String)> {
        let org = self.create_organization("Acme").await;
        let mut keys = Vec::with_capacity(count);
        for _ in 0..count {
            keys.push(
                self.org_key(&org, Environment::Live, &["customers:read"])
                    .await,
            );
        }
        keys
    }
}

//! `keygate.v1.KeyService`: identifies the caller, converts the request to
//! domain types, calls the [`KeyManager`], converts the answer back.

use std::collections::BTreeMap;

use chrono::Utc;
use secrecy::ExposeSecret;
use tonic::{Request, Response, Status};

use super::convert::{
    event_to_proto, key_to_proto, organization_to_proto, parse_duration, parse_environment,
    parse_key_id, parse_kind, parse_optional_key_id, parse_organization_id, parse_timestamp,
};
use super::pb::key_service_server::KeyService;
use super::pb::{self};
use super::{bearer_token, status_from_error};
use crate::domain::key::{parse_allowed_cidrs, Description, DisplayName, FieldError, Key};
use crate::domain::quoted::Quoted;
use crate::lifecycle::access::Caller;
use crate::lifecycle::{
    KeyManager, KeyUpdate, KeyWithToken, NewKeyRequest, Propagation, RequestedScopes, Rotation,
};

const UPDATABLE_FIELDS: &str = "name, description, scopes, allowed_cidrs, expire_time, metadata";

pub struct KeyServiceHandler {
    manager: KeyManager,
}

impl KeyServiceHandler {
    pub fn new(manager: KeyManager) -> KeyServiceHandler {
        KeyServiceHandler { manager }
    }

    async fn caller<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        let bearer = bearer_token(request.metadata()).map_err(status_from_error)?;
        let peer = request.remote_addr().map(|address| address.ip());
        self.manager
            .authenticate(bearer, peer)
            .await
            .map_err(status_from_error)
    }

    fn key(&self, key: &Key) -> pb::Key {
        key_to_proto(key, self.manager.prefix(), Utc::now())
    }

    fn key_with_token(&self, created: &KeyWithToken) -> (Option<pb::Key>, String) {
        (
            Some(self.key(&created.key)),
            created.token.expose_secret().to_owned(),
        )
    }
}

fn propagation_to_proto(propagation: &Propagation) -> pb::Propagation {
    pb::Propagation {
        waited: propagation.waited,
        confirmed_replicas: i32::try_from(propagation.confirmed()).unwrap_or(i32::MAX),
        unconfirmed_replicas: propagation.unconfirmed.clone(),
        lease_expired_replicas: propagation.lease_expired.clone(),
        complete: propagation.complete(),
    }
}

/// A refused field, through the one error-to-status mapping.
fn invalid(error: FieldError) -> Status {
    status_from_error(error.into())
}

fn parse_create(request: pb::CreateKeyRequest) -> Result<NewKeyRequest, FieldError> {
    let scopes = match (request.scopes.is_empty(), request.preset.is_empty()) {
        (false, false) => {
            return Err(FieldError::new(
                "preset",
                "give either scopes or a preset, not both",
            ))
        }
        (true, false) => RequestedScopes::Preset(request.preset),
        _ => RequestedScopes::Listed(request.scopes),
    };
    Ok(NewKeyRequest {
        organization_id: parse_organization_id("organization_id", &request.organization_id)?,
        kind: parse_kind(request.kind)?,
        environment: parse_environment(request.environment)?,
        name: DisplayName::parse("name", &request.name)?,
        description: Description::parse(&request.description)?,
        scopes,
        allowed_cidrs: parse_allowed_cidrs(&request.allowed_cidrs)?,
        expires_at: request
            .expire_time
            .as_ref()
            .map(|time| parse_timestamp("expire_time", time))
            .transpose()?,
        metadata: request.metadata.into_iter().collect(),
        lock_scopes: request.lock_scopes,
    })
}

fn parse_update(request: pb::UpdateKeyRequest) -> Result<(pb::Key, KeyUpdate), FieldError> {
    let Some(key) = request.key else {
        return Err(FieldError::new("key", "is required"));
    };
    let paths = request
        .update_mask
        .map(|mask| mask.paths)
        .unwrap_or_default();
    if paths.is_empty() {
        return Err(FieldError::new(
            "update_mask",
            format!("name at least one of: {UPDATABLE_FIELDS}"),
        ));
    }
    let mut update = KeyUpdate::default();
    for path in &paths {
        match path.as_str() {
            "name" => update.name = Some(DisplayName::parse("key.name", &key.name)?),
            "description" => update.description = Some(Description::parse(&key.description)?),
            "scopes" => update.scopes = Some(key.scopes.clone()),
            "allowed_cidrs" => {
                update.allowed_cidrs = Some(parse_allowed_cidrs(&key.allowed_cidrs)?)
            }
            "expire_time" => {
                let expiry = key
                    .expire_time
                    .as_ref()
                    .map(|time| parse_timestamp("key.expire_time", time));
                update.expires_at = Some(expiry.transpose()?);
            }
            "metadata" => {
                update.metadata = Some(key.metadata.clone().into_iter().collect::<BTreeMap<_, _>>())
            }
            other => {
                return Err(FieldError::new(
                    "update_mask",
                    format!(
                        "{} cannot be updated; updatable: {UPDATABLE_FIELDS}",
                        Quoted(other)
                    ),
                ))
            }
        }
    }
    Ok((key, update))
}

#[tonic::async_trait]
impl KeyService for KeyServiceHandler {
    async fn create_key(
        &self,
        request: Request<pb::CreateKeyRequest>,
    ) -> Result<Response<pb::CreateKeyResponse>, Status> {
        let caller = self.caller(&request).await?;
        let new_key = parse_create(request.into_inner()).map_err(invalid)?;
        let created = self
            .manager
            .create_key(&caller, new_key)
            .await
            .map_err(status_from_error)?;
        let (key, token) = self.key_with_token(&created);
        Ok(Response::new(pb::CreateKeyResponse { key, token }))
    }

    async fn get_key(
        &self,
        request: Request<pb::GetKeyRequest>,
    ) -> Result<Response<pb::Key>, Status> {
        let caller = self.caller(&request).await?;
        let key_id = parse_key_id("key_id", &request.get_ref().key_id).map_err(invalid)?;
        let key = self
            .manager
            .get_key(&caller, &key_id)
            .await
            .map_err(status_from_error)?;
        Ok(Response::new(self.key(&key)))
    }

    async fn list_keys(
        &self,
        request: Request<pb::ListKeysRequest>,
    ) -> Result<Response<pb::ListKeysResponse>, Status> {
        let caller = self.caller(&request).await?;
        let request = request.into_inner();
        let organization_id =
            parse_organization_id("organization_id", &request.organization_id).map_err(invalid)?;
        let page = self
            .manager
            .list_keys(
                &caller,
                organization_id,
                request.page_size,
                &request.page_token,
            )
            .await
            .map_err(status_from_error)?;
        Ok(Response::new(pb::ListKeysResponse {
            keys: page.items.iter().map(|key| self.key(key)).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn update_key(
        &self,
        request: Request<pb::UpdateKeyRequest>,
    ) -> Result<Response<pb::UpdateKeyResponse>, Status> {
        let caller = self.caller(&request).await?;
        let request = request.into_inner();
        let wait = request.wait_for_propagation;
        let (key, update) = parse_update(request).map_err(invalid)?;
        let key_id = parse_key_id("key.id", &key.id).map_err(invalid)?;
        let (updated, propagation) = self
            .manager
            .update_key(&caller, &key_id, update, wait)
            .await
            .map_err(status_from_error)?;
        Ok(Response::new(pb::UpdateKeyResponse {
            key: Some(self.key(&updated)),
            propagation: Some(propagation_to_proto(&propagation)),
        }))
    }

    async fn rotate_key(
        &self,
        request: Request<pb::RotateKeyRequest>,
    ) -> Result<Response<pb::RotateKeyResponse>, Status> {
        let caller = self.caller(&request).await?;
        let request = request.into_inner();
        let key_id = parse_key_id("key_id", &request.key_id).map_err(invalid)?;
        let grace_period = match &request.grace_period {
            Some(duration) => parse_duration("grace_period", duration).map_err(invalid)?,
            None => chrono::Duration::zero(),
        };
        let rotation = Rotation::new(grace_period).map_err(invalid)?;
        let wait = request.wait_for_propagation;
        let (rotated, propagation) = self
            .manager
            .rotate_key(&caller, &key_id, rotation, wait)
            .await
            .map_err(status_from_error)?;
        let (key, token) = self.key_with_token(&rotated);
        Ok(Response::new(pb::RotateKeyResponse {
            key,
            token,
            propagation: Some(propagation_to_proto(&propagation)),
        }))
    }

    async fn disable_key(
        &self,
        request: Request<pb::DisableKeyRequest>,
    ) -> Result<Response<pb::DisableKeyResponse>, Status> {
        let caller = self.caller(&request).await?;
        let key_id = parse_key_id("key_id", &request.get_ref().key_id).map_err(invalid)?;
        let wait = request.get_ref().wait_for_propagation;
        let (key, propagation) = self
            .manager
            .set_key_disabled(&caller, &key_id, true, wait)
            .await
            .map_err(status_from_error)?;
        Ok(Response::new(pb::DisableKeyResponse {
            key: Some(self.key(&key)),
            propagation: Some(propagation_to_proto(&propagation)),
        }))
    }

    async fn enable_key(
        &self,
        request: Request<pb::EnableKeyRequest>,
    ) -> Result<Response<pb::EnableKeyResponse>, Status> {
        let caller = self.caller(&request).await?;
        let key_id = parse_key_id("key_id", &request.get_ref().key_id).map_err(invalid)?;
        let wait = request.get_ref().wait_for_propagation;
        let (key, propagation) = self
            .manager
            .set_key_disabled(&caller, &key_id, false, wait)
            .await
            .map_err(status_from_error)?;
        Ok(Response::new(pb::EnableKeyResponse {
            key: Some(self.key(&key)),
            propagation: Some(propagation_to_proto(&propagation)),
        }))
    }

    async fn revoke_key(
        &self,
        request: Request<pb::RevokeKeyRequest>,
    ) -> Result<Response<pb::RevokeKeyResponse>, Status> {
        let caller = self.caller(&request).await?;
        let key_id = parse_key_id("key_id", &request.get_ref().key_id).map_err(invalid)?;
        let wait = request.get_ref().wait_for_propagation;
        let (key, propagation) = self
            .manager
            .revoke_key(&caller, &key_id, wait)
            .await
            .map_err(status_from_error)?;
        Ok(Response::new(pb::RevokeKeyResponse {
            key: Some(self.key(&key)),
            propagation: Some(propagation_to_proto(&propagation)),
        }))
    }

    async fn delete_key(
        &self,
        request: Request<pb::DeleteKeyRequest>,
    ) -> Result<Response<pb::DeleteKeyResponse>, Status> {
        let caller = self.caller(&request).await?;
        let key_id = parse_key_id("key_id", &request.get_ref().key_id).map_err(invalid)?;
        let wait = request.get_ref().wait_for_propagation;
        let propagation = self
            .manager
            .delete_key(&caller, &key_id, wait)
            .await
            .map_err(status_from_error)?;
        Ok(Response::new(pb::DeleteKeyResponse {
            propagation: Some(propagation_to_proto(&propagation)),
        }))
    }

    async fn list_key_events(
        &self,
        request: Request<pb::ListKeyEventsRequest>,
    ) -> Result<Response<pb::ListKeyEventsResponse>, Status> {
        let caller = self.caller(&request).await?;
        let request = request.into_inner();
        let key_id = parse_optional_key_id("key_id", &request.key_id).map_err(invalid)?;
        let page = self
            .manager
            .list_events(&caller, key_id, request.page_size, &request.page_token)
            .await
            .map_err(status_from_error)?;
        Ok(Response::new(pb::ListKeyEventsResponse {
            events: page.items.iter().map(event_to_proto).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn create_organization(
        &self,
        request: Request<pb::CreateOrganizationRequest>,
    ) -> Result<Response<pb::Organization>, Status> {
        let caller = self.caller(&request).await?;
        let display_name =
            DisplayName::parse("display_name", &request.get_ref().display_name).map_err(invalid)?;
        let organization = self
            .manager
            .create_organization(&caller, display_name)
            .await
            .map_err(status_from_error)?;
        Ok(Response::new(organization_to_proto(&organization)))
    }

    async fn get_organization(
        &self,
        request: Request<pb::GetOrganizationRequest>,
    ) -> Result<Response<pb::Organization>, Status> {
        let caller = self.caller(&request).await?;
        let organization_id =
            parse_organization_id("organization_id", &request.get_ref().organization_id)
                .map_err(invalid)?
                .ok_or_else(|| invalid(FieldError::new("organization_id", "is required")))?;
        let organization = self
            .manager
            .get_organization(&caller, organization_id)
            .await
            .map_err(status_from_error)?;
        Ok(Response::new(organization_to_proto(&organization)))
    }

    async fn list_organizations(
        &self,
        request: Request<pb::ListOrganizationsRequest>,
    ) -> Result<Response<pb::ListOrganizationsResponse>, Status> {
        let caller = self.caller(&request).await?;
        let request = request.into_inner();
        let page = self
            .manager
            .list_organizations(&caller, request.page_size, &request.page_token)
            .await
            .map_err(status_from_error)?;
        Ok(Response::new(pb::ListOrganizationsResponse {
            organizations: page.items.iter().map(organization_to_proto).collect(),
            next_page_token: page.next_page_token,
        }))
    }
}

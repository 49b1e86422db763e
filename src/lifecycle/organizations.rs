//! Organizations (system keys only) and the bootstrap of the first system key.

use serde_json::json;
use uuid::Uuid;

use super::{creation_changes, KeyManager, KeyWithToken, Page};
use crate::domain::key::{DisplayName, KeyKind};
use crate::domain::organization::Organization;
use crate::domain::paging::{into_page, parse_page_size, parse_page_token};
use crate::domain::permission::Scope;
use crate::domain::token::{Environment, KeyId, Token};
use crate::lifecycle::access::Caller;
use crate::lifecycle::error::ServiceError;
use crate::store::keys::{insert_key, system_key_exists, KeyFields, NewKey};
use crate::store::organizations::{find_organization, insert_organization, list_organizations};
use crate::store::StoreError;

/// Why bootstrap did not create a key.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("a system key already exists; bootstrap only runs on an empty database")]
    SystemKeyExists,
    #[error(transparent)]
    Service(#[from] ServiceError),
}

impl KeyManager {
    pub async fn create_organization(
        &self,
        caller: &Caller,
        display_name: DisplayName,
    ) -> Result<Organization, ServiceError> {
        caller.require_system("organizations:create")?;
        let organization = insert_organization(&self.pool, display_name.as_str()).await?;
        tracing::info!(organization_id = %organization.id, actor_key_id = %caller.key().id, "organization created");
        Ok(organization)
    }

    pub async fn get_organization(
        &self,
        caller: &Caller,
        id: Uuid,
    ) -> Result<Organization, ServiceError> {
        caller.require_system("organizations:read")?;
        find_organization(&self.pool, id)
            .await?
            .ok_or(ServiceError::NotFound("organization"))
    }

    pub async fn list_organizations(
        &self,
        caller: &Caller,
        page_size: i32,
        page_token: &str,
    ) -> Result<Page<Organization>, ServiceError> {
        caller.require_system("organizations:read")?;
        let page_size = parse_page_size(page_size)?;
        let before = parse_page_token("organizations", page_token)?;
        let rows = list_organizations(&self.pool, before, page_size + 1).await?;
        let (items, next_page_token) = into_page("organizations", rows, page_size);
        Ok(Page {
            items,
            next_page_token,
        })
    }

    /// Creates the first system key, with full access (`*`), on a database that has
    /// none. Concurrent bootstraps serialize on an advisory lock; only one succeeds.
    pub async fn bootstrap(&self, name: DisplayName) -> Result<KeyWithToken, BootstrapError> {
        let mut transaction = self
            .pool
            .begin()
            .await
            .map_err(StoreError::from)
            .map_err(ServiceError::from)?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('keygate.bootstrap'))")
            .execute(&mut *transaction)
            .await
            .map_err(StoreError::from)
            .map_err(ServiceError::from)?;
        if system_key_exists(&mut *transaction)
            .await
            .map_err(ServiceError::from)?
        {
            return Err(BootstrapError::SystemKeyExists);
        }
        let key_id = KeyId::generate();
        let issued = Token::issue(&self.prefix, Environment::Live, &key_id);
        let secret_hash = self
            .hasher
            .hash(&issued.secret)
            .await
            .map_err(ServiceError::from)?;
        let scopes = [Scope::Everything];
        let metadata = Default::default();
        let new_key = NewKey {
            id: key_id,
            organization_id: None,
            kind: KeyKind::System,
            environment: Environment::Live,
            fields: KeyFields {
                name: name.as_str(),
                description: "created by keygate bootstrap",
                scopes: &scopes,
                allowed_cidrs: &[],
                expires_at: None,
                metadata: &metadata,
            },
            lock_scopes: false,
            secret_hash: &secret_hash,
            created_by: None,
        };
        let key = insert_key(&mut *transaction, &new_key)
            .await
            .map_err(ServiceError::from)?;
        let mut changes = creation_changes(&key);
        changes["bootstrap"] = json!(true);
        self.record_creation(&mut transaction, &key, None, changes)
            .await
            .map_err(ServiceError::from)?;
        transaction
            .commit()
            .await
            .map_err(StoreError::from)
            .map_err(ServiceError::from)?;
        tracing::info!(key_id = %key.id, "bootstrap system key created");
        Ok(KeyWithToken {
            key,
            token: issued.token,
        })
    }
}

//! The key lifecycle: create, read, change and remove keys on behalf of an
//! identified caller. Input arrives here already parsed into domain types, except
//! scopes, which need the policy's catalog; every write and its audit event share
//! one transaction.

pub mod access;
pub mod error;
mod mutations;
mod organizations;

/// What a mutation's wait for the replicas found (returned with the change).
pub use crate::replication::propagation::Propagation;
pub use mutations::{KeyUpdate, Rotation};
pub use organizations::BootstrapError;

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use ipnet::IpNet;
use secrecy::SecretString;
use serde_json::json;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::authorizer::decision::Reason;
use crate::authorizer::{Authorizer, Verified};
use crate::domain::events::{EventAction, KeyEvent};
use crate::domain::hashing::SecretHasher;
use crate::domain::key::{
    check_expiry, check_metadata, Description, DisplayName, FieldError, Key, KeyKind,
};
use crate::domain::paging::{into_page, parse_page_size, parse_page_token};
use crate::domain::permission::Scope;
use crate::domain::token::{Environment, KeyId, Token, TokenPrefix};
use crate::lifecycle::access::Caller;
use crate::lifecycle::error::ServiceError;
use crate::replication::feed::ProgressFeed;
use crate::replication::notification::{notify_key_event, KeyEventNotice};
use crate::replication::propagation::PropagationWait;
use crate::store::events::{insert_event, list_events, EventFilter, NewEvent};
use crate::store::keys::{
    find_key_by_id, insert_key, list_keys, lock_caller_state, CallerState, KeyFields, KeyFilter,
    NewKey,
};
use crate::store::StoreError;

/// Scopes as a request names them: listed, or a preset from the catalog.
pub enum RequestedScopes {
    Listed(Vec<String>),
    Preset(String),
}

/// A parsed CreateKey request.
pub struct NewKeyRequest {
    pub organization_id: Option<Uuid>,
    pub kind: KeyKind,
    pub environment: Environment,
    pub name: DisplayName,
    pub description: Description,
    pub scopes: RequestedScopes,
    pub allowed_cidrs: Vec<IpNet>,
    pub expires_at: Option<DateTime<Utc>>,
    pub metadata: BTreeMap<String, String>,
    pub lock_scopes: bool,
}

/// A key together with its token, from the two calls that reveal one.
pub struct KeyWithToken {
    pub key: Key,
    pub token: SecretString,
}

/// A page of results and the token for the next one (empty on the last page).
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_page_token: String,
}

#[derive(Clone)]
pub struct KeyManager {
    pool: PgPool,
    hasher: SecretHasher,
    prefix: TokenPrefix,
    authorizer: Authorizer,
    propagation: PropagationWait,
}

impl KeyManager {
    pub fn new(
        pool: PgPool,
        hasher: SecretHasher,
        prefix: TokenPrefix,
        authorizer: Authorizer,
    ) -> KeyManager {
        let propagation = PropagationWait::new(pool.clone(), Arc::new(ProgressFeed::default()));
        KeyManager {
            pool,
            hasher,
            prefix,
            authorizer,
            propagation,
        }
    }

    /// Names `replica` as the origin of the events this manager writes.
    pub fn with_origin(mut self, replica: uuid::Uuid) -> KeyManager {
        self.propagation = self.propagation.with_origin(replica);
        self
    }

    /// The audit event for a change to `key`.
    fn new_event<'a>(
        &self,
        key: &'a Key,
        actor: Option<&'a Caller>,
        action: EventAction,
        changes: serde_json::Value,
    ) -> NewEvent<'a> {
        NewEvent {
            key_id: &key.id,
            organization_id: key.organization_id,
            environment: key.environment,
            actor_key_id: actor.map(|caller| &caller.key().id),
            action,
            changes,
        }
    }

    /// Tells every replica of the change that event `sequence` recorded
    /// (`key_id` is now at `version`), inside the change's transaction: the
    /// notification goes out when, and only if, it commits. `awaited`: the
    /// caller will wait for every replica to apply it.
    async fn announce(
        &self,
        connection: &mut PgConnection,
        key_id: &KeyId,
        sequence: i64,
        version: i64,
        action: EventAction,
        awaited: bool,
    ) -> Result<(), StoreError> {
        let notice = KeyEventNotice {
            sequence,
            key_id: *key_id,
            version,
            written_at_millis: Some(Utc::now().timestamp_millis()),
            waiter: self.propagation.waiter(awaited),
            action: Some(action),
        };
        notify_key_event(connection, &notice).await
    }

    /// Writes the audit event of a key's creation, inside its transaction;
    /// nobody waits for replicas to apply it.
    async fn record_creation(
        &self,
        transaction: &mut sqlx::Transaction<'_, sqlx::Postgres>,
        key: &Key,
        actor: Option<&Caller>,
        changes: serde_json::Value,
    ) -> Result<(), StoreError> {
        let event = self.new_event(key, actor, EventAction::Created, changes);
        let sequence = insert_event(transaction, event).await?;
        let action = EventAction::Created;
        self.announce(transaction, &key.id, sequence, key.version, action, false)
            .await
    }

    /// How long mutations wait for replicas, and the replicas' lease.
    pub fn with_propagation(
        mut self,
        timeout: std::time::Duration,
        lease: std::time::Duration,
    ) -> KeyManager {
        self.propagation = self.propagation.with_timing(timeout, lease);
        self
    }

    pub fn authorizer(&self) -> &Authorizer {
        &self.authorizer
    }

    /// Where this manager's waits hear replicas' progress: the replica's
    /// listener publishes what it hears here.
    pub fn progress_feed(&self) -> &Arc<ProgressFeed> {
        self.propagation.feed()
    }

    pub fn prefix(&self) -> &TokenPrefix {
        &self.prefix
    }

    /// Identifies the caller from its bearer token, through the Authorize path.
    /// `peer` is the caller's network address, checked against the calling
    /// key's allowlist like Authorize checks a client IP.
    pub async fn authenticate(
        &self,
        bearer: Option<&str>,
        peer: Option<std::net::IpAddr>,
    ) -> Result<Caller, ServiceError> {
        let presented = bearer.unwrap_or_default();
        let now = Utc::now();
        let verified = match self.authorizer.verify(presented, now).await? {
            Verified::Key(identity) => identity,
            Verified::Denied(Reason::Unverifiable) => return Err(ServiceError::Unverifiable),
            Verified::Denied(reason) => return Err(ServiceError::Unauthenticated(reason.as_str())),
        };
        if let Some(reason) = verified.state_denial(now) {
            return Err(ServiceError::Unauthenticated(reason.as_str()));
        }
        if !verified.entry.key.allows_address(peer) {
            return Err(ServiceError::PermissionDenied(
                "the calling key may not be used from this address".to_owned(),
            ));
        }
        Ok(Caller::new(verified))
    }

    /// Confirms, inside a mutation's transaction, that the calling key is still
    /// active and unchanged since it was verified (share-locking its row), so a
    /// key revoked while its call was in flight cannot complete the call.
    async fn confirm_caller(
        &self,
        transaction: &mut sqlx::Transaction<'static, sqlx::Postgres>,
        caller: &Caller,
    ) -> Result<(), ServiceError> {
        let state = lock_caller_state(&mut **transaction, &caller.key().id).await?;
        self.check_caller_state(caller, state)
    }

    /// Checks the calling key's state as read (and share-locked) inside the
    /// mutation's transaction.
    fn check_caller_state(
        &self,
        caller: &Caller,
        state: Option<CallerState>,
    ) -> Result<(), ServiceError> {
        let id = caller.key().id;
        let Some(state) = state else {
            self.authorizer.evict(&id);
            return Err(ServiceError::Unauthenticated("unknown_key"));
        };
        let expired = state.expires_at.is_some_and(|expiry| expiry <= Utc::now());
        if state.revoked || state.disabled || expired {
            self.authorizer.evict(&id);
            return Err(ServiceError::Unauthenticated("caller_no_longer_active"));
        }
        if state.version != caller.key().version {
            // Changed meanwhile (its scopes may be narrower now): reload and
            // retry. The tombstone also stops requests already past the cache
            // (waiting for argon2) from deciding on the old entry; the eviction
            // covers a cached version the database no longer has.
            self.authorizer.follow_change(&id, state.version, None);
            self.authorizer.evict(&id);
            return Err(ServiceError::Unverifiable);
        }
        Ok(())
    }

    fn resolve_scopes(&self, requested: RequestedScopes) -> Result<Vec<Scope>, FieldError> {
        let policy = self.authorizer.policy();
        let catalog = &policy.catalog;
        match requested {
            RequestedScopes::Preset(name) => catalog
                .preset(&name)
                .map(<[Scope]>::to_vec)
                .map_err(|message| FieldError::new("preset", message)),
            RequestedScopes::Listed(texts) if texts.is_empty() => Err(FieldError::new(
                "scopes",
                "give at least one scope, or a preset",
            )),
            RequestedScopes::Listed(texts) => catalog
                .parse_scopes(&texts)
                .map_err(|message| FieldError::new("scopes", message)),
        }
    }

    /// Loads a key the caller may see; any other key is NOT_FOUND.
    async fn visible_key(&self, caller: &Caller, key_id: &KeyId) -> Result<Key, ServiceError> {
        match find_key_by_id(&self.pool, key_id).await? {
            Some(stored) if caller.can_see(&stored.key) => Ok(stored.key),
            _ => Err(ServiceError::NotFound("key")),
        }
    }

    pub async fn create_key(
        &self,
        caller: &Caller,
        request: NewKeyRequest,
    ) -> Result<KeyWithToken, ServiceError> {
        caller.require("api_keys:create")?;
        let now = Utc::now();
        check_expiry(request.expires_at, now)?;
        check_metadata(&request.metadata)?;
        let scopes = self.resolve_scopes(request.scopes)?;
        let organization_id = caller.organization_for_new_key(
            request.kind,
            request.organization_id,
            request.environment,
        )?;
        caller.check_grant(&scopes)?;
        caller.check_expiry_within_own(request.expires_at)?;
        caller.check_networks_within_own(&request.allowed_cidrs)?;

        let key_id = KeyId::generate();
        let issued = Token::issue(&self.prefix, request.environment, &key_id);
        let secret_hash = self.hasher.hash(&issued.secret).await?;
        let new_key = NewKey {
            id: key_id,
            organization_id,
            kind: request.kind,
            environment: request.environment,
            fields: KeyFields {
                name: request.name.as_str(),
                description: request.description.as_str(),
                scopes: &scopes,
                allowed_cidrs: &request.allowed_cidrs,
                expires_at: request.expires_at,
                metadata: &request.metadata,
            },
            lock_scopes: request.lock_scopes,
            secret_hash: &secret_hash,
            created_by: Some(caller.key().id),
        };
        let mut transaction = self.pool.begin().await.map_err(StoreError::from)?;
        self.confirm_caller(&mut transaction, caller).await?;
        let key = match insert_key(&mut *transaction, &new_key).await {
            Ok(key) => key,
            Err(StoreError::MissingReference(_)) => {
                return Err(ServiceError::NotFound("organization"))
            }
            Err(other) => return Err(other.into()),
        };
        let changes = creation_changes(&key);
        self.record_creation(&mut transaction, &key, Some(caller), changes)
            .await?;
        transaction.commit().await.map_err(StoreError::from)?;
        self.authorizer.evict(&key.id);
        tracing::info!(key_id = %key.id, actor_key_id = %caller.key().id, "key created");
        Ok(KeyWithToken {
            key,
            token: issued.token,
        })
    }

    pub async fn get_key(&self, caller: &Caller, key_id: &KeyId) -> Result<Key, ServiceError> {
        caller.require("api_keys:read")?;
        self.visible_key(caller, key_id).await
    }

    pub async fn list_keys(
        &self,
        caller: &Caller,
        organization_id: Option<Uuid>,
        page_size: i32,
        page_token: &str,
    ) -> Result<Page<Key>, ServiceError> {
        caller.require("api_keys:read")?;
        let page_size = parse_page_size(page_size)?;
        let before = parse_page_token("keys", page_token)?;
        let filter = KeyFilter {
            organization_id: caller.organization_filter(organization_id)?,
            organization_keys_only: !caller.is_system(),
            environment: caller.environment_filter(),
        };
        let rows = list_keys(&self.pool, &filter, before, page_size + 1).await?;
        let (items, next_page_token) = into_page("keys", rows, page_size);
        Ok(Page {
            items,
            next_page_token,
        })
    }

    pub async fn list_events(
        &self,
        caller: &Caller,
        key_id: Option<KeyId>,
        page_size: i32,
        page_token: &str,
    ) -> Result<Page<KeyEvent>, ServiceError> {
        caller.require("api_keys:read")?;
        let page_size = parse_page_size(page_size)?;
        let before = parse_page_token("events", page_token)?;
        let filter = EventFilter {
            key_id,
            organization_id: caller.organization_filter(None)?,
            organization_events_only: !caller.is_system(),
            environment: caller.environment_filter(),
        };
        let events = list_events(&self.pool, &filter, before, page_size + 1).await?;
        let rows = events
            .into_iter()
            .map(|event| (event.sequence, event))
            .collect();
        let (items, next_page_token) = into_page("events", rows, page_size);
        Ok(Page {
            items,
            next_page_token,
        })
    }
}

fn creation_changes(key: &Key) -> serde_json::Value {
    let scopes: Vec<String> = key.scopes.iter().map(Scope::to_string).collect();
    let cidrs: Vec<String> = key.allowed_cidrs.iter().map(IpNet::to_string).collect();
    json!({
        "kind": key.kind.as_str(),
        "environment": key.environment.as_str(),
        "name": key.name,
        "description": key.description,
        "scopes": scopes,
        "allowed_cidrs": cidrs,
        "expire_time": key.expires_at,
        "metadata": key.metadata,
        "lock_scopes": key.lock_scopes,
    })
}

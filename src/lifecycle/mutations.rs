//! Changes to existing keys. Each locks the key's row and reads the caller's
//! (one statement), checks both, then writes the change with a version bump
//! and records its event (one statement), all in one transaction.
//!
//! Each takes `asked_wait`, the caller's choice of waiting for every live
//! replica to apply the change: `None` waits exactly when the change takes
//! access away (see [`crate::domain::key_change`]), decided on the row as
//! locked.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use ipnet::IpNet;
use serde_json::{json, Map, Value};
use sqlx::pool::PoolConnection;
use sqlx::{Postgres, Transaction};

use super::{KeyManager, KeyWithToken, Propagation, RequestedScopes};
use crate::domain::events::{EventAction, StateChange};
use crate::domain::key::{
    check_expiry, check_metadata, Description, DisplayName, FieldError, Key, KeyState,
};
use crate::domain::key_change::{takes_access_away, KeyChange};
use crate::domain::permission::Scope;
use crate::domain::token::{KeyId, Token};
use crate::lifecycle::access::Caller;
use crate::lifecycle::error::ServiceError;
use crate::replication::notification::DELETED_VERSION;
use crate::store::changes::{delete_key, rotate_secret, set_disabled, set_revoked, update_fields};
use crate::store::events::latest_event_sequence;
use crate::store::keys::{lock_key_for_change, KeyFields};
use crate::store::StoreError;

/// The longest grace period a rotation may grant the previous secret.
pub const MAX_GRACE_PERIOD: Duration = Duration::days(30);

/// A parsed UpdateKey request: `Some` for each field named in the update mask.
#[derive(Default)]
pub struct KeyUpdate {
    pub name: Option<DisplayName>,
    pub description: Option<Description>,
    pub scopes: Option<Vec<String>>,
    pub allowed_cidrs: Option<Vec<IpNet>>,
    /// `Some(None)` clears the expiry.
    pub expires_at: Option<Option<DateTime<Utc>>>,
    pub metadata: Option<BTreeMap<String, String>>,
}

/// A parsed RotateKey request.
pub struct Rotation {
    pub grace_period: Duration,
}

impl Rotation {
    /// Zero refuses the previous secret at once; at most 30 days; never negative.
    pub fn new(grace_period: Duration) -> Result<Rotation, FieldError> {
        if grace_period < Duration::zero() || grace_period > MAX_GRACE_PERIOD {
            return Err(FieldError::new(
                "grace_period",
                "must be between 0 and 30 days",
            ));
        }
        Ok(Rotation { grace_period })
    }
}

/// A change one transaction wrote to a key: its event's sequence number,
/// the key's version after it, and what a cached copy may do with it.
struct WrittenChange<'a> {
    key_id: &'a KeyId,
    sequence: i64,
    version: i64,
    action: EventAction,
    /// The state change a cached copy takes in place (disable, enable,
    /// revoke); `None` evicts it.
    in_place: Option<StateChange>,
}

impl KeyManager {
    /// Announces `written` to every replica inside its transaction (the
    /// notification goes out only if the change commits), commits, and
    /// follows the change in this replica's cache at once.
    async fn commit_change(
        &self,
        mut transaction: Transaction<'_, Postgres>,
        written: &WrittenChange<'_>,
        wait: bool,
    ) -> Result<(), ServiceError> {
        let WrittenChange {
            key_id,
            sequence,
            version,
            action,
            in_place,
        } = *written;
        self.announce(&mut transaction, key_id, sequence, version, action, wait)
            .await?;
        transaction.commit().await.map_err(StoreError::from)?;
        self.authorizer.follow_change(key_id, version, in_place);
        Ok(())
    }

    /// A pooled connection for a change: it also makes the wait's first read.
    async fn connection(&self) -> Result<PoolConnection<Postgres>, ServiceError> {
        Ok(self.pool.acquire().await.map_err(StoreError::from)?)
    }

    /// Opens a transaction on `connection`, locks a key the caller may see and
    /// reads the caller's state, in one statement, and checks the caller (see
    /// `check_caller_state`).
    async fn begin_on_key<'c>(
        &self,
        connection: &'c mut PoolConnection<Postgres>,
        caller: &Caller,
        key_id: &KeyId,
    ) -> Result<(Transaction<'c, Postgres>, Key), ServiceError> {
        let mut transaction = sqlx::Connection::begin(&mut **connection)
            .await
            .map_err(StoreError::from)?;
        let locked = lock_key_for_change(&mut *transaction, key_id, &caller.key().id).await?;
        let target = match locked.target {
            Some(stored) if caller.can_see(&stored.key) => stored.key,
            _ => return Err(ServiceError::NotFound("key")),
        };
        self.check_caller_state(caller, locked.caller)?;
        Ok((transaction, target))
    }

    /// Whether a change waits for every live replica to apply it: as its
    /// caller asked, else when it takes access away from `before`, the key
    /// as locked for the change.
    fn waits(&self, asked: Option<bool>, before: &Key, change: &KeyChange<'_>) -> bool {
        asked.unwrap_or_else(|| {
            let policy = self.authorizer.policy();
            takes_access_away(before, change, &policy.catalog, Utc::now())
        })
    }

    pub async fn update_key(
        &self,
        caller: &Caller,
        key_id: &KeyId,
        update: KeyUpdate,
        asked_wait: Option<bool>,
    ) -> Result<(Key, Propagation), ServiceError> {
        caller.require("api_keys:update")?;
        let now = Utc::now();
        if let Some(expiry) = update.expires_at {
            check_expiry(expiry, now)?;
        }
        if let Some(metadata) = &update.metadata {
            check_metadata(metadata)?;
        }
        let new_scopes = match update.scopes {
            Some(texts) => Some(self.resolve_scopes(RequestedScopes::Listed(texts))?),
            None => None,
        };
        let mut connection = self.connection().await?;
        let (mut transaction, current) = self.begin_on_key(&mut connection, caller, key_id).await?;
        if current.state(now) == KeyState::Revoked {
            return Err(ServiceError::FailedPrecondition(
                "key is revoked".to_owned(),
            ));
        }
        if new_scopes.is_some() && current.lock_scopes {
            return Err(ServiceError::FailedPrecondition(
                "scopes: this key was created with lock_scopes; its scopes cannot change"
                    .to_owned(),
            ));
        }
        caller.check_holds_all_of(&current)?;
        if let Some(scopes) = &new_scopes {
            caller.check_grant(scopes)?;
        }
        if let Some(expiry) = update.expires_at {
            caller.check_expiry_within_own(expiry)?;
        }
        if let Some(networks) = &update.allowed_cidrs {
            caller.check_networks_within_own(networks)?;
        }
        let change = KeyChange::Update {
            scopes: new_scopes.as_deref(),
            allowed_cidrs: update.allowed_cidrs.as_deref(),
            expires_at: update.expires_at,
        };
        let wait = self.waits(asked_wait, &current, &change);

        let mut changes = Map::new();
        let name = update
            .name
            .as_ref()
            .map_or(current.name.as_str(), DisplayName::as_str);
        let description = update
            .description
            .as_ref()
            .map_or(current.description.as_str(), Description::as_str);
        let scopes = new_scopes.as_deref().unwrap_or(&current.scopes);
        let allowed_cidrs = update
            .allowed_cidrs
            .as_deref()
            .unwrap_or(&current.allowed_cidrs);
        let expires_at = update.expires_at.unwrap_or(current.expires_at);
        let metadata = update.metadata.as_ref().unwrap_or(&current.metadata);
        if update.name.is_some() {
            changes.insert("name".into(), json!(name));
        }
        if update.description.is_some() {
            changes.insert("description".into(), json!(description));
        }
        if new_scopes.is_some() {
            changes.insert(
                "scopes".into(),
                json!(scopes.iter().map(Scope::to_string).collect::<Vec<_>>()),
            );
        }
        if update.allowed_cidrs.is_some() {
            let texts: Vec<String> = allowed_cidrs.iter().map(IpNet::to_string).collect();
            changes.insert("allowed_cidrs".into(), json!(texts));
        }
        if update.expires_at.is_some() {
            changes.insert("expire_time".into(), json!(expires_at));
        }
        if update.metadata.is_some() {
            changes.insert("metadata".into(), json!(metadata));
        }
        let fields = KeyFields {
            name,
            description,
            scopes,
            allowed_cidrs,
            expires_at,
            metadata,
        };
        let event = self.new_event(
            &current,
            Some(caller),
            EventAction::Updated,
            Value::Object(changes),
        );
        let (key, sequence) = update_fields(&mut transaction, key_id, &fields, event).await?;
        let written = WrittenChange {
            key_id,
            sequence,
            version: key.version,
            action: EventAction::Updated,
            in_place: None,
        };
        self.commit_change(transaction, &written, wait).await?;
        tracing::info!(key_id = %key.id, version = key.version, "key updated");
        Ok((
            key,
            self.propagation.wait_for(sequence, wait, connection).await,
        ))
    }

    pub async fn rotate_key(
        &self,
        caller: &Caller,
        key_id: &KeyId,
        rotation: Rotation,
        asked_wait: Option<bool>,
    ) -> Result<(KeyWithToken, Propagation), ServiceError> {
        caller.require("api_keys:update")?;
        // argon2 runs before any row is locked, so it holds neither a lock nor
        // a pooled connection; the environment it needs never changes.
        let unlocked = self.visible_key(caller, key_id).await?;
        refuse_rotating_revoked(&unlocked)?;
        let issued = Token::issue(&self.prefix, unlocked.environment, key_id);
        let new_hash = self.hasher.hash(&issued.secret).await?;
        let mut connection = self.connection().await?;
        let (mut transaction, current) = self.begin_on_key(&mut connection, caller, key_id).await?;
        refuse_rotating_revoked(&current)?;
        caller.check_may_reissue(&current)?;
        let change = KeyChange::Rotate {
            grace_period: rotation.grace_period,
        };
        let wait = self.waits(asked_wait, &current, &change);
        let previous_valid_until =
            (rotation.grace_period > Duration::zero()).then(|| Utc::now() + rotation.grace_period);
        let changes = json!({
            "grace_period_seconds": rotation.grace_period.num_seconds(),
            "previous_secret_expire_time": previous_valid_until,
        });
        let event = self.new_event(&current, Some(caller), EventAction::Rotated, changes);
        let (key, sequence) = rotate_secret(
            &mut transaction,
            key_id,
            &new_hash,
            previous_valid_until,
            event,
        )
        .await?;
        let written = WrittenChange {
            key_id,
            sequence,
            version: key.version,
            action: EventAction::Rotated,
            in_place: None,
        };
        self.commit_change(transaction, &written, wait).await?;
        tracing::info!(key_id = %key.id, grace_seconds = rotation.grace_period.num_seconds(), "key rotated");
        let propagation = self.propagation.wait_for(sequence, wait, connection).await;
        Ok((
            KeyWithToken {
                key,
                token: issued.token,
            },
            propagation,
        ))
    }

    /// Disables (`disabled = true`) or re-enables a key; a no-op when already so.
    pub async fn set_key_disabled(
        &self,
        caller: &Caller,
        key_id: &KeyId,
        disabled: bool,
        asked_wait: Option<bool>,
    ) -> Result<(Key, Propagation), ServiceError> {
        caller.require("api_keys:update")?;
        let mut connection = self.connection().await?;
        let (mut transaction, current) = self.begin_on_key(&mut connection, caller, key_id).await?;
        if current.revoked_at.is_some() {
            let verb = if disabled { "disabled" } else { "enabled" };
            return Err(ServiceError::FailedPrecondition(format!(
                "key is revoked; it cannot be {verb}"
            )));
        }
        caller.check_holds_all_of(&current)?;
        if current.disabled_at.is_some() == disabled {
            return Ok((current, Propagation::default()));
        }
        let (action, key_change) = if disabled {
            (EventAction::Disabled, KeyChange::Disable)
        } else {
            (EventAction::Enabled, KeyChange::Enable)
        };
        let wait = self.waits(asked_wait, &current, &key_change);
        let event = self.new_event(&current, Some(caller), action, json!({}));
        let (key, sequence) = set_disabled(&mut transaction, key_id, disabled, event).await?;
        let written = WrittenChange {
            key_id,
            sequence,
            version: key.version,
            action,
            in_place: Some(StateChange {
                action,
                at: key.updated_at,
            }),
        };
        self.commit_change(transaction, &written, wait).await?;
        tracing::info!(key_id = %key.id, disabled, "key state changed");
        Ok((
            key,
            self.propagation.wait_for(sequence, wait, connection).await,
        ))
    }

    /// Revokes a key for good; a no-op when already revoked.
    pub async fn revoke_key(
        &self,
        caller: &Caller,
        key_id: &KeyId,
        asked_wait: Option<bool>,
    ) -> Result<(Key, Propagation), ServiceError> {
        caller.require("api_keys:delete")?;
        let mut connection = self.connection().await?;
        let (mut transaction, current) = self.begin_on_key(&mut connection, caller, key_id).await?;
        let wait = self.waits(asked_wait, &current, &KeyChange::Revoke);
        if current.revoked_at.is_some() {
            // Already revoked: a retry still learns whether that revocation
            // reached every replica.
            drop(transaction);
            let revocation_sequence =
                latest_event_sequence(&mut *connection, key_id, EventAction::Revoked).await?;
            let propagation = match revocation_sequence {
                Some(sequence) => self.propagation.wait_for(sequence, wait, connection).await,
                None => Propagation::default(),
            };
            return Ok((current, propagation));
        }
        let action = EventAction::Revoked;
        let event = self.new_event(&current, Some(caller), action, json!({}));
        let (key, sequence) = set_revoked(&mut transaction, key_id, event).await?;
        let written = WrittenChange {
            key_id,
            sequence,
            version: key.version,
            action,
            in_place: Some(StateChange {
                action,
                at: key.updated_at,
            }),
        };
        self.commit_change(transaction, &written, wait).await?;
        tracing::info!(key_id = %key.id, "key revoked");
        Ok((
            key,
            self.propagation.wait_for(sequence, wait, connection).await,
        ))
    }

    /// Removes a key; its events stay in the audit log.
    pub async fn delete_key(
        &self,
        caller: &Caller,
        key_id: &KeyId,
        asked_wait: Option<bool>,
    ) -> Result<Propagation, ServiceError> {
        caller.require("api_keys:delete")?;
        let mut connection = self.connection().await?;
        let (mut transaction, current) = self.begin_on_key(&mut connection, caller, key_id).await?;
        let wait = self.waits(asked_wait, &current, &KeyChange::Delete);
        let action = EventAction::Deleted;
        let event = self.new_event(&current, Some(caller), action, json!({}));
        let sequence = delete_key(&mut transaction, key_id, event).await?;
        let written = WrittenChange {
            key_id,
            sequence,
            version: DELETED_VERSION,
            action,
            in_place: None,
        };
        self.commit_change(transaction, &written, wait).await?;
        tracing::info!(key_id = %current.id, "key deleted");
        Ok(self.propagation.wait_for(sequence, wait, connection).await)
    }
}

fn refuse_rotating_revoked(key: &Key) -> Result<(), ServiceError> {
    if key.revoked_at.is_some() {
        return Err(ServiceError::FailedPrecondition(
            "key is revoked; it cannot be rotated".to_owned(),
        ));
    }
    Ok(())
}

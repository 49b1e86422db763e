//! `TestStore`: a fresh database with Keygate's schema and a pool on it, and
//! rows written through the store's own functions.

use std::collections::BTreeMap;

use keygate::domain::events::EventAction;
use keygate::domain::hashing::SecretHash;
use keygate::domain::key::{Key, KeyKind};
use keygate::domain::organization::Organization;
use keygate::domain::permission::Scope;
use keygate::domain::token::{Environment, KeyId};
use keygate::store::events::{insert_event, NewEvent};
use keygate::store::keys::{insert_key, KeyFields, NewKey};
use keygate::store::organizations::insert_organization;
use keygate::store::StoreError;
use sqlx::PgPool;
use uuid::Uuid;

use crate::database::TestDatabase;

/// A migrated test database and a pool on it.
pub struct TestStore {
    pub pool: PgPool,
    /// Kept while the pool is in use: the database goes with it.
    _database: TestDatabase,
}

impl TestStore {
    /// A fresh database with every migration applied.
    pub async fn migrated() -> TestStore {
        let database = TestDatabase::create().await;
        let pool = database.pool().await;
        keygate::store::migrate(&pool).await.unwrap();
        TestStore {
            pool,
            _database: database,
        }
    }

    pub async fn organization(&self, display_name: &str) -> Organization {
        insert_organization(&self.pool, display_name).await.unwrap()
    }

    /// A live key of `organization` holding `customers:read`, and the event
    /// of its creation, as CreateKey writes them.
    pub async fn key(&self, organization: &Organization) -> Key {
        let key = self
            .insert_key(KeyId::generate(), organization.id)
            .await
            .unwrap();
        let mut connection = self.pool.acquire().await.unwrap();
        let created = event_for(&key, EventAction::Created);
        insert_event(&mut connection, created).await.unwrap();
        key
    }

    /// Inserts a live key `id` of organization `organization_id` holding
    /// `customers:read`, whose secret hash is `stored hash`.
    pub async fn insert_key(&self, id: KeyId, organization_id: Uuid) -> Result<Key, StoreError> {
        let scopes = [Scope::parse("customers:read").unwrap()];
        let metadata = BTreeMap::new();
        let secret_hash = SecretHash::from_stored("stored hash".to_owned());
        let new_key = NewKey {
            id,
            organization_id: Some(organization_id),
            kind: KeyKind::Organization,
            environment: Environment::Live,
            fields: KeyFields {
                name: "store key",
                description: "",
                scopes: &scopes,
                allowed_cidrs: &[],
                expires_at: None,
                metadata: &metadata,
            },
            lock_scopes: false,
            secret_hash: &secret_hash,
            created_by: None,
        };
        insert_key(&self.pool, &new_key).await
    }

    /// The number of rows in `table`.
    pub async fn count(&self, table: &str) -> i64 {
        sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    /// (keys, events) row counts, to show that a call wrote neither.
    pub async fn row_counts(&self) -> (i64, i64) {
        (self.count("api_keys").await, self.count("key_events").await)
    }

    /// The sum of every key's version: unchanged unless some key was changed.
    pub async fn version_sum(&self) -> i64 {
        sqlx::query_scalar("SELECT COALESCE(sum(version), 0)::bigint FROM api_keys")
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }
}

/// The event a change of `action` to `key` records, with no actor.
pub fn event_for(key: &Key, action: EventAction) -> NewEvent<'_> {
    NewEvent {
        key_id: &key.id,
        organization_id: key.organization_id,
        environment: key.environment,
        actor_key_id: None,
        action,
        changes: serde_json::json!({}),
    }
}

//! The `api_keys` table: a key reads back as written, the database's
//! constraints come back as the errors callers match on, and listings page
//! newest first.

use keygate::domain::key::KeyKind;
use keygate::domain::token::{Environment, KeyId};
use keygate::store::keys::{
    find_key_by_id, find_key_version, list_keys, lock_key_for_change, system_key_exists, KeyFilter,
};
use keygate::store::StoreError;

use crate::support::TestStore;

/// Every key of every organization and environment.
fn no_filter() -> KeyFilter {
    KeyFilter {
        organization_id: None,
        organization_keys_only: false,
        environment: None,
    }
}

#[tokio::test]
async fn a_key_reads_back_as_it_was_written() {
    let store = TestStore::migrated().await;
    let organization = store.organization("Acme").await;
    let key = store.key(&organization).await;

    assert_eq!(key.organization_id, Some(organization.id));
    assert_eq!(key.kind, KeyKind::Organization);
    assert_eq!(key.environment, Environment::Live);
    assert_eq!(key.name, "store key");
    let scopes: Vec<String> = key.scopes.iter().map(ToString::to_string).collect();
    assert_eq!(scopes, vec!["customers:read"]);
    assert_eq!(key.version, 1);
    assert_eq!(key.last_used_at, None);
    assert_eq!(key.disabled_at, None);
    assert_eq!(key.revoked_at, None);

    let stored = find_key_by_id(&store.pool, &key.id).await.unwrap().unwrap();
    assert_eq!(stored.key, key);
    assert_eq!(stored.secret_hash.as_str(), "stored hash");
    assert!(stored.previous_secret_hash.is_none());
    let version = find_key_version(&store.pool, &key.id).await.unwrap();
    assert_eq!(version, Some(1));
}

#[tokio::test]
async fn an_unknown_key_is_none_not_an_error() {
    let store = TestStore::migrated().await;
    let unknown = KeyId::generate();
    assert!(find_key_by_id(&store.pool, &unknown)
        .await
        .unwrap()
        .is_none());
    assert_eq!(find_key_version(&store.pool, &unknown).await.unwrap(), None);
    let locked = lock_key_for_change(&store.pool, &unknown, &unknown)
        .await
        .unwrap();
    assert!(locked.target.is_none());
    assert!(locked.caller.is_none());
}

#[tokio::test]
async fn a_second_key_with_the_same_id_is_a_duplicate() {
    let store = TestStore::migrated().await;
    let organization = store.organization("Acme").await;
    let key = store.key(&organization).await;
    let before = store.row_counts().await;

    let again = store.insert_key(key.id, organization.id).await;
    let Err(StoreError::Duplicate(constraint)) = again else {
        panic!("expected a duplicate, got {again:?}");
    };
    assert_eq!(constraint, "api_keys_pkey");
    assert_eq!(store.row_counts().await, before);
}

#[tokio::test]
async fn a_key_of_a_missing_organization_is_a_missing_reference() {
    let store = TestStore::migrated().await;
    let nowhere = uuid::Uuid::new_v4();

    let inserted = store.insert_key(KeyId::generate(), nowhere).await;
    let Err(StoreError::MissingReference(constraint)) = inserted else {
        panic!("expected a missing reference, got {inserted:?}");
    };
    assert_eq!(constraint, "api_keys_organization_id_fkey");
    assert_eq!(store.count("api_keys").await, 0);
}

#[tokio::test]
async fn keys_are_listed_newest_first_a_page_at_a_time() {
    let store = TestStore::migrated().await;
    let acme = store.organization("Acme").await;
    let globex = store.organization("Globex").await;
    let first = store.key(&acme).await;
    let second = store.key(&globex).await;
    let third = store.key(&acme).await;

    let page = list_keys(&store.pool, &no_filter(), None, 2).await.unwrap();
    let ids: Vec<KeyId> = page.iter().map(|(_, key)| key.id).collect();
    assert_eq!(ids, vec![third.id, second.id]);
    let oldest_seen = page[1].0;
    assert!(page[0].0 > oldest_seen);
    let rest = list_keys(&store.pool, &no_filter(), Some(oldest_seen), 2)
        .await
        .unwrap();
    let ids: Vec<KeyId> = rest.iter().map(|(_, key)| key.id).collect();
    assert_eq!(ids, vec![first.id]);

    let of_acme = KeyFilter {
        organization_id: Some(acme.id),
        ..no_filter()
    };
    let listed = list_keys(&store.pool, &of_acme, None, 10).await.unwrap();
    let ids: Vec<KeyId> = listed.iter().map(|(_, key)| key.id).collect();
    assert_eq!(ids, vec![third.id, first.id]);
    let in_test = KeyFilter {
        environment: Some(Environment::Test),
        ..no_filter()
    };
    assert!(list_keys(&store.pool, &in_test, None, 10)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn a_caller_is_read_only_beside_an_existing_target() {
    let store = TestStore::migrated().await;
    let organization = store.organization("Acme").await;
    let target = store.key(&organization).await;
    let caller = store.key(&organization).await;
    let unknown = KeyId::generate();

    let both = lock_key_for_change(&store.pool, &target.id, &caller.id)
        .await
        .unwrap();
    assert_eq!(both.target.map(|stored| stored.key), Some(target.clone()));
    let caller_state = both.caller.unwrap();
    assert_eq!(caller_state.version, caller.version);
    assert!(!caller_state.revoked && !caller_state.disabled);

    let no_caller = lock_key_for_change(&store.pool, &target.id, &unknown)
        .await
        .unwrap();
    assert!(no_caller.target.is_some());
    assert!(no_caller.caller.is_none());
    let no_target = lock_key_for_change(&store.pool, &unknown, &caller.id)
        .await
        .unwrap();
    assert!(no_target.target.is_none());
    assert!(no_target.caller.is_none(), "a caller read without a target");
}

#[tokio::test]
async fn organization_keys_are_no_system_keys() {
    let store = TestStore::migrated().await;
    assert!(!system_key_exists(&store.pool).await.unwrap());
    let organization = store.organization("Acme").await;
    store.key(&organization).await;
    assert!(!system_key_exists(&store.pool).await.unwrap());
}

//! Changes to an existing key: each bumps the key's version, records its
//! event, and leaves the row a cache following the event would hold.

use keygate::cache::{CacheSettings, CachedKey, KeyCache};
use keygate::domain::events::{EventAction, StateChange};
use keygate::domain::hashing::SecretHash;
use keygate::domain::policy::{Policy, EMBEDDED_DEFAULT_POLICY};
use keygate::store::changes::{delete_key, rotate_secret, set_disabled, set_revoked};
use keygate::store::events::latest_event_sequence;
use keygate::store::keys::find_key_by_id;

use crate::support::{event_for, TestStore};

#[tokio::test]
async fn a_followed_state_change_matches_the_row_the_store_writes() {
    let store = TestStore::migrated().await;
    let organization = store.organization("Acme").await;
    let key = store.key(&organization).await;
    let id = key.id;
    // A rotated-out secret in grace, which a revocation ends.
    {
        let grace_until = chrono::Utc::now() + chrono::Duration::seconds(3600);
        let new_hash = SecretHash::from_stored("rotated hash".to_owned());
        let rotated = event_for(&key, EventAction::Rotated);
        let connection = &mut *store.pool.acquire().await.unwrap();
        rotate_secret(connection, &id, &new_hash, Some(grace_until), rotated)
            .await
            .unwrap();
    }
    let pool = &store.pool;
    let policy = Policy::parse(EMBEDDED_DEFAULT_POLICY).unwrap();
    let cache = KeyCache::new(CacheSettings::default());

    for action in [
        EventAction::Disabled,
        EventAction::Enabled,
        EventAction::Revoked,
    ] {
        let before = find_key_by_id(pool, &id).await.unwrap().unwrap();
        cache.insert(CachedKey::new(before, &policy, 1));
        let event = event_for(&key, action);
        let connection = &mut *pool.acquire().await.unwrap();
        match action {
            EventAction::Revoked => set_revoked(connection, &id, event).await.map(drop),
            _ => set_disabled(connection, &id, action == EventAction::Disabled, event)
                .await
                .map(drop),
        }
        .unwrap();
        let written = find_key_by_id(pool, &id).await.unwrap().unwrap();
        let change = StateChange {
            action,
            at: written.key.updated_at,
        };
        cache.follow_event(id, written.key.version, Some(change));
        let entry = cache.get(&id).into_entry();
        if action == EventAction::Enabled {
            assert!(entry.is_none(), "an enable is read again");
            continue;
        }
        let Some(followed) = entry else {
            panic!("{action:?} not followed in place");
        };
        assert_eq!(followed.key, written.key, "{action:?}");
        assert_eq!(
            followed.previous_secret_hash, written.previous_secret_hash,
            "{action:?}"
        );
        assert!(followed.secret_hash == written.secret_hash);
    }
}

#[tokio::test]
async fn each_change_bumps_the_version_and_returns_its_event() {
    let store = TestStore::migrated().await;
    let organization = store.organization("Acme").await;
    let key = store.key(&organization).await;
    assert_eq!(key.version, 1);
    let connection = &mut *store.pool.acquire().await.unwrap();

    let disabled = event_for(&key, EventAction::Disabled);
    let (changed, sequence) = set_disabled(connection, &key.id, true, disabled)
        .await
        .unwrap();
    assert_eq!(changed.version, 2);
    assert!(changed.disabled_at.is_some());
    let latest = latest_event_sequence(&store.pool, &key.id, EventAction::Disabled).await;
    assert_eq!(latest.unwrap(), Some(sequence));

    let revoked = event_for(&key, EventAction::Revoked);
    let (changed, sequence) = set_revoked(connection, &key.id, revoked).await.unwrap();
    assert_eq!(changed.version, 3);
    assert!(changed.revoked_at.is_some());
    let latest = latest_event_sequence(&store.pool, &key.id, EventAction::Revoked).await;
    assert_eq!(latest.unwrap(), Some(sequence));
    let stored = find_key_by_id(&store.pool, &key.id).await.unwrap().unwrap();
    assert_eq!(stored.key, changed);
}

#[tokio::test]
async fn a_rotation_keeps_the_old_hash_only_with_a_deadline() {
    let store = TestStore::migrated().await;
    let organization = store.organization("Acme").await;
    let key = store.key(&organization).await;
    let connection = &mut *store.pool.acquire().await.unwrap();
    let until = chrono::Utc::now() + chrono::Duration::seconds(60);

    let second = SecretHash::from_stored("second hash".to_owned());
    let rotated = event_for(&key, EventAction::Rotated);
    rotate_secret(connection, &key.id, &second, Some(until), rotated)
        .await
        .unwrap();
    let stored = find_key_by_id(&store.pool, &key.id).await.unwrap().unwrap();
    assert_eq!(stored.secret_hash.as_str(), "second hash");
    let previous = stored.previous_secret_hash.as_ref().map(SecretHash::as_str);
    assert_eq!(previous, Some("stored hash"));
    assert!(stored.key.previous_secret_expires_at.is_some());

    let third = SecretHash::from_stored("third hash".to_owned());
    let rotated = event_for(&key, EventAction::Rotated);
    rotate_secret(connection, &key.id, &third, None, rotated)
        .await
        .unwrap();
    let stored = find_key_by_id(&store.pool, &key.id).await.unwrap().unwrap();
    assert_eq!(stored.secret_hash.as_str(), "third hash");
    assert!(stored.previous_secret_hash.is_none());
    assert_eq!(stored.key.previous_secret_expires_at, None);
    assert_eq!(stored.key.version, 3);
}

#[tokio::test]
async fn a_deleted_key_is_gone_and_its_events_stay() {
    let store = TestStore::migrated().await;
    let organization = store.organization("Acme").await;
    let key = store.key(&organization).await;
    let connection = &mut *store.pool.acquire().await.unwrap();

    let deleted = event_for(&key, EventAction::Deleted);
    let sequence = delete_key(connection, &key.id, deleted).await.unwrap();
    assert!(find_key_by_id(&store.pool, &key.id)
        .await
        .unwrap()
        .is_none());
    let latest = latest_event_sequence(&store.pool, &key.id, EventAction::Deleted).await;
    assert_eq!(latest.unwrap(), Some(sequence));
    let created = latest_event_sequence(&store.pool, &key.id, EventAction::Created).await;
    assert!(created.unwrap().is_some());
}

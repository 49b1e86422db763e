//! `record_key_uses`: when keys were last used, written in batches beside the
//! keys, skipping keys that are gone.

use std::time::Duration;

use chrono::{DateTime, Utc};
use keygate::domain::events::EventAction;
use keygate::domain::key::Key;
use keygate::domain::token::KeyId;
use keygate::store::changes::delete_key;
use keygate::store::keys::find_key_by_id;
use keygate::store::usage::record_key_uses;

use crate::support::{event_for, TestStore};

async fn last_used_time(store: &TestStore, key: &Key) -> Option<DateTime<Utc>> {
    let stored = find_key_by_id(&store.pool, &key.id).await.unwrap();
    stored.unwrap().key.last_used_at
}

/// Deletes `key` with its event, as DeleteKey does.
async fn delete(store: &TestStore, key: &Key) {
    let mut connection = store.pool.acquire().await.unwrap();
    let event = event_for(key, EventAction::Deleted);
    delete_key(&mut connection, &key.id, event).await.unwrap();
}

/// Two live keys of one organization.
async fn two_keys(store: &TestStore) -> (Key, Key) {
    let organization = store.organization("Acme").await;
    (
        store.key(&organization).await,
        store.key(&organization).await,
    )
}

#[tokio::test]
async fn uses_are_written_only_for_keys_that_exist_and_go_with_their_key() {
    let store = TestStore::migrated().await;
    let (kept, deleted) = two_keys(&store).await;
    delete(&store, &deleted).await;
    let marks = [kept.id, deleted.id, KeyId::generate()];

    assert_eq!(record_key_uses(&store.pool, &marks).await.unwrap(), 1);
    assert_eq!(store.count("key_usage").await, 1);
    let first = last_used_time(&store, &kept).await.expect("recorded");

    // A later report moves the time on, in the same row.
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(record_key_uses(&store.pool, &marks).await.unwrap(), 1);
    let second = last_used_time(&store, &kept).await.expect("recorded");
    assert!(second > first, "{first:?} then {second:?}");
    assert_eq!(store.count("key_usage").await, 1);

    // Usage is not a change: no version bump, no event.
    let counts_before = store.row_counts().await;
    let versions_before = store.version_sum().await;
    assert_eq!(record_key_uses(&store.pool, &marks).await.unwrap(), 1);
    assert_eq!(store.row_counts().await, counts_before);
    assert_eq!(store.version_sum().await, versions_before);

    // Deleting the key deletes its usage row.
    delete(&store, &kept).await;
    assert_eq!(store.count("key_usage").await, 0);
}

#[tokio::test]
async fn a_later_use_already_recorded_is_not_moved_back() {
    let store = TestStore::migrated().await;
    let (key, _) = two_keys(&store).await;
    assert_eq!(record_key_uses(&store.pool, &[key.id]).await.unwrap(), 1);
    // As written by a replica whose transaction started later.
    sqlx::query("UPDATE key_usage SET last_used_at = now() + interval '1 hour'")
        .execute(&store.pool)
        .await
        .unwrap();
    let later = last_used_time(&store, &key).await.expect("recorded");

    assert_eq!(record_key_uses(&store.pool, &[key.id]).await.unwrap(), 0);
    assert_eq!(last_used_time(&store, &key).await, Some(later));
    assert_eq!(store.count("key_usage").await, 1);
}

#[tokio::test]
async fn a_key_deleted_while_uses_are_written_is_skipped() {
    let store = TestStore::migrated().await;
    let (kept, deleted) = two_keys(&store).await;
    let mut deleting = store.pool.begin().await.unwrap();
    let deleting_pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut *deleting)
        .await
        .unwrap();
    sqlx::query("DELETE FROM api_keys WHERE id = $1")
        .bind(deleted.id.as_uuid())
        .execute(&mut *deleting)
        .await
        .unwrap();

    let pool = store.pool.clone();
    let marks = [kept.id, deleted.id];
    let writing = tokio::spawn(async move { record_key_uses(&pool, &marks).await });
    // The write must be held up by the delete before the delete commits.
    let mut blocked = false;
    for _ in 0..100 {
        blocked = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_stat_activity \
             WHERE $1 = ANY(pg_blocking_pids(pid)) AND query LIKE '%INSERT INTO key_usage%')",
        )
        .bind(deleting_pid)
        .fetch_one(&store.pool)
        .await
        .unwrap();
        if blocked {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(blocked, "the write never waited for the delete");
    assert!(!writing.is_finished());
    deleting.commit().await.unwrap();

    assert_eq!(writing.await.unwrap().unwrap(), 1);
    let recorded: Vec<uuid::Uuid> = sqlx::query_scalar("SELECT key_id FROM key_usage")
        .fetch_all(&store.pool)
        .await
        .unwrap();
    assert_eq!(recorded, vec![kept.id.as_uuid()]);
}

#[tokio::test]
async fn an_empty_batch_writes_nothing() {
    let store = TestStore::migrated().await;
    assert_eq!(record_key_uses(&store.pool, &[]).await.unwrap(), 0);
    assert_eq!(store.count("key_usage").await, 0);
}

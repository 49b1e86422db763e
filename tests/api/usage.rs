//! The usage store: `record_key_uses` against a real database, beside the
//! lifecycle RPCs that create and delete the keys.

use std::time::Duration;

use keygate::grpc::pb;
use keygate::store::usage::record_key_uses;
use keygate::token::KeyId;
use prost_types::Timestamp;

use crate::support::{authed, TestApp};

async fn last_used_time(app: &TestApp, key: &pb::Key) -> Option<Timestamp> {
    let request = pb::GetKeyRequest {
        key_id: key.id.clone(),
    };
    app.client
        .clone()
        .get_key(authed(&app.admin_token, request))
        .await
        .unwrap()
        .into_inner()
        .last_used_time
}

async fn delete(app: &TestApp, key: &pb::Key) {
    let request = pb::DeleteKeyRequest {
        key_id: key.id.clone(),
        ..Default::default()
    };
    app.client
        .clone()
        .delete_key(authed(&app.admin_token, request))
        .await
        .unwrap();
}

fn id_of(key: &pb::Key) -> KeyId {
    KeyId::parse(&key.id).unwrap()
}

/// Two live keys of one organization.
async fn two_keys(app: &TestApp) -> (pb::Key, pb::Key) {
    let mut keys = app
        .customer_readers(2)
        .await
        .into_iter()
        .map(|(key, _)| key);
    (keys.next().unwrap(), keys.next().unwrap())
}

#[tokio::test]
async fn uses_are_written_only_for_keys_that_exist_and_go_with_their_key() {
    let app = TestApp::spawn().await;
    let (kept, deleted) = two_keys(&app).await;
    delete(&app, &deleted).await;
    let marks = [id_of(&kept), id_of(&deleted), KeyId::generate()];

    assert_eq!(record_key_uses(&app.pool, &marks).await.unwrap(), 1);
    assert_eq!(app.count("key_usage").await, 1);
    let first = last_used_time(&app, &kept).await.expect("recorded");

    // A later report moves the time on, in the same row.
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(record_key_uses(&app.pool, &marks).await.unwrap(), 1);
    let second = last_used_time(&app, &kept).await.expect("recorded");
    assert!(
        (second.seconds, second.nanos) > (first.seconds, first.nanos),
        "{first:?} then {second:?}"
    );
    assert_eq!(app.count("key_usage").await, 1);

    // Usage is not a change: no version bump, no event.
    let counts_before = app.row_counts().await;
    let versions_before = app.version_sum().await;
    assert_eq!(record_key_uses(&app.pool, &marks).await.unwrap(), 1);
    assert_eq!(app.row_counts().await, counts_before);
    assert_eq!(app.version_sum().await, versions_before);

    // Deleting the key deletes its usage row.
    delete(&app, &kept).await;
    assert_eq!(app.count("key_usage").await, 0);
}

#[tokio::test]
async fn a_later_use_already_recorded_is_not_moved_back() {
    let app = TestApp::spawn().await;
    let (key, _) = two_keys(&app).await;
    assert_eq!(record_key_uses(&app.pool, &[id_of(&key)]).await.unwrap(), 1);
    // As written by a replica whose transaction started later.
    sqlx::query("UPDATE key_usage SET last_used_at = now() + interval '1 hour'")
        .execute(&app.pool)
        .await
        .unwrap();
    let later = last_used_time(&app, &key).await.expect("recorded");

    assert_eq!(record_key_uses(&app.pool, &[id_of(&key)]).await.unwrap(), 0);
    assert_eq!(last_used_time(&app, &key).await, Some(later));
    assert_eq!(app.count("key_usage").await, 1);
}

#[tokio::test]
async fn a_key_deleted_while_uses_are_written_is_skipped() {
    let app = TestApp::spawn().await;
    let (kept, deleted) = two_keys(&app).await;
    let mut deleting = app.pool.begin().await.unwrap();
    let deleting_pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut *deleting)
        .await
        .unwrap();
    sqlx::query("DELETE FROM api_keys WHERE id = $1")
        .bind(id_of(&deleted).as_uuid())
        .execute(&mut *deleting)
        .await
        .unwrap();

    let pool = app.pool.clone();
    let marks = [id_of(&kept), id_of(&deleted)];
    let writing = tokio::spawn(async move { record_key_uses(&pool, &marks).await });
    // The write must be held up by the delete before the delete commits.
    let mut blocked = false;
    for _ in 0..100 {
        blocked = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_stat_activity \
             WHERE $1 = ANY(pg_blocking_pids(pid)) AND query LIKE '%INSERT INTO key_usage%')",
        )
        .bind(deleting_pid)
        .fetch_one(&app.pool)
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
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert_eq!(recorded, vec![id_of(&kept).as_uuid()]);
}

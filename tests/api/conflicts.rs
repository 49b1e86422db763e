//! Two changes that deadlock on their row locks: Postgres rolls one back, and
//! its caller gets ABORTED (retry), not INTERNAL, with nothing written.

use std::time::Duration;

use keygate::grpc::pb::{self, Environment};
use keygate::token::KeyId;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::Connection;
use tonic::Code;

use crate::helpers::{assert_status, authed, spawn_app};

#[sqlx::test(migrations = false)]
async fn a_change_rolled_back_by_a_deadlock_is_aborted_with_nothing_written(
    _pool: PgPoolOptions,
    db: PgConnectOptions,
) {
    let app = spawn_app(db.clone()).await;
    let org = app.create_organization("Acme").await;
    let scopes = &["api_keys:*", "customers:read"];
    let (target, _) = app.org_key(&org, Environment::Live, scopes).await;
    let (caller, caller_token) = app.org_key(&org, Environment::Live, scopes).await;
    let uuid_of = |key: &pb::Key| KeyId::parse(&key.id).unwrap().as_uuid();
    let before = (app.row_counts().await, app.version_sum().await);

    // Another transaction holds the caller's row; the change locks its
    // target, then waits for the caller's row.
    let mut other = sqlx::PgConnection::connect_with(&db).await.unwrap();
    let mut other_transaction = other.begin().await.unwrap();
    // Only the change's own check finds the deadlock, so that it is the one
    // rolled back.
    sqlx::query("SET LOCAL deadlock_timeout = '30s'")
        .execute(&mut *other_transaction)
        .await
        .unwrap();
    sqlx::query("SELECT 1 FROM api_keys WHERE id = $1 FOR UPDATE")
        .bind(uuid_of(&caller))
        .execute(&mut *other_transaction)
        .await
        .unwrap();
    let mut client = app.client.clone();
    let request = pb::DisableKeyRequest {
        key_id: target.id.clone(),
        wait_for_propagation: Some(false),
    };
    let change =
        tokio::spawn(async move { client.disable_key(authed(&caller_token, request)).await });
    // This database's backends only: other tests run beside this one.
    let waiting = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
                   AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()";
    let mut change_waits = false;
    for _ in 0..500 {
        let count: i64 = sqlx::query_scalar(waiting)
            .fetch_one(&app.server_pool)
            .await
            .unwrap();
        change_waits = count > 0;
        if change_waits {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(change_waits, "the change never waited for the caller's row");
    // Now the other transaction wants the target: a cycle.
    let wants_target = sqlx::query("SELECT 1 FROM api_keys WHERE id = $1 FOR UPDATE")
        .bind(uuid_of(&target))
        .execute(&mut *other_transaction);
    let (changed, locked) = tokio::join!(change, wants_target);
    locked.unwrap();
    other_transaction.rollback().await.unwrap();

    assert_status(changed.unwrap(), Code::Aborted, "concurrent change");
    assert_eq!((app.row_counts().await, app.version_sum().await), before);
}

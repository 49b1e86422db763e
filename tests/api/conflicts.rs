//! Two changes that deadlock on their row locks: Postgres rolls one back, and
//! its caller gets ABORTED (retry), not INTERNAL, with nothing written.

use std::time::Duration;

use keygate::domain::token::KeyId;
use keygate::grpc::pb::{self, Environment};
use sqlx::{Connection, PgConnection};
use tonic::{Code, Response, Status};

use crate::support::{assert_status, authed, TestApp};

#[tokio::test]
async fn a_change_rolled_back_by_a_deadlock_is_aborted_with_nothing_written() {
    let app = TestApp::spawn().await;
    let org = app.create_organization("Acme").await;
    // Postgres looks for a deadlock once per lock wait, a second after it
    // starts: if the cycle closes later than that (a loaded machine), the
    // other transaction is the one rolled back, and the round is run again.
    let scopes = &["api_keys:*", "customers:read"];
    for _round in 0..3 {
        let (target, _) = app.org_key(&org, Environment::Live, scopes).await;
        let (caller, caller_token) = app.org_key(&org, Environment::Live, scopes).await;
        let before = (app.row_counts().await, app.version_sum().await);
        let Some(changed) = deadlocked_disable(&app, &target, &caller, caller_token).await else {
            continue;
        };
        assert_status(changed, Code::Aborted, "concurrent change");
        assert_eq!((app.row_counts().await, app.version_sum().await), before);
        return;
    }
    panic!("the change was never the one rolled back");
}

/// `caller` disables `target` while a transaction of the test's holds the
/// caller's row and then asks for the target's: the change holds the target
/// and waits for the caller, so they deadlock. The change's answer, or `None`
/// when the test's transaction was the one rolled back.
async fn deadlocked_disable(
    app: &TestApp,
    target: &pb::Key,
    caller: &pb::Key,
    caller_token: String,
) -> Option<Result<Response<pb::DisableKeyResponse>, Status>> {
    let uuid_of = |key: &pb::Key| KeyId::parse(&key.id).unwrap().as_uuid();
    let mut other = PgConnection::connect_with(&app.database().connect_options())
        .await
        .unwrap();
    let other_pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut other)
        .await
        .unwrap();
    let mut other_transaction = other.begin().await.unwrap();
    // Only the change's own check finds the deadlock, in time.
    sqlx::query("SET LOCAL deadlock_timeout = '5s'")
        .execute(&mut *other_transaction)
        .await
        .unwrap();
    sqlx::query("SELECT 1 FROM api_keys WHERE id = $1 FOR UPDATE")
        .bind(uuid_of(caller))
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
    let blocked_by_other = "SELECT count(*) FROM pg_stat_activity \
                            WHERE $1 = ANY(pg_blocking_pids(pid))";
    let mut change_waits = false;
    for _ in 0..500 {
        let blocked: i64 = sqlx::query_scalar(blocked_by_other)
            .bind(other_pid)
            .fetch_one(&app.pool)
            .await
            .unwrap();
        change_waits = blocked > 0;
        if change_waits {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(change_waits, "the change never waited for the caller's row");
    // Now the test's transaction wants the target: a cycle.
    let wants_target = sqlx::query("SELECT 1 FROM api_keys WHERE id = $1 FOR UPDATE")
        .bind(uuid_of(target))
        .execute(&mut *other_transaction);
    let (changed, locked) = tokio::join!(change, wants_target);
    other_transaction.rollback().await.unwrap();
    let changed = changed.unwrap();
    match locked {
        Ok(_) => Some(changed),
        // The test's transaction was the one rolled back: run again.
        Err(error)
            if error
                .as_database_error()
                .and_then(|database| database.code())
                .as_deref()
                == Some("40P01") =>
        {
            None
        }
        Err(error) => panic!("the test's lock failed: {error}"),
    }
}

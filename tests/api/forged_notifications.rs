//! Anyone who can connect to Keygate's database can send a notification on
//! its channels. A forged key event may deny or evict, but never give a key
//! access back, and a sequence it claims is taken back by the next heartbeat.

use chrono::Utc;
use keygate::domain::events::EventAction;
use keygate::domain::token::KeyId;
use keygate::grpc::pb::Reason;
use keygate::replication::notification::{KeyEventNotice, Waiter, KEY_EVENTS_CHANNEL};
use keygate::store::keys::find_key_by_id;
use sqlx::PgPool;

use crate::support::{
    assert_complete, authorize_on_all, revoke_through, set_disabled_through, three_replicas,
    warm_key, TestApp,
};

/// A key event as a role outside Keygate could send it, stamped with the
/// time now.
struct Forged<'a> {
    sequence: i64,
    key_id: &'a KeyId,
    version: i64,
    waiter: Waiter,
    action: EventAction,
}

async fn forge(pool: &PgPool, event: Forged<'_>) {
    let notice = KeyEventNotice {
        sequence: event.sequence,
        key_id: *event.key_id,
        version: event.version,
        written_at_millis: Some(Utc::now().timestamp_millis()),
        waiter: event.waiter,
        action: Some(event.action),
    };
    let payload = notice.to_payload();
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(KEY_EVENTS_CHANNEL)
        .bind(payload)
        .execute(pool)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_forged_enable_gives_no_disabled_key_access_back() {
    let (a, b, c) = three_replicas().await;
    let all = [&a, &b, &c];
    let admin = &a.admin_token;
    let (key, token) = warm_key(&all, &["customers:read"]).await;
    let (other, _) = warm_key(&all, &["customers:read"]).await;
    assert_complete(set_disabled_through(&a, admin, &key, true, true).await, 3);
    let id = KeyId::parse(&key.id).unwrap();
    let disabled = find_key_by_id(&a.pool, &id).await.unwrap().unwrap();
    // Every replica holds the disabled key exactly one version behind what
    // the forged event claims: the case an enable followed in place would open.
    for replica in all {
        let cached = replica.authorizer.cache().get(&id).into_entry();
        assert_eq!(
            cached.map(|entry| entry.key.version),
            Some(disabled.key.version)
        );
    }

    // The latest sequence, so that no replica thinks it missed an event.
    let sequence = a.latest_sequence().await;
    let enabled = Forged {
        sequence,
        key_id: &id,
        version: disabled.key.version + 1,
        waiter: Waiter::Nobody,
        action: EventAction::Enabled,
    };
    forge(&a.pool, enabled).await;
    // Each listener hears notifications in order: once a later change is
    // confirmed everywhere, the forged one has been heard everywhere too.
    assert_complete(set_disabled_through(&a, admin, &other, true, true).await, 3);

    // Evicted, and the row read again is older than the version the forged
    // event claimed: no replica can confirm the key while that tombstone
    // lives, so each fails closed.
    assert_eq!(
        authorize_on_all(&all, &token, "GET", "/customers").await,
        vec![Reason::Unverifiable; 3]
    );
    let stored = find_key_by_id(&a.pool, &id).await.unwrap().unwrap();
    // Nothing was written (beyond usage times the authorizations reported).
    let state = |key: &keygate::domain::key::Key| (key.version, key.disabled_at);
    assert_eq!(state(&stored.key), state(&disabled.key));
}

#[tokio::test]
async fn a_forged_sequence_is_taken_back_and_never_recorded() {
    let app = TestApp::spawn().await;
    let (key, _) = warm_key(&[&app], &["customers:read"]).await;
    let (other, _) = warm_key(&[&app], &["customers:read"]).await;
    let pool = &app.pool;
    // Someone waits for it, so the reporter writes what it claims at once.
    let beyond = Forged {
        sequence: i64::MAX,
        key_id: &KeyId::generate(),
        version: 1,
        waiter: Waiter::Unnamed,
        action: EventAction::Revoked,
    };
    forge(pool, beyond).await;
    // The listener hears in order: once a later change is confirmed, the
    // forged notification has been applied (and claimed every sequence).
    assert_complete(
        Some(revoke_through(&app, &app.admin_token, &other).await),
        1,
    );

    // The heartbeat, every second, takes the claim back.
    let own_applied = || app.replica.progress_feed().own_applied();
    for _ in 0..300 {
        if own_applied() < i64::MAX {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let latest = app.latest_sequence().await;
    assert_eq!(own_applied(), latest);
    let recorded: i64 = sqlx::query_scalar("SELECT last_applied_seq FROM replicas WHERE id = $1")
        .bind(app.replica.id)
        .fetch_one(pool)
        .await
        .unwrap();
    assert!(recorded <= latest, "{recorded} > {latest}");

    // Waits go on working.
    assert_complete(Some(revoke_through(&app, &app.admin_token, &key).await), 1);
}

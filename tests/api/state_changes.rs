//! A disable or a revocation is followed in place by every replica that holds
//! the key: the event says all that changed, so the next request needs no
//! database read. An enable gives access back, which a notification is never
//! trusted to do (see `forged_notifications`): the key is read again.

use keygate::cache::{CacheSettings, CachedKey, KeyCache};
use keygate::domain::events::{EventAction, StateChange};
use keygate::domain::token::KeyId;
use keygate::grpc::pb::{self, Reason};
use keygate::store::changes::{set_disabled, set_revoked};
use keygate::store::events::{NewEvent, Waiter};
use keygate::store::keys::find_key_by_id;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tonic::Code;

use crate::helpers::{
    assert_complete, authorize_on_all, revoke_through, rotate_through, set_disabled_through,
    spawn_app, three_replicas, warm_key,
};

#[sqlx::test(migrations = false)]
async fn state_changes_are_decided_on_every_replica_without_reading_the_database(
    _pool: PgPoolOptions,
    db: PgConnectOptions,
) {
    let (a, b, c) = three_replicas(db).await;
    let all = [&a, &b, &c];
    let (revoked, revoked_token) = warm_key(&all, &["customers:read"]).await;
    let (disabled, disabled_token) = warm_key(&all, &["customers:read"]).await;
    let (reenabled, reenabled_token) = warm_key(&all, &["customers:read"]).await;

    // Through each replica in turn, so that each follows one change as its
    // origin and the others as listeners.
    let admin = &a.admin_token;
    assert_complete(Some(revoke_through(&a, admin, &revoked).await), 3);
    for (through, key, disable) in [
        (&b, &disabled, true),
        (&c, &reenabled, true),
        (&c, &reenabled, false),
    ] {
        assert_complete(
            set_disabled_through(through, admin, key, disable, true).await,
            3,
        );
    }

    // With no database to read a key from, only what each cache followed can
    // answer (a reload fails).
    for replica in all {
        replica.server_pool.close().await;
    }
    assert_eq!(
        authorize_on_all(&all, &revoked_token, "GET", "/customers").await,
        vec![Reason::Revoked; 3]
    );
    assert_eq!(
        authorize_on_all(&all, &disabled_token, "GET", "/customers").await,
        vec![Reason::Disabled; 3]
    );
    // The re-enabled key was evicted everywhere, its origin too.
    for replica in all {
        let request = pb::AuthorizeRequest {
            token: reenabled_token.clone(),
            method: "GET".into(),
            path: "/customers".into(),
            ..Default::default()
        };
        let answer = replica.authorizer_client.clone().authorize(request).await;
        assert_eq!(answer.unwrap_err().code(), Code::Unavailable);
    }
}

#[sqlx::test(migrations = false)]
async fn a_followed_state_change_matches_the_row_the_store_writes(
    _pool: PgPoolOptions,
    db: PgConnectOptions,
) {
    let app = spawn_app(db).await;
    let org = app.create_organization("Acme").await;
    let (key, _) = app
        .org_key(&org, pb::Environment::Live, &["customers:read"])
        .await;
    let id = KeyId::parse(&key.id).unwrap();
    // A rotated-out secret in grace, which a revocation ends.
    rotate_through(&app, &app.admin_token, &key.id, 3600, false).await;
    let pool = &app.server_pool;
    let policy = app.authorizer.policy();
    let cache = KeyCache::new(CacheSettings::default());

    for action in [
        EventAction::Disabled,
        EventAction::Enabled,
        EventAction::Revoked,
    ] {
        let before = find_key_by_id(pool, &id).await.unwrap().unwrap();
        let (organization, environment) = (before.key.organization_id, before.key.environment);
        cache.insert(CachedKey::new(before, &policy, 1));
        let event = NewEvent {
            key_id: &id,
            organization_id: organization,
            environment,
            actor_key_id: None,
            action,
            changes: serde_json::json!({}),
            waiter: Waiter::Nobody,
        };
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

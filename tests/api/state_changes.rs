//! A disable, an enable or a revocation is followed in place by every replica
//! that holds the key: the event says all that changed, so the next request
//! needs no database read.

use keygate::cache::{CacheSettings, CachedKey, KeyCache};
use keygate::events::{EventAction, StateChange};
use keygate::grpc::pb::{self, Reason};
use keygate::key::Key;
use keygate::store::keys::{find_key_by_id, set_disabled, set_revoked};
use keygate::token::KeyId;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

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
    assert_complete(Some(revoke_through(&a, &a.admin_token, &revoked).await), 3);
    let admin = &a.admin_token;
    for (through, key, disabled) in [
        (&b, &disabled, true),
        (&c, &reenabled, true),
        (&c, &reenabled, false),
    ] {
        assert_complete(
            set_disabled_through(through, admin, key, disabled, true).await,
            3,
        );
    }

    // With no database to read a key from, only what each cache followed can
    // answer (a reload would fail).
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
    assert_eq!(
        authorize_on_all(&all, &reenabled_token, "GET", "/customers").await,
        vec![Reason::Ok; 3]
    );
}

/// Every field of a key, and whether it holds a rotated-out secret.
fn comparable(key: &Key, has_previous_secret: bool) -> String {
    format!(
        "id {} organization {:?} kind {:?} environment {:?} name {} description {} \
         scopes {:?} cidrs {:?} expires {:?} metadata {:?} lock_scopes {} version {} \
         created_by {:?} created {:?} updated {:?} disabled {:?} revoked {:?} grace {:?} \
         last_used {:?} previous {}",
        key.id,
        key.organization_id,
        key.kind,
        key.environment,
        key.name,
        key.description,
        key.scopes
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        key.allowed_cidrs,
        key.expires_at,
        key.metadata,
        key.lock_scopes,
        key.version,
        key.created_by,
        key.created_at,
        key.updated_at,
        key.disabled_at,
        key.revoked_at,
        key.previous_secret_expires_at,
        key.last_used_at,
        has_previous_secret,
    )
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
        cache.insert(CachedKey::new(before, &policy, 1));
        match action {
            EventAction::Revoked => set_revoked(pool, &id).await.map(drop),
            _ => set_disabled(pool, &id, action == EventAction::Disabled)
                .await
                .map(drop),
        }
        .unwrap();
        let written = find_key_by_id(pool, &id).await.unwrap().unwrap();
        let change = StateChange {
            action,
            at: written.key.updated_at,
        };
        cache.follow_event(id, written.key.version, Some(change), &policy);
        let followed = cache.get(&id).flatten().expect("followed in place");
        assert_eq!(
            comparable(&followed.key, followed.previous_secret_hash.is_some()),
            comparable(&written.key, written.previous_secret_hash.is_some()),
            "{action:?}"
        );
        assert!(followed.secret_hash == written.secret_hash);
    }
}

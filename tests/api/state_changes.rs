//! A disable, an enable or a revocation is followed in place by every replica
//! that holds the key: the event says all that changed, so the next request
//! needs no database read.

use keygate::cache::{CacheSettings, CachedKey, KeyCache};
use keygate::events::{EventAction, StateChange};
use keygate::grpc::pb::{self, Reason};
use keygate::key::Key;
use keygate::store::changes::{set_disabled, set_revoked};
use keygate::store::events::{NewEvent, Waiter};
use keygate::store::keys::find_key_by_id;
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

/// Every field of a key (a field added to `Key` must be added here: the
/// pattern names them all), and whether it holds a rotated-out secret.
fn comparable(key: &Key, has_previous_secret: bool) -> String {
    let Key {
        id,
        organization_id,
        kind,
        environment,
        name,
        description,
        scopes,
        allowed_cidrs,
        expires_at,
        metadata,
        lock_scopes,
        version,
        created_by,
        created_at,
        updated_at,
        disabled_at,
        revoked_at,
        previous_secret_expires_at,
        last_used_at,
    } = key;
    let scopes: Vec<String> = scopes.iter().map(ToString::to_string).collect();
    format!(
        "id {id} organization {organization_id:?} kind {kind:?} environment {environment:?} \
         name {name} description {description} scopes {scopes:?} cidrs {allowed_cidrs:?} \
         expires {expires_at:?} metadata {metadata:?} lock_scopes {lock_scopes} \
         version {version} created_by {created_by:?} created {created_at:?} \
         updated {updated_at:?} disabled {disabled_at:?} revoked {revoked_at:?} \
         grace {previous_secret_expires_at:?} last_used {last_used_at:?} \
         previous {has_previous_secret}"
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
        let (before_version, organization, environment) = (
            before.key.version,
            before.key.organization_id,
            before.key.environment,
        );
        cache.insert(CachedKey::new(before, &policy, 1));
        let event = NewEvent {
            key_id: &id,
            key_version: before_version + 1,
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
        let followed = cache.get(&id).flatten().expect("followed in place");
        assert_eq!(
            comparable(&followed.key, followed.previous_secret_hash.is_some()),
            comparable(&written.key, written.previous_secret_hash.is_some()),
            "{action:?}"
        );
        assert!(followed.secret_hash == written.secret_hash);
    }
}

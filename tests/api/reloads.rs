//! A key reloaded after a change keeps the digests of the secrets argon2
//! accepted against its unchanged hashes: a change to a key in use costs each
//! replica a row read, not an argon2 verification. And keys that do not fit
//! in a full cache are reloaded and verified again, but answered.

use keygate::grpc::pb::{self, Reason};

use crate::support::{
    assert_complete, authorize_on_all, decisions_on_all, revoke_through, rotate_through,
    set_scopes_through, three_replicas, token_for, warm_key, TestApp, TestDatabase,
};

/// Argon2 runs so far on each replica.
fn argon2_runs(replicas: &[&TestApp]) -> Vec<u64> {
    replicas
        .iter()
        .map(|replica| replica.authorizer.hasher().verifications())
        .collect()
}

#[tokio::test]
async fn a_key_reloaded_after_a_change_keeps_the_secrets_argon2_accepted() {
    let (a, b, c) = three_replicas().await;
    let all = [&a, &b, &c];
    let (key, token) = warm_key(&all, &["customers:read", "payments:read"]).await;
    let warmed = argon2_runs(&all);

    // A narrowing: every replica reloads the key and decides under the new
    // scopes, without verifying the unchanged secret again.
    let narrowed = set_scopes_through(&a, &a.admin_token, &key, &["payments:read"]).await;
    assert_complete(narrowed, 3);
    assert_eq!(
        authorize_on_all(&all, &token, "GET", "/customers").await,
        vec![Reason::PermissionDenied; 3]
    );
    assert_eq!(
        authorize_on_all(&all, &token, "GET", "/payments").await,
        vec![Reason::Ok; 3]
    );
    assert_eq!(
        argon2_runs(&all),
        warmed,
        "an unchanged secret needs no argon2"
    );

    // Someone else's secret for the same key is still checked, and refused.
    let forged = token_for(&keygate::domain::token::KeyId::parse(&key.id).unwrap());
    assert_eq!(
        b.authorize(&forged, "GET", "/payments", "").await.reason(),
        Reason::InvalidSecret
    );
    assert_eq!(
        b.authorizer.hasher().verifications(),
        warmed[1] + 1,
        "a secret never accepted is verified"
    );

    // A rotation with a grace period: the old secret is answered from the
    // previous slot without argon2; the new one is verified once per replica.
    let before_rotation = argon2_runs(&all);
    let rotated = rotate_through(&a, &a.admin_token, &key.id, 600, true).await;
    assert_complete(rotated.propagation, 3);
    for decision in decisions_on_all(&all, &token, "GET", "/payments").await {
        assert_eq!(decision.reason(), Reason::Ok);
        assert_eq!(decision.secret(), pb::SecretSlot::Previous);
    }
    assert_eq!(
        argon2_runs(&all),
        before_rotation,
        "the old secret needs no argon2"
    );
    for decision in decisions_on_all(&all, &rotated.token, "GET", "/payments").await {
        assert_eq!(decision.reason(), Reason::Ok);
        assert_eq!(decision.secret(), pb::SecretSlot::Current);
    }
    let once_more: Vec<u64> = before_rotation.iter().map(|runs| runs + 1).collect();
    assert_eq!(
        argon2_runs(&all),
        once_more,
        "the new secret is verified once"
    );

    // A revocation is refused everywhere, again without argon2.
    assert!(revoke_through(&a, &a.admin_token, &key).await.complete);
    assert_eq!(
        authorize_on_all(&all, &rotated.token, "GET", "/payments").await,
        vec![Reason::Revoked; 3]
    );
    assert_eq!(argon2_runs(&all), once_more);
    // Revoking also ends the old secret's grace period.
    assert_eq!(
        authorize_on_all(&all, &token, "GET", "/payments").await,
        vec![Reason::InvalidSecret; 3]
    );
}

#[tokio::test]
async fn keys_beyond_a_full_cache_are_still_answered() {
    let db = TestDatabase::create().await;
    let mut settings = db.settings();
    // Room for one key: the four compete for it (moka turns newcomers away
    // or evicts), so requests load and verify again, but are answered.
    settings.cache.capacity = 1;
    let app = TestApp::spawn_with(&db, settings).await;
    let keys = app.customer_readers(4).await;
    let verified_before = app.authorizer.hasher().verifications();
    let mut requests = 0;
    for _ in 0..5 {
        for (_, token) in &keys {
            let decision = app.authorize(token, "GET", "/customers", "").await;
            assert_eq!(decision.reason(), Reason::Ok);
            requests += 1;
        }
    }
    let verified = app.authorizer.hasher().verifications() - verified_before;
    assert!(
        verified <= requests,
        "{verified} argon2 runs for {requests} requests"
    );
}

//! Who may call what: isolation between organizations and environments,
//! least privilege, and the credential checks.

use keygate::grpc::pb::{self, Environment, KeyKind};
use prost_types::{FieldMask, Timestamp};
use tonic::metadata::MetadataValue;
use tonic::{Code, Request};

use crate::support::{
    assert_case_status, assert_complete, assert_status, authed, key_request, revoke_through,
    set_disabled_through, token_for, KeyRpc, TestApp,
};

const MANAGER: &[&str] = &["api_keys:*", "customers:*", "payments:read"];

#[tokio::test]
async fn organization_keys_see_only_their_own_organization() {
    let app = TestApp::spawn().await;
    let acme = app.create_organization("Acme").await;
    let globex = app.create_organization("Globex").await;
    let (_, acme_token) = app.org_key(&acme, Environment::Live, MANAGER).await;
    let (acme_key, _) = app
        .org_key(&acme, Environment::Live, &["customers:read"])
        .await;
    let (globex_key, _) = app
        .org_key(&globex, Environment::Live, &["customers:read"])
        .await;
    let mut client = app.client.clone();
    let before = app.row_counts().await;

    // Another organization's key answers NOT_FOUND to every call, as would a missing one.
    for rpc in [
        KeyRpc::GetKey,
        KeyRpc::DisableKey,
        KeyRpc::RevokeKey,
        KeyRpc::DeleteKey,
        KeyRpc::RotateKey,
    ] {
        let answer = rpc.call(&app, &acme_token, &globex_key.id).await;
        let case = format!("{rpc:?} of another organization's key");
        assert_case_status(&case, answer, Code::NotFound, "key not found");
    }
    let update = pb::UpdateKeyRequest {
        key: Some(globex_key.clone()),
        update_mask: Some(FieldMask {
            paths: vec!["name".into()],
        }),
        ..Default::default()
    };
    assert_status(
        client.update_key(authed(&acme_token, update)).await,
        Code::NotFound,
        "key not found",
    );
    // Nor can it see the system key.
    assert_status(
        KeyRpc::GetKey
            .call(&app, &acme_token, &app.admin_key_id)
            .await,
        Code::NotFound,
        "key not found",
    );
    assert_eq!(app.row_counts().await, before);

    // Listing shows only its own organization, and naming another is refused.
    let listed = client
        .list_keys(authed(&acme_token, pb::ListKeysRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.keys.len(), 2);
    assert!(listed.keys.iter().all(|key| key.organization_id == acme));
    assert!(listed.keys.iter().any(|key| key.id == acme_key.id));
    let request = pb::ListKeysRequest {
        organization_id: globex.clone(),
        ..Default::default()
    };
    assert_status(
        client.list_keys(authed(&acme_token, request)).await,
        Code::PermissionDenied,
        "own organization",
    );

    // Its events are confined the same way.
    let request = pb::ListKeyEventsRequest::default();
    let events = client
        .list_key_events(authed(&acme_token, request))
        .await
        .unwrap()
        .into_inner()
        .events;
    assert!(events.iter().all(|event| event.organization_id == acme));
    let request = pb::ListKeyEventsRequest {
        key_id: globex_key.id.clone(),
        ..Default::default()
    };
    let events = client
        .list_key_events(authed(&acme_token, request))
        .await
        .unwrap()
        .into_inner()
        .events;
    assert!(events.is_empty());

    // Creating in another organization is refused and writes nothing.
    let request = key_request(&globex, Environment::Live, &["customers:read"]);
    assert_status(
        app.create_key_as(&acme_token, request).await,
        Code::PermissionDenied,
        "own organization",
    );
    assert_eq!(app.row_counts().await, before);

    // Leaving the organization empty means its own.
    let (created, _) = app
        .create_key_as(
            &acme_token,
            key_request("", Environment::Live, &["customers:read"]),
        )
        .await
        .unwrap();
    assert_eq!(created.organization_id, acme);
}

#[tokio::test]
async fn test_keys_manage_only_test_keys() {
    let app = TestApp::spawn().await;
    let org = app.create_organization("Acme").await;
    let (_, test_token) = app.org_key(&org, Environment::Test, MANAGER).await;
    let (live_key, _) = app
        .org_key(&org, Environment::Live, &["customers:read"])
        .await;
    let mut client = app.client.clone();
    let before = app.row_counts().await;

    let request = key_request(&org, Environment::Live, &["customers:read"]);
    assert_status(
        app.create_key_as(&test_token, request).await,
        Code::PermissionDenied,
        "test keys",
    );
    for rpc in [KeyRpc::GetKey, KeyRpc::RevokeKey] {
        let answer = rpc.call(&app, &test_token, &live_key.id).await;
        let case = format!("{rpc:?} of a live key");
        assert_case_status(&case, answer, Code::NotFound, "key not found");
    }
    assert_eq!(app.row_counts().await, before);

    let (created, token) = app
        .create_key_as(
            &test_token,
            key_request(&org, Environment::Test, &["customers:read"]),
        )
        .await
        .unwrap();
    assert!(token.starts_with("kg_test_"));
    let listed = client
        .list_keys(authed(&test_token, pb::ListKeysRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert!(listed
        .keys
        .iter()
        .all(|key| key.environment() == Environment::Test));
    assert!(listed.keys.iter().any(|key| key.id == created.id));
}

#[tokio::test]
async fn no_caller_grants_more_than_it_holds() {
    let app = TestApp::spawn().await;
    let org = app.create_organization("Acme").await;
    let (_, token) = app.org_key(&org, Environment::Live, MANAGER).await;
    let before = app.row_counts().await;

    // payments:read cannot become payments:* or payments:write; customers:* cannot become *.
    for wanted in [
        &["payments:*"][..],
        &["payments:write"],
        &["*"],
        &["customers:read", "refunds:write"],
        &["organizations:read"],
    ] {
        let result = app
            .create_key_as(&token, key_request(&org, Environment::Live, wanted))
            .await;
        let case = format!("granting {wanted:?}");
        assert_case_status(&case, result, Code::PermissionDenied, "cannot grant");
    }
    let mut preset = key_request(&org, Environment::Live, &[]);
    preset.preset = "write".into();
    assert_status(
        app.create_key_as(&token, preset).await,
        Code::PermissionDenied,
        "cannot grant",
    );
    assert_eq!(app.row_counts().await, before);

    // What it holds, wildcards and implications included, it may grant.
    for allowed in [
        &["customers:*"][..],
        &["customers:read"],
        &["payments:read", "api_keys:read"],
    ] {
        let granted = app
            .create_key_as(&token, key_request(&org, Environment::Live, allowed))
            .await;
        assert!(granted.is_ok(), "granting {allowed:?}: {granted:?}");
    }
    let (_, writer) = app
        .org_key(
            &org,
            Environment::Live,
            &["api_keys:create", "customers:write"],
        )
        .await;
    app.create_key_as(
        &writer,
        key_request(&org, Environment::Live, &["customers:read"]),
    )
    .await
    .unwrap();
    let result = app
        .create_key_as(
            &writer,
            key_request(&org, Environment::Live, &["customers:*"]),
        )
        .await;
    assert_status(result, Code::PermissionDenied, "cannot grant customers:*");
}

#[tokio::test]
async fn no_caller_widens_or_takes_over_a_broader_key() {
    let app = TestApp::spawn().await;
    let org = app.create_organization("Acme").await;
    let (_, token) = app.org_key(&org, Environment::Live, MANAGER).await;
    let (own, _) = app
        .create_key_as(
            &token,
            key_request(&org, Environment::Live, &["customers:read"]),
        )
        .await
        .unwrap();
    let (broader, _) = app
        .org_key(&org, Environment::Live, &["refunds:write"])
        .await;
    let mut client = app.client.clone();
    let before = app.row_counts().await;

    let mut widened = own.clone();
    widened.scopes = vec!["payments:write".into()];
    let request = pb::UpdateKeyRequest {
        key: Some(widened),
        update_mask: Some(FieldMask {
            paths: vec!["scopes".into()],
        }),
        ..Default::default()
    };
    assert_status(
        client.update_key(authed(&token, request)).await,
        Code::PermissionDenied,
        "cannot grant",
    );

    let request = pb::RotateKeyRequest {
        key_id: broader.id.clone(),
        grace_period: None,
        ..Default::default()
    };
    assert_status(
        client.rotate_key(authed(&token, request)).await,
        Code::PermissionDenied,
        "target key holds scopes",
    );
    let mut renamed = broader.clone();
    renamed.name = "mine now".into();
    let request = pb::UpdateKeyRequest {
        key: Some(renamed),
        update_mask: Some(FieldMask {
            paths: vec!["name".into()],
        }),
        ..Default::default()
    };
    assert_status(
        client.update_key(authed(&token, request)).await,
        Code::PermissionDenied,
        "target key holds scopes",
    );
    assert_eq!(app.row_counts().await, before);
}

#[tokio::test]
async fn expiring_callers_cannot_outlive_themselves() {
    let app = TestApp::spawn().await;
    let org = app.create_organization("Acme").await;
    let in_days = |days: i64| {
        let time = chrono::Utc::now() + chrono::Duration::days(days);
        Some(Timestamp {
            seconds: time.timestamp(),
            nanos: 0,
        })
    };
    let mut request = key_request(&org, Environment::Live, MANAGER);
    request.expire_time = in_days(7);
    let (_, token) = app.create_key(request).await;
    let before = app.row_counts().await;

    for (case, expiry) in [
        ("no expiry", None),
        ("an expiry after the caller's", in_days(8)),
    ] {
        let mut request = key_request(&org, Environment::Live, &["customers:read"]);
        request.expire_time = expiry;
        let created = app.create_key_as(&token, request).await;
        assert_case_status(case, created, Code::PermissionDenied, "expire_time");
    }
    assert_eq!(app.row_counts().await, before);
    let mut request = key_request(&org, Environment::Live, &["customers:read"]);
    request.expire_time = in_days(6);
    let (created, _) = app.create_key_as(&token, request).await.unwrap();

    let mut cleared = created.clone();
    cleared.expire_time = None;
    let request = pb::UpdateKeyRequest {
        key: Some(cleared),
        update_mask: Some(FieldMask {
            paths: vec!["expire_time".into()],
        }),
        ..Default::default()
    };
    assert_status(
        app.client.clone().update_key(authed(&token, request)).await,
        Code::PermissionDenied,
        "expire_time",
    );
}

#[tokio::test]
async fn only_system_keys_create_system_keys() {
    let app = TestApp::spawn().await;
    let org = app.create_organization("Acme").await;
    let (_, token) = app.org_key(&org, Environment::Live, &["*"]).await;
    let before = app.row_counts().await;
    let mut request = key_request("", Environment::Live, &["customers:read"]);
    request.kind = KeyKind::System.into();
    assert_status(
        app.create_key_as(&token, request.clone()).await,
        Code::PermissionDenied,
        "system key",
    );
    assert_eq!(app.row_counts().await, before);

    let (system_key, _) = app.create_key(request).await;
    assert_eq!(system_key.kind(), KeyKind::System);
    assert_eq!(system_key.organization_id, "");
}

#[tokio::test]
async fn callers_need_the_matching_permission() {
    let app = TestApp::spawn().await;
    let org = app.create_organization("Acme").await;
    let (target, _) = app
        .org_key(&org, Environment::Live, &["customers:read"])
        .await;
    let (_, reader) = app
        .org_key(&org, Environment::Live, &["api_keys:read", "customers:*"])
        .await;
    let mut client = app.client.clone();
    let before = app.row_counts().await;

    KeyRpc::GetKey
        .call(&app, &reader, &target.id)
        .await
        .unwrap();
    let request = key_request(&org, Environment::Live, &["customers:read"]);
    assert_status(
        app.create_key_as(&reader, request).await,
        Code::PermissionDenied,
        "lacks api_keys:create",
    );
    for (rpc, lacking) in [
        (KeyRpc::DisableKey, "lacks api_keys:update"),
        (KeyRpc::RotateKey, "lacks api_keys:update"),
        (KeyRpc::RevokeKey, "lacks api_keys:delete"),
        (KeyRpc::DeleteKey, "lacks api_keys:delete"),
    ] {
        let answer = rpc.call(&app, &reader, &target.id).await;
        assert_case_status(&format!("{rpc:?}"), answer, Code::PermissionDenied, lacking);
    }

    let (_, no_read) = app
        .org_key(&org, Environment::Live, &["customers:read"])
        .await;
    let before_listing = app.row_counts().await;
    assert_status(
        client
            .list_keys(authed(&no_read, pb::ListKeysRequest::default()))
            .await,
        Code::PermissionDenied,
        "lacks api_keys:read",
    );
    assert_eq!(
        (before.0 + 1, before.1 + 1),
        before_listing,
        "refused calls wrote nothing"
    );
}

#[tokio::test]
async fn missing_or_bad_credentials_are_unauthenticated() {
    let app = TestApp::spawn().await;
    let mut client = app.client.clone();
    let admin = app.admin_token.clone();
    let body_start = "kg_live_".len();
    let mut wrong_secret = admin.clone().into_bytes();
    wrong_secret[body_start + 30] = if wrong_secret[body_start + 30] == b'a' {
        b'b'
    } else {
        b'a'
    };
    let wrong_secret = String::from_utf8(wrong_secret).unwrap();
    let unknown = token_for(&keygate::domain::token::KeyId::generate());
    let wrong_environment = admin.replacen("kg_live_", "kg_test_", 1);

    let bad_headers = [
        ("no header", String::new()),
        ("no token", "Bearer ".to_owned()),
        ("a password", "Basic dXNlcjpwYXNz".to_owned()),
        (
            "a token cut short",
            format!("Bearer {}", &admin[..admin.len() - 1]),
        ),
        (
            "another prefix",
            format!("Bearer {}", admin.replacen("kg_", "sk_", 1)),
        ),
        ("a wrong secret", format!("Bearer {wrong_secret}")),
        ("an unknown key", format!("Bearer {unknown}")),
        (
            "the wrong environment",
            format!("Bearer {wrong_environment}"),
        ),
        ("a character too many", format!("Bearer {admin}x")),
        ("garbage", "Bearer kg_live_garbage".to_owned()),
    ];
    for (case, header) in bad_headers {
        let mut request = Request::new(pb::ListKeysRequest::default());
        if !header.is_empty() {
            request.metadata_mut().insert(
                "authorization",
                MetadataValue::try_from(header.as_str()).unwrap(),
            );
        }
        let listed = client.list_keys(request).await;
        assert_case_status(case, listed, Code::Unauthenticated, "bearer token");
    }
    // Messages never echo what was presented.
    let mut request = Request::new(pb::ListKeysRequest::default());
    request.metadata_mut().insert(
        "authorization",
        MetadataValue::try_from(format!("Bearer {wrong_secret}")).unwrap(),
    );
    let status = client.list_keys(request).await.unwrap_err();
    assert!(!status.message().contains(&wrong_secret[body_start..]));
}

#[tokio::test]
async fn a_calling_keys_allowlist_applies_to_key_management_too() {
    let app = TestApp::spawn().await;
    let org = app.create_organization("Acme").await;
    let mut elsewhere = key_request(&org, Environment::Live, MANAGER);
    elsewhere.allowed_cidrs = vec!["10.0.0.0/8".into()];
    let (_, remote_only) = app.create_key(elsewhere).await;
    let mut loopback = key_request(&org, Environment::Live, MANAGER);
    loopback.allowed_cidrs = vec!["127.0.0.0/8".into(), "::1".into()];
    let (_, local) = app.create_key(loopback).await;
    let before = app.row_counts().await;

    // The tests call from 127.0.0.1.
    let listing = app
        .client
        .clone()
        .list_keys(authed(&remote_only, pb::ListKeysRequest::default()))
        .await;
    assert_status(listing, Code::PermissionDenied, "address");
    app.client
        .clone()
        .list_keys(authed(&local, pb::ListKeysRequest::default()))
        .await
        .unwrap();

    // It may only give out keys confined to its own networks.
    for networks in [
        vec![],
        vec!["10.0.0.0/8".to_owned()],
        vec!["0.0.0.0/0".to_owned()],
    ] {
        let mut request = key_request(&org, Environment::Live, &["customers:read"]);
        let case = format!("networks {networks:?}");
        request.allowed_cidrs = networks;
        let created = app.create_key_as(&local, request).await;
        assert_case_status(&case, created, Code::PermissionDenied, "allowed_cidrs");
    }
    assert_eq!(app.row_counts().await, before);
    let mut request = key_request(&org, Environment::Live, &["customers:read"]);
    request.allowed_cidrs = vec!["127.0.0.1".into()];
    app.create_key_as(&local, request).await.unwrap();
}

#[tokio::test]
async fn reissuing_and_re_enabling_follow_the_same_limits_as_creating() {
    let app = TestApp::spawn().await;
    let org = app.create_organization("Acme").await;
    let mut expiring = key_request(&org, Environment::Live, MANAGER);
    let in_week = chrono::Utc::now() + chrono::Duration::days(7);
    expiring.expire_time = Some(Timestamp {
        seconds: in_week.timestamp(),
        nanos: 0,
    });
    let (_, expiring_token) = app.create_key(expiring).await;
    let (forever, _) = app
        .org_key(&org, Environment::Live, &["customers:read"])
        .await;
    let request = pb::RotateKeyRequest {
        key_id: forever.id.clone(),
        ..Default::default()
    };
    let result = app
        .client
        .clone()
        .rotate_key(authed(&expiring_token, request))
        .await;
    assert_status(result, Code::PermissionDenied, "expire_time");

    let (_, narrow) = app
        .org_key(
            &org,
            Environment::Live,
            &["api_keys:update", "customers:read"],
        )
        .await;
    let (broader, _) = app
        .org_key(&org, Environment::Live, &["refunds:write"])
        .await;
    let mut client = app.client.clone();
    let request = pb::DisableKeyRequest {
        key_id: broader.id.clone(),
        ..Default::default()
    };
    client
        .disable_key(authed(&app.admin_token, request))
        .await
        .unwrap();
    let before = app.row_counts().await;
    let request = pb::EnableKeyRequest {
        key_id: broader.id.clone(),
        ..Default::default()
    };
    assert_status(
        client.enable_key(authed(&narrow, request)).await,
        Code::PermissionDenied,
        "target key holds scopes",
    );
    assert_eq!(app.row_counts().await, before);
}

#[tokio::test]
async fn a_caller_revoked_behind_the_caches_back_cannot_complete_a_change() {
    let app = TestApp::spawn().await;
    let org = app.create_organization("Acme").await;
    let (caller, token) = app.org_key(&org, Environment::Live, MANAGER).await;
    app.client
        .clone()
        .list_keys(authed(&token, pb::ListKeysRequest::default()))
        .await
        .unwrap();
    // Revoked in the database without an event: the cache still trusts the key,
    // but a mutation re-reads the caller inside its transaction.
    sqlx::query("UPDATE api_keys SET revoked_at = now() WHERE id = $1")
        .bind(
            keygate::domain::token::KeyId::parse(&caller.id)
                .unwrap()
                .as_uuid(),
        )
        .execute(&app.pool)
        .await
        .unwrap();
    let before = app.row_counts().await;
    let request = key_request(&org, Environment::Live, &["customers:read"]);
    assert_status(
        app.create_key_as(&token, request).await,
        Code::Unauthenticated,
        "bearer token",
    );
    assert_eq!(app.row_counts().await, before);
}

/// A change's transaction reads the caller with the key it changes: a caller
/// changed, revoked or deleted behind the cache's back cannot complete it.
#[tokio::test]
async fn a_caller_changed_behind_the_caches_back_cannot_change_a_key() {
    let app = TestApp::spawn().await;
    let org = app.create_organization("Acme").await;
    for (change, code, message) in [
        (
            "UPDATE api_keys SET version = version + 1",
            Code::Unavailable,
            "",
        ),
        (
            "UPDATE api_keys SET revoked_at = now()",
            Code::Unauthenticated,
            "bearer token",
        ),
        (
            "DELETE FROM api_keys",
            Code::Unauthenticated,
            "bearer token",
        ),
    ] {
        let (target, _) = app
            .org_key(&org, Environment::Live, &["customers:read"])
            .await;
        let (caller, token) = app.org_key(&org, Environment::Live, MANAGER).await;
        let disable = || pb::DisableKeyRequest {
            key_id: target.id.clone(),
            ..Default::default()
        };
        // Warm the caller's cache entry, then change its row without an event.
        app.client
            .clone()
            .get_key(authed(
                &token,
                pb::GetKeyRequest {
                    key_id: caller.id.clone(),
                },
            ))
            .await
            .unwrap();
        sqlx::query(&format!("{change} WHERE id = $1"))
            .bind(
                keygate::domain::token::KeyId::parse(&caller.id)
                    .unwrap()
                    .as_uuid(),
            )
            .execute(&app.pool)
            .await
            .unwrap();
        let (counts, versions) = (app.row_counts().await, app.version_sum().await);
        let refused = app
            .client
            .clone()
            .disable_key(authed(&token, disable()))
            .await;
        assert_case_status(change, refused, code, message);
        assert_eq!(app.row_counts().await, counts, "after {change}");
        assert_eq!(app.version_sum().await, versions, "after {change}");
        if code == Code::Unavailable {
            // Reloaded on the next call, the changed caller may act again.
            set_disabled_through(&app, &token, &target, true, false).await;
        }
    }
}

/// A key may revoke itself: the key changed and the caller are one row.
#[tokio::test]
async fn a_key_may_revoke_itself() {
    let app = TestApp::spawn().await;
    let org = app.create_organization("Acme").await;
    let (caller, token) = app.org_key(&org, Environment::Live, MANAGER).await;
    let propagation = revoke_through(&app, &token, &caller).await;
    assert_complete(Some(propagation), 1);
    let refused = app
        .client
        .clone()
        .list_keys(authed(&token, pb::ListKeysRequest::default()))
        .await;
    assert_status(refused, Code::Unauthenticated, "bearer token");
}

#[tokio::test]
async fn revoking_again_still_reports_propagation() {
    let app = TestApp::spawn().await;
    let org = app.create_organization("Acme").await;
    let (key, _) = app
        .org_key(&org, Environment::Live, &["customers:read"])
        .await;
    for _ in 0..2 {
        let request = pb::RevokeKeyRequest {
            key_id: key.id.clone(),
            ..Default::default()
        };
        let revoked = app
            .client
            .clone()
            .revoke_key(authed(&app.admin_token, request))
            .await
            .unwrap()
            .into_inner();
        let propagation = revoked.propagation.unwrap();
        assert!(
            propagation.waited && propagation.complete,
            "{propagation:?}"
        );
    }
}

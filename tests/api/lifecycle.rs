//! A key's life through KeyService: created (from scopes or a preset) with a
//! token shown once, listed newest first, updated unless its scopes are locked,
//! disabled, enabled, revoked, deleted, and expired.

use keygate::grpc::pb::{self, Environment, KeyKind, KeyState};
use prost_types::{FieldMask, Timestamp};
use tonic::Code;

use crate::support::{assert_status, authed, key_request, secret_of, TestApp};

fn in_days(days: i64) -> Timestamp {
    let time = chrono::Utc::now() + chrono::Duration::days(days);
    Timestamp {
        seconds: time.timestamp(),
        nanos: 0,
    }
}

#[tokio::test]
async fn create_key_returns_a_working_token_once() {
    let app = TestApp::spawn().await;
    let org = app.create_organization("Acme").await;
    let mut request = key_request(
        &org,
        Environment::Live,
        &["api_keys:read", "customers:write"],
    );
    request.description = "billing sync".into();
    request.allowed_cidrs = vec!["127.0.0.0/8".into(), "2001:db8::1".into()];
    request.metadata.insert("team".into(), "billing".into());
    request.expire_time = Some(in_days(30));
    let (key, token) = app.create_key(request).await;

    assert!(token.starts_with("kg_live_"));
    assert_eq!(token.len(), "kg_live_".len() + 71);
    assert!(token.contains(&key.id));
    assert_eq!(key.display_hint, format!("kg_live_{}", &key.id[..4]));
    assert_eq!(key.organization_id, org);
    assert_eq!(key.kind(), KeyKind::Organization);
    assert_eq!(key.state(), KeyState::Active);
    assert_eq!(key.version, 1);
    assert_eq!(key.allowed_cidrs, vec!["127.0.0.0/8", "2001:db8::1/128"]);
    assert_eq!(key.metadata["team"], "billing");
    assert_eq!(key.created_by_key_id, app.admin_key_id);

    // The new token authenticates, and the key it reads back carries no secret.
    let request = pb::GetKeyRequest {
        key_id: key.id.clone(),
    };
    let fetched = app
        .client
        .clone()
        .get_key(authed(&token, request))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fetched, key);
    let stored_hash: String = sqlx::query_scalar("SELECT secret_hash FROM api_keys WHERE id = $1")
        .bind(uuid_of(&app, &key.id).await)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(stored_hash.starts_with("$argon2id$"));
    assert!(!stored_hash.contains(secret_of(&token)));
}

async fn uuid_of(app: &TestApp, key_id: &str) -> uuid::Uuid {
    let id = keygate::domain::token::KeyId::parse(key_id)
        .unwrap()
        .as_uuid();
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM api_keys WHERE id = $1)")
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(exists);
    id
}

#[tokio::test]
async fn presets_expand_from_the_catalog() {
    let app = TestApp::spawn().await;
    let org = app.create_organization("Acme").await;
    let mut request = key_request(&org, Environment::Test, &[]);
    request.preset = "read_only".into();
    let (key, token) = app.create_key(request).await;
    assert_eq!(
        key.scopes,
        vec![
            "customers:read",
            "plans:read",
            "payments:read",
            "subscriptions:read"
        ]
    );
    assert!(token.starts_with("kg_test_"));
}

#[tokio::test]
async fn list_keys_pages_newest_first() {
    let app = TestApp::spawn().await;
    let org = app.create_organization("Acme").await;
    let mut created = Vec::new();
    for _ in 0..5 {
        created.push(
            app.org_key(&org, Environment::Live, &["customers:read"])
                .await
                .0
                .id,
        );
    }
    created.reverse();
    let mut seen = Vec::new();
    let mut page_token = String::new();
    loop {
        let request = pb::ListKeysRequest {
            organization_id: org.clone(),
            page_size: 2,
            page_token,
        };
        let page = app
            .client
            .clone()
            .list_keys(authed(&app.admin_token, request))
            .await
            .unwrap()
            .into_inner();
        assert!(page.keys.len() <= 2);
        seen.extend(page.keys.into_iter().map(|key| key.id));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert_eq!(seen, created);

    // A system key listing without an organization sees every key, its own included.
    let request = pb::ListKeysRequest {
        page_size: 100,
        ..Default::default()
    };
    let all = app
        .client
        .clone()
        .list_keys(authed(&app.admin_token, request))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.keys.len(), 6);
}

#[tokio::test]
async fn update_changes_the_masked_fields_and_bumps_the_version() {
    let app = TestApp::spawn().await;
    let org = app.create_organization("Acme").await;
    let mut request = key_request(&org, Environment::Live, &["customers:read"]);
    request.metadata.insert("team".into(), "billing".into());
    request.expire_time = Some(in_days(10));
    let (key, _) = app.create_key(request).await;

    let mut changed = key.clone();
    changed.name = "renamed key".into();
    changed.scopes = vec!["customers:write".into(), "payments:read".into()];
    changed.allowed_cidrs = vec!["192.0.2.0/24".into()];
    changed.expire_time = None;
    changed.metadata.clear();
    changed.description = "ignored: not in the mask".into();
    let mask = FieldMask {
        paths: vec![
            "name".into(),
            "scopes".into(),
            "allowed_cidrs".into(),
            "expire_time".into(),
            "metadata".into(),
        ],
    };
    let request = pb::UpdateKeyRequest {
        key: Some(changed),
        update_mask: Some(mask),
        ..Default::default()
    };
    let updated = app
        .client
        .clone()
        .update_key(authed(&app.admin_token, request))
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap();

    assert_eq!(updated.name, "renamed key");
    assert_eq!(updated.scopes, vec!["customers:write", "payments:read"]);
    assert_eq!(updated.allowed_cidrs, vec!["192.0.2.0/24"]);
    assert_eq!(updated.expire_time, None);
    assert!(updated.metadata.is_empty());
    assert_eq!(updated.description, "");
    assert_eq!(updated.version, 2);
}

#[tokio::test]
async fn locked_scopes_cannot_change() {
    let app = TestApp::spawn().await;
    let org = app.create_organization("Acme").await;
    let mut request = key_request(&org, Environment::Live, &["customers:read"]);
    request.lock_scopes = true;
    let (key, _) = app.create_key(request).await;
    let before = app.row_counts().await;

    let mut changed = key.clone();
    changed.scopes = vec!["customers:write".into()];
    let mask = FieldMask {
        paths: vec!["scopes".into()],
    };
    let request = pb::UpdateKeyRequest {
        key: Some(changed.clone()),
        update_mask: Some(mask),
        ..Default::default()
    };
    let result = app
        .client
        .clone()
        .update_key(authed(&app.admin_token, request))
        .await;
    assert_status(result, Code::FailedPrecondition, "lock_scopes");
    assert_eq!(app.row_counts().await, before);

    // Other fields of a locked key still change.
    changed.name = "still editable".into();
    let request = pb::UpdateKeyRequest {
        key: Some(changed),
        update_mask: Some(FieldMask {
            paths: vec!["name".into()],
        }),
        ..Default::default()
    };
    let updated = app
        .client
        .clone()
        .update_key(authed(&app.admin_token, request))
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap();
    assert_eq!(updated.scopes, vec!["customers:read"]);
    assert_eq!(updated.version, 2);
}

#[tokio::test]
async fn disable_enable_revoke_and_delete() {
    let app = TestApp::spawn().await;
    let org = app.create_organization("Acme").await;
    let (key, token) = app
        .org_key(&org, Environment::Live, &["api_keys:read"])
        .await;
    let mut client = app.client.clone();
    let get_self = || {
        authed(
            &token,
            pb::GetKeyRequest {
                key_id: key.id.clone(),
            },
        )
    };
    let admin = |key_id: &str| pb::DisableKeyRequest {
        key_id: key_id.to_owned(),
        ..Default::default()
    };

    let disabled = client
        .disable_key(authed(&app.admin_token, admin(&key.id)))
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap();
    assert_eq!(disabled.state(), KeyState::Disabled);
    assert!(disabled.disable_time.is_some());
    assert_status(
        client.get_key(get_self()).await,
        Code::Unauthenticated,
        "bearer token",
    );

    let request = pb::EnableKeyRequest {
        key_id: key.id.clone(),
        ..Default::default()
    };
    let enabled = client
        .enable_key(authed(&app.admin_token, request))
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap();
    assert_eq!(enabled.state(), KeyState::Active);
    assert_eq!(enabled.version, 3);
    client.get_key(get_self()).await.unwrap();

    let request = pb::RevokeKeyRequest {
        key_id: key.id.clone(),
        ..Default::default()
    };
    let revoked = client
        .revoke_key(authed(&app.admin_token, request))
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap();
    assert_eq!(revoked.state(), KeyState::Revoked);
    assert_status(
        client.get_key(get_self()).await,
        Code::Unauthenticated,
        "bearer token",
    );

    // Revocation is permanent.
    let before = app.row_counts().await;
    let request = pb::EnableKeyRequest {
        key_id: key.id.clone(),
        ..Default::default()
    };
    assert_status(
        client.enable_key(authed(&app.admin_token, request)).await,
        Code::FailedPrecondition,
        "revoked",
    );
    let request = pb::RotateKeyRequest {
        key_id: key.id.clone(),
        grace_period: None,
        ..Default::default()
    };
    assert_status(
        client.rotate_key(authed(&app.admin_token, request)).await,
        Code::FailedPrecondition,
        "revoked",
    );
    assert_eq!(app.row_counts().await, before);

    let request = pb::DeleteKeyRequest {
        key_id: key.id.clone(),
        ..Default::default()
    };
    client
        .delete_key(authed(&app.admin_token, request))
        .await
        .unwrap();
    let request = pb::GetKeyRequest {
        key_id: key.id.clone(),
    };
    assert_status(
        client.get_key(authed(&app.admin_token, request)).await,
        Code::NotFound,
        "key not found",
    );

    // The audit trail survives the key.
    let request = pb::ListKeyEventsRequest {
        key_id: key.id.clone(),
        ..Default::default()
    };
    let events = client
        .list_key_events(authed(&app.admin_token, request))
        .await
        .unwrap()
        .into_inner()
        .events;
    let actions: Vec<&str> = events.iter().map(|event| event.action.as_str()).collect();
    assert_eq!(
        actions,
        vec!["deleted", "revoked", "enabled", "disabled", "created"]
    );
}

#[tokio::test]
async fn expired_keys_read_as_expired_and_cannot_call() {
    let app = TestApp::spawn().await;
    let org = app.create_organization("Acme").await;
    let mut request = key_request(&org, Environment::Live, &["api_keys:read"]);
    let soon = chrono::Utc::now() + chrono::Duration::milliseconds(1500);
    request.expire_time = Some(Timestamp {
        seconds: soon.timestamp(),
        nanos: soon.timestamp_subsec_nanos() as i32,
    });
    let (key, token) = app.create_key(request).await;
    let mut client = app.client.clone();
    client
        .get_key(authed(
            &token,
            pb::GetKeyRequest {
                key_id: key.id.clone(),
            },
        ))
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1600)).await;
    let result = client
        .get_key(authed(
            &token,
            pb::GetKeyRequest {
                key_id: key.id.clone(),
            },
        ))
        .await;
    assert_status(result, Code::Unauthenticated, "bearer token");
    let fetched = client
        .get_key(authed(
            &app.admin_token,
            pb::GetKeyRequest { key_id: key.id },
        ))
        .await
        .unwrap();
    assert_eq!(fetched.into_inner().state(), KeyState::Expired);
}

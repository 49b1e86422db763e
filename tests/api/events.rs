//! The audit log as ListKeyEvents shows it: every mutation, newest first,
//! with what changed and never a secret; and the key-event notifications,
//! which arrive in commit order. (How events are numbered is the store
//! tests' business.)

use keygate::grpc::pb::{self, Environment};
use keygate::replication::notification::KEY_EVENTS_CHANNEL;
use prost_types::{Duration, FieldMask};

use crate::support::{authed, secret_of, set_disabled_through, TestApp};

#[tokio::test]
async fn every_mutation_is_recorded_newest_first_without_secrets() {
    let app = TestApp::spawn().await;
    let org = app.create_organization("Acme").await;
    let (key, token) = app
        .org_key(&org, Environment::Live, &["customers:read"])
        .await;
    let mut client = app.client.clone();
    let admin = app.admin_token.clone();

    let mut renamed = key.clone();
    renamed.name = "renamed".into();
    let mask = Some(FieldMask {
        paths: vec!["name".into()],
    });
    client
        .update_key(authed(
            &admin,
            pb::UpdateKeyRequest {
                key: Some(renamed),
                update_mask: mask,
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    let rotation = pb::RotateKeyRequest {
        key_id: key.id.clone(),
        grace_period: Some(Duration {
            seconds: 60,
            nanos: 0,
        }),
        ..Default::default()
    };
    let rotated_token = client
        .rotate_key(authed(&admin, rotation))
        .await
        .unwrap()
        .into_inner()
        .token;
    client
        .disable_key(authed(
            &admin,
            pb::DisableKeyRequest {
                key_id: key.id.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    client
        .enable_key(authed(
            &admin,
            pb::EnableKeyRequest {
                key_id: key.id.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    client
        .revoke_key(authed(
            &admin,
            pb::RevokeKeyRequest {
                key_id: key.id.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    client
        .delete_key(authed(
            &admin,
            pb::DeleteKeyRequest {
                key_id: key.id.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap();

    let request = pb::ListKeyEventsRequest {
        key_id: key.id.clone(),
        page_size: 3,
        ..Default::default()
    };
    let first_page = client
        .list_key_events(authed(&admin, request))
        .await
        .unwrap()
        .into_inner();
    let request = pb::ListKeyEventsRequest {
        key_id: key.id.clone(),
        page_size: 10,
        page_token: first_page.next_page_token,
    };
    let second_page = client
        .list_key_events(authed(&admin, request))
        .await
        .unwrap()
        .into_inner();
    assert!(second_page.next_page_token.is_empty());
    let events: Vec<pb::KeyEvent> = first_page
        .events
        .into_iter()
        .chain(second_page.events)
        .collect();

    let actions: Vec<&str> = events.iter().map(|event| event.action.as_str()).collect();
    assert_eq!(
        actions,
        vec!["deleted", "revoked", "enabled", "disabled", "rotated", "updated", "created"]
    );
    assert!(events
        .windows(2)
        .all(|pair| pair[0].sequence > pair[1].sequence));
    for event in &events {
        assert_eq!(event.key_id, key.id);
        assert_eq!(event.organization_id, org);
        assert_eq!(event.actor_key_id, app.admin_key_id);
        assert!(event.occur_time.is_some());
        assert!(!event.changes_json.contains(secret_of(&token)));
        assert!(!event.changes_json.contains(secret_of(&rotated_token)));
        assert!(!event.changes_json.contains("argon2"));
    }
    let changes = |action: &str| -> serde_json::Value {
        let event = events.iter().find(|event| event.action == action).unwrap();
        serde_json::from_str(&event.changes_json).unwrap()
    };
    assert_eq!(changes("updated"), serde_json::json!({"name": "renamed"}));
    assert_eq!(changes("rotated")["grace_period_seconds"], 60);
    assert_eq!(
        changes("created")["scopes"],
        serde_json::json!(["customers:read"])
    );
}

#[tokio::test]
async fn concurrent_changes_are_numbered_in_commit_order() {
    let app = TestApp::spawn().await;
    let keys: Vec<pb::Key> = app
        .customer_readers(24)
        .await
        .into_iter()
        .map(|(key, _)| key)
        .collect();
    let mut listener = sqlx::postgres::PgListener::connect_with(&app.pool)
        .await
        .unwrap();
    listener.listen(KEY_EVENTS_CHANNEL).await.unwrap();

    let changes = keys
        .iter()
        .map(|key| set_disabled_through(&app, &app.admin_token, key, true, false));
    futures_util::future::join_all(changes).await;
    let mut sequences: Vec<i64> = Vec::new();
    while sequences.len() < keys.len() {
        let wait = std::time::Duration::from_secs(10);
        let notification = tokio::time::timeout(wait, listener.recv())
            .await
            .unwrap()
            .unwrap();
        let sequence = notification.payload().split(' ').next().unwrap();
        sequences.push(sequence.parse().unwrap());
    }
    // Notifications arrive in commit order, so the numbers must grow in it.
    assert!(
        sequences.windows(2).all(|pair| pair[0] < pair[1]),
        "{sequences:?}"
    );
}

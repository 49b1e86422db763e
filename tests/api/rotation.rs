//! RotateKey: the key keeps its id, gets a new secret, and the old one lasts
//! for the grace period asked for (zero to thirty days), and no longer.

use keygate::grpc::pb::{self, Environment};
use prost_types::Duration;
use tonic::Code;

use crate::support::{assert_case_status, authed, rotate_through, TestApp};

async fn rotate(app: &TestApp, key_id: &str, grace_seconds: i64) -> pb::RotateKeyResponse {
    rotate_through(app, &app.admin_token, key_id, grace_seconds, false).await
}

async fn can_read_itself(app: &TestApp, token: &str, key_id: &str) -> bool {
    let request = pb::GetKeyRequest {
        key_id: key_id.to_owned(),
    };
    match app.client.clone().get_key(authed(token, request)).await {
        Ok(_) => true,
        Err(status) if status.code() == Code::Unauthenticated => false,
        Err(status) => panic!("unexpected status {status:?}"),
    }
}

#[tokio::test]
async fn rotation_keeps_the_id_and_the_old_secret_lasts_for_the_grace_period() {
    let app = TestApp::spawn().await;
    let org = app.create_organization("Acme").await;
    let (key, old_token) = app
        .org_key(&org, Environment::Live, &["api_keys:read"])
        .await;

    let rotated = rotate(&app, &key.id, 2).await;
    let new_token = rotated.token;
    let rotated_key = rotated.key.unwrap();
    assert_eq!(rotated_key.id, key.id);
    assert_eq!(rotated_key.version, 2);
    assert!(rotated_key.previous_secret_expire_time.is_some());
    assert_ne!(new_token, old_token);
    assert!(new_token.contains(&key.id));

    assert!(can_read_itself(&app, &new_token, &key.id).await);
    assert!(can_read_itself(&app, &old_token, &key.id).await);
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    assert!(can_read_itself(&app, &new_token, &key.id).await);
    assert!(!can_read_itself(&app, &old_token, &key.id).await);
}

#[tokio::test]
async fn zero_grace_refuses_the_old_secret_at_once() {
    let app = TestApp::spawn().await;
    let org = app.create_organization("Acme").await;
    let (key, old_token) = app
        .org_key(&org, Environment::Test, &["api_keys:read"])
        .await;
    let rotated = rotate(&app, &key.id, 0).await;
    assert!(rotated.token.starts_with("kg_test_"));
    assert_eq!(rotated.key.unwrap().previous_secret_expire_time, None);
    assert!(!can_read_itself(&app, &old_token, &key.id).await);
    assert!(can_read_itself(&app, &rotated.token, &key.id).await);
}

#[tokio::test]
async fn a_second_rotation_retires_the_first_secret() {
    let app = TestApp::spawn().await;
    let org = app.create_organization("Acme").await;
    let (key, first) = app
        .org_key(&org, Environment::Live, &["api_keys:read"])
        .await;
    let second = rotate(&app, &key.id, 3600).await.token;
    let third = rotate(&app, &key.id, 3600).await.token;
    assert!(!can_read_itself(&app, &first, &key.id).await);
    assert!(can_read_itself(&app, &second, &key.id).await);
    assert!(can_read_itself(&app, &third, &key.id).await);
}

#[tokio::test]
async fn grace_periods_outside_zero_to_thirty_days_are_refused() {
    let app = TestApp::spawn().await;
    let org = app.create_organization("Acme").await;
    let (key, _) = app
        .org_key(&org, Environment::Live, &["api_keys:read"])
        .await;
    let before = app.row_counts().await;
    for seconds in [30 * 86_400 + 1, -1] {
        let request = pb::RotateKeyRequest {
            key_id: key.id.clone(),
            grace_period: Some(Duration { seconds, nanos: 0 }),
            ..Default::default()
        };
        let result = app
            .client
            .clone()
            .rotate_key(authed(&app.admin_token, request))
            .await;
        let case = format!("grace period of {seconds} s");
        assert_case_status(&case, result, Code::InvalidArgument, "grace_period");
    }
    assert_eq!(app.row_counts().await, before);
    rotate(&app, &key.id, 30 * 86_400).await;
}

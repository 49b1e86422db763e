//! Bad input to the mutation RPCs: malformed key ids, durations that are not
//! proto durations, and changes to revoked keys. Exact status, nothing written.

use keygate::grpc::pb::{self, Environment};
use prost_types::{Duration, FieldMask};
use tonic::Code;

use crate::support::{assert_case_status, assert_status, authed, KeyRpc, TestApp};

#[tokio::test]
async fn mutations_refuse_malformed_key_ids() {
    let app = TestApp::spawn().await;
    let before = (app.row_counts().await, app.version_sum().await);
    let mutations = [
        KeyRpc::RotateKey,
        KeyRpc::DisableKey,
        KeyRpc::EnableKey,
        KeyRpc::RevokeKey,
        KeyRpc::DeleteKey,
    ];
    for bad in ["", "short", "!!!!!!!!!!!!!!!!!!!!!!"] {
        for rpc in mutations {
            let answer = rpc.call(&app, &app.admin_token, bad).await;
            let case = format!("{rpc:?} of {bad:?}");
            assert_case_status(&case, answer, Code::InvalidArgument, "key_id");
        }
    }
    assert_eq!((app.row_counts().await, app.version_sum().await), before);
}

#[tokio::test]
async fn rotation_refuses_grace_periods_that_are_not_durations() {
    let app = TestApp::spawn().await;
    let org = app.create_organization("Acme").await;
    let (key, _) = app
        .org_key(&org, Environment::Live, &["customers:read"])
        .await;
    let mut client = app.client.clone();
    let before = (app.row_counts().await, app.version_sum().await);
    let bad_grace_periods = [(i64::MAX, 0), (60, 1_000_000_000), (60, -1), (-60, 1)];
    for (seconds, nanos) in bad_grace_periods {
        let request = pb::RotateKeyRequest {
            key_id: key.id.clone(),
            grace_period: Some(Duration { seconds, nanos }),
            ..Default::default()
        };
        let rotated = client.rotate_key(authed(&app.admin_token, request)).await;
        let case = format!("grace period of {seconds} s {nanos} ns");
        assert_case_status(&case, rotated, Code::InvalidArgument, "grace_period");
    }
    assert_eq!((app.row_counts().await, app.version_sum().await), before);
}

#[tokio::test]
async fn a_revoked_key_cannot_be_updated_or_disabled() {
    let app = TestApp::spawn().await;
    let org = app.create_organization("Acme").await;
    let (key, _) = app
        .org_key(&org, Environment::Live, &["customers:read"])
        .await;
    let mut client = app.client.clone();
    let request = pb::RevokeKeyRequest {
        key_id: key.id.clone(),
        ..Default::default()
    };
    client
        .revoke_key(authed(&app.admin_token, request))
        .await
        .unwrap();
    let before = (app.row_counts().await, app.version_sum().await);

    let mut renamed = key.clone();
    renamed.name = "renamed".into();
    let request = pb::UpdateKeyRequest {
        key: Some(renamed),
        update_mask: Some(FieldMask {
            paths: vec!["name".into()],
        }),
        ..Default::default()
    };
    assert_status(
        client.update_key(authed(&app.admin_token, request)).await,
        Code::FailedPrecondition,
        "key is revoked",
    );
    let request = pb::DisableKeyRequest {
        key_id: key.id.clone(),
        ..Default::default()
    };
    assert_status(
        client.disable_key(authed(&app.admin_token, request)).await,
        Code::FailedPrecondition,
        "key is revoked",
    );
    assert_eq!((app.row_counts().await, app.version_sum().await), before);
}

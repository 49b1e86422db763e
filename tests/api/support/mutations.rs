//! Changes to a key through one replica, as the admin (or `admin_token`),
//! returning how far the change had spread when the call returned.

use keygate::grpc::pb;
use prost_types::FieldMask;

use super::app::TestApp;
use super::calls::authed;

/// Revokes `key` through `replica` (waiting, RevokeKey's default) and returns
/// how far the revocation had spread.
pub async fn revoke_through(
    replica: &TestApp,
    admin_token: &str,
    key: &pb::Key,
) -> pb::Propagation {
    let request = pb::RevokeKeyRequest {
        key_id: key.id.clone(),
        ..Default::default()
    };
    let revoked = replica
        .client
        .clone()
        .revoke_key(authed(admin_token, request))
        .await
        .unwrap();
    revoked.into_inner().propagation.unwrap()
}

/// Disables (`disabled`) or re-enables `key` through `replica`, waiting for
/// propagation if `wait`; returns the response's account of how far the
/// change had spread.
pub async fn set_disabled_through(
    replica: &TestApp,
    admin_token: &str,
    key: &pb::Key,
    disabled: bool,
    wait: bool,
) -> Option<pb::Propagation> {
    let mut client = replica.client.clone();
    let key_id = key.id.clone();
    let wait_for_propagation = Some(wait);
    if disabled {
        let request = pb::DisableKeyRequest {
            key_id,
            wait_for_propagation,
        };
        let response = client.disable_key(authed(admin_token, request)).await;
        response.unwrap().into_inner().propagation
    } else {
        let request = pb::EnableKeyRequest {
            key_id,
            wait_for_propagation,
        };
        let response = client.enable_key(authed(admin_token, request)).await;
        response.unwrap().into_inner().propagation
    }
}

/// Replaces `key`'s scopes through `replica`, waiting for every replica;
/// returns the response's account of how far the change had spread.
pub async fn set_scopes_through(
    replica: &TestApp,
    admin_token: &str,
    key: &pb::Key,
    scopes: &[&str],
) -> Option<pb::Propagation> {
    let mut changed = key.clone();
    changed.scopes = scopes.iter().map(|scope| scope.to_string()).collect();
    let request = pb::UpdateKeyRequest {
        key: Some(changed),
        update_mask: Some(FieldMask {
            paths: vec!["scopes".into()],
        }),
        wait_for_propagation: Some(true),
    };
    let updated = replica
        .client
        .clone()
        .update_key(authed(admin_token, request))
        .await
        .unwrap();
    updated.into_inner().propagation
}

/// Rotates `key_id` through `replica`, keeping the old secret for
/// `grace_seconds`, waiting for every replica when `wait`.
pub async fn rotate_through(
    replica: &TestApp,
    admin_token: &str,
    key_id: &str,
    grace_seconds: i64,
    wait: bool,
) -> pb::RotateKeyResponse {
    let request = pb::RotateKeyRequest {
        key_id: key_id.to_owned(),
        grace_period: Some(prost_types::Duration {
            seconds: grace_seconds,
            nanos: 0,
        }),
        wait_for_propagation: Some(wait),
    };
    replica
        .client
        .clone()
        .rotate_key(authed(admin_token, request))
        .await
        .unwrap()
        .into_inner()
}

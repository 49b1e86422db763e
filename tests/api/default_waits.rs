//! Which changes wait for every replica when the caller does not say: those
//! that take access away, and no others.

use std::time::{Duration, SystemTime};

use keygate::grpc::pb::{self, Reason};
use prost_types::{FieldMask, Timestamp};

use crate::support::{
    assert_complete, authed, authorize_on_all, three_replicas, warm_key, TestApp,
};

/// An UpdateKey of one field, and whether it waits by default.
struct Edit {
    case: &'static str,
    field: &'static str,
    set: fn(&mut pb::Key),
    waits: bool,
}

fn in_days(days: u64) -> Option<Timestamp> {
    Some(Timestamp::from(
        SystemTime::now() + Duration::from_secs(days * 86_400),
    ))
}

fn strings(texts: &[&str]) -> Vec<String> {
    texts.iter().map(|text| text.to_string()).collect()
}

/// Updates the fields named in `edit` through `replica`, leaving waiting to
/// the server's default; returns the response's propagation.
async fn update_by_default(replica: &TestApp, key: &pb::Key, edit: &Edit) -> pb::Propagation {
    let mut changed = key.clone();
    (edit.set)(&mut changed);
    let request = pb::UpdateKeyRequest {
        key: Some(changed),
        update_mask: Some(FieldMask {
            paths: vec![edit.field.to_owned()],
        }),
        wait_for_propagation: None,
    };
    let response = replica
        .client
        .clone()
        .update_key(authed(&replica.admin_token, request))
        .await
        .unwrap();
    response.into_inner().propagation.unwrap()
}

async fn rotate_by_default(
    replica: &TestApp,
    key: &pb::Key,
    grace_seconds: i64,
) -> pb::Propagation {
    let request = pb::RotateKeyRequest {
        key_id: key.id.clone(),
        grace_period: Some(prost_types::Duration {
            seconds: grace_seconds,
            nanos: 0,
        }),
        wait_for_propagation: None,
    };
    let response = replica
        .client
        .clone()
        .rotate_key(authed(&replica.admin_token, request))
        .await
        .unwrap();
    response.into_inner().propagation.unwrap()
}

#[tokio::test]
async fn updates_wait_by_default_exactly_when_they_take_access_away() {
    let (a, b, c) = three_replicas().await;
    let all = [&a, &b, &c];
    let (key, token) = warm_key(&all, &["customers:read", "payments:read"]).await;
    let edits = [
        Edit {
            case: "rename",
            field: "name",
            set: |key| key.name = "renamed".into(),
            waits: false,
        },
        Edit {
            case: "scope added",
            field: "scopes",
            set: |key| key.scopes = strings(&["customers:read", "payments:read", "plans:read"]),
            waits: false,
        },
        Edit {
            case: "read raised to write, which implies it",
            field: "scopes",
            set: |key| key.scopes = strings(&["customers:write", "payments:read", "plans:read"]),
            waits: false,
        },
        Edit {
            case: "scope removed",
            field: "scopes",
            set: |key| key.scopes = strings(&["customers:write", "plans:read"]),
            waits: true,
        },
        Edit {
            case: "first network",
            field: "allowed_cidrs",
            set: |key| key.allowed_cidrs = strings(&["10.0.0.0/8"]),
            waits: true,
        },
        Edit {
            case: "network widened",
            field: "allowed_cidrs",
            set: |key| key.allowed_cidrs = strings(&["10.0.0.0/7"]),
            waits: false,
        },
        Edit {
            case: "network narrowed",
            field: "allowed_cidrs",
            set: |key| key.allowed_cidrs = strings(&["10.1.0.0/16"]),
            waits: true,
        },
        Edit {
            case: "networks cleared",
            field: "allowed_cidrs",
            set: |key| key.allowed_cidrs = Vec::new(),
            waits: false,
        },
        Edit {
            case: "expiry set where there was none",
            field: "expire_time",
            set: |key| key.expire_time = in_days(30),
            waits: true,
        },
        Edit {
            case: "expiry pushed back",
            field: "expire_time",
            set: |key| key.expire_time = in_days(60),
            waits: false,
        },
        Edit {
            case: "expiry brought forward",
            field: "expire_time",
            set: |key| key.expire_time = in_days(10),
            waits: true,
        },
        Edit {
            case: "expiry cleared",
            field: "expire_time",
            set: |key| key.expire_time = None,
            waits: false,
        },
        Edit {
            case: "metadata",
            field: "metadata",
            set: |key| {
                key.metadata.insert("team".into(), "billing".into());
            },
            waits: false,
        },
    ];
    for edit in &edits {
        let propagation = update_by_default(&a, &key, edit).await;
        assert_eq!(propagation.waited, edit.waits, "{}", edit.case);
        if edit.waits {
            assert!(propagation.complete, "{}: {propagation:?}", edit.case);
            assert_eq!(propagation.confirmed_replicas, 3, "{}", edit.case);
        }
    }
    // The scope removed above is refused everywhere; what is left is not.
    assert_eq!(
        authorize_on_all(&all, &token, "GET", "/payments").await,
        vec![Reason::PermissionDenied; 3]
    );
    assert_eq!(
        authorize_on_all(&all, &token, "GET", "/customers").await,
        vec![Reason::Ok; 3]
    );

    // A caller may still opt out.
    let mut narrowed = key.clone();
    narrowed.scopes = strings(&["plans:read"]);
    let request = pb::UpdateKeyRequest {
        key: Some(narrowed),
        update_mask: Some(FieldMask {
            paths: vec!["scopes".into()],
        }),
        wait_for_propagation: Some(false),
    };
    let response = a
        .client
        .clone()
        .update_key(authed(&a.admin_token, request))
        .await
        .unwrap();
    assert!(!response.into_inner().propagation.unwrap().waited);
}

#[tokio::test]
async fn rotations_and_state_changes_wait_by_default_when_they_take_access_away() {
    let (a, b, c) = three_replicas().await;
    let all = [&a, &b, &c];
    let (key, _) = warm_key(&all, &["customers:read"]).await;

    let with_grace = rotate_by_default(&a, &key, 3600).await;
    assert!(!with_grace.waited, "nothing taken away: {with_grace:?}");
    let again = rotate_by_default(&a, &key, 3600).await;
    assert_complete(Some(again), 3);
    let without_grace = rotate_by_default(&a, &key, 0).await;
    assert_complete(Some(without_grace), 3);

    let mut client = a.client.clone();
    let admin = &a.admin_token;
    let key_id = key.id.clone();
    let request = pb::DisableKeyRequest {
        key_id: key_id.clone(),
        wait_for_propagation: None,
    };
    let disabled = client.disable_key(authed(admin, request)).await.unwrap();
    assert_complete(disabled.into_inner().propagation, 3);
    let request = pb::EnableKeyRequest {
        key_id: key_id.clone(),
        wait_for_propagation: None,
    };
    let enabled = client.enable_key(authed(admin, request)).await.unwrap();
    assert!(!enabled.into_inner().propagation.unwrap().waited);
    let request = pb::RevokeKeyRequest {
        key_id: key_id.clone(),
        wait_for_propagation: None,
    };
    let revoked = client.revoke_key(authed(admin, request)).await.unwrap();
    assert_complete(revoked.into_inner().propagation, 3);
    let request = pb::DeleteKeyRequest {
        key_id,
        wait_for_propagation: None,
    };
    let deleted = client.delete_key(authed(admin, request)).await.unwrap();
    assert_complete(deleted.into_inner().propagation, 3);
}

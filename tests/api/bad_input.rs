//! Every bad input named by the foundation issue: exact status, the field named
//! in the message, and nothing written.

use keygate::grpc::pb::{self, CreateKeyRequest, Environment};
use prost_types::{FieldMask, Timestamp};
use tonic::Code;

use crate::support::{assert_case_status, assert_status, authed, key_request, KeyRpc, TestApp};

/// Asserts CreateKey refuses `request` (the table's `case`) with `code` and a
/// message mentioning `needle`, and writes nothing.
async fn assert_create_refused(
    app: &TestApp,
    case: &str,
    request: CreateKeyRequest,
    code: Code,
    needle: &str,
) {
    let before = app.row_counts().await;
    let result = app.create_key_as(&app.admin_token, request).await;
    assert_case_status(case, result, code, needle);
    assert_eq!(
        app.row_counts().await,
        before,
        "{case}: a refused CreateKey wrote rows"
    );
}

#[tokio::test]
async fn create_key_refuses_bad_fields() {
    let app = TestApp::spawn().await;
    let org = app.create_organization("Acme").await;
    let base = || key_request(&org, Environment::Live, &["customers:read"]);
    let with = |change: &dyn Fn(&mut CreateKeyRequest)| {
        let mut request = base();
        change(&mut request);
        request
    };

    let cases: Vec<(&str, CreateKeyRequest, &str)> = vec![
        (
            "an empty name",
            with(&|r| r.name = String::new()),
            "name: is required",
        ),
        (
            "a blank name",
            with(&|r| r.name = "   ".into()),
            "name: is required",
        ),
        (
            "a name of 65 characters",
            with(&|r| r.name = "x".repeat(65)),
            "name: must be at most 64",
        ),
        (
            "a name with a slash",
            with(&|r| r.name = "bad/name".into()),
            "name: may contain only",
        ),
        (
            "a name with an emoji",
            with(&|r| r.name = "emoji 🔑".into()),
            "name: may contain only",
        ),
        (
            "a description of 501 characters",
            with(&|r| r.description = "x".repeat(501)),
            "description",
        ),
        (
            "a description with a NUL",
            with(&|r| r.description = "nul\0byte".into()),
            "description",
        ),
        (
            "an unknown resource",
            with(&|r| r.scopes = vec!["widgets:read".into()]),
            "scopes: widgets:read: unknown resource",
        ),
        (
            "a level refunds does not offer",
            with(&|r| r.scopes = vec!["refunds:read".into()]),
            "scopes: refunds:read: resource \"refunds\" offers only write",
        ),
        (
            "a level plans does not offer",
            with(&|r| r.scopes = vec!["plans:write".into()]),
            "offers only read",
        ),
        (
            "a wildcard between parts",
            with(&|r| r.scopes = vec!["payments:*:read".into()]),
            "scopes",
        ),
        (
            "a scope in capitals",
            with(&|r| r.scopes = vec!["Payments:read".into()]),
            "scopes",
        ),
        (
            "no scope",
            with(&|r| r.scopes = vec![]),
            "scopes: give at least one scope",
        ),
        (
            "scopes and a preset",
            with(&|r| r.preset = "read_only".into()),
            "preset: give either scopes or a preset, not both",
        ),
        (
            "an unknown preset",
            with(&|r| {
                r.scopes = vec![];
                r.preset = "admin".into()
            }),
            "preset: unknown preset \"admin\"; valid presets: full_access, read_only, write",
        ),
        (
            "a prefix longer than 32 bits",
            with(&|r| r.allowed_cidrs = vec!["10.0.0.0/33".into()]),
            "allowed_cidrs",
        ),
        (
            "a network that is no address",
            with(&|r| r.allowed_cidrs = vec!["not-an-ip".into()]),
            "allowed_cidrs",
        ),
        (
            "a network with host bits set",
            with(&|r| r.allowed_cidrs = vec!["10.0.0.1/8".into()]),
            "allowed_cidrs: \"10.0.0.1/8\" has host bits set",
        ),
        (
            "101 networks",
            with(&|r| r.allowed_cidrs = (0..101).map(|i| format!("10.{i}.0.0/16")).collect()),
            "allowed_cidrs: at most 100",
        ),
        (
            "an expiry in the past",
            with(&|r| {
                r.expire_time = Some(Timestamp {
                    seconds: chrono::Utc::now().timestamp() - 60,
                    nanos: 0,
                })
            }),
            "expire_time: must be in the future",
        ),
        (
            "an expiry with negative nanos",
            with(&|r| {
                r.expire_time = Some(Timestamp {
                    seconds: 0,
                    nanos: -1,
                })
            }),
            "expire_time",
        ),
        (
            "a metadata value of 4,100 bytes",
            with(&|r| {
                r.metadata.insert("blob".into(), "x".repeat(4100));
            }),
            "metadata",
        ),
        (
            "an empty metadata name",
            with(&|r| {
                r.metadata.insert(String::new(), "v".into());
            }),
            "metadata",
        ),
        (
            "an IPv4-mapped IPv6 network",
            with(&|r| r.allowed_cidrs = vec!["::ffff:10.0.0.0/104".into()]),
            "allowed_cidrs: \"::ffff:10.0.0.0/104\" is an IPv4-mapped IPv6 network",
        ),
        (
            "a metadata name of 65 characters",
            with(&|r| {
                r.metadata.insert("k".repeat(65), "v".into());
            }),
            "metadata",
        ),
        (
            "a metadata name with a NUL",
            with(&|r| {
                r.metadata.insert("nul\0name".into(), "v".into());
            }),
            "metadata: may not contain NUL",
        ),
        (
            "a metadata value with a NUL",
            with(&|r| {
                r.metadata.insert("team".into(), "nul\0value".into());
            }),
            "metadata: may not contain NUL",
        ),
        (
            "an expiry a leap second would read",
            with(&|r| {
                // A second that ends in :59, where chrono would take extra
                // nanos as a leap second.
                let minute_end = (chrono::Utc::now().timestamp() / 60 + 10) * 60 + 59;
                r.expire_time = Some(Timestamp {
                    seconds: minute_end,
                    nanos: 1_000_000_000,
                })
            }),
            "expire_time: is not a valid timestamp",
        ),
        (
            "a system key in an organization",
            with(&|r| {
                r.kind = pb::KeyKind::System.into();
                r.scopes = vec!["*".into()];
            }),
            "organization_id: must be empty for a system key",
        ),
        (
            "no environment",
            with(&|r| r.environment = 0),
            "environment: is required",
        ),
        (
            "an unknown environment",
            with(&|r| r.environment = 7),
            "environment",
        ),
        ("an unknown kind", with(&|r| r.kind = 9), "kind"),
        (
            "an organization id that is no uuid",
            with(&|r| r.organization_id = "acme".into()),
            "organization_id",
        ),
        (
            "no organization",
            with(&|r| r.organization_id = String::new()),
            "organization_id: is required",
        ),
    ];
    for (case, request, needle) in cases {
        assert_create_refused(&app, case, request, Code::InvalidArgument, needle).await;
    }
}

#[tokio::test]
async fn key_ids_are_checked_and_unknown_ones_are_not_found() {
    let app = TestApp::spawn().await;
    let token = app.admin_token.clone();
    for bad in [
        "",
        "short",
        "!!!!!!!!!!!!!!!!!!!!!!",
        "zzzzzzzzzzzzzzzzzzzzzz",
    ] {
        let answer = KeyRpc::GetKey.call(&app, &token, bad).await;
        let case = format!("GetKey of {bad:?}");
        assert_case_status(&case, answer, Code::InvalidArgument, "key_id");
    }
    let unknown = keygate::domain::token::KeyId::generate().to_string();
    let before = app.row_counts().await;
    for rpc in [
        KeyRpc::GetKey,
        KeyRpc::DisableKey,
        KeyRpc::EnableKey,
        KeyRpc::RevokeKey,
        KeyRpc::DeleteKey,
        KeyRpc::RotateKey,
    ] {
        let answer = rpc.call(&app, &token, &unknown).await;
        let case = format!("{rpc:?} of an unknown key");
        assert_case_status(&case, answer, Code::NotFound, "key not found");
    }
    assert_eq!(app.row_counts().await, before);
}

#[tokio::test]
async fn paging_inputs_are_checked() {
    let app = TestApp::spawn().await;
    let mut client = app.client.clone();
    let token = app.admin_token.clone();
    for page_size in [-1, 1001] {
        let request = pb::ListKeysRequest {
            page_size,
            ..Default::default()
        };
        let answer = client.list_keys(authed(&token, request)).await;
        let case = format!("ListKeys with page_size {page_size:?}");
        assert_case_status(&case, answer, Code::InvalidArgument, "page_size");
        let request = pb::ListKeyEventsRequest {
            page_size,
            ..Default::default()
        };
        let answer = client.list_key_events(authed(&token, request)).await;
        let case = format!("ListKeyEvents with page_size {page_size:?}");
        assert_case_status(&case, answer, Code::InvalidArgument, "page_size");
        let request = pb::ListOrganizationsRequest {
            page_size,
            ..Default::default()
        };
        let answer = client.list_organizations(authed(&token, request)).await;
        let case = format!("ListOrganizations with page_size {page_size:?}");
        assert_case_status(&case, answer, Code::InvalidArgument, "page_size");
    }
    let events_token = {
        let request = pb::ListKeyEventsRequest {
            page_size: 1,
            ..Default::default()
        };
        // One event (the bootstrap) means no next page; forge one of the events kind instead.
        client
            .list_key_events(authed(&token, request))
            .await
            .unwrap();
        keygate::domain::paging::page_token("events", 5)
    };
    for page_token in ["garbage", "a2V5czotMQ", events_token.as_str()] {
        let request = pb::ListKeysRequest {
            page_token: page_token.to_owned(),
            ..Default::default()
        };
        let answer = client.list_keys(authed(&token, request)).await;
        let case = format!("ListKeys with page_token {page_token:?}");
        assert_case_status(&case, answer, Code::InvalidArgument, "page_token");
    }
    let keys_token = keygate::domain::paging::page_token("keys", 5);
    for page_token in ["garbage", keys_token.as_str()] {
        let request = pb::ListKeyEventsRequest {
            page_token: page_token.to_owned(),
            ..Default::default()
        };
        let answer = client.list_key_events(authed(&token, request)).await;
        let case = format!("ListKeyEvents with page_token {page_token:?}");
        assert_case_status(&case, answer, Code::InvalidArgument, "page_token");
        let request = pb::ListOrganizationsRequest {
            page_token: page_token.to_owned(),
            ..Default::default()
        };
        let answer = client.list_organizations(authed(&token, request)).await;
        let case = format!("ListOrganizations with page_token {page_token:?}");
        assert_case_status(&case, answer, Code::InvalidArgument, "page_token");
    }
    let request = pb::ListKeysRequest {
        page_size: 1000,
        ..Default::default()
    };
    client.list_keys(authed(&token, request)).await.unwrap();
}

#[tokio::test]
async fn update_requests_are_checked() {
    let app = TestApp::spawn().await;
    let org = app.create_organization("Acme").await;
    let (key, _) = app
        .org_key(&org, Environment::Live, &["customers:read"])
        .await;
    let mut client = app.client.clone();
    let before = app.row_counts().await;
    let mask = |paths: &[&str]| {
        Some(FieldMask {
            paths: paths.iter().map(|p| p.to_string()).collect(),
        })
    };
    let with = |change: &dyn Fn(&mut pb::Key)| {
        let mut changed = key.clone();
        change(&mut changed);
        Some(changed)
    };
    let cases = vec![
        (
            "no key",
            pb::UpdateKeyRequest {
                key: None,
                update_mask: mask(&["name"]),
                ..Default::default()
            },
            "key: is required",
        ),
        (
            "no update mask",
            pb::UpdateKeyRequest {
                key: with(&|_| {}),
                update_mask: None,
                ..Default::default()
            },
            "update_mask",
        ),
        (
            "a field that cannot be updated",
            pb::UpdateKeyRequest {
                key: with(&|_| {}),
                update_mask: mask(&["kind"]),
                ..Default::default()
            },
            "update_mask: \"kind\" cannot be updated",
        ),
        (
            "an empty name",
            pb::UpdateKeyRequest {
                key: with(&|k| k.name = String::new()),
                update_mask: mask(&["name"]),
                ..Default::default()
            },
            "key.name",
        ),
        (
            "a level refunds does not offer",
            pb::UpdateKeyRequest {
                key: with(&|k| k.scopes = vec!["refunds:read".into()]),
                update_mask: mask(&["scopes"]),
                ..Default::default()
            },
            "scopes",
        ),
        (
            "no scope",
            pb::UpdateKeyRequest {
                key: with(&|k| k.scopes = vec![]),
                update_mask: mask(&["scopes"]),
                ..Default::default()
            },
            "scopes",
        ),
        (
            "a network that is no address",
            pb::UpdateKeyRequest {
                key: with(&|k| k.allowed_cidrs = vec!["300.0.0.0/8".into()]),
                update_mask: mask(&["allowed_cidrs"]),
                ..Default::default()
            },
            "allowed_cidrs",
        ),
        (
            "an expiry in the past",
            pb::UpdateKeyRequest {
                key: with(&|k| {
                    k.expire_time = Some(Timestamp {
                        seconds: 1,
                        nanos: 0,
                    })
                }),
                update_mask: mask(&["expire_time"]),
                ..Default::default()
            },
            "expire_time",
        ),
        (
            "a malformed key id",
            pb::UpdateKeyRequest {
                key: with(&|k| k.id = "nope".into()),
                update_mask: mask(&["name"]),
                ..Default::default()
            },
            "key.id",
        ),
        (
            "a description of 501 characters",
            pb::UpdateKeyRequest {
                key: with(&|k| k.description = "x".repeat(501)),
                update_mask: mask(&["description"]),
                ..Default::default()
            },
            "description",
        ),
        (
            "a description with a NUL",
            pb::UpdateKeyRequest {
                key: with(&|k| k.description = "nul\0byte".into()),
                update_mask: mask(&["description"]),
                ..Default::default()
            },
            "description",
        ),
        (
            "an empty metadata name",
            pb::UpdateKeyRequest {
                key: with(&|k| {
                    k.metadata.insert(String::new(), "v".into());
                }),
                update_mask: mask(&["metadata"]),
                ..Default::default()
            },
            "metadata",
        ),
        (
            "an expiry with negative nanos",
            pb::UpdateKeyRequest {
                key: with(&|k| {
                    k.expire_time = Some(Timestamp {
                        seconds: chrono::Utc::now().timestamp() + 3_600,
                        nanos: -1,
                    })
                }),
                update_mask: mask(&["expire_time"]),
                ..Default::default()
            },
            "expire_time: is not a valid timestamp",
        ),
    ];
    let versions_before = app.version_sum().await;
    for (case, request, needle) in cases {
        let updated = client.update_key(authed(&app.admin_token, request)).await;
        assert_case_status(case, updated, Code::InvalidArgument, needle);
    }
    assert_eq!(app.row_counts().await, before);
    assert_eq!(
        app.version_sum().await,
        versions_before,
        "a key was changed"
    );
}

#[tokio::test]
async fn listing_and_lookup_ids_are_checked() {
    let app = TestApp::spawn().await;
    let mut client = app.client.clone();
    let token = app.admin_token.clone();
    let before = app.row_counts().await;
    let request = pb::ListKeyEventsRequest {
        key_id: "short".into(),
        ..Default::default()
    };
    assert_status(
        client.list_key_events(authed(&token, request)).await,
        Code::InvalidArgument,
        "key_id",
    );
    let request = pb::ListKeysRequest {
        organization_id: "acme".into(),
        ..Default::default()
    };
    assert_status(
        client.list_keys(authed(&token, request)).await,
        Code::InvalidArgument,
        "organization_id",
    );
    let request = pb::GetOrganizationRequest {
        organization_id: String::new(),
    };
    assert_status(
        client.get_organization(authed(&token, request)).await,
        Code::InvalidArgument,
        "organization_id: is required",
    );
    assert_eq!(app.row_counts().await, before);
}

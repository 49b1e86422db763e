//! Authorize: every reason code, PayNext's endpoint table, nested wildcards,
//! IP allowlists, expiry, rotation grace, and a warm cache with no database.

use keygate::grpc::pb::{self, Environment, Reason, SecretSlot};
use prost_types::{Duration, Timestamp};
use tonic::Code;

use crate::support::{authed, key_request, token_for, KeyRpc, TestApp, TestDatabase};

fn soon(milliseconds: i64) -> Timestamp {
    let time = chrono::Utc::now() + chrono::Duration::milliseconds(milliseconds);
    Timestamp {
        seconds: time.timestamp(),
        nanos: time.timestamp_subsec_nanos() as i32,
    }
}

#[tokio::test]
async fn every_reason_code_with_its_http_status() {
    let app = TestApp::spawn().await;
    let org = app.create_organization("Acme").await;
    let mut request = key_request(&org, Environment::Live, &["customers:read"]);
    request.metadata.insert("team".into(), "billing".into());
    let (key, token) = app.create_key(request).await;
    let check = |case: &str, decision: &pb::Decision, reason: Reason, status: i32| {
        assert_eq!(decision.reason(), reason, "{case}: {decision:?}");
        assert_eq!(decision.http_status, status, "{case}: {decision:?}");
        assert_eq!(decision.allowed, reason == Reason::Ok, "{case}");
    };

    let ok = app
        .authorize(
            &format!("Bearer {token}"),
            "GET",
            "/customers/cus_123?expand=1",
            "",
        )
        .await;
    check("a good token", &ok, Reason::Ok, 200);
    assert_eq!(ok.permission, "customers:read");
    assert_eq!(ok.route, "/customers/{id}");
    assert_eq!(ok.path_params["id"], "cus_123");
    assert_eq!(ok.key_id, key.id);
    assert_eq!(ok.organization_id, org);
    assert_eq!(ok.environment(), Environment::Live);
    assert_eq!(ok.kind(), pb::KeyKind::Organization);
    assert_eq!(ok.metadata["team"], "billing");
    assert_eq!(ok.secret(), SecretSlot::Current);

    let mut typo_bytes = token.clone().into_bytes();
    typo_bytes[40] = if typo_bytes[40] == b'x' { b'y' } else { b'x' };
    let typo = String::from_utf8(typo_bytes).unwrap();
    let stranger = token_for(&keygate::domain::token::KeyId::generate());
    // Same key id, someone else's secret, valid checksum.
    let forged = token_for(&keygate::domain::token::KeyId::parse(&key.id).unwrap());
    // (case, token presented, method, path, reason, HTTP status)
    #[rustfmt::skip]
    let refusals = [
        ("no token",                 "",                 "GET",    "/customers", Reason::MissingKey,       401),
        ("a bare Bearer",            "Bearer ",          "GET",    "/customers", Reason::MissingKey,       401),
        ("a malformed token",        "kg_live_nonsense", "GET",    "/customers", Reason::MalformedKey,     401),
        ("a typo",                   typo.as_str(),      "GET",    "/customers", Reason::MalformedKey,     401),
        ("a key nobody issued",      stranger.as_str(),  "GET",    "/customers", Reason::UnknownKey,       401),
        ("a wrong secret",           forged.as_str(),    "GET",    "/customers", Reason::InvalidSecret,    401),
        ("a permission not held",    token.as_str(),     "POST",   "/customers", Reason::PermissionDenied, 403),
        ("a path without a route",   token.as_str(),     "GET",    "/nowhere",   Reason::UnknownRoute,     404),
        ("a method without a route", token.as_str(),     "DELETE", "/customers", Reason::UnknownRoute,     404),
    ];
    for (case, presented, method, path, reason, status) in refusals {
        let decision = app.authorize(presented, method, path, "").await;
        check(case, &decision, reason, status);
        if matches!(reason, Reason::UnknownKey | Reason::InvalidSecret) {
            assert!(
                decision.key_id.is_empty(),
                "{case}: a key not verified must not be revealed"
            );
        }
    }

    // A change of state, then the decision that follows it.
    let changes = [
        (KeyRpc::DisableKey, "a disabled key", Reason::Disabled, 401),
        (KeyRpc::EnableKey, "an enabled key", Reason::Ok, 200),
        (KeyRpc::RevokeKey, "a revoked key", Reason::Revoked, 401),
    ];
    for (rpc, case, reason, status) in changes {
        rpc.call(&app, &app.admin_token, &key.id).await.unwrap();
        let decision = app.authorize(&token, "GET", "/customers", "").await;
        check(case, &decision, reason, status);
    }

    let mut request = key_request(&org, Environment::Live, &["customers:read"]);
    request.expire_time = Some(soon(1200));
    let (_, expiring) = app.create_key(request).await;
    check(
        "a key before its expiry",
        &app.authorize(&expiring, "GET", "/customers", "").await,
        Reason::Ok,
        200,
    );
    let events_before = app.count("key_events").await;
    tokio::time::sleep(std::time::Duration::from_millis(1300)).await;
    check(
        "an expired key",
        &app.authorize(&expiring, "GET", "/customers", "").await,
        Reason::Expired,
        401,
    );
    assert_eq!(
        app.count("key_events").await,
        events_before,
        "expiry needs no event"
    );

    let mut request = key_request(&org, Environment::Live, &["customers:read"]);
    request.allowed_cidrs = vec!["192.0.2.0/24".into()];
    let (_, fenced) = app.create_key(request).await;
    check(
        "an address outside the allowlist",
        &app.authorize(&fenced, "GET", "/customers", "198.51.100.7")
            .await,
        Reason::IpNotAllowed,
        403,
    );
}

/// Each PayNext resource at each level it offers, against all 18 endpoints.
#[tokio::test]
async fn paynext_endpoint_table_against_every_access_level() {
    let app = TestApp::spawn().await;
    let org = app.create_organization("PayNext merchant").await;
    let table = [
        ("POST", "/client-session", "client_sessions", "write"),
        ("PATCH", "/client-session/cs_1", "client_sessions", "write"),
        ("GET", "/customers", "customers", "read"),
        ("GET", "/customers/cus_123", "customers", "read"),
        ("POST", "/customers", "customers", "write"),
        ("PATCH", "/customers/cus_123", "customers", "write"),
        ("GET", "/payments", "payments", "read"),
        ("GET", "/payments/pay_1", "payments", "read"),
        ("POST", "/payments", "payments", "write"),
        ("POST", "/payments/refund/pay_1", "refunds", "write"),
        ("GET", "/plans", "plans", "read"),
        ("GET", "/plans/plan_1", "plans", "read"),
        ("GET", "/subscriptions/search", "subscriptions", "read"),
        ("GET", "/subscriptions/sub_1", "subscriptions", "read"),
        ("POST", "/subscriptions", "subscriptions", "write"),
        ("PATCH", "/subscriptions", "subscriptions", "write"),
        (
            "POST",
            "/subscriptions/cancel/sub_1",
            "subscription_cancellation",
            "write",
        ),
        (
            "POST",
            "/subscriptions/schedule-cancel/sub_1",
            "subscription_cancellation",
            "write",
        ),
    ];
    let levels = [
        ("client_sessions", "write"),
        ("customers", "read"),
        ("customers", "write"),
        ("plans", "read"),
        ("payments", "read"),
        ("payments", "write"),
        ("refunds", "write"),
        ("subscriptions", "read"),
        ("subscriptions", "write"),
        ("subscription_cancellation", "write"),
    ];
    for (resource, level) in levels {
        let scope = format!("{resource}:{level}");
        let (_, token) = app
            .org_key(&org, Environment::Live, &[scope.as_str()])
            .await;
        for (method, path, needed_resource, needed_level) in table {
            // Write includes Read.
            let expected =
                resource == needed_resource && (level == needed_level || level == "write");
            let decision = app.authorize(&token, method, path, "").await;
            let case = format!("{scope} {method} {path}");
            assert_eq!(decision.allowed, expected, "{case}: {decision:?}");
            assert_eq!(
                decision.permission,
                format!("{needed_resource}:{needed_level}"),
                "{case}"
            );
            let expected_reason = if expected {
                Reason::Ok
            } else {
                Reason::PermissionDenied
            };
            assert_eq!(decision.reason(), expected_reason, "{case}");
        }
    }
    // The presets: read_only allows every read, write every row, and so does full_access.
    for (preset, allowed_rows) in [("read_only", 8), ("write", 18), ("full_access", 18)] {
        let mut request = key_request(&org, Environment::Live, &[]);
        request.preset = preset.into();
        let (_, token) = app.create_key(request).await;
        let mut allowed = 0;
        for (method, path, _, _) in table {
            allowed += usize::from(app.authorize(&token, method, path, "").await.allowed);
        }
        assert_eq!(allowed, allowed_rows, "{preset}");
    }
}

#[tokio::test]
async fn payconex_nested_wildcards() {
    let db = TestDatabase::create().await;
    let mut settings = db.settings();
    settings.policy = std::sync::Arc::new(
        keygate::domain::policy::Policy::parse(include_str!("../../policies/payconex.yaml"))
            .unwrap(),
    );
    let app = TestApp::spawn_with(&db, settings).await;
    let org = app.create_organization("PayConex merchant").await;
    let (_, updater) = app
        .org_key(&org, Environment::Live, &["pcx:account_updater:*"])
        .await;
    let (_, results) = app
        .org_key(&org, Environment::Live, &["pcx:account_updater:results:*"])
        .await;
    let (_, everything) = app.org_key(&org, Environment::Live, &["pcx:*"]).await;

    let cases = [
        (
            "updater",
            &updater,
            "pcx:account_updater:schedules:create",
            true,
        ),
        (
            "updater",
            &updater,
            "pcx:account_updater:results:read",
            true,
        ),
        ("updater", &updater, "pcx:webhooks:read", false),
        (
            "results",
            &results,
            "pcx:account_updater:schedules:create",
            false,
        ),
        (
            "results",
            &results,
            "pcx:account_updater:results:read",
            true,
        ),
        ("everything", &everything, "pcx:apple_pay:session:get", true),
    ];
    for (holder, token, permission, expected) in cases {
        let decision = app.authorize_permission(token, permission).await;
        assert_eq!(
            decision.allowed, expected,
            "{holder} asks for {permission}: {decision:?}"
        );
    }
    let decision = app
        .authorize(&updater, "PATCH", "/account-updater/schedules/s_1", "")
        .await;
    assert!(decision.allowed);
    assert_eq!(decision.permission, "pcx:account_updater:schedules:patch");
    assert!(
        !app.authorize(&results, "PATCH", "/account-updater/schedules/s_1", "")
            .await
            .allowed
    );
}

#[tokio::test]
async fn ip_allowlists_for_ipv4_and_ipv6() {
    let app = TestApp::spawn().await;
    let org = app.create_organization("Acme").await;
    let mut request = key_request(&org, Environment::Live, &["customers:read"]);
    request.allowed_cidrs = vec![
        "10.1.0.0/16".into(),
        "192.0.2.9".into(),
        "2001:db8:ab::/48".into(),
    ];
    let (_, fenced) = app.create_key(request).await;
    let (_, open) = app
        .org_key(&org, Environment::Live, &["customers:read"])
        .await;
    let cases = [
        ("fenced", &fenced, "10.1.200.3", Reason::Ok),
        ("fenced", &fenced, "192.0.2.9", Reason::Ok),
        ("fenced", &fenced, "192.0.2.10", Reason::IpNotAllowed),
        ("fenced", &fenced, "2001:db8:ab:1::7", Reason::Ok),
        ("fenced", &fenced, "2001:db8:ac::7", Reason::IpNotAllowed),
        ("fenced", &fenced, "", Reason::IpNotAllowed),
        ("open", &open, "203.0.113.5", Reason::Ok),
        ("open", &open, "::1", Reason::Ok),
        ("open", &open, "", Reason::Ok),
    ];
    for (holder, token, client_ip, expected) in cases {
        let decision = app.authorize(token, "GET", "/customers", client_ip).await;
        assert_eq!(decision.reason(), expected, "{holder} from {client_ip:?}");
    }
}

#[tokio::test]
async fn previous_secret_works_during_its_grace_period_only() {
    let app = TestApp::spawn().await;
    let org = app.create_organization("Acme").await;
    let (key, old) = app
        .org_key(&org, Environment::Live, &["customers:read"])
        .await;
    assert!(app.authorize(&old, "GET", "/customers", "").await.allowed);
    let request = pb::RotateKeyRequest {
        key_id: key.id.clone(),
        grace_period: Some(Duration {
            seconds: 2,
            nanos: 0,
        }),
        ..Default::default()
    };
    let new = app
        .client
        .clone()
        .rotate_key(authed(&app.admin_token, request))
        .await
        .unwrap()
        .into_inner()
        .token;

    let with_old = app.authorize(&old, "GET", "/customers", "").await;
    assert!(with_old.allowed);
    assert_eq!(with_old.secret(), SecretSlot::Previous);
    let with_new = app.authorize(&new, "GET", "/customers", "").await;
    assert_eq!(with_new.secret(), SecretSlot::Current);
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    assert_eq!(
        app.authorize(&old, "GET", "/customers", "").await.reason(),
        Reason::InvalidSecret
    );
    assert!(app.authorize(&new, "GET", "/customers", "").await.allowed);
}

#[tokio::test]
async fn warm_keys_are_decided_without_the_database() {
    let app = TestApp::spawn().await;
    let org = app.create_organization("Acme").await;
    let (_, token) = app
        .org_key(&org, Environment::Live, &["customers:read"])
        .await;
    assert!(app.authorize(&token, "GET", "/customers", "").await.allowed);
    let verifications = app.authorizer.hasher().verifications();

    app.server_pool.close().await;
    for _ in 0..100 {
        assert!(
            app.authorize(&token, "GET", "/customers/cus_1", "")
                .await
                .allowed
        );
        assert_eq!(
            app.authorize(&token, "POST", "/customers", "")
                .await
                .reason(),
            Reason::PermissionDenied
        );
    }
    assert_eq!(
        app.authorizer.hasher().verifications(),
        verifications,
        "a warm key needs no argon2"
    );
    // A cold key needs the database, and says so.
    let request = pb::AuthorizeRequest {
        token: token_for(&keygate::domain::token::KeyId::generate()),
        method: "GET".into(),
        path: "/customers".into(),
        ..Default::default()
    };
    let status = app
        .authorizer_client
        .clone()
        .authorize(request)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
}

#[tokio::test]
async fn bad_secrets_are_rate_limited_per_key() {
    let app = TestApp::spawn().await;
    let org = app.create_organization("Acme").await;
    let (key, _) = app
        .org_key(&org, Environment::Live, &["customers:read"])
        .await;
    let key_id = keygate::domain::token::KeyId::parse(&key.id).unwrap();
    let forged_tokens: Vec<String> = (0..60).map(|_| token_for(&key_id)).collect();
    let before = app.authorizer.hasher().verifications();
    let started = std::time::Instant::now();
    let attempts = forged_tokens
        .iter()
        .map(|forged| app.authorize(forged, "GET", "/customers", ""));
    for decision in futures_util::future::join_all(attempts).await {
        assert_eq!(decision.reason(), Reason::InvalidSecret);
    }
    let elapsed = started.elapsed();
    // Windows are aligned to the cache entry, so a run touches at most
    // floor(elapsed) + 2 of them.
    let windows = elapsed.as_secs() + 2;
    let spent = app.authorizer.hasher().verifications() - before;
    assert!(
        windows * 10 < 60,
        "too slow ({elapsed:?}) for 60 attempts to exceed the limit"
    );
    assert!(
        spent <= 10 * windows,
        "{spent} argon2 runs in {windows} one-second windows"
    );
}

#[tokio::test]
async fn malformed_requests_are_invalid_arguments() {
    let app = TestApp::spawn().await;
    let token = app.admin_token.clone();
    let cases = [
        (
            "no method or permission",
            pb::AuthorizeRequest {
                token: token.clone(),
                ..Default::default()
            },
            "method",
        ),
        (
            "both a route and a permission",
            pb::AuthorizeRequest {
                token: token.clone(),
                method: "GET".into(),
                path: "/customers".into(),
                permission: "customers:read".into(),
                ..Default::default()
            },
            "permission",
        ),
        (
            "a path without a method",
            pb::AuthorizeRequest {
                token: token.clone(),
                path: "/customers".into(),
                ..Default::default()
            },
            "method",
        ),
        (
            "a path not starting with /",
            pb::AuthorizeRequest {
                token: token.clone(),
                method: "GET".into(),
                path: "customers".into(),
                ..Default::default()
            },
            "path",
        ),
        (
            "a permission without an action",
            pb::AuthorizeRequest {
                token: token.clone(),
                permission: "customers".into(),
                ..Default::default()
            },
            "permission",
        ),
        (
            "a client address out of range",
            pb::AuthorizeRequest {
                token: token.clone(),
                method: "GET".into(),
                path: "/customers".into(),
                client_ip: "10.0.0.300".into(),
                ..Default::default()
            },
            "client_ip",
        ),
    ];
    for (case, request, field) in cases {
        let answer = app.authorizer_client.clone().authorize(request).await;
        let status = answer.expect_err(case);
        assert_eq!(status.code(), Code::InvalidArgument, "{case}");
        assert!(
            status.message().starts_with(field),
            "{case}: {}",
            status.message()
        );
    }
}

#[tokio::test]
async fn use_is_recorded_as_last_used_time() {
    let app = TestApp::spawn().await;
    let org = app.create_organization("Acme").await;
    let (key, token) = app
        .org_key(&org, Environment::Live, &["customers:read"])
        .await;
    assert_eq!(key.last_used_time, None);
    for _ in 0..20 {
        app.authorize(&token, "GET", "/customers", "").await;
    }
    let mut last_used = None;
    for _ in 0..50 {
        let request = pb::GetKeyRequest {
            key_id: key.id.clone(),
        };
        let fetched = app
            .client
            .clone()
            .get_key(authed(&app.admin_token, request))
            .await
            .unwrap()
            .into_inner();
        last_used = fetched.last_used_time;
        if last_used.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(last_used.is_some(), "last_used_time was never written");
    // Usage is not a change: no version bump, no event.
    let request = pb::GetKeyRequest {
        key_id: key.id.clone(),
    };
    let fetched = app
        .client
        .clone()
        .get_key(authed(&app.admin_token, request))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fetched.version, 1);
}

#[tokio::test]
async fn policy_reload_swaps_routes_and_refuses_bad_files() {
    let db = TestDatabase::create().await;
    let directory = std::env::temp_dir().join(format!("keygate-policy-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&directory).unwrap();
    let path = directory.join("policy.yaml");
    std::fs::write(&path, keygate::domain::policy::EMBEDDED_DEFAULT_POLICY).unwrap();
    let mut settings = db.settings();
    settings.policy_path = Some(path.clone());
    let app = TestApp::spawn_with(&db, settings).await;
    let org = app.create_organization("Acme").await;
    let (_, token) = app
        .org_key(&org, Environment::Live, &["customers:read"])
        .await;
    assert_eq!(
        app.authorize(&token, "GET", "/v2/customers", "")
            .await
            .reason(),
        Reason::UnknownRoute
    );

    let renamed = keygate::domain::policy::EMBEDDED_DEFAULT_POLICY
        .replace("GET /customers:", "GET /v2/customers:");
    std::fs::write(&path, renamed).unwrap();
    assert!(keygate::server::reload_policy(&app.authorizer, &path).await);
    assert!(
        app.authorize(&token, "GET", "/v2/customers", "")
            .await
            .allowed
    );
    assert_eq!(
        app.authorize(&token, "GET", "/customers", "")
            .await
            .reason(),
        Reason::UnknownRoute
    );

    std::fs::write(
        &path,
        "catalog: {resources: {customers: [read]}}\nroutes: [{GET /x: nope:read}]",
    )
    .unwrap();
    assert!(!keygate::server::reload_policy(&app.authorizer, &path).await);
    assert!(
        app.authorize(&token, "GET", "/v2/customers", "")
            .await
            .allowed,
        "the old policy stays"
    );

    // Implications follow the policy too: without `write => read`, a cached writer loses reads.
    let (_, writer) = app
        .org_key(&org, Environment::Live, &["customers:write"])
        .await;
    assert!(
        app.authorize(&writer, "GET", "/customers/c1", "")
            .await
            .allowed
    );
    let without_implications = keygate::domain::policy::EMBEDDED_DEFAULT_POLICY
        .replace("  implications:\n    write: [read]\n", "");
    std::fs::write(&path, without_implications).unwrap();
    assert!(keygate::server::reload_policy(&app.authorizer, &path).await);
    assert!(
        !app.authorize(&writer, "GET", "/customers/c1", "")
            .await
            .allowed
    );
    std::fs::remove_dir_all(&directory).unwrap();
}

//! `/metrics` after real traffic: the counters match what was done. One server
//! in this process, since metrics come from one process-wide recorder.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failure there is a failed test"
)]

#[allow(
    dead_code,
    unused_imports,
    reason = "the metrics test uses a few of the integration tests' support files"
)]
#[path = "api/support/mod.rs"]
mod support;

use keygate::grpc::pb::{self, Environment};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use support::{authed, set_disabled_through, TestApp, TestDatabase};

async fn scrape(address: std::net::SocketAddr) -> String {
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
}

/// The value of the sample whose line starts with `series` (name and labels).
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find(|line| line.starts_with(series) && line[series.len()..].starts_with(' '))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn metrics_count_decisions_cache_argon2_rpcs_and_the_listener() {
    let db = TestDatabase::create().await;
    let mut settings = db.settings();
    settings.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    let app = TestApp::spawn_with(&db, settings).await;
    let metrics = app.metrics_addr.unwrap();
    let org = app.create_organization("Acme").await;
    let (key, token) = app
        .org_key(&org, Environment::Live, &["customers:read"])
        .await;

    for _ in 0..7 {
        assert!(app.authorize(&token, "GET", "/customers", "").await.allowed);
    }
    for _ in 0..3 {
        assert!(
            !app.authorize(&token, "POST", "/customers", "")
                .await
                .allowed
        );
    }
    for _ in 0..2 {
        assert!(
            !app.authorize("garbage", "GET", "/customers", "")
                .await
                .allowed
        );
    }
    set_disabled_through(&app, &app.admin_token, &key, true, true).await;
    // The disable is taken in place by the cached key; a deletion evicts it.
    let evictions_before = sample(&scrape(metrics).await, "keygate_cache_evictions_total");
    let request = pb::DeleteKeyRequest {
        key_id: key.id.clone(),
        wait_for_propagation: Some(true),
    };
    app.client
        .clone()
        .delete_key(authed(&app.admin_token, request))
        .await
        .unwrap();
    let missing = pb::GetKeyRequest {
        key_id: keygate::domain::token::KeyId::generate().to_string(),
    };
    assert!(app
        .client
        .clone()
        .get_key(authed(&app.admin_token, missing))
        .await
        .is_err());

    let text = scrape(metrics).await;
    assert_eq!(
        sample(&text, "keygate_authorize_decisions_total{reason=\"ok\"}"),
        7.0,
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "keygate_authorize_decisions_total{reason=\"permission_denied\"}"
        ),
        3.0
    );
    assert_eq!(
        sample(
            &text,
            "keygate_authorize_decisions_total{reason=\"malformed_key\"}"
        ),
        2.0
    );
    // Authorize ran 12 times; the key was verified with argon2 once, and so was the admin key.
    assert_eq!(
        sample(&text, "keygate_rpc_duration_seconds_count{method=\"/keygate.v1.Authorizer/Authorize\",code=\"0\"}"),
        12.0
    );
    assert_eq!(
        sample(&text, "keygate_rpc_duration_seconds_count{method=\"/keygate.v1.KeyService/GetKey\",code=\"5\"}"),
        1.0,
        "NOT_FOUND is code 5"
    );
    assert!(sample(&text, "keygate_argon2_verifications_total") >= 2.0);
    assert!(sample(&text, "keygate_argon2_verify_seconds_count") >= 2.0);
    assert!(sample(&text, "keygate_cache_hits_total") >= 9.0);
    assert!(sample(&text, "keygate_cache_misses_total") >= 1.0);
    assert!(sample(&text, "keygate_cache_changes_followed_total") >= 1.0);
    assert!(sample(&text, "keygate_cache_evictions_total") >= evictions_before + 1.0);
    assert!(sample(&text, "keygate_cache_entries") >= 1.0);
    assert_eq!(sample(&text, "keygate_event_listener_connected"), 1.0);
    assert_eq!(sample(&text, "keygate_cache_trusted"), 1.0);
    assert!(sample(&text, "keygate_event_apply_lag_seconds_count") >= 1.0);
    assert!(sample(&text, "keygate_db_pool_connections") >= 1.0);
}

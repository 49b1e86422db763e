//! Postgres stopped (and restarted, under load) on a private Postgres cluster
//! each test starts, so the shared server is untouched.

use std::time::{Duration, Instant};

use keygate::freshness::StalePolicy;
use keygate::grpc::pb::{self, Environment, Reason};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use crate::support::postgres::PrivatePostgres;
use crate::support::{authed, key_request, TestApp, TestDatabase};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restart_under_load_loses_nothing_and_recovers_by_itself() {
    let cluster = PrivatePostgres::start();
    let db = TestDatabase::create_on(cluster.connect_options()).await;
    let mut closed_settings = db.settings();
    closed_settings.database_unhealthy_after = Duration::from_secs(1);
    let closed = TestApp::spawn_with(&db, closed_settings).await;
    let mut stale_settings = db.settings();
    stale_settings.replication.stale_policy = StalePolicy::ServeStale(Duration::from_secs(60));
    let stale = closed.spawn_replica(stale_settings).await;
    let org = closed.create_organization("Acme").await;
    let (_, token) = closed
        .org_key(&org, Environment::Live, &["customers:read"])
        .await;
    assert!(
        closed
            .authorize(&token, "GET", "/customers", "")
            .await
            .allowed
    );
    assert!(
        stale
            .authorize(&token, "GET", "/customers", "")
            .await
            .allowed
    );

    // Writes acknowledged before the outage.
    let mut acknowledged = Vec::new();
    for _ in 0..5 {
        let (key, _) = closed
            .org_key(&org, Environment::Live, &["customers:read"])
            .await;
        acknowledged.push(key.id);
    }

    // Load keeps flowing while Postgres goes away.
    let load_token = token.clone();
    let load_client = closed.authorizer_client.clone();
    let load = tokio::spawn(async move {
        let started = Instant::now();
        let mut answered = 0u32;
        while started.elapsed() < Duration::from_secs(6) && answered < 100_000 {
            let request = pb::AuthorizeRequest {
                token: load_token.clone(),
                method: "GET".into(),
                path: "/customers".into(),
                ..Default::default()
            };
            if load_client.clone().authorize(request).await.is_ok() {
                answered += 1;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        answered
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster.stop_server();

    // The listeners notice; cached keys follow each replica's policy.
    let mut closed_reason = Reason::Ok;
    for _ in 0..100 {
        closed_reason = closed
            .authorize(&token, "GET", "/customers", "")
            .await
            .reason();
        if closed_reason == Reason::Unverifiable {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        closed_reason,
        Reason::Unverifiable,
        "fail_closed denies unconfirmable keys"
    );
    assert_eq!(
        stale
            .authorize(&token, "GET", "/customers", "")
            .await
            .reason(),
        Reason::Ok,
        "serve_stale keeps serving"
    );

    // Lifecycle calls answer UNAVAILABLE, and nothing they tried is acknowledged.
    let result = closed
        .create_key_as(
            &closed.admin_token,
            key_request(&org, Environment::Live, &["customers:read"]),
        )
        .await;
    assert_eq!(result.unwrap_err().code(), Code::Unavailable);
    let request = pb::GetKeyRequest {
        key_id: acknowledged[0].clone(),
    };
    let status = closed
        .client
        .clone()
        .get_key(authed(&closed.admin_token, request))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);

    // Readiness follows the database; liveness does not.
    assert!(
        wait_for_health(&closed, "", ServingStatus::NotServing).await,
        "health still SERVING with the database down"
    );
    assert_eq!(
        closed.health("keygate.v1.Authorizer").await,
        ServingStatus::NotServing
    );
    assert_eq!(closed.health("liveness").await, ServingStatus::Serving);

    cluster.start_server();
    assert!(
        wait_for_health(&closed, "", ServingStatus::Serving).await,
        "health did not recover with the database"
    );
    // Both replicas recover by themselves.
    closed.wait_until_trusted().await;
    stale.wait_until_trusted().await;
    let mut recovered = false;
    for _ in 0..250 {
        if closed
            .authorize(&token, "GET", "/customers", "")
            .await
            .allowed
        {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(recovered, "authorize recovers once Postgres is back");
    let mut created = None;
    for _ in 0..250 {
        match closed
            .create_key_as(
                &closed.admin_token,
                key_request(&org, Environment::Live, &["customers:read"]),
            )
            .await
        {
            Ok(pair) => {
                created = Some(pair);
                break;
            }
            Err(status) => assert_eq!(status.code(), Code::Unavailable, "{status:?}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        created.is_some(),
        "lifecycle calls recover once Postgres is back"
    );
    for key_id in &acknowledged {
        let request = pb::GetKeyRequest {
            key_id: key_id.clone(),
        };
        closed
            .client
            .clone()
            .get_key(authed(&closed.admin_token, request))
            .await
            .unwrap();
    }
    let answered = load.await.unwrap();
    assert!(
        answered > 0,
        "the load got answers (no panic, no dead server)"
    );
}

/// Polls (at most 10 s) until `service` reports `status`.
async fn wait_for_health(app: &TestApp, service: &str, status: ServingStatus) -> bool {
    for _ in 0..100 {
        if app.health(service).await == status {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// How often the server pings the database for its health (`src/server/health.rs`).
const PING_INTERVAL: Duration = Duration::from_secs(1);

/// When the server last ran its health ping, from the cluster's statement
/// log: the last `SELECT 1` of a session that never ran `LISTEN` (the event
/// listener's connection probes with `SELECT 1` too).
fn last_health_ping(log: &str) -> chrono::DateTime<chrono::Utc> {
    let session = |line: &str| line.split(['[', ']']).nth(1).unwrap_or_default().to_owned();
    let listeners: Vec<String> = log
        .lines()
        .filter(|line| line.contains(": LISTEN "))
        .map(session)
        .collect();
    let ping = log
        .lines()
        .rev()
        .find(|line| line.ends_with(": SELECT 1") && !listeners.contains(&session(line)))
        .expect("no health ping in the statement log");
    // `2026-01-31 12:00:00.123 UTC [42] LOG:  execute sqlx_s_1: SELECT 1`
    let stamp = chrono::NaiveDateTime::parse_from_str(&ping[..23], "%Y-%m-%d %H:%M:%S%.3f")
        .unwrap_or_else(|error| panic!("{error}: {ping}"));
    stamp.and_utc()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_turns_not_serving_on_time_counted_from_the_last_answer() {
    let threshold = Duration::from_secs(2);
    // Postgres 15's default `log_line_prefix` is '%m [%p] ': a time, then the session.
    let cluster = PrivatePostgres::start_with(&["log_statement=all", "log_timezone=UTC"]);
    let db = TestDatabase::create_on(cluster.connect_options()).await;
    let mut settings = db.settings();
    settings.database_unhealthy_after = threshold;
    let app = TestApp::spawn_with(&db, settings).await;
    let request = HealthCheckRequest {
        service: String::new(),
    };
    let mut updates = HealthClient::new(app.channel.clone())
        .watch(request)
        .await
        .unwrap()
        .into_inner();
    let first = updates.message().await.unwrap().unwrap();
    assert_eq!(first.status(), ServingStatus::Serving);
    // A few answered pings, then the database goes away.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    cluster.stop_server();

    let update = tokio::time::timeout(Duration::from_secs(20), updates.message())
        .await
        .expect("health still SERVING 20 s after the database stopped")
        .unwrap()
        .unwrap();
    let reported_at = chrono::Utc::now();
    assert_eq!(update.status(), ServingStatus::NotServing);
    let log = std::fs::read_to_string(cluster.log_path()).unwrap();
    let unreachable_for = (reported_at - last_health_ping(&log)).to_std().unwrap();
    assert!(
        unreachable_for >= threshold,
        "NOT_SERVING {unreachable_for:?} after the last answered ping, before the {threshold:?} threshold"
    );
    assert!(
        unreachable_for <= threshold + PING_INTERVAL,
        "NOT_SERVING {unreachable_for:?} after the last answered ping: more than one ping interval past the {threshold:?} threshold"
    );
}

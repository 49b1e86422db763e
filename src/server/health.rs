//! What the gRPC health service reports, and the watchers that keep it true.
//!
//! - `""` (the server as a whole), `keygate.v1.KeyService` and
//!   `keygate.v1.Authorizer`: SERVING once migrations and the policy load have
//!   succeeded (the server does not listen before); NOT_SERVING while draining
//!   and while the database has been unreachable for longer than a threshold.
//!   Readiness probes ask for `""`.
//! - `keygate.events`: whether this replica's cache is trusted (event listener
//!   connected, lease current).
//! - `liveness`: SERVING for as long as the process answers; liveness probes
//!   ask for it, so a database outage takes replicas out of the load balancer
//!   without restarting them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::PgPool;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

use crate::freshness::Freshness;

/// Whether this replica's cache is trusted.
pub const EVENT_STREAM: &str = "keygate.events";
/// SERVING while the process runs.
pub const LIVENESS: &str = "liveness";
/// The services that follow the database and the drain.
pub const SERVING_SERVICES: [&str; 3] = ["", "keygate.v1.KeyService", "keygate.v1.Authorizer"];

/// How often the database is pinged, and how long one ping may take.
const PING_INTERVAL: Duration = Duration::from_secs(1);
const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// Marks every Keygate service SERVING (the server is about to listen).
pub async fn report_started(reporter: &HealthReporter) {
    reporter
        .set_service_status(LIVENESS, ServingStatus::Serving)
        .await;
    set_all(reporter, ServingStatus::Serving).await;
}

/// Marks every Keygate service NOT_SERVING (draining).
pub async fn report_draining(reporter: &HealthReporter) {
    set_all(reporter, ServingStatus::NotServing).await;
}

async fn set_all(reporter: &HealthReporter, status: ServingStatus) {
    for service in SERVING_SERVICES {
        reporter.set_service_status(service, status).await;
    }
}

/// Pings the database every second; once it has been unreachable for longer
/// than `threshold`, reports NOT_SERVING, and SERVING again on the first
/// answer. Runs until aborted (the drain aborts it before reporting).
pub async fn watch_database(reporter: HealthReporter, pool: PgPool, threshold: Duration) {
    let mut unreachable_since: Option<Instant> = None;
    let mut serving = true;
    let mut ticker = tokio::time::interval(PING_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let ping = sqlx::query("SELECT 1").execute(&pool);
        let reachable = matches!(tokio::time::timeout(PING_TIMEOUT, ping).await, Ok(Ok(_)));
        if reachable {
            unreachable_since = None;
            if !serving {
                tracing::info!("database reachable again; serving");
                set_all(&reporter, ServingStatus::Serving).await;
                serving = true;
            }
            continue;
        }
        let since = *unreachable_since.get_or_insert_with(Instant::now);
        if serving && since.elapsed() >= threshold {
            tracing::warn!(
                unreachable_seconds = since.elapsed().as_secs(),
                "database unreachable; health reports NOT_SERVING"
            );
            set_all(&reporter, ServingStatus::NotServing).await;
            serving = false;
        }
    }
}

/// Reports `keygate.events` from the cache's trust, checked four times a second.
pub async fn watch_event_stream(reporter: HealthReporter, freshness: Arc<Freshness>) {
    let mut reported = None;
    let mut ticker = tokio::time::interval(Duration::from_millis(250));
    loop {
        ticker.tick().await;
        let trusted = freshness.is_trusted();
        if reported == Some(trusted) {
            continue;
        }
        let status = if trusted {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        reporter.set_service_status(EVENT_STREAM, status).await;
        reported = Some(trusted);
    }
}

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

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::watch;
use tokio::time::Instant;
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

/// Pings the database every second; once no ping has been answered for
/// `threshold`, reports NOT_SERVING, and SERVING again on the next answer.
/// Runs until aborted (the drain aborts it before reporting).
pub async fn watch_database(reporter: HealthReporter, pool: PgPool, threshold: Duration) {
    let ping = move || {
        let pool = pool.clone();
        async move {
            let ping = sqlx::query("SELECT 1").execute(&pool);
            matches!(tokio::time::timeout(PING_TIMEOUT, ping).await, Ok(Ok(_)))
        }
    };
    follow_database(&reporter, threshold, ping).await;
}

/// The database watch over any `ping` (answering whether the database
/// answered). The outage is timed from the last answer, not from the first
/// failure: a ping to an unreachable database can take `PING_TIMEOUT` to give
/// up, and the verdict must not wait for it.
async fn follow_database<Ping, Answer>(reporter: &HealthReporter, threshold: Duration, ping: Ping)
where
    Ping: FnMut() -> Answer,
    Answer: Future<Output = bool>,
{
    let (answers, mut last_answer) = watch::channel(Instant::now());
    let pinging = ping_forever(ping, answers);
    let judging = async {
        let mut serving = true;
        loop {
            let answered_at = *last_answer.borrow_and_update();
            if !serving {
                if last_answer.changed().await.is_err() {
                    return;
                }
                tracing::info!("database reachable again; serving");
                set_all(reporter, ServingStatus::Serving).await;
                serving = true;
                continue;
            }
            tokio::select! {
                changed = last_answer.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                () = tokio::time::sleep_until(answered_at + threshold) => {
                    tracing::warn!(
                        unreachable_seconds = answered_at.elapsed().as_secs_f64(),
                        "database unreachable; health reports NOT_SERVING"
                    );
                    set_all(reporter, ServingStatus::NotServing).await;
                    serving = false;
                }
            }
        }
    };
    tokio::join!(pinging, judging);
}

/// Pings every `PING_INTERVAL` (or, when a ping takes longer, as soon as it
/// ends) and sends the time of every answer.
async fn ping_forever<Ping, Answer>(mut ping: Ping, answers: watch::Sender<Instant>)
where
    Ping: FnMut() -> Answer,
    Answer: Future<Output = bool>,
{
    let mut ticker = tokio::time::interval(PING_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if ping().await {
            answers.send_replace(Instant::now());
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

#[cfg(test)]
mod tests {
    use tokio_stream::StreamExt;
    use tonic::Request;
    use tonic_health::pb::health_check_response::ServingStatus as Reported;
    use tonic_health::pb::health_server::Health;
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::server::HealthService;

    use super::*;

    /// How a ping to an unreachable database ends.
    #[derive(Clone, Copy, Debug)]
    enum Failure {
        /// At once (connection refused, pool closed).
        Fast,
        /// Only when it times out (packets dropped, connection attempts retried).
        AfterTimeout,
    }

    /// Runs the watch in paused time over a database unreachable from
    /// `outage.0` to `outage.1` (after the start), and answers when health
    /// turned NOT_SERVING and when SERVING again, after the start.
    async fn reports(
        threshold: Duration,
        outage: (Duration, Duration),
        failure: Failure,
    ) -> (Duration, Duration) {
        let started = Instant::now();
        let (reporter, _) = tonic_health::server::health_reporter();
        report_started(&reporter).await;
        let health = HealthService::from_health_reporter(reporter.clone());
        let request = Request::new(HealthCheckRequest {
            service: String::new(),
        });
        let mut updates = health.watch(request).await.unwrap().into_inner();
        let first = updates.next().await.unwrap().unwrap();
        assert_eq!(first.status(), Reported::Serving);
        let ping = move || async move {
            let since_start = started.elapsed();
            if since_start < outage.0 || since_start >= outage.1 {
                return true;
            }
            if let Failure::AfterTimeout = failure {
                tokio::time::sleep(PING_TIMEOUT).await;
            }
            false
        };
        let watch = tokio::spawn(async move { follow_database(&reporter, threshold, ping).await });
        let mut at = Vec::new();
        for expected in [Reported::NotServing, Reported::Serving] {
            let update = updates.next().await.unwrap().unwrap();
            assert_eq!(update.status(), expected, "{failure:?}");
            at.push(started.elapsed());
        }
        watch.abort();
        (at[0], at[1])
    }

    #[tokio::test(start_paused = true)]
    async fn not_serving_comes_the_threshold_after_the_last_answer() {
        let threshold = Duration::from_secs(10);
        // Pings at 0, 1, …, 5 s are answered; the one at 6 s is not.
        let outage = (Duration::from_millis(5_500), Duration::from_millis(30_500));
        let last_answer = Duration::from_secs(5);
        for failure in [Failure::Fast, Failure::AfterTimeout] {
            let (not_serving, serving) = reports(threshold, outage, failure).await;
            assert_eq!(not_serving, last_answer + threshold, "{failure:?}");
            assert!(serving >= outage.1, "{failure:?}: serving at {serving:?}");
            assert!(
                serving <= outage.1 + PING_TIMEOUT + PING_INTERVAL,
                "{failure:?}: serving again only at {serving:?}"
            );
        }
    }
}

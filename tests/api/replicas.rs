//! Several Keygate replicas on one database: a change through one is refused by
//! the others on the very first request after the call returns.

use std::time::Duration;

use keygate::freshness::StalePolicy;
use keygate::grpc::pb::{self, Reason};
use keygate::server::config::Settings;

use crate::support::{
    assert_complete, authed, authorize_on_all, revoke_through, rotate_through,
    set_disabled_through, set_scopes_through, three_replicas, three_replicas_each,
    three_replicas_with, warm_key, TestApp, TestDatabase,
};

/// Test settings whose replicas heartbeat every `heartbeat_interval` and hold
/// a lease of `lease`.
fn with_heartbeat(db: &TestDatabase, heartbeat_interval: Duration, lease: Duration) -> Settings {
    let mut settings = db.settings();
    settings.replication.lease = keygate::replication::LeaseSettings {
        heartbeat_interval,
        lease,
    };
    settings
}

/// A key in an organization of its own, created through `replica` and warmed nowhere.
async fn cold_key(replica: &TestApp) -> pb::Key {
    replica.customer_readers(1).await.remove(0).0
}

#[tokio::test]
async fn revoke_disable_delete_rotate_and_narrowing_reach_every_replica_at_once() {
    let (a, b, c) = three_replicas().await;
    let all = [&a, &b, &c];
    let mut client = a.client.clone();
    let admin = a.admin_token.clone();

    // Revoke waits for propagation by default.
    let (key, token) = warm_key(&all, &["customers:read"]).await;
    assert_complete(Some(revoke_through(&a, &admin, &key).await), 3);
    assert_eq!(
        authorize_on_all(&all, &token, "GET", "/customers").await,
        vec![Reason::Revoked; 3]
    );

    let (key, token) = warm_key(&all, &["customers:read"]).await;
    let disabled = set_disabled_through(&a, &admin, &key, true, true).await;
    assert_complete(disabled, 3);
    assert_eq!(
        authorize_on_all(&all, &token, "GET", "/customers").await,
        vec![Reason::Disabled; 3]
    );
    set_disabled_through(&a, &admin, &key, false, true).await;
    assert_eq!(
        authorize_on_all(&all, &token, "GET", "/customers").await,
        vec![Reason::Ok; 3]
    );

    let (key, token) = warm_key(&all, &["customers:read"]).await;
    let request = pb::DeleteKeyRequest {
        key_id: key.id.clone(),
        wait_for_propagation: Some(true),
    };
    let deleted = client
        .delete_key(authed(&admin, request))
        .await
        .unwrap()
        .into_inner();
    assert_complete(deleted.propagation, 3);
    assert_eq!(
        authorize_on_all(&all, &token, "GET", "/customers").await,
        vec![Reason::UnknownKey; 3]
    );

    let (key, token) = warm_key(&all, &["customers:read"]).await;
    let rotated = rotate_through(&a, &admin, &key.id, 0, true).await;
    assert_complete(rotated.propagation, 3);
    assert_eq!(
        authorize_on_all(&all, &token, "GET", "/customers").await,
        vec![Reason::InvalidSecret; 3]
    );
    assert_eq!(
        authorize_on_all(&all, &rotated.token, "GET", "/customers").await,
        vec![Reason::Ok; 3]
    );

    let (key, token) = warm_key(&all, &["customers:write"]).await;
    let narrowed = set_scopes_through(&a, &admin, &key, &["payments:read"]).await;
    assert_complete(narrowed, 3);
    assert_eq!(
        authorize_on_all(&all, &token, "GET", "/customers").await,
        vec![Reason::PermissionDenied; 3]
    );
    assert_eq!(
        authorize_on_all(&all, &token, "GET", "/payments").await,
        vec![Reason::Ok; 3]
    );
}

#[tokio::test]
async fn changes_through_any_replica_evict_everywhere_even_without_waiting() {
    let (a, b, c) = three_replicas().await;
    let all = [&a, &b, &c];
    let (key, token) = warm_key(&all, &["customers:read"]).await;
    // Through B, without waiting: the notification still reaches A and C within milliseconds.
    let disabled = set_disabled_through(&b, &a.admin_token, &key, true, false).await;
    assert!(!disabled.unwrap().waited);
    let mut reasons = Vec::new();
    for _ in 0..200 {
        reasons = authorize_on_all(&all, &token, "GET", "/customers").await;
        if reasons == vec![Reason::Disabled; 3] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(reasons, vec![Reason::Disabled; 3]);
}

#[tokio::test]
async fn a_stale_fill_landing_after_the_eviction_is_never_used() {
    let (a, b, _c) = three_replicas().await;
    let (key, token) = warm_key(&[&a, &b], &["customers:read"]).await;
    let key_id = keygate::domain::token::KeyId::parse(&key.id).unwrap();
    // A load on B reads the row before the revocation commits...
    let stale_row = keygate::store::keys::find_key_by_id(&b.pool, &key_id)
        .await
        .unwrap()
        .unwrap();
    revoke_through(&a, &a.admin_token, &key).await;
    // ...and lands in B's cache after B evicted the key, in B's current epoch.
    let policy = b.authorizer.policy();
    let epoch = b.authorizer.freshness().trusted_epoch();
    assert_ne!(epoch, 0);
    b.authorizer
        .cache()
        .insert(keygate::cache::CachedKey::new(stale_row, &policy, epoch));
    assert_eq!(
        b.authorize(&token, "GET", "/customers", "").await.reason(),
        Reason::Revoked
    );
}

#[tokio::test]
async fn a_replica_that_loses_its_listener_never_authorizes_a_key_revoked_meanwhile() {
    let (a, b, c) = three_replicas().await;
    let all = [&a, &b, &c];
    let (key, token) = warm_key(&all, &["customers:read"]).await;
    let before = b.authorizer.freshness().trusted_epoch();

    // Kill every listener connection, then revoke at once.
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND query LIKE '/* keygate event listener */%'",
    )
    .fetch_all(&a.pool)
    .await
    .unwrap();
    assert!(
        killed.len() >= 3,
        "expected three listeners, found {}",
        killed.len()
    );
    assert!(revoke_through(&a, &a.admin_token, &key).await.waited);
    assert_eq!(
        authorize_on_all(&all, &token, "GET", "/customers").await,
        vec![Reason::Revoked; 3]
    );
    // The listeners come back by themselves, in a new epoch.
    b.wait_until_trusted().await;
    assert!(b.authorizer.freshness().trusted_epoch() > before);
    assert_eq!(
        b.authorize(&token, "GET", "/customers", "").await.reason(),
        Reason::Revoked
    );
}

#[tokio::test]
async fn without_stream_or_database_the_configured_policy_decides() {
    let db = TestDatabase::create().await;
    let mut serve_stale = db.settings();
    serve_stale.replication.stale_policy = StalePolicy::ServeStale(Duration::from_secs(30));
    let closed = TestApp::spawn_with(&db, db.settings()).await;
    let stale = closed.spawn_replica(serve_stale).await;
    let (_, token) = warm_key(&[&closed, &stale], &["customers:read"]).await;

    for replica in [&closed, &stale] {
        replica.server_pool.close().await;
        replica.authorizer.freshness().set_listener_connected(false);
    }
    let decision = closed.authorize(&token, "GET", "/customers", "").await;
    assert_eq!(decision.reason(), Reason::Unverifiable);
    assert_eq!(decision.http_status, 503);
    assert_eq!(
        stale
            .authorize(&token, "GET", "/customers", "")
            .await
            .reason(),
        Reason::Ok
    );
}

#[tokio::test]
async fn untrusted_caches_confirm_versions_without_argon2() {
    let (a, b, _c) = three_replicas().await;
    let (key, token) = warm_key(&[&a, &b], &["customers:read"]).await;
    let verifications = b.authorizer.hasher().verifications();
    use tonic_health::pb::health_check_response::ServingStatus;
    assert!(
        b.wait_for_health("keygate.events", ServingStatus::Serving)
            .await
    );
    b.authorizer.freshness().set_listener_connected(false);
    assert!(
        b.wait_for_health("keygate.events", ServingStatus::NotServing)
            .await,
        "health reports the lost stream"
    );
    assert!(
        b.wait_for_health("", ServingStatus::Serving).await,
        "the replica still serves"
    );
    for _ in 0..20 {
        assert_eq!(
            b.authorize(&token, "GET", "/customers", "").await.reason(),
            Reason::Ok
        );
    }
    assert_eq!(
        b.authorizer.hasher().verifications(),
        verifications,
        "version checks need no argon2"
    );
    // Each use is confirmed against the database: a change shows up at once.
    sqlx::query("UPDATE api_keys SET disabled_at = now(), version = version + 1 WHERE id = $1")
        .bind(
            keygate::domain::token::KeyId::parse(&key.id)
                .unwrap()
                .as_uuid(),
        )
        .execute(&a.pool)
        .await
        .unwrap();
    assert_eq!(
        b.authorize(&token, "GET", "/customers", "").await.reason(),
        Reason::Disabled
    );
}

/// Revokes `key` through `replica` without waiting for the other replicas.
async fn revoke_without_waiting(replica: &TestApp, admin_token: &str, key: &pb::Key) {
    let request = pb::RevokeKeyRequest {
        key_id: key.id.clone(),
        wait_for_propagation: Some(false),
    };
    replica
        .client
        .clone()
        .revoke_key(authed(admin_token, request))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_silent_replica_is_waited_for_until_its_lease_runs_out_and_then_named() {
    let db = TestDatabase::create().await;
    let quick_heartbeat =
        || with_heartbeat(&db, Duration::from_millis(200), Duration::from_millis(3000));
    let mut patient = quick_heartbeat();
    patient.replication.propagation_timeout = Duration::from_secs(10);
    let mut quick = quick_heartbeat();
    quick.replication.propagation_timeout = Duration::from_millis(300);
    let silent_settings = quick_heartbeat();
    let (a, b, silent) = three_replicas_each(&db, [patient, quick, silent_settings]).await;
    let all = [&a, &b, &silent];
    let (first_key, _) = warm_key(&all, &["customers:read"]).await;
    let second_key = cold_key(&a).await;
    // The silent replica stops applying events and renewing its lease.
    silent.replica.stop();
    let silent_name = silent.replica.name.clone();

    // Through B, which waits less than the lease: the silent replica is unconfirmed.
    let short_wait = revoke_through(&b, &a.admin_token, &first_key).await;
    assert!(short_wait.waited && !short_wait.complete);
    assert_eq!(short_wait.confirmed_replicas, 2);
    assert_eq!(short_wait.unconfirmed_replicas, vec![silent_name.clone()]);
    assert!(short_wait.lease_expired_replicas.is_empty());

    // Through A, which waits longer: the wait ends when the lease runs out.
    let started = std::time::Instant::now();
    let long_wait = revoke_through(&a, &a.admin_token, &second_key).await;
    assert!(long_wait.complete, "{long_wait:?}");
    assert_eq!(long_wait.confirmed_replicas, 2);
    assert!(long_wait.unconfirmed_replicas.is_empty());
    assert_eq!(long_wait.lease_expired_replicas, vec![silent_name]);
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn progress_reports_survive_the_loss_of_their_connection() {
    let db = TestDatabase::create().await;
    // Heartbeats too rare to carry a report within the wait: only the other
    // replica's report can complete it (the origin counts itself in process).
    let mut settings = with_heartbeat(&db, Duration::from_secs(60), Duration::from_secs(180));
    settings.replication.propagation_timeout = Duration::from_secs(3);
    let a = TestApp::spawn_with(&db, settings.clone()).await;
    let b = a.spawn_replica(settings).await;
    let all = [&a, &b];
    let (first_key, _) = warm_key(&all, &["customers:read"]).await;
    let second_key = cold_key(&a).await;
    let third_key = cold_key(&a).await;
    let first = revoke_through(&a, &a.admin_token, &first_key).await;
    assert!(first.complete, "{first:?}");

    // Kill both replicas' reporting connections (waiting until they are gone;
    // each opened one for its catch-up report at start).
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity \
         WHERE datname = current_database() \
         AND application_name = 'keygate progress reporter'",
    )
    .fetch_all(&a.pool)
    .await
    .unwrap();
    assert_eq!(killed, vec![true, true]);

    // Through each replica in turn, so that each one's reporter must reconnect.
    for (through, key) in [(&b, &second_key), (&a, &third_key)] {
        let revoked = revoke_through(through, &a.admin_token, key).await;
        assert!(revoked.complete, "{revoked:?}");
        assert_eq!(revoked.confirmed_replicas, 2);
    }
}

/// Waits (at most 10 s) until every replica has applied the latest event.
async fn wait_until_all_applied(replicas: &[&TestApp]) {
    let latest = replicas[0].latest_sequence().await;
    for _ in 0..200 {
        if replicas
            .iter()
            .all(|replica| replica.replica.applied_sequence() >= latest)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("replicas did not catch up");
}

/// The replicas that reported having applied `sequence` or later, from what a
/// subscriber has heard so far.
fn reported_at_least(
    heard: &mut tokio::sync::broadcast::Receiver<
        Option<keygate::replication::feed::ReplicaProgress>,
    >,
    sequence: i64,
) -> std::collections::HashSet<uuid::Uuid> {
    let mut reporters = std::collections::HashSet::new();
    loop {
        match heard.try_recv() {
            Ok(report) => {
                if let Some(report) = report.filter(|report| report.applied >= sequence) {
                    reporters.insert(report.replica);
                }
            }
            Err(tokio::sync::broadcast::error::TryRecvError::Empty) => return reporters,
            Err(other) => panic!("the progress feed failed: {other}"),
        }
    }
}

#[tokio::test]
async fn progress_reports_reach_only_the_replica_that_waits() {
    let db = TestDatabase::create().await;
    // Heartbeats (each also a report to the replica itself) too rare to be
    // heard during the test.
    let settings = with_heartbeat(&db, Duration::from_secs(60), Duration::from_secs(180));
    let (a, b, c) = three_replicas_with(&db, settings).await;
    let all = [&a, &b, &c];
    let (first_key, _) = warm_key(&all, &["customers:read"]).await;
    let second_key = cold_key(&a).await;
    let third_key = cold_key(&a).await;
    // Let the reports of the set-up's events settle before listening in.
    wait_until_all_applied(&all).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut heard_by_a = a.replica.progress_feed().subscribe();
    let mut heard_by_b = b.replica.progress_feed().subscribe();
    let mut heard_by_c = c.replica.progress_feed().subscribe();
    let everyone = std::collections::HashSet::from([a.replica.id, b.replica.id, c.replica.id]);

    let through_a = revoke_through(&a, &a.admin_token, &first_key).await;
    assert!(through_a.complete, "{through_a:?}");
    let revoked_through_a = a.latest_sequence().await;
    // Time for any report addressed elsewhere to arrive too.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        reported_at_least(&mut heard_by_a, revoked_through_a),
        everyone
    );
    // A learned of its own application in process: only B and C wrote theirs
    // to the table (A's row waits for its heartbeat).
    let recorded: Vec<(uuid::Uuid, i64)> =
        sqlx::query_as("SELECT id, last_applied_seq FROM replicas")
            .fetch_all(&a.pool)
            .await
            .unwrap();
    for (replica, applied) in recorded {
        assert_eq!(
            applied >= revoked_through_a,
            replica != a.replica.id,
            "replica {replica} recorded {applied}"
        );
    }
    // Each replica hears its own heartbeat, and nothing from the others.
    for heard_elsewhere in [&mut heard_by_b, &mut heard_by_c] {
        assert!(
            reported_at_least(heard_elsewhere, revoked_through_a).is_empty(),
            "a replica that waits for nothing heard reports"
        );
    }

    // And the other way round: C hears the reports for its own change.
    let through_c = revoke_through(&c, &a.admin_token, &second_key).await;
    assert!(through_c.complete, "{through_c:?}");
    let revoked_through_c = a.latest_sequence().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        reported_at_least(&mut heard_by_c, revoked_through_c),
        everyone
    );
    assert!(reported_at_least(&mut heard_by_a, revoked_through_c).is_empty());
    assert!(reported_at_least(&mut heard_by_b, revoked_through_c).is_empty());

    // A change nobody waits for is reported to no one.
    revoke_without_waiting(&b, &a.admin_token, &third_key).await;
    let unawaited = a.latest_sequence().await;
    wait_until_all_applied(&all).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    for heard in [&mut heard_by_a, &mut heard_by_b, &mut heard_by_c] {
        assert!(reported_at_least(heard, unawaited).is_empty());
    }
}

/// Resumes a stopped database backend when dropped, so that a failing test
/// leaves nothing frozen behind.
struct FrozenBackend(i32);

impl FrozenBackend {
    /// Stops `pid`, which must be a backend of a local Postgres (the test
    /// database server is this machine's).
    fn freeze(pid: i32) -> FrozenBackend {
        let name = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        assert_eq!(
            name.trim_end(),
            "postgres",
            "process {pid} is not a local postgres backend"
        );
        assert!(signal_backend("-STOP", pid), "kill -STOP {pid} failed");
        FrozenBackend(pid)
    }
}

impl Drop for FrozenBackend {
    fn drop(&mut self) {
        // Never panics: this may run while a failing test unwinds.
        if !signal_backend("-CONT", self.0) {
            eprintln!("failed to resume backend {}", self.0);
        }
    }
}

fn signal_backend(signal: &str, pid: i32) -> bool {
    std::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .is_ok_and(|status| status.success())
}

async fn listener_backends(replica: &TestApp) -> Vec<i32> {
    sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity \
         WHERE datname = current_database() AND query LIKE '/* keygate event listener */%'",
    )
    .fetch_all(&replica.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_listener_that_falls_silent_is_replaced_and_the_cache_caught_up() {
    let db = TestDatabase::create().await;
    let settings = with_heartbeat(&db, Duration::from_millis(200), Duration::from_millis(3000));
    let a = TestApp::spawn_with(&db, settings.clone()).await;
    // A's listener is the only one yet: find its backend before B starts.
    let listeners = listener_backends(&a).await;
    assert_eq!(listeners.len(), 1);
    let b = a.spawn_replica(settings).await;
    let (key, token) = warm_key(&[&a, &b], &["customers:read"]).await;
    let before = a.authorizer.freshness().trusted_epoch();

    // A quiet but healthy listener is kept.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(a.authorizer.freshness().trusted_epoch(), before);
    assert!(listener_backends(&a).await.contains(&listeners[0]));

    // A's listener connection stays open but says nothing more, as when a
    // network path drops it silently; its heartbeats still succeed.
    let _frozen = FrozenBackend::freeze(listeners[0]);
    revoke_without_waiting(&b, &a.admin_token, &key).await;

    // A notices the silence, replaces its listener (a new epoch) and, with
    // its cache caught up, refuses the key.
    let mut reason = Reason::Ok;
    for _ in 0..100 {
        reason = a.authorize(&token, "GET", "/customers", "").await.reason();
        if reason == Reason::Revoked {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(reason, Reason::Revoked);
    a.wait_until_trusted().await;
    assert!(a.authorizer.freshness().trusted_epoch() > before);
    // On a new connection (the frozen one cannot even be asked).
    let now_listening = listener_backends(&a).await;
    assert!(now_listening.iter().any(|pid| !listeners.contains(pid)));
}

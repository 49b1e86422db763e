//! The key-event listener: a `LISTEN` on the key-event channel that applies
//! each event to the cache the moment its notification arrives, and on the
//! progress channels that waiting mutations hear reports on; replaced when it
//! falls silent or its connection drops, catching up in a new epoch.

use std::time::Duration;

use sqlx::postgres::{PgListener, PgPoolOptions};
use sqlx::PgPool;
use uuid::Uuid;

use super::notification::{
    own_progress_channel, parse_progress, KeyEventNotice, Waiter, KEY_EVENTS_CHANNEL,
    PROGRESS_CHANNEL,
};
use super::reports::PendingReports;
use super::Replica;
use crate::authorizer::Authorizer;
use crate::domain::events::StateChange;
use crate::freshness::now_millis;

/// Seconds from an event's writing to now, both in unix milliseconds; never
/// negative, and any time the payload claims is taken without overflow.
fn lag_seconds(now_millis: i64, written_at_millis: i64) -> f64 {
    now_millis.saturating_sub(written_at_millis).max(0) as f64 / 1000.0
}

/// Applies a key event to the cache, records it as applied, and tells whoever
/// waits for it: this replica's own mutation in process, any other through
/// the reporter.
fn apply_event(
    authorizer: &Authorizer,
    replica: &Replica,
    pending: &PendingReports,
    event: &KeyEventNotice,
) {
    // A followed change takes the writer's clock for its time: only the
    // state counts for decisions.
    let change = event.action.map(|action| StateChange {
        action,
        at: event
            .written_at_millis
            .and_then(chrono::DateTime::from_timestamp_millis)
            .unwrap_or_else(chrono::Utc::now),
    });
    authorizer.follow_change(&event.key_id, event.version, change);
    if let Some(written_at) = event.written_at_millis {
        let lag = lag_seconds(now_millis(), written_at);
        metrics::histogram!("keygate_event_apply_lag_seconds").record(lag);
    }
    let progress = &replica.feed;
    progress.record_own(event.sequence);
    if event.waiter == Waiter::Origin(replica.id) {
        // The table hears it with the next heartbeat.
        progress.publish_own(replica.id);
    } else {
        pending.applied_for(event.waiter);
    }
}

/// A listener that has not heard even its own heartbeat for this many heartbeat
/// intervals is taken for lost (its connection may have died without a word,
/// as behind a firewall that drops it), and replaced.
pub(super) const SILENT_HEARTBEATS: u32 = 3;

pub(super) async fn listen(
    pool: PgPool,
    authorizer: Authorizer,
    replica: Replica,
    pending: PendingReports,
    silence_limit: Duration,
) {
    let freshness = authorizer.freshness().clone();
    let mut backoff = Duration::from_millis(50);
    loop {
        let connecting = connect_and_catch_up(&pool, replica.id);
        let connected = tokio::time::timeout(silence_limit, connecting)
            .await
            .unwrap_or_else(|_| {
                let late = std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "no answer while connecting and catching up",
                );
                Err(sqlx::Error::Io(late))
            });
        match connected {
            Ok((mut listener, caught_up)) => {
                replica.feed.record_own(caught_up);
                // Whoever waited meanwhile is unknown: tell everyone.
                pending.applied_for(Waiter::Unnamed);
                freshness.set_listener_connected(true);
                tracing::info!("event listener connected");
                backoff = Duration::from_millis(50);
                loop {
                    let received = tokio::select! {
                        biased;
                        received = listener.try_recv() => received,
                        () = tokio::time::sleep(silence_limit) => {
                            // Quiet, perhaps only because heartbeats fail: ask
                            // the connection itself before giving it up.
                            let probe = sqlx::query("SELECT 1").execute(&mut listener);
                            if let Ok(Ok(_)) = tokio::time::timeout(silence_limit, probe).await {
                                continue;
                            }
                            tracing::warn!(
                                silent_seconds = silence_limit.as_secs_f64(),
                                "event listener heard nothing, not even this replica's heartbeat, and its connection does not answer"
                            );
                            break;
                        }
                    };
                    // `Ok(None)` or an error: the connection is gone.
                    let Ok(Some(notification)) = received else {
                        break;
                    };
                    if notification.channel() != KEY_EVENTS_CHANNEL {
                        let report = parse_progress(notification.payload());
                        replica.feed.publish(report);
                        continue;
                    }
                    let Some(event) = KeyEventNotice::parse(notification.payload()) else {
                        tracing::warn!("ignoring a malformed key event notification");
                        continue;
                    };
                    apply_event(&authorizer, &replica, &pending, &event);
                }
                // The next listener catches up in a new epoch; this one's
                // connection goes back to its own pool in the background.
                drop(listener);
                freshness.set_listener_connected(false);
                tracing::warn!("event listener lost its connection; cached keys are confirmed against the database until it is back");
            }
            Err(error) => {
                freshness.set_listener_connected(false);
                tracing::warn!(%error, "event listener cannot connect or catch up");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

/// Starts listening, then reads the latest event sequence on the listener's
/// own connection (which also proves it alive, and takes nothing more from
/// the pool): every event after it will arrive as a notification. A listener
/// that cannot catch up is dropped (and retried) like one that cannot connect.
async fn connect_and_catch_up(
    pool: &PgPool,
    replica: Uuid,
) -> Result<(PgListener, i64), sqlx::Error> {
    let mut listener = subscribe(pool, replica).await?;
    // The comment names the connection in `pg_stat_activity`, where this
    // stays its last query.
    let caught_up: i64 = sqlx::query_scalar(
        "/* keygate event listener */ SELECT COALESCE(MAX(seq), 0) FROM key_events",
    )
    .fetch_one(&mut listener)
    .await?;
    Ok((listener, caught_up))
}

/// Listens for key events, for reports on this replica's own progress channel,
/// and on the shared one.
async fn subscribe(pool: &PgPool, replica: Uuid) -> Result<PgListener, sqlx::Error> {
    // A pool of its own, of one connection: a dropped listener hands its
    // connection back to its pool from a background task (UNLISTEN, then a
    // ping), which hangs as long as a silent connection does; it must not hold
    // a connection of the main pool meanwhile.
    let own_pool = PgPoolOptions::new()
        .max_connections(1)
        .max_lifetime(None)
        .idle_timeout(None)
        .connect_lazy_with(pool.connect_options().as_ref().clone());
    let mut listener = PgListener::connect_with(&own_pool).await?;
    // Closing the pool does not end the listener.
    listener.ignore_pool_close_event(true);
    // Report a lost connection at once (we reconnect ourselves, with backoff),
    // rather than first waiting for a new connection from the pool.
    listener.eager_reconnect(false);
    listener
        .listen_all([
            KEY_EVENTS_CHANNEL,
            PROGRESS_CHANNEL,
            &own_progress_channel(replica),
        ])
        .await?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_takes_any_written_time_without_overflow() {
        assert_eq!(lag_seconds(5_000, 3_000), 2.0);
        assert_eq!(lag_seconds(3_000, 5_000), 0.0, "a writer's clock ahead");
        assert_eq!(lag_seconds(1_000, i64::MAX), 0.0);
        assert!(lag_seconds(1_000, i64::MIN) > 0.0);
    }
}

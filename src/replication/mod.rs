//! This replica's part in cross-replica invalidation:
//!
//! - a `LISTEN` on the key-event channel that applies each event to the cache
//!   the moment its notification arrives (evicting the key, or following a
//!   disable or a revocation in place, and leaving a tombstone),
//!   replaced when it falls silent (it must hear at least this replica's own
//!   heartbeat);
//! - a row in `replicas` with the last event sequence applied, reported, for
//!   each event another replica's mutation waits on, to that replica (see
//!   `progress`), so that the mutation can wait until every live replica has
//!   applied it (a replica's own mutations learn of its progress in process,
//!   and its row follows with the heartbeat);
//! - a heartbeat on that row, which is a lease: a replica that cannot renew it
//!   in time stops trusting its cache (see `freshness`), so a waiting mutation
//!   may count a replica whose lease ran out as safe.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use uuid::Uuid;

use crate::authorizer::Authorizer;
use crate::freshness::{now_millis, Freshness};
use feed::ProgressFeed;

pub mod feed;
mod listener;
pub mod propagation;
mod reports;

use listener::{listen, SILENT_HEARTBEATS};
use reports::{report_applied, PendingReports};

/// Heartbeat and lease timing.
#[derive(Debug, Clone, Copy)]
pub struct LeaseSettings {
    pub heartbeat_interval: Duration,
    /// A replica whose heartbeat is older than this is no longer waited for,
    /// and has itself stopped trusting its cache.
    pub lease: Duration,
}

impl Default for LeaseSettings {
    fn default() -> Self {
        LeaseSettings {
            heartbeat_interval: Duration::from_millis(1000),
            lease: Duration::from_millis(3000),
        }
    }
}

/// A running replica's identity and progress.
#[derive(Clone)]
pub struct Replica {
    pub id: Uuid,
    pub name: String,
    tasks: Arc<Vec<tokio::task::JoinHandle<()>>>,
    freshness: Arc<Freshness>,
    /// Where this replica's listener publishes the progress reports it hears,
    /// and records its own, for its mutations' waits.
    feed: Arc<ProgressFeed>,
}

impl Replica {
    /// Stops listening (closing the listener's connection), reporting and
    /// heartbeating; the cache stops being trusted for good (an aborted task
    /// cannot bring trust back), so calls still draining are confirmed against
    /// the database.
    pub fn stop(&self) {
        for task in self.tasks.iter() {
            task.abort();
        }
        self.freshness.stop();
    }

    /// The last event sequence this replica has applied to its cache.
    pub fn applied_sequence(&self) -> i64 {
        self.feed.own_applied()
    }

    /// Progress reports as this replica hears them (and its own progress).
    pub fn progress_feed(&self) -> &Arc<ProgressFeed> {
        &self.feed
    }
}

/// Registers the replica and starts its listener, reporter and heartbeat.
pub async fn start(
    pool: PgPool,
    authorizer: Authorizer,
    feed: Arc<ProgressFeed>,
    name: String,
    lease: LeaseSettings,
) -> Result<Replica, sqlx::Error> {
    let freshness = authorizer.freshness().clone();
    let mut replica = Replica {
        id: Uuid::new_v4(),
        name,
        tasks: Arc::new(Vec::new()),
        freshness: freshness.clone(),
        feed,
    };
    let registered_at = now_millis();
    sqlx::query("INSERT INTO replicas (id, name) VALUES ($1, $2)")
        .bind(replica.id)
        .bind(&replica.name)
        .execute(&pool)
        .await?;
    let own_lease = lease.lease.saturating_sub(lease.heartbeat_interval / 2);
    freshness.renew_lease(registered_at + own_lease.as_millis() as i64);
    let pending = PendingReports::default();
    let tasks = vec![
        tokio::spawn(listen(
            pool.clone(),
            authorizer,
            replica.clone(),
            pending.clone(),
            lease.heartbeat_interval * SILENT_HEARTBEATS,
        )),
        tokio::spawn(report_applied(pool.clone(), replica.clone(), pending)),
        tokio::spawn(heartbeat(pool, freshness, replica.clone(), lease)),
    ];
    replica.tasks = Arc::new(tasks);
    Ok(replica)
}

/// Stops the replica's tasks and removes its row so that nobody waits for it.
pub async fn deregister(pool: &PgPool, replica: &Replica) {
    replica.stop();
    let removed = sqlx::query("DELETE FROM replicas WHERE id = $1")
        .bind(replica.id)
        .execute(pool)
        .await;
    if let Err(error) = removed {
        tracing::warn!(%error, "failed to deregister the replica");
    }
}

async fn heartbeat(
    pool: PgPool,
    freshness: Arc<Freshness>,
    replica: Replica,
    lease: LeaseSettings,
) {
    // Hold the lease until half an interval before it runs out as others see it;
    // trust is checked against this deadline on every request.
    let own_lease = lease.lease.saturating_sub(lease.heartbeat_interval / 2);
    let mut ticker = tokio::time::interval(lease.heartbeat_interval);
    loop {
        ticker.tick().await;
        let started = now_millis();
        // The renewal is also a progress report to this replica itself, which
        // its listener must hear: one that hears nothing is replaced. What it
        // claims is bounded by the newest event, as in every report (with no
        // event left after retention, there is nothing to bound it by).
        let claimed = replica.applied_sequence();
        let renewal = sqlx::query_as::<_, (i64, String)>(
            "WITH latest AS (SELECT COALESCE(MAX(seq), $3) AS seq FROM key_events), \
             renewed AS (INSERT INTO replicas (id, name, last_applied_seq) \
             SELECT $1, $2, LEAST($3, latest.seq) FROM latest \
             ON CONFLICT (id) DO UPDATE SET heartbeat_at = now(), \
             last_applied_seq = GREATEST(replicas.last_applied_seq, EXCLUDED.last_applied_seq) \
             RETURNING last_applied_seq) \
             SELECT latest.seq, pg_notify($4, $1::text || ' ' || last_applied_seq)::text \
             FROM renewed, latest",
        )
        .bind(replica.id)
        .bind(&replica.name)
        .bind(claimed)
        .bind(reports::own_channel(replica.id))
        .fetch_one(&pool);
        match tokio::time::timeout(lease.heartbeat_interval, renewal).await {
            Ok(Ok((latest, _))) => {
                freshness.renew_lease(started + own_lease.as_millis() as i64);
                if replica.feed.bound_own(claimed, latest) {
                    tracing::warn!(
                        claimed,
                        latest,
                        "a key event notification claimed a sequence beyond the newest event; taken back"
                    );
                }
            }
            Ok(Err(error)) => tracing::warn!(%error, "heartbeat failed"),
            Err(_) => tracing::warn!("heartbeat timed out"),
        }
    }
}

//! Cross-replica invalidation, in one place: how a change made on one replica
//! reaches every other replica's cache, and how the change's RPC learns that
//! it has.
//!
//! - [`notification`]: the `NOTIFY` channels and payloads, written and parsed
//!   there alone. Every mutation sends a key event in its own transaction.
//! - [`listener`]: a `LISTEN` that applies each key event to the cache the
//!   moment it arrives (evicting the key, or following a disable or a
//!   revocation in place, and leaving a tombstone), replaced when it falls
//!   silent (it must hear at least this replica's own heartbeat).
//! - [`reports`]: for each event another replica's mutation waits on, a
//!   report of this replica's progress to that replica (a replica's own
//!   mutations learn of its progress in process, through the [`feed`]).
//! - [`heartbeat`]: this replica's row in `replicas`, renewed every interval;
//!   it is a lease: a replica that cannot renew it in time stops trusting its
//!   cache (see `freshness`), so a waiting mutation may count a replica whose
//!   lease ran out as safe.
//! - [`propagation`]: the wait after a mutation commits, until every live
//!   replica has applied its event.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use uuid::Uuid;

use crate::authorizer::Authorizer;
use crate::freshness::{now_millis, Freshness};
use feed::ProgressFeed;

pub mod feed;
mod heartbeat;
mod listener;
pub mod notification;
pub mod propagation;
mod reports;

use heartbeat::heartbeat;
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

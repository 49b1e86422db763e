//! The heartbeat: this replica's row in `replicas`, renewed every interval.
//! It is a lease (a replica that cannot renew it in time stops trusting its
//! cache, and waiting mutations stop counting it) and a progress report to
//! this replica itself, which its listener must hear to stay trusted.

use std::sync::Arc;

use sqlx::PgPool;

use super::feed::ReplicaProgress;
use super::notification::{notify_progress, own_progress_channel};
use super::{LeaseSettings, Replica};
use crate::freshness::{now_millis, Freshness};

/// Renews this replica's row with the sequence it has applied (never beyond
/// the newest event), and tells its own listener; returns the newest event's
/// sequence, which bounds what the replica may claim.
async fn renew(pool: &PgPool, replica: &Replica, claimed: i64) -> Result<i64, sqlx::Error> {
    // With no event left after retention, there is nothing to bound it by.
    let (latest, recorded): (i64, i64) = sqlx::query_as(
        "WITH latest AS (SELECT COALESCE(MAX(seq), $3) AS seq FROM key_events), \
         renewed AS (INSERT INTO replicas (id, name, last_applied_seq) \
         SELECT $1, $2, LEAST($3, latest.seq) FROM latest \
         ON CONFLICT (id) DO UPDATE SET heartbeat_at = now(), \
         last_applied_seq = GREATEST(replicas.last_applied_seq, EXCLUDED.last_applied_seq) \
         RETURNING last_applied_seq) \
         SELECT latest.seq, renewed.last_applied_seq FROM renewed, latest",
    )
    .bind(replica.id)
    .bind(&replica.name)
    .bind(claimed)
    .fetch_one(pool)
    .await?;
    let progress = ReplicaProgress {
        replica: replica.id,
        applied: recorded,
    };
    notify_progress(pool, &[own_progress_channel(replica.id)], progress).await?;
    Ok(latest)
}

pub(super) async fn heartbeat(
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
        let renewal = renew(&pool, &replica, claimed);
        match tokio::time::timeout(lease.heartbeat_interval, renewal).await {
            Ok(Ok(latest)) => {
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

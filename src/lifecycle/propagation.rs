//! Waiting, after a mutation commits, until every live replica has applied its
//! event (evicted the key from its cache). A replica counts as live while its
//! heartbeat is younger than the lease; one whose lease ran out has stopped
//! trusting its cache by itself, so it is safe not to wait for it.

use std::time::{Duration, Instant};

use sqlx::{PgPool, Row};

use super::KeyManager;
use crate::store::StoreError;

/// How far a mutation's event had spread when the RPC returned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Propagation {
    /// Whether the call waited at all.
    pub waited: bool,
    /// Live replicas that applied the event.
    pub confirmed: usize,
    /// Names of live replicas that had not applied it when the wait timed out.
    pub unconfirmed: Vec<String>,
    /// Names of replicas that were live when the wait began and whose lease ran
    /// out before they confirmed: they no longer trust their caches.
    pub lease_expired: Vec<String>,
    /// Names of the confirmed replicas.
    pub confirmed_names: Vec<String>,
}

impl Propagation {
    /// Every live replica applied the event.
    pub fn complete(&self) -> bool {
        self.waited && self.unconfirmed.is_empty()
    }
}

/// The longest a waiter sleeps between reads when no progress is notified.
const POLL_FALLBACK: Duration = Duration::from_millis(25);

async fn replica_progress(
    pool: &PgPool,
    sequence: i64,
    lease: Duration,
) -> Result<Propagation, StoreError> {
    let rows = sqlx::query(
        "SELECT name, last_applied_seq >= $1 AS applied FROM replicas \
         WHERE heartbeat_at > now() - make_interval(secs => $2) ORDER BY name",
    )
    .bind(sequence)
    .bind(lease.as_secs_f64())
    .fetch_all(pool)
    .await?;
    let mut progress = Propagation {
        waited: true,
        ..Propagation::default()
    };
    for row in rows {
        if row.try_get::<bool, _>("applied")? {
            progress.confirmed += 1;
            progress.confirmed_names.push(row.try_get("name")?);
        } else {
            progress.unconfirmed.push(row.try_get("name")?);
        }
    }
    Ok(progress)
}

impl KeyManager {
    /// Waits (when asked) until every live replica has applied event `sequence`,
    /// at most the configured timeout. Never fails the already committed change.
    pub(super) async fn propagate(&self, sequence: i64, wait: bool) -> Propagation {
        if !wait {
            return Propagation::default();
        }
        let deadline = Instant::now() + self.propagation_timeout;
        let mut seen: Vec<String> = Vec::new();
        let freshness = self.authorizer.freshness().clone();
        loop {
            // Registered before the read, so progress reported meanwhile wakes us.
            let progressed = freshness.replica_progress.notified();
            tokio::pin!(progressed);
            progressed.as_mut().enable();
            match replica_progress(&self.pool, sequence, self.lease).await {
                Ok(mut progress) => {
                    for name in &progress.unconfirmed {
                        if !seen.contains(name) {
                            seen.push(name.clone());
                        }
                    }
                    let finished = progress.unconfirmed.is_empty() || Instant::now() >= deadline;
                    if finished {
                        progress.lease_expired = seen
                            .iter()
                            .filter(|name| !progress.unconfirmed.contains(name))
                            .filter(|name| {
                                progress
                                    .confirmed_names
                                    .iter()
                                    .all(|confirmed| confirmed != *name)
                            })
                            .cloned()
                            .collect();
                        if !progress.unconfirmed.is_empty() {
                            tracing::warn!(sequence, unconfirmed = ?progress.unconfirmed, "propagation wait timed out");
                        }
                        return progress;
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, sequence, "cannot read replica progress");
                    if Instant::now() >= deadline {
                        return Propagation {
                            waited: true,
                            unconfirmed: vec!["(replica progress unreadable)".to_owned()],
                            ..Propagation::default()
                        };
                    }
                }
            }
            let _ = tokio::time::timeout(POLL_FALLBACK, progressed).await;
        }
    }
}

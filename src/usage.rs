//! `last_used_at`, written off the hot path: a use marks the key at most once a
//! minute (per cached entry), marks travel over a bounded channel, and a
//! background task writes them in batches. Marks that do not fit are dropped:
//! usage is informational and must never slow Authorize down.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::mpsc;

use crate::cache::CachedKey;
use crate::token::KeyId;

/// How often a key's use is reported, at most.
pub const REPORT_EVERY_SECONDS: i64 = 60;
const CHANNEL_CAPACITY: usize = 10_000;
const MAX_BATCH: usize = 1_000;

#[derive(Clone)]
pub struct UsageRecorder {
    sender: mpsc::Sender<KeyId>,
}

impl UsageRecorder {
    /// Starts the writer task, flushing every `flush_interval`.
    pub fn spawn(pool: PgPool, flush_interval: Duration) -> UsageRecorder {
        let (sender, receiver) = mpsc::channel(CHANNEL_CAPACITY);
        tokio::spawn(write_batches(pool, receiver, flush_interval));
        UsageRecorder { sender }
    }

    /// Notes that `entry` was used at `now_seconds` (Unix time). Never blocks.
    pub fn touch(&self, entry: &CachedKey, now_seconds: i64) {
        let last = entry.last_used_reported.load(Ordering::Relaxed);
        if now_seconds - last < REPORT_EVERY_SECONDS {
            return;
        }
        let claimed = entry
            .last_used_reported
            .compare_exchange(last, now_seconds, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok();
        if claimed {
            let _ = self.sender.try_send(entry.key.id);
        }
    }
}

async fn write_batches(
    pool: PgPool,
    mut receiver: mpsc::Receiver<KeyId>,
    flush_interval: Duration,
) {
    let mut pending: HashSet<KeyId> = HashSet::new();
    let mut ticker = tokio::time::interval(flush_interval);
    loop {
        tokio::select! {
            received = receiver.recv() => match received {
                Some(id) => {
                    pending.insert(id);
                    if pending.len() >= MAX_BATCH {
                        flush(&pool, &mut pending).await;
                    }
                }
                None => {
                    flush(&pool, &mut pending).await;
                    return;
                }
            },
            _ = ticker.tick() => flush(&pool, &mut pending).await,
        }
    }
}

async fn flush(pool: &PgPool, pending: &mut HashSet<KeyId>) {
    if pending.is_empty() {
        return;
    }
    let ids: Vec<uuid::Uuid> = pending.drain().map(|id| id.as_uuid()).collect();
    let written = sqlx::query(
        "UPDATE api_keys SET last_used_at = now() \
         WHERE id = ANY($1) AND (last_used_at IS NULL OR last_used_at < now())",
    )
    .bind(&ids)
    .execute(pool)
    .await;
    if let Err(error) = written {
        tracing::warn!(%error, keys = ids.len(), "failed to record key usage");
    }
}

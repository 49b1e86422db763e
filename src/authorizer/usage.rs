//! A key's last use, written off the hot path: a use marks the key at most
//! once a minute (per cached entry), marks travel over a bounded channel, and
//! a background task writes them in batches (`store::usage`). Marks that do
//! not fit are dropped: usage is informational and must never slow Authorize
//! down.
//!
//! The next mark after a report falls due a minute plus a random part of
//! [`REPORT_JITTER_SECONDS`] later: keys that entered the cache together (a
//! replica warming up) would otherwise all report again in the same second,
//! every minute, as one burst of writes on the database.

use std::collections::HashSet;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use rand::Rng;
use sqlx::PgPool;
use tokio::sync::mpsc;

use crate::cache::CachedKey;
use crate::domain::token::KeyId;
use crate::store::usage::record_key_uses;
use crate::store::StoreError;

/// How often a key's use is reported, at most.
pub const REPORT_EVERY_SECONDS: i64 = 60;
/// A report falls due [`REPORT_EVERY_SECONDS`] after the last plus a random
/// whole number of seconds below this.
pub const REPORT_JITTER_SECONDS: i64 = 30;
const CHANNEL_CAPACITY: usize = 10_000;
const MAX_BATCH: usize = 1_000;

/// When the report after one made at `now_seconds` falls due, given `jitter`
/// in `0..REPORT_JITTER_SECONDS`.
fn next_report_due(now_seconds: i64, jitter: i64) -> i64 {
    now_seconds
        .saturating_add(REPORT_EVERY_SECONDS)
        .saturating_add(jitter.clamp(0, REPORT_JITTER_SECONDS - 1))
}

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
        if !claim_report(&entry.usage_report_due, now_seconds) {
            return;
        }
        let _ = self.sender.try_send(entry.key.id);
    }
}

/// Whether a use at `now_seconds` is the one to report, given the second
/// its entry's report is `due` (0 for a new entry: at once). True for the
/// first use at or after that second, which also sets the next one.
fn claim_report(due: &AtomicI64, now_seconds: i64) -> bool {
    let due_at = due.load(Ordering::Relaxed);
    if now_seconds < due_at {
        return false;
    }
    let jitter = rand::thread_rng().gen_range(0..REPORT_JITTER_SECONDS);
    due.compare_exchange(
        due_at,
        next_report_due(now_seconds, jitter),
        Ordering::Relaxed,
        Ordering::Relaxed,
    )
    .is_ok()
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
    let ids: Vec<KeyId> = pending.drain().collect();
    let mut written = record_key_uses(pool, &ids).await;
    if matches!(written, Err(StoreError::Conflict(_))) {
        // A deadlock with another replica writing the same keys' first uses
        // (see `record_key_uses`): nothing was written, and once is enough.
        written = record_key_uses(pool, &ids).await;
    }
    if let Err(error) = written {
        tracing::warn!(%error, keys = ids.len(), "failed to record key usage");
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::atomic::{AtomicI64, Ordering};

    use super::{claim_report, next_report_due, REPORT_EVERY_SECONDS, REPORT_JITTER_SECONDS};

    const NOW: i64 = 1_800_000_000;

    #[test]
    fn a_new_entry_reports_its_first_use_and_then_waits_a_minute() {
        let due = AtomicI64::new(0);
        assert!(claim_report(&due, NOW));
        assert!(!claim_report(&due, NOW));
        assert!(!claim_report(&due, NOW + REPORT_EVERY_SECONDS - 1));
        assert!(claim_report(
            &due,
            NOW + REPORT_EVERY_SECONDS + REPORT_JITTER_SECONDS
        ));
    }

    #[test]
    fn the_next_report_falls_within_the_jitter_window() {
        for jitter in [
            -5,
            0,
            7,
            REPORT_JITTER_SECONDS - 1,
            REPORT_JITTER_SECONDS,
            1_000,
        ] {
            let next = next_report_due(NOW, jitter);
            assert!(
                next >= NOW + REPORT_EVERY_SECONDS,
                "jitter {jitter}: {next}"
            );
            assert!(
                next < NOW + REPORT_EVERY_SECONDS + REPORT_JITTER_SECONDS,
                "jitter {jitter}: {next}"
            );
        }
        assert_eq!(next_report_due(i64::MAX - 1, 3), i64::MAX);
    }

    #[test]
    fn keys_reported_together_fall_due_at_spread_out_times() {
        let dues: Vec<AtomicI64> = (0..1_000).map(|_| AtomicI64::new(0)).collect();
        for due in &dues {
            assert!(claim_report(due, NOW));
        }
        let seconds: HashSet<i64> = dues
            .iter()
            .map(|due| due.load(Ordering::Relaxed) - NOW)
            .collect();
        assert!(seconds.iter().all(|second| (REPORT_EVERY_SECONDS
            ..REPORT_EVERY_SECONDS + REPORT_JITTER_SECONDS)
            .contains(second)));
        // 1,000 draws over 30 seconds leave none out but by a freak chance.
        assert!(
            seconds.len() > 20,
            "only {} distinct seconds",
            seconds.len()
        );
    }
}

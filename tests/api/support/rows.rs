//! What is in the test database: counts and sums a test compares before and
//! after a call, to show what it wrote (or that it wrote nothing).

use super::app::TestApp;

impl TestApp {
    /// The number of rows in `table`.
    pub async fn count(&self, table: &str) -> i64 {
        sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    /// (keys, events) row counts, to assert that a refused call wrote nothing.
    pub async fn row_counts(&self) -> (i64, i64) {
        (self.count("api_keys").await, self.count("key_events").await)
    }

    /// The sum of every key's version: unchanged unless some key was changed.
    pub async fn version_sum(&self) -> i64 {
        sqlx::query_scalar("SELECT COALESCE(sum(version), 0)::bigint FROM api_keys")
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    /// The newest event's sequence number (0 with no event).
    pub async fn latest_sequence(&self) -> i64 {
        sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM key_events")
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }
}

//! Migrations that move data keep it, and leave what the previous release
//! still uses in place.

use sqlx::PgPool;

use crate::database::TestDatabase;

const INITIAL: &str = include_str!("../../migrations/20261123000001_initial.sql");
const REPLICAS: &str = include_str!("../../migrations/20261123000002_replicas.sql");
const KEY_USAGE: &str = include_str!("../../migrations/20261130000001_key_usage.sql");

async fn key_with_last_use(pool: &PgPool, last_used: Option<&str>) -> uuid::Uuid {
    let id = uuid::Uuid::new_v4();
    sqlx::query(
        "INSERT INTO api_keys (id, kind, environment, name, scopes, secret_hash, last_used_at) \
         VALUES ($1, 'system', 'live', 'k', '{customers:read}', 'hash', $2::timestamptz)",
    )
    .bind(id)
    .bind(last_used)
    .execute(pool)
    .await
    .unwrap();
    id
}

#[tokio::test]
async fn key_usage_takes_over_the_last_use_times() {
    let db = TestDatabase::create().await;
    let pool = db.pool().await;
    sqlx::raw_sql(INITIAL).execute(&pool).await.unwrap();
    sqlx::raw_sql(REPLICAS).execute(&pool).await.unwrap();
    let used = key_with_last_use(&pool, Some("2026-11-01T10:00:00Z")).await;
    let unused = key_with_last_use(&pool, None).await;

    sqlx::raw_sql(KEY_USAGE).execute(&pool).await.unwrap();

    let rows: Vec<(uuid::Uuid, chrono::DateTime<chrono::Utc>)> =
        sqlx::query_as("SELECT key_id, last_used_at FROM key_usage")
            .fetch_all(&pool)
            .await
            .unwrap();
    let expected = "2026-11-01T10:00:00Z".parse().unwrap();
    assert_eq!(rows, vec![(used, expected)]);
    // Kept, so that replicas of the previous release keep working while a
    // rolling update replaces them.
    let old_column_kept: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM information_schema.columns \
         WHERE table_name = 'api_keys' AND column_name = 'last_used_at')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(old_column_kept);
    let keys: i64 = sqlx::query_scalar("SELECT count(*) FROM api_keys WHERE id = ANY($1)")
        .bind(vec![used, unused])
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(keys, 2);
    pool.close().await;
}

#[tokio::test]
async fn a_database_migrated_by_a_later_release_is_accepted() {
    let db = TestDatabase::create().await;
    let pool = db.pool().await;
    keygate::store::migrate(&pool).await.unwrap();
    let applied_before: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations")
        .fetch_one(&pool)
        .await
        .unwrap();
    // What a later release's migration leaves behind: this release knows nothing of it.
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (29991231000001, 'from a later release', true, '\\x00', 0)",
    )
    .execute(&pool)
    .await
    .unwrap();

    keygate::store::migrate(&pool).await.unwrap();

    let applied_after: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(applied_after, applied_before + 1);
    pool.close().await;
}

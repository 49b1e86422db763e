//! Postgres access: plain functions over a pool or a transaction, SQL beside them.
//!
//! Errors are classified here, once, by SQLSTATE and constraint name; callers
//! match on [`StoreError`] and never on message text.
//!
//! Each function is one statement with its own span, `keygate.store.<function>`,
//! carrying OpenTelemetry's `db.system` (`postgresql`) and `db.operation` (the
//! statement's main verb: `SELECT`, `INSERT`, `UPDATE`, `DELETE`).

pub mod changes;
pub mod events;
pub mod keys;
pub mod organizations;
pub mod usage;

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context;
use sqlx::migrate::MigrateDatabase;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

/// The migrations in `migrations/`, embedded in the binary. Migrations are
/// additive (a release never removes what the previous one reads), so a
/// replica also starts on a database that a newer release has migrated
/// further: a rollback, or a replica of the old release restarting during a
/// rolling update.
pub fn migrator() -> sqlx::migrate::Migrator {
    let mut migrator = sqlx::migrate!("./migrations");
    migrator.set_ignore_missing(true);
    migrator
}

const FOREIGN_KEY_VIOLATION: &str = "23503";
const UNIQUE_VIOLATION: &str = "23505";
/// A serialization failure or a deadlock another transaction caused: the
/// transaction was rolled back, and the same request may succeed when retried.
/// (Not the rest of class 40: 40003 means the outcome is unknown.)
const SERIALIZATION_FAILURE: &str = "40001";
const DEADLOCK_DETECTED: &str = "40P01";
/// The database named in the connection does not exist.
const INVALID_CATALOG_NAME: &str = "3D000";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached or the pool is exhausted or closed.
    #[error("database unavailable")]
    Unavailable(#[source] sqlx::Error),
    /// A foreign key pointed nowhere; holds the constraint's name.
    #[error("foreign key {0} violated")]
    MissingReference(String),
    /// A unique index refused a duplicate; holds the constraint's name.
    #[error("unique constraint {0} violated")]
    Duplicate(String),
    /// The database rolled the transaction back because of a concurrent one
    /// (a deadlock, or a serialization failure); nothing was written.
    #[error("transaction rolled back by a concurrent one")]
    Conflict(#[source] sqlx::Error),
    /// A row that does not decode into domain types.
    #[error("stored row is invalid: {0}")]
    Corrupt(String),
    #[error("database error")]
    Other(#[source] sqlx::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> StoreError {
        match &error {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => StoreError::Unavailable(error),
            sqlx::Error::Database(database_error) => {
                let constraint = database_error.constraint().unwrap_or_default().to_owned();
                match database_error.code().as_deref() {
                    Some(FOREIGN_KEY_VIOLATION) => StoreError::MissingReference(constraint),
                    Some(UNIQUE_VIOLATION) => StoreError::Duplicate(constraint),
                    // Class 08: connection exceptions; 57P0x: the server is shutting down.
                    Some(code) if code.starts_with("08") || code.starts_with("57P") => {
                        StoreError::Unavailable(error)
                    }
                    Some(SERIALIZATION_FAILURE | DEADLOCK_DETECTED) => StoreError::Conflict(error),
                    _ => StoreError::Other(error),
                }
            }
            _ => StoreError::Other(error),
        }
    }
}

/// Opens a pool on an existing database.
pub async fn connect(options: &PgConnectOptions, max_connections: u32) -> anyhow::Result<PgPool> {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options.clone())
        .await
        .context("failed to connect to the database")
}

/// Whether connecting failed because the database does not exist.
pub fn is_missing_database(error: &anyhow::Error) -> bool {
    error
        .downcast_ref::<sqlx::Error>()
        .and_then(sqlx::Error::as_database_error)
        .and_then(|database_error| database_error.code())
        .is_some_and(|code| code == INVALID_CATALOG_NAME)
}

/// Creates the database named in `url` when it does not exist yet.
pub async fn create_database_if_missing(url: &str) -> anyhow::Result<()> {
    let exists = sqlx::Postgres::database_exists(url)
        .await
        .context("failed to check whether the database exists")?;
    if !exists {
        tracing::info!("database does not exist; creating it");
        sqlx::Postgres::create_database(url)
            .await
            .context("failed to create the database")?;
    }
    Ok(())
}

/// Applies pending migrations; concurrent replicas serialize on sqlx's advisory lock.
/// A database whose schema is already current is left alone, so that a role
/// without DDL rights (the chart's `migrations.mode: job`) can run `serve` and
/// `bootstrap` without `--no-migrate`.
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    if schema_is_current(pool).await {
        tracing::debug!("database schema is current; nothing to migrate");
        return Ok(());
    }
    migrator()
        .run(pool)
        .await
        .context("failed to apply migrations")
}

/// Whether every migration in `migrations/` is recorded as applied, with the
/// checksum it has now. This needs only SELECT on `_sqlx_migrations`; the
/// migrator itself starts with `CREATE TABLE IF NOT EXISTS`, which Postgres
/// refuses to a role without CREATE on the schema even when the table exists.
/// Anything else (no table yet, a failed or changed migration, no read
/// access) answers false and leaves the verdict to the migrator.
async fn schema_is_current(pool: &PgPool) -> bool {
    let recorded: Vec<(i64, Vec<u8>, bool)> =
        match sqlx::query_as("SELECT version, checksum, success FROM _sqlx_migrations")
            .fetch_all(pool)
            .await
        {
            Ok(rows) => rows,
            Err(_) => return false,
        };
    if recorded.iter().any(|(_, _, success)| !success) {
        return false;
    }
    let applied: HashMap<i64, Vec<u8>> = recorded
        .into_iter()
        .map(|(version, checksum, _)| (version, checksum))
        .collect();
    migrator()
        .iter()
        .filter(|migration| !migration.migration_type.is_down_migration())
        .all(|migration| {
            applied
                .get(&migration.version)
                .is_some_and(|checksum| checksum.as_slice() == &*migration.checksum)
        })
}

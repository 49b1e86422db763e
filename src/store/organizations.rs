//! The `organizations` table.

use sqlx::postgres::PgRow;
use sqlx::{PgExecutor, Row};
use uuid::Uuid;

use super::StoreError;
use crate::domain::organization::Organization;

fn organization_from_row(row: &PgRow) -> Result<Organization, StoreError> {
    Ok(Organization {
        id: row.try_get("id")?,
        display_name: row.try_get("display_name")?,
        created_at: row.try_get("created_at")?,
    })
}

#[tracing::instrument(
    name = "keygate.store.insert_organization",
    level = "debug",
    skip_all,
    fields(db.system = "postgresql", db.operation = "INSERT")
)]
pub async fn insert_organization(
    executor: impl PgExecutor<'_>,
    display_name: &str,
) -> Result<Organization, StoreError> {
    let row = sqlx::query(
        "INSERT INTO organizations (id, display_name) VALUES ($1, $2) \
         RETURNING id, display_name, created_at",
    )
    .bind(Uuid::new_v4())
    .bind(display_name)
    .fetch_one(executor)
    .await?;
    organization_from_row(&row)
}

#[tracing::instrument(
    name = "keygate.store.find_organization",
    level = "debug",
    skip_all,
    fields(db.system = "postgresql", db.operation = "SELECT")
)]
pub async fn find_organization(
    executor: impl PgExecutor<'_>,
    id: Uuid,
) -> Result<Option<Organization>, StoreError> {
    let row = sqlx::query("SELECT id, display_name, created_at FROM organizations WHERE id = $1")
        .bind(id)
        .fetch_optional(executor)
        .await?;
    row.as_ref().map(organization_from_row).transpose()
}

/// One page of organizations, newest first, strictly older than `before_seq`,
/// each with its sequence number for the page token.
#[tracing::instrument(
    name = "keygate.store.list_organizations",
    level = "debug",
    skip_all,
    fields(db.system = "postgresql", db.operation = "SELECT")
)]
pub async fn list_organizations(
    executor: impl PgExecutor<'_>,
    before_seq: Option<i64>,
    limit: i64,
) -> Result<Vec<(i64, Organization)>, StoreError> {
    let rows = sqlx::query(
        "SELECT seq, id, display_name, created_at FROM organizations \
         WHERE ($1::bigint IS NULL OR seq < $1) ORDER BY seq DESC LIMIT $2",
    )
    .bind(before_seq)
    .bind(limit)
    .fetch_all(executor)
    .await?;
    rows.iter()
        .map(|row| Ok((row.try_get("seq")?, organization_from_row(row)?)))
        .collect()
}

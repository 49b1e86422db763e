//! Organizations: the tenants that own organization keys. System keys manage
//! every organization; organization keys only their own (see
//! `lifecycle::access`).

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// A tenant that owns organization keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Organization {
    pub id: Uuid,
    pub display_name: String,
    pub created_at: DateTime<Utc>,
}

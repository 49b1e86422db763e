//! The `organizations` table: one reads back as written, and listings page
//! newest first.

use keygate::store::organizations::{find_organization, list_organizations};
use uuid::Uuid;

use crate::support::TestStore;

#[tokio::test]
async fn an_organization_reads_back_as_it_was_written() {
    let store = TestStore::migrated().await;
    let acme = store.organization("Acme").await;
    assert_eq!(acme.display_name, "Acme");

    let found = find_organization(&store.pool, acme.id).await.unwrap();
    assert_eq!(found, Some(acme));
    let unknown = find_organization(&store.pool, Uuid::new_v4())
        .await
        .unwrap();
    assert_eq!(unknown, None);
}

#[tokio::test]
async fn organizations_are_listed_newest_first_a_page_at_a_time() {
    let store = TestStore::migrated().await;
    let first = store.organization("First").await;
    let second = store.organization("Second").await;
    let third = store.organization("Third").await;

    let page = list_organizations(&store.pool, None, 2).await.unwrap();
    let names: Vec<&str> = page
        .iter()
        .map(|(_, organization)| organization.display_name.as_str())
        .collect();
    assert_eq!(names, vec!["Third", "Second"]);
    assert_eq!(page[0].1, third);
    assert_eq!(page[1].1, second);
    let oldest_seen = page[1].0;
    let rest = list_organizations(&store.pool, Some(oldest_seen), 2)
        .await
        .unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].1, first);
    assert!(rest[0].0 < oldest_seen);
}

//! The audit log: events numbered under the events lock, and listed newest
//! first, a page at a time, by key, organization and environment. (That their
//! notifications arrive in commit order is the API tests' business: the
//! lifecycle sends them.)

use std::time::Duration;

use keygate::domain::events::EventAction;
use keygate::domain::key::Key;
use keygate::domain::token::Environment;
use keygate::store::changes::set_disabled;
use keygate::store::events::{list_events, EventFilter, EVENTS_LOCK};
use sqlx::PgPool;

use crate::support::{event_for, TestStore};

/// Disables `key` in a transaction of its own, as DisableKey does.
async fn disable(pool: &PgPool, key: &Key) {
    let mut transaction = pool.begin().await.unwrap();
    let event = event_for(key, EventAction::Disabled);
    set_disabled(&mut transaction, &key.id, true, event)
        .await
        .unwrap();
    transaction.commit().await.unwrap();
}

/// Every event of every key.
fn no_filter() -> EventFilter {
    EventFilter {
        key_id: None,
        organization_id: None,
        organization_events_only: false,
        environment: None,
    }
}

/// The number the sequence last handed out (events take theirs from it).
async fn last_event_number(store: &TestStore) -> Option<i64> {
    sqlx::query_scalar("SELECT pg_sequence_last_value(pg_get_serial_sequence('key_events', 'seq'))")
        .fetch_one(&store.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn an_event_is_numbered_only_under_the_events_lock() {
    let store = TestStore::migrated().await;
    let organization = store.organization("Acme").await;
    let key = store.key(&organization).await;
    let mut holder = store.pool.acquire().await.unwrap();
    sqlx::query("SELECT pg_advisory_lock(hashtext($1))")
        .bind(EVENTS_LOCK)
        .execute(&mut *holder)
        .await
        .unwrap();
    let before = last_event_number(&store).await;

    let change = disable(&store.pool, &key);
    let check = async {
        let mut waiting = false;
        for _ in 0..100 {
            waiting = sqlx::query_scalar(
                "SELECT count(*) > 0 FROM pg_stat_activity WHERE datname = current_database() \
                 AND wait_event_type = 'Lock' AND wait_event = 'advisory'",
            )
            .fetch_one(&store.pool)
            .await
            .unwrap();
            if waiting {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let while_waiting = last_event_number(&store).await;
        sqlx::query("SELECT pg_advisory_unlock(hashtext($1))")
            .bind(EVENTS_LOCK)
            .execute(&mut *holder)
            .await
            .unwrap();
        (waiting, while_waiting)
    };
    let (_, (waiting, while_waiting)) = tokio::join!(change, check);
    assert!(waiting, "the change never waited for the lock");
    assert_eq!(while_waiting, before, "a number was taken before the lock");
    assert!(last_event_number(&store).await > before);
}

#[tokio::test]
async fn events_are_listed_newest_first_a_page_at_a_time() {
    let store = TestStore::migrated().await;
    let organization = store.organization("Acme").await;
    let key = store.key(&organization).await;
    disable(&store.pool, &key).await;
    let other = store.key(&organization).await;

    let first_page = list_events(&store.pool, &no_filter(), None, 2)
        .await
        .unwrap();
    let seen: Vec<_> = first_page
        .iter()
        .map(|event| (event.key_id, event.action))
        .collect();
    assert_eq!(
        seen,
        vec![
            (other.id, EventAction::Created),
            (key.id, EventAction::Disabled)
        ]
    );
    let oldest_seen = first_page[1].sequence;
    assert!(first_page[0].sequence > oldest_seen);

    let second_page = list_events(&store.pool, &no_filter(), Some(oldest_seen), 2)
        .await
        .unwrap();
    let seen: Vec<_> = second_page
        .iter()
        .map(|event| (event.key_id, event.action))
        .collect();
    assert_eq!(seen, vec![(key.id, EventAction::Created)]);
    let created = &second_page[0];
    assert_eq!(created.organization_id, Some(organization.id));
    assert_eq!(created.actor_key_id, None);
    assert_eq!(created.changes, serde_json::json!({}));
    assert!(created.sequence < oldest_seen);
}

#[tokio::test]
async fn a_listing_keeps_to_its_key_organization_and_environment() {
    let store = TestStore::migrated().await;
    let acme = store.organization("Acme").await;
    let globex = store.organization("Globex").await;
    let acme_key = store.key(&acme).await;
    let globex_key = store.key(&globex).await;
    disable(&store.pool, &acme_key).await;
    let listed = |filter: EventFilter| {
        let pool = store.pool.clone();
        async move {
            let events = list_events(&pool, &filter, None, 100).await.unwrap();
            let seen: Vec<_> = events
                .iter()
                .map(|event| (event.key_id, event.action))
                .collect();
            seen
        }
    };

    let of_key = EventFilter {
        key_id: Some(globex_key.id),
        ..no_filter()
    };
    assert_eq!(
        listed(of_key).await,
        vec![(globex_key.id, EventAction::Created)]
    );
    let of_organization = EventFilter {
        organization_id: Some(acme.id),
        ..no_filter()
    };
    assert_eq!(
        listed(of_organization).await,
        vec![
            (acme_key.id, EventAction::Disabled),
            (acme_key.id, EventAction::Created)
        ]
    );
    let in_test = EventFilter {
        environment: Some(Environment::Test),
        ..no_filter()
    };
    assert_eq!(listed(in_test).await, vec![]);
    let in_live = EventFilter {
        environment: Some(Environment::Live),
        ..no_filter()
    };
    assert_eq!(listed(in_live).await.len(), 3);
}

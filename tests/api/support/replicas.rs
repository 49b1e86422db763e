//! Three replicas on one database: the one way tests get them, and questions
//! put to every replica in turn.

use keygate::grpc::pb::{self, Environment, Reason};
use keygate::server::config::Settings;

use super::app::TestApp;
use super::database::TestDatabase;

/// Three replicas with test settings on a fresh database; the first holds
/// the bootstrap admin key, which the others share.
pub async fn three_replicas() -> (TestApp, TestApp, TestApp) {
    let database = TestDatabase::create().await;
    let settings = database.settings();
    three_replicas_with(&database, settings).await
}

/// Three replicas on `database`, all started with `settings` (one replica
/// name for the three).
pub async fn three_replicas_with(
    database: &TestDatabase,
    settings: Settings,
) -> (TestApp, TestApp, TestApp) {
    let each = [settings.clone(), settings.clone(), settings];
    three_replicas_each(database, each).await
}

/// Three replicas on `database`, started in order, each with its own settings.
pub async fn three_replicas_each(
    database: &TestDatabase,
    [first, second, third]: [Settings; 3],
) -> (TestApp, TestApp, TestApp) {
    let first = TestApp::spawn_with(database, first).await;
    let second = first.spawn_replica(second).await;
    let third = first.spawn_replica(third).await;
    (first, second, third)
}

/// Asks every replica the same question; returns their reasons in order.
pub async fn authorize_on_all(
    replicas: &[&TestApp],
    token: &str,
    method: &str,
    path: &str,
) -> Vec<pb::Reason> {
    let decisions = decisions_on_all(replicas, token, method, path).await;
    decisions.iter().map(pb::Decision::reason).collect()
}

/// Each replica's decision on the same request, asked one after another.
pub async fn decisions_on_all(
    replicas: &[&TestApp],
    token: &str,
    method: &str,
    path: &str,
) -> Vec<pb::Decision> {
    let mut decisions = Vec::with_capacity(replicas.len());
    for replica in replicas {
        decisions.push(replica.authorize(token, method, path, "").await);
    }
    decisions
}

/// Creates a key (in a new organization) and warms it on every replica.
pub async fn warm_key(replicas: &[&TestApp], scopes: &[&str]) -> (pb::Key, String) {
    let first = replicas[0];
    let org = first.create_organization("Acme").await;
    let (key, token) = first.org_key(&org, Environment::Live, scopes).await;
    for reason in authorize_on_all(replicas, &token, "GET", "/customers").await {
        assert_eq!(reason, Reason::Ok);
    }
    (key, token)
}

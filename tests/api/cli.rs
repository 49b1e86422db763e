//! The admin CLI end to end: the real `keygate` binary, run as a process,
//! against a real server on loopback and a fresh database per test.

use keygate::domain::token::KeyId;
use keygate::grpc::pb::{self, Environment};
use serde_json::json;

use crate::support::cli_runner::{as_admin, printed_token, run_cli, server_url};
use crate::support::{key_id_of, key_request, TestApp};

/// One value the database holds about key `key_id` (bound as `$1`).
async fn stored<T>(app: &TestApp, sql: &str, key_id: &str) -> T
where
    T: for<'row> sqlx::Decode<'row, sqlx::Postgres> + sqlx::Type<sqlx::Postgres> + Send + Unpin,
{
    let id = KeyId::parse(key_id).unwrap().as_uuid();
    sqlx::query_scalar(sql)
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn cli_creates_lists_rotates_and_revokes_a_key() {
    let app = TestApp::spawn().await;
    let org = as_admin(&app, &["orgs", "create", "Acme", "--output", "json"]).await;
    let org = org.ok().json()["id"].as_str().unwrap().to_owned();

    let created = as_admin(
        &app,
        &[
            "keys",
            "create",
            "--name",
            "billing sync",
            "--environment",
            "live",
            "--organization",
            &org,
            "--scope",
            "customers:read,payments:write",
            "--cidr",
            "127.0.0.0/8",
            "--metadata",
            "team=billing",
            "--expire-time",
            "30d",
            "--description",
            "nightly sync",
        ],
    )
    .await
    .ok();
    let token = printed_token(&created.stdout);
    assert_eq!(created.stdout.matches(&token).count(), 1);
    let key_id = key_id_of(&token);
    assert!(
        created.stdout.contains("billing sync"),
        "{}",
        created.stdout
    );
    let name: String = stored(&app, "SELECT name FROM api_keys WHERE id = $1", &key_id).await;
    assert_eq!(name, "billing sync");
    assert_eq!(app.count("api_keys").await, 2);

    let listed = as_admin(&app, &["keys", "list", "--organization", &org])
        .await
        .ok();
    assert!(listed.stdout.contains("ID") && listed.stdout.contains("SCOPES"));
    let row = listed
        .stdout
        .lines()
        .find(|line| line.contains(&key_id))
        .unwrap();
    assert!(
        row.contains("billing sync") && row.contains("active"),
        "{row}"
    );

    let listed = as_admin(&app, &["keys", "list", "--output", "json"])
        .await
        .ok()
        .json();
    assert_eq!(listed["next_page_token"], "");
    let keys = listed["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2, "the admin key and the new one");
    let listed_key = keys
        .iter()
        .find(|key| key["id"] == key_id.as_str())
        .unwrap();
    assert_eq!(
        listed_key["scopes"],
        json!(["customers:read", "payments:write"])
    );
    assert_eq!(listed_key["allowed_cidrs"], json!(["127.0.0.0/8"]));
    assert_eq!(listed_key["metadata"], json!({"team": "billing"}));
    assert_eq!(listed_key["organization_id"], org.as_str());
    assert_eq!(listed_key["environment"], "live");
    assert_eq!(listed_key["state"], "active");
    assert!(listed_key["expire_time"].is_string());

    let arguments = [
        "keys",
        "rotate",
        &key_id,
        "--grace-period",
        "1h",
        "--output",
        "json",
    ];
    let rotated = as_admin(&app, &arguments).await.ok().json();
    let new_token = rotated["token"].as_str().unwrap().to_owned();
    assert_ne!(new_token, token);
    assert_eq!(key_id_of(&new_token), key_id);
    assert!(rotated["key"]["previous_secret_expire_time"].is_string());
    assert_eq!(rotated["propagation"]["waited"], false);
    // Within the grace period both tokens work; the old one as the previous secret.
    let old = app
        .authorize(&token, "GET", "/customers/cus_1", "127.0.0.1")
        .await;
    assert_eq!(
        (old.reason(), old.secret()),
        (pb::Reason::Ok, pb::SecretSlot::Previous)
    );
    let new = app
        .authorize(&new_token, "GET", "/customers/cus_1", "127.0.0.1")
        .await;
    assert_eq!(
        (new.reason(), new.secret()),
        (pb::Reason::Ok, pb::SecretSlot::Current)
    );

    let revoked = as_admin(&app, &["keys", "revoke", &key_id]).await.ok();
    assert!(
        revoked
            .stdout
            .lines()
            .any(|line| line.contains("state") && line.contains("revoked")),
        "{}",
        revoked.stdout
    );
    assert!(
        revoked
            .stdout
            .contains("propagation: complete, 1 replica confirmed"),
        "{}",
        revoked.stdout
    );
    let decision = app.authorize(&new_token, "GET", "/customers/cus_1", "127.0.0.1");
    assert_eq!(decision.await.reason(), pb::Reason::Revoked);
    let decision = app.authorize(&token, "GET", "/customers/cus_1", "127.0.0.1");
    assert!(
        !decision.await.allowed,
        "the rotated-out token outlived the revocation"
    );
    let revoked_at: Option<chrono::DateTime<chrono::Utc>> = stored(
        &app,
        "SELECT revoked_at FROM api_keys WHERE id = $1",
        &key_id,
    )
    .await;
    assert!(revoked_at.is_some());
}

#[tokio::test]
async fn cli_gets_updates_disables_enables_and_deletes_a_key_and_shows_its_events() {
    let app = TestApp::spawn().await;
    let org = app.create_organization("Acme").await;
    let mut request = key_request(&org, Environment::Live, &["customers:read"]);
    request.description = "kept".into();
    request.metadata.insert("team".into(), "billing".into());
    let (key, _) = app.create_key(request).await;

    let shown = as_admin(&app, &["keys", "get", &key.id]).await.ok();
    for expected in [key.id.as_str(), "integration key", "kept", "team=billing"] {
        assert!(
            shown.stdout.contains(expected),
            "{expected}: {}",
            shown.stdout
        );
    }
    let shown = as_admin(&app, &["keys", "get", &key.id, "--output", "json"]).await;
    let shown = shown.ok().json();
    assert_eq!(
        (shown["id"].as_str(), shown["version"].as_i64()),
        (Some(key.id.as_str()), Some(1))
    );
    assert_eq!(shown["created_by_key_id"], app.admin_key_id.as_str());

    let arguments = [
        "keys",
        "update",
        &key.id,
        "--name",
        "renamed key",
        "--scope",
        "customers:write",
        "--clear-metadata",
        "--output",
        "json",
    ];
    let updated = as_admin(&app, &arguments).await.ok().json();
    assert_eq!(updated["key"]["name"], "renamed key");
    assert_eq!(updated["key"]["scopes"], json!(["customers:write"]));
    assert_eq!(updated["key"]["metadata"], json!({}));
    assert_eq!(
        updated["key"]["description"], "kept",
        "not flagged, not changed"
    );
    assert_eq!(updated["key"]["version"], 2);
    assert_eq!(updated["propagation"]["waited"], false);
    let name: String = stored(&app, "SELECT name FROM api_keys WHERE id = $1", &key.id).await;
    assert_eq!(name, "renamed key");

    let arguments = ["keys", "update", &key.id, "--description", "", "--wait"];
    let waited = as_admin(&app, &arguments).await.ok();
    assert!(waited
        .stdout
        .contains("propagation: complete, 1 replica confirmed"));
    let description: String = stored(
        &app,
        "SELECT description FROM api_keys WHERE id = $1",
        &key.id,
    )
    .await;
    assert_eq!(description, "");

    let disabled = as_admin(&app, &["keys", "disable", &key.id, "--output", "json"]).await;
    let disabled = disabled.ok().json();
    assert_eq!(disabled["key"]["state"], "disabled");
    assert!(disabled["key"]["disable_time"].is_string());
    assert_eq!(
        disabled["propagation"]["waited"], true,
        "a disable waits unless --no-wait"
    );
    let enabled = as_admin(&app, &["keys", "enable", &key.id, "--output", "json"]).await;
    let enabled = enabled.ok().json();
    assert_eq!(enabled["key"]["state"], "active");
    assert_eq!(enabled["propagation"]["waited"], false);

    let events = as_admin(&app, &["keys", "events", &key.id]).await.ok();
    for action in ["created", "updated", "disabled", "enabled"] {
        assert!(
            events.stdout.contains(action),
            "{action}: {}",
            events.stdout
        );
    }
    let arguments = ["keys", "events", &key.id, "--output", "json"];
    let events = as_admin(&app, &arguments).await.ok().json();
    let actions: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        ["enabled", "disabled", "updated", "updated", "created"]
    );
    assert_eq!(
        events["events"][0]["actor_key_id"],
        app.admin_key_id.as_str()
    );
    assert!(events["events"][1]["changes"].is_object());

    let arguments = [
        "keys",
        "events",
        &key.id,
        "--page-size",
        "2",
        "--output",
        "json",
    ];
    let first_page = as_admin(&app, &arguments).await.ok().json();
    assert_eq!(first_page["events"].as_array().unwrap().len(), 2);
    let next_page_token = first_page["next_page_token"].as_str().unwrap();
    assert!(!next_page_token.is_empty());
    let arguments = [
        "keys",
        "events",
        &key.id,
        "--page-size",
        "2",
        "--page-token",
        next_page_token,
    ];
    let second_page = as_admin(&app, &arguments).await;
    assert_eq!(second_page.code, Some(0), "{}", second_page.stderr);
    assert!(second_page
        .stderr
        .starts_with("more on the next page: --page-token "));
    assert!(second_page.stdout.contains("updated") && !second_page.stdout.contains("enabled"));
    let arguments = [
        "keys",
        "events",
        &key.id,
        "--page-size",
        "2",
        "--all",
        "--output",
        "json",
    ];
    let every_page = as_admin(&app, &arguments).await.ok().json();
    assert_eq!(every_page["events"].as_array().unwrap().len(), 5);
    assert_eq!(every_page["next_page_token"], "");

    let deleted = as_admin(&app, &["keys", "delete", &key.id]).await.ok();
    assert!(deleted.stdout.contains(&format!("key {} deleted", key.id)));
    let remaining: i64 = stored(&app, "SELECT count(*) FROM api_keys WHERE id = $1", &key.id).await;
    assert_eq!(remaining, 0);
    let arguments = ["keys", "events", &key.id, "--output", "json"];
    let events = as_admin(&app, &arguments).await.ok().json();
    assert_eq!(events["events"][0]["action"], "deleted");
    assert_eq!(events["events"].as_array().unwrap().len(), 6);
}

#[tokio::test]
async fn cli_manages_organizations_with_a_system_key_only() {
    let app = TestApp::spawn().await;
    let created = as_admin(&app, &["orgs", "create", "Acme Corp", "--output", "json"]).await;
    let created = created.ok().json();
    let org = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["display_name"], "Acme Corp");
    assert!(created["create_time"].is_string());

    let shown = as_admin(&app, &["orgs", "get", &org]).await.ok();
    assert!(shown.stdout.contains(&org) && shown.stdout.contains("Acme Corp"));
    as_admin(&app, &["orgs", "create", "Globex"]).await.ok();
    let listed = as_admin(&app, &["orgs", "list", "--output", "json"])
        .await
        .ok()
        .json();
    let names: Vec<&str> = listed["organizations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|organization| organization["display_name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Globex", "Acme Corp"]);

    let (_, org_token) = app
        .org_key(&org, Environment::Live, &["api_keys:read"])
        .await;
    let server = server_url(&app);
    let refused = run_cli(&server, Some(&org_token), &["orgs", "list"]).await;
    refused.failed(1, "permission denied: ");
    let refused = run_cli(&server, Some(&org_token), &["orgs", "create", "Initech"]).await;
    refused.failed(1, "permission denied: ");
    assert_eq!(app.count("organizations").await, 2);
    let missing = as_admin(
        &app,
        &["orgs", "get", "00000000-0000-4000-8000-000000000000"],
    )
    .await;
    missing.failed(1, "not found: ");
}

//! The `keygate` binary end to end: migrate, bootstrap, serve, stop on SIGTERM,
//! and no secret material anywhere in what it printed.

use std::process::Stdio;
use std::time::Duration;

use keygate::grpc::pb::key_service_client::KeyServiceClient;
use keygate::grpc::pb::{self, Environment};

use crate::support::cli_runner::printed_token;
use crate::support::process::{keygate, ServerProcess};
use crate::support::{authed, key_request, secret_of, TestDatabase};

#[tokio::test]
async fn migrate_bootstrap_serve_and_stop_without_leaking_secrets() {
    let db = TestDatabase::create().await;
    let url = db.url();
    let migrated = keygate(&url, &["migrate"]).output().await.unwrap();
    assert!(
        migrated.status.success(),
        "{}",
        String::from_utf8_lossy(&migrated.stderr)
    );

    let bootstrapped = keygate(&url, &["bootstrap", "--name", "first admin"])
        .output()
        .await
        .unwrap();
    assert!(bootstrapped.status.success());
    let admin_token = printed_token(&String::from_utf8(bootstrapped.stdout).unwrap());
    let again = keygate(&url, &["bootstrap"]).output().await.unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("a system key already exists"));

    let policy_directory =
        std::env::temp_dir().join(format!("keygate-binary-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&policy_directory).unwrap();
    let policy_path = policy_directory.join("policy.yaml");
    std::fs::write(
        &policy_path,
        keygate::domain::policy::EMBEDDED_DEFAULT_POLICY,
    )
    .unwrap();
    let policy_argument = policy_path.to_str().unwrap();
    let mut command = keygate(
        &url,
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--policy",
            policy_argument,
        ],
    );
    command.stdout(Stdio::piped());
    let mut server = ServerProcess::spawn(command).await;
    let address = server.address.clone();

    let mut client = KeyServiceClient::connect(format!("http://{address}"))
        .await
        .unwrap();
    let request = pb::CreateOrganizationRequest {
        display_name: "Acme".into(),
    };
    let org = client
        .create_organization(authed(&admin_token, request))
        .await
        .unwrap()
        .into_inner()
        .id;
    let request = key_request(&org, Environment::Live, &["api_keys:read"]);
    let created = client
        .create_key(authed(&admin_token, request))
        .await
        .unwrap()
        .into_inner();
    let created_key_id = created.key.clone().unwrap().id;
    let request = pb::RotateKeyRequest {
        key_id: created_key_id.clone(),
        grace_period: None,
        ..Default::default()
    };
    let rotated = client
        .rotate_key(authed(&admin_token, request))
        .await
        .unwrap()
        .into_inner();
    let refused = client
        .list_keys(authed(&created.token, pb::ListKeysRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);

    // SIGHUP reloads the policy; SIGTERM then stops the server gracefully.
    server.signal("HUP").await;
    let mut authorizer = keygate::grpc::pb::authorizer_client::AuthorizerClient::connect(format!(
        "http://{address}"
    ))
    .await
    .unwrap();
    let request = pb::AuthorizeRequest {
        token: rotated.token.clone(),
        method: "GET".into(),
        path: "/customers".into(),
        ..Default::default()
    };
    let decision = authorizer.authorize(request).await.unwrap().into_inner();
    assert_eq!(decision.reason(), pb::Reason::PermissionDenied);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let exit = server.stop().await;
    assert!(exit.success(), "server exit: {exit:?}");
    let log = server.output().await;
    assert!(log.contains("keygate stopped"));
    assert!(
        log.contains("policy reloaded"),
        "SIGHUP did not reload the policy"
    );
    std::fs::remove_dir_all(&policy_directory).unwrap();
    // The log was captured: it names the keys it acted on, by id only.
    assert!(log.contains(&format!("key_id={created_key_id}")));

    let pool = db.pool().await;
    let hashes: Vec<String> = sqlx::query_scalar("SELECT secret_hash FROM api_keys")
        .fetch_all(&pool)
        .await
        .unwrap();
    for secret in [
        secret_of(&admin_token),
        secret_of(&created.token),
        secret_of(&rotated.token),
    ] {
        assert!(!log.contains(secret), "a secret reached the log");
    }
    for hash in hashes {
        assert!(!log.contains(&hash), "a hash reached the log");
    }
    assert!(!log.contains("$argon2id$"));
}

#[tokio::test]
async fn sigterm_lets_in_flight_calls_finish() {
    let db = TestDatabase::create().await;
    let url = db.url();
    // Costly hashing, so that CreateKey calls are still running when SIGTERM lands.
    let slow = |arguments: &[&str]| {
        let mut command = keygate(&url, arguments);
        command
            .env("KEYGATE_ARGON2_MEMORY_KIB", "65536")
            .env("KEYGATE_ARGON2_ITERATIONS", "3");
        command
    };
    let bootstrapped = slow(&["bootstrap"]).output().await.unwrap();
    assert!(bootstrapped.status.success());
    let admin_token = printed_token(&String::from_utf8(bootstrapped.stdout).unwrap());
    let mut command = slow(&["serve", "--listen", "127.0.0.1:0", "--drain-seconds", "20"]);
    command.stdout(Stdio::null());
    let mut server = ServerProcess::spawn(command).await;
    let address = server.address.clone();
    let client = KeyServiceClient::connect(format!("http://{address}"))
        .await
        .unwrap();
    let organization = pb::CreateOrganizationRequest {
        display_name: "Acme".into(),
    };
    let org = client
        .clone()
        .create_organization(authed(&admin_token, organization))
        .await
        .unwrap()
        .into_inner()
        .id;

    let calls: Vec<_> = (0..4)
        .map(|_| {
            let mut client = client.clone();
            let request = authed(
                &admin_token,
                key_request(&org, Environment::Live, &["customers:read"]),
            );
            tokio::spawn(async move { client.create_key(request).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(30)).await;
    server.signal("TERM").await;
    for call in calls {
        let created = call.await.unwrap().expect("an in-flight call was lost");
        assert!(!created.into_inner().token.is_empty());
    }
    let exit = server.wait().await;
    assert!(exit.success(), "server exit: {exit:?}");
    let pool = db.pool().await;
    let keys: i64 = sqlx::query_scalar("SELECT count(*) FROM api_keys")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        keys, 5,
        "the bootstrap key and the four created during the drain"
    );
}

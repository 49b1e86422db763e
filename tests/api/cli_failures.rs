//! The admin CLI when things go wrong, and where tokens may appear: missing
//! token, invalid values, unreachable servers, TLS, and no token printed
//! anywhere but by `keys create` and `keys rotate`.

use std::path::Path;

use keygate::domain::key::DisplayName;
use keygate::server::Application;
use secrecy::ExposeSecret;

use crate::support::cli_runner::{
    as_admin, printed_token, run_cli, run_cli_with, server_url, CliRun,
};
use crate::support::pki::make_pki;
use crate::support::{key_id_of, secret_of, TestApp, TestDatabase};

const CREATE: [&str; 8] = [
    "keys",
    "create",
    "--name",
    "billing sync",
    "--environment",
    "live",
    "--scope",
    "customers:read",
];

/// `keys create` with everything it needs, for a key of organization `org`.
fn create_in(org: &str) -> Vec<&str> {
    [CREATE.as_slice(), &["--organization", org]].concat()
}

#[tokio::test]
async fn cli_without_keygate_token_fails_and_writes_nothing() {
    let app = TestApp::spawn().await;
    let before = app.row_counts().await;
    let server = server_url(&app);

    let unset = run_cli(&server, None, &CREATE).await;
    unset.failed(2, "KEYGATE_TOKEN is not set");
    let empty = run_cli(&server, Some(" "), &CREATE).await;
    empty.failed(2, "KEYGATE_TOKEN is empty");
    let unset = run_cli(&server, None, &["orgs", "create", "Acme"]).await;
    unset.failed(2, "KEYGATE_TOKEN is not set");
    assert_eq!(app.row_counts().await, before);
    assert_eq!(app.count("organizations").await, 0);
}

#[tokio::test]
async fn cli_shows_invalid_argument_for_a_bad_cidr_or_scope_and_writes_nothing() {
    let app = TestApp::spawn().await;
    let org = app.create_organization("Acme").await;
    let before = app.row_counts().await;
    let bad_values = [
        ("--cidr", "10.0.0.1/33", "invalid argument: allowed_cidrs"),
        ("--cidr", "not-a-network", "invalid argument: allowed_cidrs"),
        ("--scope", "customers:fly", "invalid argument: scopes"),
    ];
    for (flag, value, message) in bad_values {
        let arguments = [create_in(&org).as_slice(), &[flag, value]].concat();
        as_admin(&app, &arguments).await.failed(1, message);
    }
    // Refused by the CLI itself, as usage errors, before anything is sent.
    let with_create = |extra: &[&'static str]| [create_in(&org).as_slice(), extra].concat();
    let usage_errors: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "keys",
                "create",
                "--name",
                "x",
                "--environment",
                "prod",
                "--scope",
                "a:read",
            ],
            "invalid value 'prod' for '--environment",
        ),
        (
            with_create(&["--metadata", "=value"]),
            "\"=value\" is not KEY=VALUE",
        ),
        (
            with_create(&["--metadata", "novalue"]),
            "\"novalue\" is not KEY=VALUE",
        ),
        (
            vec!["keys", "rotate", "abc", "--grace-period", "1y"],
            "\"1y\" is not a duration",
        ),
        (
            vec!["keys", "rotate", "abc"],
            "the following required arguments were not provided",
        ),
        (
            vec!["keys", "update", "abc"],
            "the following required arguments were not provided",
        ),
        (
            vec!["keys", "list", "--output", "yaml"],
            "invalid value 'yaml' for '--output",
        ),
        (
            vec!["keys", "list", "--timeout", "5x"],
            "\"5x\" is not a duration",
        ),
        (
            vec!["keys", "list", "--timeout", "0"],
            "a timeout must be longer than 0",
        ),
        (
            vec!["keys", "list", "--connect-timeout", "0"],
            "a timeout must be longer than 0",
        ),
        (
            vec!["keys", "list", "--client-cert", "client.pem"],
            "the following required arguments were not provided",
        ),
    ];
    for (arguments, message) in usage_errors {
        let refused = as_admin(&app, &arguments).await;
        assert_eq!(refused.code, Some(2), "{arguments:?}: {}", refused.stderr);
        assert_eq!(refused.stdout, "");
        assert!(
            refused.stderr.contains(message),
            "{arguments:?}: {}",
            refused.stderr
        );
    }
    assert_eq!(app.row_counts().await, before);

    let created = as_admin(&app, &create_in(&org)).await.ok();
    let key_id = key_id_of(&printed_token(&created.stdout));
    let counts = app.row_counts().await;
    let arguments = ["keys", "update", &key_id, "--cidr", "192.0.2.0/33"];
    as_admin(&app, &arguments)
        .await
        .failed(1, "invalid argument: ");
    let arguments = ["keys", "rotate", &key_id, "--grace-period", "31d"];
    as_admin(&app, &arguments)
        .await
        .failed(1, "invalid argument: grace_period");
    as_admin(&app, &["keys", "get", "nope"])
        .await
        .failed(1, "invalid argument: key_id");
    assert_eq!(app.row_counts().await, counts);
}

fn assert_no_token(run: &CliRun, tokens: &[&str], what: &str) {
    for token in tokens {
        for text in [&run.stdout, &run.stderr] {
            assert!(
                !text.contains(secret_of(token)),
                "{what} printed a token:\n{text}"
            );
        }
    }
}

#[tokio::test]
async fn cli_prints_a_token_only_on_create_and_rotate() {
    let app = TestApp::spawn().await;
    let admin_token = app.admin_token.clone();
    let org = app.create_organization("Acme").await;
    let created = as_admin(&app, &create_in(&org)).await.ok();
    let token = printed_token(&created.stdout);
    assert_no_token(&created, &[&admin_token], "create");
    let key_id = key_id_of(&token);
    let arguments = ["keys", "rotate", &key_id, "--grace-period", "1h"];
    let rotated = as_admin(&app, &arguments).await.ok();
    let rotated_token = printed_token(&rotated.stdout);
    assert_no_token(&rotated, &[&admin_token, &token], "rotate");
    assert_eq!(rotated.stdout.matches(secret_of(&rotated_token)).count(), 1);

    // One secret character changed: the checksum no longer matches.
    let changed = if &admin_token[30..31] == "A" {
        "B"
    } else {
        "A"
    };
    let mut wrong_token = admin_token.clone();
    wrong_token.replace_range(30..31, changed);
    let server = server_url(&app);
    let refused = run_cli(&server, Some(&wrong_token), &["keys", "list"]).await;
    refused.failed(1, "unauthenticated: ");
    assert_no_token(&refused, &[&wrong_token, &admin_token], "a refused call");

    let every_token = [admin_token.as_str(), &token, &rotated_token];
    // Each command with the exit code it must end with: failures must not
    // print a token either.
    let commands: Vec<(Vec<&str>, i32)> = vec![
        (vec!["keys", "list"], 0),
        (vec!["keys", "list", "--output", "json"], 0),
        (vec!["keys", "get", &key_id], 0),
        (vec!["keys", "get", &key_id, "--output", "json"], 0),
        (vec!["keys", "update", &key_id, "--name", "renamed"], 0),
        (vec!["keys", "disable", &key_id, "--output", "json"], 0),
        (vec!["keys", "enable", &key_id], 0),
        (vec!["keys", "events"], 0),
        (vec!["keys", "events", &key_id, "--output", "json"], 0),
        (vec!["keys", "get", "0000000000000000000000"], 1),
        (vec!["orgs", "list"], 0),
        (vec!["keys", "revoke", &key_id, "--output", "json"], 0),
        (vec!["keys", "rotate", &key_id, "--grace-period", "0"], 1),
        (vec!["keys", "delete", &key_id], 0),
    ];
    for (arguments, code) in commands {
        let run = as_admin(&app, &arguments).await;
        assert_eq!(run.code, Some(code), "{arguments:?}: {}", run.stderr);
        assert_no_token(&run, &every_token, &arguments.join(" "));
    }
    // Even the most verbose logs of a client run name no token.
    let verbose = run_cli_with(
        &server,
        Some(&admin_token),
        &["keys", "list"],
        &[("RUST_LOG", "trace")],
    );
    let verbose = verbose.await;
    assert_eq!(verbose.code, Some(0), "{}", verbose.stderr);
    assert!(!verbose.stderr.is_empty(), "trace logs were expected");
    assert_no_token(&verbose, &every_token, "a run with RUST_LOG=trace");
}

#[tokio::test]
async fn cli_reports_an_unreachable_server_and_unusable_settings() {
    let token = "kg_live_0000000000000000000000000000000000000000000000000000000000000000000000";
    let unused_port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let server = format!("http://127.0.0.1:{unused_port}");
    let unreachable = run_cli(&server, Some(token), &["keys", "list"]).await;
    unreachable.failed(1, &format!("cannot connect to {server}"));
    assert_no_token(&unreachable, &[token], "a connection failure");

    let https = format!("https://127.0.0.1:{unused_port}");
    run_cli(&https, Some(token), &["keys", "list"])
        .await
        .failed(2, "an https:// server needs --ca-cert");
    let missing_file = ["keys", "list", "--ca-cert", "/nonexistent/ca.pem"];
    run_cli(&https, Some(token), &missing_file).await.failed(
        2,
        "--ca-cert (KEYGATE_CA_CERT): cannot read /nonexistent/ca.pem",
    );
    run_cli("127.0.0.1:50051", Some(token), &["keys", "list"])
        .await
        .failed(
            2,
            "--server (KEYGATE_SERVER) must start with http:// or https://",
        );

    // A server that accepts connections and never answers: the call times out.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_server = format!("http://{}", silent.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let mut connections = Vec::new();
        while let Ok((connection, _)) = silent.accept().await {
            connections.push(connection);
        }
    });
    let arguments = ["keys", "list", "--timeout", "1s", "--connect-timeout", "1s"];
    let timed_out = run_cli(&silent_server, Some(token), &arguments).await;
    timed_out.failed(1, "deadline exceeded: no answer within 1s (--timeout)");
    held.abort();
}

fn write_file(directory: &Path, name: &str, contents: &str) -> String {
    let path = directory.join(name);
    std::fs::write(&path, contents).unwrap();
    path.to_str().unwrap().to_owned()
}

#[tokio::test]
async fn cli_connects_over_mutual_tls() {
    let db = TestDatabase::create().await;
    let pki = make_pki();
    let mut settings = db.settings();
    settings.tls = Some(keygate::server::config::TlsSettings {
        cert_pem: pki.server.0.clone().into_bytes(),
        key_pem: pki.server.1.clone().into_bytes(),
        client_ca_pem: Some(pki.ca_pem.clone().into_bytes()),
    });
    let application = Application::build(settings).await.unwrap();
    let port = application.local_addr().port();
    let admin = application
        .manager()
        .bootstrap(DisplayName::parse("name", "tls admin").unwrap())
        .await
        .unwrap();
    let token = admin.token.expose_secret().to_owned();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(application.run_until(async move {
        let _ = stopped.await;
    }));
    let directory = std::env::temp_dir().join(format!("keygate-cli-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&directory).unwrap();
    let ca = write_file(&directory, "ca.pem", &pki.ca_pem);
    let client_cert = write_file(&directory, "client.pem", &pki.client.0);
    let client_key = write_file(&directory, "client.key", &pki.client.1);
    let url = format!("https://localhost:{port}");

    let tls = [("KEYGATE_CA_CERT", ca.as_str())];
    let arguments = [
        "keys",
        "list",
        "--output",
        "json",
        "--client-cert",
        &client_cert,
        "--client-key",
        &client_key,
    ];
    let listed = run_cli_with(&url, Some(&token), &arguments, &tls)
        .await
        .ok();
    assert_eq!(listed.json()["keys"].as_array().unwrap().len(), 1);

    let without_certificate = run_cli_with(&url, Some(&token), &["keys", "list"], &tls).await;
    assert_eq!(
        without_certificate.code,
        Some(1),
        "{}",
        without_certificate.stderr
    );
    assert_eq!(without_certificate.stdout, "");
    assert_no_token(&without_certificate, &[&token], "a refused handshake");
    let plaintext = format!("http://127.0.0.1:{port}");
    let refused = run_cli(&plaintext, Some(&token), &["keys", "list"]).await;
    assert_eq!(refused.code, Some(1), "{}", refused.stderr);

    std::fs::remove_dir_all(&directory).unwrap();
    let _ = stop.send(());
    server.await.unwrap().unwrap();
}

//! `keygate health`, the real binary, against real servers: plaintext, TLS and
//! mutual TLS; exit 0 only for SERVING, 1 with one `error: …` line otherwise.

use std::path::{Path, PathBuf};
use std::time::Duration;

use keygate::server::config::TlsSettings;
use keygate::server::Application;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::support::cli_runner::{run_cli_with, server_url, CliRun};
use crate::support::pki::{make_pki, TestPki};
use crate::support::{TestApp, TestDatabase};

/// `keygate health <arguments>` against `server`, with `environment`.
async fn health(server: &str, arguments: &[&str], environment: &[(&str, &str)]) -> CliRun {
    let arguments = [["health"].as_slice(), arguments].concat();
    run_cli_with(server, None, &arguments, environment).await
}

#[track_caller]
fn assert_serving(run: CliRun) {
    let run = run.ok();
    assert_eq!(run.stdout, "SERVING\n");
}

#[tokio::test]
async fn health_exits_zero_only_for_a_serving_service() {
    let db = TestDatabase::create().await;
    let mut settings = db.settings();
    settings.database_unhealthy_after = Duration::from_secs(1);
    let app = TestApp::spawn_with(&db, settings).await;
    let server = server_url(&app);

    assert_serving(health(&server, &[], &[]).await);
    for service in [
        "",
        "liveness",
        "keygate.events",
        "keygate.v1.Authorizer",
        "keygate.v1.KeyService",
    ] {
        assert_serving(health(&server, &["--service", service], &[]).await);
    }
    health(&server, &["--service", "keygate.v1.Nothing"], &[])
        .await
        .failed(1, "service \"keygate.v1.Nothing\" is unknown to the server");

    // The database goes away: readiness fails, liveness does not.
    app.server_pool.close().await;
    assert!(
        app.wait_for_health("", ServingStatus::NotServing).await,
        "health still SERVING with the database gone"
    );
    health(&server, &[], &[])
        .await
        .failed(1, "service \"\" is NOT_SERVING");
    health(&server, &["--service", "keygate.v1.Authorizer"], &[])
        .await
        .failed(1, "service \"keygate.v1.Authorizer\" is NOT_SERVING");
    assert_serving(health(&server, &["--service", "liveness"], &[]).await);
}

#[tokio::test]
async fn health_fails_with_one_line_when_nothing_answers() {
    let unused = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let unused_port = unused.local_addr().unwrap().port();
    drop(unused);
    let nothing = format!("http://127.0.0.1:{unused_port}");
    health(&nothing, &[], &[])
        .await
        .failed(1, &format!("cannot connect to {nothing}"));
    // Settings errors exit 1 too: a container health check reads 2 as reserved.
    health(&nothing, &["--timeout", "5x"], &[])
        .await
        .failed(1, "invalid value '5x'");
    health(&nothing, &["--bogus"], &[])
        .await
        .failed(1, "unexpected argument '--bogus'");
    health(&format!("https://127.0.0.1:{unused_port}"), &[], &[])
        .await
        .failed(1, "an https:// server needs --ca-cert");

    // A server that accepts connections and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_server = format!("http://{}", silent.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let mut connections = Vec::new();
        while let Ok((connection, _)) = silent.accept().await {
            connections.push(connection);
        }
    });
    let started = std::time::Instant::now();
    health(&silent_server, &["--timeout", "1s"], &[])
        .await
        .failed(1, "no answer within 1s (--timeout)");
    assert!(started.elapsed() < Duration::from_secs(10));
    held.abort();
}

/// A server with TLS (and mutual TLS with `client_ca`) on a database of its
/// own; stops when `stop` is sent or dropped.
struct TlsServer {
    port: u16,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    _database: TestDatabase,
}

impl TlsServer {
    async fn start(pki: &TestPki, client_ca: bool) -> TlsServer {
        let database = TestDatabase::create().await;
        let mut settings = database.settings();
        settings.tls = Some(TlsSettings {
            cert_pem: pki.server.0.clone().into_bytes(),
            key_pem: pki.server.1.clone().into_bytes(),
            client_ca_pem: client_ca.then(|| pki.ca_pem.clone().into_bytes()),
        });
        let application = Application::build(settings).await.unwrap();
        let port = application.local_addr().port();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(application.run_until(async move {
            let _ = stopped.await;
        }));
        TlsServer {
            port,
            stop: Some(stop),
            _database: database,
        }
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The test PKI's files in a directory of their own, removed on drop.
struct PkiFiles {
    directory: PathBuf,
}

impl PkiFiles {
    fn write(pki: &TestPki) -> PkiFiles {
        let directory =
            std::env::temp_dir().join(format!("keygate-health-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&directory).unwrap();
        for (name, contents) in [
            ("ca.pem", &pki.ca_pem),
            ("client.pem", &pki.client.0),
            ("client.key", &pki.client.1),
        ] {
            std::fs::write(directory.join(name), contents).unwrap();
        }
        PkiFiles { directory }
    }

    fn path(&self, name: &str) -> String {
        path_text(&self.directory.join(name))
    }
}

fn path_text(path: &Path) -> String {
    path.to_str().unwrap().to_owned()
}

impl Drop for PkiFiles {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.directory);
    }
}

#[tokio::test]
async fn health_speaks_tls_and_mutual_tls() {
    let pki = make_pki();
    let files = PkiFiles::write(&pki);
    let ca = files.path("ca.pem");
    let (client_cert, client_key) = (files.path("client.pem"), files.path("client.key"));

    // TLS: the certificate names localhost only.
    let server = TlsServer::start(&pki, false).await;
    let by_name = format!("https://localhost:{}", server.port);
    let by_address = format!("https://127.0.0.1:{}", server.port);
    assert_serving(health(&by_name, &["--ca-cert", &ca], &[]).await);
    assert_serving(
        health(
            &by_name,
            &["--service", "liveness"],
            &[("KEYGATE_CA_CERT", &ca)],
        )
        .await,
    );
    // As an exec probe calls its own pod: by address, naming the certificate's host.
    let probe = ["--ca-cert", &ca, "--tls-server-name", "localhost"];
    assert_serving(health(&by_address, &probe, &[]).await);
    health(&by_address, &["--ca-cert", &ca], &[])
        .await
        .failed(1, &format!("cannot connect to {by_address}"));
    drop(server);

    // Mutual TLS: a client certificate the client CA signed is required.
    let server = TlsServer::start(&pki, true).await;
    let by_address = format!("https://127.0.0.1:{}", server.port);
    let mutual = [
        probe.as_slice(),
        &["--client-cert", &client_cert, "--client-key", &client_key],
    ]
    .concat();
    assert_serving(health(&by_address, &mutual, &[]).await);
    let failed = health(&by_address, &probe, &[]).await;
    assert_eq!(failed.code, Some(1), "{}", failed.stderr);
    assert_eq!(failed.stdout, "");
    assert_eq!(failed.stderr.lines().count(), 1, "{}", failed.stderr);
}

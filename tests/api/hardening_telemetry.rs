//! Logs and traces as an operator meets them, through the `keygate` binary:
//! turning trace export on leaves the logs as they were.

use std::process::Stdio;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tokio::io::{AsyncBufReadExt, BufReader};
use tonic::transport::Channel;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use crate::binary::{database_url, keygate};

/// The lines an operator watches for while the server starts and stops.
const STARTED: [&str; 2] = ["keygate serving", "event listener connected"];
const STOPPED: &str = "keygate stopped";

#[sqlx::test(migrations = false)]
async fn info_lines_are_logged_while_traces_are_exported(
    _pool: PgPoolOptions,
    db: PgConnectOptions,
) {
    // Nothing listens there: exports fail, and the logs must not care.
    let unused = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let collector = unused.local_addr().unwrap();
    drop(unused);
    let mut command = keygate(&database_url(&db), &["serve", "--listen", "127.0.0.1:0"]);
    command
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{collector}"))
        // The default filter (`info`), as an operator runs it.
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut log = String::new();
    let started = tokio::time::timeout(Duration::from_secs(15), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            log.push_str(&line);
            log.push('\n');
            if STARTED.iter().all(|wanted| log.contains(wanted)) {
                return;
            }
        }
    })
    .await;
    // Once a call is answered, the server is past installing its signal handler.
    if let Some(address) = log
        .split_once("address=")
        .and_then(|(_, rest)| rest.split_whitespace().next())
    {
        let channel = Channel::from_shared(format!("http://{address}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        check_health(channel, "").await.unwrap();
    }
    let pid = child.id().unwrap().to_string();
    let sent = tokio::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(sent.success());
    let exit = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .unwrap()
        .unwrap();
    while let Ok(Some(line)) = lines.next_line().await {
        log.push_str(&line);
        log.push('\n');
    }
    assert!(exit.success(), "server exit: {exit:?}\n{log}");
    assert!(started.is_ok(), "start-up lines missing:\n{log}");
    for wanted in STARTED.iter().chain([&STOPPED]) {
        assert!(log.contains(wanted), "{wanted:?} missing:\n{log}");
    }
}

async fn check_health(channel: Channel, service: &str) -> Result<(), tonic::Status> {
    let request = HealthCheckRequest {
        service: service.to_owned(),
    };
    HealthClient::new(channel).check(request).await.map(|_| ())
}

//! The `keygate` binary run as a process: `migrate`, `bootstrap`, and a
//! `serve` whose address and log the test reads.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::Command;

use super::cli_runner::printed_token;

/// The binary under test.
pub const KEYGATE: &str = env!("CARGO_BIN_EXE_keygate");

/// `keygate <arguments>` on the database at `url`, with cheap hashing and
/// debug logs, killed if the test drops it.
pub fn keygate(url: &str, arguments: &[&str]) -> Command {
    let mut command = Command::new(KEYGATE);
    command
        .args(arguments)
        .env("KEYGATE_DATABASE_URL", url)
        .env("KEYGATE_ARGON2_MEMORY_KIB", "64")
        // Loopback only, and a free port for each server.
        .env("KEYGATE_METRICS_LISTEN", "127.0.0.1:0")
        .env("RUST_LOG", "debug")
        .kill_on_drop(true);
    command
}

/// Runs `keygate bootstrap` on `url` and returns the printed token.
pub async fn bootstrap_token(url: &str) -> String {
    let bootstrapped = keygate(url, &["bootstrap"]).output().await.unwrap();
    assert!(
        bootstrapped.status.success(),
        "{}",
        String::from_utf8_lossy(&bootstrapped.stderr)
    );
    printed_token(&String::from_utf8(bootstrapped.stdout).unwrap())
}

/// A `keygate serve` child process, its address and its log.
pub struct ServerProcess {
    child: tokio::process::Child,
    pub address: String,
    startup_log: String,
    rest_of_log: tokio::task::JoinHandle<String>,
}

impl ServerProcess {
    /// Spawns `command` (a `serve`) and waits until it logs its address.
    pub async fn spawn(mut command: Command) -> ServerProcess {
        let mut child = command.stderr(Stdio::piped()).spawn().unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut startup_log = String::new();
        let address = loop {
            let mut line = String::new();
            let read = tokio::time::timeout(Duration::from_secs(30), stderr.read_line(&mut line))
                .await
                .unwrap()
                .unwrap();
            assert!(read > 0, "server exited early:\n{startup_log}");
            startup_log.push_str(&line);
            if line.contains("keygate serving") {
                let start = line.find("address=").unwrap() + "address=".len();
                break line[start..].split_whitespace().next().unwrap().to_owned();
            }
        };
        let rest_of_log = tokio::spawn(async move {
            let mut rest = String::new();
            let _ = stderr.read_to_string(&mut rest).await;
            rest
        });
        ServerProcess {
            child,
            address,
            startup_log,
            rest_of_log,
        }
    }

    /// Sends a signal (`HUP`, `TERM`, ...) to the server.
    pub async fn signal(&self, name: &str) {
        let pid = self.child.id().unwrap().to_string();
        let sent = Command::new("kill")
            .args([format!("-{name}"), pid])
            .status()
            .await
            .unwrap();
        assert!(sent.success());
    }

    /// SIGTERM, then waits for the exit.
    pub async fn stop(&mut self) -> std::process::ExitStatus {
        self.signal("TERM").await;
        self.wait().await
    }

    /// Waits (at most 30 s) for the server to exit.
    pub async fn wait(&mut self) -> std::process::ExitStatus {
        tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .unwrap()
            .unwrap()
    }

    /// Everything the stopped server printed (stderr, then stdout if piped).
    pub async fn output(mut self) -> String {
        let mut log = self.startup_log;
        log.push_str(&self.rest_of_log.await.unwrap());
        if let Some(mut stdout) = self.child.stdout.take() {
            stdout.read_to_string(&mut log).await.unwrap();
        }
        log
    }
}

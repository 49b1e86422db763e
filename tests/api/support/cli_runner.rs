//! Runs the real `keygate` binary as the admin CLI, as a process, and captures
//! how it ended.

use serde_json::Value;
use tokio::process::Command;

use super::app::TestApp;
use super::process::KEYGATE;

/// The line `bootstrap`, `keys create` and `keys rotate` print their token on.
const TOKEN_LINE: &str = "token (shown once, store it now): ";

/// How one run of the CLI ended.
pub struct CliRun {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl CliRun {
    /// Asserts the run succeeded and printed nothing on stderr.
    #[track_caller]
    pub fn ok(self) -> CliRun {
        assert_eq!(self.code, Some(0), "stderr: {}", self.stderr);
        assert_eq!(self.stderr, "", "a successful run wrote to stderr");
        self
    }

    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|error| panic!("not one JSON document ({error}):\n{}", self.stdout))
    }

    /// Asserts the run failed with `code`, printed nothing on stdout and one
    /// `error: …` line starting with `start` on stderr.
    #[track_caller]
    pub fn failed(&self, code: i32, start: &str) {
        assert_eq!(self.code, Some(code), "stderr: {}", self.stderr);
        assert_eq!(self.stdout, "", "a failed run wrote to stdout");
        assert_eq!(self.stderr.lines().count(), 1, "stderr: {}", self.stderr);
        assert!(
            self.stderr.starts_with(&format!("error: {start}")),
            "expected {start:?} in {:?}",
            self.stderr
        );
    }
}

/// Runs the CLI with `KEYGATE_TOKEN` set to `token` (unset for `None`), and
/// nothing else from the test's own environment that the CLI reads.
pub async fn run_cli(server: &str, token: Option<&str>, arguments: &[&str]) -> CliRun {
    run_cli_with(server, token, arguments, &[]).await
}

pub async fn run_cli_with(
    server: &str,
    token: Option<&str>,
    arguments: &[&str],
    environment: &[(&str, &str)],
) -> CliRun {
    let mut command = Command::new(KEYGATE);
    command.args(arguments).kill_on_drop(true);
    for variable in [
        "KEYGATE_TOKEN",
        "KEYGATE_OUTPUT",
        "KEYGATE_CA_CERT",
        "KEYGATE_CLIENT_CERT",
        "KEYGATE_CLIENT_KEY",
        "KEYGATE_TLS_SERVER_NAME",
        "KEYGATE_TIMEOUT",
        "KEYGATE_CONNECT_TIMEOUT",
        "KEYGATE_LOG_FORMAT",
        "RUST_LOG",
    ] {
        command.env_remove(variable);
    }
    command.env("KEYGATE_SERVER", server);
    if let Some(token) = token {
        command.env("KEYGATE_TOKEN", token);
    }
    for (name, value) in environment {
        command.env(name, value);
    }
    let run = tokio::time::timeout(std::time::Duration::from_secs(60), command.output());
    let output = run.await.expect("the CLI hung").unwrap();
    CliRun {
        code: output.status.code(),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}

pub fn server_url(app: &TestApp) -> String {
    format!("http://{}", app.address)
}

/// Runs the CLI against `app` with its bootstrapped system key.
pub async fn as_admin(app: &TestApp, arguments: &[&str]) -> CliRun {
    run_cli(&server_url(app), Some(&app.admin_token), arguments).await
}

/// The token on the token line of a table-format create or rotate.
pub fn printed_token(stdout: &str) -> String {
    let mut tokens = stdout
        .lines()
        .filter_map(|line| line.strip_prefix(TOKEN_LINE));
    let token = tokens.next().expect("no token line").to_owned();
    assert_eq!(tokens.next(), None, "two token lines");
    token
}

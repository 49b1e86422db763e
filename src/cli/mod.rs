//! The admin CLI: `keygate keys …` and `keygate orgs …`, a gRPC client of a
//! running server's KeyService.
//!
//! [`connection`] reaches the server with the caller's token from
//! `KEYGATE_TOKEN`; [`keys`] and [`orgs`] turn flags into requests; [`views`]
//! and [`output`] print answers as tables or JSON on stdout. Failures end as
//! one `error: …` line on stderr and a non-zero exit code ([`CliError`]).
//! Only `keys create` and `keys rotate` ever print a token. [`health`] is
//! `keygate health`, a client of the server's health service for probes.

pub mod connection;
pub mod health;
pub mod key_changes;
pub mod key_requests;
pub mod keys;
pub mod orgs;
pub mod output;
pub mod values;
pub mod views;

use std::future::Future;
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use tonic::{Code, Status};

pub use health::{run_health, HealthArgs};
pub use keys::KeysArgs;
pub use orgs::OrgsArgs;

/// Why a command failed. None of these carries the caller's token.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A setting is missing or unusable; nothing was sent.
    #[error("{0}")]
    Setup(String),
    /// The server could not be reached (or the TLS handshake failed).
    #[error("cannot connect to {server}: {cause}")]
    Connect { server: String, cause: String },
    /// The server answered with an error.
    #[error("{}", status_line(.0))]
    Status(Status),
    /// No answer within `--timeout`.
    #[error("deadline exceeded: no answer within {0:?} (--timeout); the call may still complete on the server")]
    Timeout(Duration),
    /// The server's answer lacks a part it always sends.
    #[error("the server's answer has no {0}")]
    IncompleteAnswer(&'static str),
    /// Stdout could not be written.
    #[error("cannot write the output: {0}")]
    Output(#[source] std::io::Error),
}

impl CliError {
    /// 2 for settings (as for clap's usage errors), 1 for everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Setup(_) => 2,
            _ => 1,
        }
    }
}

/// `permission denied: <message>`: the code in words, then the server's message.
fn status_line(status: &Status) -> String {
    let code = code_name(status.code());
    if status.message().is_empty() {
        code.to_owned()
    } else {
        format!("{code}: {}", status.message())
    }
}

fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "cancelled",
        Code::Unknown => "unknown",
        Code::InvalidArgument => "invalid argument",
        Code::DeadlineExceeded => "deadline exceeded",
        Code::NotFound => "not found",
        Code::AlreadyExists => "already exists",
        Code::PermissionDenied => "permission denied",
        Code::ResourceExhausted => "resource exhausted",
        Code::FailedPrecondition => "failed precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out of range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data loss",
        Code::Unauthenticated => "unauthenticated",
    }
}

/// Runs `keygate keys …` and reports how it ended.
pub async fn run_keys(args: KeysArgs) -> ExitCode {
    finish(keys::run(args).await)
}

/// Runs `keygate orgs …` and reports how it ended.
pub async fn run_orgs(args: OrgsArgs) -> ExitCode {
    finish(orgs::run(args).await)
}

fn finish(outcome: Result<(), CliError>) -> ExitCode {
    let Err(error) = outcome else {
        return ExitCode::SUCCESS;
    };
    let line = error.to_string().replace(['\r', '\n'], " ");
    let _ = writeln!(std::io::stderr(), "error: {line}");
    ExitCode::from(error.exit_code())
}

/// `--wait` / `--no-wait` for calls that can wait for every replica.
#[derive(Args)]
pub struct WaitArgs {
    /// Wait until every live replica has applied the change (bounded by the
    /// server's propagation timeout). The default when the change takes
    /// access away.
    #[arg(long, conflicts_with = "no_wait")]
    pub wait: bool,
    /// Answer as soon as the change is committed. The default when the
    /// change takes nothing away.
    #[arg(long)]
    pub no_wait: bool,
}

impl WaitArgs {
    /// `None` leaves the server's default: wait when the change takes access
    /// away.
    pub fn choice(&self) -> Option<bool> {
        values::wait_choice(self.wait, self.no_wait)
    }
}

/// Paging flags of the list commands.
#[derive(Args)]
pub struct PageArgs {
    /// Items per page (the server's default is 50, its maximum 1000).
    #[arg(long)]
    pub page_size: Option<i32>,
    /// Continue from the `next_page_token` of an earlier page.
    #[arg(long, conflicts_with = "all")]
    pub page_token: Option<String>,
    /// Follow every page to the end (1000 per call unless --page-size).
    #[arg(long)]
    pub all: bool,
}

/// One page of items and the token of the next (empty on the last page).
pub type Page<Item> = (Vec<Item>, String);

/// Fetches one page, or with `--all` every page, through `fetch(page_size, page_token)`.
pub async fn collect_pages<Item, Fetch, Reply>(
    paging: &PageArgs,
    mut fetch: Fetch,
) -> Result<Page<Item>, CliError>
where
    Fetch: FnMut(i32, String) -> Reply,
    Reply: Future<Output = Result<Page<Item>, CliError>>,
{
    let default_size = if paging.all { 1000 } else { 0 };
    let page_size = paging.page_size.unwrap_or(default_size);
    let mut page_token = paging.page_token.clone().unwrap_or_default();
    let mut items = Vec::new();
    loop {
        let (page, next_page_token) = fetch(page_size, page_token).await?;
        items.extend(page);
        if !paging.all || next_page_token.is_empty() {
            return Ok((items, next_page_token));
        }
        page_token = next_page_token;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_read_as_one_lowercase_line() {
        let error = CliError::Status(Status::permission_denied("needs api_keys:create"));
        assert_eq!(
            error.to_string(),
            "permission denied: needs api_keys:create"
        );
        let error = CliError::Status(Status::unavailable(""));
        assert_eq!(error.to_string(), "unavailable");
        assert_eq!(CliError::Setup("x".into()).exit_code(), 2);
        assert_eq!(CliError::Timeout(Duration::from_secs(1)).exit_code(), 1);
    }

    #[tokio::test]
    async fn all_pages_are_followed_only_with_all() {
        let pages = |size: i32, token: String| async move {
            assert_eq!(size, 1000);
            let next = match token.as_str() {
                "" => "second",
                "second" => "third",
                _ => "",
            };
            Ok::<_, CliError>((vec![token], next.to_owned()))
        };
        let all = PageArgs {
            page_size: None,
            page_token: None,
            all: true,
        };
        let (items, next) = collect_pages(&all, pages).await.unwrap();
        assert_eq!(items, vec!["", "second", "third"]);
        assert_eq!(next, "");

        let one = PageArgs {
            page_size: Some(2),
            page_token: Some("second".into()),
            all: false,
        };
        let single = |size: i32, token: String| async move {
            assert_eq!(size, 2);
            Ok::<_, CliError>((vec![token], "third".to_owned()))
        };
        let (items, next) = collect_pages(&one, single).await.unwrap();
        assert_eq!(items, vec!["second"]);
        assert_eq!(next, "third");
    }
}

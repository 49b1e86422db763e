//! Authorize's callers, at run time: what the start log says they must
//! present, and their tokens kept in step with their file without a restart.
//! The file is looked at every second and read again when its modification
//! time, size or inode changed (a Kubernetes Secret volume swaps a symlink,
//! which changes all three), and on every SIGHUP, whatever it looks like.

use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::grpc::caller_auth::{CallerAuthSettings, CallerTokens};

/// How often the file is looked at.
const CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// What says the file changed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct FileStamp {
    modified: Option<SystemTime>,
    length: u64,
    inode: u64,
}

fn stamp_of(path: &Path) -> Option<FileStamp> {
    let metadata = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&metadata);
    #[cfg(not(unix))]
    let inode = 0;
    Some(FileStamp {
        modified: metadata.modified().ok(),
        length: metadata.len(),
        inode,
    })
}

/// Says at start what Authorize's callers must present.
pub fn log_at_start(callers: &CallerAuthSettings, tls: bool) {
    if !callers.is_on() {
        tracing::info!("authorizer callers are not authenticated (see --authorizer-allowed-clients, --authorizer-token-file)");
        return;
    }
    if callers.tokens.is_some() && !tls {
        tracing::warn!("caller tokens travel in plaintext: serve TLS (--tls-cert, --tls-key) so that the network cannot read them");
    }
    tracing::info!(
        client_certificates = callers.allowed_clients.is_some(),
        caller_tokens = callers.tokens.is_some(),
        "authorizer callers authenticated"
    );
}

/// Reloads `tokens` whenever their file changes, until the task is aborted.
pub async fn watch_token_file(tokens: CallerTokens) {
    let mut hangups = Hangups::listen();
    let mut ticker = tokio::time::interval(CHECK_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    // Read once more from here on: the file may have changed since the start
    // read it (migrations can take a while).
    let mut last_seen = stamp_of(tokens.path());
    reload(&tokens);
    loop {
        let hung_up = tokio::select! {
            _ = ticker.tick() => false,
            () = hangups.next() => true,
        };
        let current = stamp_of(tokens.path());
        if current == last_seen && !hung_up {
            continue;
        }
        last_seen = current;
        reload(&tokens);
    }
}

fn reload(tokens: &CallerTokens) {
    let path = tokens.path().display();
    match tokens.reload() {
        Ok(count) => tracing::info!(%path, tokens = count, "caller tokens reloaded"),
        Err(error) => tracing::error!(
            %path,
            %error,
            "caller token file refused; the tokens in force stay"
        ),
    }
}

/// SIGHUP, where there is one.
struct Hangups {
    #[cfg(unix)]
    signal: Option<tokio::signal::unix::Signal>,
}

impl Hangups {
    fn listen() -> Hangups {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let signal = signal(SignalKind::hangup())
                .inspect_err(|error| {
                    tracing::warn!(%error, "cannot listen for SIGHUP; caller tokens reload only when their file changes");
                })
                .ok();
            Hangups { signal }
        }
        #[cfg(not(unix))]
        Hangups {}
    }

    /// Completes on the next SIGHUP; never, without one.
    async fn next(&mut self) {
        #[cfg(unix)]
        if let Some(signal) = &mut self.signal {
            if signal.recv().await.is_some() {
                return;
            }
        }
        std::future::pending::<()>().await;
    }
}

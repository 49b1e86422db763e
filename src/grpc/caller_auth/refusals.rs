//! Refused callers: counted by cause (`keygate_authorizer_callers_refused_total`,
//! a closed set of causes, so callers cannot add series) and logged at most
//! once a minute per cause, with how many went unlogged since, so that junk
//! traffic cannot grow the logs. Never with the presented token.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::grpc::labels::method_label;

/// Why a caller was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    /// Client identities are checked but the connection has no client certificate.
    MissingCertificate,
    /// The client certificate names no allowed identity.
    ClientNotAllowed,
    /// Caller tokens are checked but none was sent.
    MissingToken,
    /// The caller token sent is not one in force.
    WrongToken,
}

impl Cause {
    pub const ALL: [Cause; 4] = [
        Cause::MissingCertificate,
        Cause::ClientNotAllowed,
        Cause::MissingToken,
        Cause::WrongToken,
    ];

    /// The `cause` label and log field.
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::MissingCertificate => "missing_certificate",
            Cause::ClientNotAllowed => "client_not_allowed",
            Cause::MissingToken => "missing_token",
            Cause::WrongToken => "wrong_token",
        }
    }
}

/// How often each cause may be logged.
const LOG_INTERVAL: Duration = Duration::from_secs(60);

/// The process's refusal counters and log pacing.
pub struct Refusals {
    counters: [metrics::Counter; 4],
    pacing: LogPacing,
    started: Instant,
}

/// The refusal counters, registered on first use (after the metrics recorder
/// is installed, so that they count).
pub fn refusals() -> &'static Refusals {
    static REFUSALS: OnceLock<Refusals> = OnceLock::new();
    REFUSALS.get_or_init(|| {
        Refusals {
        counters: Cause::ALL.map(|cause| {
            metrics::counter!("keygate_authorizer_callers_refused_total", "cause" => cause.as_str())
        }),
        pacing: LogPacing::new(LOG_INTERVAL),
        started: Instant::now(),
    }
    })
}

impl Refusals {
    /// Counts a refusal of a call to `path` from `peer`; logs it unless this
    /// cause was logged less than a minute ago. `client_names` (the client
    /// certificate's SANs) is only asked for when the refusal is logged.
    pub fn record(
        &self,
        cause: Cause,
        path: &str,
        peer: Option<SocketAddr>,
        client_names: impl FnOnce() -> Vec<String>,
    ) {
        if let Some(counter) = self.counters.get(cause as usize) {
            counter.increment(1);
        }
        // Answered before the service runs, in no time worth measuring.
        metrics::histogram!("keygate_rpc_duration_seconds", "method" => method_label(path), "code" => "UNAUTHENTICATED")
            .record(0.0);
        let Some(unlogged) = self.pacing.admit(cause, self.started.elapsed()) else {
            return;
        };
        let peer = peer.map(|address| address.to_string()).unwrap_or_default();
        match cause {
            Cause::ClientNotAllowed => tracing::warn!(
                cause = cause.as_str(),
                peer,
                client_names = ?client_names(),
                unlogged_since_last = unlogged,
                "authorizer caller refused"
            ),
            _ => tracing::warn!(
                cause = cause.as_str(),
                peer,
                unlogged_since_last = unlogged,
                "authorizer caller refused"
            ),
        }
    }
}

/// At most one log line per cause per interval, without a lock.
struct LogPacing {
    interval_ms: u64,
    /// Per cause: when it was last logged (ms since start), or `NEVER`.
    last_logged_ms: [AtomicU64; 4],
    /// Per cause: refusals not logged since the last line.
    unlogged: [AtomicU64; 4],
}

const NEVER: u64 = u64::MAX;

impl LogPacing {
    fn new(interval: Duration) -> LogPacing {
        LogPacing {
            interval_ms: u64::try_from(interval.as_millis()).unwrap_or(u64::MAX),
            last_logged_ms: [NEVER; 4].map(AtomicU64::new),
            unlogged: [0; 4].map(AtomicU64::new),
        }
    }

    /// `Some(refusals left unlogged since the last line)` when a refusal of
    /// `cause` at `now` (since start) may be logged; `None` otherwise.
    fn admit(&self, cause: Cause, now: Duration) -> Option<u64> {
        let index = cause as usize;
        let (Some(last_logged), Some(unlogged)) =
            (self.last_logged_ms.get(index), self.unlogged.get(index))
        else {
            return None;
        };
        let now_ms = u64::try_from(now.as_millis()).unwrap_or(NEVER - 1);
        let last = last_logged.load(Ordering::Relaxed);
        let due = last == NEVER || now_ms.saturating_sub(last) >= self.interval_ms;
        // One of the callers that find it due wins; the others count as unlogged.
        if due
            && last_logged
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Some(unlogged.swap(0, Ordering::Relaxed));
        }
        unlogged.fetch_add(1, Ordering::Relaxed);
        None
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{Cause, LogPacing};

    #[test]
    fn each_cause_is_logged_at_most_once_an_interval_with_what_was_left_out() {
        let pacing = LogPacing::new(Duration::from_secs(60));
        let at = Duration::from_secs;
        assert_eq!(pacing.admit(Cause::WrongToken, at(5)), Some(0));
        assert_eq!(pacing.admit(Cause::WrongToken, at(6)), None);
        assert_eq!(pacing.admit(Cause::WrongToken, at(64)), None);
        // Another cause has its own pace.
        assert_eq!(pacing.admit(Cause::MissingToken, at(7)), Some(0));
        assert_eq!(pacing.admit(Cause::WrongToken, at(65)), Some(2));
        assert_eq!(pacing.admit(Cause::WrongToken, at(65)), None);
        assert_eq!(pacing.admit(Cause::WrongToken, at(200)), Some(1));
    }

    #[test]
    fn causes_are_a_closed_set_of_distinct_labels() {
        let labels: std::collections::BTreeSet<_> =
            Cause::ALL.iter().map(|cause| cause.as_str()).collect();
        assert_eq!(labels.len(), Cause::ALL.len());
        for (index, cause) in Cause::ALL.iter().enumerate() {
            assert_eq!(*cause as usize, index);
        }
    }
}

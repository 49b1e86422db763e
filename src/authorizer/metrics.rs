//! The metric handles Authorize records on every call, registered once (after
//! the recorder is installed) so that the hot path only does atomic adds.

use std::sync::OnceLock;
use std::time::Instant;

use super::decision::Reason;

/// The gRPC method Authorize's durations are recorded under.
pub const AUTHORIZE_METHOD: &str = "/keygate.v1.Authorizer/Authorize";

/// Decisions by reason, and the duration of every answered Authorize call.
pub struct DecisionMetrics {
    decisions: Vec<metrics::Counter>,
    authorize_ok_seconds: metrics::Histogram,
}

static DECISIONS: OnceLock<DecisionMetrics> = OnceLock::new();

/// The hot path's metric handles.
pub fn decision_metrics() -> &'static DecisionMetrics {
    DECISIONS.get_or_init(|| DecisionMetrics {
        decisions: Reason::ALL
            .iter()
            .map(|reason| metrics::counter!("keygate_authorize_decisions_total", "reason" => reason.as_str()))
            .collect(),
        authorize_ok_seconds: metrics::histogram!(
            "keygate_rpc_duration_seconds",
            "method" => AUTHORIZE_METHOD,
            "code" => "OK"
        ),
    })
}

impl DecisionMetrics {
    /// Counts a decision by its reason and records how long the call took.
    pub fn record_decision(&self, reason: Reason, started: Instant) {
        if let Some(counter) = self.decisions.get(reason as usize) {
            counter.increment(1);
        }
        self.authorize_ok_seconds
            .record(started.elapsed().as_secs_f64());
    }
}

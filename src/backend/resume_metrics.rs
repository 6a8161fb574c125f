//! Resume's counters: connects by outcome, refusals by reason, the gap buffer's kept, dropped
//! and replayed messages.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use crate::metrics::OutcomeLabels;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

/// Resume's counters.
pub(crate) struct ResumeMetrics {
    /// Connects with a valid key, by outcome: new, resumed.
    pub connects: Family<OutcomeLabels, Counter>,
    /// Resumes whose gap lost messages to a bound (`x-socketless-recovered: false`).
    pub not_recovered: Counter,
    /// Refused connects, by reason: invalid_key, principal.
    pub refused: Family<ReasonLabels, Counter>,
    pub buffered: Counter,
    pub dropped: Counter,
    pub replayed: Counter,
}

impl ResumeMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = ResumeMetrics {
            connects: Family::default(),
            not_recovered: Counter::default(),
            refused: Family::default(),
            buffered: Counter::default(),
            dropped: Counter::default(),
            replayed: Counter::default(),
        };
        registry.register(
            "socketless_resume_connects",
            "Connects that gave a valid resume key, by outcome: new, resumed",
            m.connects.clone(),
        );
        registry.register(
            "socketless_resume_not_recovered",
            "Resumes whose gap lost messages to a bound (x-socketless-recovered: false)",
            m.not_recovered.clone(),
        );
        registry.register(
            "socketless_resume_refused",
            "Connects refused for their resume key, by reason: invalid_key, principal",
            m.refused.clone(),
        );
        registry.register(
            "socketless_resume_buffered",
            "Messages kept for a resumable session without a connection",
            m.buffered.clone(),
        );
        registry.register(
            "socketless_resume_dropped",
            "Messages for a resumable session dropped by --resume-buffer-messages or -bytes",
            m.dropped.clone(),
        );
        registry.register(
            "socketless_resume_replayed",
            "Buffered messages replayed to a resumed connection",
            m.replayed.clone(),
        );
        m
    }

    pub(super) fn connect(&self, outcome: &'static str) {
        self.connects.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    pub(super) fn refuse(&self, reason: &'static str) {
        self.refused.get_or_create(&ReasonLabels { reason }).inc();
    }
}

//! The gateway's Prometheus metrics: connections, handshakes by result, messages, integration
//! calls by route and outcome with their latency, `$connect` authorizer calls by outcome with
//! their latency, management calls (`@connections` and the batch extension) by operation,
//! source and status, and the
//! memory budgets (bytes held, connections closed to keep them).

use std::collections::HashMap;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::metrics::latency_histogram;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IntegrationLabels {
    route: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AuthorizerLabels {
    authorizer: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AuthorizerLabel {
    authorizer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MgmtLabels {
    operation: &'static str,
    source: &'static str,
    status: u16,
}

/// The calls that carried `$disconnect` calls many at once to a backend that takes them, by
/// result, and the `$disconnect` calls they carried (see [`super::carry`]).
#[derive(Clone, Default)]
pub struct CarriedMetrics {
    calls: Family<ResultLabel, Counter>,
    carried: Counter,
}

impl CarriedMetrics {
    /// One call carrying `n` `$disconnect` calls: `answered` (each got its status), `refused`
    /// (the backend did not take it: each was sent alone), `unanswered` (no answer: each was
    /// sent alone) or `timed_out` (each counts as timed out).
    pub fn call(&self, result: &'static str, n: usize) {
        self.calls.get_or_create(&ResultLabel { result }).inc();
        self.carried.inc_by(n as u64);
    }
}

/// The gateway's metrics.
pub struct GatewayMetrics {
    pub carried: CarriedMetrics,
    pub active: Gauge,
    connects: Family<ResultLabel, Counter>,
    messages: Counter,
    integration_calls: Family<IntegrationLabels, Counter>,
    integration_errors: Family<IntegrationLabels, Counter>,
    integration_latency: Family<RouteLabel, Histogram, fn() -> Histogram>,
    management: Family<MgmtLabels, Counter>,
    forwards: Family<ResultLabel, Counter>,
    /// Bytes of client messages held against `--max-pending-message-bytes`.
    pub pending_message_bytes: Gauge,
    /// Bytes queued for clients against `--max-outbound-bytes`.
    pub queued_outbound_bytes: Gauge,
    memory_closes: Family<ReasonLabel, Counter>,
    authorizer_calls: Family<AuthorizerLabels, Counter>,
    authorizer_latency: Family<AuthorizerLabel, Histogram, fn() -> Histogram>,
    /// Each route's successful-call counter and latency histogram, resolved once: the message
    /// path then neither allocates label strings nor looks the series up under a lock.
    hot: HashMap<String, (Counter, Histogram), foldhash::fast::RandomState>,
}

impl GatewayMetrics {
    /// Registers the gateway's metrics, with the series of `routes` created up front.
    pub fn register<'a>(r: &mut Registry, routes: impl IntoIterator<Item = &'a String>) -> Self {
        let mut m = GatewayMetrics {
            carried: CarriedMetrics::default(),
            active: Gauge::default(),
            connects: Family::default(),
            messages: Counter::default(),
            integration_calls: Family::default(),
            integration_errors: Family::default(),
            integration_latency: Family::new_with_constructor(latency_histogram),
            management: Family::default(),
            forwards: Family::default(),
            pending_message_bytes: Gauge::default(),
            queued_outbound_bytes: Gauge::default(),
            memory_closes: Family::default(),
            authorizer_calls: Family::default(),
            authorizer_latency: Family::new_with_constructor(latency_histogram),
            hot: HashMap::default(),
        };
        for route in routes {
            let ok = m
                .integration_calls
                .get_or_create(&IntegrationLabels {
                    route: route.clone(),
                    outcome: "ok",
                })
                .clone();
            let latency = m
                .integration_latency
                .get_or_create(&RouteLabel { route: route.clone() })
                .clone();
            m.hot.insert(route.clone(), (ok, latency));
        }
        r.register(
            "socketless_gateway_forwarded_calls",
            "@connections calls for connections this replica does not hold, by result: relayed (the owner answered), no_owner (410: no such replica), owner_unavailable (503: the owner did not answer in time)",
            m.forwards.clone(),
        );
        r.register(
            "socketless_gateway_carried_disconnect_calls",
            "Calls that carried $disconnect calls many at once to a backend that takes them (serve), by result (answered; refused or unanswered: each then sent alone; timed_out)",
            m.carried.calls.clone(),
        );
        r.register(
            "socketless_gateway_carried_disconnects",
            "$disconnect calls sent many to a call (each also counts in socketless_gateway_integration_calls)",
            m.carried.carried.clone(),
        );
        r.register(
            "socketless_gateway_active_connections",
            "Open WebSocket connections",
            m.active.clone(),
        );
        r.register(
            "socketless_gateway_connects",
            "Handshakes, by result (accepted, rejected by $connect, failed, refused_limit)",
            m.connects.clone(),
        );
        r.register(
            "socketless_gateway_messages",
            "Messages received from clients",
            m.messages.clone(),
        );
        r.register(
            "socketless_gateway_integration_calls",
            "Integration calls, by route and outcome",
            m.integration_calls.clone(),
        );
        r.register(
            "socketless_gateway_integration_errors",
            "Integration calls that failed, timed out or answered 4xx/5xx, by route and outcome",
            m.integration_errors.clone(),
        );
        r.register(
            "socketless_gateway_integration_latency_seconds",
            "Integration latency, by route",
            m.integration_latency.clone(),
        );
        r.register(
            "socketless_gateway_management_calls",
            "Management calls (@connections post, get, delete; the batch extension's deliver and info), by operation, source (client, or peer for a call another replica forwarded) and status",
            m.management.clone(),
        );
        r.register(
            "socketless_gateway_pending_message_bytes",
            "Bytes of client messages held (being received or delivered), counted against --max-pending-message-bytes",
            m.pending_message_bytes.clone(),
        );
        r.register(
            "socketless_gateway_queued_outbound_bytes",
            "Bytes of @connections posts queued for clients or being written, counted against --max-outbound-bytes",
            m.queued_outbound_bytes.clone(),
        );
        r.register(
            "socketless_gateway_memory_closes",
            "Connections closed to keep memory bounded, by reason (message_budget 1009, message_timeout 1008, outbound_budget 1013)",
            m.memory_closes.clone(),
        );
        r.register(
            "socketless_gateway_authorizer_calls",
            "$connect authorizer calls, by authorizer (logical id) and outcome (allow, deny, unauthorized, error, timeout, malformed, too_large)",
            m.authorizer_calls.clone(),
        );
        r.register(
            "socketless_gateway_authorizer_latency_seconds",
            "$connect authorizer call latency, by authorizer",
            m.authorizer_latency.clone(),
        );
        for reason in ["message_budget", "message_timeout", "outbound_budget"] {
            m.memory_close(reason);
        }
        m
    }

    /// The counter of connections closed for this memory reason.
    pub fn memory_close(&self, reason: &'static str) -> Counter {
        self.memory_closes.get_or_create(&ReasonLabel { reason }).clone()
    }

    pub fn connect(&self, result: &'static str) {
        self.connects.get_or_create(&ResultLabel { result }).inc();
    }

    pub fn message(&self) {
        self.messages.inc();
    }

    /// Messages received from clients since start.
    pub fn messages_total(&self) -> u64 {
        self.messages.get()
    }

    pub fn integration(&self, route: &str, outcome: &'static str, took: Duration) {
        if outcome == "ok" {
            if let Some((ok, latency)) = self.hot.get(route) {
                ok.inc();
                latency.observe(took.as_secs_f64());
                return;
            }
        }
        let labels = IntegrationLabels {
            route: route.to_string(),
            outcome,
        };
        self.integration_calls.get_or_create(&labels).inc();
        if outcome != "ok" {
            self.integration_errors.get_or_create(&labels).inc();
        }
        self.integration_latency
            .get_or_create(&RouteLabel {
                route: route.to_string(),
            })
            .observe(took.as_secs_f64());
    }

    pub fn authorizer(&self, authorizer: &str, outcome: &'static str, took: Duration) {
        let authorizer = authorizer.to_string();
        self.authorizer_latency
            .get_or_create(&AuthorizerLabel {
                authorizer: authorizer.clone(),
            })
            .observe(took.as_secs_f64());
        self.authorizer_calls
            .get_or_create(&AuthorizerLabels { authorizer, outcome })
            .inc();
    }

    pub fn forward(&self, result: &'static str) {
        self.forwards.get_or_create(&ResultLabel { result }).inc();
    }

    /// `n` forwards with the same result (none: nothing is counted, no series is made).
    pub fn forwards(&self, result: &'static str, n: u64) {
        if n > 0 {
            self.forwards.get_or_create(&ResultLabel { result }).inc_by(n);
        }
    }

    /// One management call: `operation` is post, get or delete (`@connections`), deliver,
    /// info, list or count (the extension), or posts (a peer's call carrying posts, each of
    /// which also counts as a post); `source` is peer for a call another replica forwarded,
    /// client for any other.
    pub fn management(&self, operation: &'static str, source: &'static str, status: u16) {
        self.managements(operation, source, status, 1);
    }

    /// `n` management calls alike (none: nothing is counted, no series is made).
    pub fn managements(&self, operation: &'static str, source: &'static str, status: u16, n: u64) {
        if n > 0 {
            self.management
                .get_or_create(&MgmtLabels {
                    operation,
                    source,
                    status,
                })
                .inc_by(n);
        }
    }
}

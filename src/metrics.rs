//! Prometheus metrics for the backend, and the text encoder every `/metrics` endpoint uses.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Content type of the encoded metrics (OpenMetrics text, which Prometheus scrapes natively).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Latency buckets from 0.25 ms to about 8 s.
pub fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
}

/// Encodes a registry as text.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, registry).is_err() {
        out.clear();
    }
    out
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub listener: &'static str,
    pub route: &'static str,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub listener: &'static str,
    pub route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabels {
    pub listener: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    pub operation: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

/// The backend's metrics (`socketless serve`).
#[derive(Clone)]
pub struct BackendMetrics {
    pub requests: Family<RequestLabels, Counter>,
    pub latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    pub in_flight: Family<ListenerLabels, Gauge<i64, std::sync::atomic::AtomicI64>>,
    pub dynamodb_calls: Family<CallLabels, Counter>,
    pub pushes: Family<OutcomeLabels, Counter>,
    pub cache: Family<ResultLabels, Counter>,
    pub messages: Counter<u64, AtomicU64>,
}

impl BackendMetrics {
    pub fn register(registry: &mut Registry) -> Arc<Self> {
        let m = BackendMetrics {
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
            in_flight: Family::default(),
            dynamodb_calls: Family::default(),
            pushes: Family::default(),
            cache: Family::default(),
            messages: Counter::default(),
        };
        registry.register(
            "socketless_http_requests",
            "HTTP requests served, by listener, route and status",
            m.requests.clone(),
        );
        registry.register(
            "socketless_http_request_duration_seconds",
            "HTTP request latency, by listener and route",
            m.latency.clone(),
        );
        registry.register(
            "socketless_http_requests_in_flight",
            "HTTP requests being served now",
            m.in_flight.clone(),
        );
        registry.register(
            "socketless_dynamodb_calls",
            "DynamoDB calls, by operation and outcome",
            m.dynamodb_calls.clone(),
        );
        registry.register(
            "socketless_pushes",
            "@connections calls (post and delete), by outcome",
            m.pushes.clone(),
        );
        registry.register(
            "socketless_session_cache_lookups",
            "Session cache lookups on messages, by result (hit or miss)",
            m.cache.clone(),
        );
        registry.register(
            "socketless_messages",
            "Messages received on /message",
            m.messages.clone(),
        );
        Arc::new(m)
    }

    pub fn dynamodb(&self, operation: &'static str, outcome: &'static str) {
        self.dynamodb_calls
            .get_or_create(&CallLabels { operation, outcome })
            .inc();
    }

    pub fn push(&self, outcome: &'static str) {
        self.pushes.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    pub fn cache_lookup(&self, hit: bool) {
        let result = if hit { "hit" } else { "miss" };
        self.cache.get_or_create(&ResultLabels { result }).inc();
    }
}

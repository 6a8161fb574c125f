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

/// A handle on one series of `family`. The family's read guard is released before this returns
/// (holding it while creating the next series would deadlock on the family's lock).
fn series<L, M, C>(family: &Family<L, M, C>, labels: L) -> M
where
    L: Clone + std::hash::Hash + Eq,
    M: Clone,
    C: prometheus_client::metrics::family::MetricConstructor<M>,
{
    let guard = family.get_or_create(&labels);
    M::clone(&guard)
}

type InFlightGauge = Gauge<i64, std::sync::atomic::AtomicI64>;

/// The backend's metrics (`socketless serve`).
#[derive(Clone)]
pub struct BackendMetrics {
    pub requests: Family<RequestLabels, Counter>,
    pub latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    pub in_flight: Family<ListenerLabels, InFlightGauge>,
    pub dynamodb_calls: Family<CallLabels, Counter>,
    pub pushes: Family<OutcomeLabels, Counter>,
    pub cache: Family<ResultLabels, Counter>,
    pub messages: Counter<u64, AtomicU64>,
    /// Series the integration routes touch on every call, resolved once: a handle shares its
    /// value with the family it came from, and skips the family's lock and label hash.
    hot: HotSeries,
}

#[derive(Clone)]
struct HotSeries {
    /// `(route, 200 counter, latency)` for each integration route on the public listener.
    routes: Vec<(&'static str, Counter, Histogram)>,
    in_flight: Vec<(&'static str, InFlightGauge)>,
    cache_hit: Counter,
    cache_miss: Counter,
}

impl BackendMetrics {
    /// `hot_routes` are the public listener's routes whose series are resolved up front (they
    /// appear in `/metrics` from the start, at zero).
    pub fn register(registry: &mut Registry, hot_routes: &[&'static str]) -> Arc<Self> {
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        let in_flight = Family::<ListenerLabels, InFlightGauge>::default();
        let cache = Family::<ResultLabels, Counter>::default();
        let hot = HotSeries {
            routes: hot_routes
                .iter()
                .map(|&route| {
                    let ok = RequestLabels {
                        listener: "public",
                        route,
                        status: 200,
                    };
                    let labels = RouteLabels {
                        listener: "public",
                        route,
                    };
                    (route, series(&requests, ok), series(&latency, labels))
                })
                .collect(),
            in_flight: ["public", "internal"]
                .into_iter()
                .map(|listener| (listener, series(&in_flight, ListenerLabels { listener })))
                .collect(),
            cache_hit: series(&cache, ResultLabels { result: "hit" }),
            cache_miss: series(&cache, ResultLabels { result: "miss" }),
        };
        let m = BackendMetrics {
            requests,
            latency,
            in_flight,
            dynamodb_calls: Family::default(),
            pushes: Family::default(),
            cache,
            messages: Counter::default(),
            hot,
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
        if hit { &self.hot.cache_hit } else { &self.hot.cache_miss }.inc();
    }

    /// Counts a served request and observes its latency.
    pub fn request(&self, listener: &'static str, route: &'static str, status: u16, seconds: f64) {
        if same(listener, "public") && status == 200 {
            if let Some((_, ok, latency)) = self.hot.routes.iter().find(|(r, _, _)| same(r, route)) {
                ok.inc();
                latency.observe(seconds);
                return;
            }
        }
        self.requests
            .get_or_create(&RequestLabels {
                listener,
                route,
                status,
            })
            .inc();
        self.latency
            .get_or_create(&RouteLabels { listener, route })
            .observe(seconds);
    }

    /// Adds `delta` to the in-flight gauge of `listener`.
    pub fn in_flight(&self, listener: &'static str, delta: i64) {
        match self.hot.in_flight.iter().find(|(l, _)| same(l, listener)) {
            Some((_, gauge)) => gauge.inc_by(delta),
            None => self.in_flight.get_or_create(&ListenerLabels { listener }).inc_by(delta),
        };
    }
}

/// Label equality for the hot path: the labels are the same constants, so their addresses
/// usually answer without comparing bytes.
fn same(a: &str, b: &str) -> bool {
    std::ptr::eq(a, b) || a == b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolved_series_and_family_lookups_land_in_the_same_output() {
        let mut registry = Registry::default();
        let m = BackendMetrics::register(&mut registry, &["/message"]);
        m.request("public", "/message", 200, 0.001);
        m.request("public", "/message", 200, 0.001);
        m.request("public", "/message", 413, 0.001);
        m.request("internal", "/v1/broadcast", 200, 0.002);
        m.in_flight("public", 1);
        m.in_flight("internal", 1);
        m.in_flight("internal", -1);
        m.cache_lookup(true);
        m.cache_lookup(false);
        m.cache_lookup(false);
        let text = encode(&registry);
        for line in [
            r#"socketless_http_requests_total{listener="public",route="/message",status="200"} 2"#,
            r#"socketless_http_requests_total{listener="public",route="/message",status="413"} 1"#,
            r#"socketless_http_requests_total{listener="internal",route="/v1/broadcast",status="200"} 1"#,
            r#"socketless_http_request_duration_seconds_count{listener="public",route="/message"} 3"#,
            r#"socketless_http_requests_in_flight{listener="public"} 1"#,
            r#"socketless_http_requests_in_flight{listener="internal"} 0"#,
            r#"socketless_session_cache_lookups_total{result="hit"} 1"#,
            r#"socketless_session_cache_lookups_total{result="miss"} 2"#,
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in:\n{text}");
        }
    }
}

//! What the parts of a running gateway share: its settings, the client that calls the
//! backend, the connection registry and the metrics. The handshake, the event pipeline and
//! `@connections` each take this, so none of them reaches back into the gateway's front door.

use prometheus_client::registry::Registry as Metrics;

use super::config::GatewayConfig;
use super::integration::{self, HttpClient};
use super::metrics::GatewayMetrics;
use super::registry::Registry;
use crate::telemetry::LogThrottle;

pub struct Shared {
    pub config: GatewayConfig,
    pub client: HttpClient,
    pub connections: Registry,
    pub metrics: GatewayMetrics,
    /// One warning a second for failed integration calls, however many fail.
    pub warn_integration: LogThrottle,
}

impl Shared {
    pub fn new(config: GatewayConfig, metrics: &mut Metrics) -> Self {
        let metrics = GatewayMetrics::register(metrics);
        Shared {
            connections: Registry::new(config.max_connections, metrics.active.clone()),
            config,
            client: integration::client(),
            metrics,
            warn_integration: LogThrottle::default(),
        }
    }
}

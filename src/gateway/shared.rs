//! What the parts of a running gateway share: its settings, the client that calls the
//! backend, the open connections and the metrics. The handshake, the event pipeline and
//! `@connections` each take this, so none of them reaches back into the gateway's front door.

use std::sync::Arc;

use prometheus_client::registry::Registry as Metrics;

use super::budget::Budgets;
use super::carry::Disconnects;
use super::config::GatewayConfig;
use super::connections::Connections;
use super::integration::{self, HttpClient};
use super::metrics::GatewayMetrics;
use super::peers::Peers;
use super::relay::Relay;
use crate::telemetry::LogThrottle;

pub struct Shared {
    pub config: GatewayConfig,
    pub client: Arc<HttpClient>,
    /// `$disconnect` calls, many to a call to a backend that takes them.
    pub disconnects: Disconnects,
    pub connections: Connections,
    pub metrics: GatewayMetrics,
    /// The other replicas, for calls about connections this one does not hold.
    pub peers: Arc<Peers>,
    /// Posts for connections another replica holds, many to a call.
    pub relay: Arc<Relay>,
    /// One warning a second for failed integration calls, however many fail.
    pub warn_integration: LogThrottle,
}

impl Shared {
    pub fn new(config: GatewayConfig, metrics: &mut Metrics) -> Self {
        let integrated = config.model.routes.iter().filter(|(_, r)| r.integration.is_some());
        let metrics = GatewayMetrics::register(metrics, integrated.map(|(key, _)| key));
        let client = Arc::new(integration::client());
        let peers = Arc::new(Peers::new(
            config.ordinal,
            config.peers.clone(),
            config.peer_timeout,
            config.verifier.as_ref().map(|v| v.secret_access_key.as_str()),
        ));
        Shared {
            relay: Arc::new(Relay::new(peers.clone(), config.model.stage.clone())),
            peers,
            connections: Connections::new(
                config.max_connections,
                metrics.active.clone(),
                Budgets::new(&config, &metrics),
            ),
            config,
            disconnects: Disconnects::new(client.clone(), metrics.carried.clone()),
            client,
            metrics,
            warn_integration: LogThrottle::default(),
        }
    }
}

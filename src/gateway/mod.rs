//! `socketless gateway`: a WebSocket gateway that follows Amazon API Gateway's WebSocket
//! contract, configured from the same CloudFormation template that deploys the real API. It
//! holds the client connections, calls the backend for `$connect`, messages and `$disconnect`,
//! and serves the `@connections` management API. See docs/gateway.md.
//!
//! This file is the front door: the [`Gateway`], the routing of each request on its listener,
//! and serving until shutdown. The rooms behind it: `config` (settings and the template),
//! `handshake` (`$connect` and the 101), `connection` (an open connection's handle, queue and
//! loop), `events` (context, integration calls, replies), `carry` (`$disconnect` calls many
//! to a call, to a backend that takes them), `content` (ContentHandlingStrategy
//! and binary frames), `management` (`@connections`),
//! `deliver` (the batch extension of `@connections`: one frame to many connections),
//! `listing` (the extension's who-is-connected, across the replicas), `admin` (the admin port
//! and its live page),
//! `authorizer` (`$connect` REQUEST authorizers), `error` (the one error type, and the answer each
//! error gives), `connections` (open
//! connections), `metrics`, and `shared` (what those rooms
//! share).

mod admin;
mod authorizer;
mod budget;
mod carry;
mod config;
mod connection;
mod connections;
mod content;
mod deliver;
mod error;
mod events;
mod handshake;
pub(crate) mod ids;
mod integration;
mod listing;
mod management;
pub mod mapping;
mod metrics;
mod peers;
mod relay;

pub mod selection;
mod shared;
mod sigv4;
pub mod template;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::http_server::{self, Body, Drain};
use crate::lifecycle::Lifecycle;
use shared::Shared;

pub use config::{EMBEDDED_TEMPLATE, GatewayArgs, GatewayConfig, PARAM_VARIABLE_PREFIX};
pub use error::GatewayError;
pub use handshake::{HandshakeRequest, parse_handshake};
pub use peers::PeerUrls;
pub use sigv4::{IamIdentity, Signed, Verifier};
pub use template::{ApiModel, TemplateError};

/// Reads the connection id from a raw `/{stage}/@connections/{id}` path (segments may be
/// percent-encoded); `None` when the path is not one.
pub fn parse_connections_path(raw: &str, stage: &str) -> Option<String> {
    management::parse_path(raw, stage)
}

/// The WebSocket limits the gateway applies to clients (frames and messages), for tests and
/// fuzzing of the protocol layer.
pub fn websocket_config(
    max_message_bytes: usize,
    max_frame_bytes: usize,
) -> tokio_tungstenite::tungstenite::protocol::WebSocketConfig {
    connection::ws_config(max_message_bytes, max_frame_bytes)
}

/// The running gateway: its configuration, client, connections and metrics.
pub struct Gateway {
    shared: Arc<Shared>,
}

impl Gateway {
    pub fn new(config: GatewayConfig, registry: &mut Registry) -> Arc<Gateway> {
        Arc::new(Gateway {
            shared: Arc::new(Shared::new(config, registry)),
        })
    }

    pub fn config(&self) -> &GatewayConfig {
        &self.shared.config
    }

    /// Open connections now.
    pub fn active(&self) -> usize {
        self.shared.connections.len()
    }

    /// Routes one HTTP request on the gateway's listener.
    async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        peer: SocketAddr,
        lifecycle: Lifecycle,
        registry: Arc<Registry>,
    ) -> Response<Body> {
        let path = req.uri().path().to_string();
        if let Some(resp) = http_server::health(&path, &lifecycle) {
            return resp;
        }
        if path == "/metrics" {
            return http_server::with_body(
                StatusCode::OK,
                &http_server::content_type::OPENMETRICS,
                crate::metrics::encode(&registry),
            );
        }
        let stage = &self.shared.config.model.stage;
        let trimmed = path.trim_end_matches('/');
        if trimmed.strip_prefix('/') == Some(stage.as_str()) {
            return handshake::handshake(self.shared.clone(), req, peer, lifecycle).await;
        }
        if let Some(id) = management::parse_path(&path, stage) {
            return management::management(&self.shared, req, id).await;
        }
        if let Some(call) = deliver::parse_path(&path, stage) {
            return deliver::extension(&self.shared, req, call).await;
        }
        if let Some(call) = listing::parse_path(&path, stage) {
            return listing::extension(&self.shared, req, call).await;
        }
        GatewayError::Forbidden.response()
    }

    /// Enforces the idle timeout and the maximum duration on every connection until the
    /// lifecycle says to stop; then asks every connection to close with 1001.
    async fn keep_time(&self, lifecycle: &Lifecycle) {
        let (idle, max) = (
            self.shared.config.idle_timeout,
            self.shared.config.max_connection_duration,
        );
        // Limits hold to within an eighth of the shortest one, and at most a second.
        let shortest = idle.min(max).min(self.shared.connections.message_timeout());
        let tick = (shortest / 8).clamp(Duration::from_millis(1), Duration::from_secs(1));
        let mut sweep = tokio::time::interval(tick);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let stopped = lifecycle.stopped();
        tokio::pin!(stopped);
        loop {
            tokio::select! {
                _ = sweep.tick() => self.shared.connections.sweep(crate::timefmt::now_ms(), idle, max),
                _ = &mut stopped => break,
            }
        }
        self.shared.connections.close_all(connection::GOING_AWAY);
    }

    /// The drain of the connections: once the lifecycle says to stop, every connection is
    /// asked to close with 1001, and this waits (up to the drain timeout) until each has closed
    /// and its `$disconnect` call has ended. Returns whether they all did, and the time left of
    /// the drain for requests still in flight on the listener (at least [`LAST_REQUESTS`]).
    async fn drain_connections(&self, lifecycle: &Lifecycle) -> (bool, Duration) {
        self.keep_time(lifecycle).await;
        let deadline = tokio::time::Instant::now() + self.shared.config.drain_timeout;
        let mut all_closed = true;
        while self.shared.connections.slots_taken() > 0 {
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(
                    open = self.shared.connections.slots_taken(),
                    "gateway drain timeout with connections still closing"
                );
                all_closed = false;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        (all_closed, left.max(LAST_REQUESTS))
    }

    /// Serves until the lifecycle stops it; then closes every connection with 1001 and waits
    /// (up to the drain timeout) for their `$disconnect` calls. The listener stays open all that
    /// time: a replica that still holds clients answers `@connections` calls for them (from
    /// callers and from its peers), `/healthz` and `/readyz`, and refuses new handshakes with
    /// 503. It closes once its connections are gone or the drain timeout has passed.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, lifecycle: Lifecycle, registry: Arc<Registry>) -> Drain {
        let gw = self.clone();
        let lc = lifecycle.clone();
        let all_closed = std::sync::atomic::AtomicBool::new(true);
        let stop = async {
            let (closed, left) = self.drain_connections(&lifecycle).await;
            all_closed.store(closed, std::sync::atomic::Ordering::Relaxed);
            tracing::info!("gateway connections drained; closing the listener");
            left
        };
        let http = http_server::serve_until(
            listener,
            move |req, peer| gw.clone().handle(req, peer, lc.clone(), registry.clone()),
            lifecycle.clone(),
            stop,
            self.shared.config.http,
        )
        .await;
        if all_closed.load(std::sync::atomic::Ordering::Relaxed) {
            http
        } else {
            Drain::TimedOut
        }
    }
}

impl Gateway {
    /// Serves the admin port (the live page and its JSON, see `admin.rs`) on `listener` until
    /// the lifecycle stops it.
    pub async fn serve_admin(self: Arc<Self>, listener: TcpListener, lifecycle: Lifecycle) -> Drain {
        let token = self.shared.config.admin_token.clone();
        admin::serve(self.shared.clone(), listener, lifecycle, token).await
    }
}

/// Requests in flight on the listener when it closes get at least this long to finish, even
/// when the connections took the whole drain timeout.
const LAST_REQUESTS: Duration = Duration::from_secs(1);

/// Runs `socketless gateway` until SIGTERM/SIGINT and the graceful shutdown complete.
pub async fn run(config: GatewayConfig) -> Result<Drain, GatewayError> {
    if config.model.routes.get("$connect").is_some_and(|r| r.iam) && config.verifier.is_none() {
        return Err(GatewayError::IamWithoutKey);
    }
    let lifecycle = Lifecycle::new();
    lifecycle
        .spawn_signal_handler(config.shutdown_delay)
        .map_err(GatewayError::Signals)?;
    let listener = TcpListener::bind(config.listen).await.map_err(GatewayError::Bind)?;
    let admin = match config.admin_listen {
        Some(addr) => Some(TcpListener::bind(addr).await.map_err(GatewayError::Bind)?),
        None => None,
    };
    let mut registry = Registry::default();
    let stage = config.model.stage.clone();
    let routes: Vec<String> = config.model.routes.keys().cloned().collect();
    let gateway = Gateway::new(config, &mut registry);
    lifecycle.set_ready();
    let addr = listener.local_addr().map_err(GatewayError::Listener)?;
    tracing::info!(url = %format!("ws://{addr}/{stage}"), routes = ?routes, "socketless gateway ready");
    let Some(admin) = admin else {
        return Ok(gateway.serve(listener, lifecycle, Arc::new(registry)).await);
    };
    let admin_addr = admin.local_addr().map_err(GatewayError::Listener)?;
    tracing::info!(url = %format!("http://{admin_addr}/"), "admin port (live page) ready");
    let (drain, _) = tokio::join!(
        gateway.clone().serve(listener, lifecycle.clone(), Arc::new(registry)),
        gateway.serve_admin(admin, lifecycle)
    );
    Ok(drain)
}

//! `socketless gateway`: a WebSocket gateway that follows Amazon API Gateway's WebSocket
//! contract, configured from the same CloudFormation template that deploys the real API. It
//! holds the client connections, calls the backend for `$connect`, messages and `$disconnect`,
//! and serves the `@connections` management API. See docs/gateway.md.

mod conn;
mod ids;
mod integration;
pub mod mapping;
mod mgmt;
pub mod selection;
mod sigv4;
pub mod template;
mod timefmt;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::config::{ConfigError, Problems};
use crate::contract;
use crate::lifecycle::Lifecycle;
use crate::metrics::latency_histogram;
use crate::server::{self, Body, BodyPolicy, Drain, HttpLimits};
use conn::ConnHandle;
pub use sigv4::Verifier;
pub use template::{ApiModel, TemplateError};

/// Reads the connection id from a raw `/{stage}/@connections/{id}` path (segments may be
/// percent-encoded); `None` when the path is not one.
pub fn parse_connections_path(raw: &str, stage: &str) -> Option<String> {
    mgmt::parse_path(raw, stage)
}

/// The WebSocket limits the gateway applies to clients (frames and messages), for tests and
/// fuzzing of the protocol layer.
pub fn websocket_config(
    max_message_bytes: usize,
    max_frame_bytes: usize,
) -> tokio_tungstenite::tungstenite::protocol::WebSocketConfig {
    conn::ws_config(max_message_bytes, max_frame_bytes)
}

/// The repository's template, built into the binary so `gateway` and `dev` work anywhere.
pub const EMBEDDED_TEMPLATE: &str = include_str!("../../cfn/websocket-api.yml");

/// Flags of `socketless gateway`.
#[derive(clap::Args, Debug, Clone)]
pub struct GatewayArgs {
    /// CloudFormation template to emulate. Default: the template built into the binary (cfn/websocket-api.yml).
    #[arg(long, env = "SOCKETLESS_GATEWAY_CFN")]
    pub cfn: Option<String>,
    /// Template parameter, Key=Value (repeatable; the variable takes a comma-separated list).
    #[arg(long = "param", env = "SOCKETLESS_GATEWAY_PARAMS", value_delimiter = ',')]
    pub params: Vec<String>,
    /// Listener for WebSocket clients, @connections, /healthz, /readyz and /metrics.
    #[arg(long, env = "SOCKETLESS_GATEWAY_LISTEN", default_value = "0.0.0.0:8081")]
    pub listen: String,
    /// Region the gateway pretends to be in (AWS::Region, and the SigV4 scope).
    #[arg(long, env = "SOCKETLESS_GATEWAY_REGION", default_value = "us-east-1")]
    pub region: String,
    /// Value of context.domainName. Default: the Host header of the client's handshake.
    #[arg(long, env = "SOCKETLESS_GATEWAY_DOMAIN_NAME")]
    pub domain_name: Option<String>,
    /// Open connections at most; further handshakes get 429.
    #[arg(long, env = "SOCKETLESS_GATEWAY_MAX_CONNECTIONS", default_value = "10000")]
    pub max_connections: String,
    /// Close a connection after this long without a message in either direction.
    #[arg(long, env = "SOCKETLESS_GATEWAY_IDLE_TIMEOUT", default_value = "10m")]
    pub idle_timeout: String,
    /// Close every connection after this long.
    #[arg(long, env = "SOCKETLESS_GATEWAY_MAX_CONNECTION_DURATION", default_value = "2h")]
    pub max_connection_duration: String,
    /// Largest message (after frames are reassembled); larger closes with 1009.
    #[arg(long, env = "SOCKETLESS_GATEWAY_MAX_MESSAGE_BYTES", default_value = "131072")]
    pub max_message_bytes: String,
    /// Largest single frame; larger closes with 1009.
    #[arg(long, env = "SOCKETLESS_GATEWAY_MAX_FRAME_BYTES", default_value = "32768")]
    pub max_frame_bytes: String,
    /// Overrides every integration's timeout. Default: the template's TimeoutInMillis, else 29s.
    #[arg(long, env = "SOCKETLESS_GATEWAY_INTEGRATION_TIMEOUT")]
    pub integration_timeout: Option<String>,
    /// Messages queued for one client before @connections posts get 429.
    #[arg(long, env = "SOCKETLESS_GATEWAY_OUTBOUND_QUEUE", default_value = "32")]
    pub outbound_queue: String,
    /// A client that does not take a frame within this long is closed.
    #[arg(long, env = "SOCKETLESS_GATEWAY_WRITE_TIMEOUT", default_value = "30s")]
    pub write_timeout: String,
    /// After SIGTERM, keep serving (not ready) this long before closing connections with 1001.
    #[arg(long, env = "SOCKETLESS_GATEWAY_SHUTDOWN_DELAY", default_value = "5s")]
    pub shutdown_delay: String,
    /// Then wait at most this long for closes and their $disconnect calls.
    #[arg(long, env = "SOCKETLESS_GATEWAY_DRAIN_TIMEOUT", default_value = "20s")]
    pub drain_timeout: String,
    /// Idle keep-alive connections (@connections callers) stay open this long, and a request
    /// head (a handshake too) must arrive within it.
    #[arg(long, env = "SOCKETLESS_GATEWAY_KEEP_ALIVE_TIMEOUT", default_value = "75s")]
    pub keep_alive_timeout: String,
    /// Request line and headers together at most, in bytes (handshakes and @connections);
    /// larger requests get 431.
    #[arg(long, env = "SOCKETLESS_GATEWAY_MAX_HEADER_BYTES", default_value = "10240")]
    pub max_header_bytes: String,
    /// An @connections body must arrive whole within this; slower bodies get 408.
    #[arg(long, env = "SOCKETLESS_GATEWAY_BODY_TIMEOUT", default_value = "10s")]
    pub body_timeout: String,
    /// Bytes of @connections bodies held at once; past it calls get 429 LimitExceededException.
    #[arg(long, env = "SOCKETLESS_GATEWAY_MAX_BUFFERED_BODY_BYTES", default_value = "67108864")]
    pub max_buffered_body_bytes: String,
    /// Require SigV4 on @connections, signed with this access key id.
    #[arg(
        long,
        env = "SOCKETLESS_GATEWAY_SIGV4_ACCESS_KEY_ID",
        requires = "sigv4_secret_access_key"
    )]
    pub sigv4_access_key_id: Option<String>,
    /// The secret for --sigv4-access-key-id.
    #[arg(
        long,
        env = "SOCKETLESS_GATEWAY_SIGV4_SECRET_ACCESS_KEY",
        hide_env_values = true,
        requires = "sigv4_access_key_id"
    )]
    pub sigv4_secret_access_key: Option<String>,
}

/// Validated settings of the gateway.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub model: ApiModel,
    pub listen: SocketAddr,
    pub domain_name: Option<String>,
    pub max_connections: usize,
    pub idle_timeout: Duration,
    pub max_connection_duration: Duration,
    pub max_message_bytes: usize,
    pub max_frame_bytes: usize,
    pub integration_timeout: Option<Duration>,
    pub outbound_queue: usize,
    pub write_timeout: Duration,
    pub shutdown_delay: Duration,
    pub drain_timeout: Duration,
    pub http: HttpLimits,
    pub body: BodyPolicy,
    pub verifier: Option<Verifier>,
}

/// Parses `Key=Value` parameters, recording problems.
fn parse_params(raw: &[String], p: &mut Problems) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for item in raw {
        match item.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => {
                out.insert(k.trim().to_string(), v.to_string());
            }
            _ => p.push(format!(
                "--param (SOCKETLESS_GATEWAY_PARAMS): {item:?} is not Key=Value"
            )),
        }
    }
    out
}

impl GatewayArgs {
    /// Checks every flag and the template, reporting all problems at once.
    pub fn validate(&self) -> Result<GatewayConfig, ConfigError> {
        let mut p = Problems::new();
        let text = match &self.cfn {
            None => Some(EMBEDDED_TEMPLATE.to_string()),
            Some(path) => match std::fs::read_to_string(path) {
                Ok(t) => Some(t),
                Err(e) => {
                    p.push(format!("--cfn (SOCKETLESS_GATEWAY_CFN): cannot read {path:?}: {e}"));
                    None
                }
            },
        };
        self.validate_with(text, p)
    }

    /// [`GatewayArgs::validate`] with the template's text given.
    fn validate_with(&self, text: Option<String>, mut p: Problems) -> Result<GatewayConfig, ConfigError> {
        let listen = p.addr("--listen (SOCKETLESS_GATEWAY_LISTEN)", &self.listen);
        let max_connections = p.count(
            "--max-connections (SOCKETLESS_GATEWAY_MAX_CONNECTIONS)",
            &self.max_connections,
            1_000_000,
        );
        let idle_timeout = p.duration("--idle-timeout (SOCKETLESS_GATEWAY_IDLE_TIMEOUT)", &self.idle_timeout);
        let max_duration = p.duration(
            "--max-connection-duration (SOCKETLESS_GATEWAY_MAX_CONNECTION_DURATION)",
            &self.max_connection_duration,
        );
        let max_message = p.count(
            "--max-message-bytes (SOCKETLESS_GATEWAY_MAX_MESSAGE_BYTES)",
            &self.max_message_bytes,
            16 * 1024 * 1024,
        );
        let max_frame = p.count(
            "--max-frame-bytes (SOCKETLESS_GATEWAY_MAX_FRAME_BYTES)",
            &self.max_frame_bytes,
            16 * 1024 * 1024,
        );
        if let (Some(m), Some(f)) = (max_message, max_frame) {
            if f > m {
                p.push("--max-frame-bytes: must not exceed --max-message-bytes");
            }
        }
        let integration_timeout = self
            .integration_timeout
            .as_deref()
            .and_then(|t| p.duration("--integration-timeout (SOCKETLESS_GATEWAY_INTEGRATION_TIMEOUT)", t));
        if integration_timeout.is_some_and(|t| t < Duration::from_millis(50) || t > Duration::from_secs(29)) {
            p.push("--integration-timeout: must be between 50ms and 29s, as in API Gateway");
        }
        let outbound_queue = p.count(
            "--outbound-queue (SOCKETLESS_GATEWAY_OUTBOUND_QUEUE)",
            &self.outbound_queue,
            100_000,
        );
        let write_timeout = p.duration(
            "--write-timeout (SOCKETLESS_GATEWAY_WRITE_TIMEOUT)",
            &self.write_timeout,
        );
        let shutdown_delay = p.duration(
            "--shutdown-delay (SOCKETLESS_GATEWAY_SHUTDOWN_DELAY)",
            &self.shutdown_delay,
        );
        let drain_timeout = p.duration(
            "--drain-timeout (SOCKETLESS_GATEWAY_DRAIN_TIMEOUT)",
            &self.drain_timeout,
        );
        let keep_alive = p.duration(
            "--keep-alive-timeout (SOCKETLESS_GATEWAY_KEEP_ALIVE_TIMEOUT)",
            &self.keep_alive_timeout,
        );
        let max_header = p.count(
            "--max-header-bytes (SOCKETLESS_GATEWAY_MAX_HEADER_BYTES)",
            &self.max_header_bytes,
            1024 * 1024,
        );
        if max_header.is_some_and(|m| m < 1024) {
            p.push("--max-header-bytes (SOCKETLESS_GATEWAY_MAX_HEADER_BYTES): must be at least 1024");
        }
        let body_timeout = p.duration("--body-timeout (SOCKETLESS_GATEWAY_BODY_TIMEOUT)", &self.body_timeout);
        let body_budget = p.count(
            "--max-buffered-body-bytes (SOCKETLESS_GATEWAY_MAX_BUFFERED_BODY_BYTES)",
            &self.max_buffered_body_bytes,
            u32::MAX as u64,
        );
        if body_budget.is_some_and(|b| b < contract::MAX_POST_BYTES as u64) {
            p.push(format!(
                "--max-buffered-body-bytes: must be at least {} (one @connections post)",
                contract::MAX_POST_BYTES
            ));
        }
        for (name, d) in [
            ("--idle-timeout", idle_timeout),
            ("--max-connection-duration", max_duration),
            ("--write-timeout", write_timeout),
            ("--keep-alive-timeout", keep_alive),
            ("--body-timeout", body_timeout),
        ] {
            if d.is_some_and(|d| d.is_zero()) {
                p.push(format!("{name}: must be more than zero"));
            }
        }
        let params = parse_params(&self.params, &mut p);
        let model = text.and_then(|t| match template::load(&t, &params, &self.region) {
            Ok(m) => Some(m),
            Err(errors) => {
                let source = self.cfn.as_deref().unwrap_or("the built-in template");
                for e in errors {
                    p.push(format!("template ({source}): {}", e.0));
                }
                None
            }
        });
        let verifier = match (&self.sigv4_access_key_id, &self.sigv4_secret_access_key) {
            (Some(id), Some(secret)) if !id.is_empty() && !secret.is_empty() => Some(Verifier {
                access_key_id: id.clone(),
                secret_access_key: secret.clone(),
                region: self.region.clone(),
            }),
            (None, None) => None,
            _ => {
                p.push("--sigv4-access-key-id and --sigv4-secret-access-key: set both, non-empty, or neither");
                None
            }
        };
        p.into_result()?;
        let (Some(model), Some(listen)) = (model, listen) else {
            return Err(ConfigError(vec!["internal: validated settings missing".into()]));
        };
        Ok(GatewayConfig {
            model,
            listen,
            domain_name: self.domain_name.clone().filter(|d| !d.is_empty()),
            max_connections: max_connections.unwrap_or(1) as usize,
            idle_timeout: idle_timeout.unwrap_or_default(),
            max_connection_duration: max_duration.unwrap_or_default(),
            max_message_bytes: max_message.unwrap_or(1) as usize,
            max_frame_bytes: max_frame.unwrap_or(1) as usize,
            integration_timeout,
            outbound_queue: outbound_queue.unwrap_or(1) as usize,
            write_timeout: write_timeout.unwrap_or_default(),
            shutdown_delay: shutdown_delay.unwrap_or_default(),
            drain_timeout: drain_timeout.unwrap_or_default(),
            http: HttpLimits {
                keep_alive: keep_alive.unwrap_or_default(),
                max_header_bytes: max_header.unwrap_or(1) as usize,
            },
            body: BodyPolicy::new(body_timeout.unwrap_or_default(), body_budget.unwrap_or(1) as usize),
            verifier,
        })
    }
}

/// `socketless gateway`'s flags on their own, to build [`GatewayArgs`] from words.
#[derive(clap::Parser, Debug)]
#[command(name = "gateway", no_binary_name = true)]
struct GatewayFlags {
    #[command(flatten)]
    args: GatewayArgs,
}

impl GatewayArgs {
    /// Settings from flags, as the command line gives them; every flag not given takes its
    /// variable, then its default.
    pub fn from_flags<I, T>(flags: I) -> Result<GatewayArgs, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        use clap::Parser;
        GatewayFlags::try_parse_from(flags).map(|f| f.args)
    }
}

impl GatewayConfig {
    /// Settings with the flags' defaults for a template text and parameters, listening on an
    /// ephemeral loopback port (used by `dev` and tests; the CLI goes through
    /// [`GatewayArgs::validate`]).
    pub fn from_template(text: &str, params: &BTreeMap<String, String>) -> Result<GatewayConfig, Vec<TemplateError>> {
        let mut flags = vec!["--listen=127.0.0.1:0".to_string(), "--region=us-east-1".to_string()];
        flags.extend(params.iter().map(|(k, v)| format!("--param={k}={v}")));
        let args = GatewayArgs::from_flags(flags).map_err(|e| vec![TemplateError(e.to_string())])?;
        args.validate_with(Some(text.to_string()), Problems::new())
            .map_err(|e| e.0.into_iter().map(TemplateError).collect())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
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
struct MgmtLabels {
    operation: &'static str,
    status: u16,
}

/// The gateway's metrics.
struct GatewayMetrics {
    active: Gauge,
    connects: Family<ResultLabel, Counter>,
    messages: Counter,
    integration_calls: Family<IntegrationLabels, Counter>,
    integration_errors: Family<IntegrationLabels, Counter>,
    integration_latency: Family<RouteLabel, Histogram, fn() -> Histogram>,
    management: Family<MgmtLabels, Counter>,
}

impl GatewayMetrics {
    fn register(r: &mut Registry) -> Self {
        let m = GatewayMetrics {
            active: Gauge::default(),
            connects: Family::default(),
            messages: Counter::default(),
            integration_calls: Family::default(),
            integration_errors: Family::default(),
            integration_latency: Family::new_with_constructor(latency_histogram),
            management: Family::default(),
        };
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
            "@connections calls, by operation and status",
            m.management.clone(),
        );
        m
    }

    fn connect(&self, result: &'static str) {
        self.connects.get_or_create(&ResultLabel { result }).inc();
    }

    fn message(&self) {
        self.messages.inc();
    }

    fn integration(&self, route: &str, outcome: &'static str, took: Duration) {
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

    fn management(&self, operation: &'static str, status: u16) {
        self.management.get_or_create(&MgmtLabels { operation, status }).inc();
    }
}

/// The running gateway: its configuration, client, connections and metrics.
pub struct Gateway {
    config: GatewayConfig,
    client: integration::HttpClient,
    connections: Mutex<HashMap<String, Arc<ConnHandle>>>,
    /// Handshakes in progress plus open connections.
    slots: AtomicUsize,
    metrics: GatewayMetrics,
    /// One warning a second for failed integration calls, however many fail.
    warn_integration: crate::telemetry::LogThrottle,
}

/// A reserved connection slot, released on drop.
struct Slot(Arc<Gateway>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.slots.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Gateway {
    pub fn new(config: GatewayConfig, registry: &mut Registry) -> Arc<Gateway> {
        Arc::new(Gateway {
            config,
            client: integration::client(),
            connections: Mutex::new(HashMap::new()),
            slots: AtomicUsize::new(0),
            metrics: GatewayMetrics::register(registry),
            warn_integration: Default::default(),
        })
    }

    pub fn config(&self) -> &GatewayConfig {
        &self.config
    }

    /// Open connections now.
    pub fn active(&self) -> usize {
        self.connections.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    fn reserve_slot(self: &Arc<Self>) -> Option<Slot> {
        let taken = self.slots.fetch_add(1, Ordering::SeqCst);
        let slot = Slot(self.clone());
        (taken < self.config.max_connections).then_some(slot)
    }

    fn register(&self, handle: Arc<ConnHandle>) {
        self.connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(handle.ctx.id.clone(), handle);
        self.metrics.active.inc();
    }

    fn unregister(&self, id: &str) {
        if self
            .connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id)
            .is_some()
        {
            self.metrics.active.dec();
        }
    }

    fn lookup(&self, id: &str) -> Option<Arc<ConnHandle>> {
        self.connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
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
        if let Some(resp) = server::health(&path, &lifecycle) {
            return resp;
        }
        if path == "/metrics" {
            return server::with_body(
                StatusCode::OK,
                crate::metrics::CONTENT_TYPE,
                crate::metrics::encode(&registry),
            );
        }
        let stage = &self.config.model.stage;
        let trimmed = path.trim_end_matches('/');
        if trimmed.strip_prefix('/') == Some(stage.as_str()) {
            return self.handshake(req, peer, lifecycle).await;
        }
        if let Some(id) = mgmt::parse_path(&path, stage) {
            return self.management(req, id).await;
        }
        mgmt::aws_error(StatusCode::FORBIDDEN, "ForbiddenException", "Forbidden")
    }

    /// Serves until the lifecycle stops it; then closes every connection with 1001 and waits
    /// (up to the drain timeout) for their `$disconnect` calls.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, lifecycle: Lifecycle, registry: Arc<Registry>) -> Drain {
        let gw = self.clone();
        let lc = lifecycle.clone();
        let http = server::serve(
            listener,
            move |req, peer| gw.clone().handle(req, peer, lc.clone(), registry.clone()),
            lifecycle.clone(),
            self.config.http,
            self.config.drain_timeout,
        )
        .await;
        // Connection tasks see the same stop signal and close with 1001; wait for them.
        let deadline = tokio::time::Instant::now() + self.config.drain_timeout;
        while self.slots.load(Ordering::SeqCst) > 0 {
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(
                    open = self.slots.load(Ordering::SeqCst),
                    "gateway drain timeout with connections still closing"
                );
                return Drain::TimedOut;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        http
    }
}

/// Runs `socketless gateway` until SIGTERM/SIGINT and the graceful shutdown complete.
pub async fn run(config: GatewayConfig) -> Result<Drain, std::io::Error> {
    let lifecycle = Lifecycle::new();
    lifecycle.spawn_signal_handler(config.shutdown_delay)?;
    let listener = TcpListener::bind(config.listen).await?;
    let mut registry = Registry::default();
    let stage = config.model.stage.clone();
    let routes: Vec<String> = config.model.routes.keys().cloned().collect();
    let gateway = Gateway::new(config, &mut registry);
    lifecycle.set_ready();
    let addr = listener.local_addr()?;
    tracing::info!(url = %format!("ws://{addr}/{stage}"), routes = ?routes, "socketless gateway ready");
    Ok(gateway.serve(listener, lifecycle, Arc::new(registry)).await)
}

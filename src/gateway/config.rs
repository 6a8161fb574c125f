//! The gateway's settings: its flags (each with its variable), their validation (every problem
//! reported at once) and the API model read from the CloudFormation template. The authorizers'
//! settings are read in `config/authorizer.rs`, the replicas' in `config/peers.rs`, and the
//! memory budgets' in `budget.rs`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use super::peers::PeerUrls;
use super::sigv4::Verifier;
use super::template::{self, ApiModel, TemplateError};
use crate::config::{self, ConfigError, FromFlags, Labels, Problems};
use crate::contract;
use crate::defaults;
use crate::http_server::{BodyPolicy, HttpLimits};

mod authorizer;
mod peers;
#[cfg(test)]
mod tests;

pub use authorizer::{AUTHORIZER_TIMEOUT, AuthorizerSettings};
use peers::{check_template, parse_ordinal};

/// The repository's template, built into the binary so `gateway` and `dev` work anywhere.
pub const EMBEDDED_TEMPLATE: &str = include_str!("../../cfn/websocket-api.yml");

/// Flags of `socketless gateway`.
#[derive(clap::Args, Debug, Clone)]
pub struct GatewayArgs {
    /// CloudFormation template to emulate. Default: the template built into the binary (cfn/websocket-api.yml).
    #[arg(long, env = "SOCKETLESS_GATEWAY_CFN")]
    pub cfn: Option<String>,
    /// Template parameter, Key=Value (repeatable; the variable takes a comma-separated list).
    /// A parameter given neither way is read from SOCKETLESS_GATEWAY_PARAM_<Name>.
    #[arg(
        long = "param",
        env = "SOCKETLESS_GATEWAY_PARAMS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub params: Vec<String>,
    /// Listener for WebSocket clients, @connections, /healthz, /readyz and /metrics.
    #[arg(long, env = "SOCKETLESS_GATEWAY_LISTEN", default_value = defaults::GATEWAY_LISTEN)]
    pub listen: String,
    /// Region the gateway pretends to be in (AWS::Region, and the SigV4 scope).
    #[arg(long, env = "SOCKETLESS_GATEWAY_REGION", default_value = defaults::REGION)]
    pub region: String,
    /// Value of context.domainName. Default: the Host header of the client's handshake.
    #[arg(long, env = "SOCKETLESS_GATEWAY_DOMAIN_NAME")]
    pub domain_name: Option<String>,
    /// Open connections at most; further handshakes get 429.
    #[arg(long, env = "SOCKETLESS_GATEWAY_MAX_CONNECTIONS", default_value = defaults::MAX_CONNECTIONS)]
    pub max_connections: String,
    /// Close a connection after this long without a message in either direction.
    #[arg(long, env = "SOCKETLESS_GATEWAY_IDLE_TIMEOUT", default_value = defaults::IDLE_TIMEOUT)]
    pub idle_timeout: String,
    /// Close every connection after this long.
    #[arg(long, env = "SOCKETLESS_GATEWAY_MAX_CONNECTION_DURATION", default_value = defaults::MAX_CONNECTION_DURATION)]
    pub max_connection_duration: String,
    /// Largest message (after frames are reassembled); larger closes with 1009.
    #[arg(long, env = "SOCKETLESS_GATEWAY_MAX_MESSAGE_BYTES", default_value = defaults::MAX_MESSAGE_BYTES)]
    pub max_message_bytes: String,
    /// Largest single frame; larger closes with 1009.
    #[arg(long, env = "SOCKETLESS_GATEWAY_MAX_FRAME_BYTES", default_value = defaults::MAX_FRAME_BYTES)]
    pub max_frame_bytes: String,
    /// Overrides every integration's timeout. Default: the template's TimeoutInMillis, else 29s.
    #[arg(long, env = "SOCKETLESS_GATEWAY_INTEGRATION_TIMEOUT")]
    pub integration_timeout: Option<String>,
    /// Messages queued for one client before @connections posts get 429.
    #[arg(long, env = "SOCKETLESS_GATEWAY_OUTBOUND_QUEUE", default_value = defaults::OUTBOUND_QUEUE)]
    pub outbound_queue: String,
    /// A client that does not take a frame within this long is closed.
    #[arg(long, env = "SOCKETLESS_GATEWAY_WRITE_TIMEOUT", default_value = defaults::WRITE_TIMEOUT)]
    pub write_timeout: String,
    /// After SIGTERM, keep serving (not ready) this long before closing connections with 1001.
    #[arg(long, env = "SOCKETLESS_GATEWAY_SHUTDOWN_DELAY", default_value = defaults::SHUTDOWN_DELAY)]
    pub shutdown_delay: String,
    /// Then wait at most this long for closes and their $disconnect calls.
    #[arg(long, env = "SOCKETLESS_GATEWAY_DRAIN_TIMEOUT", default_value = defaults::DRAIN_TIMEOUT)]
    pub drain_timeout: String,
    /// Idle keep-alive connections (@connections callers) stay open this long, and a request
    /// head (a handshake too) must arrive within it.
    #[arg(long, env = "SOCKETLESS_GATEWAY_KEEP_ALIVE_TIMEOUT", default_value = defaults::KEEP_ALIVE_TIMEOUT)]
    pub keep_alive_timeout: String,
    /// Request line and headers together at most, in bytes (handshakes and @connections);
    /// larger requests get 431.
    #[arg(long, env = "SOCKETLESS_GATEWAY_MAX_HEADER_BYTES", default_value = defaults::MAX_HEADER_BYTES)]
    pub max_header_bytes: String,
    /// An @connections body must arrive whole within this; slower bodies get 408.
    #[arg(long, env = "SOCKETLESS_GATEWAY_BODY_TIMEOUT", default_value = defaults::BODY_TIMEOUT)]
    pub body_timeout: String,
    /// Bytes of @connections bodies held at once; past it calls get 429 LimitExceededException.
    #[arg(long, env = "SOCKETLESS_GATEWAY_MAX_BUFFERED_BODY_BYTES", default_value = defaults::MAX_BUFFERED_BODY_BYTES)]
    pub max_buffered_body_bytes: String,
    /// Bytes of client messages held at once (being received, or delivered to the backend),
    /// past each message's first 4 KiB; a frame that would go past it closes its connection with 1009.
    #[arg(long, env = "SOCKETLESS_GATEWAY_MAX_PENDING_MESSAGE_BYTES", default_value = defaults::MAX_PENDING_MESSAGE_BYTES)]
    pub max_pending_message_bytes: String,
    /// A message must arrive whole within this once its first frame began; slower ones close with 1008.
    #[arg(long, env = "SOCKETLESS_GATEWAY_MESSAGE_TIMEOUT", default_value = defaults::MESSAGE_TIMEOUT)]
    pub message_timeout: String,
    /// Bytes of @connections posts queued for clients at once; past it, posts to clients over their
    /// fair share get 429 and such clients are closed with 1013.
    #[arg(long, env = "SOCKETLESS_GATEWAY_MAX_OUTBOUND_BYTES", default_value = defaults::MAX_OUTBOUND_BYTES)]
    pub max_outbound_bytes: String,
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
    /// This replica's ordinal among its peers: a number, or a StatefulSet pod's name ending in
    /// one (`socketless-gateway-2`). Its connection ids carry it.
    #[arg(long, env = "SOCKETLESS_GATEWAY_ORDINAL", default_value = defaults::ORDINAL)]
    pub ordinal: String,
    /// Every replica's base URL, this one's included, in ordinal order (comma-separated in the
    /// variable), for processes outside Kubernetes. An @connections call for a connection
    /// another replica holds is forwarded to it. Excludes --peer-url-template.
    #[arg(long, env = "SOCKETLESS_GATEWAY_PEERS", value_delimiter = ',')]
    pub peers: Vec<String>,
    /// Any replica's base URL, with {ordinal} where its ordinal goes
    /// (http://rel-socketless-gateway-{ordinal}.rel-socketless-gateway-peers.ns.svc:8081): the
    /// owner of a connection is found from its id alone, so scaling changes no setting.
    /// Excludes --peers.
    #[arg(long, env = "SOCKETLESS_GATEWAY_PEER_URL_TEMPLATE")]
    pub peer_url_template: Option<String>,
    /// A peer that does not answer a forwarded call within this long: 503, retryable (one
    /// that does not exist, or refuses the connection, is 410).
    #[arg(long, env = "SOCKETLESS_GATEWAY_PEER_TIMEOUT", default_value = defaults::PEER_TIMEOUT)]
    pub peer_timeout: String,
    /// Accept binary frames (beyond API Gateway): one reaches the backend as its raw bytes with
    /// `x-socketless-frame: binary`, and an answer with that header or `Content-Type:
    /// application/octet-stream`, and an @connections post of that type, go out as binary
    /// frames. Off: as API Gateway, a binary frame closes the connection with 1003.
    #[arg(long, env = "SOCKETLESS_GATEWAY_BINARY_FRAMES", default_value_t = false)]
    pub binary_frames: bool,
    /// A `$connect` REQUEST authorizer of the template, LOGICAL_ID=URL (repeatable;
    /// comma-separated in the variable): the URL receives the authorizer event as a POST body
    /// and answers the Lambda function's result (a Lambda Runtime Interface Emulator's
    /// http://HOST:PORT/2015-03-31/functions/function/invocations works as it is). Every
    /// authorizer of the template needs one.
    #[arg(long = "authorizer", env = "SOCKETLESS_GATEWAY_AUTHORIZERS", value_delimiter = ',')]
    pub authorizers: Vec<String>,
    /// An authorizer that has not answered within this long refuses the handshake with 500.
    #[arg(long, env = "SOCKETLESS_GATEWAY_AUTHORIZER_TIMEOUT", default_value = AUTHORIZER_TIMEOUT)]
    pub authorizer_timeout: String,
    /// The admin port: the live page at / and its JSON (who is connected, send, close). Off
    /// unless given; keep it on 127.0.0.1, or set --admin-token before exposing it.
    #[arg(long, env = "SOCKETLESS_GATEWAY_ADMIN_LISTEN")]
    pub admin_listen: Option<String>,
    /// Bearer token the admin port's JSON requires (Authorization: Bearer TOKEN). Unset: none.
    #[arg(long, env = "SOCKETLESS_GATEWAY_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
}

/// A template parameter not given by `--param` is read from this variable followed by its
/// name, in the template's case (`SOCKETLESS_GATEWAY_PARAM_SharedSecret`).
pub const PARAM_VARIABLE_PREFIX: &str = "SOCKETLESS_GATEWAY_PARAM_";

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
    /// The memory budgets (see budget.rs).
    pub max_pending_message_bytes: usize,
    pub message_timeout: Duration,
    pub max_outbound_bytes: usize,
    pub ordinal: u8,
    /// Where the other replicas are.
    pub peers: PeerUrls,
    pub peer_timeout: Duration,
    /// The `$connect` authorizers' endpoints (`--authorizer`).
    pub authorizer: AuthorizerSettings,
    /// The admin port (`--admin-listen`), off when `None`, and its bearer token.
    pub admin_listen: Option<SocketAddr>,
    pub admin_token: Option<String>,
    /// Binary frames pass both ways (`--binary-frames`).
    pub binary_frames: bool,
}

/// Parses `Key=Value` parameters, recording problems.
fn parse_params(raw: &[String], label: &str, p: &mut Problems) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for item in raw {
        match item.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => {
                out.insert(k.trim().to_string(), v.to_string());
            }
            _ => p.push(format!("{label}: {item:?} is not Key=Value")),
        }
    }
    out
}

/// Adds, for each of the template's parameters that `params` lacks, the value `lookup` finds
/// under [`PARAM_VARIABLE_PREFIX`] and its name. A parameter given by `--param` keeps that value.
fn params_from_variables(text: &str, params: &mut BTreeMap<String, String>, lookup: impl Fn(&str) -> Option<String>) {
    for name in template::parameter_names(text) {
        if params.contains_key(&name) {
            continue;
        }
        if let Some(value) = lookup(&format!("{PARAM_VARIABLE_PREFIX}{name}")) {
            params.insert(name, value);
        }
    }
}

impl GatewayArgs {
    /// Checks every flag and the template, reporting all problems at once.
    pub fn validate(&self) -> Result<GatewayConfig, ConfigError> {
        let mut p = Problems::new();
        let l = Labels::of::<GatewayArgs>();
        let text = match &self.cfn {
            None => Some(EMBEDDED_TEMPLATE.to_string()),
            Some(path) => match std::fs::read_to_string(path) {
                Ok(t) => Some(t),
                Err(e) => {
                    p.push(format!("{label}: cannot read {path:?}: {e}", label = l.get("cfn")));
                    None
                }
            },
        };
        self.validate_with(text, p)
    }

    /// [`GatewayArgs::validate`] with the template's text given.
    fn validate_with(&self, text: Option<String>, mut p: Problems) -> Result<GatewayConfig, ConfigError> {
        let l = Labels::of::<GatewayArgs>();
        let listen = p.addr(l.get("listen"), &self.listen);
        let admin_listen = self
            .admin_listen
            .as_deref()
            .filter(|a| !a.is_empty())
            .and_then(|a| p.addr(l.get("admin_listen"), a));
        let max_connections = p.count(l.get("max_connections"), &self.max_connections, 1_000_000);
        let idle_timeout = p.duration(l.get("idle_timeout"), &self.idle_timeout);
        let max_duration = p.duration(l.get("max_connection_duration"), &self.max_connection_duration);
        let max_message = p.count(l.get("max_message_bytes"), &self.max_message_bytes, 16 * 1024 * 1024);
        let max_frame = p.count(l.get("max_frame_bytes"), &self.max_frame_bytes, 16 * 1024 * 1024);
        if let (Some(m), Some(f)) = (max_message, max_frame) {
            if f > m {
                p.push(format!(
                    "{}: must not exceed {}",
                    l.get("max_frame_bytes"),
                    l.get("max_message_bytes")
                ));
            }
        }
        let integration_timeout = self
            .integration_timeout
            .as_deref()
            .and_then(|t| p.duration(l.get("integration_timeout"), t));
        let most = Duration::from_millis(crate::contract::INTEGRATION_TIMEOUT_MS);
        if integration_timeout.is_some_and(|t| t < Duration::from_millis(50) || t > most) {
            p.push(format!(
                "{}: must be between 50ms and 29s, as in API Gateway",
                l.get("integration_timeout")
            ));
        }
        let outbound_queue = p.count(l.get("outbound_queue"), &self.outbound_queue, 100_000);
        let write_timeout = p.duration(l.get("write_timeout"), &self.write_timeout);
        let shutdown_delay = p.duration(l.get("shutdown_delay"), &self.shutdown_delay);
        let drain_timeout = p.duration(l.get("drain_timeout"), &self.drain_timeout);
        let one_post = format!("{} (one @connections post)", contract::MAX_POST_BYTES);
        let limits = config::http_limits(
            &mut p,
            &l,
            &self.keep_alive_timeout,
            &self.max_header_bytes,
            &self.body_timeout,
            &self.max_buffered_body_bytes,
            Some((contract::MAX_POST_BYTES as u64, &one_post)),
        );
        for (name, d) in [
            ("--idle-timeout", idle_timeout),
            ("--max-connection-duration", max_duration),
            ("--write-timeout", write_timeout),
        ] {
            if d.is_some_and(|d| d.is_zero()) {
                p.push(format!("{name}: must be more than zero"));
            }
        }
        let (pending_bytes, message_timeout, outbound_bytes) = self.memory_budgets(&l, &mut p);
        let mut params = parse_params(&self.params, l.get("params"), &mut p);
        if let Some(t) = &text {
            params_from_variables(t, &mut params, |name| std::env::var(name).ok());
        }
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
                p.push(format!(
                    "{} and {}: set both, non-empty, or neither",
                    l.get("sigv4_access_key_id"),
                    l.get("sigv4_secret_access_key")
                ));
                None
            }
        };
        let ordinal = parse_ordinal(&self.ordinal);
        if ordinal.is_none() {
            p.push(format!(
                "{}: {:?} is not an ordinal (0 to 255, or a pod name ending in one)",
                l.get("ordinal"),
                self.ordinal
            ));
        }
        let peers: Vec<String> = self
            .peers
            .iter()
            .map(|u| u.trim().trim_end_matches('/').to_string())
            .collect();
        for url in &peers {
            if let Some(uri) = p.url(l.get("peers"), url) {
                if uri.scheme_str() != Some("http") || uri.path() != "/" {
                    p.push(format!(
                        "{}: {url:?} must be a base URL like http://host:port",
                        l.get("peers")
                    ));
                }
            }
        }
        if let Some(o) = ordinal.filter(|o| !peers.is_empty() && *o as usize >= peers.len()) {
            p.push(format!(
                "{}: ordinal {o} has no entry in {} ({} peers)",
                l.get("ordinal"),
                l.get("peers"),
                peers.len()
            ));
        }
        let template = self
            .peer_url_template
            .as_deref()
            .map(|t| t.trim().trim_end_matches('/').to_string())
            .filter(|t| !t.is_empty());
        if let Some(t) = &template {
            check_template(t, l.get("peer_url_template"), &mut p);
            if !peers.is_empty() {
                p.push(format!(
                    "{} and {}: give one of them, not both",
                    l.get("peers"),
                    l.get("peer_url_template")
                ));
            }
        }
        let peers = match template {
            Some(t) => PeerUrls::Template(t),
            None if peers.is_empty() => PeerUrls::None,
            None => PeerUrls::List(peers),
        };
        let peer_timeout = p.duration(l.get("peer_timeout"), &self.peer_timeout);
        let authorizer = self.authorizer_settings(&l, &mut p, model.as_ref());
        p.into_result()?;
        let (Some(model), Some(listen), Some((http, body))) = (model, listen, limits) else {
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
            http,
            body,
            verifier,
            max_pending_message_bytes: pending_bytes.unwrap_or(1) as usize,
            message_timeout: message_timeout.unwrap_or_default(),
            max_outbound_bytes: outbound_bytes.unwrap_or(1) as usize,
            ordinal: ordinal.unwrap_or(0),
            peers,
            peer_timeout: peer_timeout.unwrap_or_default(),
            authorizer,
            admin_listen,
            admin_token: self.admin_token.clone().filter(|t| !t.is_empty()),
            binary_frames: self.binary_frames,
        })
    }
}

impl GatewayConfig {
    /// Settings with the flags' defaults for a template text and parameters, listening on an
    /// ephemeral loopback port (used by `dev` and tests; the CLI goes through
    /// [`GatewayArgs::validate`]).
    pub fn from_template(text: &str, params: &BTreeMap<String, String>) -> Result<GatewayConfig, Vec<TemplateError>> {
        Self::from_template_with(text, params, &[])
    }

    /// [`GatewayConfig::from_template`] with more gateway flags (`--idle-timeout=2s`, …).
    pub fn from_template_with(
        text: &str,
        params: &BTreeMap<String, String>,
        extra: &[String],
    ) -> Result<GatewayConfig, Vec<TemplateError>> {
        let mut flags = vec![
            "--listen=127.0.0.1:0".to_string(),
            format!("--region={}", defaults::REGION),
        ];
        flags.extend(params.iter().map(|(k, v)| format!("--param={k}={v}")));
        flags.extend(extra.iter().cloned());
        let args = GatewayArgs::from_flags(flags).map_err(|e| vec![TemplateError(e.to_string())])?;
        args.validate_with(Some(text.to_string()), Problems::new())
            .map_err(|e| e.0.into_iter().map(TemplateError).collect())
    }
}

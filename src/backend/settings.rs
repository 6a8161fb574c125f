//! The backend's settings: `socketless serve`'s flags (each with its variable), their
//! validation (every problem reported at once), and the behaviour settings the listeners read.

use std::net::SocketAddr;
use std::time::Duration;

use super::disconnect::DisconnectSettings;
use super::upstream::UpstreamSettings;
use crate::aws;
use crate::config::{self, ConfigError, Labels, Problems};
use crate::contract;
use crate::defaults;
use crate::http_server::{BodyPolicy, HttpLimits};
use crate::store::{StoreKind, StoreSettings};

/// How replies reach the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyMode {
    /// In the HTTP response; the gateway forwards it when the route has a route response.
    Sync,
    /// Through `@connections` PostToConnection; the HTTP response is empty.
    Async,
}

/// Behaviour settings of the backend.
#[derive(Clone)]
pub struct BackendSettings {
    pub shared_secret: Option<String>,
    pub reply_mode: ReplyMode,
    pub max_body_bytes: usize,
    /// A session item expires this long after its connection opened (DynamoDB TTL).
    pub session_ttl: Duration,
    pub broadcast_concurrency: usize,
    /// Bearer token every `/v1` request on the internal port must carry. Unset: not checked.
    pub internal_token: Option<String>,
    /// Groups one connection may belong to at once; a join beyond it answers 409.
    pub max_groups_per_connection: usize,
    /// Whether publishes use the gateway's batch delivery (`--push-batch`).
    pub push_batch: PushBatch,
    /// Where posts to a replicated socketless gateway go (`--push-route`).
    pub push_route: PushRoute,
    /// Resume by a client-held key: the window and the gap buffer's bounds.
    pub resume: super::resume::ResumeSettings,
}

/// `--push-route`: where a post to a replicated socketless gateway goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushRoute {
    /// To the replica holding the connection, as the endpoint's `info` says where it is;
    /// through the endpoint when that replica does not answer.
    Owner,
    /// Always to the endpoint: a replica that does not hold the connection forwards the post.
    Endpoint,
}

/// `--push-batch`: how fan-out reaches a socketless gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushBatch {
    /// Ask the endpoint's `@socketless/v1/info` once (cached) and batch when it answers.
    Auto,
    /// Require the batch extension: fail start-up (fixed endpoint) or the publish without it.
    On,
    /// One PostToConnection per member.
    Off,
}

impl std::fmt::Debug for BackendSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendSettings")
            .field("shared_secret", &self.shared_secret.as_ref().map(|_| "<redacted>"))
            .field("reply_mode", &self.reply_mode)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("session_ttl", &self.session_ttl)
            .field("broadcast_concurrency", &self.broadcast_concurrency)
            .field("internal_token", &self.internal_token.as_ref().map(|_| "<redacted>"))
            .field("max_groups_per_connection", &self.max_groups_per_connection)
            .field("push_batch", &self.push_batch)
            .field("push_route", &self.push_route)
            .finish()
    }
}

/// Flags of `socketless serve`. Values are validated together in [`ServeArgs::validate`], so one
/// start reports every mistake.
#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    /// Public listener: the integration target of the WebSocket API (/connect, /message, /disconnect).
    #[arg(long, env = "SOCKETLESS_LISTEN", default_value = defaults::SERVE_LISTEN)]
    pub listen: String,
    /// Internal listener: /v1 API, /healthz, /readyz, /metrics. Never expose it through an ingress.
    #[arg(long, env = "SOCKETLESS_INTERNAL_LISTEN", default_value = defaults::SERVE_INTERNAL_LISTEN)]
    pub internal_listen: String,
    /// Session store: `memory` (one process only) or `dynamodb`.
    #[arg(long, env = "SOCKETLESS_STORE", default_value = defaults::STORE)]
    pub store: String,
    /// DynamoDB table holding the sessions.
    #[arg(long, env = "SOCKETLESS_TABLE", default_value = defaults::TABLE)]
    pub table: String,
    /// AWS region; falls back to AWS_REGION / AWS_DEFAULT_REGION. Required for dynamodb and async replies.
    #[arg(long, env = "SOCKETLESS_REGION")]
    pub region: Option<String>,
    /// DynamoDB table holding group memberships. Default: the sessions table's name with `-groups`.
    #[arg(long, env = "SOCKETLESS_GROUPS_TABLE")]
    pub groups_table: Option<String>,
    /// Groups one connection may belong to at once; a join beyond it answers 409.
    #[arg(long, env = "SOCKETLESS_MAX_GROUPS_PER_CONNECTION", default_value = defaults::MAX_GROUPS_PER_CONNECTION)]
    pub max_groups_per_connection: String,
    /// Group and broadcast fan-out through a socketless gateway's batch `deliver`: `auto` (ask the
    /// endpoint once), `on` (require it) or `off` (one PostToConnection per member).
    #[arg(long, env = "SOCKETLESS_PUSH_BATCH", default_value = defaults::PUSH_BATCH)]
    pub push_batch: String,
    /// Posts to a socketless gateway with replicas: `owner` (straight to the replica holding the
    /// connection, as the endpoint's `info` says; through the endpoint when it does not answer)
    /// or `endpoint` (always through the endpoint). Needs `--push-batch auto` or `on`.
    #[arg(long, env = "SOCKETLESS_PUSH_ROUTE", default_value = defaults::PUSH_ROUTE)]
    pub push_route: String,
    /// DynamoDB endpoint override (moto, LocalStack). AWS_ENDPOINT_URL is honoured too.
    #[arg(long, env = "SOCKETLESS_DYNAMODB_ENDPOINT")]
    pub dynamodb_endpoint: Option<String>,
    /// Create the table (with TTL) at start if it is missing. For local use; never the default.
    #[arg(long, env = "SOCKETLESS_CREATE_TABLE", default_value_t = false)]
    pub create_table: bool,
    /// How replies reach the client: `sync` (HTTP response) or `async` (@connections push).
    #[arg(long, env = "SOCKETLESS_REPLY_MODE", default_value = defaults::REPLY_MODE)]
    pub reply_mode: String,
    /// @connections endpoint for every push (custom domains, the local gateway; http allowed).
    /// Default: https://{domain}/{stage} from the request or session.
    #[arg(long, env = "SOCKETLESS_PUSH_ENDPOINT")]
    pub push_endpoint: Option<String>,
    /// Shared secret the gateway must send in x-socketless-secret. Unset: not checked.
    #[arg(long, env = "SOCKETLESS_SHARED_SECRET", hide_env_values = true)]
    pub shared_secret: Option<String>,
    /// Bearer token the internal API requires: every /v1 request needs `Authorization: Bearer
    /// TOKEN` (/healthz, /readyz and /metrics stay open). Unset: the API is unauthenticated.
    #[arg(long, env = "SOCKETLESS_INTERNAL_TOKEN", hide_env_values = true)]
    pub internal_token: Option<String>,
    /// Sessions kept in the per-pod cache of known-live sessions.
    #[arg(long, env = "SOCKETLESS_CACHE_CAPACITY", default_value = defaults::CACHE_CAPACITY)]
    pub cache_capacity: String,
    /// A cached session is written (lastSeenAt, message count) at most once per interval.
    #[arg(long, env = "SOCKETLESS_SYNC_INTERVAL", default_value = defaults::SYNC_INTERVAL)]
    pub sync_interval: String,
    /// Session items expire (DynamoDB TTL) this long after their connection opened.
    #[arg(long, env = "SOCKETLESS_SESSION_TTL", default_value = defaults::SESSION_TTL)]
    pub session_ttl: String,
    /// Largest request body accepted on the public port.
    #[arg(long, env = "SOCKETLESS_MAX_BODY_BYTES", default_value = defaults::MAX_BODY_BYTES)]
    pub max_body_bytes: String,
    /// Idle keep-alive connections stay open this long (and a request head must arrive within
    /// it). Keep it above the idle timeout of the load balancer in front (an ALB's is 60 s).
    #[arg(long, env = "SOCKETLESS_KEEP_ALIVE_TIMEOUT", default_value = defaults::KEEP_ALIVE_TIMEOUT)]
    pub keep_alive_timeout: String,
    /// Request line and headers together at most, in bytes; larger requests get 431.
    #[arg(long, env = "SOCKETLESS_MAX_HEADER_BYTES", default_value = defaults::MAX_HEADER_BYTES)]
    pub max_header_bytes: String,
    /// A request body must arrive whole within this; slower bodies get 408.
    #[arg(long, env = "SOCKETLESS_BODY_TIMEOUT", default_value = defaults::BODY_TIMEOUT)]
    pub body_timeout: String,
    /// Bytes of request bodies held at once across all requests; past it requests get 503.
    #[arg(long, env = "SOCKETLESS_MAX_BUFFERED_BODY_BYTES", default_value = defaults::MAX_BUFFERED_BODY_BYTES)]
    pub max_buffered_body_bytes: String,
    /// After SIGTERM, keep serving (not ready) this long so load balancers deregister the pod.
    #[arg(long, env = "SOCKETLESS_SHUTDOWN_DELAY", default_value = defaults::SHUTDOWN_DELAY)]
    pub shutdown_delay: String,
    /// Then wait at most this long for requests in flight.
    #[arg(long, env = "SOCKETLESS_DRAIN_TIMEOUT", default_value = defaults::DRAIN_TIMEOUT)]
    pub drain_timeout: String,
    /// Bound on one AWS call, retries included; past it the request answers 503.
    #[arg(long, env = "SOCKETLESS_AWS_TIMEOUT", default_value = defaults::AWS_TIMEOUT)]
    pub aws_timeout: String,
    /// Concurrent @connections posts per broadcast.
    #[arg(long, env = "SOCKETLESS_BROADCAST_CONCURRENCY", default_value = defaults::BROADCAST_CONCURRENCY)]
    pub broadcast_concurrency: String,
    /// Your HTTP app, in any language: `serve` calls POST {upstream}/connect, /message and
    /// /disconnect with the x-socketless-* headers, and the app's answers are the replies.
    #[arg(long, env = "SOCKETLESS_UPSTREAM")]
    pub upstream: Option<String>,
    /// Bound on one call to the upstream app, connecting included.
    #[arg(long, env = "SOCKETLESS_UPSTREAM_TIMEOUT", default_value = defaults::UPSTREAM_TIMEOUT)]
    pub upstream_timeout: String,
    /// Calls in flight to the upstream app at most (the connection pool's size).
    #[arg(long, env = "SOCKETLESS_UPSTREAM_CONCURRENCY", default_value = defaults::UPSTREAM_CONCURRENCY)]
    pub upstream_concurrency: String,
    /// Polled on the upstream app until it answers (any status); not ready until then.
    #[arg(long, env = "SOCKETLESS_UPSTREAM_HEALTH_PATH", default_value = defaults::UPSTREAM_HEALTH_PATH)]
    pub upstream_health_path: String,
    /// A `/disconnect` waits this long before the handler or the app is called (0s: at once).
    /// The session is marked at once and the gateway answered; a resumed session would cancel it.
    #[arg(long, env = "SOCKETLESS_DISCONNECT_GRACE", default_value = defaults::DISCONNECT_GRACE)]
    pub disconnect_grace: String,
    /// A handler or app that fails on `/disconnect` is retried with backoff this long, then the
    /// disconnect is counted (socketless_disconnects_total{outcome="abandoned"}) and logged once.
    #[arg(long, env = "SOCKETLESS_DISCONNECT_DEADLINE", default_value = defaults::DISCONNECT_DEADLINE)]
    pub disconnect_deadline: String,
    /// A claim on a session's `/disconnect` holds this long; a `serve` killed mid-call loses its
    /// claim after it, and a sweep (on any pod) retries the disconnect.
    #[arg(long, env = "SOCKETLESS_DISCONNECT_LEASE", default_value = defaults::DISCONNECT_LEASE)]
    pub disconnect_lease: String,
    /// How often the sweep looks for sessions whose connection is gone without a `$disconnect`
    /// (GetConnection answers 410) or whose claim ran out (0s: no sweep).
    #[arg(long, env = "SOCKETLESS_SWEEP_INTERVAL", default_value = defaults::SWEEP_INTERVAL)]
    pub sweep_interval: String,
    /// GetConnection calls per second at most during a sweep, per process.
    #[arg(long, env = "SOCKETLESS_SWEEP_RATE", default_value = defaults::SWEEP_RATE)]
    pub sweep_rate: String,
    /// The sweep leaves sessions created (or synced) less than this long ago for the next one:
    /// their handshake may still be under way, which GetConnection calls gone.
    #[arg(long, env = "SOCKETLESS_SWEEP_MIN_AGE", default_value = defaults::SWEEP_MIN_AGE)]
    pub sweep_min_age: String,
    /// A client that reconnects with the same `?resume=<key>` this long after its connection went
    /// resumes the same session (attributes, groups, buffered messages); its `/disconnect` waits
    /// this long instead of --disconnect-grace. 0s turns resume off (the key is ignored).
    #[arg(long, env = "SOCKETLESS_RESUME_WINDOW", default_value = defaults::RESUME_WINDOW)]
    pub resume_window: String,
    /// Messages kept for a resumable session while it has no connection, at most; past it a
    /// push is dropped and the resume says x-socketless-recovered: false.
    #[arg(long, env = "SOCKETLESS_RESUME_BUFFER_MESSAGES", default_value = defaults::RESUME_BUFFER_MESSAGES)]
    pub resume_buffer_messages: String,
    /// Bytes of messages kept for a resumable session while it has no connection, at most
    /// (327680 at most: the buffer is one DynamoDB item).
    #[arg(long, env = "SOCKETLESS_RESUME_BUFFER_BYTES", default_value = defaults::RESUME_BUFFER_BYTES)]
    pub resume_buffer_bytes: String,
    /// Run the conformance backend (for `socketless conformance`) instead of the handler.
    #[arg(long, env = "SOCKETLESS_CONFORMANCE", default_value_t = false)]
    pub conformance: bool,
}

/// Validated settings of `socketless serve`.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    pub internal_listen: SocketAddr,
    pub store: StoreSettings,
    pub region: String,
    pub push_endpoint: Option<String>,
    pub cache_capacity: usize,
    pub sync_interval: Duration,
    pub shutdown_delay: Duration,
    pub drain_timeout: Duration,
    pub aws_timeout: Duration,
    pub http: HttpLimits,
    pub body: BodyPolicy,
    pub backend: BackendSettings,
    /// The conformance backend instead of the handler.
    pub conformance: bool,
    /// The team's own app as the handler.
    pub upstream: Option<UpstreamSettings>,
    /// `/disconnect` at least once: grace, retries, leases and the sweep.
    pub disconnect: DisconnectSettings,
}

impl ServeArgs {
    /// Checks every setting and reports all problems at once.
    pub fn validate(&self) -> Result<ServeConfig, ConfigError> {
        let mut p = Problems::new();
        let l = Labels::of::<ServeArgs>();
        let listen = p.addr(l.get("listen"), &self.listen);
        let internal_listen = p.addr(l.get("internal_listen"), &self.internal_listen);
        if let (Some(a), Some(b)) = (listen, internal_listen) {
            if a == b && a.port() != 0 {
                p.push(format!(
                    "{}: must differ from {} (both are {a})",
                    l.get("internal_listen"),
                    l.get("listen")
                ));
            }
        }
        let store = p
            .one_of(l.get("store"), &self.store, StoreKind::NAMES)
            .and_then(StoreKind::from_name);
        let reply_mode = match p.one_of(l.get("reply_mode"), &self.reply_mode, &["sync", "async"]) {
            Some("async") => Some(ReplyMode::Async),
            Some(_) => Some(ReplyMode::Sync),
            None => None,
        };
        let table = self.table.trim().to_string();
        let table_ok = |t: &str| {
            (3..=255).contains(&t.len()) && t.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
        };
        if !table_ok(&table) {
            p.push(format!(
                "{label}: {table:?} is not a DynamoDB table name (3-255 of a-z A-Z 0-9 _ - .)",
                label = l.get("table")
            ));
        }
        let groups_table = self
            .groups_table
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map_or_else(|| crate::store::groups::default_table(&table), str::to_owned);
        if !table_ok(&groups_table) {
            p.push(format!(
                "{label}: {groups_table:?} is not a DynamoDB table name (3-255 of a-z A-Z 0-9 _ - .)",
                label = l.get("groups_table")
            ));
        }
        let max_groups = p.count(
            l.get("max_groups_per_connection"),
            &self.max_groups_per_connection,
            1000,
        );
        let push_batch = match p.one_of(l.get("push_batch"), &self.push_batch, &["auto", "on", "off"]) {
            Some("on") => PushBatch::On,
            Some("off") => PushBatch::Off,
            _ => PushBatch::Auto,
        };
        let push_route = match p.one_of(l.get("push_route"), &self.push_route, &["owner", "endpoint"]) {
            Some("endpoint") => PushRoute::Endpoint,
            _ => PushRoute::Owner,
        };
        let region = self
            .region
            .clone()
            .filter(|r| !r.trim().is_empty())
            .or_else(aws::region_from_env);
        let needs_region = store.is_some_and(StoreKind::uses_aws) || reply_mode == Some(ReplyMode::Async);
        if needs_region && region.is_none() {
            p.push(format!(
                "{}: required with --store dynamodb or --reply-mode async (or set AWS_REGION)",
                l.get("region")
            ));
        }
        if let Some(e) = &self.dynamodb_endpoint {
            p.url(l.get("dynamodb_endpoint"), e);
        }
        if let Some(e) = &self.push_endpoint {
            p.url(l.get("push_endpoint"), e);
        }
        if self.create_table && store.is_some_and(|s| !s.has_table()) {
            p.push(format!(
                "{}: only makes sense with --store dynamodb",
                l.get("create_table")
            ));
        }
        if let Some(s) = &self.shared_secret {
            if let Err(why) = contract::check_shared_secret(s) {
                p.push(format!("{label}: {why}", label = l.get("shared_secret")));
            }
        }
        if let Some(t) = &self.internal_token {
            if let Err(why) = contract::check_shared_secret(t) {
                p.push(format!("{label}: {why}", label = l.get("internal_token")));
            }
        }
        let cache_capacity = p.count(l.get("cache_capacity"), &self.cache_capacity, 10_000_000);
        let sync_interval = p.duration(l.get("sync_interval"), &self.sync_interval);
        let session_ttl = p.duration(l.get("session_ttl"), &self.session_ttl);
        if let Some(ttl) = session_ttl {
            if ttl.as_secs() <= contract::MAX_CONNECTION_SECS {
                p.push(format!(
                    "{label}: must exceed the gateway's {} s connection limit, or live sessions expire",
                    contract::MAX_CONNECTION_SECS,
                    label = l.get("session_ttl")
                ));
            }
        }
        let max_body = p.count(l.get("max_body_bytes"), &self.max_body_bytes, 16 * 1024 * 1024);
        let shutdown_delay = p.duration(l.get("shutdown_delay"), &self.shutdown_delay);
        let drain_timeout = p.duration(l.get("drain_timeout"), &self.drain_timeout);
        let aws_timeout = p.duration(l.get("aws_timeout"), &self.aws_timeout);
        let limits = config::http_limits(
            &mut p,
            &l,
            &self.keep_alive_timeout,
            &self.max_header_bytes,
            &self.body_timeout,
            &self.max_buffered_body_bytes,
            max_body.map(|body| (body, l.get("max_body_bytes"))),
        );
        if aws_timeout.is_some_and(|t| t < defaults::AWS_MIN_TIMEOUT) {
            p.push(format!("{}: must be at least 100ms", l.get("aws_timeout")));
        }
        let concurrency = p.count(l.get("broadcast_concurrency"), &self.broadcast_concurrency, 1024);
        let upstream_timeout = p.duration(l.get("upstream_timeout"), &self.upstream_timeout);
        let upstream_concurrency = p.count(l.get("upstream_concurrency"), &self.upstream_concurrency, 10_000);
        let upstream_base = self.upstream.as_deref().and_then(|u| {
            let uri = p.url(l.get("upstream"), u)?;
            if uri.path() != "/" || uri.query().is_some() {
                p.push(format!(
                    "{}: {u:?} must be a base URL like http://127.0.0.1:3000",
                    l.get("upstream")
                ));
            }
            Some(u.trim().trim_end_matches('/').to_string())
        });
        if !self.upstream_health_path.starts_with('/') {
            p.push(format!("{}: must start with /", l.get("upstream_health_path")));
        }
        if self.upstream.is_some() && self.conformance {
            p.push(format!(
                "{} and {}: choose one handler",
                l.get("upstream"),
                l.get("conformance")
            ));
        }
        let disconnect_grace = p.duration(l.get("disconnect_grace"), &self.disconnect_grace);
        let disconnect_deadline = p.duration(l.get("disconnect_deadline"), &self.disconnect_deadline);
        let disconnect_lease = p.duration(l.get("disconnect_lease"), &self.disconnect_lease);
        if disconnect_lease.is_some_and(|d| d < std::time::Duration::from_secs(1)) {
            p.push(format!("{}: must be at least 1s", l.get("disconnect_lease")));
        }
        let sweep_interval = p.duration(l.get("sweep_interval"), &self.sweep_interval);
        let sweep_rate = p.count(l.get("sweep_rate"), &self.sweep_rate, 10_000);
        let sweep_min_age = p.duration(l.get("sweep_min_age"), &self.sweep_min_age);
        let resume_window = p.duration(l.get("resume_window"), &self.resume_window);
        let resume_messages = p.count(l.get("resume_buffer_messages"), &self.resume_buffer_messages, 100_000);
        let resume_bytes = p.count(
            l.get("resume_buffer_bytes"),
            &self.resume_buffer_bytes,
            defaults::RESUME_BUFFER_BYTES_MAX,
        );
        p.into_result()?;
        let (Some(listen), Some(internal_listen), Some((http, body))) = (listen, internal_listen, limits) else {
            return Err(ConfigError(vec!["internal: validated settings missing".into()]));
        };
        let upstream = upstream_base.map(|base| UpstreamSettings {
            base,
            timeout: upstream_timeout.unwrap_or_default(),
            concurrency: upstream_concurrency.unwrap_or(1) as usize,
            health_path: self.upstream_health_path.clone(),
        });
        // Every value was checked above; the fallbacks below are never used.
        Ok(ServeConfig {
            listen,
            internal_listen,
            store: StoreSettings {
                kind: store.unwrap_or(StoreKind::Memory),
                table,
                endpoint: self.dynamodb_endpoint.clone(),
                create_table: self.create_table,
                groups_table,
            },
            region: region.unwrap_or_else(|| defaults::REGION.to_string()),
            push_endpoint: self.push_endpoint.clone(),
            cache_capacity: cache_capacity.unwrap_or(1) as usize,
            sync_interval: sync_interval.unwrap_or_default(),
            shutdown_delay: shutdown_delay.unwrap_or_default(),
            drain_timeout: drain_timeout.unwrap_or_default(),
            aws_timeout: aws_timeout.unwrap_or_default(),
            http,
            body,
            backend: BackendSettings {
                shared_secret: self.shared_secret.clone(),
                reply_mode: reply_mode.unwrap_or(ReplyMode::Sync),
                max_body_bytes: max_body.unwrap_or(1) as usize,
                session_ttl: session_ttl.unwrap_or_default(),
                broadcast_concurrency: concurrency.unwrap_or(1) as usize,
                internal_token: self.internal_token.clone(),
                max_groups_per_connection: max_groups.unwrap_or(1) as usize,
                push_batch,
                push_route,
                resume: super::resume::ResumeSettings {
                    window: resume_window.unwrap_or_default(),
                    max_messages: resume_messages.unwrap_or(1) as usize,
                    max_bytes: resume_bytes.unwrap_or(1) as usize,
                },
            },
            conformance: self.conformance,
            upstream,
            disconnect: DisconnectSettings {
                grace: disconnect_grace.unwrap_or_default(),
                deadline: disconnect_deadline.unwrap_or_default(),
                lease: disconnect_lease.unwrap_or_default(),
                sweep_interval: sweep_interval.unwrap_or_default(),
                sweep_rate: sweep_rate.unwrap_or(1) as u32,
                sweep_min_age: sweep_min_age.unwrap_or_default(),
                resume_window: resume_window.unwrap_or_default(),
            },
        })
    }
}

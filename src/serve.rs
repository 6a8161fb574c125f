//! `socketless serve`: settings, start-up and the run loop around [`crate::backend::Backend`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::aws::{self, AwsSettings};
use crate::backend::{Backend, BackendSettings, ReplyMode};
use crate::cache::SessionCache;
use crate::config::{ConfigError, Problems};
use crate::contract;
use crate::handler::MessageHandler;
use crate::lifecycle::Lifecycle;
use crate::metrics::BackendMetrics;
use crate::push::Pusher;
use crate::server::{self, BodyPolicy, Drain, HttpLimits};
use crate::store::{DynamoStore, DynamoStoreConfig, MemoryStore, SessionStore, StoreError};

/// Flags of `socketless serve`. Values are validated together in [`ServeArgs::validate`], so one
/// start reports every mistake.
#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    /// Public listener: the integration target of the WebSocket API (/connect, /message, /disconnect).
    #[arg(long, env = "SOCKETLESS_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: String,
    /// Internal listener: /v1 API, /healthz, /readyz, /metrics. Never expose it through an ingress.
    #[arg(long, env = "SOCKETLESS_INTERNAL_LISTEN", default_value = "0.0.0.0:9090")]
    pub internal_listen: String,
    /// Session store: `memory` (one process only) or `dynamodb`.
    #[arg(long, env = "SOCKETLESS_STORE", default_value = "memory")]
    pub store: String,
    /// DynamoDB table holding the sessions.
    #[arg(long, env = "SOCKETLESS_TABLE", default_value = "socketless-sessions")]
    pub table: String,
    /// AWS region; falls back to AWS_REGION / AWS_DEFAULT_REGION. Required for dynamodb and async replies.
    #[arg(long, env = "SOCKETLESS_REGION")]
    pub region: Option<String>,
    /// DynamoDB endpoint override (moto, LocalStack). AWS_ENDPOINT_URL is honoured too.
    #[arg(long, env = "SOCKETLESS_DYNAMODB_ENDPOINT")]
    pub dynamodb_endpoint: Option<String>,
    /// Create the table (with TTL) at start if it is missing. For local use; never the default.
    #[arg(long, env = "SOCKETLESS_CREATE_TABLE", default_value_t = false)]
    pub create_table: bool,
    /// How replies reach the client: `sync` (HTTP response) or `async` (@connections push).
    #[arg(long, env = "SOCKETLESS_REPLY_MODE", default_value = "sync")]
    pub reply_mode: String,
    /// @connections endpoint for every push (custom domains, the local gateway; http allowed).
    /// Default: https://{domain}/{stage} from the request or session.
    #[arg(long, env = "SOCKETLESS_PUSH_ENDPOINT")]
    pub push_endpoint: Option<String>,
    /// Shared secret the gateway must send in x-socketless-secret. Unset: not checked.
    #[arg(long, env = "SOCKETLESS_SHARED_SECRET", hide_env_values = true)]
    pub shared_secret: Option<String>,
    /// Sessions kept in the per-pod cache of known-live sessions.
    #[arg(long, env = "SOCKETLESS_CACHE_CAPACITY", default_value = "100000")]
    pub cache_capacity: String,
    /// A cached session is written (lastSeenAt, message count) at most once per interval.
    #[arg(long, env = "SOCKETLESS_SYNC_INTERVAL", default_value = "60s")]
    pub sync_interval: String,
    /// Session items expire (DynamoDB TTL) this long after their connection opened.
    #[arg(long, env = "SOCKETLESS_SESSION_TTL", default_value = "2h15m")]
    pub session_ttl: String,
    /// Largest request body accepted on the public port.
    #[arg(long, env = "SOCKETLESS_MAX_BODY_BYTES", default_value = "131072")]
    pub max_body_bytes: String,
    /// Idle keep-alive connections stay open this long (and a request head must arrive within
    /// it). Keep it above the idle timeout of the load balancer in front (an ALB's is 60 s).
    #[arg(long, env = "SOCKETLESS_KEEP_ALIVE_TIMEOUT", default_value = "75s")]
    pub keep_alive_timeout: String,
    /// Request line and headers together at most, in bytes; larger requests get 431.
    #[arg(long, env = "SOCKETLESS_MAX_HEADER_BYTES", default_value = "10240")]
    pub max_header_bytes: String,
    /// A request body must arrive whole within this; slower bodies get 408.
    #[arg(long, env = "SOCKETLESS_BODY_TIMEOUT", default_value = "10s")]
    pub body_timeout: String,
    /// Bytes of request bodies held at once across all requests; past it requests get 503.
    #[arg(long, env = "SOCKETLESS_MAX_BUFFERED_BODY_BYTES", default_value = "67108864")]
    pub max_buffered_body_bytes: String,
    /// After SIGTERM, keep serving (not ready) this long so load balancers deregister the pod.
    #[arg(long, env = "SOCKETLESS_SHUTDOWN_DELAY", default_value = "5s")]
    pub shutdown_delay: String,
    /// Then wait at most this long for requests in flight.
    #[arg(long, env = "SOCKETLESS_DRAIN_TIMEOUT", default_value = "20s")]
    pub drain_timeout: String,
    /// Bound on one AWS call, retries included; past it the request answers 503.
    #[arg(long, env = "SOCKETLESS_AWS_TIMEOUT", default_value = "3s")]
    pub aws_timeout: String,
    /// Concurrent @connections posts per broadcast.
    #[arg(long, env = "SOCKETLESS_BROADCAST_CONCURRENCY", default_value = "32")]
    pub broadcast_concurrency: String,
    /// Run the conformance backend (for `socketless conformance`) instead of the handler.
    #[arg(long, env = "SOCKETLESS_CONFORMANCE", default_value_t = false)]
    pub conformance: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    Memory,
    DynamoDb,
}

/// Validated settings of `socketless serve`.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    pub internal_listen: SocketAddr,
    pub store: StoreKind,
    pub table: String,
    pub region: String,
    pub dynamodb_endpoint: Option<String>,
    pub create_table: bool,
    pub push_endpoint: Option<String>,
    pub cache_capacity: usize,
    pub sync_interval: Duration,
    pub shutdown_delay: Duration,
    pub drain_timeout: Duration,
    pub aws_timeout: Duration,
    pub http: HttpLimits,
    pub body: BodyPolicy,
    pub backend: BackendSettings,
}

/// Region used for SigV4 when nothing else names one and no AWS service needs the real one.
const FALLBACK_REGION: &str = "us-east-1";

/// `socketless serve`'s flags on their own, to build [`ServeArgs`] from words.
#[derive(clap::Parser, Debug)]
#[command(name = "serve", no_binary_name = true)]
struct ServeFlags {
    #[command(flatten)]
    args: ServeArgs,
}

impl ServeArgs {
    /// Settings from flags, as the command line gives them (for `dev` and tests, which set a
    /// few and take every other default from the one place clap reads it).
    pub fn from_flags<I, T>(flags: I) -> Result<ServeArgs, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        use clap::Parser;
        ServeFlags::try_parse_from(flags).map(|f| f.args)
    }

    /// Checks every setting and reports all problems at once.
    pub fn validate(&self) -> Result<ServeConfig, ConfigError> {
        let mut p = Problems::new();
        let listen = p.addr("--listen (SOCKETLESS_LISTEN)", &self.listen);
        let internal_listen = p.addr("--internal-listen (SOCKETLESS_INTERNAL_LISTEN)", &self.internal_listen);
        if let (Some(a), Some(b)) = (listen, internal_listen) {
            if a == b && a.port() != 0 {
                p.push(format!("--internal-listen: must differ from --listen (both are {a})"));
            }
        }
        let store = match p.one_of("--store (SOCKETLESS_STORE)", &self.store, &["memory", "dynamodb"]) {
            Some("dynamodb") => Some(StoreKind::DynamoDb),
            Some(_) => Some(StoreKind::Memory),
            None => None,
        };
        let reply_mode = match p.one_of(
            "--reply-mode (SOCKETLESS_REPLY_MODE)",
            &self.reply_mode,
            &["sync", "async"],
        ) {
            Some("async") => Some(ReplyMode::Async),
            Some(_) => Some(ReplyMode::Sync),
            None => None,
        };
        let table = self.table.trim().to_string();
        let table_ok =
            (3..=255).contains(&table.len()) && table.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b));
        if !table_ok {
            p.push(format!(
                "--table (SOCKETLESS_TABLE): {table:?} is not a DynamoDB table name (3-255 of a-z A-Z 0-9 _ - .)"
            ));
        }
        let region = self
            .region
            .clone()
            .filter(|r| !r.trim().is_empty())
            .or_else(aws::region_from_env);
        let needs_region = store == Some(StoreKind::DynamoDb) || reply_mode == Some(ReplyMode::Async);
        if needs_region && region.is_none() {
            p.push("--region (SOCKETLESS_REGION): required with --store dynamodb or --reply-mode async (or set AWS_REGION)");
        }
        if let Some(e) = &self.dynamodb_endpoint {
            p.url("--dynamodb-endpoint (SOCKETLESS_DYNAMODB_ENDPOINT)", e);
        }
        if let Some(e) = &self.push_endpoint {
            p.url("--push-endpoint (SOCKETLESS_PUSH_ENDPOINT)", e);
        }
        if self.create_table && store == Some(StoreKind::Memory) {
            p.push("--create-table (SOCKETLESS_CREATE_TABLE): only makes sense with --store dynamodb");
        }
        if let Some(s) = &self.shared_secret {
            if let Err(why) = contract::check_shared_secret(s) {
                p.push(format!("--shared-secret (SOCKETLESS_SHARED_SECRET): {why}"));
            }
        }
        let cache_capacity = p.count(
            "--cache-capacity (SOCKETLESS_CACHE_CAPACITY)",
            &self.cache_capacity,
            10_000_000,
        );
        let sync_interval = p.duration("--sync-interval (SOCKETLESS_SYNC_INTERVAL)", &self.sync_interval);
        let session_ttl = p.duration("--session-ttl (SOCKETLESS_SESSION_TTL)", &self.session_ttl);
        if let Some(ttl) = session_ttl {
            if ttl.as_secs() <= contract::MAX_CONNECTION_SECS {
                p.push(format!(
                    "--session-ttl (SOCKETLESS_SESSION_TTL): must exceed the gateway's {} s connection limit, or live sessions expire",
                    contract::MAX_CONNECTION_SECS
                ));
            }
        }
        let max_body = p.count(
            "--max-body-bytes (SOCKETLESS_MAX_BODY_BYTES)",
            &self.max_body_bytes,
            16 * 1024 * 1024,
        );
        let shutdown_delay = p.duration("--shutdown-delay (SOCKETLESS_SHUTDOWN_DELAY)", &self.shutdown_delay);
        let drain_timeout = p.duration("--drain-timeout (SOCKETLESS_DRAIN_TIMEOUT)", &self.drain_timeout);
        let aws_timeout = p.duration("--aws-timeout (SOCKETLESS_AWS_TIMEOUT)", &self.aws_timeout);
        let keep_alive = p.duration(
            "--keep-alive-timeout (SOCKETLESS_KEEP_ALIVE_TIMEOUT)",
            &self.keep_alive_timeout,
        );
        let max_header = p.count(
            "--max-header-bytes (SOCKETLESS_MAX_HEADER_BYTES)",
            &self.max_header_bytes,
            1024 * 1024,
        );
        if max_header.is_some_and(|m| m < 1024) {
            p.push("--max-header-bytes (SOCKETLESS_MAX_HEADER_BYTES): must be at least 1024");
        }
        let body_timeout = p.duration("--body-timeout (SOCKETLESS_BODY_TIMEOUT)", &self.body_timeout);
        let body_budget = p.count(
            "--max-buffered-body-bytes (SOCKETLESS_MAX_BUFFERED_BODY_BYTES)",
            &self.max_buffered_body_bytes,
            u32::MAX as u64,
        );
        if let (Some(budget), Some(body)) = (body_budget, max_body) {
            if budget < body {
                p.push("--max-buffered-body-bytes: must be at least --max-body-bytes");
            }
        }
        for (name, d) in [("--keep-alive-timeout", keep_alive), ("--body-timeout", body_timeout)] {
            if d.is_some_and(|d| d.is_zero()) {
                p.push(format!("{name}: must be more than zero"));
            }
        }
        if aws_timeout.is_some_and(|t| t < Duration::from_millis(100)) {
            p.push("--aws-timeout (SOCKETLESS_AWS_TIMEOUT): must be at least 100ms");
        }
        let concurrency = p.count(
            "--broadcast-concurrency (SOCKETLESS_BROADCAST_CONCURRENCY)",
            &self.broadcast_concurrency,
            1024,
        );
        p.into_result()?;
        // Every value was checked above; the fallbacks below are never used.
        Ok(ServeConfig {
            listen: listen.unwrap_or_else(|| ([0, 0, 0, 0], 8080).into()),
            internal_listen: internal_listen.unwrap_or_else(|| ([0, 0, 0, 0], 9090).into()),
            store: store.unwrap_or(StoreKind::Memory),
            table,
            region: region.unwrap_or_else(|| FALLBACK_REGION.to_string()),
            dynamodb_endpoint: self.dynamodb_endpoint.clone(),
            create_table: self.create_table,
            push_endpoint: self.push_endpoint.clone(),
            cache_capacity: cache_capacity.unwrap_or(1) as usize,
            sync_interval: sync_interval.unwrap_or_default(),
            shutdown_delay: shutdown_delay.unwrap_or_default(),
            drain_timeout: drain_timeout.unwrap_or_default(),
            aws_timeout: aws_timeout.unwrap_or_default(),
            http: HttpLimits {
                keep_alive: keep_alive.unwrap_or_default(),
                max_header_bytes: max_header.unwrap_or(1) as usize,
            },
            body: BodyPolicy::new(body_timeout.unwrap_or_default(), body_budget.unwrap_or(1) as usize),
            backend: BackendSettings {
                shared_secret: self.shared_secret.clone(),
                reply_mode: reply_mode.unwrap_or(ReplyMode::Sync),
                max_body_bytes: max_body.unwrap_or(1) as usize,
                session_ttl: session_ttl.unwrap_or_default(),
                broadcast_concurrency: concurrency.unwrap_or(1) as usize,
            },
        })
    }
}

/// Why `serve` could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    #[error("cannot create the session table: {0}")]
    CreateTable(StoreError),
}

/// A backend ready to serve: listeners bound, store connected.
pub struct Prepared {
    pub backend: Arc<Backend>,
    pub public: TcpListener,
    pub internal: TcpListener,
    pub lifecycle: Lifecycle,
    pub http: HttpLimits,
    pub drain_timeout: Duration,
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })
}

/// Builds the backend from validated settings: store, cache, pusher, metrics, listeners. AWS
/// credentials come from the default chain.
pub async fn prepare(
    config: ServeConfig,
    handler: Arc<dyn MessageHandler>,
    lifecycle: Lifecycle,
) -> Result<Prepared, ServeError> {
    let sdk = aws::load(&AwsSettings {
        region: config.region.clone(),
        timeout: config.aws_timeout,
    })
    .await;
    prepare_with_sdk(config, handler, lifecycle, sdk).await
}

/// [`prepare`] with a given AWS SDK configuration (static credentials for `dev` and tests).
pub async fn prepare_with_sdk(
    config: ServeConfig,
    handler: Arc<dyn MessageHandler>,
    lifecycle: Lifecycle,
    sdk: aws_config::SdkConfig,
) -> Result<Prepared, ServeError> {
    let mut registry = Registry::default();
    let metrics = BackendMetrics::register(
        &mut registry,
        &[
            contract::PATH_CONNECT,
            contract::PATH_DISCONNECT,
            contract::PATH_MESSAGE,
        ],
    );
    let store: Arc<dyn SessionStore> = match config.store {
        StoreKind::Memory => Arc::new(MemoryStore::new()),
        StoreKind::DynamoDb => {
            let store = DynamoStore::new(
                &sdk,
                DynamoStoreConfig {
                    table: config.table.clone(),
                    endpoint: config.dynamodb_endpoint.clone(),
                },
                metrics.clone(),
            );
            if config.create_table {
                store.create_table().await.map_err(ServeError::CreateTable)?;
                tracing::info!(table = %config.table, "session table ready");
            }
            Arc::new(store)
        }
    };
    let public = bind(config.listen).await?;
    let internal = bind(config.internal_listen).await?;
    let pusher = Arc::new(Pusher::new(sdk, config.push_endpoint.clone(), metrics.clone()));
    let backend = Arc::new(Backend {
        store,
        cache: SessionCache::new(config.cache_capacity, config.sync_interval),
        pusher,
        handler,
        metrics,
        registry: Arc::new(registry),
        lifecycle: lifecycle.clone(),
        settings: config.backend.clone(),
        body: config.body.clone(),
    });
    Ok(Prepared {
        backend,
        public,
        internal,
        lifecycle,
        http: config.http,
        drain_timeout: config.drain_timeout,
    })
}

impl Prepared {
    /// Serves both listeners until the lifecycle stops them, drains, and flushes pending counts.
    pub async fn run(self) -> Drain {
        let public_backend = self.backend.clone();
        let internal_backend = self.backend.clone();
        let public = server::serve(
            self.public,
            move |req, peer| public_backend.clone().public(req, peer),
            self.lifecycle.clone(),
            self.http,
            self.drain_timeout,
        );
        let internal = server::serve(
            self.internal,
            move |req, peer| internal_backend.clone().internal(req, peer),
            self.lifecycle.clone(),
            self.http,
            self.drain_timeout,
        );
        let (a, b) = tokio::join!(public, internal);
        self.backend.flush_pending(Duration::from_secs(2)).await;
        Drain::all(&[a, b])
    }
}

/// Runs `socketless serve` until SIGTERM/SIGINT and the graceful shutdown complete.
pub async fn run(config: ServeConfig, handler: Arc<dyn MessageHandler>) -> Result<Drain, ServeError> {
    let lifecycle = Lifecycle::new();
    lifecycle
        .spawn_signal_handler(config.shutdown_delay)
        .map_err(ServeError::Signals)?;
    let (listen, internal, store) = (config.listen, config.internal_listen, config.store);
    let prepared = prepare(config, handler, lifecycle.clone()).await?;
    lifecycle.set_ready();
    tracing::info!(
        public = %prepared.public.local_addr().map(|a| a.to_string()).unwrap_or_else(|_| listen.to_string()),
        internal = %prepared.internal.local_addr().map(|a| a.to_string()).unwrap_or_else(|_| internal.to_string()),
        store = ?store,
        "socketless serve ready"
    );
    let drain = prepared.run().await;
    tracing::info!(?drain, "socketless serve stopped");
    Ok(drain)
}

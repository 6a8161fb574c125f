//! `socketless serve`: start-up and the run loop around [`crate::backend::Backend`]: the store,
//! the pusher and both listeners from validated settings, then serving until shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::aws::{self, AwsSettings};
use crate::backend::{
    Backend, PushBatch, batch::BatchClient, cache::SessionCache, disconnect::Disconnects, push::Pusher, sweeper,
    upstream::Upstream,
};
pub use crate::backend::{ServeArgs, ServeConfig};
use crate::contract;
use crate::handler::MessageHandler;
use crate::http_server::{self, Drain, HttpLimits};
use crate::lifecycle::Lifecycle;
use crate::metrics::BackendMetrics;
use crate::store::{self, StoreError};

/// Why `serve` could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    #[error("cannot create the session table: {0}")]
    CreateTable(StoreError),
    #[error("cannot create the groups table: {0}")]
    CreateGroupsTable(StoreError),
    #[error("--push-batch on: {0}")]
    PushBatch(String),
}

/// A backend ready to serve: listeners bound, store connected.
pub struct Prepared {
    pub backend: Arc<Backend>,
    pub public: TcpListener,
    pub internal: TcpListener,
    pub lifecycle: Lifecycle,
    pub http: HttpLimits,
    pub drain_timeout: Duration,
    /// The upstream app, when it is the handler: readiness waits for it.
    pub upstream: Option<Arc<Upstream>>,
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
    let upstream = config
        .upstream
        .clone()
        .map(|settings| Upstream::new(settings, &mut registry));
    let handler: Arc<dyn MessageHandler> = match &upstream {
        Some(app) => app.clone(),
        None => handler,
    };
    let metrics = BackendMetrics::register(
        &mut registry,
        &[
            contract::PATH_CONNECT,
            contract::PATH_DISCONNECT,
            contract::PATH_MESSAGE,
        ],
    );
    let store = store::open(&config.store, &sdk, metrics.clone())
        .await
        .map_err(ServeError::CreateTable)?;
    let groups = store::groups::open(&config.store, &config.store.groups_table, &sdk, metrics.clone())
        .await
        .map_err(ServeError::CreateGroupsTable)?;
    let batch = BatchClient::new(
        config.backend.push_batch,
        config.backend.push_route,
        sdk.clone(),
        &mut registry,
    );
    // Required and the endpoint fixed: a wrong endpoint is found now, not at the first publish.
    if let (PushBatch::On, Some(endpoint)) = (config.backend.push_batch, &config.push_endpoint) {
        batch
            .check_required(endpoint.trim_end_matches('/'))
            .await
            .map_err(ServeError::PushBatch)?;
    }
    let public = bind(config.listen).await?;
    let internal = bind(config.internal_listen).await?;
    let carry = (config.backend.push_batch != PushBatch::Off).then(|| batch.clone());
    let pusher = Arc::new(Pusher::new(sdk, config.push_endpoint.clone(), metrics.clone(), carry));
    let disconnects = Disconnects::new(
        store.clone(),
        groups.clone(),
        handler.clone(),
        pusher.clone(),
        config.disconnect.clone(),
        &mut registry,
    );
    let resume_metrics = Arc::new(crate::backend::resume::ResumeMetrics::register(&mut registry));
    let backend = Arc::new(Backend {
        store,
        groups,
        batch,
        cache: SessionCache::new(config.cache_capacity, config.sync_interval),
        pusher,
        handler,
        metrics,
        registry: Arc::new(registry),
        lifecycle: lifecycle.clone(),
        settings: config.backend.clone(),
        body: config.body.clone(),
        disconnects,
        resume_metrics,
    });
    Ok(Prepared {
        backend,
        public,
        internal,
        lifecycle,
        http: config.http,
        drain_timeout: config.drain_timeout,
        upstream,
    })
}

impl Prepared {
    /// Marks the backend ready: at once, or in upstream mode once the app has answered (until
    /// then `/readyz` says 503, so no load balancer sends events the app cannot take).
    pub fn set_ready(&self) {
        let lifecycle = self.lifecycle.clone();
        match self.upstream.clone() {
            None => lifecycle.set_ready(),
            Some(app) => {
                tokio::spawn(async move {
                    app.wait_until_answering(&lifecycle).await;
                    lifecycle.set_ready();
                });
            }
        }
    }

    /// Serves both listeners until the lifecycle stops them, drains, and flushes pending counts.
    /// The disconnect sweep runs alongside until shutdown begins.
    pub async fn run(self) -> Drain {
        tokio::spawn(sweeper::run(self.backend.disconnects.clone(), self.lifecycle.clone()));
        let public_backend = self.backend.clone();
        let internal_backend = self.backend.clone();
        let public = http_server::serve(
            self.public,
            move |req, peer| public_backend.clone().public(req, peer),
            self.lifecycle.clone(),
            self.http,
            self.drain_timeout,
        );
        let internal = http_server::serve(
            self.internal,
            move |req, peer| internal_backend.clone().internal(req, peer),
            self.lifecycle.clone(),
            self.http,
            self.drain_timeout,
        );
        let (a, b) = tokio::join!(public, internal);
        self.backend.flush_pending(crate::defaults::FLUSH_TIMEOUT).await;
        Drain::all(&[a, b])
    }
}

/// Runs `socketless serve` until SIGTERM/SIGINT and the graceful shutdown complete.
pub async fn run(config: ServeConfig, handler: Arc<dyn MessageHandler>) -> Result<Drain, ServeError> {
    let lifecycle = Lifecycle::new();
    lifecycle
        .spawn_signal_handler(config.shutdown_delay)
        .map_err(ServeError::Signals)?;
    let (listen, internal, store) = (config.listen, config.internal_listen, config.store.kind);
    if config.backend.internal_token.is_none() {
        tracing::warn!(
            internal = %internal,
            "the internal API (/v1) is unauthenticated: anyone who reaches the internal port can push to, close and list connections; set --internal-token (SOCKETLESS_INTERNAL_TOKEN)"
        );
    }
    let prepared = prepare(config, handler, lifecycle.clone()).await?;
    prepared.set_ready();
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

//! `socketless dev`: the gateway and the backend in one process, with in-memory sessions and the
//! template built into the binary. It prints the ws:// URL to connect to.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::config::{ConfigError, Problems};
use crate::gateway::{EMBEDDED_TEMPLATE, Gateway, GatewayConfig};
use crate::handler::MessageHandler;
use crate::lifecycle::Lifecycle;
use crate::serve::{self, ServeArgs};
use crate::server::Drain;

/// Flags of `socketless dev`.
#[derive(clap::Args, Debug, Clone)]
pub struct DevArgs {
    /// Where clients connect (the gateway).
    #[arg(long, env = "SOCKETLESS_DEV_LISTEN", default_value = "127.0.0.1:8081")]
    pub listen: String,
    /// The backend's internal API (/v1, /metrics); the public port is picked automatically.
    #[arg(long, env = "SOCKETLESS_DEV_INTERNAL_LISTEN", default_value = "127.0.0.1:9090")]
    pub internal_listen: String,
    /// Stage name: clients connect to ws://HOST:PORT/{stage}.
    #[arg(long, env = "SOCKETLESS_DEV_STAGE", default_value = "dev")]
    pub stage: String,
    /// `sync` (reply in the HTTP response) or `async` (reply through @connections).
    #[arg(long, env = "SOCKETLESS_DEV_REPLY_MODE", default_value = "sync")]
    pub reply_mode: String,
    /// Run the conformance backend (for `socketless conformance`) with the template's
    /// conformance mapping and route.
    #[arg(long, env = "SOCKETLESS_DEV_CONFORMANCE", default_value_t = false)]
    pub conformance: bool,
    /// Override every integration's timeout (the gateway's --integration-timeout).
    #[arg(long, env = "SOCKETLESS_DEV_INTEGRATION_TIMEOUT")]
    pub integration_timeout: Option<String>,
    /// Close connections after no message for this long (the gateway's --idle-timeout).
    #[arg(long, env = "SOCKETLESS_DEV_IDLE_TIMEOUT", default_value = "10m")]
    pub idle_timeout: String,
    /// Close every connection after this long (the gateway's --max-connection-duration).
    #[arg(long, env = "SOCKETLESS_DEV_MAX_CONNECTION_DURATION", default_value = "2h")]
    pub max_connection_duration: String,
}

/// Validated `dev` settings.
#[derive(Debug, Clone)]
pub struct DevConfig {
    pub listen: SocketAddr,
    pub serve: ServeArgs,
    pub stage: String,
    pub conformance: bool,
    pub integration_timeout: Option<Duration>,
    pub idle_timeout: Duration,
    pub max_connection_duration: Duration,
}

fn random_secret() -> String {
    let mut bytes = [0u8; 18];
    let _ = getrandom::fill(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl DevArgs {
    pub fn validate(&self) -> Result<DevConfig, ConfigError> {
        let mut p = Problems::new();
        let listen = p.addr("--listen (SOCKETLESS_DEV_LISTEN)", &self.listen);
        p.addr(
            "--internal-listen (SOCKETLESS_DEV_INTERNAL_LISTEN)",
            &self.internal_listen,
        );
        let integration_timeout = self
            .integration_timeout
            .as_ref()
            .and_then(|t| p.duration("--integration-timeout (SOCKETLESS_DEV_INTEGRATION_TIMEOUT)", t));
        if integration_timeout.is_some_and(|t| t < Duration::from_millis(50) || t > Duration::from_secs(29)) {
            p.push("--integration-timeout (SOCKETLESS_DEV_INTEGRATION_TIMEOUT): must be 50ms to 29s");
        }
        let idle_timeout = p.duration("--idle-timeout (SOCKETLESS_DEV_IDLE_TIMEOUT)", &self.idle_timeout);
        let max_duration = p.duration(
            "--max-connection-duration (SOCKETLESS_DEV_MAX_CONNECTION_DURATION)",
            &self.max_connection_duration,
        );
        for (name, d) in [
            ("--idle-timeout", idle_timeout),
            ("--max-connection-duration", max_duration),
        ] {
            if d.is_some_and(|d| d.is_zero()) {
                p.push(format!("{name}: must be more than zero"));
            }
        }
        p.one_of(
            "--reply-mode (SOCKETLESS_DEV_REPLY_MODE)",
            &self.reply_mode,
            &["sync", "async"],
        );
        if self.stage.is_empty()
            || !self
                .stage
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
        {
            p.push(format!(
                "--stage (SOCKETLESS_DEV_STAGE): {:?} must be letters, digits, - or _",
                self.stage
            ));
        }
        p.into_result()?;
        let secret = random_secret();
        let serve = ServeArgs::from_flags([
            "--listen",
            "127.0.0.1:0",
            "--internal-listen",
            &self.internal_listen,
            "--store",
            "memory",
            "--region",
            "us-east-1",
            "--reply-mode",
            &self.reply_mode,
            "--shared-secret",
            &secret,
            "--shutdown-delay",
            "0s",
            "--drain-timeout",
            "5s",
        ])
        .map_err(|e| ConfigError(vec![e.to_string()]))?;
        Ok(DevConfig {
            listen: listen.unwrap_or_else(|| ([127, 0, 0, 1], 8081).into()),
            serve,
            stage: self.stage.clone(),
            conformance: self.conformance,
            integration_timeout,
            idle_timeout: idle_timeout.unwrap_or_default(),
            max_connection_duration: max_duration.unwrap_or_default(),
        })
    }
}

/// Why `dev` could not start.
#[derive(Debug, thiserror::Error)]
pub enum DevError {
    #[error("cannot listen on {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
    #[error(transparent)]
    Serve(#[from] serve::ServeError),
    #[error("{0}")]
    Config(String),
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
}

/// Local credentials for the backend's @connections pushes to the in-process gateway (which
/// does not check signatures in `dev`).
fn local_sdk() -> aws_config::SdkConfig {
    use aws_credential_types::Credentials;
    use aws_credential_types::provider::SharedCredentialsProvider;
    aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .http_client(crate::aws::http_client())
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
            "socketless-dev",
            "socketless-dev",
            None,
            None,
            "socketless-dev",
        )))
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .operation_timeout(Duration::from_secs(3))
                .build(),
        )
        .build()
}

/// A started `dev`: the URL to connect to, and the future that serves until shutdown.
pub struct Started {
    pub url: String,
    pub internal: SocketAddr,
    pub run: std::pin::Pin<Box<dyn std::future::Future<Output = Drain> + Send>>,
}

/// Binds and wires everything; the caller awaits `run`.
pub async fn start(
    config: DevConfig,
    handler: Arc<dyn MessageHandler>,
    lifecycle: Lifecycle,
) -> Result<Started, DevError> {
    let gw_listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| DevError::Bind(config.listen, e))?;
    let gw_addr = gw_listener.local_addr().map_err(|e| DevError::Bind(config.listen, e))?;
    let mut serve_args = config.serve.clone();
    serve_args.push_endpoint = Some(format!("http://{gw_addr}/{}", config.stage));
    let serve_config = serve_args.validate().map_err(|e| DevError::Config(e.to_string()))?;
    let secret = serve_config.backend.shared_secret.clone().unwrap_or_default();
    let prepared = serve::prepare_with_sdk(serve_config, handler, lifecycle.clone(), local_sdk()).await?;
    let conformance = config.conformance;
    let backend_addr = prepared
        .public
        .local_addr()
        .map_err(|e| DevError::Bind(config.listen, e))?;
    let internal = prepared
        .internal
        .local_addr()
        .map_err(|e| DevError::Bind(config.listen, e))?;

    let mut params = BTreeMap::from([
        ("IntegrationUri".to_string(), format!("http://{backend_addr}")),
        ("StageName".to_string(), config.stage.clone()),
        ("SharedSecret".to_string(), secret),
        ("DisconnectContext".to_string(), "true".to_string()),
    ]);
    if conformance {
        params.insert("ConformanceMapping".to_string(), "true".to_string());
    }
    let mut gw_config = GatewayConfig::from_template(EMBEDDED_TEMPLATE, &params)
        .map_err(|errs| DevError::Config(errs.into_iter().map(|e| e.0).collect::<Vec<_>>().join("; ")))?;
    gw_config.listen = gw_addr;
    gw_config.shutdown_delay = Duration::ZERO;
    gw_config.drain_timeout = Duration::from_secs(5);
    gw_config.integration_timeout = config.integration_timeout.or(gw_config.integration_timeout);
    gw_config.idle_timeout = config.idle_timeout;
    gw_config.max_connection_duration = config.max_connection_duration;
    let mut registry = Registry::default();
    let gateway = Gateway::new(gw_config, &mut registry);
    let url = format!("ws://{gw_addr}/{}", config.stage);
    let lc = lifecycle.clone();
    let run = Box::pin(async move {
        // The conformance backend needs each request's headers (see crate::conformance::backend).
        let backend: std::pin::Pin<Box<dyn std::future::Future<Output = Drain> + Send>> = if conformance {
            Box::pin(crate::conformance::backend::run_prepared(prepared))
        } else {
            Box::pin(prepared.run())
        };
        let (a, b) = tokio::join!(backend, gateway.serve(gw_listener, lc, Arc::new(registry)));
        if a == Drain::Complete && b == Drain::Complete {
            Drain::Complete
        } else {
            Drain::TimedOut
        }
    });
    Ok(Started { url, internal, run })
}

/// Runs `socketless dev` until Ctrl-C.
pub async fn run(config: DevConfig, handler: Arc<dyn MessageHandler>) -> Result<Drain, DevError> {
    let lifecycle = Lifecycle::new();
    lifecycle
        .spawn_signal_handler(Duration::ZERO)
        .map_err(DevError::Signals)?;
    let started = start(config, handler, lifecycle.clone()).await?;
    lifecycle.set_ready();
    // A closed stdout must not stop the servers.
    let mut out = std::io::stdout();
    let _ = writeln!(out, "socketless dev: connect with  wscat -c {}", started.url);
    let _ = writeln!(
        out,
        "socketless dev: internal API, health and metrics on http://{}",
        started.internal
    );
    let _ = out.flush();
    Ok(started.run.await)
}

//! `socketless dev`: the gateway and the backend in one process, with in-memory sessions and the
//! template built into the binary. It prints the ws:// URL to connect to.
//!
//! With `--upstream`, the URL is printed and the gateway's port accepts connections only once
//! the app has answered its health path: until then the port is bound (so it is reserved and
//! its address known) but not listening, and clients are refused at the TCP level instead of
//! getting 502 from a `$connect` the app cannot take. `dev` says every few seconds that it is
//! waiting, and gives up with a non-zero exit after `--upstream-wait`.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry;
use tokio::net::TcpSocket;

use crate::config::{ConfigError, FromFlags, Labels, Problems};
use crate::defaults;
use crate::gateway::{EMBEDDED_TEMPLATE, Gateway, GatewayConfig, template};
use crate::handler::MessageHandler;
use crate::http_server::Drain;
use crate::lifecycle::Lifecycle;
use crate::serve::{self, ServeArgs};
use crate::upstream::Upstream;

/// How often the app's health path is polled while waiting.
const POLL_EVERY: Duration = Duration::from_millis(250);
/// Bound on one poll: an app that accepts and never answers is not up.
const POLL_BOUND: Duration = Duration::from_secs(2);
/// How often `dev` says it is still waiting.
const SAY_EVERY: Duration = Duration::from_secs(5);
/// Pending client connections the gateway's port queues.
const BACKLOG: u32 = 1024;

/// Flags of `socketless dev`.
#[derive(clap::Args, Debug, Clone)]
pub struct DevArgs {
    /// Where clients connect (the gateway).
    #[arg(long, env = "SOCKETLESS_DEV_LISTEN", default_value = defaults::DEV_LISTEN)]
    pub listen: String,
    /// The backend's internal API (/v1, /metrics); the public port is picked automatically.
    #[arg(long, env = "SOCKETLESS_DEV_INTERNAL_LISTEN", default_value = defaults::DEV_INTERNAL_LISTEN)]
    pub internal_listen: String,
    /// Stage name: clients connect to ws://HOST:PORT/{stage}.
    #[arg(long, env = "SOCKETLESS_DEV_STAGE", default_value = defaults::DEV_STAGE)]
    pub stage: String,
    /// `sync` (reply in the HTTP response) or `async` (reply through @connections).
    #[arg(long, env = "SOCKETLESS_DEV_REPLY_MODE", default_value = defaults::REPLY_MODE)]
    pub reply_mode: String,
    /// Your HTTP app as the handler (`serve --upstream`), e.g. http://127.0.0.1:3000.
    #[arg(long, env = "SOCKETLESS_DEV_UPSTREAM")]
    pub upstream: Option<String>,
    /// Polled on the app until it answers (any status); no client is accepted until then.
    #[arg(long, env = "SOCKETLESS_DEV_UPSTREAM_HEALTH_PATH", default_value = defaults::UPSTREAM_HEALTH_PATH)]
    pub upstream_health_path: String,
    /// Give up (exit non-zero) if the app has not answered within this.
    #[arg(long, env = "SOCKETLESS_DEV_UPSTREAM_WAIT", default_value = defaults::DEV_UPSTREAM_WAIT)]
    pub upstream_wait: String,
    /// Bearer token the internal API (/v1) requires, as `serve --internal-token`. Unset: none.
    #[arg(long, env = "SOCKETLESS_INTERNAL_TOKEN", hide_env_values = true)]
    pub internal_token: Option<String>,
    /// Run the conformance backend (for `socketless conformance`) with the template's
    /// conformance mapping and route.
    #[arg(long, env = "SOCKETLESS_DEV_CONFORMANCE", default_value_t = false)]
    pub conformance: bool,
    /// The gateway's --integration-timeout (default: the template's, 29s).
    #[arg(long, env = "SOCKETLESS_DEV_INTEGRATION_TIMEOUT")]
    pub integration_timeout: Option<String>,
    /// The gateway's --idle-timeout (default 10m).
    #[arg(long, env = "SOCKETLESS_DEV_IDLE_TIMEOUT")]
    pub idle_timeout: Option<String>,
    /// The gateway's --max-connection-duration (default 2h).
    #[arg(long, env = "SOCKETLESS_DEV_MAX_CONNECTION_DURATION")]
    pub max_connection_duration: Option<String>,
    /// The gateway's --authorizer LOGICAL_ID=URL (repeatable; comma-separated in the
    /// variable). Given, the built-in template's `$connect` authorizer is turned on (its
    /// AuthorizerFunctionArn parameter is set to a local placeholder) and called at URL.
    #[arg(long = "authorizer", env = "SOCKETLESS_DEV_AUTHORIZERS", value_delimiter = ',')]
    pub authorizers: Vec<String>,
    /// The gateway's --authorizer-timeout (default 10s).
    #[arg(long, env = "SOCKETLESS_DEV_AUTHORIZER_TIMEOUT")]
    pub authorizer_timeout: Option<String>,
    /// The gateway's --binary-frames: binary frames pass both ways (off: 1003, as API Gateway).
    #[arg(long, env = "SOCKETLESS_DEV_BINARY_FRAMES", default_value_t = false)]
    pub binary_frames: bool,
}

/// The template parameter that turns the built-in template's `$connect` authorizer on.
const AUTHORIZER_PARAMETER: &str = "AuthorizerFunctionArn";

/// Validated `dev` settings.
#[derive(Debug, Clone)]
pub struct DevConfig {
    pub listen: SocketAddr,
    pub serve: ServeArgs,
    pub stage: String,
    /// Flags for the gateway beyond the template's parameters.
    pub gateway_flags: Vec<String>,
    pub conformance: bool,
    /// How long to wait for the upstream app before giving up.
    pub upstream_wait: Duration,
    /// Whether `--authorizer` was given: the template's authorizer is turned on.
    pub authorizer: bool,
}

fn random_secret() -> String {
    let mut bytes = [0u8; 18];
    let _ = getrandom::fill(&mut bytes);
    hex::encode(bytes)
}

impl DevArgs {
    pub fn validate(&self) -> Result<DevConfig, ConfigError> {
        let mut p = Problems::new();
        let l = Labels::of::<DevArgs>();
        let listen = p.addr(l.get("listen"), &self.listen);
        p.addr(l.get("internal_listen"), &self.internal_listen);
        p.one_of(l.get("reply_mode"), &self.reply_mode, &["sync", "async"]);
        if !template::is_stage_name(&self.stage) {
            p.push(format!(
                "{label}: {:?} {}",
                self.stage,
                template::STAGE_NAME_RULE,
                label = l.get("stage")
            ));
        }
        let upstream_wait = p.duration(l.get("upstream_wait"), &self.upstream_wait);
        if upstream_wait.is_some_and(|w| w.is_zero()) {
            p.push(format!("{}: must be more than 0s", l.get("upstream_wait")));
        }
        p.into_result()?;
        let Some(listen) = listen else {
            return Err(ConfigError(vec!["internal: validated settings missing".into()]));
        };
        let mut serve_flags = vec![
            "--listen=127.0.0.1:0".to_string(),
            format!("--internal-listen={}", self.internal_listen),
            "--store=memory".to_string(),
            format!("--region={}", defaults::REGION),
            format!("--reply-mode={}", self.reply_mode),
            format!("--shared-secret={}", random_secret()),
            format!("--shutdown-delay={}", defaults::DEV_SHUTDOWN_DELAY),
            format!("--drain-timeout={}", defaults::DEV_DRAIN_TIMEOUT),
        ];
        if let Some(app) = &self.upstream {
            serve_flags.push(format!("--upstream={app}"));
            serve_flags.push(format!("--upstream-health-path={}", self.upstream_health_path));
        }
        if let Some(token) = &self.internal_token {
            serve_flags.push(format!("--internal-token={token}"));
        }
        let serve = ServeArgs::from_flags(serve_flags).map_err(|e| ConfigError(vec![e.to_string()]))?;
        // Checked here, so a bad value is reported with every other problem at start.
        serve.validate()?;
        let mut gateway_flags = vec![
            format!("--shutdown-delay={}", defaults::DEV_SHUTDOWN_DELAY),
            format!("--drain-timeout={}", defaults::DEV_DRAIN_TIMEOUT),
        ];
        for (flag, value) in [
            ("integration-timeout", &self.integration_timeout),
            ("idle-timeout", &self.idle_timeout),
            ("max-connection-duration", &self.max_connection_duration),
            ("authorizer-timeout", &self.authorizer_timeout),
        ] {
            if let Some(v) = value {
                gateway_flags.push(format!("--{flag}={v}"));
            }
        }
        if self.binary_frames {
            gateway_flags.push("--binary-frames".to_string());
        }
        Ok(DevConfig {
            listen,
            serve,
            stage: self.stage.clone(),
            authorizer: !self.authorizers.is_empty(),
            gateway_flags: {
                let authorizers = self.authorizers.iter().filter(|a| !a.trim().is_empty());
                gateway_flags.extend(authorizers.map(|a| format!("--authorizer={a}")));
                gateway_flags
            },
            conformance: self.conformance,
            upstream_wait: upstream_wait.unwrap_or_default(),
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
    #[error(
        "the app at {url} did not answer within {} s; start it (any answer to that URL will do), \
         or wait longer with --upstream-wait",
        waited.as_secs()
    )]
    UpstreamWait { url: String, waited: Duration },
    #[error("stopped while waiting for the app at {0}")]
    Stopped(String),
}

/// A started `dev`: the URL to connect to, and the future that serves until shutdown.
pub struct Started {
    pub url: String,
    pub internal: SocketAddr,
    pub run: std::pin::Pin<Box<dyn std::future::Future<Output = Drain> + Send>>,
}

/// Binds and wires everything, waits for the upstream app if there is one, then listens; the
/// caller awaits `run`. While it waits, the backend's internal port already answers (`/readyz`
/// 503) and a line every few seconds goes to `say`.
pub async fn start(
    config: DevConfig,
    handler: Arc<dyn MessageHandler>,
    lifecycle: Lifecycle,
) -> Result<Started, DevError> {
    start_saying(config, handler, lifecycle, |_| {}).await
}

/// [`start`], with the waiting lines handed to `say`.
pub async fn start_saying(
    config: DevConfig,
    handler: Arc<dyn MessageHandler>,
    lifecycle: Lifecycle,
    say: impl Fn(&str),
) -> Result<Started, DevError> {
    let bind_err = |e| DevError::Bind(config.listen, e);
    // Bound, not listening: the address is reserved and known, and clients are refused until
    // everything behind the gateway can take them.
    let socket = if config.listen.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(bind_err)?;
    socket.set_reuseaddr(true).map_err(bind_err)?;
    socket.bind(config.listen).map_err(bind_err)?;
    let gw_addr = socket.local_addr().map_err(bind_err)?;
    let mut serve_args = config.serve.clone();
    serve_args.push_endpoint = Some(format!("http://{gw_addr}/{}", config.stage));
    let serve_config = serve_args.validate().map_err(|e| DevError::Config(e.to_string()))?;
    let secret = serve_config.backend.shared_secret.clone().unwrap_or_default();
    let prepared = serve::prepare_with_sdk(
        serve_config,
        handler,
        lifecycle.clone(),
        crate::aws::static_config("socketless-dev", "socketless-dev", Duration::from_secs(3)),
    )
    .await?;
    let backend_addr = prepared.public.local_addr().map_err(bind_err)?;
    let internal = prepared.internal.local_addr().map_err(bind_err)?;
    let app = prepared.upstream.clone();
    let backend = tokio::spawn(prepared.run());
    if let Some(app) = app {
        if let Err(e) = wait_for_app(&app, config.upstream_wait, &lifecycle, &say).await {
            // Nothing but health checks reached the backend: no drain to wait for.
            backend.abort();
            return Err(e);
        }
    }

    let mut params = BTreeMap::from([
        ("IntegrationUri".to_string(), format!("http://{backend_addr}")),
        ("StageName".to_string(), config.stage.clone()),
        ("SharedSecret".to_string(), secret),
        ("DisconnectContext".to_string(), "true".to_string()),
    ]);
    if config.conformance {
        params.insert("ConformanceMapping".to_string(), "true".to_string());
    }
    if config.authorizer
        && template::parameter_names(EMBEDDED_TEMPLATE)
            .iter()
            .any(|p| p == AUTHORIZER_PARAMETER)
    {
        // A placeholder: locally the function is reached at the --authorizer URL.
        let arn = format!(
            "arn:aws:lambda:{}:000000000000:function:socketless-dev-authorizer",
            defaults::REGION
        );
        params.insert(AUTHORIZER_PARAMETER.to_string(), arn);
    }
    let mut gw_config = GatewayConfig::from_template_with(EMBEDDED_TEMPLATE, &params, &config.gateway_flags)
        .map_err(|errs| DevError::Config(errs.into_iter().map(|e| e.0).collect::<Vec<_>>().join("; ")))?;
    gw_config.listen = gw_addr;
    let gw_listener = socket.listen(BACKLOG).map_err(bind_err)?;
    // Ready once clients can connect: a script that waits for /readyz can connect next.
    lifecycle.set_ready();
    let mut registry = Registry::default();
    let gateway = Gateway::new(gw_config, &mut registry);
    let url = format!("ws://{gw_addr}/{}", config.stage);
    let lc = lifecycle.clone();
    let run = Box::pin(async move {
        let (a, b) = tokio::join!(backend, gateway.serve(gw_listener, lc, Arc::new(registry)));
        // A backend task that panicked drained nothing.
        Drain::all(&[a.unwrap_or(Drain::TimedOut), b])
    });
    Ok(Started { url, internal, run })
}

/// Polls the app's health path every [`POLL_EVERY`] until it answers, saying so every
/// [`SAY_EVERY`]; fails after `bound`, or if shutdown begins.
async fn wait_for_app(
    app: &Upstream,
    bound: Duration,
    lifecycle: &Lifecycle,
    say: &impl Fn(&str),
) -> Result<(), DevError> {
    let url = app.health_url();
    let started = tokio::time::Instant::now();
    let deadline = started + bound;
    let mut next_say = started;
    loop {
        if lifecycle.is_draining() {
            return Err(DevError::Stopped(url));
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if app.answers(POLL_BOUND.min(left)).await {
            if started.elapsed() >= POLL_EVERY {
                say(&format!("the app at {url} answers"));
            }
            return Ok(());
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Err(DevError::UpstreamWait { url, waited: bound });
        }
        if now >= next_say {
            say(&format!(
                "waiting for the app at {url} (up to {} s more); clients are not accepted until it answers",
                deadline.saturating_duration_since(now).as_secs_f64().ceil()
            ));
            next_say = now + SAY_EVERY;
        }
        tokio::time::sleep(POLL_EVERY.min(deadline.saturating_duration_since(now))).await;
    }
}

/// Runs `socketless dev` until Ctrl-C.
pub async fn run(config: DevConfig, handler: Arc<dyn MessageHandler>) -> Result<Drain, DevError> {
    let lifecycle = Lifecycle::new();
    lifecycle
        .spawn_signal_handler(Duration::ZERO)
        .map_err(DevError::Signals)?;
    let say = |line: &str| {
        // A closed stderr must not stop the wait.
        let mut err = std::io::stderr();
        let _ = writeln!(err, "socketless dev: {line}");
    };
    let started = start_saying(config, handler, lifecycle.clone(), say).await?;
    // A closed stdout must not stop the servers.
    let mut out = std::io::stdout();
    let _ = writeln!(out, "socketless dev: connect with  wscat -c {}", started.url);
    let _ = writeln!(
        out,
        "socketless dev: internal API, health and metrics on http://{}",
        started.internal
    );
    let _ = writeln!(
        out,
        "socketless dev: live page (who is connected, send, close) on http://{}/",
        started.internal
    );
    let _ = out.flush();
    Ok(started.run.await)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::FromFlags;

    #[test]
    fn authorizer_flags_reach_the_gateway() {
        let args = DevArgs::from_flags([
            "--authorizer=ConnectAuthorizer=http://127.0.0.1:9000/2015-03-31/functions/function/invocations",
            "--authorizer-timeout=2s",
        ])
        .expect("flags parse");
        let config = args.validate().expect("valid");
        assert!(config.authorizer);
        assert!(
            config.gateway_flags.contains(
                &"--authorizer=ConnectAuthorizer=http://127.0.0.1:9000/2015-03-31/functions/function/invocations"
                    .to_string()
            )
        );
        assert!(config.gateway_flags.contains(&"--authorizer-timeout=2s".to_string()));
        let none = DevArgs::from_flags(Vec::<String>::new())
            .expect("flags parse")
            .validate()
            .expect("valid");
        assert!(!none.authorizer);
        assert!(!none.gateway_flags.iter().any(|f| f.starts_with("--authorizer")));
    }

    #[test]
    fn binary_frames_reach_the_gateway() {
        let on = DevArgs::from_flags(["--binary-frames"])
            .expect("flags parse")
            .validate()
            .expect("valid");
        assert!(on.gateway_flags.contains(&"--binary-frames".to_string()));
        let params = std::collections::BTreeMap::from([
            ("IntegrationUri".to_string(), "http://127.0.0.1:9".to_string()),
            ("SharedSecret".to_string(), "0123456789abcdef-dev".to_string()),
        ]);
        let gw = GatewayConfig::from_template_with(EMBEDDED_TEMPLATE, &params, &on.gateway_flags).expect("loads");
        assert!(gw.binary_frames);
        let off = DevArgs::from_flags(Vec::<String>::new())
            .expect("flags parse")
            .validate()
            .expect("valid");
        assert!(!off.gateway_flags.iter().any(|f| f == "--binary-frames"));
    }
}

//! The command line: one binary, several verbs. Every flag also reads an environment variable
//! under the `SOCKETLESS_` prefix.

use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use crate::config::{ConfigError, Labels, Problems};
use crate::conformance::{ConformanceArgs, ConformanceConfig};
use crate::defaults;
use crate::dev::{DevArgs, DevConfig};
use crate::gateway::{GatewayArgs, GatewayConfig};
use crate::handler::{Echo, MessageHandler};
use crate::http_server::Drain;
use crate::probe::{ProbeArgs, ProbeConfig};
use crate::serve::{ServeArgs, ServeConfig};
use crate::telemetry::{self, LogFormat};

#[derive(Parser, Debug)]
#[command(
    name = "socketless",
    version,
    about = "Stateless WebSocket backends behind an API-Gateway-compatible gateway"
)]
pub struct Cli {
    /// Log format: `json`, `text`, or `auto` (json for serve and gateway, text otherwise).
    #[arg(long, global = true, env = "SOCKETLESS_LOG_FORMAT", default_value = defaults::LOG_FORMAT)]
    pub log_format: String,
    /// Log filter, e.g. `info` or `socketless=debug,info`.
    #[arg(long, global = true, env = "SOCKETLESS_LOG", default_value = defaults::LOG)]
    pub log: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the stateless backend (the integration target of the WebSocket API).
    Serve(ServeArgs),
    /// Run a WebSocket gateway that emulates Amazon API Gateway from the CloudFormation template.
    Gateway(GatewayArgs),
    /// Run gateway and backend in one process with in-memory sessions; prints the ws:// URL.
    Dev(DevArgs),
    /// Connect to a WebSocket URL, send a message, expect the reply; exit 0 or 1.
    Probe(ProbeArgs),
    /// Run the conformance suite against a gateway or an API Gateway stage; exit 0 if every case holds.
    Conformance(ConformanceArgs),
}

/// A verb with validated settings.
enum Ready {
    Serve(ServeConfig),
    Gateway(GatewayConfig),
    Dev(Box<DevConfig>),
    Probe(ProbeConfig),
    Conformance(ConformanceConfig),
}

/// Why a verb stopped with a failure.
#[derive(Debug, thiserror::Error)]
enum RunError {
    #[error(transparent)]
    Serve(#[from] crate::serve::ServeError),
    #[error(transparent)]
    Gateway(#[from] crate::gateway::GatewayError),
    #[error(transparent)]
    Dev(#[from] crate::dev::DevError),
    /// The probe or the conformance suite failed; it has printed why.
    #[error("the check failed")]
    CheckFailed,
}

/// Exit code for invalid settings.
const EXIT_CONFIG: u8 = 2;

/// Runs the binary with the default [`Echo`] handler.
pub fn main() -> ExitCode {
    main_with_handler(Arc::new(Echo))
}

/// Runs the binary with your own handler: the entry point for applications built on socketless.
pub fn main_with_handler(handler: Arc<dyn MessageHandler>) -> ExitCode {
    crate::memcopy::detect();
    let cli = Cli::parse();
    let mut problems = Problems::new();
    let labels = Labels::of_command(&<Cli as clap::CommandFactory>::command());
    let format = match problems.one_of(labels.get("log_format"), &cli.log_format, &["json", "text", "auto"]) {
        Some("json") => LogFormat::Json,
        Some("text") => LogFormat::Text,
        _ => match cli.command {
            Command::Serve(_) | Command::Gateway(_) => LogFormat::Json,
            Command::Dev(_) | Command::Probe(_) | Command::Conformance(_) => LogFormat::Text,
        },
    };
    if let Err(err) = telemetry::parse_filter(&cli.log) {
        problems.push(format!("{}: {err}", labels.get("log")));
    }
    let ready: Result<Ready, ConfigError> = match &cli.command {
        Command::Serve(args) => args.validate().map(Ready::Serve),
        Command::Gateway(args) => args.validate().map(Ready::Gateway),
        Command::Dev(args) => args.validate().map(|c| Ready::Dev(Box::new(c))),
        Command::Probe(args) => args.validate().map(Ready::Probe),
        Command::Conformance(args) => args.validate().map(Ready::Conformance),
    };
    let ready = match (ready, problems.into_result()) {
        (Ok(ready), Ok(())) => ready,
        (ready, logs) => {
            let mut all: Vec<String> = Vec::new();
            if let Err(e) = logs {
                all.extend(e.0);
            }
            if let Err(e) = ready {
                all.extend(e.0);
            }
            eprint!("socketless: {}", ConfigError(all));
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    // The probe prints its own result; it logs only warnings unless asked for more.
    let filter = match (&ready, cli.log.as_str()) {
        (Ready::Probe(_), "info") => "warn",
        // The kit says itself, in one line, when credentials are missing; the credential
        // chain's own warnings would repeat it at length.
        (Ready::Conformance(_), "info") => "warn,aws_config=error",
        (_, f) => f,
    };
    if let Err(err) = telemetry::init(format, filter) {
        eprintln!("socketless: {err}");
        return ExitCode::from(EXIT_CONFIG);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_park(crate::memory::on_worker_park)
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("socketless: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    // Spans are exported only by the long-running verbs, and only when the environment asks.
    let service = match &ready {
        Ready::Serve(_) => Some("socketless-serve"),
        Ready::Gateway(_) => Some("socketless-gateway"),
        Ready::Dev(_) => Some("socketless-dev"),
        Ready::Probe(_) | Ready::Conformance(_) => None,
    };
    let exporting = match service.map(|s| crate::trace::export::init(s, runtime.handle().clone())) {
        Some(Err(err)) => {
            eprintln!("socketless: {err}");
            return ExitCode::from(EXIT_CONFIG);
        }
        Some(Ok(exporting)) => exporting,
        None => None,
    };
    let result: Result<Drain, RunError> = runtime.block_on(async move {
        crate::memory::spawn_collector();
        match ready {
            Ready::Serve(config) => {
                let handler = if config.conformance {
                    conformance_backend()
                } else {
                    handler
                };
                Ok(crate::serve::run(config, handler).await?)
            }
            Ready::Gateway(config) => Ok(crate::gateway::run(config).await?),
            Ready::Dev(config) => {
                let handler = if config.conformance {
                    conformance_backend()
                } else {
                    handler
                };
                Ok(crate::dev::run(*config, handler).await?)
            }
            // A check's result is its exit code; nothing to drain.
            Ready::Probe(args) => passed(crate::probe::run(args).await),
            Ready::Conformance(args) => passed(crate::conformance::run(args).await),
        }
    });
    // The spans still waiting go out before the runtime stops.
    drop(exporting);
    match result {
        // A drain that hit its bound is still the intended, clean exit.
        Ok(Drain::Complete) | Ok(Drain::TimedOut) => ExitCode::SUCCESS,
        // The check printed its own result.
        Err(RunError::CheckFailed) => ExitCode::FAILURE,
        Err(err) => {
            tracing::error!(error = %err, "socketless failed");
            eprintln!("socketless: {err}");
            ExitCode::FAILURE
        }
    }
}

/// The backend `socketless conformance` drives (`serve --conformance`, `dev --conformance`).
fn conformance_backend() -> Arc<dyn MessageHandler> {
    Arc::new(crate::conformance::backend::Conformance::new())
}

fn passed(code: ExitCode) -> Result<Drain, RunError> {
    if code == ExitCode::SUCCESS {
        Ok(Drain::Complete)
    } else {
        Err(RunError::CheckFailed)
    }
}

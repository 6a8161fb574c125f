//! The command line: one binary, several verbs. Every flag also reads an environment variable
//! under the `SOCKETLESS_` prefix.

use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use crate::config::{ConfigError, Problems};
use crate::conformance::ConformanceArgs;
use crate::dev::{DevArgs, DevConfig};
use crate::gateway::{GatewayArgs, GatewayConfig};
use crate::handler::{Echo, MessageHandler};
use crate::probe::ProbeArgs;
use crate::serve::{ServeArgs, ServeConfig};
use crate::server::Drain;
use crate::telemetry::{self, LogFormat};

#[derive(Parser, Debug)]
#[command(
    name = "socketless",
    version,
    about = "Stateless WebSocket backends behind an API-Gateway-compatible gateway"
)]
pub struct Cli {
    /// Log format: `json`, `text`, or `auto` (json for serve and gateway, text otherwise).
    #[arg(long, global = true, env = "SOCKETLESS_LOG_FORMAT", default_value = "auto")]
    pub log_format: String,
    /// Log filter, e.g. `info` or `socketless=debug,info`.
    #[arg(long, global = true, env = "SOCKETLESS_LOG", default_value = "info")]
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
    Dev(DevConfig),
    Probe(ProbeArgs),
    ServeConformance(ServeConfig),
    Conformance(ConformanceArgs),
}

/// Exit code for invalid settings.
const EXIT_CONFIG: u8 = 2;

/// Runs the binary with the default [`Echo`] handler.
pub fn main() -> ExitCode {
    main_with_handler(Arc::new(Echo))
}

/// Runs the binary with your own handler: the entry point for applications built on socketless.
pub fn main_with_handler(handler: Arc<dyn MessageHandler>) -> ExitCode {
    let cli = Cli::parse();
    let mut problems = Problems::new();
    let format = match problems.one_of(
        "--log-format (SOCKETLESS_LOG_FORMAT)",
        &cli.log_format,
        &["json", "text", "auto"],
    ) {
        Some("json") => LogFormat::Json,
        Some("text") => LogFormat::Text,
        _ => match cli.command {
            Command::Serve(_) | Command::Gateway(_) => LogFormat::Json,
            Command::Dev(_) | Command::Probe(_) | Command::Conformance(_) => LogFormat::Text,
        },
    };
    if let Err(err) = telemetry::parse_filter(&cli.log) {
        problems.push(format!("--log (SOCKETLESS_LOG): {err}"));
    }
    let ready: Result<Ready, ConfigError> = match &cli.command {
        Command::Serve(args) if args.conformance => args.validate().map(Ready::ServeConformance),
        Command::Serve(args) => args.validate().map(Ready::Serve),
        Command::Gateway(args) => args.validate().map(Ready::Gateway),
        Command::Dev(args) => args.validate().map(Ready::Dev),
        Command::Probe(args) => Ok(Ready::Probe(args.clone())),
        Command::Conformance(args) => Ok(Ready::Conformance(args.clone())),
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
        (Ready::Probe(_) | Ready::Conformance(_), "info") => "warn",
        (_, f) => f,
    };
    if let Err(err) = telemetry::init(format, filter) {
        eprintln!("socketless: {err}");
        return ExitCode::from(EXIT_CONFIG);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("socketless: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result: Result<Drain, String> = runtime.block_on(async move {
        crate::memory::spawn_collector();
        match ready {
            Ready::Serve(config) => crate::serve::run(config, handler).await.map_err(|e| e.to_string()),
            Ready::ServeConformance(config) => crate::conformance::backend::run(config)
                .await
                .map_err(|e| e.to_string()),
            Ready::Gateway(config) => crate::gateway::run(config).await.map_err(|e| e.to_string()),
            Ready::Dev(config) if config.conformance => {
                let conformance = Arc::new(crate::conformance::backend::Conformance::new());
                crate::dev::run(config, conformance).await.map_err(|e| e.to_string())
            }
            Ready::Dev(config) => crate::dev::run(config, handler).await.map_err(|e| e.to_string()),
            Ready::Conformance(args) => {
                if crate::conformance::run(args).await == ExitCode::SUCCESS {
                    Ok(Drain::Complete)
                } else {
                    Err(String::new())
                }
            }
            Ready::Probe(args) => {
                let code = crate::probe::run(args).await;
                // The probe's result is its exit code; nothing to drain.
                if code == ExitCode::SUCCESS {
                    Ok(Drain::Complete)
                } else {
                    Err(String::new())
                }
            }
        }
    });
    match result {
        // A drain that hit its bound is still the intended, clean exit.
        Ok(Drain::Complete) | Ok(Drain::TimedOut) => ExitCode::SUCCESS,
        Err(err) if err.is_empty() => ExitCode::FAILURE,
        Err(err) => {
            tracing::error!(error = %err, "socketless failed");
            eprintln!("socketless: {err}");
            ExitCode::FAILURE
        }
    }
}

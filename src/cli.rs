//! The command line: one binary, several verbs. Every flag also reads an environment variable
//! under the `SOCKETLESS_` prefix.

use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use crate::config::Problems;
use crate::handler::{Echo, MessageHandler};
use crate::serve::ServeArgs;
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
            Command::Serve(_) => LogFormat::Json,
        },
    };
    if let Err(err) = tracing_subscriber::EnvFilter::try_new(&cli.log) {
        problems.push(format!(
            "--log (SOCKETLESS_LOG): {:?} is not a valid filter: {err}",
            cli.log
        ));
    }
    let config = match &cli.command {
        Command::Serve(args) => args.validate(),
    };
    let config = match (config, problems.into_result()) {
        (Ok(config), Ok(())) => config,
        (config, logs) => {
            let mut all: Vec<String> = Vec::new();
            if let Err(e) = logs {
                all.extend(e.0);
            }
            if let Err(e) = config {
                all.extend(e.0);
            }
            eprint!("socketless: {}", crate::config::ConfigError(all));
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if let Err(err) = telemetry::init(format, &cli.log) {
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
    let result = runtime.block_on(crate::serve::run(config, handler));
    match result {
        Ok(Drain::Complete) => ExitCode::SUCCESS,
        Ok(Drain::TimedOut) => {
            // Still a clean, intended exit: the drain bound is part of the contract.
            ExitCode::SUCCESS
        }
        Err(err) => {
            tracing::error!(error = %err, "socketless serve failed");
            eprintln!("socketless: {err}");
            ExitCode::FAILURE
        }
    }
}

//! The real binary started for tests that attack it from outside: `gateway` in front of a fake
//! backend, `serve` on the memory store, and where their logs go.

use std::path::{Path, PathBuf};

use super::free_port;
use super::gw::FakeBackend;
use super::proc::{Proc, wait_ready};

/// A log file for the process a test names, unique to this run.
pub fn log_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("socketless-{name}-{}.log", std::process::id()))
}

/// A gateway process in front of `backend`, with extra flags.
pub async fn gateway(backend: &FakeBackend, extra: &[&str], log: Option<&Path>) -> (Proc, u16) {
    let port = free_port();
    let mut args: Vec<String> = vec![
        "gateway".into(),
        "--listen".into(),
        format!("127.0.0.1:{port}"),
        "--param".into(),
        format!("IntegrationUri={}", backend.uri()),
        "--param".into(),
        "SharedSecret=0123456789abcdef".into(),
        "--param".into(),
        "DisconnectContext=true".into(),
        "--shutdown-delay".into(),
        "0s".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let p = Proc::start(&args, log);
    wait_ready(port).await;
    (p, port)
}

/// A `serve` process on the memory store; returns it with its public and internal ports.
pub async fn serve(extra: &[&str]) -> (Proc, u16, u16) {
    let (port, iport) = (free_port(), free_port());
    let mut args: Vec<String> = vec![
        "serve".into(),
        "--listen".into(),
        format!("127.0.0.1:{port}"),
        "--internal-listen".into(),
        format!("127.0.0.1:{iport}"),
        "--shutdown-delay".into(),
        "0s".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let p = Proc::start(&args, None);
    wait_ready(iport).await;
    (p, port, iport)
}

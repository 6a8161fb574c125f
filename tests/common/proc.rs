//! The real binary as a child process: spawned with its output captured, killed by PID when
//! dropped, its memory read from /proc, and its readiness polled.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{send, within};

/// The binary under test: the one this build made, or `SOCKETLESS_BIN` to measure another
/// build (an earlier release, for before-and-after figures) with the same tests.
pub fn bin() -> String {
    std::env::var("SOCKETLESS_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_socketless").to_string())
}

/// A child process, killed and reaped when dropped.
pub struct Proc(pub Child);

impl Proc {
    /// Starts the binary with `args`, stdout discarded and stderr written to `log` if given.
    pub fn start(args: &[String], log: Option<&std::path::Path>) -> Proc {
        let stderr = match log {
            Some(path) => Stdio::from(std::fs::File::create(path).unwrap()),
            None => Stdio::null(),
        };
        Proc(
            Command::new(bin())
                .args(args)
                .stdout(Stdio::null())
                .stderr(stderr)
                .spawn()
                .unwrap(),
        )
    }

    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Resident memory now, in KiB.
    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.0.id())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

/// Waits until `http://127.0.0.1:{port}/readyz` answers 200.
pub async fn wait_ready(port: u16) {
    within(async {
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok()
                && send("GET", &format!("http://127.0.0.1:{port}/readyz"), &[], "").await.0 == http::StatusCode::OK
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

//! The real binary as a child process: spawned with its output captured, killed by PID when
//! dropped, signalled, its memory read from /proc, and its readiness polled.

use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::{send, within};

/// The binary under test: the one this build made, or `SOCKETLESS_BIN` to measure another
/// build (an earlier release, for before-and-after figures) with the same tests.
pub fn bin() -> String {
    std::env::var("SOCKETLESS_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_socketless").to_string())
}

/// The binary as a command, for a run that sets its own arguments, variables and output.
pub fn command() -> Command {
    Command::new(bin())
}

/// Runs the binary to the end and expects it to refuse its settings (exit code 2); its stderr.
pub fn refused(command: &mut Command) -> String {
    let out = command.output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Polls `f` every 20 ms until it returns a value; fails the test after `within`.
pub fn wait_for<T>(what: &str, within: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A child process, killed and reaped when dropped.
pub struct Proc(pub Child);

impl Proc {
    /// Starts the binary with `args`, its output (stdout and stderr) written to `log` if given,
    /// else discarded.
    pub fn start(args: &[String], log: Option<&std::path::Path>) -> Proc {
        let (stdout, stderr) = match log {
            Some(path) => {
                let file = std::fs::File::create(path).unwrap();
                (Stdio::from(file.try_clone().unwrap()), Stdio::from(file))
            }
            None => (Stdio::null(), Stdio::null()),
        };
        Proc::spawn(command().args(args).stdout(stdout).stderr(stderr))
    }

    /// Starts a command made with [`command`], with the output it was given.
    pub fn spawn(command: &mut Command) -> Proc {
        Proc(command.spawn().expect("the binary starts"))
    }

    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Sends a signal by name (`TERM`, `INT`).
    pub fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{name}"), &self.pid().to_string()])
            .status()
            .expect("kill runs")
            .success();
        assert!(ok, "kill -{name} failed");
    }

    /// Waits at most `within` for the process to exit.
    pub fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        wait_for("exit", within, || self.0.try_wait().unwrap())
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

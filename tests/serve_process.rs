//! The real `socketless` binary: graceful shutdown on SIGTERM and start-up validation.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::free_port;
use common::proc::{Proc, command, refused, wait_for};

/// One blocking HTTP/1.1 GET with `Connection: close`; returns the status code.
fn status(addr: SocketAddr, path: &str) -> std::io::Result<u16> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n")?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line)?;
    line.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))
}

#[test]
fn sigterm_drains_in_flight_requests_then_exits_zero() {
    let (public, internal) = (free_port(), free_port());
    let public_addr: SocketAddr = ([127, 0, 0, 1], public).into();
    let internal_addr: SocketAddr = ([127, 0, 0, 1], internal).into();
    let mut proc = Proc::spawn(
        command()
            .args(["serve", "--listen", &format!("127.0.0.1:{public}")])
            .args(["--internal-listen", &format!("127.0.0.1:{internal}")])
            .args(["--shutdown-delay", "1500ms", "--drain-timeout", "10s"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    );
    wait_for("readiness", Duration::from_secs(20), || {
        (status(internal_addr, "/readyz").ok() == Some(200)).then_some(())
    });

    // A slow request: the head and part of the body now, the rest later.
    let mut slow = TcpStream::connect(public_addr).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        slow,
        "POST /message HTTP/1.1\r\nhost: test\r\nx-socketless-connection-id: sLoW000000000000\r\ncontent-length: 10\r\n\r\nhello"
    )
    .unwrap();
    slow.flush().unwrap();
    std::thread::sleep(Duration::from_millis(100)); // let the server start reading it

    let signalled = Instant::now();
    proc.signal("TERM");
    // Readiness turns 503 at once, while the process still serves.
    let ready = wait_for("readiness to turn 503", Duration::from_secs(1), || {
        status(internal_addr, "/readyz").ok().filter(|s| *s == 503)
    });
    assert_eq!(ready, 503);
    assert!(
        signalled.elapsed() < Duration::from_millis(1500),
        "503 must come before the delay ends"
    );
    assert_eq!(
        status(internal_addr, "/healthz").unwrap(),
        200,
        "liveness stays 200 while draining"
    );

    // After the delay, new connections are refused.
    wait_for("new connections to be refused", Duration::from_secs(10), || {
        TcpStream::connect_timeout(&public_addr, Duration::from_millis(200))
            .is_err()
            .then_some(())
    });
    assert!(
        signalled.elapsed() >= Duration::from_millis(1400),
        "listeners closed before the delay"
    );
    assert!(TcpStream::connect_timeout(&internal_addr, Duration::from_millis(200)).is_err());

    // The in-flight request still completes.
    slow.write_all(b"world").unwrap();
    let mut response = String::new();
    slow.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with("helloworld"), "{response}");

    let status = proc.wait_exit(Duration::from_secs(15));
    assert_eq!(status.code(), Some(0), "graceful shutdown exits 0");
    let mut logs = String::new();
    proc.0.stderr.take().unwrap().read_to_string(&mut logs).unwrap();
    assert!(logs.contains("\"signal\":\"SIGTERM\""), "{logs}");
}

#[test]
fn second_signal_exits_at_once() {
    let (public, internal) = (free_port(), free_port());
    let internal_addr: SocketAddr = ([127, 0, 0, 1], internal).into();
    let mut proc = Proc::spawn(
        command()
            .args(["serve", "--listen", &format!("127.0.0.1:{public}")])
            .args(["--internal-listen", &format!("127.0.0.1:{internal}")])
            .args(["--shutdown-delay", "60s"])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    wait_for("readiness", Duration::from_secs(20), || {
        (status(internal_addr, "/readyz").ok() == Some(200)).then_some(())
    });
    proc.signal("TERM");
    wait_for("not ready", Duration::from_secs(5), || {
        (status(internal_addr, "/readyz").ok() == Some(503)).then_some(())
    });
    proc.signal("INT");
    let status = proc.wait_exit(Duration::from_secs(5));
    assert_eq!(status.code(), Some(130), "the second signal cuts the 60 s delay short");
}

#[test]
fn every_bad_setting_is_reported_in_one_run() {
    let err = refused(
        command()
            .args(["serve", "--listen", "not-an-address", "--store", "postgres"])
            .args([
                "--sync-interval",
                "soon",
                "--cache-capacity",
                "0",
                "--session-ttl",
                "1h",
            ])
            .env("SOCKETLESS_REPLY_MODE", "carrier-pigeon")
            .env("SOCKETLESS_PUSH_ENDPOINT", "ftp://example")
            .env("SOCKETLESS_SHARED_SECRET", "short")
            .env_remove("AWS_REGION")
            .env_remove("AWS_DEFAULT_REGION"),
    );
    for needle in [
        "8 invalid setting(s)",
        "--listen (SOCKETLESS_LISTEN): \"not-an-address\"",
        "--store (SOCKETLESS_STORE): \"postgres\" must be one of memory, dynamodb",
        "--sync-interval (SOCKETLESS_SYNC_INTERVAL)",
        "--cache-capacity (SOCKETLESS_CACHE_CAPACITY): must be at least 1",
        "--session-ttl (SOCKETLESS_SESSION_TTL): must exceed",
        "--reply-mode (SOCKETLESS_REPLY_MODE): \"carrier-pigeon\"",
        "--push-endpoint (SOCKETLESS_PUSH_ENDPOINT)",
        "--shared-secret (SOCKETLESS_SHARED_SECRET): must be at least 16",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
    assert!(
        !err.contains("short"),
        "the secret's value must never be printed:\n{err}"
    );
}

#[test]
fn dynamodb_without_a_region_is_refused() {
    let err = refused(
        command()
            .args(["serve", "--store", "dynamodb", "--log", "info,,=bad="])
            .env_remove("AWS_REGION")
            .env_remove("AWS_DEFAULT_REGION")
            .env_remove("SOCKETLESS_REGION"),
    );
    assert!(err.contains("--region (SOCKETLESS_REGION): required"), "{err}");
}

#[test]
fn version_and_help() {
    let out = command().arg("--version").output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("socketless {}", env!("CARGO_PKG_VERSION"))
    );
    let out = command().args(["serve", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("[env: SOCKETLESS_LISTEN="), "{help}");
}

//! The real binary against clients that hold resources or flood it, each test printing the
//! figures it measures: bodies that never finish, oversized heads, 413s that must not turn into
//! resets, idle connections and slow heads past the keep-alive timeout, and a failure flood that
//! must not flood the log. `hostile_protocol.rs` holds the clients that break the protocols.
//!
//! `SOCKETLESS_BIN=/path/to/socketless cargo test --test hostile_load -- --nocapture` runs the
//! same attacks against another build, for before-and-after figures.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::binary::{gateway, log_path, serve};
use common::gw::*;
use common::proc::Proc;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Opens `n` connections that each send a request head announcing `len` bytes and then all
/// but one of them, and never the last byte. Returns them.
async fn slow_bodies(port: u16, head: &str, n: usize, len: usize) -> Vec<TcpStream> {
    let body = vec![b'x'; len - 1];
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let request = format!("{head}Content-Length: {len}\r\n\r\n");
        s.write_all(request.as_bytes()).await.unwrap();
        // The server may refuse before the body is sent; that is an answer too.
        let _ = tokio::time::timeout(Duration::from_millis(200), s.write_all(&body)).await;
        held.push(s);
    }
    held
}

/// Waits for every stream to be answered or closed by the server; returns how long the last
/// one took and the status lines seen.
async fn until_closed(streams: Vec<TcpStream>, bound: Duration) -> (Duration, Vec<String>) {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for mut s in streams {
        tasks.push(tokio::spawn(async move {
            let mut buf = Vec::new();
            let _ = tokio::time::timeout(bound, s.read_to_end(&mut buf)).await;
            let line = String::from_utf8_lossy(&buf).lines().next().unwrap_or("").to_string();
            (Instant::now(), line)
        }));
    }
    let mut last = started;
    let mut lines = Vec::new();
    for t in tasks {
        let (at, line) = t.await.unwrap();
        last = last.max(at);
        lines.push(line);
    }
    (last - started, lines)
}

async fn slow_body_attack(name: &str, proc: &Proc, port: u16, head: &str) {
    const CLIENTS: usize = 500;
    const LEN: usize = 131_072;
    let before = proc.rss_kib();
    let held = slow_bodies(port, head, CLIENTS, LEN).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let peak = proc.rss_kib();
    let (took, lines) = until_closed(held, Duration::from_secs(15)).await;
    let answered = |code: &str| lines.iter().filter(|l| l.contains(code)).count();
    // The allocator's collection runs every 5 s.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let after = proc.rss_kib();
    println!(
        "{name}: {CLIENTS} slow bodies of {LEN} bytes: RSS {before} KiB before, {peak} KiB while held (+{} KiB), {after} KiB 6 s after; all closed within {:.1} s ({} × 408, {} refused by the budget, {} closed without an answer)",
        peak.saturating_sub(before),
        took.as_secs_f64(),
        answered(" 408 "),
        answered(" 429 ") + answered(" 503 "),
        lines.iter().filter(|l| l.is_empty()).count(),
    );
    assert!(
        took < Duration::from_secs(6),
        "{name}: slow bodies held for {took:?} (bound: 2 s deadline)"
    );
    assert!(
        peak.saturating_sub(before) < 40 * 1024,
        "{name}: slow bodies grew RSS by {} KiB",
        peak - before
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_bodies_are_cut_off_within_the_deadline_with_memory_bounded() {
    let backend = FakeBackend::start().await;
    let budget = "8388608";
    let (gw, port) = gateway(
        &backend,
        &["--body-timeout", "2s", "--max-buffered-body-bytes", budget],
        None,
    )
    .await;
    slow_body_attack(
        "gateway @connections",
        &gw,
        port,
        "POST /dev/@connections/AAAAAAAAAAAAAAA= HTTP/1.1\r\nHost: x\r\n",
    )
    .await;
    let (serve, port, _) = serve(&["--body-timeout", "2s", "--max-buffered-body-bytes", budget]).await;
    slow_body_attack(
        "serve /message",
        &serve,
        port,
        "POST /message HTTP/1.1\r\nHost: x\r\nx-socketless-connection-id: AAAAAAAAAAAAAAA=\r\n",
    )
    .await;
}

async fn handshake_status(port: u16, user_agent: &str) -> u16 {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let req = format!(
        "GET /dev HTTP/1.1\r\nHost: x\r\nUser-Agent: {user_agent}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    let _ = s.write_all(req.as_bytes()).await;
    let mut buf = [0u8; 64];
    let n = within(s.read(&mut buf)).await.unwrap_or(0);
    String::from_utf8_lossy(&buf[..n])
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_heads_are_refused_and_memory_per_connection_stays_small() {
    const CLIENTS: usize = 400;
    let backend = FakeBackend::start().await;
    let (gw, port) = gateway(&backend, &["--log", "warn"], None).await;
    let huge = "a".repeat(64 * 1024);
    let status = handshake_status(port, &huge).await;
    println!("handshake with a 64 KiB User-Agent: HTTP {status}");
    assert_eq!(status, 431, "a 64 KiB head must be refused");

    // The largest head the limit admits, on many connections.
    let agent = "b".repeat(9_000);
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = format!("ws://127.0.0.1:{port}/dev").into_client_request().unwrap();
    req.headers_mut().insert("user-agent", agent.parse().unwrap());
    let before = gw.rss_kib();
    let mut held = Vec::new();
    for _ in 0..CLIENTS {
        let (ws, _) = within(tokio_tungstenite::connect_async(req.clone())).await.unwrap();
        held.push(ws);
    }
    let per_connection = (gw.rss_kib().saturating_sub(before)) as f64 / CLIENTS as f64;
    println!("{CLIENTS} connections with a 9,000-byte User-Agent: {per_connection:.1} KiB each");
    assert!(per_connection < 32.0, "{per_connection:.1} KiB per connection");
    for mut ws in held {
        let _ = ws.close(None).await;
    }

    // serve refuses the same head, and keeps at most 512 bytes of the User-Agent it stores.
    let (_serve, sport, siport) = serve(&[]).await;
    let connect = |header: &'static str, value: String| async move {
        let headers = [
            ("x-socketless-connection-id", "AAAAAAAAAAAAAAA="),
            (header, value.as_str()),
        ];
        send("POST", &format!("http://127.0.0.1:{sport}/connect"), &headers, "")
            .await
            .0
    };
    assert_eq!(connect("x-pad", huge.clone()).await.as_u16(), 431);
    let status = connect("x-socketless-user-agent", "c".repeat(8_000)).await;
    assert_eq!(status.as_u16(), 200);
    let (_, session) = get(&format!("http://127.0.0.1:{siport}/v1/connections/AAAAAAAAAAAAAAA%3D")).await;
    let session: serde_json::Value = serde_json::from_str(&session).unwrap();
    assert_eq!(session["userAgent"].as_str().unwrap().len(), 512);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_413_reaches_a_sender_that_keeps_sending() {
    const SENDERS: usize = 50;
    const SIZE: usize = 10 * 1024 * 1024;
    let (_serve, port, _) = serve(&[]).await;
    let mut answers = Vec::new();
    for i in 0..SENDERS {
        // Half announce the length (refused before a byte is read), half send it chunked
        // (refused once the limit is crossed, mid-body).
        let chunked = i % 2 == 1;
        answers.push(tokio::task::spawn_blocking(move || {
            let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let framing = if chunked {
                "Transfer-Encoding: chunked".to_string()
            } else {
                format!("Content-Length: {SIZE}")
            };
            let head = format!(
                "POST /message HTTP/1.1\r\nHost: x\r\nx-socketless-connection-id: AAAAAAAAAAAAAAA=\r\n{framing}\r\n\r\n"
            );
            s.write_all(head.as_bytes()).unwrap();
            // Like most HTTP clients: send the whole body, then read the answer.
            let data = vec![b'x'; 64 * 1024];
            let chunk = if chunked {
                [format!("{:x}\r\n", data.len()).into_bytes(), data, b"\r\n".to_vec()].concat()
            } else {
                data
            };
            let mut sent = 0;
            while sent < SIZE {
                if s.write_all(&chunk).is_err() {
                    break;
                }
                sent += 64 * 1024;
            }
            if chunked {
                let _ = s.write_all(b"0\r\n\r\n");
            }
            let mut buf = [0u8; 64];
            match s.read(&mut buf) {
                Ok(n) => String::from_utf8_lossy(&buf[..n])
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or("")
                    .to_string(),
                Err(e) => format!("{:?}", e.kind()),
            }
        }));
    }
    let mut got = Vec::new();
    for a in answers {
        got.push(a.await.unwrap());
    }
    let ok = got.iter().filter(|s| *s == "413").count();
    println!(
        "{SENDERS} senders of 10 MiB bodies: {ok} read the 413, others: {:?}",
        got.iter().filter(|s| *s != "413").collect::<Vec<_>>()
    );
    assert_eq!(ok, SENDERS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_integration_outage_logs_a_line_a_second_not_a_line_a_message() {
    const MESSAGES: usize = 400;
    let backend = FakeBackend::start().await;
    let log = log_path("outage");
    let (gw, port) = gateway(&backend, &["--log", "info", "--log-format", "text"], Some(&log)).await;
    let mut ws = connect(&format!("ws://127.0.0.1:{port}/dev")).await;
    backend.stop();
    let started = Instant::now();
    for i in 0..MESSAGES {
        send_text(&mut ws, &format!("m{i}")).await;
        let frame = next_text(&mut ws).await;
        assert!(frame.contains("Internal server error"), "{frame}");
    }
    let seconds = started.elapsed().as_secs_f64();
    drop(gw);
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    let warnings = text.lines().filter(|l| l.contains("integration call failed")).count();
    println!("{MESSAGES} failed integration calls in {seconds:.1} s: {warnings} warning lines");
    assert!(
        warnings as f64 <= seconds.ceil() + 2.0,
        "{warnings} warning lines for {MESSAGES} failures"
    );
}

/// Reads until the server closes the connection; returns what it sent and when it closed.
async fn closed_after(stream: &mut TcpStream, bound: Duration) -> Option<(Duration, String)> {
    let started = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(tokio::time::Instant::from_std(started + bound), stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some((started.elapsed(), String::from_utf8_lossy(&got).into_owned())),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// On one listener: an idle keep-alive connection, a connection that never finishes its request
/// head (one byte a second), and one that keeps asking, for three keep-alive periods.
async fn keep_alive_limits(name: &str, port: u16, request: &str, keep_alive: Duration) {
    let bound = keep_alive * 3;
    let mut idle = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    idle.write_all(request.as_bytes()).await.unwrap();
    let idle = tokio::spawn(async move { closed_after(&mut idle, bound).await });
    let mut slow = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let trickle = tokio::spawn(async move {
        let head = b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-slow: ";
        let opened = Instant::now();
        let (mut rd, mut wr) = slow.split();
        let mut bytes = head.iter().chain(std::iter::repeat(&b'a'));
        let mut buf = [0u8; 1024];
        while opened.elapsed() < Duration::from_secs(30) {
            tokio::select! {
                n = rd.read(&mut buf) => return (opened.elapsed(), matches!(n, Ok(0) | Err(_))),
                _ = tokio::time::sleep(Duration::from_millis(200)) => {
                    if wr.write_all(&[*bytes.next().unwrap()]).await.is_err() {
                        return (opened.elapsed(), true);
                    }
                }
            }
        }
        (opened.elapsed(), false)
    });
    let mut busy = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let started = Instant::now();
    let mut answered = 0;
    while started.elapsed() < bound {
        busy.write_all(request.as_bytes()).await.unwrap();
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), busy.read(&mut buf))
            .await
            .expect("an answer")
            .unwrap();
        assert!(
            n > 0,
            "{name}: a connection that keeps asking was closed after {:?}",
            started.elapsed()
        );
        answered += 1;
        tokio::time::sleep(keep_alive / 3).await;
    }
    let (idle_closed, idle_got) = idle
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("{name}: the idle connection is still open after {bound:?}"));
    let (slow_took, slow_closed) = trickle.await.unwrap();
    println!(
        "{name}: keep-alive {keep_alive:?}: idle connection closed after {idle_closed:?}, slow head cut off after {slow_took:?}, busy connection answered {answered} requests over {:?}",
        started.elapsed()
    );
    assert!(
        idle_got.starts_with("HTTP/1.1 200"),
        "{name}: the idle connection's request was answered: {idle_got:?}"
    );
    assert!(
        idle_closed >= keep_alive && idle_closed < keep_alive + Duration::from_secs(2),
        "{name}: an idle connection closed after {idle_closed:?} (keep-alive {keep_alive:?})"
    );
    assert!(slow_closed, "{name}: the slow head's connection was not closed");
    assert!(
        slow_took >= keep_alive && slow_took < keep_alive + Duration::from_secs(2),
        "{name}: a request head trickled over {slow_took:?} (keep-alive {keep_alive:?})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_and_slow_heads_are_closed_after_the_keep_alive_timeout() {
    let keep_alive = Duration::from_secs(2);
    let (_serve, port, _) = serve(&["--keep-alive-timeout", "2s"]).await;
    let health = "GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n";
    keep_alive_limits("serve", port, health, keep_alive).await;
    let backend = FakeBackend::start().await;
    let (_gw, gport) = gateway(&backend, &["--keep-alive-timeout", "2s"], None).await;
    keep_alive_limits("gateway", gport, health, keep_alive).await;
}

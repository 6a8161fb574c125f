//! The real binary against clients that attack it, each test printing the figures it measures:
//! a captured SigV4 signature carrying another body, bodies that never finish, handshakes reset
//! while `$connect` runs, oversized headers, closing handshakes and protocol violations, 413s
//! that must not turn into resets, and a failure flood that must not flood the log.
//!
//! `SOCKETLESS_BIN=/path/to/socketless cargo test --test hostile_clients -- --nocapture` runs
//! the same attacks against another build, for before-and-after figures.

mod common;

use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use common::gw::*;
use common::proc::{Proc, wait_ready};
use common::*;
use futures_util::{SinkExt, StreamExt};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

const KEY_ID: &str = "AKIDHOSTILE";
const KEY_SECRET: &str = "hostile-test-secret";

fn log_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("socketless-{name}-{}.log", std::process::id()))
}

/// A gateway process in front of `backend`, with extra flags.
async fn gateway(backend: &FakeBackend, extra: &[&str], log: Option<&std::path::Path>) -> (Proc, u16) {
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
async fn serve(extra: &[&str]) -> (Proc, u16, u16) {
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

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Signs a POST of `body` to `url` for execute-api; returns the headers to send.
fn sign(url: &str, body: &[u8], with_hash_header: bool) -> Vec<(String, String)> {
    use aws_credential_types::Credentials;
    use aws_sigv4::http_request::{PayloadChecksumKind, SignableBody, SignableRequest, SigningSettings, sign};
    use aws_sigv4::sign::v4;
    let identity = Credentials::new(KEY_ID, KEY_SECRET, None, None, "test").into();
    let mut settings = SigningSettings::default();
    if with_hash_header {
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    }
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(socketless::defaults::REGION)
        .name("execute-api")
        .time(SystemTime::now())
        .settings(settings)
        .build()
        .unwrap()
        .into();
    let host = url.split('/').nth(2).unwrap().to_string();
    let headers = [("host", host.as_str())];
    let signable = SignableRequest::new("POST", url, headers.into_iter(), SignableBody::Bytes(body)).unwrap();
    let (instructions, _) = sign(signable, &params).unwrap().into_parts();
    let mut out: Vec<(String, String)> = instructions
        .headers()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    out.push(("host".into(), host));
    out
}

async fn post(url: &str, headers: &[(String, String)], body: &'static str) -> u16 {
    let refs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    send("POST", url, &refs, body).await.0.as_u16()
}

#[tokio::test]
async fn a_captured_signature_cannot_carry_another_body() {
    let backend = FakeBackend::start().await;
    let (_gw, port) = gateway(
        &backend,
        &["--sigv4-access-key-id", KEY_ID, "--sigv4-secret-access-key", KEY_SECRET],
        None,
    )
    .await;
    let mut ws = connect(&format!("ws://127.0.0.1:{port}/dev")).await;
    let id = backend.wait_for("/connect", 1).await[0].headers["x-socketless-connection-id"]
        .to_str()
        .unwrap()
        .to_string();
    let url = format!("http://127.0.0.1:{port}/dev/@connections/{}", id.replace('=', "%3D"));
    let signed = sign(&url, b"the signed body", false);

    // The signed request itself is delivered.
    assert_eq!(post(&url, &signed, "the signed body").await, 200);
    assert_eq!(next_text(&mut ws).await, "the signed body");

    // The same signature with another body and an unsigned x-amz-content-sha256 claiming the
    // signed body's hash: the gateway hashes what it received.
    let mut swapped = signed.clone();
    swapped.push(("x-amz-content-sha256".into(), hex(&Sha256::digest(b"the signed body"))));
    let swapped_status = post(&url, &swapped, "a forged body!!").await;
    // A signature over x-amz-content-sha256 (as S3-style signers send) cannot either.
    let hashed = sign(&url, b"the signed body", true);
    let hashed_status = post(&url, &hashed, "a forged body!!").await;
    // Nor a claim that the payload is not signed.
    let mut unsigned = signed.clone();
    unsigned.push(("x-amz-content-sha256".into(), "UNSIGNED-PAYLOAD".into()));
    let unsigned_status = post(&url, &unsigned, "a forged body!!").await;
    println!(
        "swapped body: unsigned hash header → {swapped_status}, signed hash header → {hashed_status}, UNSIGNED-PAYLOAD → {unsigned_status}"
    );
    assert_eq!((swapped_status, hashed_status, unsigned_status), (403, 403, 403));
    // Nothing forged reached the client.
    let nothing = tokio::time::timeout(Duration::from_millis(300), ws.next()).await;
    assert!(nothing.is_err(), "a forged body was delivered: {nothing:?}");
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshakes_reset_during_connect_leave_no_session_behind() {
    const ATTEMPTS: usize = 200;
    let backend = FakeBackend::start().await;
    backend.answer(
        "/connect",
        Answer {
            delay: Duration::from_millis(300),
            ..Default::default()
        },
    );
    let (_gw, port) = gateway(&backend, &[], None).await;
    let mut tasks = Vec::new();
    for _ in 0..ATTEMPTS {
        tasks.push(tokio::spawn(async move {
            let s = send_handshake(port).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            // A reset, not a close.
            s.set_zero_linger().unwrap();
            drop(s);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // Handshakes the gateway had not read before their reset never reach $connect; wait until
    // no more arrive (each is answered after 300 ms).
    let mut connects = backend.seen("/connect").len();
    loop {
        tokio::time::sleep(Duration::from_millis(1_000)).await;
        let now = backend.seen("/connect").len();
        if now == connects {
            break;
        }
        connects = now;
    }
    assert!(
        connects >= ATTEMPTS / 2,
        "only {connects} of {ATTEMPTS} handshakes reached $connect"
    );
    // Every $connect has answered 200 by now plus a margin; each needs its $disconnect.
    let deadline = Instant::now() + Duration::from_secs(5);
    while backend.seen("/disconnect").len() < connects && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let disconnects = backend.seen("/disconnect").len();
    println!(
        "{ATTEMPTS} handshakes reset during $connect: {connects} /connect calls, {disconnects} /disconnect calls, {} sessions left behind",
        connects.saturating_sub(disconnects)
    );
    assert_eq!(disconnects, connects, "sessions left behind");
    for seen in backend.seen("/disconnect") {
        assert_eq!(seen.headers["x-socketless-disconnect-status"], "1006");
    }
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

#[tokio::test]
async fn a_client_close_is_answered_with_a_close_frame() {
    let backend = FakeBackend::start().await;
    let (_gw, port) = gateway(&backend, &[], None).await;
    let mut ws = connect(&format!("ws://127.0.0.1:{port}/dev")).await;
    ws.send(Message::Close(Some(
        tokio_tungstenite::tungstenite::protocol::CloseFrame {
            code: 1000.into(),
            reason: "bye".into(),
        },
    )))
    .await
    .unwrap();
    let reply = within(ws.next()).await;
    println!("client close(1000): the server answered {reply:?}");
    match reply {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(u16::from(frame.code), 1000),
        other => panic!("expected the server's Close frame, got {other:?}"),
    }
    let seen = backend.wait_for("/disconnect", 1).await;
    assert_eq!(seen[0].headers["x-socketless-disconnect-status"], "1000");
}

/// A masked client frame.
fn frame(first: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    let mut out = vec![first];
    let mask = [0x11u8, 0x22, 0x33, 0x44];
    if masked {
        out.push(0x80 | payload.len() as u8);
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    } else {
        out.push(payload.len() as u8);
        out.extend_from_slice(payload);
    }
    out
}

/// Connects and sends a WebSocket handshake for `/dev`; the stream is left for the test to use.
async fn send_handshake(port: u16) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(
        b"GET /dev HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await
    .unwrap();
    s
}

/// Opens a raw WebSocket, sends `bytes`, and returns the close status the server sends (0 when
/// it closes without a Close frame).
async fn close_status_after(port: u16, bytes: &[u8]) -> u16 {
    let mut s = send_handshake(port).await;
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        if within(s.read(&mut b)).await.unwrap_or(0) == 0 {
            return 0;
        }
        head.push(b[0]);
    }
    s.write_all(bytes).await.unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await;
    match rest.as_slice() {
        [0x88, len, a, b, ..] if *len >= 2 => u16::from_be_bytes([*a, *b]),
        _ => 0,
    }
}

#[tokio::test]
async fn protocol_violations_are_closed_with_their_status() {
    let backend = FakeBackend::start().await;
    let (_gw, port) = gateway(&backend, &[], None).await;
    let cases: [(&str, Vec<u8>, u16); 5] = [
        ("text frame with invalid UTF-8", frame(0x81, &[0xff, 0xfe], true), 1007),
        ("unmasked client frame", frame(0x81, b"hi", false), 1002),
        (
            "ping over 125 bytes",
            [&[0x89, 0xfe, 0x00, 0x7e, 1, 2, 3, 4][..], &[0u8; 126][..]].concat(),
            1002,
        ),
        ("reserved opcode", frame(0x83, b"hi", true), 1002),
        ("RSV1 bit without an extension", frame(0xc1, b"hi", true), 1002),
    ];
    let mut results = Vec::new();
    for (name, bytes, want) in cases {
        let got = close_status_after(port, &bytes).await;
        println!("{name}: close status {got} (want {want})");
        results.push((name, got, want));
    }
    for (name, got, want) in results {
        assert_eq!(got, want, "{name}");
    }
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

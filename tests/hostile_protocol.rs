//! The real binary against clients that break the protocols, each test printing what it
//! measures: a captured SigV4 signature carrying another body, handshakes reset while
//! `$connect` runs, closing handshakes and protocol violations. `hostile_load.rs` holds the
//! clients that hold resources or flood.
//!
//! `SOCKETLESS_BIN=/path/to/socketless cargo test --test hostile_protocol --test hostile_load --
//! --nocapture` runs the same attacks against another build, for before-and-after figures.

mod common;

use std::time::{Duration, Instant, SystemTime};

use common::binary::gateway;
use common::gw::*;
use common::*;
use futures_util::{SinkExt, StreamExt};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

const KEY_ID: &str = "AKIDHOSTILE";
const KEY_SECRET: &str = "hostile-test-secret";

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

/// After a Close frame from the client, which sends nothing more (RFC 6455 §5.5.1), the
/// gateway closes the socket at once instead of lingering: bytes the client sends after the
/// closing handshake are refused. A socket closed after a protocol violation still lingers (2
/// s), so that its Close frame is not lost to a reset.
#[tokio::test]
async fn a_socket_closes_at_once_after_the_clients_close_frame() {
    let backend = FakeBackend::start().await;
    let (_gw, port) = gateway(&backend, &[], None).await;
    for (name, bytes, at_once) in [
        ("client Close", frame(0x88, &1000u16.to_be_bytes(), true), true),
        ("unmasked client frame", frame(0x81, b"hi", false), false),
    ] {
        let mut s = send_handshake(port).await;
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut b = [0u8; 1];
            assert_eq!(within(s.read(&mut b)).await.unwrap(), 1, "{name}: handshake cut short");
            head.push(b[0]);
        }
        s.write_all(&bytes).await.unwrap();
        let mut close = Vec::new();
        within(s.read_to_end(&mut close)).await.unwrap();
        assert_eq!(
            close.first(),
            Some(&0x88),
            "{name}: no Close frame before the end of stream"
        );
        // Well within the 2 s a lingering socket waits.
        let until = Instant::now() + Duration::from_millis(500);
        let mut refused = None;
        while refused.is_none() && Instant::now() < until {
            refused = s.write_all(&frame(0x81, b"late", true)).await.err();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        println!("{name}: bytes after the close refused: {refused:?}");
        assert_eq!(refused.is_some(), at_once, "{name}: refused {refused:?}");
    }
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

//! `socketless serve`'s public port on real sockets with the in-memory store: every endpoint and
//! error path, the shared secret, a handler plugged in, health, readiness and metrics, and
//! garbage requests on both ports. The internal API is in `serve_internal.rs`.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::*;
use http::StatusCode;
use socketless::handler::{BoxFuture, MessageHandler, Rejection, RequestContext};

#[tokio::test]
async fn message_echoes_the_body() {
    let b = start(args()).await;
    let (status, body) = call(&b, "/message", "AbCdEfGhIjKlMnO=", "hello").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "hello");
}

#[tokio::test]
async fn missing_connection_id_is_400_with_json() {
    let b = start(args()).await;
    for path in ["/connect", "/message", "/disconnect"] {
        let (status, headers, body) = send("POST", &b.url(path), &[], "x").await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}");
        assert_eq!(headers["content-type"], "application/json");
        let v: serde_json::Value = serde_json::from_str(&body).expect("json error body");
        assert!(
            v["error"].as_str().unwrap().contains("x-socketless-connection-id"),
            "{body}"
        );
    }
}

#[tokio::test]
async fn invalid_context_headers_are_400() {
    let b = start(args()).await;
    let (status, _, _) = send(
        "POST",
        &b.url("/message"),
        &[("x-socketless-connection-id", "a/b")],
        "x",
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _, _) = send(
        "POST",
        &b.url("/connect"),
        &[
            ("x-socketless-connection-id", "abc="),
            ("x-socketless-connected-at", "yesterday"),
        ],
        "",
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn oversized_body_is_413() {
    let b = start(args()).await;
    let big = "x".repeat(128 * 1024 + 1);
    let (status, body) = call(&b, "/message", "abc=", &big).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    // Exactly at the limit is fine.
    let ok = "x".repeat(128 * 1024);
    let (status, body) = call(&b, "/message", "abc=", &ok).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body.len(), ok.len());
}

#[tokio::test]
async fn chunked_oversized_body_is_413() {
    // No Content-Length: the limit applies while reading.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let b = start(args()).await;
    let mut s = within(tokio::net::TcpStream::connect(b.public)).await.unwrap();
    let head =
        "POST /message HTTP/1.1\r\nhost: x\r\nx-socketless-connection-id: abc=\r\ntransfer-encoding: chunked\r\n\r\n";
    s.write_all(head.as_bytes()).await.unwrap();
    let chunk = vec![b'y'; 64 * 1024];
    for _ in 0..3 {
        let _ = s.write_all(format!("{:x}\r\n", chunk.len()).as_bytes()).await;
        let _ = s.write_all(&chunk).await;
        let _ = s.write_all(b"\r\n").await;
    }
    let _ = s.write_all(b"0\r\n\r\n").await;
    let mut buf = vec![0u8; 256];
    let n = within(s.read(&mut buf)).await.unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
}

#[tokio::test]
async fn shared_secret_enforced() {
    let mut a = args();
    a.shared_secret = Some("0123456789abcdef-secret".into());
    let b = start(a).await;
    let (status, _, body) = send(
        "POST",
        &b.url("/message"),
        &[("x-socketless-connection-id", "abc=")],
        "hi",
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, _, _) = send(
        "POST",
        &b.url("/message"),
        &[
            ("x-socketless-connection-id", "abc="),
            ("x-socketless-secret", "0123456789abcdef-secreT"),
        ],
        "hi",
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, _) = send(
        "POST",
        &b.url("/message"),
        &[("x-socketless-connection-id", "abc="), ("x-socketless-secret", "short")],
        "hi",
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, body) = send(
        "POST",
        &b.url("/message"),
        &[
            ("x-socketless-connection-id", "abc="),
            ("x-socketless-secret", "0123456789abcdef-secret"),
        ],
        "hi",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "hi");
}

#[tokio::test]
async fn unknown_route_and_wrong_method() {
    let b = start(args()).await;
    let (status, _) = get(&b.url("/nope")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = get(&b.url("/message")).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    // The internal API is not on the public port.
    let (status, _) = get(&b.url("/v1/connections/abc")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn connect_message_disconnect_bookkeeping() {
    let b = start(args()).await;
    let id = "R0oXAdfD0kwCH6w=";
    let headers = ctx(id);
    let mut refs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    refs.push(("x-socketless-connected-at", "1700000000000"));
    let (status, _, _) = send("POST", &b.url("/connect"), &refs, "").await;
    assert_eq!(status, StatusCode::OK);

    let (status, body) = get(&b.internal_url("/v1/connections/R0oXAdfD0kwCH6w%3D")).await;
    assert_eq!(status, StatusCode::OK);
    let s: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(s["connectionId"], id);
    assert_eq!(s["connectedAt"], 1_700_000_000_000i64);
    assert_eq!(s["sourceIp"], "192.0.2.1");
    assert_eq!(s["userAgent"], "test-agent");
    assert_eq!(s["domain"], "example.test");
    assert_eq!(s["stage"], "dev");
    assert_eq!(s["messageCount"], 0);
    // TTL: connectedAt + 2h15m, in epoch seconds.
    assert_eq!(s["expiresAt"], 1_700_000_000i64 + 8100);

    // A duplicate connect does not clobber the session.
    let mut dup = refs.clone();
    dup.retain(|(k, _)| *k != "x-socketless-source-ip");
    dup.push(("x-socketless-source-ip", "198.51.100.9"));
    let (status, _, _) = send("POST", &b.url("/connect"), &dup, "").await;
    assert_eq!(status, StatusCode::OK);
    let (_, body) = get(&b.internal_url(&format!("/v1/connections/{id}"))).await;
    let s: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(s["sourceIp"], "192.0.2.1");

    let (status, _) = call(&b, "/disconnect", id, "").await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = get(&b.internal_url(&format!("/v1/connections/{id}"))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn message_without_connect_creates_the_session() {
    let b = start(args()).await;
    let (status, _) = call(&b, "/message", "nEvErCoNnEcTeD0=", "hi").await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = get(&b.internal_url("/v1/connections/nEvErCoNnEcTeD0=")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let s: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(s["messageCount"], 1);
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let b = start(args()).await;
    assert_eq!(get(&b.internal_url("/healthz")).await.0, StatusCode::OK);
    assert_eq!(get(&b.internal_url("/readyz")).await.0, StatusCode::OK);
    // Load balancers check the traffic port too.
    assert_eq!(get(&b.url("/readyz")).await.0, StatusCode::OK);
    call(&b, "/message", "abc=", "1").await;
    call(&b, "/message", "abc=", "2").await;
    let (status, text) = get(&b.internal_url("/metrics")).await;
    assert_eq!(status, StatusCode::OK);
    for name in [
        "socketless_http_requests_total{listener=\"public\",route=\"/message\",status=\"200\"} 2",
        "socketless_session_cache_lookups_total{result=\"miss\"} 1",
        "socketless_session_cache_lookups_total{result=\"hit\"} 1",
        "socketless_messages_total 2",
        "socketless_http_request_duration_seconds_count{listener=\"public\",route=\"/message\"} 2",
        "socketless_http_requests_in_flight{listener=\"internal\"} 1",
    ] {
        assert!(text.contains(name), "missing {name} in\n{text}");
    }
    b.lifecycle.begin_shutdown();
    assert_eq!(get(&b.internal_url("/readyz")).await.0, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(get(&b.internal_url("/healthz")).await.0, StatusCode::OK);
}

/// A handler that refuses connects without a token and upper-cases messages.
struct Custom;

impl MessageHandler for Custom {
    fn on_connect<'a>(&'a self, ctx: &'a RequestContext) -> BoxFuture<'a, Result<(), Rejection>> {
        Box::pin(async move {
            if ctx.user_agent.contains("blocked") {
                Err(Rejection::new(StatusCode::FORBIDDEN, "not allowed"))
            } else {
                Ok(())
            }
        })
    }

    fn on_message<'a>(
        &'a self,
        _ctx: &'a RequestContext,
        body: Bytes,
    ) -> BoxFuture<'a, Result<Option<Bytes>, Rejection>> {
        Box::pin(async move {
            if body.is_empty() {
                return Ok(None);
            }
            Ok(Some(Bytes::from(String::from_utf8_lossy(&body).to_uppercase())))
        })
    }
}

#[tokio::test]
async fn custom_handler_plugs_in() {
    let b = start_with(args(), Arc::new(Custom)).await;
    let (status, body) = call(&b, "/message", "abc=", "hello").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "HELLO"));
    let (status, body) = call(&b, "/message", "abc=", "").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, ""));
    let (status, _, _) = send(
        "POST",
        &b.url("/connect"),
        &[
            ("x-socketless-connection-id", "def="),
            ("x-socketless-user-agent", "blocked-bot"),
        ],
        "",
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // A refused connect stores nothing.
    assert_eq!(
        get(&b.internal_url("/v1/connections/def=")).await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn never_panics_on_garbage_requests() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let b = start(args()).await;
    let garbage: &[&[u8]] = &[
        b"\x00\x01\x02\r\n\r\n",
        b"POST /message HTTP/1.1\r\ncontent-length: -5\r\n\r\n",
        b"POST /message HTTP/1.1\r\nx-socketless-connection-id: \xff\xfe\r\ncontent-length: 0\r\n\r\n",
        b"POST /message HTTP/1.1\r\ncontent-length: 99999999999999999999\r\n\r\n",
        b"GET /v1/connections/%%%% HTTP/1.1\r\n\r\n",
    ];
    for g in garbage {
        for port in [b.public, b.internal] {
            let mut s = within(tokio::net::TcpStream::connect(port)).await.unwrap();
            let _ = s.write_all(g).await;
            let mut buf = vec![0u8; 512];
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), s.read(&mut buf)).await;
        }
    }
    // Still serving.
    let (status, body) = call(&b, "/message", "abc=", "alive").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "alive"));
}

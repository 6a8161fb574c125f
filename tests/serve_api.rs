//! `socketless serve` on real sockets with the in-memory store: every public endpoint and error
//! path, the internal API against a fake `@connections` server (including one that answers
//! 5xx), its bearer token, health and metrics.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::*;
use http::StatusCode;
use socketless::handler::{MessageHandler, Rejection, RequestContext};
use socketless::store::BoxFuture;

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
async fn async_replies_go_through_connections() {
    let fake = FakeConnections::start().await;
    let mut a = args();
    a.reply_mode = "async".into();
    a.push_endpoint = Some(fake.endpoint());
    let b = start(a).await;
    let (status, body) = call(&b, "/message", "AsYnC0000000000=", "hello").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "", "async mode replies through @connections, not the response");
    let calls = fake.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].method, "POST");
    assert_eq!(calls[0].path, "/dev/@connections/AsYnC0000000000=");
    assert_eq!(calls[0].body, "hello");
    assert!(calls[0].signed, "pushes are SigV4-signed");

    // 410 Gone deletes the session.
    fake.mark_gone("AsYnC0000000000=");
    assert_eq!(
        get(&b.internal_url("/v1/connections/AsYnC0000000000=")).await.0,
        StatusCode::OK
    );
    let (status, _) = call(&b, "/message", "AsYnC0000000000=", "again").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        get(&b.internal_url("/v1/connections/AsYnC0000000000=")).await.0,
        StatusCode::NOT_FOUND
    );
    let text = get(&b.internal_url("/metrics")).await.1;
    assert_eq!(metric_value(&text, "socketless_pushes_total{outcome=\"gone\"}"), 1.0);
    assert_eq!(
        metric_value(&text, "socketless_pushes_total{outcome=\"delivered\"}"),
        1.0
    );
}

#[tokio::test]
async fn internal_api_push_close_lookup() {
    let fake = FakeConnections::start().await;
    let mut a = args();
    a.push_endpoint = Some(fake.endpoint());
    let b = start(a).await;
    call(&b, "/connect", "one0000000000000", "").await;

    let (status, _, body) = send(
        "POST",
        &b.internal_url("/v1/connections/one0000000000000/messages"),
        &[],
        "pushed",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, r#"{"delivered":true}"#);
    let (status, _, _) = send("DELETE", &b.internal_url("/v1/connections/one0000000000000"), &[], "").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let calls = fake.calls();
    assert_eq!(calls.len(), 2);
    assert_eq!((calls[0].method.as_str(), calls[0].body.as_str()), ("POST", "pushed"));
    assert_eq!(calls[1].method, "DELETE");
    assert_eq!(calls[1].path, "/dev/@connections/one0000000000000");

    // Gone: the push answers 410 and the session is removed.
    fake.mark_gone("one0000000000000");
    let (status, _, _) = send(
        "POST",
        &b.internal_url("/v1/connections/one0000000000000/messages"),
        &[],
        "x",
    )
    .await;
    assert_eq!(status, StatusCode::GONE);
    assert_eq!(
        get(&b.internal_url("/v1/connections/one0000000000000")).await.0,
        StatusCode::NOT_FOUND
    );

    // Bad requests on the internal API.
    let big = "x".repeat(131_073);
    let (status, _, _) = send(
        "POST",
        &b.internal_url("/v1/connections/one0000000000000/messages"),
        &[],
        big,
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let (status, _, _) = send("PUT", &b.internal_url("/v1/connections/one0000000000000"), &[], "").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    let (status, _, _) = send(
        "GET",
        &b.internal_url("/v1/connections/one0000000000000/messages"),
        &[],
        "",
    )
    .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(get(&b.internal_url("/v1/nothing")).await.0, StatusCode::NOT_FOUND);
    assert_eq!(
        get(&b.internal_url("/v1/connections/%FF%FE")).await.0,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn internal_push_uses_the_session_endpoint_without_a_configured_one() {
    // No push endpoint: the endpoint comes from the session's domain and stage, so an unknown
    // connection is a 404 before anything is sent.
    let b = start(args()).await;
    let (status, _, _) = send(
        "POST",
        &b.internal_url("/v1/connections/unknown00000000=/messages"),
        &[],
        "x",
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, _) = send("DELETE", &b.internal_url("/v1/connections/unknown00000000="), &[], "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn broadcast_counts_delivered_gone_failed() {
    let fake = FakeConnections::start().await;
    let mut a = args();
    a.push_endpoint = Some(fake.endpoint());
    let b = start(a).await;
    // 250 sessions: more than two scan pages.
    for i in 0..250 {
        call(&b, "/connect", &format!("conn{i:012}"), "").await;
    }
    for i in 0..10 {
        fake.mark_gone(&format!("conn{i:012}"));
    }
    let (status, _, body) = send("POST", &b.internal_url("/v1/broadcast"), &[], "news").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["sessions"], 250);
    assert_eq!(v["delivered"], 240);
    assert_eq!(v["gone"], 10);
    assert_eq!(v["failed"], 0);
    assert_eq!(v["complete"], true);
    assert_eq!(fake.calls().iter().filter(|c| c.body == "news").count(), 250);
    // The gone sessions were cleaned up.
    assert_eq!(
        get(&b.internal_url("/v1/connections/conn000000000003")).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get(&b.internal_url("/v1/connections/conn000000000100")).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn broadcast_counts_failures_when_the_gateway_is_down() {
    let dead = format!("http://127.0.0.1:{}/dev", free_port());
    let mut a = args();
    a.push_endpoint = Some(dead);
    a.aws_timeout = "500ms".into();
    let b = start(a).await;
    for i in 0..3 {
        call(&b, "/connect", &format!("dead{i:012}"), "").await;
    }
    let (status, _, body) = send("POST", &b.internal_url("/v1/broadcast"), &[], "x").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (v["delivered"].as_u64(), v["failed"].as_u64()),
        (Some(0), Some(3)),
        "{body}"
    );
    // Failed (not gone) pushes keep their sessions.
    assert_eq!(
        get(&b.internal_url("/v1/connections/dead000000000001")).await.0,
        StatusCode::OK
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

const TOKEN: &str = "internal-token-0123456789";

#[tokio::test]
async fn internal_token_guards_the_v1_api_but_not_health_or_metrics() {
    let mut a = args();
    a.internal_token = Some(TOKEN.into());
    let b = start(a).await;
    call(&b, "/connect", "tOkEn0000000000=", "").await;
    let url = b.internal_url("/v1/connections/tOkEn0000000000=");
    let bearer = format!("Bearer {TOKEN}");
    let lower = format!("bearer {TOKEN}");
    let refused: [&[(&str, &str)]; 5] = [
        &[],
        &[("authorization", "Bearer internal-token-012345678")],
        &[("authorization", "Bearer internal-token-0123456789x")],
        &[("authorization", "Basic aW50ZXJuYWw6dG9rZW4=")],
        &[("authorization", TOKEN)],
    ];
    for headers in refused {
        let (status, h, body) = send("GET", &url, headers, "").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{headers:?}: {body}");
        assert_eq!(h["content-type"], "application/json");
        assert!(h["www-authenticate"].to_str().unwrap().starts_with("Bearer"));
        let v: serde_json::Value = serde_json::from_str(&body).expect("json error");
        assert!(v["error"].as_str().unwrap().contains("bearer token"), "{body}");
    }
    // Every /v1 route is guarded, before anything is read or sent.
    for (method, path) in [
        ("POST", "/v1/connections/tOkEn0000000000=/messages"),
        ("DELETE", "/v1/connections/tOkEn0000000000="),
        ("POST", "/v1/broadcast"),
    ] {
        let (status, _, _) = send(method, &b.internal_url(path), &[], "x").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path}");
    }
    for auth in [&bearer, &lower] {
        let (status, _, body) = send("GET", &url, &[("authorization", auth.as_str())], "").await;
        assert_eq!(status, StatusCode::OK, "{auth}: {body}");
    }
    // Probes and Prometheus need no token.
    for path in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(get(&b.internal_url(path)).await.0, StatusCode::OK, "{path}");
    }
    let text = get(&b.internal_url("/metrics")).await.1;
    assert_eq!(
        metric_value(
            &text,
            "socketless_http_requests_total{listener=\"internal\",route=\"unauthorized\",status=\"401\"}"
        ),
        8.0
    );
    // The public port never asks for it.
    assert_eq!(call(&b, "/message", "tOkEn0000000000=", "hi").await.0, StatusCode::OK);
}

#[test]
fn internal_token_is_validated_at_start() {
    for (token, why) in [
        ("short-token", "at least 16"),
        ("a token with spaces", "printable ASCII"),
        ("quote\"d-token-0123456", "printable ASCII"),
    ] {
        let mut a = args();
        a.internal_token = Some(token.into());
        let err = a.validate().expect_err(token).to_string();
        assert!(err.contains("--internal-token") && err.contains(why), "{token}: {err}");
    }
    let mut a = args();
    a.internal_token = Some(TOKEN.into());
    let config = a.validate().expect("a valid token");
    assert!(
        !format!("{config:?}").contains(TOKEN),
        "the token never appears in debug output"
    );
}

/// `serve` as a process with the internal token from `token` (or none): what it logged once
/// ready.
fn serve_log(name: &str, token: Option<&str>) -> String {
    let log = std::env::temp_dir().join(format!("socketless-{name}-{}.log", std::process::id()));
    let file = std::fs::File::create(&log).unwrap();
    let mut command = proc::command();
    command
        .args([
            "serve",
            "--listen=127.0.0.1:0",
            "--internal-listen=127.0.0.1:0",
            "--shutdown-delay=0s",
            "--region=us-east-1",
        ])
        .env_remove("SOCKETLESS_INTERNAL_TOKEN")
        .stdout(file.try_clone().unwrap())
        .stderr(file);
    if let Some(token) = token {
        command.env("SOCKETLESS_INTERNAL_TOKEN", token);
    }
    let mut serve = proc::Proc::spawn(&mut command);
    let text = proc::wait_for("serve ready", T, || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.contains("socketless serve ready").then_some(text)
    });
    serve.signal("TERM");
    assert!(serve.wait_exit(T).success());
    let _ = std::fs::remove_file(&log);
    text
}

#[test]
fn serve_warns_once_when_the_internal_api_is_unauthenticated() {
    let text = serve_log("no-token", None);
    assert_eq!(
        text.matches("the internal API (/v1) is unauthenticated").count(),
        1,
        "{text}"
    );
    assert!(text.contains("SOCKETLESS_INTERNAL_TOKEN"), "{text}");
    let text = serve_log("token", Some(TOKEN));
    assert!(!text.contains("unauthenticated"), "{text}");
    assert!(!text.contains(TOKEN), "the token is never logged: {text}");
    // --help names the variable but never shows its value.
    let help = proc::command()
        .args(["serve", "--help"])
        .env("SOCKETLESS_INTERNAL_TOKEN", TOKEN)
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("SOCKETLESS_INTERNAL_TOKEN"), "{help}");
    assert!(!help.contains(TOKEN), "{help}");
}

/// An `@connections` endpoint that answers every call with `status` and an AWS error type.
async fn failing_connections(status: u16, error_type: &'static str) -> (String, Arc<std::sync::Mutex<u32>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let calls = Arc::new(std::sync::Mutex::new(0u32));
    let seen = calls.clone();
    fake_server(listener, move |_req| {
        let seen = seen.clone();
        async move {
            *seen.lock().unwrap() += 1;
            Ok(http::Response::builder()
                .status(status)
                .header("x-amzn-errortype", error_type)
                .header("content-type", "application/json")
                .body(http_body_util::Full::new(Bytes::from_static(
                    b"{\"message\":\"Internal server error\"}",
                )))
                .unwrap())
        }
    });
    (format!("http://{addr}/dev"), calls)
}

#[tokio::test]
async fn a_5xx_from_connections_fails_the_push_and_keeps_the_session() {
    for (status, error_type) in [
        (500, "InternalServerErrorException"),
        (502, ""),
        (503, "ServiceUnavailableException"),
    ] {
        let (endpoint, calls) = failing_connections(status, error_type).await;
        let mut a = args();
        a.reply_mode = "async".into();
        a.push_endpoint = Some(endpoint);
        a.aws_timeout = "5s".into();
        let b = start(a).await;
        let id = "fIvExX000000000=";
        assert_eq!(call(&b, "/connect", id, "").await.0, StatusCode::OK);
        let session = b.internal_url("/v1/connections/fIvExX000000000%3D");

        // An asynchronous reply that the gateway answers with a 5xx: the call fails (502), the
        // session stays.
        let (code, body) = call(&b, "/message", id, "reply").await;
        assert_eq!(code, StatusCode::BAD_GATEWAY, "{status}: {body}");
        assert_eq!(get(&session).await.0, StatusCode::OK, "{status}: the session stays");

        // A push through the internal API: the same.
        let (code, _, body) = send("POST", &format!("{session}/messages"), &[], "pushed").await;
        assert_eq!(code, StatusCode::BAD_GATEWAY, "{status}: {body}");
        assert_eq!(get(&session).await.0, StatusCode::OK, "{status}: the session stays");

        // A broadcast counts it as failed, not gone.
        let (code, _, body) = send("POST", &b.internal_url("/v1/broadcast"), &[], "all").await;
        assert_eq!(code, StatusCode::OK, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            (v["failed"].as_u64(), v["gone"].as_u64()),
            (Some(1), Some(0)),
            "{status}: {body}"
        );
        assert_eq!(get(&session).await.0, StatusCode::OK, "{status}: the session stays");

        let text = get(&b.internal_url("/metrics")).await.1;
        assert_eq!(
            metric_value(&text, "socketless_pushes_total{outcome=\"failed\"}"),
            3.0,
            "{status}: one failed push each, retries included"
        );
        assert_eq!(metric_value(&text, "socketless_pushes_total{outcome=\"gone\"}"), 0.0);
        assert!(*calls.lock().unwrap() >= 3, "{status}: the gateway was called");
    }
}

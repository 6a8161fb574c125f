//! `socketless serve`'s internal API on real sockets with the in-memory store: asynchronous
//! replies, pushes, close, lookup and broadcast against a fake `@connections` server (including
//! one that answers 5xx), and the internal API's bearer token, checked in-process and in the
//! binary's log.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::*;
use http::StatusCode;

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
    let calls = fake.connections_calls();
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
    let calls = fake.connections_calls();
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
    let log = binary::log_path(name);
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

//! `socketless gateway` against the API Gateway WebSocket contract, part two: the `@connections`
//! management API (POST, GET, DELETE, 410, 413, 429), `$disconnect`'s close status, shutdown with
//! 1001, and the paths that are neither. On real sockets with a fake backend; the gateway is loaded
//! from cfn/websocket-api.yml. Part one (handshake, routing, limits, messages) is
//! tests/gateway_contract.rs.

mod common;

use std::time::Duration;

use common::gw::*;
use common::{send, within};
use http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

#[tokio::test]
async fn connections_api_post_get_delete_gone_and_too_large() {
    let backend = FakeBackend::start().await;
    let gw = repo_gateway(&backend, |_| {}).await;
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(gw.url()).unwrap();
    req.headers_mut().insert("user-agent", "agent/2".parse().unwrap());
    let (mut ws, _) = within(tokio_tungstenite::connect_async(req)).await.unwrap();
    let id = connection_id(&backend.seen("/connect")[0]);
    let encoded = format!("http://{}/dev/%40connections/{}", gw.addr, id.replace('=', "%3D"));

    let (status, _, body) = send("POST", &encoded, &[], "via encoded path").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(next_text(&mut ws).await, "via encoded path");

    let (status, _, body) = send("GET", &gw.mgmt(&id), &[], "").await;
    assert_eq!(status, StatusCode::OK);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    for key in ["connectedAt", "lastActiveAt"] {
        let t = v[key].as_str().unwrap();
        assert!(
            t.len() == 24 && t.ends_with('Z') && t.as_bytes()[10] == b'T',
            "{key}: {t}"
        );
    }
    assert_eq!(v["identity"]["sourceIp"], "127.0.0.1");
    assert_eq!(v["identity"]["userAgent"], "agent/2");

    let (status, headers, _) = send("POST", &gw.mgmt(&id), &[], "x".repeat(131_073)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(headers["x-amzn-errortype"], "PayloadTooLargeException");
    let (status, _, _) = send("POST", &gw.mgmt(&id), &[], "y".repeat(131_072)).await;
    assert_eq!(status, StatusCode::OK, "exactly 131072 bytes is allowed");
    assert_eq!(next_text(&mut ws).await.len(), 131_072);

    let (status, _, _) = send("DELETE", &gw.mgmt(&id), &[], "").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(close_code(&mut ws).await.0, 1000);
    let d = backend.wait_for("/disconnect", 1).await;
    assert_eq!(d[0].headers["x-socketless-disconnect-status"], "1000");
    assert_eq!(
        d[0].headers["x-socketless-disconnect-reason"],
        "Connection Closed Normally"
    );

    for method in ["POST", "GET", "DELETE"] {
        let (status, headers, body) = send(method, &gw.mgmt(&id), &[], "late").await;
        assert_eq!(status, StatusCode::GONE, "{method} after close");
        assert_eq!(headers["x-amzn-errortype"], "GoneException");
        assert!(serde_json::from_str::<serde_json::Value>(&body).is_ok());
    }
    let (status, _, _) = send("POST", &gw.mgmt("neverExisted0000"), &[], "x").await;
    assert_eq!(status, StatusCode::GONE);
}

#[tokio::test]
async fn a_client_that_never_reads_gets_429_not_unbounded_buffers() {
    let backend = FakeBackend::start().await;
    let gw = repo_gateway(&backend, |c| c.outbound_queue = 4).await;
    let _ws = connect(&gw.url()).await; // never read from
    let id = connection_id(&backend.seen("/connect")[0]);
    let big = "z".repeat(128 * 1024);
    let mut throttled = false;
    for _ in 0..2000 {
        let (status, headers, _) = send("POST", &gw.mgmt(&id), &[], big.clone()).await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(headers["x-amzn-errortype"], "LimitExceededException");
            throttled = true;
            break;
        }
        assert_eq!(status, StatusCode::OK);
    }
    assert!(throttled, "posts to a client that never reads must hit 429");
}

#[tokio::test]
async fn disconnect_carries_the_client_close_status() {
    let backend = FakeBackend::start().await;
    let gw = repo_gateway(&backend, |_| {}).await;
    let mut ws = connect(&gw.url()).await;
    within(ws.close(Some(CloseFrame {
        code: CloseCode::from(4001),
        reason: "bye now".into(),
    })))
    .await
    .unwrap();
    let d = backend.wait_for("/disconnect", 1).await;
    assert_eq!(d[0].headers["x-socketless-disconnect-status"], "4001");
    assert_eq!(d[0].headers["x-socketless-disconnect-reason"], "bye now");
    assert_eq!(d[0].headers["x-socketless-event-type"], "DISCONNECT");
    assert_eq!(d[0].headers["x-socketless-route-key"], "$disconnect");
    // A dropped TCP connection is 1006.
    let ws2 = connect(&gw.url()).await;
    drop(ws2);
    let d = backend.wait_for("/disconnect", 2).await;
    assert_eq!(d[1].headers["x-socketless-disconnect-status"], "1006");
}

#[tokio::test]
async fn shutdown_closes_clients_with_1001_and_runs_disconnect() {
    let backend = FakeBackend::start().await;
    let gw = repo_gateway(&backend, |_| {}).await;
    let mut a = connect(&gw.url()).await;
    let mut b = connect(&gw.url()).await;
    gw.lifecycle.begin_shutdown();
    let (status, _, _) = send("GET", &format!("http://{}/readyz", gw.addr), &[], "").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    gw.lifecycle.stop_accepting();
    assert_eq!(close_code(&mut a).await.0, 1001);
    assert_eq!(close_code(&mut b).await.0, 1001);
    backend.wait_for("/disconnect", 2).await;
    // The listener is closed: new connections are refused.
    within(async {
        while tokio::net::TcpStream::connect(gw.addr).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(gw.gateway.active(), 0);
}

#[tokio::test]
async fn unknown_paths_and_health() {
    let backend = FakeBackend::start().await;
    let gw = repo_gateway(&backend, |_| {}).await;
    let (status, headers, _) = send("GET", &format!("http://{}/prod", gw.addr), &[], "").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(headers["x-amzn-errortype"], "ForbiddenException");
    let (status, _, _) = send("GET", &format!("http://{}/dev", gw.addr), &[], "").await;
    assert_eq!(
        status,
        StatusCode::UPGRADE_REQUIRED,
        "a plain GET on the stage is not a WebSocket"
    );
    let (status, _, _) = send("GET", &format!("http://{}/healthz", gw.addr), &[], "").await;
    assert_eq!(status, StatusCode::OK);
    let _ws = connect(&gw.url()).await;
    let (_, _, text) = send("GET", &format!("http://{}/metrics", gw.addr), &[], "").await;
    for needle in [
        "socketless_gateway_active_connections 1",
        "socketless_gateway_connects_total{result=\"accepted\"} 1",
        "socketless_gateway_integration_latency_seconds_count{route=\"$connect\"} 1",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
}

/// An orderly close (DELETE, the duration cut) writes what was queued before it. The client
/// reads nothing while 120 KiB posts fill the socket and then its queue (the first 429 proves
/// frames are queued when the DELETE comes); every post answered 200 arrives, in order, before
/// the 1000, and a post after the DELETE is 410.
#[tokio::test]
async fn delete_after_posts_delivers_the_queued_frames_first() {
    let backend = FakeBackend::start().await;
    let gw = repo_gateway(&backend, |_| {}).await;
    let (mut ws, _) = within(tokio_tungstenite::connect_async(gw.url())).await.unwrap();
    let id = connection_id(&backend.seen("/connect")[0]);
    let mut accepted = 0;
    let mut refused = None;
    for n in 0..400 {
        let (status, _, _) = send("POST", &gw.mgmt(&id), &[], format!("{n:04}-{}", "x".repeat(120 * 1024))).await;
        if status != StatusCode::OK {
            refused = Some(status);
            break;
        }
        accepted += 1;
    }
    assert_eq!(refused, Some(StatusCode::TOO_MANY_REQUESTS), "after {accepted} posts");
    let (status, _, _) = send("DELETE", &gw.mgmt(&id), &[], "").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _, _) = send("POST", &gw.mgmt(&id), &[], "after the close").await;
    assert_eq!(status, StatusCode::GONE);
    for n in 0..accepted {
        let text = next_text(&mut ws).await;
        assert_eq!(&text[..4], format!("{n:04}"), "frame {n} of {accepted}");
    }
    assert_eq!(close_code(&mut ws).await.0, 1000);
}

/// A DELETE that comes while the connection is still in `$connect` answers 410 (as API Gateway
/// answers any call then), and the connection is closed with 1000 as soon as it opens.
#[tokio::test]
async fn delete_during_the_handshake_closes_the_connection_when_it_opens() {
    let backend = FakeBackend::start().await;
    backend.answer(
        "/connect",
        Answer {
            delay: Duration::from_millis(500),
            ..Answer::default()
        },
    );
    let gw = repo_gateway(&backend, |_| {}).await;
    let url = gw.url();
    let opening = tokio::spawn(async move { within(tokio_tungstenite::connect_async(url)).await });
    let id = connection_id(&backend.wait_for("/connect", 1).await[0]);
    let (status, _, _) = send("DELETE", &gw.mgmt(&id), &[], "").await;
    assert_eq!(status, StatusCode::GONE, "a connection in $connect is not there yet");
    let (mut ws, _) = opening.await.unwrap().expect("the handshake completes");
    assert_eq!(close_code(&mut ws).await.0, 1000);
    backend.wait_for("/disconnect", 1).await;
    // The next connection opens and stays open.
    backend.answer("/connect", Answer::default());
    let (mut ws2, _) = within(tokio_tungstenite::connect_async(gw.url())).await.unwrap();
    let id2 = connection_id(&backend.seen("/connect")[1]);
    let (status, _, _) = send("POST", &gw.mgmt(&id2), &[], "still open").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(next_text(&mut ws2).await, "still open");
}

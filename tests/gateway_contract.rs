//! `socketless gateway` against the API Gateway WebSocket contract, one test per checklist item,
//! on real sockets with a fake backend. The gateway is loaded from cfn/websocket-api.yml. This part:
//! the handshake, routing, limits and messages; tests/gateway_connections_api.rs has the rest.

mod common;

use std::time::{Duration, Instant};

use common::gw::*;
use common::{send, within};
use futures_util::{SinkExt, StreamExt};
use http::StatusCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

#[tokio::test]
async fn rejected_connect_refuses_the_handshake_with_its_status() {
    let backend = FakeBackend::start().await;
    let gw = repo_gateway(&backend, |_| {}).await;
    for status in [401u16, 403, 400, 500] {
        backend.answer(
            "/connect",
            Answer {
                status,
                ..Default::default()
            },
        );
        let err = within(tokio_tungstenite::connect_async(gw.url()))
            .await
            .expect_err("handshake must fail");
        match err {
            tokio_tungstenite::tungstenite::Error::Http(resp) => assert_eq!(resp.status().as_u16(), status),
            other => panic!("expected an HTTP error, got {other:?}"),
        }
    }
    // A refused connect never reaches $disconnect, and leaves no connection behind.
    assert!(backend.seen("/disconnect").is_empty());
    assert_eq!(gw.gateway.active(), 0);
}

#[tokio::test]
async fn connect_runs_before_the_upgrade_and_unreachable_backend_is_5xx() {
    let backend = FakeBackend::start().await;
    let gw = repo_gateway(&backend, |_| {}).await;
    let mut ws = connect(&gw.url()).await;
    // By the time the handshake completed, $connect had already been called.
    assert_eq!(backend.seen("/connect").len(), 1);
    send_text(&mut ws, "hi").await;
    assert_eq!(next_text(&mut ws).await, "hi");
    backend.stop();
    let err = within(tokio_tungstenite::connect_async(gw.url()))
        .await
        .expect_err("refused");
    match err {
        tokio_tungstenite::tungstenite::Error::Http(resp) => assert_eq!(resp.status(), StatusCode::BAD_GATEWAY),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn only_mapped_parameters_reach_the_backend() {
    let backend = FakeBackend::start().await;
    let gw = repo_gateway(&backend, |_| {}).await;
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(gw.url()).unwrap();
    req.headers_mut()
        .insert("x-client-secret-header", "leak?".parse().unwrap());
    req.headers_mut()
        .insert("user-agent", "contract-test/1".parse().unwrap());
    let (mut ws, _) = within(tokio_tungstenite::connect_async(req)).await.unwrap();
    send_text(&mut ws, r#"{"action":"anything","x":1}"#).await;
    assert_eq!(next_text(&mut ws).await, r#"{"action":"anything","x":1}"#);
    let connect = backend.seen("/connect").remove(0);
    let message = backend.seen("/message").remove(0);
    let id = connection_id(&connect);
    assert_eq!(id.len(), 16, "{id}");
    assert!(id.ends_with('='), "{id}");
    assert_eq!(connection_id(&message), id);
    for (seen, event, route) in [(&connect, "CONNECT", "$connect"), (&message, "MESSAGE", "$default")] {
        let h = &seen.headers;
        assert_eq!(h["x-socketless-event-type"], event);
        assert_eq!(h["x-socketless-route-key"], route);
        assert_eq!(h["x-socketless-stage"], "dev");
        assert_eq!(h["x-socketless-secret"], "0123456789abcdef-test");
        assert_eq!(h["x-socketless-source-ip"], "127.0.0.1");
        assert_eq!(h["x-socketless-user-agent"], "contract-test/1");
        assert_eq!(h["x-socketless-request-id"].len(), 16);
        assert!(h["x-socketless-connected-at"].to_str().unwrap().parse::<i64>().unwrap() > 1_600_000_000_000);
        assert_eq!(h["x-socketless-domain-name"], gw.addr.to_string().as_str());
        // Nothing unmapped: not the client's headers, not the WebSocket handshake.
        for leaked in [
            "x-client-secret-header",
            "sec-websocket-key",
            "sec-websocket-version",
            "upgrade",
            "cookie",
        ] {
            assert!(!h.contains_key(leaked), "{leaked} reached the backend on {event}");
        }
        let mapped: Vec<&str> = h.keys().map(|k| k.as_str()).filter(|k| k.starts_with("x-")).collect();
        assert!(mapped.iter().all(|k| k.starts_with("x-socketless-")), "{mapped:?}");
    }
    assert_eq!(connect.body, "", "$connect has no body");
    // The id the backend saw is the id @connections answers to.
    let (status, _, _) = send("POST", &gw.mgmt(&id), &[], "pushed").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(next_text(&mut ws).await, "pushed");
}

const ROUTES_TEMPLATE: &str = r#"
Parameters:
  Backend: { Type: String }
  WithDefault: { Type: String, Default: "true" }
  WithResponse: { Type: String, Default: "true" }
Conditions:
  HasDefault: !Equals [!Ref WithDefault, "true"]
  HasResponse: !Equals [!Ref WithResponse, "true"]
Resources:
  Api:
    Type: AWS::ApiGatewayV2::Api
    Properties: { Name: routes, ProtocolType: WEBSOCKET, RouteSelectionExpression: "$request.body.action" }
  Custom:
    Type: AWS::ApiGatewayV2::Integration
    Properties:
      ApiId: !Ref Api
      IntegrationType: HTTP_PROXY
      IntegrationMethod: POST
      IntegrationUri: !Sub "${Backend}/custom"
      RequestParameters:
        integration.request.header.x-room: route.request.body.room
        integration.request.header.x-color: stageVariables.color
        integration.request.querystring.conn: context.connectionId
  Fallback:
    Type: AWS::ApiGatewayV2::Integration
    Condition: HasDefault
    Properties: { ApiId: !Ref Api, IntegrationType: HTTP_PROXY, IntegrationMethod: POST, IntegrationUri: !Sub "${Backend}/fallback" }
  SendRoute:
    Type: AWS::ApiGatewayV2::Route
    Properties: { ApiId: !Ref Api, RouteKey: sendmessage, Target: !Sub "integrations/${Custom}", RouteResponseSelectionExpression: "$default" }
  SendResponse:
    Type: AWS::ApiGatewayV2::RouteResponse
    Condition: HasResponse
    Properties: { ApiId: !Ref Api, RouteId: !Ref SendRoute, RouteResponseKey: "$default" }
  DefaultRoute:
    Type: AWS::ApiGatewayV2::Route
    Condition: HasDefault
    Properties: { ApiId: !Ref Api, RouteKey: "$default", Target: !Sub "integrations/${Fallback}" }
  Stage:
    Type: AWS::ApiGatewayV2::Stage
    Properties: { ApiId: !Ref Api, StageName: test, StageVariables: { color: teal } }
"#;

#[tokio::test]
async fn route_selection_custom_default_and_forbidden() {
    let backend = FakeBackend::start().await;
    let params = vec![("Backend".to_string(), backend.uri())];
    let gw = start_gateway(ROUTES_TEMPLATE, &params, |_| {}).await;
    let mut ws = connect(&gw.url()).await;
    send_text(&mut ws, r#"{"action":"sendmessage","room":"42"}"#).await;
    assert_eq!(next_text(&mut ws).await, r#"{"action":"sendmessage","room":"42"}"#);
    let custom = backend.wait_for("/custom", 1).await.remove(0);
    assert_eq!(custom.headers["x-room"], "42", "route.request.body mapping");
    assert_eq!(custom.headers["x-color"], "teal", "stage variable mapping");
    assert!(
        !custom.headers.contains_key("x-socketless-connection-id"),
        "nothing implicit is sent"
    );
    // Unmatched key and non-JSON both go to $default, which has no route response: no reply.
    send_text(&mut ws, r#"{"action":"nope"}"#).await;
    send_text(&mut ws, "plain text").await;
    let fallback = backend.wait_for("/fallback", 2).await;
    assert_eq!(fallback[0].body, r#"{"action":"nope"}"#);
    assert_eq!(fallback[1].body, "plain text");
    // $default has no route response here: neither message got a reply frame.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), ws.next())
            .await
            .is_err()
    );

    // Without a $default route: non-matching messages get the Forbidden frame.
    let params = vec![
        ("Backend".to_string(), backend.uri()),
        ("WithDefault".to_string(), "false".to_string()),
    ];
    let gw2 = start_gateway(ROUTES_TEMPLATE, &params, |_| {}).await;
    let mut ws2 = connect(&gw2.url()).await;
    send_text(&mut ws2, "not json").await;
    let frame: serde_json::Value = serde_json::from_str(&next_text(&mut ws2).await).unwrap();
    assert_eq!(frame["message"], "Forbidden");
    assert_eq!(frame["connectionId"].as_str().unwrap().len(), 16);
    assert_eq!(frame["requestId"].as_str().unwrap().len(), 16);
    send_text(&mut ws2, r#"{"action":"other"}"#).await;
    let frame: serde_json::Value = serde_json::from_str(&next_text(&mut ws2).await).unwrap();
    assert_eq!(frame["message"], "Forbidden");
    // The connection stays open.
    send_text(&mut ws2, r#"{"action":"sendmessage"}"#).await;
    assert_eq!(next_text(&mut ws2).await, r#"{"action":"sendmessage"}"#);
}

#[tokio::test]
async fn no_route_response_means_no_reply() {
    let backend = FakeBackend::start().await;
    let params = vec![
        ("Backend".to_string(), backend.uri()),
        ("WithResponse".to_string(), "false".to_string()),
    ];
    let gw = start_gateway(ROUTES_TEMPLATE, &params, |_| {}).await;
    let mut ws = connect(&gw.url()).await;
    send_text(&mut ws, r#"{"action":"sendmessage"}"#).await;
    // The backend answered with a body, but the route has no route response.
    backend.wait_for("/custom", 1).await;
    within(ws.send(Message::text(r#"{"action":"other"}"#))).await.unwrap();
    backend.wait_for("/fallback", 1).await;
    assert_eq!(gw.gateway.active(), 1);
    // No frame arrived for either message.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), ws.next())
            .await
            .is_err()
    );
}

#[tokio::test]
async fn oversize_message_and_frame_close_1009_and_frames_reassemble() {
    let backend = FakeBackend::start().await;
    let gw = repo_gateway(&backend, |_| {}).await;

    // 100 KiB in four 25 KiB frames: reassembled and delivered.
    let mut ws = connect(&gw.url()).await;
    let chunk = "a".repeat(25 * 1024);
    for i in 0..4 {
        let (op, fin) = if i == 0 {
            (OpCode::Data(Data::Text), false)
        } else {
            (OpCode::Data(Data::Continue), i == 3)
        };
        within(ws.send(Message::Frame(Frame::message(chunk.clone(), op, fin))))
            .await
            .unwrap();
    }
    assert_eq!(next_text(&mut ws).await.len(), 100 * 1024);

    // Over 128 KiB in 32 KiB frames: 1009.
    let chunk = "b".repeat(32 * 1024);
    for i in 0..5 {
        let (op, fin) = if i == 0 {
            (OpCode::Data(Data::Text), false)
        } else {
            (OpCode::Data(Data::Continue), i == 4)
        };
        let _ = ws.send(Message::Frame(Frame::message(chunk.clone(), op, fin))).await;
    }
    assert_eq!(close_code(&mut ws).await.0, 1009);

    // One frame over 32 KiB: 1009.
    let mut ws = connect(&gw.url()).await;
    let _ = ws.send(Message::text("c".repeat(33 * 1024))).await;
    assert_eq!(close_code(&mut ws).await.0, 1009);
    let disconnects = backend.wait_for("/disconnect", 2).await;
    assert!(
        disconnects
            .iter()
            .all(|d| d.headers["x-socketless-disconnect-status"] == "1009")
    );
}

#[tokio::test]
async fn binary_frames_close_1003() {
    let backend = FakeBackend::start().await;
    let gw = repo_gateway(&backend, |_| {}).await;
    let mut ws = connect(&gw.url()).await;
    within(ws.send(Message::binary(vec![1u8, 2, 3]))).await.unwrap();
    assert_eq!(close_code(&mut ws).await.0, 1003);
    assert!(
        backend.seen("/message").is_empty(),
        "binary frames never reach the backend"
    );
}

#[tokio::test]
async fn idle_connections_close_after_the_idle_timeout() {
    let backend = FakeBackend::start().await;
    let gw = repo_gateway(&backend, |c| c.idle_timeout = Duration::from_millis(400)).await;
    let mut ws = connect(&gw.url()).await;
    // Activity keeps it open past one timeout...
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        send_text(&mut ws, "keepalive").await;
        assert_eq!(next_text(&mut ws).await, "keepalive");
    }
    // ...silence closes it.
    let started = Instant::now();
    let (code, reason) = close_code(&mut ws).await;
    assert_eq!((code, reason.as_str()), (1001, "Idle timeout"));
    assert!(started.elapsed() >= Duration::from_millis(300));
    let d = backend.wait_for("/disconnect", 1).await;
    assert_eq!(d[0].headers["x-socketless-disconnect-status"], "1001");
}

#[tokio::test]
async fn connections_close_at_the_maximum_duration() {
    let backend = FakeBackend::start().await;
    let gw = repo_gateway(&backend, |c| c.max_connection_duration = Duration::from_millis(300)).await;
    let mut ws = connect(&gw.url()).await;
    assert_eq!(close_code(&mut ws).await.0, 1001);
}

#[tokio::test]
async fn maximum_connection_count_refuses_clearly() {
    let backend = FakeBackend::start().await;
    let gw = repo_gateway(&backend, |c| c.max_connections = 2).await;
    let _a = connect(&gw.url()).await;
    let _b = connect(&gw.url()).await;
    let err = within(tokio_tungstenite::connect_async(gw.url()))
        .await
        .expect_err("over the limit");
    match err {
        tokio_tungstenite::tungstenite::Error::Http(resp) => {
            assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
            let body = String::from_utf8_lossy(resp.body().as_deref().unwrap_or_default()).into_owned();
            assert!(body.contains("LimitExceededException"), "{body}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        backend.seen("/connect").len(),
        2,
        "a refused handshake never calls $connect"
    );
}

#[tokio::test]
async fn integration_timeout_sends_the_timeout_frame() {
    let backend = FakeBackend::start().await;
    let gw = repo_gateway(&backend, |c| c.integration_timeout = Some(Duration::from_millis(200))).await;
    let mut ws = connect(&gw.url()).await;
    send_text(&mut ws, "sleep:1500").await;
    let frame: serde_json::Value = serde_json::from_str(&next_text(&mut ws).await).unwrap();
    assert_eq!(frame["message"], "Endpoint request timed out");
    assert_eq!(frame["connectionId"].as_str().unwrap().len(), 16);
    // Still open.
    send_text(&mut ws, "after").await;
    assert_eq!(next_text(&mut ws).await, "after");
}

#[tokio::test]
async fn backend_failure_sends_internal_server_error_and_keeps_the_connection() {
    let backend = FakeBackend::start().await;
    let gw = repo_gateway(&backend, |_| {}).await;
    let mut ws = connect(&gw.url()).await;
    backend.answer(
        "/message",
        Answer {
            hang_up: true,
            ..Default::default()
        },
    );
    send_text(&mut ws, "boom").await;
    let frame: serde_json::Value = serde_json::from_str(&next_text(&mut ws).await).unwrap();
    assert_eq!(frame["message"], "Internal server error");
    backend.answer("/message", Answer::default());
    send_text(&mut ws, "recovered").await;
    assert_eq!(next_text(&mut ws).await, "recovered");
}

#[tokio::test]
async fn messages_on_one_connection_are_handled_in_order() {
    let backend = FakeBackend::start().await;
    let gw = repo_gateway(&backend, |_| {}).await;
    let mut ws = connect(&gw.url()).await;
    send_text(&mut ws, "1 sleep:300").await;
    send_text(&mut ws, "2").await;
    send_text(&mut ws, "3 sleep:100").await;
    send_text(&mut ws, "4").await;
    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(next_text(&mut ws).await);
    }
    assert_eq!(got, vec!["1 sleep:300", "2", "3 sleep:100", "4"]);
    let bodies: Vec<String> = backend.seen("/message").into_iter().map(|s| s.body).collect();
    assert_eq!(bodies, got, "the backend saw them in order, one at a time");
}

#[tokio::test]
async fn pushes_arrive_while_a_message_is_in_flight() {
    let backend = FakeBackend::start().await;
    let gw = repo_gateway(&backend, |_| {}).await;
    let mut ws = connect(&gw.url()).await;
    let id = connection_id(&backend.seen("/connect")[0]);
    send_text(&mut ws, "slow sleep:500").await;
    backend.wait_for("/message", 1).await;
    let (status, _, _) = send("POST", &gw.mgmt(&id), &[], "meanwhile").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(next_text(&mut ws).await, "meanwhile");
    assert_eq!(next_text(&mut ws).await, "slow sleep:500");
}

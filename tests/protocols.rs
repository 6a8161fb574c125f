//! Subprotocols, binary frames and content handling, on real sockets: what the client offers
//! reaches `/connect` as `x-socketless-subprotocols`, the 101 confirms exactly what the
//! backend chose (none when it chose none; a choice that was not offered refuses the handshake
//! with 502), hostile offers are refused by the header limit; `--binary-frames` passes binary
//! frames both ways (1003 without it, 1009 unchanged), `@connections` posts of type
//! `application/octet-stream` go out binary; ContentHandlingStrategy converts base64 text and
//! binary both ways; and through `serve --upstream` the app chooses the subprotocol and binary
//! replies.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::binary;
use common::gw::{
    FakeBackend, Gw, close_code, connect, next_text, repo_gateway, repo_params, send_text, start_gateway,
};
use common::{accept_each, within};
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use socketless::gateway::EMBEDDED_TEMPLATE;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;

/// One call the scripted backend received, its body as bytes.
#[derive(Debug, Clone)]
struct Call {
    path: String,
    headers: HeaderMap,
    body: Bytes,
}

/// A backend whose `/connect` answers `Sec-WebSocket-Protocol: <choice>` (when set) and whose
/// `/message` echoes the body, marked binary (`x-socketless-frame: binary`) when the call was,
/// or as `Content-Type: application/octet-stream` when `octet` is set.
#[derive(Clone, Default)]
struct Scripted {
    calls: Arc<Mutex<Vec<Call>>>,
    choice: Arc<Mutex<Option<String>>>,
    octet: Arc<Mutex<bool>>,
}

impl Scripted {
    async fn start() -> (Scripted, String) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let me = Scripted::default();
        let m = me.clone();
        accept_each(listener, move |stream| {
            let m = m.clone();
            async move {
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let m = m.clone();
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                        let path = parts.uri.path().to_string();
                        m.calls.lock().unwrap().push(Call {
                            path: path.clone(),
                            headers: parts.headers.clone(),
                            body: body.clone(),
                        });
                        let mut resp = Response::new(Full::new(Bytes::new()));
                        match path.as_str() {
                            "/connect" => {
                                if let Some(p) = m.choice.lock().unwrap().clone() {
                                    resp.headers_mut().insert("sec-websocket-protocol", p.parse().unwrap());
                                }
                            }
                            "/message" => {
                                let binary = parts.headers.get("x-socketless-frame").is_some();
                                if binary {
                                    resp.headers_mut()
                                        .insert("x-socketless-frame", "binary".parse().unwrap());
                                }
                                if *m.octet.lock().unwrap() {
                                    resp.headers_mut()
                                        .insert("content-type", "application/octet-stream".parse().unwrap());
                                }
                                *resp.body_mut() = Full::new(body);
                            }
                            _ => {}
                        }
                        Ok::<_, std::io::Error>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            }
        });
        (me, url)
    }

    fn choose(&self, p: Option<&str>) {
        *self.choice.lock().unwrap() = p.map(str::to_owned);
    }

    fn calls(&self, path: &str) -> Vec<Call> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.path == path)
            .cloned()
            .collect()
    }

    async fn wait_for(&self, path: &str, n: usize) -> Vec<Call> {
        within(async {
            loop {
                let c = self.calls(path);
                if c.len() >= n {
                    return c;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
    }
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name).map(|v| v.to_str().unwrap().to_string())
}

/// A raw handshake with these extra header lines: the status and the response's headers
/// (lowercase names). The socket is returned so an accepted connection stays open.
async fn handshake(
    addr: std::net::SocketAddr,
    path: &str,
    extra: &[String],
) -> (u16, Vec<(String, String)>, TcpStream) {
    let mut s = within(TcpStream::connect(addr)).await.unwrap();
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    );
    for line in extra {
        req.push_str(line);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    // A refusal may come before the request is written whole; the answer is what counts.
    let _ = within(s.write_all(req.as_bytes())).await;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match within(s.read(&mut byte)).await {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut lines = text.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, s)
}

fn protocols_in(headers: &[(String, String)]) -> Vec<String> {
    headers
        .iter()
        .filter(|(k, _)| k == "sec-websocket-protocol")
        .map(|(_, v)| v.clone())
        .collect()
}

async fn gateway(backend: &str, binary_frames: bool) -> Gw {
    start_gateway(EMBEDDED_TEMPLATE, &repo_params(backend), |c| {
        c.binary_frames = binary_frames
    })
    .await
}

#[tokio::test]
async fn offered_and_chosen_is_echoed_exactly() {
    let (backend, url) = Scripted::start().await;
    let gw = gateway(&url, false).await;
    backend.choose(Some("graphql-transport-ws"));
    let (status, headers, _s) = handshake(
        gw.addr,
        "/dev",
        &["Sec-WebSocket-Protocol: graphql-transport-ws, graphql-ws".into()],
    )
    .await;
    assert_eq!(status, 101);
    assert_eq!(protocols_in(&headers), vec!["graphql-transport-ws"]);
    let connect = backend.wait_for("/connect", 1).await;
    assert_eq!(
        header(&connect[0].headers, "x-socketless-subprotocols").as_deref(),
        Some("graphql-transport-ws, graphql-ws"),
        "the offer reaches /connect as offered"
    );
}

#[tokio::test]
async fn offered_and_none_chosen_echoes_none() {
    let (backend, url) = Scripted::start().await;
    let gw = gateway(&url, false).await;
    backend.choose(None);
    let (status, headers, _s) = handshake(gw.addr, "/dev", &["Sec-WebSocket-Protocol: chat".into()]).await;
    assert_eq!(status, 101);
    assert!(protocols_in(&headers).is_empty(), "{headers:?}");
    // Nothing offered: nothing mapped.
    let (status, headers, _s) = handshake(gw.addr, "/dev", &[]).await;
    assert_eq!(status, 101);
    assert!(protocols_in(&headers).is_empty());
    let connect = backend.wait_for("/connect", 2).await;
    assert_eq!(
        header(&connect[0].headers, "x-socketless-subprotocols").as_deref(),
        Some("chat")
    );
    assert_eq!(header(&connect[1].headers, "x-socketless-subprotocols"), None);
}

#[tokio::test]
async fn chosen_but_not_offered_is_refused_and_disconnected() {
    let (backend, url) = Scripted::start().await;
    let gw = gateway(&url, false).await;
    for (offer, choice) in [
        (Some("chat"), "superchat"),
        (None, "chat"),
        // One answer, one protocol: a list is not a choice.
        (Some("a, b"), "a, b"),
        // Names are compared exactly.
        (Some("Chat"), "chat"),
    ] {
        backend.choose(Some(choice));
        let extra: Vec<String> = offer
            .map(|o| format!("Sec-WebSocket-Protocol: {o}"))
            .into_iter()
            .collect();
        let (status, headers, _s) = handshake(gw.addr, "/dev", &extra).await;
        assert_eq!(status, 502, "offer {offer:?}, choice {choice:?}");
        assert!(protocols_in(&headers).is_empty());
    }
    // The backend accepted each of them: each is told the connection never opened.
    let connects = backend.calls("/connect");
    let disconnects = backend.wait_for("/disconnect", 4).await;
    for c in &connects {
        let id = header(&c.headers, "x-socketless-connection-id");
        assert!(
            disconnects
                .iter()
                .any(|d| header(&d.headers, "x-socketless-connection-id") == id)
        );
    }
}

#[tokio::test]
async fn several_offered_in_several_lines_are_one_list() {
    let (backend, url) = Scripted::start().await;
    let gw = gateway(&url, false).await;
    backend.choose(Some("v2.yjs"));
    let (status, headers, _s) = handshake(
        gw.addr,
        "/dev",
        &[
            "Sec-WebSocket-Protocol: v1.yjs".into(),
            "Sec-WebSocket-Protocol: v2.yjs, token-abc".into(),
        ],
    )
    .await;
    assert_eq!(status, 101);
    assert_eq!(protocols_in(&headers), vec!["v2.yjs"]);
    let connect = backend.wait_for("/connect", 1).await;
    assert_eq!(
        header(&connect[0].headers, "x-socketless-subprotocols").as_deref(),
        Some("v1.yjs, v2.yjs, token-abc")
    );
    // And a real client accepts the confirmation.
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(gw.url()).unwrap();
    req.headers_mut()
        .insert("sec-websocket-protocol", "v1.yjs, v2.yjs".parse().unwrap());
    let (_ws, resp) = within(tokio_tungstenite::connect_async(req)).await.unwrap();
    assert_eq!(resp.headers()["sec-websocket-protocol"], "v2.yjs");
}

/// Hostile offers against the gateway process: 10,000 protocols in one header, 10,000 header
/// lines, and a 10 KB name are refused by the header limit (431) before `$connect`; the
/// process stays up, serves the next client, and its memory stays bounded.
#[tokio::test]
async fn hostile_offers_are_refused_by_the_header_limit() {
    let backend = FakeBackend::start().await;
    let (proc, port) = binary::gateway(&backend, &[], None).await;
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let many: Vec<String> = (0..10_000).map(|i| format!("p{i}")).collect();
    let one_line = vec![format!("Sec-WebSocket-Protocol: {}", many.join(", "))];
    let lines: Vec<String> = many.iter().map(|p| format!("Sec-WebSocket-Protocol: {p}")).collect();
    let long_name = vec![format!("Sec-WebSocket-Protocol: {}", "x".repeat(10 * 1024))];
    let before = proc.rss_kib();
    for round in 0..20 {
        for (what, extra) in [
            ("one line", &one_line),
            ("10,000 lines", &lines),
            ("10 KB name", &long_name),
        ] {
            let (status, _, _) = handshake(addr, "/dev", extra).await;
            assert_eq!(status, 431, "{what} (round {round})");
        }
    }
    let after = proc.rss_kib();
    println!("gateway RSS: {before} KiB before, {after} KiB after 60 refused hostile handshakes");
    assert!(
        backend.seen("/connect").is_empty(),
        "no hostile handshake reached $connect"
    );
    // 60 refused handshakes of up to 70 KB each: what they leave behind is bounded well
    // below what holding them would take (4 MB).
    assert!(after < before + 4096, "RSS grew from {before} KiB to {after} KiB");
    let mut ws = connect(&format!("ws://127.0.0.1:{port}/dev")).await;
    send_text(&mut ws, "still here").await;
    assert_eq!(next_text(&mut ws).await, "still here");
}

#[tokio::test]
async fn binary_frames_close_with_1003_by_default() {
    let backend = FakeBackend::start().await;
    let gw = repo_gateway(&backend, |_| {}).await;
    let mut ws = connect(&gw.url()).await;
    within(ws.send(Message::binary(vec![0u8, 1, 2]))).await.unwrap();
    assert_eq!(close_code(&mut ws).await.0, 1003);
    assert!(backend.seen("/message").is_empty());
}

/// A yjs-style binary round trip: a binary update reaches the backend as its bytes with
/// `x-socketless-frame: binary`, the marked answer comes back as a binary frame, unchanged.
#[tokio::test]
async fn binary_frames_round_trip_with_the_flag() {
    let (backend, url) = Scripted::start().await;
    let gw = gateway(&url, true).await;
    let mut ws = connect(&gw.url()).await;
    // A y-protocols sync step 1 message: varuint message type 0, sync type 0, a state vector.
    let update: Vec<u8> = vec![0x00, 0x00, 0x05, 0x01, 0xb4, 0xf2, 0xe3, 0x0a, 0x00, 0xff, 0xfe];
    within(ws.send(Message::binary(update.clone()))).await.unwrap();
    let got = within(ws.next()).await.unwrap().unwrap();
    assert_eq!(got, Message::binary(update.clone()));
    let msg = backend.wait_for("/message", 1).await;
    assert_eq!(msg[0].body.as_ref(), update.as_slice());
    assert_eq!(header(&msg[0].headers, "x-socketless-frame").as_deref(), Some("binary"));
    // Text stays text, unmarked.
    send_text(&mut ws, "hello").await;
    assert_eq!(next_text(&mut ws).await, "hello");
    let msg = backend.wait_for("/message", 2).await;
    assert_eq!(header(&msg[1].headers, "x-socketless-frame"), None);
    // An answer of type application/octet-stream is binary too.
    *backend.octet.lock().unwrap() = true;
    send_text(&mut ws, "as bytes").await;
    let got = within(ws.next()).await.unwrap().unwrap();
    assert_eq!(got, Message::binary(b"as bytes".to_vec()));
}

#[tokio::test]
async fn binary_frames_keep_the_message_limit() {
    let (_backend, url) = Scripted::start().await;
    let gw = start_gateway(EMBEDDED_TEMPLATE, &repo_params(&url), |c| {
        c.binary_frames = true;
        c.max_message_bytes = 1024;
        c.max_frame_bytes = 1024;
    })
    .await;
    let mut ws = connect(&gw.url()).await;
    within(ws.send(Message::binary(vec![7u8; 2048]))).await.unwrap();
    assert_eq!(close_code(&mut ws).await.0, 1009);
}

/// `@connections` posts: `application/octet-stream` is a binary frame with the flag, text
/// otherwise; without the flag every UTF-8 post is text, as before.
#[tokio::test]
async fn posts_of_octet_stream_go_out_binary_with_the_flag() {
    for flag in [true, false] {
        let (backend, url) = Scripted::start().await;
        let gw = gateway(&url, flag).await;
        let mut ws = connect(&gw.url()).await;
        let id = header(
            &backend.wait_for("/connect", 1).await[0].headers,
            "x-socketless-connection-id",
        )
        .unwrap();
        let post = |ct: &'static str, body: &'static [u8]| {
            let url = gw.mgmt(&id);
            async move {
                let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                    .build_http::<Full<Bytes>>();
                let req = Request::post(url)
                    .header("content-type", ct)
                    .body(Full::new(Bytes::from_static(body)))
                    .unwrap();
                within(client.request(req)).await.unwrap().status().as_u16()
            }
        };
        assert_eq!(post("application/octet-stream", b"\x00\x01yjs").await, 200);
        assert_eq!(post("text/plain; charset=utf-8", b"text").await, 200);
        let first = within(ws.next()).await.unwrap().unwrap();
        let second = within(ws.next()).await.unwrap().unwrap();
        if flag {
            assert_eq!(first, Message::binary(b"\x00\x01yjs".to_vec()));
        } else {
            assert_eq!(first, Message::text("\u{0}\u{1}yjs"));
        }
        assert_eq!(second, Message::text("text"));
    }
}

/// A template with ContentHandlingStrategy on the message integration and on its `$default`
/// integration response.
fn content_template(request: &str, response: &str) -> String {
    format!(
        r#"
Resources:
  Api:
    Type: AWS::ApiGatewayV2::Api
    Properties:
      Name: t
      ProtocolType: WEBSOCKET
      RouteSelectionExpression: "$request.body.action"
  Msg:
    Type: AWS::ApiGatewayV2::Integration
    Properties:
      ApiId: !Ref Api
      IntegrationType: HTTP_PROXY
      IntegrationUri: BACKEND/message
      ContentHandlingStrategy: {request}
      RequestParameters:
        integration.request.header.x-socketless-connection-id: context.connectionId
  MsgResponse:
    Type: AWS::ApiGatewayV2::IntegrationResponse
    Properties:
      ApiId: !Ref Api
      IntegrationId: !Ref Msg
      IntegrationResponseKey: $default
      ContentHandlingStrategy: {response}
  Default:
    Type: AWS::ApiGatewayV2::Route
    Properties:
      ApiId: !Ref Api
      RouteKey: $default
      RouteResponseSelectionExpression: $default
      Target: !Sub "integrations/${{Msg}}"
  DefaultResponse:
    Type: AWS::ApiGatewayV2::RouteResponse
    Properties:
      ApiId: !Ref Api
      RouteId: !Ref Default
      RouteResponseKey: $default
  Stage:
    Type: AWS::ApiGatewayV2::Stage
    Properties:
      ApiId: !Ref Api
      StageName: dev
"#
    )
}

/// API Gateway's documented workaround: base64 text in, CONVERT_TO_BINARY gives the backend
/// bytes; a binary answer, CONVERT_TO_TEXT gives the client base64 text. No flag needed.
#[tokio::test]
async fn content_handling_base64_text_to_binary_and_back() {
    let (backend, url) = Scripted::start().await;
    *backend.octet.lock().unwrap() = true;
    let template = content_template("CONVERT_TO_BINARY", "CONVERT_TO_TEXT").replace("BACKEND", &url);
    let gw = start_gateway(&template, &[], |_| {}).await;
    let mut ws = connect(&gw.url()).await;
    send_text(&mut ws, "AAEC/w==").await;
    assert_eq!(next_text(&mut ws).await, "AAEC/w==");
    let msg = backend.wait_for("/message", 1).await;
    assert_eq!(msg[0].body.as_ref(), &[0u8, 1, 2, 255]);
    assert_eq!(
        header(&msg[0].headers, "x-socketless-frame"),
        None,
        "a conversion is not a binary frame"
    );
    // Text that is not base64 cannot be converted: API Gateway's internal error frame.
    send_text(&mut ws, "not base64!").await;
    let frame: serde_json::Value = serde_json::from_str(&next_text(&mut ws).await).unwrap();
    assert_eq!(frame["message"], "Internal server error");
    assert_eq!(backend.calls("/message").len(), 1);
}

/// The other way, with binary frames: CONVERT_TO_TEXT gives the backend base64 text for a
/// binary frame, and CONVERT_TO_BINARY turns its base64 answer into a binary frame.
#[tokio::test]
async fn content_handling_binary_to_base64_text_and_back() {
    let (backend, url) = Scripted::start().await;
    let template = content_template("CONVERT_TO_TEXT", "CONVERT_TO_BINARY").replace("BACKEND", &url);
    let gw = start_gateway(&template, &[], |c| c.binary_frames = true).await;
    let mut ws = connect(&gw.url()).await;
    within(ws.send(Message::binary(vec![0u8, 1, 2, 255]))).await.unwrap();
    let got = within(ws.next()).await.unwrap().unwrap();
    assert_eq!(got, Message::binary(vec![0u8, 1, 2, 255]));
    let msg = backend.wait_for("/message", 1).await;
    assert_eq!(msg[0].body.as_ref(), b"AAEC/w==");
    // Text passes CONVERT_TO_TEXT unchanged; the base64 answer still becomes bytes.
    send_text(&mut ws, "aGk=").await;
    assert_eq!(
        within(ws.next()).await.unwrap().unwrap(),
        Message::binary(b"hi".to_vec())
    );
}

#[test]
fn content_handling_the_template_cannot_express_is_refused() {
    let load = |t: String| {
        socketless::gateway::GatewayConfig::from_template(&t, &Default::default())
            .err()
            .map(|e| e.into_iter().map(|e| e.0).collect::<Vec<_>>().join("; "))
    };
    let good = content_template("CONVERT_TO_BINARY", "CONVERT_TO_TEXT").replace("BACKEND", "http://127.0.0.1:9");
    assert_eq!(load(good.clone()), None);
    let bad = load(good.replace(
        "ContentHandlingStrategy: CONVERT_TO_BINARY",
        "ContentHandlingStrategy: PASSTHROUGH",
    ));
    assert!(bad.unwrap().contains("ContentHandlingStrategy \"PASSTHROUGH\""));
    let keyed = load(good.replace("IntegrationResponseKey: $default", "IntegrationResponseKey: /5\\d\\d/"));
    assert!(keyed.unwrap().contains("IntegrationResponseKey must be $default"));
}

/// A fake upstream app: `/connect` chooses `graphql-transport-ws` when offered; `/message`
/// answers binary (`application/octet-stream`) for a binary frame, text otherwise.
async fn upstream_app() -> (String, Arc<Mutex<Vec<Call>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let calls: Arc<Mutex<Vec<Call>>> = Arc::default();
    let c = calls.clone();
    accept_each(listener, move |stream| {
        let c = c.clone();
        async move {
            let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let c = c.clone();
                async move {
                    let (parts, body) = req.into_parts();
                    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                    let path = parts.uri.path().to_string();
                    c.lock().unwrap().push(Call {
                        path: path.clone(),
                        headers: parts.headers.clone(),
                        body: body.clone(),
                    });
                    let mut resp = Response::new(Full::new(Bytes::new()));
                    if path == "/connect" {
                        let offered = header(&parts.headers, "x-socketless-subprotocols").unwrap_or_default();
                        if offered.split(',').any(|p| p.trim() == "graphql-transport-ws") {
                            resp.headers_mut()
                                .insert("sec-websocket-protocol", "graphql-transport-ws".parse().unwrap());
                        }
                    } else if path == "/message" {
                        if parts.headers.get("x-socketless-frame").is_some() {
                            resp.headers_mut()
                                .insert("content-type", "application/octet-stream".parse().unwrap());
                        }
                        *resp.body_mut() = Full::new(body);
                    }
                    Ok::<_, std::io::Error>(resp)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        }
    });
    (url, calls)
}

/// gateway → `serve --upstream` → app: the app sees the offer and the frame kind, and its
/// choice and its binary answer reach the client.
#[tokio::test]
async fn serve_upstream_passes_the_offer_the_choice_and_binary_frames() {
    let (app, calls) = upstream_app().await;
    let (_serve, port, _iport) = binary::serve(&["--upstream", &app]).await;
    let gw = gateway(&format!("http://127.0.0.1:{port}"), true).await;
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(gw.url()).unwrap();
    req.headers_mut().insert(
        "sec-websocket-protocol",
        "graphql-ws, graphql-transport-ws".parse().unwrap(),
    );
    let (mut ws, resp) = within(tokio_tungstenite::connect_async(req)).await.unwrap();
    assert_eq!(resp.headers()["sec-websocket-protocol"], "graphql-transport-ws");
    within(ws.send(Message::binary(vec![1u8, 2, 3, 0xff]))).await.unwrap();
    assert_eq!(
        within(ws.next()).await.unwrap().unwrap(),
        Message::binary(vec![1u8, 2, 3, 0xff])
    );
    send_text(&mut ws, "{\"type\":\"ping\"}").await;
    assert_eq!(next_text(&mut ws).await, "{\"type\":\"ping\"}");
    let seen = calls.lock().unwrap().clone();
    let connect = seen.iter().find(|c| c.path == "/connect").unwrap();
    assert_eq!(
        header(&connect.headers, "x-socketless-subprotocols").as_deref(),
        Some("graphql-ws, graphql-transport-ws")
    );
    let messages: Vec<&Call> = seen.iter().filter(|c| c.path == "/message").collect();
    assert_eq!(
        header(&messages[0].headers, "x-socketless-frame").as_deref(),
        Some("binary")
    );
    assert_eq!(messages[0].body.as_ref(), &[1u8, 2, 3, 0xff]);
    assert_eq!(header(&messages[1].headers, "x-socketless-frame"), None);

    // Offered without the app's protocol: the app chooses none, the 101 confirms none.
    let (status, headers, _s) = handshake(gw.addr, "/dev", &["Sec-WebSocket-Protocol: mqtt".into()]).await;
    assert_eq!(status, 101);
    assert!(protocols_in(&headers).is_empty());
}

/// A binary post sent to a replica that does not hold the connection keeps its type on the way
/// to the owner: the client gets a binary frame, and a text post stays text.
#[tokio::test]
async fn forwarded_posts_keep_their_type() {
    use socketless::gateway::{GatewayConfig, PeerUrls};
    let backend = FakeBackend::start().await;
    let ports = [common::free_port(), common::free_port()];
    let peers: Vec<String> = ports.iter().map(|p| format!("http://127.0.0.1:{p}")).collect();
    let mut replicas = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let peers = peers.clone();
        replicas.push(
            repo_gateway(&backend, move |c: &mut GatewayConfig| {
                c.listen = ([127, 0, 0, 1], *port).into();
                c.ordinal = i as u8;
                c.peers = PeerUrls::List(peers);
                c.binary_frames = true;
            })
            .await,
        );
    }
    let mut ws = connect(&replicas[0].url()).await;
    let id = common::gw::connection_id(&backend.wait_for("/connect", 1).await[0]);
    let client =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http::<Full<Bytes>>();
    for (ct, body) in [
        ("application/octet-stream", &b"\x00\x01"[..]),
        ("text/plain", &b"hi"[..]),
    ] {
        let req = Request::post(replicas[1].mgmt(&id))
            .header("content-type", ct)
            .body(Full::new(Bytes::copy_from_slice(body)))
            .unwrap();
        assert_eq!(within(client.request(req)).await.unwrap().status(), 200);
    }
    assert_eq!(
        within(ws.next()).await.unwrap().unwrap(),
        Message::binary(b"\x00\x01".to_vec())
    );
    assert_eq!(within(ws.next()).await.unwrap().unwrap(), Message::text("hi"));
}

/// The gateway process with `SOCKETLESS_GATEWAY_BINARY_FRAMES=true`: a binary frame makes the
/// round trip; without the variable it closes with 1003.
#[tokio::test]
async fn the_binary_frames_variable_turns_them_on_in_the_process() {
    use common::proc::{Proc, command, wait_ready};
    let (backend, url) = Scripted::start().await;
    for on in [true, false] {
        let port = common::free_port();
        let mut cmd = command();
        cmd.args([
            "gateway",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--param",
            &format!("IntegrationUri={url}"),
            "--param",
            "SharedSecret=0123456789abcdef",
            "--shutdown-delay",
            "0s",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
        if on {
            cmd.env("SOCKETLESS_GATEWAY_BINARY_FRAMES", "true");
        }
        let _gw = Proc::spawn(&mut cmd);
        wait_ready(port).await;
        let mut ws = connect(&format!("ws://127.0.0.1:{port}/dev")).await;
        within(ws.send(Message::binary(vec![0u8, 0xff, 7]))).await.unwrap();
        if on {
            assert_eq!(
                within(ws.next()).await.unwrap().unwrap(),
                Message::binary(vec![0u8, 0xff, 7])
            );
        } else {
            assert_eq!(close_code(&mut ws).await.0, 1003);
        }
    }
    assert_eq!(backend.calls("/message").len(), 1);
}

/// gateway `--binary-frames` → `serve` with its default handler: a binary message is echoed
/// binary, in the HTTP answer and, with `--reply-mode async`, through `@connections` (whose
/// post says `application/octet-stream`); a text message is echoed as text both ways.
#[tokio::test]
async fn serve_echoes_binary_frames_synchronously_and_through_connections() {
    use common::proc::{Proc, command, wait_ready};
    for mode in ["sync", "async"] {
        let (serve_port, internal_port, gw_port) = (common::free_port(), common::free_port(), common::free_port());
        let gw = start_gateway(
            EMBEDDED_TEMPLATE,
            &repo_params(&format!("http://127.0.0.1:{serve_port}")),
            |c| {
                c.binary_frames = true;
                c.listen = ([127, 0, 0, 1], gw_port).into();
            },
        )
        .await;
        let mut cmd = command();
        cmd.args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{serve_port}"),
            "--internal-listen",
            &format!("127.0.0.1:{internal_port}"),
            "--reply-mode",
            mode,
            "--push-endpoint",
            &format!("http://127.0.0.1:{gw_port}/dev"),
            "--shutdown-delay",
            "0s",
        ])
        .env("AWS_ACCESS_KEY_ID", "protocols-test")
        .env("AWS_SECRET_ACCESS_KEY", "protocols-test")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
        let _serve = Proc::spawn(&mut cmd);
        wait_ready(internal_port).await;
        let mut ws = connect(&gw.url()).await;
        let update = vec![0x00u8, 0x01, 0x02, 0xc3, 0x28, 0xff];
        within(ws.send(Message::binary(update.clone()))).await.unwrap();
        assert_eq!(
            within(ws.next()).await.unwrap().unwrap(),
            Message::binary(update),
            "{mode}"
        );
        send_text(&mut ws, "text stays text").await;
        assert_eq!(next_text(&mut ws).await, "text stays text", "{mode}");
    }
}

//! Traces: one client message in async mode, on two gateway replicas, `serve --upstream` and an
//! app that pushes its answer, makes ONE trace whose spans reach an OTLP/HTTP receiver from the
//! gateways, `serve` and the app: the gateway's message span, `serve`'s, the app's own, the push,
//! `serve`'s `@connections` call, the management call on the replica it went to, the forwarded
//! call on the owner and the delivery, each the child of the one before. With
//! `OTEL_EXPORTER_OTLP_ENDPOINT` unset nothing is exported, no `traceparent` is made up, and one
//! a client sent at the handshake reaches the app unchanged.

mod common;

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::binary::log_path;
use common::gw::{Ws, next_text, send_text};
use common::proc::{Proc, command, refused, wait_ready};
use common::*;
use http::Response;
use http_body_util::Full;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const SECRET: &str = "0123456789abcdef";
/// The trace a client starts at its handshake.
const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// One span as the receiver decoded it.
#[derive(Debug, Clone)]
struct Span {
    service: String,
    name: String,
    trace: String,
    id: String,
    parent: String,
}

/// An OTLP/HTTP receiver for JSON bodies on `/v1/traces`.
#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<Span>>>,
    posts: Arc<Mutex<usize>>,
}

fn text(v: &serde_json::Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

impl Receiver {
    async fn start(addr: &str) -> (Receiver, String) {
        let listener = TcpListener::bind(addr)
            .await
            .unwrap_or_else(|e| panic!("the receiver cannot listen on {addr}: {e}"));
        let url = format!("http://{}", listener.local_addr().unwrap());
        let r = Receiver::default();
        let state = r.clone();
        fake_server(listener, move |req| {
            let state = state.clone();
            async move {
                assert_eq!(req.path, "/v1/traces");
                *state.posts.lock().unwrap() += 1;
                let doc: serde_json::Value = serde_json::from_str(&req.body).expect("an OTLP/JSON body");
                for rs in doc["resourceSpans"].as_array().into_iter().flatten() {
                    let service = rs["resource"]["attributes"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .find(|a| a["key"] == "service.name")
                        .map(|a| text(&a["value"]["stringValue"]))
                        .unwrap_or_default();
                    for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                        for s in ss["spans"].as_array().into_iter().flatten() {
                            state.spans.lock().unwrap().push(Span {
                                service: service.clone(),
                                name: text(&s["name"]),
                                trace: text(&s["traceId"]),
                                id: text(&s["spanId"]),
                                parent: text(&s["parentSpanId"]),
                            });
                        }
                    }
                }
                Ok(Response::new(Full::new(Bytes::from_static(b"{}"))))
            }
        });
        (r, url)
    }

    /// The trace's spans once there are `n` of them, or after 10 s whatever came.
    async fn wait(&self, trace: &str, n: usize) -> Vec<Span> {
        for _ in 0..200 {
            let spans = self.of_trace(trace);
            if spans.len() >= n {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.of_trace(trace)
    }

    fn of_trace(&self, trace: &str) -> Vec<Span> {
        self.spans
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.trace == trace)
            .cloned()
            .collect()
    }
}

/// A call the app received: its path and `traceparent`.
type Call = (String, Option<String>);

/// The app: records the `traceparent` of each call; for a message it reports a span of its own
/// to the receiver (when there is one) and pushes `pushed:{body}` through `serve`'s internal
/// API, with its span as the push's parent.
#[derive(Clone, Default)]
struct App {
    seen: Arc<Mutex<Vec<Call>>>,
    internal: Arc<Mutex<String>>,
}

fn span_id() -> String {
    format!("{:016x}", rand_u64())
}

fn rand_u64() -> u64 {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).unwrap();
    u64::from_le_bytes(b) | 1
}

impl App {
    async fn start(receiver: Option<String>) -> (App, String) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = App::default();
        let state = app.clone();
        fake_server(listener, move |req| {
            let (state, receiver) = (state.clone(), receiver.clone());
            async move {
                let parent = req.headers.get("traceparent").map(|v| v.to_str().unwrap().to_string());
                state.seen.lock().unwrap().push((req.path.clone(), parent.clone()));
                if req.path == "/message" {
                    let id = req.headers["x-socketless-connection-id"].to_str().unwrap().to_string();
                    let mut push_headers = Vec::new();
                    let mut traceparent = String::new();
                    if let (Some(parent), Some(receiver)) = (&parent, &receiver) {
                        let parts: Vec<&str> = parent.split('-').collect();
                        let mine = span_id();
                        report(receiver, parts[1], &mine, parts[2]).await;
                        traceparent = format!("00-{}-{mine}-01", parts[1]);
                    }
                    if !traceparent.is_empty() {
                        push_headers.push(("traceparent", traceparent.as_str()));
                    }
                    let internal = state.internal.lock().unwrap().clone();
                    let url = format!("{internal}/v1/connections/{}/messages", id.replace('=', "%3D"));
                    let (status, _, body) = send("POST", &url, &push_headers, format!("pushed:{}", req.body)).await;
                    assert!(status.is_success(), "the push: {status} {body}");
                }
                Ok(Response::new(Full::new(Bytes::new())))
            }
        });
        (app, url)
    }

    fn traceparent(&self, path: &str) -> Option<String> {
        let seen = self.seen.lock().unwrap();
        seen.iter()
            .find(|(p, _)| p == path)
            .expect("the app was called")
            .1
            .clone()
    }
}

/// Posts one span of the app's to the receiver, as an OTLP/JSON export.
async fn report(receiver: &str, trace: &str, id: &str, parent: &str) {
    let body = serde_json::json!({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "test-app"}}]},
        "scopeSpans": [{"scope": {"name": "test-app"}, "spans": [{
            "traceId": trace, "spanId": id, "parentSpanId": parent, "name": "app message", "kind": 2,
            "startTimeUnixNano": "1", "endTimeUnixNano": "2"}]}]}]});
    let url = format!("{receiver}/v1/traces");
    let (status, _, _) = send("POST", &url, &[("content-type", "application/json")], body.to_string()).await;
    assert!(status.is_success());
}

/// The processes: `serve --upstream` (async replies, pushes to gateway 1) and two gateway
/// replicas, with the OTLP endpoint set on each when `otlp` is given.
struct Stack {
    _procs: Vec<Proc>,
    gateways: [u16; 2],
}

fn spawn(name: &str, args: Vec<String>, otlp: Option<&str>) -> Proc {
    let log = std::fs::File::create(log_path(name)).unwrap();
    let mut cmd = command();
    cmd.args(&args)
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .env("AWS_ACCESS_KEY_ID", "AKIDTEST")
        .env("AWS_SECRET_ACCESS_KEY", "test-secret")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        // Exported batches leave every 100 ms, so the test waits little.
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        // JSON, which the receiver here reads; the default is protobuf.
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
        .env("OTEL_TRACES_SAMPLER", "always_on")
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log));
    if let Some(endpoint) = otlp {
        cmd.env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint);
    }
    Proc::spawn(&mut cmd)
}

/// A gateway on `port`, stage `dev`, in front of `serve` on `backend`.
fn gateway_args(port: u16, backend: u16) -> Vec<String> {
    [
        "gateway",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--param",
        &format!("IntegrationUri=http://127.0.0.1:{backend}"),
        "--param",
        &format!("SharedSecret={SECRET}"),
        "--param",
        "StageName=dev",
        "--shutdown-delay",
        "0s",
    ]
    .map(String::from)
    .to_vec()
}

async fn stack(app: &App, app_url: &str, otlp: Option<&str>) -> Stack {
    let (port, internal) = (free_port(), free_port());
    let gateways = [free_port(), free_port()];
    *app.internal.lock().unwrap() = format!("http://127.0.0.1:{internal}");
    let serve = spawn(
        "trace-serve",
        [
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--internal-listen",
            &format!("127.0.0.1:{internal}"),
            "--region",
            "us-east-1",
            "--shared-secret",
            SECRET,
            "--upstream",
            app_url,
            "--reply-mode",
            "async",
            "--push-endpoint",
            &format!("http://127.0.0.1:{}/dev", gateways[1]),
            "--shutdown-delay",
            "0s",
        ]
        .map(String::from)
        .to_vec(),
        otlp,
    );
    wait_ready(internal).await;
    let peers = gateways.map(|p| format!("http://127.0.0.1:{p}")).join(",");
    let mut procs = vec![serve];
    for (i, p) in gateways.iter().enumerate() {
        let mut args = gateway_args(*p, port);
        args.extend(["--ordinal".into(), i.to_string(), "--peers".into(), peers.clone()]);
        procs.push(spawn(&format!("trace-gateway-{i}"), args, otlp));
        wait_ready(*p).await;
    }
    Stack {
        _procs: procs,
        gateways,
    }
}

/// A client on gateway 0, with `traceparent` at the handshake when given.
async fn client(stack: &Stack, traceparent: Option<&str>) -> Ws {
    let mut req = format!("ws://127.0.0.1:{}/dev", stack.gateways[0])
        .into_client_request()
        .unwrap();
    if let Some(tp) = traceparent {
        req.headers_mut().insert("traceparent", tp.parse().unwrap());
    }
    let (ws, _) = within(tokio_tungstenite::connect_async(req)).await.expect("handshake");
    ws
}

/// The parts of a `traceparent`: trace id and parent span id.
fn parts(tp: &str) -> (String, String) {
    let p: Vec<&str> = tp.split('-').collect();
    assert_eq!((p.len(), p[0]), (4, "00"), "{tp}");
    (p[1].to_string(), p[2].to_string())
}

#[tokio::test]
async fn one_message_is_one_trace_from_the_gateway_through_serve_and_the_app_and_back() {
    let (receiver, otlp) = Receiver::start("127.0.0.1:0").await;
    let (app, app_url) = App::start(Some(otlp.clone())).await;
    let stack = stack(&app, &app_url, Some(&otlp)).await;

    // $connect continues the client's trace: serve's span under the gateway's.
    let mut ws = client(&stack, Some(CLIENT_PARENT)).await;
    let (trace, _) = parts(&app.traceparent("/connect").expect("a traceparent at /connect"));
    assert_eq!(trace, CLIENT_TRACE);

    send_text(&mut ws, "hello").await;
    assert_eq!(next_text(&mut ws).await, "pushed:hello");
    let (trace, _) = parts(&app.traceparent("/message").expect("a traceparent at /message"));
    assert_ne!(trace, CLIENT_TRACE, "a message starts a trace of its own");

    let want = [
        "gateway message",
        "serve /message",
        "app message",
        "serve /v1/connections/{id}/messages",
        "serve @connections",
        "gateway @connections",
        "gateway @connections",
        "gateway deliver",
    ];
    let spans = receiver.wait(&trace, want.len()).await;
    assert_eq!(spans.len(), want.len(), "{spans:#?}");
    // Each span is the child of the one before: the chain from the client's frame to its
    // delivery, the app's span included.
    let by_id: HashMap<&str, &Span> = spans.iter().map(|s| (s.id.as_str(), s)).collect();
    let leaf = spans
        .iter()
        .find(|s| s.name == "gateway deliver")
        .expect("the delivery's span");
    let mut chain = vec![leaf];
    while let Some(parent) = by_id.get(chain.last().unwrap().parent.as_str()) {
        chain.push(parent);
    }
    chain.reverse();
    let names: Vec<&str> = chain.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, want, "{spans:#?}");
    assert!(chain[0].parent.is_empty(), "the message's span is the trace's root");
    let services: Vec<&str> = chain.iter().map(|s| s.service.as_str()).collect();
    assert_eq!(
        services,
        [
            "socketless-gateway",
            "socketless-serve",
            "test-app",
            "socketless-serve",
            "socketless-serve",
            "socketless-gateway",
            "socketless-gateway",
            "socketless-gateway",
        ]
    );

    // The handshake's trace holds the gateway's $connect span and serve's under it.
    let connect = receiver.wait(CLIENT_TRACE, 2).await;
    let gw = connect
        .iter()
        .find(|s| s.name == "gateway $connect")
        .expect("{connect:#?}");
    let serve = connect
        .iter()
        .find(|s| s.name == "serve /connect")
        .expect("{connect:#?}");
    assert_eq!(gw.parent, parts(CLIENT_PARENT).1);
    assert_eq!(serve.parent, gw.id);
}

#[tokio::test]
async fn with_the_variable_unset_nothing_is_exported_and_a_context_passes_through_unchanged() {
    // On OTLP/HTTP's default port, where an exporter with no endpoint set would send; every
    // other variable of the exporter is set.
    let (receiver, _otlp) = Receiver::start("127.0.0.1:4318").await;
    let (app, app_url) = App::start(None).await;
    let stack = stack(&app, &app_url, None).await;

    // A client that sent no traceparent: none is made up on the way to the app.
    let mut ws = client(&stack, None).await;
    assert_eq!(app.traceparent("/connect"), None);
    send_text(&mut ws, "hello").await;
    assert_eq!(next_text(&mut ws).await, "pushed:hello");
    assert_eq!(app.traceparent("/message"), None);

    // One a client sent at the handshake reaches the app as it was: W3C asks a hop to pass it
    // on, and a hop that makes no span passes on its caller's.
    app.seen.lock().unwrap().clear();
    let _ws = client(&stack, Some(CLIENT_PARENT)).await;
    assert_eq!(app.traceparent("/connect").as_deref(), Some(CLIENT_PARENT));
    // Longer than a batch's delay: had a span been made, it would have gone by now.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(*receiver.posts.lock().unwrap(), 0);
}

#[tokio::test]
async fn spans_go_as_protobuf_unless_json_is_asked_for_and_grpc_is_refused() {
    // Records the Content-Type of each export.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let otlp = format!("http://{}", listener.local_addr().unwrap());
    let types = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = types.clone();
    let _receiver = fake_server(listener, move |req| {
        let seen = seen.clone();
        async move {
            let kind = req
                .headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            seen.lock().unwrap().push(format!("{} {kind}", req.path));
            Ok(Response::new(Full::new(Bytes::new())))
        }
    });
    let (port, internal, gport) = (free_port(), free_port(), free_port());
    let start = |name: &str, args: Vec<String>| {
        let log = std::fs::File::create(log_path(name)).unwrap();
        let mut cmd = command();
        cmd.args(&args)
            .env_remove("OTEL_EXPORTER_OTLP_PROTOCOL")
            .env_remove("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", &otlp)
            .env("OTEL_BSP_SCHEDULE_DELAY", "100")
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log));
        Proc::spawn(&mut cmd)
    };
    let serve_args = |listen: u16, internal: u16| {
        let (listen, internal) = (format!("127.0.0.1:{listen}"), format!("127.0.0.1:{internal}"));
        ["serve", "--listen", &listen, "--internal-listen", &internal]
            .into_iter()
            .chain(["--shared-secret", SECRET, "--shutdown-delay", "0s"])
            .map(String::from)
            .collect::<Vec<_>>()
    };
    let _serve = start("trace-protobuf-serve", serve_args(port, internal));
    wait_ready(internal).await;
    let _gateway = start("trace-protobuf-gateway", gateway_args(gport, port));
    wait_ready(gport).await;
    let (_ws, _) = within(tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{gport}/dev")))
        .await
        .expect("handshake");
    // `$connect` makes a span in each process: two exports, both protobuf.
    within(async {
        while types.lock().unwrap().len() < 2 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    for export in types.lock().unwrap().iter() {
        assert_eq!(export, "/v1/traces application/x-protobuf");
    }

    // An encoding the binary cannot send stops it at start, naming the variable.
    let mut grpc = command();
    grpc.args(serve_args(free_port(), free_port()))
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &otlp)
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc");
    let err = refused(&mut grpc);
    assert!(err.contains("OTEL_EXPORTER_OTLP_PROTOCOL=grpc"), "{err}");
}

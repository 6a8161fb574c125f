//! Resume by key through the whole path: a `socketless gateway` (the repository's template,
//! in this process), one or more `serve` on one store, and an upstream app that records every
//! call with its headers. The app sets an attribute on a fresh `/connect` and echoes, for a
//! message, the session id and the attribute it was given.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use tokio::net::TcpListener;

use super::gw::{Gw, launch};
use super::*;

pub const SECRET: &str = "0123456789abcdef-test";
/// A valid key (base64url of 16 random bytes, as a client makes one).
pub const KEY: &str = "q3Z9vX1_bW-4tLr8yPaK0g";

/// One call the app received.
#[derive(Debug, Clone)]
pub struct Call {
    pub path: String,
    pub headers: http::HeaderMap,
}

impl Call {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).map(|v| v.to_str().unwrap().to_string())
    }
}

/// The upstream app.
pub struct App {
    pub url: String,
    calls: Arc<Mutex<Vec<Call>>>,
    _task: tokio::task::JoinHandle<()>,
}

impl App {
    pub async fn start() -> App {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let calls = Arc::new(Mutex::new(Vec::new()));
        let record = calls.clone();
        let task = fake_server(listener, move |req| {
            let record = record.clone();
            async move {
                let h = |n: &str| {
                    req.headers
                        .get(n)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string()
                };
                let mut answer = Response::builder().status(StatusCode::OK);
                let mut body = String::new();
                match req.path.as_str() {
                    "/connect" if h("x-socketless-resumed") == "false" => {
                        answer = answer.header("x-socketless-attribute-tenant", "acme");
                    }
                    "/message" => {
                        body = format!(
                            "session={} tenant={}",
                            h("x-socketless-session-id"),
                            h("x-socketless-attribute-tenant")
                        );
                    }
                    _ => {}
                }
                if ["/connect", "/message", "/disconnect"].contains(&req.path.as_str()) {
                    record.lock().unwrap().push(Call {
                        path: req.path.clone(),
                        headers: req.headers.clone(),
                    });
                }
                Ok(answer.body(Full::new(Bytes::from(body))).unwrap())
            }
        });
        App {
            url,
            calls,
            _task: task,
        }
    }

    pub fn calls(&self, path: &str) -> Vec<Call> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.path == path)
            .cloned()
            .collect()
    }

    /// Waits until the app has had `n` calls to `path`.
    pub async fn wait_for(&self, path: &str, n: usize) -> Vec<Call> {
        let deadline = Instant::now() + T;
        loop {
            let calls = self.calls(path);
            if calls.len() >= n {
                return calls;
            }
            assert!(Instant::now() < deadline, "{} of {n} calls to {path}", calls.len());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Gateways, each with its `serve` behind it (all on one store), the app.
pub struct Stack {
    pub gws: Vec<Gw>,
    pub serves: Vec<Backend>,
    pub app: App,
}

impl Stack {
    /// The first gateway's WebSocket URL with `?resume=<key>`.
    pub fn url(&self, key: &str) -> String {
        self.url_on(0, key)
    }

    /// Gateway `i`'s WebSocket URL with `?resume=<key>`.
    pub fn url_on(&self, i: usize, key: &str) -> String {
        format!("{}?resume={key}", self.gws[i].url())
    }

    pub fn internal(&self, path: &str) -> String {
        self.serves[0].internal_url(path)
    }

    /// `GET /v1/sessions/{id}`: status and JSON.
    pub async fn session(&self, id: &str) -> (StatusCode, serde_json::Value) {
        let (s, body) = get(&self.internal(&format!("/v1/sessions/{id}"))).await;
        (s, serde_json::from_str(&body).unwrap_or_default())
    }

    /// `POST /v1/sessions/{id}/messages` on `serve` number `i`.
    pub async fn push_on(&self, i: usize, id: &str, body: &str) -> (StatusCode, serde_json::Value) {
        let url = self.serves[i].internal_url(&format!("/v1/sessions/{id}/messages"));
        let (s, _, b) = send("POST", &url, &[], body.to_string()).await;
        (s, serde_json::from_str(&b).unwrap_or_default())
    }

    pub async fn push(&self, id: &str, body: &str) -> (StatusCode, serde_json::Value) {
        self.push_on(0, id, body).await
    }

    /// Waits until the session's record says its connection is gone.
    pub async fn wait_detached(&self, id: &str) {
        let deadline = Instant::now() + T;
        loop {
            let (s, v) = self.session(id).await;
            if s == StatusCode::OK && v["connectionId"].is_null() {
                return;
            }
            assert!(Instant::now() < deadline, "session {id} still attached: {v}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// `count` pairs of a gateway replica (the repository's template) and the `serve` it integrates with,
/// every `serve` with `store` and `flags`, pushing through its own gateway.
pub async fn stack(count: usize, store: &[String], flags: &[&str]) -> Stack {
    stack_with(count, store, flags, None).await
}

/// [`stack`], with the template's `$connect` authorizer on, answered at `authorizer`.
pub async fn stack_with(count: usize, store: &[String], flags: &[&str], authorizer: Option<&str>) -> Stack {
    let app = App::start().await;
    let mut gws = Vec::new();
    let mut serves = Vec::new();
    // The gateways are replicas of one another, so any `serve` reaches any connection.
    let gw_ports: Vec<u16> = (0..count).map(|_| free_port()).collect();
    let peers: Vec<String> = gw_ports.iter().map(|p| format!("http://127.0.0.1:{p}")).collect();
    for (i, gw_port) in gw_ports.iter().enumerate() {
        let port = free_port();
        let mut params = std::collections::BTreeMap::from([
            ("IntegrationUri".to_string(), format!("http://127.0.0.1:{port}")),
            ("StageName".to_string(), "dev".to_string()),
            ("SharedSecret".to_string(), SECRET.to_string()),
            ("DisconnectContext".to_string(), "true".to_string()),
        ]);
        let mut gateway_flags = Vec::new();
        if let Some(url) = authorizer {
            params.insert(
                "AuthorizerFunctionArn".into(),
                "arn:aws:lambda:us-east-1:123456789012:function:auth".into(),
            );
            gateway_flags.push(format!("--authorizer=ConnectAuthorizer={url}"));
        }
        let mut config = socketless::gateway::GatewayConfig::from_template_with(
            socketless::gateway::EMBEDDED_TEMPLATE,
            &params,
            &gateway_flags,
        )
        .expect("template loads");
        config.shutdown_delay = Duration::ZERO;
        config.drain_timeout = Duration::from_secs(5);
        config.listen = ([127, 0, 0, 1], *gw_port).into();
        config.ordinal = i as u8;
        config.peers = socketless::gateway::PeerUrls::List(peers.clone());
        config.peer_timeout = Duration::from_millis(500);
        let gw = launch(config).await;
        let mut all: Vec<String> = vec![
            format!("--listen=127.0.0.1:{port}"),
            "--internal-listen=127.0.0.1:0".into(),
            format!("--region={}", socketless::defaults::REGION),
            "--shutdown-delay=0s".into(),
            "--drain-timeout=2s".into(),
            "--aws-timeout=5s".into(),
            "--sweep-interval=0s".into(),
            "--disconnect-grace=0s".into(),
            format!("--shared-secret={SECRET}"),
            format!("--upstream={}", app.url),
            format!("--push-endpoint=http://{}/dev", gw.addr),
        ];
        all.extend(store.iter().cloned());
        all.extend(flags.iter().map(|f| f.to_string()));
        let args = ServeArgs::from_flags(all).expect("flags parse");
        serves.push(start(args).await);
        gws.push(gw);
    }
    Stack { gws, serves, app }
}

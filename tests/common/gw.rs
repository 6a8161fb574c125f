//! Gateway test plumbing: a fake backend whose answers the test controls and which records
//! every request, and an in-process gateway loaded from a template.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, Response};
use http_body_util::Full;
use prometheus_client::registry::Registry;
use socketless::gateway::{EMBEDDED_TEMPLATE, Gateway, GatewayConfig, PeerUrls, Verifier};
use socketless::lifecycle::Lifecycle;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::{Received, fake_server, within};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// One request the fake backend received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    pub headers: HeaderMap,
    pub body: String,
}

/// How the fake backend answers one path.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    /// `None` echoes the request body.
    pub body: Option<String>,
    /// Drop the connection without answering.
    pub hang_up: bool,
    /// Answer after this long.
    pub delay: Duration,
}

impl Default for Answer {
    fn default() -> Self {
        Answer {
            status: 200,
            body: None,
            hang_up: false,
            delay: Duration::ZERO,
        }
    }
}

/// A backend that records requests. A message body containing `sleep:N` is answered after N ms.
#[derive(Clone)]
pub struct FakeBackend {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    pub answers: Arc<Mutex<BTreeMap<String, Answer>>>,
    task: Arc<tokio::task::JoinHandle<()>>,
}

impl FakeBackend {
    pub async fn start() -> FakeBackend {
        Self::start_on("127.0.0.1:0").await
    }

    pub async fn start_on(addr: &str) -> FakeBackend {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let answers: Arc<Mutex<BTreeMap<String, Answer>>> = Arc::default();
        let (s, a) = (seen.clone(), answers.clone());
        let task = fake_server(listener, move |req| {
            let (s, a) = (s.clone(), a.clone());
            async move {
                let Received {
                    path, headers, body, ..
                } = req;
                s.lock().unwrap().push(Seen {
                    path: path.clone(),
                    headers,
                    body: body.clone(),
                });
                let answer = a.lock().unwrap().get(&path).cloned().unwrap_or_default();
                if let Some(ms) = body
                    .split("sleep:")
                    .nth(1)
                    .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
                    .and_then(|n| n.parse::<u64>().ok())
                {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                }
                tokio::time::sleep(answer.delay).await;
                if answer.hang_up {
                    return Err(std::io::Error::other("hang up"));
                }
                let out = answer.body.unwrap_or(body);
                Ok(Response::builder()
                    .status(answer.status)
                    .body(Full::new(Bytes::from(out)))
                    .unwrap())
            }
        });
        FakeBackend {
            addr,
            seen,
            answers,
            task: Arc::new(task),
        }
    }

    pub fn uri(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn answer(&self, path: &str, answer: Answer) {
        self.answers.lock().unwrap().insert(path.to_string(), answer);
    }

    pub fn seen(&self, path: &str) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.path == path)
            .cloned()
            .collect()
    }

    /// Waits until `path` has been called `n` times.
    pub async fn wait_for(&self, path: &str, n: usize) -> Vec<Seen> {
        within(async {
            loop {
                let s = self.seen(path);
                if s.len() >= n {
                    return s;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
    }

    /// Stops accepting and serving: the port is closed and open connections are dropped.
    pub fn stop(&self) {
        self.task.abort();
    }
}

/// A gateway running in-process.
pub struct Gw {
    pub addr: SocketAddr,
    pub gateway: Arc<Gateway>,
    pub lifecycle: Lifecycle,
    pub stage: String,
    pub task: tokio::task::JoinHandle<socketless::http_server::Drain>,
}

impl Gw {
    pub fn url(&self) -> String {
        format!("ws://{}/{}", self.addr, self.stage)
    }

    pub fn mgmt(&self, id: &str) -> String {
        format!("http://{}/{}/@connections/{}", self.addr, self.stage, id)
    }
}

impl Drop for Gw {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The repository template's parameters for a backend.
pub fn repo_params(backend: &str) -> Vec<(String, String)> {
    vec![
        ("IntegrationUri".into(), backend.into()),
        ("StageName".into(), "dev".into()),
        ("SharedSecret".into(), "0123456789abcdef-test".into()),
        ("DisconnectContext".into(), "true".into()),
    ]
}

pub async fn start_gateway(template: &str, params: &[(String, String)], tweak: impl FnOnce(&mut GatewayConfig)) -> Gw {
    let params: BTreeMap<String, String> = params.iter().cloned().collect();
    let mut config = GatewayConfig::from_template(template, &params).expect("template loads");
    config.shutdown_delay = Duration::ZERO;
    config.drain_timeout = Duration::from_secs(5);
    tweak(&mut config);
    launch(config).await
}

/// Serves a gateway with this configuration on its listener, ready at once.
pub async fn launch(config: GatewayConfig) -> Gw {
    let listener = TcpListener::bind(config.listen).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut registry = Registry::default();
    let stage = config.model.stage.clone();
    let gateway = Gateway::new(config, &mut registry);
    let lifecycle = Lifecycle::new();
    lifecycle.set_ready();
    let task = tokio::spawn(gateway.clone().serve(listener, lifecycle.clone(), Arc::new(registry)));
    Gw {
        addr,
        gateway,
        lifecycle,
        stage,
        task,
    }
}

pub async fn repo_gateway(backend: &FakeBackend, tweak: impl FnOnce(&mut GatewayConfig)) -> Gw {
    start_gateway(EMBEDDED_TEMPLATE, &repo_params(&backend.uri()), tweak).await
}

/// Replicas of the repository's template on `ports` (ordinal = index), each listing every port
/// plus `extra_peers` (peers that never answer) as its peers, with a 500 ms peer timeout; then
/// `tweak` for what a test adds.
pub async fn replica_set(
    backend: &FakeBackend,
    ports: &[u16],
    extra_peers: &[u16],
    tweak: impl Fn(&mut GatewayConfig),
) -> Vec<Gw> {
    replica_set_for(&backend.uri(), ports, extra_peers, tweak).await
}

/// [`replica_set`] in front of any backend.
pub async fn replica_set_for(
    backend: &str,
    ports: &[u16],
    extra_peers: &[u16],
    tweak: impl Fn(&mut GatewayConfig),
) -> Vec<Gw> {
    let peers: Vec<String> = ports
        .iter()
        .chain(extra_peers)
        .map(|p| format!("http://127.0.0.1:{p}"))
        .collect();
    let mut out = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let peers = peers.clone();
        let tweak = &tweak;
        out.push(
            start_gateway(
                EMBEDDED_TEMPLATE,
                &repo_params(backend),
                move |c: &mut GatewayConfig| {
                    c.listen = ([127, 0, 0, 1], *port).into();
                    c.ordinal = i as u8;
                    c.peers = PeerUrls::List(peers);
                    c.peer_timeout = Duration::from_millis(500);
                    tweak(c);
                },
            )
            .await,
        );
    }
    out
}

/// SigV4 checks on `@connections` with this key, in the default region.
pub fn verifier(key: &str, secret: &str) -> Verifier {
    Verifier {
        access_key_id: key.into(),
        secret_access_key: secret.into(),
        region: socketless::defaults::REGION.into(),
    }
}

pub async fn connect(url: &str) -> Ws {
    let (ws, _) = within(tokio_tungstenite::connect_async(url)).await.expect("handshake");
    ws
}

/// The next text frame (pings and pongs skipped).
pub async fn next_text(ws: &mut Ws) -> String {
    loop {
        match within(ws.next()).await {
            Some(Ok(Message::Text(t))) => return t.as_str().to_string(),
            Some(Ok(Message::Ping(_))) | Some(Ok(Message::Pong(_))) => continue,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

/// Reads until the close frame; returns its code and reason.
pub async fn close_code(ws: &mut Ws) -> (u16, String) {
    loop {
        match within(ws.next()).await {
            Some(Ok(Message::Close(Some(f)))) => return (u16::from(f.code), f.reason.to_string()),
            Some(Ok(Message::Close(None))) => return (1005, String::new()),
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

pub async fn send_text(ws: &mut Ws, text: &str) {
    within(ws.send(Message::text(text))).await.expect("send");
}

/// The connection id the gateway sent the backend on a recorded call.
pub fn connection_id(seen: &Seen) -> String {
    seen.headers["x-socketless-connection-id"].to_str().unwrap().to_string()
}

//! Shared test plumbing: an in-process backend on 127.0.0.1:0, a tiny HTTP client, a moto
//! server the tests start themselves (see `moto`), and a fake `@connections` endpoint that
//! records calls.
#![allow(dead_code)]

use std::collections::HashSet;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub mod authorizer;
pub mod binary;
pub mod groups;
pub mod gw;
pub mod identity;
mod moto;
pub mod proc;
pub mod resume;

// Not every test binary starts moto.
#[allow(unused_imports)]
pub use moto::Moto;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
pub use socketless::config::FromFlags;
use socketless::handler::{Echo, MessageHandler};
use socketless::lifecycle::Lifecycle;
use socketless::serve::{Prepared, ServeArgs, ServeConfig};
use tokio::net::TcpListener;

/// Every await in tests runs under this bound.
pub const T: Duration = Duration::from_secs(20);

pub async fn within<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(T, f).await.expect("timed out")
}

/// `ServeArgs` with test defaults: ephemeral loopback ports, memory store.
pub fn args() -> ServeArgs {
    let region = format!("--region={}", socketless::defaults::REGION);
    ServeArgs::from_flags([
        "--listen=127.0.0.1:0",
        "--internal-listen=127.0.0.1:0",
        "--table=socketless-test",
        region.as_str(),
        "--cache-capacity=1000",
        "--shutdown-delay=0s",
        "--drain-timeout=5s",
        "--aws-timeout=2s",
        "--broadcast-concurrency=4",
        // The handler hears a disconnect within the gateway's call, and no sweep runs unless a
        // test asks for one.
        "--disconnect-grace=0s",
        "--sweep-interval=0s",
    ])
    .expect("test flags parse")
}

/// SDK configuration with static test credentials.
pub fn sdk(timeout: Duration) -> aws_config::SdkConfig {
    socketless::aws::static_config("AKIDTEST", "test-secret", timeout)
}

/// An `@connections` client for `endpoint` that signs with this key pair.
pub fn connections_client(endpoint: &str, key: &str, secret: &str) -> aws_sdk_apigatewaymanagement::Client {
    let sdk = socketless::aws::static_config(key, secret, Duration::from_secs(10));
    aws_sdk_apigatewaymanagement::Client::from_conf(
        aws_sdk_apigatewaymanagement::config::Builder::from(&sdk)
            .endpoint_url(endpoint)
            .build(),
    )
}

/// A running in-process backend.
pub struct Backend {
    pub public: SocketAddr,
    pub internal: SocketAddr,
    pub lifecycle: Lifecycle,
    pub task: tokio::task::JoinHandle<socketless::http_server::Drain>,
}

impl Backend {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.public, path)
    }

    pub fn internal_url(&self, path: &str) -> String {
        format!("http://{}{}", self.internal, path)
    }

    /// Scrapes /metrics and returns the value of one exact series line, or 0.
    pub async fn metric(&self, series: &str) -> f64 {
        let (_, body) = get(&self.internal_url("/metrics")).await;
        metric_value(&body, series)
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub fn metric_value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Sum of every series of a metric whose labels contain all of `labels`.
pub fn metric_sum(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
        .filter(|l| labels.iter().all(|lab| l.contains(lab)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

pub async fn start(args: ServeArgs) -> Backend {
    start_with(args, Arc::new(Echo)).await
}

pub async fn start_with(args: ServeArgs, handler: Arc<dyn MessageHandler>) -> Backend {
    let config: ServeConfig = args.validate().expect("valid test config");
    let lifecycle = Lifecycle::new();
    let sdk = sdk(config.aws_timeout);
    let prepared: Prepared = within(socketless::serve::prepare_with_sdk(
        config,
        handler,
        lifecycle.clone(),
        sdk,
    ))
    .await
    .expect("backend starts");
    let public = prepared.public.local_addr().unwrap();
    let internal = prepared.internal.local_addr().unwrap();
    prepared.set_ready();
    let task = tokio::spawn(prepared.run());
    Backend {
        public,
        internal,
        lifecycle,
        task,
    }
}

fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Sends one request; returns status, headers and body text.
pub async fn send(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> (StatusCode, http::HeaderMap, String) {
    let mut req = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(body.into())).unwrap();
    let resp: Response<hyper::body::Incoming> = within(client().request(req)).await.expect("request sent");
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = within(resp.into_body().collect()).await.expect("body").to_bytes();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

pub async fn get(url: &str) -> (StatusCode, String) {
    let (s, _, b) = send("GET", url, &[], Bytes::new()).await;
    (s, b)
}

/// The metrics text from `url` once the sum of `name`'s series with `labels` reaches `at_least`.
/// A call is counted after its answer was read, which may be a moment after the effect a
/// test waited for (an item deleted, an app called, a frame received).
pub async fn metrics_once_counted(url: &str, name: &str, labels: &[&str], at_least: f64) -> String {
    within(async {
        loop {
            let text = get(url).await.1;
            if metric_sum(&text, name, labels) >= at_least {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

/// Headers a gateway sends for a connection.
pub fn ctx(id: &str) -> Vec<(&'static str, String)> {
    vec![
        ("x-socketless-connection-id", id.to_string()),
        ("x-socketless-request-id", "req-1".to_string()),
        ("x-socketless-domain-name", "example.test".to_string()),
        ("x-socketless-stage", "dev".to_string()),
        ("x-socketless-source-ip", "192.0.2.1".to_string()),
        ("x-socketless-user-agent", "test-agent".to_string()),
    ]
}

pub async fn call(backend: &Backend, path: &str, id: &str, body: &str) -> (StatusCode, String) {
    let headers = ctx(id);
    let refs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (s, _, b) = send("POST", &backend.url(path), &refs, body.to_string()).await;
    (s, b)
}

/// Picks a free loopback port, never one this test binary was given before: the kernel may hand
/// a just-closed port out again, and two servers told the same port race for it. It is taken
/// below the kernel's ephemeral range where there is room, so that no outgoing connection on
/// this machine gets it as its local port before the server binds it.
pub fn free_port() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let span = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .filter(|low| *low > 11_000)
        .map(|low| (10_000u16, low - 1));
    let mut n = 0u64;
    loop {
        n += 1;
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(n);
        let candidate = span.map_or(0, |(lo, hi)| lo + (h.finish() % u64::from(hi - lo + 1)) as u16);
        let Ok(listener) = std::net::TcpListener::bind(("127.0.0.1", candidate)) else {
            continue;
        };
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let mut handed_out = HANDED_OUT.lock().unwrap();
        if !handed_out.contains(&port) {
            handed_out.push(port);
            return port;
        }
    }
}

/// A request as a fake server received it, its body read whole.
pub struct Received {
    pub method: http::Method,
    pub path: String,
    pub headers: http::HeaderMap,
    pub body: String,
}

/// The answer of a fake server to one request; an error drops the connection unanswered.
pub type FakeAnswer = Result<Response<Full<Bytes>>, std::io::Error>;

/// Serves HTTP/1.1 on `listener`, handing each request, read whole, to `answer`. The fake
/// servers below record what they receive this way. Aborting the returned task closes the
/// port and drops every open connection, since the connections' tasks live in it.
pub fn fake_server<F, Fut>(listener: TcpListener, answer: F) -> tokio::task::JoinHandle<()>
where
    F: Fn(Received) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = FakeAnswer> + Send + 'static,
{
    accept_each(listener, move |stream| {
        let answer = answer.clone();
        async move {
            let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let answer = answer.clone();
                async move {
                    let (parts, body) = req.into_parts();
                    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                    answer(Received {
                        method: parts.method,
                        path: parts.uri.path().to_string(),
                        headers: parts.headers,
                        body: String::from_utf8_lossy(&body).into_owned(),
                    })
                    .await
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        }
    })
}

/// Accepts on `listener` and runs `serve` on each connection, until the returned task is
/// aborted; the connections' tasks live in it, so aborting it drops them too.
pub fn accept_each<F, Fut>(listener: TcpListener, serve: F) -> tokio::task::JoinHandle<()>
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            conns.spawn(serve(stream));
        }
    })
}

/// One call the fake `@connections` endpoint received.
#[derive(Debug, Clone)]
pub struct MgmtCall {
    pub method: String,
    pub path: String,
    pub body: String,
    pub signed: bool,
}

/// A fake `@connections` endpoint: records calls; answers 410 GoneException for ids in `gone`.
#[derive(Clone, Default)]
pub struct FakeConnections {
    pub calls: Arc<Mutex<Vec<MgmtCall>>>,
    pub gone: Arc<Mutex<HashSet<String>>>,
    pub addr: Option<SocketAddr>,
}

impl FakeConnections {
    pub async fn start() -> FakeConnections {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let fake = FakeConnections {
            addr: Some(listener.local_addr().unwrap()),
            ..Default::default()
        };
        let state = fake.clone();
        fake_server(listener, move |req| {
            let state = state.clone();
            async move {
                let method = req.method.to_string();
                let path = percent_encoding::percent_decode_str(&req.path)
                    .decode_utf8_lossy()
                    .into_owned();
                let signed = req
                    .headers
                    .get("authorization")
                    .is_some_and(|v| v.to_str().unwrap_or("").starts_with("AWS4-HMAC-SHA256"));
                let id = path.rsplit('/').next().unwrap_or("").to_string();
                state.calls.lock().unwrap().push(MgmtCall {
                    method: method.clone(),
                    path,
                    body: req.body,
                    signed,
                });
                let gone = state.gone.lock().unwrap().contains(&id);
                let resp = if gone {
                    Response::builder()
                        .status(410)
                        .header("x-amzn-errortype", "GoneException")
                        .header("content-type", "application/json")
                        .body(Full::new(Bytes::from_static(b"{\"message\":\"gone\"}")))
                } else if method == "DELETE" {
                    Response::builder().status(204).body(Full::new(Bytes::new()))
                } else {
                    Response::builder().status(200).body(Full::new(Bytes::new()))
                };
                Ok(resp.unwrap())
            }
        });
        fake
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}/dev", self.addr.unwrap())
    }

    pub fn calls(&self) -> Vec<MgmtCall> {
        self.calls.lock().unwrap().clone()
    }

    /// The `@connections` calls only: not `serve`'s question to `@socketless/v1/info`, which it
    /// asks in the background at its first post to learn whether posts may share calls.
    pub fn connections_calls(&self) -> Vec<MgmtCall> {
        let mut calls = self.calls();
        calls.retain(|c| c.path.contains("/@connections/"));
        calls
    }

    pub fn mark_gone(&self, id: &str) {
        self.gone.lock().unwrap().insert(id.to_string());
    }
}

/// A TCP proxy that can delay every chunk it forwards (a slow network or a slow dependency).
pub struct DelayProxy {
    pub addr: SocketAddr,
    pub delay_ms: Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl DelayProxy {
    pub async fn start(upstream: SocketAddr) -> DelayProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let delay_ms = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let d = delay_ms.clone();
        let task = accept_each(listener, move |client| {
            let d = d.clone();
            async move {
                let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
                    return;
                };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                let up = forward(cr, sw, d.clone());
                let down = forward(sr, cw, d);
                tokio::join!(up, down);
            }
        });
        DelayProxy { addr, delay_ms, task }
    }

    pub fn set_delay(&self, ms: u64) {
        self.delay_ms.store(ms, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Copies `from` to `to`, each chunk after the delay set at that moment, then shuts `to` down.
async fn forward(
    mut from: impl tokio::io::AsyncRead + Unpin,
    mut to: impl tokio::io::AsyncWrite + Unpin,
    delay_ms: Arc<std::sync::atomic::AtomicU64>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16384];
    while let Ok(n) = from.read(&mut buf).await {
        if n == 0 {
            break;
        }
        let delay = delay_ms.load(std::sync::atomic::Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

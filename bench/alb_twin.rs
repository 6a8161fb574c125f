//! A load balancer that behaves like an ALB target group, for ci/e2e-local.sh. It is deliberately
//! less kind than haproxy with fast checks and retries, because an ALB is:
//!
//! - it health-checks each target's /readyz every `--health-interval`;
//! - when a target turns unhealthy it keeps sending it new requests for `--deregistration-lag`
//!   (the AWS Load Balancer Controller has to notice the pod is terminating and deregister it,
//!   and the ALB's nodes have to apply that), and only then stops routing to it;
//! - it keeps idle connections to targets in a pool for `--idle-timeout` (an ALB's idle timeout,
//!   60 s by default) and reuses them;
//! - it never retries: a refused, reset or closed upstream connection is a 502 to the caller;
//! - it picks targets round robin among the routable ones.
//!
//! It prints which targets it routes to whenever that changes, and a count of 502s on exit.
//!
//! alb_twin --listen 127.0.0.1:PORT --target 127.0.0.1:A --target 127.0.0.1:B
//!          [--deregistration-lag 10s] [--idle-timeout 60s] [--health-interval 1s]
//!          [--health-path /readyz]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};

struct Args {
    listen: SocketAddr,
    targets: Vec<SocketAddr>,
    lag: Duration,
    idle: Duration,
    interval: Duration,
    health_path: String,
}

fn parse() -> Args {
    let dur = |v: &str, flag: &str| socketless::config::parse_duration(v).unwrap_or_else(|e| panic!("{flag}: {e}"));
    let mut a = Args {
        listen: "127.0.0.1:0".parse().expect("address"),
        targets: Vec::new(),
        lag: Duration::from_secs(10),
        idle: Duration::from_secs(60),
        interval: Duration::from_secs(1),
        health_path: "/readyz".into(),
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    for pair in argv.chunks(2) {
        let (flag, v) = (pair[0].as_str(), pair.get(1).map(String::as_str).unwrap_or(""));
        match flag {
            "--listen" => a.listen = v.parse().expect("--listen 127.0.0.1:PORT"),
            "--target" => a.targets.push(v.parse().expect("--target 127.0.0.1:PORT")),
            "--deregistration-lag" => a.lag = dur(v, flag),
            "--idle-timeout" => a.idle = dur(v, flag),
            "--health-interval" => a.interval = dur(v, flag),
            "--health-path" => a.health_path = v.to_string(),
            other => panic!("unknown argument {other:?}"),
        }
    }
    assert!(!a.targets.is_empty(), "at least one --target");
    let loopback = a.listen.ip().is_loopback() && a.targets.iter().all(|t| t.ip().is_loopback());
    assert!(loopback, "loopback addresses only");
    a
}

/// What the target group knows about one target.
#[derive(Clone, Copy, PartialEq)]
enum Health {
    Healthy,
    /// Failed a check at this instant; still routed until the deregistration lag has passed.
    Draining(Instant),
    /// Not routed.
    Unused,
}

struct Group {
    targets: Vec<SocketAddr>,
    health: std::sync::Mutex<Vec<Health>>,
    lag: Duration,
    next: AtomicUsize,
    requests: AtomicU64,
    bad_gateway: AtomicU64,
}

impl Group {
    /// The targets requests may go to now: healthy ones, and unhealthy ones still inside the lag.
    fn routable(&self) -> Vec<SocketAddr> {
        let health = self.health.lock().expect("health lock");
        let now = Instant::now();
        self.targets
            .iter()
            .zip(health.iter())
            .filter(|(_, h)| match h {
                Health::Healthy => true,
                Health::Draining(since) => now.duration_since(*since) < self.lag,
                Health::Unused => false,
            })
            .map(|(t, _)| *t)
            .collect()
    }

    fn pick(&self) -> Option<SocketAddr> {
        let routable = self.routable();
        if routable.is_empty() {
            return None;
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        Some(routable[n % routable.len()])
    }
}

/// One health check: a 200 from the health path within the timeout is healthy.
async fn check(client: &Client<HttpConnector, Full<Bytes>>, target: SocketAddr, path: &str) -> bool {
    let Ok(req) = Request::get(format!("http://{target}{path}")).body(Full::new(Bytes::new())) else {
        return false;
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(2), client.request(req)).await,
        Ok(Ok(resp)) if resp.status() == StatusCode::OK
    )
}

/// Checks every target each interval, moves it between states, and reports changes of the
/// routable set.
async fn health_loop(group: Arc<Group>, interval: Duration, path: String) {
    // Health checks use their own connections, as an ALB's do.
    let client = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build(HttpConnector::new());
    let mut shown: Vec<SocketAddr> = Vec::new();
    loop {
        for (i, target) in group.targets.iter().enumerate() {
            let ok = check(&client, *target, &path).await;
            let mut health = group.health.lock().expect("health lock");
            health[i] = match (health[i], ok) {
                (_, true) => Health::Healthy,
                (Health::Healthy, false) => {
                    println!(
                        "alb_twin: {target} failed its health check; still routed for {:?} (deregistration lag)",
                        group.lag
                    );
                    Health::Draining(Instant::now())
                }
                (other, false) => other,
            };
            if let Health::Draining(since) = health[i] {
                if since.elapsed() >= group.lag {
                    health[i] = Health::Unused;
                }
            }
        }
        let now = group.routable();
        if now != shown {
            println!("alb_twin: routing to {now:?}");
            shown = now;
        }
        tokio::time::sleep(interval).await;
    }
}

const HOP_BY_HOP: [&str; 6] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "transfer-encoding",
    "upgrade",
];

fn bad_gateway(group: &Group, why: String) -> Response<Full<Bytes>> {
    group.bad_gateway.fetch_add(1, Ordering::Relaxed);
    println!("alb_twin: 502 ({why})");
    let mut resp = Response::new(Full::new(Bytes::from_static(b"502 Bad Gateway\n")));
    *resp.status_mut() = StatusCode::BAD_GATEWAY;
    resp
}

/// Forwards one request to one target, once. Any failure to get a whole answer is a 502.
async fn forward(
    group: Arc<Group>,
    client: Client<HttpConnector, Full<Bytes>>,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    group.requests.fetch_add(1, Ordering::Relaxed);
    let Some(target) = group.pick() else {
        let mut resp = Response::new(Full::new(Bytes::from_static(b"503 Service Unavailable\n")));
        *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        return resp;
    };
    let (mut parts, body) = req.into_parts();
    let Ok(body) = body.collect().await.map(|b| b.to_bytes()) else {
        let mut resp = Response::new(Full::new(Bytes::from_static(b"400 Bad Request\n")));
        *resp.status_mut() = StatusCode::BAD_REQUEST;
        return resp;
    };
    let path = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    parts.uri = match format!("http://{target}{path}").parse() {
        Ok(uri) => uri,
        Err(e) => return bad_gateway(&group, format!("{target}: {e}")),
    };
    for h in HOP_BY_HOP {
        parts.headers.remove(h);
    }
    let upstream = Request::from_parts(parts, Full::new(body));
    let resp = match client.request(upstream).await {
        Ok(resp) => resp,
        Err(e) => return bad_gateway(&group, format!("{target}: {e:?}")),
    };
    let (mut parts, body) = resp.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return bad_gateway(&group, format!("{target}: response body: {e}")),
    };
    for h in HOP_BY_HOP {
        parts.headers.remove(h);
    }
    Response::from_parts(parts, Full::new(body))
}

#[tokio::main]
async fn main() {
    let a = parse();
    let group = Arc::new(Group {
        targets: a.targets.clone(),
        health: std::sync::Mutex::new(vec![Health::Healthy; a.targets.len()]),
        lag: a.lag,
        next: AtomicUsize::new(0),
        requests: AtomicU64::new(0),
        bad_gateway: AtomicU64::new(0),
    });
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(5)));
    // An ALB keeps idle target connections for its idle timeout and never retries a request;
    // hyper-util's client would otherwise resend a request whose pooled connection was closed.
    let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(a.idle)
        .pool_max_idle_per_host(256)
        .retry_canceled_requests(false)
        .build(connector);

    let listener = tokio::net::TcpListener::bind(a.listen).await.expect("bind --listen");
    println!(
        "alb_twin: listening on {} for {:?}; lag {:?}, idle timeout {:?}, health checks every {:?}",
        listener.local_addr().expect("local address"),
        a.targets,
        a.lag,
        a.idle,
        a.interval
    );
    tokio::spawn(health_loop(group.clone(), a.interval, a.health_path.clone()));

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                let (group, client) = (group.clone(), client.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let (group, client) = (group.clone(), client.clone());
                        async move { Ok::<_, Infallible>(forward(group, client, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    println!(
        "alb_twin: {} requests, {} answered 502",
        group.requests.load(Ordering::Relaxed),
        group.bad_gateway.load(Ordering::Relaxed)
    );
}

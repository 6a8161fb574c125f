//! HTTP/1.1 serving shared by every listener: accept loop, the bounded drain that runs once the
//! lifecycle says to stop accepting, and the limits that keep one client from holding memory or
//! sockets: a bound on the request head, a keep-alive limit that also bounds the time a request
//! head may take (`idle`), a deadline for each request body and a budget for the bodies
//! buffered across requests (`body`), and a lingering close so that an answer sent before the
//! request was read is not lost to a TCP reset (`linger`). Once shutdown begins, every answer
//! carries `Connection: close`, so keep-alive clients stop reusing connections that are about
//! to close.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt as _;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::lifecycle::Lifecycle;

mod body;
mod idle;
mod linger;

pub use body::{BodyBudget, BodyError, BodyPolicy, ReadBody, Reservation, declared_length, read_body, read_incoming};
use idle::Connections;
pub use linger::{LingeringStream, close_at_once};

/// Response body type used by every handler.
pub type Body = Full<Bytes>;

/// Outcome of one listener's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drain {
    /// Every in-flight request finished within the drain timeout.
    Complete,
    /// The drain timeout passed with requests still in flight.
    TimedOut,
}

impl Drain {
    /// The outcome of several listeners: complete only if every one completed.
    pub fn all(drains: &[Drain]) -> Drain {
        if drains.iter().all(|d| *d == Drain::Complete) {
            Drain::Complete
        } else {
            Drain::TimedOut
        }
    }
}

/// Limits on the requests of one listener.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// An idle keep-alive connection stays open this long, and a request's head must arrive
    /// within it (hyper runs one timer for both). It must exceed the idle timeout of any load
    /// balancer in front (an ALB keeps idle connections 60 s), or the balancer reuses a
    /// connection the server is closing and answers 502.
    pub keep_alive: Duration,
    /// The request line and headers together, in bytes; larger heads get 431.
    pub max_header_bytes: usize,
}

/// Serves `handler` on a pre-bound `listener` until `lifecycle` says to stop accepting, then
/// drops the listener (new connections are refused) and waits up to `drain` for in-flight
/// requests. Upgrades (WebSocket) are supported; an upgraded connection leaves the drain as soon
/// as it is handed over.
pub async fn serve<H, F>(
    listener: TcpListener,
    handler: H,
    lifecycle: Lifecycle,
    limits: HttpLimits,
    drain: Duration,
) -> Drain
where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let stop = {
        let lifecycle = lifecycle.clone();
        async move {
            lifecycle.stopped().await;
            drain
        }
    };
    serve_until(listener, handler, lifecycle, stop, limits).await
}

/// Sets `TCP_NODELAY` on the listening socket where the kernel copies it to every connection
/// accepted from it (Linux clones an accepted socket from its listener), saving a system call
/// per connection; returns whether it did. Elsewhere each accepted connection sets it itself.
fn nodelay_for_accepted(listener: &TcpListener) -> bool {
    cfg!(target_os = "linux") && socket2::SockRef::from(listener).set_tcp_nodelay(true).is_ok()
}

/// [`serve`] for a listener whose owner decides when it closes: it accepts until `stop`
/// resolves, then drops the listener and waits for in-flight requests as long as `stop` said.
/// A gateway uses this to stay reachable while its clients are still leaving.
///
/// From the moment `lifecycle` begins the shutdown, every answer but a 101 carries
/// `Connection: close`: a keep-alive client (a load balancer, a connection pool) then opens a
/// new connection for its next request instead of reusing one this process is about to close.
pub async fn serve_until<H, F, S>(
    listener: TcpListener,
    handler: H,
    lifecycle: Lifecycle,
    stop: S,
    limits: HttpLimits,
) -> Drain
where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
    S: Future<Output = Duration>,
{
    // Each connection task holds a clone of `alive`; the drain ends when all are dropped.
    let (alive, mut all_done) = tokio::sync::mpsc::channel::<()>(1);
    let local = listener.local_addr().ok();
    let nodelay_inherited = nodelay_for_accepted(&listener);
    // hyper's read buffer grows up to this; the head must fit well inside it.
    let max_buf = (limits.max_header_bytes * 2).max(16 * 1024);
    let connections = Connections::new(limits.keep_alive, lifecycle);
    let mut sweep = tokio::time::interval(connections.tick());
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stop);
    let drain = loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(pair) => pair,
                    Err(err) => {
                        // Out of file descriptors and friends: back off instead of spinning.
                        tracing::warn!(error = %err, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                if !nodelay_inherited {
                    let _ = stream.set_nodelay(true);
                }
                let registration = connections.open();
                let activity = registration.activity().clone();
                let handler = handler.clone();
                let svc = {
                    let activity = activity.clone();
                    service_fn(move |req| {
                        // The request's one reference to its connection: the sweep's activity
                        // and the drain check both go through it.
                        let serving = activity.serving();
                        // Not boxed: hyper keeps each connection's request future in one box,
                        // allocated once, and writes every request's future into it. A map, not
                        // an async block: the handler's future is polled where it was written,
                        // where an async block would copy it again at its first poll.
                        handler(req, peer).map(move |mut resp| {
                            if serving.draining() {
                                closing(&mut resp);
                            }
                            drop(serving);
                            Ok::<_, Infallible>(resp)
                        })
                    })
                };
                // No hyper timer: the keep-alive limit is the sweep's (see idle.rs).
                let conn = hyper::server::conn::http1::Builder::new()
                    .max_header_size(limits.max_header_bytes)
                    .max_buf_size(max_buf)
                    .serve_connection(TokioIo::new(LingeringStream::new(stream)), svc)
                    .with_upgrades();
                let alive = alive.clone();
                let swept = activity.clone();
                let task = tokio::spawn(async move {
                    let _alive = alive;
                    let _registration = registration;
                    let mut conn = std::pin::pin!(conn);
                    let result = tokio::select! {
                        biased;
                        res = conn.as_mut() => res,
                        _ = activity.stopped() => {
                            // Finish the request in flight, then close (keep-alive ends here).
                            conn.as_mut().graceful_shutdown();
                            conn.await
                        }
                    };
                    if let Err(err) = result {
                        tracing::debug!(error = %err, "connection ended with an error");
                    }
                });
                connections.attach(&swept, task.abort_handle());
            }
            _ = sweep.tick() => connections.sweep(),
            drain = &mut stop => break drain,
        }
    };
    drop(listener);
    tracing::info!(listener = ?local, "stopped accepting; draining");
    connections.stop();
    drop(alive);
    let drained = async {
        loop {
            tokio::select! {
                _ = all_done.recv() => return,
                // Quiet connections still close on time while the rest drain.
                _ = sweep.tick() => connections.sweep(),
            }
        }
    };
    tokio::select! {
        _ = drained => Drain::Complete,
        _ = tokio::time::sleep(drain) => {
            tracing::warn!(listener = ?local, "drain timeout passed with requests in flight");
            Drain::TimedOut
        }
    }
}

/// Marks an answer as the last on its connection (`Connection: close`), unless it hands the
/// connection over (a 101, whose `Connection: Upgrade` must stay).
fn closing(resp: &mut Response<Body>) {
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
}

/// The content types of the answers written here, each built once: `HeaderValue::from_static`
/// checks its text where it runs, so a value made per answer would check it every time.
pub mod content_type {
    use http::HeaderValue;

    pub static TEXT: HeaderValue = HeaderValue::from_static("text/plain");
    pub static TEXT_UTF8: HeaderValue = HeaderValue::from_static("text/plain; charset=utf-8");
    pub static HTML: HeaderValue = HeaderValue::from_static("text/html; charset=utf-8");
    pub static JSON: HeaderValue = HeaderValue::from_static("application/json");
    pub static OCTET_STREAM: HeaderValue = HeaderValue::from_static("application/octet-stream");
    pub static OPENMETRICS: HeaderValue = HeaderValue::from_static(crate::metrics::CONTENT_TYPE);

    /// `text` as a header value, taken from the values above when it is one of them.
    pub fn of(text: &'static str) -> HeaderValue {
        [&TEXT, &TEXT_UTF8, &HTML, &JSON, &OCTET_STREAM]
            .into_iter()
            .find(|v| v.as_bytes() == text.as_bytes())
            .cloned()
            .unwrap_or_else(|| HeaderValue::from_static(text))
    }
}

/// A JSON response.
pub fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    with_body(status, &content_type::JSON, body)
}

/// A JSON error response: `{"error": message}`.
pub fn error(status: StatusCode, message: &str) -> Response<Body> {
    json(status, &serde_json::json!({ "error": message }))
}

/// A response with a body and content type (one of [`content_type`]'s).
pub fn with_body(status: StatusCode, content_type: &HeaderValue, body: impl Into<Bytes>) -> Response<Body> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, content_type.clone());
    resp
}

/// An empty response.
pub fn empty(status: StatusCode) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = status;
    resp
}

/// `/healthz` and `/readyz` answers shared by every listener.
pub fn health(path: &str, lifecycle: &Lifecycle) -> Option<Response<Body>> {
    match path {
        "/healthz" => Some(with_body(StatusCode::OK, &content_type::TEXT, "ok\n")),
        "/readyz" if lifecycle.is_ready() => Some(with_body(StatusCode::OK, &content_type::TEXT, "ready\n")),
        "/readyz" => Some(with_body(
            StatusCode::SERVICE_UNAVAILABLE,
            &content_type::TEXT,
            "not ready\n",
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_known_content_type_is_the_static_value_and_another_is_built() {
        for (text, known) in [
            ("text/plain", &content_type::TEXT),
            ("text/plain; charset=utf-8", &content_type::TEXT_UTF8),
            ("text/html; charset=utf-8", &content_type::HTML),
            ("application/json", &content_type::JSON),
            ("application/octet-stream", &content_type::OCTET_STREAM),
        ] {
            assert_eq!(content_type::of(text), known);
            assert_eq!(known.to_str().unwrap(), text);
        }
        assert_eq!(content_type::of("image/png"), "image/png");
        let answer = with_body(StatusCode::OK, &content_type::JSON, "{}");
        assert_eq!(answer.headers()[header::CONTENT_TYPE], "application/json");
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_connection_accepted_after_the_listener_is_prepared_has_nodelay() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        assert!(nodelay_for_accepted(&listener));
        let addr = listener.local_addr().unwrap();
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        // The accept loop skips its own set_nodelay on this basis.
        assert!(accepted.nodelay().unwrap());
    }
}

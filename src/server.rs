//! HTTP/1.1 serving shared by every listener: accept loop, per-connection graceful watchers,
//! and the bounded drain that runs once the lifecycle says to stop accepting.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::lifecycle::Lifecycle;

/// Response body type used by every handler.
pub type Body = Full<Bytes>;

/// How long a client may take to send a request head before the connection is dropped.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Outcome of one listener's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drain {
    /// Every in-flight request finished within the drain timeout.
    Complete,
    /// The drain timeout passed with requests still in flight.
    TimedOut,
}

/// Serves `handler` on a pre-bound `listener` until `lifecycle` says to stop accepting, then
/// drops the listener (new connections are refused) and waits up to `drain` for in-flight
/// requests. Upgrades (WebSocket) are supported; an upgraded connection leaves the drain as soon
/// as it is handed over.
pub async fn serve<H, F>(listener: TcpListener, handler: H, lifecycle: Lifecycle, drain: Duration) -> Drain
where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    // Each connection task holds a clone of `alive`; the drain ends when all are dropped.
    let (alive, mut all_done) = tokio::sync::mpsc::channel::<()>(1);
    let local = listener.local_addr().ok();
    loop {
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
                let _ = stream.set_nodelay(true);
                let handler = handler.clone();
                let svc = service_fn(move |req| {
                    // Boxed: hyper moves the service future around, and a pointer moves cheaply.
                    let fut = Box::pin(handler(req, peer));
                    async move { Ok::<_, Infallible>(fut.await) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_READ_TIMEOUT)
                    .serve_connection(TokioIo::new(stream), svc)
                    .with_upgrades();
                let alive = alive.clone();
                let lifecycle = lifecycle.clone();
                tokio::spawn(async move {
                    let _alive = alive;
                    let mut conn = std::pin::pin!(conn);
                    let result = tokio::select! {
                        res = conn.as_mut() => res,
                        _ = lifecycle.stopped() => {
                            // Finish the request in flight, then close (keep-alive ends here).
                            conn.as_mut().graceful_shutdown();
                            conn.await
                        }
                    };
                    if let Err(err) = result {
                        tracing::debug!(error = %err, "connection ended with an error");
                    }
                });
            }
            _ = lifecycle.stopped() => break,
        }
    }
    drop(listener);
    tracing::info!(listener = ?local, "stopped accepting; draining");
    drop(alive);
    tokio::select! {
        _ = all_done.recv() => Drain::Complete,
        _ = tokio::time::sleep(drain) => {
            tracing::warn!(listener = ?local, "drain timeout passed with requests in flight");
            Drain::TimedOut
        }
    }
}

/// Why a request body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("request body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("request body could not be read: {0}")]
    Read(String),
}

/// Reads a whole request body, refusing more than `limit` bytes (checked against
/// `Content-Length` first, then while reading).
pub async fn read_body(req: Request<Incoming>, limit: usize) -> Result<(http::request::Parts, Bytes), BodyError> {
    if let Some(len) = req.headers().get(header::CONTENT_LENGTH) {
        if let Some(len) = len.to_str().ok().and_then(|v| v.parse::<u64>().ok()) {
            if len > limit as u64 {
                return Err(BodyError::TooLarge(limit));
            }
        }
    }
    let (parts, body) = req.into_parts();
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok((parts, collected.to_bytes())),
        Err(err) => {
            if err.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
                Err(BodyError::TooLarge(limit))
            } else {
                Err(BodyError::Read(err.to_string()))
            }
        }
    }
}

/// A JSON response.
pub fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// A JSON error response: `{"error": message}`.
pub fn error(status: StatusCode, message: &str) -> Response<Body> {
    json(status, &serde_json::json!({ "error": message }))
}

/// A response with a body and content type.
pub fn with_body(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Body> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
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
        "/healthz" => Some(with_body(StatusCode::OK, "text/plain", "ok\n")),
        "/readyz" if lifecycle.is_ready() => Some(with_body(StatusCode::OK, "text/plain", "ready\n")),
        "/readyz" => Some(with_body(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "not ready\n")),
        _ => None,
    }
}

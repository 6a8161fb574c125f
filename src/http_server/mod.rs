//! HTTP/1.1 serving shared by every listener: accept loop, per-connection graceful watchers,
//! the bounded drain that runs once the lifecycle says to stop accepting, and the limits that
//! keep one client from holding memory or sockets: a bound on the request head, a keep-alive
//! timer, a deadline for each request body, a budget for the bodies buffered across requests,
//! and a lingering close so that an answer sent before the request was read is not lost to a
//! TCP reset.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use crate::lifecycle::Lifecycle;

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

/// How long a lingering close waits for the peer's remaining bytes, and how many it reads.
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 1024 * 1024;
/// Sockets lingering at once; past this a closing socket is dropped at once.
const MAX_LINGERING: usize = 10_000;
static LINGERING: AtomicUsize = AtomicUsize::new(0);

/// A TCP stream that, when dropped, closes the way RFC 7230 §6.6 asks: it shuts down its
/// sending side, then reads and discards what the peer still sends (bounded in time and
/// bytes) before closing. Closing with unread bytes in the receive queue makes the kernel send
/// a reset, and a reset can destroy an answer the peer has not read yet: a 413 sent before the
/// rest of a large body, or the Close frame that ends a WebSocket.
pub struct LingeringStream {
    inner: Option<TcpStream>,
}

impl LingeringStream {
    pub fn new(stream: TcpStream) -> Self {
        LingeringStream { inner: Some(stream) }
    }

    fn stream(&mut self) -> &mut TcpStream {
        // Only `drop` takes the stream out.
        self.inner.as_mut().expect("stream present until drop")
    }
}

impl Drop for LingeringStream {
    fn drop(&mut self) {
        let Some(mut stream) = self.inner.take() else { return };
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if LINGERING.fetch_add(1, Ordering::Relaxed) >= MAX_LINGERING {
            LINGERING.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        handle.spawn(async move {
            let _ = tokio::time::timeout(LINGER_TIME, async {
                let _ = stream.shutdown().await;
                let mut buf = [0u8; 4096];
                let mut read = 0;
                while read < LINGER_BYTES {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => read += n,
                    }
                }
            })
            .await;
            LINGERING.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

impl AsyncRead for LingeringStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(self.stream()).poll_read(cx, buf)
    }
}

impl AsyncWrite for LingeringStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(self.stream()).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(self.stream()).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.as_ref().is_some_and(|s| s.is_write_vectored())
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(self.stream()).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(self.stream()).poll_shutdown(cx)
    }
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
    // Each connection task holds a clone of `alive`; the drain ends when all are dropped.
    let (alive, mut all_done) = tokio::sync::mpsc::channel::<()>(1);
    let local = listener.local_addr().ok();
    // hyper's read buffer grows up to this; the head must fit well inside it.
    let max_buf = (limits.max_header_bytes * 2).max(16 * 1024);
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
                    .header_read_timeout(limits.keep_alive)
                    .max_header_size(limits.max_header_bytes)
                    .max_buf_size(max_buf)
                    .serve_connection(TokioIo::new(LingeringStream::new(stream)), svc)
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

/// Bytes of request bodies one listener holds at once. A request that would take it past its
/// size is refused at once instead of being read, so slow or parallel bodies cannot grow memory
/// without bound.
#[derive(Debug)]
pub struct BodyBudget {
    left: AtomicUsize,
    size: usize,
}

impl BodyBudget {
    pub fn new(size: usize) -> Arc<Self> {
        Arc::new(BodyBudget {
            left: AtomicUsize::new(size),
            size,
        })
    }

    pub fn size(&self) -> usize {
        self.size
    }

    /// Bytes held now.
    pub fn in_use(&self) -> usize {
        self.size - self.left.load(Ordering::Relaxed)
    }

    fn take(self: &Arc<Self>, n: usize, held: &mut Reservation) -> bool {
        if n == 0 {
            return true;
        }
        let ok = self
            .left
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| left.checked_sub(n))
            .is_ok();
        if ok {
            held.bytes += n;
        }
        ok
    }
}

/// Bytes taken from a [`BodyBudget`], given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<BodyBudget>,
    bytes: usize,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.budget.left.fetch_add(self.bytes, Ordering::AcqRel);
        }
    }
}

/// How request bodies are read on one listener: the deadline for a whole body and the shared
/// budget of buffered bytes.
#[derive(Debug, Clone)]
pub struct BodyPolicy {
    pub timeout: Duration,
    pub budget: Arc<BodyBudget>,
}

impl BodyPolicy {
    pub fn new(timeout: Duration, budget_bytes: usize) -> Self {
        BodyPolicy {
            timeout,
            budget: BodyBudget::new(budget_bytes),
        }
    }
}

/// Why a request body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("request body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("request body did not arrive within {0:?}")]
    TimedOut(Duration),
    #[error("too many request bodies are being received; try again")]
    Busy,
    #[error("request body could not be read: {0}")]
    Read(String),
}

/// A request body read whole, with the budget it holds until dropped.
#[derive(Debug)]
pub struct ReadBody {
    pub parts: http::request::Parts,
    pub bytes: Bytes,
    pub reservation: Reservation,
}

/// Reads a whole request body, refusing more than `limit` bytes (checked against
/// `Content-Length` first, then while reading), a body slower than the policy's deadline, and a
/// body the listener's budget cannot hold.
pub async fn read_body(req: Request<Incoming>, limit: usize, policy: &BodyPolicy) -> Result<ReadBody, BodyError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(BodyError::TooLarge(limit));
    }
    let mut reservation = Reservation {
        budget: policy.budget.clone(),
        bytes: 0,
    };
    // A declared length is reserved before a byte is read, so a refusal costs nothing.
    if let Some(len) = declared {
        if !policy.budget.take(len as usize, &mut reservation) {
            return Err(BodyError::Busy);
        }
    }
    let (parts, mut body) = req.into_parts();
    let read = async {
        // One data frame (the usual case) is kept as it came; more are copied together.
        let mut first: Option<Bytes> = None;
        let mut joined: Option<BytesMut> = None;
        let mut len = 0usize;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| BodyError::Read(e.to_string()))?;
            let Ok(data) = frame.into_data() else { continue };
            len += data.len();
            if len > limit {
                return Err(BodyError::TooLarge(limit));
            }
            if !policy
                .budget
                .take(len.saturating_sub(reservation.bytes), &mut reservation)
            {
                return Err(BodyError::Busy);
            }
            match (first.take(), joined.as_mut()) {
                (_, Some(all)) => all.extend_from_slice(&data),
                (None, None) => first = Some(data),
                (Some(head), None) => {
                    let mut all = BytesMut::with_capacity(len.max(declared.unwrap_or(0) as usize));
                    all.extend_from_slice(&head);
                    all.extend_from_slice(&data);
                    joined = Some(all);
                }
            }
        }
        Ok(joined.map(BytesMut::freeze).or(first).unwrap_or_default())
    };
    match tokio::time::timeout(policy.timeout, read).await {
        Ok(Ok(bytes)) => Ok(ReadBody {
            parts,
            bytes,
            reservation,
        }),
        Ok(Err(err)) => Err(err),
        Err(_) => Err(BodyError::TimedOut(policy.timeout)),
    }
}

/// A JSON response.
pub fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    with_body(status, "application/json", body)
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

//! The HTTP/1.1 client for calls between socketless's own processes and to backends: the
//! gateway's integration and authorizer calls, forwarded `@connections` calls between gateway
//! replicas, and `serve`'s posts to a socketless gateway. Keep-alive connections to each
//! address, over hyper's connection API.
//!
//! hyper-util's pooled client hashed its pool key (scheme and authority, byte by byte through
//! SipHash) twice per call and moved each request through several futures and channels; on the
//! message path that was about a tenth of the gateway's instructions (bench/RESULTS.md). This
//! pool keeps what these calls need: idle connections reused most recent first, never
//! one idle for the idle timeout or already closed, a connect timeout, TCP_NODELAY, and a
//! request that a reused connection turns out to be closed for is sent again on a new one (hyper
//! hands it back unsent, so no call happens twice).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::Authority;
use http::{HeaderValue, Request, Response, Uri, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

/// Why a call got no answer.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The URI is not `http://host[:port]/…`.
    #[error("URI {0} is not http://host[:port]/…")]
    Uri(Uri),
    /// No connection could be made: the name did not resolve, or the address refused or did
    /// not answer (the source says which).
    #[error("connecting to {authority}: {source}")]
    Connect {
        authority: Authority,
        #[source]
        source: std::io::Error,
    },
    /// The exchange failed after connecting (a reset, a malformed answer).
    #[error("{0}")]
    Exchange(String),
    /// The answer's body broke off or was larger than the caller reads.
    #[error("reading the answer: {0}")]
    Body(String),
}

impl CallError {
    /// Whether the answer's body was over the caller's bound.
    pub fn too_large(&self) -> bool {
        matches!(self, CallError::Body(why) if why == TOO_LARGE)
    }
}

const TOO_LARGE: &str = "length limit exceeded";

type Sender = SendRequest<Full<Bytes>>;

/// Connections to the backends, idle ones kept for reuse.
pub struct Pool {
    idle: Mutex<Vec<(Authority, Vec<Idle>)>>,
    idle_timeout: Duration,
    max_idle: usize,
    connect_timeout: Duration,
}

struct Idle {
    sender: Sender,
    since: Instant,
}

/// A connection a call is using; [`Pool::give_back`] returns it once the answer was read.
pub struct Lease {
    authority: Authority,
    sender: Sender,
}

impl Pool {
    /// `idle_timeout` must stay below the backends' keep-alive timeout, so that a connection is
    /// never reused just as the backend closes it.
    pub fn new(idle_timeout: Duration, max_idle: usize, connect_timeout: Duration) -> Self {
        Pool {
            idle: Mutex::new(Vec::new()),
            idle_timeout,
            max_idle,
            connect_timeout,
        }
    }

    /// Sends `req` (an absolute `http://` URI) on an idle connection to its address, or on a
    /// new one.
    pub async fn send(&self, mut req: Request<Full<Bytes>>) -> Result<(Response<Incoming>, Lease), CallError> {
        let uri = req.uri().clone();
        let authority = match (uri.scheme_str(), uri.authority()) {
            (Some("http"), Some(a)) => a.clone(),
            _ => return Err(CallError::Uri(uri)),
        };
        if !req.headers().contains_key(header::HOST) {
            let host =
                HeaderValue::from_str(host_header(&authority)).map_err(|e| CallError::Exchange(e.to_string()))?;
            req.headers_mut().insert(header::HOST, host);
        }
        // HTTP/1.1 origin form: the path and query only.
        *req.uri_mut() = uri
            .path_and_query()
            .map(|p| Uri::from(p.clone()))
            .unwrap_or_else(|| Uri::from_static("/"));
        loop {
            let (mut sender, reused) = match self.checkout(&authority) {
                Some(sender) => (sender, true),
                // Boxed: a new connection is the exception, and every call's future would
                // otherwise hold room for opening one.
                None => (Box::pin(self.connect(&authority)).await?, false),
            };
            if sender.ready().await.is_err() {
                if reused {
                    continue;
                }
                return Err(CallError::Exchange(
                    "the new connection closed before the request".into(),
                ));
            }
            match sender.try_send_request(req).await {
                Ok(resp) => return Ok((resp, Lease { authority, sender })),
                Err(mut err) => match err.take_message() {
                    // Never written: a reused connection closed under it; try another.
                    Some(unsent) if reused => req = unsent,
                    _ => return Err(CallError::Exchange(format!("{:?}", err.into_error()))),
                },
            }
        }
    }

    /// Sends `req` and reads its answer whole, up to `max_answer` bytes of body; the connection
    /// goes back to the pool unless the answer says it is the connection's last.
    pub async fn call(
        &self,
        req: Request<Full<Bytes>>,
        max_answer: usize,
    ) -> Result<(http::response::Parts, Bytes), CallError> {
        let (resp, lease) = self.send(req).await?;
        let (parts, body) = resp.into_parts();
        let body = Limited::new(body, max_answer).collect().await.map_err(|e| {
            CallError::Body(if e.is::<http_body_util::LengthLimitError>() {
                TOO_LARGE.to_string()
            } else {
                e.to_string()
            })
        })?;
        if !says_close(&parts.headers) {
            self.give_back(lease);
        }
        Ok((parts, body.to_bytes()))
    }

    /// Returns a connection whose answer was read completely.
    pub fn give_back(&self, lease: Lease) {
        if lease.sender.is_closed() {
            return;
        }
        let mut idle = self.lock();
        let at = match idle.iter().position(|(a, _)| *a == lease.authority) {
            Some(at) => at,
            None => {
                idle.push((lease.authority, Vec::new()));
                idle.len() - 1
            }
        };
        let list = &mut idle[at].1;
        // The oldest are first: drop those past the idle timeout (closing them).
        let stale = list
            .iter()
            .take_while(|i| i.since.elapsed() >= self.idle_timeout || i.sender.is_closed())
            .count();
        list.drain(..stale);
        if list.len() < self.max_idle {
            list.push(Idle {
                sender: lease.sender,
                since: Instant::now(),
            });
        }
    }

    fn checkout(&self, authority: &Authority) -> Option<Sender> {
        let mut idle = self.lock();
        let list = &mut idle.iter_mut().find(|(a, _)| a == authority)?.1;
        while let Some(i) = list.pop() {
            if i.since.elapsed() < self.idle_timeout && !i.sender.is_closed() {
                return Some(i.sender);
            }
        }
        None
    }

    async fn connect(&self, authority: &Authority) -> Result<Sender, CallError> {
        let port = authority.port_u16().unwrap_or(80);
        // An IPv6 literal comes bracketed in a URI, not in a socket address.
        let host = authority.host().trim_start_matches('[').trim_end_matches(']');
        let failed = |source| CallError::Connect {
            authority: authority.clone(),
            source,
        };
        let stream = tokio::time::timeout(self.connect_timeout, tokio::net::TcpStream::connect((host, port)))
            .await
            .map_err(|_| failed(std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out")))?
            .map_err(failed)?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| CallError::Exchange(format!("{e:?}")))?;
        tokio::spawn(async move {
            if let Err(err) = conn.await {
                tracing::debug!(error = %err, "pooled connection ended with an error");
            }
        });
        Ok(sender)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(Authority, Vec<Idle>)>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Whether an answer's `Connection` header says the connection closes after it.
pub fn says_close(headers: &http::HeaderMap) -> bool {
    headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")))
}

/// The Host header for an authority: host, and the port unless it is HTTP's default.
fn host_header(authority: &Authority) -> &str {
    match authority.port_u16() {
        Some(80) => authority.host(),
        _ => authority.as_str(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A backend that answers one request per connection and closes it 20 ms later, without
    /// saying so (no `Connection: close`), as a backend's keep-alive limit does. Returns its
    /// address, a count of the connections it accepted and a count of those it has closed.
    async fn one_shot_backend() -> (
        String,
        std::sync::Arc<std::sync::atomic::AtomicUsize>,
        std::sync::Arc<std::sync::atomic::AtomicUsize>,
    ) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let closed = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = accepted.clone();
        let closes = closed.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let closes = closes.clone();
                tokio::spawn(async move {
                    let mut got = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                        }
                    }
                    let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    drop(s);
                    closes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                });
            }
        });
        (addr, accepted, closed)
    }

    async fn get(pool: &Pool, addr: &str) -> Result<String, String> {
        let req = Request::get(format!("http://{addr}/message"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let (_, body) = pool.call(req, 1024).await.map_err(|e| e.to_string())?;
        Ok(String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn a_pooled_connection_the_backend_closed_is_never_an_error() {
        let (addr, accepted, closed) = one_shot_backend().await;
        let pool = Pool::new(Duration::from_secs(60), 8, Duration::from_secs(5));
        for i in 0..30 {
            assert_eq!(get(&pool, &addr).await.as_deref(), Ok("ok"), "call {i}");
            // The connection went back to the pool open; it closes while idle there. On a
            // loaded machine the backend's 20 ms can run long: wait (bounded) for the close
            // itself, so the next call always meets a connection closed while idle, never
            // one closing under the request.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            while closed.load(std::sync::atomic::Ordering::SeqCst) <= i {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the backend never closed connection {i}"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 30);
    }

    #[tokio::test]
    async fn idle_connections_are_reused_until_the_idle_timeout() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(
                    TokioIo::new(s),
                    hyper::service::service_fn(|_req| async {
                        Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                    }),
                ));
            }
        });
        let pool = Pool::new(Duration::from_millis(300), 8, Duration::from_secs(5));
        for _ in 0..50 {
            assert_eq!(get(&pool, &addr).await.as_deref(), Ok("ok"));
        }
        assert_eq!(
            accepted.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "one keep-alive connection"
        );
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(get(&pool, &addr).await.as_deref(), Ok("ok"));
        assert_eq!(
            accepted.load(std::sync::atomic::Ordering::SeqCst),
            2,
            "a connection idle for the idle timeout is not reused"
        );
    }

    #[test]
    fn a_connection_close_answer_is_the_connections_last() {
        let with = |values: &[&str]| {
            let mut h = http::HeaderMap::new();
            for v in values {
                h.append(http::header::CONNECTION, v.parse().unwrap());
            }
            says_close(&h)
        };
        assert!(with(&["close"]));
        assert!(with(&["Keep-Alive, Close"]));
        assert!(with(&["keep-alive", "close"]));
        assert!(!with(&[]));
        assert!(!with(&["keep-alive"]));
        assert!(!with(&["closed"]));
    }

    #[test]
    fn host_header_leaves_out_the_default_port() {
        assert_eq!(host_header(&Authority::from_static("backend:80")), "backend");
        assert_eq!(host_header(&Authority::from_static("backend:8080")), "backend:8080");
        assert_eq!(host_header(&Authority::from_static("backend")), "backend");
    }
}

//! Reading request bodies whole: a size limit, a deadline, and a budget of buffered bytes
//! shared by the listener's requests.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Poll;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{Request, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;

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
    let (parts, body) = req.into_parts();
    let (bytes, reservation) = read_incoming(body, declared_length(&parts.headers), limit, policy).await?;
    Ok(ReadBody {
        parts,
        bytes,
        reservation,
    })
}

/// The body length a request declares in `Content-Length`, if it is a number.
pub fn declared_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

/// [`read_body`] for a body already split from its request head, which the caller may drop
/// first (a request's head is the larger part of its size); `declared` is
/// [`declared_length`]'s answer for that head.
pub async fn read_incoming(
    mut body: Incoming,
    declared: Option<u64>,
    limit: usize,
    policy: &BodyPolicy,
) -> Result<(Bytes, Reservation), BodyError> {
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
    // A body that has arrived with its head (the usual case) is read at once, without setting
    // a timer; the deadline runs from the first moment the body keeps the request waiting.
    let outcome = {
        let mut read = std::pin::pin!(read);
        match std::future::poll_fn(|cx| Poll::Ready(read.as_mut().poll(cx))).await {
            Poll::Ready(outcome) => outcome,
            Poll::Pending => match tokio::time::timeout(policy.timeout, read).await {
                Ok(outcome) => outcome,
                Err(_) => Err(BodyError::TimedOut(policy.timeout)),
            },
        }
    };
    outcome.map(|bytes| (bytes, reservation))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Serves one connection whose requests' bodies are read with `read_incoming` and a 1 s
    /// deadline; answers each with what the read gave.
    async fn server() -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let policy = BodyPolicy::new(Duration::from_secs(1), 1 << 20);
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let svc = service_fn(move |req: Request<Incoming>| {
                let policy = policy.clone();
                async move {
                    let declared = declared_length(req.headers());
                    let answer = match read_incoming(req.into_body(), declared, 1024, &policy).await {
                        Ok((bytes, _)) => format!("read {}", String::from_utf8_lossy(&bytes)),
                        Err(err) => format!("error {err}"),
                    };
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(http_body_util::Full::new(Bytes::from(
                        answer,
                    ))))
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
        addr
    }

    async fn exchange(addr: std::net::SocketAddr, parts: &[(&[u8], u64)]) -> String {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        for (bytes, wait_ms) in parts {
            stream.write_all(bytes).await.unwrap();
            tokio::time::sleep(Duration::from_millis(*wait_ms)).await;
        }
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
        String::from_utf8_lossy(&answer).into_owned()
    }

    const HEAD: &[u8] = b"POST / HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: 5\r\n\r\n";

    #[tokio::test]
    async fn a_body_that_came_with_its_head_is_read_at_once() {
        let addr = server().await;
        let answer = exchange(addr, &[(&[HEAD, b"hello"].concat(), 0)]).await;
        assert!(answer.ends_with("read hello"), "{answer}");
    }

    #[tokio::test]
    async fn a_body_that_follows_its_head_within_the_deadline_is_read() {
        let addr = server().await;
        let answer = exchange(addr, &[(HEAD, 100), (b"he", 100), (b"llo", 0)]).await;
        assert!(answer.ends_with("read hello"), "{answer}");
    }

    #[tokio::test]
    async fn a_body_that_stops_arriving_is_refused_at_the_deadline() {
        let addr = server().await;
        let started = std::time::Instant::now();
        let answer = exchange(addr, &[(&[HEAD, b"he"].concat(), 0)]).await;
        assert!(
            answer.ends_with("error request body did not arrive within 1s"),
            "{answer}"
        );
        assert!(started.elapsed() >= Duration::from_secs(1));
    }
}

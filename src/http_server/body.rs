//! Reading request bodies whole: a size limit, a deadline, and a budget of buffered bytes
//! shared by the listener's requests.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
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
    match tokio::time::timeout(policy.timeout, read).await {
        Ok(Ok(bytes)) => Ok((bytes, reservation)),
        Ok(Err(err)) => Err(err),
        Err(_) => Err(BodyError::TimedOut(policy.timeout)),
    }
}

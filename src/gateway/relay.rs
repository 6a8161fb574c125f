//! Posts for connections another replica holds, carried to it many to a call. A replica that
//! gets PostToConnection for a connection it does not hold forwards it (see `peers.rs`); one
//! call per post costs the owner and this replica an HTTP exchange each, as much again as the
//! post itself. So posts to one owner share calls: while [`MAX_IN_FLIGHT`] calls to that owner
//! are under way, the posts that arrive wait, and the next call carries all of them (up to
//! [`MAX_ITEMS`] posts and [`MAX_BYTES`] of frames), in the order they came. A post that finds
//! a call free goes at once, alone: nothing waits for company, so a lone post's latency is the
//! single forward's.
//!
//! The call is `POST /{stage}/@socketless/v1/posts` with the peers' marker (it is refused
//! without one: a client never reaches it), a body of posts framed as `[id length: u8][id]
//! [flags: u8, bit 0 = binary][frame length: u32 BE][frame]`, and an answer of one byte per
//! post, in order: each post's outcome, which this replica turns into the answer its caller
//! would have had from the owner (200, 410 `GoneException`, 429 `LimitExceededException`). An
//! owner that does not know the call (a replica of an older version during a rolling update)
//! answers it with something other than 200: the posts then go one by one, as before.
//!
//! A post that carries a trace context is forwarded on its own, so that its spans continue on
//! the owner.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use super::connection::QueueError;
use super::error::GatewayError;
use super::management::{Target, authenticate, body_error};
use super::peers::{self, Peers, Unanswered};
use super::shared::Shared;
use crate::contract::MAX_POST_BYTES;
use crate::http_server::{self, Body};
use crate::timefmt::now_ms;

/// Calls to one owner under way at once; posts that arrive meanwhile wait for the next.
pub const MAX_IN_FLIGHT: usize = 2;

/// Posts one call carries at most.
pub const MAX_ITEMS: usize = 256;

/// Frame bytes one call carries at most (a single post may be up to [`MAX_POST_BYTES`], which
/// is less).
pub const MAX_BYTES: usize = 1 << 20;

/// The longest connection id a carried post may have (ids this gateway issues have 16
/// characters); a post for a longer one goes on its own.
const MAX_ID: usize = 255;

/// The largest body the owner reads.
pub const MAX_BODY_BYTES: usize = MAX_BYTES + MAX_ITEMS * (1 + MAX_ID + 1 + 4);

/// An outcome, one byte per post in the answer.
const DELIVERED: u8 = 0;
const GONE: u8 = 1;
const FULL: u8 = 2;

const _: () = assert!(MAX_POST_BYTES <= MAX_BYTES);

/// One post to forward, with what a forward of it alone needs.
pub struct Post {
    pub id: String,
    pub frame: Bytes,
    pub binary: bool,
    pub path_and_query: String,
    pub raw_path: String,
    pub content_type: Option<HeaderValue>,
}

type Answer = Result<Response<Body>, Unanswered>;

struct Waiting {
    post: Post,
    answer: oneshot::Sender<Answer>,
}

#[derive(Default)]
struct Lane {
    in_flight: usize,
    waiting: VecDeque<Waiting>,
}

/// The posts waiting for each owner.
pub struct Relay {
    peers: Arc<Peers>,
    /// The stage (a template's `StageName`: letters, digits, `-` and `_`), for the call's path.
    stage: String,
    lanes: Mutex<HashMap<String, Lane>>,
}

impl Relay {
    pub fn new(peers: Arc<Peers>, stage: String) -> Self {
        Relay {
            peers,
            stage,
            lanes: Mutex::new(HashMap::new()),
        }
    }

    /// Forwards a post to `owner`, with others to the same owner when calls to it are under
    /// way, and returns the answer its caller gets.
    pub async fn post(self: &Arc<Self>, owner: String, post: Post) -> Answer {
        if post.id.len() > MAX_ID {
            return self.alone(&owner, post).await;
        }
        let (tx, rx) = oneshot::channel();
        let waiting = Waiting { post, answer: tx };
        let first = {
            let mut lanes = self.lanes.lock().unwrap_or_else(|p| p.into_inner());
            let lane = lanes.entry(owner.clone()).or_default();
            if lane.in_flight < MAX_IN_FLIGHT {
                lane.in_flight += 1;
                Some(waiting)
            } else {
                lane.waiting.push_back(waiting);
                None
            }
        };
        if let Some(first) = first {
            let relay = self.clone();
            // The call and the ones after it run in their own task: a caller that goes away
            // does not strand the posts waiting behind it.
            tokio::spawn(async move {
                relay.send(&owner, vec![first]).await;
                relay.drain(owner).await;
            });
        }
        rx.await
            .unwrap_or_else(|_| Err(Unanswered::Unavailable("the relay stopped".into())))
    }

    /// Sends what waits for `owner`, call after call, until nothing does; then frees the slot.
    async fn drain(&self, owner: String) {
        loop {
            let batch = {
                let mut lanes = self.lanes.lock().unwrap_or_else(|p| p.into_inner());
                let Some(lane) = lanes.get_mut(&owner) else { return };
                if lane.waiting.is_empty() {
                    lane.in_flight -= 1;
                    if lane.in_flight == 0 {
                        lanes.remove(&owner);
                    }
                    return;
                }
                let mut batch = Vec::new();
                let mut bytes = 0;
                while let Some(next) = lane.waiting.front() {
                    let size = next.post.frame.len();
                    if batch.len() == MAX_ITEMS || (!batch.is_empty() && bytes + size > MAX_BYTES) {
                        break;
                    }
                    bytes += size;
                    batch.extend(lane.waiting.pop_front());
                }
                batch
            };
            self.send(&owner, batch).await;
        }
    }

    /// One call to `owner` carrying `batch`; every post in it gets its answer.
    async fn send(&self, owner: &str, batch: Vec<Waiting>) {
        let path = format!("/{}/@socketless/v1/posts", self.stage);
        let answer = self
            .peers
            .forward(
                owner,
                &Method::POST,
                &path,
                &path,
                Some(&HeaderValue::from_static("application/octet-stream")),
                encode(batch.iter().map(|w| &w.post)),
                now_ms(),
            )
            .await;
        let outcomes = match answer {
            Ok(resp) if resp.status() == StatusCode::OK => {
                let bytes = match http_body_util::BodyExt::collect(resp.into_body()).await {
                    Ok(collected) => collected.to_bytes(),
                    Err(never) => match never {},
                };
                (bytes.len() == batch.len()).then_some(bytes)
            }
            Ok(resp) => {
                tracing::debug!(owner, status = %resp.status(), "the owner does not take carried posts: forwarding them one by one");
                None
            }
            Err(why) => {
                for w in batch {
                    let _ = w.answer.send(Err(why.clone()));
                }
                return;
            }
        };
        match outcomes {
            Some(outcomes) => {
                for (w, outcome) in batch.into_iter().zip(outcomes) {
                    let _ = w.answer.send(Ok(answer_of(outcome)));
                }
            }
            None => {
                for w in batch {
                    let answer = self.alone(owner, w.post).await;
                    let _ = w.answer.send(answer);
                }
            }
        }
    }

    /// The post forwarded on its own (`peers.rs`), its answer relayed as it came.
    pub async fn alone(&self, owner: &str, post: Post) -> Answer {
        self.peers
            .forward(
                owner,
                &Method::POST,
                &post.path_and_query,
                &post.raw_path,
                post.content_type.as_ref(),
                post.frame,
                now_ms(),
            )
            .await
    }

    #[cfg(test)]
    fn waiting(&self) -> usize {
        let lanes = self.lanes.lock().unwrap();
        lanes.values().map(|l| l.waiting.len()).sum()
    }
}

/// The answer the owner would have given to the post alone.
fn answer_of(outcome: u8) -> Response<Body> {
    match outcome {
        DELIVERED => http_server::empty(StatusCode::OK),
        GONE => GatewayError::Gone.response(),
        FULL => GatewayError::OutboxFull.response(),
        _ => GatewayError::OwnerUnavailable.response(),
    }
}

fn encode<'a>(posts: impl Iterator<Item = &'a Post>) -> Bytes {
    let mut out = BytesMut::new();
    for p in posts {
        out.put_u8(p.id.len() as u8);
        out.put_slice(p.id.as_bytes());
        out.put_u8(u8::from(p.binary));
        out.put_u32(p.frame.len() as u32);
        out.put_slice(&p.frame);
    }
    out.freeze()
}

/// The posts of a body, each as (id, frame, binary); `None` when the body is not one.
fn decode(mut body: Bytes) -> Option<Vec<(String, Bytes, bool)>> {
    let mut out = Vec::new();
    while body.has_remaining() {
        let n = usize::from(body.get_u8());
        if body.remaining() < n + 5 {
            return None;
        }
        let id = String::from_utf8(body.split_to(n).to_vec()).ok()?;
        let binary = body.get_u8() & 1 == 1;
        let len = body.get_u32() as usize;
        if len > MAX_POST_BYTES || body.remaining() < len || out.len() == MAX_ITEMS {
            return None;
        }
        out.push((id, body.split_to(len), binary));
    }
    Some(out)
}

/// The frame a post becomes: text unless `binary` or not UTF-8 (checked once, not copied).
pub(super) fn frame_of(body: Bytes, binary: bool) -> Message {
    if !binary {
        if let Ok(text) = Utf8Bytes::try_from(body.clone()) {
            return Message::Text(text);
        }
    }
    Message::Binary(body)
}

/// `POST /{stage}/@socketless/v1/posts`, from a peer: each post queued here as PostToConnection
/// would queue it, and counted as one (`operation="post"`, `source="peer"`).
pub async fn serve_posts(gw: &Shared, req: Request<Incoming>) -> Result<Response<Body>, GatewayError> {
    if !req.headers().contains_key(peers::FORWARDED) {
        return Err(GatewayError::Forbidden);
    }
    if req.method() != Method::POST {
        return Err(GatewayError::ExtensionMethod);
    }
    let target = Target::of(&req);
    let read = http_server::read_body(req, MAX_BODY_BYTES, &gw.config.body)
        .await
        .map_err(body_error)?;
    authenticate(gw, true, &Method::POST, &target, &read.parts.headers, &read.bytes)?;
    let posts = decode(read.bytes).ok_or_else(|| GatewayError::BadDelivery("not a body of carried posts".into()))?;
    let mut outcomes = Vec::with_capacity(posts.len());
    for (id, frame, binary) in posts {
        let outcome = match gw.connections.lookup(&id) {
            None => GONE,
            Some(conn) => {
                let binary = gw.config.binary_frames && binary;
                let msg = frame_of(frame, binary);
                match gw.connections.post(&conn, msg) {
                    Ok(()) => DELIVERED,
                    Err(QueueError::Full) => FULL,
                    Err(QueueError::Closed) => GONE,
                }
            }
        };
        let status = match outcome {
            DELIVERED => 200,
            GONE => 410,
            _ => 429,
        };
        gw.metrics.management("post", "peer", status);
        outcomes.push(outcome);
    }
    Ok(http_server::with_body(
        StatusCode::OK,
        "application/octet-stream",
        outcomes,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn post(id: &str, frame: &'static [u8], binary: bool) -> Post {
        Post {
            id: id.into(),
            frame: Bytes::from_static(frame),
            binary,
            path_and_query: String::new(),
            raw_path: String::new(),
            content_type: None,
        }
    }

    #[test]
    fn posts_round_trip_in_order() {
        let posts = [
            post("AAAAAAAAAAAAAAA=", b"hello", false),
            post("BBBBBBBBBBBBBBB=", b"\x00\xff", true),
            post("C", b"", false),
        ];
        let decoded = decode(encode(posts.iter())).unwrap();
        let want: Vec<(String, Bytes, bool)> = posts
            .iter()
            .map(|p| (p.id.clone(), p.frame.clone(), p.binary))
            .collect();
        assert_eq!(decoded, want);
        assert_eq!(decode(Bytes::new()).unwrap(), vec![]);
    }

    #[test]
    fn hostile_bodies_are_refused_not_misread() {
        let good = encode([post("AAAAAAAAAAAAAAA=", b"hello", false)].iter());
        for cut in 1..good.len() {
            assert!(decode(good.slice(..cut)).is_none(), "cut at {cut}");
        }
        // A frame length past the body, and one past the post limit.
        let mut long = BytesMut::new();
        long.put_u8(1);
        long.put_slice(b"A");
        long.put_u8(0);
        long.put_u32(u32::MAX);
        assert!(decode(long.freeze()).is_none());
        let mut big = BytesMut::new();
        big.put_u8(1);
        big.put_slice(b"A");
        big.put_u8(0);
        big.put_u32((MAX_POST_BYTES + 1) as u32);
        big.put_slice(&vec![b'x'; MAX_POST_BYTES + 1]);
        assert!(decode(big.freeze()).is_none());
        // An id that is not UTF-8.
        assert!(decode(Bytes::from_static(b"\x01\xff\x00\x00\x00\x00\x00")).is_none());
        // More posts than a call carries.
        let many: Vec<Post> = (0..=MAX_ITEMS).map(|_| post("A", b"", false)).collect();
        assert!(decode(encode(many.iter())).is_none());
        assert!(decode(encode(many[..MAX_ITEMS].iter())).is_some());
    }

    #[test]
    fn outcomes_answer_as_the_owner_would() {
        assert_eq!(answer_of(DELIVERED).status(), StatusCode::OK);
        assert_eq!(answer_of(GONE).status(), StatusCode::GONE);
        assert_eq!(answer_of(FULL).status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(answer_of(9).status(), StatusCode::SERVICE_UNAVAILABLE);
    }

    #[test]
    fn the_largest_call_fits_the_body_limit() {
        let frame: &'static [u8] = Box::leak(vec![b'x'; MAX_BYTES / MAX_ITEMS].into_boxed_slice());
        let id: String = "i".repeat(MAX_ID);
        let posts: Vec<Post> = (0..MAX_ITEMS).map(|_| post(&id, frame, false)).collect();
        assert!(encode(posts.iter()).len() <= MAX_BODY_BYTES);
    }

    #[tokio::test]
    async fn nothing_waits_when_no_call_is_under_way() {
        let peers = Arc::new(Peers::new(
            0,
            peers::PeerUrls::None,
            std::time::Duration::from_millis(200),
            None,
        ));
        let relay = Arc::new(Relay::new(peers, "dev".into()));
        // Nothing listens there: the answer says so, and the lane is freed.
        let answer = relay
            .post("http://127.0.0.1:9".into(), post("AAAAAAAAAAAAAAA=", b"x", false))
            .await;
        assert!(matches!(answer, Err(Unanswered::NoOwner(_))), "{answer:?}");
        assert_eq!(relay.waiting(), 0);
        assert!(relay.lanes.lock().unwrap().is_empty());
    }
}

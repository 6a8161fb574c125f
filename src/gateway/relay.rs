//! Posts for connections another replica holds, carried to it many to a call. A replica that
//! gets PostToConnection for a connection it does not hold forwards it (see `peers.rs`); posts
//! to one owner share calls as `crate::carried` describes: `POST /{stage}/@socketless/v1/posts`
//! with the peers' marker, each caller getting the answer the owner would have given to its
//! post alone (200, 410 `GoneException`, 429 `LimitExceededException`, 503). An owner that does
//! not know the call (a replica of an older version during a rolling update) answers it with
//! something other than 200: the posts then go one by one, as before.
//!
//! The same call also comes from `serve` (signed with SigV4, like `@connections`): this replica
//! delivers the posts for its own connections and sends the others on to their owners, each
//! owner's in one call framed as they came when no call to it is under way (see `carry_to`).
//!
//! A post that carries a trace context is forwarded on its own, so that its spans continue on
//! the owner.

use std::ops::Range;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use super::connection::QueueError;
use super::error::GatewayError;
use super::management::{Target, authenticate, body_error, precheck};
use super::peers::{self, Owner, Peers, Unanswered};
use super::shared::Shared;
use crate::carried::{
    self, Answerer, Carried, Carrier, DELIVERED, FULL, GONE, Gatherer, MAX_BODY_BYTES, MAX_ID, UNAVAILABLE,
};
use crate::http_server::{self, Body};
use crate::timefmt::now_ms;

/// One post to forward, with what a forward of it alone needs.
pub struct Post {
    pub id: String,
    pub frame: Bytes,
    pub binary: bool,
    /// The PostToConnection it was, as its caller sent it; `None` for one that came in a call
    /// of posts, which becomes `POST /{stage}/@connections/{id}` of its frame's type.
    pub single: Option<SingleCall>,
}

/// A PostToConnection as its caller sent it.
pub struct SingleCall {
    pub path_and_query: String,
    pub raw_path: String,
    pub content_type: Option<HeaderValue>,
}

impl Carried for Post {
    fn id(&self) -> &str {
        &self.id
    }
    fn frame(&self) -> &[u8] {
        &self.frame
    }
    fn binary(&self) -> bool {
        self.binary
    }
}

type Answer = Result<Response<Body>, Unanswered>;

/// What the owner said of one post: an outcome byte when the post went in a call of posts, its
/// whole answer when it went alone.
pub enum Relayed {
    Outcome(u8),
    Alone(Response<Body>),
}

impl Relayed {
    /// The answer the caller of a single PostToConnection gets.
    fn into_response(self) -> Response<Body> {
        match self {
            Relayed::Outcome(outcome) => answer_of(outcome),
            Relayed::Alone(resp) => resp,
        }
    }

    /// The outcome byte, for a post that came in a call of posts.
    fn outcome(&self) -> u8 {
        match self {
            Relayed::Outcome(outcome) => *outcome,
            Relayed::Alone(resp) => match resp.status().as_u16() {
                200..=299 => DELIVERED,
                410 => GONE,
                429 => FULL,
                _ => UNAVAILABLE,
            },
        }
    }
}

/// Sends the calls to owners.
pub struct Forwarder {
    peers: Arc<Peers>,
    /// The stage (a template's `StageName`: letters, digits, `-` and `_`), for the call's path.
    stage: String,
    /// `/{stage}/@socketless/v1/posts`.
    posts_path: String,
}

/// The posts waiting for each owner.
pub struct Relay(Arc<Gatherer<Forwarder>>);

impl Relay {
    pub fn new(peers: Arc<Peers>, stage: String) -> Self {
        let posts_path = format!("/{stage}/@socketless/v1/posts");
        Relay(Arc::new(Gatherer::new(Forwarder {
            peers,
            stage,
            posts_path,
        })))
    }

    /// Forwards a post to `owner`, with others to the same owner when calls to it are under
    /// way, and returns the answer its caller gets.
    pub async fn post(&self, owner: String, post: Post) -> Answer {
        if post.id.len() > MAX_ID {
            return self.0.carrier().alone(&owner, post).await;
        }
        self.0.post(&owner, post).await.map(Relayed::into_response)
    }

    /// Forwards posts to `owner` as [`Relay::post`] does, queued together in their order; what
    /// the owner said of each, in order. Every id a carried call holds is short enough to be
    /// carried again.
    pub async fn post_all(&self, owner: &str, posts: Vec<Post>) -> Vec<Result<Relayed, Unanswered>> {
        self.0.post_all(owner, posts).await
    }

    #[cfg(test)]
    fn waiting(&self) -> usize {
        self.0.waiting()
    }
}

impl Carrier for Forwarder {
    type Post = Post;
    type Answer = Result<Relayed, Unanswered>;

    /// One call to `owner` carrying `batch`; every post in it gets its answer.
    async fn send(&self, owner: &str, batch: Vec<(Post, Answerer<Self::Answer>)>) {
        let body = carried::encode(batch.iter().map(|(p, _)| p));
        match self.carry(owner, body, batch.len()).await {
            Carry::Outcomes(outcomes) => {
                for ((_, answerer), outcome) in batch.into_iter().zip(outcomes) {
                    answerer.answer(Ok(Relayed::Outcome(outcome)));
                }
            }
            Carry::Refused => {
                for (post, answerer) in batch {
                    answerer.answer(self.alone(owner, post).await.map(Relayed::Alone));
                }
            }
            Carry::Unanswered(why) => {
                for (_, answerer) in batch {
                    answerer.answer(Err(why.clone()));
                }
            }
        }
    }

    fn dropped() -> Self::Answer {
        Err(Unanswered::Unavailable("the relay stopped".into()))
    }
}

/// How a call of posts to their owner went.
enum Carry {
    /// The owner's outcome byte for each post, in order.
    Outcomes(Bytes),
    /// The owner does not take calls of posts: they go one by one.
    Refused,
    Unanswered(Unanswered),
}

impl Forwarder {
    /// One call to `owner` carrying the `count` posts of `body`.
    async fn carry(&self, owner: &str, body: Bytes, count: usize) -> Carry {
        let path = &self.posts_path;
        let answer = self
            .peers
            .forward(
                owner,
                &Method::POST,
                path,
                path,
                Some(&http_server::content_type::OCTET_STREAM),
                body,
                now_ms(),
            )
            .await;
        match answer {
            Ok(resp) if resp.status() == StatusCode::OK => {
                let bytes = match http_body_util::BodyExt::collect(resp.into_body()).await {
                    Ok(collected) => collected.to_bytes(),
                    Err(never) => match never {},
                };
                if bytes.len() == count {
                    Carry::Outcomes(bytes)
                } else {
                    Carry::Refused
                }
            }
            Ok(resp) => {
                tracing::debug!(owner, status = %resp.status(), "the owner does not take carried posts: forwarding them one by one");
                Carry::Refused
            }
            Err(why) => Carry::Unanswered(why),
        }
    }

    /// The post forwarded on its own (`peers.rs`), its answer relayed as it came.
    async fn alone(&self, owner: &str, post: Post) -> Answer {
        let single = post.single.unwrap_or_else(|| {
            let path = format!(
                "/{}/@connections/{}",
                self.stage,
                percent_encoding::utf8_percent_encode(&post.id, percent_encoding::NON_ALPHANUMERIC)
            );
            SingleCall {
                path_and_query: path.clone(),
                raw_path: path,
                content_type: Some(if post.binary {
                    http_server::content_type::OCTET_STREAM.clone()
                } else {
                    http_server::content_type::TEXT_UTF8.clone()
                }),
            }
        });
        self.peers
            .forward(
                owner,
                &Method::POST,
                &single.path_and_query,
                &single.raw_path,
                single.content_type.as_ref(),
                post.frame,
                now_ms(),
            )
            .await
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

/// The frame a post becomes: text unless `binary` or not UTF-8 (checked once, not copied).
pub(super) fn frame_of(body: Bytes, binary: bool) -> Message {
    if !binary {
        if let Ok(text) = Utf8Bytes::try_from(body.clone()) {
            return Message::Text(text);
        }
    }
    Message::Binary(body)
}

/// `POST /{stage}/@socketless/v1/posts`, from a peer (its marker checked) or from `serve` (its
/// SigV4 signature checked, as for `@connections`). Each post for a connection here is queued
/// as PostToConnection would queue it and counted as one (`operation="post"`); from `serve`, a
/// post for another replica's connection goes on to its owner, with the others to that owner.
/// The body is checked whole before any post is delivered.
pub async fn serve_posts(gw: &Shared, req: Request<Incoming>) -> Result<Response<Body>, GatewayError> {
    if req.method() != Method::POST {
        return Err(GatewayError::ExtensionMethod);
    }
    let from_peer = req.headers().contains_key(peers::FORWARDED);
    precheck(gw, &req, from_peer)?;
    let target = Target::of(&req);
    let read = http_server::read_body(req, MAX_BODY_BYTES, &gw.config.body)
        .await
        .map_err(body_error)?;
    authenticate(gw, from_peer, &Method::POST, &target, &read.parts.headers, &read.bytes)?;
    let body = read.bytes;
    // The whole body is checked before anything is delivered.
    let mut utf8 = true;
    let count = carried::each(&body, |post| {
        utf8 &= post.id.is_ascii() || std::str::from_utf8(post.id).is_ok();
    })
    .filter(|_| utf8)
    .ok_or_else(|| GatewayError::BadDelivery("not a body of carried posts".into()))?;
    let source = if from_peer { "peer" } else { "client" };
    let here = gw.peers.ordinal();
    let mut outcomes = Vec::with_capacity(count);
    // Posts for other replicas: each owner's ordinal, the posts' places in the call, and where
    // their framing lies in the body (runs of neighbours as one).
    let mut elsewhere: Vec<(u8, Vec<usize>, Vec<Range<usize>>)> = Vec::new();
    let mut no_owner = 0;
    carried::each(&body, |post| {
        // A peer sends only posts for connections here; it is never sent on again.
        let ordinal = if from_peer {
            Some(here)
        } else {
            super::ids::ordinal_of(post.id)
        };
        let outcome = match ordinal {
            Some(o) if o == here => match std::str::from_utf8(post.id) {
                Ok(id) => deliver_here(gw, id, body.slice_ref(post.frame), post.binary),
                Err(_) => GONE,
            },
            Some(o) => {
                let at = match elsewhere.iter().position(|(owner, ..)| *owner == o) {
                    Some(at) => at,
                    None => {
                        elsewhere.push((o, Vec::new(), Vec::new()));
                        elsewhere.len() - 1
                    }
                };
                let (_, places, spans) = &mut elsewhere[at];
                places.push(outcomes.len());
                match spans.last_mut() {
                    Some(run) if run.end == post.span.start => run.end = post.span.end,
                    _ => spans.push(post.span),
                }
                UNAVAILABLE
            }
            None => {
                no_owner += 1;
                GONE
            }
        };
        outcomes.push(outcome);
    });
    let mut owners = Vec::with_capacity(elsewhere.len());
    for (ordinal, places, spans) in elsewhere {
        match gw.peers.replica(ordinal) {
            Owner::Peer(url) => {
                // Neighbours in the body (all of it, when every post is for this owner) are
                // sent from it, not copied.
                let posts = match &spans[..] {
                    [run] => body.slice(run.clone()),
                    runs => {
                        let mut posts = BytesMut::with_capacity(runs.iter().map(ExactSizeIterator::len).sum());
                        for run in runs {
                            posts.extend_from_slice(&body[run.clone()]);
                        }
                        posts.freeze()
                    }
                };
                owners.push((url, places, posts));
            }
            // An ordinal no replica has.
            _ => {
                no_owner += places.len() as u64;
                for i in places {
                    outcomes[i] = GONE;
                }
            }
        }
    }
    gw.metrics.forwards("no_owner", no_owner);
    // Each owner's posts go on together, in the order they came; all owners at once.
    let sent = futures_util::future::join_all(owners.into_iter().map(|(url, places, posts)| async move {
        let said = carry_to(gw, &url, posts, places.len()).await;
        (url, places, said)
    }))
    .await;
    for (url, places, said) in sent {
        match said {
            Said::Outcomes(said) => {
                gw.metrics.forwards("relayed", said.len() as u64);
                for (i, outcome) in places.into_iter().zip(said) {
                    outcomes[i] = outcome;
                }
            }
            Said::Each(answers) => settle(gw, &url, places, answers, &mut outcomes),
        }
    }
    Ok(answered(gw, source, outcomes))
}

/// What an owner said of the posts sent to it.
enum Said {
    /// Its outcome byte for each, as it gave them.
    Outcomes(Bytes),
    /// Its answer to each, or why there was none.
    Each(Vec<Result<Relayed, Unanswered>>),
}

/// Sends `count` posts, framed as they came in `posts`, to `owner`. While no call to it is
/// under way they go on in one call as they are, holding its lane as a call of the lane
/// would: a post that arrives meanwhile waits and goes after them, and none that was waiting
/// can be overtaken, as there is none. Otherwise they join the lane, post by post.
async fn carry_to(gw: &Shared, owner: &str, posts: Bytes, count: usize) -> Said {
    let unpacked = |posts: Bytes| {
        carried::decode(posts)
            .unwrap_or_default()
            .into_iter()
            .map(|(id, frame, binary)| Post {
                id,
                frame,
                binary,
                single: None,
            })
    };
    let Some(_slot) = gw.relay.0.claim(owner) else {
        return Said::Each(gw.relay.post_all(owner, unpacked(posts).collect()).await);
    };
    let forwarder = gw.relay.0.carrier();
    match forwarder.carry(owner, posts.clone(), count).await {
        Carry::Outcomes(outcomes) => Said::Outcomes(outcomes),
        Carry::Unanswered(why) => Said::Each((0..count).map(|_| Err(why.clone())).collect()),
        Carry::Refused => {
            let mut answers = Vec::with_capacity(count);
            for post in unpacked(posts) {
                answers.push(forwarder.alone(owner, post).await.map(Relayed::Alone));
            }
            Said::Each(answers)
        }
    }
}

/// Puts what `owner` said of the posts sent to it in their places among the call's outcomes,
/// and counts how each forward went.
fn settle(
    gw: &Shared,
    owner: &str,
    places: impl IntoIterator<Item = usize>,
    answers: Vec<Result<Relayed, Unanswered>>,
    outcomes: &mut [u8],
) {
    let mut relayed = 0;
    for (i, answer) in places.into_iter().zip(answers) {
        outcomes[i] = match answer {
            Ok(said) => {
                relayed += 1;
                said.outcome()
            }
            Err(why) => match super::management::relayed(gw, owner, Err(why)) {
                Err(GatewayError::Gone) => GONE,
                _ => UNAVAILABLE,
            },
        };
    }
    gw.metrics.forwards("relayed", relayed);
}

/// The answer to a call of posts, a byte per post; each post counts as one management call, by
/// the status it would have had alone.
fn answered(gw: &Shared, source: &'static str, outcomes: Vec<u8>) -> Response<Body> {
    let mut tally = [0u64; 4];
    for &outcome in &outcomes {
        tally[usize::from(outcome.min(UNAVAILABLE))] += 1;
    }
    for (outcome, &n) in tally.iter().enumerate() {
        gw.metrics.managements("post", source, status_of(outcome as u8), n);
    }
    http_server::with_body(StatusCode::OK, &http_server::content_type::OCTET_STREAM, outcomes)
}

/// Queues a post for a connection this replica holds.
fn deliver_here(gw: &Shared, id: &str, frame: Bytes, binary: bool) -> u8 {
    let Some(conn) = gw.connections.lookup(id) else {
        return GONE;
    };
    let msg = frame_of(frame, gw.config.binary_frames && binary);
    match gw.connections.post(&conn, msg) {
        Ok(()) => DELIVERED,
        Err(QueueError::Full) => FULL,
        Err(QueueError::Closed) => GONE,
    }
}

/// The status the post alone would have had, for the metrics.
fn status_of(outcome: u8) -> u16 {
    match outcome {
        DELIVERED => 200,
        GONE => 410,
        FULL => 429,
        _ => 503,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn post(id: &str, frame: &'static [u8], binary: bool) -> Post {
        Post {
            id: id.into(),
            frame: Bytes::from_static(frame),
            binary,
            single: None,
        }
    }

    #[test]
    fn outcomes_answer_as_the_owner_would() {
        assert_eq!(answer_of(DELIVERED).status(), StatusCode::OK);
        assert_eq!(answer_of(GONE).status(), StatusCode::GONE);
        assert_eq!(answer_of(FULL).status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(answer_of(9).status(), StatusCode::SERVICE_UNAVAILABLE);
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
        assert_eq!(relay.0.busy(), 0);
    }
}

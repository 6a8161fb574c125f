//! Posts carried many to a call: the framing of `POST /{stage}/@socketless/v1/posts` (the batch
//! extension's call that a socketless gateway takes from `serve` and from its peers), the
//! framing of `POST /@socketless/v1/disconnects` (the gateway's `$disconnect` calls to `serve`,
//! many to a call, see [`requests`]), and the lanes that gather either into such calls.
//!
//! Every post costs its sender and the gateway an HTTP exchange, as much again as the delivery
//! itself. So posts to one destination share calls: while a call to it is under way
//! ([`MAX_IN_FLIGHT`]), the posts that arrive wait, and the next call carries all of them (up to
//! [`MAX_ITEMS`] posts and [`MAX_BYTES`] of frames), in the order they came. A post that finds no
//! call under way goes at once, alone: nothing waits for company, so a lone post's latency is a
//! single call's.
//!
//! A body is posts framed as `[id length: u8][id][flags: u8, bit 0 = binary][frame length: u32
//! BE][frame]`; the answer is one byte per post, in order: [`DELIVERED`], [`GONE`], [`FULL`] or
//! [`UNAVAILABLE`].

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::sync::oneshot;

use crate::contract::MAX_POST_BYTES;

/// Calls to one destination under way at once; posts that arrive meanwhile wait for the next.
/// One: under load, the calls then carry twice as many posts as with two, and a non-owner
/// replica's share of the CPU (one call in, one out, per call) halves, while the latency a post
/// waits is at most one call's.
pub const MAX_IN_FLIGHT: usize = 1;

/// Posts one call carries at most.
pub const MAX_ITEMS: usize = 256;

/// Frame bytes one call carries at most (a single post may be up to [`MAX_POST_BYTES`], which
/// is less).
pub const MAX_BYTES: usize = 1 << 20;

/// The longest connection id a carried post may have (ids a socketless gateway issues have 16
/// characters); a post for a longer one goes on its own.
pub const MAX_ID: usize = 255;

/// The largest body of a call.
pub const MAX_BODY_BYTES: usize = MAX_BYTES + MAX_ITEMS * (1 + MAX_ID + 1 + 4);

/// A post's outcome, one byte per post in the answer: queued for the client (200).
pub const DELIVERED: u8 = 0;
/// No such connection (410 `GoneException`).
pub const GONE: u8 = 1;
/// The connection's outbound buffer is full (429 `LimitExceededException`).
pub const FULL: u8 = 2;
/// The replica holding the connection did not answer (503); the sender may retry.
pub const UNAVAILABLE: u8 = 3;

const _: () = assert!(MAX_POST_BYTES <= MAX_BYTES);

/// What a lane weighs an item by: a call carries at most [`MAX_BYTES`] of them.
pub trait Weighed {
    fn weight(&self) -> usize;
}

impl<T: Carried> Weighed for T {
    fn weight(&self) -> usize {
        self.frame().len()
    }
}

/// The part of a post the call carries.
pub trait Carried {
    fn id(&self) -> &str;
    fn frame(&self) -> &[u8];
    fn binary(&self) -> bool;
}

/// Appends one post to a call's body.
pub fn encode_one(out: &mut BytesMut, id: &str, binary: bool, frame: &[u8]) {
    out.put_u8(id.len() as u8);
    out.put_slice(id.as_bytes());
    out.put_u8(u8::from(binary));
    out.put_u32(frame.len() as u32);
    out.put_slice(frame);
}

/// A call's body.
pub fn encode<'a, P: Carried + 'a>(posts: impl Iterator<Item = &'a P> + Clone) -> Bytes {
    let size = posts.clone().map(|p| 6 + p.id().len() + p.frame().len()).sum();
    let mut out = BytesMut::with_capacity(size);
    for p in posts {
        encode_one(&mut out, p.id(), p.binary(), p.frame());
    }
    out.freeze()
}

/// The posts of a body, each as (id, frame, binary); `None` when the body is not one.
pub fn decode(body: Bytes) -> Option<Vec<(String, Bytes, bool)>> {
    let mut out = Vec::new();
    let mut utf8 = true;
    each(&body, |post| match std::str::from_utf8(post.id) {
        Ok(id) => out.push((id.to_owned(), body.slice_ref(post.frame), post.binary)),
        Err(_) => utf8 = false,
    })?;
    utf8.then_some(out)
}

/// One post of a body, borrowed from it.
pub struct PostRef<'a> {
    /// As it came: [`decode`] also checks that it is UTF-8.
    pub id: &'a [u8],
    pub frame: &'a [u8],
    pub binary: bool,
    /// Where the post's whole framing, id and frame included, lies in the body.
    pub span: std::ops::Range<usize>,
}

/// Calls `post` with each post of a body, in order, and returns how many there were; `None`
/// when the framing is not that of posts (`post` may have seen some of them then).
pub fn each<'a>(body: &'a [u8], mut post: impl FnMut(PostRef<'a>)) -> Option<usize> {
    let mut rest = body;
    let mut count = 0;
    while rest.has_remaining() {
        let start = body.len() - rest.len();
        let n = usize::from(rest.get_u8());
        if rest.remaining() < n + 5 || count == MAX_ITEMS {
            return None;
        }
        let (id, after) = rest.split_at(n);
        rest = after;
        let binary = rest.get_u8() & 1 == 1;
        let len = rest.get_u32() as usize;
        if len > MAX_POST_BYTES || rest.remaining() < len {
            return None;
        }
        let (frame, after) = rest.split_at(len);
        rest = after;
        post(PostRef {
            id,
            frame,
            binary,
            span: start..body.len() - rest.len(),
        });
        count += 1;
    }
    Some(count)
}

/// What sends one call for the lanes: the posts of `batch`, to `destination`, every one of them
/// answered.
pub trait Carrier: Send + Sync + 'static {
    type Post: Weighed + Send + 'static;
    type Answer: Send + 'static;

    fn send(
        &self,
        destination: &str,
        batch: Vec<(Self::Post, Answerer<Self::Answer>)>,
    ) -> impl Future<Output = ()> + Send;

    /// The answer of a post whose call went away without answering it.
    fn dropped() -> Self::Answer;
}

/// Gives one post its answer.
pub struct Answerer<A>(oneshot::Sender<A>);

impl<A> Answerer<A> {
    pub fn answer(self, answer: A) {
        let _ = self.0.send(answer);
    }
}

struct Lane<P, A> {
    in_flight: usize,
    waiting: VecDeque<(P, Answerer<A>)>,
}

impl<P, A> Default for Lane<P, A> {
    fn default() -> Self {
        Lane {
            in_flight: 0,
            waiting: VecDeque::new(),
        }
    }
}

type Lanes<C> = HashMap<String, Lane<<C as Carrier>::Post, <C as Carrier>::Answer>>;

/// The posts of one call, each with its answerer.
type Batch<C> = Vec<(<C as Carrier>::Post, Answerer<<C as Carrier>::Answer>)>;

/// The posts waiting for each destination, and the carrier that sends them.
pub struct Gatherer<C: Carrier> {
    carrier: C,
    lanes: Mutex<Lanes<C>>,
}

impl<C: Carrier> Gatherer<C> {
    pub fn new(carrier: C) -> Self {
        Gatherer {
            carrier,
            lanes: Mutex::new(HashMap::new()),
        }
    }

    pub fn carrier(&self) -> &C {
        &self.carrier
    }

    /// Sends a post to `destination`, with others to the same one when calls to it are under
    /// way, and returns its answer.
    pub async fn post(self: &Arc<Self>, destination: &str, post: C::Post) -> C::Answer {
        let (tx, rx) = oneshot::channel();
        self.enqueue(destination, [(post, Answerer(tx))]);
        rx.await.unwrap_or_else(|_| C::dropped())
    }

    /// Sends posts to `destination` as [`Gatherer::post`] does, queued together in their order
    /// (a call that starts now takes as many of them as it carries); their answers, in order.
    pub async fn post_all(self: &Arc<Self>, destination: &str, posts: Vec<C::Post>) -> Vec<C::Answer> {
        let (answerers, answers): (Vec<_>, Vec<_>) = posts
            .into_iter()
            .map(|post| {
                let (tx, rx) = oneshot::channel();
                ((post, Answerer(tx)), rx)
            })
            .unzip();
        self.enqueue(destination, answerers);
        let mut out = Vec::with_capacity(answers.len());
        for rx in answers {
            out.push(rx.await.unwrap_or_else(|_| C::dropped()));
        }
        out
    }

    /// Queues posts for `destination`, and starts a call when fewer than [`MAX_IN_FLIGHT`] are
    /// under way.
    fn enqueue(self: &Arc<Self>, destination: &str, posts: impl IntoIterator<Item = (C::Post, Answerer<C::Answer>)>) {
        let start = {
            let mut lanes = self.lanes.lock().unwrap_or_else(|p| p.into_inner());
            let lane = match lanes.get_mut(destination) {
                Some(lane) => lane,
                None => lanes.entry(destination.to_owned()).or_default(),
            };
            lane.waiting.extend(posts);
            let start = lane.in_flight < MAX_IN_FLIGHT;
            if start {
                lane.in_flight += 1;
            }
            start
        };
        if start {
            let gatherer = self.clone();
            let destination = destination.to_owned();
            // The calls run in their own task: a caller that goes away does not strand the
            // posts waiting behind it.
            tokio::spawn(async move { gatherer.drain(destination).await });
        }
    }

    /// Sends what waits for `destination`, call after call, until nothing does; then frees the
    /// slot.
    async fn drain(&self, destination: String) {
        while let Some(batch) = self.take(&destination) {
            self.carrier.send(&destination, batch).await;
        }
    }

    /// The next call's posts for `destination`, its slot kept; or, when nothing waits, `None`
    /// and the slot freed.
    fn take(&self, destination: &str) -> Option<Batch<C>> {
        let mut lanes = self.lanes.lock().unwrap_or_else(|p| p.into_inner());
        let lane = lanes.get_mut(destination)?;
        if lane.waiting.is_empty() {
            lane.in_flight -= 1;
            if lane.in_flight == 0 {
                lanes.remove(destination);
            }
            return None;
        }
        let mut batch = Vec::new();
        let mut bytes = 0;
        while let Some((next, _)) = lane.waiting.front() {
            let size = next.weight();
            if batch.len() == MAX_ITEMS || (!batch.is_empty() && bytes + size > MAX_BYTES) {
                break;
            }
            bytes += size;
            batch.extend(lane.waiting.pop_front());
        }
        Some(batch)
    }

    /// A slot for a call to `destination` that the caller makes itself, with posts it already
    /// holds as one body: taken only when no call to `destination` is under way, so that no post
    /// waits that this call could overtake. Posts that arrive while it is held wait as they would
    /// for a call of the lane, and go when it is dropped.
    pub fn claim(self: &Arc<Self>, destination: &str) -> Option<Claim<C>> {
        let mut lanes = self.lanes.lock().unwrap_or_else(|p| p.into_inner());
        if lanes.contains_key(destination) {
            return None;
        }
        lanes.insert(
            destination.to_owned(),
            Lane {
                in_flight: 1,
                waiting: VecDeque::new(),
            },
        );
        Some(Claim {
            gatherer: self.clone(),
            destination: destination.to_owned(),
        })
    }

    /// Posts waiting, across destinations.
    pub fn waiting(&self) -> usize {
        let lanes = self.lanes.lock().unwrap_or_else(|p| p.into_inner());
        lanes.values().map(|l| l.waiting.len()).sum()
    }

    /// Destinations with a call under way.
    pub fn busy(&self) -> usize {
        self.lanes.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// A slot of a lane held by a caller's own call (see [`Gatherer::claim`]).
pub struct Claim<C: Carrier> {
    gatherer: Arc<Gatherer<C>>,
    destination: String,
}

impl<C: Carrier> Drop for Claim<C> {
    /// Frees the slot; what waited for it meanwhile goes now, in a task of its own, as a call of
    /// the lane would have sent it.
    fn drop(&mut self) {
        let Some(batch) = self.gatherer.take(&self.destination) else {
            return;
        };
        let gatherer = self.gatherer.clone();
        let destination = std::mem::take(&mut self.destination);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    gatherer.carrier.send(&destination, batch).await;
                    gatherer.drain(destination).await;
                });
            }
            // No runtime (it is shutting down): the waiting posts are answered as dropped.
            Err(_) => {
                drop(batch);
                while gatherer.take(&destination).is_some() {}
            }
        }
    }
}

/// Requests carried many to a call: the gateway's `$disconnect` calls to a backend that said it
/// takes them (`serve`, see [`crate::contract::CARRIES_DISCONNECTS`]).
///
/// A body is requests framed as `[path and query length: u16 BE][path and query][header count:
/// u8]`, then for each header `[name length: u8][name][value length: u16 BE][value]`, then `[body
/// length: u32 BE][body]`; the answer is each request's status, two bytes (BE) each, in order.
pub mod requests {
    use bytes::{Buf, BufMut, Bytes, BytesMut};
    use http::{HeaderName, HeaderValue};

    use super::{MAX_BYTES, MAX_ITEMS, Weighed};

    /// The largest request a call carries (path, headers and body); a larger one goes alone.
    pub const MAX_REQUEST: usize = 64 * 1024;

    /// The largest body of a call: [`MAX_BYTES`] of requests, and one more that starts a call
    /// (a lane adds requests while the total stays within [`MAX_BYTES`]).
    pub const MAX_BODY_BYTES: usize = MAX_BYTES + MAX_REQUEST;

    /// One carried request (its method is POST).
    #[derive(Debug, Clone, PartialEq)]
    pub struct Carried {
        pub path_and_query: String,
        pub headers: Vec<(HeaderName, HeaderValue)>,
        pub body: Bytes,
    }

    impl Weighed for Carried {
        fn weight(&self) -> usize {
            2 + self.path_and_query.len()
                + 1
                + self
                    .headers
                    .iter()
                    .map(|(n, v)| 3 + n.as_str().len() + v.len())
                    .sum::<usize>()
                + 4
                + self.body.len()
        }
    }

    impl Carried {
        /// Whether the framing can carry it: lengths within their fields, at most
        /// [`MAX_REQUEST`] in all.
        pub fn fits(&self) -> bool {
            self.path_and_query.len() <= usize::from(u16::MAX)
                && self.headers.len() <= usize::from(u8::MAX)
                && self
                    .headers
                    .iter()
                    .all(|(n, v)| n.as_str().len() <= usize::from(u8::MAX) && v.len() <= usize::from(u16::MAX))
                && self.weight() <= MAX_REQUEST
        }
    }

    /// A call's body (every request [`Carried::fits`]).
    pub fn encode<'a>(requests: impl Iterator<Item = &'a Carried> + Clone) -> Bytes {
        let mut out = BytesMut::with_capacity(requests.clone().map(Weighed::weight).sum());
        for r in requests {
            out.put_u16(r.path_and_query.len() as u16);
            out.put_slice(r.path_and_query.as_bytes());
            out.put_u8(r.headers.len() as u8);
            for (name, value) in &r.headers {
                out.put_u8(name.as_str().len() as u8);
                out.put_slice(name.as_str().as_bytes());
                out.put_u16(value.len() as u16);
                out.put_slice(value.as_bytes());
            }
            out.put_u32(r.body.len() as u32);
            out.put_slice(&r.body);
        }
        out.freeze()
    }

    /// The requests of a body; `None` when the body is not one (cut short, a name or value
    /// that is not one in HTTP, more than [`MAX_ITEMS`], a request over [`MAX_REQUEST`]).
    pub fn decode(mut body: Bytes) -> Option<Vec<Carried>> {
        fn take(body: &mut Bytes, n: usize) -> Option<Bytes> {
            (body.remaining() >= n).then(|| body.split_to(n))
        }
        let mut out = Vec::new();
        while body.has_remaining() {
            if out.len() == MAX_ITEMS {
                return None;
            }
            let start = body.remaining();
            let n = usize::from(take(&mut body, 2)?.get_u16());
            let path_and_query = String::from_utf8(take(&mut body, n)?.to_vec()).ok()?;
            let count = take(&mut body, 1)?.get_u8();
            let mut headers = Vec::with_capacity(usize::from(count));
            for _ in 0..count {
                let n = usize::from(take(&mut body, 1)?.get_u8());
                let name = HeaderName::from_bytes(&take(&mut body, n)?).ok()?;
                let n = usize::from(take(&mut body, 2)?.get_u16());
                let value = HeaderValue::from_maybe_shared(take(&mut body, n)?).ok()?;
                headers.push((name, value));
            }
            let n = take(&mut body, 4)?.get_u32() as usize;
            let request_body = take(&mut body, n)?;
            if start - body.remaining() > MAX_REQUEST || !path_and_query.starts_with('/') {
                return None;
            }
            out.push(Carried {
                path_and_query,
                headers,
                body: request_body,
            });
        }
        Some(out)
    }

    /// The answer: each request's status, in order.
    pub fn encode_statuses(statuses: &[u16]) -> Bytes {
        let mut out = BytesMut::with_capacity(2 * statuses.len());
        for s in statuses {
            out.put_u16(*s);
        }
        out.freeze()
    }

    /// The statuses of an answer for `count` requests; `None` when it is not one.
    pub fn decode_statuses(mut answer: Bytes, count: usize) -> Option<Vec<u16>> {
        if answer.len() != 2 * count {
            return None;
        }
        Some((0..count).map(|_| answer.get_u16()).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct P(&'static str, &'static [u8], bool);

    impl Carried for P {
        fn id(&self) -> &str {
            self.0
        }
        fn frame(&self) -> &[u8] {
            self.1
        }
        fn binary(&self) -> bool {
            self.2
        }
    }

    #[test]
    fn posts_round_trip_in_order() {
        let posts = [
            P("AAAAAAAAAAAAAAA=", b"hello", false),
            P("BBBBBBBBBBBBBBB=", b"\x00\xff", true),
            P("C", b"", false),
        ];
        let decoded = decode(encode(posts.iter())).unwrap();
        let want: Vec<(String, Bytes, bool)> = posts
            .iter()
            .map(|p| (p.0.to_owned(), Bytes::from_static(p.1), p.2))
            .collect();
        assert_eq!(decoded, want);
        assert_eq!(decode(Bytes::new()).unwrap(), vec![]);
    }

    fn carried(path: &str, headers: &[(&'static str, &str)], body: &'static [u8]) -> requests::Carried {
        requests::Carried {
            path_and_query: path.to_owned(),
            headers: headers
                .iter()
                .map(|(n, v)| {
                    (
                        http::HeaderName::from_static(n),
                        http::HeaderValue::from_str(v).unwrap(),
                    )
                })
                .collect(),
            body: Bytes::from_static(body),
        }
    }

    #[test]
    fn requests_round_trip_in_order() {
        let reqs = vec![
            carried(
                "/disconnect",
                &[
                    ("x-socketless-connection-id", "AAAAAAAAAAAAAAA="),
                    ("x-socketless-secret", "s"),
                ],
                b"",
            ),
            carried("/disconnect?a=b%20c", &[], b"\x00body"),
            carried("/x", &[("x-repeated", "1"), ("x-repeated", "2")], b""),
        ];
        assert!(reqs.iter().all(requests::Carried::fits));
        let body = requests::encode(reqs.iter());
        assert_eq!(body.len(), reqs.iter().map(Weighed::weight).sum::<usize>());
        assert_eq!(requests::decode(body).unwrap(), reqs);
        assert_eq!(requests::decode(Bytes::new()).unwrap(), vec![]);
        let statuses = [200, 403, 500];
        assert_eq!(
            requests::decode_statuses(requests::encode_statuses(&statuses), 3).unwrap(),
            statuses
        );
        assert!(requests::decode_statuses(requests::encode_statuses(&statuses), 2).is_none());
    }

    #[test]
    fn hostile_request_bodies_are_refused_not_misread() {
        let good = requests::encode([carried("/disconnect", &[("x-a", "b")], b"xyz")].iter());
        for cut in 1..good.len() {
            assert!(requests::decode(good.slice(..cut)).is_none(), "cut at {cut}");
        }
        // A header name and a header value that HTTP does not allow, a path that is not one.
        let mut bad = good.to_vec();
        bad[2 + 11 + 1 + 1] = b' ';
        assert!(requests::decode(Bytes::from(bad)).is_none());
        let mut bad = good.to_vec();
        let value_at = 2 + 11 + 1 + 1 + 3 + 2;
        bad[value_at] = b'\n';
        assert!(requests::decode(Bytes::from(bad)).is_none());
        assert!(requests::decode(requests::encode([carried("disconnect", &[], b"")].iter())).is_none());
        // A body length past the end.
        let mut long = BytesMut::new();
        long.put_u16(2);
        long.put_slice(b"/d");
        long.put_u8(0);
        long.put_u32(u32::MAX);
        assert!(requests::decode(long.freeze()).is_none());
        // More requests than a call carries, and a request over the limit.
        let many: Vec<_> = (0..=MAX_ITEMS).map(|_| carried("/d", &[], b"")).collect();
        assert!(requests::decode(requests::encode(many.iter())).is_none());
        assert!(requests::decode(requests::encode(many[..MAX_ITEMS].iter())).is_some());
        let big: &'static [u8] = Box::leak(vec![b'x'; requests::MAX_REQUEST].into_boxed_slice());
        let big = carried("/d", &[], big);
        assert!(!big.fits());
        assert!(requests::decode(requests::encode([big].iter())).is_none());
    }

    #[test]
    fn hostile_bodies_are_refused_not_misread() {
        let good = encode([P("AAAAAAAAAAAAAAA=", b"hello", false)].iter());
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
        encode_one(&mut big, "A", false, &vec![b'x'; MAX_POST_BYTES + 1]);
        assert!(decode(big.freeze()).is_none());
        // An id that is not UTF-8.
        assert!(decode(Bytes::from_static(b"\x01\xff\x00\x00\x00\x00\x00")).is_none());
        // More posts than a call carries.
        let many: Vec<P> = (0..=MAX_ITEMS).map(|_| P("A", b"", false)).collect();
        assert!(decode(encode(many.iter())).is_none());
        assert!(decode(encode(many[..MAX_ITEMS].iter())).is_some());
    }

    #[test]
    fn the_largest_call_fits_the_body_limit() {
        let frame: &'static [u8] = Box::leak(vec![b'x'; MAX_BYTES / MAX_ITEMS].into_boxed_slice());
        let id: &'static str = Box::leak("i".repeat(MAX_ID).into_boxed_str());
        let posts: Vec<P> = (0..MAX_ITEMS).map(|_| P(id, frame, false)).collect();
        assert!(encode(posts.iter()).len() <= MAX_BODY_BYTES);
    }

    /// A carrier that holds every call until the test lets it go, and records the calls.
    struct Held {
        calls: Mutex<Vec<Vec<&'static str>>>,
        gate: tokio::sync::Semaphore,
    }

    impl Carrier for Arc<Held> {
        type Post = P;
        type Answer = String;

        fn send(&self, destination: &str, batch: Vec<(P, Answerer<String>)>) -> impl Future<Output = ()> + Send {
            let held = self.clone();
            let destination = destination.to_owned();
            async move {
                held.calls
                    .lock()
                    .unwrap()
                    .push(batch.iter().map(|(p, _)| p.0).collect());
                held.gate.acquire().await.unwrap().forget();
                for (p, answerer) in batch {
                    answerer.answer(format!("{destination}:{}", p.0));
                }
            }
        }

        fn dropped() -> String {
            "dropped".into()
        }
    }

    /// A lane whose calls record their posts and end as `permits` allow.
    fn held_lane(permits: usize) -> (Arc<Held>, Arc<Gatherer<Arc<Held>>>) {
        let held = Arc::new(Held {
            calls: Mutex::new(Vec::new()),
            gate: tokio::sync::Semaphore::new(permits),
        });
        (held.clone(), Arc::new(Gatherer::new(held)))
    }

    #[tokio::test]
    async fn posts_wait_only_while_calls_are_under_way_and_go_together_in_order() {
        let (held, gatherer) = held_lane(0);
        let ids = ["a", "b", "c", "d", "e"];
        let alone = MAX_IN_FLIGHT;
        let mut tasks = Vec::new();
        for (n, id) in ids.into_iter().enumerate() {
            let g = gatherer.clone();
            tasks.push(tokio::spawn(async move { g.post("x", P(id, b"1", false)).await }));
            // The first MAX_IN_FLIGHT start calls of their own; the rest wait.
            while held.calls.lock().unwrap().len() < (n + 1).min(alone)
                || gatherer.waiting() < (n + 1).saturating_sub(alone)
            {
                tokio::task::yield_now().await;
            }
        }
        let started: Vec<Vec<&str>> = ids[..alone].iter().map(|id| vec![*id]).collect();
        assert_eq!(*held.calls.lock().unwrap(), started, "calls under way, each alone");
        held.gate.add_permits(10);
        let mut answers = Vec::new();
        for t in tasks {
            answers.push(t.await.unwrap());
        }
        assert_eq!(answers, ["x:a", "x:b", "x:c", "x:d", "x:e"]);
        // The ones that waited went together, in order.
        assert_eq!(held.calls.lock().unwrap()[alone], ids[alone..].to_vec());
        assert_eq!(gatherer.busy(), 0, "the lane is freed once nothing waits");
    }

    #[tokio::test]
    async fn a_claimed_slot_holds_the_lane_and_what_waits_goes_when_it_is_dropped() {
        let (held, gatherer) = held_lane(10);
        let claim = gatherer.claim("z").expect("no call under way");
        assert!(gatherer.claim("z").is_none(), "one holder at a time");
        let g = gatherer.clone();
        let waiting =
            tokio::spawn(async move { g.post_all("z", vec![P("a", b"1", false), P("b", b"2", false)]).await });
        while gatherer.waiting() < 2 {
            tokio::task::yield_now().await;
        }
        assert!(
            held.calls.lock().unwrap().is_empty(),
            "nothing goes while the slot is held"
        );
        drop(claim);
        assert_eq!(waiting.await.unwrap(), ["z:a", "z:b"]);
        assert_eq!(*held.calls.lock().unwrap(), vec![vec!["a", "b"]]);
        assert_eq!(gatherer.busy(), 0, "the lane is freed once nothing waits");
        // With nothing waiting, dropping the claim frees the lane at once.
        drop(gatherer.claim("z").expect("free again"));
        assert_eq!(gatherer.busy(), 0);
    }

    #[tokio::test]
    async fn posts_queued_together_go_in_one_call_in_order() {
        let (held, gatherer) = held_lane(10);
        let posts = vec![P("a", b"1", false), P("b", b"2", true), P("c", b"3", false)];
        let answers = gatherer.post_all("y", posts).await;
        assert_eq!(answers, ["y:a", "y:b", "y:c"]);
        assert_eq!(*held.calls.lock().unwrap(), vec![vec!["a", "b", "c"]]);
        assert_eq!(gatherer.busy(), 0);
    }
}

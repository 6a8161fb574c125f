//! Posts carried many to a call (`src/carried.rs`). Through a replica that does not hold their
//! connections, posts share calls to the owner (`src/gateway/relay.rs`): each caller still gets
//! the answer the owner gives for its post (200, 410, 429), every frame arrives once and in each
//! caller's order, and an owner that does not know the call (an older replica during a rolling
//! update) gets the posts one by one. `serve`'s posts to a socketless gateway share calls too
//! (`src/backend/direct_post.rs`), signed with SigV4; the call is refused to anyone without a
//! valid signature or a peer's marker, and a gateway that does not answer it with outcomes gets
//! the posts alone.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::gw::*;
use common::*;
use http_body_util::Full;
use hyper::Response;

fn id_of(seen: &Seen) -> String {
    seen.headers["x-socketless-connection-id"].to_str().unwrap().to_string()
}

fn encoded(id: &str) -> String {
    id.replace('=', "%3D")
}

/// An id in AWS's shape that names `ordinal` as its owner.
fn id_for(ordinal: u8, n: u8) -> String {
    use base64::Engine;
    let mut bytes = [0x41u8; 11];
    bytes[5] = n;
    bytes[0] = ordinal ^ bytes[10];
    base64::engine::general_purpose::URL_SAFE.encode(bytes)
}

/// The posts of a carried call's body, as (id, frame).
fn carried(body: &[u8]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        let n = rest[0] as usize;
        let id = String::from_utf8(rest[1..1 + n].to_vec()).unwrap();
        let len = u32::from_be_bytes(rest[2 + n..6 + n].try_into().unwrap()) as usize;
        let frame = String::from_utf8(rest[6 + n..6 + n + len].to_vec()).unwrap();
        out.push((id, frame));
        rest = &rest[6 + n + len..];
    }
    out
}

#[tokio::test]
async fn concurrent_posts_through_a_non_owner_share_calls_and_each_gets_its_own_answer() {
    let backend = FakeBackend::start().await;
    let gws = replica_set(&backend, &[free_port(), free_port()], &[], |_| {}).await;
    const CLIENTS: usize = 20;
    const EACH: usize = 25;
    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        clients.push(connect(&gws[1].url()).await);
        backend.wait_for("/connect", i + 1).await;
    }
    let ids: Vec<String> = backend.seen("/connect").iter().map(id_of).collect();
    // Each caller posts its numbers one after the other, all callers at once, through
    // replica 0; one more posts to a connection that does not exist on the owner.
    let mut callers = Vec::new();
    for id in ids.clone() {
        let url = gws[0].mgmt(&encoded(&id));
        callers.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            for n in 0..EACH {
                statuses.push(send("POST", &url, &[], format!("{n}")).await.0.as_u16());
            }
            statuses
        }));
    }
    let gone_url = gws[0].mgmt(&encoded(&id_for(1, 200)));
    let gone = tokio::spawn(async move {
        let mut out = Vec::new();
        for _ in 0..EACH {
            let (status, headers, body) = send("POST", &gone_url, &[], "nobody").await;
            out.push((
                status.as_u16(),
                headers["x-amzn-errortype"].to_str().unwrap().to_string(),
                body,
            ));
        }
        out
    });
    for caller in callers {
        assert_eq!(caller.await.unwrap(), vec![200; EACH]);
    }
    for (status, kind, body) in gone.await.unwrap() {
        assert_eq!((status, kind.as_str()), (410, "GoneException"), "{body}");
    }
    for (i, ws) in clients.iter_mut().enumerate() {
        for n in 0..EACH {
            assert_eq!(next_text(ws).await, n.to_string(), "client {i}");
        }
        let more = tokio::time::timeout(Duration::from_millis(50), next_text(ws)).await;
        assert!(more.is_err(), "client {i} got a frame twice");
    }
    let owner = send("GET", &format!("http://{}/metrics", gws[1].addr), &[], "").await.2;
    let posts = CLIENTS * EACH + EACH;
    let counted = metric_sum(
        &owner,
        "socketless_gateway_management_calls_total",
        &["operation=\"post\"", "source=\"peer\""],
    );
    let calls = metric_sum(
        &owner,
        "socketless_gateway_management_calls_total",
        &["operation=\"posts\"", "source=\"peer\""],
    );
    println!("{posts} posts through the non-owner reached the owner in {calls} calls");
    assert_eq!(counted, posts as f64, "each carried post counts as a post on the owner");
    assert!(calls >= 1.0 && calls < posts as f64, "{calls} calls for {posts} posts");
    let relayed = send("GET", &format!("http://{}/metrics", gws[0].addr), &[], "").await.2;
    assert_eq!(
        metric_sum(
            &relayed,
            "socketless_gateway_forwarded_calls_total",
            &["result=\"relayed\""]
        ),
        posts as f64
    );
}

/// A fake owner: answers carried calls after `delay` with the outcome bytes `outcome` gives
/// each post (404 when `old`: it does not know the call), and single posts with 200; records
/// what it gets.
struct Owner {
    port: u16,
    calls: Arc<Mutex<Vec<Call>>>,
}

/// A call the fake owner got: its path, and its posts as (id, frame).
type Call = (String, Vec<(String, String)>);

impl Owner {
    async fn start(old: bool, delay: Duration, outcome: fn(&str) -> u8) -> Owner {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let calls = Arc::new(Mutex::new(Vec::new()));
        let seen = calls.clone();
        fake_server(listener, move |req| {
            let seen = seen.clone();
            async move {
                assert!(
                    req.headers.contains_key("x-socketless-forwarded"),
                    "every call is marked"
                );
                if req.path.ends_with("/@socketless/v1/posts") {
                    let posts = carried(req.body.as_bytes());
                    seen.lock().unwrap().push((req.path.clone(), posts.clone()));
                    tokio::time::sleep(delay).await;
                    if old {
                        return Ok(Response::builder().status(404).body(Full::new(Bytes::new())).unwrap());
                    }
                    let body: Vec<u8> = posts.iter().map(|(_, frame)| outcome(frame)).collect();
                    return Ok(Response::builder()
                        .status(200)
                        .body(Full::new(Bytes::from(body)))
                        .unwrap());
                }
                seen.lock()
                    .unwrap()
                    .push((req.path.clone(), vec![(String::new(), req.body.clone())]));
                Ok(Response::builder().status(200).body(Full::new(Bytes::new())).unwrap())
            }
        });
        Owner { port, calls }
    }
}

#[tokio::test]
async fn posts_that_wait_go_together_in_order_and_each_outcome_reaches_its_caller() {
    let backend = FakeBackend::start().await;
    // "gone…" frames are gone on the owner, "full…" ones meet a full queue.
    let owner = Owner::start(false, Duration::from_millis(300), |frame| {
        match frame.split(':').next() {
            Some("gone") => 1,
            Some("full") => 2,
            _ => 0,
        }
    })
    .await;
    let gws = replica_set(&backend, &[free_port()], &[owner.port], |_| {}).await;
    // The first post takes the one call a lane has under way; nine more come meanwhile.
    const FRAMES: [&str; 10] = [
        "a:0", "a:1", "gone:2", "b:3", "full:4", "b:5", "gone:6", "c:7", "c:8", "full:9",
    ];
    let frames: &'static [&'static str] = &FRAMES;
    let mut answers = Vec::new();
    for (i, frame) in frames.iter().copied().enumerate() {
        let url = gws[0].mgmt(&encoded(&id_for(1, i as u8)));
        answers.push(tokio::spawn(async move { send("POST", &url, &[], frame).await }));
        tokio::time::sleep(Duration::from_millis(if i < 1 { 50 } else { 10 })).await;
    }
    let mut got = Vec::new();
    for a in answers {
        let (status, headers, _) = a.await.unwrap();
        got.push((
            status.as_u16(),
            headers.get("x-amzn-errortype").map(|v| v.to_str().unwrap().to_string()),
        ));
    }
    let want: Vec<(u16, Option<String>)> = frames
        .iter()
        .map(|f| match f.split(':').next() {
            Some("gone") => (410, Some("GoneException".into())),
            Some("full") => (429, Some("LimitExceededException".into())),
            _ => (200, None),
        })
        .collect();
    assert_eq!(got, want);
    let calls = owner.calls.lock().unwrap().clone();
    let sizes: Vec<usize> = calls.iter().map(|(_, posts)| posts.len()).collect();
    println!("calls to the owner carried {sizes:?} posts");
    assert_eq!(sizes, vec![1, 9], "one alone, then the nine that waited in one call");
    let order: Vec<String> = calls
        .iter()
        .flat_map(|(_, p)| p.iter().map(|(_, f)| f.clone()))
        .collect();
    assert_eq!(order, frames, "in the order they came");
    for (i, (_, posts)) in calls.iter().enumerate() {
        assert!(posts.iter().all(|(id, _)| id.len() == 16), "call {i}: {posts:?}");
    }
}

/// A call of posts' body: each post as (id, frame), text.
fn posts_body(posts: &[(String, &str)]) -> Vec<u8> {
    let mut body = Vec::new();
    for (id, frame) in posts {
        body.push(id.len() as u8);
        body.extend(id.as_bytes());
        body.push(0);
        body.extend((frame.len() as u32).to_be_bytes());
        body.extend(frame.as_bytes());
    }
    body
}

fn outcome_by_prefix(frame: &str) -> u8 {
    match frame.split(':').next() {
        Some("gone") => 1,
        Some("full") => 2,
        _ => 0,
    }
}

#[tokio::test]
async fn a_call_of_posts_for_one_other_replica_goes_on_whole_with_the_owners_answer() {
    let backend = FakeBackend::start().await;
    let owner = Owner::start(false, Duration::ZERO, outcome_by_prefix).await;
    let gws = replica_set(&backend, &[free_port()], &[owner.port], |_| {}).await;
    let posts = [
        (id_for(1, 1), "a:1"),
        (id_for(1, 2), "gone:2"),
        (id_for(1, 3), "full:3"),
        (id_for(1, 4), "a:4"),
    ];
    let url = format!("http://{}/dev/@socketless/v1/posts", gws[0].addr);
    let (status, _, answer) = send("POST", &url, &[], posts_body(&posts)).await;
    assert_eq!((status.as_u16(), answer.as_bytes()), (200, &[0u8, 1, 2, 0][..]));
    let calls = owner.calls.lock().unwrap().clone();
    let want: Vec<(String, String)> = posts.iter().map(|(id, f)| (id.clone(), f.to_string())).collect();
    assert_eq!(
        calls,
        vec![("/dev/@socketless/v1/posts".to_string(), want)],
        "one call, in order"
    );
    // Counted as the posts one by one would have been.
    let metrics = send("GET", &format!("http://{}/metrics", gws[0].addr), &[], "").await.2;
    let post = |status: &str| {
        metric_sum(
            &metrics,
            "socketless_gateway_management_calls_total",
            &["operation=\"post\"", "source=\"client\"", status],
        )
    };
    assert_eq!(
        (post("status=\"200\""), post("status=\"410\""), post("status=\"429\"")),
        (2.0, 1.0, 1.0)
    );
    assert_eq!(
        metric_sum(
            &metrics,
            "socketless_gateway_forwarded_calls_total",
            &["result=\"relayed\""]
        ),
        4.0
    );
}

#[tokio::test]
async fn a_call_of_posts_for_several_replicas_goes_on_in_one_call_to_each_owner() {
    let backend = FakeBackend::start().await;
    let one = Owner::start(false, Duration::ZERO, outcome_by_prefix).await;
    let two = Owner::start(false, Duration::ZERO, |_| 2).await;
    let gws = replica_set(&backend, &[free_port()], &[one.port, two.port], |_| {}).await;
    let mut ws = connect(&gws[0].url()).await;
    let here = id_of(&backend.wait_for("/connect", 1).await[0]);
    let posts = [
        (id_for(1, 1), "a:1"),
        (id_for(2, 2), "b:2"),
        (here.clone(), "here:3"),
        (id_for(1, 4), "gone:4"),
        (id_for(9, 5), "nobody:5"),
        (id_for(2, 6), "b:6"),
        (here.clone(), "here:7"),
        (id_for(1, 8), "a:8"),
        (id_for(1, 9), "a:9"),
    ];
    let url = format!("http://{}/dev/@socketless/v1/posts", gws[0].addr);
    let (status, _, answer) = send("POST", &url, &[], posts_body(&posts)).await;
    assert_eq!(
        (status.as_u16(), answer.as_bytes()),
        (200, &[0u8, 2, 0, 1, 1, 2, 0, 0, 0][..]),
        "each outcome in its post's place"
    );
    let frames = |owner: &Owner| -> Vec<Vec<(String, String)>> {
        owner
            .calls
            .lock()
            .unwrap()
            .iter()
            .map(|(_, posts)| posts.clone())
            .collect()
    };
    let of = |places: &[usize]| -> Vec<(String, String)> {
        places
            .iter()
            .map(|&i| (posts[i].0.clone(), posts[i].1.to_string()))
            .collect()
    };
    assert_eq!(
        frames(&one),
        vec![of(&[0, 3, 7, 8])],
        "one call to replica 1, its posts in order"
    );
    assert_eq!(
        frames(&two),
        vec![of(&[1, 5])],
        "one call to replica 2, its posts in order"
    );
    assert_eq!(next_text(&mut ws).await, "here:3");
    assert_eq!(next_text(&mut ws).await, "here:7");
}

#[tokio::test]
async fn a_call_of_posts_never_overtakes_posts_waiting_for_the_same_owner() {
    let backend = FakeBackend::start().await;
    let owner = Owner::start(false, Duration::from_millis(300), outcome_by_prefix).await;
    let gws = replica_set(&backend, &[free_port()], &[owner.port], |_| {}).await;
    let url = format!("http://{}/dev/@socketless/v1/posts", gws[0].addr);
    let single = |n: u8, frame: &'static str| {
        let url = gws[0].mgmt(&encoded(&id_for(1, n)));
        tokio::spawn(async move { send("POST", &url, &[], frame).await.0.as_u16() })
    };
    let call = |posts: Vec<(String, &'static str)>| {
        let url = url.clone();
        tokio::spawn(async move {
            let (status, _, answer) = send("POST", &url, &[], posts_body(&posts)).await;
            (status.as_u16(), answer.into_bytes())
        })
    };
    // A single post holds the lane; a call of posts that comes meanwhile waits behind it.
    let sent = || owner.calls.lock().unwrap().len();
    let first = single(0, "a:0");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let behind = call(vec![(id_for(1, 1), "a:1"), (id_for(1, 2), "gone:2")]);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(sent(), 1, "the call of posts waits while the lane's call is under way");
    assert_eq!(first.await.unwrap(), 200);
    assert_eq!(behind.await.unwrap(), (200, vec![0, 1]));
    // A call of posts that finds the lane free holds it in turn: a post that comes meanwhile
    // waits, and goes after it.
    let whole = call(vec![(id_for(1, 3), "a:3"), (id_for(1, 4), "full:4")]);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let after = single(5, "a:5");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(sent(), 3, "the post waits while the call of posts is under way");
    assert_eq!(whole.await.unwrap(), (200, vec![0, 2]));
    assert_eq!(after.await.unwrap(), 200);
    let calls = owner.calls.lock().unwrap().clone();
    let frames: Vec<Vec<String>> = calls
        .iter()
        .map(|(_, posts)| posts.iter().map(|(_, f)| f.clone()).collect())
        .collect();
    assert_eq!(
        frames,
        [vec!["a:0"], vec!["a:1", "gone:2"], vec!["a:3", "full:4"], vec!["a:5"]]
    );
}

#[tokio::test]
async fn a_call_of_posts_whose_owner_is_not_there_gets_gone_for_each() {
    let backend = FakeBackend::start().await;
    // Nothing listens at replica 1's address: it does not exist, so it holds nothing.
    let gws = replica_set(&backend, &[free_port()], &[free_port()], |_| {}).await;
    let url = format!("http://{}/dev/@socketless/v1/posts", gws[0].addr);
    let posts = [(id_for(1, 1), "a"), (id_for(1, 2), "b"), (id_for(1, 3), "c")];
    let (status, _, answer) = send("POST", &url, &[], posts_body(&posts)).await;
    assert_eq!((status.as_u16(), answer.as_bytes()), (200, &[1u8, 1, 1][..]));
    let metrics = send("GET", &format!("http://{}/metrics", gws[0].addr), &[], "").await.2;
    assert_eq!(
        metric_sum(
            &metrics,
            "socketless_gateway_forwarded_calls_total",
            &["result=\"no_owner\""]
        ),
        3.0
    );
}

#[tokio::test]
async fn an_owner_that_does_not_know_the_call_gets_the_posts_one_by_one() {
    let backend = FakeBackend::start().await;
    let owner = Owner::start(true, Duration::ZERO, |_| 0).await;
    let gws = replica_set(&backend, &[free_port()], &[owner.port], |_| {}).await;
    let id = id_for(1, 1);
    let (status, _, body) = send("POST", &gws[0].mgmt(&encoded(&id)), &[], "hello").await;
    assert_eq!(status.as_u16(), 200, "{body}");
    let calls = owner.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert!(calls[0].0.ends_with("/@socketless/v1/posts"));
    assert_eq!(
        calls[1].0,
        format!("/dev/@connections/{}", encoded(&id)),
        "the path as the caller sent it"
    );
    assert_eq!(calls[1].1[0].1, "hello");
    // The same through a call of posts (from `serve`): the post becomes the PostToConnection
    // it stands for.
    let mut body = vec![id.len() as u8];
    body.extend(id.as_bytes());
    body.push(0);
    body.extend(6u32.to_be_bytes());
    body.extend(b"again!");
    let posts = format!("http://{}/dev/@socketless/v1/posts", gws[0].addr);
    let (status, _, answer) = send("POST", &posts, &[], body).await;
    assert_eq!((status.as_u16(), answer.as_bytes()), (200, &[0u8][..]));
    let calls = owner.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 4, "{calls:?}");
    assert!(calls[2].0.ends_with("/@socketless/v1/posts"));
    let path = percent_encoding::percent_decode_str(&calls[3].0)
        .decode_utf8()
        .unwrap()
        .into_owned();
    assert_eq!(path, format!("/dev/@connections/{id}"));
    assert_eq!(calls[3].1[0].1, "again!");
}

#[tokio::test]
async fn hostile_the_call_needs_a_signature_or_a_peers_marker_where_signatures_are_checked() {
    let backend = FakeBackend::start().await;
    let open = replica_set(&backend, &[free_port()], &[], |_| {}).await;
    let posts = format!("http://{}/dev/@socketless/v1/posts", open[0].addr);
    let mut ws = connect(&open[0].url()).await;
    let id = id_of(&backend.wait_for("/connect", 1).await[0]);
    let mut body = vec![id.len() as u8];
    body.extend(id.as_bytes());
    body.push(0);
    body.extend(5u32.to_be_bytes());
    body.extend(b"smug!");
    // Without SigV4 checks the API is open, as `@connections` is: the call works, with a marker
    // (any marker is a peer's then) or without.
    for headers in [&[][..], &[("x-socketless-forwarded", "1")][..]] {
        let (status, _, answer) = send("POST", &posts, headers, body.clone()).await;
        assert_eq!((status.as_u16(), answer.as_bytes()), (200, &[0u8][..]));
        assert_eq!(next_text(&mut ws).await, "smug!");
    }
    // Bodies that are not carried posts: 400, nothing delivered.
    for bad in [
        &b"\x10short"[..],
        &b"\x01A\x00\xff\xff\xff\xff"[..],
        &body[..body.len() - 1],
    ] {
        let (status, headers, _) = send("POST", &posts, &[], bad.to_vec()).await;
        assert_eq!(
            (status.as_u16(), headers["x-amzn-errortype"].to_str().unwrap()),
            (400, "BadRequestException")
        );
    }
    // Over the body limit: 413.
    let huge = vec![0u8; 2 * 1024 * 1024];
    let (status, _, _) = send("POST", &posts, &[], huge).await;
    assert_eq!(status.as_u16(), 413);
    let nothing = tokio::time::timeout(Duration::from_millis(200), next_text(&mut ws)).await;
    assert!(nothing.is_err(), "a refused call was delivered");

    // With SigV4 checks: no signature, or a forged marker, is refused, as on `@connections`.
    let signed = replica_set(&backend, &[free_port()], &[], |c| {
        c.verifier = Some(verifier("AKIDRELAY", "relay-secret"))
    })
    .await;
    let posts = format!("http://{}/dev/@socketless/v1/posts", signed[0].addr);
    let status = send("POST", &posts, &[], body.clone()).await.0;
    assert_eq!(status.as_u16(), 403, "unsigned");
    for marker in ["1", "1700000000000.deadbeef"] {
        let status = send("POST", &posts, &[("x-socketless-forwarded", marker)], body.clone())
            .await
            .0;
        assert_eq!(status.as_u16(), 403, "marker {marker}");
    }
}

/// Waits until `serve` has had a socketless gateway's answer to `info` (asked in the background
/// at its first post; posts go alone until then).
async fn knows_the_gateway(b: &Backend) {
    within(async {
        while b
            .metric("socketless_push_batch_calls_total{operation=\"info\",outcome=\"socketless\"}")
            .await
            < 1.0
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

/// `serve --reply-mode async --push-route ROUTE` behind two replicas that check SigV4, its
/// pushes to replica 0.
async fn async_serve_behind_two_replicas(route: &str) -> (Vec<Gw>, Backend) {
    let serve_port = free_port();
    let gws = replica_set_for(
        &format!("http://127.0.0.1:{serve_port}"),
        &[free_port(), free_port()],
        &[],
        |c| c.verifier = Some(verifier("AKIDTEST", "test-secret")),
    )
    .await;
    let mut a = args();
    a.listen = format!("127.0.0.1:{serve_port}");
    a.shared_secret = Some("0123456789abcdef-test".into());
    a.reply_mode = "async".into();
    a.push_endpoint = Some(format!("http://{}/dev", gws[0].addr));
    a.push_route = route.into();
    let b = start(a).await;
    (gws, b)
}

/// A first message from each client, answered: the first post makes `serve` ask the
/// endpoint's `info` in the background, and posts go through the endpoint, alone, until the
/// answer is in; this returns once it is.
async fn first_replies(clients: &mut [Ws], b: &Backend) {
    for ws in clients.iter_mut() {
        send_text(ws, "first").await;
        assert_eq!(next_text(ws).await, "first");
    }
    knows_the_gateway(b).await;
}

/// Waits until `serve` has counted `total` pushes delivered (it counts a push once it has read
/// the gateway's answer).
async fn delivered(b: &Backend, total: usize) {
    metrics_once_counted(
        &b.internal_url("/metrics"),
        "socketless_pushes_total",
        &["outcome=\"delivered\""],
        total as f64,
    )
    .await;
}

/// Each client sends `each` numbered messages and must get each reply once and in order.
async fn replies_in_order(clients: Vec<Ws>, each: usize) {
    let mut readers = Vec::new();
    for (i, mut ws) in clients.into_iter().enumerate() {
        readers.push(tokio::spawn(async move {
            for n in 0..each {
                send_text(&mut ws, &format!("{i}.{n}")).await;
            }
            for n in 0..each {
                assert_eq!(next_text(&mut ws).await, format!("{i}.{n}"), "client {i}");
            }
            let more = tokio::time::timeout(Duration::from_millis(50), next_text(&mut ws)).await;
            assert!(more.is_err(), "client {i} got a frame twice");
        }));
    }
    for r in readers {
        r.await.unwrap();
    }
}

/// `serve --reply-mode async` behind two replicas that check SigV4, its clients on replica 1
/// and its pushes through replica 0: the replies share calls, signed, and each reaches its
/// client once and in order through the owner.
#[tokio::test]
async fn serve_replies_share_signed_calls_through_a_non_owner() {
    // Through the endpoint, not to each connection's owner (see the next test).
    let (gws, b) = async_serve_behind_two_replicas("endpoint").await;
    const CLIENTS: usize = 16;
    const EACH: usize = 40;
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        clients.push(connect(&gws[1].url()).await);
    }
    first_replies(&mut clients, &b).await;
    replies_in_order(clients, EACH).await;
    let total = CLIENTS * (EACH + 1);
    delivered(&b, total).await;
    let served = b
        .metric("socketless_push_batch_calls_total{operation=\"posts\",outcome=\"ok\"}")
        .await;
    assert_eq!(
        b.metric("socketless_pushes_total{outcome=\"delivered\"}").await,
        total as f64
    );
    let entry = send("GET", &format!("http://{}/metrics", gws[0].addr), &[], "").await.2;
    let calls = metric_sum(
        &entry,
        "socketless_gateway_management_calls_total",
        &["operation=\"posts\"", "source=\"client\"", "status=\"200\""],
    );
    let posts = metric_sum(
        &entry,
        "socketless_gateway_management_calls_total",
        &["operation=\"post\"", "source=\"client\"", "status=\"200\""],
    );
    println!(
        "{} replies sent once `serve` knew the gateway takes posts reached it in {calls} calls",
        CLIENTS * EACH
    );
    assert_eq!(posts, total as f64, "every reply counts as a post where it entered");
    assert_eq!(calls, served, "the gateway took every call `serve` made");
    assert!(
        calls >= 1.0 && calls < (CLIENTS * EACH) as f64,
        "{calls} calls for {total} replies"
    );
    let owner = send("GET", &format!("http://{}/metrics", gws[1].addr), &[], "").await.2;
    assert_eq!(
        metric_sum(
            &owner,
            "socketless_gateway_management_calls_total",
            &["operation=\"post\"", "source=\"peer\"", "status=\"200\""]
        ),
        total as f64,
        "every reply was delivered by the owner"
    );
}

/// The same with `--push-route owner` (the default): once `serve` has the endpoint's `info`,
/// which lists the replicas, its replies go straight to the replica holding each connection,
/// signed and carried many to a call; the endpoint's replica forwards nothing.
#[tokio::test]
async fn serve_replies_go_straight_to_each_connections_owner() {
    let (gws, b) = async_serve_behind_two_replicas("owner").await;
    const CLIENTS: usize = 8;
    const EACH: usize = 40;
    // Clients on both replicas.
    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        clients.push(connect(&gws[i % 2].url()).await);
    }
    // Until `info` is answered, replies go through the endpoint (and replica 0 forwards
    // replica 1's): the counts below start after.
    first_replies(&mut clients, &b).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let counts = || async {
        let mut out = Vec::new();
        for gw in &gws {
            let m = send("GET", &format!("http://{}/metrics", gw.addr), &[], "").await.2;
            let sum = |labels: &[&str]| metric_sum(&m, "socketless_gateway_management_calls_total", labels);
            out.push((
                metric_sum(&m, "socketless_gateway_forwarded_calls_total", &[]),
                sum(&["operation=\"post\"", "source=\"client\"", "status=\"200\""]),
                sum(&["operation=\"posts\"", "source=\"client\"", "status=\"200\""]),
            ));
        }
        out
    };
    let before = counts().await;
    let routed_before = b.metric("socketless_push_owner_routes_total{route=\"owner\"}").await;
    replies_in_order(clients, EACH).await;
    let total = CLIENTS * (EACH + 1);
    delivered(&b, total).await;
    let routed = b.metric("socketless_push_owner_routes_total{route=\"owner\"}").await - routed_before;
    assert_eq!(
        routed,
        (CLIENTS * EACH) as f64,
        "every reply after the answer went to its owner"
    );
    assert_eq!(
        b.metric("socketless_push_owner_routes_total{route=\"fallback\"}").await,
        0.0
    );
    for (o, ((f0, p0, c0), (f1, p1, c1))) in before.into_iter().zip(counts().await).enumerate() {
        println!("replica {o}: {} replies in {} calls of posts", p1 - p0, c1 - c0);
        assert_eq!(f1 - f0, 0.0, "replica {o} forwarded nothing");
        assert_eq!(
            p1 - p0,
            (CLIENTS / 2 * EACH) as f64,
            "replica {o} took its own clients' replies"
        );
        assert!(c1 - c0 >= 1.0, "replica {o} took calls of posts");
    }
}

/// An owner that does not answer (gone, or out of `serve`'s reach) is passed over: the post
/// goes through the endpoint, and so do the next ones to that owner for a while.
#[tokio::test]
async fn a_post_whose_owner_does_not_answer_goes_through_the_endpoint() {
    let fake = common::groups::FakeSocketless::start().await;
    let nobody = format!("http://127.0.0.1:{}", free_port());
    *fake.replicas.lock().unwrap() = Some(serde_json::json!({"urls": [nobody], "stage": "dev"}));
    let mut a = args();
    a.reply_mode = "async".into();
    a.push_endpoint = Some(fake.endpoint.clone());
    let b = start(a).await;
    let id = id_for(0, 7);
    assert_eq!(call(&b, "/message", &id, "one").await.0.as_u16(), 200);
    knows_the_gateway(&b).await;
    assert_eq!(call(&b, "/message", &id, "two").await.0.as_u16(), 200);
    assert_eq!(call(&b, "/message", &id, "three").await.0.as_u16(), 200);
    let alone = format!("/dev/@connections/{}", encoded(&id));
    assert_eq!(
        *fake.posts.lock().unwrap(),
        vec![alone.clone(), alone.clone(), alone],
        "every post reached the endpoint"
    );
    assert_eq!(
        b.metric("socketless_push_owner_routes_total{route=\"owner\"}").await,
        1.0
    );
    assert_eq!(
        b.metric("socketless_push_owner_routes_total{route=\"fallback\"}").await,
        1.0
    );
    assert_eq!(b.metric("socketless_pushes_total{outcome=\"delivered\"}").await, 3.0);
}

/// A gateway whose `info` says it takes posts many to a call but answers the call without
/// outcomes: the posts go alone, and so do the next ones to that endpoint.
#[tokio::test]
async fn posts_go_alone_where_the_call_is_not_answered_with_outcomes() {
    let fake = common::groups::FakeSocketless::start().await;
    fake.advertise_posts.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut a = args();
    a.reply_mode = "async".into();
    a.push_endpoint = Some(fake.endpoint.clone());
    let b = start(a).await;
    let id = "CaRrIeD000000000";
    assert_eq!(call(&b, "/message", id, "one").await.0.as_u16(), 200);
    knows_the_gateway(&b).await;
    assert_eq!(call(&b, "/message", id, "two").await.0.as_u16(), 200);
    assert_eq!(call(&b, "/message", id, "three").await.0.as_u16(), 200);
    let alone = format!("/dev/@connections/{id}");
    assert_eq!(
        *fake.posts.lock().unwrap(),
        vec![alone.clone(), "/dev/@socketless/v1/posts".into(), alone.clone(), alone],
        "the first before the answer, the second carried then alone, the third alone"
    );
    assert_eq!(
        b.metric("socketless_push_batch_calls_total{operation=\"posts\",outcome=\"refused\"}")
            .await,
        1.0
    );
    assert_eq!(b.metric("socketless_pushes_total{outcome=\"delivered\"}").await, 3.0);
}

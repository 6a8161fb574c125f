//! Resume by a client-held key, on the memory store, through a `socketless gateway` loaded from
//! the repository's template and `serve --upstream` in front of an app that records its calls:
//! a resume within the window keeps the session (id, attributes, groups; no `/disconnect`),
//! replays the gap in order once, and replaces a live connection (also in the middle of its
//! replay); a bound that drops messages makes the resume unrecovered; a passed window gives a
//! new session after one `/disconnect`.
//! Hostile: invalid keys (400), a flood of resumes of one key, a buffer pushed past its bounds.

mod common;

use std::time::Duration;

use common::gw::{close_code, connect, next_text, send_text};
use common::resume::*;
use common::*;
use futures_util::StreamExt;
use http::StatusCode;

fn memory() -> Vec<String> {
    vec!["--store=memory".to_string()]
}

fn sid() -> String {
    socketless::backend::resume::session_id(KEY)
}

/// Joins a group through the internal API.
async fn join(s: &Stack, group: &str, connection_id: &str) {
    let url = s.internal(&format!("/v1/groups/{group}/connections/{connection_id}"));
    let (status, _, body) = send("PUT", &url, &[], "").await;
    assert!(status.is_success(), "join: {status} {body}");
}

async fn publish(s: &Stack, group: &str, body: &str) -> StatusCode {
    let url = s.internal(&format!("/v1/groups/{group}/messages"));
    send("POST", &url, &[], body.to_string()).await.0
}

#[tokio::test]
async fn a_resume_within_the_window_keeps_the_session_and_replays_the_gap_once() {
    let s = stack(1, &memory(), &["--resume-window=3s"]).await;
    let id = sid();
    let mut ws1 = connect(&s.url(KEY)).await;
    let first = s.app.wait_for("/connect", 1).await.remove(0);
    assert_eq!(first.header("x-socketless-resumed").as_deref(), Some("false"));
    assert_eq!(first.header("x-socketless-recovered").as_deref(), Some("false"));
    assert_eq!(first.header("x-socketless-session-id"), Some(id.clone()));
    assert_eq!(
        first.header("x-socketless-resume-key"),
        None,
        "the key never reaches the app"
    );
    let c1 = first.header("x-socketless-connection-id").unwrap();
    join(&s, "room", &c1).await;
    send_text(&mut ws1, "hi").await;
    assert_eq!(next_text(&mut ws1).await, format!("session={id} tenant=acme"));
    assert_eq!(s.push(&id, "live").await.0, StatusCode::OK);
    assert_eq!(next_text(&mut ws1).await, "live");

    drop(ws1);
    s.wait_detached(&id).await;
    for m in ["m1", "m2"] {
        let (status, v) = s.push(&id, m).await;
        assert_eq!(
            (status, v["buffered"].as_bool()),
            (StatusCode::ACCEPTED, Some(true)),
            "{m}: {v}"
        );
    }
    assert_eq!(publish(&s, "room", "g1").await, StatusCode::OK);
    let (_, view) = s.session(&id).await;
    assert_eq!(view["buffered"], 3, "{view}");

    let mut ws2 = connect(&s.url(KEY)).await;
    let second = s.app.wait_for("/connect", 2).await.remove(1);
    assert_eq!(second.header("x-socketless-resumed").as_deref(), Some("true"));
    assert_eq!(second.header("x-socketless-recovered").as_deref(), Some("true"));
    assert_eq!(second.header("x-socketless-session-id"), Some(id.clone()));
    let c2 = second.header("x-socketless-connection-id").unwrap();
    assert_ne!(c1, c2);
    for want in ["m1", "m2", "g1"] {
        assert_eq!(next_text(&mut ws2).await, want);
    }
    // Attributes and groups carried over; the buffer is empty and pushes go straight through.
    send_text(&mut ws2, "again").await;
    assert_eq!(next_text(&mut ws2).await, format!("session={id} tenant=acme"));
    assert_eq!(publish(&s, "room", "g2").await, StatusCode::OK);
    assert_eq!(next_text(&mut ws2).await, "g2");
    assert_eq!(s.push(&id, "m3").await.0, StatusCode::OK);
    assert_eq!(next_text(&mut ws2).await, "m3");
    let (_, view) = s.session(&id).await;
    assert_eq!(
        (view["buffered"].as_u64(), view["connectionId"].as_str()),
        (Some(0), Some(c2.as_str()))
    );
    // Past the old connection's window: still no /disconnect, nothing replayed twice.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert!(s.app.calls("/disconnect").is_empty());
    assert_eq!(s.push(&id, "m4").await.0, StatusCode::OK);
    assert_eq!(next_text(&mut ws2).await, "m4");
    assert_eq!(s.serves[0].metric("socketless_resume_replayed_total").await, 3.0);
    assert_eq!(
        s.serves[0]
            .metric("socketless_resume_connects_total{outcome=\"resumed\"}")
            .await,
        1.0
    );

    // The session ends once: one /disconnect, then no session.
    drop(ws2);
    let ended = s.app.wait_for("/disconnect", 1).await;
    assert_eq!(ended[0].header("x-socketless-session-id"), Some(id.clone()));
    assert_eq!(ended[0].header("x-socketless-connection-id"), Some(c2));
    assert_eq!(s.session(&id).await.0, StatusCode::NOT_FOUND);
    assert_eq!(s.push(&id, "late").await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_second_connection_with_the_key_replaces_the_first_without_a_disconnect() {
    let s = stack(1, &memory(), &["--resume-window=2s"]).await;
    let id = sid();
    let mut ws1 = connect(&s.url(KEY)).await;
    s.app.wait_for("/connect", 1).await;
    let mut ws2 = connect(&s.url(KEY)).await;
    let second = s.app.wait_for("/connect", 2).await.remove(1);
    assert_eq!(second.header("x-socketless-resumed").as_deref(), Some("true"));
    let (code, _) = close_code(&mut ws1).await;
    assert_eq!(code, 1000, "the replaced connection is closed");
    assert_eq!(s.push(&id, "to-second").await.0, StatusCode::OK);
    assert_eq!(next_text(&mut ws2).await, "to-second");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(s.app.calls("/disconnect").is_empty());
    let (_, count) = get(&s.internal("/v1/connections/count")).await;
    assert!(count.contains("\"count\":1"), "{count}");
}

/// A resume that replaces a connection while its replay is under way: the replaced
/// connection's replay holds a batch, and the new one's waits for it to be delivered or put
/// back, so the two connections together see the gap once, in order, and a push after it.
#[tokio::test]
async fn a_resume_during_a_replay_keeps_the_gap_in_order() {
    let s = stack(1, &memory(), &["--resume-window=5s"]).await;
    let id = sid();
    drop(connect(&s.url(KEY)).await);
    s.app.wait_for("/connect", 1).await;
    s.wait_detached(&id).await;
    const GAP: usize = 200;
    for i in 0..GAP {
        assert_eq!(s.push(&id, &format!("n{i}")).await.0, StatusCode::ACCEPTED);
    }
    let mut ws2 = connect(&s.url(KEY)).await;
    let mut seen = vec![next_text(&mut ws2).await];
    // Replaced while its replay is still sending the first batches.
    let mut ws3 = connect(&s.url(KEY)).await;
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws2.next()).await {
            Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t)))) => seen.push(t.as_str().to_string()),
            Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Close(_)))) | Ok(None) | Ok(Some(Err(_))) => break,
            Ok(Some(Ok(_))) => continue,
            Err(_) => panic!("the replaced connection was not closed"),
        }
    }
    let on_second = seen.len();
    assert!(
        on_second < GAP,
        "the replay ended before the second resume; nothing was tested"
    );
    while seen.len() < GAP {
        seen.push(next_text(&mut ws3).await);
    }
    let want: Vec<String> = (0..GAP).map(|i| format!("n{i}")).collect();
    assert_eq!(
        seen, want,
        "{on_second} on the replaced connection, the rest on the new one"
    );
    assert_eq!(s.push(&id, "after").await.0, StatusCode::OK);
    assert_eq!(next_text(&mut ws3).await, "after");
    assert_eq!(s.session(&id).await.1["buffered"], 0);
}

#[tokio::test]
async fn a_bound_that_drops_messages_makes_the_resume_unrecovered() {
    let s = stack(1, &memory(), &["--resume-window=5s", "--resume-buffer-messages=3"]).await;
    let id = sid();
    drop(connect(&s.url(KEY)).await);
    s.app.wait_for("/connect", 1).await;
    s.wait_detached(&id).await;
    for i in 0..3 {
        assert_eq!(s.push(&id, &format!("m{i}")).await.0, StatusCode::ACCEPTED);
    }
    let (status, v) = s.push(&id, "m3").await;
    assert_eq!(
        (status, v["buffered"].as_bool(), v["overflow"].as_bool()),
        (StatusCode::ACCEPTED, Some(false), Some(true))
    );
    let (_, view) = s.session(&id).await;
    assert_eq!(
        (view["buffered"].as_u64(), view["overflow"].as_bool()),
        (Some(3), Some(true))
    );
    let mut ws = connect(&s.url(KEY)).await;
    let resumed = s.app.wait_for("/connect", 2).await.remove(1);
    assert_eq!(resumed.header("x-socketless-resumed").as_deref(), Some("true"));
    assert_eq!(resumed.header("x-socketless-recovered").as_deref(), Some("false"));
    for i in 0..3 {
        assert_eq!(next_text(&mut ws).await, format!("m{i}"));
    }
    assert_eq!(s.serves[0].metric("socketless_resume_dropped_total").await, 1.0);
    assert_eq!(s.serves[0].metric("socketless_resume_not_recovered_total").await, 1.0);
}

#[tokio::test]
async fn past_the_window_the_key_starts_a_new_session_after_one_disconnect() {
    let s = stack(1, &memory(), &["--resume-window=1s"]).await;
    let id = sid();
    drop(connect(&s.url(KEY)).await);
    let c1 = s.app.wait_for("/connect", 1).await[0]
        .header("x-socketless-connection-id")
        .unwrap();
    let ended = s.app.wait_for("/disconnect", 1).await;
    assert_eq!(ended[0].header("x-socketless-connection-id"), Some(c1));
    assert_eq!(s.push(&id, "gone").await.0, StatusCode::NOT_FOUND);
    let _ws = connect(&s.url(KEY)).await;
    let again = s.app.wait_for("/connect", 2).await.remove(1);
    assert_eq!(again.header("x-socketless-resumed").as_deref(), Some("false"));
    assert_eq!(again.header("x-socketless-recovered").as_deref(), Some("false"));
    assert_eq!(again.header("x-socketless-session-id"), Some(id));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(s.app.calls("/disconnect").len(), 1);
}

#[tokio::test]
async fn without_a_key_the_session_id_is_the_connection_id_and_resume_off_ignores_keys() {
    let s = stack(1, &memory(), &["--resume-window=0s"]).await;
    let _plain = connect(&s.gws[0].url()).await;
    let _keyed = connect(&s.url("not%20a%20key")).await;
    let calls = s.app.wait_for("/connect", 2).await;
    for c in calls {
        assert_eq!(
            c.header("x-socketless-session-id"),
            c.header("x-socketless-connection-id")
        );
        assert_eq!(c.header("x-socketless-resumed").as_deref(), Some("false"));
    }
}

#[tokio::test]
async fn hostile_invalid_keys_are_refused_with_400() {
    let s = stack(1, &memory(), &[]).await;
    for bad in [
        "short",
        &"a".repeat(129),
        "abcdefghijklmnopqrstu%3D",
        "abcdefghij%20klmnopqrstuv",
        "",
    ] {
        let url = s.url(bad);
        assert_eq!(common::authorizer::refused(&url).await, 400, "{bad:?}");
    }
    assert!(s.app.calls("/connect").is_empty(), "the app never saw them");
    assert_eq!(
        s.serves[0]
            .metric("socketless_resume_refused_total{reason=\"invalid_key\"}")
            .await,
        5.0
    );
}

#[tokio::test]
async fn hostile_a_flood_of_resumes_of_one_key_ends_with_one_owner() {
    let s = stack(1, &memory(), &["--resume-window=2s"]).await;
    let id = sid();
    let url = s.url(KEY);
    // 1,000 resumes, 25 at a time; every connection is dropped by the client or replaced.
    let started = std::time::Instant::now();
    let opened = futures_util::stream::iter(0..1000)
        .map(|_| {
            let url = url.clone();
            async move { tokio_tungstenite::connect_async(url).await.is_ok() }
        })
        .buffer_unordered(25)
        .filter(|ok| futures_util::future::ready(*ok))
        .count()
        .await;
    assert!(opened > 900, "{opened} of 1000 handshakes");
    println!(
        "flood: {opened} of 1000 resumes of one key accepted in {:?}",
        started.elapsed()
    );
    // One last connection that stays: it owns the session.
    let mut last = connect(&url).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(s.push(&id, "owner").await.0, StatusCode::OK);
    assert_eq!(next_text(&mut last).await, "owner");
    // After the window: the store holds the one session, and nothing reached /disconnect.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (_, count) = get(&s.internal("/v1/connections/count")).await;
    assert!(count.contains("\"count\":1"), "{count}");
    assert!(s.app.calls("/disconnect").is_empty());
    let (_, view) = s.session(&id).await;
    assert_eq!(view["buffered"], 0, "{view}");
}

#[tokio::test]
async fn hostile_a_buffer_pushed_past_its_bounds_stays_within_them() {
    let s = stack(
        1,
        &memory(),
        &[
            "--resume-window=5s",
            "--resume-buffer-bytes=1024",
            "--resume-buffer-messages=50",
        ],
    )
    .await;
    let id = sid();
    drop(connect(&s.url(KEY)).await);
    s.app.wait_for("/connect", 1).await;
    s.wait_detached(&id).await;
    let body = "x".repeat(100);
    let mut kept = 0;
    for _ in 0..200 {
        let (status, v) = s.push(&id, &body).await;
        assert_eq!(status, StatusCode::ACCEPTED);
        if v["buffered"] == true {
            kept += 1;
        }
    }
    assert_eq!(kept, 10, "1024 bytes hold ten messages of 100");
    let (_, view) = s.session(&id).await;
    assert_eq!(
        (
            view["buffered"].as_u64(),
            view["bufferedBytes"].as_u64(),
            view["overflow"].as_bool()
        ),
        (Some(10), Some(1000), Some(true))
    );
    let big = "y".repeat(2000);
    let (_, v) = s.push(&id, &big).await;
    assert_eq!(v["overflow"], true);
    let mut ws = connect(&s.url(KEY)).await;
    let resumed = s.app.wait_for("/connect", 2).await.remove(1);
    assert_eq!(resumed.header("x-socketless-recovered").as_deref(), Some("false"));
    for _ in 0..10 {
        assert_eq!(next_text(&mut ws).await, body);
    }
}

#[tokio::test]
async fn hostile_a_key_resumed_by_another_principal_is_refused_with_403() {
    let auth = common::authorizer::FakeAuthorizer::start().await;
    let s = stack_with(1, &memory(), &["--resume-window=5s"], Some(&auth.url)).await;
    let id = sid();
    let alice = |s: &Stack| format!("{}&token=allow", s.url(KEY));
    drop(connect(&alice(&s)).await);
    let first = s.app.wait_for("/connect", 1).await.remove(0);
    assert_eq!(first.header("x-socketless-principal-id").as_deref(), Some("alice"));
    s.wait_detached(&id).await;
    let bob = format!("{}&token=bob", s.url(KEY));
    assert_eq!(common::authorizer::refused(&bob).await, 403);
    assert_eq!(s.app.calls("/connect").len(), 1, "the app never saw bob's connect");
    assert_eq!(
        s.serves[0]
            .metric("socketless_resume_refused_total{reason=\"principal\"}")
            .await,
        1.0
    );
    // The session is still alice's.
    let _ws = connect(&alice(&s)).await;
    let again = s.app.wait_for("/connect", 2).await.remove(1);
    assert_eq!(again.header("x-socketless-resumed").as_deref(), Some("true"));
    assert_eq!(again.header("x-socketless-principal-id").as_deref(), Some("alice"));
}

/// A `/connect` straight to `serve`, as a gateway would send it, with the resume key.
async fn connect_call(b: &Backend, id: &str) -> StatusCode {
    let mut headers = ctx(id);
    headers.push(("x-socketless-resume-key", KEY.to_string()));
    let refs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    send("POST", &b.url("/connect"), &refs, "").await.0
}

#[tokio::test]
async fn a_connection_the_sweep_finds_gone_waits_the_window_and_a_resume_cancels_it() {
    let app = App::start().await;
    // An `@connections` endpoint that says both connections are gone.
    let fake = FakeConnections::start().await;
    for id in ["SwEePaAaAaAaAaA=", "SwEePbBbBbBbBbB="] {
        fake.gone.lock().unwrap().insert(id.to_string());
    }
    let mut a = args();
    a.upstream = Some(app.url.clone());
    a.push_endpoint = Some(format!("http://{}", fake.addr.unwrap()));
    a.push_batch = "off".into();
    a.sweep_interval = "300ms".into();
    a.sweep_min_age = "0s".into();
    a.resume_window = "2s".into();
    let b = start(a).await;
    let id = sid();
    // No $disconnect ever comes: the sweep finds the first connection gone and detaches it.
    assert_eq!(connect_call(&b, "SwEePaAaAaAaAaA=").await, StatusCode::OK);
    let detached = async {
        loop {
            let (_, body) = get(&b.internal_url(&format!("/v1/sessions/{id}"))).await;
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            if v["connectionId"].is_null() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    within(detached).await;
    // Resumed by a second connection within the window; the sweep finds that one gone too.
    assert_eq!(connect_call(&b, "SwEePbBbBbBbBbB=").await, StatusCode::OK);
    let resumed = app.wait_for("/connect", 2).await.remove(1);
    assert_eq!(resumed.header("x-socketless-resumed").as_deref(), Some("true"));
    // One /disconnect, for the second connection, after its window: the first one's was
    // cancelled by the resume.
    let ended = app.wait_for("/disconnect", 1).await;
    assert_eq!(
        ended[0].header("x-socketless-connection-id").as_deref(),
        Some("SwEePbBbBbBbBbB=")
    );
    assert_eq!(ended[0].header("x-socketless-session-id"), Some(id.clone()));
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(app.calls("/disconnect").len(), 1);
    assert_eq!(
        get(&b.internal_url(&format!("/v1/sessions/{id}"))).await.0,
        StatusCode::NOT_FOUND
    );
}

/// A push that meets a resuming connection still in its handshake (the gateway answers 410
/// until it opens) is replayed to it once it opens, ahead of the pushes after it: it is neither
/// left in the buffer until a later resume nor overtaken. This is the window of a client's
/// make-before-break renewal, when nothing waits in the buffer.
#[tokio::test]
async fn a_push_during_the_new_connections_handshake_goes_out_first_once_it_opens() {
    const OLD: &str = "HaNdShAkEaAaAaA=";
    const NEW: &str = "HaNdShAkEbBbBbB=";
    let app = App::start().await;
    let fake = FakeConnections::start().await;
    let mut a = args();
    a.upstream = Some(app.url.clone());
    a.push_endpoint = Some(format!("http://{}", fake.addr.unwrap()));
    a.push_batch = "off".into();
    a.resume_window = "5s".into();
    let b = start(a).await;
    let id = sid();
    let push = |body: &'static str| {
        let url = b.internal_url(&format!("/v1/sessions/{id}/messages"));
        async move { send("POST", &url, &[], body).await.0 }
    };
    assert_eq!(connect_call(&b, OLD).await, StatusCode::OK);
    assert_eq!(push("before").await, StatusCode::OK);
    // The renewal: the key connects again while the first connection is live, and its
    // handshake is not over when the next push comes.
    fake.mark_gone(NEW);
    assert_eq!(connect_call(&b, NEW).await, StatusCode::OK);
    assert_eq!(push("m1").await, StatusCode::ACCEPTED, "kept for the new connection");
    let posts_to_new = |fake: &FakeConnections| -> Vec<String> {
        fake.calls()
            .into_iter()
            .filter(|c| c.method == "POST" && c.path.ends_with(NEW))
            .map(|c| c.body)
            .collect()
    };
    within(async {
        while posts_to_new(&fake).len() < 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    // The handshake ends; the next push comes behind m1.
    fake.gone.lock().unwrap().remove(NEW);
    let second = push("m2").await;
    assert!(second == StatusCode::OK || second == StatusCode::ACCEPTED, "{second}");
    within(async {
        while !posts_to_new(&fake).contains(&"m2".to_string()) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let posts = posts_to_new(&fake);
    let last_m1 = posts.iter().rposition(|p| p == "m1").expect("m1 posted");
    let first_m2 = posts.iter().position(|p| p == "m2").unwrap();
    assert!(last_m1 < first_m2, "m1 went out after m2: {posts:?}");
    assert_eq!(posts.iter().filter(|p| *p == "m2").count(), 1, "{posts:?}");
    let (_, view) = get(&b.internal_url(&format!("/v1/sessions/{id}"))).await;
    let view: serde_json::Value = serde_json::from_str(&view).unwrap();
    assert_eq!(view["buffered"], 0, "{view}");
    assert_eq!(view["connectionId"], NEW, "{view}");
}

//! `/disconnect` at least once: the disconnect id is the same on every retry; an app that
//! answers 500 is retried with backoff until it takes the call; past the deadline the
//! disconnect is counted once and the session deleted; the grace delays the call (and the
//! cancel-on-resume hook stops it), for hundreds waiting at once as for one; a `serve` killed mid-`/disconnect` leaves its claim, and
//! another one's sweep delivers it once the lease has run out; two sweeps at once deliver one
//! `/disconnect` per gone session (the claim is a conditional write in DynamoDB, here moto).

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::proc::{Proc, command, wait_ready};
use common::*;
use http::{Response, StatusCode};
use http_body_util::Full;
use socketless::handler::{BoxFuture, MessageHandler, Rejection, RequestContext};
use socketless::store::disconnect_id;
use tokio::net::TcpListener;

/// One `/disconnect` the app received.
#[derive(Debug, Clone)]
struct Seen {
    connection_id: String,
    disconnect_id: String,
    at: Instant,
}

/// How the app answers `/disconnect`.
#[derive(Clone, Copy)]
enum Mode {
    /// 500 for the first `n` calls, 200 after.
    FailFirst(usize),
    /// Never answers the first call; 200 after.
    HangFirst,
}

/// An upstream app that accepts every connect and records every disconnect with its id.
struct App {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    _task: tokio::task::JoinHandle<()>,
}

impl App {
    async fn start(mode: Mode) -> App {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let calls = Arc::new(AtomicUsize::new(0));
        let record = seen.clone();
        let task = fake_server(listener, move |req| {
            let (record, calls) = (record.clone(), calls.clone());
            async move {
                let ok = || Ok(Response::new(Full::new(Bytes::new())));
                if req.path != "/disconnect" {
                    return ok();
                }
                let header = |name: &str| {
                    req.headers
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string()
                };
                record.lock().unwrap().push(Seen {
                    connection_id: header("x-socketless-connection-id"),
                    disconnect_id: header("x-socketless-disconnect-id"),
                    at: Instant::now(),
                });
                let n = calls.fetch_add(1, Ordering::SeqCst);
                match mode {
                    Mode::FailFirst(fail) if n < fail => Ok(Response::builder()
                        .status(500)
                        .body(Full::new(Bytes::from_static(b"down")))
                        .unwrap()),
                    Mode::HangFirst if n == 0 => {
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                        ok()
                    }
                    _ => ok(),
                }
            }
        });
        App { url, seen, _task: task }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Waits until the app has received `n` disconnects.
    async fn wait_for(&self, n: usize, bound: Duration) -> Vec<Seen> {
        let deadline = Instant::now() + bound;
        loop {
            let seen = self.seen();
            if seen.len() >= n {
                return seen;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {n} disconnects within {bound:?}",
                seen.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A backend started in this process, with its state reachable for sweeps and the hook.
struct Serve {
    http: Backend,
    state: Arc<socketless::backend::Backend>,
}

async fn serve(flags: &[String], handler: Arc<dyn MessageHandler>) -> Serve {
    let mut all: Vec<String> = [
        "--listen=127.0.0.1:0",
        "--internal-listen=127.0.0.1:0",
        "--shutdown-delay=0s",
        "--drain-timeout=2s",
        "--aws-timeout=2s",
        "--sweep-interval=0s",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    all.push(format!("--region={}", socketless::defaults::REGION));
    all.extend(flags.iter().cloned());
    let config = socketless::serve::ServeArgs::from_flags(all)
        .expect("flags parse")
        .validate()
        .expect("valid flags");
    let lifecycle = socketless::lifecycle::Lifecycle::new();
    let prepared = within(socketless::serve::prepare_with_sdk(
        config,
        handler,
        lifecycle.clone(),
        sdk(Duration::from_secs(2)),
    ))
    .await
    .expect("backend starts");
    let state = prepared.backend.clone();
    let public = prepared.public.local_addr().unwrap();
    let internal = prepared.internal.local_addr().unwrap();
    prepared.set_ready();
    let task = tokio::spawn(prepared.run());
    Serve {
        http: Backend {
            public,
            internal,
            lifecycle,
            task,
        },
        state,
    }
}

/// A connect and then a disconnect from "the gateway", with its connectedAt.
const CONNECTED_AT: i64 = 1_790_000_000_000;

async fn gateway_call(b: &Backend, path: &str, id: &str) -> StatusCode {
    post_to(&b.url(path), id).await
}

async fn post_to(url: &str, id: &str) -> StatusCode {
    let mut headers = ctx(id);
    headers.push(("x-socketless-connected-at", CONNECTED_AT.to_string()));
    let refs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    send("POST", url, &refs, Bytes::new()).await.0
}

async fn lookup(b: &Backend, id: &str) -> Option<serde_json::Value> {
    let (status, body) = get(&b.internal_url(&format!("/v1/connections/{id}"))).await;
    (status == StatusCode::OK).then(|| serde_json::from_str(&body).expect("a session document"))
}

async fn wait_until_gone(b: &Backend, id: &str) {
    let deadline = Instant::now() + T;
    while lookup(b, id).await.is_some() {
        assert!(Instant::now() < deadline, "session {id} still there");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn upstream(app: &App) -> String {
    format!("--upstream={}", app.url)
}

/// Never used as the handler: `--upstream` replaces it.
struct Unused;

impl MessageHandler for Unused {
    fn on_message<'a>(&'a self, _: &'a RequestContext, _: Bytes) -> BoxFuture<'a, Result<Option<Bytes>, Rejection>> {
        Box::pin(async { Ok(None) })
    }
}

#[tokio::test]
async fn an_app_answering_500_is_retried_with_backoff_and_the_same_id_until_it_takes_it() {
    let app = App::start(Mode::FailFirst(3)).await;
    let s = serve(&[upstream(&app), "--disconnect-grace=0s".into()], Arc::new(Unused)).await;
    let id = "ReTrY0000000000=";
    assert_eq!(gateway_call(&s.http, "/connect", id).await, StatusCode::OK);
    // The gateway's call is answered after the first attempt; the retries run on.
    assert_eq!(gateway_call(&s.http, "/disconnect", id).await, StatusCode::OK);
    let seen = app.wait_for(4, T).await;
    wait_until_gone(&s.http, id).await;
    let want = disconnect_id(id, CONNECTED_AT);
    assert_eq!(seen.len(), 4, "three refusals, then the call that was taken: {seen:?}");
    for call in &seen {
        assert_eq!(
            (call.connection_id.as_str(), call.disconnect_id.as_str()),
            (id, want.as_str())
        );
    }
    // Each wait at least the backoff's step, and doubling: 200 ms, 400 ms, 800 ms.
    let gaps: Vec<Duration> = seen.windows(2).map(|w| w[1].at - w[0].at).collect();
    for (gap, least) in gaps.iter().zip([200u64, 400, 800]) {
        assert!(*gap >= Duration::from_millis(least), "gaps {gaps:?}");
    }
    let metric = |outcome: &str| format!("socketless_disconnects_total{{outcome=\"{outcome}\"}}");
    assert_eq!(s.http.metric(&metric("attempt_failed")).await, 3.0);
    assert_eq!(s.http.metric(&metric("delivered")).await, 1.0);
    assert_eq!(s.http.metric(&metric("abandoned")).await, 0.0);
}

#[tokio::test]
async fn past_the_deadline_a_disconnect_is_counted_once_and_the_session_deleted() {
    let app = App::start(Mode::FailFirst(usize::MAX)).await;
    let s = serve(
        &[
            upstream(&app),
            "--disconnect-grace=0s".into(),
            "--disconnect-deadline=1s".into(),
        ],
        Arc::new(Unused),
    )
    .await;
    let id = "DeAdLiNe0000000=";
    assert_eq!(gateway_call(&s.http, "/connect", id).await, StatusCode::OK);
    assert_eq!(gateway_call(&s.http, "/disconnect", id).await, StatusCode::OK);
    wait_until_gone(&s.http, id).await;
    let abandoned = "socketless_disconnects_total{outcome=\"abandoned\"}";
    assert_eq!(s.http.metric(abandoned).await, 1.0);
    let calls = app.seen().len();
    // Attempts at 0, 0.2 and 0.6 s; the next (at 1.4 s) would be past the deadline.
    assert_eq!(calls, 3, "{:?}", app.seen());
    // Nothing retries it later: not the retries, not a sweep, not a late $disconnect's claim.
    let sweep = s.state.sweep_disconnects().await;
    assert_eq!(sweep.sessions, 0);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(app.seen().len(), calls);
    assert_eq!(s.http.metric(abandoned).await, 1.0);
}

#[tokio::test]
async fn the_grace_delays_the_call_and_the_resume_hook_cancels_it() {
    let app = App::start(Mode::FailFirst(0)).await;
    let s = serve(&[upstream(&app), "--disconnect-grace=1s".into()], Arc::new(Unused)).await;
    let (kept, resumed) = ("GrAcE0000000000=", "ReSuMe000000000=");
    for id in [kept, resumed] {
        assert_eq!(gateway_call(&s.http, "/connect", id).await, StatusCode::OK);
    }
    let asked = Instant::now();
    for id in [kept, resumed] {
        assert_eq!(gateway_call(&s.http, "/disconnect", id).await, StatusCode::OK);
    }
    // Answered at once: the app has heard nothing, and the sessions are marked.
    assert!(app.seen().is_empty(), "{:?}", app.seen());
    let marked = lookup(&s.http, kept)
        .await
        .expect("the session is kept during the grace");
    assert!(marked["disconnect"]["leaseUntil"].as_i64().unwrap() > 0, "{marked}");
    assert!(s.state.disconnects().cancel_pending_disconnect(resumed));
    assert!(
        !s.state.disconnects().cancel_pending_disconnect(resumed),
        "cancelled once"
    );

    let seen = app.wait_for(1, T).await;
    assert_eq!(seen[0].connection_id, kept);
    assert!(
        seen[0].at - asked >= Duration::from_secs(1),
        "called before the grace ran out"
    );
    wait_until_gone(&s.http, kept).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(app.seen().len(), 1, "the cancelled one is never called");
    let cancelled = "socketless_disconnects_total{outcome=\"cancelled\"}";
    assert_eq!(s.http.metric(cancelled).await, 1.0);
}

fn dynamodb(moto: &Moto, table: &str) -> Vec<String> {
    vec![
        "--store=dynamodb".into(),
        "--create-table".into(),
        format!("--table={table}"),
        format!("--dynamodb-endpoint={}", moto.endpoint),
    ]
}

#[tokio::test]
async fn disconnects_in_their_grace_are_each_called_once_after_it_unless_cancelled() {
    let app = App::start(Mode::FailFirst(0)).await;
    // A grace long enough that each wave's cancels come well within it on a loaded machine.
    let grace = Duration::from_secs(2);
    let s = serve(&[upstream(&app), "--disconnect-grace=2s".into()], Arc::new(Unused)).await;
    let ids: Vec<String> = (0..200).map(|i| format!("QuEuE{i:010}=")).collect();
    for id in &ids {
        assert_eq!(gateway_call(&s.http, "/connect", id).await, StatusCode::OK);
    }
    // Four waves, due at four different times; a quarter of each cancelled in its grace.
    let mut asked = std::collections::HashMap::new();
    let mut cancelled = Vec::new();
    for wave in ids.chunks(50) {
        for id in wave {
            asked.insert(id.clone(), Instant::now());
            assert_eq!(gateway_call(&s.http, "/disconnect", id).await, StatusCode::OK);
        }
        for id in wave.iter().step_by(4) {
            let cancel = s.state.disconnects().cancel_pending_disconnect(id);
            let waited = asked[id].elapsed();
            assert!(
                cancel || waited >= grace,
                "{id} was {waited:?} into its grace, and not waiting"
            );
            assert!(cancel, "the test's own calls took longer than the grace ({waited:?})");
            cancelled.push(id);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let called = ids.len() - cancelled.len();
    app.wait_for(called, T).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let seen = app.seen();
    assert_eq!(seen.len(), called, "one call each, none for a cancelled one");
    let mut once = std::collections::HashSet::new();
    for call in &seen {
        assert!(
            once.insert(call.connection_id.clone()),
            "{} called twice",
            call.connection_id
        );
        assert!(
            !cancelled.contains(&&call.connection_id),
            "{} was cancelled",
            call.connection_id
        );
        assert!(
            call.at - asked[&call.connection_id] >= grace,
            "{} called before its grace ran out",
            call.connection_id
        );
    }
    let count = |outcome: &str| format!("socketless_disconnects_total{{outcome=\"{outcome}\"}}");
    assert_eq!(s.http.metric(&count("cancelled")).await, cancelled.len() as f64);
    assert_eq!(s.http.metric(&count("delivered")).await, called as f64);
}

#[tokio::test]
async fn a_serve_killed_mid_disconnect_is_retried_by_another_after_the_lease() {
    let moto = Moto::start().await;
    let app = App::start(Mode::HangFirst).await;
    let table = format!("disconnect-{}", free_port());
    let (port, iport) = (free_port(), free_port());
    let mut flags = dynamodb(&moto, &table);
    flags.extend([
        upstream(&app),
        format!("--listen=127.0.0.1:{port}"),
        format!("--internal-listen=127.0.0.1:{iport}"),
        format!("--region={}", socketless::defaults::REGION),
        "--disconnect-grace=0s".into(),
        "--disconnect-lease=4s".into(),
        "--sweep-interval=0s".into(),
    ]);
    let mut killed = Proc::spawn(
        command()
            .arg("serve")
            .args(&flags)
            .env("AWS_ACCESS_KEY_ID", "AKIDTEST")
            .env("AWS_SECRET_ACCESS_KEY", "test-secret")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null()),
    );
    wait_ready(iport).await;
    let id = "KiLlEd000000000=";
    let base = format!("http://127.0.0.1:{port}");
    assert_eq!(post_to(&format!("{base}/connect"), id).await, StatusCode::OK);
    // The disconnect hangs in the app; the process dies in the middle of it. Its claim (and
    // the lease) starts after this instant.
    let before_claim = Instant::now();
    let pending = tokio::spawn(async move { post_to(&format!("{base}/disconnect"), id).await });
    app.wait_for(1, T).await;
    killed.signal("KILL");
    killed.wait_exit(T);
    pending.abort();

    let other = serve(
        &[dynamodb(&moto, &table), vec![upstream(&app)]].concat(),
        Arc::new(Unused),
    )
    .await;
    // While the lease holds, the sweep leaves the session alone.
    let early = other.state.sweep_disconnects().await;
    assert_eq!((early.sessions, early.held, early.claimed), (1, 1, 0), "{early:?}");
    let deadline = Instant::now() + T;
    loop {
        let sweep = other.state.sweep_disconnects().await;
        if sweep.claimed == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "the claim was never taken over: {sweep:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let seen = app.wait_for(2, T).await;
    wait_until_gone(&other.http, id).await;
    let want = disconnect_id(id, CONNECTED_AT);
    assert!(seen.iter().all(|s| s.disconnect_id == want), "{seen:?}");
    assert!(
        seen[1].at - before_claim >= Duration::from_secs(4),
        "taken over before the lease ran out"
    );
    let expired = "socketless_sweep_checks_total{outcome=\"lease_expired\"}";
    assert_eq!(other.http.metric(expired).await, 1.0);
}

/// Records every disconnect the built-in handler gets.
#[derive(Default)]
struct Recorder {
    disconnects: Mutex<Vec<String>>,
}

impl MessageHandler for Recorder {
    fn on_message<'a>(&'a self, _: &'a RequestContext, _: Bytes) -> BoxFuture<'a, Result<Option<Bytes>, Rejection>> {
        Box::pin(async { Ok(None) })
    }

    fn on_disconnect<'a>(&'a self, ctx: &'a RequestContext) -> BoxFuture<'a, ()> {
        let id = ctx.disconnect_id.as_deref().unwrap_or_default().to_string();
        Box::pin(async move { self.disconnects.lock().unwrap().push(id) })
    }
}

#[tokio::test]
async fn two_sweepers_deliver_one_disconnect_per_gone_session() {
    const SESSIONS: usize = 60;
    // moto answers one request at a time here (see common::moto), so its conditional writes
    // are atomic, as DynamoDB's are.
    let moto = Moto::start().await;
    let gateway = FakeConnections::start().await;
    let table = format!("sweep-{}", free_port());
    let mut flags = dynamodb(&moto, &table);
    flags.extend([
        format!("--push-endpoint={}", gateway.endpoint()),
        "--disconnect-grace=0s".into(),
        "--sweep-min-age=0s".into(),
    ]);
    let (ra, rb) = (Arc::new(Recorder::default()), Arc::new(Recorder::default()));
    let a = serve(&flags, ra.clone()).await;
    let b = serve(&flags, rb.clone()).await;
    let ids: Vec<String> = (0..SESSIONS).map(|i| format!("SwEeP{i:010}=")).collect();
    for id in &ids {
        assert_eq!(gateway_call(&a.http, "/connect", id).await, StatusCode::OK);
    }
    // Two thirds are gone without a $disconnect; the rest are alive.
    for id in &ids[..SESSIONS * 2 / 3] {
        gateway.mark_gone(id);
    }
    // A sweep with the default --sweep-min-age (10 s) leaves sessions this young alone: their
    // handshake could still be under way.
    let cautious = serve(&dynamodb(&moto, &table), Arc::new(Recorder::default())).await;
    let early = cautious.state.sweep_disconnects().await;
    assert_eq!(
        (early.young, early.checked, early.claimed),
        (SESSIONS, 0, 0),
        "{early:?}"
    );
    let (sa, sb) = tokio::join!(a.state.sweep_disconnects(), b.state.sweep_disconnects());
    assert_eq!(sa.claimed + sb.claimed, SESSIONS * 2 / 3, "{sa:?} {sb:?}");
    // With no grace, a sweep returns once its claims' first attempts are done.
    let mut delivered: Vec<String> = ra.disconnects.lock().unwrap().clone();
    delivered.extend(rb.disconnects.lock().unwrap().iter().cloned());
    let mut unique = delivered.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(delivered.len(), SESSIONS * 2 / 3, "one /disconnect per gone session");
    assert_eq!(unique.len(), delivered.len());
    let mut want: Vec<String> = ids[..SESSIONS * 2 / 3]
        .iter()
        .map(|id| disconnect_id(id, CONNECTED_AT))
        .collect();
    want.sort();
    assert_eq!(unique, want);
    // The live third is still there; the next sweep finds nothing more to do.
    let again = a.state.sweep_disconnects().await;
    assert_eq!((again.sessions, again.claimed), (SESSIONS / 3, 0), "{again:?}");
}

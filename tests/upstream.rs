//! Upstream mode: `serve --upstream` hands each connect, message and disconnect to an HTTP app
//! (here a recording fake) with the same `x-socketless-*` headers, keeps the sessions itself,
//! maps the app's answers, survives the app going down without losing a session, and stays
//! unready until the app has answered once. `dev --upstream`, as a process, accepts no client
//! until the app answers, and gives up after `--upstream-wait`.

mod common;

use std::time::Duration;

use common::gw::{Answer, FakeBackend};
use common::*;
use http::StatusCode;

async fn serve_in_front_of(app: &FakeBackend, extra: &[&str]) -> Backend {
    let mut flags = vec![
        "--listen=127.0.0.1:0".to_string(),
        "--internal-listen=127.0.0.1:0".to_string(),
        format!("--region={}", socketless::defaults::REGION),
        "--shutdown-delay=0s".to_string(),
        format!("--upstream={}", app.uri()),
        "--upstream-timeout=1s".to_string(),
    ];
    flags.extend(extra.iter().map(|s| s.to_string()));
    let backend = start(socketless::serve::ServeArgs::from_flags(flags).expect("flags")).await;
    // Ready once the app has answered its health path.
    within(async {
        while get(&backend.internal_url("/readyz")).await.0 != StatusCode::OK {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    backend
}

async fn session(backend: &Backend, id: &str) -> StatusCode {
    get(&backend.internal_url(&format!("/v1/connections/{}", id.replace('=', "%3D"))))
        .await
        .0
}

#[tokio::test]
async fn the_app_gets_every_event_with_the_context_and_its_answers_are_the_replies() {
    let app = FakeBackend::start().await;
    let backend = serve_in_front_of(&app, &["--shared-secret=upstream-shared-secret-1"]).await;
    let secret = ("x-socketless-secret", "upstream-shared-secret-1".to_string());
    let post = |path: &'static str, id: &'static str, body: &'static str| {
        let mut headers = ctx(id);
        headers.push(secret.clone());
        let url = backend.url(path);
        async move {
            let refs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let (s, _, b) = send("POST", &url, &refs, body).await;
            (s, b)
        }
    };

    assert_eq!(post("/connect", "AAAAAAAAAAAAAAA=", "").await.0, StatusCode::OK);
    let seen = app.wait_for("/connect", 1).await;
    assert_eq!(seen[0].headers["x-socketless-connection-id"], "AAAAAAAAAAAAAAA=");
    assert_eq!(seen[0].headers["x-socketless-user-agent"], "test-agent");
    assert!(
        seen[0].headers.get("x-socketless-secret").is_none(),
        "the secret stays with serve"
    );
    assert_eq!(session(&backend, "AAAAAAAAAAAAAAA=").await, StatusCode::OK);

    // The frame reaches the app unchanged; its 2xx body is the reply (the fake echoes).
    let (status, reply) = post("/message", "AAAAAAAAAAAAAAA=", "{\"action\":\"x\",\"n\":1}").await;
    assert_eq!((status, reply.as_str()), (StatusCode::OK, "{\"action\":\"x\",\"n\":1}"));
    assert_eq!(app.wait_for("/message", 1).await[0].body, "{\"action\":\"x\",\"n\":1}");

    // An empty 2xx body sends nothing; an error status and body come back as they are.
    app.answer(
        "/message",
        Answer {
            body: Some(String::new()),
            ..Default::default()
        },
    );
    let (status, reply) = post("/message", "AAAAAAAAAAAAAAA=", "quiet").await;
    assert_eq!((status, reply.as_str()), (StatusCode::OK, ""));
    app.answer(
        "/message",
        Answer {
            status: 422,
            body: Some("no such command".into()),
            ..Default::default()
        },
    );
    let (status, reply) = post("/message", "AAAAAAAAAAAAAAA=", "bogus").await;
    assert_eq!((status.as_u16(), reply.as_str()), (422, "no such command"));

    // A refused connect: the app's status and body, and no session.
    app.answer(
        "/connect",
        Answer {
            status: 403,
            body: Some("not you".into()),
            ..Default::default()
        },
    );
    let (status, body) = post("/connect", "BBBBBBBBBBBBBBB=", "").await;
    assert_eq!((status.as_u16(), body.as_str()), (403, "not you"));
    assert_eq!(session(&backend, "BBBBBBBBBBBBBBB=").await, StatusCode::NOT_FOUND);

    // Disconnect: the app is told, then (once it took the call) the session is deleted.
    assert_eq!(post("/disconnect", "AAAAAAAAAAAAAAA=", "").await.0, StatusCode::OK);
    app.wait_for("/disconnect", 1).await;
    // The app's answer and the delete race the check: the session must go, promptly.
    within(async {
        while session(&backend, "AAAAAAAAAAAAAAA=").await != StatusCode::NOT_FOUND {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn an_app_that_is_down_or_slow_costs_no_session_and_is_counted() {
    let app = FakeBackend::start().await;
    let backend = serve_in_front_of(&app, &[]).await;
    assert_eq!(
        call(&backend, "/connect", "CCCCCCCCCCCCCCC=", "").await.0,
        StatusCode::OK
    );

    app.answer(
        "/message",
        Answer {
            delay: Duration::from_secs(3),
            ..Default::default()
        },
    );
    let (status, body) = call(&backend, "/message", "CCCCCCCCCCCCCCC=", "slow").await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");

    app.stop();
    let (status, body) = call(&backend, "/message", "CCCCCCCCCCCCCCC=", "anyone?").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(body.contains("could not be reached"), "{body}");
    // The session outlives the outage.
    assert_eq!(session(&backend, "CCCCCCCCCCCCCCC=").await, StatusCode::OK);
    let (_, metrics) = get(&backend.internal_url("/metrics")).await;
    assert_eq!(
        metric_value(
            &metrics,
            r#"socketless_upstream_calls_total{event="message",outcome="unreachable"}"#
        ),
        1.0
    );
    assert_eq!(
        metric_value(
            &metrics,
            r#"socketless_upstream_calls_total{event="message",outcome="timeout"}"#
        ),
        1.0
    );
}

#[tokio::test]
async fn not_ready_until_the_app_answers() {
    let port = free_port();
    let flags = [
        "--listen=127.0.0.1:0".to_string(),
        "--internal-listen=127.0.0.1:0".to_string(),
        format!("--region={}", socketless::defaults::REGION),
        format!("--upstream=http://127.0.0.1:{port}"),
    ];
    let backend = start(socketless::serve::ServeArgs::from_flags(flags).unwrap()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        get(&backend.internal_url("/readyz")).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    let _app = FakeBackend::start_on(&format!("127.0.0.1:{port}")).await;
    within(async {
        while get(&backend.internal_url("/readyz")).await.0 != StatusCode::OK {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn in_async_mode_the_apps_answer_is_pushed() {
    let app = FakeBackend::start().await;
    let connections = FakeConnections::start().await;
    let backend = serve_in_front_of(
        &app,
        &[
            "--reply-mode=async",
            &format!("--push-endpoint={}", connections.endpoint()),
        ],
    )
    .await;
    assert_eq!(
        call(&backend, "/connect", "DDDDDDDDDDDDDDD=", "").await.0,
        StatusCode::OK
    );
    let (status, body) = call(&backend, "/message", "DDDDDDDDDDDDDDD=", "push me").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, ""));
    let calls = connections.connections_calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].body, "push me");
}

/// `dev --upstream` with the gateway on `gw_port`, its stdout and stderr in files under `dir`.
fn dev_in_front_of(app_port: u16, gw_port: u16, dir: &std::path::Path, extra: &[&str]) -> proc::Proc {
    let out = std::fs::File::create(dir.join("stdout")).unwrap();
    let err = std::fs::File::create(dir.join("stderr")).unwrap();
    proc::Proc::spawn(
        proc::command()
            .args([
                "dev",
                &format!("--listen=127.0.0.1:{gw_port}"),
                "--internal-listen=127.0.0.1:0",
                &format!("--upstream=http://127.0.0.1:{app_port}"),
            ])
            .args(extra)
            .env_remove("SOCKETLESS_INTERNAL_TOKEN")
            .stdout(out)
            .stderr(err),
    )
}

fn read(dir: &std::path::Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_default()
}

/// How one handshake attempt ended.
#[derive(Debug, PartialEq, Eq)]
enum Attempt {
    /// Nothing listens yet: the TCP connection is refused.
    Refused,
    /// The upgrade was answered with this HTTP status.
    Status(u16),
    Open,
    Other(String),
}

#[tokio::test]
async fn dev_accepts_clients_only_once_the_app_answers() {
    let dir = tempdir("dev-upstream-wait");
    let (app_port, gw_port) = (free_port(), free_port());
    let _dev = dev_in_front_of(app_port, gw_port, &dir, &[]);
    let url = format!("ws://127.0.0.1:{gw_port}/dev");

    // A client that keeps trying from the start, every 50 ms, until one handshake succeeds.
    let client = tokio::spawn({
        let url = url.clone();
        async move {
            let mut attempts = Vec::new();
            for _ in 0..400 {
                let attempt =
                    match tokio::time::timeout(Duration::from_secs(10), tokio_tungstenite::connect_async(url.as_str()))
                        .await
                    {
                        Ok(Ok((ws, _))) => {
                            attempts.push(Attempt::Open);
                            return (attempts, Some(ws));
                        }
                        Ok(Err(tokio_tungstenite::tungstenite::Error::Http(resp))) => {
                            Attempt::Status(resp.status().as_u16())
                        }
                        Ok(Err(tokio_tungstenite::tungstenite::Error::Io(e)))
                            if e.kind() == std::io::ErrorKind::ConnectionRefused =>
                        {
                            Attempt::Refused
                        }
                        Ok(Err(e)) => Attempt::Other(e.to_string()),
                        Err(_) => Attempt::Other("no answer within 10 s".into()),
                    };
                attempts.push(attempt);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            (attempts, None)
        }
    });

    // The app starts 2 s after `dev`; until then `dev` waits and says so, and prints no URL.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = read(&dir, "stdout");
    assert!(
        !before.contains("ws://"),
        "the URL was printed before the app answered: {before}"
    );
    let waiting = read(&dir, "stderr");
    assert!(
        waiting.contains(&format!("waiting for the app at http://127.0.0.1:{app_port}/healthz")),
        "{waiting}"
    );
    let app = FakeBackend::start_on(&format!("127.0.0.1:{app_port}")).await;

    let (attempts, ws) = within(client).await.unwrap();
    let mut ws = ws.unwrap_or_else(|| panic!("no handshake succeeded: {attempts:?}"));
    assert!(attempts.len() > 1, "the client tried while dev waited: {attempts:?}");
    let (last, earlier) = attempts.split_last().unwrap();
    assert_eq!(*last, Attempt::Open);
    assert!(
        earlier.iter().all(|a| *a == Attempt::Refused),
        "every attempt before the app answered was refused at the TCP level, none got a status: {attempts:?}"
    );
    // The first accepted client works end to end: the app's /connect ran, and it echoes.
    assert_eq!(app.seen("/connect").len(), 1);
    common::gw::send_text(&mut ws, "after the wait").await;
    assert_eq!(common::gw::next_text(&mut ws).await, "after the wait");
    let printed = read(&dir, "stdout");
    assert!(printed.contains(&format!("wscat -c {url}")), "{printed}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn dev_gives_up_on_an_app_that_never_answers() {
    let dir = tempdir("dev-upstream-gives-up");
    let (app_port, gw_port) = (free_port(), free_port());
    let mut dev = dev_in_front_of(app_port, gw_port, &dir, &["--upstream-wait=1s"]);
    let status = dev.wait_exit(Duration::from_secs(20));
    assert!(!status.success(), "{status:?}");
    let err = read(&dir, "stderr");
    assert!(
        err.contains(&format!(
            "the app at http://127.0.0.1:{app_port}/healthz did not answer within 1 s"
        )),
        "{err}"
    );
    assert!(err.contains("--upstream-wait"), "{err}");
    assert!(!read(&dir, "stdout").contains("ws://"));
    // Its port never listened.
    assert!(std::net::TcpStream::connect(("127.0.0.1", gw_port)).is_err());
    let _ = std::fs::remove_dir_all(&dir);
}

/// A fresh directory for one test's files.
fn tempdir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("socketless-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

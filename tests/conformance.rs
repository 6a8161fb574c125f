//! The conformance backend behind `socketless dev --conformance`, in process: the mapped
//! `$connect` query parameters reach it (`?tag=`, `?refuse=`), `whoami` reports the headers of
//! the call and of `$connect`, and the template's custom route is there. The kit itself, as a
//! process with an empty environment: an unsigned or local target needs no credentials, and a
//! signed one without credentials fails once, in one line that names the variables to set.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use socketless::config::FromFlags;
use socketless::conformance::backend::Conformance;
use socketless::dev::{self, DevArgs};
use socketless::lifecycle::Lifecycle;
use tokio_tungstenite::tungstenite::{Error, Message};

const T: Duration = Duration::from_secs(20);

async fn start() -> (String, Lifecycle) {
    let args = DevArgs::from_flags([
        "--listen=127.0.0.1:0",
        "--internal-listen=127.0.0.1:0",
        "--stage=conf",
        "--conformance",
        "--integration-timeout=1s",
    ])
    .expect("dev flags parse");
    let config = args.validate().expect("valid dev flags");
    let lifecycle = Lifecycle::new();
    let started = dev::start(config, Arc::new(Conformance::new()), lifecycle.clone())
        .await
        .expect("dev starts");
    tokio::spawn(started.run);
    lifecycle.set_ready();
    (started.url, lifecycle)
}

async fn ask(url: &str, msg: Value) -> Value {
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.expect("connects");
    ws.send(Message::text(msg.to_string())).await.expect("sends");
    let reply = loop {
        match tokio::time::timeout(T, ws.next()).await.expect("a reply in time") {
            Some(Ok(Message::Text(t))) => break t.to_string(),
            Some(Ok(_)) => continue,
            other => panic!("no reply: {other:?}"),
        }
    };
    let _ = ws.close(None).await;
    serde_json::from_str(&reply).expect("JSON reply")
}

#[tokio::test]
async fn whoami_reports_mapped_headers_and_the_route() {
    let (url, lifecycle) = start().await;
    let me = ask(
        &format!("{url}?tag=t-123"),
        json!({"action": "conformance", "op": "whoami"}),
    )
    .await;
    assert_eq!(me["routeKey"], "conformance", "{me}");
    assert_eq!(me["connectHeaders"]["x-socketless-conformance-tag"], "t-123", "{me}");
    assert_eq!(me["connectHeaders"]["x-socketless-route-key"], "$connect", "{me}");
    assert!(me["headers"].get("x-socketless-conformance-tag").is_none(), "{me}");
    assert_eq!(me["headers"]["x-socketless-secret"], "(redacted)", "{me}");
    let other = ask(&url, json!({"action": "nothing", "op": "whoami"})).await;
    assert_eq!(other["routeKey"], "$default");
    lifecycle.stop_accepting();
}

#[tokio::test]
async fn refuse_passes_the_status_through() {
    let (url, lifecycle) = start().await;
    for status in [401u16, 403, 429] {
        match tokio_tungstenite::connect_async(format!("{url}?refuse={status}")).await {
            Err(Error::Http(resp)) => assert_eq!(resp.status().as_u16(), status),
            other => panic!("?refuse={status}: {other:?}"),
        }
    }
    lifecycle.stop_accepting();
}

/// Runs the kit as a process with only `env` in its environment; (exit code, stdout, stderr).
async fn kit(args: Vec<String>, env: Vec<(&'static str, String)>) -> (Option<i32>, String, String) {
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_socketless"))
            .arg("conformance")
            .args(args)
            .env_clear()
            .envs(env)
            .output()
            .expect("the kit runs")
    })
    .await
    .expect("the kit's thread");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn target(url: &str) -> Vec<String> {
    let connections = url.replacen("ws://", "http://", 1);
    [
        "--url",
        url,
        "--connections",
        &connections,
        "--integration-timeout",
        "1s",
        "--wait",
        "5s",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[tokio::test]
async fn an_unsigned_target_needs_no_credentials() {
    let (url, lifecycle) = start().await;
    let mut args = target(&url);
    args.extend([
        "--unsigned".to_string(),
        "--only".to_string(),
        "connections-".to_string(),
    ]);
    let (code, out, err) = kit(args, vec![]).await;
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(out.ends_with("7 passed, 0 failed\n"), "{out}");
    assert!(
        out.contains("not-run connections-sigv4-wrong-key-403: --unsigned"),
        "{out}"
    );
    assert_eq!(err, "", "nothing to say about credentials");
    lifecycle.stop_accepting();
}

#[tokio::test]
async fn a_local_target_without_keys_is_signed_with_a_placeholder() {
    let (url, lifecycle) = start().await;
    let mut args = target(&url);
    args.extend(["--only".to_string(), "connections-get".to_string()]);
    let (code, out, err) = kit(args, vec![]).await;
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(out.ends_with("1 passed, 0 failed\n"), "{out}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("placeholder key"), "{err}");
    lifecycle.stop_accepting();
}

#[tokio::test]
async fn a_signed_target_without_credentials_fails_once_in_one_line() {
    let home = std::env::temp_dir().join(format!("socketless-kit-home-{}", std::process::id()));
    std::fs::create_dir_all(&home).unwrap();
    let api = "abc123.execute-api.us-east-1.amazonaws.com/prod";
    let args = vec![
        "--url".to_string(),
        format!("wss://{api}"),
        "--connections".to_string(),
        format!("https://{api}"),
        "--region".to_string(),
        "us-east-1".to_string(),
    ];
    // No keys, no profile files, and no instance metadata (this machine has none to ask).
    let env = vec![
        ("HOME", home.display().to_string()),
        ("AWS_EC2_METADATA_DISABLED", "true".to_string()),
    ];
    let (code, out, err) = kit(args, env).await;
    let _ = std::fs::remove_dir_all(&home);
    assert_ne!(code, Some(0), "{out}\n{err}");
    assert_eq!(out, "", "no case ran");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    for variable in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "--unsigned"] {
        assert!(err.contains(variable), "{variable}: {err}");
    }
}

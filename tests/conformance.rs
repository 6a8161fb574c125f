//! The conformance backend behind `socketless dev --conformance`, in process: the mapped
//! `$connect` query parameters reach it (`?tag=`, `?refuse=`), `whoami` reports the headers of
//! the call and of `$connect`, and the template's custom route is there.

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

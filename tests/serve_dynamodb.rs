//! The DynamoDB session store against a moto server this test starts: conditional connect,
//! exists-or-create, delete, the TTL attribute, the principal and attributes a connect stores,
//! and the cache measured in DynamoDB calls.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::*;
use http::StatusCode;
use socketless::handler::{Attributes, BoxFuture, MessageHandler, Rejection, RequestContext};

async fn backend(moto: &Moto) -> Backend {
    backend_with(moto, |_| {}).await
}

/// `ServeArgs` for a fresh table in `moto`, adjusted by `tweak`.
fn dynamodb_args(moto: &Moto, tweak: impl FnOnce(&mut socketless::serve::ServeArgs)) -> socketless::serve::ServeArgs {
    let mut a = args();
    a.store = "dynamodb".into();
    a.table = format!("sessions-{}", free_port());
    a.dynamodb_endpoint = Some(moto.endpoint.clone());
    a.create_table = true;
    tweak(&mut a);
    a
}

/// A backend on a fresh table in `moto`, with settings adjusted by `tweak`.
async fn backend_with(moto: &Moto, tweak: impl FnOnce(&mut socketless::serve::ServeArgs)) -> Backend {
    start(dynamodb_args(moto, tweak)).await
}

async fn session(b: &Backend, id: &str) -> Option<serde_json::Value> {
    let (status, body) = get(&b.internal_url(&format!("/v1/connections/{id}"))).await;
    match status {
        StatusCode::OK => Some(serde_json::from_str(&body).unwrap()),
        StatusCode::NOT_FOUND => None,
        other => panic!("unexpected {other}: {body}"),
    }
}

async fn ddb_calls(b: &Backend, op: &str) -> f64 {
    let (_, text) = get(&b.internal_url("/metrics")).await;
    metric_sum(
        &text,
        "socketless_dynamodb_calls_total",
        &[&format!("operation=\"{op}\"")],
    )
}

#[tokio::test]
async fn conditional_connect_keeps_the_first_session() {
    let moto = Moto::start().await;
    let b = backend(&moto).await;
    let id = "CoNnEcT00000000=";
    let (status, _, _) = send(
        "POST",
        &b.url("/connect"),
        &[
            ("x-socketless-connection-id", id),
            ("x-socketless-connected-at", "1700000000000"),
            ("x-socketless-source-ip", "192.0.2.1"),
            ("x-socketless-user-agent", "first"),
            ("x-socketless-domain-name", "abc.execute-api.us-east-1.amazonaws.com"),
            ("x-socketless-stage", "prod"),
        ],
        "",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = send(
        "POST",
        &b.url("/connect"),
        &[
            ("x-socketless-connection-id", id),
            ("x-socketless-user-agent", "second"),
        ],
        "",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "a duplicate connect is not an error");
    let s = session(&b, id).await.expect("item exists");
    assert_eq!(
        s["userAgent"], "first",
        "the duplicate connect must not clobber the item"
    );
    assert_eq!(s["connectedAt"], 1_700_000_000_000i64);
    assert_eq!(s["domain"], "abc.execute-api.us-east-1.amazonaws.com");
    assert_eq!(s["stage"], "prod");
    assert_eq!(s["sourceIp"], "192.0.2.1");
    // TTL attribute: epoch seconds, a little past API Gateway's two-hour limit.
    assert_eq!(s["expiresAt"], 1_700_000_000i64 + 2 * 3600 + 15 * 60);
    let text = get(&b.internal_url("/metrics")).await.1;
    assert_eq!(
        metric_value(
            &text,
            "socketless_dynamodb_calls_total{operation=\"PutItem\",outcome=\"condition_failed\"}"
        ),
        1.0
    );
}

#[tokio::test]
async fn message_creates_a_missing_session_and_disconnect_deletes_it() {
    let moto = Moto::start().await;
    let b = backend(&moto).await;
    let id = "NoCoNnEcT000000=";
    assert!(session(&b, id).await.is_none());
    let (status, body) = call(&b, "/message", id, "hi").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "hi"));
    let s = session(&b, id).await.expect("created by the message");
    assert_eq!(s["messageCount"], 1);
    assert_eq!(s["sourceIp"], "192.0.2.1");
    let ttl = s["expiresAt"].as_i64().unwrap();
    let connected = s["connectedAt"].as_i64().unwrap() / 1000;
    assert_eq!(ttl - connected, 8100);

    let (status, _) = call(&b, "/disconnect", id, "").await;
    assert_eq!(status, StatusCode::OK);
    assert!(session(&b, id).await.is_none(), "disconnect deletes the item");
    // Deleting twice is fine (a retried $disconnect).
    let (status, _) = call(&b, "/disconnect", id, "").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn cache_keeps_steady_state_calls_under_a_tenth_per_message() {
    let moto = Moto::start().await;
    let b = backend(&moto).await;
    let connections = 10;
    let per_connection = 50;
    for c in 0..connections {
        call(&b, "/connect", &format!("steady{c:010}"), "").await;
    }
    let before = ddb_calls(&b, "").await;
    for m in 0..per_connection {
        for c in 0..connections {
            let (status, _) = call(&b, "/message", &format!("steady{c:010}"), &m.to_string()).await;
            assert_eq!(status, StatusCode::OK);
        }
    }
    let after = ddb_calls(&b, "").await;
    let messages = (connections * per_connection) as f64;
    let per_message = (after - before) / messages;
    println!(
        "DynamoDB calls per steady-state message: {per_message:.4} ({} calls / {messages} messages)",
        after - before
    );
    assert!(per_message <= 0.1, "{per_message} DynamoDB calls per message");
    // Sessions connected on this pod are cached: no call at all for their messages.
    assert_eq!(after - before, 0.0);
}

#[tokio::test]
async fn a_pod_that_never_saw_the_connect_writes_once_then_serves_from_cache() {
    let moto = Moto::start().await;
    let b = backend(&moto).await;
    let id = "OtHeRpOd0000000=";
    for i in 0..20 {
        call(&b, "/message", id, &i.to_string()).await;
    }
    assert_eq!(ddb_calls(&b, "UpdateItem").await, 1.0);
    let text = get(&b.internal_url("/metrics")).await.1;
    assert_eq!(
        metric_value(&text, "socketless_session_cache_lookups_total{result=\"miss\"}"),
        1.0
    );
    assert_eq!(
        metric_value(&text, "socketless_session_cache_lookups_total{result=\"hit\"}"),
        19.0
    );
}

#[tokio::test]
async fn sync_interval_writes_accumulated_counts() {
    let moto = Moto::start().await;
    let b = backend_with(&moto, |a| a.sync_interval = "200ms".into()).await;
    let id = "SyNc00000000000=";
    for i in 0..5 {
        call(&b, "/message", id, &i.to_string()).await;
    }
    // Only the first message wrote so far.
    assert_eq!(session(&b, id).await.unwrap()["messageCount"], 1);
    tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    call(&b, "/message", id, "later").await;
    let s = session(&b, id).await.unwrap();
    assert_eq!(
        s["messageCount"], 6,
        "the pending four plus this one were added together"
    );
}

#[tokio::test]
async fn store_outage_answers_503_and_stays_ready() {
    let moto = Moto::start().await;
    let b = backend_with(&moto, |a| a.aws_timeout = "1s".into()).await;
    drop(moto); // DynamoDB goes away.
    let started = std::time::Instant::now();
    let (status, body) = call(&b, "/message", "OuTaGe000000000=", "hi").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(
        body, r#"{"error":"session store unavailable"}"#,
        "no internal detail leaks"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    // Liveness and readiness are not tied to the shared dependency.
    assert_eq!(get(&b.internal_url("/readyz")).await.0, StatusCode::OK);
    assert_eq!(get(&b.internal_url("/healthz")).await.0, StatusCode::OK);
}

/// Tags a session with its principal's tenant at connect; answers messages with what it sees.
struct Tenant;

impl MessageHandler for Tenant {
    fn on_connect_with_attributes<'a>(
        &'a self,
        ctx: &'a RequestContext,
    ) -> BoxFuture<'a, Result<Attributes, Rejection>> {
        let principal = ctx.principal_id.as_deref().unwrap_or("-");
        let attributes = [("tenant", format!("t-{principal}"))].into_iter().collect();
        Box::pin(async move { Ok(attributes) })
    }

    fn on_message<'a>(
        &'a self,
        ctx: &'a RequestContext,
        _body: Bytes,
    ) -> BoxFuture<'a, Result<Option<Bytes>, Rejection>> {
        let tenant = ctx.attributes.get("tenant").unwrap_or("-");
        let seen = format!("{}|{tenant}", ctx.principal_id.as_deref().unwrap_or("-"));
        Box::pin(async move { Ok(Some(Bytes::from(seen))) })
    }
}

async fn post_as(b: &Backend, path: &str, id: &str, principal: &str) -> (StatusCode, String) {
    let mut headers = ctx(id);
    headers.push(("x-socketless-principal-id", principal.to_string()));
    let refs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (status, _, body) = send("POST", &b.url(path), &refs, "m").await;
    (status, body)
}

#[tokio::test]
async fn the_principal_and_attributes_round_trip_through_the_item() {
    let moto = Moto::start().await;
    let a = dynamodb_args(&moto, |a| a.aws_timeout = "10s".into());
    let table = a.table.clone();
    let first = start_with(a, Arc::new(Tenant)).await;
    let id = "IdEnTiTy0000000=";
    assert_eq!(post_as(&first, "/connect", id, "alice").await.0, StatusCode::OK);
    // A duplicate connect keeps the first item, and this pod's cache keeps its identity.
    assert_eq!(post_as(&first, "/connect", id, "mallory").await.0, StatusCode::OK);
    let s = session(&first, id).await.expect("the item");
    assert_eq!(s["principalId"], "alice");
    assert_eq!(s["attributes"], serde_json::json!({"tenant": "t-alice"}));
    assert_eq!(
        post_as(&first, "/message", id, "mallory").await,
        (StatusCode::OK, "alice|t-alice".to_string())
    );

    // Another pod on the same table learns the identity with the one write its miss makes.
    let second = start_with(
        dynamodb_args(&moto, |a| {
            a.table = table;
            a.aws_timeout = "10s".into();
        }),
        Arc::new(Tenant),
    )
    .await;
    for _ in 0..5 {
        assert_eq!(
            post_as(&second, "/message", id, "mallory").await,
            (StatusCode::OK, "alice|t-alice".to_string())
        );
    }
    assert_eq!(ddb_calls(&second, "UpdateItem").await, 1.0);
    assert_eq!(ddb_calls(&second, "GetItem").await, 0.0);

    // A session without a principal or attributes has neither attribute on its item.
    let bare = "BaRe00000000000=";
    assert_eq!(call(&first, "/message", bare, "x").await.0, StatusCode::OK);
    let s = session(&first, bare).await.expect("the item");
    assert_eq!(s["principalId"], serde_json::Value::Null);
    assert_eq!(s["attributes"], serde_json::json!({}));
}

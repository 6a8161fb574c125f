//! Resume by key on the DynamoDB store (a moto server this test starts), through two pairs of a
//! `socketless gateway` and a `serve` on one table: a connection that drops on one pod and
//! resumes on the other keeps its session, and the first pod's pending `/disconnect` is
//! cancelled by what it re-reads in the table; the record lives in the sessions table under
//! `session#<id>`, and no listing, count or scan reader sees it.

mod common;

use std::time::Duration;

use common::gw::{connect, next_text, send_text};
use common::resume::*;
use common::*;
use http::StatusCode;

fn store(moto: &Moto, table: &str) -> Vec<String> {
    vec![
        "--store=dynamodb".into(),
        format!("--table={table}"),
        format!("--dynamodb-endpoint={}", moto.endpoint),
        "--create-table".into(),
        "--push-batch=off".into(),
    ]
}

fn db(moto: &Moto) -> aws_sdk_dynamodb::Client {
    let conf = aws_sdk_dynamodb::config::Builder::from(&sdk(Duration::from_secs(5)))
        .endpoint_url(&moto.endpoint)
        .build();
    aws_sdk_dynamodb::Client::from_conf(conf)
}

#[tokio::test]
async fn a_session_dropped_on_one_pod_resumes_on_the_other_without_a_disconnect() {
    let moto = Moto::start().await;
    let table = format!("resume-{}", free_port());
    let s = stack(2, &store(&moto, &table), &["--resume-window=3s"]).await;
    let id = socketless::backend::resume::session_id(KEY);

    let mut ws1 = connect(&s.url_on(0, KEY)).await;
    let first = s.app.wait_for("/connect", 1).await.remove(0);
    let c1 = first.header("x-socketless-connection-id").unwrap();
    send_text(&mut ws1, "hi").await;
    assert_eq!(next_text(&mut ws1).await, format!("session={id} tenant=acme"));

    // The record is an item of the sessions table under a key no connection id can have, and
    // the readers of the table never list it.
    let item = db(&moto)
        .get_item()
        .table_name(&table)
        .key(
            "connectionId",
            aws_sdk_dynamodb::types::AttributeValue::S(format!("session#{id}")),
        )
        .consistent_read(true)
        .send()
        .await
        .unwrap();
    let item = item.item().expect("the record exists");
    assert!(item.contains_key("expiresAt"), "TTL attribute");
    assert!(
        item.values().all(|v| v.as_s().map_or(true, |s| s != KEY)),
        "the key is never stored"
    );
    let (_, count) = get(&s.serves[0].internal_url("/v1/connections/count")).await;
    assert!(count.contains("\"count\":1"), "{count}");
    let (_, list) = get(&s.serves[0].internal_url("/v1/connections")).await;
    assert!(!list.contains("session#"), "{list}");

    // Dropped on pod 0 (its /disconnect waits the window there), pushed to through pod 1.
    drop(ws1);
    s.wait_detached(&id).await;
    let (status, v) = s.push_on(1, &id, "gap").await;
    assert_eq!(
        (status, v["buffered"].as_bool()),
        (StatusCode::ACCEPTED, Some(true)),
        "{v}"
    );

    // Resumed through pod 1.
    let mut ws2 = connect(&s.url_on(1, KEY)).await;
    let second = s.app.wait_for("/connect", 2).await.remove(1);
    assert_eq!(second.header("x-socketless-resumed").as_deref(), Some("true"));
    assert_eq!(second.header("x-socketless-recovered").as_deref(), Some("true"));
    assert_eq!(second.header("x-socketless-session-id"), Some(id.clone()));
    assert_ne!(second.header("x-socketless-connection-id"), Some(c1));
    assert_eq!(next_text(&mut ws2).await, "gap");
    send_text(&mut ws2, "again").await;
    assert_eq!(next_text(&mut ws2).await, format!("session={id} tenant=acme"));

    // Pod 0's task wakes after the window, re-reads the record, and calls no one.
    tokio::time::sleep(Duration::from_millis(4000)).await;
    assert!(s.app.calls("/disconnect").is_empty());
    assert_eq!(
        s.serves[0]
            .metric("socketless_disconnects_total{outcome=\"resumed\"}")
            .await,
        1.0
    );
    assert_eq!(s.push_on(0, &id, "live").await.0, StatusCode::OK);
    assert_eq!(next_text(&mut ws2).await, "live");

    // Its end: one /disconnect, then the record is gone from the table.
    drop(ws2);
    let ended = s.app.wait_for("/disconnect", 1).await;
    assert_eq!(ended[0].header("x-socketless-session-id"), Some(id.clone()));
    assert_eq!(s.session(&id).await.0, StatusCode::NOT_FOUND);
    let gone = db(&moto)
        .get_item()
        .table_name(&table)
        .key(
            "connectionId",
            aws_sdk_dynamodb::types::AttributeValue::S(format!("session#{id}")),
        )
        .consistent_read(true)
        .send()
        .await
        .unwrap();
    assert!(gone.item().is_none());
}

#[tokio::test]
async fn two_pods_racing_on_one_key_end_with_one_owner() {
    let moto = Moto::start().await;
    let table = format!("resume-race-{}", free_port());
    let s = stack(2, &store(&moto, &table), &["--resume-window=3s"]).await;
    let id = socketless::backend::resume::session_id(KEY);
    // Twenty connects of one key, alternating pods, ten at a time.
    let urls: Vec<String> = (0..20).map(|i| s.url_on(i % 2, KEY)).collect();
    let mut held = Vec::new();
    for chunk in urls.chunks(10) {
        let opened =
            futures_util::future::join_all(chunk.iter().map(|u| tokio_tungstenite::connect_async(u.clone()))).await;
        held.extend(opened.into_iter().filter_map(Result::ok).map(|(ws, _)| ws));
    }
    assert!(held.len() >= 18, "{} of 20 handshakes", held.len());
    let mut last = connect(&s.url_on(1, KEY)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(s.push_on(0, &id, "owner").await.0, StatusCode::OK);
    assert_eq!(next_text(&mut last).await, "owner");
    let (_, view) = s.session(&id).await;
    assert!(view["connectionId"].is_string(), "{view}");
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert!(s.app.calls("/disconnect").is_empty());
    // The replaced connections' sessions go as their `$disconnect`s come in (moto is slow under
    // load): one session must remain, within the suite's bound.
    let mut count = String::new();
    for _ in 0..100 {
        count = get(&s.serves[0].internal_url("/v1/connections/count")).await.1;
        if count.contains("\"count\":1") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(count.contains("\"count\":1"), "{count}");
    assert!(s.app.calls("/disconnect").is_empty());
}

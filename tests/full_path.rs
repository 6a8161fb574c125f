//! The whole path on real sockets: a WebSocket client → `socketless gateway` (loaded from
//! cfn/websocket-api.yml) → `socketless serve` → DynamoDB (a moto server this test starts).

mod common;

use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use common::gw::*;
use common::*;
use http::StatusCode;

const SECRET: &str = "0123456789abcdef-test";

fn dynamodb(endpoint: &str) -> aws_sdk_dynamodb::Client {
    let conf = aws_sdk_dynamodb::config::Builder::from(&sdk(Duration::from_secs(5)))
        .endpoint_url(endpoint)
        .build();
    aws_sdk_dynamodb::Client::from_conf(conf)
}

async fn items(db: &aws_sdk_dynamodb::Client, table: &str) -> Vec<std::collections::HashMap<String, AttributeValue>> {
    db.scan()
        .table_name(table)
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .items()
        .to_vec()
}

struct Stack {
    _moto: Moto,
    db: aws_sdk_dynamodb::Client,
    table: String,
    backend: Backend,
    gw: Gw,
}

async fn stack(reply_mode: &str) -> Stack {
    let moto = Moto::start().await;
    let table = format!("sessions-{}", free_port());
    let backend_port = free_port();
    let gw = start_gateway(
        socketless::gateway::EMBEDDED_TEMPLATE,
        &[
            ("IntegrationUri".to_string(), format!("http://127.0.0.1:{backend_port}")),
            ("StageName".to_string(), "dev".to_string()),
            ("SharedSecret".to_string(), SECRET.to_string()),
            ("DisconnectContext".to_string(), "true".to_string()),
        ],
        |_| {},
    )
    .await;
    let mut a = args();
    a.listen = format!("127.0.0.1:{backend_port}");
    a.store = "dynamodb".into();
    a.table = table.clone();
    a.dynamodb_endpoint = Some(moto.endpoint.clone());
    a.create_table = true;
    a.shared_secret = Some(SECRET.into());
    a.reply_mode = reply_mode.into();
    a.push_endpoint = Some(format!("http://{}/dev", gw.addr));
    let backend = start(a).await;
    let db = dynamodb(&moto.endpoint);
    Stack {
        _moto: moto,
        db,
        table,
        backend,
        gw,
    }
}

#[tokio::test]
async fn connect_message_disconnect_through_gateway_backend_and_dynamodb() {
    let s = stack("sync").await;
    let mut ws = connect(&s.gw.url()).await;

    // Connect created the item, keyed by the id the gateway assigned.
    let found = items(&s.db, &s.table).await;
    assert_eq!(found.len(), 1);
    let id = found[0]["connectionId"].as_s().unwrap().clone();
    assert_eq!(id.len(), 16);
    let (status, _, body) = send("GET", &s.gw.mgmt(&id), &[], "").await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the item's id is a live gateway connection: {body}"
    );
    assert_eq!(found[0]["sourceIp"].as_s().unwrap(), "127.0.0.1");
    assert_eq!(found[0]["stage"].as_s().unwrap(), "dev");
    let ttl: i64 = found[0]["expiresAt"].as_n().unwrap().parse().unwrap();
    let connected: i64 = found[0]["connectedAt"].as_n().unwrap().parse().unwrap();
    assert_eq!(ttl, connected / 1000 + 8100);

    send_text(&mut ws, "hello").await;
    assert_eq!(next_text(&mut ws).await, "hello");

    within(ws.close(None)).await.unwrap();
    within(async {
        while !items(&s.db, &s.table).await.is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    // The item is gone once moto has answered; `serve` counts the call when it has read that
    // answer.
    let text = metrics_once_counted(
        &s.backend.internal_url("/metrics"),
        "socketless_dynamodb_calls_total",
        &["operation=\"DeleteItem\""],
        1.0,
    )
    .await;
    assert_eq!(
        metric_value(
            &text,
            "socketless_dynamodb_calls_total{operation=\"DeleteItem\",outcome=\"ok\"}"
        ),
        1.0
    );
}

#[tokio::test]
async fn asynchronous_replies_arrive_through_connections() {
    let s = stack("async").await;
    let mut ws = connect(&s.gw.url()).await;
    for word in ["hello", "again"] {
        send_text(&mut ws, word).await;
        assert_eq!(next_text(&mut ws).await, word);
    }
    // A push is counted when `serve` has read the gateway's answer, which may come after the
    // frame reached the client.
    let text = metrics_once_counted(&s.backend.internal_url("/metrics"), "socketless_pushes_total", &[], 2.0).await;
    assert_eq!(
        metric_value(&text, "socketless_pushes_total{outcome=\"delivered\"}"),
        2.0
    );

    // The internal API pushes and closes through the same gateway.
    let id = items(&s.db, &s.table).await[0]["connectionId"].as_s().unwrap().clone();
    let (status, _, _) = send(
        "POST",
        &s.backend.internal_url(&format!("/v1/connections/{id}/messages")),
        &[],
        "from a service",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(next_text(&mut ws).await, "from a service");
    let (status, _, body) = send("POST", &s.backend.internal_url("/v1/broadcast"), &[], "to everyone").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(next_text(&mut ws).await, "to everyone");
    let (status, _, _) = send(
        "DELETE",
        &s.backend.internal_url(&format!("/v1/connections/{id}")),
        &[],
        "",
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(close_code(&mut ws).await.0, 1000);
    // $disconnect deletes the session; a push now finds it gone.
    within(async {
        while !items(&s.db, &s.table).await.is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let (status, _, _) = send(
        "POST",
        &s.backend.internal_url(&format!("/v1/connections/{id}/messages")),
        &[],
        "late",
    )
    .await;
    assert_eq!(status, StatusCode::GONE);
}

#[tokio::test]
async fn a_wrong_shared_secret_refuses_the_handshake() {
    let s = stack("sync").await;
    let gw = start_gateway(
        socketless::gateway::EMBEDDED_TEMPLATE,
        &[
            ("IntegrationUri".to_string(), format!("http://{}", s.backend.public)),
            ("SharedSecret".to_string(), "not-the-right-secret".to_string()),
        ],
        |_| {},
    )
    .await;
    let err = within(tokio_tungstenite::connect_async(gw.url()))
        .await
        .expect_err("refused");
    match err {
        tokio_tungstenite::tungstenite::Error::Http(resp) => assert_eq!(resp.status(), StatusCode::FORBIDDEN),
        other => panic!("{other:?}"),
    }
    assert!(items(&s.db, &s.table).await.is_empty());
}

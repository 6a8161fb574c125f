//! Faults around the system: DynamoDB stopped and slowed in the middle of traffic, the backend
//! down and back behind the gateway. Each test prints its figures.

mod common;

use std::time::{Duration, Instant};

use common::gw::*;
use common::*;
use http::StatusCode;

async fn create_table(endpoint: &str, table: &str) {
    use aws_sdk_dynamodb::types::{AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType};
    let conf = aws_sdk_dynamodb::config::Builder::from(&sdk(Duration::from_secs(5)))
        .endpoint_url(endpoint)
        .build();
    aws_sdk_dynamodb::Client::from_conf(conf)
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("connectionId")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("connectionId")
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .expect("create table");
}

/// The bound a store failure must answer within: the AWS timeout plus scheduling slack.
const AWS_TIMEOUT: Duration = Duration::from_secs(1);
const BOUND: Duration = Duration::from_millis(2500);

#[tokio::test]
async fn dynamodb_stopped_and_slowed_answers_503_within_the_bound_and_recovers() {
    let moto = Moto::start().await;
    let moto_port = moto.port;
    let proxy = DelayProxy::start(([127, 0, 0, 1], moto_port).into()).await;
    let table = format!("faults-{}", free_port());
    create_table(&moto.endpoint, &table).await;
    let mut a = args();
    a.store = "dynamodb".into();
    a.table = table.clone();
    a.dynamodb_endpoint = Some(format!("http://{}", proxy.addr));
    a.aws_timeout = "1s".into();
    let b = start(a).await;

    let mut n = 0;
    let mut next_id = || {
        n += 1;
        format!("fault{n:011}")
    };
    // Healthy, and one session cached before the faults.
    let cached = next_id();
    assert_eq!(call(&b, "/connect", &cached, "").await.0, StatusCode::OK);
    for _ in 0..5 {
        assert_eq!(call(&b, "/message", &next_id(), "x").await.0, StatusCode::OK);
    }

    // Fault 1: DynamoDB stops.
    drop(moto);
    let (mut requests, mut unavailable, mut slowest) = (0, 0, Duration::ZERO);
    for _ in 0..5 {
        let started = Instant::now();
        let (status, body) = call(&b, "/message", &next_id(), "x").await;
        slowest = slowest.max(started.elapsed());
        requests += 1;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        unavailable += 1;
    }
    assert!(slowest <= BOUND, "a 503 took {slowest:?}, more than {BOUND:?}");
    // A session this pod already knows keeps working: no DynamoDB call is needed.
    assert_eq!(
        call(&b, "/message", &cached, "still here").await,
        (StatusCode::OK, "still here".to_string())
    );
    // Liveness and readiness do not follow the shared dependency.
    assert_eq!(get(&b.internal_url("/healthz")).await.0, StatusCode::OK);
    assert_eq!(get(&b.internal_url("/readyz")).await.0, StatusCode::OK);
    println!(
        "outage: {requests} new-session requests, {unavailable} × 503, slowest {slowest:?}; cached session served"
    );

    // DynamoDB comes back (on the same address): traffic recovers without a restart.
    let moto = Moto::start_on(moto_port).await;
    create_table(&moto.endpoint, &table).await;
    within(async {
        loop {
            if call(&b, "/message", &format!("recover{}", free_port()), "x").await.0 == StatusCode::OK {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    for _ in 0..5 {
        assert_eq!(call(&b, "/message", &next_id(), "x").await.0, StatusCode::OK);
    }

    // Fault 2: DynamoDB answers slower than the AWS timeout.
    proxy.set_delay(2000);
    let started = Instant::now();
    let (status, _) = call(&b, "/message", &next_id(), "x").await;
    let slow = started.elapsed();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(slow <= BOUND, "a slow store answered after {slow:?}");
    proxy.set_delay(0);
    within(async {
        loop {
            if call(&b, "/message", &format!("fast{}", free_port()), "x").await.0 == StatusCode::OK {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let text = get(&b.internal_url("/metrics")).await.1;
    let timeouts = metric_sum(&text, "socketless_dynamodb_calls_total", &["outcome=\"timeout\""]);
    let errors = metric_sum(&text, "socketless_dynamodb_calls_total", &["outcome=\"error\""]);
    println!(
        "slow store: 503 after {slow:?} (AWS timeout {AWS_TIMEOUT:?}); DynamoDB calls failed: {errors} errors, {timeouts} timeouts; recovered"
    );
    drop(moto);
}

#[tokio::test]
async fn backend_down_then_back_without_reconnecting() {
    let backend = FakeBackend::start().await;
    let port = backend.addr.port();
    let gw = repo_gateway(&backend, |_| {}).await;
    let mut ws = connect(&gw.url()).await;
    send_text(&mut ws, "before").await;
    assert_eq!(next_text(&mut ws).await, "before");

    backend.stop();
    let mut errors = 0;
    for _ in 0..3 {
        send_text(&mut ws, "during").await;
        let frame: serde_json::Value = serde_json::from_str(&next_text(&mut ws).await).unwrap();
        assert_eq!(frame["message"], "Internal server error");
        errors += 1;
    }
    // $connect with the backend down: the handshake is refused with a 5xx.
    match within(tokio_tungstenite::connect_async(gw.url())).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert!(resp.status().is_server_error()),
        other => panic!("expected a 5xx refusal, got {other:?}"),
    }

    // The backend comes back on the same address: the same connection flows again.
    let _back = FakeBackend::start_on(&format!("127.0.0.1:{port}")).await;
    send_text(&mut ws, "after").await;
    assert_eq!(next_text(&mut ws).await, "after");
    println!(
        "backend outage: {errors} messages answered with the Internal server error frame; connection kept; recovered"
    );
}

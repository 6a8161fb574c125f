//! A post to a plain-HTTP push endpoint (one signed request on a kept-alive connection, not the
//! SDK's operation): signed like the SDK signs, retried like the SDK retries (a throttling 429
//! and a 503 three times, a 410 or a 400 once), and answered by outcome.

mod common;

use std::time::Duration;

use common::gw::{self, Answer, FakeBackend};
use common::*;
use http::StatusCode;

const ID: &str = "pUsH000000000000=";
const PATH: &str = "/dev/@connections/pUsH000000000000%3D";

async fn backend_pushing_to(fake: &FakeBackend) -> Backend {
    let mut a = args();
    a.push_endpoint = Some(format!("{}/dev", fake.uri()));
    // Room for the SDK's two backoffs (up to 1 s and 2 s) within one operation.
    a.aws_timeout = "10s".into();
    let b = start(a).await;
    call(&b, "/connect", ID, "").await;
    b
}

async fn push(b: &Backend, body: &str) -> (StatusCode, String) {
    let url = b.internal_url(&format!("/v1/connections/{ID}/messages"));
    let (status, _, answer) = send("POST", &url, &[], body.to_owned()).await;
    (status, answer)
}

fn answer(status: u16, body: &str) -> Answer {
    Answer {
        status,
        body: Some(body.into()),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_post_is_signed_and_carries_the_frame() {
    let fake = FakeBackend::start().await;
    fake.answer(PATH, answer(200, ""));
    let b = backend_pushing_to(&fake).await;
    for n in 0..3 {
        let (status, body) = push(&b, &format!("frame {n}")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let seen = fake.seen(PATH);
    assert_eq!(seen.len(), 3);
    for (n, s) in seen.iter().enumerate() {
        assert_eq!(s.body, format!("frame {n}"));
        let h = |k: &str| s.headers.get(k).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        assert!(
            h("authorization").starts_with("AWS4-HMAC-SHA256 Credential=AKIDTEST/")
                && h("authorization").contains("/us-east-1/execute-api/aws4_request"),
            "{}",
            h("authorization")
        );
        assert!(!h("x-amz-date").is_empty());
        assert_eq!(h("content-type"), "text/plain; charset=utf-8");
    }
    assert_eq!(b.metric("socketless_pushes_total{outcome=\"delivered\"}").await, 3.0);
}

#[tokio::test]
async fn throttling_and_unavailable_are_retried_three_times() {
    let fake = FakeBackend::start().await;
    let b = backend_pushing_to(&fake).await;
    fake.answer(
        PATH,
        answer(429, r#"{"__type":"LimitExceededException","message":"slow down"}"#),
    );
    let (status, body) = within(push(&b, "one")).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(fake.seen(PATH).len(), 3, "three attempts");

    fake.answer(PATH, answer(503, r#"{"message":"busy"}"#));
    let (status, body) = within(push(&b, "two")).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(fake.seen(PATH).len(), 6, "three more attempts");
}

#[tokio::test]
async fn gone_and_refused_are_not_retried() {
    let fake = FakeBackend::start().await;
    let b = backend_pushing_to(&fake).await;
    fake.answer(PATH, answer(400, r#"{"__type":"BadRequestException","message":"no"}"#));
    let (status, _) = push(&b, "bad").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(fake.seen(PATH).len(), 1);

    fake.answer(PATH, answer(410, r#"{"__type":"GoneException","message":""}"#));
    let (status, body) = push(&b, "gone").await;
    assert_eq!(fake.seen(PATH).len(), 2, "{status} {body}");
    // A 410 ends the session.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        get(&b.internal_url(&format!("/v1/connections/{ID}"))).await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn a_gateway_checking_sigv4_takes_the_posts_and_refuses_another_key() {
    for (secret, accepted) in [("test-secret", true), ("another-secret", false)] {
        let port = free_port();
        let mut a = args();
        a.reply_mode = "async".into();
        a.push_endpoint = Some(format!("http://127.0.0.1:{port}/dev"));
        let serve = start(a).await;
        let params = gw::repo_params(&serve.url(""));
        let gw = gw::start_gateway(socketless::gateway::EMBEDDED_TEMPLATE, &params, move |c| {
            c.listen = ([127, 0, 0, 1], port).into();
            c.verifier = Some(gw::verifier("AKIDTEST", secret));
        })
        .await;
        let mut ws = gw::connect(&gw.url()).await;
        for n in 0..3 {
            gw::send_text(&mut ws, &format!("m{n}")).await;
            let got = gw::next_text(&mut ws).await;
            assert_eq!(got == format!("m{n}"), accepted, "{secret}: {got}");
        }
        let (_, body) = get(&format!("http://{}/metrics", gw.addr)).await;
        let status = if accepted { "status=\"200\"" } else { "status=\"403\"" };
        let calls = metric_sum(
            &body,
            "socketless_gateway_management_calls_total",
            &["operation=\"post\"", "source=\"client\"", status],
        );
        assert_eq!(calls, 3.0, "{secret}");
    }
}

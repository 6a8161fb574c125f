//! Real AWS clients against the gateway's `@connections`: aws-sdk-apigatewaymanagement signs
//! with SigV4, the gateway verifies it, and wrong keys are refused with ForbiddenException.

mod common;

use aws_sdk_apigatewaymanagement::primitives::Blob;
use common::connections_client as client;
use common::gw::*;
use socketless::gateway::Verifier;

#[tokio::test]
async fn sigv4_from_the_real_sdk_is_accepted_and_wrong_keys_are_refused() {
    let backend = FakeBackend::start().await;
    let gw = repo_gateway(&backend, |c| {
        c.verifier = Some(Verifier {
            access_key_id: "AKIDSOCKETLESS".into(),
            secret_access_key: "right-secret".into(),
            region: socketless::defaults::REGION.into(),
        })
    })
    .await;
    let mut ws = connect(&gw.url()).await;
    let id = backend.seen("/connect")[0].headers["x-socketless-connection-id"]
        .to_str()
        .unwrap()
        .to_string();
    let endpoint = format!("http://{}/dev", gw.addr);

    let good = client(&endpoint, "AKIDSOCKETLESS", "right-secret");
    good.post_to_connection()
        .connection_id(&id)
        .data(Blob::new("signed hello"))
        .send()
        .await
        .expect("a correctly signed post is accepted");
    assert_eq!(next_text(&mut ws).await, "signed hello");
    let info = good
        .get_connection()
        .connection_id(&id)
        .send()
        .await
        .expect("get_connection");
    assert!(info.connected_at().is_some() && info.last_active_at().is_some());
    assert_eq!(info.identity().and_then(|i| i.source_ip()), Some("127.0.0.1"));

    for (key, secret) in [("AKIDSOCKETLESS", "wrong-secret"), ("AKIDOTHER", "right-secret")] {
        let err = client(&endpoint, key, secret)
            .post_to_connection()
            .connection_id(&id)
            .data(Blob::new("forged"))
            .send()
            .await
            .expect_err("a wrong signature is refused");
        assert!(
            err.as_service_error().is_some_and(|e| e.is_forbidden_exception()),
            "{err:?}"
        );
    }
    // Unsigned requests are refused too.
    let (status, headers, _) = common::send("POST", &gw.mgmt(&id), &[], "unsigned").await;
    assert_eq!(status, http::StatusCode::FORBIDDEN);
    assert_eq!(headers["x-amzn-errortype"], "ForbiddenException");

    good.delete_connection()
        .connection_id(&id)
        .send()
        .await
        .expect("delete_connection");
    assert_eq!(close_code(&mut ws).await.0, 1000);
    let err = good
        .post_to_connection()
        .connection_id(&id)
        .data(Blob::new("late"))
        .send()
        .await
        .expect_err("gone after delete");
    assert!(err.as_service_error().is_some_and(|e| e.is_gone_exception()), "{err:?}");
    let err = good.get_connection().connection_id(&id).send().await.expect_err("gone");
    assert!(err.as_service_error().is_some_and(|e| e.is_gone_exception()), "{err:?}");
}

#[tokio::test]
async fn sdk_errors_parse_as_their_aws_types_without_sigv4() {
    let backend = FakeBackend::start().await;
    let gw = repo_gateway(&backend, |c| c.outbound_queue = 1).await;
    let endpoint = format!("http://{}/dev", gw.addr);
    let c = client(&endpoint, "any", "any");
    let err = c
        .post_to_connection()
        .connection_id("unknownConn0000=")
        .data(Blob::new("x"))
        .send()
        .await
        .expect_err("unknown id");
    assert!(err.as_service_error().is_some_and(|e| e.is_gone_exception()), "{err:?}");
    let _ws = connect(&gw.url()).await;
    let id = backend.seen("/connect")[0].headers["x-socketless-connection-id"]
        .to_str()
        .unwrap()
        .to_string();
    let err = c
        .post_to_connection()
        .connection_id(&id)
        .data(Blob::new(vec![b'x'; 131_073]))
        .send()
        .await
        .expect_err("too large");
    assert!(
        err.as_service_error()
            .is_some_and(|e| e.is_payload_too_large_exception()),
        "{err:?}"
    );
}

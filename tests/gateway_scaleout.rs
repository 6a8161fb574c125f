//! The gateway on several replicas: an `@connections` call that reaches a replica not holding
//! the connection is forwarded to its owner, whose answer comes back unchanged; an ordinal
//! outside the peer list is 410, an owner that does not answer is 503; SigV4 is checked at the
//! replica the caller reached, and a forged forwarding marker is refused. (Peers found by a URL
//! template, and the drain: tests/gateway_peers.rs.)

mod common;

use std::time::{Duration, Instant};

use aws_sdk_apigatewaymanagement::primitives::Blob;
use common::gw::*;
use common::*;

const KEY: &str = "AKIDSCALEOUT";
const SECRET: &str = "scale-out-secret";

/// Replicas on `ports` (ordinal = index), each listing every port plus `extra_peers` (peers that
/// never answer); SigV4 checked when `sigv4`.
async fn replicas(backend: &FakeBackend, ports: &[u16], extra_peers: &[u16], sigv4: bool) -> Vec<Gw> {
    replica_set(backend, ports, extra_peers, |c| {
        if sigv4 {
            c.verifier = Some(verifier(KEY, SECRET));
        }
    })
    .await
}

fn id_of(seen: &Seen) -> String {
    seen.headers["x-socketless-connection-id"].to_str().unwrap().to_string()
}

fn encoded(id: &str) -> String {
    id.replace('=', "%3D")
}

#[tokio::test]
async fn a_call_to_any_replica_reaches_the_owner_and_its_answer_comes_back_unchanged() {
    let backend = FakeBackend::start().await;
    let gws = replicas(&backend, &[free_port(), free_port()], &[], false).await;
    // A client on replica 1.
    let mut ws = connect(&gws[1].url()).await;
    let id = id_of(&backend.wait_for("/connect", 1).await[0]);
    let through_0 = gws[0].mgmt(&encoded(&id));
    let at_owner = gws[1].mgmt(&encoded(&id));

    assert_eq!(send("POST", &through_0, &[], "via replica 0").await.0, 200);
    assert_eq!(next_text(&mut ws).await, "via replica 0");

    // GET: the same document through either replica.
    let (s0, h0, b0) = send("GET", &through_0, &[], "").await;
    let (s1, h1, b1) = send("GET", &at_owner, &[], "").await;
    assert_eq!((s0, h0.get("content-type")), (s1, h1.get("content-type")));
    let (d0, d1): (serde_json::Value, serde_json::Value) =
        (serde_json::from_str(&b0).unwrap(), serde_json::from_str(&b1).unwrap());
    assert_eq!(d0["connectedAt"], d1["connectedAt"]);
    assert_eq!(d0["identity"], d1["identity"]);

    // 429 from the owner's full queue, relayed byte for byte: the client reads nothing.
    let mut throttled = None;
    for i in 0..200 {
        let (status, headers, body) = send("POST", &through_0, &[], format!("flood {i} {}", "x".repeat(60_000))).await;
        if status.as_u16() == 429 {
            throttled = Some((headers, body));
            break;
        }
    }
    let (headers, body) = throttled.expect("the owner's queue fills and it answers 429");
    assert_eq!(headers["x-amzn-errortype"], "LimitExceededException");
    assert!(body.contains("outgoing buffer is full"), "{body}");

    // DELETE through replica 0 closes the client on replica 1; then both answer 410 alike.
    assert_eq!(send("DELETE", &through_0, &[], "").await.0, 204);
    let (code, _) = close_code(&mut ws).await;
    assert_eq!(code, 1000);
    let gone_0 = send("POST", &through_0, &[], "late").await;
    let gone_1 = send("POST", &at_owner, &[], "late").await;
    assert_eq!(gone_0.0.as_u16(), 410);
    assert_eq!(
        (gone_0.0, gone_0.1.get("x-amzn-errortype"), gone_0.2),
        (gone_1.0, gone_1.1.get("x-amzn-errortype"), gone_1.2)
    );
}

#[tokio::test]
async fn unknown_ordinals_are_gone_and_owners_that_do_not_answer_are_unavailable() {
    let backend = FakeBackend::start().await;
    // Replica 1 is listed; its port accepts connections (the kernel's backlog) but nothing
    // ever answers, like a replica that hangs.
    let hung = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let gws = replicas(&backend, &[free_port()], &[hung.local_addr().unwrap().port()], false).await;
    let started = Instant::now();
    let (status, headers, body) = send("POST", &gws[0].mgmt(&encoded(&id_for(1))), &[], "hi").await;
    let took = started.elapsed();
    println!("owner not answering: {status} after {took:?} (bound 500 ms)");
    // Not 410: the owner may still hold the connection, and a 410 deletes its session.
    assert_eq!(status.as_u16(), 503, "{body}");
    assert_eq!(headers["x-amzn-errortype"], "ServiceUnavailableException");
    assert!(body.contains("\"message\""), "{body}");
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_secs(2),
        "{took:?}"
    );
    let (status, headers, _) = send("POST", &gws[0].mgmt(&encoded(&id_for(7))), &[], "hi").await;
    assert_eq!(status.as_u16(), 410, "an ordinal outside the peer list");
    assert_eq!(headers["x-amzn-errortype"], "GoneException");
}

/// An id in AWS's shape that names `ordinal` as its owner.
fn id_for(ordinal: u8) -> String {
    use base64::Engine;
    let mut bytes = [0x41u8; 11];
    bytes[0] = ordinal ^ bytes[10];
    base64::engine::general_purpose::URL_SAFE.encode(bytes)
}

#[tokio::test]
async fn sigv4_is_checked_at_the_edge_and_a_forged_marker_is_refused() {
    let backend = FakeBackend::start().await;
    let gws = replicas(&backend, &[free_port(), free_port()], &[], true).await;
    let mut ws = connect(&gws[1].url()).await;
    let id = id_of(&backend.wait_for("/connect", 1).await[0]);

    // Signed, through the replica that does not hold the connection.
    let signed = connections_client(&format!("http://{}/dev", gws[0].addr), KEY, SECRET);
    signed
        .post_to_connection()
        .connection_id(&id)
        .data(Blob::new("signed, forwarded"))
        .send()
        .await
        .expect("a signed call through a non-owner is delivered");
    assert_eq!(next_text(&mut ws).await, "signed, forwarded");

    // Unsigned: refused at the edge, before any forwarding.
    assert_eq!(send("POST", &gws[0].mgmt(&encoded(&id)), &[], "unsigned").await.0, 403);
    // A client claiming to be a peer, straight to the owner: the marker does not verify.
    for marker in ["1", "1700000000000.deadbeef"] {
        let status = send(
            "POST",
            &gws[1].mgmt(&encoded(&id)),
            &[("x-socketless-forwarded", marker)],
            "forged",
        )
        .await
        .0;
        assert_eq!(status, 403, "marker {marker}");
    }
    let nothing = tokio::time::timeout(Duration::from_millis(300), next_text(&mut ws)).await;
    assert!(nothing.is_err(), "a refused call was delivered");
}

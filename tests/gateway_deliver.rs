//! The batch extension of `@connections` on three replicas: one signed `deliver` to any replica
//! reaches every listed client once, whichever replica holds it, with one forwarded call per
//! other owner; ids no replica holds come back as gone; unsigned calls, forged forwarding
//! markers and signatures with the wrong key are refused with 403; malformed and oversized
//! deliveries get 400; the ids of a replica that is gone are gone, those of one that does not
//! answer failed with 503.

mod common;

use std::time::{Duration, SystemTime};

use common::gw::*;
use common::*;

const KEY: &str = "AKIDDELIVER";
const SECRET: &str = "deliver-test-secret";

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

/// An id in AWS's shape that names `ordinal` as its owner (no client holds it).
fn id_for(ordinal: u8) -> String {
    use base64::Engine;
    let mut bytes = [0x37u8; 11];
    bytes[0] = ordinal ^ bytes[10];
    base64::engine::general_purpose::URL_SAFE.encode(bytes)
}

fn deliver_url(gw: &Gw) -> String {
    format!("http://{}/dev/@socketless/v1/deliver", gw.addr)
}

/// SigV4 headers (service execute-api) for `method` of `body` to `url`, signed with `secret`.
fn signed(method: &str, url: &str, body: &[u8], secret: &str) -> Vec<(String, String)> {
    use aws_credential_types::Credentials;
    use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
    use aws_sigv4::sign::v4;
    let identity = Credentials::new(KEY, secret, None, None, "test").into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(socketless::defaults::REGION)
        .name("execute-api")
        .time(SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .unwrap()
        .into();
    let host = url.split('/').nth(2).unwrap().to_string();
    let headers = [("host", host.as_str())];
    let signable = SignableRequest::new(method, url, headers.into_iter(), SignableBody::Bytes(body)).unwrap();
    let (instructions, _) = sign(signable, &params).unwrap().into_parts();
    let mut out: Vec<(String, String)> = instructions
        .headers()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    out.push(("host".into(), host));
    out
}

/// Sends `body` to `url` with these headers; the status and the body as JSON (or the text).
async fn call(method: &str, url: &str, headers: &[(String, String)], body: String) -> (u16, serde_json::Value) {
    let mut refs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    refs.push(("content-type", "application/json"));
    let (status, _, text) = send(method, url, &refs, body).await;
    let value = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
    (status.as_u16(), value)
}

fn delivery(ids: &[String], data: &str) -> String {
    serde_json::json!({ "connectionIds": ids, "data": data }).to_string()
}

/// The management calls a replica counted for this operation and source.
async fn calls(gw: &Gw, operation: &str, source: &str) -> f64 {
    let (_, body) = get(&format!("http://{}/metrics", gw.addr)).await;
    metric_sum(
        &body,
        "socketless_gateway_management_calls_total",
        &[&format!("operation=\"{operation}\""), &format!("source=\"{source}\"")],
    )
}

/// `n` clients on each replica, with their ids.
async fn clients(backend: &FakeBackend, gws: &[Gw], n: usize) -> Vec<(Ws, String)> {
    let mut out = Vec::new();
    for gw in gws {
        for _ in 0..n {
            let ws = connect(&gw.url()).await;
            let seen = backend.wait_for("/connect", out.len() + 1).await;
            out.push((ws, connection_id(&seen[out.len()])));
        }
    }
    out
}

async fn nothing_arrives(ws: &mut Ws) {
    let next = tokio::time::timeout(Duration::from_millis(200), next_text(ws)).await;
    assert!(next.is_err(), "a frame arrived: {next:?}");
}

#[tokio::test]
async fn one_signed_call_delivers_to_clients_on_every_replica_once_and_lists_the_gone() {
    let backend = FakeBackend::start().await;
    let gws = replicas(&backend, &[free_port(), free_port(), free_port()], &[], true).await;
    let mut members = clients(&backend, &gws, 4).await;

    let info_url = format!("http://{}/dev/@socketless/v1/info", gws[2].addr);
    let (status, info) = call("GET", &info_url, &signed("GET", &info_url, b"", SECRET), String::new()).await;
    assert_eq!(status, 200, "{info}");
    assert_eq!(info["gateway"], "socketless");
    assert_eq!(info["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(info["deliver"]["maxIds"], 10_000);
    assert_eq!(info["deliver"]["maxBytes"], 1_048_576);

    // Every member once (one of them listed twice), a gone id on replica 1, and one whose
    // ordinal no replica has.
    let mut ids: Vec<String> = members.iter().map(|(_, id)| id.clone()).collect();
    ids.push(ids[5].clone());
    let (gone_1, gone_9) = (id_for(1), id_for(9));
    ids.extend([gone_1.clone(), gone_9.clone()]);
    let frame = "one frame for all — ünïcode intact";
    let url = deliver_url(&gws[0]);
    let body = delivery(&ids, frame);
    let (status, answer) = call("POST", &url, &signed("POST", &url, body.as_bytes(), SECRET), body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["delivered"], 12, "{answer}");
    let mut gone: Vec<String> = serde_json::from_value(answer["gone"].clone()).unwrap();
    gone.sort();
    let mut expected = vec![gone_1, gone_9];
    expected.sort();
    assert_eq!(gone, expected);
    assert_eq!(answer["failed"], serde_json::json!([]));
    for (ws, _) in &mut members {
        assert_eq!(next_text(ws).await, frame);
    }
    for (ws, _) in &mut members {
        nothing_arrives(ws).await;
    }
    // One call from the caller; each other owner got its share in one forwarded call.
    assert_eq!(calls(&gws[0], "deliver", "client").await, 1.0);
    for gw in &gws {
        assert_eq!(calls(gw, "post", "client").await + calls(gw, "post", "peer").await, 0.0);
    }
    for gw in &gws[1..] {
        assert_eq!(calls(gw, "deliver", "peer").await, 1.0);
        assert_eq!(calls(gw, "deliver", "client").await, 0.0);
    }
    assert_eq!(calls(&gws[2], "info", "client").await, 1.0);
}

#[tokio::test]
async fn unsigned_calls_forged_markers_and_wrong_keys_are_refused() {
    let backend = FakeBackend::start().await;
    let gws = replicas(&backend, &[free_port(), free_port(), free_port()], &[], true).await;
    let mut members = clients(&backend, &gws[1..2], 1).await;
    let ids = vec![members[0].1.clone()];
    let body = delivery(&ids, "refused");
    let (through_0, at_owner) = (deliver_url(&gws[0]), deliver_url(&gws[1]));

    let (status, answer) = call("POST", &through_0, &[], body.clone()).await;
    assert_eq!(status, 403, "unsigned: {answer}");
    assert_eq!(answer["message"], "Forbidden");
    let wrong_key = signed("POST", &through_0, body.as_bytes(), "not-the-secret");
    assert_eq!(
        call("POST", &through_0, &wrong_key, body.clone()).await.0,
        403,
        "wrong key"
    );
    // A signature over another body does not carry this one.
    let other_body = signed("POST", &through_0, b"{}", SECRET);
    assert_eq!(
        call("POST", &through_0, &other_body, body.clone()).await.0,
        403,
        "other body"
    );
    for marker in ["1", "1700000000000.deadbeef"] {
        let forged = vec![("x-socketless-forwarded".to_string(), marker.to_string())];
        assert_eq!(
            call("POST", &at_owner, &forged, body.clone()).await.0,
            403,
            "marker {marker}"
        );
    }
    let info_url = format!("http://{}/dev/@socketless/v1/info", gws[0].addr);
    assert_eq!(call("GET", &info_url, &[], String::new()).await.0, 403, "unsigned info");
    nothing_arrives(&mut members[0].0).await;
    // The same call signed with the right key is delivered.
    let good = signed("POST", &through_0, body.as_bytes(), SECRET);
    assert_eq!(call("POST", &through_0, &good, body).await.0, 200);
    assert_eq!(next_text(&mut members[0].0).await, "refused");
}

#[tokio::test]
async fn malformed_empty_too_many_and_oversized_deliveries_are_400() {
    let backend = FakeBackend::start().await;
    let gws = replicas(&backend, &[free_port()], &[], false).await;
    let mut members = clients(&backend, &gws, 1).await;
    let url = deliver_url(&gws[0]);
    let id = members[0].1.clone();
    let too_many: Vec<String> = (0..10_001).map(|_| id.clone()).collect();
    let cases = [
        ("not JSON", "{\"connectionIds\":".to_string(), "expected"),
        ("no data", format!("{{\"connectionIds\":[\"{id}\"]}}"), "expected"),
        ("empty", delivery(&[], "x"), "connectionIds is empty"),
        ("10,001 ids", delivery(&too_many, "x"), "10001 ids, at most 10000"),
        ("invalid id", delivery(&["nope".to_string()], "x"), "connectionIds[0]"),
        (
            "data over 128 KiB",
            delivery(std::slice::from_ref(&id), &"x".repeat(131_073)),
            "at most 131072",
        ),
        (
            "body over 1 MiB",
            delivery(std::slice::from_ref(&id), &"\u{1}".repeat(200_000)),
            "over 1048576 bytes",
        ),
    ];
    for (what, body, says) in cases {
        let (status, answer) = call("POST", &url, &[], body).await;
        assert_eq!(status, 400, "{what}: {answer}");
        let message = answer["message"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{what}: {message}");
    }
    assert_eq!(call("GET", &url, &[], String::new()).await.0, 405);
    nothing_arrives(&mut members[0].0).await;
    // 10,000 ids (one connection, listed 10,000 times) is within the limit.
    let (status, answer) = call("POST", &url, &[], delivery(&too_many[1..], "at the limit")).await;
    assert_eq!(
        (status, answer["delivered"].clone()),
        (200, serde_json::json!(1)),
        "{answer}"
    );
    assert_eq!(next_text(&mut members[0].0).await, "at the limit");
}

#[tokio::test]
async fn a_stopped_replica_ids_are_gone_and_a_hung_one_ids_failed_503() {
    let backend = FakeBackend::start().await;
    // Replica 2 accepts connections (the kernel's backlog) but never answers.
    let hung = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut gws = replicas(
        &backend,
        &[free_port(), free_port()],
        &[hung.local_addr().unwrap().port()],
        false,
    )
    .await;
    let mut members = clients(&backend, &gws, 2).await;
    let on_1: Vec<String> = members[2..].iter().map(|(_, id)| id.clone()).collect();
    let stopped = gws.pop().expect("replica 1");
    let addr = stopped.addr;
    drop(stopped);
    // Until nothing listens on replica 1's port.
    within(async {
        while tokio::net::TcpStream::connect(addr).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;

    let hung_id = id_for(2);
    let mut ids: Vec<String> = members[..2].iter().map(|(_, id)| id.clone()).collect();
    ids.extend(on_1.iter().cloned());
    ids.push(hung_id.clone());
    let (status, answer) = call("POST", &deliver_url(&gws[0]), &[], delivery(&ids, "partial")).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["delivered"], 2, "{answer}");
    let mut gone: Vec<String> = serde_json::from_value(answer["gone"].clone()).unwrap();
    gone.sort();
    let mut expected = on_1.clone();
    expected.sort();
    assert_eq!(gone, expected, "{answer}");
    assert_eq!(
        answer["failed"],
        serde_json::json!([{ "connectionId": hung_id, "status": 503 }])
    );
    for (ws, _) in &mut members[..2] {
        assert_eq!(next_text(ws).await, "partial");
    }
}

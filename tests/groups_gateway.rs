//! Groups through real `socketless gateway` replicas (in-process, SigV4 checked): clients on two
//! replicas join a group through `serve`'s internal API, and one publish reaches each member once
//! in one signed `deliver` per replica (read from the gateways' own call counters); broadcast
//! takes the same path; a member that closes leaves the group with its `$disconnect`.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use socketless::handler::{BoxFuture, MessageHandler, Rejection, RequestContext};

use common::groups::{count, join, publish};
use common::gw::*;
use common::*;
use http::StatusCode;
use socketless::gateway::{GatewayConfig, PeerUrls, Verifier};

/// The management calls serve made to a replica for this operation.
async fn client_calls(gw: &Gw, operation: &str) -> f64 {
    let (_, body) = get(&format!("http://{}/metrics", gw.addr)).await;
    metric_sum(
        &body,
        "socketless_gateway_management_calls_total",
        &[&format!("operation=\"{operation}\""), "source=\"client\""],
    )
}

async fn silent(ws: &mut Ws) -> bool {
    tokio::time::timeout(Duration::from_millis(200), next_text(ws))
        .await
        .is_err()
}

/// Answers every message with the connection's id.
struct Who;

impl MessageHandler for Who {
    fn on_message<'a>(
        &'a self,
        ctx: &'a RequestContext,
        _body: Bytes,
    ) -> BoxFuture<'a, Result<Option<Bytes>, Rejection>> {
        Box::pin(async move { Ok(Some(Bytes::from(ctx.connection_id.clone()))) })
    }
}

#[tokio::test]
async fn a_publish_is_one_signed_deliver_per_replica() {
    let ports = [free_port(), free_port()];
    let mut a = args();
    a.push_endpoint = Some(format!("http://127.0.0.1:{}/dev", ports[0]));
    a.push_batch = "on".into();
    let serve = start_with(a, Arc::new(Who)).await;
    let peers: Vec<String> = ports.iter().map(|p| format!("http://127.0.0.1:{p}")).collect();
    let mut gws = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let peers = peers.clone();
        let params = repo_params(&serve.url(""));
        gws.push(
            start_gateway(
                socketless::gateway::EMBEDDED_TEMPLATE,
                &params,
                move |c: &mut GatewayConfig| {
                    c.listen = ([127, 0, 0, 1], *port).into();
                    c.ordinal = i as u8;
                    c.peers = PeerUrls::List(peers);
                    // The keys serve's test SDK signs with.
                    c.verifier = Some(Verifier {
                        access_key_id: "AKIDTEST".into(),
                        secret_access_key: "test-secret".into(),
                        region: socketless::defaults::REGION.into(),
                    });
                },
            )
            .await,
        );
    }
    // Five clients on each replica; each asks for its own id.
    let mut clients = Vec::new();
    let mut ids = Vec::new();
    for gw in &gws {
        for _ in 0..5 {
            let mut ws = connect(&gw.url()).await;
            send_text(&mut ws, "who").await;
            ids.push(next_text(&mut ws).await);
            clients.push(ws);
        }
    }
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 10);
    for id in &ids {
        assert_eq!(join(&serve, "room", id).await.0, StatusCode::NO_CONTENT);
    }
    let (s, v) = publish(&serve, "room", "to the room").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["delivered"], 10, "{v}");
    for ws in clients.iter_mut() {
        assert_eq!(next_text(ws).await, "to the room");
        assert!(silent(ws).await, "once only");
    }
    let delivers: f64 = futures_util::future::join_all(gws.iter().map(|g| client_calls(g, "deliver")))
        .await
        .iter()
        .sum();
    let posts: f64 = futures_util::future::join_all(gws.iter().map(|g| client_calls(g, "post")))
        .await
        .iter()
        .sum();
    assert_eq!(delivers, 2.0, "one deliver per replica");
    assert_eq!(posts, 0.0);
    assert_eq!(count(&serve, "room").await, 10);

    let (s, _, body) = send("POST", &serve.internal_url("/v1/broadcast"), &[], "to all").await;
    assert_eq!(s, StatusCode::OK, "{body}");
    for ws in clients.iter_mut() {
        assert_eq!(next_text(ws).await, "to all");
    }
    let delivers: f64 = futures_util::future::join_all(gws.iter().map(|g| client_calls(g, "deliver")))
        .await
        .iter()
        .sum();
    assert_eq!(delivers, 4.0, "broadcast: one deliver per replica too");

    let mut gone = clients.remove(0);
    within(futures_util::SinkExt::close(&mut gone)).await.unwrap();
    within(async {
        while count(&serve, "room").await != 9 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let (_, v) = publish(&serve, "room", "after").await;
    assert_eq!(
        (v["members"].as_u64(), v["delivered"].as_u64()),
        (Some(9), Some(9)),
        "{v}"
    );
}

//! The batch extension of `@connections` (`/{stage}/@socketless/v1/...`), which API Gateway does
//! not have: `info` says this is a socketless gateway and what a delivery may carry, and
//! `deliver` sends one text frame to up to 10,000 connections in one call. The replica that
//! gets a delivery splits the ids by the ordinal each carries, delivers its own share through
//! each connection's outbound budget (the frame's bytes shared by every member, never copied),
//! forwards each other owner's share in one call per owner, and merges the answers. Calls are
//! authenticated exactly like `@connections` (see `management.rs`). See docs/gateway.md.

use std::collections::{BTreeMap, HashSet};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use super::connection::QueueError;
use super::error::GatewayError;
use super::management::{Target, authenticate, body_error, precheck, source_of};
use super::peers::{self, Owner, PeerUrls, Unanswered};
use super::shared::Shared;
use crate::contract::MAX_POST_BYTES;
use crate::http_server::{self, Body, BodyError};
use crate::timefmt::now_ms;

/// The most connection ids one delivery may name.
pub const MAX_IDS: usize = 10_000;

/// The largest delivery body: 10,000 ids and a 128 KiB frame fit even with every byte of the
/// frame escaped in JSON (`\u00XX`, six bytes each).
pub const MAX_BODY_BYTES: usize = 1_048_576;

/// The largest answer a peer may give to a forwarded delivery: every id of the largest share
/// listed as failed, with room to spare.
const MAX_PEER_ANSWER_BYTES: usize = 2 * 1_048_576;

/// One of the extension's calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    Info,
    Deliver,
    /// Posts another replica carries here many to a call (`relay.rs`): peers only.
    Posts,
}

impl Call {
    fn operation(self) -> &'static str {
        match self {
            Call::Info => "info",
            Call::Deliver => "deliver",
            Call::Posts => "posts",
        }
    }
}

/// Reads the call from a raw `/{stage}/@socketless/v1/{info|deliver}` path, where each segment
/// may be percent-encoded; `None` if the path is not one.
pub fn parse_path(raw: &str, stage: &str) -> Option<Call> {
    let decode = crate::percent::decode;
    let mut segments = raw.strip_prefix('/')?.split('/');
    if decode(segments.next()?)? != stage || decode(segments.next()?)? != "@socketless" {
        return None;
    }
    if decode(segments.next()?)? != "v1" {
        return None;
    }
    let call = match decode(segments.next()?)?.as_str() {
        "info" => Call::Info,
        "deliver" => Call::Deliver,
        "posts" => Call::Posts,
        _ => return None,
    };
    segments.next().is_none().then_some(call)
}

/// A delivery as the caller sends it.
#[derive(Deserialize)]
struct Delivery {
    #[serde(rename = "connectionIds")]
    connection_ids: Vec<String>,
    data: String,
}

/// One owner's share of a delivery, as it is forwarded.
#[derive(Serialize)]
struct Share<'a> {
    #[serde(rename = "connectionIds")]
    connection_ids: &'a [String],
    data: &'a str,
}

/// An id that was not delivered for a reason other than being gone.
#[derive(Debug, Deserialize, Serialize, PartialEq, Eq)]
struct Failed {
    #[serde(rename = "connectionId")]
    connection_id: String,
    status: u16,
}

/// The answer to a delivery: every id is counted in `delivered` or listed in `gone` or `failed`.
#[derive(Debug, Default, Deserialize, Serialize)]
struct Outcome {
    delivered: usize,
    gone: Vec<String>,
    failed: Vec<Failed>,
}

impl Outcome {
    fn fail(&mut self, ids: Vec<String>, status: u16) {
        self.failed
            .extend(ids.into_iter().map(|connection_id| Failed { connection_id, status }));
    }

    fn merge(&mut self, other: Outcome) {
        self.delivered += other.delivered;
        self.gone.extend(other.gone);
        self.failed.extend(other.failed);
    }
}

/// Serves one call of the extension, recording it by operation, source and status.
pub async fn extension(gw: &Shared, req: Request<Incoming>, call: Call) -> Response<Body> {
    let source = source_of(&req);
    let resp = match (call, req.method()) {
        (Call::Info, &Method::GET) => info(gw, req).await,
        (Call::Deliver, &Method::POST) => {
            let hop = crate::trace::Hop::from_headers("gateway batch deliver", req.headers(), Vec::new);
            hop.run(deliver(gw, req)).await
        }
        (Call::Posts, _) => super::relay::serve_posts(gw, req).await,
        _ => Err(GatewayError::ExtensionMethod),
    }
    .unwrap_or_else(|err| err.response());
    gw.metrics.management(call.operation(), source, resp.status().as_u16());
    resp
}

/// Checks the caller (signature or forwarding marker) and reads the body, up to `limit`.
async fn admit(gw: &Shared, req: Request<Incoming>, limit: usize) -> Result<(Bytes, bool), GatewayError> {
    let from_peer = req.headers().contains_key(peers::FORWARDED);
    precheck(gw, &req, from_peer)?;
    let target = Target::of(&req);
    let method = req.method().clone();
    let read = http_server::read_body(req, limit, &gw.config.body)
        .await
        .map_err(|e| match e {
            BodyError::TooLarge(_) => GatewayError::BadDelivery(format!("the body is over {limit} bytes")),
            other => body_error(other),
        })?;
    authenticate(gw, from_peer, &method, &target, &read.parts.headers, &read.bytes)?;
    Ok((read.bytes, from_peer))
}

/// `info`: what this gateway is, the limits of a delivery, and, with replicas, where each one
/// is (`replicas`: the list or the URL template its peers use, and the stage), so that a sender
/// can post to a connection's owner instead of through a replica that would forward the post.
async fn info(gw: &Shared, req: Request<Incoming>) -> Result<Response<Body>, GatewayError> {
    admit(gw, req, 0).await?;
    let mut answer = serde_json::json!({
        "gateway": "socketless",
        "version": env!("CARGO_PKG_VERSION"),
        "deliver": { "maxIds": MAX_IDS, "maxBytes": MAX_BODY_BYTES },
        "posts": { "maxItems": crate::carried::MAX_ITEMS, "maxBytes": crate::carried::MAX_BYTES },
    });
    let replicas = match gw.peers.urls() {
        PeerUrls::None => None,
        PeerUrls::List(urls) => Some(serde_json::json!({ "urls": urls })),
        PeerUrls::Template(t) => Some(serde_json::json!({ "template": t })),
    };
    if let Some(mut replicas) = replicas {
        replicas["stage"] = serde_json::Value::from(gw.config.model.stage.as_str());
        answer["replicas"] = replicas;
    }
    Ok(http_server::json(StatusCode::OK, &answer))
}

/// Parses and checks a delivery; the ids come back without duplicates, in their first order.
fn parse(body: &[u8]) -> Result<(Vec<String>, String), GatewayError> {
    let bad = GatewayError::BadDelivery;
    let d: Delivery = serde_json::from_slice(body).map_err(|e| {
        bad(format!(
            "expected {{\"connectionIds\":[\"id\",...],\"data\":\"text\"}} (line {} column {})",
            e.line(),
            e.column()
        ))
    })?;
    if d.connection_ids.is_empty() {
        return Err(bad("connectionIds is empty".into()));
    }
    if d.connection_ids.len() > MAX_IDS {
        return Err(bad(format!(
            "connectionIds has {} ids, at most {MAX_IDS}",
            d.connection_ids.len()
        )));
    }
    if d.data.len() > MAX_POST_BYTES {
        return Err(bad(format!("data is {} bytes, at most {MAX_POST_BYTES}", d.data.len())));
    }
    if let Some(i) = d
        .connection_ids
        .iter()
        .position(|id| super::ids::ordinal_of(id).is_none())
    {
        return Err(bad(format!(
            "connectionIds[{i}] is not a connection id this gateway issues"
        )));
    }
    let mut seen = HashSet::with_capacity(d.connection_ids.len());
    let ids = d
        .connection_ids
        .into_iter()
        .filter(|id| seen.insert(id.clone()))
        .collect();
    Ok((ids, d.data))
}

/// `deliver`: this replica's share delivered here, every other owner's share forwarded in one
/// call, the answers merged. A forwarded delivery is delivered here only.
async fn deliver(gw: &Shared, req: Request<Incoming>) -> Result<Response<Body>, GatewayError> {
    let raw_path = req.uri().path().to_string();
    let (body, from_peer) = admit(gw, req, MAX_BODY_BYTES).await?;
    let (ids, data) = parse(&body)?;
    drop(body);
    let mut outcome = Outcome::default();
    let mut here = Vec::new();
    let mut elsewhere: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for id in ids {
        match gw.peers.owner(&id) {
            _ if from_peer => here.push(id),
            Owner::Here => here.push(id),
            Owner::Peer(url) => elsewhere.entry(url).or_default().push(id),
            Owner::Nobody => outcome.gone.push(id),
        }
    }
    // Counted once per delivery, as each owner's share is counted once.
    if !outcome.gone.is_empty() {
        gw.metrics.forward("no_owner");
    }
    // The forwarded shares' bodies are built before the frame's text moves into the shared
    // buffer the local share is queued from.
    let shares: Vec<(String, Vec<String>, Bytes)> = elsewhere
        .into_iter()
        .map(|(url, ids)| {
            let share = Share {
                connection_ids: &ids,
                data: &data,
            };
            let body = Bytes::from(serde_json::to_vec(&share).unwrap_or_default());
            (url, ids, body)
        })
        .collect();
    let frame = Utf8Bytes::from(data);
    let forwards = shares
        .into_iter()
        .map(|(url, ids, body)| forward(gw, url, ids, &raw_path, body));
    let pending = futures_util::future::join_all(forwards);
    outcome.merge(deliver_here(gw, here, &frame));
    for answer in pending.await {
        outcome.merge(answer);
    }
    let body = serde_json::to_vec(&outcome).unwrap_or_default();
    Ok(http_server::with_body(
        StatusCode::OK,
        &http_server::content_type::JSON,
        body,
    ))
}

/// Queues the frame for each connection this replica holds, as a post would: one shared
/// buffer, each connection's queue and the outbound budget deciding as for any post.
fn deliver_here(gw: &Shared, ids: Vec<String>, frame: &Utf8Bytes) -> Outcome {
    let mut out = Outcome::default();
    for id in ids {
        let Some(conn) = gw.connections.lookup(&id) else {
            out.gone.push(id);
            continue;
        };
        match gw.connections.post(&conn, Message::Text(frame.clone())) {
            Ok(()) => out.delivered += 1,
            Err(QueueError::Full) => out.failed.push(Failed {
                connection_id: id,
                status: StatusCode::TOO_MANY_REQUESTS.as_u16(),
            }),
            Err(QueueError::Closed) => out.gone.push(id),
        }
    }
    out
}

/// One owner's share, forwarded in one call; its ids are gone when the owner is known not to
/// exist, and failed with 503 when it did not answer (the 410-vs-503 rule of `peers.rs`), or
/// with the owner's status when it refused the call.
async fn forward(gw: &Shared, url: String, ids: Vec<String>, raw_path: &str, body: Bytes) -> Outcome {
    let mut out = Outcome::default();
    let answer = gw
        .peers
        .forward_bounded(
            &url,
            &Method::POST,
            raw_path,
            raw_path,
            Some(&http_server::content_type::JSON),
            body,
            now_ms(),
            MAX_PEER_ANSWER_BYTES,
        )
        .await;
    let resp = match answer {
        Ok(resp) => resp,
        Err(Unanswered::NoOwner(why)) => {
            gw.metrics.forward("no_owner");
            tracing::info!(owner = %url, reason = %why, ids = ids.len(), "a delivery's owner does not exist: its ids are gone");
            out.gone = ids;
            return out;
        }
        Err(Unanswered::Unavailable(why)) => {
            gw.metrics.forward("owner_unavailable");
            tracing::warn!(owner = %url, reason = %why, ids = ids.len(), "a delivery's owner did not answer in time");
            out.fail(ids, StatusCode::SERVICE_UNAVAILABLE.as_u16());
            return out;
        }
    };
    gw.metrics.forward("relayed");
    let status = resp.status();
    let bytes = match http_body_util::BodyExt::collect(resp.into_body()).await {
        Ok(collected) => collected.to_bytes(),
        Err(never) => match never {},
    };
    match serde_json::from_slice::<Outcome>(&bytes) {
        Ok(answer) if status == StatusCode::OK => answer,
        _ => {
            let status = if status == StatusCode::OK {
                StatusCode::BAD_GATEWAY
            } else {
                status
            };
            tracing::warn!(owner = %url, status = %status, "a delivery's owner refused its share");
            out.fail(ids, status.as_u16());
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(parse_path("/dev/@socketless/v1/info", "dev"), Some(Call::Info));
        assert_eq!(parse_path("/dev/%40socketless/v1/deliver", "dev"), Some(Call::Deliver));
        assert_eq!(parse_path("/dev/@socketless/v2/deliver", "dev"), None);
        assert_eq!(parse_path("/dev/@socketless/v1/deliver/x", "dev"), None);
        assert_eq!(parse_path("/prod/@socketless/v1/info", "dev"), None);
        assert_eq!(parse_path("/dev/@connections/abc", "dev"), None);
    }

    #[test]
    fn deliveries_are_checked_and_duplicates_dropped() {
        let a = super::super::ids::connection_id(0);
        let b = super::super::ids::connection_id(1);
        let body = serde_json::json!({ "connectionIds": [a, b, a], "data": "hi" }).to_string();
        let (ids, data) = parse(body.as_bytes()).expect("a valid delivery");
        assert_eq!((ids, data.as_str()), (vec![a.clone(), b], "hi"));
        let message = |body: String| match parse(body.as_bytes()) {
            Err(GatewayError::BadDelivery(m)) => m,
            other => panic!("expected a bad delivery, got {:?}", other.map(|_| ())),
        };
        assert!(message("{".into()).starts_with("expected"));
        assert_eq!(
            message(r#"{"connectionIds":[],"data":"x"}"#.into()),
            "connectionIds is empty"
        );
        let many = vec![a.clone(); MAX_IDS + 1];
        assert!(message(serde_json::json!({ "connectionIds": many, "data": "x" }).to_string()).contains("10001 ids"));
        let big = "x".repeat(MAX_POST_BYTES + 1);
        assert!(
            message(serde_json::json!({ "connectionIds": [a], "data": big }).to_string()).contains("at most 131072")
        );
        assert!(message(r#"{"connectionIds":["nope"],"data":"x"}"#.into()).contains("connectionIds[0]"));
    }
}

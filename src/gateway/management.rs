//! The `@connections` management API (`/{stage}/@connections/{id}`): PostToConnection,
//! GetConnection and DeleteConnection, with errors shaped the way the AWS SDKs parse them.

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::connection::{ConnHandle, NORMAL, QueueError};
use super::error::GatewayError;
use super::peers::{self, Owner, Unanswered};
use super::relay::{Post, SingleCall};
use super::shared::Shared;
use super::sigv4::Signed;
use crate::contract::MAX_POST_BYTES;
use crate::http_server::{self, Body, BodyError};
use crate::timefmt::{iso8601, now_ms};

/// Reads the connection id from a raw `/{stage}/@connections/{id}` path, where each segment
/// may be percent-encoded (`%40connections`, `abc%3D`); `None` if the path is not one.
pub fn parse_path(raw: &str, stage: &str) -> Option<String> {
    let decode = crate::percent::decode;
    let mut segments = raw.strip_prefix('/')?.split('/');
    if decode(segments.next()?)? != stage || decode(segments.next()?)? != "@connections" {
        return None;
    }
    let id = decode(segments.next()?)?;
    (segments.next().is_none() && !id.is_empty()).then_some(id)
}

/// Serves one `@connections` call, recording it by operation and status.
pub async fn management(gw: &Shared, req: Request<Incoming>, id: String) -> Response<Body> {
    let method = req.method().clone();
    let op = match method {
        Method::POST => "post",
        Method::GET => "get",
        Method::DELETE => "delete",
        _ => return GatewayError::MethodNotAllowed.response(),
    };
    let source = source_of(&req);
    // A push that carries `traceparent` continues its trace here, on a forwarded hop and into
    // the delivery (see `crate::trace`).
    let hop = crate::trace::Hop::from_headers("gateway @connections", req.headers(), || {
        vec![
            opentelemetry::KeyValue::new("http.request.method", method.to_string()),
            opentelemetry::KeyValue::new("socketless.connection_id", id.clone()),
        ]
    });
    let resp = hop
        .clone()
        .run(call(gw, req, &id, &method))
        .await
        .unwrap_or_else(|err| err.response());
    if resp.status().is_server_error() {
        hop.outcome(Some(resp.status().to_string()));
    }
    gw.metrics.management(op, source, resp.status().as_u16());
    resp
}

/// Who made a call, for the metrics: another replica (it carries the forwarding marker, which
/// is checked later) or any other caller.
pub(super) fn source_of<B>(req: &Request<B>) -> &'static str {
    if req.headers().contains_key(peers::FORWARDED) {
        "peer"
    } else {
        "client"
    }
}

/// One call, step by step: the checks that need no body, the body, its signature (or the
/// forwarding marker), the replica that holds the connection, and the operation.
async fn call(gw: &Shared, req: Request<Incoming>, id: &str, method: &Method) -> Result<Response<Body>, GatewayError> {
    // A call another replica forwarded was checked there; it proves where it came from with
    // the peers' marker instead of a signature, and is never forwarded again.
    let from_peer = req.headers().contains_key(peers::FORWARDED);
    precheck(gw, &req, from_peer)?;
    let target = Target::of(&req);
    let read = http_server::read_body(req, MAX_POST_BYTES, &gw.config.body)
        .await
        .map_err(body_error)?;
    let body = &read.bytes;
    authenticate(gw, from_peer, method, &target, &read.parts.headers, body)?;
    if !from_peer {
        let content_type = read.parts.headers.get(http::header::CONTENT_TYPE);
        if let Some(answer) = forward(gw, id, method, &target, content_type, body).await? {
            return Ok(answer);
        }
    }
    // A DELETE of a connection in its handshake is kept for when it opens (the pending set is
    // asked before the registry: a connection is registered before it leaves that set).
    if *method == Method::DELETE && gw.connections.close_pending(id) {
        return Err(GatewayError::Gone);
    }
    let conn = gw.connections.lookup(id).ok_or(GatewayError::Gone)?;
    // With --binary-frames, a post of type application/octet-stream is a binary frame.
    let binary = gw.config.binary_frames && posts_binary(&read.parts.headers);
    operate(gw, &conn, method, body, binary)
}

/// Whether a post's `Content-Type` is `application/octet-stream`.
fn posts_binary(headers: &HeaderMap) -> bool {
    headers.get(http::header::CONTENT_TYPE).is_some_and(is_octet_stream)
}

fn is_octet_stream(v: &http::HeaderValue) -> bool {
    v.to_str()
        .ok()
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/octet-stream"))
}

/// Where a call was sent, as the signature and the forwarding see it.
pub(super) struct Target {
    pub raw_path: String,
    pub raw_query: String,
    pub path_and_query: String,
}

impl Target {
    pub(super) fn of(req: &Request<Incoming>) -> Self {
        let uri = req.uri();
        Target {
            raw_path: uri.path().to_string(),
            raw_query: uri.query().unwrap_or("").to_string(),
            path_and_query: uri.path_and_query().map(|p| p.as_str().to_string()).unwrap_or_default(),
        }
    }
}

/// What can be checked before the body arrives is checked first: an unsigned caller never gets
/// a body buffered.
pub(super) fn precheck(gw: &Shared, req: &Request<Incoming>, from_peer: bool) -> Result<(), GatewayError> {
    if let (Some(v), false) = (&gw.config.verifier, from_peer) {
        if let Err(why) = v.precheck(req.headers(), now_ms() / 1000) {
            tracing::info!(reason = %why, "@connections call refused: bad signature");
            return Err(GatewayError::Forbidden);
        }
    }
    Ok(())
}

/// The answer to a body that could not be read whole.
pub(super) fn body_error(err: BodyError) -> GatewayError {
    match err {
        BodyError::TooLarge(_) => GatewayError::PayloadTooLarge,
        BodyError::Busy => GatewayError::BodiesBusy,
        BodyError::TimedOut(_) => GatewayError::BodyTimedOut,
        BodyError::Read(_) => GatewayError::BodyUnreadable,
    }
}

/// The caller proves who it is: a forwarded call with the peers' marker (over the method, path
/// and body), any other with its SigV4 signature, when the gateway checks them.
pub(super) fn authenticate(
    gw: &Shared,
    from_peer: bool,
    method: &Method,
    target: &Target,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<(), GatewayError> {
    if from_peer {
        if gw.peers.forwarded(method, &target.raw_path, headers, body, now_ms()) != Some(true) {
            tracing::info!("@connections call refused: a forwarding marker that does not verify");
            return Err(GatewayError::Forbidden);
        }
        return Ok(());
    }
    let Some(v) = &gw.config.verifier else {
        return Ok(());
    };
    let signed = Signed {
        method: method.as_str(),
        raw_path: &target.raw_path,
        raw_query: &target.raw_query,
        headers,
    };
    if let Err(why) = v.verify(&signed, body, now_ms() / 1000) {
        tracing::info!(reason = %why, "@connections call refused: bad signature");
        return Err(GatewayError::Forbidden);
    }
    Ok(())
}

/// Sends the call on to the replica that holds the connection and relays its answer; `None`
/// when this replica holds it (or would).
async fn forward(
    gw: &Shared,
    id: &str,
    method: &Method,
    target: &Target,
    content_type: Option<&http::HeaderValue>,
    body: &Bytes,
) -> Result<Option<Response<Body>>, GatewayError> {
    let url = match gw.peers.owner(id) {
        Owner::Here => return Ok(None),
        Owner::Nobody => {
            gw.metrics.forward("no_owner");
            return Err(GatewayError::Gone);
        }
        Owner::Peer(url) => url,
    };
    // A post goes with the others to the same owner (`relay.rs`), unless it carries a trace,
    // which continues on the owner only when the post goes alone.
    let forwarded = if *method == Method::POST && !crate::trace::Hop::current().is_some() {
        let post = Post {
            id: id.to_string(),
            frame: body.clone(),
            binary: content_type.is_some_and(is_octet_stream),
            single: Some(SingleCall {
                path_and_query: target.path_and_query.clone(),
                raw_path: target.raw_path.clone(),
                content_type: content_type.cloned(),
            }),
        };
        gw.relay.post(url.clone(), post).await
    } else {
        gw.peers
            .forward(
                &url,
                method,
                &target.path_and_query,
                &target.raw_path,
                content_type,
                body.clone(),
                now_ms(),
            )
            .await
    };
    relayed(gw, &url, forwarded).map(Some)
}

/// The answer to a call sent on to `owner`, as this replica gives it, counted by how it went.
pub(super) fn relayed(
    gw: &Shared,
    owner: &str,
    forwarded: Result<Response<Body>, Unanswered>,
) -> Result<Response<Body>, GatewayError> {
    match forwarded {
        Ok(answer) => {
            gw.metrics.forward("relayed");
            Ok(answer)
        }
        Err(Unanswered::NoOwner(why)) => {
            gw.metrics.forward("no_owner");
            tracing::info!(owner, reason = %why, "no replica holds the connection: its owner does not exist");
            Err(GatewayError::Gone)
        }
        // 503, which the AWS SDKs retry; not 410: the connection may well still be open, and a
        // 410 makes `serve` delete its session.
        Err(Unanswered::Unavailable(why)) => {
            gw.metrics.forward("owner_unavailable");
            tracing::warn!(owner, reason = %why, "the replica holding the connection did not answer; the caller may retry");
            Err(GatewayError::OwnerUnavailable)
        }
    }
}

/// PostToConnection, GetConnection or DeleteConnection on a connection this replica holds.
/// A post is a text frame unless `binary` (or its body is not UTF-8).
fn operate(
    gw: &Shared,
    conn: &ConnHandle,
    method: &Method,
    body: &Bytes,
    binary: bool,
) -> Result<Response<Body>, GatewayError> {
    match *method {
        Method::POST => {
            let msg = super::relay::frame_of(body.clone(), binary);
            let _delivery =
                crate::trace::Hop::current().child("gateway deliver", crate::trace::Kind::Internal, Vec::new);
            match gw.connections.post(conn, msg) {
                Ok(()) => Ok(http_server::empty(StatusCode::OK)),
                Err(QueueError::Full) => Err(GatewayError::OutboxFull),
                Err(QueueError::Closed) => Err(GatewayError::Gone),
            }
        }
        Method::GET => Ok(http_server::json(
            StatusCode::OK,
            &serde_json::json!({
                "connectedAt": iso8601(conn.ctx.connected_at),
                "identity": { "sourceIp": conn.ctx.source_ip, "userAgent": conn.ctx.user_agent },
                "lastActiveAt": iso8601(conn.last_active()),
            }),
        )),
        _ => {
            conn.request_close(NORMAL.0, NORMAL.1);
            Ok(http_server::empty(StatusCode::NO_CONTENT))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn paths() {
        assert_eq!(parse_path("/dev/@connections/abc=", "dev").as_deref(), Some("abc="));
        assert_eq!(parse_path("/dev/%40connections/abc%3D", "dev").as_deref(), Some("abc="));
        assert_eq!(parse_path("/dev/%40connections/a%2Fb", "dev").as_deref(), Some("a/b"));
        assert_eq!(parse_path("/dev/@connections/", "dev"), None);
        assert_eq!(parse_path("/prod/@connections/abc", "dev"), None);
        assert_eq!(parse_path("/dev/@connections/a/b", "dev"), None);
        assert_eq!(parse_path("/dev", "dev"), None);
    }

    proptest! {
        #[test]
        fn parse_never_panics(p in "\\PC{0,64}") {
            let _ = parse_path(&p, "dev");
        }

        #[test]
        fn ids_round_trip(id in "[A-Za-z0-9+=_-]{1,32}") {
            let path = format!("/dev/@connections/{id}");
            prop_assert_eq!(parse_path(&path, "dev"), Some(id.clone()));
            let encoded = format!("/dev/%40connections/{}", percent_encoding::utf8_percent_encode(&id, percent_encoding::NON_ALPHANUMERIC));
            prop_assert_eq!(parse_path(&encoded, "dev"), Some(id));
        }
    }
}

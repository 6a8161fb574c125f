//! The `@connections` management API (`/{stage}/@connections/{id}`): PostToConnection,
//! GetConnection and DeleteConnection, with errors shaped the way the AWS SDKs parse them.

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio_tungstenite::tungstenite::Message;

use super::connection::{NORMAL, QueueError};
use super::peers::{self, Owner, Unanswered};
use super::shared::Shared;
use super::sigv4::Signed;
use crate::contract::MAX_POST_BYTES;
use crate::http_server::{self, Body, BodyError};
use crate::timefmt::{iso8601, now_ms};

/// An AWS-style error: `X-Amzn-ErrorType` and a JSON body with `message`.
pub fn aws_error(status: StatusCode, kind: &'static str, message: &str) -> Response<Body> {
    let mut resp = http_server::json(status, &serde_json::json!({ "message": message }));
    resp.headers_mut()
        .insert("x-amzn-errortype", HeaderValue::from_static(kind));
    resp
}

/// The answer when the replica that holds a connection exists but did not answer in time:
/// 503 `ServiceUnavailableException`, which the AWS SDKs retry. Not 410: the connection may
/// well still be open, and a 410 makes `serve` delete its session.
fn owner_unavailable() -> Response<Body> {
    let mut resp = aws_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "ServiceUnavailableException",
        "the gateway replica that holds this connection did not answer in time; try again",
    );
    resp.headers_mut()
        .insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
    resp
}

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
        _ => {
            return aws_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowedException",
                "use POST, GET or DELETE",
            );
        }
    };
    let resp = call(gw, req, &id, &method).await;
    gw.metrics.management(op, resp.status().as_u16());
    resp
}

async fn call(gw: &Shared, req: Request<Incoming>, id: &str, method: &Method) -> Response<Body> {
    // A call another replica forwarded was checked there; it proves where it came from with
    // the peers' marker instead of a signature, and is never forwarded again.
    let from_peer = req.headers().contains_key(peers::FORWARDED);
    // What can be checked before the body arrives is checked first: an unsigned caller
    // never gets a body buffered.
    if let (Some(v), false) = (&gw.config.verifier, from_peer) {
        if let Err(why) = v.precheck(req.headers(), now_ms() / 1000) {
            tracing::info!(reason = %why, "@connections call refused: bad signature");
            return aws_error(StatusCode::FORBIDDEN, "ForbiddenException", "Forbidden");
        }
    }
    let raw_path = req.uri().path().to_string();
    let raw_query = req.uri().query().unwrap_or("").to_string();
    let path_and_query = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let read = match http_server::read_body(req, MAX_POST_BYTES, &gw.config.body).await {
        Ok(v) => v,
        Err(BodyError::TooLarge(_)) => {
            return aws_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "PayloadTooLargeException",
                &format!("Request body exceeded {MAX_POST_BYTES} bytes"),
            );
        }
        Err(BodyError::Busy) => {
            return aws_error(
                StatusCode::TOO_MANY_REQUESTS,
                "LimitExceededException",
                "too many @connections bodies are being received; try again",
            );
        }
        Err(BodyError::TimedOut(_)) => {
            return aws_error(
                StatusCode::REQUEST_TIMEOUT,
                "BadRequestException",
                "the body did not arrive in time",
            );
        }
        Err(BodyError::Read(_)) => {
            return aws_error(StatusCode::BAD_REQUEST, "BadRequestException", "unreadable body");
        }
    };
    let body = &read.bytes;
    if from_peer {
        if gw
            .peers
            .forwarded(method, &raw_path, &read.parts.headers, body, now_ms())
            != Some(true)
        {
            tracing::info!("@connections call refused: a forwarding marker that does not verify");
            return aws_error(StatusCode::FORBIDDEN, "ForbiddenException", "Forbidden");
        }
    } else if let Some(v) = &gw.config.verifier {
        let signed = Signed {
            method: method.as_str(),
            raw_path: &raw_path,
            raw_query: &raw_query,
            headers: &read.parts.headers,
        };
        if let Err(why) = v.verify(&signed, body, now_ms() / 1000) {
            tracing::info!(reason = %why, "@connections call refused: bad signature");
            return aws_error(StatusCode::FORBIDDEN, "ForbiddenException", "Forbidden");
        }
    }
    if !from_peer {
        match gw.peers.owner(id) {
            Owner::Here => {}
            Owner::Nobody => {
                gw.metrics.forward("no_owner");
                return aws_error(StatusCode::GONE, "GoneException", "");
            }
            Owner::Peer(url) => {
                let forwarded = gw
                    .peers
                    .forward(&url, method, &path_and_query, &raw_path, body.clone(), now_ms())
                    .await;
                return match forwarded {
                    Ok(answer) => {
                        gw.metrics.forward("relayed");
                        answer
                    }
                    Err(Unanswered::NoOwner(why)) => {
                        gw.metrics.forward("no_owner");
                        tracing::info!(owner = %url, reason = %why, "no replica holds the connection: its owner does not exist");
                        aws_error(StatusCode::GONE, "GoneException", "")
                    }
                    Err(Unanswered::Unavailable(why)) => {
                        gw.metrics.forward("owner_unavailable");
                        tracing::warn!(owner = %url, reason = %why, "the replica holding the connection did not answer; the caller may retry");
                        owner_unavailable()
                    }
                };
            }
        }
    }
    let Some(conn) = gw.connections.lookup(id) else {
        return aws_error(StatusCode::GONE, "GoneException", "");
    };
    match *method {
        Method::POST => {
            let msg = match String::from_utf8(body.to_vec()) {
                Ok(text) => Message::text(text),
                Err(_) => Message::binary(Bytes::from(body.to_vec())),
            };
            match gw.connections.post(&conn, msg) {
                Ok(()) => http_server::empty(StatusCode::OK),
                Err(QueueError::Full) => aws_error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "LimitExceededException",
                    "the client's outgoing buffer is full",
                ),
                Err(QueueError::Closed) => aws_error(StatusCode::GONE, "GoneException", ""),
            }
        }
        Method::GET => http_server::json(
            StatusCode::OK,
            &serde_json::json!({
                "connectedAt": iso8601(conn.ctx.connected_at),
                "identity": { "sourceIp": conn.ctx.source_ip, "userAgent": conn.ctx.user_agent },
                "lastActiveAt": iso8601(conn.last_active()),
            }),
        ),
        _ => {
            conn.request_close(NORMAL.0, NORMAL.1);
            http_server::empty(StatusCode::NO_CONTENT)
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

//! The gateway's admin port (`--admin-listen`, off by default; 127.0.0.1 unless told otherwise):
//! the live page at `/` (`listing::LIVE_PAGE`), and the JSON it polls, shaped like `serve`'s
//! internal API so the one page works against both: `GET /v1/connections?cursor=&limit=` and
//! `GET /v1/connections/count` (every replica's, through the listing's walk),
//! `POST /v1/connections/{id}/messages` and `DELETE /v1/connections/{id}` (on whichever replica
//! holds the connection). With `--admin-token`, everything but the page itself needs
//! `Authorization: Bearer TOKEN` (compared in constant time); the page reads the token from its
//! URL's fragment (`/#token=...`), which the browser never sends.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

use super::connection::{NORMAL, QueueError};
use super::listing::{count_all, list_all};
use super::peers::{Owner, Unanswered};
use super::shared::Shared;
use crate::contract::MAX_POST_BYTES;
use crate::http_server::{self, Body, Drain};
use crate::lifecycle::Lifecycle;
use crate::listing::{LIVE_PAGE, page_query};
use crate::timefmt::now_ms;

/// Requests in flight on the admin port get this long once the gateway stops.
const ADMIN_DRAIN: Duration = Duration::from_secs(1);

/// Serves the admin port until the lifecycle stops it.
pub async fn serve(shared: Arc<Shared>, listener: TcpListener, lifecycle: Lifecycle, token: Option<String>) -> Drain {
    let token: Option<Arc<str>> = token.map(Into::into);
    let limits = shared.config.http;
    http_server::serve(
        listener,
        move |req, _peer| handle(shared.clone(), req, token.clone()),
        lifecycle,
        limits,
        ADMIN_DRAIN,
    )
    .await
}

fn authorized(headers: &HeaderMap, token: &str) -> bool {
    let Some(value) = headers.get(http::header::AUTHORIZATION) else {
        return false;
    };
    match value.as_bytes().split_at_checked(7) {
        Some((scheme, given)) => scheme.eq_ignore_ascii_case(b"bearer ") && bool::from(given.ct_eq(token.as_bytes())),
        None => false,
    }
}

async fn handle(gw: Arc<Shared>, req: Request<Incoming>, token: Option<Arc<str>>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    if path == "/" && method == Method::GET {
        return http_server::with_body(StatusCode::OK, &http_server::content_type::HTML, LIVE_PAGE);
    }
    if let Some(token) = &token {
        if !authorized(req.headers(), token) {
            return http_server::error(
                StatusCode::UNAUTHORIZED,
                "this port needs Authorization: Bearer with the admin token",
            );
        }
    }
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (method, segments.as_slice()) {
        (Method::GET, ["v1", "connections"]) => {
            let (cursor, limit) = match page_query(req.uri().query()) {
                Ok(q) => q,
                Err(why) => return http_server::error(StatusCode::BAD_REQUEST, &why),
            };
            match list_all(&gw, cursor.as_deref(), limit).await {
                Ok(page) => http_server::json(StatusCode::OK, &serde_json::to_value(page).unwrap_or_default()),
                Err(err) => err.response(),
            }
        }
        (Method::GET, ["v1", "connections", "count"]) => match count_all(&gw).await {
            Ok(totals) => http_server::json(StatusCode::OK, &serde_json::to_value(totals).unwrap_or_default()),
            Err(err) => err.response(),
        },
        (Method::POST, ["v1", "connections", id, "messages"]) => {
            let Some(id) = crate::percent::decode(id) else {
                return http_server::error(StatusCode::BAD_REQUEST, "invalid connection id");
            };
            match http_server::read_body(req, MAX_POST_BYTES, &gw.config.body).await {
                Ok(read) => to_connection(&gw, &id, Method::POST, read.bytes).await,
                Err(e) => super::management::body_error(e).response(),
            }
        }
        (Method::DELETE, ["v1", "connections", id]) => match crate::percent::decode(id) {
            Some(id) => to_connection(&gw, &id, Method::DELETE, Bytes::new()).await,
            None => http_server::error(StatusCode::BAD_REQUEST, "invalid connection id"),
        },
        _ => http_server::error(StatusCode::NOT_FOUND, "no such route on the admin port"),
    }
}

/// A post to or a close of one connection, on the replica that holds it: here, or forwarded
/// to its owner's `@connections` as any call for a connection held elsewhere is.
async fn to_connection(gw: &Shared, id: &str, method: Method, body: Bytes) -> Response<Body> {
    let gone = || http_server::error(StatusCode::GONE, "no such connection");
    let status = match gw.peers.owner(id) {
        Owner::Nobody => return gone(),
        Owner::Here => {
            let Some(conn) = gw.connections.lookup(id) else {
                return gone();
            };
            if method == Method::DELETE {
                conn.request_close(NORMAL.0, NORMAL.1);
                StatusCode::NO_CONTENT
            } else {
                let msg = match String::from_utf8(body.to_vec()) {
                    Ok(text) => Message::text(text),
                    Err(_) => Message::binary(body),
                };
                match gw.connections.post(&conn, msg) {
                    Ok(()) => StatusCode::OK,
                    Err(QueueError::Full) => StatusCode::TOO_MANY_REQUESTS,
                    Err(QueueError::Closed) => return gone(),
                }
            }
        }
        Owner::Peer(url) => {
            let path = format!(
                "/{}/@connections/{}",
                gw.config.model.stage,
                percent_encoding::utf8_percent_encode(id, percent_encoding::NON_ALPHANUMERIC)
            );
            match gw
                .peers
                .forward(&url, &method, &path, &path, None, body, now_ms())
                .await
            {
                Ok(resp) => resp.status(),
                Err(Unanswered::NoOwner(_)) => return gone(),
                Err(Unanswered::Unavailable(_)) => StatusCode::SERVICE_UNAVAILABLE,
            }
        }
    };
    match status {
        StatusCode::OK => http_server::json(StatusCode::OK, &serde_json::json!({ "delivered": true })),
        StatusCode::NO_CONTENT => http_server::empty(StatusCode::NO_CONTENT),
        StatusCode::GONE => gone(),
        other => http_server::error(other, "the connection's replica refused the call"),
    }
}

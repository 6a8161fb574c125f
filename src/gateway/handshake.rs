//! The WebSocket handshake on `/{stage}`: the request is checked (RFC 6455 §4.2.1), a slot is
//! reserved, `$connect` (its authorizer, then its integration) decides, and only then does the client get its 101, confirming the
//! subprotocol the integration chose when the client offered it. The connection's
//! task then runs it until it ends, and always reports `$disconnect` for a connection that
//! `$connect` accepted, even one whose client left before the upgrade.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use super::connection::{self, ABNORMAL, ClientMessage, ConnHandle, Ctx, GOING_AWAY, NORMAL, Reply};
use super::connections::Slot;
use super::error::GatewayError;
use super::events;
use super::ids;
use super::shared::Shared;
use crate::contract;
use crate::http_server::{self, Body};
use crate::lifecycle::Lifecycle;
use crate::timefmt::now_ms;

/// What a valid handshake request carries for `$connect`.
#[derive(Debug)]
pub struct HandshakeRequest {
    pub key: String,
    pub host: String,
    pub user_agent: String,
    /// Headers with lowercase names (values that are not visible ASCII are left out).
    pub headers: HashMap<String, String>,
    /// The query string, decoded.
    pub query: HashMap<String, String>,
}

fn header_str<B>(req: &Request<B>, name: impl http::header::AsHeaderName) -> Option<&str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

/// The length of the URL the client connected to: scheme, host and path with query. The
/// gateway serves plain TCP (TLS ends in front of it), so the scheme is `wss` when a proxy says
/// it received HTTPS (`X-Forwarded-Proto`) and `ws` otherwise.
fn url_length<B>(req: &Request<B>) -> usize {
    let scheme = match header_str(req, "x-forwarded-proto") {
        Some(p) if p.eq_ignore_ascii_case("https") || p.eq_ignore_ascii_case("wss") => "wss://",
        _ => "ws://",
    };
    let path = req.uri().path_and_query().map(|p| p.as_str().len()).unwrap_or(1);
    scheme.len() + header_str(req, header::HOST).map(str::len).unwrap_or(0) + path
}

/// Reads a WebSocket handshake request (RFC 6455 §4.2.1), or says which status refuses it.
pub fn parse_handshake<B>(req: &Request<B>) -> Result<HandshakeRequest, GatewayError> {
    let has = |name: header::HeaderName, token: &str| {
        req.headers()
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    };
    if req.method() != http::Method::GET || !has(header::CONNECTION, "upgrade") || !has(header::UPGRADE, "websocket") {
        return Err(GatewayError::NotWebSocket);
    }
    if url_length(req) > contract::MAX_URL_CHARS {
        return Err(GatewayError::UriTooLong);
    }
    let key = match header_str(req, header::SEC_WEBSOCKET_KEY) {
        Some(k) if header_str(req, header::SEC_WEBSOCKET_VERSION) == Some("13") => k.to_string(),
        _ => return Err(GatewayError::BadHandshake),
    };
    Ok(HandshakeRequest {
        key,
        host: header_str(req, header::HOST).unwrap_or_default().to_string(),
        user_agent: header_str(req, header::USER_AGENT).unwrap_or_default().to_string(),
        headers: handshake_headers(req.headers()),
        query: crate::percent::query_pairs(req.uri().query().unwrap_or("")).collect(),
    })
}

/// The handshake's headers by lowercase name. A repeated `Sec-WebSocket-Protocol` is one list
/// (RFC 6455 §4.1 lets a client send the offer in several lines; HTTP joins them with commas);
/// any other repeated header keeps its last value.
fn handshake_headers(headers: &http::HeaderMap) -> HashMap<String, String> {
    let mut out = HashMap::with_capacity(headers.keys_len());
    for (k, v) in headers {
        let Ok(v) = v.to_str() else { continue };
        if k == header::SEC_WEBSOCKET_PROTOCOL {
            if let Some(offered) = out.get_mut(k.as_str()) {
                let offered: &mut String = offered;
                offered.push_str(", ");
                offered.push_str(v);
                continue;
            }
        }
        out.insert(k.as_str().to_string(), v.to_string());
    }
    out
}

/// The subprotocols a handshake offered, in order (`Sec-WebSocket-Protocol`, comma-separated).
pub fn offered_subprotocols(offer: Option<&str>) -> impl Iterator<Item = &str> {
    offer
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
}

/// Checks the subprotocol the `$connect` integration chose against the offer: `Ok(None)` when it
/// chose none (an empty value is none), `Ok(Some)` for exactly one offered protocol, `Err` for
/// anything else (one the client did not offer, or a list).
pub fn chosen_subprotocol(offer: Option<&str>, chosen: Option<&HeaderValue>) -> Result<Option<HeaderValue>, ()> {
    let Some(chosen) = chosen else { return Ok(None) };
    let text = chosen.to_str().map_err(|_| ())?.trim();
    if text.is_empty() {
        return Ok(None);
    }
    if offered_subprotocols(offer).any(|p| p == text) {
        HeaderValue::from_str(text).map(Some).map_err(|_| ())
    } else {
        Err(())
    }
}

/// The 101 answer that completes a handshake.
fn switching_protocols(key: &str, subprotocol: Option<HeaderValue>) -> Response<Body> {
    let mut resp = http_server::empty(StatusCode::SWITCHING_PROTOCOLS);
    let h = resp.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(v) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    if let Some(p) = subprotocol {
        h.insert(header::SEC_WEBSOCKET_PROTOCOL, p);
    }
    resp
}

/// Handles an upgrade request on `/{stage}`: `$connect` first, then the 101.
pub async fn handshake(
    gw: Arc<Shared>,
    mut req: Request<Incoming>,
    peer: SocketAddr,
    lifecycle: Lifecycle,
) -> Response<Body> {
    let hs = match parse_handshake(&req) {
        Ok(hs) => hs,
        Err(err) => return err.response(),
    };
    if let Err(refusal) = super::sigv4::authorize_connect(&gw, &req) {
        return refusal.response();
    }
    let key = hs.key;
    if lifecycle.is_draining() {
        return GatewayError::ShuttingDown.response();
    }
    let Some(slot) = gw.connections.reserve() else {
        gw.metrics.connect("refused_limit");
        return GatewayError::TooManyConnections.response();
    };
    let mut ctx = Ctx {
        id: ids::connection_id(gw.peers.ordinal()),
        connected_at: now_ms(),
        domain: gw.config.domain_name.clone().unwrap_or(hs.host),
        source_ip: peer.ip().to_string(),
        user_agent: hs.user_agent,
        authorizer: None,
    };
    let (handshake_headers, query) = (hs.headers, hs.query);
    let on_upgrade = hyper::upgrade::on(&mut req);
    let pending = Pending::new(gw.clone(), &ctx.id);

    // `$connect` and everything after it run in their own task. hyper drops this future when
    // the client goes away mid-handshake; the task still learns how `$connect` ended, and
    // a connection that `$connect` accepted but that never opened gets its `$disconnect`, so
    // no session is left behind.
    let (answer, answered) = oneshot::channel::<Response<Body>>();
    // The connect and disconnect calls are boxed: awaited inline they would size this task by
    // the largest of them.
    let fut = async move {
        // `$connect`'s authorizer, when it has one, runs in here first.
        let subprotocol = match Box::pin(events::connect(&gw, &mut ctx, &handshake_headers, &query)).await {
            Ok(subprotocol) => subprotocol,
            Err(refusal) => {
                let accepted = matches!(refusal, GatewayError::SubprotocolNotOffered);
                let _ = answer.send(refusal.response());
                // The backend accepted this one (its session exists): tell it the connection
                // never opened, as for a client that left during `$connect`.
                if accepted {
                    Box::pin(events::disconnect(&gw, &ctx, ABNORMAL, "Subprotocol not offered")).await;
                }
                return;
            }
        };
        drop((handshake_headers, query));
        gw.metrics.connect("accepted");
        if answer.send(switching_protocols(&key, subprotocol)).is_err() {
            tracing::debug!(connection_id = %ctx.id, "client left during $connect");
            Box::pin(events::disconnect(
                &gw,
                &ctx,
                ABNORMAL,
                "Client left during the handshake",
            ))
            .await;
            return;
        }
        match on_upgrade.await {
            Ok(upgraded) => {
                let ctx = Arc::new(ctx);
                let handle = gw.connections.handle(ctx.clone(), gw.config.outbound_queue);
                let (max_message, max_frame) = (gw.config.max_message_bytes, gw.config.max_frame_bytes);
                let ws = Box::pin(connection::accept(upgraded, handle.clone(), max_message, max_frame)).await;
                gw.connections.register(handle.clone());
                // A DELETE that came during the handshake closes it now.
                if pending.end() {
                    handle.request_close(NORMAL.0, NORMAL.1);
                }
                // The gateway asks every registered connection to close when it stops; one
                // registered after that sees the flag here.
                if lifecycle.is_stopping() {
                    handle.request_close(GOING_AWAY.0, GOING_AWAY.1);
                }
                // Its own task: this one's state (the handshake's headers and query among it)
                // would otherwise stay allocated for as long as the connection is open.
                tokio::spawn(open(gw, ws, ctx, handle, slot));
            }
            Err(err) => {
                tracing::debug!(error = %err, "upgrade failed after $connect");
                Box::pin(events::disconnect(&gw, &ctx, ABNORMAL, "Upgrade failed")).await;
            }
        }
    };
    tokio::spawn(fut);
    answered
        .await
        .unwrap_or_else(|_| GatewayError::HandshakeFailed.response())
}

/// The life of an open connection, once registered: served, unregistered, closed,
/// `$disconnect`.
///
/// This future is most of what an idle connection costs, and a task is allocated at the size
/// of its largest state. So it is an `async` block over its arguments, which it uses in place
/// (an `async fn` would keep a second copy of each), the closing handshake and `$disconnect`
/// run boxed, and an idle connection waits in the state that holds little beside the socket
/// (see `connection::run`).
#[expect(clippy::manual_async_fn, reason = "an async fn keeps a second copy of its arguments")]
fn open(
    gw: Arc<Shared>,
    mut ws: connection::Socket,
    ctx: Arc<Ctx>,
    handle: Arc<ConnHandle>,
    slot: Slot,
) -> impl Future<Output = ()> + Send {
    async move {
        let on_message = |frame: ClientMessage| -> Reply { Box::pin(events::message(gw.clone(), ctx.clone(), frame)) };
        let binary_frames = gw.config.binary_frames;
        let ending = connection::run(&mut ws, &handle, gw.config.write_timeout, binary_frames, on_message).await;
        // Unregister first: from here on @connections answers 410.
        gw.connections.unregister(handle.id());
        handle.close_queue();
        let connection::Closed {
            code,
            reason,
            peer_done,
        } = Box::pin(ending.finish(&mut ws)).await;
        if peer_done {
            // The client sent its Close frame and sends nothing more: close at once.
            crate::http_server::close_at_once(ws);
        } else {
            // Closes lingering (see http_server::LingeringStream), so a Close frame just sent
            // is not lost to a reset caused by bytes the client is still sending.
            drop(ws);
        }
        tracing::debug!(connection_id = %ctx.id, code, reason = %reason, "connection closed");
        Box::pin(events::disconnect(&gw, &ctx, code, &reason)).await;
        drop(slot);
    }
}

/// A connection in its handshake, in the registry's pending set until [`Pending::end`] or
/// until dropped (a handshake that never opened).
struct Pending {
    gw: Arc<Shared>,
    id: String,
}

impl Pending {
    fn new(gw: Arc<Shared>, id: &str) -> Self {
        gw.connections.begin_pending(id);
        Pending { gw, id: id.to_string() }
    }

    /// Leaves the pending set: whether a DELETE asked for the connection meanwhile.
    fn end(&self) -> bool {
        self.gw.connections.end_pending(&self.id)
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.gw.connections.end_pending(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::future::future_size;
    use proptest::prelude::*;

    fn value(s: &str) -> HeaderValue {
        HeaderValue::from_str(s).unwrap()
    }

    #[test]
    fn the_choice_must_be_one_offered_protocol() {
        let offer = Some("graphql-transport-ws, graphql-ws");
        let chosen = |c: &str| chosen_subprotocol(offer, Some(&value(c)));
        assert_eq!(chosen("graphql-ws"), Ok(Some(value("graphql-ws"))));
        assert_eq!(chosen(" graphql-ws "), Ok(Some(value("graphql-ws"))));
        assert_eq!(chosen(""), Ok(None));
        assert_eq!(chosen("GRAPHQL-WS"), Err(()));
        assert_eq!(chosen("graphql-ws, graphql-transport-ws"), Err(()));
        assert_eq!(chosen_subprotocol(None, Some(&value("chat"))), Err(()));
        assert_eq!(chosen_subprotocol(offer, None), Ok(None));
    }

    #[test]
    fn repeated_offers_are_one_list() {
        let mut h = http::HeaderMap::new();
        h.append(header::SEC_WEBSOCKET_PROTOCOL, value("a, b"));
        h.append(header::SEC_WEBSOCKET_PROTOCOL, value("c"));
        h.append(header::USER_AGENT, value("one"));
        h.append(header::USER_AGENT, value("two"));
        let out = handshake_headers(&h);
        assert_eq!(out["sec-websocket-protocol"], "a, b, c");
        assert_eq!(out["user-agent"], "two");
        assert_eq!(
            offered_subprotocols(Some(&out["sec-websocket-protocol"])).collect::<Vec<_>>(),
            ["a", "b", "c"]
        );
    }

    /// An open connection's task holds this future for as long as the connection is open: it is
    /// most of what an idle connection costs (see `open`).
    #[test]
    fn an_open_connection_task_stays_small() {
        let open = future_size(open);
        assert!(open <= 664, "the open connection's future is {open} bytes");
    }

    proptest! {
        /// Whatever the offer and the answer, a confirmed protocol is exactly one offered one.
        #[test]
        fn a_confirmed_protocol_was_offered(offer in "[a-z, ]{0,24}", choice in "[a-z, ]{0,12}") {
            if let Ok(v) = HeaderValue::from_str(&choice) {
                if let Ok(Some(p)) = chosen_subprotocol(Some(&offer), Some(&v)) {
                    let p = p.to_str().unwrap();
                    prop_assert!(offered_subprotocols(Some(&offer)).any(|o| o == p));
                    prop_assert!(!p.contains(','));
                }
            }
        }
    }
}

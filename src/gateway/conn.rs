//! One client connection: the handshake (which waits for `$connect`), then a single task that
//! reads frames in order, calls the integration for each message (one at a time), writes
//! replies and `@connections` posts, enforces the limits, and runs `$disconnect` at the end.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::sync::{Notify, oneshot};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::error::{Error as WsError, ProtocolError};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Message, handshake::derive_accept_key};

use super::integration::{self, Outcome};
use super::mapping::{self, Inputs};
use super::selection;
use super::timefmt::{clf, now_ms};
use super::{Gateway, ids};
use crate::lifecycle::Lifecycle;
use crate::server::{self, Body};

/// Close codes and reasons the gateway uses.
pub const NORMAL: (u16, &str) = (1000, "Connection Closed Normally");
pub const GOING_AWAY: (u16, &str) = (1001, "Going away");
pub const UNSUPPORTED: (u16, &str) = (1003, "Binary frames are not supported");
pub const TOO_BIG: (u16, &str) = (1009, "Message too big");
pub const PROTOCOL_ERROR: (u16, &str) = (1002, "Protocol error");
pub const INVALID_PAYLOAD: (u16, &str) = (1007, "Invalid frame payload data");
/// No close frame was received (the TCP connection dropped).
pub const ABNORMAL: u16 = 1006;
/// A close frame without a status.
pub const NO_STATUS: u16 = 1005;

/// What the rest of the gateway knows about a live connection.
pub struct ConnHandle {
    /// The connection's context, shared with its task (one copy of the User-Agent).
    pub ctx: Arc<Ctx>,
    last_active: AtomicI64,
    /// Frames waiting for the client, bounded by `capacity`. A plain deque allocates nothing
    /// until a frame is queued, which keeps idle connections small.
    outbound: Mutex<Outbound>,
    outbound_notify: Notify,
    close: Mutex<Option<(u16, String)>>,
    close_notify: Notify,
}

struct Outbound {
    frames: std::collections::VecDeque<Message>,
    capacity: usize,
    closed: bool,
}

/// Why a frame could not be queued.
#[derive(Debug, PartialEq, Eq)]
pub enum QueueError {
    /// The client is not taking frames fast enough (429).
    Full,
    /// The connection is closing or closed (410).
    Closed,
}

impl ConnHandle {
    pub fn id(&self) -> &str {
        &self.ctx.id
    }

    pub fn touch(&self) {
        self.last_active.store(now_ms(), Ordering::Relaxed);
    }

    pub fn last_active(&self) -> i64 {
        self.last_active.load(Ordering::Relaxed)
    }

    /// Queues a frame for the client.
    pub fn push(&self, msg: Message) -> Result<(), QueueError> {
        let mut q = self.outbound.lock().unwrap_or_else(|p| p.into_inner());
        if q.closed {
            return Err(QueueError::Closed);
        }
        if q.frames.len() >= q.capacity {
            return Err(QueueError::Full);
        }
        q.frames.push_back(msg);
        drop(q);
        self.outbound_notify.notify_one();
        Ok(())
    }

    fn pop(&self) -> Option<Message> {
        let mut q = self.outbound.lock().unwrap_or_else(|p| p.into_inner());
        let msg = q.frames.pop_front();
        if q.frames.is_empty() && q.frames.capacity() > 0 {
            // Give the memory back once the burst is over.
            q.frames = std::collections::VecDeque::new();
        }
        msg
    }

    fn close_queue(&self) {
        let mut q = self.outbound.lock().unwrap_or_else(|p| p.into_inner());
        q.closed = true;
        q.frames = std::collections::VecDeque::new();
    }

    /// Asks the connection to close with this status (the first request wins).
    pub fn request_close(&self, code: u16, reason: &str) {
        let mut c = self.close.lock().unwrap_or_else(|p| p.into_inner());
        if c.is_none() {
            *c = Some((code, reason.to_string()));
        }
        drop(c);
        self.close_notify.notify_one();
    }

    fn take_close(&self) -> Option<(u16, String)> {
        self.close.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// Protocol limits for client connections: small buffers (memory per idle connection), frame
/// and message limits (1009 past them).
pub fn ws_config(max_message_bytes: usize, max_frame_bytes: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        // Read in small steps: the buffer is allocated per connection up front.
        .read_buffer_size(1024)
        .write_buffer_size(0)
        .max_write_buffer_size(max_message_bytes * 2 + 4096)
        .max_message_size(Some(max_message_bytes))
        .max_frame_size(Some(max_frame_bytes))
}

/// The 101 answer that completes a handshake.
fn switching_protocols(key: &str, subprotocol: Option<HeaderValue>) -> Response<Body> {
    let mut resp = server::empty(StatusCode::SWITCHING_PROTOCOLS);
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

/// The gateway-generated error frame.
pub fn error_frame(message: &str, connection_id: &str, request_id: &str) -> String {
    serde_json::json!({ "message": message, "connectionId": connection_id, "requestId": request_id }).to_string()
}

fn header_str(req: &Request<Incoming>, name: impl http::header::AsHeaderName) -> Option<&str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

fn is_upgrade(req: &Request<Incoming>) -> bool {
    let has = |name: header::HeaderName, token: &str| {
        req.headers()
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    };
    req.method() == http::Method::GET && has(header::CONNECTION, "upgrade") && has(header::UPGRADE, "websocket")
}

/// Everything a `$connect`/message/`$disconnect` call needs from the connection.
pub struct Ctx {
    pub id: String,
    pub connected_at: i64,
    pub domain: String,
    pub source_ip: String,
    pub user_agent: String,
}

impl Gateway {
    /// Context variables for one event.
    pub(super) fn context(
        &self,
        c: &Ctx,
        event: &'static str,
        route: &str,
        request_id: &str,
        extra: &[(&'static str, String)],
    ) -> BTreeMap<&'static str, String> {
        let now = now_ms();
        let mut m = BTreeMap::new();
        m.insert("connectionId", c.id.clone());
        m.insert("connectedAt", c.connected_at.to_string());
        m.insert("domainName", c.domain.clone());
        m.insert("eventType", event.to_string());
        m.insert("routeKey", route.to_string());
        m.insert("requestId", request_id.to_string());
        m.insert("extendedRequestId", request_id.to_string());
        m.insert("apiId", self.config.model.api_id.clone());
        m.insert("identity.sourceIp", c.source_ip.clone());
        m.insert("identity.userAgent", c.user_agent.clone());
        m.insert("requestTime", clf(now));
        m.insert("requestTimeEpoch", now.to_string());
        m.insert("stage", self.config.model.stage.clone());
        for (k, v) in extra {
            m.insert(k, v.clone());
        }
        m
    }

    fn timeout_for(&self, integration: &super::template::Integration) -> Duration {
        self.config
            .integration_timeout
            .or(integration.timeout_ms.map(Duration::from_millis))
            .unwrap_or(Duration::from_millis(crate::contract::INTEGRATION_TIMEOUT_MS))
    }

    /// Calls a route's integration, recording metrics.
    async fn invoke(&self, route: &super::template::Route, inputs: &Inputs<'_>, body: Bytes) -> Option<Outcome> {
        let integration = route.integration.as_ref()?;
        let mapped = mapping::apply(&integration.parameters, inputs);
        let (outcome, took) =
            integration::call(&self.client, integration, &mapped, body, self.timeout_for(integration)).await;
        self.metrics.integration(&route.key, outcome.kind(), took);
        if let Outcome::Failed(reason) = &outcome {
            if let Some(alike) = self.warn_integration.admit() {
                tracing::warn!(route = %route.key, reason = %reason, alike_since_last = alike, "integration call failed");
            }
        }
        Some(outcome)
    }

    /// Handles an upgrade request on `/{stage}`: `$connect` first, then the 101.
    pub(super) async fn handshake(
        self: Arc<Self>,
        mut req: Request<Incoming>,
        peer: SocketAddr,
        lifecycle: Lifecycle,
    ) -> Response<Body> {
        if !is_upgrade(&req) {
            return server::error(StatusCode::UPGRADE_REQUIRED, "this is a WebSocket endpoint");
        }
        let key = match header_str(&req, header::SEC_WEBSOCKET_KEY) {
            Some(k) if header_str(&req, header::SEC_WEBSOCKET_VERSION) == Some("13") => k.to_string(),
            _ => {
                return server::error(
                    StatusCode::BAD_REQUEST,
                    "missing Sec-WebSocket-Key or unsupported version",
                );
            }
        };
        if lifecycle.is_draining() {
            return server::error(StatusCode::SERVICE_UNAVAILABLE, "the gateway is shutting down");
        }
        let Some(slot) = self.reserve_slot() else {
            self.metrics.connect("refused_limit");
            return server::json(
                StatusCode::TOO_MANY_REQUESTS,
                &serde_json::json!({ "message": "LimitExceededException: the gateway is at its maximum connection count" }),
            );
        };
        let ctx = Ctx {
            id: ids::new_id(),
            connected_at: now_ms(),
            domain: self
                .config
                .domain_name
                .clone()
                .or_else(|| header_str(&req, header::HOST).map(str::to_string))
                .unwrap_or_default(),
            source_ip: peer.ip().to_string(),
            user_agent: header_str(&req, header::USER_AGENT).unwrap_or_default().to_string(),
        };
        let handshake_headers: HashMap<String, String> = req
            .headers()
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
            .collect();
        let query: HashMap<String, String> = crate::percent::query_pairs(req.uri().query().unwrap_or("")).collect();
        let on_upgrade = hyper::upgrade::on(&mut req);

        // `$connect` and everything after it run in their own task. hyper drops this future when
        // the client goes away mid-handshake; the task still learns how `$connect` ended, and
        // a connection that `$connect` accepted but that never opened gets its `$disconnect`, so
        // no session is left behind.
        let (answer, answered) = oneshot::channel::<Response<Body>>();
        let gw = self.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let subprotocol = match gw.run_connect(&ctx, &handshake_headers, &query).await {
                Ok(subprotocol) => subprotocol,
                Err(refusal) => {
                    let _ = answer.send(refusal);
                    return;
                }
            };
            drop((handshake_headers, query));
            gw.metrics.connect("accepted");
            if answer.send(switching_protocols(&key, subprotocol)).is_err() {
                tracing::debug!(connection_id = %ctx.id, "client left during $connect");
                gw.disconnect(&ctx, ABNORMAL, "Client left during the handshake").await;
                return;
            }
            match on_upgrade.await {
                Ok(upgraded) => {
                    let config = gw.ws_config();
                    let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config)).await;
                    let ctx = Arc::new(ctx);
                    let handle = Arc::new(ConnHandle {
                        ctx: ctx.clone(),
                        last_active: AtomicI64::new(ctx.connected_at),
                        outbound: Mutex::new(Outbound {
                            frames: std::collections::VecDeque::new(),
                            capacity: gw.config.outbound_queue,
                            closed: false,
                        }),
                        outbound_notify: Notify::new(),
                        close: Mutex::new(None),
                        close_notify: Notify::new(),
                    });
                    gw.register(handle.clone());
                    gw.clone().run(ws, handle, lifecycle).await;
                }
                Err(err) => {
                    tracing::debug!(error = %err, "upgrade failed after $connect");
                    gw.disconnect(&ctx, ABNORMAL, "Upgrade failed").await;
                }
            }
        });
        answered
            .await
            .unwrap_or_else(|_| server::error(StatusCode::INTERNAL_SERVER_ERROR, "handshake failed"))
    }

    /// Runs `$connect`: `Ok` with the subprotocol to confirm, or the refusal to answer.
    async fn run_connect(
        &self,
        ctx: &Ctx,
        headers: &HashMap<String, String>,
        query: &HashMap<String, String>,
    ) -> Result<Option<HeaderValue>, Response<Body>> {
        let Some(route) = self.config.model.routes.get("$connect") else {
            return Ok(None);
        };
        let request_id = ids::new_id();
        let context = self.context(ctx, "CONNECT", "$connect", &request_id, &[]);
        let inputs = Inputs {
            context: &context,
            handshake: Some((headers, query)),
            body: None,
            stage_variables: &self.config.model.stage_variables,
        };
        match self.invoke(route, &inputs, Bytes::new()).await {
            None => Ok(None),
            Some(Outcome::Response { status, headers, .. }) if status.is_success() => {
                Ok(headers.get(header::SEC_WEBSOCKET_PROTOCOL).cloned())
            }
            Some(Outcome::Response { status, .. }) => {
                self.metrics.connect("rejected");
                Err(server::json(
                    status,
                    &serde_json::json!({ "message": "Forbidden", "connectionId": ctx.id, "requestId": request_id }),
                ))
            }
            Some(Outcome::Timeout) => {
                self.metrics.connect("failed");
                Err(server::json(
                    StatusCode::GATEWAY_TIMEOUT,
                    &serde_json::json!({ "message": "Endpoint request timed out" }),
                ))
            }
            Some(Outcome::Failed(_)) => {
                self.metrics.connect("failed");
                Err(server::json(
                    StatusCode::BAD_GATEWAY,
                    &serde_json::json!({ "message": "Internal server error" }),
                ))
            }
        }
    }

    fn ws_config(&self) -> WebSocketConfig {
        ws_config(self.config.max_message_bytes, self.config.max_frame_bytes)
    }

    /// The message path: route selection, the integration, and the frame to send back.
    async fn message(self: Arc<Self>, ctx: Arc<Ctx>, text: String) -> Option<String> {
        self.metrics.message();
        let model = &self.config.model;
        let request_id = ids::new_id();
        let Some(key) = selection::select(&model.selection, &text, |k| model.routes.contains_key(k), "$default") else {
            return Some(error_frame("Forbidden", &ctx.id, &request_id));
        };
        let route = model.routes.get(&key)?;
        let body_json = serde_json::from_str::<serde_json::Value>(&text).ok();
        let context = self.context(&ctx, "MESSAGE", &key, &request_id, &[("messageId", ids::new_id())]);
        let inputs = Inputs {
            context: &context,
            handshake: None,
            body: body_json.as_ref(),
            stage_variables: &model.stage_variables,
        };
        match self.invoke(route, &inputs, Bytes::from(text)).await? {
            Outcome::Response { body, .. } => {
                if !route.two_way || body.is_empty() {
                    return None;
                }
                match String::from_utf8(body.to_vec()) {
                    Ok(s) => Some(s),
                    Err(_) => Some(error_frame("Internal server error", &ctx.id, &request_id)),
                }
            }
            Outcome::Timeout => Some(error_frame("Endpoint request timed out", &ctx.id, &request_id)),
            Outcome::Failed(_) => Some(error_frame("Internal server error", &ctx.id, &request_id)),
        }
    }

    /// Runs `$disconnect` (best effort).
    async fn disconnect(&self, ctx: &Ctx, code: u16, reason: &str) {
        let Some(route) = self.config.model.routes.get("$disconnect") else {
            return;
        };
        let request_id = ids::new_id();
        let context = self.context(
            ctx,
            "DISCONNECT",
            "$disconnect",
            &request_id,
            &[
                ("disconnectStatusCode", code.to_string()),
                ("disconnectReason", reason.to_string()),
            ],
        );
        let inputs = Inputs {
            context: &context,
            handshake: None,
            body: None,
            stage_variables: &self.config.model.stage_variables,
        };
        let _ = self.invoke(route, &inputs, Bytes::new()).await;
    }

    /// The connection's task.
    async fn run(
        self: Arc<Self>,
        mut ws: WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>,
        handle: Arc<ConnHandle>,
        lifecycle: Lifecycle,
    ) {
        let ctx = handle.ctx.clone();
        let idle = self.config.idle_timeout;
        let max_deadline = tokio::time::Instant::now() + self.config.max_connection_duration;
        let mut inflight: Option<std::pin::Pin<Box<dyn std::future::Future<Output = Option<String>> + Send>>> = None;
        let write_timeout = self.config.write_timeout;
        let ending: Ending = loop {
            let idle_deadline = {
                let since = (now_ms() - handle.last_active()).max(0) as u64;
                tokio::time::Instant::now() + idle.saturating_sub(Duration::from_millis(since))
            };
            tokio::select! {
                biased;
                _ = handle.close_notify.notified() => {
                    if let Some((c, r)) = handle.take_close() {
                        break Ending::ByUs(c, r);
                    }
                }
                _ = lifecycle.stopped() => break Ending::by_us(GOING_AWAY),
                _ = tokio::time::sleep_until(max_deadline) => break Ending::by_us(GOING_AWAY),
                _ = handle.outbound_notify.notified() => {
                    let mut failed = None;
                    while let Some(msg) = handle.pop() {
                        handle.touch();
                        if let Err(e) = write(&mut ws, msg, write_timeout).await {
                            failed = Some(e);
                            break;
                        }
                    }
                    if let Some(f) = failed {
                        break f;
                    }
                }
                reply = async { match inflight.as_mut() { Some(f) => f.await, None => std::future::pending().await } } => {
                    inflight = None;
                    if let Some(frame) = reply {
                        handle.touch();
                        if let Err(e) = write(&mut ws, Message::text(frame), write_timeout).await {
                            break e;
                        }
                    }
                }
                frame = ws.next(), if inflight.is_none() => match frame {
                    Some(Ok(Message::Text(t))) => {
                        handle.touch();
                        inflight = Some(Box::pin(self.clone().message(ctx.clone(), t.as_str().to_string())));
                    }
                    Some(Ok(Message::Binary(_))) => break Ending::by_us(UNSUPPORTED),
                    Some(Ok(Message::Close(frame))) => {
                        let (c, r) = frame.map(|f| (u16::from(f.code), f.reason.to_string())).unwrap_or((NO_STATUS, String::new()));
                        break Ending::ByPeer(c, r);
                    }
                    Some(Ok(_)) => {} // ping/pong: answered by the protocol layer, not activity
                    Some(Err(err)) => break Ending::from_read_error(err),
                    None => break Ending::Dropped,
                },
                _ = tokio::time::sleep_until(idle_deadline) => {
                    if (now_ms() - handle.last_active()).max(0) as u128 >= idle.as_millis() {
                        break Ending::ByUs(GOING_AWAY.0, "Idle timeout".to_string());
                    }
                }
            }
        };
        // Unregister first: from here on @connections answers 410.
        self.unregister(handle.id());
        handle.close_queue();
        let (code, reason) = ending.finish(&mut ws).await;
        // Dropping the socket closes it lingering (see server::LingeringStream), so a Close
        // frame just sent is not lost to a reset.
        drop(ws);
        tracing::debug!(connection_id = %ctx.id, code, reason = %reason, "connection closed");
        self.disconnect(&ctx, code, &reason).await;
    }
}

/// How a connection ended, and what the closing handshake still owes the client.
enum Ending {
    /// The gateway closes: send a Close frame with this status and wait briefly for the reply.
    ByUs(u16, String),
    /// The client sent a Close frame: answer it (RFC 6455 §5.5.1) with the same status.
    ByPeer(u16, String),
    /// The client broke the protocol: send a Close frame with this status, expect nothing back.
    Violation(u16, String),
    /// The connection is gone (reset, write failure): nothing can be sent.
    Dropped,
}

impl Ending {
    fn by_us((code, reason): (u16, &str)) -> Self {
        Ending::ByUs(code, reason.to_string())
    }

    /// Maps a read error: limits give 1009, invalid UTF-8 gives 1007 and other protocol
    /// violations (unmasked frames, reserved opcodes or bits, oversized control frames) give
    /// 1002; a dropped connection gives nothing to send.
    fn from_read_error(err: WsError) -> Self {
        match err {
            WsError::Capacity(_) => Ending::by_us(TOO_BIG),
            WsError::Utf8(_) => Ending::Violation(INVALID_PAYLOAD.0, INVALID_PAYLOAD.1.to_string()),
            WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => Ending::Dropped,
            WsError::Protocol(_) => Ending::Violation(PROTOCOL_ERROR.0, PROTOCOL_ERROR.1.to_string()),
            _ => Ending::Dropped,
        }
    }

    /// Completes the closing handshake as far as the client allows; returns the status and
    /// reason `$disconnect` reports.
    async fn finish(self, ws: &mut WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>) -> (u16, String) {
        let bound = Duration::from_secs(2);
        match self {
            Ending::ByUs(code, reason) => {
                let frame = CloseFrame {
                    code: CloseCode::from(code),
                    reason: reason.clone().into(),
                };
                let _ = tokio::time::timeout(bound, async {
                    if ws.send(Message::Close(Some(frame))).await.is_ok() {
                        // Wait for the client's Close reply, briefly.
                        while let Some(Ok(m)) = ws.next().await {
                            if m.is_close() {
                                break;
                            }
                        }
                    }
                })
                .await;
                (code, reason)
            }
            Ending::ByPeer(code, reason) => {
                // The protocol layer queued the reply when it read the client's Close frame;
                // flushing sends it.
                let _ = tokio::time::timeout(bound, SinkExt::flush(ws)).await;
                (code, reason)
            }
            Ending::Violation(code, reason) => {
                let frame = CloseFrame {
                    code: CloseCode::from(code),
                    reason: reason.clone().into(),
                };
                let _ = tokio::time::timeout(bound, ws.send(Message::Close(Some(frame)))).await;
                (code, reason)
            }
            Ending::Dropped => (ABNORMAL, String::new()),
        }
    }
}

/// Writes one frame within the write timeout.
async fn write(
    ws: &mut WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>,
    msg: Message,
    within: Duration,
) -> Result<(), Ending> {
    match tokio::time::timeout(within, ws.send(msg)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(Ending::Dropped),
        Err(_) => Err(Ending::ByUs(GOING_AWAY.0, "Write timed out".to_string())),
    }
}

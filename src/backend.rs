//! `socketless serve`: the stateless REST backend a WebSocket gateway calls for every connect,
//! message and disconnect (public port), plus the internal API other services use to push to,
//! close, look up and broadcast to connections (internal port, never behind the ingress).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use prometheus_client::registry::Registry;
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::cache::{Lookup, SessionCache};
use crate::contract;
use crate::handler::{MessageHandler, RequestContext};
use crate::lifecycle::Lifecycle;
use crate::metrics::{self, BackendMetrics};
use crate::push::{PushOutcome, Pusher};
use crate::server::{self, Body, BodyError, BodyPolicy};
use crate::store::{Created, Session, SessionStore, StoreError};

/// How replies reach the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyMode {
    /// In the HTTP response; the gateway forwards it when the route has a route response.
    Sync,
    /// Through `@connections` PostToConnection; the HTTP response is empty.
    Async,
}

/// Behaviour settings of the backend.
#[derive(Clone)]
pub struct BackendSettings {
    pub shared_secret: Option<String>,
    pub reply_mode: ReplyMode,
    pub max_body_bytes: usize,
    /// A session item expires this long after its connection opened (DynamoDB TTL).
    pub session_ttl: Duration,
    pub broadcast_concurrency: usize,
}

impl std::fmt::Debug for BackendSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendSettings")
            .field("shared_secret", &self.shared_secret.as_ref().map(|_| "<redacted>"))
            .field("reply_mode", &self.reply_mode)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("session_ttl", &self.session_ttl)
            .field("broadcast_concurrency", &self.broadcast_concurrency)
            .finish()
    }
}

/// Counts of one broadcast.
#[derive(Default)]
struct Tally {
    sessions: u64,
    delivered: u64,
    gone: u64,
    failed: u64,
    gone_ids: Vec<String>,
}

impl Tally {
    fn add(&mut self, id: String, outcome: &PushOutcome) {
        match outcome {
            PushOutcome::Delivered => self.delivered += 1,
            PushOutcome::Gone => {
                self.gone += 1;
                self.gone_ids.push(id);
            }
            _ => self.failed += 1,
        }
    }
}

/// One warning a second for failed store calls: an outage fails every request.
static STORE_WARNINGS: std::sync::LazyLock<crate::telemetry::LogThrottle> =
    std::sync::LazyLock::new(crate::telemetry::LogThrottle::default);

/// Logs a store failure on the internal API and answers it.
fn store_failure(connection_id: &str, err: StoreError) -> Response<Body> {
    if let Some(alike) = STORE_WARNINGS.admit() {
        tracing::warn!(connection_id, error = %err, alike_since_last = alike, "session store call failed");
    }
    ApiError::Store(err).response()
}

/// The HTTP answer for a push that neither arrived nor found the connection gone.
fn push_error(outcome: &PushOutcome) -> Response<Body> {
    match outcome {
        PushOutcome::Throttled => server::error(
            StatusCode::TOO_MANY_REQUESTS,
            "the gateway throttled the push (or the client's buffer is full)",
        ),
        PushOutcome::TooLarge => {
            server::error(StatusCode::PAYLOAD_TOO_LARGE, "the message is over the gateway's limit")
        }
        PushOutcome::Forbidden => server::error(
            StatusCode::BAD_GATEWAY,
            "the gateway refused the push (credentials or endpoint)",
        ),
        _ => server::error(StatusCode::BAD_GATEWAY, "the push failed"),
    }
}

/// Page size used by broadcast scans.
const BROADCAST_PAGE: usize = 100;

/// The backend's state. Built by [`crate::serve::prepare`].
pub struct Backend {
    pub(crate) store: Arc<dyn SessionStore>,
    pub(crate) cache: SessionCache,
    pub(crate) pusher: Arc<Pusher>,
    pub(crate) handler: Arc<dyn MessageHandler>,
    pub(crate) metrics: Arc<BackendMetrics>,
    pub(crate) registry: Arc<Registry>,
    pub(crate) lifecycle: Lifecycle,
    pub(crate) settings: BackendSettings,
    /// Deadline and shared budget for request bodies on both listeners.
    pub(crate) body: BodyPolicy,
}

/// Maps errors at the HTTP boundary. Internal detail goes to the log, never to the client.
#[derive(Debug, thiserror::Error)]
enum ApiError {
    #[error("missing {0} header")]
    MissingHeader(&'static str),
    #[error("invalid {0} header")]
    InvalidHeader(&'static str),
    #[error("missing shared secret")]
    NoSecret,
    #[error("wrong shared secret")]
    WrongSecret,
    #[error(transparent)]
    Body(#[from] BodyError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ApiError {
    fn response(&self) -> Response<Body> {
        let (status, msg) = match self {
            ApiError::MissingHeader(_) | ApiError::InvalidHeader(_) => (StatusCode::BAD_REQUEST, self.to_string()),
            ApiError::NoSecret => (StatusCode::UNAUTHORIZED, self.to_string()),
            ApiError::WrongSecret => (StatusCode::FORBIDDEN, self.to_string()),
            ApiError::Body(BodyError::TooLarge(_)) => (StatusCode::PAYLOAD_TOO_LARGE, self.to_string()),
            ApiError::Body(BodyError::TimedOut(_)) => (StatusCode::REQUEST_TIMEOUT, self.to_string()),
            ApiError::Body(BodyError::Busy) => (StatusCode::SERVICE_UNAVAILABLE, self.to_string()),
            ApiError::Body(BodyError::Read(_)) => (StatusCode::BAD_REQUEST, "request body could not be read".into()),
            ApiError::Store(StoreError::Rejected(_)) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "session store rejected the request".into(),
            ),
            ApiError::Store(_) => (StatusCode::SERVICE_UNAVAILABLE, "session store unavailable".into()),
        };
        server::error(status, &msg)
    }

    /// Logs a store failure with the request it belongs to.
    fn logged(self, ctx: &RequestContext) -> Self {
        if let ApiError::Store(err) = &self {
            if let Some(alike) = STORE_WARNINGS.admit() {
                tracing::warn!(connection_id = %ctx.connection_id, request_id = %ctx.request_id, error = %err, alike_since_last = alike, "session store call failed");
            }
        }
        self
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// At most `max` bytes of `text`, cut at a character boundary.
fn capped(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// A connection id as API Gateway issues them: short, printable, no separators.
fn valid_connection_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic() && b != b'/')
}

/// Reads the gateway context from request headers, as `/connect`, `/message` and `/disconnect`
/// do; the error says which header is missing or malformed.
pub fn request_context(headers: &HeaderMap) -> Result<RequestContext, String> {
    context(headers).map_err(|e| e.to_string())
}

/// The context headers' values, found in one pass over the request headers (one string compare
/// per header instead of a hash lookup per context field). The first value of a repeated header
/// wins, as with `HeaderMap::get`.
#[derive(Default)]
struct ContextValues<'a> {
    connection_id: Option<&'a HeaderValue>,
    route_key: Option<&'a HeaderValue>,
    event_type: Option<&'a HeaderValue>,
    request_id: Option<&'a HeaderValue>,
    domain: Option<&'a HeaderValue>,
    stage: Option<&'a HeaderValue>,
    connected_at: Option<&'a HeaderValue>,
    source_ip: Option<&'a HeaderValue>,
    user_agent: Option<&'a HeaderValue>,
    disconnect_status: Option<&'a HeaderValue>,
    disconnect_reason: Option<&'a HeaderValue>,
}

impl<'a> ContextValues<'a> {
    fn read(headers: &'a HeaderMap) -> Self {
        let mut v = ContextValues::default();
        for (name, value) in headers {
            let slot = match name.as_str() {
                contract::CONNECTION_ID => &mut v.connection_id,
                contract::ROUTE_KEY => &mut v.route_key,
                contract::EVENT_TYPE => &mut v.event_type,
                contract::REQUEST_ID => &mut v.request_id,
                contract::DOMAIN_NAME => &mut v.domain,
                contract::STAGE => &mut v.stage,
                contract::CONNECTED_AT => &mut v.connected_at,
                contract::SOURCE_IP => &mut v.source_ip,
                contract::USER_AGENT => &mut v.user_agent,
                contract::DISCONNECT_STATUS => &mut v.disconnect_status,
                contract::DISCONNECT_REASON => &mut v.disconnect_reason,
                _ => continue,
            };
            slot.get_or_insert(value);
        }
        v
    }
}

/// A header's value as text; absent or not visible ASCII reads as empty.
fn text(value: Option<&HeaderValue>) -> Option<&str> {
    value.and_then(|v| v.to_str().ok())
}

fn owned(value: Option<&HeaderValue>) -> String {
    text(value).unwrap_or_default().to_owned()
}

/// Reads the gateway context from the request headers.
fn context(headers: &HeaderMap) -> Result<RequestContext, ApiError> {
    let v = ContextValues::read(headers);
    let connection_id = owned(v.connection_id);
    if connection_id.is_empty() {
        return Err(ApiError::MissingHeader(contract::CONNECTION_ID));
    }
    if !valid_connection_id(&connection_id) {
        return Err(ApiError::InvalidHeader(contract::CONNECTION_ID));
    }
    let connected_at = match v.connected_at {
        None => None,
        Some(value) => Some(
            text(Some(value))
                .and_then(|s| s.trim().parse::<i64>().ok())
                .filter(|ms| *ms >= 0)
                .ok_or(ApiError::InvalidHeader(contract::CONNECTED_AT))?,
        ),
    };
    Ok(RequestContext {
        connection_id,
        route_key: owned(v.route_key),
        event_type: owned(v.event_type),
        request_id: owned(v.request_id),
        domain: owned(v.domain),
        stage: owned(v.stage),
        connected_at,
        source_ip: owned(v.source_ip),
        user_agent: owned(v.user_agent),
        disconnect_status: text(v.disconnect_status).and_then(|s| s.trim().parse::<u16>().ok()),
        disconnect_reason: text(v.disconnect_reason).map(str::to_owned),
    })
}

/// Counts a request in flight for as long as it lives.
struct InFlight<'a> {
    metrics: &'a BackendMetrics,
    listener: &'static str,
}

impl<'a> InFlight<'a> {
    fn new(metrics: &'a BackendMetrics, listener: &'static str) -> Self {
        metrics.in_flight(listener, 1);
        InFlight { metrics, listener }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.metrics.in_flight(self.listener, -1);
    }
}

impl Backend {
    fn observe(&self, listener: &'static str, route: &'static str, status: StatusCode, started: Instant) {
        self.metrics
            .request(listener, route, status.as_u16(), started.elapsed().as_secs_f64());
    }

    fn metrics_response(&self) -> Response<Body> {
        server::with_body(StatusCode::OK, metrics::CONTENT_TYPE, metrics::encode(&self.registry))
    }

    /// The public port: the gateway's integration target.
    pub async fn public(self: Arc<Self>, req: Request<Incoming>, _peer: SocketAddr) -> Response<Body> {
        let started = Instant::now();
        let _in_flight = InFlight::new(&self.metrics, "public");
        let route: &'static str = match req.uri().path() {
            contract::PATH_CONNECT => contract::PATH_CONNECT,
            contract::PATH_DISCONNECT => contract::PATH_DISCONNECT,
            contract::PATH_MESSAGE => contract::PATH_MESSAGE,
            "/healthz" | "/readyz" => {
                // Load balancers health-check the traffic port.
                return server::health(req.uri().path(), &self.lifecycle)
                    .unwrap_or_else(|| server::empty(StatusCode::NOT_FOUND));
            }
            _ => {
                let resp = server::error(StatusCode::NOT_FOUND, "no such route");
                self.observe("public", "other", resp.status(), started);
                return resp;
            }
        };
        let resp = if req.method() != Method::POST {
            server::error(StatusCode::METHOD_NOT_ALLOWED, "use POST")
        } else {
            match self.integration(route, req).await {
                Ok(resp) => resp,
                Err(err) => err.response(),
            }
        };
        self.observe("public", route, resp.status(), started);
        resp
    }

    fn check_secret(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let Some(expected) = &self.settings.shared_secret else {
            return Ok(());
        };
        let Some(given) = headers.get(contract::SHARED_SECRET) else {
            return Err(ApiError::NoSecret);
        };
        if bool::from(given.as_bytes().ct_eq(expected.as_bytes())) {
            Ok(())
        } else {
            Err(ApiError::WrongSecret)
        }
    }

    async fn integration(&self, route: &'static str, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
        self.check_secret(req.headers())?;
        let ctx = context(req.headers())?;
        // The body's bytes stay counted against the budget until the answer is ready.
        let body = server::read_body(req, self.settings.max_body_bytes, &self.body).await?;
        match route {
            contract::PATH_CONNECT => self.connect(ctx).await,
            contract::PATH_DISCONNECT => self.disconnect(ctx).await,
            _ => self.message(ctx, body.bytes.clone()).await,
        }
    }

    fn new_session(&self, ctx: &RequestContext) -> Session {
        let now = now_ms();
        let connected_at = ctx.connected_at.unwrap_or(now);
        Session {
            connection_id: ctx.connection_id.clone(),
            connected_at,
            last_seen_at: now,
            source_ip: ctx.source_ip.clone(),
            user_agent: capped(&ctx.user_agent, contract::MAX_STORED_USER_AGENT),
            domain: ctx.domain.clone(),
            stage: ctx.stage.clone(),
            message_count: 0,
            expires_at: connected_at / 1000 + self.settings.session_ttl.as_secs() as i64,
        }
    }

    async fn connect(&self, ctx: RequestContext) -> Result<Response<Body>, ApiError> {
        if let Err(rejection) = self.handler.on_connect(&ctx).await {
            tracing::info!(
                connection_id = %ctx.connection_id,
                request_id = %ctx.request_id,
                status = rejection.status.as_u16(),
                "connect rejected by the handler"
            );
            return Ok(server::error(rejection.status, &rejection.message));
        }
        let session = self.new_session(&ctx);
        let created = self
            .store
            .create(&session)
            .await
            .map_err(|e| ApiError::Store(e).logged(&ctx))?;
        let (connection_id, request_id) = (&ctx.connection_id, &ctx.request_id);
        match created {
            Created::Created => tracing::info!(%connection_id, %request_id, "connected"),
            Created::AlreadyExists => {
                tracing::info!(%connection_id, %request_id, "duplicate connect; existing session kept")
            }
        }
        self.cache.insert_synced(&ctx.connection_id, Instant::now());
        Ok(server::empty(StatusCode::OK))
    }

    async fn disconnect(&self, ctx: RequestContext) -> Result<Response<Body>, ApiError> {
        self.handler.on_disconnect(&ctx).await;
        self.cache.remove(&ctx.connection_id);
        let existed = self
            .store
            .delete(&ctx.connection_id)
            .await
            .map_err(|e| ApiError::Store(e).logged(&ctx))?;
        tracing::info!(
            connection_id = %ctx.connection_id,
            request_id = %ctx.request_id,
            existed,
            status = ?ctx.disconnect_status,
            "disconnected"
        );
        Ok(server::empty(StatusCode::OK))
    }

    async fn message(&self, ctx: RequestContext, body: Bytes) -> Result<Response<Body>, ApiError> {
        self.metrics.messages.inc();
        match self.cache.on_message(&ctx.connection_id, Instant::now()) {
            Lookup::Fresh => self.metrics.cache_lookup(true),
            Lookup::Sync { add, cached } => {
                self.metrics.cache_lookup(false);
                let session = self.new_session(&ctx);
                if let Err(err) = self.store.upsert(&session, add).await {
                    self.cache.sync_failed(&ctx.connection_id, add, cached);
                    return Err(ApiError::Store(err).logged(&ctx));
                }
            }
        }
        let reply = match self.handler.on_message(&ctx, body).await {
            Ok(reply) => reply,
            Err(rejection) => return Ok(server::error(rejection.status, &rejection.message)),
        };
        let Some(reply) = reply else {
            return Ok(server::empty(StatusCode::OK));
        };
        match self.settings.reply_mode {
            ReplyMode::Sync => Ok(server::with_body(StatusCode::OK, "text/plain; charset=utf-8", reply)),
            ReplyMode::Async => {
                let Some(endpoint) = self.pusher.endpoint(&ctx.domain, &ctx.stage) else {
                    tracing::warn!(
                        connection_id = %ctx.connection_id,
                        request_id = %ctx.request_id,
                        "asynchronous reply impossible: no domain/stage header and no push endpoint"
                    );
                    return Ok(server::error(
                        StatusCode::BAD_GATEWAY,
                        "no @connections endpoint for this request",
                    ));
                };
                // Boxed: the SDK call's future is large, and inlined it would make every
                // request's future (which hyper moves) that large too.
                match Box::pin(self.pusher.post(&endpoint, &ctx.connection_id, reply)).await {
                    PushOutcome::Delivered => Ok(server::empty(StatusCode::OK)),
                    PushOutcome::Gone => {
                        self.forget(&ctx.connection_id).await;
                        Ok(server::empty(StatusCode::OK))
                    }
                    other => Ok(push_error(&other)),
                }
            }
        }
    }

    /// Removes a session the gateway reported gone (410).
    async fn forget(&self, connection_id: &str) {
        self.cache.remove(connection_id);
        if let Err(err) = self.store.delete(connection_id).await {
            tracing::warn!(connection_id, error = %err, "could not delete a gone session");
        }
    }

    /// The internal port: `/v1/...`, health and metrics.
    pub async fn internal(self: Arc<Self>, req: Request<Incoming>, _peer: SocketAddr) -> Response<Body> {
        let started = Instant::now();
        let _in_flight = InFlight::new(&self.metrics, "internal");
        let path = req.uri().path().to_string();
        if let Some(resp) = server::health(&path, &self.lifecycle) {
            return resp;
        }
        if path == "/metrics" {
            return self.metrics_response();
        }
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let method = req.method().clone();
        let (route, resp): (&'static str, Response<Body>) = match (method, segments.as_slice()) {
            (Method::POST, ["v1", "broadcast"]) => ("/v1/broadcast", self.broadcast(req).await),
            (m, ["v1", "connections", id]) => {
                let Some(id) = crate::percent::decode(id).filter(|id| valid_connection_id(id)) else {
                    let resp = server::error(StatusCode::BAD_REQUEST, "invalid connection id");
                    self.observe("internal", "/v1/connections/{id}", resp.status(), started);
                    return resp;
                };
                let resp = match m {
                    Method::GET => self.lookup(&id).await,
                    Method::DELETE => self.close(&id).await,
                    _ => server::error(StatusCode::METHOD_NOT_ALLOWED, "use GET or DELETE"),
                };
                ("/v1/connections/{id}", resp)
            }
            (m, ["v1", "connections", id, "messages"]) => {
                let resp = match crate::percent::decode(id).filter(|id| valid_connection_id(id)) {
                    None => server::error(StatusCode::BAD_REQUEST, "invalid connection id"),
                    Some(_) if m != Method::POST => server::error(StatusCode::METHOD_NOT_ALLOWED, "use POST"),
                    Some(id) => self.send(&id, req).await,
                };
                ("/v1/connections/{id}/messages", resp)
            }
            _ => ("other", server::error(StatusCode::NOT_FOUND, "no such route")),
        };
        self.observe("internal", route, resp.status(), started);
        resp
    }

    /// The management endpoint for one connection: the configured one, or the session's.
    async fn endpoint_for(&self, id: &str) -> Result<Option<String>, Response<Body>> {
        if self.pusher.has_fixed_endpoint() {
            return Ok(self.pusher.endpoint("", ""));
        }
        match self.store.get(id).await {
            Ok(Some(session)) => Ok(self.pusher.endpoint(&session.domain, &session.stage)),
            Ok(None) => Err(server::error(StatusCode::NOT_FOUND, "no such connection")),
            Err(err) => Err(store_failure(id, err)),
        }
    }

    async fn lookup(&self, id: &str) -> Response<Body> {
        match self.store.get(id).await {
            Ok(Some(session)) => server::json(StatusCode::OK, &serde_json::to_value(&session).unwrap_or_default()),
            Ok(None) => server::error(StatusCode::NOT_FOUND, "no such connection"),
            Err(err) => store_failure(id, err),
        }
    }

    async fn send(&self, id: &str, req: Request<Incoming>) -> Response<Body> {
        let body = match server::read_body(req, contract::MAX_POST_BYTES, &self.body).await {
            Ok(body) => body,
            Err(err) => return ApiError::Body(err).response(),
        };
        let endpoint = match self.endpoint_for(id).await {
            Ok(Some(e)) => e,
            Ok(None) => return server::error(StatusCode::CONFLICT, "the session has no domain and stage to push to"),
            Err(resp) => return resp,
        };
        match self.pusher.post(&endpoint, id, body.bytes.clone()).await {
            PushOutcome::Delivered => server::json(StatusCode::OK, &serde_json::json!({ "delivered": true })),
            PushOutcome::Gone => {
                self.forget(id).await;
                server::error(StatusCode::GONE, "the connection is gone")
            }
            other => push_error(&other),
        }
    }

    async fn close(&self, id: &str) -> Response<Body> {
        let endpoint = match self.endpoint_for(id).await {
            Ok(Some(e)) => e,
            Ok(None) => return server::error(StatusCode::CONFLICT, "the session has no domain and stage"),
            Err(resp) => return resp,
        };
        match self.pusher.delete(&endpoint, id).await {
            PushOutcome::Delivered => server::empty(StatusCode::NO_CONTENT),
            PushOutcome::Gone => {
                self.forget(id).await;
                server::error(StatusCode::GONE, "the connection is gone")
            }
            other => push_error(&other),
        }
    }

    async fn broadcast(&self, req: Request<Incoming>) -> Response<Body> {
        let body = match server::read_body(req, contract::MAX_POST_BYTES, &self.body).await {
            Ok(body) => body,
            Err(err) => return ApiError::Body(err).response(),
        };
        let limit = Arc::new(Semaphore::new(self.settings.broadcast_concurrency.max(1)));
        let mut tasks: JoinSet<(String, PushOutcome)> = JoinSet::new();
        let mut tally = Tally::default();
        let mut cursor = None;
        let mut scan_failed = false;
        loop {
            let page = match self.store.scan(cursor.take(), BROADCAST_PAGE).await {
                Ok(page) => page,
                Err(err) => {
                    tracing::warn!(error = %err, "broadcast scan failed; stopping early");
                    scan_failed = true;
                    break;
                }
            };
            for session in page.sessions {
                tally.sessions += 1;
                let Some(endpoint) = self.pusher.endpoint(&session.domain, &session.stage) else {
                    tally.failed += 1;
                    continue;
                };
                let Ok(permit) = limit.clone().acquire_owned().await else {
                    break;
                };
                let data = body.bytes.clone();
                let pusher = self.pusher.clone();
                tasks.spawn(async move {
                    let outcome = pusher.post(&endpoint, &session.connection_id, data).await;
                    drop(permit);
                    (session.connection_id, outcome)
                });
                // Reap finished sends as we go so the set stays small.
                while let Some(Ok((id, outcome))) = tasks.try_join_next() {
                    tally.add(id, &outcome);
                }
            }
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        while let Some(res) = tasks.join_next().await {
            match res {
                Ok((id, outcome)) => tally.add(id, &outcome),
                Err(_) => tally.failed += 1,
            }
        }
        for id in std::mem::take(&mut tally.gone_ids) {
            self.forget(&id).await;
        }
        let Tally {
            sessions,
            delivered,
            gone,
            failed,
            ..
        } = tally;
        let status = if scan_failed {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::OK
        };
        server::json(
            status,
            &serde_json::json!({
                "sessions": sessions,
                "delivered": delivered,
                "gone": gone,
                "failed": failed,
                "complete": !scan_failed,
            }),
        )
    }

    /// Writes message counts still pending in the cache, without re-creating sessions that
    /// were deleted meanwhile. Runs once at shutdown, bounded by `within`.
    pub async fn flush_pending(&self, within: Duration) {
        let pending = self.cache.take_pending();
        if pending.is_empty() {
            return;
        }
        let now = now_ms();
        let count = pending.len();
        let work = async {
            for (id, add) in pending {
                if let Err(err) = self.store.touch_existing(&id, now, add).await {
                    tracing::warn!(connection_id = %id, error = %err, "could not flush a message count");
                }
            }
        };
        if tokio::time::timeout(within, work).await.is_err() {
            tracing::warn!(sessions = count, "flush of pending message counts timed out");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn context_headers_never_panic(values in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 12)) {
            let names = [
                contract::CONNECTION_ID, contract::ROUTE_KEY, contract::EVENT_TYPE, contract::REQUEST_ID,
                contract::DOMAIN_NAME, contract::STAGE, contract::CONNECTED_AT, contract::SOURCE_IP,
                contract::USER_AGENT, contract::DISCONNECT_STATUS, contract::DISCONNECT_REASON, contract::SHARED_SECRET,
            ];
            let mut headers = HeaderMap::new();
            for (name, value) in names.iter().zip(values) {
                if let Ok(v) = http::HeaderValue::from_bytes(&value) {
                    headers.insert(*name, v);
                }
            }
            let _ = request_context(&headers);
        }

        #[test]
        fn valid_ids_and_times_round_trip(id in "[A-Za-z0-9_=+-]{1,64}", at in 0i64..4_000_000_000_000) {
            let mut headers = HeaderMap::new();
            headers.insert(contract::CONNECTION_ID, id.parse().unwrap());
            headers.insert(contract::CONNECTED_AT, at.to_string().parse().unwrap());
            let ctx = request_context(&headers).unwrap();
            prop_assert_eq!(ctx.connection_id, id);
            prop_assert_eq!(ctx.connected_at, Some(at));
        }

        #[test]
        fn malformed_connected_at_is_refused(bad in "[^0-9]{1,12}") {
            let mut headers = HeaderMap::new();
            headers.insert(contract::CONNECTION_ID, "abc=".parse().unwrap());
            if let Ok(v) = http::HeaderValue::from_str(&bad) {
                headers.insert(contract::CONNECTED_AT, v);
                prop_assert!(request_context(&headers).is_err());
            }
        }
    }
}

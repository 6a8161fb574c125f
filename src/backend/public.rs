//! The public port, the gateway's integration target: `/connect`, `/message` and `/disconnect`
//! (shared secret, context headers, body), session bookkeeping around the handler, and the
//! reply in the response or through `@connections`. The principal and attributes a call's
//! handler sees are the session's, stored at connect (see [`super::identity`]); the groups a
//! connect names are joined with its session and left at its disconnect.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use opentelemetry::trace::FutureExt as _;
use subtle::ConstantTimeEq;

use super::cache::Lookup;
use super::context::context;
use super::disconnect::disconnect_id;
use super::error::ApiError;
use super::identity::{self, Identity};
use super::push::PushOutcome;
use super::settings::ReplyMode;
use super::state::{Backend, InFlight};
use crate::contract::{self, RequestContext};
use crate::http_server::{self, Body};
use crate::store::{Claim, Created, Member, Session};
use crate::timefmt::now_ms;
use crate::trace::{Hop, Kind};

/// At most `max` bytes of `text`, cut at a character boundary.
fn capped(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// A call's body: still to come (with the length its head declared), or carried in with other
/// calls and read with them.
enum CallBody {
    Incoming(Incoming, Option<u64>),
    Carried(Bytes),
}

/// A gateway call whose head was read: what the rest of its handling needs.
struct Call {
    route: &'static str,
    ctx: RequestContext,
    body: CallBody,
    /// The call's trace (see [`crate::trace`]).
    hop: Hop,
    /// When its head arrived.
    started: Instant,
}

/// What a request's head decided. It lives only until it is matched, so the size difference
/// costs nothing; boxing the call would cost an allocation per request.
#[allow(clippy::large_enum_variant)]
enum Head {
    /// A gateway call to handle.
    Call(Call),
    /// Answered from the head alone, with the route its metrics count it under (none for
    /// health checks).
    Answered(Option<&'static str>, Response<Body>),
    /// `/disconnect` calls many to a call: the body that carries them, and its declared length.
    Carried(Incoming, Option<u64>),
}

impl Backend {
    /// The public port: the gateway's integration target.
    ///
    /// Everything the request's head decides happens before the returned future exists, and
    /// the head is dropped there: the server copies that future into place for every request,
    /// so it is kept to what the body and the handler need.
    pub fn public(
        self: Arc<Self>,
        req: Request<Incoming>,
        _peer: SocketAddr,
    ) -> impl Future<Output = Response<Body>> + Send + 'static {
        let started = Instant::now();
        let mut head = self.head(req, started);
        async move {
            let _in_flight = InFlight::new(&self.metrics, "public");
            let (route, resp) = match head {
                // Borrowed where it is: a binding by value would be a second copy of the call.
                Head::Call(ref mut call) => self.call(call).await,
                Head::Answered(route, resp) => (route, resp),
                Head::Carried(body, declared) => (
                    Some(contract::PATH_CARRIED_DISCONNECTS),
                    Box::pin(self.carried_disconnects(body, declared)).await,
                ),
            };
            if let Some(route) = route {
                self.observe("public", route, resp.status(), started);
            }
            resp
        }
    }

    /// Handles a call whose head was read: its route and answer.
    ///
    /// The call is borrowed, here and below, so that it is kept once, in the caller's future:
    /// an argument taken by value is stored again in each nested future, and the server copies
    /// the outermost one into place for every request.
    async fn call(&self, call: &mut Call) -> (Option<&'static str>, Response<Body>) {
        let hop = std::mem::take(&mut call.hop);
        let route = call.route;
        // As `Hop::run` does, awaited in place: passing the future through a function would
        // copy it once more for every request.
        let result = match hop.context() {
            Some(cx) => self.integration(call).with_context(cx.clone()).await,
            None => self.integration(call).await,
        };
        let mut resp = result.unwrap_or_else(|err| err.response());
        if resp.status().is_server_error() {
            hop.outcome(Some(resp.status().to_string()));
        }
        if route == contract::PATH_DISCONNECT {
            resp.headers_mut().insert(
                contract::CARRIES_DISCONNECTS,
                http::HeaderValue::from_static(contract::PATH_CARRIED_DISCONNECTS),
            );
        }
        (Some(route), resp)
    }

    /// `/disconnect` calls many to a call (see [`crate::carried::requests`]): each is handled
    /// as if it had come alone (its own secret, context, metrics and answer), all at once, and
    /// the answer is their statuses in order. A request for any other path is answered 404
    /// without being handled.
    async fn carried_disconnects(&self, body: Incoming, declared: Option<u64>) -> Response<Body> {
        use crate::carried::requests;
        let limit = requests::MAX_BODY_BYTES;
        // The body's bytes stay counted against the budget until every call in it is answered.
        let (bytes, _reservation) = match http_server::read_incoming(body, declared, limit, &self.body).await {
            Ok(read) => read,
            Err(err) => return ApiError::from(err).response(),
        };
        let Some(carried) = requests::decode(bytes) else {
            return ApiError::Malformed("the body is not /disconnect calls many to a call").response();
        };
        let calls = carried.into_iter().map(|c| async move {
            let started = Instant::now();
            let Ok(path) = c.path_and_query.parse::<http::uri::PathAndQuery>() else {
                return StatusCode::NOT_FOUND.as_u16();
            };
            if path.path() != contract::PATH_DISCONNECT {
                return StatusCode::NOT_FOUND.as_u16();
            }
            let mut head = Request::new(());
            *head.method_mut() = Method::POST;
            *head.uri_mut() = path.into();
            let headers = head.headers_mut();
            headers.reserve(c.headers.len());
            for (name, value) in c.headers {
                headers.append(name, value);
            }
            let (parts, ()) = head.into_parts();
            let (route, resp) = match self.head_parts(parts, CallBody::Carried(c.body), started) {
                Head::Call(mut call) => self.call(&mut call).await,
                Head::Answered(route, resp) => (route, resp),
                // Only a request alone is routed there.
                Head::Carried(..) => (None, ApiError::NoRoute.response()),
            };
            if let Some(route) = route {
                self.observe("public", route, resp.status(), started);
            }
            resp.status().as_u16()
        });
        let statuses = futures_util::future::join_all(calls).await;
        http_server::with_body(
            StatusCode::OK,
            &http_server::content_type::OCTET_STREAM,
            requests::encode_statuses(&statuses),
        )
    }

    /// Routes a request and reads its head: the shared secret, the gateway context and the
    /// declared body length.
    fn head(&self, req: Request<Incoming>, started: Instant) -> Head {
        let (parts, body) = req.into_parts();
        if parts.uri.path() == contract::PATH_CARRIED_DISCONNECTS {
            if parts.method != Method::POST {
                let resp = ApiError::Method("use POST").response();
                return Head::Answered(Some(contract::PATH_CARRIED_DISCONNECTS), resp);
            }
            return Head::Carried(body, http_server::declared_length(&parts.headers));
        }
        // hyper has parsed Content-Length already; its size hint is exact when one was sent.
        let declared = hyper::body::Body::size_hint(&body).exact();
        self.head_parts(parts, CallBody::Incoming(body, declared), started)
    }

    /// [`Backend::head`] for a request split into its head and body.
    fn head_parts(&self, parts: http::request::Parts, body: CallBody, started: Instant) -> Head {
        let route: &'static str = match parts.uri.path() {
            contract::PATH_CONNECT => contract::PATH_CONNECT,
            contract::PATH_DISCONNECT => contract::PATH_DISCONNECT,
            contract::PATH_MESSAGE => contract::PATH_MESSAGE,
            // Load balancers health-check the traffic port.
            path @ ("/healthz" | "/readyz") => {
                let resp = http_server::health(path, &self.lifecycle)
                    .unwrap_or_else(|| http_server::empty(StatusCode::NOT_FOUND));
                return Head::Answered(None, resp);
            }
            _ => return Head::Answered(Some("other"), ApiError::NoRoute.response()),
        };
        if parts.method != Method::POST {
            return Head::Answered(Some(route), ApiError::Method("use POST").response());
        }
        if let Err(err) = self.check_secret(&parts.headers) {
            return Head::Answered(Some(route), err.response());
        }
        // Filled where it lies: the call is moved once, into the head this returns.
        let mut call = Call {
            route,
            ctx: RequestContext::default(),
            body,
            hop: Hop::default(),
            started,
        };
        let trace = match context(&parts.headers, &mut call.ctx) {
            Ok(trace) => trace,
            Err(err) => return Head::Answered(Some(route), err.response()),
        };
        let name = match route {
            contract::PATH_CONNECT => "serve /connect",
            contract::PATH_DISCONNECT => "serve /disconnect",
            _ => "serve /message",
        };
        call.hop = Hop::incoming(
            name,
            Kind::Server,
            |key| trace.get(key),
            || {
                vec![opentelemetry::KeyValue::new(
                    "socketless.connection_id",
                    call.ctx.connection_id.clone(),
                )]
            },
        );
        call.ctx.traceparent = call.hop.traceparent();
        if self.handler.wants_headers() {
            let mut headers = parts.headers;
            // The resume key stays in `serve`: no handler sees it.
            headers.remove(contract::RESUME_KEY);
            call.ctx.headers = Some(Arc::new(headers));
        }
        Head::Call(call)
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

    async fn integration(&self, call: &mut Call) -> Result<Response<Body>, ApiError> {
        let body = std::mem::replace(&mut call.body, CallBody::Carried(Bytes::new()));
        // The body's bytes stay counted against the budget until the answer is ready.
        let (bytes, _reservation) = match body {
            CallBody::Incoming(body, declared) => {
                let (bytes, reservation) =
                    http_server::read_incoming(body, declared, self.settings.max_body_bytes, &self.body).await?;
                (bytes, Some(reservation))
            }
            CallBody::Carried(bytes) => (bytes, None),
        };
        match call.route {
            // Boxed, as is a session sync: once a connection, they would otherwise size every
            // message's future.
            contract::PATH_CONNECT => Box::pin(self.connect(std::mem::take(&mut call.ctx))).await,
            contract::PATH_DISCONNECT => Box::pin(self.disconnect(std::mem::take(&mut call.ctx))).await,
            _ => self.message(&mut call.ctx, bytes, call.started).await,
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
            // Only a connect stores who the session belongs to.
            principal_id: None,
            attributes: identity::Attributes::new(),
            session_id: None,
            resume_origin: None,
            disconnect: None,
        }
    }

    /// Gives a call the session's identity in place of anything its own headers said.
    fn with_identity(ctx: &mut RequestContext, identity: Option<&Identity>) {
        ctx.principal_id = identity.and_then(|i| i.principal_id.clone());
        ctx.session_id = identity.and_then(|i| i.session_id.clone());
        ctx.attributes = identity.map(|i| i.attributes.clone()).unwrap_or_default();
    }

    async fn connect(&self, mut ctx: RequestContext) -> Result<Response<Body>, ApiError> {
        // The resume key checked and its session looked up before the handler sees the connect.
        let resuming = self.resume_begin(&mut ctx).await?;
        let accepted = match self.handler.on_connect_accepted(&ctx).await {
            Ok(accepted) => accepted,
            Err(rejection) => {
                tracing::info!(
                    connection_id = %ctx.connection_id,
                    request_id = %ctx.request_id,
                    status = rejection.status.as_u16(),
                    "connect rejected by the handler"
                );
                return Err(ApiError::Rejected(rejection));
            }
        };
        let (attributes, groups) = (accepted.attributes, accepted.groups);
        if let Err(rule) = attributes.check() {
            return Err(ApiError::Rejected(identity::refused(&ctx, &rule)));
        }
        self.check_connect_groups(&ctx, &groups)?;
        let mut session = self.new_session(&ctx);
        // The gateway's principal header is trusted here, at connect, and nowhere else.
        session.principal_id = ctx.principal_id.as_deref().map(str::to_owned);
        session.attributes = attributes;
        let attached = match resuming {
            Some(resuming) => Some(self.resume_attach(resuming, &mut ctx, &mut session).await?),
            None => None,
        };
        let (connection_id, request_id) = (&ctx.connection_id, &ctx.request_id);
        let created = self
            .store
            .create(&session)
            .await
            .map_err(|e| ApiError::store(e, connection_id, Some(request_id)))?;
        let made = created == Created::Created;
        let identity = match created {
            Created::Created => {
                tracing::info!(%connection_id, %request_id, "connected");
                session.identity()
            }
            Created::AlreadyExists(existing) => {
                tracing::info!(%connection_id, %request_id, "duplicate connect; existing session kept");
                existing.map_or_else(|| session.identity(), |s| s.identity())
            }
        };
        if !groups.is_empty() {
            let member = Member {
                connection_id: session.connection_id.clone(),
                domain: session.domain.clone(),
                stage: session.stage.clone(),
                expires_at: session.expires_at,
            };
            if let Err(err) = self.join_at_connect(&member, &groups).await {
                // No half-joined connection: the handshake fails, so what it wrote goes too.
                if made {
                    self.leave_all(connection_id).await;
                    if let Err(e) = self.store.delete(connection_id).await {
                        tracing::warn!(%connection_id, error = %e, "could not delete the session of a failed connect");
                    }
                }
                return Err(err);
            }
        }
        if let Some(attached) = &attached {
            self.resume_take_over(attached, &session).await;
            if attached.replay {
                let id = session.session_id.clone().unwrap_or_default();
                self.spawn_replay(id, session.connection_id.clone(), &session.domain, &session.stage);
            }
        }
        self.cache
            .insert_synced(&ctx.connection_id, Instant::now(), Arc::new(identity));
        let mut answer = http_server::empty(StatusCode::OK);
        if let Some(p) = accepted.subprotocol.and_then(|p| http::HeaderValue::try_from(p).ok()) {
            answer.headers_mut().insert(http::header::SEC_WEBSOCKET_PROTOCOL, p);
        }
        Ok(answer)
    }

    /// The gateway's `$disconnect`: the session is claimed (marked as disconnecting) and its
    /// `/disconnect` started (after the grace, retried until the deadline; see
    /// [`super::disconnect`]). A session someone else is disconnecting is left to them; one the
    /// store does not know still gets one call, as before sessions were claimed.
    async fn disconnect(&self, mut ctx: RequestContext) -> Result<Response<Body>, ApiError> {
        let cached = self.cache.remove(&ctx.connection_id);
        let claim = self
            .disconnects
            .claim(&ctx.connection_id)
            .await
            .map_err(|e| ApiError::store(e, &ctx.connection_id, Some(&ctx.request_id)))?;
        match claim {
            Claim::Claimed(session) => {
                // The identity from the cache, or from the item the claim returned.
                let identity = cached.unwrap_or_else(|| Arc::new(session.identity()));
                Self::with_identity(&mut ctx, Some(&identity));
                self.disconnects.start(*session, ctx, true).await;
            }
            Claim::Held => {
                tracing::info!(
                    connection_id = %ctx.connection_id,
                    request_id = %ctx.request_id,
                    "disconnect already under way"
                );
            }
            Claim::Missing => {
                Self::with_identity(&mut ctx, cached.as_deref());
                ctx.disconnect_id =
                    Some(disconnect_id(&ctx.connection_id, ctx.connected_at.unwrap_or_default()).into());
                let taken = self.handler.on_disconnect_result(&ctx).await.is_ok();
                tracing::info!(
                    connection_id = %ctx.connection_id,
                    request_id = %ctx.request_id,
                    existed = false,
                    taken,
                    status = ?ctx.disconnect_status,
                    "disconnected"
                );
            }
        }
        Ok(http_server::empty(StatusCode::OK))
    }

    async fn message(
        &self,
        ctx: &mut RequestContext,
        body: Bytes,
        started: Instant,
    ) -> Result<Response<Body>, ApiError> {
        self.metrics.messages.inc();
        let identity = match self.cache.on_message(&ctx.connection_id, started) {
            Lookup::Fresh(identity) => {
                self.metrics.cache_lookup(true);
                identity
            }
            Lookup::Sync { add, cached } => {
                self.metrics.cache_lookup(false);
                Box::pin(self.sync_session(ctx, add, cached)).await?
            }
        };
        Self::with_identity(ctx, Some(&identity));
        let reply = self
            .handler
            .on_message_reply(ctx, body)
            .await
            .map_err(ApiError::Rejected)?;
        let Some(reply) = reply else {
            return Ok(http_server::empty(StatusCode::OK));
        };
        match self.settings.reply_mode {
            ReplyMode::Sync if reply.binary => {
                let mut answer =
                    http_server::with_body(StatusCode::OK, &http_server::content_type::OCTET_STREAM, reply.body);
                answer
                    .headers_mut()
                    .insert(contract::FRAME, http::HeaderValue::from_static(contract::FRAME_BINARY));
                Ok(answer)
            }
            ReplyMode::Sync => Ok(http_server::with_body(
                StatusCode::OK,
                &http_server::content_type::TEXT_UTF8,
                reply.body,
            )),
            ReplyMode::Async => self.reply_async(ctx, reply.body, reply.binary).await,
        }
    }

    /// Writes the session of a message's connection (see [`crate::backend::cache`]), adding `add`
    /// messages to its count; returns the session's identity as stored, now in the cache too.
    async fn sync_session(&self, ctx: &RequestContext, add: u64, cached: bool) -> Result<Arc<Identity>, ApiError> {
        let session = self.new_session(ctx);
        match self.store.upsert(&session, add).await {
            Ok(stored) => {
                let identity = Arc::new(stored.identity());
                self.cache.set_identity(&ctx.connection_id, identity.clone());
                Ok(identity)
            }
            Err(err) => {
                self.cache.sync_failed(&ctx.connection_id, add, cached);
                Err(ApiError::store(err, &ctx.connection_id, Some(&ctx.request_id)))
            }
        }
    }

    /// Sends a reply through `@connections`.
    async fn reply_async(&self, ctx: &RequestContext, reply: Bytes, binary: bool) -> Result<Response<Body>, ApiError> {
        let Some(endpoint) = self.pusher.endpoint(&ctx.domain, &ctx.stage) else {
            tracing::warn!(
                connection_id = %ctx.connection_id,
                request_id = %ctx.request_id,
                "asynchronous reply impossible: no domain/stage header and no push endpoint"
            );
            return Ok(http_server::error(
                StatusCode::BAD_GATEWAY,
                "no @connections endpoint for this request",
            ));
        };
        // Boxed: the SDK call's future is large, and inlined it would make every request's
        // future (which hyper moves) that large too.
        match Box::pin(self.pusher.post_frame(&endpoint, &ctx.connection_id, reply, binary)).await {
            PushOutcome::Delivered => Ok(http_server::empty(StatusCode::OK)),
            PushOutcome::Gone => {
                // Boxed for the same reason: rare, and larger than the rest of the message path.
                Box::pin(self.forget(&ctx.connection_id)).await;
                Ok(http_server::empty(StatusCode::OK))
            }
            other => Err(ApiError::Push(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::future::future_size;

    /// Every request's future is built and moved by the server into the box hyper keeps for
    /// the connection, so its size is paid on every call. A call is kept once and borrowed below it, and the rare, large branches
    /// (connect, disconnect, a push that finds the connection gone) are boxed. Before that it
    /// was 6,712 bytes, and `serve` spent 2,173 instructions per request in `memcpy` (1,138
    /// after; callgrind).
    #[test]
    fn a_request_future_stays_small() {
        let public = future_size(Backend::public);
        assert!(public <= 1_280, "the public port's request future is {public} bytes");
    }
}

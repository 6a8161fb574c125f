//! The internal port, for other services and never behind the ingress: push to a connection,
//! close it, look it up, list who is connected (see [`super::listing`]), broadcast to every
//! session, and the groups API (see [`super::groups`]); plus health, metrics, and the live page
//! at `/` (static, no data of its own: it reads this port's JSON with the token). With `--internal-token`, every request other than `/healthz`, `/readyz` and
//! `/metrics` (kubelet probes, Prometheus) must carry `Authorization: Bearer TOKEN`, compared
//! in constant time; otherwise 401 with a JSON error.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::{HeaderMap, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use subtle::ConstantTimeEq;

use super::context::valid_connection_id;
use super::error::ApiError;
use super::fanout::Fanout;
use super::groups::group_name;
use super::push::PushOutcome;
use super::state::{Backend, InFlight};
use crate::contract;
use crate::http_server::{self, Body};

/// Page size used by broadcast scans.
const BROADCAST_PAGE: usize = 100;

/// Whether `headers` carry `Authorization: Bearer {token}` (scheme case-insensitive, token
/// compared in constant time).
fn authorized(headers: &HeaderMap, token: &str) -> Result<(), ApiError> {
    let Some(value) = headers.get(http::header::AUTHORIZATION) else {
        return Err(ApiError::NoToken);
    };
    let value = value.as_bytes();
    let Some((scheme, given)) = value.split_at_checked(7) else {
        return Err(ApiError::NoToken);
    };
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return Err(ApiError::NoToken);
    }
    if bool::from(given.ct_eq(token.as_bytes())) {
        Ok(())
    } else {
        Err(ApiError::WrongToken)
    }
}

/// A connection id from a path segment, percent-decoded and checked.
fn connection_id(segment: &str) -> Result<String, ApiError> {
    crate::percent::decode(segment)
        .filter(|id| valid_connection_id(id))
        .ok_or(ApiError::InvalidConnectionId)
}

/// A push's trace: it continues the `traceparent` the app sent (see [`crate::trace`]).
fn traced(name: &'static str, req: &Request<Incoming>) -> crate::trace::Hop {
    crate::trace::Hop::from_headers(name, req.headers(), Vec::new)
}

impl Backend {
    /// The internal port: `/v1/...`, health and metrics.
    pub async fn internal(self: Arc<Self>, req: Request<Incoming>, _peer: SocketAddr) -> Response<Body> {
        let started = Instant::now();
        let _in_flight = InFlight::new(&self.metrics, "internal");
        let path = req.uri().path().to_string();
        if let Some(resp) = http_server::health(&path, &self.lifecycle) {
            return resp;
        }
        if path == "/metrics" {
            return self.metrics_response();
        }
        if path == "/" && req.method() == Method::GET {
            return http_server::with_body(
                StatusCode::OK,
                &http_server::content_type::HTML,
                crate::listing::LIVE_PAGE,
            );
        }
        if let Some(token) = &self.settings.internal_token {
            if let Err(err) = authorized(req.headers(), token) {
                let resp = err.response();
                self.observe("internal", "unauthorized", resp.status(), started);
                return resp;
            }
        }
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let method = req.method().clone();
        let (route, result): (&'static str, Result<Response<Body>, ApiError>) = match (method, segments.as_slice()) {
            (Method::POST, ["v1", "broadcast"]) => {
                let hop = traced("serve /v1/broadcast", &req);
                ("/v1/broadcast", hop.run(self.broadcast(req)).await)
            }
            (m, ["v1", "groups", group]) => {
                let query = req.uri().query().map(str::to_owned);
                let result = match (group_name(group), m) {
                    (Err(e), _) => Err(e),
                    (Ok(g), Method::GET) => self.group_page(&g, query.as_deref()).await,
                    (Ok(_), _) => Err(ApiError::Method("use GET")),
                };
                ("/v1/groups/{group}", result)
            }
            (m, ["v1", "groups", group, "messages"]) => {
                let result = match group_name(group) {
                    Err(e) => Err(e),
                    Ok(_) if m != Method::POST => Err(ApiError::Method("use POST")),
                    Ok(g) => {
                        let hop = traced("serve /v1/groups/{group}/messages", &req);
                        hop.run(self.publish(&g, req)).await
                    }
                };
                ("/v1/groups/{group}/messages", result)
            }
            (m, ["v1", "groups", group, "connections", id]) => {
                let result = match (group_name(group), connection_id(id), m) {
                    (Err(e), _, _) | (_, Err(e), _) => Err(e),
                    (Ok(g), Ok(id), Method::PUT) => self.join(&g, &id).await,
                    (Ok(g), Ok(id), Method::DELETE) => self.leave(&g, &id).await,
                    _ => Err(ApiError::Method("use PUT or DELETE")),
                };
                ("/v1/groups/{group}/connections/{id}", result)
            }
            (m, ["v1", "sessions", id]) => {
                let id = connection_id(id);
                let answer = match (id, m) {
                    (Err(e), _) => Err(e),
                    (Ok(id), Method::GET) => self.session_view(&id).await,
                    (Ok(_), _) => Err(ApiError::Method("use GET")),
                };
                ("/v1/sessions/{id}", answer)
            }
            (m, ["v1", "sessions", id, "messages"]) => {
                let answer = match connection_id(id) {
                    Err(e) => Err(e),
                    Ok(_) if m != Method::POST => Err(ApiError::Method("use POST")),
                    Ok(id) => {
                        let binary = contract::says_binary(req.headers());
                        match http_server::read_body(req, contract::MAX_POST_BYTES, &self.body).await {
                            Ok(body) => self.push_session(&id, body.bytes, binary).await,
                            Err(e) => Err(e.into()),
                        }
                    }
                };
                ("/v1/sessions/{id}/messages", answer)
            }
            (m, ["v1", "connections"]) => {
                let result = match m {
                    Method::GET => self.list_connections(req.uri().query()).await,
                    _ => Err(ApiError::Method("use GET")),
                };
                ("/v1/connections", result)
            }
            (m, ["v1", "connections", "count"]) => {
                let result = match m {
                    Method::GET => self.count_connections().await,
                    _ => Err(ApiError::Method("use GET")),
                };
                ("/v1/connections/count", result)
            }
            (m, ["v1", "connections", id]) => {
                let result = match (connection_id(id), m) {
                    (Err(e), _) => Err(e),
                    (Ok(id), Method::GET) => self.lookup(&id).await,
                    (Ok(id), Method::DELETE) => self.close(&id).await,
                    (Ok(_), _) => Err(ApiError::Method("use GET or DELETE")),
                };
                ("/v1/connections/{id}", result)
            }
            (m, ["v1", "connections", id, "messages"]) => {
                let result = match connection_id(id) {
                    Err(e) => Err(e),
                    Ok(_) if m != Method::POST => Err(ApiError::Method("use POST")),
                    Ok(id) => {
                        let hop = traced("serve /v1/connections/{id}/messages", &req);
                        hop.run(self.send(&id, req)).await
                    }
                };
                ("/v1/connections/{id}/messages", result)
            }
            _ => ("other", Err(ApiError::NoRoute)),
        };
        let resp = result.unwrap_or_else(|err| err.response());
        self.observe("internal", route, resp.status(), started);
        resp
    }

    /// The management endpoint for one connection: the configured one, or the session's.
    async fn endpoint_for(&self, id: &str, missing: &'static str) -> Result<String, ApiError> {
        let endpoint = if self.pusher.has_fixed_endpoint() {
            self.pusher.endpoint("", "")
        } else {
            match self.store.get(id).await {
                Ok(Some(session)) => self.pusher.endpoint(&session.domain, &session.stage),
                Ok(None) => return Err(ApiError::NoSuchConnection),
                Err(err) => return Err(ApiError::store(err, id, None)),
            }
        };
        endpoint.ok_or(ApiError::NoEndpoint(missing))
    }

    async fn lookup(&self, id: &str) -> Result<Response<Body>, ApiError> {
        match self.store.get(id).await {
            Ok(Some(session)) => Ok(http_server::json(
                StatusCode::OK,
                &serde_json::to_value(&session).unwrap_or_default(),
            )),
            Ok(None) => Err(ApiError::NoSuchConnection),
            Err(err) => Err(ApiError::store(err, id, None)),
        }
    }

    /// What a push's outcome answers; a gone connection's session is forgotten.
    async fn pushed(&self, id: &str, outcome: PushOutcome, done: Response<Body>) -> Result<Response<Body>, ApiError> {
        match outcome {
            PushOutcome::Delivered => Ok(done),
            PushOutcome::Gone => {
                self.forget(id).await;
                Err(ApiError::Gone)
            }
            other => Err(ApiError::Push(other)),
        }
    }

    async fn send(&self, id: &str, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
        let body = http_server::read_body(req, contract::MAX_POST_BYTES, &self.body).await?;
        let endpoint = self
            .endpoint_for(id, "the session has no domain and stage to push to")
            .await?;
        let outcome = self.pusher.post(&endpoint, id, body.bytes.clone()).await;
        let delivered = http_server::json(StatusCode::OK, &serde_json::json!({ "delivered": true }));
        self.pushed(id, outcome, delivered).await
    }

    async fn close(&self, id: &str) -> Result<Response<Body>, ApiError> {
        let endpoint = self.endpoint_for(id, "the session has no domain and stage").await?;
        let outcome = self.pusher.delete(&endpoint, id).await;
        self.pushed(id, outcome, http_server::empty(StatusCode::NO_CONTENT))
            .await
    }

    /// Every session gets the body, through the same fan-out as a group publish (one
    /// `deliver` per gateway replica when the endpoint is a socketless gateway).
    async fn broadcast(&self, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
        let body = http_server::read_body(req, contract::MAX_POST_BYTES, &self.body).await?;
        let mut fanout = Fanout::new(self, body.bytes.clone());
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
                let endpoint = self.pusher.endpoint(&session.domain, &session.stage);
                fanout.add(session.connection_id, endpoint).await?;
            }
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        let tally = fanout.finish().await;
        let status = if scan_failed {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::OK
        };
        Ok(http_server::json(
            status,
            &serde_json::json!({
                "sessions": tally.targets,
                "delivered": tally.delivered,
                "gone": tally.gone,
                "failed": tally.failed,
                "complete": !scan_failed,
            }),
        ))
    }
}

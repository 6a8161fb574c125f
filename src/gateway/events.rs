//! The event pipeline: for `$connect`, each message and `$disconnect`, the context variables
//! (built from [`crate::contract::CONTEXT`]), route selection, the mapped integration call with
//! its timeout and metrics, and what the client gets back (the 101's subprotocol, a reply frame
//! or an error frame).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

use super::connection::Ctx;
use super::ids;
use super::integration::{self, Outcome};
use super::mapping::{self, Inputs};
use super::selection;
use super::shared::Shared;
use super::template::{Integration, Route};
use crate::contract::{self, Supply};
use crate::http_server::{self, Body};
use crate::timefmt::{clf, now_ms};

/// What one event adds to the connection's context.
struct Event<'a> {
    kind: &'static str,
    route: &'a str,
    request_id: &'a str,
    /// Messages only.
    message_id: Option<String>,
    /// `$disconnect` only: status and reason.
    close: Option<(u16, &'a str)>,
}

/// Context variables for one event, one per row of the contract's table that has a value.
fn context(gw: &Shared, c: &Ctx, e: &Event<'_>) -> BTreeMap<&'static str, String> {
    let now = now_ms();
    let model = &gw.config.model;
    let mut m = BTreeMap::new();
    for row in contract::CONTEXT {
        let value = match row.supply {
            Supply::ConnectionId => c.id.clone(),
            Supply::ConnectedAt => c.connected_at.to_string(),
            Supply::DomainName => c.domain.clone(),
            Supply::EventType => e.kind.to_string(),
            Supply::RouteKey => e.route.to_string(),
            Supply::RequestId => e.request_id.to_string(),
            Supply::ApiId => model.api_id.clone(),
            Supply::SourceIp => c.source_ip.clone(),
            Supply::UserAgent => c.user_agent.clone(),
            Supply::RequestTime => clf(now),
            Supply::RequestTimeEpoch => now.to_string(),
            Supply::Stage => model.stage.clone(),
            Supply::MessageId => match &e.message_id {
                Some(id) => id.clone(),
                None => continue,
            },
            Supply::DisconnectStatus => match e.close {
                Some((code, _)) => code.to_string(),
                None => continue,
            },
            Supply::DisconnectReason => match e.close {
                Some((_, reason)) => reason.to_string(),
                None => continue,
            },
        };
        m.insert(row.variable, value);
    }
    m
}

fn timeout_for(gw: &Shared, integration: &Integration) -> Duration {
    gw.config
        .integration_timeout
        .or(integration.timeout_ms.map(Duration::from_millis))
        .unwrap_or(Duration::from_millis(contract::INTEGRATION_TIMEOUT_MS))
}

/// Calls a route's integration, recording metrics.
async fn invoke(gw: &Shared, route: &Route, inputs: &Inputs<'_>, body: Bytes) -> Option<Outcome> {
    let integration = route.integration.as_ref()?;
    let mapped = mapping::apply(&integration.parameters, inputs);
    let (outcome, took) = integration::call(&gw.client, integration, &mapped, body, timeout_for(gw, integration)).await;
    gw.metrics.integration(&route.key, outcome.kind(), took);
    if let Outcome::Failed(reason) = &outcome {
        if let Some(alike) = gw.warn_integration.admit() {
            tracing::warn!(route = %route.key, reason = %reason, alike_since_last = alike, "integration call failed");
        }
    }
    Some(outcome)
}

/// The gateway-generated error frame.
pub fn error_frame(message: &str, connection_id: &str, request_id: &str) -> String {
    serde_json::json!({ "message": message, "connectionId": connection_id, "requestId": request_id }).to_string()
}

/// Runs `$connect`: `Ok` with the subprotocol to confirm, or the refusal to answer.
pub async fn connect(
    gw: &Shared,
    ctx: &Ctx,
    headers: &HashMap<String, String>,
    query: &HashMap<String, String>,
) -> Result<Option<HeaderValue>, Response<Body>> {
    let Some(route) = gw.config.model.routes.get("$connect") else {
        return Ok(None);
    };
    let request_id = ids::new_id();
    let event = Event {
        kind: "CONNECT",
        route: "$connect",
        request_id: &request_id,
        message_id: None,
        close: None,
    };
    let context = context(gw, ctx, &event);
    let inputs = Inputs {
        context: &context,
        handshake: Some((headers, query)),
        body: None,
        stage_variables: &gw.config.model.stage_variables,
    };
    match invoke(gw, route, &inputs, Bytes::new()).await {
        None => Ok(None),
        Some(Outcome::Response { status, headers, .. }) if status.is_success() => {
            Ok(headers.get(header::SEC_WEBSOCKET_PROTOCOL).cloned())
        }
        Some(Outcome::Response { status, .. }) => {
            gw.metrics.connect("rejected");
            Err(http_server::json(
                status,
                &serde_json::json!({
                    "message": status.canonical_reason().unwrap_or("Forbidden"),
                    "connectionId": ctx.id,
                    "requestId": request_id,
                }),
            ))
        }
        Some(Outcome::Timeout) => {
            gw.metrics.connect("failed");
            Err(http_server::json(
                StatusCode::GATEWAY_TIMEOUT,
                &serde_json::json!({ "message": "Endpoint request timed out" }),
            ))
        }
        Some(Outcome::Failed(_)) => {
            gw.metrics.connect("failed");
            Err(http_server::json(
                StatusCode::BAD_GATEWAY,
                &serde_json::json!({ "message": "Internal server error" }),
            ))
        }
    }
}

/// The message path: route selection, the integration, and the frame to send back.
pub async fn message(gw: Arc<Shared>, ctx: Arc<Ctx>, text: String) -> Option<String> {
    gw.metrics.message();
    let model = &gw.config.model;
    let request_id = ids::new_id();
    let Some(key) = selection::select(&model.selection, &text, |k| model.routes.contains_key(k), "$default") else {
        return Some(error_frame("Forbidden", &ctx.id, &request_id));
    };
    let route = model.routes.get(&key)?;
    let body_json = serde_json::from_str::<serde_json::Value>(&text).ok();
    let event = Event {
        kind: "MESSAGE",
        route: &key,
        request_id: &request_id,
        message_id: Some(ids::new_id()),
        close: None,
    };
    let context = context(&gw, &ctx, &event);
    let inputs = Inputs {
        context: &context,
        handshake: None,
        body: body_json.as_ref(),
        stage_variables: &model.stage_variables,
    };
    match invoke(&gw, route, &inputs, Bytes::from(text)).await? {
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
pub async fn disconnect(gw: &Shared, ctx: &Ctx, code: u16, reason: &str) {
    let Some(route) = gw.config.model.routes.get("$disconnect") else {
        return;
    };
    let request_id = ids::new_id();
    let event = Event {
        kind: "DISCONNECT",
        route: "$disconnect",
        request_id: &request_id,
        message_id: None,
        close: Some((code, reason)),
    };
    let context = context(gw, ctx, &event);
    let inputs = Inputs {
        context: &context,
        handshake: None,
        body: None,
        stage_variables: &gw.config.model.stage_variables,
    };
    let _ = invoke(gw, route, &inputs, Bytes::new()).await;
}

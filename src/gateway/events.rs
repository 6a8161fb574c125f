//! The event pipeline: for `$connect`, each message and `$disconnect`, the context variables
//! (built from [`crate::contract::CONTEXT`]), the `$connect` authorizer, route selection, the mapped integration call with
//! its timeout and metrics, and what the client gets back (the 101's subprotocol, a reply frame
//! or an error frame).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, header};
use tokio_tungstenite::tungstenite::Message;

use super::authorizer::{self, EventContext, Sources, Verdict};
use super::connection::{ClientMessage, Ctx};
use super::content;
use super::error::GatewayError;
use super::ids;
use super::integration::{self, Outcome};
use super::mapping::{self, ContextValues, Inputs, Mapping};
use super::selection;
use super::shared::Shared;
use super::template::{Integration, Route};
use crate::contract::{self, Supply};
use crate::timefmt::{clf, now_ms};
use crate::trace::Hop;

/// What one event adds to the connection's context.
struct Event<'a> {
    kind: &'static str,
    route: &'a str,
    request_id: &'a str,
    /// Messages only (an id is drawn only if a mapping reads it).
    message: bool,
    /// `$disconnect` only: status and reason.
    close: Option<(u16, &'a str)>,
}

/// Context variables for one event: those of the contract's rows that one of `mappings` reads
/// and that have a value (the rest would be formatted for nothing). Each is computed once,
/// however many mappings read it.
fn context(gw: &Shared, c: &Ctx, e: &Event<'_>, mappings: &[Mapping]) -> ContextValues {
    let mut values = ContextValues::default();
    let mut now = None;
    for i in mappings.iter().filter_map(|m| m.context_row) {
        if values[i].is_some() {
            continue;
        }
        values[i] = supply(gw, c, e, contract::CONTEXT[i].supply, &mut now);
    }
    values
}

/// One context variable's value for an event (`now` is read once per event).
fn supply(gw: &Shared, c: &Ctx, e: &Event<'_>, supply: Supply, now: &mut Option<i64>) -> Option<String> {
    let model = &gw.config.model;
    let mut now = || *now.get_or_insert_with(now_ms);
    match supply {
        Supply::ConnectionId => Some(c.id.clone()),
        Supply::ConnectedAt => Some(c.connected_at.to_string()),
        Supply::DomainName => Some(c.domain.clone()),
        Supply::EventType => Some(e.kind.to_string()),
        Supply::RouteKey => Some(e.route.to_string()),
        Supply::RequestId => Some(e.request_id.to_string()),
        Supply::ApiId => Some(model.api_id.clone()),
        Supply::SourceIp => Some(c.source_ip.clone()),
        Supply::UserAgent => Some(c.user_agent.clone()),
        Supply::RequestTime => Some(clf(now())),
        Supply::RequestTimeEpoch => Some(now().to_string()),
        Supply::Stage => Some(model.stage.clone()),
        Supply::MessageId => e.message.then(ids::new_id),
        Supply::DisconnectStatus => e.close.map(|(code, _)| code.to_string()),
        Supply::DisconnectReason => e.close.map(|(_, reason)| reason.to_string()),
        Supply::AuthorizerPrincipalId => c.authorizer.as_ref().map(|a| a.principal_id.clone()),
        // Every connection was presigned with the one key when `$connect` is AWS_IAM.
        Supply::Iam(field) => model
            .routes
            .get("$connect")
            .filter(|r| r.iam)
            .and(gw.config.verifier.as_ref())
            .map(|v| v.identity(field)),
    }
}

/// What a route's integration maps (nothing without an integration).
fn mappings(route: &Route) -> &[Mapping] {
    route
        .integration
        .as_ref()
        .map(|i| i.parameters.as_slice())
        .unwrap_or(&[])
}

fn timeout_for(gw: &Shared, integration: &Integration) -> Duration {
    gw.config
        .integration_timeout
        .or(integration.timeout_ms.map(Duration::from_millis))
        .unwrap_or(Duration::from_millis(contract::INTEGRATION_TIMEOUT_MS))
}

/// Calls a route's integration, recording metrics; `binary` adds `x-socketless-frame: binary`,
/// and the event's trace goes along as `traceparent` (see [`crate::trace`]).
async fn invoke(
    gw: &Shared,
    route: &Route,
    inputs: &Inputs<'_>,
    body: Bytes,
    binary: bool,
    hop: &Hop,
) -> Option<Outcome> {
    let integration = route.integration.as_ref()?;
    let mut mapped = mapping::apply(&integration.parameters, inputs);
    if hop.is_some() {
        for (name, value) in hop.headers() {
            if let Ok(value) = value.to_str() {
                mapped.headers.retain(|(n, _)| *n != name);
                mapped.headers.push((name, value.to_string()));
            }
        }
    }
    if binary {
        mapped.headers.push((
            http::HeaderName::from_static(contract::FRAME),
            contract::FRAME_BINARY.to_string(),
        ));
    }
    let timeout = timeout_for(gw, integration);
    let (outcome, took) = match route.key.as_str() {
        // Boxed: once a connection, and larger than a message's call, whose future it would
        // otherwise size.
        "$disconnect" => Box::pin(gw.disconnects.call(integration, mapped, body, timeout)).await,
        _ => integration::call(&gw.client, integration, mapped, body, timeout).await,
    };
    gw.metrics.integration(&route.key, outcome.kind(), took);
    if !matches!(outcome.kind(), "ok" | "status_4xx") {
        hop.outcome(Some(outcome.kind().to_string()));
    }
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

/// Runs the `$connect` route's authorizer: what it allowed, or the refusal to answer (401
/// without a call when an identity source is missing or empty).
async fn authorize(
    gw: &Shared,
    ctx: &Ctx,
    event: &Event<'_>,
    logical_id: &str,
    headers: &HashMap<String, String>,
    query: &HashMap<String, String>,
) -> Result<authorizer::Authorized, GatewayError> {
    let model = &gw.config.model;
    let (Some(spec), Some(endpoint)) = (
        model.authorizers.get(logical_id),
        gw.config.authorizer.endpoints.get(logical_id),
    ) else {
        // Configuration makes sure both exist; refuse rather than let a client through.
        gw.metrics.connect("failed");
        return Err(GatewayError::AuthorizerFailed);
    };
    let now = now_ms();
    let context_of = |variable: &str| {
        let row = contract::context_variable(variable)?;
        supply(gw, ctx, event, row.supply, &mut Some(now))
    };
    let sources = Sources {
        headers,
        query,
        stage_variables: &model.stage_variables,
        context: &context_of,
    };
    if !authorizer::identity_present(spec, &sources) {
        gw.metrics.connect("rejected");
        return Err(GatewayError::Unauthorized);
    }
    let arn = authorizer::method_arn(&gw.config.authorizer.region, &model.api_id, &model.stage);
    let body = authorizer::event(
        &arn,
        &sources,
        &EventContext {
            ctx,
            request_id: event.request_id,
            api_id: &model.api_id,
            stage: &model.stage,
            now_ms: now,
        },
    );
    let (verdict, took) = authorizer::call(&gw.client, endpoint, &body, gw.config.authorizer.timeout).await;
    gw.metrics.authorizer(logical_id, verdict.outcome(), took);
    match verdict {
        Verdict::Allow(authorized) => Ok(authorized),
        Verdict::Failed(outcome) => {
            if let Some(alike) = gw.warn_integration.admit() {
                tracing::warn!(authorizer = %logical_id, outcome, alike_since_last = alike, "authorizer call failed");
            }
            gw.metrics.connect("failed");
            Err(authorizer::refusal(&verdict))
        }
        other => {
            gw.metrics.connect("rejected");
            Err(authorizer::refusal(&other))
        }
    }
}

/// Runs `$connect`: its authorizer first, when it has one (what it allowed stays on `ctx`),
/// then its integration: `Ok` with the subprotocol to confirm, or the refusal to answer.
pub async fn connect(
    gw: &Shared,
    ctx: &mut Ctx,
    headers: &HashMap<String, String>,
    query: &HashMap<String, String>,
) -> Result<Option<HeaderValue>, GatewayError> {
    let Some(route) = gw.config.model.routes.get("$connect") else {
        return Ok(None);
    };
    let request_id = ids::new_id();
    // A client may start the trace: the handshake's `traceparent` is continued.
    let hop = Hop::incoming(
        "gateway $connect",
        crate::trace::Kind::Server,
        |name| headers.get(name).map(String::as_str),
        || span_attributes(&ctx.id, "$connect"),
    );
    let event = Event {
        kind: "CONNECT",
        route: "$connect",
        request_id: &request_id,
        message: false,
        close: None,
    };
    if let Some(logical_id) = &route.authorizer {
        let authorized = Box::pin(authorize(gw, ctx, &event, logical_id, headers, query)).await?;
        ctx.authorizer = Some(Box::new(authorized));
    }
    let ctx: &Ctx = ctx;
    let context = context(gw, ctx, &event, mappings(route));
    let inputs = Inputs {
        context: &context,
        handshake: Some((headers, query)),
        body: None,
        stage_variables: &gw.config.model.stage_variables,
        authorizer: ctx.authorizer.as_deref(),
    };
    match invoke(gw, route, &inputs, Bytes::new(), false, &hop).await {
        None => Ok(None),
        Some(Outcome::Response { status, headers, .. }) if status.is_success() => {
            // The 101 may confirm only a protocol the client offered, and only one.
            let offer = inputs
                .handshake
                .and_then(|(h, _)| h.get("sec-websocket-protocol"))
                .map(String::as_str);
            let chosen = headers.get(header::SEC_WEBSOCKET_PROTOCOL);
            super::handshake::chosen_subprotocol(offer, chosen).map_err(|()| {
                gw.metrics.connect("failed");
                tracing::info!(
                    connection_id = %ctx.id,
                    chosen = ?chosen,
                    "$connect chose a subprotocol the client did not offer; handshake refused"
                );
                GatewayError::SubprotocolNotOffered
            })
        }
        Some(Outcome::Response { status, .. }) => {
            gw.metrics.connect("rejected");
            Err(GatewayError::ConnectRefused {
                status,
                connection_id: ctx.id.clone(),
                request_id,
            })
        }
        Some(Outcome::Timeout) => {
            gw.metrics.connect("failed");
            Err(GatewayError::ConnectTimedOut)
        }
        Some(Outcome::Failed(_)) => {
            gw.metrics.connect("failed");
            Err(GatewayError::ConnectFailed)
        }
    }
}

/// The message path: route selection, the integration's content handling, the integration,
/// and the frame to send back.
pub async fn message(gw: Arc<Shared>, ctx: Arc<Ctx>, frame: ClientMessage) -> Option<Message> {
    gw.metrics.message();
    let model = &gw.config.model;
    let request_id = ids::new_id();
    let error = |message: &str| Some(Message::text(error_frame(message, &ctx.id, &request_id)));
    // Parsed once, for route selection and for the mappings that read the body. A binary
    // frame is not JSON: it selects `$default`, as non-JSON text does.
    let body_json = match &frame {
        ClientMessage::Text(text) => serde_json::from_str::<serde_json::Value>(text.as_str()).ok(),
        ClientMessage::Binary(_) => None,
    };
    let Some(key) = selection::select_parsed(
        &model.selection,
        body_json.as_ref(),
        |k| model.routes.contains_key(k),
        "$default",
    ) else {
        return error("Forbidden");
    };
    let route = model.routes.get(&key)?;
    let integration = route.integration.as_ref()?;
    // Frames carry no trace context: each message starts a trace (tracing on).
    let hop = Hop::root("gateway message", || span_attributes(&ctx.id, &key));
    let event = Event {
        kind: "MESSAGE",
        route: &key,
        request_id: &request_id,
        message: true,
        close: None,
    };
    let context = context(&gw, &ctx, &event, mappings(route));
    let inputs = Inputs {
        context: &context,
        handshake: None,
        body: body_json.as_ref(),
        stage_variables: &model.stage_variables,
        authorizer: ctx.authorizer.as_deref(),
    };
    let Ok((body, binary)) = content::request(frame, integration.request_content) else {
        // A payload the integration's CONVERT_TO_BINARY cannot decode.
        return error("Internal server error");
    };
    match invoke(&gw, route, &inputs, body, binary, &hop).await? {
        Outcome::Response { body, headers, .. } => {
            if !route.two_way || body.is_empty() {
                return None;
            }
            match content::reply(body, &headers, integration.response_content, gw.config.binary_frames) {
                Ok(frame) => Some(frame),
                Err(()) => error("Internal server error"),
            }
        }
        Outcome::Timeout => error("Endpoint request timed out"),
        Outcome::Failed(_) => error("Internal server error"),
    }
}

/// Runs `$disconnect` (best effort).
pub async fn disconnect(gw: &Shared, ctx: &Ctx, code: u16, reason: &str) {
    let Some(route) = gw.config.model.routes.get("$disconnect") else {
        return;
    };
    let request_id = ids::new_id();
    let hop = Hop::root("gateway $disconnect", || span_attributes(&ctx.id, "$disconnect"));
    let event = Event {
        kind: "DISCONNECT",
        route: "$disconnect",
        request_id: &request_id,
        message: false,
        close: Some((code, reason)),
    };
    let context = context(gw, ctx, &event, mappings(route));
    let inputs = Inputs {
        context: &context,
        handshake: None,
        body: None,
        stage_variables: &gw.config.model.stage_variables,
        authorizer: ctx.authorizer.as_deref(),
    };
    let _ = invoke(gw, route, &inputs, Bytes::new(), false, &hop).await;
}

/// What a gateway span says about its event.
fn span_attributes(connection_id: &str, route: &str) -> Vec<opentelemetry::KeyValue> {
    use opentelemetry::KeyValue;
    vec![
        KeyValue::new("socketless.connection_id", connection_id.to_string()),
        KeyValue::new("socketless.route", route.to_string()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::future::future_size;

    /// Each message's future is boxed and written in full when the frame arrives, so what it
    /// holds is paid per message. The `$disconnect` call and a new backend connection are
    /// boxed where they happen, and the request is not passed through a function of its own:
    /// 4,072 bytes before that.
    #[test]
    fn a_message_future_stays_small() {
        let message = future_size(message);
        assert!(message <= 3_200, "a message's future is {message} bytes");
    }
}

//! The conformance backend (`socketless serve --conformance`, `socketless dev --conformance`):
//! a [`MessageHandler`] whose behaviour the test messages drive, so one client-side suite can
//! check any gateway in front of it.
//!
//! Messages are JSON `{"action": ..., "op": ...}`; anything else is answered with
//! `{"routeKey", "body"}`. Ops: `echo` (`data`), `whoami` (context and the headers of this call
//! and of the connection's `$connect`), `sleep` (`ms`), `status` (`status`, `body`), `bytes` (a
//! reply that is not UTF-8), `disconnects` (`id`: did its `$disconnect` arrive here?) and
//! `tags` (`tag`: did a `$connect` with `?tag=` carry it?). `$connect` is refused with the status
//! in `x-socketless-conformance-connect`, which the template maps from `?refuse=` when
//! `ConformanceMapping=true`. An accepted `$connect` that offered subprotocols (the template
//! maps `Sec-WebSocket-Protocol` onto `x-socketless-subprotocols` for every app, and onto
//! `x-socketless-conformance-protocol` with the conformance mapping) confirms the first one, as
//! a browser that carries a token as its subprotocol needs; `?token=` reaches it as
//! `x-socketless-conformance-token`. Both show in `whoami`'s `connectHeaders`.
//!
//! It reads every header of a call (`wants_headers`). State is kept in memory, bounded: run one
//! replica.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use serde_json::{Map, Value, json};

use crate::contract;
use crate::future::BoxFuture;
use crate::handler::{MessageHandler, Rejection, RequestContext};

/// Header the template maps from `route.request.querystring.refuse` on `$connect`.
pub const REFUSE_HEADER: &str = "x-socketless-conformance-connect";
/// Header the template maps from `route.request.querystring.tag` on `$connect`.
pub const TAG_HEADER: &str = "x-socketless-conformance-tag";
/// Header the template maps from the handshake's `Sec-WebSocket-Protocol` on `$connect`.
pub const PROTOCOL_HEADER: &str = "x-socketless-conformance-protocol";
/// Longest `sleep` op honoured.
const MAX_SLEEP_MS: u64 = 60_000;
/// Entries kept per record (connect headers, disconnects, tags).
const KEEP: usize = 4096;

/// A bounded insertion-ordered map: the oldest entry goes first.
struct Recent<V> {
    order: VecDeque<String>,
    map: HashMap<String, V>,
}

impl<V> Default for Recent<V> {
    fn default() -> Self {
        Recent {
            order: VecDeque::new(),
            map: HashMap::new(),
        }
    }
}

impl<V> Recent<V> {
    fn insert(&mut self, key: String, value: V) {
        if self.map.insert(key.clone(), value).is_none() {
            self.order.push_back(key);
        }
        while self.order.len() > KEEP {
            if let Some(old) = self.order.pop_front() {
                self.map.remove(&old);
            }
        }
    }
}

/// What the conformance backend remembers between calls.
#[derive(Default)]
struct State {
    connect_headers: Recent<Value>,
    disconnects: Recent<Value>,
    tags: Recent<()>,
}

/// The conformance handler.
#[derive(Default)]
pub struct Conformance {
    state: Mutex<State>,
}

impl Conformance {
    pub fn new() -> Self {
        Conformance::default()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The call's headers as JSON (names lower-case; the shared secret redacted).
fn headers_json(ctx: &RequestContext) -> Value {
    let Some(headers) = &ctx.headers else {
        return Value::Null;
    };
    let mut out = Map::new();
    for (name, value) in headers.iter() {
        let text = if name.as_str() == contract::SHARED_SECRET {
            "(redacted)".to_string()
        } else {
            String::from_utf8_lossy(value.as_bytes()).into_owned()
        };
        out.insert(name.as_str().to_string(), Value::String(text));
    }
    Value::Object(out)
}

fn header(ctx: &RequestContext, name: &str) -> Option<String> {
    ctx.headers
        .as_ref()?
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn reply(value: Value) -> Result<Option<Bytes>, Rejection> {
    Ok(Some(Bytes::from(value.to_string())))
}

impl Conformance {
    fn whoami(&self, ctx: &RequestContext) -> Value {
        let connect = self.state().connect_headers.map.get(&ctx.connection_id).cloned();
        json!({
            "connectionId": ctx.connection_id,
            "routeKey": ctx.route_key,
            "eventType": ctx.event_type,
            "requestId": ctx.request_id,
            "stage": ctx.stage,
            "domainName": ctx.domain,
            "headers": headers_json(ctx),
            "connectHeaders": connect.unwrap_or(Value::Null),
        })
    }

    async fn op(
        &self,
        ctx: &RequestContext,
        msg: &Map<String, Value>,
        body: Bytes,
    ) -> Result<Option<Bytes>, Rejection> {
        let op = msg.get("op").and_then(Value::as_str).unwrap_or("echo");
        match op {
            "echo" => match msg.get("data") {
                Some(Value::String(s)) => Ok(Some(Bytes::from(s.clone()))),
                Some(other) => reply(other.clone()),
                None => Ok(Some(body)),
            },
            "whoami" => reply(self.whoami(ctx)),
            "sleep" => {
                let ms = msg.get("ms").and_then(Value::as_u64).unwrap_or(0).min(MAX_SLEEP_MS);
                tokio::time::sleep(Duration::from_millis(ms)).await;
                reply(json!({ "slept": ms }))
            }
            "status" => {
                let status = msg
                    .get("status")
                    .and_then(Value::as_u64)
                    .and_then(|s| u16::try_from(s).ok())
                    .and_then(|s| StatusCode::from_u16(s).ok())
                    .unwrap_or(StatusCode::OK);
                let text = msg.get("body").and_then(Value::as_str).unwrap_or_default().to_string();
                if status.is_success() {
                    Ok(Some(Bytes::from(text)))
                } else {
                    Err(Rejection::new(status, text))
                }
            }
            "bytes" => Ok(Some(Bytes::from_static(&[0xff, 0xfe, 0x00, 0x80]))),
            "disconnects" => {
                let id = msg.get("id").and_then(Value::as_str).unwrap_or_default();
                let seen = self.state().disconnects.map.get(id).cloned();
                reply(json!({ "id": id, "seen": seen.is_some(), "disconnect": seen }))
            }
            "tags" => {
                let tag = msg.get("tag").and_then(Value::as_str).unwrap_or_default();
                let seen = self.state().tags.map.contains_key(tag);
                reply(json!({ "tag": tag, "seen": seen }))
            }
            other => Err(Rejection::new(StatusCode::BAD_REQUEST, format!("unknown op {other:?}"))),
        }
    }
}

/// The first subprotocol a `Sec-WebSocket-Protocol` value offers.
fn first_offered(offered: &str) -> Option<String> {
    offered
        .split(',')
        .map(str::trim)
        .find(|p| !p.is_empty())
        .map(str::to_string)
}

impl MessageHandler for Conformance {
    fn wants_headers(&self) -> bool {
        true
    }

    /// The first offered subprotocol: from `x-socketless-subprotocols`, the header every
    /// application gets, else from the conformance mapping's own.
    fn subprotocol(&self, ctx: &RequestContext) -> Option<String> {
        match ctx.offered_subprotocols().next() {
            Some(p) => Some(p.to_string()),
            None => first_offered(&header(ctx, PROTOCOL_HEADER)?),
        }
    }

    fn on_connect<'a>(&'a self, ctx: &'a RequestContext) -> BoxFuture<'a, Result<(), Rejection>> {
        Box::pin(async move {
            let headers = headers_json(ctx);
            {
                let mut state = self.state();
                if let Some(tag) = header(ctx, TAG_HEADER) {
                    state.tags.insert(tag, ());
                }
                state.connect_headers.insert(ctx.connection_id.clone(), headers);
            }
            match header(ctx, REFUSE_HEADER).and_then(|s| s.trim().parse::<u16>().ok()) {
                Some(code) => match StatusCode::from_u16(code) {
                    Ok(status) if !status.is_success() && code >= 400 => {
                        Err(Rejection::new(status, "refused by the conformance backend"))
                    }
                    _ => Ok(()),
                },
                None => Ok(()),
            }
        })
    }

    fn on_message<'a>(
        &'a self,
        ctx: &'a RequestContext,
        body: Bytes,
    ) -> BoxFuture<'a, Result<Option<Bytes>, Rejection>> {
        Box::pin(async move {
            match serde_json::from_slice::<Value>(&body) {
                Ok(Value::Object(msg)) => self.op(ctx, &msg, body).await,
                _ => reply(json!({
                    "routeKey": ctx.route_key,
                    "body": String::from_utf8_lossy(&body),
                })),
            }
        })
    }

    fn on_disconnect<'a>(&'a self, ctx: &'a RequestContext) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let record = json!({
                "status": ctx.disconnect_status,
                "reason": ctx.disconnect_reason,
            });
            let mut state = self.state();
            state.disconnects.insert(ctx.connection_id.clone(), record);
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_offered_subprotocol_is_confirmed() {
        assert_eq!(first_offered("tok-123, chat").as_deref(), Some("tok-123"));
        assert_eq!(first_offered(" , chat").as_deref(), Some("chat"));
        assert_eq!(first_offered(""), None);
    }
}

//! Content-handling and subprotocol cases: ContentHandlingStrategy on an HTTP_PROXY
//! integration and its `$default` integration response (the template's `conformance-text` and
//! `conformance-binary` routes, `ConformanceMapping=true`), and the subprotocol a `$connect`
//! backend confirms. AWS documents the strategies for WebSocket APIs and the confirmed
//! subprotocol for Lambda proxy; for HTTP_PROXY both are unconfirmed, so every case here
//! reports a known difference (with what it observed when the target did something else).

use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use super::handshake::cases;
use super::ws;
use super::{Outcome, Run, fail};

cases! {
    "content-to-text-text-passes" => text_passes,
    "content-to-text-binary-reply-base64" => binary_reply_base64,
    "content-to-binary-not-base64" => not_base64,
    "subprotocol-confirmed" => subprotocol_confirmed,
}

const KD_CONTENT: &str = "kd-content-handling-proxy";
const KD_SUBPROTOCOL: &str = "kd-subprotocol-proxy";

/// What the target sent back for one message on a fresh connection.
async fn answer(cx: &Run, msg: Value) -> Result<Message, String> {
    let mut c = ws::open(&cx.url, &[], cx.wait).await.map_err(|e| e.to_string())?;
    ws::send(&mut c, &msg.to_string()).await?;
    let r = ws::next_data(&mut c, cx.wait).await.map_err(|e| e.to_string());
    let _ = c.close(None).await;
    r
}

/// The known difference, observed as socketless does it when `got` is `want`.
fn known(id: &'static str, got: Result<Message, String>, want: &Message) -> Outcome {
    match got {
        Ok(m) if &m == want => Outcome::Known(id, None),
        Ok(Message::Text(t)) => Outcome::Known(id, Some(format!("text {:?}", t.as_str()))),
        Ok(m) => Outcome::Known(id, Some(format!("a {}-byte binary frame", m.len()))),
        Err(e) => Outcome::Known(id, Some(e)),
    }
}

fn needs_routes(cx: &Run) -> Option<Outcome> {
    (!cx.custom_route).then(|| {
        Outcome::NotRun("--no-custom-route: the stack has no `conformance-text`/`conformance-binary` routes".into())
    })
}

/// CONVERT_TO_TEXT on a text message, and on a text answer: both pass unchanged.
async fn text_passes(cx: &Run) -> Outcome {
    if let Some(o) = needs_routes(cx) {
        return o;
    }
    let msg = json!({"action": "conformance-text", "op": "echo", "data": "conformance text"});
    known(KD_CONTENT, answer(cx, msg).await, &Message::text("conformance text"))
}

/// CONVERT_TO_TEXT on the integration response: the backend's binary answer (`ff fe 00 80`)
/// reaches the client as base64 text.
async fn binary_reply_base64(cx: &Run) -> Outcome {
    if let Some(o) = needs_routes(cx) {
        return o;
    }
    let msg = json!({"action": "conformance-text", "op": "bytes"});
    known(KD_CONTENT, answer(cx, msg).await, &Message::text("//4AgA=="))
}

/// CONVERT_TO_BINARY on a message that is not base64 (JSON never is): the conversion fails,
/// and socketless answers with API Gateway's `Internal server error` frame.
async fn not_base64(cx: &Run) -> Outcome {
    if let Some(o) = needs_routes(cx) {
        return o;
    }
    let msg = json!({"action": "conformance-binary", "op": "echo"});
    match answer(cx, msg).await {
        Ok(Message::Text(t)) => {
            let message = serde_json::from_str::<Value>(t.as_str())
                .ok()
                .and_then(|v| v.get("message")?.as_str().map(str::to_string));
            if message.as_deref() == Some("Internal server error") {
                Outcome::Known(KD_CONTENT, None)
            } else {
                Outcome::Known(KD_CONTENT, Some(format!("text {:?}", t.as_str())))
            }
        }
        other => known(KD_CONTENT, other, &Message::text("")),
    }
}

/// Two subprotocols offered; the conformance backend confirms the first (the template maps the
/// offer onto its `$connect` call). The client library refuses a 101 that confirms none or one
/// not offered, so an open connection is the confirmation.
async fn subprotocol_confirmed(cx: &Run) -> Outcome {
    let offer = [("sec-websocket-protocol", "conformance-proto, other-proto")];
    match ws::open(&cx.url, &offer, cx.wait).await {
        Ok(mut c) => {
            let _ = c.close(None).await;
            Outcome::Known(KD_SUBPROTOCOL, None)
        }
        Err(ws::Refused::Status(s, _)) => fail(format!("handshake refused with {s}")),
        Err(e) => Outcome::Known(KD_SUBPROTOCOL, Some(e.to_string())),
    }
}

//! Message cases: route selection, two-way replies, error frames, the integration timeout, the
//! close codes for frames the gateway refuses, and `$disconnect` reaching the backend.

use std::time::Duration;

use futures_util::SinkExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use super::handshake::cases;
use super::ws::{self, Ended, Ws};
use super::{Outcome, Run, fail};

cases! {
    "echo-default-route" => echo,
    "route-non-json-to-default" => non_json,
    "route-unknown-key-to-default" => unknown_key,
    "route-missing-key-to-default" => missing_key,
    "route-custom" => custom_route,
    "fragmented-message-reassembled" => fragmented,
    "reply-4xx-passthrough" => reply_4xx,
    "reply-5xx-passthrough" => reply_5xx,
    "reply-not-utf8" => reply_not_utf8,
    "integration-timeout" => integration_timeout,
    "close-binary-1003" => close_binary,
    "close-frame-over-32k-1009" => close_big_frame,
    "close-message-over-128k-1009" => close_big_message,
    "close-invalid-utf8-1007" => close_invalid_utf8,
    "close-reserved-opcode-1002" => close_reserved_opcode,
    "disconnect-reaches-backend" => disconnect,
}

async fn open(cx: &Run) -> Result<Ws, String> {
    ws::open(&cx.url, &[], cx.wait).await.map_err(|e| e.to_string())
}

/// Opens a connection, runs `f` on it, closes it.
async fn with_conn<F, Fut>(cx: &Run, f: F) -> Outcome
where
    F: FnOnce(Ws) -> Fut,
    Fut: std::future::Future<Output = (Ws, Outcome)>,
{
    match open(cx).await {
        Ok(c) => {
            let (mut c, outcome) = f(c).await;
            let _ = tokio::time::timeout(Duration::from_secs(2), c.close(None)).await;
            outcome
        }
        Err(e) => fail(e),
    }
}

async fn echo(cx: &Run) -> Outcome {
    with_conn(cx, |mut c| async move {
        let msg = json!({"action": "echo", "op": "echo", "data": "conformance echo"});
        let r = match ws::send(&mut c, &msg.to_string()).await {
            Ok(()) => ws::next_text(&mut c, cx.wait).await,
            Err(e) => Err(e),
        };
        let o = match r {
            Ok(t) if t == "conformance echo" => Outcome::Pass,
            Ok(t) => fail(format!("reply {t:?}")),
            Err(e) => fail(e),
        };
        (c, o)
    })
    .await
}

/// Sends `msg` and checks the route key the backend saw.
async fn route_of(cx: &Run, msg: String, want: &'static str) -> Outcome {
    with_conn(cx, |mut c| async move {
        let r = match ws::send(&mut c, &msg).await {
            Ok(()) => ws::next_text(&mut c, cx.wait).await,
            Err(e) => Err(e),
        };
        let o = match r.and_then(|t| serde_json::from_str::<Value>(&t).map_err(|_| format!("reply {t:?}"))) {
            Ok(v) => match v.get("routeKey").and_then(Value::as_str) {
                Some(k) if k == want => Outcome::Pass,
                other => fail(format!("route {other:?}, want {want:?}")),
            },
            Err(e) => fail(e),
        };
        (c, o)
    })
    .await
}

async fn non_json(cx: &Run) -> Outcome {
    route_of(cx, "plain text, not JSON".into(), "$default").await
}

async fn unknown_key(cx: &Run) -> Outcome {
    route_of(
        cx,
        json!({"action": "no-such-route", "op": "whoami"}).to_string(),
        "$default",
    )
    .await
}

async fn missing_key(cx: &Run) -> Outcome {
    route_of(cx, json!({"op": "whoami"}).to_string(), "$default").await
}

async fn custom_route(cx: &Run) -> Outcome {
    if !cx.custom_route {
        return Outcome::NotRun("--no-custom-route: the stack has no `conformance` route".into());
    }
    route_of(
        cx,
        json!({"action": "conformance", "op": "whoami"}).to_string(),
        "conformance",
    )
    .await
}

async fn fragmented(cx: &Run) -> Outcome {
    with_conn(cx, |mut c| async move {
        // 100 KiB in four frames of 25 KiB: under both limits once reassembled.
        let data = "f".repeat(100 * 1024 - 64);
        let msg = json!({"action": "echo", "op": "echo", "data": data})
            .to_string()
            .into_bytes();
        let chunks: Vec<Vec<u8>> = msg.chunks(25 * 1024).map(<[u8]>::to_vec).collect();
        let last = chunks.len() - 1;
        for (i, chunk) in chunks.into_iter().enumerate() {
            let op = if i == 0 { ws::TEXT } else { ws::CONTINUE };
            if let Err(e) = ws::send_frame(&mut c, chunk, op, i == last).await {
                return (c, fail(e));
            }
        }
        let o = match ws::next_text(&mut c, cx.wait).await {
            Ok(t) if t == data => Outcome::Pass,
            Ok(t) => fail(format!("reply of {} bytes, want the {} sent", t.len(), data.len())),
            Err(e) => fail(e),
        };
        (c, o)
    })
    .await
}

/// Asks the backend to answer with `status` and a marker body; the text that came back.
async fn status_reply(cx: &Run, status: u16) -> Result<String, String> {
    let mut c = open(cx).await?;
    let marker = format!("conformance-status-{status}");
    let msg = json!({"action": "status", "op": "status", "status": status, "body": marker});
    ws::send(&mut c, &msg.to_string()).await?;
    let r = ws::next_text(&mut c, cx.wait).await;
    let _ = c.close(None).await;
    r
}

async fn passthrough(cx: &Run, status: u16) -> Outcome {
    let marker = format!("conformance-status-{status}");
    match status_reply(cx, status).await {
        Ok(t) if t.contains(&marker) => Outcome::Known("kd-error-status-passthrough", None),
        Ok(t) => Outcome::Known("kd-error-status-passthrough", Some(format!("reply {t:?}"))),
        Err(e) => Outcome::Known("kd-error-status-passthrough", Some(e)),
    }
}

async fn reply_4xx(cx: &Run) -> Outcome {
    passthrough(cx, 400).await
}

async fn reply_5xx(cx: &Run) -> Outcome {
    passthrough(cx, 500).await
}

/// The `message` of a gateway error frame.
fn frame_message(text: &str) -> Option<String> {
    let v: Value = serde_json::from_str(text).ok()?;
    v.get("message")?.as_str().map(str::to_string)
}

async fn reply_not_utf8(cx: &Run) -> Outcome {
    with_conn(cx, |mut c| async move {
        let msg = json!({"action": "bytes", "op": "bytes"}).to_string();
        let r = match ws::send(&mut c, &msg).await {
            Ok(()) => ws::next_data(&mut c, cx.wait).await.map_err(|e| e.to_string()),
            Err(e) => Err(e),
        };
        let o = match r {
            Ok(Message::Text(t)) if frame_message(&t).as_deref() == Some("Internal server error") => {
                Outcome::Known("kd-non-utf8-reply", None)
            }
            Ok(Message::Text(t)) => Outcome::Known("kd-non-utf8-reply", Some(format!("text {t:?}"))),
            Ok(m) => Outcome::Known("kd-non-utf8-reply", Some(format!("a {}-byte binary frame", m.len()))),
            Err(e) => Outcome::Known("kd-non-utf8-reply", Some(e)),
        };
        (c, o)
    })
    .await
}

async fn integration_timeout(cx: &Run) -> Outcome {
    let sleep = cx.integration_timeout + Duration::from_secs(1);
    if let Err(why) = cx.may_wait(sleep) {
        return Outcome::NotRun(why);
    }
    with_conn(cx, |mut c| async move {
        let msg = json!({"action": "sleep", "op": "sleep", "ms": sleep.as_millis() as u64});
        let r = match ws::send(&mut c, &msg.to_string()).await {
            Ok(()) => ws::next_text(&mut c, sleep + cx.wait).await,
            Err(e) => Err(e),
        };
        let o = match r {
            Ok(t) if frame_message(&t).as_deref() == Some("Endpoint request timed out") => Outcome::Pass,
            Ok(t) => fail(format!("got {t:?}, want an `Endpoint request timed out` frame")),
            Err(e) => fail(e),
        };
        (c, o)
    })
    .await
}

/// Sends what `send` sends and expects the connection to close with `code`.
async fn expect_close<F, Fut>(cx: &Run, code: u16, send: F) -> Result<(), String>
where
    F: FnOnce(Ws) -> Fut,
    Fut: std::future::Future<Output = (Ws, Result<(), String>)>,
{
    let c = open(cx).await?;
    let (mut c, sent) = send(c).await;
    // A send may fail once the gateway has closed; what matters is the close frame.
    let ended = ws::closed(&mut c, cx.wait).await;
    match ended {
        Ended::Close(got, _) if got == code => Ok(()),
        other => Err(format!(
            "{other}, want close {code}{}",
            sent.err().map(|e| format!(" ({e})")).unwrap_or_default()
        )),
    }
}

fn as_outcome(r: Result<(), String>) -> Outcome {
    match r {
        Ok(()) => Outcome::Pass,
        Err(e) => fail(e),
    }
}

async fn close_binary(cx: &Run) -> Outcome {
    as_outcome(
        expect_close(cx, 1003, |mut c| async move {
            let r = c
                .send(Message::binary(vec![1u8, 2, 3]))
                .await
                .map_err(|e| e.to_string());
            (c, r)
        })
        .await,
    )
}

async fn close_big_frame(cx: &Run) -> Outcome {
    as_outcome(
        expect_close(cx, 1009, |mut c| async move {
            let r = ws::send(&mut c, &"x".repeat(32 * 1024 + 1)).await;
            (c, r)
        })
        .await,
    )
}

async fn close_big_message(cx: &Run) -> Outcome {
    as_outcome(
        expect_close(cx, 1009, |mut c| async move {
            // Nine frames of 16 KiB: each under the frame limit, together over 128 KiB.
            for i in 0..9 {
                let op = if i == 0 { ws::TEXT } else { ws::CONTINUE };
                if let Err(e) = ws::send_frame(&mut c, vec![b'm'; 16 * 1024], op, i == 8).await {
                    return (c, Err(e));
                }
            }
            (c, Ok(()))
        })
        .await,
    )
}

async fn protocol_violation(cx: &Run, code: u16, payload: Vec<u8>, op: ws::OpCodeT) -> Outcome {
    let r = expect_close(cx, code, |mut c| async move {
        let r = ws::send_frame(&mut c, payload, op, true).await;
        (c, r)
    })
    .await;
    match r {
        Ok(()) => Outcome::Known("kd-protocol-violation-close", None),
        Err(e) => Outcome::Known("kd-protocol-violation-close", Some(e)),
    }
}

async fn close_invalid_utf8(cx: &Run) -> Outcome {
    protocol_violation(cx, 1007, vec![b'o', b'k', 0xff, 0xfe], ws::TEXT).await
}

async fn close_reserved_opcode(cx: &Run) -> Outcome {
    protocol_violation(cx, 1002, b"reserved".to_vec(), ws::RESERVED).await
}

async fn disconnect(cx: &Run) -> Outcome {
    let mut a = match open(cx).await {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let id = match ws::connection_id(&mut a, cx.wait).await {
        Ok(id) => id,
        Err(e) => return fail(e),
    };
    let _ = a.close(None).await;
    let _ = ws::closed(&mut a, Duration::from_secs(2)).await;
    let mut b = match open(cx).await {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    // $disconnect is asynchronous: ask a few times.
    let mut last = Value::Null;
    for _ in 0..20 {
        match ws::ask(
            &mut b,
            &json!({"action": "disconnects", "op": "disconnects", "id": id}),
            cx.wait,
        )
        .await
        {
            Ok(v) if v.get("seen").and_then(Value::as_bool) == Some(true) => {
                let _ = b.close(None).await;
                return Outcome::Pass;
            }
            Ok(v) => last = v,
            Err(e) => return fail(e),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let _ = b.close(None).await;
    fail(format!("no $disconnect for {id} within 5 s ({last})"))
}

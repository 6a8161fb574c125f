//! Handshake cases: the upgrade, `$connect` refusals (status and message), the URL length
//! quota, and which request parameters reach the backend.

use serde_json::Value;

use super::ws::{self, Refused};
use super::{Ctx, Outcome, fail};

macro_rules! cases {
    ($($name:literal => $f:path,)*) => {
        pub const NAMES: &[&str] = &[$($name),*];
        pub async fn run(name: &str, cx: &Ctx) -> Option<Outcome> {
            match name { $($name => Some($f(cx).await),)* _ => None }
        }
    };
}
pub(crate) use cases;

cases! {
    "handshake-accepted" => accepted,
    "connect-refused-4xx" => refused_4xx,
    "connect-refused-5xx" => refused_5xx,
    "connect-refusal-message" => refusal_message,
    "url-length-4096-accepted" => url_at_limit,
    "url-length-over-4096-refused" => url_over_limit,
    "mapping-context-headers" => context_headers,
    "mapping-query-parameter" => query_parameter,
    "mapping-unmapped-headers" => unmapped_headers,
}

async fn accepted(cx: &Ctx) -> Outcome {
    match ws::open(&cx.url, &[], cx.wait).await {
        Ok(mut c) => {
            let _ = c.close(None).await;
            Outcome::Pass
        }
        Err(e) => fail(e.to_string()),
    }
}

/// Connects with `?refuse=STATUS`; the handshake's status and body.
async fn refuse(cx: &Ctx, status: u16) -> Result<(u16, Vec<u8>), String> {
    match ws::open(&ws::with_query(&cx.url, &format!("refuse={status}")), &[], cx.wait).await {
        Ok(mut c) => {
            let _ = c.close(None).await;
            Err(format!("?refuse={status} was accepted (is ConformanceMapping=true?)"))
        }
        Err(Refused::Status(s, body)) => Ok((s, body)),
        Err(e) => Err(e.to_string()),
    }
}

async fn refused_4xx(cx: &Ctx) -> Outcome {
    let mut wrong = Vec::new();
    for status in [400, 401, 403, 429] {
        match refuse(cx, status).await {
            Ok((s, _)) if s == status => {}
            Ok((s, _)) => wrong.push(format!("{status} → {s}")),
            Err(e) => wrong.push(e),
        }
    }
    if wrong.is_empty() {
        Outcome::Pass
    } else {
        fail(wrong.join("; "))
    }
}

async fn refused_5xx(cx: &Ctx) -> Outcome {
    match refuse(cx, 503).await {
        Ok((503, _)) => Outcome::Known("kd-connect-5xx-status", None),
        Ok((s, body)) => Outcome::Known(
            "kd-connect-5xx-status",
            Some(format!("503 → {s} {}", String::from_utf8_lossy(&body))),
        ),
        Err(e) => fail(e),
    }
}

/// The body's `message`, if it is JSON with one.
fn message_of(body: &[u8]) -> Option<String> {
    serde_json::from_slice::<Value>(body)
        .ok()?
        .get("message")?
        .as_str()
        .map(str::to_string)
}

async fn refusal_message(cx: &Ctx) -> Outcome {
    let mut wrong = Vec::new();
    for (status, want) in [
        (400, "Bad Request"),
        (401, "Unauthorized"),
        (403, "Forbidden"),
        (429, "Too Many Requests"),
    ] {
        match refuse(cx, status).await {
            Ok((_, body)) => match message_of(&body) {
                Some(m) if m == want => {}
                Some(m) => wrong.push(format!("{status}: message {m:?}, want {want:?}")),
                None => wrong.push(format!(
                    "{status}: body {:?} has no message",
                    String::from_utf8_lossy(&body)
                )),
            },
            Err(e) => wrong.push(e),
        }
    }
    if wrong.is_empty() {
        Outcome::Pass
    } else {
        fail(wrong.join("; "))
    }
}

/// The stage URL padded with a query to exactly `len` characters, with a `tag` the backend
/// records if `$connect` runs.
fn url_of_length(cx: &Ctx, tag: &str, len: usize) -> String {
    let base = ws::with_query(&cx.url, &format!("tag={tag}&pad="));
    let pad = len.saturating_sub(base.len());
    format!("{base}{}", "p".repeat(pad))
}

fn unique_tag(what: &str) -> String {
    let mut b = [0u8; 6];
    let _ = getrandom::fill(&mut b);
    format!("{what}-{}", b.iter().map(|x| format!("{x:02x}")).collect::<String>())
}

async fn url_at_limit(cx: &Ctx) -> Outcome {
    let url = url_of_length(cx, &unique_tag("at-limit"), 4096);
    match ws::open(&url, &[], cx.wait).await {
        Ok(mut c) => {
            let _ = c.close(None).await;
            Outcome::Pass
        }
        Err(e) => fail(format!("a {}-character URL: {e}", url.len())),
    }
}

async fn url_over_limit(cx: &Ctx) -> Outcome {
    let tag = unique_tag("over-limit");
    let url = url_of_length(cx, &tag, 4097);
    let status = match ws::open(&url, &[], cx.wait).await {
        Ok(mut c) => {
            let _ = c.close(None).await;
            None
        }
        Err(Refused::Status(s, _)) => Some(s),
        Err(e) => return fail(e.to_string()),
    };
    // Did $connect run? Ask the backend on another connection.
    let ran = match ws::open(&cx.url, &[], cx.wait).await {
        Ok(mut c) => {
            let r = ws::ask(
                &mut c,
                &serde_json::json!({"action": "tags", "op": "tags", "tag": tag}),
                cx.wait,
            )
            .await;
            let _ = c.close(None).await;
            r.ok().and_then(|v| v.get("seen").and_then(Value::as_bool))
        }
        Err(_) => None,
    };
    match (status, ran) {
        (Some(414), Some(false)) => Outcome::Pass,
        (Some(414), _) => fail("refused with 414, but $connect ran (or could not be checked)"),
        (Some(s), _) => fail(format!(
            "a 4097-character URL was refused with {s}, want 414 before $connect"
        )),
        (None, _) => fail(format!(
            "a 4097-character URL was accepted{} (quota: 4096, want 414 before $connect)",
            if ran == Some(true) { " and $connect ran" } else { "" }
        )),
    }
}

/// `whoami` on a new connection opened with `query` and `headers`.
async fn whoami_with(cx: &Ctx, query: Option<&str>, headers: &[(&str, &str)]) -> Result<Value, String> {
    let url = match query {
        Some(q) => ws::with_query(&cx.url, q),
        None => cx.url.clone(),
    };
    let mut c = ws::open(&url, headers, cx.wait).await.map_err(|e| e.to_string())?;
    let me = ws::whoami(&mut c, cx.wait).await;
    let _ = c.close(None).await;
    me
}

fn header<'a>(v: &'a Value, part: &str, name: &str) -> Option<&'a str> {
    v.get(part)?.get(name)?.as_str()
}

async fn context_headers(cx: &Ctx) -> Outcome {
    let me = match whoami_with(cx, None, &[]).await {
        Ok(v) => v,
        Err(e) => return fail(e),
    };
    let id = me.get("connectionId").and_then(Value::as_str).unwrap_or_default();
    let mut wrong = Vec::new();
    let mut want = |part: &str, name: &str, ok: &dyn Fn(&str) -> bool| match header(&me, part, name) {
        Some(v) if ok(v) => {}
        Some(v) => wrong.push(format!("{part}.{name} = {v:?}")),
        None => wrong.push(format!("{part}.{name} missing")),
    };
    for part in ["headers", "connectHeaders"] {
        want(part, "x-socketless-connection-id", &|v| v == id && !v.is_empty());
        want(part, "x-socketless-stage", &|v| v == cx.stage);
        want(part, "x-socketless-request-id", &|v| !v.is_empty());
        want(part, "x-socketless-connected-at", &|v| v.parse::<u64>().is_ok());
        want(part, "x-socketless-domain-name", &|v| !v.is_empty());
        want(part, "x-socketless-source-ip", &|v| !v.is_empty());
    }
    want("headers", "x-socketless-route-key", &|v| v == "$default");
    want("headers", "x-socketless-event-type", &|v| v == "MESSAGE");
    want("connectHeaders", "x-socketless-route-key", &|v| v == "$connect");
    want("connectHeaders", "x-socketless-event-type", &|v| v == "CONNECT");
    if wrong.is_empty() {
        Outcome::Pass
    } else {
        fail(wrong.join("; "))
    }
}

async fn query_parameter(cx: &Ctx) -> Outcome {
    let tag = unique_tag("mapped");
    let me = match whoami_with(cx, Some(&format!("tag={tag}")), &[]).await {
        Ok(v) => v,
        Err(e) => return fail(e),
    };
    let on_connect = header(&me, "connectHeaders", super::backend::TAG_HEADER);
    let on_message = header(&me, "headers", super::backend::TAG_HEADER);
    match (on_connect, on_message) {
        (Some(t), None) if t == tag => Outcome::Pass,
        (c, m) => fail(format!(
            "{} on $connect: {c:?} (want {tag:?}); on a message: {m:?} (want none: route.request.querystring is $connect only)",
            super::backend::TAG_HEADER
        )),
    }
}

async fn unmapped_headers(cx: &Ctx) -> Outcome {
    let me = match whoami_with(cx, Some("unmapped=1"), &[("x-conformance-unmapped", "1")]).await {
        Ok(v) => v,
        Err(e) => return fail(e),
    };
    let Some(connect) = me.get("connectHeaders").and_then(Value::as_object) else {
        return fail("the backend did not record the $connect headers");
    };
    let leaked: Vec<&str> = connect
        .keys()
        .map(String::as_str)
        .filter(|k| *k == "x-conformance-unmapped" || k.starts_with("sec-websocket") || *k == "upgrade")
        .collect();
    if leaked.is_empty() {
        Outcome::Known("kd-unmapped-connect-headers", None)
    } else {
        Outcome::Known(
            "kd-unmapped-connect-headers",
            Some(format!(
                "unmapped handshake headers reached $connect: {}",
                leaked.join(", ")
            )),
        )
    }
}

//! Handshake cases: the upgrade, `$connect` refusals (status and message), the URL length
//! quota, and which request parameters reach the backend (the context headers checked are the
//! rows of [`crate::contract::CONTEXT`]).

use serde_json::Value;

use super::ws::{self, Refused};
use super::{Outcome, Run, fail};
use crate::contract::{self, Supply};

macro_rules! cases {
    ($($name:literal => $f:path,)*) => {
        pub const NAMES: &[&str] = &[$($name),*];
        pub async fn run(name: &str, cx: &Run) -> Option<Outcome> {
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

async fn accepted(cx: &Run) -> Outcome {
    match ws::open(&cx.url, &[], cx.wait).await {
        Ok(mut c) => {
            let _ = c.close(None).await;
            Outcome::Pass
        }
        Err(e) => fail(e.to_string()),
    }
}

/// Connects with `?refuse=STATUS`; the handshake's status and body.
async fn refuse(cx: &Run, status: u16) -> Result<(u16, Vec<u8>), String> {
    match ws::open(&ws::with_query(&cx.url, &format!("refuse={status}")), &[], cx.wait).await {
        Ok(mut c) => {
            let _ = c.close(None).await;
            Err(format!("?refuse={status} was accepted (is ConformanceMapping=true?)"))
        }
        Err(Refused::Status(s, body)) => Ok((s, body)),
        Err(e) => Err(e.to_string()),
    }
}

async fn refused_4xx(cx: &Run) -> Outcome {
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

async fn refused_5xx(cx: &Run) -> Outcome {
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

async fn refusal_message(cx: &Run) -> Outcome {
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
fn url_of_length(cx: &Run, tag: &str, len: usize) -> String {
    let base = ws::with_query(&cx.url, &format!("tag={tag}&pad="));
    let pad = len.saturating_sub(base.len());
    format!("{base}{}", "p".repeat(pad))
}

fn unique_tag(what: &str) -> String {
    let mut b = [0u8; 6];
    let _ = getrandom::fill(&mut b);
    format!("{what}-{}", hex::encode(b))
}

async fn url_at_limit(cx: &Run) -> Outcome {
    let url = url_of_length(cx, &unique_tag("at-limit"), 4096);
    match ws::open(&url, &[], cx.wait).await {
        Ok(mut c) => {
            let _ = c.close(None).await;
            Outcome::Pass
        }
        Err(e) => fail(format!("a {}-character URL: {e}", url.len())),
    }
}

async fn url_over_limit(cx: &Run) -> Outcome {
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
async fn whoami_with(cx: &Run, query: Option<&str>, headers: &[(&str, &str)]) -> Result<Value, String> {
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

/// The call `whoami` recorded a context header on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Call {
    /// `$connect` (`connectHeaders`).
    Connect,
    /// A message on `$default` (`headers`).
    Message,
}

impl Call {
    /// Where `whoami` reports the headers of this call.
    pub(crate) fn part(self) -> &'static str {
        match self {
            Call::Connect => "connectHeaders",
            Call::Message => "headers",
        }
    }
}

/// What `mapping-context-headers` expects a context header to hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expect {
    /// The connection's own id.
    ConnectionId,
    /// The stage of the target's URL.
    Stage,
    /// Any non-empty value.
    Present,
    /// A decimal number (epoch milliseconds).
    Number,
    /// Exactly this value.
    Is(&'static str),
    /// Not checked by this case, and why.
    Unchecked(&'static str),
}

/// What the header of a variable the gateway supplies from `supply` must hold on `call`. Every
/// [`Supply`] is decided here, so a header row added to [`contract::CONTEXT`] is checked by this
/// case as it is.
pub(crate) fn expect(supply: Supply, call: Call) -> Expect {
    match supply {
        Supply::ConnectionId => Expect::ConnectionId,
        Supply::Stage => Expect::Stage,
        Supply::ConnectedAt | Supply::RequestTimeEpoch => Expect::Number,
        Supply::DomainName | Supply::RequestId | Supply::SourceIp | Supply::ApiId | Supply::RequestTime => {
            Expect::Present
        }
        Supply::RouteKey => Expect::Is(match call {
            Call::Connect => "$connect",
            Call::Message => "$default",
        }),
        Supply::EventType => Expect::Is(match call {
            Call::Connect => "CONNECT",
            Call::Message => "MESSAGE",
        }),
        Supply::MessageId => match call {
            Call::Connect => Expect::Unchecked("messages only"),
            Call::Message => Expect::Present,
        },
        Supply::UserAgent => Expect::Unchecked("the kit's client sends no User-Agent, so the value may be empty"),
        Supply::DisconnectStatus | Supply::DisconnectReason => {
            Expect::Unchecked("sent on `$disconnect` only, which `whoami` cannot show")
        }
        Supply::AuthorizerPrincipalId => Expect::Unchecked("set only behind a $connect authorizer"),
        Supply::Iam(_) => {
            Expect::Unchecked("only for connections presigned under AWS_IAM, which the kit does not sign")
        }
    }
}

/// Whether a header's value `v` is what `want` asks for, on the connection `id` of `stage`.
fn holds(want: Expect, v: &str, id: &str, stage: &str) -> bool {
    match want {
        Expect::ConnectionId => v == id && !v.is_empty(),
        Expect::Stage => v == stage,
        Expect::Present => !v.is_empty(),
        Expect::Number => v.parse::<u64>().is_ok(),
        Expect::Is(value) => v == value,
        Expect::Unchecked(_) => true,
    }
}

/// What is wrong with the context headers in a `whoami` answer (`me`) from a target whose stage
/// is `stage`: one entry per header of [`contract::CONTEXT`] that is missing or wrong, on a
/// message and then on `$connect`.
pub(crate) fn context_header_problems(me: &Value, stage: &str) -> Vec<String> {
    let id = me.get("connectionId").and_then(Value::as_str).unwrap_or_default();
    let mut wrong = Vec::new();
    for call in [Call::Message, Call::Connect] {
        let part = call.part();
        for (row, h) in contract::header_rows() {
            let want = expect(row.supply, call);
            if let Expect::Unchecked(_) = want {
                continue;
            }
            match header(me, part, h.name) {
                Some(v) if holds(want, v, id, stage) => {}
                Some(v) => wrong.push(format!("{part}.{} = {v:?}", h.name)),
                None => wrong.push(format!("{part}.{} missing", h.name)),
            }
        }
    }
    wrong
}

async fn context_headers(cx: &Run) -> Outcome {
    let me = match whoami_with(cx, None, &[]).await {
        Ok(v) => v,
        Err(e) => return fail(e),
    };
    let wrong = context_header_problems(&me, &cx.stage);
    if wrong.is_empty() {
        Outcome::Pass
    } else {
        fail(wrong.join("; "))
    }
}

async fn query_parameter(cx: &Run) -> Outcome {
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

async fn unmapped_headers(cx: &Run) -> Outcome {
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

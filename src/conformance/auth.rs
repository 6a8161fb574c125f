//! Authorization cases, for a target whose `$connect` has a REQUEST authorizer with identity
//! source `route.request.querystring.token` (the stack deployed with `AuthorizerFunctionArn`,
//! or `socketless gateway --authorizer ConnectAuthorizer=URL`): no token is refused with 401
//! before the authorizer runs, a token the authorizer denies with 403, and an allowed token
//! opens a connection whose calls carry the authorizer's `principalId` (the template maps
//! `context.authorizer.principalId` onto [`PRINCIPAL_HEADER`], which `whoami` shows).
//!
//! The tokens come from `--auth-token-allow` / `--auth-token-deny`; a case whose token is not
//! given is reported as not run. With `--auth-token-allow`, every other case connects with
//! `?token=` that token too, so the whole suite runs against a stage behind an authorizer.

use serde_json::Value;

use super::ws::{self, Refused};
use super::{Outcome, Run, fail};

super::handshake::cases! {
    "auth-missing-token-401" => missing_token,
    "auth-denied-403" => denied,
    "auth-allowed-principal" => allowed_principal,
}

/// The header `cfn/websocket-api.yml` maps `context.authorizer.principalId` onto.
pub const PRINCIPAL_HEADER: &str = "x-socketless-principal-id";

/// The query parameter the authorizer's identity source reads.
pub const TOKEN_PARAMETER: &str = "token";

/// The tokens and principal the authorization cases use.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    /// A token the authorizer allows.
    pub allow: Option<String>,
    /// A token the authorizer denies.
    pub deny: Option<String>,
    /// The `principalId` the authorizer returns for `allow` (checked when given).
    pub principal: Option<String>,
}

const NO_AUTHORIZER: &str =
    "the target's $connect authorizer is not declared: pass --auth-token-allow and/or --auth-token-deny";

/// A query value, percent-encoded (everything but unreserved characters).
fn encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `url` carrying `token` as the authorizer's query parameter.
pub fn with_token(url: &str, token: &str) -> String {
    ws::with_query(url, &format!("{TOKEN_PARAMETER}={}", encode(token)))
}

/// The handshake's refusal status, or why there was none.
async fn refused_with(url: &str, cx: &Run) -> Result<(u16, Vec<u8>), String> {
    match ws::open(url, &[], cx.wait).await {
        Ok(mut c) => {
            let _ = c.close(None).await;
            Err("the handshake was accepted".into())
        }
        Err(Refused::Status(s, body)) => Ok((s, body)),
        Err(e) => Err(e.to_string()),
    }
}

/// Whether a refusal is `want` with API Gateway's `{"message": …}` body.
fn check_refusal(got: Result<(u16, Vec<u8>), String>, want: u16, message: &str) -> Outcome {
    match got {
        Ok((s, body)) if s == want => {
            let m = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_string));
            match m {
                Some(m) if m == message => Outcome::Pass,
                _ => fail(format!(
                    "{want} with body {:?}, want {{\"message\":\"{message}\"}}",
                    String::from_utf8_lossy(&body)
                )),
            }
        }
        Ok((s, body)) => fail(format!("answered {s} {}, want {want}", String::from_utf8_lossy(&body))),
        Err(e) => fail(e),
    }
}

async fn missing_token(cx: &Run) -> Outcome {
    if cx.auth.allow.is_none() && cx.auth.deny.is_none() {
        return Outcome::NotRun(NO_AUTHORIZER.into());
    }
    check_refusal(refused_with(&cx.stage_url, cx).await, 401, "Unauthorized")
}

async fn denied(cx: &Run) -> Outcome {
    let Some(deny) = &cx.auth.deny else {
        return Outcome::NotRun("no token the authorizer denies: pass --auth-token-deny".into());
    };
    check_refusal(
        refused_with(&with_token(&cx.stage_url, deny), cx).await,
        403,
        "Forbidden",
    )
}

/// The principal header of one call's headers as `whoami` shows them.
fn principal_of(headers: Option<&Value>) -> Option<&str> {
    headers?.get(PRINCIPAL_HEADER)?.as_str()
}

/// Whether `whoami`'s answer shows `want` (or any non-empty principal) on the message call and
/// on the connection's `$connect`.
pub fn principal_problems(me: &Value, want: Option<&str>) -> Vec<String> {
    let mut problems = Vec::new();
    for (call, key) in [("message", "headers"), ("$connect", "connectHeaders")] {
        match (principal_of(me.get(key)), want) {
            (None | Some(""), _) => problems.push(format!("{call} call has no {PRINCIPAL_HEADER}")),
            (Some(got), Some(want)) if got != want => {
                problems.push(format!("{call} call has {PRINCIPAL_HEADER} {got:?}, want {want:?}"))
            }
            _ => {}
        }
    }
    problems
}

async fn allowed_principal(cx: &Run) -> Outcome {
    let Some(allow) = &cx.auth.allow else {
        return Outcome::NotRun("no token the authorizer allows: pass --auth-token-allow".into());
    };
    let mut c = match ws::open(&with_token(&cx.stage_url, allow), &[], cx.wait).await {
        Ok(c) => c,
        Err(e) => return fail(format!("the allowed token: {e}")),
    };
    let me = ws::whoami(&mut c, cx.wait).await;
    let _ = c.close(None).await;
    let me = match me {
        Ok(me) => me,
        Err(e) => return fail(e),
    };
    let problems = principal_problems(&me, cx.auth.principal.as_deref());
    if problems.is_empty() {
        Outcome::Pass
    } else {
        fail(problems.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tokens_are_encoded_into_the_query() {
        assert_eq!(
            with_token("ws://127.0.0.1:8081/dev", "a b&c=d/é"),
            "ws://127.0.0.1:8081/dev?token=a%20b%26c%3Dd%2F%C3%A9"
        );
        assert_eq!(with_token("ws://h/dev?x=1", "t"), "ws://h/dev?x=1&token=t");
    }

    #[test]
    fn the_principal_must_reach_both_calls() {
        let both = json!({"headers": {PRINCIPAL_HEADER: "alice"}, "connectHeaders": {PRINCIPAL_HEADER: "alice"}});
        assert!(principal_problems(&both, Some("alice")).is_empty());
        assert!(principal_problems(&both, None).is_empty());
        assert_eq!(
            principal_problems(&both, Some("bob")).len(),
            2,
            "a different principal is reported on each call"
        );
        let message_only = json!({"headers": {PRINCIPAL_HEADER: "alice"}, "connectHeaders": {}});
        assert_eq!(
            principal_problems(&message_only, None),
            vec![format!("$connect call has no {PRINCIPAL_HEADER}")]
        );
        let empty = json!({"headers": {PRINCIPAL_HEADER: ""}, "connectHeaders": null});
        assert_eq!(principal_problems(&empty, None).len(), 2);
    }

    #[test]
    fn refusals_need_the_status_and_the_message() {
        let body = |m: &str| serde_json::to_vec(&json!({ "message": m })).unwrap();
        assert_eq!(
            check_refusal(Ok((401, body("Unauthorized"))), 401, "Unauthorized"),
            Outcome::Pass
        );
        assert!(matches!(
            check_refusal(Ok((403, body("Forbidden"))), 401, "Unauthorized"),
            Outcome::Fail(_)
        ));
        assert!(matches!(
            check_refusal(Ok((401, b"{}".to_vec())), 401, "Unauthorized"),
            Outcome::Fail(_)
        ));
        assert!(matches!(
            check_refusal(Err("the handshake was accepted".into()), 403, "Forbidden"),
            Outcome::Fail(_)
        ));
    }
}

//! `$connect` REQUEST authorizers, as API Gateway runs a Lambda authorizer: the identity
//! sources are read (one missing or empty is a 401 without a call), the documented WebSocket
//! REQUEST event is POSTed to the endpoint `--authorizer LOGICAL_ID=URL` names (the body a
//! Lambda function receives; the Lambda Runtime Interface Emulator's invocation URL works
//! unchanged), and its answer (`principalId`, `policyDocument`, `context`) decides: an Allow
//! for `execute-api:Invoke` on the `$connect` method ARN lets the `$connect` integration run,
//! anything else is a 403, an `Unauthorized` error a 401, and a failure, a timeout or a
//! malformed or oversized answer a 500.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Request, header};
use http_body_util::Full;
use serde_json::{Map, Value, json};

use super::connection::Ctx;
use super::error::GatewayError;
use super::template::{Authorizer, IdentitySource};
use crate::http_client::Pool;
use crate::timefmt::clf;

/// Largest authorizer answer read, as API Gateway's Lambda authorizer result limit (8 KB);
/// a larger one is a 500.
pub const MAX_ANSWER_BYTES: usize = 8 * 1024;

/// The account in the method ARN: the template's `AWS::AccountId` when it runs locally.
pub const ACCOUNT_ID: &str = "000000000000";

/// What an authorizer's Allow leaves on the connection: `context.authorizer.principalId` and
/// `context.authorizer.<key>`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Authorized {
    pub principal_id: String,
    /// The `context` map, each value stringified.
    pub context: BTreeMap<String, String>,
}

/// How one authorizer call ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Allow(Authorized),
    /// An explicit Deny, or no Allow that matches the method ARN: 403.
    Deny,
    /// The function failed with the message `Unauthorized`: 401.
    Unauthorized,
    /// 500, with the metric outcome: `error`, `timeout`, `malformed`, `too_large`.
    Failed(&'static str),
}

impl Verdict {
    /// The `outcome` label of `socketless_gateway_authorizer_calls_total`.
    pub fn outcome(&self) -> &'static str {
        match self {
            Verdict::Allow(_) => "allow",
            Verdict::Deny => "deny",
            Verdict::Unauthorized => "unauthorized",
            Verdict::Failed(outcome) => outcome,
        }
    }
}

/// `arn:aws:execute-api:{region}:{account}:{apiId}/{stage}/$connect`.
pub fn method_arn(region: &str, api_id: &str, stage: &str) -> String {
    format!("arn:aws:execute-api:{region}:{ACCOUNT_ID}:{api_id}/{stage}/$connect")
}

/// What an identity source reads on `$connect`.
pub struct Sources<'a> {
    pub headers: &'a HashMap<String, String>,
    pub query: &'a HashMap<String, String>,
    pub stage_variables: &'a BTreeMap<String, String>,
    /// A `context.*` variable of `$connect`.
    pub context: &'a (dyn Fn(&str) -> Option<String> + Sync),
}

/// Whether every identity source has a non-empty value (API Gateway answers 401 without
/// calling the authorizer otherwise).
pub fn identity_present(authorizer: &Authorizer, s: &Sources<'_>) -> bool {
    authorizer.identity_sources.iter().all(|source| {
        let value = match source {
            IdentitySource::Header(h) => s.headers.get(h).cloned(),
            IdentitySource::Query(q) => s.query.get(q).cloned(),
            IdentitySource::StageVariable(v) => s.stage_variables.get(v).cloned(),
            IdentitySource::Context(c) => (s.context)(c),
        };
        value.is_some_and(|v| !v.trim().is_empty())
    })
}

/// The connection facts the event's `requestContext` carries.
pub struct EventContext<'a> {
    pub ctx: &'a Ctx,
    pub request_id: &'a str,
    pub api_id: &'a str,
    pub stage: &'a str,
    pub now_ms: i64,
}

/// The WebSocket REQUEST authorizer event. A header or query parameter given more than once
/// appears with its last value, in the single-value and the multi-value maps alike.
pub fn event(method_arn: &str, s: &Sources<'_>, e: &EventContext<'_>) -> Value {
    let single = |m: &HashMap<String, String>| -> Map<String, Value> {
        m.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect()
    };
    let multi = |m: &HashMap<String, String>| -> Map<String, Value> {
        m.iter().map(|(k, v)| (k.clone(), json!([v]))).collect()
    };
    let c = e.ctx;
    json!({
        "type": "REQUEST",
        "methodArn": method_arn,
        "headers": single(s.headers),
        "multiValueHeaders": multi(s.headers),
        "queryStringParameters": single(s.query),
        "multiValueQueryStringParameters": multi(s.query),
        "stageVariables": s.stage_variables,
        "requestContext": {
            "routeKey": "$connect",
            "eventType": "CONNECT",
            "extendedRequestId": e.request_id,
            "requestTime": clf(e.now_ms),
            "messageDirection": "IN",
            "stage": e.stage,
            "connectedAt": c.connected_at,
            "requestTimeEpoch": e.now_ms,
            "identity": { "sourceIp": c.source_ip, "userAgent": c.user_agent },
            "requestId": e.request_id,
            "domainName": c.domain,
            "connectionId": c.id,
            "apiId": e.api_id,
        },
    })
}

/// Whether `text` matches an IAM pattern: `*` any run of characters, `?` any one.
pub fn wildcard(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// A string or a list of strings; anything else is `None`.
fn strings(v: &Value) -> Option<Vec<&str>> {
    match v {
        Value::String(s) => Some(vec![s.as_str()]),
        Value::Array(items) => items.iter().map(Value::as_str).collect(),
        _ => None,
    }
}

/// Whether a statement covers `execute-api:Invoke` on `arn`. Actions match without regard to
/// case, resources with it, as in IAM.
fn covers(statement: &Map<String, Value>, arn: &str) -> Option<bool> {
    let actions = strings(statement.get("Action")?)?;
    let resources = strings(statement.get("Resource")?)?;
    let invoke = "execute-api:invoke";
    let action = actions.iter().any(|a| wildcard(&a.to_ascii_lowercase(), invoke));
    Some(action && resources.iter().any(|r| wildcard(r, arn)))
}

/// The `errorMessage` of a Lambda error answer (the emulator's shape), when it is one.
fn error_message(v: &Value) -> Option<&str> {
    v.get("errorMessage").and_then(Value::as_str)
}

/// Decides from the endpoint's answer, as API Gateway does from the function's result.
pub fn judge(status: http::StatusCode, body: &[u8], method_arn: &str) -> Verdict {
    let parsed = serde_json::from_slice::<Value>(body).ok();
    if let Some(message) = parsed.as_ref().and_then(error_message) {
        return if message == "Unauthorized" {
            Verdict::Unauthorized
        } else {
            Verdict::Failed("error")
        };
    }
    if !status.is_success() {
        return Verdict::Failed("error");
    }
    let Some(Value::Object(answer)) = parsed else {
        return Verdict::Failed("malformed");
    };
    let Some(principal_id) = answer.get("principalId").and_then(Value::as_str) else {
        return Verdict::Failed("malformed");
    };
    let statements = match answer.get("policyDocument").and_then(|d| d.get("Statement")) {
        Some(Value::Array(items)) => items.iter().collect::<Vec<_>>(),
        Some(one @ Value::Object(_)) => vec![one],
        _ => return Verdict::Failed("malformed"),
    };
    let mut allowed = false;
    for statement in statements {
        let Some(statement) = statement.as_object() else {
            return Verdict::Failed("malformed");
        };
        let effect = statement.get("Effect").and_then(Value::as_str);
        let Some(covered) = covers(statement, method_arn) else {
            return Verdict::Failed("malformed");
        };
        match effect {
            Some("Deny") if covered => return Verdict::Deny,
            Some("Allow") => allowed |= covered,
            Some("Deny") => {}
            _ => return Verdict::Failed("malformed"),
        }
    }
    if !allowed {
        return Verdict::Deny;
    }
    let mut context = BTreeMap::new();
    match answer.get("context") {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) => {
            for (k, v) in m {
                let text = match v {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    Value::Null => continue,
                    // API Gateway refuses objects and arrays as context values.
                    Value::Object(_) | Value::Array(_) => return Verdict::Failed("malformed"),
                };
                context.insert(k.clone(), text);
            }
        }
        Some(_) => return Verdict::Failed("malformed"),
    }
    Verdict::Allow(Authorized {
        principal_id: principal_id.to_string(),
        context,
    })
}

/// POSTs the event to the endpoint and judges the answer, within `timeout`.
pub async fn call(client: &Pool, endpoint: &http::Uri, event: &Value, timeout: Duration) -> (Verdict, Duration) {
    let started = Instant::now();
    let arn = event
        .get("methodArn")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let mut req = Request::new(Full::new(Bytes::from(event.to_string())));
    *req.method_mut() = http::Method::POST;
    *req.uri_mut() = endpoint.clone();
    req.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let exchange = async {
        match client.call(req, MAX_ANSWER_BYTES).await {
            Ok((parts, body)) => judge(parts.status, &body, &arn),
            Err(e) if e.too_large() => Verdict::Failed("too_large"),
            Err(e) => {
                tracing::debug!(error = %e, "authorizer unreachable");
                Verdict::Failed("error")
            }
        }
    };
    let verdict = tokio::time::timeout(timeout, exchange)
        .await
        .unwrap_or(Verdict::Failed("timeout"));
    (verdict, started.elapsed())
}

/// The refusal a client gets for a verdict that is not an Allow.
pub fn refusal(verdict: &Verdict) -> GatewayError {
    match verdict {
        Verdict::Unauthorized => GatewayError::Unauthorized,
        Verdict::Deny => GatewayError::AuthorizerDenied,
        Verdict::Allow(_) | Verdict::Failed(_) => GatewayError::AuthorizerFailed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

    const ARN: &str = "arn:aws:execute-api:us-east-1:000000000000:api/dev/$connect";

    fn policy(effect: &str, resource: &str) -> String {
        json!({
            "principalId": "me",
            "policyDocument": {"Version": "2012-10-17", "Statement": [
                {"Action": "execute-api:Invoke", "Effect": effect, "Resource": resource}
            ]},
            "context": {"s": "x", "n": 7, "f": 1.5, "b": true}
        })
        .to_string()
    }

    #[test]
    fn wildcards_match_as_in_iam() {
        assert!(wildcard("*", ARN));
        assert!(wildcard("arn:aws:execute-api:*:*:api/*", ARN));
        assert!(wildcard("arn:aws:execute-api:us-east-?:*:api/dev/$connect", ARN));
        assert!(!wildcard("arn:aws:execute-api:*:*:other/*", ARN));
        assert!(!wildcard(
            "arn:aws:execute-api:us-east-1:000000000000:api/dev/$CONNECT",
            ARN
        ));
        assert!(wildcard("a**b", "ab"));
        assert!(!wildcard("", "a"));
    }

    #[test]
    fn allow_keeps_the_principal_and_stringified_context() {
        let Verdict::Allow(a) = judge(StatusCode::OK, policy("Allow", "arn:aws:execute-api:*").as_bytes(), ARN) else {
            panic!("expected an Allow");
        };
        assert_eq!(a.principal_id, "me");
        let ctx: Vec<(&str, &str)> = a.context.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(ctx, vec![("b", "true"), ("f", "1.5"), ("n", "7"), ("s", "x")]);
    }

    #[test]
    fn deny_wins_and_an_allow_elsewhere_is_a_deny() {
        assert_eq!(
            judge(StatusCode::OK, policy("Deny", "*").as_bytes(), ARN),
            Verdict::Deny
        );
        assert_eq!(
            judge(
                StatusCode::OK,
                policy("Allow", "arn:aws:execute-api:*:*:other/*").as_bytes(),
                ARN
            ),
            Verdict::Deny
        );
        let both = json!({"principalId": "p", "policyDocument": {"Statement": [
            {"Action": ["execute-api:*"], "Effect": "Allow", "Resource": ["*"]},
            {"Action": "execute-api:Invoke", "Effect": "Deny", "Resource": ARN}
        ]}});
        assert_eq!(judge(StatusCode::OK, both.to_string().as_bytes(), ARN), Verdict::Deny);
        let other_action = json!({"principalId": "p", "policyDocument": {"Statement":
            {"Action": "execute-api:ManageConnections", "Effect": "Allow", "Resource": "*"}}});
        assert_eq!(
            judge(StatusCode::OK, other_action.to_string().as_bytes(), ARN),
            Verdict::Deny
        );
    }

    #[test]
    fn errors_and_malformed_answers() {
        let unauthorized = br#"{"errorMessage":"Unauthorized","errorType":"Exception"}"#;
        assert_eq!(judge(StatusCode::OK, unauthorized, ARN), Verdict::Unauthorized);
        assert_eq!(
            judge(StatusCode::OK, br#"{"errorMessage":"boom"}"#, ARN),
            Verdict::Failed("error")
        );
        assert_eq!(
            judge(StatusCode::INTERNAL_SERVER_ERROR, policy("Allow", "*").as_bytes(), ARN),
            Verdict::Failed("error")
        );
        for bad in [
            "not json",
            "[]",
            r#"{"policyDocument":{"Statement":[]}}"#,
            r#"{"principalId":"p"}"#,
            r#"{"principalId":"p","policyDocument":{"Statement":[{"Effect":"Maybe","Action":"*","Resource":"*"}]}}"#,
            r#"{"principalId":"p","policyDocument":{"Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]},"context":{"o":{}}}"#,
        ] {
            assert_eq!(
                judge(StatusCode::OK, bad.as_bytes(), ARN),
                Verdict::Failed("malformed"),
                "{bad}"
            );
        }
    }
}

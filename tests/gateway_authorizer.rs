//! `$connect` REQUEST authorizers in `socketless gateway`, on real sockets: a fake authorizer
//! endpoint (see `common::authorizer`) and a fake backend. Allow, Deny, a missing identity
//! source, failures of every kind, the principal and context kept on the connection for every
//! route, and start-up errors naming the authorizer. Headers a client sends itself or smuggles
//! through an identity source are in `tests/gateway_authorizer_headers.rs`.

mod common;

use std::collections::BTreeMap;

use common::authorizer::*;
use common::gw::*;
use common::{metric_sum, within};
use serde_json::json;
use socketless::gateway::GatewayConfig;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

#[tokio::test]
async fn allow_runs_connect_with_the_principal_and_sends_the_documented_event() {
    let (backend, auth) = (FakeBackend::start().await, FakeAuthorizer::start().await);
    let gw = start(&backend, &auth).await;
    let mut req = format!("{}?token=allow-1&extra=a%20b", gw.url())
        .into_client_request()
        .unwrap();
    req.headers_mut().insert("user-agent", "authz-test/1".parse().unwrap());
    let (ws, _) = within(tokio_tungstenite::connect_async(req)).await.expect("allowed");
    let connect = backend.seen("/connect").remove(0);
    assert_eq!(header(&connect, "x-socketless-principal-id").as_deref(), Some("alice"));
    assert_eq!(header(&connect, "x-tenant").as_deref(), Some("t1"));
    assert_eq!(header(&connect, "x-token").as_deref(), Some("allow-1"));
    let id = header(&connect, "x-socketless-connection-id").unwrap();

    let event = auth.events.lock().unwrap()[0].clone();
    assert_eq!(event["type"], "REQUEST");
    let arn = format!(
        "arn:aws:execute-api:{}:000000000000:Api/dev/$connect",
        socketless::defaults::REGION
    );
    assert_eq!(event["methodArn"], arn.as_str());
    assert_eq!(
        event["queryStringParameters"],
        json!({"token": "allow-1", "extra": "a b"})
    );
    assert_eq!(event["multiValueQueryStringParameters"]["token"], json!(["allow-1"]));
    assert_eq!(event["headers"]["user-agent"], "authz-test/1");
    assert_eq!(event["multiValueHeaders"]["user-agent"], json!(["authz-test/1"]));
    assert_eq!(event["stageVariables"], json!({}));
    let rc = &event["requestContext"];
    for (k, v) in [
        ("routeKey", json!("$connect")),
        ("eventType", json!("CONNECT")),
        ("messageDirection", json!("IN")),
        ("stage", json!("dev")),
        ("connectionId", json!(id)),
        ("apiId", json!("Api")),
        ("domainName", json!(gw.addr.to_string())),
    ] {
        assert_eq!(rc[k], v, "requestContext.{k}");
    }
    assert_eq!(rc["identity"]["sourceIp"], "127.0.0.1");
    assert_eq!(rc["identity"]["userAgent"], "authz-test/1");
    assert_eq!(rc["requestId"], rc["extendedRequestId"]);
    assert!(rc["connectedAt"].as_i64().is_some() && rc["requestTimeEpoch"].as_i64().is_some());
    assert!(
        rc["requestTime"].as_str().is_some_and(|t| t.ends_with(" +0000")),
        "{rc}"
    );

    let text = metrics(&gw).await;
    assert_eq!(
        metric_sum(
            &text,
            "socketless_gateway_authorizer_calls_total",
            &["authorizer=\"Auth\"", "outcome=\"allow\""]
        ),
        1.0,
        "{text}"
    );
    assert_eq!(
        metric_sum(
            &text,
            "socketless_gateway_authorizer_latency_seconds_count",
            &["authorizer=\"Auth\""]
        ),
        1.0
    );
    drop(ws);
}

#[tokio::test]
async fn refusals_deny_403_unauthorized_401_and_failures_500() {
    let (backend, auth) = (FakeBackend::start().await, FakeAuthorizer::start().await);
    let gw = start(&backend, &auth).await;
    // A missing or empty identity source: 401 without calling the authorizer.
    assert_eq!(refused(&gw.url()).await, 401);
    assert_eq!(refused(&format!("{}?token=", gw.url())).await, 401);
    assert_eq!(refused(&format!("{}?other=allow", gw.url())).await, 401);
    assert_eq!(
        auth.calls(),
        0,
        "the authorizer must not be called without its identity source"
    );
    for (token, status) in [
        ("deny", 403),
        ("wrongarn", 403),
        ("nobody", 403),
        ("unauth", 401),
        ("crash", 500),
        ("boom", 500),
        ("slow", 500),
        ("garbage", 500),
        ("huge", 500),
    ] {
        assert_eq!(refused(&format!("{}?token={token}", gw.url())).await, status, "{token}");
    }
    assert_eq!(auth.calls(), 9);
    // Nothing refused by the authorizer reached the backend.
    assert!(backend.seen("/connect").is_empty());
    assert!(backend.seen("/disconnect").is_empty());
    assert_eq!(gw.gateway.active(), 0);
    let text = metrics(&gw).await;
    for (outcome, n) in [
        ("deny", 3.0),
        ("unauthorized", 1.0),
        ("error", 2.0),
        ("timeout", 1.0),
        ("malformed", 1.0),
        ("too_large", 1.0),
    ] {
        let label = format!("outcome=\"{outcome}\"");
        assert_eq!(
            metric_sum(&text, "socketless_gateway_authorizer_calls_total", &[&label]),
            n,
            "{outcome}: {text}"
        );
    }
}

#[tokio::test]
async fn the_principal_stays_on_the_connection_for_messages_and_disconnect() {
    let (backend, auth) = (FakeBackend::start().await, FakeAuthorizer::start().await);
    let gw = start(&backend, &auth).await;
    let mut ws = connect(&format!("{}?token=allow", gw.url())).await;
    for i in 0..100 {
        send_text(&mut ws, &format!(r#"{{"action":"none","i":{i}}}"#)).await;
    }
    send_text(&mut ws, r#"{"action":"echo"}"#).await;
    let messages = backend.wait_for("/message", 100).await;
    assert_eq!(messages.len(), 100);
    for m in &messages {
        assert_eq!(header(m, "x-socketless-principal-id").as_deref(), Some("alice"));
        assert_eq!(header(m, "x-tenant").as_deref(), Some("t1"));
        assert_eq!(header(m, "x-admin").as_deref(), Some("true"));
    }
    let echo = backend.wait_for("/echo", 1).await.remove(0);
    assert_eq!(header(&echo, "x-socketless-principal-id").as_deref(), Some("alice"));
    within(ws.close(None)).await.unwrap();
    let disconnect = backend.wait_for("/disconnect", 1).await.remove(0);
    assert_eq!(
        header(&disconnect, "x-socketless-principal-id").as_deref(),
        Some("alice")
    );
    assert_eq!(header(&disconnect, "x-tenant").as_deref(), Some("t1"));
    assert_eq!(auth.calls(), 1, "one authorizer call per connection");
}

#[test]
fn start_up_errors_name_the_authorizer_and_the_flag() {
    let params = BTreeMap::from([("Backend".to_string(), "http://127.0.0.1:9".to_string())]);
    let problems = |flags: &[&str]| -> Vec<String> {
        let flags: Vec<String> = flags.iter().map(|f| f.to_string()).collect();
        match GatewayConfig::from_template_with(TEMPLATE, &params, &flags) {
            Ok(_) => Vec::new(),
            Err(e) => e.into_iter().map(|e| e.0).collect(),
        }
    };
    let none = problems(&[]);
    assert!(
        none.iter()
            .any(|p| p.contains("authorizer Auth") && p.contains("--authorizer")),
        "{none:?}"
    );
    let unknown = problems(&[
        "--authorizer=Auth=http://127.0.0.1:9/",
        "--authorizer=Other=http://127.0.0.1:9/",
    ]);
    assert!(
        unknown
            .iter()
            .any(|p| p.contains("--authorizer") && p.contains("Other")),
        "{unknown:?}"
    );
    let bad = problems(&["--authorizer=Auth"]);
    assert!(bad.iter().any(|p| p.contains("LOGICAL_ID=URL")), "{bad:?}");
    assert!(problems(&["--authorizer=Auth=http://127.0.0.1:9/"]).is_empty());

    // Other authorizer types and placements: a start-up error naming the resource.
    let jwt = TEMPLATE.replace("AuthorizerType: REQUEST", "AuthorizerType: JWT");
    let e = GatewayConfig::from_template_with(&jwt, &params, &["--authorizer=Auth=http://127.0.0.1:9/".into()])
        .expect_err("JWT refused");
    assert!(
        e.iter().any(|p| p.0.contains("resource Auth") && p.0.contains("JWT")),
        "{e:?}"
    );
    let on_default = TEMPLATE.replace(
        "Properties: { ApiId: !Ref Api, RouteKey: $default,",
        "Properties: { ApiId: !Ref Api, AuthorizationType: CUSTOM, AuthorizerId: !Ref Auth, RouteKey: $default,",
    );
    let e = GatewayConfig::from_template_with(&on_default, &params, &["--authorizer=Auth=http://127.0.0.1:9/".into()])
        .expect_err("an authorizer off $connect refused");
    assert!(e.iter().any(|p| p.0.contains("resource DefaultRoute")), "{e:?}");
    let header_source = TEMPLATE.replace(
        "[route.request.querystring.token]",
        "[route.request.header.Authorization, stageVariables.x, context.connectionId]",
    );
    assert!(
        GatewayConfig::from_template_with(
            &header_source,
            &params,
            &["--authorizer=Auth=http://127.0.0.1:9/".into()]
        )
        .is_ok()
    );
    let bad_source = TEMPLATE.replace("[route.request.querystring.token]", "[method.request.header.x]");
    let e = GatewayConfig::from_template_with(&bad_source, &params, &["--authorizer=Auth=http://127.0.0.1:9/".into()])
        .expect_err("a bad identity source refused");
    assert!(
        e.iter()
            .any(|p| p.0.contains("resource Auth") && p.0.contains("IdentitySource")),
        "{e:?}"
    );
}

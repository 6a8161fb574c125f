//! `$connect` REQUEST authorizers in `socketless gateway`, on real sockets: a fake authorizer
//! endpoint (answering as a Lambda function behind the Runtime Interface Emulator would) and a
//! fake backend. Allow, Deny, a missing identity source, failures of every kind, the principal
//! and context kept on the connection for every route, and headers a client sends itself or
//! smuggles through an identity source never reaching the backend.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::gw::*;
use common::{Received, fake_server, metric_sum, send, within};
use http::Response;
use http_body_util::Full;
use prometheus_client::registry::Registry;
use serde_json::{Value, json};
use socketless::gateway::{Gateway, GatewayConfig};
use socketless::lifecycle::Lifecycle;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// A template with a REQUEST authorizer on `$connect` (the token in the query string), and the
/// principal and a context key mapped on every route.
const TEMPLATE: &str = r#"
Parameters:
  Backend: { Type: String }
Resources:
  Api:
    Type: AWS::ApiGatewayV2::Api
    Properties: { Name: t, ProtocolType: WEBSOCKET, RouteSelectionExpression: $request.body.action }
  Auth:
    Type: AWS::ApiGatewayV2::Authorizer
    Properties:
      ApiId: !Ref Api
      Name: auth
      AuthorizerType: REQUEST
      IdentitySource: [route.request.querystring.token]
      AuthorizerUri: arn:aws:apigateway:us-east-1:lambda:path/2015-03-31/functions/arn:aws:lambda:us-east-1:123456789012:function:auth/invocations
  ConnectInt:
    Type: AWS::ApiGatewayV2::Integration
    Properties:
      ApiId: !Ref Api
      IntegrationType: HTTP_PROXY
      IntegrationUri: !Sub "${Backend}/connect"
      RequestParameters:
        integration.request.header.x-socketless-connection-id: context.connectionId
        integration.request.header.x-socketless-principal-id: context.authorizer.principalId
        integration.request.header.x-tenant: context.authorizer.tenant
        integration.request.header.x-token: route.request.querystring.token
  MessageInt:
    Type: AWS::ApiGatewayV2::Integration
    Properties:
      ApiId: !Ref Api
      IntegrationType: HTTP_PROXY
      IntegrationUri: !Sub "${Backend}/message"
      RequestParameters:
        integration.request.header.x-socketless-principal-id: context.authorizer.principalId
        integration.request.header.x-tenant: context.authorizer.tenant
        integration.request.header.x-admin: context.authorizer.admin
  EchoInt:
    Type: AWS::ApiGatewayV2::Integration
    Properties:
      ApiId: !Ref Api
      IntegrationType: HTTP_PROXY
      IntegrationUri: !Sub "${Backend}/echo"
      RequestParameters:
        integration.request.header.x-socketless-principal-id: context.authorizer.principalId
  DisconnectInt:
    Type: AWS::ApiGatewayV2::Integration
    Properties:
      ApiId: !Ref Api
      IntegrationType: HTTP_PROXY
      IntegrationUri: !Sub "${Backend}/disconnect"
      RequestParameters:
        integration.request.header.x-socketless-principal-id: context.authorizer.principalId
        integration.request.header.x-tenant: context.authorizer.tenant
  ConnectRoute:
    Type: AWS::ApiGatewayV2::Route
    Properties:
      ApiId: !Ref Api
      RouteKey: $connect
      AuthorizationType: CUSTOM
      AuthorizerId: !Ref Auth
      Target: !Sub "integrations/${ConnectInt}"
  DefaultRoute:
    Type: AWS::ApiGatewayV2::Route
    Properties: { ApiId: !Ref Api, RouteKey: $default, Target: !Sub "integrations/${MessageInt}" }
  EchoRoute:
    Type: AWS::ApiGatewayV2::Route
    Properties: { ApiId: !Ref Api, RouteKey: echo, Target: !Sub "integrations/${EchoInt}" }
  DisconnectRoute:
    Type: AWS::ApiGatewayV2::Route
    Properties: { ApiId: !Ref Api, RouteKey: $disconnect, Target: !Sub "integrations/${DisconnectInt}" }
  Stage:
    Type: AWS::ApiGatewayV2::Stage
    Properties: { ApiId: !Ref Api, StageName: dev }
"#;

/// A fake authorizer: it records each event and answers by the token's first word.
#[derive(Clone)]
struct FakeAuthorizer {
    url: String,
    events: Arc<Mutex<Vec<Value>>>,
    _task: Arc<tokio::task::JoinHandle<()>>,
}

fn allow(principal: &str, resource: &str) -> String {
    json!({
        "principalId": principal,
        "policyDocument": {"Version": "2012-10-17", "Statement": [
            {"Action": "execute-api:Invoke", "Effect": "Allow", "Resource": resource}
        ]},
        "context": {"tenant": "t1", "admin": true, "n": 3}
    })
    .to_string()
}

/// The answer for a token: `allow…` allows `alice`, `deny` denies, `wrongarn` allows another
/// API only, `unauth` fails with Unauthorized, `boom` answers 500, `crash` is a function error,
/// `slow` answers after 3 s, `garbage` is not JSON, `huge` is 1 MB.
async fn answer(token: &str) -> (u16, String) {
    let word = token.split(|c: char| !c.is_ascii_alphanumeric()).next().unwrap_or("");
    match word {
        w if w.starts_with("allow") => (200, allow("alice", "arn:aws:execute-api:*:*:*/dev/$connect")),
        "deny" => (
            200,
            json!({"principalId": "alice", "policyDocument": {"Statement": [
                {"Action": "execute-api:Invoke", "Effect": "Deny", "Resource": "*"}]}})
            .to_string(),
        ),
        "wrongarn" => (200, allow("alice", "arn:aws:execute-api:*:*:otherapi/*")),
        "unauth" => (200, r#"{"errorMessage":"Unauthorized","errorType":"Error"}"#.into()),
        "crash" => (200, r#"{"errorMessage":"boom","errorType":"Error"}"#.into()),
        "boom" => (500, "internal".into()),
        "slow" => {
            tokio::time::sleep(Duration::from_secs(3)).await;
            (200, allow("alice", "*"))
        }
        "garbage" => (200, "this is not json".into()),
        "huge" => (200, format!(r#"{{"principalId":"{}"}}"#, "a".repeat(1 << 20))),
        _ => (200, allow("nobody", "arn:aws:execute-api:*:*:nothing")),
    }
}

impl FakeAuthorizer {
    async fn start() -> FakeAuthorizer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let events: Arc<Mutex<Vec<Value>>> = Arc::default();
        let seen = events.clone();
        let task = fake_server(listener, move |req: Received| {
            let seen = seen.clone();
            async move {
                let event: Value = serde_json::from_str(&req.body).unwrap_or(Value::Null);
                let token = event["queryStringParameters"]["token"]
                    .as_str()
                    .unwrap_or("")
                    .to_string();
                seen.lock().unwrap().push(event);
                let (status, body) = answer(&token).await;
                Ok(Response::builder()
                    .status(status)
                    .body(Full::new(Bytes::from(body)))
                    .unwrap())
            }
        });
        FakeAuthorizer {
            url: format!("http://{addr}/2015-03-31/functions/function/invocations"),
            events,
            _task: Arc::new(task),
        }
    }

    fn calls(&self) -> usize {
        self.events.lock().unwrap().len()
    }
}

async fn start(backend: &FakeBackend, auth: &FakeAuthorizer) -> Gw {
    let params = BTreeMap::from([("Backend".to_string(), backend.uri())]);
    let flags = [
        format!("--authorizer=Auth={}", auth.url),
        "--authorizer-timeout=300ms".to_string(),
    ];
    let mut config = GatewayConfig::from_template_with(TEMPLATE, &params, &flags).expect("template loads");
    config.shutdown_delay = Duration::ZERO;
    config.drain_timeout = Duration::from_secs(5);
    let listener = TcpListener::bind(config.listen).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut registry = Registry::default();
    let gateway = Gateway::new(config, &mut registry);
    let lifecycle = Lifecycle::new();
    lifecycle.set_ready();
    let task = tokio::spawn(gateway.clone().serve(listener, lifecycle.clone(), Arc::new(registry)));
    Gw {
        addr,
        gateway,
        lifecycle,
        stage: "dev".into(),
        task,
    }
}

/// The handshake's status when the gateway refuses it.
async fn refused(url: &str) -> u16 {
    match within(tokio_tungstenite::connect_async(url)).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        Err(other) => panic!("expected an HTTP refusal, got {other:?}"),
        Ok(_) => panic!("the handshake was accepted"),
    }
}

fn header(seen: &Seen, name: &str) -> Option<String> {
    seen.headers.get(name).map(|v| v.to_str().unwrap().to_string())
}

async fn metrics(gw: &Gw) -> String {
    send("GET", &format!("http://{}/metrics", gw.addr), &[], "").await.2
}

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

#[tokio::test]
async fn injection_through_identity_sources_and_own_headers_never_reaches_the_backend() {
    let (backend, auth) = (FakeBackend::start().await, FakeAuthorizer::start().await);
    let gw = start(&backend, &auth).await;
    // CR/LF in the token: the authorizer sees it decoded, the mapped header is left out whole.
    let url = format!(
        "{}?token=allow%0D%0Ax-socketless-principal-id:%20mallory%0D%0Ax-tenant:%20evil",
        gw.url()
    );
    let mut req = url.into_client_request().unwrap();
    // Headers named like mapped ones, sent by the client itself.
    req.headers_mut()
        .insert("x-socketless-principal-id", "mallory".parse().unwrap());
    req.headers_mut().insert("x-tenant", "evil".parse().unwrap());
    req.headers_mut().insert("x-admin", "true-evil".parse().unwrap());
    let (mut ws, _) = within(tokio_tungstenite::connect_async(req)).await.expect("allowed");
    send_text(&mut ws, r#"{"action":"none"}"#).await;
    within(ws.close(None)).await.unwrap();
    backend.wait_for("/disconnect", 1).await;
    let token = auth.events.lock().unwrap()[0]["queryStringParameters"]["token"].clone();
    assert_eq!(token, "allow\r\nx-socketless-principal-id: mallory\r\nx-tenant: evil");
    for seen in backend.seen.lock().unwrap().iter() {
        let all: Vec<String> = seen
            .headers
            .get_all("x-socketless-principal-id")
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect();
        assert_eq!(all, vec!["alice".to_string()], "{}", seen.path);
        let tenants: Vec<_> = seen.headers.get_all("x-tenant").iter().collect();
        assert_eq!(tenants, vec!["t1"], "{}", seen.path);
        assert!(
            seen.headers.get("x-token").is_none(),
            "{}: {:?}",
            seen.path,
            seen.headers
        );
        for v in seen.headers.values() {
            let v = v.to_str().unwrap_or_default();
            assert!(!v.contains("mallory") && !v.contains("evil"), "{}: {v}", seen.path);
        }
    }
}

#[tokio::test]
async fn without_an_authorizer_a_clients_own_principal_header_never_reaches_the_backend() {
    let backend = FakeBackend::start().await;
    let gw = repo_gateway(&backend, |_| {}).await;
    let mut req = gw.url().into_client_request().unwrap();
    req.headers_mut()
        .insert("x-socketless-principal-id", "mallory".parse().unwrap());
    let (mut ws, _) = within(tokio_tungstenite::connect_async(req)).await.expect("handshake");
    send_text(&mut ws, "hi").await;
    assert_eq!(next_text(&mut ws).await, "hi");
    within(ws.close(None)).await.unwrap();
    backend.wait_for("/disconnect", 1).await;
    let seen = backend.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3, "{seen:?}");
    for s in seen {
        assert!(s.headers.get("x-socketless-principal-id").is_none(), "{}", s.path);
    }
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

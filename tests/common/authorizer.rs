//! A `$connect` REQUEST authorizer in front of `socketless gateway`, for
//! `tests/gateway_authorizer.rs` and `tests/gateway_authorizer_headers.rs`: the template, a fake
//! authorizer endpoint (answering as a Lambda function behind the Runtime Interface Emulator
//! would) that records each event and answers by the token, and a gateway started on them.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use http_body_util::Full;
use serde_json::{Value, json};
use socketless::gateway::GatewayConfig;
use tokio::net::TcpListener;

use super::gw::*;
use super::{Received, fake_server, send, within};

/// A template with a REQUEST authorizer on `$connect` (the token in the query string), and the
/// principal and a context key mapped on every route.
pub const TEMPLATE: &str = r#"
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
pub struct FakeAuthorizer {
    pub url: String,
    pub events: Arc<Mutex<Vec<Value>>>,
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

/// The answer for a token: `allow…` allows `alice`, `bob` allows `bob`, `deny` denies, `wrongarn` allows another
/// API only, `unauth` fails with Unauthorized, `boom` answers 500, `crash` is a function error,
/// `slow` answers after 3 s, `garbage` is not JSON, `huge` is 1 MB.
async fn answer(token: &str) -> (u16, String) {
    let word = token.split(|c: char| !c.is_ascii_alphanumeric()).next().unwrap_or("");
    match word {
        w if w.starts_with("allow") => (200, allow("alice", "arn:aws:execute-api:*:*:*/dev/$connect")),
        "bob" => (200, allow("bob", "arn:aws:execute-api:*:*:*/dev/$connect")),
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
    pub async fn start() -> FakeAuthorizer {
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

    pub fn calls(&self) -> usize {
        self.events.lock().unwrap().len()
    }
}

pub async fn start(backend: &FakeBackend, auth: &FakeAuthorizer) -> Gw {
    let params = BTreeMap::from([("Backend".to_string(), backend.uri())]);
    let flags = [
        format!("--authorizer=Auth={}", auth.url),
        "--authorizer-timeout=300ms".to_string(),
    ];
    let mut config = GatewayConfig::from_template_with(TEMPLATE, &params, &flags).expect("template loads");
    config.shutdown_delay = Duration::ZERO;
    config.drain_timeout = Duration::from_secs(5);
    launch(config).await
}

/// The handshake's status when the gateway refuses it.
pub async fn refused(url: &str) -> u16 {
    match within(tokio_tungstenite::connect_async(url)).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        Err(other) => panic!("expected an HTTP refusal, got {other:?}"),
        Ok(_) => panic!("the handshake was accepted"),
    }
}

pub fn header(seen: &Seen, name: &str) -> Option<String> {
    seen.headers.get(name).map(|v| v.to_str().unwrap().to_string())
}

pub async fn metrics(gw: &Gw) -> String {
    send("GET", &format!("http://{}/metrics", gw.addr), &[], "").await.2
}

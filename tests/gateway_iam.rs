//! `AuthorizationType: AWS_IAM` on `$connect`: handshake URLs presigned with the `aws-sigv4`
//! crate (as the AWS SDKs presign them) are accepted and carry `context.identity.*` to the
//! backend; an expired, future-dated, wrongly scoped or wrongly keyed URL, and one with a byte
//! changed in its path, a query value, the signature or the date, is refused with 403 before
//! any backend call. A gateway started with such a template and no key pair refuses to start.

mod common;

use std::time::{Duration, SystemTime};

use common::gw::{FakeBackend, start_gateway};
use common::within;
use socketless::gateway::Verifier;

const KEY_ID: &str = "AKIAIOSFODNN7EXAMPLE";
const KEY_SECRET: &str = "iam-test-secret";
/// What AWS's encoding of `AKIAIOSFODNN7EXAMPLE` gives as its account.
const ACCOUNT: &str = "581039954779";

const TEMPLATE: &str = r#"
Parameters:
  Backend: { Type: String }
Resources:
  Api:
    Type: AWS::ApiGatewayV2::Api
    Properties: { Name: iam, ProtocolType: WEBSOCKET, RouteSelectionExpression: "$request.body.action" }
  ConnectIntegration:
    Type: AWS::ApiGatewayV2::Integration
    Properties:
      ApiId: !Ref Api
      IntegrationType: HTTP_PROXY
      IntegrationMethod: POST
      IntegrationUri: !Sub "${Backend}/connect"
      RequestParameters:
        integration.request.header.x-access-key: context.identity.accessKey
        integration.request.header.x-caller: context.identity.caller
        integration.request.header.x-user: context.identity.user
        integration.request.header.x-user-arn: context.identity.userArn
        integration.request.header.x-account-id: context.identity.accountId
  Connect:
    Type: AWS::ApiGatewayV2::Route
    Properties: { ApiId: !Ref Api, RouteKey: "$connect", AuthorizationType: AWS_IAM, Target: !Sub "integrations/${ConnectIntegration}" }
  Stage:
    Type: AWS::ApiGatewayV2::Stage
    Properties: { ApiId: !Ref Api, StageName: dev, AutoDeploy: true }
"#;

struct Presign<'a> {
    secret: &'a str,
    region: &'a str,
    service: &'a str,
    time: SystemTime,
    expires: Duration,
    host: Option<&'a str>,
}

impl Default for Presign<'_> {
    fn default() -> Self {
        Presign {
            secret: KEY_SECRET,
            region: socketless::defaults::REGION,
            service: "execute-api",
            time: SystemTime::now(),
            expires: Duration::from_secs(300),
            host: None,
        }
    }
}

/// `url` (http://host:port/path?query) presigned for a GET, as a ws:// URL.
fn presign(url: &str, p: Presign<'_>) -> String {
    use aws_credential_types::Credentials;
    use aws_sigv4::http_request::{SignableBody, SignableRequest, SignatureLocation, SigningSettings, sign};
    use aws_sigv4::sign::v4;
    let identity = Credentials::new(KEY_ID, p.secret, None, None, "test").into();
    let mut settings = SigningSettings::default();
    settings.signature_location = SignatureLocation::QueryParams;
    settings.expires_in = Some(p.expires);
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(p.region)
        .name(p.service)
        .time(p.time)
        .settings(settings)
        .build()
        .unwrap()
        .into();
    let host = p.host.unwrap_or_else(|| url.split('/').nth(2).unwrap()).to_string();
    let headers = [("host", host.as_str())];
    let signable = SignableRequest::new("GET", url, headers.into_iter(), SignableBody::Bytes(&[])).unwrap();
    let (instructions, _) = sign(signable, &params).unwrap().into_parts();
    let mut req = http::Request::builder().uri(url).body(()).unwrap();
    instructions.apply_to_request_http1x(&mut req);
    req.uri().to_string().replacen("http://", "ws://", 1)
}

/// The handshake's status: 101, or the refusal's, whose body must be API Gateway's.
async fn status(url: &str) -> u16 {
    use tokio_tungstenite::tungstenite::Error;
    match within(tokio_tungstenite::connect_async(url)).await {
        Ok((_ws, resp)) => resp.status().as_u16(),
        Err(Error::Http(resp)) => {
            let body = String::from_utf8_lossy(resp.body().as_deref().unwrap_or_default()).into_owned();
            assert_eq!(body, r#"{"message":"Forbidden"}"#, "{url}");
            assert!(resp.headers().get("x-amzn-errortype").is_none(), "{url}");
            resp.status().as_u16()
        }
        Err(other) => panic!("handshake failed without an answer: {other}"),
    }
}

/// Replaces the value of query parameter `name` in `url` using `change`.
fn with_param(url: &str, name: &str, change: impl Fn(&str) -> String) -> String {
    let (base, query) = url.split_once('?').unwrap();
    let query: Vec<String> = query
        .split('&')
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) if k == name => format!("{k}={}", change(v)),
            _ => kv.to_string(),
        })
        .collect();
    assert!(
        query.iter().any(|kv| kv.starts_with(&format!("{name}="))),
        "{name} in {url}"
    );
    format!("{base}?{}", query.join("&"))
}

/// The last character swapped for another of the same class (digit or letter).
fn flip_last(v: &str) -> String {
    let mut s = v.to_string();
    let last = s.pop().unwrap();
    s.push(match last {
        '0'..='8' | 'a'..='y' | 'A'..='Y' => (last as u8 + 1) as char,
        _ => '0',
    });
    s
}

async fn iam_gateway(backend: &FakeBackend) -> common::gw::Gw {
    let params = vec![("Backend".to_string(), backend.uri())];
    start_gateway(TEMPLATE, &params, |c| {
        c.verifier = Some(Verifier {
            access_key_id: KEY_ID.into(),
            secret_access_key: KEY_SECRET.into(),
            region: socketless::defaults::REGION.into(),
        });
    })
    .await
}

#[tokio::test]
async fn a_presigned_handshake_is_accepted_with_its_identity() {
    let backend = FakeBackend::start().await;
    let gw = iam_gateway(&backend).await;
    let http = format!("http://{}/dev?token=abc", gw.addr);
    let url = presign(&http, Presign::default());
    assert_eq!(status(&url).await, 101, "{url}");
    let seen = backend.wait_for("/connect", 1).await;
    let h = &seen[0].headers;
    assert_eq!(h["x-access-key"], KEY_ID);
    assert_eq!(h["x-caller"], KEY_ID);
    assert_eq!(h["x-user"], KEY_ID);
    assert_eq!(h["x-account-id"], ACCOUNT);
    assert_eq!(
        h["x-user-arn"],
        format!("arn:aws:iam::{ACCOUNT}:user/{KEY_ID}").as_str()
    );
}

#[tokio::test]
async fn unsigned_tampered_expired_and_misscoped_handshakes_are_refused_before_the_backend() {
    let backend = FakeBackend::start().await;
    let gw = iam_gateway(&backend).await;
    let base = format!("http://{}/dev", gw.addr);
    let good = presign(&format!("{base}?token=abc"), Presign::default());
    let hour = Duration::from_secs(3600);
    let refused: Vec<(&str, String)> = vec![
        ("unsigned", format!("ws://{}/dev", gw.addr)),
        ("unsigned with a token", format!("ws://{}/dev?token=abc", gw.addr)),
        // Signed for /deu, sent to /dev: one byte of the path.
        (
            "path",
            presign(&format!("http://{}/deu?token=abc", gw.addr), Presign::default()).replacen("/deu?", "/dev?", 1),
        ),
        ("query value", with_param(&good, "token", flip_last)),
        ("added parameter", format!("{good}&extra=1")),
        ("signature", with_param(&good, "X-Amz-Signature", flip_last)),
        (
            "date",
            with_param(&good, "X-Amz-Date", |d| flip_last(d.trim_end_matches('Z')) + "Z"),
        ),
        ("expires", with_param(&good, "X-Amz-Expires", |_| "3600".into())),
        (
            "signed headers",
            with_param(&good, "X-Amz-SignedHeaders", |_| "host%3Bx-extra".into()),
        ),
        (
            "wrong key",
            presign(
                &base,
                Presign {
                    secret: "another-secret",
                    ..Presign::default()
                },
            ),
        ),
        (
            "wrong region",
            presign(
                &base,
                Presign {
                    region: "eu-west-1",
                    ..Presign::default()
                },
            ),
        ),
        (
            "wrong service",
            presign(
                &base,
                Presign {
                    service: "execute-apis",
                    ..Presign::default()
                },
            ),
        ),
        (
            "wrong host",
            presign(
                &base,
                Presign {
                    host: Some("example.com"),
                    ..Presign::default()
                },
            ),
        ),
        (
            "expired",
            presign(
                &base,
                Presign {
                    time: SystemTime::now() - hour,
                    expires: Duration::from_secs(60),
                    ..Presign::default()
                },
            ),
        ),
        (
            "future-dated beyond the skew",
            presign(
                &base,
                Presign {
                    time: SystemTime::now() + hour,
                    ..Presign::default()
                },
            ),
        ),
    ];
    for (what, url) in &refused {
        assert_eq!(status(url).await, 403, "{what}: {url}");
    }
    assert!(
        backend.seen("/connect").is_empty(),
        "a refused handshake reached the backend"
    );
    // The untouched URL still works, and within the skew a URL signed a little ahead does too.
    assert_eq!(status(&good).await, 101);
    let ahead = presign(
        &base,
        Presign {
            time: SystemTime::now() + Duration::from_secs(60),
            ..Presign::default()
        },
    );
    assert_eq!(status(&ahead).await, 101);
    assert_eq!(backend.wait_for("/connect", 2).await.len(), 2);
}

#[test]
fn the_gateway_refuses_to_start_without_a_key_pair() {
    let dir = std::env::temp_dir().join(format!("socketless-iam-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfn = dir.join("iam.yml");
    std::fs::write(&cfn, TEMPLATE).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_socketless"))
        .args(["gateway", "--listen", "127.0.0.1:0", "--cfn"])
        .arg(&cfn)
        .args(["--param", "Backend=http://127.0.0.1:9"])
        .env_remove("SOCKETLESS_GATEWAY_SIGV4_ACCESS_KEY_ID")
        .env_remove("SOCKETLESS_GATEWAY_SIGV4_SECRET_ACCESS_KEY")
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started: {stderr}");
    assert!(
        stderr.contains("--sigv4-access-key-id") && stderr.contains("--sigv4-secret-access-key"),
        "{stderr}"
    );
}

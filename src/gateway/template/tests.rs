//! The template loader's tests: substitution, conditions, parameters, and the constructs the
//! gateway refuses, each named by its resource.

use std::collections::BTreeMap;

use super::*;

const MINI: &str = r#"
Parameters:
  Backend: { Type: String }
  Stage: { Type: String, Default: dev }
  Secret: { Type: String, NoEcho: true, Default: s3cr3t-s3cr3t-s3 }
  Flag: { Type: String, Default: "false", AllowedValues: ["true", "false"] }
Conditions:
  FlagOn: !Equals [!Ref Flag, "true"]
  FlagOff: !Not [!Condition FlagOn]
Resources:
  Api:
    Type: AWS::ApiGatewayV2::Api
    Properties: { Name: t, ProtocolType: WEBSOCKET, RouteSelectionExpression: "$request.body.action" }
  Msg:
    Type: AWS::ApiGatewayV2::Integration
    Properties:
      ApiId: !Ref Api
      IntegrationType: HTTP_PROXY
      IntegrationMethod: POST
      IntegrationUri: !Sub "${Backend}/message"
      TimeoutInMillis: 1000
      RequestParameters:
        integration.request.header.x-id: context.connectionId
        integration.request.header.x-secret: !Sub "'${Secret}'"
        integration.request.header.x-flag: !If [FlagOn, "'on'", !Ref "AWS::NoValue"]
  Default:
    Type: AWS::ApiGatewayV2::Route
    Properties: { ApiId: !Ref Api, RouteKey: "$default", Target: !Join ["/", ["integrations", !Ref Msg]], RouteResponseSelectionExpression: "$default" }
  DefaultResponse:
    Type: AWS::ApiGatewayV2::RouteResponse
    Properties: { ApiId: !Ref Api, RouteId: !Ref Default, RouteResponseKey: "$default" }
  Table:
    Type: AWS::DynamoDB::Table
    Properties: { Whatever: 1 }
  StageRes:
    Type: AWS::ApiGatewayV2::Stage
    Properties: { ApiId: !GetAtt Api.ApiId, StageName: !Ref Stage, AutoDeploy: true, StageVariables: { color: blue } }
"#;

fn params(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
    kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[test]
fn loads_and_substitutes() {
    let m = load(MINI, &params(&[("Backend", "http://127.0.0.1:9")]), "local").unwrap();
    assert_eq!(m.stage, "dev");
    assert_eq!(m.stage_variables["color"], "blue");
    let r = &m.routes["$default"];
    assert!(r.two_way);
    let i = r.integration.as_ref().unwrap();
    assert_eq!(i.uri, "http://127.0.0.1:9/message");
    assert_eq!(i.timeout_ms, Some(1000));
    let names: Vec<String> = i.parameters.iter().map(|p| p.target_name().to_string()).collect();
    assert!(names.contains(&"x-id".to_string()));
    assert!(!names.contains(&"x-flag".to_string()), "AWS::NoValue removes the key");
    let m = load(
        MINI,
        &params(&[("Backend", "http://h:1"), ("Flag", "true"), ("Stage", "prod")]),
        "local",
    )
    .unwrap();
    assert_eq!(m.stage, "prod");
    let i = m.routes["$default"].integration.clone().unwrap();
    assert!(i.parameters.iter().any(|p| p.target_name() == "x-flag"));
}

use proptest::prelude::*;

proptest! {
    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,400}") {
        let _ = load(&text, &BTreeMap::new(), "local");
    }

    #[test]
    fn arbitrary_yaml_shapes_never_panic(
        key in "[A-Za-z:!]{1,12}",
        value in "[A-Za-z0-9 ${}.!:\\[\\],-]{0,40}",
    ) {
        let text = MINI.replace("IntegrationUri: !Sub \"${Backend}/message\"", &format!("IntegrationUri: {{ {key}: \"{value}\" }}"));
        let _ = load(&text, &params(&[("Backend", "http://h:1")]), "local");
    }

    #[test]
    fn every_parameter_is_substituted(host in "[a-z]{1,12}", port in 1u16..65535, stage in "[A-Za-z0-9_-]{1,20}", secret in "[!-~&&[^'$]]{16,32}") {
        let text = crate::gateway::EMBEDDED_TEMPLATE;
        let p = params(&[
            ("IntegrationUri", &format!("http://{host}:{port}")),
            ("StageName", &stage),
            ("SharedSecret", &secret),
            ("DisconnectContext", "true"),
        ]);
        let m = load(text, &p, "local").unwrap();
        prop_assert_eq!(&m.stage, &stage);
        for (key, path) in [("$connect", "/connect"), ("$disconnect", "/disconnect"), ("$default", "/message")] {
            let i = m.routes[key].integration.clone().unwrap();
            prop_assert_eq!(i.uri.to_string(), format!("http://{host}:{port}{path}"));
            let lit = i.parameters.iter().find(|p| p.target_name() == "x-socketless-secret").unwrap();
            prop_assert_eq!(&lit.source, &crate::gateway::mapping::Source::Literal(secret.clone()));
        }
    }
}

#[test]
fn missing_and_unknown_parameters_are_reported_together() {
    let e = load(MINI, &params(&[("Nope", "1"), ("Flag", "maybe")]), "local").unwrap_err();
    let text: Vec<String> = e.iter().map(|e| e.0.clone()).collect();
    assert!(text.iter().any(|t| t.contains("--param Nope")), "{text:?}");
    assert!(
        text.iter().any(|t| t.contains("parameter Backend has no Default")),
        "{text:?}"
    );
    assert!(text.iter().any(|t| t.contains("Flag: \"maybe\"")), "{text:?}");
}

#[test]
fn unsupported_constructs_name_the_resource() {
    let bad = MINI.replace("HTTP_PROXY", "AWS_PROXY");
    let e = load(&bad, &params(&[("Backend", "http://h:1")]), "l").unwrap_err();
    assert!(e[0].0.contains("resource Msg") && e[0].0.contains("AWS_PROXY"), "{e:?}");

    let bad = MINI.replace(
        "TimeoutInMillis: 1000",
        "TimeoutInMillis: 1000\n      RequestTemplates: { a: b }",
    );
    let e = load(&bad, &params(&[("Backend", "http://h:1")]), "l").unwrap_err();
    assert!(e[0].0.contains("resource Msg: property RequestTemplates"), "{e:?}");

    let bad = format!(
        "{MINI}\n  Auth:\n    Type: AWS::ApiGatewayV2::Authorizer\n    Properties: {{ ApiId: !Ref Api, AuthorizerType: JWT }}\n"
    );
    let e = load(&bad, &params(&[("Backend", "http://h:1")]), "l").unwrap_err();
    assert!(
        e[0].0.contains("resource Auth") && e[0].0.contains("cannot be emulated"),
        "{e:?}"
    );

    let bad = format!(
        "{MINI}\n  Auth:\n    Type: AWS::ApiGatewayV2::Authorizer\n    Properties: {{ ApiId: !Ref Api, AuthorizerType: REQUEST, AuthorizerResultTtlInSeconds: 300 }}\n"
    );
    let e = load(&bad, &params(&[("Backend", "http://h:1")]), "l").unwrap_err();
    assert!(
        e[0].0.contains("resource Auth: property AuthorizerResultTtlInSeconds"),
        "{e:?}"
    );

    let bad = MINI.replace(
        "RouteKey: \"$default\",",
        "RouteKey: \"$default\", AuthorizationType: AWS_IAM,",
    );
    let e = load(&bad, &params(&[("Backend", "http://h:1")]), "l").unwrap_err();
    assert!(
        e[0].0.contains("resource Default") && e[0].0.contains("AWS_IAM"),
        "{e:?}"
    );

    let bad = MINI.replace("!Sub \"${Backend}/message\"", "!Select [0, [a]]");
    let e = load(&bad, &params(&[("Backend", "http://h:1")]), "l").unwrap_err();
    assert!(
        e[0].0.contains("resource Msg") && e[0].0.contains("Fn::Select"),
        "{e:?}"
    );

    let bad = MINI.replace("ProtocolType: WEBSOCKET", "ProtocolType: HTTP");
    let e = load(&bad, &params(&[("Backend", "http://h:1")]), "l").unwrap_err();
    assert!(e[0].0.contains("resource Api: ProtocolType must be WEBSOCKET"), "{e:?}");

    let bad = MINI.replace("context.connectionId", "context.noSuchThing");
    let e = load(&bad, &params(&[("Backend", "http://h:1")]), "l").unwrap_err();
    assert!(
        e[0].0.contains("resource Msg") && e[0].0.contains("context.noSuchThing"),
        "{e:?}"
    );

    let e = load(MINI, &params(&[("Backend", "https://h:1")]), "l").unwrap_err();
    assert!(e[0].0.contains("https"), "{e:?}");

    let e = load("Resources: [", &params(&[]), "l").unwrap_err();
    assert!(e[0].0.contains("not valid YAML"), "{e:?}");
}

#[test]
fn stage_names_are_checked_by_one_rule() {
    for good in ["dev", "prod-2", "a_b", "X"] {
        assert!(is_stage_name(good), "{good}");
    }
    for bad in ["", "a b", "a/b", "dév", "a.b"] {
        assert!(!is_stage_name(bad), "{bad:?}");
    }
    let e = load(MINI, &params(&[("Backend", "http://h:1"), ("Stage", "a b")]), "l").unwrap_err();
    assert_eq!(
        e[0].0,
        format!("resource StageRes: StageName \"a b\" {STAGE_NAME_RULE}")
    );
}

#[test]
fn a_request_authorizer_guards_connect() {
    let text = format!(
        "{MINI}\n  Auth:\n    Type: AWS::ApiGatewayV2::Authorizer\n    Properties: {{ ApiId: !Ref Api, Name: a, AuthorizerType: REQUEST, IdentitySource: \"route.request.header.Auth, route.request.querystring.t\", AuthorizerUri: arn }}\n  Connect:\n    Type: AWS::ApiGatewayV2::Route\n    Properties: {{ ApiId: !Ref Api, RouteKey: $connect, AuthorizationType: CUSTOM, AuthorizerId: !Ref Auth, Target: !Sub \"integrations/${{Msg}}\" }}\n"
    );
    let m = load(&text, &params(&[("Backend", "http://h:1")]), "l").unwrap();
    assert_eq!(m.routes["$connect"].authorizer.as_deref(), Some("Auth"));
    assert_eq!(m.routes["$default"].authorizer, None);
    assert_eq!(
        m.authorizers["Auth"].identity_sources,
        vec![IdentitySource::Header("auth".into()), IdentitySource::Query("t".into())]
    );
    let missing = text.replace("AuthorizerId: !Ref Auth", "AuthorizerId: Nope");
    let e = load(&missing, &params(&[("Backend", "http://h:1")]), "l").unwrap_err();
    assert!(e[0].0.contains("resource Connect") && e[0].0.contains("Nope"), "{e:?}");
}

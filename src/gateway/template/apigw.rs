//! The ApiGatewayV2 model: which resources and properties the gateway emulates (the
//! allow-list), and how the evaluated Api, Integrations, Routes, RouteResponses and Stage become
//! the [`ApiModel`] the gateway serves (with the IntegrationResponses' ContentHandlingStrategy). Anything it cannot emulate is an error that names the
//! resource. Authorizers are read in `authorizer.rs`, integrations in `integration.rs`.

use std::collections::{BTreeMap, HashMap};

use serde_json::{Map, Value};

use super::authorizer::{Authorizer, authorizer};
use super::eval::{Template, as_bool, scalar};
use super::integration::{Integration, content_handling, integration};
use super::{TemplateError, err};
use crate::gateway::selection::Expression;

/// One route: its integration (if any) and whether it has a route response (two-way).
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub logical_id: String,
    pub key: String,
    pub integration: Option<Integration>,
    pub two_way: bool,
    /// `AuthorizationType: AWS_IAM` (only `$connect` may have it): handshakes must be presigned
    /// with the gateway's SigV4 key pair.
    pub iam: bool,
    /// The logical id of the REQUEST authorizer that guards it (`$connect` only).
    pub authorizer: Option<String>,
}

/// What the gateway emulates, read from the template.
#[derive(Debug, Clone)]
pub struct ApiModel {
    pub api_id: String,
    pub selection: Expression,
    pub routes: HashMap<String, Route>,
    pub stage: String,
    pub stage_variables: BTreeMap<String, String>,
    /// The REQUEST authorizers, by logical id.
    pub authorizers: BTreeMap<String, Authorizer>,
}

/// Evaluated ApiGatewayV2 resources by type: (logical id, properties).
type ByType = BTreeMap<String, Vec<(String, Map<String, Value>)>>;

/// `Fn::GetAtt` values of the types this model knows.
pub fn attributes(ty: &str, resource: &str, attribute: &str) -> Option<String> {
    match (ty, attribute) {
        ("AWS::ApiGatewayV2::Api", "ApiId") => Some(resource.to_string()),
        ("AWS::ApiGatewayV2::Api", "ApiEndpoint") => Some(format!("ws://{resource}.local")),
        _ => None,
    }
}

/// Properties each resource type may carry, and whether the gateway emulates it.
/// Properties listed as inert do not change request handling locally.
fn allowed(ty: &str) -> Option<(&'static [&'static str], &'static [&'static str])> {
    Some(match ty {
        "AWS::ApiGatewayV2::Api" => (
            &["Name", "ProtocolType", "RouteSelectionExpression"],
            &[
                "Description",
                "Tags",
                "DisableSchemaValidation",
                "DisableExecuteApiEndpoint",
                "ApiKeySelectionExpression",
                "Version",
            ],
        ),
        "AWS::ApiGatewayV2::Integration" => (
            &[
                "ApiId",
                "IntegrationType",
                "IntegrationUri",
                "IntegrationMethod",
                "RequestParameters",
                "TimeoutInMillis",
                "ContentHandlingStrategy",
            ],
            &["Description", "PayloadFormatVersion", "ConnectionType", "ConnectionId"],
        ),
        "AWS::ApiGatewayV2::Route" => (
            &[
                "ApiId",
                "RouteKey",
                "Target",
                "AuthorizationType",
                "AuthorizerId",
                "RouteResponseSelectionExpression",
                "ApiKeyRequired",
            ],
            &["OperationName", "RequestParameters"],
        ),
        "AWS::ApiGatewayV2::IntegrationResponse" => (
            &[
                "ApiId",
                "IntegrationId",
                "IntegrationResponseKey",
                "ContentHandlingStrategy",
            ],
            &[],
        ),
        "AWS::ApiGatewayV2::RouteResponse" => (&["ApiId", "RouteId", "RouteResponseKey"], &["ResponseParameters"]),
        "AWS::ApiGatewayV2::Stage" => (
            &["ApiId", "StageName", "StageVariables"],
            &[
                "AutoDeploy",
                "DeploymentId",
                "Description",
                "Tags",
                "DefaultRouteSettings",
                "RouteSettings",
                "AccessLogSettings",
            ],
        ),
        "AWS::ApiGatewayV2::Deployment" => (&["ApiId"], &["Description", "StageName"]),
        // The function behind AuthorizerUri is reached at the URL `--authorizer` gives.
        "AWS::ApiGatewayV2::Authorizer" => (
            &["ApiId", "AuthorizerType", "IdentitySource"],
            &["Name", "AuthorizerUri", "AuthorizerCredentialsArn"],
        ),
        _ => return None,
    })
}

/// Evaluates every ApiGatewayV2 resource whose condition holds and checks its properties
/// against the allow-list; every problem is reported at once.
pub fn resources(template: &mut Template) -> Result<ByType, Vec<TemplateError>> {
    let mut problems = Vec::new();
    let mut by_type: ByType = BTreeMap::new();
    for (id, ty, res) in template.resources() {
        if !ty.starts_with("AWS::ApiGatewayV2::") {
            continue; // Tables, roles, log groups, VPC links: not the gateway's concern.
        }
        match template.exists(&id, &res) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                problems.push(e);
                continue;
            }
        }
        let Some((used, inert)) = allowed(&ty) else {
            problems.push(err(format!(
                "resource {id}: {ty} cannot be emulated by socketless gateway (it emulates Api, Integration, IntegrationResponse, Route, RouteResponse, Stage, Deployment, and REQUEST Authorizers)"
            )));
            continue;
        };
        let props = match template.properties(&id, &res) {
            Ok(props) => props,
            Err(e) => {
                problems.push(e);
                continue;
            }
        };
        for k in props.keys() {
            if !used.contains(&k.as_str()) && !inert.contains(&k.as_str()) {
                problems.push(err(format!(
                    "resource {id}: property {k} of {ty} cannot be emulated by socketless gateway"
                )));
            }
        }
        by_type.entry(ty).or_default().push((id, props));
    }
    if problems.is_empty() {
        Ok(by_type)
    } else {
        Err(problems)
    }
}

pub(super) fn prop(props: &Map<String, Value>, key: &str) -> Option<String> {
    props.get(key).and_then(scalar)
}

/// Every resource but the Api must belong to the template's one Api.
fn check_api(api_id: &str, id: &str, props: &Map<String, Value>) -> Result<(), TemplateError> {
    match prop(props, "ApiId") {
        Some(a) if a == api_id => Ok(()),
        other => Err(err(format!(
            "resource {id}: ApiId {other:?} is not the template's Api ({api_id})"
        ))),
    }
}

/// Builds the model from the evaluated resources.
pub fn build(by_type: &ByType) -> Result<ApiModel, TemplateError> {
    let none = Vec::new();
    let of = |t: &str| by_type.get(t).unwrap_or(&none);
    let (api_id, selection) = api(of("AWS::ApiGatewayV2::Api"))?;
    let mut integrations = HashMap::new();
    for (id, p) in of("AWS::ApiGatewayV2::Integration") {
        check_api(&api_id, id, p)?;
        integrations.insert(id.clone(), integration(id, p)?);
    }
    // An integration response converts the answers of its integration, on every route that
    // targets it (routes take their copy below).
    for (id, p) in of("AWS::ApiGatewayV2::IntegrationResponse") {
        check_api(&api_id, id, p)?;
        integration_response(id, p, &mut integrations)?;
    }
    let mut authorizers = BTreeMap::new();
    for (id, p) in of("AWS::ApiGatewayV2::Authorizer") {
        check_api(&api_id, id, p)?;
        authorizers.insert(id.clone(), authorizer(id, p)?);
    }
    let mut routes = HashMap::new();
    let mut route_ids = HashMap::new();
    for (id, p) in of("AWS::ApiGatewayV2::Route") {
        check_api(&api_id, id, p)?;
        let r = route(id, p, &integrations, &authorizers)?;
        if routes.contains_key(&r.key) {
            return Err(err(format!("resource {id}: route key {:?} is defined twice", r.key)));
        }
        route_ids.insert(id.clone(), r.key.clone());
        routes.insert(r.key.clone(), r);
    }
    // A route is two-way when it has a $default route response (the selection expression alone
    // is not enough).
    for (id, p) in of("AWS::ApiGatewayV2::RouteResponse") {
        check_api(&api_id, id, p)?;
        let key = route_response(id, p, &route_ids)?;
        if let Some(r) = routes.get_mut(key) {
            r.two_way = true;
        }
    }
    let (stage, stage_variables) = stage(&api_id, of("AWS::ApiGatewayV2::Stage"))?;
    for (id, p) in of("AWS::ApiGatewayV2::Deployment") {
        check_api(&api_id, id, p)?;
    }
    Ok(ApiModel {
        api_id,
        selection,
        routes,
        stage,
        stage_variables,
        authorizers,
    })
}

/// The one Api: its id and route selection expression.
fn api(apis: &[(String, Map<String, Value>)]) -> Result<(String, Expression), TemplateError> {
    let [(api_id, api)] = apis else {
        return Err(err(format!(
            "the template must define exactly one AWS::ApiGatewayV2::Api (found {})",
            apis.len()
        )));
    };
    match prop(api, "ProtocolType").as_deref() {
        Some("WEBSOCKET") => {}
        other => {
            return Err(err(format!(
                "resource {api_id}: ProtocolType must be WEBSOCKET (found {other:?})"
            )));
        }
    }
    let expr_text = prop(api, "RouteSelectionExpression")
        .ok_or_else(|| err(format!("resource {api_id}: RouteSelectionExpression is required")))?;
    let selection =
        Expression::parse(&expr_text).map_err(|e| err(format!("resource {api_id}: RouteSelectionExpression: {e}")))?;
    Ok((api_id.clone(), selection))
}

/// A route, its integration, and on `$connect` its REQUEST authorizer or `AWS_IAM`. It is one-way
/// until a route response names it.
fn route(
    id: &str,
    p: &Map<String, Value>,
    integrations: &HashMap<String, Integration>,
    authorizers: &BTreeMap<String, Authorizer>,
) -> Result<Route, TemplateError> {
    let key = prop(p, "RouteKey").ok_or_else(|| err(format!("resource {id}: RouteKey is required")))?;
    let authorizer_id = prop(p, "AuthorizerId");
    let mut iam = false;
    let authorizer = match prop(p, "AuthorizationType").as_deref() {
        Some("AWS_IAM") if key == "$connect" && authorizer_id.is_none() => {
            iam = true;
            None
        }
        Some("AWS_IAM") => {
            return Err(err(format!(
                "resource {id}: AuthorizationType AWS_IAM is only allowed on $connect, without an AuthorizerId"
            )));
        }
        None | Some("NONE") => {
            if let Some(a) = authorizer_id {
                return Err(err(format!(
                    "resource {id}: AuthorizerId {a:?} needs AuthorizationType CUSTOM"
                )));
            }
            None
        }
        Some("CUSTOM") => {
            if key != "$connect" {
                return Err(err(format!(
                    "resource {id}: route {key:?} cannot have an authorizer (API Gateway authorizes $connect only)"
                )));
            }
            let a = authorizer_id
                .ok_or_else(|| err(format!("resource {id}: AuthorizationType CUSTOM needs an AuthorizerId")))?;
            if !authorizers.contains_key(&a) {
                return Err(err(format!(
                    "resource {id}: AuthorizerId {a:?} names no REQUEST authorizer in the template"
                )));
            }
            Some(a)
        }
        Some(auth) => {
            return Err(err(format!(
                "resource {id}: AuthorizationType {auth} cannot be emulated by socketless gateway (use NONE, CUSTOM with a REQUEST authorizer on $connect, or AWS_IAM on $connect)"
            )));
        }
    };
    if p.get("ApiKeyRequired").and_then(as_bool) == Some(true) {
        return Err(err(format!(
            "resource {id}: ApiKeyRequired cannot be emulated by socketless gateway"
        )));
    }
    let integration = match prop(p, "Target") {
        None => None,
        Some(t) => {
            let target = t.strip_prefix("integrations/").ok_or_else(|| {
                err(format!(
                    "resource {id}: Target {t:?} must be integrations/{{IntegrationId}}"
                ))
            })?;
            Some(integrations.get(target).cloned().ok_or_else(|| {
                err(format!(
                    "resource {id}: Target {t:?} names no integration in the template"
                ))
            })?)
        }
    };
    Ok(Route {
        logical_id: id.to_string(),
        key,
        integration,
        two_way: false,
        authorizer,
        iam,
    })
}

/// A `$default` route response: the key of the route it makes two-way.
fn route_response<'a>(
    id: &str,
    p: &Map<String, Value>,
    route_ids: &'a HashMap<String, String>,
) -> Result<&'a String, TemplateError> {
    let route_id = prop(p, "RouteId").ok_or_else(|| err(format!("resource {id}: RouteId is required")))?;
    let key = route_ids.get(&route_id).ok_or_else(|| {
        err(format!(
            "resource {id}: RouteId {route_id:?} names no route in the template"
        ))
    })?;
    match prop(p, "RouteResponseKey").as_deref() {
        Some("$default") => Ok(key),
        other => Err(err(format!(
            "resource {id}: RouteResponseKey must be $default (found {other:?})"
        ))),
    }
}

/// A `$default` integration response: its ContentHandlingStrategy goes onto its integration.
fn integration_response(
    id: &str,
    p: &Map<String, Value>,
    integrations: &mut HashMap<String, Integration>,
) -> Result<(), TemplateError> {
    let target = prop(p, "IntegrationId").ok_or_else(|| err(format!("resource {id}: IntegrationId is required")))?;
    let integration = integrations.get_mut(&target).ok_or_else(|| {
        err(format!(
            "resource {id}: IntegrationId {target:?} names no integration in the template"
        ))
    })?;
    match prop(p, "IntegrationResponseKey").as_deref() {
        Some("$default") => {}
        other => {
            return Err(err(format!(
                "resource {id}: IntegrationResponseKey must be $default (found {other:?}); socketless gateway emulates no status-selected integration responses"
            )));
        }
    }
    if integration.response_content.is_some() {
        return Err(err(format!(
            "resource {id}: integration {target} has a $default integration response already"
        )));
    }
    integration.response_content = content_handling(id, p)?;
    Ok(())
}

/// The one Stage: its name and variables.
fn stage(
    api_id: &str,
    stages: &[(String, Map<String, Value>)],
) -> Result<(String, BTreeMap<String, String>), TemplateError> {
    let [(stage_id, stage)] = stages else {
        return Err(err(format!(
            "the template must define exactly one AWS::ApiGatewayV2::Stage (found {})",
            stages.len()
        )));
    };
    check_api(api_id, stage_id, stage)?;
    let stage_name =
        prop(stage, "StageName").ok_or_else(|| err(format!("resource {stage_id}: StageName is required")))?;
    if !super::is_stage_name(&stage_name) {
        return Err(err(format!(
            "resource {stage_id}: StageName {stage_name:?} {}",
            super::STAGE_NAME_RULE
        )));
    }
    let mut stage_variables = BTreeMap::new();
    if let Some(vars) = stage.get("StageVariables").and_then(Value::as_object) {
        for (k, v) in vars {
            stage_variables.insert(k.clone(), scalar(v).unwrap_or_default());
        }
    }
    Ok((stage_name, stage_variables))
}

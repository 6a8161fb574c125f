//! Loads the gateway's configuration from the CloudFormation template that deploys the real API:
//! parameters, conditions and intrinsic functions are evaluated, the ApiGatewayV2 resources are
//! read, and anything the gateway cannot emulate is an error that names the resource.

use std::collections::{BTreeMap, HashMap};

use serde_json::{Map, Value};

use super::mapping::{Mapping, MappingError};
use super::selection::Expression;

/// A template problem, naming where it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TemplateError(pub String);

fn err(msg: impl Into<String>) -> TemplateError {
    TemplateError(msg.into())
}

/// One HTTP_PROXY integration.
#[derive(Debug, Clone, PartialEq)]
pub struct Integration {
    pub logical_id: String,
    pub uri: http::Uri,
    pub method: http::Method,
    pub timeout_ms: Option<u64>,
    pub parameters: Vec<Mapping>,
}

/// One route: its integration (if any) and whether it has a route response (two-way).
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub logical_id: String,
    pub key: String,
    pub integration: Option<Integration>,
    pub two_way: bool,
}

/// What the gateway emulates, read from the template.
#[derive(Debug, Clone)]
pub struct ApiModel {
    pub api_id: String,
    pub selection: Expression,
    pub routes: HashMap<String, Route>,
    pub stage: String,
    pub stage_variables: BTreeMap<String, String>,
}

/// Evaluated ApiGatewayV2 resources by type: (logical id, properties).
type ByType<'a> = BTreeMap<&'a str, Vec<(String, Map<String, Value>)>>;

/// Pseudo parameters and their local values.
fn pseudo(name: &str, region: &str) -> Option<String> {
    Some(match name {
        "AWS::Region" => region.to_string(),
        "AWS::AccountId" => "000000000000".to_string(),
        "AWS::Partition" => "aws".to_string(),
        "AWS::StackName" => "socketless-local".to_string(),
        "AWS::StackId" => "arn:aws:cloudformation:local:000000000000:stack/socketless-local/local".to_string(),
        "AWS::URLSuffix" => "amazonaws.com".to_string(),
        _ => return None,
    })
}

const NO_VALUE: &str = "AWS::NoValue";

/// Converts YAML (with short-form tags) into JSON with long-form intrinsics.
fn to_json(v: serde_yaml_ng::Value) -> Result<Value, TemplateError> {
    use serde_yaml_ng::Value as Y;
    Ok(match v {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(b),
        Y::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                Value::from(n.as_f64().unwrap_or(0.0))
            }
        }
        Y::String(s) => Value::String(s),
        Y::Sequence(seq) => Value::Array(seq.into_iter().map(to_json).collect::<Result<_, _>>()?),
        Y::Mapping(m) => {
            let mut out = Map::new();
            for (k, v) in m {
                let key = match k {
                    Y::String(s) => s,
                    Y::Number(n) => n.to_string(),
                    Y::Bool(b) => b.to_string(),
                    other => return Err(err(format!("unsupported mapping key {other:?}"))),
                };
                out.insert(key, to_json(v)?);
            }
            Value::Object(out)
        }
        Y::Tagged(t) => {
            let tag = t.tag.to_string();
            let name = tag.trim_start_matches('!');
            let inner = to_json(t.value)?;
            let (key, inner) = match name {
                "Ref" => ("Ref".to_string(), inner),
                "Condition" => ("Condition".to_string(), inner),
                "GetAtt" => {
                    let inner = match inner {
                        Value::String(s) => match s.split_once('.') {
                            Some((a, b)) => Value::Array(vec![a.into(), b.into()]),
                            None => return Err(err(format!("!GetAtt {s:?} needs Resource.Attribute"))),
                        },
                        other => other,
                    };
                    ("Fn::GetAtt".to_string(), inner)
                }
                other => (format!("Fn::{other}"), inner),
            };
            let mut m = Map::new();
            m.insert(key, inner);
            Value::Object(m)
        }
    })
}

/// Evaluation context: parameters, conditions, resource ids.
struct Eval<'a> {
    params: HashMap<String, String>,
    conditions: HashMap<String, bool>,
    raw_conditions: &'a Map<String, Value>,
    resources: &'a Map<String, Value>,
    region: String,
}

impl Eval<'_> {
    fn reference(&self, name: &str, at: &str) -> Result<Value, TemplateError> {
        if name == NO_VALUE {
            return Ok(Value::Null);
        }
        if let Some(v) = self.params.get(name) {
            return Ok(Value::String(v.clone()));
        }
        if let Some(v) = pseudo(name, &self.region) {
            return Ok(Value::String(v));
        }
        if self.resources.contains_key(name) {
            // A resource's Ref is its physical id; locally that is its logical id.
            return Ok(Value::String(name.to_string()));
        }
        Err(err(format!("{at}: Ref to unknown name {name:?}")))
    }

    fn get_att(&self, resource: &str, attr: &str, at: &str) -> Result<Value, TemplateError> {
        let Some(r) = self.resources.get(resource) else {
            return Err(err(format!("{at}: Fn::GetAtt on unknown resource {resource:?}")));
        };
        let ty = r.get("Type").and_then(Value::as_str).unwrap_or("");
        Ok(Value::String(match (ty, attr) {
            ("AWS::ApiGatewayV2::Api", "ApiId") => resource.to_string(),
            ("AWS::ApiGatewayV2::Api", "ApiEndpoint") => format!("ws://{resource}.local"),
            (_, "Arn") => format!("arn:aws:local:{}:000000000000:{resource}", self.region),
            _ => format!("{resource}.{attr}"),
        }))
    }

    fn condition(&mut self, name: &str, at: &str, depth: usize) -> Result<bool, TemplateError> {
        if let Some(v) = self.conditions.get(name) {
            return Ok(*v);
        }
        if depth > 32 {
            return Err(err(format!("{at}: condition {name:?} refers to itself")));
        }
        let Some(def) = self.raw_conditions.get(name).cloned() else {
            return Err(err(format!("{at}: unknown condition {name:?}")));
        };
        let v = self.eval(&def, &format!("Conditions.{name}"), depth + 1)?;
        let b = as_bool(&v).ok_or_else(|| err(format!("Conditions.{name}: does not evaluate to true or false")))?;
        self.conditions.insert(name.to_string(), b);
        Ok(b)
    }

    /// Evaluates intrinsic functions. `Null` stands for AWS::NoValue and is dropped by callers.
    fn eval(&mut self, v: &Value, at: &str, depth: usize) -> Result<Value, TemplateError> {
        if depth > 64 {
            return Err(err(format!("{at}: nested too deeply")));
        }
        match v {
            Value::Array(items) => {
                let mut out = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    let e = self.eval(item, &format!("{at}[{i}]"), depth + 1)?;
                    if !e.is_null() {
                        out.push(e);
                    }
                }
                Ok(Value::Array(out))
            }
            Value::Object(m) if m.len() == 1 => {
                let (k, arg) = m.iter().next().map(|(k, v)| (k.as_str(), v)).unwrap_or(("", v));
                match k {
                    "Ref" => {
                        let name = arg.as_str().ok_or_else(|| err(format!("{at}: Ref takes a name")))?;
                        self.reference(name, at)
                    }
                    "Condition" => {
                        let name = arg
                            .as_str()
                            .ok_or_else(|| err(format!("{at}: Condition takes a name")))?;
                        Ok(Value::Bool(self.condition(name, at, depth)?))
                    }
                    "Fn::GetAtt" => {
                        let parts = self.eval(arg, at, depth + 1)?;
                        let pair: Vec<&str> = parts
                            .as_array()
                            .map(|a| a.iter().filter_map(Value::as_str).collect())
                            .unwrap_or_default();
                        match pair.as_slice() {
                            [r, a] => self.get_att(r, a, at),
                            _ => Err(err(format!("{at}: Fn::GetAtt takes [Resource, Attribute]"))),
                        }
                    }
                    "Fn::Sub" => self.sub(arg, at, depth),
                    "Fn::Join" => {
                        let a = arg
                            .as_array()
                            .filter(|a| a.len() == 2)
                            .ok_or_else(|| err(format!("{at}: Fn::Join takes [delimiter, [values]]")))?;
                        let delim = a[0]
                            .as_str()
                            .ok_or_else(|| err(format!("{at}: Fn::Join delimiter must be a string")))?
                            .to_string();
                        let items = self.eval(&a[1], at, depth + 1)?;
                        let items = items
                            .as_array()
                            .ok_or_else(|| err(format!("{at}: Fn::Join values must be a list")))?;
                        let strs: Result<Vec<String>, _> = items
                            .iter()
                            .map(|i| scalar(i).ok_or_else(|| err(format!("{at}: Fn::Join values must be strings"))))
                            .collect();
                        Ok(Value::String(strs?.join(&delim)))
                    }
                    "Fn::If" => {
                        let a = arg
                            .as_array()
                            .filter(|a| a.len() == 3)
                            .ok_or_else(|| err(format!("{at}: Fn::If takes [condition, then, else]")))?;
                        let name = a[0]
                            .as_str()
                            .ok_or_else(|| err(format!("{at}: Fn::If condition must be a name")))?;
                        let branch = if self.condition(name, at, depth)? { &a[1] } else { &a[2] };
                        self.eval(branch, at, depth + 1)
                    }
                    "Fn::Equals" => {
                        let a = arg
                            .as_array()
                            .filter(|a| a.len() == 2)
                            .ok_or_else(|| err(format!("{at}: Fn::Equals takes two values")))?;
                        let x = self.eval(&a[0], at, depth + 1)?;
                        let y = self.eval(&a[1], at, depth + 1)?;
                        Ok(Value::Bool(scalar(&x) == scalar(&y)))
                    }
                    "Fn::Not" => {
                        let a = arg
                            .as_array()
                            .filter(|a| a.len() == 1)
                            .ok_or_else(|| err(format!("{at}: Fn::Not takes one condition")))?;
                        let x = self.eval(&a[0], at, depth + 1)?;
                        Ok(Value::Bool(
                            !as_bool(&x).ok_or_else(|| err(format!("{at}: Fn::Not needs a condition")))?,
                        ))
                    }
                    "Fn::And" | "Fn::Or" => {
                        let a = arg
                            .as_array()
                            .filter(|a| (2..=10).contains(&a.len()))
                            .ok_or_else(|| err(format!("{at}: {k} takes 2 to 10 conditions")))?;
                        let mut vals = Vec::new();
                        for c in a {
                            let x = self.eval(c, at, depth + 1)?;
                            vals.push(as_bool(&x).ok_or_else(|| err(format!("{at}: {k} needs conditions")))?);
                        }
                        Ok(Value::Bool(if k == "Fn::And" {
                            vals.iter().all(|b| *b)
                        } else {
                            vals.iter().any(|b| *b)
                        }))
                    }
                    other if other.starts_with("Fn::") => Err(err(format!(
                        "{at}: intrinsic function {other} is not supported by socketless gateway (supported: Ref, Fn::Sub, Fn::GetAtt, Fn::Join, Fn::If, Fn::Equals, Fn::Not, Fn::And, Fn::Or, Condition)"
                    ))),
                    _ => self.eval_object(m, at, depth),
                }
            }
            Value::Object(m) => self.eval_object(m, at, depth),
            other => Ok(other.clone()),
        }
    }

    fn eval_object(&mut self, m: &Map<String, Value>, at: &str, depth: usize) -> Result<Value, TemplateError> {
        let mut out = Map::new();
        for (k, v) in m {
            let e = self.eval(v, &format!("{at}.{k}"), depth + 1)?;
            if !e.is_null() {
                out.insert(k.clone(), e);
            }
        }
        Ok(Value::Object(out))
    }

    fn sub(&mut self, arg: &Value, at: &str, depth: usize) -> Result<Value, TemplateError> {
        let (text, vars) = match arg {
            Value::String(s) => (s.clone(), Map::new()),
            Value::Array(a) if a.len() == 2 => {
                let s = a[0]
                    .as_str()
                    .ok_or_else(|| err(format!("{at}: Fn::Sub string must be a string")))?;
                let vars = a[1]
                    .as_object()
                    .ok_or_else(|| err(format!("{at}: Fn::Sub variables must be a map")))?;
                (s.to_string(), vars.clone())
            }
            _ => return Err(err(format!("{at}: Fn::Sub takes a string or [string, variables]"))),
        };
        let mut out = String::new();
        let mut rest = text.as_str();
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after
                .find('}')
                .ok_or_else(|| err(format!("{at}: unterminated ${{ in Fn::Sub")))?;
            let name = &after[..end];
            if let Some(literal) = name.strip_prefix('!') {
                out.push_str("${");
                out.push_str(literal);
                out.push('}');
            } else if let Some(v) = vars.get(name) {
                let v = self.eval(v, at, depth + 1)?;
                out.push_str(&scalar(&v).ok_or_else(|| err(format!("{at}: Fn::Sub variable {name} is not a string")))?);
            } else if let Some((res, attr)) = name.split_once('.') {
                let v = self.get_att(res, attr, at)?;
                out.push_str(&scalar(&v).unwrap_or_default());
            } else {
                let v = self.reference(name, at)?;
                out.push_str(&scalar(&v).unwrap_or_default());
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(Value::String(out))
    }
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn as_bool(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Some(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Some(false),
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
            ],
            &["Description", "PayloadFormatVersion", "ConnectionType", "ConnectionId"],
        ),
        "AWS::ApiGatewayV2::Route" => (
            &[
                "ApiId",
                "RouteKey",
                "Target",
                "AuthorizationType",
                "RouteResponseSelectionExpression",
                "ApiKeyRequired",
            ],
            &["OperationName", "RequestParameters"],
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
        _ => return None,
    })
}

/// Reads the template text with the given parameter values. `region` feeds `AWS::Region`.
pub fn load(text: &str, given: &BTreeMap<String, String>, region: &str) -> Result<ApiModel, Vec<TemplateError>> {
    let yaml: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(text).map_err(|e| vec![err(format!("template is not valid YAML: {e}"))])?;
    let doc = to_json(yaml).map_err(|e| vec![e])?;
    let empty = Map::new();
    let params_def = doc.get("Parameters").and_then(Value::as_object).unwrap_or(&empty);
    let raw_conditions = doc.get("Conditions").and_then(Value::as_object).unwrap_or(&empty);
    let resources = doc
        .get("Resources")
        .and_then(Value::as_object)
        .ok_or_else(|| vec![err("template has no Resources")])?;

    let mut problems = Vec::new();
    for name in given.keys() {
        if !params_def.contains_key(name) {
            problems.push(err(format!("--param {name}: the template has no such parameter")));
        }
    }
    let mut params = HashMap::new();
    for (name, def) in params_def {
        let value = given.get(name).cloned().or_else(|| def.get("Default").and_then(scalar));
        let Some(value) = value else {
            problems.push(err(format!(
                "parameter {name} has no Default: pass --param {name}=VALUE"
            )));
            continue;
        };
        if let Some(allowed) = def.get("AllowedValues").and_then(Value::as_array) {
            if !allowed.iter().filter_map(scalar).any(|a| a == value) {
                problems.push(err(format!(
                    "parameter {name}: {value:?} is not one of its AllowedValues"
                )));
            }
        }
        params.insert(name.clone(), value);
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let mut ev = Eval {
        params,
        conditions: HashMap::new(),
        raw_conditions,
        resources,
        region: region.to_string(),
    };

    // Evaluate every ApiGatewayV2 resource whose condition holds.
    let mut by_type: ByType = BTreeMap::new();
    for (id, res) in resources {
        let ty = res.get("Type").and_then(Value::as_str).unwrap_or("");
        if !ty.starts_with("AWS::ApiGatewayV2::") {
            continue; // Tables, roles, log groups, VPC links: not the gateway's concern.
        }
        if let Some(cond) = res.get("Condition").and_then(Value::as_str) {
            match ev.condition(cond, id, 0) {
                Ok(false) => continue,
                Ok(true) => {}
                Err(e) => {
                    problems.push(e);
                    continue;
                }
            }
        }
        let Some((used, inert)) = allowed(ty) else {
            problems.push(err(format!(
                "resource {id}: {ty} cannot be emulated by socketless gateway (it emulates Api, Integration, Route, RouteResponse, Stage)"
            )));
            continue;
        };
        let props = match res.get("Properties") {
            Some(p) => match ev.eval(p, &format!("{id}.Properties"), 0) {
                Ok(Value::Object(m)) => m,
                Ok(_) => {
                    problems.push(err(format!("resource {id}: Properties must be a map")));
                    continue;
                }
                Err(e) => {
                    problems.push(err(format!("resource {id}: {}", e.0)));
                    continue;
                }
            },
            None => Map::new(),
        };
        for k in props.keys() {
            if !used.contains(&k.as_str()) && !inert.contains(&k.as_str()) {
                problems.push(err(format!(
                    "resource {id}: property {k} of {ty} cannot be emulated by socketless gateway"
                )));
            }
        }
        by_type.entry(ty).or_default().push((id.clone(), props));
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    build(&by_type).map_err(|e| vec![e])
}

fn prop(props: &Map<String, Value>, key: &str) -> Option<String> {
    props.get(key).and_then(scalar)
}

fn build(by_type: &ByType) -> Result<ApiModel, TemplateError> {
    let none = Vec::new();
    let of = |t: &str| by_type.get(t).unwrap_or(&none);
    let apis = of("AWS::ApiGatewayV2::Api");
    let [(api_id, api)] = apis.as_slice() else {
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
    let check_api = |id: &str, props: &Map<String, Value>| -> Result<(), TemplateError> {
        match prop(props, "ApiId") {
            Some(a) if &a == api_id => Ok(()),
            other => Err(err(format!(
                "resource {id}: ApiId {other:?} is not the template's Api ({api_id})"
            ))),
        }
    };

    let mut integrations = HashMap::new();
    for (id, p) in of("AWS::ApiGatewayV2::Integration") {
        check_api(id, p)?;
        match prop(p, "IntegrationType").as_deref() {
            Some("HTTP_PROXY") => {}
            other => {
                return Err(err(format!(
                    "resource {id}: IntegrationType {other:?} cannot be emulated by socketless gateway (only HTTP_PROXY)"
                )));
            }
        }
        let uri_text =
            prop(p, "IntegrationUri").ok_or_else(|| err(format!("resource {id}: IntegrationUri is required")))?;
        let uri: http::Uri = uri_text
            .parse()
            .map_err(|_| err(format!("resource {id}: IntegrationUri {uri_text:?} is not a URL")))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(err(format!(
                    "resource {id}: IntegrationUri {uri_text:?} uses https; socketless gateway calls backends over plain http (terminate TLS in front of the backend or use an http Service)"
                )));
            }
            _ => {
                return Err(err(format!(
                    "resource {id}: IntegrationUri {uri_text:?} must be an http:// URL"
                )));
            }
        }
        if uri.host().is_none() {
            return Err(err(format!("resource {id}: IntegrationUri {uri_text:?} has no host")));
        }
        let method = match prop(p, "IntegrationMethod").as_deref() {
            None | Some("ANY") => http::Method::POST,
            Some(m) => m
                .parse::<http::Method>()
                .map_err(|_| err(format!("resource {id}: IntegrationMethod {m:?} is not an HTTP method")))?,
        };
        let timeout_ms = match p.get("TimeoutInMillis") {
            None => None,
            Some(v) => {
                let ms = scalar(v)
                    .and_then(|s| s.parse::<u64>().ok())
                    .filter(|ms| (50..=29_000).contains(ms))
                    .ok_or_else(|| err(format!("resource {id}: TimeoutInMillis must be 50 to 29000")))?;
                Some(ms)
            }
        };
        let mut parameters = Vec::new();
        if let Some(map) = p.get("RequestParameters") {
            let map = map
                .as_object()
                .ok_or_else(|| err(format!("resource {id}: RequestParameters must be a map")))?;
            for (k, v) in map {
                let v =
                    scalar(v).ok_or_else(|| err(format!("resource {id}: RequestParameters.{k} must be a string")))?;
                parameters.push(Mapping::parse(k, &v).map_err(|e: MappingError| err(format!("resource {id}: {e}")))?);
            }
        }
        integrations.insert(
            id.clone(),
            Integration {
                logical_id: id.clone(),
                uri,
                method,
                timeout_ms,
                parameters,
            },
        );
    }

    let mut routes = HashMap::new();
    let mut route_ids = HashMap::new();
    for (id, p) in of("AWS::ApiGatewayV2::Route") {
        check_api(id, p)?;
        let key = prop(p, "RouteKey").ok_or_else(|| err(format!("resource {id}: RouteKey is required")))?;
        if let Some(auth) = prop(p, "AuthorizationType") {
            if auth != "NONE" {
                return Err(err(format!(
                    "resource {id}: AuthorizationType {auth} cannot be emulated by socketless gateway (use NONE and the backend's shared secret)"
                )));
            }
        }
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
        if routes.contains_key(&key) {
            return Err(err(format!("resource {id}: route key {key:?} is defined twice")));
        }
        let two_way = prop(p, "RouteResponseSelectionExpression").is_some();
        route_ids.insert(id.clone(), key.clone());
        routes.insert(
            key.clone(),
            Route {
                logical_id: id.clone(),
                key,
                integration,
                two_way,
            },
        );
    }
    // A route is two-way when it has a $default route response (the selection expression alone
    // is not enough); start from false and set it from the RouteResponse resources.
    for r in routes.values_mut() {
        r.two_way = false;
    }
    for (id, p) in of("AWS::ApiGatewayV2::RouteResponse") {
        check_api(id, p)?;
        let route_id = prop(p, "RouteId").ok_or_else(|| err(format!("resource {id}: RouteId is required")))?;
        let key = route_ids.get(&route_id).ok_or_else(|| {
            err(format!(
                "resource {id}: RouteId {route_id:?} names no route in the template"
            ))
        })?;
        match prop(p, "RouteResponseKey").as_deref() {
            Some("$default") => {}
            other => {
                return Err(err(format!(
                    "resource {id}: RouteResponseKey must be $default (found {other:?})"
                )));
            }
        }
        if let Some(r) = routes.get_mut(key) {
            r.two_way = true;
        }
    }

    let stages = of("AWS::ApiGatewayV2::Stage");
    let [(stage_id, stage)] = stages.as_slice() else {
        return Err(err(format!(
            "the template must define exactly one AWS::ApiGatewayV2::Stage (found {})",
            stages.len()
        )));
    };
    check_api(stage_id, stage)?;
    let stage_name =
        prop(stage, "StageName").ok_or_else(|| err(format!("resource {stage_id}: StageName is required")))?;
    if stage_name.is_empty()
        || !stage_name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
    {
        return Err(err(format!(
            "resource {stage_id}: StageName {stage_name:?} must be letters, digits, - or _"
        )));
    }
    let mut stage_variables = BTreeMap::new();
    if let Some(vars) = stage.get("StageVariables").and_then(Value::as_object) {
        for (k, v) in vars {
            stage_variables.insert(k.clone(), scalar(v).unwrap_or_default());
        }
    }
    for (id, p) in of("AWS::ApiGatewayV2::Deployment") {
        check_api(id, p)?;
    }
    Ok(ApiModel {
        api_id: api_id.clone(),
        selection,
        routes,
        stage: stage_name,
        stage_variables,
    })
}

#[cfg(test)]
mod tests {
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
            "{MINI}\n  Auth:\n    Type: AWS::ApiGatewayV2::Authorizer\n    Properties: {{ ApiId: !Ref Api }}\n"
        );
        let e = load(&bad, &params(&[("Backend", "http://h:1")]), "l").unwrap_err();
        assert!(
            e[0].0.contains("resource Auth") && e[0].0.contains("cannot be emulated"),
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
}

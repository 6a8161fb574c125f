//! A plain CloudFormation evaluator: parameters (given, Default, AllowedValues), pseudo
//! parameters, conditions and the intrinsic functions a template for an API uses (`Ref`,
//! `Fn::Sub`, `Fn::GetAtt`, `Fn::Join`, `Fn::If`, `Fn::Equals`, `Fn::Not`, `Fn::And`, `Fn::Or`,
//! `Condition`). It knows no resource type; what a resource means is the caller's business.

use std::collections::{BTreeMap, HashMap};

use serde_json::{Map, Value};

use super::yaml::to_json;
use super::{TemplateError, err};

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

/// An intrinsic function's argument list of an allowed length, or an error saying what the
/// function `takes`.
fn list<'v>(
    arg: &'v Value,
    len: std::ops::RangeInclusive<usize>,
    at: &str,
    takes: &str,
) -> Result<&'v [Value], TemplateError> {
    arg.as_array()
        .map(Vec::as_slice)
        .filter(|a| len.contains(&a.len()))
        .ok_or_else(|| err(format!("{at}: {takes}")))
}

/// Values of `Fn::GetAtt` that depend on the resource type: `Some` for the attributes the
/// caller knows, `None` for the evaluator's generic answer.
pub type Attributes = fn(ty: &str, resource: &str, attribute: &str) -> Option<String>;

/// A parsed template with its parameter values: evaluates conditions and the properties of its
/// resources.
pub struct Template {
    params: HashMap<String, String>,
    conditions: HashMap<String, bool>,
    raw_conditions: Map<String, Value>,
    resources: Map<String, Value>,
    region: String,
    attributes: Attributes,
}

impl Template {
    /// Parses the template text and resolves its parameters: each takes its given value, else
    /// its Default, and must be one of its AllowedValues. Every problem is reported at once.
    /// `region` feeds `AWS::Region`.
    pub fn parse(
        text: &str,
        given: &BTreeMap<String, String>,
        region: &str,
        attributes: Attributes,
    ) -> Result<Template, Vec<TemplateError>> {
        let yaml: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(text).map_err(|e| vec![err(format!("template is not valid YAML: {e}"))])?;
        let doc = to_json(yaml).map_err(|e| vec![e])?;
        let section = |name: &str| doc.get(name).and_then(Value::as_object).cloned();
        let params_def = section("Parameters").unwrap_or_default();
        let raw_conditions = section("Conditions").unwrap_or_default();
        let resources = section("Resources").ok_or_else(|| vec![err("template has no Resources")])?;
        let params = parameters(&params_def, given)?;
        Ok(Template {
            params,
            conditions: HashMap::new(),
            raw_conditions,
            resources,
            region: region.to_string(),
            attributes,
        })
    }

    /// Every resource: logical id, type and definition.
    pub fn resources(&self) -> Vec<(String, String, Value)> {
        self.resources
            .iter()
            .map(|(id, res)| {
                let ty = res.get("Type").and_then(Value::as_str).unwrap_or("").to_string();
                (id.clone(), ty, res.clone())
            })
            .collect()
    }

    /// Whether a resource exists: it has no Condition, or its Condition holds.
    pub fn exists(&mut self, id: &str, res: &Value) -> Result<bool, TemplateError> {
        match res.get("Condition").and_then(Value::as_str) {
            Some(cond) => self.condition(cond, id, 0),
            None => Ok(true),
        }
    }

    /// A resource's properties with every intrinsic function evaluated and `AWS::NoValue`
    /// removed.
    pub fn properties(&mut self, id: &str, res: &Value) -> Result<Map<String, Value>, TemplateError> {
        match res.get("Properties") {
            Some(p) => match self.eval(p, &format!("{id}.Properties"), 0) {
                Ok(Value::Object(m)) => Ok(m),
                Ok(_) => Err(err(format!("resource {id}: Properties must be a map"))),
                Err(e) => Err(err(format!("resource {id}: {}", e.0))),
            },
            None => Ok(Map::new()),
        }
    }

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
        if let Some(v) = (self.attributes)(ty, resource, attr) {
            return Ok(Value::String(v));
        }
        Ok(Value::String(match attr {
            "Arn" => format!("arn:aws:local:{}:000000000000:{resource}", self.region),
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
                        let a = list(arg, 2..=2, at, "Fn::Join takes [delimiter, [values]]")?;
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
                        let a = list(arg, 3..=3, at, "Fn::If takes [condition, then, else]")?;
                        let name = a[0]
                            .as_str()
                            .ok_or_else(|| err(format!("{at}: Fn::If condition must be a name")))?;
                        let branch = if self.condition(name, at, depth)? { &a[1] } else { &a[2] };
                        self.eval(branch, at, depth + 1)
                    }
                    "Fn::Equals" => {
                        let a = list(arg, 2..=2, at, "Fn::Equals takes two values")?;
                        let x = self.eval(&a[0], at, depth + 1)?;
                        let y = self.eval(&a[1], at, depth + 1)?;
                        Ok(Value::Bool(scalar(&x) == scalar(&y)))
                    }
                    "Fn::Not" => {
                        let a = list(arg, 1..=1, at, "Fn::Not takes one condition")?;
                        let x = self.eval(&a[0], at, depth + 1)?;
                        Ok(Value::Bool(
                            !as_bool(&x).ok_or_else(|| err(format!("{at}: Fn::Not needs a condition")))?,
                        ))
                    }
                    "Fn::And" | "Fn::Or" => {
                        let a = list(arg, 2..=10, at, &format!("{k} takes 2 to 10 conditions"))?;
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

pub fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

pub fn as_bool(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Some(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Some(false),
        _ => None,
    }
}

/// Resolves the template's parameters from the given values and the Defaults.
fn parameters(
    defined: &Map<String, Value>,
    given: &BTreeMap<String, String>,
) -> Result<HashMap<String, String>, Vec<TemplateError>> {
    let mut problems = Vec::new();
    for name in given.keys() {
        if !defined.contains_key(name) {
            problems.push(err(format!("--param {name}: the template has no such parameter")));
        }
    }
    let mut params = HashMap::new();
    for (name, def) in defined {
        let value = given.get(name).cloned().or_else(|| def.get("Default").and_then(scalar));
        let Some(value) = value else {
            problems.push(err(format!(
                "parameter {name} has no Default: pass --param {name}=VALUE"
            )));
            continue;
        };
        if let Some(allowed) = def.get("AllowedValues").and_then(Value::as_array) {
            if !allowed.iter().filter_map(scalar).any(|a| a == value) {
                // A NoEcho parameter's value is a secret: never written out.
                let shown = if def.get("NoEcho").and_then(as_bool) == Some(true) {
                    "its value".to_string()
                } else {
                    format!("{value:?}")
                };
                problems.push(err(format!(
                    "parameter {name}: {shown} is not one of its AllowedValues"
                )));
            }
        }
        params.insert(name.clone(), value);
    }
    if problems.is_empty() { Ok(params) } else { Err(problems) }
}

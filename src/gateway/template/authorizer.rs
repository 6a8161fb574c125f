//! The template's `$connect` authorizers: an `AWS::ApiGatewayV2::Authorizer` of type REQUEST
//! and where each of its identity sources is read from.

use serde_json::{Map, Value};

use super::apigw::prop;
use super::eval::scalar;
use super::{TemplateError, err};

/// Where an authorizer's identity source is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentitySource {
    /// `route.request.header.X` (held lowercased).
    Header(String),
    /// `route.request.querystring.X`.
    Query(String),
    /// `stageVariables.X`.
    StageVariable(String),
    /// `context.X`: a row of [`crate::contract::CONTEXT`].
    Context(String),
}

impl IdentitySource {
    /// Reads `route.request.header.X`, `route.request.querystring.X`, `stageVariables.X` or
    /// `context.X` (a variable of the contract table).
    pub fn parse(text: &str) -> Option<IdentitySource> {
        let t = text.trim();
        let named = |n: &str| (!n.is_empty()).then(|| n.to_string());
        if let Some(h) = t.strip_prefix("route.request.header.") {
            named(&h.to_ascii_lowercase()).map(IdentitySource::Header)
        } else if let Some(q) = t.strip_prefix("route.request.querystring.") {
            named(q).map(IdentitySource::Query)
        } else if let Some(s) = t.strip_prefix("stageVariables.") {
            named(s).map(IdentitySource::StageVariable)
        } else if let Some(c) = t.strip_prefix("context.") {
            crate::contract::context_variable(c).map(|row| IdentitySource::Context(row.variable.to_string()))
        } else {
            None
        }
    }
}

/// An `AWS::ApiGatewayV2::Authorizer` of type REQUEST: its logical id and identity sources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorizer {
    pub logical_id: String,
    pub identity_sources: Vec<IdentitySource>,
}

/// A REQUEST authorizer and its identity sources (a list, or one comma-separated string).
pub(super) fn authorizer(id: &str, p: &Map<String, Value>) -> Result<Authorizer, TemplateError> {
    match prop(p, "AuthorizerType").as_deref() {
        Some("REQUEST") => {}
        other => {
            return Err(err(format!(
                "resource {id}: AuthorizerType {other:?} cannot be emulated by socketless gateway (only REQUEST, a Lambda authorizer on $connect)"
            )));
        }
    }
    let texts: Vec<String> = match p.get("IdentitySource") {
        None => Vec::new(),
        Some(Value::Array(items)) => items.iter().filter_map(scalar).collect(),
        Some(v) => scalar(v)
            .map(|s| s.split(',').map(|t| t.trim().to_string()).collect())
            .unwrap_or_default(),
    };
    let mut identity_sources = Vec::new();
    for t in texts.iter().filter(|t| !t.is_empty()) {
        identity_sources.push(IdentitySource::parse(t).ok_or_else(|| {
            err(format!(
                "resource {id}: IdentitySource {t:?} is not route.request.header.X, route.request.querystring.X, stageVariables.X or a context variable socketless gateway supplies"
            ))
        })?);
    }
    Ok(Authorizer {
        logical_id: id.to_string(),
        identity_sources,
    })
}

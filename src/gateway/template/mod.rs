//! Loads the gateway's configuration from the CloudFormation template that deploys the real API:
//! `yaml` reads the short-form tags, `eval` is a plain CloudFormation evaluator (parameters,
//! conditions, intrinsic functions), and `apigw` turns the evaluated ApiGatewayV2 resources
//! into the [`ApiModel`], refusing what the gateway cannot emulate (`authorizer` and
//! `integration` read those resources).

mod apigw;
mod authorizer;
mod eval;
mod integration;
#[cfg(test)]
mod tests;
mod yaml;

use std::collections::BTreeMap;

pub use apigw::{ApiModel, Route};
pub use authorizer::{Authorizer, IdentitySource};
pub use integration::{ContentHandling, Integration};

/// A template problem, naming where it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TemplateError(pub String);

/// What a stage name may hold, as a problem names it.
pub const STAGE_NAME_RULE: &str = "must be letters, digits, - or _";

/// Whether `name` can be a stage name: not empty, and only [`STAGE_NAME_RULE`]'s characters.
/// The template's `StageName` and `socketless dev --stage` are both checked with this.
pub fn is_stage_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
}

fn err(msg: impl Into<String>) -> TemplateError {
    TemplateError(msg.into())
}

/// The names of the template's parameters, in its order; none when the text is not a template
/// (`load` reports why).
pub fn parameter_names(text: &str) -> Vec<String> {
    let Ok(doc) = serde_yaml_ng::from_str::<serde_yaml_ng::Value>(text) else {
        return Vec::new();
    };
    doc.get("Parameters")
        .and_then(serde_yaml_ng::Value::as_mapping)
        .map(|m| m.keys().filter_map(|k| k.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

/// Reads the template text with the given parameter values. `region` feeds `AWS::Region`.
pub fn load(text: &str, given: &BTreeMap<String, String>, region: &str) -> Result<ApiModel, Vec<TemplateError>> {
    let mut template = eval::Template::parse(text, given, region, apigw::attributes)?;
    let resources = apigw::resources(&mut template)?;
    apigw::build(&resources).map_err(|e| vec![e])
}

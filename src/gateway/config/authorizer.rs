//! The `$connect` authorizers' settings: `--authorizer` and `--authorizer-timeout`, checked
//! against the template's authorizers.

use std::collections::BTreeMap;
use std::time::Duration;

use super::GatewayArgs;
use crate::config::{Labels, Problems};
use crate::gateway::template::ApiModel;

/// `--authorizer-timeout`'s default.
pub const AUTHORIZER_TIMEOUT: &str = "10s";

/// Where the template's `$connect` authorizers are called, and how long they may take.
#[derive(Debug, Clone, Default)]
pub struct AuthorizerSettings {
    /// Each authorizer's endpoint, by logical id.
    pub endpoints: BTreeMap<String, http::Uri>,
    pub timeout: Duration,
    /// The region in the method ARN (`--region`).
    pub region: String,
}

impl GatewayArgs {
    /// Reads `--authorizer` and `--authorizer-timeout`, and checks that the template's
    /// authorizers and the flags name the same logical ids (when the template loaded).
    pub(super) fn authorizer_settings(
        &self,
        l: &Labels,
        p: &mut Problems,
        model: Option<&ApiModel>,
    ) -> AuthorizerSettings {
        let label = l.get("authorizers");
        let mut endpoints = BTreeMap::new();
        for item in self.authorizers.iter().filter(|i| !i.trim().is_empty()) {
            let Some((id, url)) = item.split_once('=').filter(|(id, _)| !id.trim().is_empty()) else {
                p.push(format!("{label}: {item:?} is not LOGICAL_ID=URL"));
                continue;
            };
            let id = id.trim().to_string();
            if let Some(uri) = p.url(label, url.trim()) {
                if uri.scheme_str() != Some("http") {
                    p.push(format!(
                        "{label}: {url:?} must be an http:// URL (terminate TLS in front of the authorizer)"
                    ));
                } else if endpoints.insert(id.clone(), uri).is_some() {
                    p.push(format!("{label}: {id} is given more than once"));
                }
            }
        }
        if let Some(model) = model {
            for id in model.authorizers.keys().filter(|id| !endpoints.contains_key(*id)) {
                p.push(format!(
                    "template: authorizer {id} needs an endpoint: {label} {id}=http://HOST:PORT/2015-03-31/functions/function/invocations"
                ));
            }
            for id in endpoints.keys().filter(|id| !model.authorizers.contains_key(*id)) {
                let known: Vec<&str> = model.authorizers.keys().map(String::as_str).collect();
                p.push(format!(
                    "{label}: the template has no authorizer {id} (its authorizers: {known:?})"
                ));
            }
        }
        let timeout = p.duration(l.get("authorizer_timeout"), &self.authorizer_timeout);
        if timeout.is_some_and(|t| t.is_zero()) {
            p.push(format!("{}: must be more than zero", l.get("authorizer_timeout")));
        }
        AuthorizerSettings {
            endpoints,
            timeout: timeout.unwrap_or_default(),
            region: self.region.clone(),
        }
    }
}

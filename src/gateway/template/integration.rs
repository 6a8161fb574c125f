//! The template's integrations: an HTTP_PROXY integration to a plain-http backend, its URI,
//! its RequestParameters and its ContentHandlingStrategy, and the `$default` integration
//! response's ContentHandlingStrategy.

use serde_json::{Map, Value};

use super::apigw::prop;
use super::eval::scalar;
use super::{TemplateError, err};
use crate::contract::INTEGRATION_TIMEOUT_MS;
use crate::gateway::mapping::{Mapping, MappingError};

/// One HTTP_PROXY integration.
#[derive(Debug, Clone, PartialEq)]
pub struct Integration {
    pub logical_id: String,
    pub uri: http::Uri,
    pub method: http::Method,
    pub timeout_ms: Option<u64>,
    pub parameters: Vec<Mapping>,
    /// The integration's ContentHandlingStrategy: how a message's payload is converted for the
    /// backend.
    pub request_content: Option<ContentHandling>,
    /// The `$default` integration response's ContentHandlingStrategy: how the backend's answer
    /// is converted for the client.
    pub response_content: Option<ContentHandling>,
}

/// API Gateway's ContentHandlingStrategy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentHandling {
    /// A text payload is base64-decoded into binary; a binary one passes through.
    ConvertToBinary,
    /// A binary payload is base64-encoded into text; a text one passes through.
    ConvertToText,
}

/// A ContentHandlingStrategy property, if the resource has one.
pub(super) fn content_handling(id: &str, p: &Map<String, Value>) -> Result<Option<ContentHandling>, TemplateError> {
    match prop(p, "ContentHandlingStrategy").as_deref() {
        None => Ok(None),
        Some("CONVERT_TO_BINARY") => Ok(Some(ContentHandling::ConvertToBinary)),
        Some("CONVERT_TO_TEXT") => Ok(Some(ContentHandling::ConvertToText)),
        Some(other) => Err(err(format!(
            "resource {id}: ContentHandlingStrategy {other:?} must be CONVERT_TO_BINARY or CONVERT_TO_TEXT"
        ))),
    }
}

/// An HTTP_PROXY integration to a plain-http backend.
pub(super) fn integration(id: &str, p: &Map<String, Value>) -> Result<Integration, TemplateError> {
    match prop(p, "IntegrationType").as_deref() {
        Some("HTTP_PROXY") => {}
        other => {
            return Err(err(format!(
                "resource {id}: IntegrationType {other:?} cannot be emulated by socketless gateway (only HTTP_PROXY)"
            )));
        }
    }
    let uri = integration_uri(id, p)?;
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
                .filter(|ms| (50..=INTEGRATION_TIMEOUT_MS).contains(ms))
                .ok_or_else(|| {
                    err(format!(
                        "resource {id}: TimeoutInMillis must be 50 to {}",
                        INTEGRATION_TIMEOUT_MS
                    ))
                })?;
            Some(ms)
        }
    };
    Ok(Integration {
        logical_id: id.to_string(),
        uri,
        method,
        timeout_ms,
        parameters: request_parameters(id, p)?,
        request_content: content_handling(id, p)?,
        response_content: None,
    })
}

/// The integration's URI: http:// with a host.
fn integration_uri(id: &str, p: &Map<String, Value>) -> Result<http::Uri, TemplateError> {
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
    Ok(uri)
}

/// The integration's RequestParameters, each one a mapping.
fn request_parameters(id: &str, p: &Map<String, Value>) -> Result<Vec<Mapping>, TemplateError> {
    let mut parameters = Vec::new();
    if let Some(map) = p.get("RequestParameters") {
        let map = map
            .as_object()
            .ok_or_else(|| err(format!("resource {id}: RequestParameters must be a map")))?;
        for (k, v) in map {
            let v = scalar(v).ok_or_else(|| err(format!("resource {id}: RequestParameters.{k} must be a string")))?;
            parameters.push(Mapping::parse(k, &v).map_err(|e: MappingError| err(format!("resource {id}: {e}")))?);
        }
    }
    Ok(parameters)
}

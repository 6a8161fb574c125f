//! Integration request parameters: `integration.request.{header,querystring,path}.NAME` mapped
//! from `context.*`, `route.request.header|querystring.*` (on `$connect`),
//! `route.request.body.*`, `stageVariables.*`, `context.authorizer.<key>` (what a `$connect`
//! authorizer returned, on every route of the connection) or a `'literal'`. Only mapped values reach the
//! backend; a source that has no value in this event is left out. The `context.*` variables
//! accepted are the rows of [`crate::contract::CONTEXT`].

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

use super::selection::{Segment, lookup, parse_path, stringify};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct MappingError(pub String);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Header(String),
    Query(String),
    Path(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Context(String),
    RequestHeader(String),
    RequestQuery(String),
    Body(Vec<Segment>),
    StageVariable(String),
    /// `context.authorizer.<key>`: a key of the authorizer's `context` map.
    AuthorizerContext(String),
    Literal(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    pub target: Target,
    pub source: Source,
    /// A header target's name, parsed once when the template loads.
    pub header: Option<http::HeaderName>,
    /// For a context source, its row in [`crate::contract::CONTEXT`], found once as well.
    pub context_row: Option<usize>,
}

/// One event's context variables, by their row in [`crate::contract::CONTEXT`]; only the rows
/// a mapping reads are filled.
pub type ContextValues = [Option<String>; crate::contract::CONTEXT.len()];

fn valid_name(n: &str) -> bool {
    !n.is_empty() && n.bytes().all(|b| b.is_ascii_alphanumeric() || b"._$-".contains(&b))
}

impl Mapping {
    pub fn parse(key: &str, value: &str) -> Result<Mapping, MappingError> {
        let bad = |m: String| MappingError(m);
        let target = if let Some(n) = key.strip_prefix("integration.request.header.") {
            Target::Header(n.to_ascii_lowercase())
        } else if let Some(n) = key.strip_prefix("integration.request.querystring.") {
            Target::Query(n.to_string())
        } else if let Some(n) = key.strip_prefix("integration.request.path.") {
            Target::Path(n.to_string())
        } else {
            return Err(bad(format!(
                "RequestParameters key {key:?} is not integration.request.header|querystring|path.NAME"
            )));
        };
        let name = match &target {
            Target::Header(n) | Target::Query(n) | Target::Path(n) => n,
        };
        if !valid_name(name) {
            return Err(bad(format!("RequestParameters key {key:?} has an invalid name")));
        }
        let v = value.trim();
        let source = if v.len() >= 2 && v.starts_with('\'') && v.ends_with('\'') {
            Source::Literal(v[1..v.len() - 1].to_string())
        } else if let Some(c) = v.strip_prefix("context.") {
            if let Some(k) = crate::contract::authorizer_context_key(c) {
                Source::AuthorizerContext(k.to_string())
            } else if crate::contract::context_variable(c).is_none() {
                return Err(bad(format!(
                    "{key}: {v} is not a context variable socketless gateway supplies"
                )));
            } else {
                Source::Context(c.to_string())
            }
        } else if let Some(h) = v.strip_prefix("route.request.header.") {
            Source::RequestHeader(h.to_ascii_lowercase())
        } else if let Some(q) = v.strip_prefix("route.request.querystring.") {
            Source::RequestQuery(q.to_string())
        } else if let Some(p) = v.strip_prefix("route.request.body.") {
            Source::Body(parse_path(p).map_err(|e| bad(format!("{key}: {v}: {e}")))?)
        } else if let Some(s) = v.strip_prefix("stageVariables.") {
            Source::StageVariable(s.to_string())
        } else {
            return Err(bad(format!(
                "{key}: {v:?} is not a supported mapping source (context.*, route.request.header|querystring|body.*, stageVariables.*, 'literal')"
            )));
        };
        let header = match &target {
            Target::Header(n) => Some(
                http::HeaderName::from_bytes(n.as_bytes())
                    .map_err(|_| bad(format!("RequestParameters key {key:?} is not a valid header name")))?,
            ),
            _ => None,
        };
        let context_row = match &source {
            Source::Context(c) => crate::contract::CONTEXT.iter().position(|row| row.variable == c),
            _ => None,
        };
        Ok(Mapping {
            target,
            source,
            header,
            context_row,
        })
    }

    pub fn target_name(&self) -> &str {
        match &self.target {
            Target::Header(n) | Target::Query(n) | Target::Path(n) => n,
        }
    }
}

/// Handshake headers (lowercased names) and query string values.
pub type Handshake<'a> = (&'a HashMap<String, String>, &'a HashMap<String, String>);

/// Everything a mapping can read for one event.
pub struct Inputs<'a> {
    pub context: &'a ContextValues,
    /// Handshake headers and query (lowercased header names); present on `$connect` only.
    pub handshake: Option<Handshake<'a>>,
    pub body: Option<&'a Value>,
    pub stage_variables: &'a BTreeMap<String, String>,
    /// What the connection's `$connect` authorizer returned, when one allowed it.
    pub authorizer: Option<&'a super::authorizer::Authorized>,
}

/// The mapped values, by target.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Mapped {
    pub headers: Vec<(http::HeaderName, String)>,
    pub query: Vec<(String, String)>,
    pub path: Vec<(String, String)>,
}

pub fn apply(mappings: &[Mapping], inputs: &Inputs<'_>) -> Mapped {
    let mut out = Mapped {
        headers: Vec::with_capacity(mappings.len()),
        ..Mapped::default()
    };
    for m in mappings {
        let value = match &m.source {
            Source::Literal(s) => Some(s.clone()),
            Source::Context(_) => m.context_row.and_then(|i| inputs.context[i].clone()),
            Source::RequestHeader(h) => inputs.handshake.and_then(|(hs, _)| hs.get(h).cloned()),
            Source::RequestQuery(q) => inputs.handshake.and_then(|(_, qs)| qs.get(q).cloned()),
            Source::Body(p) => inputs.body.and_then(|b| lookup(b, p)).map(stringify),
            Source::StageVariable(s) => inputs.stage_variables.get(s).cloned(),
            Source::AuthorizerContext(k) => inputs.authorizer.and_then(|a| a.context.get(k).cloned()),
        };
        let Some(value) = value else { continue };
        match &m.target {
            Target::Header(_) => {
                if let Some(name) = &m.header {
                    out.headers.push((name.clone(), value));
                }
            }
            Target::Query(n) => out.query.push((n.clone(), value)),
            Target::Path(n) => out.path.push((n.clone(), value)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_every_source() {
        let m = Mapping::parse("integration.request.header.X-Id", "context.connectionId").unwrap();
        assert_eq!(m.target, Target::Header("x-id".into()));
        assert_eq!(m.source, Source::Context("connectionId".into()));
        assert_eq!(
            Mapping::parse("integration.request.header.a", "'lit'").unwrap().source,
            Source::Literal("lit".into())
        );
        assert!(matches!(
            Mapping::parse("integration.request.querystring.t", "route.request.querystring.token")
                .unwrap()
                .source,
            Source::RequestQuery(_)
        ));
        assert!(matches!(
            Mapping::parse("integration.request.header.t", "route.request.body.a.b")
                .unwrap()
                .source,
            Source::Body(_)
        ));
        assert!(matches!(
            Mapping::parse("integration.request.header.t", "stageVariables.x")
                .unwrap()
                .source,
            Source::StageVariable(_)
        ));
        assert!(Mapping::parse("integration.request.header.t", "context.bogus").is_err());
        assert_eq!(
            Mapping::parse("integration.request.header.p", "context.authorizer.principalId")
                .unwrap()
                .source,
            Source::Context("authorizer.principalId".into())
        );
        assert_eq!(
            Mapping::parse("integration.request.header.t", "context.authorizer.tenant")
                .unwrap()
                .source,
            Source::AuthorizerContext("tenant".into())
        );
        assert!(Mapping::parse("integration.request.header.t", "context.authorizer.").is_err());
        assert!(Mapping::parse("integration.response.header.t", "'x'").is_err());
        assert!(Mapping::parse("integration.request.header.bad name", "'x'").is_err());
        assert!(Mapping::parse("integration.request.header.t", "method.request.header.x").is_err());
    }

    #[test]
    fn absent_sources_are_left_out() {
        let maps = vec![
            Mapping::parse("integration.request.header.id", "context.connectionId").unwrap(),
            Mapping::parse("integration.request.header.msg", "context.messageId").unwrap(),
            Mapping::parse("integration.request.header.tok", "route.request.header.x-token").unwrap(),
            Mapping::parse("integration.request.header.b", "route.request.body.a").unwrap(),
            Mapping::parse("integration.request.querystring.c", "stageVariables.color").unwrap(),
        ];
        let mut ctx = ContextValues::default();
        ctx[maps[0].context_row.expect("a context row")] = Some("abc=".to_string());
        let sv: BTreeMap<String, String> = [("color".to_string(), "blue".to_string())].into();
        let body = serde_json::json!({"a": 1});
        let out = apply(
            &maps,
            &Inputs {
                context: &ctx,
                handshake: None,
                body: Some(&body),
                stage_variables: &sv,
                authorizer: None,
            },
        );
        assert_eq!(
            out.headers,
            vec![
                (http::HeaderName::from_static("id"), "abc=".into()),
                (http::HeaderName::from_static("b"), "1".into())
            ]
        );
        assert_eq!(out.query, vec![("c".into(), "blue".into())]);
    }

    proptest! {
        #[test]
        fn parse_never_panics(k in "\\PC{0,48}", v in "\\PC{0,48}") {
            let _ = Mapping::parse(&k, &v);
        }
    }
}

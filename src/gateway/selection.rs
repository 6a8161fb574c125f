//! Route selection expressions (`$request.body.action`, `${request.body.a}/${request.body.b}`,
//! literals, `\$` escapes) and the small JSONPath subset they use (`a.b[0].c`).

use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    /// A path into the message body, as segments.
    Body(Vec<Segment>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Key(String),
    Index(usize),
}

/// A parsed selection expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expression {
    parts: Vec<Part>,
}

/// Parses a JSONPath such as `a.b[0].c` (a leading `$.` is allowed).
pub fn parse_path(path: &str) -> Result<Vec<Segment>, String> {
    let path = path.strip_prefix("$.").unwrap_or(path);
    if path.is_empty() {
        return Err("empty path".into());
    }
    let mut out = Vec::new();
    for piece in path.split('.') {
        let (name, mut rest) = match piece.find('[') {
            Some(i) => (&piece[..i], &piece[i..]),
            None => (piece, ""),
        };
        if name.is_empty() && out.is_empty() && rest.is_empty() {
            return Err(format!("empty segment in {path:?}"));
        }
        if !name.is_empty() {
            out.push(Segment::Key(name.to_string()));
        } else if rest.is_empty() {
            return Err(format!("empty segment in {path:?}"));
        }
        while !rest.is_empty() {
            let close = rest.find(']').ok_or_else(|| format!("unclosed [ in {path:?}"))?;
            let idx = rest[1..close]
                .parse::<usize>()
                .map_err(|_| format!("bad index in {path:?}"))?;
            out.push(Segment::Index(idx));
            rest = &rest[close + 1..];
            if !rest.is_empty() && !rest.starts_with('[') {
                return Err(format!("unexpected {rest:?} in {path:?}"));
            }
        }
    }
    Ok(out)
}

/// Follows a path; `None` when it does not exist.
pub fn lookup<'a>(value: &'a Value, path: &[Segment]) -> Option<&'a Value> {
    let mut cur = value;
    for seg in path {
        cur = match seg {
            Segment::Key(k) => cur.as_object()?.get(k)?,
            Segment::Index(i) => cur.as_array()?.get(*i)?,
        };
    }
    Some(cur)
}

/// Stringifies a selected value the way API Gateway does: strings as themselves, other scalars
/// in their JSON form, `null` as empty, arrays and objects as compact JSON.
pub fn stringify(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn is_path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '[' | ']' | '$')
}

impl Expression {
    pub fn parse(text: &str) -> Result<Expression, String> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut chars = text.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' if text[i + 1..].starts_with('$') => {
                    literal.push('$');
                    chars.next();
                }
                '$' => {
                    let rest = &text[i + 1..];
                    let (var, consumed) = if let Some(inner) = rest.strip_prefix('{') {
                        let end = inner.find('}').ok_or_else(|| format!("unclosed ${{ in {text:?}"))?;
                        (&inner[..end], end + 2)
                    } else {
                        let end = rest.find(|c: char| !is_path_char(c)).unwrap_or(rest.len());
                        (&rest[..end], end)
                    };
                    let path = var.strip_prefix("request.body").ok_or_else(|| {
                        format!("unsupported variable ${var} in {text:?} (only $request.body.* is supported)")
                    })?;
                    let path = path.strip_prefix('.').unwrap_or(path);
                    let segments = if path.is_empty() { Vec::new() } else { parse_path(path)? };
                    if !literal.is_empty() {
                        parts.push(Part::Literal(std::mem::take(&mut literal)));
                    }
                    parts.push(Part::Body(segments));
                    for _ in 0..consumed {
                        chars.next();
                    }
                }
                c => literal.push(c),
            }
        }
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        Ok(Expression { parts })
    }

    /// Whether the expression reads the body at all (a pure literal does not).
    pub fn uses_body(&self) -> bool {
        self.parts.iter().any(|p| matches!(p, Part::Body(_)))
    }

    /// Evaluates against a parsed message body. Missing paths give "".
    pub fn evaluate(&self, body: &Value) -> String {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Literal(s) => out.push_str(s),
                Part::Body(path) => {
                    if let Some(v) = lookup(body, path) {
                        out.push_str(&stringify(v));
                    }
                }
            }
        }
        out
    }
}

/// Chooses the route key for a message: non-JSON goes to `$default`; otherwise the evaluated key
/// if a custom route has it, else `$default` if defined, else `None` (the Forbidden frame).
pub fn select(expr: &Expression, message: &str, has_route: impl Fn(&str) -> bool, default: &str) -> Option<String> {
    select_parsed(
        expr,
        serde_json::from_str::<Value>(message).ok().as_ref(),
        has_route,
        default,
    )
}

/// [`select`] for a message already parsed (`None` when it is not JSON), so the message path
/// parses each message once for selection and mapping both.
pub fn select_parsed(
    expr: &Expression,
    body: Option<&Value>,
    has_route: impl Fn(&str) -> bool,
    default: &str,
) -> Option<String> {
    let fallback = || has_route(default).then(|| default.to_string());
    let Some(body) = body else {
        return fallback();
    };
    let key = expr.evaluate(body);
    if !key.starts_with('$') && has_route(&key) {
        return Some(key);
    }
    fallback()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn documented_examples() {
        let body = json!({"service": "chat", "action": "join"});
        let e = |s: &str| Expression::parse(s).unwrap().evaluate(&body);
        assert_eq!(e("$request.body.action"), "join");
        assert_eq!(e("${request.body.action}"), "join");
        assert_eq!(e("${request.body.service}/${request.body.action}"), "chat/join");
        assert_eq!(e("${request.body.action}-${request.body.invalidPath}"), "join-");
        assert_eq!(e("action"), "action");
        assert_eq!(e("\\$default"), "$default");
    }

    #[test]
    fn paths_and_stringification() {
        let body = json!({"a": {"b": [10, {"c": true}]}, "n": null, "arr": [1, 2]});
        let e = |s: &str| Expression::parse(s).unwrap().evaluate(&body);
        assert_eq!(e("$request.body.a.b[0]"), "10");
        assert_eq!(e("$request.body.a.b[1].c"), "true");
        assert_eq!(e("$request.body.n"), "");
        assert_eq!(e("$request.body.arr"), "[1,2]");
        assert_eq!(e("$request.body.a.b[9]"), "");
        assert!(Expression::parse("$context.routeKey").is_err());
        assert!(Expression::parse("${request.body.a").is_err());
        assert!(Expression::parse("$request.body.a[x]").is_err());
    }

    #[test]
    fn selection_rules() {
        let expr = Expression::parse("$request.body.action").unwrap();
        let routes = ["$default", "sendmessage"];
        let has = |k: &str| routes.contains(&k);
        assert_eq!(
            select(&expr, r#"{"action":"sendmessage"}"#, has, "$default").as_deref(),
            Some("sendmessage")
        );
        assert_eq!(
            select(&expr, r#"{"action":"other"}"#, has, "$default").as_deref(),
            Some("$default")
        );
        assert_eq!(select(&expr, "not json", has, "$default").as_deref(), Some("$default"));
        // A message cannot select a reserved route.
        let with_connect = |k: &str| k == "$connect";
        assert_eq!(
            select(&expr, r#"{"action":"$connect"}"#, with_connect, "$default"),
            None
        );
        let none = |k: &str| k == "sendmessage";
        assert_eq!(select(&expr, "not json", none, "$default"), None);
        assert_eq!(select(&expr, r#"{"action":"x"}"#, none, "$default"), None);
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in "\\PC{0,64}") {
            let _ = Expression::parse(&s);
        }

        #[test]
        fn evaluate_never_panics(path in "[a-z\\[\\]0-9.]{1,20}", body in "\\PC{0,64}") {
            if let Ok(e) = Expression::parse(&format!("$request.body.{path}")) {
                if let Ok(v) = serde_json::from_str::<Value>(&body) {
                    let _ = e.evaluate(&v);
                }
            }
        }

        #[test]
        fn string_values_round_trip(key in "[a-zA-Z0-9_]{1,16}", value in "[^$]{0,32}") {
            let body = json!({ key.clone(): value.clone() });
            let e = Expression::parse(&format!("$request.body.{key}")).unwrap();
            prop_assert_eq!(e.evaluate(&body), value);
        }

        #[test]
        fn selection_is_total(msg in "\\PC{0,64}", has_default in any::<bool>()) {
            let expr = Expression::parse("$request.body.action").unwrap();
            let has = |k: &str| has_default && k == "$default";
            let chosen = select(&expr, &msg, has, "$default");
            prop_assert_eq!(chosen.is_some(), has_default);
        }
    }
}

//! Who is connecting: the principal id a `$connect` authorizer vouched for, and the attributes
//! the handler or the app attached to the session at `/connect` (`x-socketless-attribute-NAME`
//! headers on its answer). Both are stored on the session at connect and given back on every
//! later `/message` and `/disconnect` from the session (the cache, or the store once per pod),
//! never from a later request's own headers. This file holds the [`Attributes`] type, its limits
//! and their check, and the [`Identity`] a session keeps.

use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

use crate::contract::RequestContext;
use crate::handler::Rejection;

/// What an attribute header's name begins with; the attribute's name follows.
pub const ATTRIBUTE_PREFIX: &str = "x-socketless-attribute-";
/// Attributes on one session, at most.
pub const MAX_ATTRIBUTES: usize = 16;
/// Bytes of one attribute name, at most (`[a-z0-9-]`).
pub const MAX_ATTRIBUTE_NAME: usize = 32;
/// Bytes of one attribute value, at most.
pub const MAX_ATTRIBUTE_VALUE: usize = 256;
/// Bytes of every name and value of a session together, at most.
pub const MAX_ATTRIBUTES_TOTAL: usize = 2048;

/// Attributes of one session: names `[a-z0-9-]{1,32}`, values of visible ASCII (spaces inside
/// allowed), at most [`MAX_ATTRIBUTES`] of them. Kept sorted by name; cheap to clone (shared).
///
/// A handler sets them at connect (see
/// [`crate::handler::MessageHandler::on_connect_with_attributes`]) and reads them on every
/// later call in [`crate::handler::RequestContext::attributes`]. [`Attributes::check`] is what
/// `serve` enforces at connect; a violation refuses the connect.
///
/// Most sessions have none, and every call's context starts with an empty set before the
/// session's is put in its place: an empty set holds no allocation.
#[derive(Debug, Clone, Default)]
pub struct Attributes(Option<Arc<Vec<(String, String)>>>);

impl PartialEq for Attributes {
    fn eq(&self, other: &Self) -> bool {
        self.list() == other.list()
    }
}

impl Eq for Attributes {}

/// Which limit a set of attributes broke; the text names the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttributeError {
    #[error("more than {MAX_ATTRIBUTES} attributes")]
    TooMany,
    #[error("attribute name {0:?} is not [a-z0-9-]{{1,{MAX_ATTRIBUTE_NAME}}}")]
    Name(String),
    #[error("attribute {0:?} is given more than once")]
    Repeated(String),
    #[error("attribute {0:?}: value longer than {MAX_ATTRIBUTE_VALUE} bytes")]
    ValueTooLong(String),
    #[error("attribute {0:?}: value is not visible ASCII (spaces only inside)")]
    ValueNotAscii(String),
    #[error("attributes together longer than {MAX_ATTRIBUTES_TOTAL} bytes (names and values)")]
    TooLarge,
}

fn valid_name(name: &str) -> bool {
    (1..=MAX_ATTRIBUTE_NAME).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn valid_value(value: &str) -> bool {
    let b = value.as_bytes();
    b.iter().all(|c| c.is_ascii_graphic() || *c == b' ')
        && b.first().is_none_or(|c| *c != b' ')
        && b.last().is_none_or(|c| *c != b' ')
}

impl Attributes {
    pub fn new() -> Self {
        Self::default()
    }

    fn list(&self) -> &[(String, String)] {
        self.0.as_deref().map_or(&[], Vec::as_slice)
    }

    /// Sets `name` to `value`, replacing an earlier value; [`Attributes::check`] says whether
    /// the result is within the limits.
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<String>) {
        let (name, value) = (name.into(), value.into());
        let list = Arc::make_mut(self.0.get_or_insert_with(Default::default));
        match list.binary_search_by(|(n, _)| n.as_str().cmp(&name)) {
            Ok(i) => list[i].1 = value,
            Err(i) => list.insert(i, (name, value)),
        }
    }

    /// The value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        let list = self.list();
        list.binary_search_by(|(n, _)| n.as_str().cmp(name))
            .ok()
            .map(|i| list[i].1.as_str())
    }

    /// Every attribute, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.list().iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    pub fn len(&self) -> usize {
        self.list().len()
    }

    pub fn is_empty(&self) -> bool {
        self.list().is_empty()
    }

    /// Whether the attributes are within the limits: at most [`MAX_ATTRIBUTES`], names
    /// `[a-z0-9-]{1,32}`, values of at most [`MAX_ATTRIBUTE_VALUE`] bytes of visible ASCII,
    /// [`MAX_ATTRIBUTES_TOTAL`] bytes in all.
    pub fn check(&self) -> Result<(), AttributeError> {
        if self.len() > MAX_ATTRIBUTES {
            return Err(AttributeError::TooMany);
        }
        let mut total = 0;
        for (name, value) in self.iter() {
            if !valid_name(name) {
                return Err(AttributeError::Name(name.to_owned()));
            }
            if value.len() > MAX_ATTRIBUTE_VALUE {
                return Err(AttributeError::ValueTooLong(name.to_owned()));
            }
            if !valid_value(value) {
                return Err(AttributeError::ValueNotAscii(name.to_owned()));
            }
            total += name.len() + value.len();
        }
        if total > MAX_ATTRIBUTES_TOTAL {
            return Err(AttributeError::TooLarge);
        }
        Ok(())
    }

    /// The attributes an answer's `x-socketless-attribute-NAME` headers set, checked. Header
    /// names arrive lowercased, so an upper-case name reads as its lower-case form.
    pub fn from_headers(headers: &HeaderMap) -> Result<Attributes, AttributeError> {
        let mut out = Attributes::new();
        for name in headers.keys() {
            let Some(attribute) = name.as_str().strip_prefix(ATTRIBUTE_PREFIX) else {
                continue;
            };
            if !valid_name(attribute) {
                return Err(AttributeError::Name(attribute.to_owned()));
            }
            let mut values = headers.get_all(name).iter();
            let (Some(value), None) = (values.next(), values.next()) else {
                return Err(AttributeError::Repeated(attribute.to_owned()));
            };
            if out.len() == MAX_ATTRIBUTES {
                return Err(AttributeError::TooMany);
            }
            let value = value
                .to_str()
                .map_err(|_| AttributeError::ValueNotAscii(attribute.to_owned()))?;
            out.insert(attribute, value);
        }
        out.check()?;
        Ok(out)
    }

    /// The attributes as the headers an app receives on `/message` and `/disconnect`; an
    /// attribute that is no valid header (never the case once checked) is left out.
    pub fn headers(&self) -> impl Iterator<Item = (HeaderName, HeaderValue)> + '_ {
        self.iter().filter_map(|(name, value)| {
            let name = HeaderName::from_bytes(format!("{ATTRIBUTE_PREFIX}{name}").as_bytes()).ok()?;
            Some((name, HeaderValue::from_str(value).ok()?))
        })
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Attributes {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut out = Attributes::new();
        for (k, v) in iter {
            out.insert(k, v);
        }
        out
    }
}

impl serde::Serialize for Attributes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}

/// The refusal of a connect whose attributes break a limit: a 500 naming the rule, logged (the
/// session is not created).
pub(crate) fn refused(ctx: &RequestContext, rule: &AttributeError) -> Rejection {
    tracing::warn!(
        connection_id = %ctx.connection_id,
        request_id = %ctx.request_id,
        rule = %rule,
        "connect refused: the session attributes break a limit"
    );
    Rejection::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("session attributes refused: {rule}"),
    )
}

/// Who a session belongs to, as stored at connect: what the cache keeps per session and hands
/// to every later call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    pub principal_id: Option<Arc<str>>,
    /// The logical session a resume key gave (see [`super::resume`]); `None`: the connection
    /// id is the session id.
    pub session_id: Option<Arc<str>>,
    pub attributes: Attributes,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn an_empty_set_compares_by_content_and_a_clone_changes_alone() {
        let empty = Attributes::new();
        assert_eq!(empty, Attributes::from_headers(&HeaderMap::new()).unwrap());
        assert!(empty.is_empty() && empty.get("tenant").is_none());
        let mut one = empty.clone();
        one.insert("tenant", "acme");
        assert_ne!(one, empty);
        let mut two = one.clone();
        two.insert("tenant", "other");
        assert_eq!((one.get("tenant"), two.get("tenant")), (Some("acme"), Some("other")));
        assert_eq!(one, [("tenant", "acme")].into_iter().collect::<Attributes>());
    }

    #[test]
    fn reads_sorts_and_gives_back_the_headers() {
        let got = Attributes::from_headers(&headers(&[
            ("x-socketless-attribute-tenant", "acme"),
            ("content-type", "text/plain"),
            ("X-Socketless-Attribute-Role", "admin user"),
        ]))
        .unwrap();
        assert_eq!(
            got.iter().collect::<Vec<_>>(),
            vec![("role", "admin user"), ("tenant", "acme")]
        );
        assert_eq!(got.get("tenant"), Some("acme"));
        assert_eq!(got.get("nope"), None);
        let back: Vec<(String, String)> = got
            .headers()
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_owned()))
            .collect();
        assert_eq!(
            back,
            vec![
                ("x-socketless-attribute-role".to_string(), "admin user".to_string()),
                ("x-socketless-attribute-tenant".to_string(), "acme".to_string())
            ]
        );
        assert_eq!(
            serde_json::to_string(&got).unwrap(),
            r#"{"role":"admin user","tenant":"acme"}"#
        );
    }

    #[test]
    fn every_limit_is_refused_naming_its_rule() {
        let many: Vec<(String, String)> = (0..=MAX_ATTRIBUTES).map(|i| (format!("a{i}"), "v".into())).collect();
        let refs: Vec<(&str, &str)> = many.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        let prefixed: Vec<(String, &str)> = refs
            .iter()
            .map(|(n, v)| (format!("{ATTRIBUTE_PREFIX}{n}"), *v))
            .collect();
        let pairs: Vec<(&str, &str)> = prefixed.iter().map(|(n, v)| (n.as_str(), *v)).collect();
        assert_eq!(Attributes::from_headers(&headers(&pairs)), Err(AttributeError::TooMany));
        assert_eq!(
            Attributes::from_headers(&headers(&pairs[..MAX_ATTRIBUTES])).map(|a| a.len()),
            Ok(MAX_ATTRIBUTES)
        );

        let long_name = format!("{ATTRIBUTE_PREFIX}{}", "n".repeat(MAX_ATTRIBUTE_NAME + 1));
        assert!(matches!(
            Attributes::from_headers(&headers(&[(&long_name, "v")])),
            Err(AttributeError::Name(_))
        ));
        let ok_name = format!("{ATTRIBUTE_PREFIX}{}", "n".repeat(MAX_ATTRIBUTE_NAME));
        assert!(Attributes::from_headers(&headers(&[(&ok_name, "v")])).is_ok());
        for bad in [
            "x-socketless-attribute-",
            "x-socketless-attribute-a_b",
            "x-socketless-attribute-a.b",
        ] {
            assert!(
                matches!(
                    Attributes::from_headers(&headers(&[(bad, "v")])),
                    Err(AttributeError::Name(_))
                ),
                "{bad}"
            );
        }
        assert_eq!(
            Attributes::from_headers(&headers(&[
                ("x-socketless-attribute-a", "1"),
                ("x-socketless-attribute-a", "2")
            ])),
            Err(AttributeError::Repeated("a".into()))
        );
        let long_value = "v".repeat(MAX_ATTRIBUTE_VALUE + 1);
        assert_eq!(
            Attributes::from_headers(&headers(&[("x-socketless-attribute-a", &long_value)])),
            Err(AttributeError::ValueTooLong("a".into()))
        );
        let mut h = HeaderMap::new();
        h.insert(
            "x-socketless-attribute-a",
            HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap(),
        );
        assert_eq!(
            Attributes::from_headers(&h),
            Err(AttributeError::ValueNotAscii("a".into()))
        );
        let mut a = Attributes::new();
        a.insert("a", "tab\there");
        assert_eq!(a.check(), Err(AttributeError::ValueNotAscii("a".into())));
        a.insert("a", " padded");
        assert_eq!(a.check(), Err(AttributeError::ValueNotAscii("a".into())));

        // Nine values of 240 bytes: each within its limit, 2 KiB exceeded together.
        let big: Attributes = (0..9).map(|i| (format!("k{i}"), "v".repeat(240))).collect();
        assert_eq!(big.check(), Err(AttributeError::TooLarge));
        let fits: Attributes = (0..8).map(|i| (format!("k{i}"), "v".repeat(250))).collect();
        assert_eq!(fits.check(), Ok(()));
        assert!(
            AttributeError::TooLarge.to_string().contains("2048"),
            "the message names the rule"
        );
    }
}

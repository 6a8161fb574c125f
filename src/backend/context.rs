//! Reads the gateway context of one integration call from its `x-socketless-*` headers, as the
//! rows of [`crate::contract::CONTEXT`] say, in one pass
//! over the request headers.

use http::{HeaderMap, HeaderValue};

use super::error::ApiError;
use crate::contract::{self, CONTEXT, Header, RequestContext};
use crate::trace::{TRACEPARENT, TRACESTATE};

/// A connection id as API Gateway issues them: short, printable, no separators.
pub fn valid_connection_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic() && b != b'/')
}

/// Reads the gateway context from request headers, as `/connect`, `/message` and `/disconnect`
/// do; the error says which header is missing or malformed.
pub fn request_context(headers: &HeaderMap) -> Result<RequestContext, String> {
    let mut ctx = RequestContext::default();
    context(headers, &mut ctx).map_err(|e| e.to_string())?;
    Ok(ctx)
}

/// The W3C trace context headers of a call, found in the same pass as its gateway context (a
/// lookup by name would hash each name again).
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct TraceHeaders<'a> {
    pub traceparent: Option<&'a HeaderValue>,
    pub tracestate: Option<&'a HeaderValue>,
}

impl<'a> TraceHeaders<'a> {
    /// The value of `traceparent` or `tracestate` as text, as [`crate::trace::Hop::incoming`]
    /// asks for them.
    pub fn get(&self, name: &str) -> Option<&'a str> {
        let value = match name {
            TRACEPARENT => self.traceparent,
            TRACESTATE => self.tracestate,
            _ => None,
        };
        value.and_then(|v| v.to_str().ok())
    }
}

/// The header named `name` and its row's index in [`CONTEXT`].
fn row_of(name: &str) -> Option<(usize, Header)> {
    let i = CONTEXT
        .iter()
        .position(|row| row.header.is_some_and(|h| h.name == name))?;
    Some((i, CONTEXT[i].header?))
}

/// Reads the gateway context from the request headers into `ctx` (a fresh one: it is filled
/// where it lies, not moved), and returns the trace context. The first value of a repeated
/// header wins, as with `HeaderMap::get`.
pub(super) fn context<'h>(headers: &'h HeaderMap, ctx: &mut RequestContext) -> Result<TraceHeaders<'h>, ApiError> {
    let mut trace = TraceHeaders::default();
    let mut seen = [false; CONTEXT.len()];
    let mut malformed = None;
    for (name, value) in headers {
        let name = name.as_str();
        // Most headers are not the gateway's: one prefix check skips them.
        if !name.starts_with(contract::HEADER_PREFIX) {
            if name == TRACEPARENT {
                trace.traceparent.get_or_insert(value);
            } else if name == TRACESTATE {
                trace.tracestate.get_or_insert(value);
            }
            continue;
        }
        let Some((i, header)) = row_of(name) else {
            // Not context variables: what the handshake offered, and the frame's kind.
            if name == contract::SUBPROTOCOLS && ctx.subprotocols.is_none() {
                ctx.subprotocols = value.to_str().ok().filter(|v| !v.is_empty()).map(Box::from);
            } else if name == contract::RESUME_KEY && ctx.resume_key.is_none() {
                // Kept as given (even empty or not text): `serve` refuses what is no valid key.
                ctx.resume_key = Some(String::from_utf8_lossy(value.as_bytes()).into());
            } else if name == contract::FRAME {
                ctx.binary = value.as_bytes().eq_ignore_ascii_case(contract::FRAME_BINARY.as_bytes());
            }
            continue;
        };
        if std::mem::replace(&mut seen[i], true) {
            continue;
        }
        if (header.store)(ctx, value).is_err() {
            malformed.get_or_insert(header.name);
        }
    }
    if ctx.connection_id.is_empty() {
        return Err(ApiError::MissingHeader(contract::CONNECTION_ID));
    }
    if !valid_connection_id(&ctx.connection_id) {
        return Err(ApiError::InvalidHeader(contract::CONNECTION_ID));
    }
    match malformed {
        Some(name) => Err(ApiError::InvalidHeader(name)),
        None => Ok(trace),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Every header a gateway sends: the context headers of the table and the shared secret.
    fn names() -> Vec<&'static str> {
        contract::headers()
            .map(|h| h.name)
            .chain([contract::SHARED_SECRET])
            .collect()
    }

    #[test]
    fn the_trace_context_is_found_in_the_same_pass_first_value_first() {
        let mut headers = HeaderMap::new();
        headers.insert(contract::CONNECTION_ID, "abc=".parse().unwrap());
        headers.append(
            TRACEPARENT,
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
                .parse()
                .unwrap(),
        );
        headers.append(
            TRACEPARENT,
            "00-11111111111111111111111111111111-2222222222222222-01"
                .parse()
                .unwrap(),
        );
        headers.insert(TRACESTATE, "vendor=1".parse().unwrap());
        let mut ctx = RequestContext::default();
        let trace = context(&headers, &mut ctx).unwrap();
        assert_eq!(ctx.connection_id, "abc=");
        assert_eq!(
            trace.get(TRACEPARENT),
            headers.get(TRACEPARENT).and_then(|v| v.to_str().ok())
        );
        assert_eq!(trace.get(TRACESTATE), Some("vendor=1"));
        assert_eq!(trace.get("x-other"), None);
        headers.remove(TRACEPARENT);
        headers.remove(TRACESTATE);
        let none = context(&headers, &mut RequestContext::default()).unwrap();
        assert_eq!((none.get(TRACEPARENT), none.get(TRACESTATE)), (None, None));
    }

    proptest! {
        #[test]
        fn context_headers_never_panic(values in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), names().len())) {
            let mut headers = HeaderMap::new();
            for (name, value) in names().into_iter().zip(values) {
                if let Ok(v) = http::HeaderValue::from_bytes(&value) {
                    headers.insert(name, v);
                }
            }
            let _ = request_context(&headers);
        }

        #[test]
        fn valid_ids_and_times_round_trip(id in "[A-Za-z0-9_=+-]{1,64}", at in 0i64..4_000_000_000_000) {
            let mut headers = HeaderMap::new();
            headers.insert(contract::CONNECTION_ID, id.parse().unwrap());
            headers.insert(contract::CONNECTED_AT, at.to_string().parse().unwrap());
            let ctx = request_context(&headers).unwrap();
            prop_assert_eq!(ctx.connection_id, id);
            prop_assert_eq!(ctx.connected_at, Some(at));
        }

        #[test]
        fn malformed_connected_at_is_refused(bad in "[^0-9]{1,12}") {
            let mut headers = HeaderMap::new();
            headers.insert(contract::CONNECTION_ID, "abc=".parse().unwrap());
            if let Ok(v) = http::HeaderValue::from_str(&bad) {
                headers.insert(contract::CONNECTED_AT, v);
                prop_assert!(request_context(&headers).is_err());
            }
        }
    }
}

//! Traces: W3C trace context (`traceparent`, `tracestate`) read where a call comes in, passed on
//! where it goes out, and spans exported over OTLP/HTTP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set
//! (see [`export`]).
//!
//! A [`Hop`] is what one step of a call carries on: with tracing on, the span this process opened
//! for it; with tracing off, the caller's context, passed on unchanged (the step is transparent, as
//! a proxy that does not trace is), or nothing when none came in. Nothing is invented with tracing
//! off, and a step with no context costs one header lookup.

pub mod export;

use std::future::Future;
use std::str::FromStr;
use std::sync::OnceLock;

use futures_util::future::Either;
use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::trace::{
    FutureExt, SpanContext, SpanId, SpanKind, TraceContextExt, TraceFlags, TraceId, TraceState, Tracer as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::SdkTracer;

/// The W3C header that carries a call's trace and parent span.
pub const TRACEPARENT: &str = "traceparent";
/// The W3C header with vendors' trace state, passed along with `traceparent`.
pub const TRACESTATE: &str = "tracestate";

/// The tracer, set once at start-up when spans are exported; unset, no span is made.
static TRACER: OnceLock<SdkTracer> = OnceLock::new();

/// Whether spans are made and exported (`OTEL_EXPORTER_OTLP_ENDPOINT` was set at start).
pub fn enabled() -> bool {
    TRACER.get().is_some()
}

/// What a span is to the process that made it, as OpenTelemetry says it.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// A call this process answers.
    Server,
    /// A call this process makes.
    Client,
    /// A step inside this process.
    Internal,
}

impl From<Kind> for SpanKind {
    fn from(kind: Kind) -> SpanKind {
        match kind {
            Kind::Server => SpanKind::Server,
            Kind::Client => SpanKind::Client,
            Kind::Internal => SpanKind::Internal,
        }
    }
}

/// The trace context of one step: see the module's documentation. The span ends when the last
/// clone of the hop is dropped.
#[derive(Clone, Default)]
pub struct Hop(Option<Context>);

impl std::fmt::Debug for Hop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Hop").field(&self.traceparent()).finish()
    }
}

/// The names of the two headers, for writing them without parsing a name each time.
static TRACEPARENT_NAME: HeaderName = HeaderName::from_static(TRACEPARENT);
static TRACESTATE_NAME: HeaderName = HeaderName::from_static(TRACESTATE);

/// The caller's context from `traceparent` and `tracestate`, when the first is valid.
fn remote<'a>(get: impl Fn(&str) -> Option<&'a str>) -> Option<Context> {
    let (trace_id, span_id, flags) = parse_traceparent(get(TRACEPARENT)?)?;
    // An invalid list is dropped, the trace kept (as the SDK's propagator does).
    let state = get(TRACESTATE).map_or_else(TraceState::default, |s| TraceState::from_str(s).unwrap_or_default());
    let sc = SpanContext::new(trace_id, span_id, flags, true, state);
    Some(Context::new().with_remote_span_context(sc))
}

/// The value of a lowercase hexadecimal digit, the only digits W3C allows.
fn nibble(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
}

/// The `N` bytes that `2 * N` lowercase hexadecimal digits spell.
fn hex_bytes<const N: usize>(digits: &[u8]) -> Option<[u8; N]> {
    let mut out = [0u8; N];
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        *byte = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(out)
}

/// A `traceparent`'s trace id, parent id and flags (the sampled bit), as W3C Trace Context
/// reads them: version, trace id, parent id and flags of 2, 32, 16 and 2 lowercase hex digits,
/// separated by `-`; version `ff` is invalid, version `00` has exactly those four fields (a later
/// version may add more after a `-`), and neither id may be all zeros. It accepts what the
/// SDK's `TraceContextPropagator` accepts, without its intermediate allocations, except two
/// things W3C does not allow and the propagator lets through: a `+` before a number, and an
/// uppercase version.
fn parse_traceparent(value: &str) -> Option<(TraceId, SpanId, TraceFlags)> {
    // The fields' lengths are fixed, so are the dashes' places: 2, 35, 52, and 55 if more follows.
    let b = value.trim().as_bytes();
    let dashes = b.get(2) == Some(&b'-') && b.get(35) == Some(&b'-') && b.get(52) == Some(&b'-');
    if !dashes || b.len() < 55 || (b.len() > 55 && b[55] != b'-') {
        return None;
    }
    // A dash at the end ends the fields; anything after it is a later version's.
    let more = b.len() > 56;
    let [version] = hex_bytes::<1>(&b[0..2])?;
    if version == 0xff || (version == 0 && more) {
        return None;
    }
    let trace_id = TraceId::from_bytes(hex_bytes(&b[3..35])?);
    let span_id = SpanId::from_bytes(hex_bytes(&b[36..52])?);
    let [flags] = hex_bytes::<1>(&b[53..55])?;
    if trace_id == TraceId::INVALID || span_id == SpanId::INVALID {
        return None;
    }
    Some((trace_id, span_id, TraceFlags::new(flags) & TraceFlags::SAMPLED))
}

/// `traceparent` for a span: version 00, as W3C Trace Context writes it.
fn write_traceparent(sc: &SpanContext) -> [u8; 55] {
    let mut out = *b"00-00000000000000000000000000000000-0000000000000000-00";
    // The lengths are fixed, so the encodings cannot fail.
    let _ = hex::encode_to_slice(sc.trace_id().to_bytes(), &mut out[3..35]);
    let _ = hex::encode_to_slice(sc.span_id().to_bytes(), &mut out[36..52]);
    let _ = hex::encode_to_slice([(sc.trace_flags() & TraceFlags::SAMPLED).to_u8()], &mut out[53..55]);
    out
}

fn start(name: &'static str, kind: Kind, parent: Option<&Context>, attributes: Vec<KeyValue>) -> Option<Context> {
    let tracer = TRACER.get()?;
    let builder = tracer
        .span_builder(name)
        .with_kind(kind.into())
        .with_attributes(attributes);
    let root = Context::new();
    let parent = parent.unwrap_or(&root);
    let span = tracer.build_with_context(builder, parent);
    Some(parent.with_span(span))
}

impl Hop {
    /// A step that comes in with `traceparent` (and `tracestate`) as `get` reads them: with
    /// tracing on, a span continuing them, or the root of a new trace when there are none.
    pub fn incoming<'a>(
        name: &'static str,
        kind: Kind,
        get: impl Fn(&str) -> Option<&'a str>,
        attributes: impl FnOnce() -> Vec<KeyValue>,
    ) -> Hop {
        let parent = remote(get);
        if !enabled() {
            return Hop(parent);
        }
        Hop(start(name, kind, parent.as_ref(), attributes()))
    }

    /// [`Hop::incoming`] with the trace context in HTTP headers.
    pub fn from_headers(name: &'static str, headers: &HeaderMap, attributes: impl FnOnce() -> Vec<KeyValue>) -> Hop {
        Hop::incoming(
            name,
            Kind::Server,
            |key| headers.get(key).and_then(|v| v.to_str().ok()),
            attributes,
        )
    }

    /// A new trace's first span (tracing on); nothing with tracing off.
    pub fn root(name: &'static str, attributes: impl FnOnce() -> Vec<KeyValue>) -> Hop {
        if !enabled() {
            return Hop(None);
        }
        Hop(start(name, Kind::Server, None, attributes()))
    }

    /// A span under this one (tracing on; a root if this hop has none); this hop unchanged with
    /// tracing off.
    pub fn child(&self, name: &'static str, kind: Kind, attributes: impl FnOnce() -> Vec<KeyValue>) -> Hop {
        if !enabled() {
            return self.clone();
        }
        Hop(start(name, kind, self.0.as_ref(), attributes()))
    }

    /// The hop a future runs under (see [`Hop::run`]), for calls deep inside it.
    pub fn current() -> Hop {
        let cx = Context::current();
        Hop(cx.has_active_span().then_some(cx))
    }

    /// Whether the hop carries a trace.
    pub fn is_some(&self) -> bool {
        self.0.is_some()
    }

    /// `traceparent` as this hop passes it on.
    pub fn traceparent(&self) -> Option<String> {
        let cx = self.0.as_ref()?;
        let span = cx.span();
        let sc = span.span_context();
        // Hex digits and dashes only, so always UTF-8.
        sc.is_valid()
            .then(|| String::from_utf8(write_traceparent(sc).to_vec()).unwrap_or_default())
    }

    /// `traceparent` and, when the span has a trace state, `tracestate`, as header pairs.
    pub fn headers(&self) -> Vec<(HeaderName, HeaderValue)> {
        let Some(cx) = &self.0 else {
            return Vec::new();
        };
        let span = cx.span();
        let sc = span.span_context();
        if !sc.is_valid() {
            return Vec::new();
        }
        let mut out = Vec::with_capacity(2);
        if let Ok(v) = HeaderValue::from_bytes(&write_traceparent(sc)) {
            out.push((TRACEPARENT_NAME.clone(), v));
        }
        // An empty list is not sent: W3C reads a missing `tracestate` as an empty one.
        let state = sc.trace_state().header();
        if let Ok(v) = HeaderValue::try_from(state)
            && !v.is_empty()
        {
            out.push((TRACESTATE_NAME.clone(), v));
        }
        out
    }

    /// Writes `traceparent` and `tracestate` into outgoing headers (see [`Hop::headers`]).
    pub fn inject(&self, headers: &mut HeaderMap) {
        for (name, value) in self.headers() {
            headers.insert(name, value);
        }
    }

    /// Records an outcome on the span (an error status when `failed`).
    pub fn outcome(&self, failed: Option<String>) {
        if let (Some(cx), Some(why)) = (&self.0, failed) {
            cx.span().set_status(opentelemetry::trace::Status::error(why));
        }
    }

    /// The context the hop carries, if any: what [`Hop::run`] makes current.
    pub fn context(&self) -> Option<&Context> {
        self.0.as_ref()
    }

    /// Runs `fut` with this hop as the current one, so that [`Hop::current`] finds it in
    /// whatever the future calls. The span ends when the future is done, unless a clone lives on.
    /// A hop with no context runs the future as it is.
    pub fn run<F: Future>(self, fut: F) -> impl Future<Output = F::Output> {
        match self.0 {
            Some(cx) => Either::Left(fut.with_context(cx)),
            None => Either::Right(fut),
        }
    }
}

/// Sets the tracer for the process; called once by [`export::init`].
fn install(tracer: SdkTracer) {
    let _ = TRACER.set(tracer);
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    #[test]
    fn with_tracing_off_a_context_passes_on_unchanged_and_none_is_made() {
        let mut headers = HeaderMap::new();
        headers.insert(TRACEPARENT, HeaderValue::from_static(PARENT));
        headers.insert(TRACESTATE, HeaderValue::from_static("vendor=x"));
        let hop = Hop::from_headers("test", &headers, Vec::new);
        assert_eq!(hop.traceparent().as_deref(), Some(PARENT));
        let mut out = HeaderMap::new();
        hop.child("child", Kind::Client, Vec::new).inject(&mut out);
        assert_eq!(out[TRACEPARENT], PARENT);
        assert_eq!(out[TRACESTATE], "vendor=x");

        let none = Hop::from_headers("test", &HeaderMap::new(), Vec::new);
        assert!(!none.is_some());
        assert!(Hop::root("test", Vec::new).traceparent().is_none());
        let mut out = HeaderMap::new();
        none.inject(&mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn a_malformed_traceparent_is_no_context() {
        for bad in [
            "",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b71692033-01",
            "junk",
        ] {
            let hop = Hop::incoming("test", Kind::Server, |k| (k == TRACEPARENT).then_some(bad), Vec::new);
            assert!(!hop.is_some(), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn a_running_future_finds_its_hop() {
        let hop = Hop::incoming("test", Kind::Server, |k| (k == TRACEPARENT).then_some(PARENT), Vec::new);
        let seen = hop.run(async { Hop::current().traceparent() }).await;
        assert_eq!(seen.as_deref(), Some(PARENT));
        assert!(Hop::current().traceparent().is_none());
    }

    /// What the propagator of the SDK reads, behind the field-length check this module made
    /// before it read `traceparent` itself: the reference for [`parse_traceparent`].
    fn reference(traceparent: &str, tracestate: Option<&str>) -> Option<SpanContext> {
        use opentelemetry::propagation::{Extractor, TextMapPropagator};
        struct Two<'a>(&'a str, Option<&'a str>);
        impl Extractor for Two<'_> {
            fn get(&self, key: &str) -> Option<&str> {
                if key == TRACEPARENT { Some(self.0) } else { self.1 }
            }
            fn keys(&self) -> Vec<&str> {
                vec![TRACEPARENT, TRACESTATE]
            }
        }
        let mut fields = traceparent.trim().split('-');
        if ![2, 32, 16, 2]
            .iter()
            .all(|&len| fields.next().is_some_and(|f| f.len() == len))
        {
            return None;
        }
        let cx = opentelemetry_sdk::propagation::TraceContextPropagator::new()
            .extract_with_context(&Context::new(), &Two(traceparent, tracestate));
        let sc = cx.span().span_context().clone();
        sc.is_valid().then_some(sc)
    }

    fn ours(traceparent: &str, tracestate: Option<&str>) -> Option<SpanContext> {
        let get = |k: &str| {
            if k == TRACEPARENT {
                Some(traceparent)
            } else {
                tracestate
            }
        };
        remote(get).map(|cx| cx.span().span_context().clone())
    }

    /// A traceparent made of fields that are each right (about half the time) or wrong in one way.
    fn traceparents() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let version = prop::sample::select(vec![
            "00", "00", "00", "01", "cc", "fe", "ff", "0", "000", "A0", "+1", "zz",
        ]);
        let trace = prop::sample::select(vec![
            "4bf92f3577b34da6a3ce929d0e0e4736",
            "4bf92f3577b34da6a3ce929d0e0e4736",
            "0af7651916cd43dd8448eb211c80319c",
            "00000000000000000000000000000000",
            "00000000000000000000000000000001",
            "4BF92F3577B34DA6A3CE929D0E0E4736",
            "4bf92f3577b34da6a3ce929d0e0e473",
            "4bf92f3577b34da6a3ce929d0e0e47361",
            "4bf92f3577b34da6a3ce929d0e0e473g",
            "+bf92f3577b34da6a3ce929d0e0e4736",
        ]);
        let parent = prop::sample::select(vec![
            "00f067aa0ba902b7",
            "00f067aa0ba902b7",
            "b7ad6b7169203331",
            "0000000000000001",
            "0000000000000000",
            "00F067AA0BA902B7",
            "00f067aa0ba902b",
            "00f067aa0ba902b71",
            "+0f067aa0ba902b7",
            "00f067aa0ba9 2b7",
        ]);
        let flags = prop::sample::select(vec!["00", "01", "03", "08", "09", "ff", "A1", "1", "+1", "0x"]);
        let tail = prop::sample::select(vec!["", "", "", "-", "--", "-xyz", "-XYZxsf09", "-00"]);
        let pad = prop::sample::select(vec!["", " ", "\t"]);
        (pad.clone(), version, trace, parent, flags, tail, pad)
            .prop_map(|(a, v, t, p, f, x, b)| format!("{a}{v}-{t}-{p}-{f}{x}{b}"))
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(2048))]
        #[test]
        fn traceparent_is_read_as_the_sdks_propagator_reads_it(
            traceparent in proptest::prop_oneof![traceparents(), "[0-9a-fA-F+ -]{0,64}"],
            tracestate in proptest::sample::select(vec![None, Some(""), Some("vendor=x"), Some("a=1,b=2"), Some("not a list"), Some("k=v, ,x=y")]),
        ) {
            let (ours, theirs) = (ours(&traceparent, tracestate), reference(&traceparent, tracestate));
            let strict_only = traceparent.contains('+') || traceparent.trim().chars().take(2).any(|c| c.is_ascii_uppercase());
            match (&ours, &theirs) {
                (Some(a), Some(b)) => {
                    proptest::prop_assert_eq!(a.trace_id(), b.trace_id());
                    proptest::prop_assert_eq!(a.span_id(), b.span_id());
                    proptest::prop_assert_eq!(a.trace_flags(), b.trace_flags());
                    proptest::prop_assert_eq!(a.trace_state().header(), b.trace_state().header());
                    proptest::prop_assert!(a.is_remote());
                }
                (None, None) => {}
                (None, Some(_)) => proptest::prop_assert!(strict_only, "refused what W3C allows: {traceparent:?}"),
                (Some(_), None) => proptest::prop_assert!(false, "accepted what the propagator refuses: {traceparent:?}"),
            }
        }
    }

    #[test]
    fn traceparent_is_written_as_the_sdks_propagator_writes_it() {
        use opentelemetry::propagation::{Injector, TextMapPropagator};
        struct Map(Vec<(String, String)>);
        impl Injector for Map {
            fn set(&mut self, key: &str, value: String) {
                self.0.push((key.to_string(), value));
            }
        }
        for (tp, ts) in [
            (PARENT, "vendor=x,other=y"),
            ("00-00000000000000000000000000000001-0000000000000001-00", ""),
        ] {
            let hop = Hop::incoming(
                "test",
                Kind::Server,
                |k| if k == TRACEPARENT { Some(tp) } else { Some(ts) },
                Vec::new,
            );
            let mut theirs = Map(Vec::new());
            opentelemetry_sdk::propagation::TraceContextPropagator::new()
                .inject_context(hop.0.as_ref().unwrap(), &mut theirs);
            let ours: Vec<(String, String)> = hop
                .headers()
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_string()))
                .collect();
            // The same pairs, but for an empty `tracestate`, which is left out.
            let theirs: Vec<_> = theirs
                .0
                .into_iter()
                .filter(|(k, v)| k != TRACESTATE || !v.is_empty())
                .collect();
            assert_eq!(ours, theirs);
            assert_eq!(hop.traceparent().as_deref(), Some(tp));
        }
    }
}

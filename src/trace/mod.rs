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
use std::sync::OnceLock;

use futures_util::future::Either;
use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{FutureExt, SpanKind, TraceContextExt, Tracer as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::propagation::TraceContextPropagator;
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

/// Headers read through a lookup function, for the propagator.
struct Lookup<'a, F>(F, std::marker::PhantomData<&'a str>);

impl<'a, F: Fn(&str) -> Option<&'a str>> Extractor for Lookup<'a, F> {
    fn get(&self, key: &str) -> Option<&str> {
        (self.0)(key)
    }

    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT, TRACESTATE]
    }
}

/// Headers written by the propagator.
struct Writer<'a>(&'a mut HeaderMap);

impl Injector for Writer<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(key), HeaderValue::try_from(value)) {
            self.0.insert(name, value);
        }
    }
}

/// The caller's context from `traceparent` and `tracestate`, when the first is valid.
fn remote<'a>(get: impl Fn(&str) -> Option<&'a str>) -> Option<Context> {
    if !well_formed(get(TRACEPARENT)?) {
        return None;
    }
    let cx = TraceContextPropagator::new().extract(&Lookup(get, std::marker::PhantomData));
    cx.span().span_context().is_valid().then_some(cx)
}

/// Whether the fields of a `traceparent` have the lengths W3C gives them (version, trace id,
/// parent id, flags: 2, 32, 16 and 2 hex digits); the propagator checks the digits.
fn well_formed(traceparent: &str) -> bool {
    let mut fields = traceparent.trim().split('-');
    [2, 32, 16, 2]
        .iter()
        .all(|&len| fields.next().is_some_and(|f| f.len() == len))
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
        let sc = cx.span().span_context().clone();
        sc.is_valid()
            .then(|| format!("00-{}-{}-{:02x}", sc.trace_id(), sc.span_id(), sc.trace_flags().to_u8()))
    }

    /// Writes `traceparent` and `tracestate` into outgoing headers.
    pub fn inject(&self, headers: &mut HeaderMap) {
        if let Some(cx) = &self.0 {
            TraceContextPropagator::new().inject_context(cx, &mut Writer(headers));
        }
    }

    /// `traceparent` and `tracestate`, as header pairs, for calls whose headers are built apart.
    pub fn headers(&self) -> Vec<(HeaderName, HeaderValue)> {
        let mut map = HeaderMap::new();
        self.inject(&mut map);
        map.into_iter().filter_map(|(k, v)| Some((k?, v))).collect()
    }

    /// Records an outcome on the span (an error status when `failed`).
    pub fn outcome(&self, failed: Option<String>) {
        if let (Some(cx), Some(why)) = (&self.0, failed) {
            cx.span().set_status(opentelemetry::trace::Status::error(why));
        }
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
}

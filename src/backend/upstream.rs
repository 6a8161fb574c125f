//! Upstream mode (`serve --upstream URL`): the team's own HTTP app, in any language, handles the
//! events while `serve` keeps the runtime (sessions behind the cache, metrics, drain, the
//! internal push API with the pod's AWS credentials). The app receives the same calls `serve`
//! does: `POST {upstream}/connect`, `/message` (the frame as the body) and `/disconnect`, with
//! the gateway's context in the same `x-socketless-*` headers. Centrifugo's proxy mode, Pushpin's
//! WebSocket-over-HTTP and Azure Web PubSub's event handlers work the same way.
//!
//! What the app's answers do:
//! - connect: 2xx accepts, and its `x-socketless-attribute-NAME` headers become the session's
//!   attributes (sent back as the same headers on every later message and disconnect; the
//!   principal too, from the session), its `x-socketless-groups: a,b` the groups the connection
//!   joins; any other status refuses the handshake with that status
//!   (and its body), and no session is created; attributes beyond the limits refuse it with 500;
//! - connect: a 2xx answer's `Sec-WebSocket-Protocol` is the subprotocol the app chose among
//!   the `x-socketless-subprotocols` it was sent; the gateway confirms it in the 101;
//! - message: a 2xx body is the reply (or is pushed, in asynchronous mode); an empty body sends
//!   nothing; `x-socketless-frame: binary` or `Content-Type: application/octet-stream` makes it
//!   a binary reply (a binary frame with `socketless gateway --binary-frames`); any other status and body are passed back as they are, as a backend's would be;
//! - disconnect: at least once per session, with `x-socketless-disconnect-id` (the same on
//!   every retry and duplicate); a 2xx takes it, anything else (or no answer) is retried with
//!   backoff until `--disconnect-deadline` (see [`super::disconnect`]);
//! - an app that does not answer in time or cannot be reached gives 504 or 502 (the gateway
//!   then sends its `Endpoint request timed out` or passes the error on), is counted in
//!   `socketless_upstream_calls_total`, and never costs a session.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, StatusCode};
use http_body_util::Full;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::sync::Semaphore;

use super::identity::{Attributes, refused};
use crate::contract::{self, RequestContext};
use crate::defaults;
use crate::future::BoxFuture;
use crate::handler::{Accepted, MessageHandler, Rejection, Reply};
use crate::http_client::{CallError, Pool};
use crate::lifecycle::Lifecycle;
use crate::metrics::latency_histogram;
use crate::telemetry::LogThrottle;

/// Largest answer read from the app: a reply is at most one message.
const MAX_ANSWER_BYTES: usize = contract::MAX_MESSAGE_BYTES;

/// Where the app is and how it is called.
#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    /// Base URL, e.g. `http://127.0.0.1:3000` (no trailing slash).
    pub base: String,
    /// Bound on one call, connecting included.
    pub timeout: Duration,
    /// Calls in flight to the app at most; more wait for a free slot within the timeout.
    pub concurrency: usize,
    /// Polled until the app answers (any status) before `serve` turns ready.
    pub health_path: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    event: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabel {
    event: &'static str,
}

/// The app as a [`MessageHandler`].
pub struct Upstream {
    settings: UpstreamSettings,
    client: Pool,
    slots: Semaphore,
    calls: Family<CallLabels, Counter>,
    latency: Family<EventLabel, Histogram, fn() -> Histogram>,
    warnings: LogThrottle,
}

/// How one call to the app ended.
enum Answer {
    Status(StatusCode, Bytes, http::HeaderMap),
    TimedOut,
    Unreachable(String),
}

impl Upstream {
    pub fn new(settings: UpstreamSettings, registry: &mut Registry) -> Arc<Self> {
        let client = Pool::new(defaults::UPSTREAM_POOL_IDLE, settings.concurrency, settings.timeout);
        let calls = Family::<CallLabels, Counter>::default();
        let latency = Family::<EventLabel, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        registry.register(
            "socketless_upstream_calls",
            "Calls to the upstream app, by event and outcome (ok, status_4xx, status_5xx, timeout, unreachable)",
            calls.clone(),
        );
        registry.register(
            "socketless_upstream_latency_seconds",
            "Latency of calls to the upstream app, by event",
            latency.clone(),
        );
        Arc::new(Upstream {
            slots: Semaphore::new(settings.concurrency.max(1)),
            settings,
            client,
            calls,
            latency,
            warnings: LogThrottle::default(),
        })
    }

    /// The URL polled until the app answers: the base and the health path.
    pub fn health_url(&self) -> String {
        format!("{}{}", self.settings.base, self.settings.health_path)
    }

    /// Whether the app answers its health path now, within `bound` (any HTTP status counts:
    /// the app is up).
    pub async fn answers(&self, bound: Duration) -> bool {
        let Ok(uri) = self.health_url().parse::<http::Uri>() else {
            return false;
        };
        let mut req = Request::new(Full::new(Bytes::new()));
        *req.uri_mut() = uri;
        matches!(tokio::time::timeout(bound, self.client.send(req)).await, Ok(Ok(_)))
    }

    /// Waits until the app answers its health path, so `serve` turns ready only once it can
    /// hand events over. Returns early if shutdown begins.
    pub async fn wait_until_answering(&self, lifecycle: &Lifecycle) {
        let url = self.health_url();
        let started = Instant::now();
        let mut logged = Instant::now();
        loop {
            if lifecycle.is_draining() {
                return;
            }
            if self.answers(self.settings.timeout).await {
                tracing::info!(upstream = %self.settings.base, waited_ms = started.elapsed().as_millis() as u64, "the upstream app answers");
                return;
            }
            if logged.elapsed() >= defaults::UPSTREAM_WAIT_LOG_EVERY {
                tracing::warn!(upstream = %url, "waiting for the upstream app to answer; not ready until it does");
                logged = Instant::now();
            }
            tokio::time::sleep(defaults::UPSTREAM_WAIT_POLL).await;
        }
    }

    async fn call(&self, event: &'static str, path: &str, ctx: &RequestContext, body: Bytes) -> Answer {
        let started = Instant::now();
        let answer = match tokio::time::timeout(self.settings.timeout, self.send(path, ctx, body)).await {
            Ok(answer) => answer,
            Err(_) => Answer::TimedOut,
        };
        let outcome = match &answer {
            Answer::Status(s, ..) if s.is_success() => "ok",
            Answer::Status(s, ..) if s.is_client_error() => "status_4xx",
            Answer::Status(..) => "status_5xx",
            Answer::TimedOut => "timeout",
            Answer::Unreachable(_) => "unreachable",
        };
        self.calls.get_or_create(&CallLabels { event, outcome }).inc();
        self.latency
            .get_or_create(&EventLabel { event })
            .observe(started.elapsed().as_secs_f64());
        match &answer {
            Answer::TimedOut | Answer::Unreachable(_) => {
                if let Some(alike) = self.warnings.admit() {
                    let reason = match &answer {
                        Answer::Unreachable(r) => r.as_str(),
                        _ => "no answer within the timeout",
                    };
                    tracing::warn!(event, connection_id = %ctx.connection_id, reason, alike_since_last = alike, "upstream app call failed");
                }
            }
            Answer::Status(..) => {}
        }
        answer
    }

    async fn send(&self, path: &str, ctx: &RequestContext, body: Bytes) -> Answer {
        let Ok(_slot) = self.slots.acquire().await else {
            return Answer::Unreachable("shutting down".into());
        };
        let uri = match format!("{}{path}", self.settings.base).parse::<http::Uri>() {
            Ok(u) => u,
            Err(e) => return Answer::Unreachable(e.to_string()),
        };
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = uri;
        for (name, value) in context_headers(ctx) {
            if let Ok(v) = HeaderValue::from_str(&value) {
                req.headers_mut().insert(name, v);
            }
        }
        req.headers_mut().extend(ctx.attributes.headers());
        if let Some(v) = ctx.subprotocols.as_deref().and_then(|v| HeaderValue::from_str(v).ok()) {
            req.headers_mut().insert(contract::SUBPROTOCOLS, v);
        }
        if ctx.binary {
            req.headers_mut()
                .insert(contract::FRAME, HeaderValue::from_static(contract::FRAME_BINARY));
        }
        let session = ctx.session_id.as_deref().unwrap_or(&ctx.connection_id);
        if let Ok(v) = HeaderValue::from_str(session) {
            req.headers_mut().insert(contract::SESSION_ID, v);
        }
        if let Some(resumed) = ctx.resumed {
            req.headers_mut().insert(
                contract::RESUMED,
                HeaderValue::from_static(if resumed { "true" } else { "false" }),
            );
        }
        if let Some(recovered) = ctx.recovered {
            req.headers_mut().insert(
                contract::RECOVERED,
                HeaderValue::from_static(if recovered { "true" } else { "false" }),
            );
        }
        if let Some(id) = ctx.disconnect_id.as_deref().and_then(|v| HeaderValue::from_str(v).ok()) {
            req.headers_mut().insert(contract::DISCONNECT_ID, id);
        }
        if let Some(tp) = ctx.traceparent.as_deref().and_then(|v| HeaderValue::from_str(v).ok()) {
            req.headers_mut().insert(crate::trace::TRACEPARENT, tp);
        }
        match self.client.call(req, MAX_ANSWER_BYTES).await {
            Ok((parts, body)) => Answer::Status(parts.status, body, parts.headers),
            Err(e @ CallError::Body(_)) => Answer::Unreachable(e.to_string()),
            Err(e) => Answer::Unreachable(format!("{e:?}")),
        }
    }
}

/// The context as the `x-socketless-*` headers the app receives: every header row of
/// [`contract::CONTEXT`] that carried a non-empty value (the shared secret stays with `serve`).
pub(crate) fn context_headers(ctx: &RequestContext) -> impl Iterator<Item = (&'static str, String)> + '_ {
    contract::headers().filter_map(|h| Some((h.name, (h.load)(ctx)?)))
}

/// The refusal of a connect whose `x-socketless-groups` break a rule: a 500 naming it, logged.
fn groups_refused(ctx: &RequestContext, rule: &str) -> Rejection {
    tracing::warn!(connection_id = %ctx.connection_id, request_id = %ctx.request_id, rule, "connect refused: the app's groups break a rule");
    Rejection::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("connect groups refused: {rule}"),
    )
}

/// The refusal for an app that did not answer.
fn failed(answer: Answer) -> Rejection {
    match answer {
        Answer::TimedOut => Rejection::new(StatusCode::GATEWAY_TIMEOUT, "the upstream app did not answer in time"),
        Answer::Unreachable(_) => Rejection::new(StatusCode::BAD_GATEWAY, "the upstream app could not be reached"),
        Answer::Status(status, body, _) => Rejection::with_body(status, body),
    }
}

impl MessageHandler for Upstream {
    fn on_connect<'a>(&'a self, ctx: &'a RequestContext) -> BoxFuture<'a, Result<(), Rejection>> {
        Box::pin(async move { self.on_connect_with_attributes(ctx).await.map(drop) })
    }

    fn on_connect_with_attributes<'a>(
        &'a self,
        ctx: &'a RequestContext,
    ) -> BoxFuture<'a, Result<Attributes, Rejection>> {
        Box::pin(async move { self.on_connect_accepted(ctx).await.map(|a| a.attributes) })
    }

    /// The app's 2xx answer: its attribute headers, its `x-socketless-groups`, and its
    /// `Sec-WebSocket-Protocol` (the subprotocol it chose among `x-socketless-subprotocols`).
    fn on_connect_accepted<'a>(&'a self, ctx: &'a RequestContext) -> BoxFuture<'a, Result<Accepted, Rejection>> {
        Box::pin(async move {
            match self.call("connect", contract::PATH_CONNECT, ctx, Bytes::new()).await {
                Answer::Status(s, _, headers) if s.is_success() => {
                    let attributes = Attributes::from_headers(&headers).map_err(|rule| refused(ctx, &rule))?;
                    let groups = super::groups::groups_from_headers(&headers, defaults::MAX_CONNECT_GROUPS)
                        .map_err(|rule| groups_refused(ctx, &rule))?;
                    let subprotocol = headers
                        .get(http::header::SEC_WEBSOCKET_PROTOCOL)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    Ok(Accepted {
                        attributes,
                        groups,
                        subprotocol,
                    })
                }
                other => Err(failed(other)),
            }
        })
    }

    fn on_message<'a>(
        &'a self,
        ctx: &'a RequestContext,
        body: Bytes,
    ) -> BoxFuture<'a, Result<Option<Bytes>, Rejection>> {
        Box::pin(async move { Ok(self.on_message_reply(ctx, body).await?.map(|r| r.body)) })
    }

    /// The app's 2xx body is the reply; binary when the app says so (`x-socketless-frame:
    /// binary` or `Content-Type: application/octet-stream`).
    fn on_message_reply<'a>(
        &'a self,
        ctx: &'a RequestContext,
        body: Bytes,
    ) -> BoxFuture<'a, Result<Option<Reply>, Rejection>> {
        Box::pin(async move {
            match self.call("message", contract::PATH_MESSAGE, ctx, body).await {
                Answer::Status(s, reply, headers) if s.is_success() => Ok((!reply.is_empty()).then(|| Reply {
                    body: reply,
                    binary: contract::says_binary(&headers),
                })),
                other => Err(failed(other)),
            }
        })
    }

    fn on_disconnect<'a>(&'a self, ctx: &'a RequestContext) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let _ = self.on_disconnect_result(ctx).await;
        })
    }

    fn on_disconnect_result<'a>(&'a self, ctx: &'a RequestContext) -> BoxFuture<'a, Result<(), Rejection>> {
        Box::pin(async move {
            match self
                .call("disconnect", contract::PATH_DISCONNECT, ctx, Bytes::new())
                .await
            {
                Answer::Status(s, ..) if s.is_success() => Ok(()),
                other => Err(failed(other)),
            }
        })
    }
}

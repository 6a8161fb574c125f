//! Calls the backend for one event: builds the request from the integration's mapped
//! parameters only, sends it with the integration timeout, and classifies the outcome.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Request};
use http_body_util::Full;

use super::mapping::Mapped;
use super::template::Integration;
use crate::http_client::Pool;

/// Largest backend response the gateway reads (a reply frame is at most a message).
const MAX_RESPONSE_BYTES: usize = crate::contract::MAX_MESSAGE_BYTES;

pub type HttpClient = Pool;

/// Idle connections are reused for 60 s, below the backends' keep-alive timeout (75 s by
/// default), at most 256 per backend address (see [`crate::defaults`]).
pub fn client() -> HttpClient {
    use crate::defaults;
    Pool::new(
        defaults::INTEGRATION_POOL_IDLE,
        defaults::INTEGRATION_POOL_MAX_IDLE,
        defaults::INTEGRATION_CONNECT_TIMEOUT,
    )
}

/// What calling the integration gave.
#[derive(Debug)]
pub enum Outcome {
    /// The backend answered (any status).
    Response {
        status: http::StatusCode,
        headers: http::HeaderMap,
        body: Bytes,
    },
    /// No answer within the integration timeout.
    Timeout,
    /// The backend could not be reached or its answer could not be read.
    Failed(String),
}

impl Outcome {
    pub fn kind(&self) -> &'static str {
        match self {
            Outcome::Response { status, .. } if status.is_success() => "ok",
            Outcome::Response { status, .. } if status.is_client_error() => "status_4xx",
            Outcome::Response { .. } => "status_5xx",
            Outcome::Timeout => "timeout",
            Outcome::Failed(_) => "unreachable",
        }
    }
}

fn encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// Builds the backend URI: path parameters replace `{name}`, query parameters are appended.
fn uri(integration: &Integration, mapped: &Mapped) -> Result<http::Uri, String> {
    if mapped.path.is_empty() && mapped.query.is_empty() {
        // The usual case: the URI as the template gave it, parsed once at load.
        return Ok(integration.uri.clone());
    }
    let mut text = integration.uri.to_string();
    for (name, value) in &mapped.path {
        text = text.replace(&format!("{{{name}}}"), &encode(value));
    }
    if !mapped.query.is_empty() {
        let q: Vec<String> = mapped
            .query
            .iter()
            .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
            .collect();
        text.push(if text.contains('?') { '&' } else { '?' });
        text.push_str(&q.join("&"));
    }
    text.parse().map_err(|e| format!("integration URI {text:?}: {e}"))
}

pub async fn call(
    client: &HttpClient,
    integration: &Integration,
    mapped: Mapped,
    body: Bytes,
    timeout: Duration,
) -> (Outcome, Duration) {
    match head(integration, mapped) {
        Ok((uri, headers)) => send_timed(client, request(&integration.method, uri, headers, body), timeout).await,
        Err(e) => (Outcome::Failed(e), Duration::ZERO),
    }
}

/// The backend request's URI and headers: the mapped values move into them (a header value is
/// validated, not copied).
pub fn head(integration: &Integration, mapped: Mapped) -> Result<(http::Uri, Headers), String> {
    let uri = uri(integration, &mapped)?;
    let mut headers = Vec::with_capacity(mapped.headers.len());
    for (name, value) in mapped.headers {
        match HeaderValue::try_from(value) {
            Ok(v) => headers.push((name, v)),
            Err(_) => tracing::debug!(header = %name, "mapped header value is not valid in HTTP; left out"),
        }
    }
    Ok((uri, headers))
}

/// A request's headers, in order (a name may repeat).
pub type Headers = Vec<(http::HeaderName, HeaderValue)>;

/// The request of [`head`]'s parts.
pub fn request(method: &http::Method, uri: http::Uri, headers: Headers, body: Bytes) -> Request<Full<Bytes>> {
    let mut req = Request::new(Full::new(body));
    *req.method_mut() = method.clone();
    *req.uri_mut() = uri;
    // And `Host` and `Content-Length`, which the client and hyper add: a map filled to its
    // capacity would grow for them.
    req.headers_mut().reserve(headers.len() + 2);
    for (name, value) in headers {
        req.headers_mut().append(name, value);
    }
    req
}

/// Sends `req` with `timeout`: the outcome, and how long it took.
pub async fn send_timed(client: &HttpClient, req: Request<Full<Bytes>>, timeout: Duration) -> (Outcome, Duration) {
    let started = Instant::now();
    // The exchange is awaited here, not through a function of its own, which would keep a
    // second copy of the request in every call's future.
    let outcome = match tokio::time::timeout(timeout, client.call(req, MAX_RESPONSE_BYTES)).await {
        Ok(Ok((parts, body))) => Outcome::Response {
            status: parts.status,
            headers: parts.headers,
            body,
        },
        Ok(Err(e)) => Outcome::Failed(e.to_string()),
        Err(_) => Outcome::Timeout,
    };
    (outcome, started.elapsed())
}

//! Calls the backend for one event: builds the request from the integration's mapped
//! parameters only, sends it with the integration timeout, and classifies the outcome.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Request};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::mapping::Mapped;
use super::template::Integration;

/// Largest backend response the gateway reads (a reply frame is at most a message).
const MAX_RESPONSE_BYTES: usize = crate::contract::MAX_MESSAGE_BYTES;

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

pub fn client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(5)));
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(256)
        .build(connector)
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
    mapped: &Mapped,
    body: Bytes,
    timeout: Duration,
) -> (Outcome, Duration) {
    let started = Instant::now();
    let outcome = tokio::time::timeout(timeout, send(client, integration, mapped, body))
        .await
        .unwrap_or(Outcome::Timeout);
    (outcome, started.elapsed())
}

async fn send(client: &HttpClient, integration: &Integration, mapped: &Mapped, body: Bytes) -> Outcome {
    let uri = match uri(integration, mapped) {
        Ok(u) => u,
        Err(e) => return Outcome::Failed(e),
    };
    let mut req = Request::new(Full::new(body));
    *req.method_mut() = integration.method.clone();
    *req.uri_mut() = uri;
    req.headers_mut().reserve(mapped.headers.len());
    for (name, value) in &mapped.headers {
        match HeaderValue::try_from(value.as_str()) {
            Ok(v) => {
                req.headers_mut().append(name.clone(), v);
            }
            Err(_) => tracing::debug!(header = %name, "mapped header value is not valid in HTTP; left out"),
        }
    }
    let resp = match client.request(req).await {
        Ok(r) => r,
        Err(e) => return Outcome::Failed(format!("{e:?}")),
    };
    let (parts, body) = resp.into_parts();
    match Limited::new(body, MAX_RESPONSE_BYTES).collect().await {
        Ok(b) => Outcome::Response {
            status: parts.status,
            headers: parts.headers,
            body: b.to_bytes(),
        },
        Err(e) => Outcome::Failed(format!("reading the response: {e}")),
    }
}

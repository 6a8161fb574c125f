//! Pushes to clients through the gateway's `@connections` management API
//! (PostToConnection / DeleteConnection, and GetConnection for the disconnect sweep), signed with SigV4 by aws-sdk-apigatewaymanagement;
//! a post to a plain-HTTP endpoint (a socketless gateway) goes through [`DirectPost`] instead.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use aws_sdk_apigatewaymanagement::Client;
use aws_sdk_apigatewaymanagement::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_apigatewaymanagement::primitives::Blob;
use bytes::Bytes;

use super::direct_post::DirectPost;
use crate::metrics::BackendMetrics;

/// Endpoint clients kept at once; each distinct `https://{domain}/{stage}` gets one.
const MAX_CLIENTS: usize = crate::defaults::PUSH_MAX_CLIENTS;

/// What a push did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushOutcome {
    Delivered,
    /// 410: the connection no longer exists.
    Gone,
    /// 429: throttled, or the client's buffer is full.
    Throttled,
    /// 413: over the 128 KiB limit.
    TooLarge,
    /// 403: the gateway refused the credentials or the endpoint is wrong.
    Forbidden,
    Failed(String),
}

impl PushOutcome {
    pub fn label(&self) -> &'static str {
        match self {
            PushOutcome::Delivered => "delivered",
            PushOutcome::Gone => "gone",
            PushOutcome::Throttled => "throttled",
            PushOutcome::TooLarge => "too_large",
            PushOutcome::Forbidden => "forbidden",
            PushOutcome::Failed(_) => "failed",
        }
    }
}

pub struct Pusher {
    sdk: aws_config::SdkConfig,
    /// Used for every push when set (custom domains, the local gateway); otherwise the endpoint
    /// comes from each session's domain and stage.
    fixed_endpoint: Option<String>,
    clients: Mutex<HashMap<String, Client>>,
    direct: DirectPost,
    metrics: Arc<BackendMetrics>,
    warn_failed: crate::telemetry::LogThrottle,
}

impl Pusher {
    /// `batch` counts the calls that carry many posts to a socketless gateway; `None`
    /// (`--push-batch off`) sends every post alone.
    pub fn new(
        sdk: aws_config::SdkConfig,
        fixed_endpoint: Option<String>,
        metrics: Arc<BackendMetrics>,
        batch: Option<Arc<super::batch::BatchClient>>,
    ) -> Self {
        Pusher {
            direct: DirectPost::new(&sdk, batch),
            sdk,
            fixed_endpoint: fixed_endpoint.map(|e| e.trim_end_matches('/').to_string()),
            clients: Mutex::new(HashMap::new()),
            metrics,
            warn_failed: Default::default(),
        }
    }

    pub fn has_fixed_endpoint(&self) -> bool {
        self.fixed_endpoint.is_some()
    }

    /// The management endpoint for a connection: the configured one, or `https://{domain}/{stage}`.
    pub fn endpoint(&self, domain: &str, stage: &str) -> Option<String> {
        if let Some(e) = &self.fixed_endpoint {
            return Some(e.clone());
        }
        if domain.is_empty() || stage.is_empty() {
            return None;
        }
        Some(format!("https://{domain}/{stage}"))
    }

    fn client(&self, endpoint: &str) -> Client {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = clients.get(endpoint) {
            return c.clone();
        }
        if clients.len() >= MAX_CLIENTS {
            clients.clear();
        }
        let conf = aws_sdk_apigatewaymanagement::config::Builder::from(&self.sdk)
            .endpoint_url(endpoint)
            .build();
        let client = Client::from_conf(conf);
        clients.insert(endpoint.to_string(), client.clone());
        client
    }

    /// PostToConnection of a text message.
    pub async fn post(&self, endpoint: &str, connection_id: &str, data: Bytes) -> PushOutcome {
        self.post_frame(endpoint, connection_id, data, false).await
    }

    /// PostToConnection, saying which frame it is to become: the SDK sends every post as
    /// `application/octet-stream`, which a gateway with `--binary-frames` sends as a binary
    /// frame, so a text post says `text/plain` instead. API Gateway ignores the type.
    pub async fn post_frame(&self, endpoint: &str, connection_id: &str, data: Bytes, binary: bool) -> PushOutcome {
        let content_type = if binary {
            "application/octet-stream"
        } else {
            "text/plain; charset=utf-8"
        };
        // The push's trace goes on to the gateway (see `crate::trace`).
        let hop = crate::trace::Hop::current().child("serve @connections", crate::trace::Kind::Client, Vec::new);
        let trace = hop.headers();
        if DirectPost::handles(endpoint) {
            let outcome = self
                .direct
                .post(endpoint, connection_id, data, content_type, &trace)
                .await;
            hop.outcome(match &outcome {
                PushOutcome::Delivered => None,
                other => Some(other.label().to_owned()),
            });
            self.record("post", &outcome);
            return outcome;
        }
        let res = self
            .client(endpoint)
            .post_to_connection()
            .connection_id(connection_id)
            .data(Blob::new(data))
            .customize()
            .mutate_request(move |req| {
                req.headers_mut().insert("content-type", content_type);
                for (name, value) in &trace {
                    if let Ok(value) = value.to_str() {
                        req.headers_mut().insert(name.as_str().to_owned(), value.to_owned());
                    }
                }
            })
            .send()
            .await;
        let outcome = match res {
            Ok(_) => PushOutcome::Delivered,
            Err(err) => classify(err),
        };
        hop.outcome(match &outcome {
            PushOutcome::Delivered => None,
            other => Some(other.label().to_owned()),
        });
        self.record("post", &outcome);
        outcome
    }

    /// DeleteConnection: the gateway closes the client's socket.
    pub async fn delete(&self, endpoint: &str, connection_id: &str) -> PushOutcome {
        let res = self
            .client(endpoint)
            .delete_connection()
            .connection_id(connection_id)
            .send()
            .await;
        let outcome = match res {
            Ok(_) => PushOutcome::Delivered,
            Err(err) => classify(err),
        };
        self.record("delete", &outcome);
        outcome
    }

    /// GetConnection: whether the gateway still holds the connection (`Delivered`: it does,
    /// `Gone`: 410). Counted by the sweep, not as a push.
    pub async fn get(&self, endpoint: &str, connection_id: &str) -> PushOutcome {
        let res = self
            .client(endpoint)
            .get_connection()
            .connection_id(connection_id)
            .send()
            .await;
        match res {
            Ok(_) => PushOutcome::Delivered,
            Err(err) => classify(err),
        }
    }

    fn record(&self, op: &'static str, outcome: &PushOutcome) {
        self.metrics.push(outcome.label());
        if let PushOutcome::Failed(reason) = outcome {
            if let Some(alike) = self.warn_failed.admit() {
                tracing::warn!(operation = op, reason = %reason, alike_since_last = alike, "@connections call failed");
            }
        }
    }
}

fn classify<E, R>(err: SdkError<E, R>) -> PushOutcome
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + 'static,
{
    if let SdkError::ServiceError(s) = &err {
        return match s.err().code() {
            Some("GoneException") => PushOutcome::Gone,
            Some("LimitExceededException") => PushOutcome::Throttled,
            Some("PayloadTooLargeException") => PushOutcome::TooLarge,
            Some("ForbiddenException") => PushOutcome::Forbidden,
            code => PushOutcome::Failed(format!(
                "{}: {}",
                code.unwrap_or("Unknown"),
                s.err().message().unwrap_or("")
            )),
        };
    }
    PushOutcome::Failed(match &err {
        SdkError::TimeoutError(_) => "timed out".to_string(),
        other => DisplayErrorContext(other).to_string(),
    })
}

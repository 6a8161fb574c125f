//! PostToConnection to a plain-HTTP push endpoint (a socketless gateway: the local one, or
//! replicas in the cluster), as one SigV4-signed request ([`PostSigner`]) on a pooled hyper client instead of the
//! SDK's operation, whose pipeline (interceptors, endpoint resolution, the identity cache, the
//! retry strategy) costs more than the signature and the exchange themselves. The request is what the SDK sends
//! (`POST {endpoint}/@connections/{id}`, signed for `execute-api` with the same credential
//! chain) and its answer is read the same way (`x-amzn-errortype`, `{"message": …}`). It
//! follows the SDK's retry semantics: up to the configured attempts (3 by default) on a
//! connection error, a timed-out attempt, a 500/502/503/504 or a throttling error, with the
//! same jittered exponential backoff, all within the operation timeout. `https` endpoints (API
//! Gateway, custom domains) keep the SDK's operation and its TLS client.
//!
//! Posts to a socketless gateway whose `info` says it takes them (`batch.rs` asks once per
//! endpoint, in the background, at the first post) share calls (`crate::carried`): while a
//! call to it is under way, the posts that arrive wait and go together in the next, as one
//! SigV4-signed `POST {endpoint}/@socketless/v1/posts` bounded by the attempt timeout. Each post
//! still gets its own outcome; one the gateway answers 429 or 503 for is then sent alone and
//! retried as above, and so is every post of a call that had no answer. A call answered with
//! anything but its outcomes (a refused signature, say) sends its posts alone, and so do the
//! next minute's posts to that endpoint. A post carrying a trace context always goes alone, so
//! that its span continues on the gateway. `--push-batch off` turns the sharing off.
//!
//! When the endpoint's `info` lists its replicas (`batch.rs`), each post goes to the replica
//! that holds its connection, read from the id, instead of to the endpoint, whose replica
//! would forward it there (`--push-route owner`). The owner gets one attempt (one call, for
//! carried posts); a post it does not settle goes on through the endpoint with the retries
//! above and a whole operation timeout of its own, and an owner that gave no answer at all is
//! passed over for a minute.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_config::SdkConfig;
use bytes::Bytes;
use http::{HeaderValue, Method, Request};
use http_body_util::Full;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC};

use super::batch::BatchClient;
use super::post_signer::PostSigner;
use super::push::PushOutcome;
use crate::aws::CachedCredentials;
use crate::carried::{self, Answerer, Carried, Carrier, DELIVERED, GONE, Gatherer};
use crate::defaults;
use crate::http_client::Pool;

/// The characters a path label keeps unencoded (RFC 3986's unreserved ones), as the SDK does.
const LABEL: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');
/// Largest error answer read (the message of a refusal).
const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// Error codes the SDK retries as throttling.
const THROTTLING: &[&str] = &[
    "LimitExceededException",
    "ThrottlingException",
    "Throttling",
    "TooManyRequestsException",
    "RequestLimitExceeded",
];

/// The path of the call that carries many posts, under the stage.
pub const POSTS_PATH: &str = "/@socketless/v1/posts";
/// How long an endpoint that did not take a call of posts gets posts one by one before it is
/// asked again.
const REFUSAL_HOLD: Duration = Duration::from_secs(60);

pub struct DirectPost {
    single: Arc<Single>,
    /// `None` with `--push-batch off`.
    gather: Option<Arc<Gatherer<Carry>>>,
}

/// Posts sent one to a call.
struct Single {
    http: Pool,
    credentials: CachedCredentials,
    signer: PostSigner,
    max_attempts: u32,
    initial_backoff: Duration,
    max_backoff: Duration,
    operation_timeout: Option<Duration>,
    attempt_timeout: Option<Duration>,
}

/// One attempt's result: an answer (status, error code, message) or why there was none.
enum Attempt {
    Answer(u16, Option<String>, String),
    NoAnswer(String),
}

/// Why a single attempt did not settle a post.
enum Unsettled {
    /// No answer at all.
    NoAnswer,
    /// An answer the SDK would retry (throttling, 5xx).
    Retry,
}

/// `POST {endpoint}/@connections/{id}`.
fn post_url(endpoint: &str, connection_id: &str) -> String {
    format!(
        "{endpoint}/@connections/{}",
        percent_encoding::utf8_percent_encode(connection_id, LABEL)
    )
}

impl DirectPost {
    /// `batch` counts the calls that carry many posts; `None` turns them off.
    pub fn new(sdk: &SdkConfig, batch: Option<Arc<BatchClient>>) -> Self {
        let single = Arc::new(Single::new(sdk));
        DirectPost {
            gather: batch.map(|batch| {
                Arc::new(Gatherer::new(Carry {
                    single: single.clone(),
                    refused: Mutex::new(HashMap::new()),
                    batch,
                }))
            }),
            single,
        }
    }

    /// Whether an endpoint is one this client posts to (plain HTTP).
    pub fn handles(endpoint: &str) -> bool {
        endpoint.starts_with("http://")
    }

    /// PostToConnection of `data` with this `Content-Type`: to the replica holding the
    /// connection when the endpoint is a replicated socketless gateway (`--push-route owner`),
    /// else to the endpoint; with other posts to the same place when calls to it are under way
    /// and it takes them, else alone. A post its owner does not answer, or answers with
    /// something to retry, goes on through the endpoint.
    pub async fn post(
        &self,
        endpoint: &str,
        connection_id: &str,
        data: Bytes,
        content_type: &'static str,
        trace: &[(http::HeaderName, HeaderValue)],
    ) -> PushOutcome {
        if let Some(gather) = &self.gather {
            let carry = gather.carrier();
            let owner = carry.batch.owner_of(endpoint, connection_id);
            let to = owner.as_deref().unwrap_or(endpoint);
            if trace.is_empty()
                && connection_id.len() <= carried::MAX_ID
                && carry.takes(to)
                && carry.batch.carries_posts(to)
            {
                let post = Pending {
                    id: connection_id.to_owned(),
                    frame: data,
                    content_type,
                    home: owner.is_some().then(|| endpoint.to_owned()),
                };
                return gather.post(to, post).await;
            }
            if let Some(owner) = &owner {
                match self
                    .single
                    .once(owner, connection_id, data.clone(), content_type, trace)
                    .await
                {
                    Ok(outcome) => return outcome,
                    Err(Unsettled::NoAnswer) => carry.batch.owner_unanswered(owner, 1),
                    Err(Unsettled::Retry) => {}
                }
            }
        }
        self.single
            .post(endpoint, connection_id, data, content_type, trace)
            .await
    }
}

impl Single {
    fn new(sdk: &SdkConfig) -> Self {
        let timeouts = sdk.timeout_config();
        let retry = sdk.retry_config();
        Single {
            http: Pool::new(
                defaults::PUSH_POOL_IDLE,
                defaults::PUSH_POOL_MAX_IDLE,
                timeouts
                    .and_then(|t| t.connect_timeout())
                    .unwrap_or(defaults::AWS_MAX_CONNECT),
            ),
            credentials: CachedCredentials::new(sdk),
            signer: PostSigner::new(
                sdk.region()
                    .map_or_else(|| defaults::REGION.to_string(), |r| r.to_string()),
            ),
            max_attempts: retry.map_or(3, |r| r.max_attempts()).max(1),
            initial_backoff: retry.map_or(Duration::from_secs(1), |r| r.initial_backoff()),
            max_backoff: retry.map_or(Duration::from_secs(20), |r| r.max_backoff()),
            operation_timeout: timeouts.and_then(|t| t.operation_timeout()),
            attempt_timeout: timeouts.and_then(|t| t.operation_attempt_timeout()),
        }
    }

    /// PostToConnection of `data` with this `Content-Type`, retried like the SDK's operation.
    async fn post(
        &self,
        endpoint: &str,
        connection_id: &str,
        data: Bytes,
        content_type: &'static str,
        trace: &[(http::HeaderName, HeaderValue)],
    ) -> PushOutcome {
        let url = post_url(endpoint, connection_id);
        let attempts = async {
            let mut attempt = 1;
            loop {
                let result = self.attempt(&url, data.clone(), content_type, trace).await;
                if attempt >= self.max_attempts || !retryable(&result) {
                    return result;
                }
                tokio::time::sleep(backoff(self.initial_backoff, self.max_backoff, attempt)).await;
                attempt += 1;
            }
        };
        let result = match self.operation_timeout {
            Some(bound) => tokio::time::timeout(bound, attempts)
                .await
                .unwrap_or_else(|_| Attempt::NoAnswer("timed out".into())),
            None => attempts.await,
        };
        outcome(result)
    }

    /// One attempt, without retries: its outcome, or why it settled nothing.
    async fn once(
        &self,
        endpoint: &str,
        connection_id: &str,
        data: Bytes,
        content_type: &'static str,
        trace: &[(http::HeaderName, HeaderValue)],
    ) -> Result<PushOutcome, Unsettled> {
        let result = self
            .attempt(&post_url(endpoint, connection_id), data, content_type, trace)
            .await;
        match result {
            Attempt::NoAnswer(_) => Err(Unsettled::NoAnswer),
            r if retryable(&r) => Err(Unsettled::Retry),
            r => Ok(outcome(r)),
        }
    }

    async fn attempt(
        &self,
        url: &str,
        data: Bytes,
        content_type: &'static str,
        trace: &[(http::HeaderName, HeaderValue)],
    ) -> Attempt {
        match self.exchange(url, data, content_type, trace).await {
            Ok((parts, _)) if parts.status.is_success() => Attempt::Answer(parts.status.as_u16(), None, String::new()),
            Ok((parts, body)) => {
                let (code, message) = error_of(&parts.headers, &body);
                Attempt::Answer(parts.status.as_u16(), code, message)
            }
            Err(why) => Attempt::NoAnswer(why),
        }
    }

    /// One signed request and its answer, within the attempt timeout.
    async fn exchange(
        &self,
        url: &str,
        data: Bytes,
        content_type: &'static str,
        trace: &[(http::HeaderName, HeaderValue)],
    ) -> Result<(http::response::Parts, Bytes), String> {
        let work = async {
            let mut req = Request::new(Full::new(data.clone()));
            *req.method_mut() = Method::POST;
            *req.uri_mut() = url.parse().map_err(|e| format!("{url}: {e}"))?;
            let host = req.uri().authority().map(|a| a.as_str().to_owned()).unwrap_or_default();
            let headers = req.headers_mut();
            headers.insert(
                http::header::HOST,
                HeaderValue::from_str(&host).map_err(|e| e.to_string())?,
            );
            headers.insert(
                http::header::CONTENT_TYPE,
                crate::http_server::content_type::of(content_type),
            );
            // The push's trace context (`traceparent`, `tracestate`), signed with the rest.
            for (name, value) in trace {
                headers.insert(name.clone(), value.clone());
            }
            let credentials = self.credentials.get().await?;
            self.signer
                .sign(&credentials, &mut req, &data, crate::timefmt::now_ms())?;
            self.http.call(req, MAX_ANSWER_BYTES).await.map_err(|e| match e {
                e @ crate::http_client::CallError::Body(_) => e.to_string(),
                e => format!("dispatch failure: {e}"),
            })
        };
        match self.attempt_timeout {
            Some(bound) => tokio::time::timeout(bound, work)
                .await
                .unwrap_or_else(|_| Err("timed out".into())),
            None => work.await,
        }
    }
}

/// A post waiting to share a call.
struct Pending {
    id: String,
    frame: Bytes,
    content_type: &'static str,
    /// The push endpoint, when the call goes to the connection's owner instead: where the post
    /// goes on when the owner does not settle it.
    home: Option<String>,
}

impl Carried for Pending {
    fn id(&self) -> &str {
        &self.id
    }
    fn frame(&self) -> &[u8] {
        &self.frame
    }
    fn binary(&self) -> bool {
        self.content_type == "application/octet-stream"
    }
}

/// Sends the calls that carry many posts.
struct Carry {
    single: Arc<Single>,
    /// Endpoints that did not take a call, and when.
    refused: Mutex<HashMap<String, Instant>>,
    batch: Arc<BatchClient>,
}

impl Carry {
    /// Whether to offer posts to `endpoint` many to a call.
    fn takes(&self, endpoint: &str) -> bool {
        let refused = self.refused.lock().unwrap_or_else(|p| p.into_inner());
        refused.get(endpoint).is_none_or(|at| at.elapsed() >= REFUSAL_HOLD)
    }

    fn refuse(&self, endpoint: &str) {
        let mut refused = self.refused.lock().unwrap_or_else(|p| p.into_inner());
        if refused.len() >= defaults::PUSH_MAX_CLIENTS {
            refused.clear();
        }
        refused.insert(endpoint.to_owned(), Instant::now());
    }

    /// The post alone, retried, answered from its own task (a retry's back-off does not hold up
    /// the posts behind it).
    fn alone(&self, endpoint: &str, post: Pending, answerer: Answerer<PushOutcome>) {
        let single = self.single.clone();
        let endpoint = endpoint.to_owned();
        tokio::spawn(async move {
            let outcome = single
                .post(&endpoint, &post.id, post.frame, post.content_type, &[])
                .await;
            answerer.answer(outcome);
        });
    }
}

impl Carrier for Carry {
    type Post = Pending;
    type Answer = PushOutcome;

    async fn send(&self, endpoint: &str, batch: Vec<(Pending, Answerer<PushOutcome>)>) {
        let body = carried::encode(batch.iter().map(|(p, _)| p));
        let url = format!("{endpoint}{POSTS_PATH}");
        match self.single.exchange(&url, body, "application/octet-stream", &[]).await {
            Ok((parts, outcomes)) if parts.status == http::StatusCode::OK && outcomes.len() == batch.len() => {
                self.batch.count_posts("ok");
                for ((post, answerer), outcome) in batch.into_iter().zip(outcomes.iter().copied()) {
                    match outcome {
                        DELIVERED => answerer.answer(PushOutcome::Delivered),
                        GONE => answerer.answer(PushOutcome::Gone),
                        // 429 or 503: alone, retried as the SDK retries them.
                        _ => {
                            let to = post.home.clone();
                            self.alone(to.as_deref().unwrap_or(endpoint), post, answerer)
                        }
                    }
                }
            }
            Ok((parts, _)) => {
                // An older gateway, or not a socketless one: one by one, in order.
                self.batch.count_posts("refused");
                tracing::debug!(endpoint, status = %parts.status, "the push endpoint does not take posts many to a call: posting them one by one");
                self.refuse(endpoint);
                for (post, answerer) in batch {
                    let to = post.home.as_deref().unwrap_or(endpoint);
                    let outcome = self.single.post(to, &post.id, post.frame, post.content_type, &[]).await;
                    answerer.answer(outcome);
                }
            }
            Err(why) => {
                // No answer: each post alone, with its own retries (as if it had gone alone).
                self.batch.count_posts("unreachable");
                tracing::debug!(endpoint, reason = %why, "a call of posts had no answer: retrying them one by one");
                let owned = batch.iter().filter(|(p, _)| p.home.is_some()).count();
                if owned > 0 {
                    self.batch.owner_unanswered(endpoint, owned);
                }
                for (post, answerer) in batch {
                    let to = post.home.clone();
                    self.alone(to.as_deref().unwrap_or(endpoint), post, answerer);
                }
            }
        }
    }

    fn dropped() -> PushOutcome {
        PushOutcome::Failed("the post was dropped before it was sent".into())
    }
}

/// The error code (`x-amzn-errortype`, up to a `:`, or the body's `__type`/`code`) and
/// message of an error answer, as the SDK's REST-JSON parser reads them.
fn error_of(headers: &http::HeaderMap, body: &[u8]) -> (Option<String>, String) {
    let parsed: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let field = |k: &str| parsed.get(k).and_then(|v| v.as_str()).map(str::to_owned);
    let code = headers
        .get("x-amzn-errortype")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| field("__type"))
        .or_else(|| field("code"))
        .map(|c| {
            let c = c.split(':').next().unwrap_or_default();
            c.rsplit('#').next().unwrap_or_default().to_owned()
        })
        .filter(|c| !c.is_empty());
    let message = field("message").or_else(|| field("Message")).unwrap_or_default();
    (code, message)
}

/// Whether the SDK's standard retry strategy would try again after this attempt.
fn retryable(result: &Attempt) -> bool {
    match result {
        Attempt::NoAnswer(_) => true,
        Attempt::Answer(status, code, _) => {
            matches!(status, 500 | 502 | 503 | 504) || code.as_deref().is_some_and(|c| THROTTLING.contains(&c))
        }
    }
}

/// The wait before retry `attempt` (1 for the first retry): a random share of
/// `initial · 2^(attempt-1)`, at most `max`, as the SDK's standard strategy waits.
fn backoff(initial: Duration, max: Duration, attempt: u32) -> Duration {
    let mut b = [0u8; 4];
    let share = if getrandom::fill(&mut b).is_ok() {
        f64::from(u32::from_le_bytes(b)) / f64::from(u32::MAX)
    } else {
        1.0
    };
    initial
        .mul_f64(2f64.powi(attempt.saturating_sub(1).min(30) as i32))
        .min(max)
        .mul_f64(share)
}

/// What a push did, classified as for the SDK's errors.
fn outcome(result: Attempt) -> PushOutcome {
    match result {
        Attempt::Answer(200..=299, ..) => PushOutcome::Delivered,
        Attempt::Answer(status, code, message) => match code.as_deref() {
            Some("GoneException") => PushOutcome::Gone,
            Some("LimitExceededException") => PushOutcome::Throttled,
            Some("PayloadTooLargeException") => PushOutcome::TooLarge,
            Some("ForbiddenException") => PushOutcome::Forbidden,
            Some(code) => PushOutcome::Failed(format!("{code}: {message}")),
            None => PushOutcome::Failed(format!("Unknown: HTTP {status} {message}")),
        },
        Attempt::NoAnswer(why) => PushOutcome::Failed(why),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, code: Option<&str>) -> Attempt {
        Attempt::Answer(status, code.map(str::to_owned), "m".into())
    }

    #[test]
    fn errors_read_like_the_sdk() {
        let mut h = http::HeaderMap::new();
        h.insert(
            "x-amzn-errortype",
            HeaderValue::from_static("GoneException:http://internal/"),
        );
        assert_eq!(
            error_of(&h, br#"{"message":"gone"}"#),
            (Some("GoneException".into()), "gone".into())
        );
        let none = http::HeaderMap::new();
        assert_eq!(
            error_of(&none, br#"{"__type":"com.amazon#ForbiddenException","Message":"no"}"#),
            (Some("ForbiddenException".into()), "no".into())
        );
        assert_eq!(error_of(&none, b"not json"), (None, String::new()));
    }

    #[test]
    fn outcomes_and_retries() {
        assert_eq!(outcome(answer(200, None)), PushOutcome::Delivered);
        assert_eq!(outcome(answer(410, Some("GoneException"))), PushOutcome::Gone);
        assert_eq!(
            outcome(answer(429, Some("LimitExceededException"))),
            PushOutcome::Throttled
        );
        assert_eq!(
            outcome(answer(413, Some("PayloadTooLargeException"))),
            PushOutcome::TooLarge
        );
        assert_eq!(outcome(answer(403, Some("ForbiddenException"))), PushOutcome::Forbidden);
        assert_eq!(
            outcome(answer(400, Some("BadRequestException"))),
            PushOutcome::Failed("BadRequestException: m".into())
        );
        assert!(retryable(&answer(503, Some("ServiceUnavailableException"))));
        assert!(retryable(&answer(429, Some("LimitExceededException"))));
        assert!(retryable(&Attempt::NoAnswer("refused".into())));
        assert!(!retryable(&answer(410, Some("GoneException"))));
        assert!(!retryable(&answer(403, Some("ForbiddenException"))));
        assert!(!retryable(&answer(400, None)));
    }

    #[test]
    fn backoff_is_bounded_and_grows() {
        let (initial, max) = (Duration::from_millis(100), Duration::from_millis(300));
        for attempt in 1..=5 {
            let cap = initial.mul_f64(2f64.powi(attempt as i32 - 1)).min(max);
            assert!(backoff(initial, max, attempt) <= cap, "attempt {attempt}");
        }
    }

    #[test]
    fn ids_are_encoded_as_path_labels() {
        let enc = |id| percent_encoding::utf8_percent_encode(id, LABEL).to_string();
        assert_eq!(enc("abc="), "abc%3D");
        assert_eq!(enc("a/b+c"), "a%2Fb%2Bc");
        assert_eq!(enc("A-z_0.9~"), "A-z_0.9~");
    }
}

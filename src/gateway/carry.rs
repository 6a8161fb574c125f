//! `$disconnect` calls many to a call, to a backend that takes them.
//!
//! Nothing waits for a `$disconnect`'s answer, yet in a connect storm its exchange with the
//! backend costs the gateway and the backend about as much as the handshake's own work. So the
//! gateway sends them many to a call where it can: `serve` answers each `/disconnect` with
//! [`contract::CARRIES_DISCONNECTS`], the path on its origin where it takes them framed together
//! (see [`crate::carried::requests`]); after such an answer, the `$disconnect` calls to that
//! origin share calls in the lanes posts use ([`crate::carried::Gatherer`]: one call under way
//! per origin, the calls that arrive meanwhile go together in the next). Each keeps its own
//! mapped headers and body, and `serve` handles each as if it had come alone, so the only
//! difference a backend sees is fewer exchanges.
//!
//! No other backend sends that header, so every other backend gets `$disconnect` one call at a
//! time, as API Gateway sends it. A call the backend refuses (any status but 200, an answer that
//! is not the statuses) sends its `$disconnect` calls alone, and the origin gets them alone for
//! [`REFUSAL_HOLD`]; a call with no answer sends its `$disconnect` calls alone once each, as they
//! would have gone.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Uri};
use http_body_util::Full;

use super::integration::{self, HttpClient, Outcome};
use super::metrics::CarriedMetrics;
use super::template::Integration;
use crate::carried::requests::{self, Carried};
use crate::carried::{Answerer, Carrier, Gatherer, MAX_ITEMS, Weighed};
use crate::contract;
use crate::gateway::mapping::Mapped;

/// An origin that refused a call gets its `$disconnect` calls alone this long.
pub const REFUSAL_HOLD: Duration = Duration::from_secs(60);

/// Origins remembered at most (a template names one or a few).
const MAX_ORIGINS: usize = 64;

/// The `$disconnect` calls waiting for each backend origin that takes them many to a call.
pub struct Disconnects(Arc<Gatherer<Carry>>);

/// What the gateway knows of an origin (`host:port`).
enum Origin {
    /// It takes `$disconnect` calls many to a call at this URL.
    Takes(Arc<str>),
    /// It refused such a call at this time.
    Refused(Instant),
}

struct Carry {
    client: Arc<HttpClient>,
    origins: Mutex<HashMap<String, Origin>>,
    metrics: CarriedMetrics,
}

/// One `$disconnect` call waiting to share a call.
pub struct Item {
    uri: Uri,
    carried: Carried,
    timeout: Duration,
    queued: Instant,
}

impl Weighed for Item {
    fn weight(&self) -> usize {
        self.carried.weight()
    }
}

impl Disconnects {
    pub fn new(client: Arc<HttpClient>, metrics: CarriedMetrics) -> Self {
        Disconnects(Arc::new(Gatherer::new(Carry {
            client,
            origins: Mutex::new(HashMap::new()),
            metrics,
        })))
    }

    /// Calls `integration` for one `$disconnect`: many to a call when its origin takes that,
    /// otherwise alone (learning from the answer whether the origin does). The outcome, and
    /// how long the call took.
    pub async fn call(
        &self,
        integration: &Integration,
        mapped: Mapped,
        body: Bytes,
        timeout: Duration,
    ) -> (Outcome, Duration) {
        let carry = self.0.carrier();
        let (uri, headers) = match integration::head(integration, mapped) {
            Ok(head) => head,
            Err(e) => return (Outcome::Failed(e), Duration::ZERO),
        };
        if integration.method == Method::POST {
            if let Some(url) = carry.url_for(&uri) {
                let carried = Carried {
                    path_and_query: uri.path_and_query().map_or("/", |p| p.as_str()).to_owned(),
                    headers,
                    body,
                };
                if carried.fits() {
                    let item = Item {
                        uri,
                        carried,
                        timeout,
                        queued: Instant::now(),
                    };
                    return self.0.post(&url, item).await;
                }
                return carry
                    .alone(
                        integration::request(&Method::POST, uri, carried.headers, carried.body),
                        timeout,
                    )
                    .await;
            }
        }
        let req = integration::request(&integration.method, uri, headers, body);
        carry.alone(req, timeout).await
    }
}

/// The `host:port` of an `http` URI.
fn origin_of(uri: &Uri) -> Option<&str> {
    (uri.scheme() == Some(&http::uri::Scheme::HTTP))
        .then(|| uri.authority().map(|a| a.as_str()))
        .flatten()
}

impl Carry {
    /// Where `uri`'s origin takes `$disconnect` calls many to a call, if it does.
    fn url_for(&self, uri: &Uri) -> Option<Arc<str>> {
        let origin = origin_of(uri)?;
        match self.origins.lock().unwrap_or_else(|p| p.into_inner()).get(origin)? {
            Origin::Takes(url) => Some(url.clone()),
            Origin::Refused(_) => None,
        }
    }

    /// Sends one `$disconnect` call alone, and learns from its answer whether the origin takes
    /// them many to a call.
    async fn alone(&self, req: Request<Full<Bytes>>, timeout: Duration) -> (Outcome, Duration) {
        let uri = req.uri().clone();
        let (outcome, took) = integration::send_timed(&self.client, req, timeout).await;
        if let Outcome::Response { headers, .. } = &outcome {
            if let Some(path) = headers.get(contract::CARRIES_DISCONNECTS) {
                self.learn(&uri, path.as_bytes());
            }
        }
        (outcome, took)
    }

    fn learn(&self, uri: &Uri, path: &[u8]) {
        let Some(origin) = origin_of(uri) else { return };
        let Ok(path) = std::str::from_utf8(path) else { return };
        if !path.starts_with('/') || path.parse::<http::uri::PathAndQuery>().is_err() {
            return;
        }
        let mut origins = self.origins.lock().unwrap_or_else(|p| p.into_inner());
        match origins.get(origin) {
            Some(Origin::Takes(_)) => return,
            Some(Origin::Refused(at)) if at.elapsed() < REFUSAL_HOLD => return,
            _ => {}
        }
        if origins.len() >= MAX_ORIGINS && !origins.contains_key(origin) {
            return;
        }
        let url: Arc<str> = format!("http://{origin}{path}").into();
        tracing::debug!(%url, "the backend takes $disconnect calls many to a call");
        origins.insert(origin.to_owned(), Origin::Takes(url));
    }

    fn refuse(&self, url: &str) {
        let mut origins = self.origins.lock().unwrap_or_else(|p| p.into_inner());
        for origin in origins.values_mut() {
            if matches!(origin, Origin::Takes(u) if &**u == url) {
                *origin = Origin::Refused(Instant::now());
            }
        }
    }

    /// Each `$disconnect` call of a call that did not carry them, alone, at once (a call does
    /// not wait for the one before it).
    fn each_alone(&self, batch: Vec<(Item, Answerer<(Outcome, Duration)>)>) {
        for (item, answerer) in batch {
            let client = self.client.clone();
            tokio::spawn(async move {
                let req = integration::request(&Method::POST, item.uri, item.carried.headers, item.carried.body);
                let (outcome, _) = integration::send_timed(&client, req, item.timeout).await;
                answerer.answer((outcome, item.queued.elapsed()));
            });
        }
    }
}

impl Carrier for Carry {
    type Post = Item;
    type Answer = (Outcome, Duration);

    async fn send(&self, url: &str, batch: Vec<(Item, Answerer<Self::Answer>)>) {
        let n = batch.len();
        let body = requests::encode(batch.iter().map(|(item, _)| &item.carried));
        let timeout = batch.iter().map(|(item, _)| item.timeout).max().unwrap_or_default();
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = match url.parse() {
            Ok(uri) => uri,
            Err(_) => return self.each_alone(batch),
        };
        req.headers_mut().insert(
            http::header::CONTENT_TYPE,
            crate::http_server::content_type::OCTET_STREAM.clone(),
        );
        match tokio::time::timeout(timeout, self.client.call(req, 2 * MAX_ITEMS)).await {
            Ok(Ok((parts, answer))) => {
                let statuses = (parts.status == http::StatusCode::OK)
                    .then(|| requests::decode_statuses(answer, n))
                    .flatten();
                let Some(statuses) = statuses else {
                    self.metrics.call("refused", n);
                    tracing::debug!(url, status = %parts.status, "the backend did not take $disconnect calls many to a call: sending them alone");
                    self.refuse(url);
                    return self.each_alone(batch);
                };
                self.metrics.call("answered", n);
                for ((item, answerer), status) in batch.into_iter().zip(statuses) {
                    let outcome = match http::StatusCode::from_u16(status) {
                        Ok(status) => Outcome::Response {
                            status,
                            headers: http::HeaderMap::new(),
                            body: Bytes::new(),
                        },
                        Err(_) => Outcome::Failed(format!("status {status} is not one")),
                    };
                    answerer.answer((outcome, item.queued.elapsed()));
                }
            }
            Ok(Err(why)) => {
                self.metrics.call("unanswered", n);
                tracing::debug!(url, reason = %why, "a call of $disconnect calls had no answer: sending them alone");
                self.each_alone(batch);
            }
            Err(_) => {
                self.metrics.call("timed_out", n);
                for (item, answerer) in batch {
                    answerer.answer((Outcome::Timeout, item.queued.elapsed()));
                }
            }
        }
    }

    fn dropped() -> Self::Answer {
        (
            Outcome::Failed("the call was dropped before it was sent".into()),
            Duration::ZERO,
        )
    }
}

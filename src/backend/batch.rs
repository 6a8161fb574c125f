//! The client of a socketless gateway's batch extension of `@connections`:
//! `GET {endpoint}/@socketless/v1/info` says whether the push endpoint is a socketless gateway
//! (asked once per endpoint, the answer cached), and `POST {endpoint}/@socketless/v1/deliver`
//! carries one frame to up to 10,000 connections at once. Requests are signed with SigV4
//! (service `execute-api`) with the same credentials the `@connections` pushes use. API Gateway
//! has no such path (it answers 403 or 404), so `--push-batch auto` falls back to one
//! PostToConnection per member there.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde::Deserialize;

use super::settings::{PushBatch, PushRoute};
use crate::defaults;
use crate::http_client::Pool;

/// The extension's paths under the stage, beside `@connections`.
pub const INFO_PATH: &str = "/@socketless/v1/info";
pub const DELIVER_PATH: &str = "/@socketless/v1/deliver";
/// Bound on one `info` or `deliver` call, connecting included.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest answer read: a `deliver` answer lists at most 10,000 ids.
const MAX_ANSWER_BYTES: usize = 1024 * 1024;

/// What a socketless gateway's `info` says about `deliver`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_ids: usize,
    pub max_bytes: usize,
    /// Whether it also takes posts many to a call (`@socketless/v1/posts`, see
    /// `direct_post.rs`); older socketless gateways do not say so and do not.
    pub posts: bool,
}

#[derive(Deserialize)]
struct InfoAnswer {
    gateway: String,
    deliver: DeliverInfo,
    #[serde(default)]
    posts: Option<PostsInfo>,
    #[serde(default)]
    replicas: Option<ReplicasInfo>,
}

/// Where a socketless gateway's replicas are (each one's base URL, or a template with
/// `{ordinal}`), and the stage they serve.
#[derive(Deserialize)]
struct ReplicasInfo {
    #[serde(default)]
    urls: Option<Vec<String>>,
    #[serde(default)]
    template: Option<String>,
    stage: String,
}

/// The characters a path segment keeps unencoded (RFC 3986's unreserved ones).
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// The push endpoints of an endpoint's replicas, by ordinal.
#[derive(Debug, PartialEq, Eq)]
enum Owners {
    /// Each replica's endpoint (`{url}/{stage}`), index = ordinal.
    List(Vec<String>),
    /// `{template}/{stage}`, with `{ordinal}` in it.
    Template(String),
}

impl Owners {
    /// From an `info` answer's `replicas`: only plain-HTTP base URLs, as `--push-endpoint` takes
    /// for a socketless gateway (an `https` one goes through the SDK, which posts to one URL).
    fn of(info: &ReplicasInfo) -> Option<Owners> {
        let plain = |u: &str| u.starts_with("http://") && !u.contains('?') && !u.contains('#');
        let stage = format!("/{}", percent_encoding::utf8_percent_encode(&info.stage, SEGMENT));
        match (&info.urls, &info.template) {
            (Some(urls), None) if !urls.is_empty() && urls.len() <= 256 && urls.iter().all(|u| plain(u)) => {
                Some(Owners::List(
                    urls.iter()
                        .map(|u| format!("{}{stage}", u.trim_end_matches('/')))
                        .collect(),
                ))
            }
            (None, Some(t)) if plain(t) && t.contains(ORDINAL) => {
                Some(Owners::Template(format!("{}{stage}", t.trim_end_matches('/'))))
            }
            _ => None,
        }
    }

    fn endpoint(&self, ordinal: u8) -> Option<String> {
        match self {
            Owners::List(endpoints) => endpoints.get(usize::from(ordinal)).cloned(),
            Owners::Template(t) => Some(t.replacen(ORDINAL, &ordinal.to_string(), 1)),
        }
    }
}

/// The placeholder of a replica URL template.
const ORDINAL: &str = "{ordinal}";

/// How long a connection's owner that did not answer is passed over for the endpoint.
const OWNER_HOLD: Duration = Duration::from_secs(60);

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PostsInfo {
    max_items: usize,
    max_bytes: usize,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeliverInfo {
    max_ids: usize,
    max_bytes: usize,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FailedId {
    connection_id: String,
    status: u16,
}

#[derive(Deserialize)]
struct DeliverAnswer {
    delivered: u64,
    #[serde(default)]
    gone: Vec<String>,
    #[serde(default)]
    failed: Vec<FailedId>,
}

/// What one `deliver` call did for its ids.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub delivered: u64,
    /// Ids the gateway reported gone (no such connection): to prune.
    pub gone: Vec<String>,
    /// Ids not delivered for another reason, with the status (429, 503, ...; 502 when the call
    /// itself failed).
    pub failed: Vec<(String, u16)>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    operation: &'static str,
    outcome: &'static str,
}

/// Whether an endpoint takes batches, as far as this process knows.
#[derive(Clone, Copy)]
enum Known {
    Batch(Limits),
    NotSocketless,
}

pub struct BatchClient {
    mode: PushBatch,
    route: PushRoute,
    sdk: aws_config::SdkConfig,
    credentials: crate::aws::CachedCredentials,
    http: Pool,
    known: Mutex<HashMap<String, Known>>,
    /// The replicas of the endpoints whose `info` listed them (`--push-route owner`).
    owners: Mutex<HashMap<String, Arc<Owners>>>,
    /// Owners that did not answer a post, and when: posts go through the endpoint meanwhile.
    unanswered: Mutex<HashMap<String, Instant>>,
    /// Endpoints whose `info` is being asked in the background (see [`BatchClient::carries_posts`]).
    asking: Mutex<HashSet<String>>,
    calls: Family<CallLabels, Counter>,
    /// Posts sent to their connection's owner, and those sent on through the endpoint after it.
    to_owner: Counter,
    owner_fallback: Counter,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: &'static str,
}

/// Why a call failed before an answer was read.
type CallError = String;

impl BatchClient {
    pub fn new(mode: PushBatch, route: PushRoute, sdk: aws_config::SdkConfig, registry: &mut Registry) -> Arc<Self> {
        let calls = Family::<CallLabels, Counter>::default();
        registry.register(
            "socketless_push_batch_calls",
            "Calls to a socketless gateway's batch extension, by operation (info, deliver, posts) and outcome",
            calls.clone(),
        );
        let routed = Family::<RouteLabels, Counter>::default();
        registry.register(
            "socketless_push_owner_routes",
            "Posts to a replicated socketless gateway by route: owner (straight to the replica holding the connection), fallback (through the endpoint after the owner did not answer)",
            routed.clone(),
        );
        let to_owner = routed.get_or_create(&RouteLabels { route: "owner" }).clone();
        let owner_fallback = routed.get_or_create(&RouteLabels { route: "fallback" }).clone();
        Arc::new(BatchClient {
            mode,
            route,
            credentials: crate::aws::CachedCredentials::new(&sdk),
            sdk,
            http: Pool::new(defaults::PUSH_POOL_IDLE, defaults::PUSH_POOL_MAX_IDLE, CALL_TIMEOUT),
            known: Mutex::new(HashMap::new()),
            owners: Mutex::new(HashMap::new()),
            unanswered: Mutex::new(HashMap::new()),
            asking: Mutex::new(HashSet::new()),
            calls,
            to_owner,
            owner_fallback,
        })
    }

    pub fn mode(&self) -> PushBatch {
        self.mode
    }

    fn count(&self, operation: &'static str, outcome: &'static str) {
        self.calls.get_or_create(&CallLabels { operation, outcome }).inc();
    }

    /// The push endpoint of the replica holding `connection_id`, when `endpoint` is a replicated
    /// socketless gateway whose `info` said where its replicas are (`--push-route owner`), the id
    /// is one it issued, and that replica has not just failed to answer. `None`: post to
    /// `endpoint`, whose replicas forward what they do not hold. It never waits: until the
    /// answer to `info` is in, posts go to the endpoint.
    pub fn owner_of(&self, endpoint: &str, connection_id: &str) -> Option<String> {
        if self.mode == PushBatch::Off || self.route == PushRoute::Endpoint {
            return None;
        }
        let ordinal = crate::gateway::ids::ordinal_of(connection_id)?;
        let owners = self
            .owners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(endpoint)
            .cloned()?;
        let owner = owners.endpoint(ordinal)?;
        {
            let mut unanswered = self.unanswered.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(at) = unanswered.get(&owner) {
                if at.elapsed() < OWNER_HOLD {
                    return None;
                }
                unanswered.remove(&owner);
            }
        }
        self.to_owner.inc();
        Some(owner)
    }

    /// An owner [`BatchClient::owner_of`] named did not answer: its posts go through the
    /// endpoint for a while (it may be gone, or not reachable from here).
    pub fn owner_unanswered(&self, owner: &str, posts: usize) {
        self.owner_fallback.inc_by(posts as u64);
        let mut unanswered = self.unanswered.lock().unwrap_or_else(|p| p.into_inner());
        if unanswered.len() >= defaults::PUSH_MAX_CLIENTS {
            unanswered.clear();
        }
        if unanswered.insert(owner.to_owned(), Instant::now()).is_none() {
            tracing::warn!(
                owner,
                "a connection's owner did not answer a post: posting through the push endpoint for a minute (--push-route endpoint if serve cannot reach the replicas by these URLs)"
            );
        }
    }

    /// Counts a call carrying many posts (`direct_post.rs`): `ok`, `refused` or `unreachable`.
    pub fn count_posts(&self, outcome: &'static str) {
        self.count("posts", outcome);
    }

    /// Whether to batch to `endpoint`: its limits when it is a socketless gateway (asked once,
    /// then cached), `None` to push one by one. With `--push-batch on`, an endpoint without the
    /// extension is an error naming it.
    pub async fn limits(&self, endpoint: &str) -> Result<Option<Limits>, String> {
        if self.mode == PushBatch::Off {
            return Ok(None);
        }
        let cached = self
            .known
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(endpoint)
            .copied();
        let known = match cached {
            Some(known) => known,
            None => match self.info(endpoint).await {
                Ok(known) => {
                    let mut map = self.known.lock().unwrap_or_else(|p| p.into_inner());
                    if map.len() >= defaults::PUSH_MAX_CLIENTS {
                        map.clear();
                    }
                    map.insert(endpoint.to_owned(), known);
                    known
                }
                // Unreachable now: not cached, so the next publish asks again.
                Err(why) if self.mode == PushBatch::On => {
                    return Err(format!("{endpoint}{INFO_PATH} could not be asked: {why}"));
                }
                Err(_) => Known::NotSocketless,
            },
        };
        match known {
            Known::Batch(limits) => Ok(Some(limits)),
            Known::NotSocketless if self.mode == PushBatch::On => Err(format!(
                "{endpoint} is not a socketless gateway ({INFO_PATH} did not answer as one) and --push-batch is on"
            )),
            Known::NotSocketless => Ok(None),
        }
    }

    /// Whether posts to `endpoint` may share calls, from what is known of it now: it never
    /// waits. An endpoint not asked yet gets its `info` asked in the background (one question
    /// at a time), and its posts go alone until the answer says otherwise.
    pub fn carries_posts(self: &Arc<Self>, endpoint: &str) -> bool {
        if self.mode == PushBatch::Off {
            return false;
        }
        let known = self
            .known
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(endpoint)
            .copied();
        match known {
            Some(Known::Batch(limits)) => limits.posts,
            Some(Known::NotSocketless) => false,
            None => {
                let mut asking = self.asking.lock().unwrap_or_else(|p| p.into_inner());
                if asking.len() < defaults::PUSH_MAX_CLIENTS && asking.insert(endpoint.to_owned()) {
                    let client = self.clone();
                    let endpoint = endpoint.to_owned();
                    tokio::spawn(async move {
                        let _ = client.limits(&endpoint).await;
                        client
                            .asking
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .remove(&endpoint);
                    });
                }
                false
            }
        }
    }

    /// For `--push-batch on` with a fixed endpoint, at start-up: an error when the endpoint
    /// answers but not as a socketless gateway. One that cannot be reached yet (it may start
    /// after `serve`) is only logged; publishes ask again.
    pub async fn check_required(&self, endpoint: &str) -> Result<(), String> {
        match self.info(endpoint).await {
            Ok(Known::NotSocketless) => Err(format!(
                "{endpoint} is not a socketless gateway ({INFO_PATH} did not answer as one) and --push-batch is on"
            )),
            Ok(known) => {
                self.known
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(endpoint.to_owned(), known);
                Ok(())
            }
            Err(why) => {
                tracing::warn!(endpoint, reason = %why, "--push-batch on: the push endpoint cannot be asked yet; publishes will ask again");
                Ok(())
            }
        }
    }

    /// Asks `info`: any answer but a socketless gateway's 200 means "not a socketless gateway".
    async fn info(&self, endpoint: &str) -> Result<Known, CallError> {
        let (status, body) = match self
            .call(Method::GET, &format!("{endpoint}{INFO_PATH}"), Bytes::new())
            .await
        {
            Ok(answer) => answer,
            Err(why) => {
                self.count("info", "unreachable");
                return Err(why);
            }
        };
        let answer = (status == StatusCode::OK)
            .then(|| serde_json::from_slice::<InfoAnswer>(&body).ok())
            .flatten()
            .filter(|a| a.gateway == "socketless" && a.deliver.max_ids > 0 && a.deliver.max_bytes > 0);
        Ok(match answer {
            Some(a) => {
                self.count("info", "socketless");
                if let Some(owners) = a.replicas.as_ref().and_then(Owners::of) {
                    tracing::info!(
                        endpoint,
                        "push endpoint is a replicated socketless gateway: posts go to each connection's owner"
                    );
                    let mut map = self.owners.lock().unwrap_or_else(|p| p.into_inner());
                    if map.len() >= defaults::PUSH_MAX_CLIENTS {
                        map.clear();
                    }
                    map.insert(endpoint.to_owned(), Arc::new(owners));
                }
                tracing::info!(
                    endpoint,
                    max_ids = a.deliver.max_ids,
                    "push endpoint is a socketless gateway: group fan-out is batched per replica"
                );
                Known::Batch(Limits {
                    max_ids: a.deliver.max_ids.min(defaults::DELIVER_MAX_IDS),
                    max_bytes: a.deliver.max_bytes,
                    // Its limits are this build's or larger: calls are built within this build's.
                    posts: a.posts.is_some_and(|p| {
                        p.max_items >= crate::carried::MAX_ITEMS && p.max_bytes >= crate::carried::MAX_BYTES
                    }),
                })
            }
            None => {
                self.count("info", "other");
                Known::NotSocketless
            }
        })
    }

    /// Delivers `data` to `ids` (all of one owner, within the limits) in one call.
    pub async fn deliver(&self, endpoint: &str, ids: &[String], data: &str) -> Delivery {
        let fail_all = |status: u16| Delivery {
            failed: ids.iter().map(|id| (id.clone(), status)).collect(),
            ..Delivery::default()
        };
        let body = match serde_json::to_vec(&serde_json::json!({ "connectionIds": ids, "data": data })) {
            Ok(b) => Bytes::from(b),
            Err(_) => return fail_all(500),
        };
        let (status, answer) = match self
            .call(Method::POST, &format!("{endpoint}{DELIVER_PATH}"), body)
            .await
        {
            Ok(a) => a,
            Err(why) => {
                self.count("deliver", "unreachable");
                tracing::warn!(endpoint, ids = ids.len(), reason = %why, "batch deliver failed");
                return fail_all(StatusCode::BAD_GATEWAY.as_u16());
            }
        };
        let parsed = (status == StatusCode::OK)
            .then(|| serde_json::from_slice::<DeliverAnswer>(&answer).ok())
            .flatten();
        let Some(parsed) = parsed else {
            self.count("deliver", "refused");
            tracing::warn!(
                endpoint,
                status = status.as_u16(),
                answer = %String::from_utf8_lossy(&answer[..answer.len().min(200)]),
                "batch deliver refused"
            );
            let status = if status.is_success() { 502 } else { status.as_u16() };
            return fail_all(status);
        };
        self.count("deliver", "ok");
        Delivery {
            delivered: parsed.delivered,
            gone: parsed.gone,
            failed: parsed.failed.into_iter().map(|f| (f.connection_id, f.status)).collect(),
        }
    }

    /// One signed call; the answer's status and body.
    pub(super) async fn call(&self, method: Method, url: &str, body: Bytes) -> Result<(StatusCode, Bytes), CallError> {
        let uri: http::Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
        let authority = uri.authority().ok_or_else(|| format!("{url}: no host"))?.clone();
        let mut req = Request::new(Full::new(body.clone()));
        *req.method_mut() = method;
        *req.uri_mut() = uri.clone();
        let headers = req.headers_mut();
        headers.insert(
            http::header::HOST,
            HeaderValue::from_str(authority.as_str()).map_err(|e| e.to_string())?,
        );
        if !body.is_empty() {
            headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        self.sign(&mut req, &body).await?;
        // A publish's trace goes on to the gateway (see `crate::trace`).
        let hop = crate::trace::Hop::current().child("serve batch deliver", crate::trace::Kind::Client, Vec::new);
        hop.inject(req.headers_mut());
        let secure = uri.scheme_str() == Some("https");
        let work = async {
            if !secure {
                let (parts, bytes) = self.http.call(req, MAX_ANSWER_BYTES).await.map_err(|e| match e {
                    e @ crate::http_client::CallError::Body(_) => e.to_string(),
                    e => format!("{e:?}"),
                })?;
                return Ok((parts.status, bytes));
            }
            let resp = send_tls(req, &authority).await?;
            let (parts, body) = resp.into_parts();
            let bytes = Limited::new(body, MAX_ANSWER_BYTES)
                .collect()
                .await
                .map_err(|e| format!("reading the answer: {e}"))?
                .to_bytes();
            Ok::<_, CallError>((parts.status, bytes))
        };
        tokio::time::timeout(CALL_TIMEOUT, work)
            .await
            .map_err(|_| format!("no answer within {CALL_TIMEOUT:?}"))?
    }

    /// Signs with SigV4 for `execute-api` in the configured region, with the SDK's credentials
    /// (kept until they near their expiry).
    async fn sign(&self, req: &mut Request<Full<Bytes>>, body: &[u8]) -> Result<(), CallError> {
        let region = self
            .sdk
            .region()
            .map_or_else(|| defaults::REGION.to_string(), |r| r.to_string());
        crate::aws::sign_execute_api(&self.credentials, &region, req, body).await
    }
}

type Boxed = http_body_util::combinators::BoxBody<Bytes, hyper::Error>;

/// One request over its own TLS connection (an `https` endpoint; batches are a few calls per
/// publish, so no pool is kept).
async fn send_tls(
    req: Request<Full<Bytes>>,
    authority: &http::uri::Authority,
) -> Result<http::Response<Boxed>, CallError> {
    let host = authority.host().to_owned();
    let port = authority.port_u16().unwrap_or(443);
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| format!("connecting to {host}:{port}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let name = rustls::pki_types::ServerName::try_from(host.clone()).map_err(|e| e.to_string())?;
    let tls = crate::probe::tls_connector()?
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS with {host}: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    Ok(resp.map(|b| b.boxed()))
}

/// How many ids of 16 characters fit one `deliver` body with this frame, within `limits`.
pub fn ids_per_call(limits: Limits, data: &str) -> usize {
    // The frame as a JSON string, the braces and keys, then `"id",` per id.
    let frame = serde_json::to_string(data).map_or(usize::MAX, |s| s.len());
    let room = limits.max_bytes.saturating_sub(frame + 64);
    (room / 19).min(limits.max_ids).min(defaults::DELIVER_MAX_IDS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replicas(v: serde_json::Value) -> Option<Owners> {
        Owners::of(&serde_json::from_value::<ReplicasInfo>(v).unwrap())
    }

    #[test]
    fn owners_come_from_the_replicas_an_info_lists() {
        let list = replicas(serde_json::json!({"urls": ["http://a:8081/", "http://b:8081"], "stage": "dev"})).unwrap();
        assert_eq!(list.endpoint(0).as_deref(), Some("http://a:8081/dev"));
        assert_eq!(list.endpoint(1).as_deref(), Some("http://b:8081/dev"));
        assert_eq!(list.endpoint(2), None, "no replica has that ordinal");
        let template = replicas(serde_json::json!({
            "template": "http://gw-{ordinal}.gw-peers.ns.svc:8081", "stage": "my stage"
        }))
        .unwrap();
        assert_eq!(
            template.endpoint(12).as_deref(),
            Some("http://gw-12.gw-peers.ns.svc:8081/my%20stage"),
            "the stage is one encoded path segment"
        );
    }

    #[test]
    fn hostile_replicas_that_serve_cannot_post_to_plainly_are_ignored() {
        for v in [
            serde_json::json!({"urls": ["https://a:8081"], "stage": "dev"}),
            serde_json::json!({"urls": ["http://a:8081", "ftp://b"], "stage": "dev"}),
            serde_json::json!({"urls": [], "stage": "dev"}),
            serde_json::json!({"urls": ["http://a:8081?x=1"], "stage": "dev"}),
            serde_json::json!({"template": "http://gw:8081", "stage": "dev"}),
            serde_json::json!({"template": "https://gw-{ordinal}:8081", "stage": "dev"}),
            serde_json::json!({"urls": ["http://a:8081"], "template": "http://gw-{ordinal}", "stage": "dev"}),
            serde_json::json!({"stage": "dev"}),
        ] {
            assert_eq!(replicas(v.clone()), None, "{v}");
        }
        let too_many: Vec<String> = (0..257).map(|i| format!("http://gw-{i}:8081")).collect();
        assert_eq!(replicas(serde_json::json!({"urls": too_many, "stage": "dev"})), None);
    }

    #[test]
    fn ids_per_call_respects_both_limits() {
        let roomy = Limits {
            max_ids: 10_000,
            max_bytes: 10 * 1024 * 1024,
            posts: true,
        };
        assert_eq!(ids_per_call(roomy, "hi"), 10_000);
        let tight = Limits {
            max_ids: 10_000,
            max_bytes: 64 * 1024,
            posts: false,
        };
        let n = ids_per_call(tight, &"x".repeat(32 * 1024));
        let ids: Vec<String> = (0..n).map(|i| format!("{i:015}=")).collect();
        let body =
            serde_json::to_vec(&serde_json::json!({"connectionIds": ids, "data": "x".repeat(32 * 1024)})).unwrap();
        assert!(
            n > 1000 && body.len() <= tight.max_bytes,
            "{n} ids, {} bytes",
            body.len()
        );
        assert_eq!(ids_per_call(tight, &"x".repeat(64 * 1024)), 0);
    }
}

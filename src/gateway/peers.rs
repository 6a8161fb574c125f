//! Scale-out without a broker: every `@connections` call is one-to-one, so the connection id
//! itself is the routing key. Each replica has an ordinal (a StatefulSet pod's index) that it
//! writes into every id it issues, and finds the owner of any other id from its ordinal: a URL
//! template with `{ordinal}` in it (a StatefulSet pod's name under its headless Service: no
//! list, no replica count, so scaling never changes the pod template), or a fixed list for
//! processes outside Kubernetes. A replica that gets a call for an id it does not hold forwards
//! it to the owner and relays the answer unchanged: one hop, the same synchronous 200/410 AWS
//! gives.
//!
//! 410 means the owner is known not to hold the connection: it answered 410, or it does not
//! exist (its name does not resolve, its ordinal is outside the list, or nothing listens at its
//! address). An owner that exists but does not answer in time is a retryable 503, because a 410
//! makes `serve` delete a session whose client may still be connected. A forged id can only
//! name an address the template or the list allows. Forwarded calls carry a marker so they are
//! never forwarded again; when the gateway checks SigV4 the marker is an HMAC over the call
//! keyed from the SigV4 secret, so a client cannot skip the signature check by claiming to be a
//! peer.

use std::time::Duration;

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http::{HeaderMap, HeaderValue, Method, Request, Response};
use http_body_util::Full;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::defaults;
use crate::http_client::{CallError, Pool};
use crate::http_server::Body;

/// Marks a call one replica forwarded to another.
pub const FORWARDED: &str = "x-socketless-forwarded";

/// Forwarded calls signed further than this from the owner's clock are refused.
const MAX_SKEW_MS: i64 = defaults::PEER_MAX_SKEW_MS;

/// Largest answer relayed from a peer (an AWS error body or a GetConnection document).
const MAX_ANSWER_BYTES: usize = defaults::PEER_MAX_ANSWER_BYTES;

/// Who holds a connection, by its id.
#[derive(Debug, PartialEq, Eq)]
pub enum Owner {
    /// This replica: look it up locally.
    Here,
    /// The peer at this base URL.
    Peer(String),
    /// Nobody can: an ordinal outside the peer list, or an id of the wrong shape.
    Nobody,
}

/// Where the other replicas are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerUrls {
    /// A single gateway.
    None,
    /// Every replica's base URL, index = ordinal.
    List(Vec<String>),
    /// A base URL with `{ordinal}` in it.
    Template(String),
}

/// The placeholder a peer URL template carries.
pub const ORDINAL: &str = "{ordinal}";

impl PeerUrls {
    /// The base URL of the replica with this ordinal, if there can be one.
    pub fn url(&self, ordinal: u8) -> Option<String> {
        match self {
            PeerUrls::None => None,
            PeerUrls::List(urls) => urls.get(ordinal as usize).cloned(),
            PeerUrls::Template(t) => Some(t.replacen(ORDINAL, &ordinal.to_string(), 1)),
        }
    }
}

/// Why a forwarded call got no answer from the owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unanswered {
    /// The owner does not exist, so it holds nothing: its name does not resolve, or nothing
    /// listens at its address. The connection is gone (410).
    NoOwner(String),
    /// The owner may exist but did not answer in time, or the answer broke off: the connection
    /// may still be open (503, retryable).
    Unavailable(String),
}

/// This replica's place among its peers.
pub struct Peers {
    ordinal: u8,
    urls: PeerUrls,
    timeout: Duration,
    key: Option<[u8; 32]>,
    client: Pool,
}

type HmacSha256 = Hmac<Sha256>;

impl Peers {
    /// `urls` says where the other replicas are; `secret` is the SigV4 secret when signatures
    /// are checked.
    pub fn new(ordinal: u8, urls: PeerUrls, timeout: Duration, secret: Option<&str>) -> Self {
        let key = secret.map(|s| {
            let mut mac = HmacSha256::new_from_slice(s.as_bytes()).expect("HMAC takes any key length");
            mac.update(b"socketless gateway peers");
            mac.finalize().into_bytes().into()
        });
        let urls = match urls {
            PeerUrls::List(urls) => {
                PeerUrls::List(urls.into_iter().map(|u| u.trim_end_matches('/').to_string()).collect())
            }
            PeerUrls::Template(t) => PeerUrls::Template(t.trim_end_matches('/').to_string()),
            PeerUrls::None => PeerUrls::None,
        };
        Peers {
            ordinal,
            urls,
            timeout,
            key,
            client: Pool::new(defaults::PEER_POOL_IDLE, defaults::PEER_POOL_MAX_IDLE, timeout),
        }
    }

    pub fn ordinal(&self) -> u8 {
        self.ordinal
    }

    /// Where the replicas are, as configured (base URLs without a trailing slash).
    pub fn urls(&self) -> &PeerUrls {
        &self.urls
    }

    /// Who holds the connection with this id.
    pub fn owner(&self, id: &str) -> Owner {
        match super::ids::ordinal_of(id) {
            Some(o) => self.replica(o),
            None => Owner::Nobody,
        }
    }

    /// The highest ordinal a replica can have when the replicas are known (a list, or this one
    /// alone); `None` under a URL template, where only asking tells.
    pub fn last_ordinal(&self) -> Option<u8> {
        match &self.urls {
            PeerUrls::None => Some(self.ordinal),
            PeerUrls::List(urls) => Some(
                u8::try_from(urls.len().saturating_sub(1))
                    .unwrap_or(u8::MAX)
                    .max(self.ordinal),
            ),
            PeerUrls::Template(_) => None,
        }
    }

    /// Where the replica with this ordinal is.
    pub fn replica(&self, ordinal: u8) -> Owner {
        if ordinal == self.ordinal {
            return Owner::Here;
        }
        match self.urls.url(ordinal) {
            Some(url) => Owner::Peer(url),
            None => Owner::Nobody,
        }
    }

    fn mac(&self, key: &[u8; 32], method: &str, path: &str, at_ms: i64, body: &[u8]) -> String {
        let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
        mac.update(format!("{method}\n{path}\n{at_ms}\n{}", hex::encode(Sha256::digest(body))).as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// Whether a call carries a valid forwarding marker. Without SigV4 any marker counts (the
    /// API is open then; the marker only stops a second hop).
    pub fn forwarded(
        &self,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
        body: &[u8],
        now_ms: i64,
    ) -> Option<bool> {
        let value = headers.get(FORWARDED)?.to_str().ok()?;
        let Some(key) = &self.key else { return Some(true) };
        let (at, mac) = value.split_once('.')?;
        let at: i64 = at.parse().ok()?;
        if (now_ms - at).abs() > MAX_SKEW_MS {
            return Some(false);
        }
        let expected = self.mac(key, method.as_str(), path, at, body);
        Some(bool::from(expected.as_bytes().ct_eq(mac.as_bytes())))
    }

    /// Sends a call to the owner and returns its answer as it came (status, the AWS error type
    /// header, the content type and the body), or why there was none (see [`Unanswered`]). The
    /// whole call, connecting included, is bounded by the peer timeout. The caller's
    /// `Content-Type` goes along: with `--binary-frames` it says which frame a post becomes.
    #[allow(clippy::too_many_arguments)]
    pub async fn forward(
        &self,
        owner: &str,
        method: &Method,
        path_and_query: &str,
        path: &str,
        content_type: Option<&HeaderValue>,
        body: Bytes,
        now_ms: i64,
    ) -> Result<Response<Body>, Unanswered> {
        self.forward_bounded(
            owner,
            method,
            path_and_query,
            path,
            content_type,
            body,
            now_ms,
            MAX_ANSWER_BYTES,
        )
        .await
    }

    /// [`Peers::forward`] with a bound of its own on the answer's size (an answer over it
    /// counts as broken off): the batch extension's answers list up to 10,000 ids.
    #[allow(clippy::too_many_arguments)]
    pub async fn forward_bounded(
        &self,
        owner: &str,
        method: &Method,
        path_and_query: &str,
        path: &str,
        content_type: Option<&HeaderValue>,
        body: Bytes,
        now_ms: i64,
        max_answer: usize,
    ) -> Result<Response<Body>, Unanswered> {
        let marker = match &self.key {
            Some(key) => format!("{now_ms}.{}", self.mac(key, method.as_str(), path, now_ms, &body)),
            None => "1".to_string(),
        };
        let uri: http::Uri = format!("{owner}{path_and_query}")
            .parse()
            .map_err(|e| Unanswered::Unavailable(format!("peer URL: {e}")))?;
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = method.clone();
        *req.uri_mut() = uri;
        let marker = HeaderValue::from_str(&marker).map_err(|e| Unanswered::Unavailable(e.to_string()))?;
        req.headers_mut().insert(FORWARDED, marker);
        if let Some(t) = content_type {
            req.headers_mut().insert(http::header::CONTENT_TYPE, t.clone());
        }
        // The call's trace goes on to the owner (see `crate::trace`).
        crate::trace::Hop::current().inject(req.headers_mut());
        let call = async {
            let (parts, bytes) = self.client.call(req, max_answer).await.map_err(|e| match e {
                CallError::Body(why) => Unanswered::Unavailable(format!("the answer broke off: {why}")),
                e => classify(&e),
            })?;
            let mut out = Response::new(Full::new(bytes));
            *out.status_mut() = parts.status;
            for name in [
                http::header::CONTENT_TYPE,
                http::HeaderName::from_static("x-amzn-errortype"),
            ] {
                if let Some(v) = parts.headers.get(&name) {
                    out.headers_mut().insert(name, v.clone());
                }
            }
            Ok::<_, Unanswered>(out)
        };
        match tokio::time::timeout(self.timeout, call).await {
            Ok(result) => result,
            Err(_) => Err(Unanswered::Unavailable(format!("no answer within {:?}", self.timeout))),
        }
    }
}

/// What the C library says, through the standard library's message, when a name does not exist
/// or has no address (`EAI_NONAME`, `EAI_NODATA`; glibc's words, then musl's). Any other
/// resolver failure (a timeout, an unreachable or failing DNS server: `EAI_AGAIN`, `EAI_FAIL`)
/// says nothing about the owner, so it is not here.
const NO_SUCH_NAME: [&str; 4] = [
    "Name or service not known",
    "No address associated with hostname",
    "Name does not resolve",
    "Name has no usable address",
];

/// Sorts a failed call to a peer: a name that does not exist or a refused connection means no
/// gateway is there (so it holds no connection); anything else (a connect timeout, a reset, a
/// resolver that did not answer) may hide a live owner.
fn classify(err: &(dyn std::error::Error + 'static)) -> Unanswered {
    let why = format!("{err:?}");
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cause {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::ConnectionRefused {
                return Unanswered::NoOwner(why);
            }
            let text = io.to_string();
            if NO_SUCH_NAME.iter().any(|m| text.contains(m)) {
                return Unanswered::NoOwner(why);
            }
        }
        cause = e.source();
    }
    Unanswered::Unavailable(why)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_from_a_template_and_from_a_list() {
        let t = PeerUrls::Template("http://gw-{ordinal}.gw-peers.ns.svc:8081".into());
        assert_eq!(t.url(0).as_deref(), Some("http://gw-0.gw-peers.ns.svc:8081"));
        assert_eq!(t.url(255).as_deref(), Some("http://gw-255.gw-peers.ns.svc:8081"));
        let l = PeerUrls::List(vec!["http://a:1".into(), "http://b:2".into()]);
        assert_eq!(l.url(1).as_deref(), Some("http://b:2"));
        assert_eq!(l.url(2), None);
        assert_eq!(PeerUrls::None.url(0), None);

        let peers = Peers::new(1, t, Duration::from_secs(1), None);
        let id = |o: u8| super::super::ids::connection_id(o);
        assert_eq!(peers.owner(&id(1)), Owner::Here);
        assert_eq!(
            peers.owner(&id(7)),
            Owner::Peer("http://gw-7.gw-peers.ns.svc:8081".into())
        );
        assert_eq!(peers.owner("not-an-id"), Owner::Nobody);
        let listed = Peers::new(0, l, Duration::from_secs(1), None);
        assert_eq!(listed.owner(&id(2)), Owner::Nobody);
    }

    #[test]
    fn only_a_missing_name_or_a_refused_connection_means_no_owner() {
        use std::io::{Error, ErrorKind};
        let lookup = |detail: &str| Error::other(format!("failed to lookup address information: {detail}"));
        for detail in NO_SUCH_NAME {
            assert!(matches!(classify(&lookup(detail)), Unanswered::NoOwner(_)), "{detail}");
        }
        for detail in [
            "Temporary failure in name resolution",
            "Try again",
            "Non-recoverable error",
        ] {
            assert!(
                matches!(classify(&lookup(detail)), Unanswered::Unavailable(_)),
                "{detail}"
            );
        }
        assert!(matches!(
            classify(&Error::from(ErrorKind::ConnectionRefused)),
            Unanswered::NoOwner(_)
        ));
        for kind in [
            ErrorKind::TimedOut,
            ErrorKind::ConnectionReset,
            ErrorKind::UnexpectedEof,
        ] {
            assert!(
                matches!(classify(&Error::from(kind)), Unanswered::Unavailable(_)),
                "{kind:?}"
            );
        }
    }
}

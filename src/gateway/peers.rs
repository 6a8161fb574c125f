//! Scale-out without a broker: every `@connections` call is one-to-one, so the connection id
//! itself is the routing key. Each replica has an ordinal (a StatefulSet pod's index) that it
//! writes into every id it issues, and knows its peers' base URLs, index = ordinal. A replica
//! that gets a call for an id it does not hold forwards it to the owner and relays the answer
//! unchanged: one hop, the same synchronous 200/410 AWS gives.
//!
//! A forged id can only name a configured peer (an ordinal outside the list is 410); an owner
//! that does not answer within the bound is gone, and so are its connections (410). Forwarded
//! calls carry a marker so they are never forwarded again; when the gateway checks SigV4 the
//! marker is an HMAC over the call keyed from the SigV4 secret, so a client cannot skip the
//! signature check by claiming to be a peer.

use std::time::Duration;

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http::{HeaderMap, HeaderValue, Method, Request, Response};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::http_server::Body;

/// Marks a call one replica forwarded to another.
pub const FORWARDED: &str = "x-socketless-forwarded";

/// Forwarded calls signed further than this from the owner's clock are refused.
const MAX_SKEW_MS: i64 = 60_000;

/// Largest answer relayed from a peer (an AWS error body or a GetConnection document).
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Who holds a connection, by its id.
#[derive(Debug, PartialEq, Eq)]
pub enum Owner {
    /// This replica: look it up locally.
    Here,
    /// The peer at this base URL.
    Peer(String),
    /// Nobody can: an unknown ordinal, or an id of the wrong shape.
    Nobody,
}

/// This replica's place among its peers.
pub struct Peers {
    ordinal: u8,
    urls: Vec<String>,
    timeout: Duration,
    key: Option<[u8; 32]>,
    client: Client<HttpConnector, Full<Bytes>>,
}

type HmacSha256 = Hmac<Sha256>;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Peers {
    /// `urls` are every replica's base URL in ordinal order (empty for a single gateway);
    /// `secret` is the SigV4 secret when signatures are checked.
    pub fn new(ordinal: u8, urls: Vec<String>, timeout: Duration, secret: Option<&str>) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(timeout));
        let key = secret.map(|s| {
            let mut mac = HmacSha256::new_from_slice(s.as_bytes()).expect("HMAC takes any key length");
            mac.update(b"socketless gateway peers");
            mac.finalize().into_bytes().into()
        });
        Peers {
            ordinal,
            urls: urls.into_iter().map(|u| u.trim_end_matches('/').to_string()).collect(),
            timeout,
            key,
            client: Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(30))
                .pool_max_idle_per_host(64)
                .build(connector),
        }
    }

    pub fn ordinal(&self) -> u8 {
        self.ordinal
    }

    /// Who holds the connection with this id.
    pub fn owner(&self, id: &str) -> Owner {
        match super::ids::ordinal_of(id) {
            Some(o) if o == self.ordinal => Owner::Here,
            Some(o) => match self.urls.get(o as usize) {
                Some(url) => Owner::Peer(url.clone()),
                None => Owner::Nobody,
            },
            None => Owner::Nobody,
        }
    }

    fn mac(&self, key: &[u8; 32], method: &str, path: &str, at_ms: i64, body: &[u8]) -> String {
        let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
        mac.update(format!("{method}\n{path}\n{at_ms}\n{}", hex(&Sha256::digest(body))).as_bytes());
        hex(&mac.finalize().into_bytes())
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
    /// header, the content type and the body). An owner that does not answer within the bound
    /// is gone: 410 GoneException.
    pub async fn forward(
        &self,
        owner: &str,
        method: &Method,
        path_and_query: &str,
        path: &str,
        body: Bytes,
        now_ms: i64,
    ) -> Result<Response<Body>, String> {
        let marker = match &self.key {
            Some(key) => format!("{now_ms}.{}", self.mac(key, method.as_str(), path, now_ms, &body)),
            None => "1".to_string(),
        };
        let uri: http::Uri = format!("{owner}{path_and_query}")
            .parse()
            .map_err(|e| format!("peer URL: {e}"))?;
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = method.clone();
        *req.uri_mut() = uri;
        req.headers_mut()
            .insert(FORWARDED, HeaderValue::from_str(&marker).map_err(|e| e.to_string())?);
        let call = async {
            let resp = self.client.request(req).await.map_err(|e| format!("{e:?}"))?;
            let (parts, body) = resp.into_parts();
            let bytes = Limited::new(body, MAX_ANSWER_BYTES)
                .collect()
                .await
                .map_err(|e| format!("reading the answer: {e}"))?
                .to_bytes();
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
            Ok::<_, String>(out)
        };
        match tokio::time::timeout(self.timeout, call).await {
            Ok(result) => result,
            Err(_) => Err(format!("no answer within {:?}", self.timeout)),
        }
    }
}

//! Calls with an identity: the principal header the gateway maps, a call to `serve` for a
//! connection with extra headers, and the session `serve` keeps for it, as `tests/identity.rs`
//! and `tests/identity_upstream.rs` use them.

use http::StatusCode;

use super::{ctx, get, send};

pub const PRINCIPAL: &str = "x-socketless-principal-id";

/// Calls `path` for connection `id` with the test context plus `extra` headers.
pub async fn post(url: &str, id: &str, extra: &[(&str, &str)], body: &str) -> (StatusCode, String) {
    let mut headers = ctx(id);
    headers.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    let refs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (status, _, body) = send("POST", url, &refs, body.to_string()).await;
    (status, body)
}

pub async fn lookup(internal: &str, id: &str) -> Option<serde_json::Value> {
    let (status, body) = get(&format!("{internal}/v1/connections/{}", id.replace('=', "%3D"))).await;
    match status {
        StatusCode::OK => Some(serde_json::from_str(&body).unwrap()),
        StatusCode::NOT_FOUND => None,
        other => panic!("lookup: {other} {body}"),
    }
}

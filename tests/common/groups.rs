//! Groups test plumbing: connection ids that carry a gateway replica's ordinal (the gateway's
//! id shape), the groups API calls, and a fake socketless gateway that answers the batch
//! extension (`info`, `deliver`) and records each `deliver`.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use base64::Engine;
use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use tokio::net::TcpListener;

use super::{Backend, call, fake_server, get, send};

/// A connection id of replica `ordinal`, unique per `n`: 11 bytes in URL-safe base64, the
/// first byte the ordinal XOR the last, as the gateway issues them.
pub fn owned_id(ordinal: u8, n: u32) -> String {
    let mut bytes = [0u8; 11];
    bytes[1..5].copy_from_slice(&n.to_be_bytes());
    bytes[10] = 0x5a;
    bytes[0] = ordinal ^ bytes[10];
    base64::engine::general_purpose::URL_SAFE.encode(bytes)
}

pub async fn connect(b: &Backend, id: &str) {
    let (status, body) = call(b, "/connect", id, "").await;
    assert_eq!(status, StatusCode::OK, "connect {id}: {body}");
}

pub async fn join(b: &Backend, group: &str, id: &str) -> (StatusCode, String) {
    let (s, _, body) = send(
        "PUT",
        &b.internal_url(&format!("/v1/groups/{group}/connections/{id}")),
        &[],
        "",
    )
    .await;
    (s, body)
}

pub async fn leave(b: &Backend, group: &str, id: &str) -> StatusCode {
    send(
        "DELETE",
        &b.internal_url(&format!("/v1/groups/{group}/connections/{id}")),
        &[],
        "",
    )
    .await
    .0
}

/// `GET /v1/groups/{group}{query}`: the status and the answer as JSON (or `null`).
pub async fn page(b: &Backend, group: &str, query: &str) -> (StatusCode, serde_json::Value) {
    let (s, body) = get(&b.internal_url(&format!("/v1/groups/{group}{query}"))).await;
    (s, serde_json::from_str(&body).unwrap_or(serde_json::Value::Null))
}

pub async fn count(b: &Backend, group: &str) -> u64 {
    let (s, v) = page(b, group, "?limit=1").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["count"].as_u64().expect("count")
}

/// Every member of a group, page by page of `limit`; also the size of each page.
pub async fn all_members(b: &Backend, group: &str, limit: usize) -> (Vec<String>, Vec<usize>) {
    let (mut members, mut sizes) = (Vec::new(), Vec::new());
    let mut cursor = String::new();
    loop {
        let (s, v) = page(b, group, &format!("?limit={limit}&cursor={cursor}")).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let ids: Vec<String> = v["members"]
            .as_array()
            .expect("members")
            .iter()
            .map(|m| m.as_str().unwrap().to_string())
            .collect();
        sizes.push(ids.len());
        members.extend(ids);
        match v["next"].as_str() {
            Some(next) => {
                cursor = percent_encoding::utf8_percent_encode(next, percent_encoding::NON_ALPHANUMERIC).to_string()
            }
            None => return (members, sizes),
        }
    }
}

pub async fn publish(b: &Backend, group: &str, body: &str) -> (StatusCode, serde_json::Value) {
    let (s, _, text) = send(
        "POST",
        &b.internal_url(&format!("/v1/groups/{group}/messages")),
        &[],
        body.to_string(),
    )
    .await;
    (s, serde_json::from_str(&text).unwrap_or(serde_json::Value::Null))
}

/// One `deliver` call the fake gateway received.
#[derive(Debug, Clone)]
pub struct Deliver {
    pub ids: Vec<String>,
    pub data: String,
    pub signed: bool,
}

/// A fake socketless gateway: `info` answers as one; `deliver` delivers every id but those
/// marked gone (answered `gone`) or full (answered `failed` 429), and records the call.
/// `@connections` posts are counted. With `advertise_posts`, `info` also says it takes posts
/// many to a call, but the fake answers that call as a plain post would (an empty 200). With
/// `replicas`, `info` lists them as a replicated gateway's does.
#[derive(Clone, Default)]
pub struct FakeSocketless {
    pub advertise_posts: Arc<std::sync::atomic::AtomicBool>,
    pub replicas: Arc<Mutex<Option<serde_json::Value>>>,
    pub delivers: Arc<Mutex<Vec<Deliver>>>,
    pub infos: Arc<Mutex<usize>>,
    pub posts: Arc<Mutex<Vec<String>>>,
    pub gone: Arc<Mutex<HashSet<String>>>,
    pub full: Arc<Mutex<HashSet<String>>>,
    pub endpoint: String,
}

impl FakeSocketless {
    pub async fn start() -> FakeSocketless {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let fake = FakeSocketless {
            endpoint: format!("http://{}/dev", listener.local_addr().unwrap()),
            ..Default::default()
        };
        let state = fake.clone();
        fake_server(listener, move |req| {
            let state = state.clone();
            async move {
                let json = |status: u16, v: serde_json::Value| {
                    Ok(Response::builder()
                        .status(status)
                        .header("content-type", "application/json")
                        .body(Full::new(Bytes::from(v.to_string())))
                        .unwrap())
                };
                let signed = req
                    .headers
                    .get("authorization")
                    .is_some_and(|v| v.to_str().unwrap_or("").starts_with("AWS4-HMAC-SHA256"));
                match (req.method.as_str(), req.path.as_str()) {
                    ("GET", "/dev/@socketless/v1/info") => {
                        *state.infos.lock().unwrap() += 1;
                        let mut info = serde_json::json!({"gateway": "socketless", "version": "0.1.0",
                            "deliver": {"maxIds": 10000, "maxBytes": 1_048_576}});
                        if state.advertise_posts.load(std::sync::atomic::Ordering::SeqCst) {
                            info["posts"] = serde_json::json!({"maxItems": 256, "maxBytes": 1_048_576});
                        }
                        if let Some(replicas) = state.replicas.lock().unwrap().clone() {
                            info["replicas"] = replicas;
                        }
                        json(200, info)
                    }
                    ("POST", "/dev/@socketless/v1/deliver") => {
                        let v: serde_json::Value = serde_json::from_str(&req.body).unwrap();
                        let ids: Vec<String> = v["connectionIds"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|i| i.as_str().unwrap().to_string())
                            .collect();
                        let (gone_set, full_set) =
                            (state.gone.lock().unwrap().clone(), state.full.lock().unwrap().clone());
                        let gone: Vec<&String> = ids.iter().filter(|i| gone_set.contains(*i)).collect();
                        let failed: Vec<serde_json::Value> = ids
                            .iter()
                            .filter(|i| full_set.contains(*i))
                            .map(|i| serde_json::json!({"connectionId": i, "status": 429}))
                            .collect();
                        let delivered = ids.len() - gone.len() - failed.len();
                        state.delivers.lock().unwrap().push(Deliver {
                            ids: ids.clone(),
                            data: v["data"].as_str().unwrap().to_string(),
                            signed,
                        });
                        json(
                            200,
                            serde_json::json!({"delivered": delivered, "gone": gone, "failed": failed}),
                        )
                    }
                    ("POST", path) => {
                        state.posts.lock().unwrap().push(path.to_string());
                        Ok(Response::builder().status(200).body(Full::new(Bytes::new())).unwrap())
                    }
                    _ => json(404, serde_json::json!({"message": "Not Found"})),
                }
            }
        });
        fake
    }

    pub fn delivers(&self) -> Vec<Deliver> {
        self.delivers.lock().unwrap().clone()
    }
}

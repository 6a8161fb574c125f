//! `serve`'s `GET /v1/connections` and `GET /v1/connections/count`: from the sessions table when
//! the push endpoint is not a socketless gateway (a fake `@connections`), paged and exact; from
//! the gateway's live registry when it is one (an in-process gateway whose clients have no
//! session at all, so only the gateway can know them). Also the live page at `/` with the
//! internal token set: the page loads without it, its JSON does not.

mod common;

use std::collections::BTreeSet;

use common::gw::{FakeBackend, connect, repo_gateway};
use common::*;
use http::StatusCode;

const TOKEN: &str = "internal-token-0123456789";

async fn json(url: &str, token: Option<&str>) -> (StatusCode, serde_json::Value) {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = bearer.iter().map(|b| ("authorization", b.as_str())).collect();
    let (status, _, text) = send("GET", url, &headers, String::new()).await;
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    )
}

/// Every page at `limit`: the ids listed, and the sources the pages named.
async fn walk(b: &Backend, limit: usize, token: Option<&str>) -> (Vec<String>, BTreeSet<String>) {
    let (mut ids, mut sources, mut cursor) = (Vec::new(), BTreeSet::new(), None::<String>);
    for _ in 0..50 {
        let path = match &cursor {
            Some(c) => format!(
                "/v1/connections?limit={limit}&cursor={}",
                percent_encoding::utf8_percent_encode(c, percent_encoding::NON_ALPHANUMERIC)
            ),
            None => format!("/v1/connections?limit={limit}"),
        };
        let (status, page) = json(&b.internal_url(&path), token).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let entries = page["connections"].as_array().expect("connections");
        assert!(entries.len() <= limit);
        ids.extend(
            entries
                .iter()
                .map(|e| e["connectionId"].as_str().expect("id").to_string()),
        );
        sources.insert(page["source"].as_str().unwrap_or("").to_string());
        match page["next"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => return (ids, sources),
        }
    }
    panic!("more than 50 pages");
}

#[tokio::test]
async fn behind_api_gateway_the_sessions_table_is_listed_and_counted() {
    let fake = FakeConnections::start().await;
    let mut a = args();
    a.push_endpoint = Some(fake.endpoint());
    a.internal_token = Some(TOKEN.into());
    let b = start(a).await;
    let ids: Vec<String> = (0..7).map(|i| format!("list{i:012}")).collect();
    for id in &ids {
        assert_eq!(call(&b, "/connect", id, "").await.0, StatusCode::OK);
    }
    call(&b, "/message", &ids[3], "hello").await;
    for limit in [1, 2, 3, 1000] {
        let (listed, sources) = walk(&b, limit, Some(TOKEN)).await;
        assert_eq!(listed.len(), ids.len(), "limit {limit}: {listed:?}");
        assert_eq!(
            listed.iter().collect::<BTreeSet<_>>(),
            ids.iter().collect::<BTreeSet<_>>()
        );
        assert_eq!(sources, BTreeSet::from(["sessions".to_string()]));
    }
    let (_, page) = json(&b.internal_url("/v1/connections?limit=1000"), Some(TOKEN)).await;
    let entry = page["connections"]
        .as_array()
        .and_then(|a| a.iter().find(|e| e["connectionId"] == ids[3].as_str()))
        .expect("listed")
        .clone();
    assert_eq!(entry["sourceIp"], "192.0.2.1");
    assert_eq!(entry["userAgent"], "test-agent");
    assert!(entry["connectedAt"].as_i64().is_some_and(|t| t > 0));
    let (status, count) = json(&b.internal_url("/v1/connections/count"), Some(TOKEN)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(count, serde_json::json!({ "count": 7, "source": "sessions" }));

    for bad in ["limit=0", "limit=1001", "limit=ten"] {
        let (status, answer) = json(&b.internal_url(&format!("/v1/connections?{bad}")), Some(TOKEN)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {answer}");
    }
    let (status, _, _) = send(
        "POST",
        &b.internal_url("/v1/connections"),
        &[("authorization", &format!("Bearer {TOKEN}"))],
        String::new(),
    )
    .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    // The page is static and loads without the token; the data it reads does not.
    let (status, _, page) = send("GET", &b.internal_url("/"), &[], String::new()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("/v1/connections/count"));
    assert_eq!(
        json(&b.internal_url("/v1/connections"), None).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        json(&b.internal_url("/v1/connections/count"), None).await.0,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn with_a_socketless_gateway_the_live_registry_is_listed() {
    let backend = FakeBackend::start().await;
    let gw = repo_gateway(&backend, |_| {}).await;
    let mut a = args();
    a.push_endpoint = Some(format!("http://{}/dev", gw.addr));
    let b = start(a).await;
    // The fake backend keeps no sessions: only the gateway knows these clients.
    let mut clients = Vec::new();
    for _ in 0..5 {
        clients.push(connect(&gw.url()).await);
    }
    let (listed, sources) = walk(&b, 2, None).await;
    assert_eq!(listed.len(), 5, "{listed:?}");
    assert_eq!(listed.iter().collect::<BTreeSet<_>>().len(), 5);
    assert_eq!(sources, BTreeSet::from(["gateway".to_string()]));
    let (status, count) = json(&b.internal_url("/v1/connections/count"), None).await;
    assert_eq!(status, StatusCode::OK, "{count}");
    assert_eq!(
        (count["count"].as_u64(), count["source"].as_str()),
        (Some(5), Some("gateway"))
    );
    drop(clients);
}

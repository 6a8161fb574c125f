//! Who is connected, on three in-process replicas: the extension's listing walked in small pages
//! from any replica names every client exactly once, replicas in ordinal order and ids in order
//! within each; the count sums the replicas; a replica that is gone is skipped (its peers' clients
//! still listed), one that hangs fails the page with 503; bad limits and cursors get 400. The
//! admin port serves the live page, refuses its JSON without the token, lists across replicas,
//! and sends to and closes a client held by another replica.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::gw::*;
use common::*;
use tokio::net::TcpListener;

const TOKEN: &str = "admin-token-for-tests";

/// Replicas on `ports` (ordinal = index) with the admin port's token, when given.
async fn replicas(backend: &FakeBackend, ports: &[u16], extra: &[u16], admin_token: Option<&str>) -> Vec<Gw> {
    replica_set(backend, ports, extra, |c| {
        c.admin_token = admin_token.map(str::to_string)
    })
    .await
}

/// `counts[i]` clients on replica i, with their ids.
async fn clients(backend: &FakeBackend, gws: &[Gw], counts: &[usize]) -> Vec<(Ws, String)> {
    let mut out = Vec::new();
    for (gw, n) in gws.iter().zip(counts) {
        for _ in 0..*n {
            let ws = connect(&gw.url()).await;
            let seen = backend.wait_for("/connect", out.len() + 1).await;
            out.push((ws, connection_id(&seen[out.len()])));
        }
    }
    out
}

async fn json(method: &str, url: &str, headers: &[(&str, &str)], body: &str) -> (u16, serde_json::Value) {
    let (status, _, text) = send(method, url, headers, body.to_string()).await;
    let value = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
    (status.as_u16(), value)
}

/// Every page from `base` (`…/connections`), `limit` at a time: the ids in the order listed.
async fn walk(base: &str, limit: usize, headers: &[(&str, &str)]) -> Vec<String> {
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..100 {
        let url = match &cursor {
            Some(c) => format!("{base}?limit={limit}&cursor={}", urlencode(c)),
            None => format!("{base}?limit={limit}"),
        };
        let (status, page) = json("GET", &url, headers, "").await;
        assert_eq!(status, 200, "{page}");
        let entries = page["connections"].as_array().expect("connections").clone();
        assert!(entries.len() <= limit, "{page}");
        for e in &entries {
            assert!(e["connectedAt"].as_i64().is_some_and(|t| t > 0), "{e}");
            assert_eq!(e["sourceIp"], "127.0.0.1");
            ids.push(e["connectionId"].as_str().expect("id").to_string());
        }
        match page["next"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => return ids,
        }
    }
    panic!("more than 100 pages");
}

fn urlencode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn ordinal(id: &str) -> u8 {
    use base64::Engine;
    let b = base64::engine::general_purpose::URL_SAFE.decode(id).expect("an id");
    b[0] ^ b[10]
}

/// The listing is exactly these ids, replicas in ordinal order and ids in order within each.
fn assert_exact(listed: &[String], expected: &[String]) {
    let set: BTreeSet<&String> = listed.iter().collect();
    assert_eq!(set.len(), listed.len(), "an id listed twice: {listed:?}");
    assert_eq!(set, expected.iter().collect::<BTreeSet<_>>());
    let keys: Vec<(u8, &String)> = listed.iter().map(|id| (ordinal(id), id)).collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted, "not in (ordinal, id) order");
}

#[tokio::test]
async fn small_pages_from_any_replica_list_every_client_once_and_count_them() {
    let backend = FakeBackend::start().await;
    let gws = replicas(&backend, &[free_port(), free_port(), free_port()], &[], None).await;
    let members = clients(&backend, &gws, &[7, 5, 9]).await;
    let ids: Vec<String> = members.iter().map(|(_, id)| id.clone()).collect();
    for gw in &gws {
        let base = format!("http://{}/dev/@socketless/v1/connections", gw.addr);
        for limit in [1, 4, 7, 1000] {
            assert_exact(&walk(&base, limit, &[]).await, &ids);
        }
        let (status, count) = json("GET", &format!("{base}/count"), &[], "").await;
        assert_eq!(status, 200, "{count}");
        assert_eq!(
            (count["count"].as_u64(), count["replicas"].as_u64()),
            (Some(21), Some(3))
        );
    }
    // Counters of each connection: a message in, a post out (the reply is not a push).
    let (mut ws, id) = members.into_iter().nth(8).expect("a client of replica 1");
    send_text(&mut ws, "hello").await;
    backend.wait_for("/message", 1).await;
    assert_eq!(next_text(&mut ws).await, "hello", "the backend's echo");
    let (status, _) = json("POST", &gws[0].mgmt(&id), &[], "pushed").await;
    assert_eq!(status, 200);
    assert_eq!(next_text(&mut ws).await, "pushed");
    let base = format!("http://{}/dev/@socketless/v1/connections?limit=1000", gws[2].addr);
    let (_, page) = json("GET", &base, &[], "").await;
    let entry = page["connections"]
        .as_array()
        .and_then(|a| a.iter().find(|e| e["connectionId"] == id.as_str()))
        .expect("listed")
        .clone();
    assert_eq!(
        (entry["messages"].as_u64(), entry["pushed"].as_u64()),
        (Some(1), Some(1)),
        "{entry}"
    );
}

#[tokio::test]
async fn refusals_and_replicas_that_are_gone_or_hung() {
    let backend = FakeBackend::start().await;
    let hung = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hung_port = hung.local_addr().unwrap().port();
    let ports = [free_port(), free_port(), free_port()];
    let mut gws = replicas(&backend, &ports, &[], None).await;
    let members = clients(&backend, &gws, &[3, 3, 3]).await;
    let base = format!("http://{}/dev/@socketless/v1/connections", gws[0].addr);
    for bad in ["limit=0", "limit=1001", "limit=x", "cursor=nope", "cursor=300%3Aab"] {
        let (status, answer) = json("GET", &format!("{base}?{bad}"), &[], "").await;
        assert_eq!(status, 400, "{bad}: {answer}");
    }
    let (status, _) = json("POST", &base, &[], "").await;
    assert_eq!(status, 400);

    // Replica 1 gone: the walk skips it and still lists replica 2's clients.
    let gone = gws.remove(1);
    drop(gone);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let alive: Vec<String> = members
        .iter()
        .map(|(_, id)| id.clone())
        .filter(|id| ordinal(id) != 1)
        .collect();
    assert_exact(&walk(&base, 2, &[]).await, &alive);
    let (_, count) = json("GET", &format!("{base}/count"), &[], "").await;
    assert_eq!(
        (count["count"].as_u64(), count["replicas"].as_u64()),
        (Some(6), Some(2))
    );

    // A replica that accepts and never answers fails the page: never a partial list.
    let lone = replicas(&backend, &[free_port()], &[hung_port], None).await;
    let _held = connect(&lone[0].url()).await;
    let base = format!("http://{}/dev/@socketless/v1/connections", lone[0].addr);
    let (status, answer) = json("GET", &format!("{base}?limit=10"), &[], "").await;
    assert_eq!(status, 503, "{answer}");
    let (status, _) = json("GET", &format!("{base}/count"), &[], "").await;
    assert_eq!(status, 503);
    drop(hung);
}

#[tokio::test]
async fn the_admin_port_lists_sends_and_closes_across_replicas() {
    let backend = FakeBackend::start().await;
    let gws = replicas(&backend, &[free_port(), free_port()], &[], Some(TOKEN)).await;
    let mut members = clients(&backend, &gws, &[2, 3]).await;
    let ids: Vec<String> = members.iter().map(|(_, id)| id.clone()).collect();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(gws[0].gateway.clone().serve_admin(listener, gws[0].lifecycle.clone()));

    let (status, _, page) = send("GET", &format!("{admin}/"), &[], String::new()).await;
    assert_eq!(status, 200);
    assert!(page.contains("<script>") && page.contains("/v1/connections"));
    let (status, _) = json("GET", &format!("{admin}/v1/connections"), &[], "").await;
    assert_eq!(status, 401);
    let wrong = [("authorization", "Bearer not-the-token")];
    assert_eq!(json("GET", &format!("{admin}/v1/connections"), &wrong, "").await.0, 401);

    let bearer = format!("Bearer {TOKEN}");
    let auth = [("authorization", bearer.as_str())];
    assert_exact(&walk(&format!("{admin}/v1/connections"), 2, &auth).await, &ids);
    let (status, count) = json("GET", &format!("{admin}/v1/connections/count"), &auth, "").await;
    assert_eq!((status, count["count"].as_u64()), (200, Some(5)), "{count}");

    // A client replica 1 holds: the message and the close go through its owner.
    let (ws, id) = &mut members[4];
    assert_eq!(ordinal(id), 1);
    let url = format!("{admin}/v1/connections/{}/messages", urlencode(id));
    let (status, answer) = json("POST", &url, &auth, "from the admin port").await;
    assert_eq!((status, answer["delivered"].as_bool()), (200, Some(true)), "{answer}");
    assert_eq!(next_text(ws).await, "from the admin port");
    let url = format!("{admin}/v1/connections/{}", urlencode(id));
    assert_eq!(json("DELETE", &url, &auth, "").await.0, 204);
    assert_eq!(close_code(ws).await.0, 1000);
    // A client replica 0 holds, closed here.
    let (ws, id) = &mut members[0];
    let url = format!("{admin}/v1/connections/{}", urlencode(id));
    assert_eq!(json("DELETE", &url, &auth, "").await.0, 204);
    assert_eq!(close_code(ws).await.0, 1000);
    // An id of replica 0's shape that no client holds, and one of an ordinal no replica has.
    for ordinal in [0u8, 7] {
        use base64::Engine;
        let mut bytes = [0x5au8; 11];
        bytes[0] = ordinal ^ bytes[10];
        let nobody = base64::engine::general_purpose::URL_SAFE.encode(bytes);
        let url = format!("{admin}/v1/connections/{}/messages", urlencode(&nobody));
        assert_eq!(json("POST", &url, &auth, "x").await.0, 410, "ordinal {ordinal}");
    }
    task.abort();
}

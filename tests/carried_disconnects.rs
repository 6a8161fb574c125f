//! `$disconnect` calls many to a call: `serve` says where it takes them on every `/disconnect`
//! answer, the gateway then sends them together, and `serve` handles each as if it had come
//! alone (its own secret, context and status). A backend that refuses such a call, or drops
//! it, still gets every `$disconnect`, alone.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::gw::*;
use common::*;
use http::{HeaderName, HeaderValue, Response, StatusCode};
use http_body_util::Full;
use socketless::carried::requests::{self, Carried};
use socketless::contract;
use tokio::net::TcpListener;

const SECRET: &str = "0123456789abcdef-test";

fn carried(path: &str, id: &str, secret: &str) -> Carried {
    let mut headers: Vec<(HeaderName, HeaderValue)> = ctx(id)
        .into_iter()
        .map(|(n, v)| (HeaderName::from_static(n), HeaderValue::from_str(&v).unwrap()))
        .collect();
    headers.push((
        HeaderName::from_static(contract::SHARED_SECRET),
        HeaderValue::from_str(secret).unwrap(),
    ));
    Carried {
        path_and_query: path.into(),
        headers,
        body: Bytes::new(),
    }
}

/// A POST whose answer's body is kept as bytes.
async fn post_raw(url: &str, body: Bytes) -> (StatusCode, Bytes) {
    let pool = socketless::http_client::Pool::new(Duration::from_secs(1), 1, Duration::from_secs(1));
    let mut req = http::Request::new(Full::new(body));
    *req.method_mut() = http::Method::POST;
    *req.uri_mut() = url.parse().unwrap();
    let (parts, answer) = within(pool.call(req, 1 << 20)).await.expect("an answer");
    (parts.status, answer)
}

async fn serve_with_secret() -> Backend {
    let mut a = args();
    a.shared_secret = Some(SECRET.into());
    start(a).await
}

async fn connect_session(b: &Backend, id: &str) {
    let mut headers = ctx(id);
    headers.push((contract::SHARED_SECRET, SECRET.into()));
    let refs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (status, _, _) = send("POST", &b.url("/connect"), &refs, "").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn serve_says_where_it_takes_them_and_answers_each_as_if_alone() {
    let b = serve_with_secret().await;
    for id in ["AAAAAAAAAAAAAAA=", "BBBBBBBBBBBBBBB=", "CCCCCCCCCCCCCCC="] {
        connect_session(&b, id).await;
    }
    // A /disconnect alone says where the others may go.
    let mut headers = ctx("CCCCCCCCCCCCCCC=");
    headers.push((contract::SHARED_SECRET, SECRET.into()));
    let refs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (status, answer, _) = send("POST", &b.url("/disconnect"), &refs, "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        answer.get(contract::CARRIES_DISCONNECTS).unwrap(),
        contract::PATH_CARRIED_DISCONNECTS
    );
    // One call: a good disconnect, one with a wrong secret, one that is not a disconnect, and
    // one for a session that does not exist (still taken, as a call alone would be).
    let body = requests::encode(
        [
            carried("/disconnect", "AAAAAAAAAAAAAAA=", SECRET),
            carried("/disconnect", "BBBBBBBBBBBBBBB=", "wrong-secret-wrong-secret"),
            carried("/connect", "DDDDDDDDDDDDDDD=", SECRET),
            carried("/disconnect?x=1", "EEEEEEEEEEEEEEE=", SECRET),
        ]
        .iter(),
    );
    let url = b.url(contract::PATH_CARRIED_DISCONNECTS);
    let (status, answer) = post_raw(&url, body).await;
    assert_eq!(status, StatusCode::OK);
    let statuses = requests::decode_statuses(answer, 4).expect("four statuses");
    assert_eq!(statuses, [200, 403, 404, 200]);
    // The session of the good one is gone, the other's is not; the /connect was not run.
    let (_, listing) = get(&b.internal_url("/v1/connections")).await;
    assert!(!listing.contains("AAAAAAAAAAAAAAA="), "{listing}");
    assert!(listing.contains("BBBBBBBBBBBBBBB="), "{listing}");
    assert!(!listing.contains("DDDDDDDDDDDDDDD="), "{listing}");
    // Each counted as a call of its own, and the carrying call once.
    let route =
        |r: &str, s: u16| format!("socketless_http_requests_total{{listener=\"public\",route=\"{r}\",status=\"{s}\"}}");
    assert_eq!(b.metric(&route("/disconnect", 200)).await, 3.0);
    assert_eq!(b.metric(&route("/disconnect", 403)).await, 1.0);
    assert_eq!(b.metric(&route(contract::PATH_CARRIED_DISCONNECTS, 200)).await, 1.0);
}

#[tokio::test]
async fn hostile_calls_are_refused_whole() {
    let b = serve_with_secret().await;
    let url = b.url(contract::PATH_CARRIED_DISCONNECTS);
    assert_eq!(send("GET", &url, &[], "").await.0, StatusCode::METHOD_NOT_ALLOWED);
    // Cut short, and a header value HTTP does not allow: nothing in them is run.
    let good = requests::encode([carried("/disconnect", "AAAAAAAAAAAAAAA=", SECRET)].iter());
    let (status, _, text) = send("POST", &url, &[], good.slice(..good.len() - 1)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    let mut bad = good.to_vec();
    let at = bad.iter().position(|&c| c == b'A').unwrap();
    bad[at] = b'\n';
    assert_eq!(send("POST", &url, &[], bad).await.0, StatusCode::BAD_REQUEST);
    // More than a call carries.
    let many: Vec<Carried> = (0..=socketless::carried::MAX_ITEMS)
        .map(|_| carried("/disconnect", "AAAAAAAAAAAAAAA=", SECRET))
        .collect();
    assert_eq!(
        send("POST", &url, &[], requests::encode(many.iter())).await.0,
        StatusCode::BAD_REQUEST
    );
    // A body over the limit is refused before it is read whole.
    let huge = vec![0u8; requests::MAX_BODY_BYTES + 1];
    assert_eq!(send("POST", &url, &[], huge).await.0, StatusCode::PAYLOAD_TOO_LARGE);
    let route = "socketless_http_requests_total{listener=\"public\",route=\"/disconnect\",status=\"200\"}";
    assert_eq!(b.metric(route).await, 0.0, "no disconnect ran");
}

#[tokio::test]
async fn a_gateway_sends_them_many_to_a_call_and_each_arrives_once() {
    // serve in front of an app that records each /disconnect it hears.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app = format!("http://{}", listener.local_addr().unwrap());
    let heard: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let record = heard.clone();
    let _app = fake_server(listener, move |req| {
        let record = record.clone();
        async move {
            if req.path == "/disconnect" {
                let h = |n: &str| {
                    req.headers
                        .get(n)
                        .map(|v| v.to_str().unwrap().to_string())
                        .unwrap_or_default()
                };
                record
                    .lock()
                    .unwrap()
                    .push((h("x-socketless-connection-id"), h("x-socketless-disconnect-status")));
            }
            Ok(Response::new(Full::new(Bytes::new())))
        }
    });
    let mut a = args();
    a.shared_secret = Some(SECRET.into());
    a.upstream = Some(app);
    let b = start(a).await;
    let gw = start_gateway(
        socketless::gateway::EMBEDDED_TEMPLATE,
        &repo_params(&format!("http://{}", b.public)),
        |_| {},
    )
    .await;
    // One connection closes first: its answer teaches the gateway.
    let mut first = connect(&gw.url()).await;
    first.close(None).await.unwrap();
    let n = 300;
    let mut clients = Vec::new();
    for _ in 0..n {
        clients.push(connect(&gw.url()).await);
    }
    within(async {
        while heard.lock().unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    // All the others at once.
    let closes = clients.into_iter().map(|mut ws| async move {
        ws.close(None).await.unwrap();
        while let Some(Ok(_)) = futures_util::StreamExt::next(&mut ws).await {}
    });
    futures_util::future::join_all(closes).await;
    let heard = within(async {
        loop {
            let h = heard.lock().unwrap().clone();
            if h.len() > n {
                return h;
            }
            drop(h);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let mut ids: Vec<&str> = heard.iter().map(|(id, _)| id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), n + 1, "each connection's /disconnect reached the app once");
    let statuses: std::collections::BTreeSet<&str> = heard.iter().map(|(_, s)| s.as_str()).collect();
    assert_eq!(statuses.len(), 1, "each kept its own close status: {statuses:?}");
    assert!(statuses.contains("1005"), "a close without a code: {statuses:?}");
    let text = common::authorizer::metrics(&gw).await;
    let carried = metric_value(&text, "socketless_gateway_carried_disconnects_total");
    let calls = metric_sum(
        &text,
        "socketless_gateway_carried_disconnect_calls_total",
        &["answered"],
    );
    assert!(carried >= 1.0 && calls >= 1.0, "{text}");
    assert!(
        calls < carried,
        "some calls carried more than one: {calls} calls for {carried}"
    );
    assert_eq!(
        metric_value(
            &text,
            "socketless_gateway_integration_calls_total{route=\"$disconnect\",outcome=\"ok\"}"
        ),
        (n + 1) as f64
    );
    assert_eq!(
        b.metric("socketless_http_requests_total{listener=\"public\",route=\"/disconnect\",status=\"200\"}")
            .await,
        (n + 1) as f64
    );
}

/// A backend that says it takes them at `/carried`, which then refuses (404) or drops the call.
async fn misleading_backend(drop_call: bool) -> (String, Arc<Mutex<Vec<String>>>, Arc<Mutex<usize>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let disconnects: Arc<Mutex<Vec<String>>> = Arc::default();
    let carried_calls: Arc<Mutex<usize>> = Arc::default();
    let (d, c) = (disconnects.clone(), carried_calls.clone());
    fake_server(listener, move |req| {
        let (d, c) = (d.clone(), c.clone());
        async move {
            match req.path.as_str() {
                "/carried" => {
                    *c.lock().unwrap() += 1;
                    if drop_call {
                        return Err(std::io::Error::other("dropped"));
                    }
                    Ok(Response::builder().status(404).body(Full::new(Bytes::new())).unwrap())
                }
                "/disconnect" => {
                    let id = req.headers.get("x-socketless-connection-id").unwrap();
                    d.lock().unwrap().push(id.to_str().unwrap().to_string());
                    Ok(Response::builder()
                        .header(contract::CARRIES_DISCONNECTS, "/carried")
                        .body(Full::new(Bytes::new()))
                        .unwrap())
                }
                _ => Ok(Response::new(Full::new(Bytes::new()))),
            }
        }
    });
    (url, disconnects, carried_calls)
}

async fn every_disconnect_arrives_alone_when(drop_call: bool) {
    let (url, disconnects, carried_calls) = misleading_backend(drop_call).await;
    let gw = start_gateway(socketless::gateway::EMBEDDED_TEMPLATE, &repo_params(&url), |_| {}).await;
    for n in 1..=4 {
        let mut ws = connect(&gw.url()).await;
        ws.close(None).await.unwrap();
        within(async {
            while disconnects.lock().unwrap().len() < n {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
    }
    let mut ids = disconnects.lock().unwrap().clone();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 4, "each $disconnect arrived once: {ids:?}");
    // The second went in a carried call, which failed; after a refusal the origin gets them
    // alone; after a dropped call it is tried again.
    let calls = *carried_calls.lock().unwrap();
    let text = common::authorizer::metrics(&gw).await;
    if drop_call {
        assert_eq!(calls, 3, "{text}");
        assert_eq!(
            metric_sum(
                &text,
                "socketless_gateway_carried_disconnect_calls_total",
                &["unanswered"]
            ),
            3.0
        );
    } else {
        assert_eq!(calls, 1, "{text}");
        assert_eq!(
            metric_sum(&text, "socketless_gateway_carried_disconnect_calls_total", &["refused"]),
            1.0
        );
    }
    assert_eq!(
        metric_value(
            &text,
            "socketless_gateway_integration_calls_total{route=\"$disconnect\",outcome=\"ok\"}"
        ),
        4.0
    );
}

#[tokio::test]
async fn a_backend_that_refuses_the_call_gets_each_alone() {
    every_disconnect_arrives_alone_when(false).await;
}

#[tokio::test]
async fn a_backend_that_drops_the_call_gets_each_alone() {
    every_disconnect_arrives_alone_when(true).await;
}

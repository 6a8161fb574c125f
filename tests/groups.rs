//! Groups on `serve` with the memory store: idempotent join and leave, a join for an unknown
//! connection, every validation answer, exact paging (2,500 members in pages of 1,000), joins
//! at connect from a handler and from an app (`x-socketless-groups`), cleanup at `/disconnect`,
//! and publishes: one PostToConnection per member to an API-Gateway-like endpoint (410s pruned),
//! and one `deliver` per gateway replica to a socketless gateway (gone ids pruned), broadcasts
//! included.

mod common;

use std::collections::HashSet;
use std::sync::Arc;

use common::groups::*;
use common::*;
use http::StatusCode;
use socketless::handler::{Accepted, BoxFuture, MessageHandler, Rejection, RequestContext};

fn flags(extra: &[&str]) -> socketless::serve::ServeArgs {
    let mut a = args();
    for f in extra {
        let (k, v) = f.trim_start_matches("--").split_once('=').unwrap();
        match k {
            "push-endpoint" => a.push_endpoint = Some(v.into()),
            "push-batch" => a.push_batch = v.into(),
            "max-groups-per-connection" => a.max_groups_per_connection = v.into(),
            other => panic!("no such test flag {other}"),
        }
    }
    a
}

#[tokio::test]
async fn join_and_leave_are_idempotent_and_need_a_session() {
    let b = start(flags(&[])).await;
    let id = owned_id(0, 1);
    let (s, body) = join(&b, "room", &id).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{body}");
    assert!(body.contains("no session for connection"), "{body}");
    assert_eq!(count(&b, "room").await, 0, "no orphan membership");
    connect(&b, &id).await;
    for _ in 0..2 {
        assert_eq!(join(&b, "room", &id).await.0, StatusCode::NO_CONTENT);
    }
    let (s, v) = page(&b, "room", "").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["group"], "room");
    assert_eq!(v["count"], 1);
    assert_eq!(v["members"], serde_json::json!([id]));
    assert!(v["next"].is_null());
    for _ in 0..2 {
        assert_eq!(leave(&b, "room", &id).await, StatusCode::NO_CONTENT);
    }
    assert_eq!(count(&b, "room").await, 0);
    // A group name percent-encoded in the path is the decoded name.
    assert_eq!(join(&b, "tenant%3Aacme", &id).await.0, StatusCode::NO_CONTENT);
    assert_eq!(page(&b, "tenant:acme", "").await.1["members"], serde_json::json!([id]));
}

#[tokio::test]
async fn invalid_requests_get_clear_400s_and_the_group_limit_409() {
    let b = start(flags(&["--max-groups-per-connection=3"])).await;
    let id = owned_id(0, 7);
    connect(&b, &id).await;
    let huge = "g".repeat(129);
    for bad in [huge.as_str(), "a%20b", "a%2Fb", "caf%C3%A9", "a,b", "%FF"] {
        let (s, body) = join(&b, bad, &id).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert!(body.contains("invalid group name"), "{body}");
    }
    assert_eq!(join(&b, &"g".repeat(128), &id).await.0, StatusCode::NO_CONTENT);
    for g in ["b", "c"] {
        assert_eq!(join(&b, g, &id).await.0, StatusCode::NO_CONTENT);
    }
    let (s, body) = join(&b, "d", &id).await;
    assert_eq!(s, StatusCode::CONFLICT, "{body}");
    assert!(body.contains("already in 3 groups"), "{body}");
    assert_eq!(
        join(&b, "b", &id).await.0,
        StatusCode::NO_CONTENT,
        "joining again is no new group"
    );
    for q in ["?limit=0", "?limit=1001", "?limit=10000", "?limit=ten", "?cursor=a%2Fb"] {
        let (s, v) = page(&b, "b", q).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{q}: {v}");
        assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
    }
    let (s, _, _) = send(
        "POST",
        &b.internal_url("/v1/groups/b/messages"),
        &[],
        "x".repeat(128 * 1024 + 1),
    )
    .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    let (s, _, _) = send("PATCH", &b.internal_url("/v1/groups/b"), &[], "").await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn pages_are_exact() {
    let b = start(flags(&[])).await;
    let mut ids: Vec<String> = (0..2500).map(|n| owned_id((n % 3) as u8, n)).collect();
    for id in &ids {
        connect(&b, id).await;
        assert_eq!(join(&b, "big", id).await.0, StatusCode::NO_CONTENT);
    }
    assert_eq!(count(&b, "big").await, 2500);
    let (members, sizes) = all_members(&b, "big", 1000).await;
    assert_eq!(sizes, vec![1000, 1000, 500]);
    ids.sort();
    assert_eq!(members, ids, "every member once, in id order");
    let (s, v) = page(&b, "big", "").await;
    assert_eq!(
        (s, v["members"].as_array().unwrap().len()),
        (StatusCode::OK, 100),
        "default page"
    );
    assert_eq!(v["count"], 2500, "the count is the group's, not the page's");
}

/// A handler that joins each connection to the groups its user agent names (comma-separated),
/// as a real one would from its own data.
struct Joiner;

impl MessageHandler for Joiner {
    fn on_connect_accepted<'a>(&'a self, ctx: &'a RequestContext) -> BoxFuture<'a, Result<Accepted, Rejection>> {
        let groups = ctx
            .user_agent
            .split(',')
            .filter(|g| !g.is_empty())
            .map(str::to_owned)
            .collect();
        Box::pin(async move {
            Ok(Accepted {
                groups,
                ..Accepted::default()
            })
        })
    }

    fn on_message<'a>(
        &'a self,
        _ctx: &'a RequestContext,
        _body: bytes::Bytes,
    ) -> BoxFuture<'a, Result<Option<bytes::Bytes>, Rejection>> {
        Box::pin(async { Ok(None) })
    }
}

async fn connect_as(b: &Backend, id: &str, agent: &str) -> (StatusCode, String) {
    let (s, _, body) = send(
        "POST",
        &b.url("/connect"),
        &[
            ("x-socketless-connection-id", id),
            ("x-socketless-domain-name", "example.test"),
            ("x-socketless-stage", "dev"),
            ("x-socketless-user-agent", agent),
        ],
        "",
    )
    .await;
    (s, body)
}

#[tokio::test]
async fn a_handler_joins_groups_at_connect_and_disconnect_leaves_them() {
    let b = start_with(flags(&["--max-groups-per-connection=2"]), Arc::new(Joiner)).await;
    let id = owned_id(1, 1);
    assert_eq!(connect_as(&b, &id, "lobby,room:1").await.0, StatusCode::OK);
    assert_eq!(count(&b, "lobby").await, 1);
    assert_eq!(count(&b, "room:1").await, 1);
    // Beyond the limit, or a bad name: refused, and neither session nor membership is made.
    let other = owned_id(1, 2);
    for agent in ["a,b,c", "a,b c"] {
        let (s, body) = connect_as(&b, &other, agent).await;
        assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR, "{agent}");
        assert!(body.contains("connect groups refused"), "{body}");
    }
    assert_eq!(count(&b, "a").await, 0);
    assert_eq!(
        get(&b.internal_url(&format!("/v1/connections/{other}"))).await.0,
        StatusCode::NOT_FOUND
    );
    let (s, _) = call(&b, "/disconnect", &id, "").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(count(&b, "lobby").await, 0);
    assert_eq!(count(&b, "room:1").await, 0);
}

/// An app that answers `/connect` with `x-socketless-groups` set to the connection's user
/// agent (so each test connect picks its groups), and everything else with an empty 200.
fn group_app(listener: tokio::net::TcpListener) -> tokio::task::JoinHandle<()> {
    fake_server(listener, |req| async move {
        let mut answer = http::Response::builder().status(200);
        if req.path == "/connect" {
            if let Some(agent) = req.headers.get("x-socketless-user-agent") {
                answer = answer.header("x-socketless-groups", agent.clone());
            }
        }
        Ok(answer.body(http_body_util::Full::new(bytes::Bytes::new())).unwrap())
    })
}

#[tokio::test]
async fn an_app_joins_groups_with_its_connect_answer() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app_url = format!("http://{}", listener.local_addr().unwrap());
    let _app = group_app(listener);
    let mut a = flags(&[]);
    a.upstream = Some(app_url);
    let b = start(a).await;
    within(async {
        while get(&b.internal_url("/readyz")).await.0 != StatusCode::OK {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    let id = owned_id(3, 1);
    assert_eq!(connect_as(&b, &id, "lobby, room:2,lobby").await.0, StatusCode::OK);
    assert_eq!(page(&b, "lobby", "").await.1["members"], serde_json::json!([id]));
    assert_eq!(count(&b, "room:2").await, 1);
    let other = owned_id(3, 2);
    let (s, body) = connect_as(&b, &other, "ok,not ok").await;
    assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(body.contains("not a group name"), "{body}");
    assert_eq!(count(&b, "ok").await, 0);
    assert_eq!(
        get(&b.internal_url(&format!("/v1/connections/{other}"))).await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn publish_posts_once_per_member_and_prunes_the_gone() {
    let fake = FakeConnections::start().await;
    let b = start(flags(&[
        &format!("--push-endpoint={}", fake.endpoint()),
        "--push-batch=off",
    ]))
    .await;
    let ids: Vec<String> = (0..12).map(|n| owned_id(0, n)).collect();
    for id in &ids {
        connect(&b, id).await;
        join(&b, "room", id).await;
        join(&b, "other", id).await;
    }
    fake.mark_gone(&ids[3]);
    fake.mark_gone(&ids[7]);
    let (s, v) = publish(&b, "room", "hello room").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        v,
        serde_json::json!({"members": 12, "delivered": 10, "gone": 2, "failed": 0, "complete": true})
    );
    let posts: Vec<MgmtCall> = fake.calls().into_iter().filter(|c| c.method == "POST").collect();
    assert_eq!(posts.len(), 12, "one PostToConnection per member");
    assert!(posts.iter().all(|c| c.body == "hello room" && c.signed));
    let targets: HashSet<String> = posts
        .iter()
        .map(|c| c.path.rsplit('/').next().unwrap().to_string())
        .collect();
    assert_eq!(targets, ids.iter().cloned().collect());
    assert!(
        fake.calls().iter().all(|c| !c.path.contains("@socketless")),
        "off asks nothing"
    );
    // The gone are forgotten: memberships in every group, and the session.
    assert_eq!(count(&b, "room").await, 10);
    assert_eq!(count(&b, "other").await, 10);
    assert_eq!(
        get(&b.internal_url(&format!("/v1/connections/{}", ids[3]))).await.0,
        StatusCode::NOT_FOUND
    );
    let (_, v) = publish(&b, "empty", "x").await;
    assert_eq!(v["members"], 0);
}

#[tokio::test]
async fn auto_asks_once_and_falls_back_to_posts_where_there_is_no_extension() {
    let fake = FakeConnections::start().await;
    let b = start(flags(&[&format!("--push-endpoint={}", fake.endpoint())])).await;
    let ids: Vec<String> = (0..5).map(|n| owned_id(2, n)).collect();
    for id in &ids {
        connect(&b, id).await;
        join(&b, "room", id).await;
    }
    for _ in 0..2 {
        let (_, v) = publish(&b, "room", "hi").await;
        assert_eq!(v["delivered"], 5, "{v}");
    }
    let calls = fake.calls();
    // FakeConnections answers the info path with an empty 200: not a socketless gateway.
    let infos = calls
        .iter()
        .filter(|c| c.path.ends_with("/@socketless/v1/info"))
        .count();
    assert_eq!(infos, 1, "info is asked once per endpoint");
    let posts = calls
        .iter()
        .filter(|c| c.method == "POST" && c.path.contains("/@connections/"))
        .count();
    assert_eq!(posts, 10);
}

#[tokio::test]
async fn push_batch_on_refuses_to_start_without_the_extension() {
    let fake = FakeConnections::start().await;
    let config = flags(&[&format!("--push-endpoint={}", fake.endpoint()), "--push-batch=on"])
        .validate()
        .unwrap();
    let sdk = sdk(config.aws_timeout);
    let res = socketless::serve::prepare_with_sdk(
        config,
        Arc::new(socketless::handler::Echo),
        socketless::lifecycle::Lifecycle::new(),
        sdk,
    )
    .await;
    let err = res.err().expect("start-up fails").to_string();
    assert!(
        err.contains("--push-batch on") && err.contains("not a socketless gateway"),
        "{err}"
    );
}

#[tokio::test]
async fn a_socketless_gateway_gets_one_deliver_per_replica() {
    let gw = FakeSocketless::start().await;
    let b = start(flags(&[&format!("--push-endpoint={}", gw.endpoint)])).await;
    let mut ids = Vec::new();
    for owner in 0..3u8 {
        for n in 0..10 {
            let id = owned_id(owner, n);
            connect(&b, &id).await;
            join(&b, "room", &id).await;
            ids.push(id);
        }
    }
    gw.gone.lock().unwrap().extend([ids[0].clone(), ids[15].clone()]);
    gw.full.lock().unwrap().insert(ids[29].clone());
    let (s, v) = publish(&b, "room", "{\"text\":\"héllo\"}").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        v,
        serde_json::json!({"members": 30, "delivered": 27, "gone": 2, "failed": 1, "complete": true})
    );
    let delivers = gw.delivers();
    assert_eq!(delivers.len(), 3, "one call per owner replica");
    for d in &delivers {
        assert!(d.signed, "signed like @connections");
        assert_eq!(d.data, "{\"text\":\"héllo\"}");
        assert_eq!(d.ids.len(), 10);
        let owners: HashSet<u8> = d.ids.iter().map(|id| owner_of(id)).collect();
        assert_eq!(owners.len(), 1, "a call carries one owner's ids");
    }
    assert!(gw.posts.lock().unwrap().is_empty(), "no PostToConnection");
    assert_eq!(*gw.infos.lock().unwrap(), 1);
    assert_eq!(count(&b, "room").await, 28, "gone ids pruned, the throttled one kept");
    // Broadcast takes the same path: one call per replica for the 28 sessions left.
    let (s, _, body) = send("POST", &b.internal_url("/v1/broadcast"), &[], "all").await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["sessions"], 28);
    assert_eq!(v["delivered"], 27);
    assert_eq!(gw.delivers().len(), 6);
}

#[tokio::test]
async fn a_replica_share_over_ten_thousand_ids_takes_two_calls() {
    let gw = FakeSocketless::start().await;
    let b = start_with(flags(&[&format!("--push-endpoint={}", gw.endpoint)]), Arc::new(Joiner)).await;
    let ids: Vec<String> = (0..10_001).map(|n| owned_id(4, n)).collect();
    let b = Arc::new(b);
    let mut tasks = tokio::task::JoinSet::new();
    for chunk in ids.chunks(1000) {
        let (b, chunk) = (b.clone(), chunk.to_vec());
        tasks.spawn(async move {
            for id in chunk {
                assert_eq!(connect_as(&b, &id, "crowd").await.0, StatusCode::OK);
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    let (_, v) = publish(&b, "crowd", "x").await;
    assert_eq!(v["delivered"], 10_001, "{v}");
    let sizes: Vec<usize> = gw.delivers().iter().map(|d| d.ids.len()).collect();
    assert_eq!(sizes.iter().sum::<usize>(), 10_001);
    assert_eq!(sizes.len(), 2);
    assert!(sizes.iter().all(|n| *n <= 10_000));
}

fn owner_of(id: &str) -> u8 {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::URL_SAFE.decode(id).unwrap();
    bytes[0] ^ bytes[10]
}

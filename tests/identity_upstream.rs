//! Who is connecting, with an upstream app: the attributes an app sets at `/connect` are kept
//! on the session and given back on every later call, from the session and never from the later
//! request, on a thousand messages across two `serve` processes sharing a DynamoDB (moto) with
//! no DynamoDB call; a disconnect on a pod that never saw the session gets the identity from the
//! deleted item; attributes beyond the limits refuse the connect, with a log line naming the
//! rule.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::identity::{PRINCIPAL, lookup, post};
use common::proc::{Proc, command, wait_ready};
use common::*;
use http::{Response, StatusCode};
use http_body_util::Full;

/// What the recording app saw on one call: path, connection id, principal and attributes.
#[derive(Debug, Clone)]
struct Call {
    path: String,
    id: String,
    identity: String,
}

/// An app that answers `/connect` with the attributes `connect_headers` gives for the
/// principal, echoes messages, and records the identity headers of every call.
struct App {
    calls: Arc<Mutex<Vec<Call>>>,
    url: String,
    _task: tokio::task::JoinHandle<()>,
}

type ConnectHeaders = fn(&str) -> Vec<(String, String)>;

impl App {
    async fn start(connect_headers: ConnectHeaders) -> App {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let calls = Arc::new(Mutex::new(Vec::new()));
        let record = calls.clone();
        let task = fake_server(listener, move |req| {
            let record = record.clone();
            async move {
                let header = |n: &str| {
                    req.headers
                        .get(n)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-")
                        .to_string()
                };
                let mut attributes: Vec<String> = req
                    .headers
                    .iter()
                    .filter_map(|(n, v)| {
                        let name = n.as_str().strip_prefix("x-socketless-attribute-")?;
                        Some(format!("{name}={}", v.to_str().ok()?))
                    })
                    .collect();
                attributes.sort();
                let principal = header(PRINCIPAL);
                let mut resp = Response::builder().status(200);
                if req.path == "/connect" {
                    for (n, v) in connect_headers(&principal) {
                        resp = resp.header(n, v);
                    }
                }
                if req.path != "/healthz" {
                    record.lock().unwrap().push(Call {
                        path: req.path.clone(),
                        id: header("x-socketless-connection-id"),
                        identity: format!("{principal}|{}", attributes.join(",")),
                    });
                }
                let body = if req.path == "/message" {
                    req.body
                } else {
                    String::new()
                };
                Ok(resp.body(Full::new(Bytes::from(body))).unwrap())
            }
        });
        App {
            calls,
            url,
            _task: task,
        }
    }

    fn calls(&self, path: &str) -> Vec<Call> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.path == path)
            .cloned()
            .collect()
    }
}

fn tenant_headers(principal: &str) -> Vec<(String, String)> {
    vec![
        ("x-socketless-attribute-tenant".into(), format!("t-{principal}")),
        ("X-Socketless-Attribute-Plan".into(), "gold".into()),
    ]
}

/// A `serve` process in front of `app` on the DynamoDB table `table` in `moto`; its public and
/// internal base URLs.
async fn serve_process(app: &App, moto: &Moto, table: &str) -> (Proc, String, String) {
    let (port, iport) = (free_port(), free_port());
    let p = Proc::spawn(
        command()
            .args([
                "serve",
                "--store",
                "dynamodb",
                "--create-table",
                "--shutdown-delay",
                "0s",
                "--disconnect-grace",
                "0s",
            ])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--internal-listen", &format!("127.0.0.1:{iport}")])
            .args(["--table", table, "--dynamodb-endpoint", &moto.endpoint])
            .args(["--region", socketless::defaults::REGION, "--upstream", &app.url])
            .env("AWS_ACCESS_KEY_ID", "AKIDTEST")
            .env("AWS_SECRET_ACCESS_KEY", "test-secret")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null()),
    );
    wait_ready(iport).await;
    (
        p,
        format!("http://127.0.0.1:{port}"),
        format!("http://127.0.0.1:{iport}"),
    )
}

async fn dynamodb_calls(internal: &str) -> f64 {
    let (_, text) = get(&format!("{internal}/metrics")).await;
    metric_sum(&text, "socketless_dynamodb_calls_total", &[])
}

#[tokio::test]
async fn an_app_sees_its_attributes_on_a_thousand_messages_across_two_serve_processes_with_no_dynamodb_call() {
    let moto = Moto::start().await;
    let app = App::start(tenant_headers).await;
    let table = format!("identity-{}", free_port());
    let (_a, pod_a, internal_a) = serve_process(&app, &moto, &table).await;
    let (_b, pod_b, internal_b) = serve_process(&app, &moto, &table).await;
    let connections: Vec<(String, String)> = (0..10)
        .map(|i| (format!("CoNn{i:011}="), format!("user-{i}")))
        .collect();
    let want = |principal: &str| format!("{principal}|plan=gold,tenant=t-{principal}");

    // Every connect on pod A; the app sees the principal and sets the attributes.
    for (id, principal) in &connections {
        let (status, body) = post(&format!("{pod_a}/connect"), id, &[(PRINCIPAL, principal)], "").await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    for c in app.calls("/connect") {
        let (_, principal) = connections.iter().find(|(id, _)| *id == c.id).expect("a known id");
        assert_eq!(c.identity, format!("{principal}|"), "a connect has no attributes yet");
    }
    let item = lookup(&internal_b, &connections[0].0)
        .await
        .expect("the item, read by pod B");
    assert_eq!(item["principalId"], "user-0");
    assert_eq!(
        item["attributes"],
        serde_json::json!({"plan": "gold", "tenant": "t-user-0"})
    );

    // Pod B never saw the connects: its first message per connection loads the session with
    // the write a miss makes anyway (one UpdateItem), then both pods serve from their caches.
    for (id, _) in &connections {
        assert_eq!(
            post(&format!("{pod_b}/message"), id, &[], "warm").await.0,
            StatusCode::OK
        );
    }
    let before = dynamodb_calls(&internal_a).await + dynamodb_calls(&internal_b).await;
    let forged = [(PRINCIPAL, "mallory"), ("x-socketless-attribute-tenant", "t-mallory")];
    let messages = 1000;
    for m in 0..messages {
        let (id, _) = &connections[m % connections.len()];
        let pod = if m % 2 == 0 { &pod_a } else { &pod_b };
        // Every third message carries forged identity headers.
        let extra: &[(&str, &str)] = if m % 3 == 0 { &forged } else { &[] };
        let (status, reply) = post(&format!("{pod}/message"), id, extra, &format!("m{m}")).await;
        assert_eq!((status, reply), (StatusCode::OK, format!("m{m}")));
    }
    let after = dynamodb_calls(&internal_a).await + dynamodb_calls(&internal_b).await;
    let per_message = (after - before) / messages as f64;
    println!(
        "DynamoDB calls per message with principal and attributes, two serve processes: {per_message:.4} ({} calls / {messages} messages)",
        after - before
    );
    assert_eq!(per_message, 0.0);
    let (_, text_b) = get(&format!("{internal_b}/metrics")).await;
    assert_eq!(
        metric_value(
            &text_b,
            "socketless_dynamodb_calls_total{operation=\"UpdateItem\",outcome=\"ok\"}"
        ),
        connections.len() as f64,
        "pod B loaded each session once"
    );

    let seen = app.calls("/message");
    assert_eq!(seen.len(), messages + connections.len());
    for c in &seen {
        let (_, principal) = connections.iter().find(|(id, _)| *id == c.id).expect("a known id");
        assert_eq!(c.identity, want(principal), "message for {}", c.id);
    }

    // Disconnects on either pod carry the identity too (from the cache), forged headers or not.
    for (i, (id, _)) in connections.iter().enumerate() {
        let pod = if i % 2 == 0 { &pod_a } else { &pod_b };
        assert_eq!(
            post(&format!("{pod}/disconnect"), id, &forged, "").await.0,
            StatusCode::OK
        );
    }
    let gone = within(async {
        loop {
            let gone = app.calls("/disconnect");
            if gone.len() == connections.len() {
                return gone;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    for c in gone {
        let (_, principal) = connections.iter().find(|(id, _)| *id == c.id).expect("a known id");
        assert_eq!(c.identity, want(principal), "disconnect of {}", c.id);
    }
}

#[tokio::test]
async fn a_disconnect_on_a_pod_that_never_saw_the_session_gets_the_identity_from_the_deleted_item() {
    let moto = Moto::start().await;
    let app = App::start(tenant_headers).await;
    let table = format!("identity-{}", free_port());
    let (_a, pod_a, _) = serve_process(&app, &moto, &table).await;
    let (_b, pod_b, internal_b) = serve_process(&app, &moto, &table).await;
    let id = "LoNeLy000000000=";
    assert_eq!(
        post(&format!("{pod_a}/connect"), id, &[(PRINCIPAL, "bob")], "").await.0,
        StatusCode::OK
    );
    assert_eq!(
        post(&format!("{pod_b}/disconnect"), id, &[(PRINCIPAL, "mallory")], "")
            .await
            .0,
        StatusCode::OK
    );
    let gone = within(async {
        loop {
            if let Some(c) = app.calls("/disconnect").pop() {
                return c;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(gone.identity, "bob|plan=gold,tenant=t-bob");
    // The session is deleted after the app took the call.
    let text = metrics_once_counted(
        &format!("{internal_b}/metrics"),
        "socketless_dynamodb_calls_total",
        &["operation=\"DeleteItem\""],
        1.0,
    )
    .await;
    let calls = |op: &str| {
        metric_sum(
            &text,
            "socketless_dynamodb_calls_total",
            &[&format!("operation=\"{op}\"")],
        )
    };
    // The claim (one UpdateItem, which returned the item: no read before it), then the delete.
    assert_eq!(calls("UpdateItem"), 1.0);
    assert_eq!(calls("DeleteItem"), 1.0);
    assert_eq!(calls("GetItem") + calls("PutItem"), 0.0);
}

/// The app's `/connect` answers for the limit cases, by principal.
fn limit_headers(principal: &str) -> Vec<(String, String)> {
    let attr = |n: &str, v: String| (format!("x-socketless-attribute-{n}"), v);
    match principal {
        "too-many" => (0..17).map(|i| attr(&format!("a{i}"), "v".into())).collect(),
        "bad-name" => vec![attr("bad_name", "v".into())],
        "long-name" => vec![attr(&"n".repeat(33), "v".into())],
        "long-value" => vec![attr("a", "v".repeat(257))],
        "too-large" => (0..9).map(|i| attr(&format!("k{i}"), "v".repeat(240))).collect(),
        "at-the-limits" => (0..8)
            .map(|i| attr(&format!("{i}{}", "n".repeat(31)), "v".repeat(220)))
            .collect(),
        _ => vec![],
    }
}

#[tokio::test]
async fn attributes_beyond_the_limits_refuse_the_connect_with_500_and_no_session() {
    let app = App::start(limit_headers).await;
    let (port, iport) = (free_port(), free_port());
    let log = common::binary::log_path("identity-limits");
    let args: Vec<String> = [
        "serve",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--internal-listen",
        &format!("127.0.0.1:{iport}"),
        "--shutdown-delay",
        "0s",
        "--upstream",
        &app.url,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let serve = Proc::start(&args, Some(&log));
    wait_ready(iport).await;
    let public = format!("http://127.0.0.1:{port}");
    let internal = format!("http://127.0.0.1:{iport}");
    for (i, (principal, rule)) in [
        ("too-many", "more than 16 attributes"),
        ("bad-name", "bad_name\\\" is not [a-z0-9-]{1,32}"),
        ("long-name", "is not [a-z0-9-]{1,32}"),
        ("long-value", "value longer than 256 bytes"),
        ("too-large", "longer than 2048 bytes"),
    ]
    .into_iter()
    .enumerate()
    {
        let id = format!("LiMiT{i:010}=");
        let (status, body) = post(&format!("{public}/connect"), &id, &[(PRINCIPAL, principal)], "").await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{principal}: {body}");
        assert!(body.contains(rule), "{principal}: {body}");
        assert!(lookup(&internal, &id).await.is_none(), "{principal}: no session");
    }
    // Eight attributes of 32-byte names and 220-byte values: 2016 bytes, within every limit.
    let id = "AtThElImItS0000=";
    assert_eq!(
        post(&format!("{public}/connect"), id, &[(PRINCIPAL, "at-the-limits")], "")
            .await
            .0,
        StatusCode::OK
    );
    let s = lookup(&internal, id).await.expect("session");
    assert_eq!(s["attributes"].as_object().unwrap().len(), 8);

    // Each refusal left a log line naming its rule.
    drop(serve);
    let text = std::fs::read_to_string(&log).unwrap();
    let _ = std::fs::remove_file(&log);
    let refusals: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("session attributes break a limit"))
        .collect();
    assert_eq!(refusals.len(), 5, "{text}");
    for rule in [
        "more than 16 attributes",
        "value longer than 256 bytes",
        "longer than 2048 bytes",
    ] {
        assert!(refusals.iter().any(|l| l.contains(rule)), "{rule}: {text}");
    }
}

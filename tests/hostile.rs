//! The real binary under hostile load: a connection flood far past the maximum, memory before,
//! during and after; and secrets that must never reach the logs.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::gw::*;
use common::proc::{Proc, command, refused, rss_kib, wait_ready};
use common::*;
use futures_util::StreamExt;
use tokio::sync::Semaphore;

async fn active(port: u16) -> f64 {
    let (_, _, text) = send("GET", &format!("http://127.0.0.1:{port}/metrics"), &[], "").await;
    metric_value(&text, "socketless_gateway_active_connections")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_past_the_maximum_is_refused_cleanly_with_bounded_memory() {
    const MAX: usize = 200;
    const FLOOD: usize = 10_000;
    let backend = FakeBackend::start().await;
    let port = free_port();
    let args = [
        "gateway".to_string(),
        "--listen".into(),
        format!("127.0.0.1:{port}"),
        "--max-connections".into(),
        MAX.to_string(),
        "--param".into(),
        format!("IntegrationUri={}", backend.uri()),
        "--param".into(),
        "SharedSecret=0123456789abcdef".into(),
        "--log".into(),
        "warn".into(),
    ];
    let gw = Proc::start(&args, None);
    wait_ready(port).await;
    let url = format!("ws://127.0.0.1:{port}/dev");
    let baseline = rss_kib(gw.0.id());
    // Two rounds of: fill to the maximum, flood past it, close everything. The second round must
    // not need more memory than the first: freed memory is reused, nothing accumulates.
    let mut rounds = Vec::new();
    for round in 1..=2 {
        let mut held = Vec::new();
        for _ in 0..MAX {
            held.push(connect(&url).await);
        }
        let full = rss_kib(gw.0.id());
        let gate = Arc::new(Semaphore::new(64));
        let mut tasks = Vec::new();
        for _ in 0..FLOOD / 2 {
            let (url, gate) = (url.clone(), gate.clone());
            tasks.push(tokio::spawn(async move {
                let _p = gate.acquire_owned().await.unwrap();
                match tokio_tungstenite::connect_async(url).await {
                    Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => resp.status().as_u16(),
                    Err(_) => 0,
                    Ok(_) => 101,
                }
            }));
        }
        let mut peak = full;
        for (i, t) in tasks.into_iter().enumerate() {
            let status = within(t).await.unwrap();
            assert_eq!(status, 429, "round {round}: attempt {i} past the maximum got {status}");
            if i % 500 == 0 {
                peak = peak.max(rss_kib(gw.0.id()));
            }
        }
        peak = peak.max(rss_kib(gw.0.id()));
        for mut ws in held.drain(..) {
            let _ = ws.close(None).await;
            let _ = tokio::time::timeout(Duration::from_secs(2), ws.next()).await;
        }
        within(async {
            while active(port).await > 0.0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        backend.wait_for("/disconnect", MAX * round).await;
        let after = rss_kib(gw.0.id());
        println!(
            "flood round {round}: {} attempts past the maximum of {MAX} refused with 429; RSS {full} KiB with {MAX} open, \
             peak {peak} KiB during the flood, {after} KiB after all closed",
            FLOOD / 2
        );
        assert!(peak <= full + 16 * 1024, "the flood grew RSS from {full} to {peak} KiB");
        rounds.push((full, peak, after));
    }
    assert_eq!(
        backend.seen("/connect").len(),
        2 * MAX,
        "refused handshakes never reach the backend"
    );
    let (first, second) = (rounds[0], rounds[1]);
    println!(
        "flood: {FLOOD} refusals in all; RSS {baseline} KiB before, {} KiB after round 1, {} KiB after round 2",
        first.2, second.2
    );
    assert!(
        second.1 <= first.1 + 2048,
        "round 2 peaked higher than round 1: memory accumulates ({} → {} KiB)",
        first.1,
        second.1
    );
    assert!(
        second.2 <= first.2 + 2048,
        "memory after round 2 grew past round 1 ({} → {} KiB)",
        first.2,
        second.2
    );
    assert!(
        second.2 <= baseline + 8 * 1024,
        "memory after the floods stays near the baseline: {baseline} → {} KiB",
        second.2
    );
}

#[tokio::test]
async fn secrets_never_reach_the_logs() {
    const SHARED: &str = "shared-secret-VALUE-7f3a9c";
    const SIGV4: &str = "sigv4-secret-VALUE-91bd22";
    const RESUME_KEY: &str = "resumeKEYvalue-0123456789_ab";
    const BAD_RESUME_KEY: &str = "badResumeKEY.value";
    let dir = std::env::temp_dir().join(format!("socketless-logs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (bport, iport, gport) = (free_port(), free_port(), free_port());
    let words = |w: &[&str]| w.iter().map(|w| w.to_string()).collect::<Vec<_>>();
    let mut serve_args = words(&[
        "serve",
        "--log",
        "trace",
        "--shared-secret",
        SHARED,
        "--shutdown-delay",
        "0s",
    ]);
    serve_args.extend([
        "--listen".into(),
        format!("127.0.0.1:{bport}"),
        "--internal-listen".into(),
        format!("127.0.0.1:{iport}"),
    ]);
    let serve = Proc::start(&serve_args, Some(&dir.join("serve.log")));
    let mut gw_args = words(&["gateway", "--log", "trace", "--shutdown-delay", "0s"]);
    gw_args.extend(words(&[
        "--sigv4-access-key-id",
        "AKIDLOGS",
        "--sigv4-secret-access-key",
        SIGV4,
    ]));
    gw_args.extend([
        "--listen".into(),
        format!("127.0.0.1:{gport}"),
        "--param".into(),
        format!("IntegrationUri=http://127.0.0.1:{bport}"),
        "--param".into(),
        format!("SharedSecret={SHARED}"),
    ]);
    let gw = Proc::start(&gw_args, Some(&dir.join("gateway.log")));
    wait_ready(iport).await;
    wait_ready(gport).await;
    // Traffic that touches every secret: integration calls carrying the shared secret, direct
    // calls with a wrong and a right secret, SigV4-signed and badly signed @connections calls.
    let mut ws = connect(&format!("ws://127.0.0.1:{gport}/dev")).await;
    send_text(&mut ws, "hello").await;
    assert_eq!(next_text(&mut ws).await, "hello");
    for secret in ["wrong-secret-wrong-secret", SHARED] {
        send(
            "POST",
            &format!("http://127.0.0.1:{bport}/message"),
            &[
                ("x-socketless-connection-id", "logtest0000000="),
                ("x-socketless-secret", secret),
            ],
            "x",
        )
        .await;
    }
    let (status, _, _) = send("POST", &format!("http://127.0.0.1:{gport}/dev/@connections/nobody"), &[("authorization", "AWS4-HMAC-SHA256 Credential=AKIDLOGS/20260101/us-east-1/execute-api/aws4_request, SignedHeaders=host, Signature=00")], "x").await;
    assert_eq!(status, http::StatusCode::FORBIDDEN);
    drop(ws);
    // A resume key: a session made, dropped and resumed by it; and an invalid one refused.
    let resume = |key: &str| format!("ws://127.0.0.1:{gport}/dev?resume={key}");
    drop(connect(&resume(RESUME_KEY)).await);
    let mut resumed = connect(&resume(RESUME_KEY)).await;
    send_text(&mut resumed, "again").await;
    assert_eq!(next_text(&mut resumed).await, "again");
    drop(resumed);
    assert_eq!(
        common::authorizer::refused(&resume(BAD_RESUME_KEY)).await,
        400,
        "an invalid resume key is refused"
    );
    // Invalid settings with a secret in them.
    let refusal = refused(command().args([
        "serve",
        "--shared-secret",
        "short secret with spaces",
        "--listen",
        "bad",
    ]));
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(gw);
    drop(serve);
    let logs = format!(
        "{}\n{}\n{}",
        std::fs::read_to_string(dir.join("serve.log")).unwrap(),
        std::fs::read_to_string(dir.join("gateway.log")).unwrap(),
        refusal
    );
    assert!(
        logs.lines().count() > 10,
        "trace logging produced too little to be a meaningful check"
    );
    for secret in [SHARED, SIGV4, "short secret with spaces", RESUME_KEY, BAD_RESUME_KEY] {
        assert!(!logs.contains(secret), "a secret appeared in the logs");
    }
    println!(
        "secrets: {} log lines at trace level searched; no secret found",
        logs.lines().count()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

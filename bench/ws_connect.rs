//! Connect storm: C concurrent clients, each opening a WebSocket connection (the handshake up to
//! the 101), closing it (Close frame, then waiting for the server's close or end of stream), and
//! opening the next, until the duration or the total count is reached. Prints one JSON line with
//! completed open/close cycles per second and handshake latency percentiles. Bounded in clients,
//! count and time; loopback targets only.
//!
//! ws_connect URL [--clients 32] [--duration 10s] [--warmup 2s] [--max 200000]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;

#[derive(Default)]
struct Outcome {
    latencies_us: Vec<u32>,
    cycles: u64,
    errors: u64,
}

async fn client(url: String, measure_from: Instant, end: Instant, budget: Arc<AtomicU64>) -> Outcome {
    let mut out = Outcome::default();
    // Takes one from the budget unless it is spent (a plain decrement would wrap past zero).
    while Instant::now() < end
        && budget
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| b.checked_sub(1))
            .is_ok()
    {
        let t0 = Instant::now();
        let ws = tokio::time::timeout(Duration::from_secs(10), tokio_tungstenite::connect_async(&url)).await;
        let Ok(Ok((mut ws, _))) = ws else {
            out.errors += 1;
            if out.errors > 100 {
                break;
            }
            continue;
        };
        let handshake = t0.elapsed();
        let _ = ws.close(None).await;
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while let Some(Ok(_)) = ws.next().await {}
        })
        .await;
        if t0 >= measure_from {
            out.cycles += 1;
            out.latencies_us
                .push(handshake.as_micros().min(u32::MAX as u128) as u32);
        }
    }
    out
}

#[tokio::main]
async fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let (mut url, mut clients, mut duration, mut warmup, mut max) = (
        String::new(),
        32usize,
        Duration::from_secs(10),
        Duration::from_secs(2),
        200_000u64,
    );
    let mut i = 0;
    while i < argv.len() {
        let v = argv.get(i + 1).cloned().unwrap_or_default();
        match argv[i].as_str() {
            "--clients" => clients = v.parse().expect("--clients N"),
            "--duration" => duration = socketless::config::parse_duration(&v).expect("--duration"),
            "--warmup" => warmup = socketless::config::parse_duration(&v).expect("--warmup"),
            "--max" => max = v.parse().expect("--max N"),
            other => {
                url = other.to_string();
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    assert!(url.starts_with("ws://127.0.0.1"), "loopback targets only");
    assert!(
        clients <= 1_000 && max <= 200_000 && duration <= Duration::from_secs(60) && warmup <= Duration::from_secs(10),
        "bounded load only"
    );
    let start = Instant::now();
    let (measure_from, end) = (start + warmup, start + warmup + duration);
    let budget = Arc::new(AtomicU64::new(max));
    let tasks: Vec<_> = (0..clients)
        .map(|_| tokio::spawn(client(url.clone(), measure_from, end, budget.clone())))
        .collect();
    let (mut all, mut cycles, mut errors) = (Vec::new(), 0u64, 0u64);
    for t in tasks {
        match t.await {
            Ok(o) => {
                all.extend(o.latencies_us);
                cycles += o.cycles;
                errors += o.errors;
            }
            Err(_) => errors += 1,
        }
    }
    let measured = Instant::now()
        .min(end)
        .saturating_duration_since(measure_from)
        .as_secs_f64()
        .max(1e-9);
    all.sort_unstable();
    let pct = |p: f64| {
        if all.is_empty() {
            return f64::NAN;
        }
        all[((all.len() as f64 - 1.0) * p).round() as usize] as f64 / 1000.0
    };
    println!(
        "{{\"clients\":{clients},\"cycles\":{cycles},\"errors\":{errors},\"seconds\":{measured:.2},\"per_sec\":{:.1},\"p50_ms\":{:.3},\"p99_ms\":{:.3}}}",
        cycles as f64 / measured,
        pct(0.50),
        pct(0.99)
    );
}

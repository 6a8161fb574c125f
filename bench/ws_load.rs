//! WebSocket load generator for the benchmarks: N concurrent clients, each sending a message
//! and waiting for its echo before the next one, for a fixed time. Prints one JSON line with
//! messages/s and latency percentiles. Bounded in clients and time; loopback targets only.
//!
//! ws_load URL [--clients 64] [--duration 10s] [--warmup 2s] [--size 32] [--keep-going]
//!
//! By default a client stops at its first error. With `--keep-going` a client that gets an error
//! frame instead of its echo counts it and sends the next message, so the error count is the
//! number of failed messages (ci/e2e/e2e-local.sh uses it to compare timings).

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

struct Args {
    url: String,
    clients: usize,
    duration: Duration,
    warmup: Duration,
    size: usize,
    keep_going: bool,
}

fn parse() -> Args {
    let mut a = Args {
        url: String::new(),
        clients: 64,
        duration: Duration::from_secs(10),
        warmup: Duration::from_secs(2),
        size: 32,
        keep_going: false,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < argv.len() {
        let v = || argv.get(i + 1).cloned().unwrap_or_default();
        match argv[i].as_str() {
            "--clients" => a.clients = v().parse().expect("--clients N"),
            "--duration" => a.duration = socketless::config::parse_duration(&v()).expect("--duration"),
            "--warmup" => a.warmup = socketless::config::parse_duration(&v()).expect("--warmup"),
            "--size" => a.size = v().parse().expect("--size N"),
            "--keep-going" => {
                a.keep_going = true;
                i += 1;
                continue;
            }
            url => {
                a.url = url.to_string();
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    assert!(
        a.url.starts_with("ws://127.0.0.1") || a.url.starts_with("ws://localhost"),
        "loopback targets only"
    );
    assert!(
        a.clients <= 10_000 && a.duration <= Duration::from_secs(120),
        "bounded load only"
    );
    a
}

#[derive(Default)]
struct Outcome {
    latencies_us: Vec<u32>,
    sent: u64,
    answered: u64,
    errors: u64,
}

async fn client(url: String, size: usize, keep_going: bool, start: Instant, warmup: Duration, end: Instant) -> Outcome {
    let mut out = Outcome::default();
    let Ok((mut ws, _)) = tokio_tungstenite::connect_async(&url).await else {
        out.errors += 1;
        return out;
    };
    let payload: String = "x".repeat(size.saturating_sub(8).max(1));
    let mut n: u64 = 0;
    while Instant::now() < end {
        n += 1;
        let msg = format!("{n:08}{payload}");
        let sent = Instant::now();
        out.sent += 1;
        if ws.send(Message::text(msg.clone())).await.is_err() {
            out.errors += 1;
            break;
        }
        let reply = tokio::time::timeout(Duration::from_secs(10), ws.next()).await;
        match reply {
            Ok(Some(Ok(Message::Text(t)))) if t.as_str() == msg => {
                out.answered += 1;
                if sent.duration_since(start) >= warmup {
                    out.latencies_us
                        .push(sent.elapsed().as_micros().min(u32::MAX as u128) as u32);
                }
            }
            Ok(Some(Ok(Message::Text(t)))) if keep_going => {
                eprintln!("ws_load: message {n}: unexpected reply {t:?}");
                out.errors += 1;
            }
            other => {
                eprintln!("ws_load: message {n}: unexpected {other:?}");
                out.errors += 1;
                break;
            }
        }
    }
    let _ = ws.close(None).await;
    out
}

#[tokio::main]
async fn main() {
    let a = parse();
    let start = Instant::now();
    let end = start + a.warmup + a.duration;
    let tasks: Vec<_> = (0..a.clients)
        .map(|_| tokio::spawn(client(a.url.clone(), a.size, a.keep_going, start, a.warmup, end)))
        .collect();
    let mut all = Vec::new();
    let (mut errors, mut sent, mut answered) = (0, 0, 0);
    for t in tasks {
        if let Ok(o) = t.await {
            all.extend(o.latencies_us);
            errors += o.errors;
            sent += o.sent;
            answered += o.answered;
        } else {
            errors += 1;
        }
    }
    all.sort_unstable();
    let pct = |p: f64| -> f64 {
        if all.is_empty() {
            return f64::NAN;
        }
        let idx = ((all.len() as f64 - 1.0) * p).round() as usize;
        all[idx] as f64 / 1000.0
    };
    let secs = a.duration.as_secs_f64();
    println!(
        "{{\"clients\":{},\"sent\":{},\"answered\":{},\"messages\":{},\"errors\":{},\"msgs_per_sec\":{:.1},\"p50_ms\":{:.3},\"p99_ms\":{:.3}}}",
        a.clients,
        sent,
        answered,
        all.len(),
        errors,
        all.len() as f64 / secs,
        pct(0.50),
        pct(0.99)
    );
}

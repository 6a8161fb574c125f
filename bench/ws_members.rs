//! Group members for the publish benchmark: opens N WebSocket connections (bounded concurrency
//! while opening), each with the User-Agent `PREFIX-i` so the driver can find its connection id
//! in the session store, and records every text frame they receive: how many connections got
//! each text, how many got it more than once, and when the last copy arrived. The driver asks
//! on stdin; answers are one JSON line each on stdout. Loopback targets only; at most 20,000
//! connections.
//!
//! ws_members URL N PREFIX
//!
//! stdin: `report TEXT` → `{"text":…,"connections":…,"duplicates":…,"first_us":…,"last_us":…}`
//! (microseconds since the Unix epoch); anything else, or the end of stdin, exits (the
//! connections drop with the process).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// What arrived of one text.
#[derive(Default)]
struct Seen {
    connections: u64,
    duplicates: u64,
    first_us: u128,
    last_us: u128,
}

type Book = Arc<Mutex<HashMap<String, Seen>>>;

fn now_us() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0)
}

async fn member(url: String, agent: String, book: Book, gate: Arc<Semaphore>) -> bool {
    let opened = {
        let Ok(_permit) = gate.acquire().await else {
            return false;
        };
        let Ok(mut req) = url.into_client_request() else {
            return false;
        };
        let Ok(value) = agent.parse() else { return false };
        req.headers_mut().insert("user-agent", value);
        let mut config = WebSocketConfig::default();
        config.read_buffer_size = 4096;
        config.write_buffer_size = 0;
        tokio::time::timeout(
            std::time::Duration::from_secs(30),
            tokio_tungstenite::connect_async_with_config(req, Some(config), true),
        )
        .await
    };
    let Ok(Ok((ws, _))) = opened else { return false };
    tokio::spawn(async move {
        let (_write, mut read) = ws.split();
        let mut mine: HashSet<String> = HashSet::new();
        while let Some(Ok(msg)) = read.next().await {
            if let Message::Text(t) = msg {
                let at = now_us();
                let text = t.as_str().to_string();
                let again = !mine.insert(text.clone());
                let mut book = book.lock().unwrap_or_else(|p| p.into_inner());
                let seen = book.entry(text).or_default();
                if again {
                    seen.duplicates += 1;
                } else {
                    seen.connections += 1;
                }
                if seen.first_us == 0 {
                    seen.first_us = at;
                }
                seen.last_us = seen.last_us.max(at);
            }
        }
    });
    true
}

// One thread: the members only read, and a second thread would only add wake-ups between them.
#[tokio::main(flavor = "current_thread")]
async fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let url = argv.first().cloned().expect("URL");
    let n: usize = argv.get(1).and_then(|v| v.parse().ok()).expect("N");
    let prefix = argv.get(2).cloned().expect("PREFIX");
    assert!(url.starts_with("ws://127.0.0.1:"), "loopback targets only");
    assert!(n <= 20_000, "bounded");
    let book: Book = Arc::default();
    let gate = Arc::new(Semaphore::new(64));
    let opening: Vec<_> = (0..n)
        .map(|i| tokio::spawn(member(url.clone(), format!("{prefix}-{i}"), book.clone(), gate.clone())))
        .collect();
    let mut open = 0;
    for t in opening {
        open += usize::from(matches!(t.await, Ok(true)));
    }
    println!("{{\"open\":{open},\"failed\":{}}}", n - open);
    loop {
        let read = tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).map(|_| line)
        });
        let Ok(Ok(line)) = read.await else { break };
        let Some(text) = line.trim_end_matches('\n').strip_prefix("report ") else {
            break;
        };
        let book = book.lock().unwrap_or_else(|p| p.into_inner());
        let none = Seen::default();
        let seen = book.get(text).unwrap_or(&none);
        println!(
            "{}",
            serde_json::json!({
                "text": text,
                "connections": seen.connections,
                "duplicates": seen.duplicates,
                "first_us": seen.first_us as u64,
                "last_us": seen.last_us as u64,
            })
        );
    }
}

//! Opens N idle WebSocket connections (bounded concurrency while opening), prints a line when
//! they are all open, holds them, then closes them. Used to measure the
//! gateway's memory per idle connection. Holds them until SIGTERM or SIGINT.
//!
//! ws_idle URL N

use std::sync::Arc;

use tokio::sync::Semaphore;

#[tokio::main]
async fn main() {
    let url = std::env::args().nth(1).expect("URL");
    let n: usize = std::env::args().nth(2).and_then(|v| v.parse().ok()).expect("N");
    assert!(url.starts_with("ws://127.0.0.1"), "loopback targets only");
    assert!(n <= 20_000, "bounded");
    let gate = Arc::new(Semaphore::new(64));
    let mut opening = Vec::with_capacity(n);
    for _ in 0..n {
        let (url, gate) = (url.clone(), gate.clone());
        opening.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await.ok()?;
            tokio_tungstenite::connect_async(url).await.ok().map(|(ws, _)| ws)
        }));
    }
    let mut open = Vec::with_capacity(n);
    for t in opening {
        if let Ok(Some(ws)) = t.await {
            open.push(ws);
        }
    }
    println!("{{\"open\":{},\"failed\":{}}}", open.len(), n - open.len());
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("signal handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    for mut ws in open {
        let _ = ws.close(None).await;
    }
}

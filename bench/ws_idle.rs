//! Opens N idle WebSocket connections (bounded concurrency while opening), prints a line when
//! they are all open, holds them, then closes them. Used to measure the
//! gateway's memory per idle connection. Holds them until SIGTERM or SIGINT.
//!
//! ws_idle URL N [--sources K]
//!
//! With `--sources K` the connections are spread over the loopback source addresses 127.0.0.1 to
//! 127.0.0.K (round robin), so that more connections than one address has ephemeral ports can
//! reach one listener.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use tokio::sync::Semaphore;

async fn open(
    url: String,
    target: SocketAddr,
    source: Option<Ipv4Addr>,
) -> Option<tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>> {
    let stream = match source {
        None => tokio::net::TcpStream::connect(target).await.ok()?,
        Some(source) => {
            let socket = tokio::net::TcpSocket::new_v4().ok()?;
            socket.bind(SocketAddr::from((source, 0))).ok()?;
            socket.connect(target).await.ok()?
        }
    };
    tokio_tungstenite::client_async(url, stream)
        .await
        .ok()
        .map(|(ws, _)| ws)
}

#[tokio::main]
async fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let url = argv.first().cloned().expect("URL");
    let n: usize = argv.get(1).and_then(|v| v.parse().ok()).expect("N");
    let sources: u8 = match argv.get(2).map(String::as_str) {
        Some("--sources") => argv.get(3).and_then(|v| v.parse().ok()).expect("--sources K"),
        _ => 0,
    };
    assert!(url.starts_with("ws://127.0.0.1:"), "loopback targets only");
    assert!(n <= 120_000 && sources <= 32, "bounded");
    let target: SocketAddr = url["ws://".len()..]
        .split('/')
        .next()
        .and_then(|a| a.parse().ok())
        .expect("ws://127.0.0.1:PORT/...");
    let gate = Arc::new(Semaphore::new(64));
    let mut opening = Vec::with_capacity(n);
    for i in 0..n {
        let (url, gate) = (url.clone(), gate.clone());
        let source = (sources > 0).then(|| Ipv4Addr::new(127, 0, 0, 1 + (i % sources as usize) as u8));
        opening.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await.ok()?;
            open(url, target, source).await
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

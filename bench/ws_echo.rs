//! The full-path benchmark's limit, and the connect storm's: a WebSocket server that echoes
//! every text and binary frame directly, with no gateway, no backend call and no store.
//!
//! ws_echo 127.0.0.1:PORT [--drop-on-close]
//!
//! A client's Close is answered with a Close, as RFC 6455 (5.5.1) requires and the gateway does,
//! and the connection is then dropped. With `--drop-on-close` the connection is dropped as soon
//! as the client's Close is read, without answering it: less work than any conforming server
//! does, kept so that the connect storm can show its rate beside the conforming one.

use futures_util::{SinkExt, StreamExt};

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:18091".into());
    let drop_on_close = match args.next().as_deref() {
        None => false,
        Some("--drop-on-close") => true,
        Some(other) => panic!("unknown argument {other:?}; usage: ws_echo ADDR [--drop-on-close]"),
    };
    let listener = tokio::net::TcpListener::bind(&addr).await.expect("bind");
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                return;
            };
            // After a Close, the next read sends tungstenite's queued Close reply and ends the
            // stream.
            while let Some(Ok(msg)) = ws.next().await {
                if msg.is_close() && drop_on_close {
                    return;
                }
                if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                    return;
                }
            }
        });
    }
}

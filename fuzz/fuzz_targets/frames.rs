//! The WebSocket protocol layer with the gateway's limits: any bytes from a client.
#![no_main]
use futures_util::StreamExt;
use libfuzzer_sys::fuzz_target;
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::Role;

fuzz_target!(|data: &[u8]| {
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    rt.block_on(async {
        let (mut client, server) = tokio::io::duplex(256 * 1024);
        let _ = client.write_all(data).await;
        drop(client);
        let config = socketless::gateway::websocket_config(4096, 1024);
        let mut ws = WebSocketStream::from_raw_socket(server, Role::Server, Some(config)).await;
        let mut total = 0usize;
        while let Some(msg) = ws.next().await {
            match msg {
                Ok(m) => {
                    assert!(m.len() <= 4096, "a message over the limit got through");
                    total += 1;
                }
                Err(_) => break,
            }
        }
        let _ = total;
    });
});

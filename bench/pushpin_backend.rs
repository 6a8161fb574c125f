//! The backend Pushpin fronts in the full-path benchmark: an equally small HTTP server that
//! speaks WebSocket-over-HTTP (Content-Type `application/websocket-events`): it accepts OPEN and
//! echoes every TEXT event, the same work `serve` does with its in-memory store.
//!
//! pushpin_backend 127.0.0.1:PORT

use std::convert::Infallible;

use bytes::{BufMut, Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

/// Parses `TYPE [hexlen]\r\n[data\r\n]` events and builds the reply events.
fn reply(body: &[u8]) -> Bytes {
    let mut out = BytesMut::new();
    let mut rest = body;
    while !rest.is_empty() {
        let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") else {
            break;
        };
        let head = std::str::from_utf8(&rest[..eol]).unwrap_or("");
        rest = &rest[eol + 2..];
        let mut parts = head.splitn(2, ' ');
        let kind = parts.next().unwrap_or("");
        let len = parts.next().and_then(|h| usize::from_str_radix(h, 16).ok());
        let data = match len {
            Some(n) if rest.len() >= n + 2 => {
                let d = &rest[..n];
                rest = &rest[n + 2..];
                d
            }
            Some(_) => break,
            None => &[][..],
        };
        match kind {
            "OPEN" => out.put_slice(b"OPEN\r\n"),
            "TEXT" => {
                out.put_slice(format!("TEXT {:x}\r\n", data.len()).as_bytes());
                out.put_slice(data);
                out.put_slice(b"\r\n");
            }
            "CLOSE" => out.put_slice(b"CLOSE\r\n"),
            _ => {}
        }
    }
    out.freeze()
}

#[tokio::main]
async fn main() {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:18092".into());
    let listener = tokio::net::TcpListener::bind(&addr).await.expect("bind");
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        // Without TCP_NODELAY every round trip waits for a delayed ACK.
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let svc = service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                let body = req
                    .into_body()
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                let resp = hyper::Response::builder()
                    .header("content-type", "application/websocket-events")
                    .body(Full::new(reply(&body)))
                    .unwrap_or_default();
                Ok::<_, Infallible>(resp)
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

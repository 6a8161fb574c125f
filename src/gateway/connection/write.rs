//! Writing to the client: data frames straight to the socket (within the write timeout, and cut
//! short by a close request), other frames through the protocol layer, and renewing that layer
//! so no buffer keeps a large frame's size.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures_util::SinkExt;
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;

use super::{ConnHandle, Ending, GOING_AWAY, Socket};

/// Writes one data frame within the write timeout, unless the connection is asked to close
/// urgently meanwhile (1008, 1013, …: a client that does not read is then closed at once, not
/// after the write timeout); an orderly close waits for the frame.
///
/// The frame goes straight to the socket, not through the protocol layer: that layer would copy
/// it into its write buffer, and a buffer keeps the size of the largest frame it ever held
/// (128 KiB for every connection that once received a large post). Written here, a frame costs
/// nothing past its own bytes, which the outbound budget counts until the write ends. Whatever
/// the protocol layer itself has to send (a pong, say) is flushed first, so frames never mix.
pub(super) async fn write_or_close(
    ws: &mut Socket,
    handle: &ConnHandle,
    msg: Message,
    within: Duration,
) -> Result<(), Ending> {
    let (opcode, payload) = match msg {
        Message::Text(t) => (0x1u8, Bytes::from(t)),
        Message::Binary(b) => (0x2u8, b),
        other => return write(ws, other, within).await,
    };
    let head = frame_head(opcode, payload.len());
    let mut written = 0usize;
    let outcome = {
        let send = tokio::time::timeout(within, async {
            SinkExt::flush(ws).await.map_err(|_| ())?;
            let io = ws.get_mut();
            while written < head.len() + payload.len() {
                // The head and the payload in one system call (one segment for a small frame),
                // the payload's bytes still not copied.
                let sent = if written < head.len() {
                    let parts = [std::io::IoSlice::new(&head[written..]), std::io::IoSlice::new(&payload)];
                    io.write_vectored(&parts).await
                } else {
                    io.write(&payload[written - head.len()..]).await
                };
                match sent {
                    Ok(0) | Err(_) => return Err(()),
                    Ok(n) => written += n,
                }
            }
            io.flush().await.map_err(|_| ())
        });
        tokio::pin!(send);
        let mut woken = false;
        loop {
            tokio::select! {
                biased;
                done = &mut send => {
                    if woken {
                        // A frame was queued meanwhile: keep the wake-up for the task's loop.
                        handle.wake.notify_one();
                    }
                    break match done {
                        Ok(Ok(())) => Ok(()),
                        Ok(Err(())) => Err(None),
                        Err(_) => Err(Some((GOING_AWAY.0, "Write timed out".to_string()))),
                    };
                }
                _ = handle.wake.notified() => {
                    if let Some(close) = handle.take_urgent_close() {
                        break Err(Some(close));
                    }
                    woken = true;
                }
            }
        }
    };
    match outcome {
        Ok(()) => Ok(()),
        Err(None) => Err(Ending::Dropped),
        Err(Some((code, reason))) => {
            // The Close frame may follow only once this frame is whole.
            let rest = if written == 0 {
                Bytes::new()
            } else if written < head.len() {
                let mut b = head[written..].to_vec();
                b.extend_from_slice(&payload);
                Bytes::from(b)
            } else {
                payload.slice(written - head.len()..)
            };
            Err(Ending::Interrupted(code, reason, rest))
        }
    }
}

/// Starts the protocol layer afresh on the same socket when its read buffer grew for a large
/// frame and holds nothing unread (see `budget::Metered`): otherwise every connection that once
/// sent a 32 KiB frame would keep a 32 KiB buffer until it closes. Whatever the old layer still
/// has to send (a pong) must go first; if it cannot go at once, the layer is kept this time.
///
/// Returns the new layer to await, boxed, or `None` when the current one stays: only a renewal
/// allocates, and the connection's task holds no room for one.
pub(super) fn renew(ws: &mut Socket) -> Option<Pin<Box<impl Future<Output = Socket> + Send + use<>>>> {
    use futures_util::FutureExt;
    if !matches!(SinkExt::flush(ws).now_or_never(), Some(Ok(()))) {
        return None;
    }
    let config = *ws.get_config();
    let io = ws.get_mut().renew()?;
    Some(Box::pin(WebSocketStream::from_raw_socket(
        io,
        Role::Server,
        Some(config),
    )))
}

/// A server frame's header: FIN, the opcode and the payload length (servers do not mask).
fn frame_head(opcode: u8, len: usize) -> Vec<u8> {
    let mut head = Vec::with_capacity(10);
    head.push(0x80 | opcode);
    if len < 126 {
        head.push(len as u8);
    } else if let Ok(short) = u16::try_from(len) {
        head.push(126);
        head.extend_from_slice(&short.to_be_bytes());
    } else {
        head.push(127);
        head.extend_from_slice(&(len as u64).to_be_bytes());
    }
    head
}

/// Writes one frame through the protocol layer within the write timeout.
async fn write(ws: &mut Socket, msg: Message, within: Duration) -> Result<(), Ending> {
    match tokio::time::timeout(within, ws.send(msg)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(Ending::Dropped),
        Err(_) => Err(Ending::ByUs(GOING_AWAY.0, "Write timed out".to_string())),
    }
}

//! How a connection ended, and the closing handshake: what is still owed to the client (the
//! rest of a frame cut short, a Close frame, the answer to the client's Close) and the status
//! `$disconnect` reports.

use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::error::{Error as WsError, ProtocolError};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::{ABNORMAL, INVALID_PAYLOAD, PROTOCOL_ERROR, Socket, TOO_BIG};

/// How a connection ended, and what the closing handshake still owes the client.
pub enum Ending {
    /// The gateway closes: send a Close frame with this status and wait briefly for the reply.
    ByUs(u16, String),
    /// As `ByUs`, but a data frame was cut short: the rest of it goes first, if the client
    /// takes it in time; otherwise no Close frame can follow.
    Interrupted(u16, String, Bytes),
    /// The client sent a Close frame: answer it (RFC 6455 §5.5.1) with the same status.
    ByPeer(u16, String),
    /// The client broke the protocol: send a Close frame with this status, expect nothing back.
    Violation(u16, String),
    /// The connection is gone (reset, write failure): nothing can be sent.
    Dropped,
}

impl Ending {
    pub(super) fn by_us((code, reason): (u16, &str)) -> Self {
        Ending::ByUs(code, reason.to_string())
    }

    /// Maps a read error: limits give 1009, invalid UTF-8 gives 1007 and other protocol
    /// violations (unmasked frames, reserved opcodes or bits, oversized control frames) give
    /// 1002; a dropped connection gives nothing to send.
    pub(super) fn from_read_error(err: WsError) -> Self {
        match err {
            WsError::Capacity(_) => Ending::by_us(TOO_BIG),
            WsError::Utf8(_) => Ending::Violation(INVALID_PAYLOAD.0, INVALID_PAYLOAD.1.to_string()),
            WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => Ending::Dropped,
            WsError::Protocol(_) => Ending::Violation(PROTOCOL_ERROR.0, PROTOCOL_ERROR.1.to_string()),
            _ => Ending::Dropped,
        }
    }

    /// Completes the closing handshake as far as the client allows; returns the status and
    /// reason `$disconnect` reports, and whether the client sent its Close frame (after which
    /// it sends nothing more, so its socket can close without lingering).
    pub async fn finish(self, ws: &mut Socket) -> Closed {
        let bound = Duration::from_secs(2);
        let this = match self {
            Ending::Interrupted(code, reason, rest) => {
                let whole = tokio::time::timeout(bound, async {
                    let io = ws.get_mut();
                    io.write_all(&rest).await?;
                    io.flush().await
                })
                .await;
                if !matches!(whole, Ok(Ok(()))) {
                    return Closed::lingering(code, reason);
                }
                Ending::ByUs(code, reason)
            }
            other => other,
        };
        match this {
            Ending::ByUs(code, reason) => {
                let replied = tokio::time::timeout(bound, async {
                    if ws.send(close_frame(code, &reason)).await.is_ok() {
                        // Wait for the client's Close reply, briefly.
                        while let Some(Ok(m)) = ws.next().await {
                            if m.is_close() {
                                return true;
                            }
                        }
                    }
                    false
                })
                .await;
                Closed {
                    code,
                    reason,
                    peer_done: replied == Ok(true),
                }
            }
            Ending::ByPeer(code, reason) => {
                // The protocol layer queued the reply when it read the client's Close frame;
                // flushing sends it.
                let _ = tokio::time::timeout(bound, SinkExt::flush(ws)).await;
                Closed {
                    code,
                    reason,
                    peer_done: true,
                }
            }
            Ending::Violation(code, reason) => {
                let _ = tokio::time::timeout(bound, ws.send(close_frame(code, &reason))).await;
                Closed::lingering(code, reason)
            }
            Ending::Dropped => Closed::lingering(ABNORMAL, String::new()),
            Ending::Interrupted(code, reason, _) => Closed::lingering(code, reason),
        }
    }
}

/// How the closing handshake ended.
pub struct Closed {
    /// The status and reason `$disconnect` reports.
    pub code: u16,
    pub reason: String,
    /// The client sent its Close frame: by RFC 6455 (§5.5.1) it sends nothing after it, so no
    /// unread bytes can turn closing its socket into a reset, and the socket closes at once.
    pub peer_done: bool,
}

impl Closed {
    fn lingering(code: u16, reason: String) -> Self {
        Closed {
            code,
            reason,
            peer_done: false,
        }
    }
}

pub(super) fn close_frame(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code: CloseCode::from(code),
        reason: reason.to_string().into(),
    }))
}

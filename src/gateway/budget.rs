//! The gateway's memory budgets, shared by every connection: the bytes of client messages it
//! holds (being received, or being delivered to the backend) and the bytes `@connections` has
//! queued for clients. A connection cannot take more than the budget leaves, so the gateway's
//! memory is bounded by the budgets plus a small figure per connection, whatever the clients do.
//!
//! Inbound, [`Metered`] sits under the WebSocket protocol layer and reads each frame's header as
//! the bytes go by: a data frame's payload is charged to the budget before the protocol layer sees
//! the header, so before it reserves room for the payload or reads a byte of it. A frame that does
//! not fit ends the connection (close 1009), and its payload is never buffered. The message stays
//! charged until the backend has answered it; a message must arrive whole within the message
//! timeout (the sweep over the connections closes it with 1008 otherwise). [`Metered`] also says when the
//! protocol layer may be replaced by a fresh one, so no buffer keeps a large frame's size.
//!
//! Outbound, the connection's handle charges each queued frame (`connection.rs`) and the
//! connections share the budget fairly (`connections.rs`). The budgets' flags are checked here too.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::config::{GatewayArgs, GatewayConfig};
use super::connection::ConnHandle;
use super::metrics::GatewayMetrics;
use crate::config::{Labels, Problems};
use crate::contract;

/// The first bytes of every message are not charged: an ordinary small message never touches
/// the budget, so clients that send small messages are never closed by it. These bytes are part
/// of the per-connection figure (docs/gateway.md, "Memory budgets").
pub const FREE_MESSAGE_BYTES: usize = 4096;

/// Close status and reason for a frame that does not fit the message budget (RFC 6455 §7.4.1:
/// "a message that is too big for it to process").
pub const BUDGET_TOO_BIG: (u16, &str) = (1009, "Message too big: the gateway is holding too many messages");
/// Close status and reason for a message that did not complete within the message timeout.
pub const MESSAGE_TIMEOUT: (u16, &str) = (1008, "Message not completed in time");
/// Close status and reason for a client that stays over its fair share of the outbound budget
/// (IANA 1013, "Try Again Later": the server is overloaded and casting off clients).
pub const OUTBOUND_OVER_SHARE: (u16, &str) = (1013, "Try again later: the client is not reading its messages");

/// One gateway-wide byte budget, kept in the gauge that reports it.
pub struct Budget {
    limit: i64,
    used: Gauge,
}

impl Budget {
    pub fn new(limit: usize, used: Gauge) -> Self {
        Budget {
            limit: i64::try_from(limit).unwrap_or(i64::MAX),
            used,
        }
    }

    fn bytes(n: usize) -> i64 {
        i64::try_from(n).unwrap_or(i64::MAX)
    }

    /// Takes `n` bytes if they fit.
    pub fn try_charge(&self, n: usize) -> bool {
        let n = Self::bytes(n);
        let before = self.used.inc_by(n);
        if before.saturating_add(n) > self.limit {
            self.used.dec_by(n);
            return false;
        }
        true
    }

    pub fn release(&self, n: usize) {
        if n > 0 {
            self.used.dec_by(Self::bytes(n));
        }
    }

    pub fn used(&self) -> usize {
        usize::try_from(self.used.get()).unwrap_or(0)
    }

    pub fn limit(&self) -> usize {
        usize::try_from(self.limit).unwrap_or(usize::MAX)
    }
}

/// The budgets and what they count, one set per gateway.
pub struct Budgets {
    /// Bytes of client messages held (past each message's first [`FREE_MESSAGE_BYTES`]).
    pub inbound: Budget,
    /// Bytes of `@connections` posts queued for clients, or being written to them.
    pub outbound: Budget,
    /// Connections holding queued outbound bytes now (the fair share divides the budget by it).
    pub holders: Gauge,
    /// A message must arrive whole within this once its first frame's header arrived.
    pub message_timeout: Duration,
    /// Frames larger than this are refused by the protocol layer, so they are not charged.
    pub max_frame_bytes: usize,
    pub closed_inbound: Counter,
    pub closed_timeout: Counter,
    pub closed_outbound: Counter,
}

impl Budgets {
    /// The budgets a gateway with these settings keeps, reported in its metrics.
    pub fn new(config: &GatewayConfig, metrics: &GatewayMetrics) -> Self {
        Budgets {
            inbound: Budget::new(config.max_pending_message_bytes, metrics.pending_message_bytes.clone()),
            outbound: Budget::new(config.max_outbound_bytes, metrics.queued_outbound_bytes.clone()),
            holders: Gauge::default(),
            message_timeout: config.message_timeout,
            max_frame_bytes: config.max_frame_bytes,
            closed_inbound: metrics.memory_close("message_budget"),
            closed_timeout: metrics.memory_close("message_timeout"),
            closed_outbound: metrics.memory_close("outbound_budget"),
        }
    }

    /// A connection's fair share of the outbound budget, counting it among the holders.
    pub fn fair_share(&self, counting_self: bool) -> usize {
        let holders = usize::try_from(self.holders.get()).unwrap_or(0) + usize::from(counting_self);
        self.outbound.limit() / holders.max(1)
    }
}

/// Where the reader is in the client's byte stream.
enum Parse {
    /// Reading a frame header; `have` bytes of it so far (at most 14: a byte keeps every
    /// connection's stream a word smaller).
    Header { buf: [u8; 14], have: u8 },
    /// Passing a payload through; `ends_message` when it is the last frame of a message.
    Payload { left: u64, ends_message: bool },
    /// A frame did not fit the budget: nothing more is read.
    Refused,
}

/// The bytes a frame header needs in all, once its first two bytes are known.
fn header_len(b0_b1: [u8; 2]) -> usize {
    let ext = match b0_b1[1] & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let mask = if b0_b1[1] & 0x80 != 0 { 4 } else { 0 };
    2 + ext + mask
}

fn payload_len(h: &[u8]) -> u64 {
    match h[1] & 0x7f {
        126 => u64::from(u16::from_be_bytes([h[2], h[3]])),
        127 => {
            let mut b = [0u8; 8];
            b.copy_from_slice(&h[2..10]);
            u64::from_be_bytes(b)
        }
        n => u64::from(n),
    }
}

/// The client's stream, with every data frame charged to the message budget before the
/// protocol layer reads it. Writes pass through.
///
/// It also says when the protocol layer can be started afresh on the same socket: the layer's
/// read buffer keeps the size of the largest frame it ever held (up to `--max-frame-bytes` for
/// the rest of the connection), so after a message with a large frame, once nothing past that
/// message has been handed to the layer, the connection swaps it for a new one (see
/// [`Metered::renew`]).
pub struct Metered<S> {
    /// `None` once the socket moved to a renewed stream.
    inner: Option<S>,
    conn: Arc<ConnHandle>,
    parse: Parse,
    /// A frame larger than the protocol layer's initial read buffer went by.
    grown: bool,
    /// The last byte handed to the protocol layer ended a message.
    at_boundary: bool,
}

/// The protocol layer's initial read buffer (`connection::ws_config`); a frame larger than
/// this grows it.
pub const READ_BUFFER_BYTES: usize = 1024;

fn gone() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "the socket moved to a renewed stream")
}

impl<S> Metered<S> {
    pub fn new(inner: S, conn: Arc<ConnHandle>) -> Self {
        Metered {
            inner: Some(inner),
            conn,
            parse: Parse::Header { buf: [0; 14], have: 0 },
            grown: false,
            at_boundary: true,
        }
    }

    /// The socket, for a fresh protocol layer, when the current one's read buffer grew and
    /// holds nothing unread; `None` otherwise. This stream is then empty: dropping it
    /// releases nothing.
    pub fn renew(&mut self) -> Option<Metered<S>> {
        // At a message's end with nothing read past it, and that message is the last the
        // protocol layer parsed: its buffer holds nothing the task has not taken.
        let clean = self.at_boundary && matches!(self.parse, Parse::Header { have: 0, .. });
        if !(self.grown && clean && self.conn.all_messages_taken()) {
            return None;
        }
        let inner = self.inner.take()?;
        Some(Metered::new(inner, self.conn.clone()))
    }

    /// Whether a frame was refused for the budget (the connection then closes with 1009).
    pub fn refused(&self) -> bool {
        matches!(self.parse, Parse::Refused)
    }

    /// Follows the frames in `bytes`; `false` when a frame does not fit the budget.
    fn scan(&mut self, mut bytes: &[u8]) -> bool {
        if !bytes.is_empty() {
            self.at_boundary = false;
        }
        while !bytes.is_empty() {
            match &mut self.parse {
                Parse::Refused => return false,
                Parse::Payload { left, ends_message } => {
                    let take = bytes.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                    bytes = &bytes[take..];
                    *left -= take as u64;
                    if *left == 0 {
                        if *ends_message {
                            self.conn.message_arrived();
                            self.at_boundary = bytes.is_empty();
                        }
                        self.parse = Parse::Header { buf: [0; 14], have: 0 };
                    }
                }
                Parse::Header { buf, have } => {
                    buf[usize::from(*have)] = bytes[0];
                    *have += 1;
                    bytes = &bytes[1..];
                    let have = usize::from(*have);
                    if have < 2 || have < header_len([buf[0], buf[1]]) {
                        continue;
                    }
                    let (fin, opcode, len) = (buf[0] & 0x80 != 0, buf[0] & 0x0f, payload_len(&buf[..have]));
                    let data = matches!(opcode, 0..=2);
                    if data && len <= self.conn.budgets().max_frame_bytes as u64 {
                        let len = usize::try_from(len).unwrap_or(usize::MAX);
                        if !self.conn.frame_header(opcode == 0, len) {
                            self.conn.budgets().closed_inbound.inc();
                            self.parse = Parse::Refused;
                            return false;
                        }
                    }
                    let ends_message = data && fin;
                    self.grown |= len > READ_BUFFER_BYTES as u64;
                    if len == 0 {
                        if ends_message {
                            self.conn.message_arrived();
                            self.at_boundary = bytes.is_empty();
                        }
                        self.parse = Parse::Header { buf: [0; 14], have: 0 };
                    } else {
                        self.parse = Parse::Payload {
                            left: len,
                            ends_message,
                        };
                    }
                }
            }
        }
        true
    }
}

impl<S> Drop for Metered<S> {
    fn drop(&mut self) {
        // The protocol layer's buffers go with this stream: so does their charge (unless the
        // socket moved on to a renewed stream, which keeps it).
        if self.inner.is_some() {
            self.conn.release_inbound();
            self.conn.release_outbound();
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Metered<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.refused() {
            return Poll::Ready(Ok(())); // end of stream
        }
        let start = buf.filled().len();
        let this = &mut *self;
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(Err(gone()));
        };
        match Pin::new(inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if this.scan(&buf.filled()[start..]) {
                    Poll::Ready(Ok(()))
                } else {
                    // What was read is dropped before the protocol layer sees it.
                    buf.set_filled(start);
                    Poll::Ready(Err(io::Error::other("the gateway's message budget is exhausted")))
                }
            }
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Metered<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.inner.as_mut() {
            Some(inner) => Pin::new(inner).poll_write(cx, buf),
            None => Poll::Ready(Err(gone())),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.inner.as_mut() {
            Some(inner) => Pin::new(inner).poll_flush(cx),
            None => Poll::Ready(Err(gone())),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.inner.as_mut() {
            Some(inner) => Pin::new(inner).poll_shutdown(cx),
            None => Poll::Ready(Err(gone())),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.inner.as_mut() {
            Some(inner) => Pin::new(inner).poll_write_vectored(cx, bufs),
            None => Poll::Ready(Err(gone())),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.as_ref().is_some_and(|i| i.is_write_vectored())
    }
}

impl GatewayArgs {
    /// The memory budgets: each must hold at least one message, or one post.
    pub(super) fn memory_budgets(&self, l: &Labels, p: &mut Problems) -> (Option<u64>, Option<Duration>, Option<u64>) {
        const MAX_BUDGET: u64 = 1 << 40;
        let pending = p.count(
            l.get("max_pending_message_bytes"),
            &self.max_pending_message_bytes,
            MAX_BUDGET,
        );
        let timeout = p.duration(l.get("message_timeout"), &self.message_timeout);
        let outbound = p.count(l.get("max_outbound_bytes"), &self.max_outbound_bytes, MAX_BUDGET);
        if pending.is_some_and(|b| b < contract::MAX_MESSAGE_BYTES as u64) {
            p.push(format!(
                "{}: must hold at least one message ({} bytes)",
                l.get("max_pending_message_bytes"),
                contract::MAX_MESSAGE_BYTES
            ));
        }
        if outbound.is_some_and(|b| b < contract::MAX_POST_BYTES as u64) {
            p.push(format!(
                "{}: must hold at least one post ({} bytes)",
                l.get("max_outbound_bytes"),
                contract::MAX_POST_BYTES
            ));
        }
        if timeout.is_some_and(|d| d.is_zero()) {
            p.push(format!("{}: must be more than zero", l.get("message_timeout")));
        }
        (pending, timeout, outbound)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn a_budget_takes_what_fits_and_gives_it_back() {
        let b = Budget::new(100, Gauge::default());
        assert!(b.try_charge(60));
        assert!(!b.try_charge(41));
        assert_eq!(b.used(), 60);
        assert!(b.try_charge(40));
        b.release(100);
        assert_eq!(b.used(), 0);
    }

    #[test]
    fn header_lengths() {
        // 7-bit, 16-bit and 64-bit lengths, masked (client frames) or not.
        assert_eq!(header_len([0x81, 0x85]), 6);
        assert_eq!(header_len([0x81, 0xfe]), 8);
        assert_eq!(header_len([0x81, 0xff]), 14);
        assert_eq!(header_len([0x81, 0x05]), 2);
        assert_eq!(payload_len(&[0x81, 0x85, 0, 0, 0, 0]), 5);
        assert_eq!(payload_len(&[0x01, 0xfe, 0x80, 0x00, 0, 0, 0, 0]), 32768);
        assert_eq!(payload_len(&[0x00, 0xff, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0]), 65536);
    }

    #[test]
    fn budgets_below_one_message_are_refused_at_start() {
        let flags = |extra: &str| {
            super::super::config::GatewayConfig::from_template_with(
                super::super::config::EMBEDDED_TEMPLATE,
                &BTreeMap::from([
                    ("IntegrationUri".to_string(), "http://127.0.0.1:1".to_string()),
                    ("SharedSecret".to_string(), "0123456789abcdef-test".to_string()),
                ]),
                &[extra.to_string()],
            )
        };
        for (flag, name) in [
            ("--max-pending-message-bytes=131071", "--max-pending-message-bytes"),
            ("--max-outbound-bytes=1000", "--max-outbound-bytes"),
            ("--message-timeout=0s", "--message-timeout"),
        ] {
            let problems = flags(flag).unwrap_err();
            assert!(problems.iter().any(|p| p.0.contains(name)), "{flag}: {problems:?}");
        }
        let ok = flags("--max-outbound-bytes=131072").expect("valid");
        assert_eq!(ok.max_outbound_bytes, 131072);
        assert_eq!(ok.message_timeout, Duration::from_secs(10));
    }
}

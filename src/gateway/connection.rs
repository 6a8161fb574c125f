//! One client connection once it is open: the handle the rest of the gateway holds (its
//! context, its bounded outbound queue, a close request), the close codes, and the single task
//! loop that reads frames in order, hands each message to the event pipeline (one at a time),
//! writes replies and `@connections` posts (`connection/write.rs`), and completes the closing
//! handshake (`connection/close.rs`).
//!
//! The task holds no timer and no shutdown watch: the idle timeout, the maximum duration, the
//! message timeout and the shutdown reach it as close requests from the gateway's sweep over its
//! open connections (see `connections.rs`). That keeps an idle connection's task small and its wake-ups
//! cheap.
//!
//! The handle also keeps the connection's share of the gateway's memory budgets (`budget.rs`):
//! the bytes of the message being received, of messages received and not yet answered, and of
//! the frames queued for the client.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use hyper_util::rt::TokioIo;
use tokio::sync::Notify;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use super::budget::{self, Budgets, FREE_MESSAGE_BYTES, Metered};
use crate::timefmt::now_ms;

mod close;
mod write;

pub use close::{Closed, Ending};
use write::{renew, write_or_close};

/// Close codes and reasons the gateway uses.
pub const NORMAL: (u16, &str) = (1000, "Connection Closed Normally");
pub const GOING_AWAY: (u16, &str) = (1001, "Going away");
pub const UNSUPPORTED: (u16, &str) = (1003, "Binary frames are not supported");
pub const TOO_BIG: (u16, &str) = (1009, "Message too big");
pub const PROTOCOL_ERROR: (u16, &str) = (1002, "Protocol error");
pub const INVALID_PAYLOAD: (u16, &str) = (1007, "Invalid frame payload data");
/// No close frame was received (the TCP connection dropped).
pub const ABNORMAL: u16 = 1006;
/// A close frame without a status.
pub const NO_STATUS: u16 = 1005;

/// The upgraded client socket, its reads charged to the message budget.
pub type Socket = WebSocketStream<Metered<TokioIo<hyper::upgrade::Upgraded>>>;

/// Opens the WebSocket on an upgraded connection, with the gateway's protocol limits and the
/// reads charged to the budgets `conn` carries.
pub async fn accept(
    upgraded: hyper::upgrade::Upgraded,
    conn: Arc<ConnHandle>,
    max_message_bytes: usize,
    max_frame_bytes: usize,
) -> Socket {
    let config = ws_config(max_message_bytes, max_frame_bytes);
    let io = Metered::new(TokioIo::new(upgraded), conn);
    WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await
}

/// Everything a `$connect`/message/`$disconnect` call needs from the connection.
pub struct Ctx {
    pub id: String,
    pub connected_at: i64,
    pub domain: String,
    pub source_ip: String,
    pub user_agent: String,
    /// What the `$connect` authorizer returned, when one allowed the connection.
    pub authorizer: Option<Box<super::authorizer::Authorized>>,
}

/// What the rest of the gateway knows about a live connection.
pub struct ConnHandle {
    /// The connection's context, shared with its task (one copy of the User-Agent).
    pub ctx: Arc<Ctx>,
    last_active: AtomicI64,
    /// Frames waiting for the client, bounded by `capacity`. A plain deque allocates nothing
    /// until a frame is queued, which keeps idle connections small.
    outbound: Mutex<Outbound>,
    close: Mutex<Option<(u16, String)>>,
    /// Set by the first close request, and never cleared: later requests are not counted.
    close_requested: AtomicBool,
    /// Wakes the task for a queued frame or a close request; it checks both.
    wake: Notify,
    /// The gateway's budgets, charged by this connection.
    budgets: Arc<Budgets>,
    /// This connection's charge to the message budget.
    inbound: Mutex<Inbound>,
    /// A post was refused because this connection held more than its fair share of a full
    /// outbound budget; the sweep closes it if it still does.
    over_share: AtomicBool,
    /// Messages received from the client, and frames posts queued for it, for the listing.
    received: AtomicU32,
    pushed: AtomicU32,
}

struct Outbound {
    frames: VecDeque<Message>,
    capacity: usize,
    closed: bool,
    /// Bytes charged to the outbound budget: the queued frames and the one being written.
    bytes: usize,
}

/// A connection's charge to the message budget.
#[derive(Default)]
struct Inbound {
    /// When the first frame of the message being received arrived (ms), 0 between messages.
    since_ms: i64,
    /// Bytes of the message being received so far, and how many of them are charged.
    message: usize,
    charged: usize,
    /// Charges of messages received whole that the task has not taken yet (in order).
    arrived: VecDeque<usize>,
    /// The charge of the message being delivered to the backend.
    held: usize,
}

/// Why a frame could not be queued, inside the gateway.
#[derive(Debug)]
pub enum PushError {
    Queue(QueueError),
    /// The outbound budget is full; the frame is handed back.
    OverBudget(Message),
}

/// Why a frame could not be queued.
#[derive(Debug, PartialEq, Eq)]
pub enum QueueError {
    /// The client is not taking frames fast enough (429).
    Full,
    /// The connection is closing or closed (410).
    Closed,
}

impl ConnHandle {
    /// A handle for a connection that just opened, with room for `capacity` queued frames.
    pub fn new(ctx: Arc<Ctx>, capacity: usize, budgets: Arc<Budgets>) -> Self {
        ConnHandle {
            last_active: AtomicI64::new(ctx.connected_at),
            ctx,
            outbound: Mutex::new(Outbound {
                frames: VecDeque::new(),
                capacity,
                closed: false,
                bytes: 0,
            }),
            close: Mutex::new(None),
            close_requested: AtomicBool::new(false),
            wake: Notify::new(),
            budgets,
            inbound: Mutex::new(Inbound::default()),
            over_share: AtomicBool::new(false),
            received: AtomicU32::new(0),
            pushed: AtomicU32::new(0),
        }
    }

    /// Messages received from the client so far (wrapping at 2^32).
    pub fn received(&self) -> u32 {
        self.received.load(Ordering::Relaxed)
    }

    /// Frames queued for the client so far by `@connections` posts and batch deliveries; the
    /// replies to its messages are written by its task and not counted (wrapping at 2^32).
    pub fn pushed(&self) -> u32 {
        self.pushed.load(Ordering::Relaxed)
    }

    pub fn budgets(&self) -> &Budgets {
        &self.budgets
    }

    fn inbound(&self) -> std::sync::MutexGuard<'_, Inbound> {
        self.inbound.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A data frame's header arrived: charges its payload (past the message's free bytes) to
    /// the message budget, or says it does not fit.
    pub fn frame_header(&self, continuation: bool, len: usize) -> bool {
        let mut i = self.inbound();
        if !continuation || i.since_ms == 0 {
            i.since_ms = now_ms().max(1);
            i.message = 0;
        }
        i.message = i.message.saturating_add(len);
        let charge = i.message.saturating_sub(FREE_MESSAGE_BYTES);
        let more = charge.saturating_sub(i.charged);
        if more > 0 && !self.budgets.inbound.try_charge(more) {
            return false;
        }
        i.charged = i.charged.max(charge);
        true
    }

    /// The last byte of a message went by: it waits for the task, still charged.
    pub fn message_arrived(&self) {
        self.received.fetch_add(1, Ordering::Relaxed);
        let mut i = self.inbound();
        let charged = std::mem::take(&mut i.charged);
        i.arrived.push_back(charged);
        i.since_ms = 0;
        i.message = 0;
    }

    /// The task took a message: it stays charged until [`ConnHandle::delivered`].
    fn take_message(&self) {
        let mut i = self.inbound();
        let next = i.arrived.pop_front().unwrap_or(0);
        if i.arrived.is_empty() && i.arrived.capacity() > 0 {
            i.arrived = VecDeque::new();
        }
        let before = std::mem::replace(&mut i.held, next);
        self.budgets.inbound.release(before);
    }

    /// Whether the task has taken every message received whole.
    pub fn all_messages_taken(&self) -> bool {
        self.inbound().arrived.is_empty()
    }

    /// The backend answered the message being delivered: its bytes are free.
    fn delivered(&self) {
        let held = std::mem::take(&mut self.inbound().held);
        self.budgets.inbound.release(held);
    }

    /// Gives back everything this connection holds of the message budget (its socket is gone).
    pub fn release_inbound(&self) {
        let mut i = self.inbound();
        let total = i.charged + i.held + i.arrived.iter().sum::<usize>();
        *i = Inbound::default();
        drop(i);
        self.budgets.inbound.release(total);
    }

    /// When the message being received started (ms), if one is.
    pub fn receiving_since(&self) -> Option<i64> {
        Some(self.inbound().since_ms).filter(|t| *t != 0)
    }

    /// Bytes charged to the outbound budget for this connection.
    pub fn queued_bytes(&self) -> usize {
        self.outbound.lock().unwrap_or_else(|p| p.into_inner()).bytes
    }

    /// Whether a post was refused while this connection held more than its fair share.
    pub fn over_share(&self) -> bool {
        self.over_share.load(Ordering::Relaxed)
    }

    pub fn clear_over_share(&self) {
        self.over_share.store(false, Ordering::Relaxed);
    }

    pub fn id(&self) -> &str {
        &self.ctx.id
    }

    pub fn touch(&self) {
        self.last_active.store(now_ms(), Ordering::Relaxed);
    }

    pub fn last_active(&self) -> i64 {
        self.last_active.load(Ordering::Relaxed)
    }

    /// Queues a frame for the client, charging it to the outbound budget. When the budget is
    /// full, the frame comes back (see `Connections::post`, which decides between a 429 and making
    /// room); a connection over its fair share is then marked for the sweep.
    pub fn push(&self, msg: Message) -> Result<(), PushError> {
        let mut q = self.outbound.lock().unwrap_or_else(|p| p.into_inner());
        if q.closed {
            return Err(PushError::Queue(QueueError::Closed));
        }
        if q.frames.len() >= q.capacity {
            return Err(PushError::Queue(QueueError::Full));
        }
        let n = msg.len();
        if !self.budgets.outbound.try_charge(n) {
            if q.bytes + n > self.budgets.fair_share(q.bytes == 0) {
                self.over_share.store(true, Ordering::Relaxed);
            }
            return Err(PushError::OverBudget(msg));
        }
        if q.bytes == 0 && n > 0 {
            self.budgets.holders.inc();
        }
        q.bytes += n;
        q.frames.push_back(msg);
        drop(q);
        self.pushed.fetch_add(1, Ordering::Relaxed);
        self.wake.notify_one();
        Ok(())
    }

    fn pop(&self) -> Option<Message> {
        let mut q = self.outbound.lock().unwrap_or_else(|p| p.into_inner());
        let msg = q.frames.pop_front();
        if q.frames.is_empty() && q.frames.capacity() > 0 {
            // Give the memory back once the burst is over.
            q.frames = VecDeque::new();
        }
        msg
    }

    /// Gives back the charge of `n` queued bytes (written, or dropped).
    fn uncharge(&self, q: &mut Outbound, n: usize) {
        let n = n.min(q.bytes);
        q.bytes -= n;
        if q.bytes == 0 && n > 0 {
            self.budgets.holders.dec();
            self.over_share.store(false, Ordering::Relaxed);
        }
        self.budgets.outbound.release(n);
    }

    /// A frame taken by [`ConnHandle::pop`] was written (or given up): its bytes are free.
    fn written(&self, n: usize) {
        let mut q = self.outbound.lock().unwrap_or_else(|p| p.into_inner());
        self.uncharge(&mut q, n);
    }

    /// Gives back everything still charged to the outbound budget (its socket is gone).
    pub fn release_outbound(&self) {
        let mut q = self.outbound.lock().unwrap_or_else(|p| p.into_inner());
        let all = q.bytes;
        self.uncharge(&mut q, all);
    }

    /// Refuses further frames: from here on `@connections` posts answer 410. The queued frames
    /// are dropped and their bytes given back.
    pub fn close_queue(&self) {
        let mut q = self.outbound.lock().unwrap_or_else(|p| p.into_inner());
        q.closed = true;
        let dropped: usize = q.frames.iter().map(Message::len).sum();
        q.frames = VecDeque::new();
        self.uncharge(&mut q, dropped);
    }

    /// Asks the connection to close with this status (the first request wins); says whether
    /// this request was the first.
    ///
    /// An orderly close (1000 or 1001: `DELETE @connections`, the page's close, the duration and
    /// idle cuts, a shutdown) refuses further posts at once (410) but writes the frames already
    /// queued first, each within the write timeout: a post answered 200 before the close is not
    /// dropped by it. Any other close (1008, 1013, …) goes out before what is still queued.
    pub fn request_close(&self, code: u16, reason: &str) -> bool {
        let first = !self.close_requested.swap(true, Ordering::Relaxed);
        if first {
            *self.close.lock().unwrap_or_else(|p| p.into_inner()) = Some((code, reason.to_string()));
            if orderly(code) {
                self.outbound.lock().unwrap_or_else(|p| p.into_inner()).closed = true;
            }
        }
        self.wake.notify_one();
        first
    }

    /// The close request, unless it is orderly and frames are still queued before it.
    fn take_close(&self) -> Option<(u16, String)> {
        let mut close = self.close.lock().unwrap_or_else(|p| p.into_inner());
        let waits = close.as_ref().is_some_and(|(code, _)| {
            orderly(*code)
                && !self
                    .outbound
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .frames
                    .is_empty()
        });
        if waits { None } else { close.take() }
    }

    /// The close request, unless it is orderly: what may cut a frame's write short.
    fn take_urgent_close(&self) -> Option<(u16, String)> {
        let mut close = self.close.lock().unwrap_or_else(|p| p.into_inner());
        if close.as_ref().is_some_and(|(code, _)| orderly(*code)) {
            None
        } else {
            close.take()
        }
    }
}

/// Closes that let the frames already queued go out first.
fn orderly(code: u16) -> bool {
    code == NORMAL.0 || code == GOING_AWAY.0
}

/// Protocol limits for client connections: small buffers (memory per idle connection), frame
/// and message limits (1009 past them).
pub fn ws_config(max_message_bytes: usize, max_frame_bytes: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        // Read in small steps: the buffer is allocated per connection up front.
        .read_buffer_size(budget::READ_BUFFER_BYTES)
        .write_buffer_size(0)
        .max_write_buffer_size(max_message_bytes * 2 + 4096)
        .max_message_size(Some(max_message_bytes))
        .max_frame_size(Some(max_frame_bytes))
}

/// The event pipeline's answer to one message: the frame to send back (text or binary), if any.
pub type Reply = Pin<Box<dyn Future<Output = Option<Message>> + Send>>;

/// One message from the client: a text frame's, or (with `--binary-frames`) a binary frame's.
pub enum ClientMessage {
    Text(Utf8Bytes),
    Binary(bytes::Bytes),
}

/// Serves the connection until it ends: reads frames, starts `on_message` for each text
/// message, and each binary one when `binary_frames` (else a binary frame closes with 1003;
/// the next is read only once it answered), writes its reply and the queued frames, each
/// within `write_timeout`. Returns how the connection ended; the caller unregisters it, then
/// calls [`Ending::finish`].
///
/// A connection's task is allocated at the size of its largest state, and an idle connection
/// waits in the `select!` below. So the writes, which hold a timer and the frame, run boxed:
/// a few hundred bytes allocated while frames are written, instead of held by every connection
/// for as long as it is open. For the same reason a frame read is taken apart before anything
/// is awaited, and this is an `async` block over the arguments (an `async fn` would keep a
/// second copy of each).
#[expect(clippy::manual_async_fn, reason = "an async fn keeps a second copy of its arguments")]
pub fn run<'a>(
    ws: &'a mut Socket,
    handle: &'a ConnHandle,
    write_timeout: Duration,
    binary_frames: bool,
    on_message: impl Fn(ClientMessage) -> Reply + 'a,
) -> impl Future<Output = Ending> + 'a {
    async move {
        let mut inflight: Option<Reply> = None;
        loop {
            tokio::select! {
                biased;
                _ = handle.wake.notified() => {
                    if let Some(ending) = Box::pin(write_queued(ws, handle, write_timeout)).await {
                        break ending;
                    }
                }
                reply = async { match inflight.as_mut() { Some(f) => f.await, None => std::future::pending().await } } => {
                    inflight = None;
                    handle.delivered();
                    if let Some(frame) = reply {
                        handle.touch();
                        if let Err(e) = Box::pin(write_or_close(ws, handle, frame, write_timeout)).await {
                            break e;
                        }
                    }
                }
                incoming = ws.next().map(|frame| Incoming::read(frame, binary_frames)), if inflight.is_none() => {
                    let message = match incoming {
                        Incoming::Message(message) => message,
                        Incoming::Other => continue, // ping/pong: answered by the protocol layer, not activity
                        // A frame refused for the budget fails the read: that is the reason.
                        Incoming::End(_, true) if ws.get_ref().refused() => break Ending::by_us(budget::BUDGET_TOO_BIG),
                        Incoming::End(ending, _) => break ending,
                    };
                    handle.touch();
                    handle.take_message();
                    inflight = Some(on_message(message));
                    if let Some(renewed) = renew(ws) {
                        *ws = renewed.await;
                    }
                }
            }
        }
    }
}

/// A frame read from the client, taken apart.
enum Incoming {
    /// A message for the backend.
    Message(ClientMessage),
    /// A control frame the protocol layer answered.
    Other,
    /// The connection ends; `true` when the read failed.
    End(Ending, bool),
}

impl Incoming {
    fn read(frame: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>, binary_frames: bool) -> Self {
        match frame {
            Some(Ok(Message::Text(t))) => Incoming::Message(ClientMessage::Text(t)),
            Some(Ok(Message::Binary(b))) if binary_frames => Incoming::Message(ClientMessage::Binary(b)),
            Some(Ok(Message::Binary(_))) => Incoming::End(Ending::by_us(UNSUPPORTED), false),
            Some(Ok(Message::Close(frame))) => {
                let (c, r) = frame
                    .map(|f| (u16::from(f.code), f.reason.to_string()))
                    .unwrap_or((NO_STATUS, String::new()));
                Incoming::End(Ending::ByPeer(c, r), false)
            }
            Some(Ok(_)) => Incoming::Other,
            Some(Err(err)) => Incoming::End(Ending::from_read_error(err), true),
            None => Incoming::End(Ending::Dropped, false),
        }
    }
}

/// Writes the queued frames: an urgent close wins over them, an orderly one follows them.
/// Returns how the connection ends, if it does.
async fn write_queued(ws: &mut Socket, handle: &ConnHandle, write_timeout: Duration) -> Option<Ending> {
    if let Some((c, r)) = handle.take_close() {
        return Some(Ending::ByUs(c, r));
    }
    while let Some(msg) = handle.pop() {
        handle.touch();
        let n = msg.len();
        let written = write_or_close(ws, handle, msg, write_timeout).await;
        // A frame cut short stays charged until its rest is sent or the socket is gone (see
        // budget::Metered's drop).
        if !matches!(written, Err(Ending::Interrupted(..))) {
            handle.written(n);
        }
        if let Err(e) = written {
            return Some(e);
        }
    }
    // The queue is empty: an orderly close waiting behind it goes now.
    handle.take_close().map(|(c, r)| Ending::ByUs(c, r))
}

//! The open connections by id, and the slots that bound how many handshakes and connections
//! the gateway holds at once. `@connections` finds a connection here; a connection that is not
//! here is gone. The sweep over them enforces the time limits, and `post` shares the outbound
//! budget fairly between them. They are kept in connection id order, so the listing can page
//! through them with a stable cursor.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;

use tokio_tungstenite::tungstenite::Message;

use super::budget::{self, Budgets};
use super::connection::{ConnHandle, Ctx, GOING_AWAY, PushError, QueueError};

/// The close reason of a connection that was idle for the idle timeout.
pub const IDLE_TIMEOUT: &str = "Idle timeout";

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Open connections, and the slots taken by handshakes in progress plus open connections.
pub struct Connections {
    connections: Mutex<BTreeMap<String, Arc<ConnHandle>>>,
    slots: Arc<AtomicUsize>,
    max: usize,
    /// The open-connections gauge, kept equal to the map's size.
    active: Gauge,
    budgets: Arc<Budgets>,
    /// Frames queued by `@connections` posts, since start.
    posted: AtomicU64,
    /// Connections between the start of `$connect` and their registration, and whether a
    /// DELETE asked for them meanwhile (see [`Connections::close_pending`]).
    pending: Mutex<HashMap<String, bool>>,
}

/// A reserved connection slot, released on drop.
pub struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Connections {
    pub fn new(max: usize, active: Gauge, budgets: Budgets) -> Self {
        Connections {
            connections: Mutex::new(BTreeMap::new()),
            slots: Arc::new(AtomicUsize::new(0)),
            max,
            active,
            budgets: Arc::new(budgets),
            posted: AtomicU64::new(0),
            pending: Mutex::new(HashMap::new()),
        }
    }

    /// Marks a connection as in its handshake: from `$connect` until [`Connections::opened`].
    pub fn begin_pending(&self, id: &str) {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_string(), false);
    }

    /// A DELETE for a connection still in its handshake: it is answered 410, as API Gateway
    /// answers any call during `$connect`, and the connection is closed as soon as it opens,
    /// so that a client replaced while connecting (a resume of its key from elsewhere) does not
    /// stay open beside its replacement. Whether the connection was pending.
    pub fn close_pending(&self, id: &str) -> bool {
        match self.pending.lock().unwrap_or_else(|p| p.into_inner()).get_mut(id) {
            Some(asked) => {
                *asked = true;
                true
            }
            None => false,
        }
    }

    /// The handshake ended (the connection is registered, or it never opened): whether a
    /// DELETE asked for it meanwhile.
    pub fn end_pending(&self, id: &str) -> bool {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id)
            .unwrap_or(false)
    }

    /// A handle for a connection that just opened, charging the gateway's budgets.
    pub fn handle(&self, ctx: Arc<Ctx>, outbound_queue: usize) -> Arc<ConnHandle> {
        Arc::new(ConnHandle::new(ctx, outbound_queue, self.budgets.clone()))
    }

    /// Queues an `@connections` post for `conn`. When the outbound budget is full, a connection
    /// holding more than its fair share (the budget divided among the connections holding
    /// queued bytes) gets 429; one holding less makes room by closing (1013) the connections
    /// furthest over their share, whose queued frames are dropped, so a client that does not
    /// read can never take the memory of the others.
    pub fn post(&self, conn: &ConnHandle, msg: Message) -> Result<(), QueueError> {
        let queued = self.queue(conn, msg);
        if queued.is_ok() {
            self.posted.fetch_add(1, Ordering::Relaxed);
        }
        queued
    }

    /// Frames queued by `@connections` posts (and batch deliveries) since start.
    pub fn posted(&self) -> u64 {
        self.posted.load(Ordering::Relaxed)
    }

    /// Up to `limit` open connections in id order, after `after` when given, and whether more
    /// follow. The lock is held only to clone the page's handles.
    pub fn page(&self, after: Option<&str>, limit: usize) -> (Vec<Arc<ConnHandle>>, bool) {
        let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut page: Vec<Arc<ConnHandle>> = self
            .connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .range::<str, _>((lower, Bound::Unbounded))
            .take(limit.saturating_add(1))
            .map(|(_, h)| h.clone())
            .collect();
        let more = page.len() > limit;
        page.truncate(limit);
        (page, more)
    }

    fn queue(&self, conn: &ConnHandle, msg: Message) -> Result<(), QueueError> {
        let msg = match conn.push(msg) {
            Ok(()) => return Ok(()),
            Err(PushError::Queue(e)) => return Err(e),
            Err(PushError::OverBudget(msg)) => msg,
        };
        let mine = conn.queued_bytes();
        let share = self.budgets.fair_share(mine == 0);
        if mine + msg.len() > share {
            return Err(QueueError::Full);
        }
        self.make_room(msg.len(), share, conn.id());
        conn.push(msg).map_err(|e| match e {
            PushError::Queue(e) => e,
            PushError::OverBudget(_) => QueueError::Full,
        })
    }

    /// Closes the connections furthest over `share` until `needed` bytes fit the outbound
    /// budget (or none is over its share).
    fn make_room(&self, needed: usize, share: usize, except: &str) {
        let mut over: Vec<(usize, Arc<ConnHandle>)> = self
            .connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|h| h.id() != except)
            .map(|h| (h.queued_bytes(), h.clone()))
            .filter(|(q, _)| *q > share)
            .collect();
        over.sort_by_key(|(q, _)| std::cmp::Reverse(*q));
        let out = &self.budgets.outbound;
        for (_, h) in over {
            if out.used() + needed <= out.limit() {
                break;
            }
            self.evict(&h);
        }
    }

    fn evict(&self, h: &ConnHandle) {
        let (code, reason) = budget::OUTBOUND_OVER_SHARE;
        if h.request_close(code, reason) {
            self.budgets.closed_outbound.inc();
        }
        // Its queued frames go now; the frame being written goes when its task closes it.
        h.close_queue();
    }

    /// A slot for one more connection, unless every slot is taken.
    pub fn reserve(&self) -> Option<Slot> {
        let taken = self.slots.fetch_add(1, Ordering::SeqCst);
        let slot = Slot(self.slots.clone());
        (taken < self.max).then_some(slot)
    }

    /// Slots taken now: handshakes in progress plus open connections.
    pub fn slots_taken(&self) -> usize {
        self.slots.load(Ordering::SeqCst)
    }

    /// Open connections now.
    pub fn len(&self) -> usize {
        self.connections.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn register(&self, handle: Arc<ConnHandle>) {
        self.connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(handle.ctx.id.clone(), handle);
        self.active.inc();
    }

    pub fn unregister(&self, id: &str) {
        if self
            .connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id)
            .is_some()
        {
            self.active.dec();
        }
    }

    /// Asks each connection that has been quiet for `idle`, or open for `max`, to close (1001);
    /// each whose message has been arriving for the message timeout to close (1008); and each
    /// that was refused a post for holding more than its fair share of a full outbound budget,
    /// and still does, to close (1013). The gateway runs this a few times per the shortest of
    /// those limits and at most a second apart, so the limits hold to within that tick; a
    /// connection's task keeps no timer of its own.
    pub fn sweep(&self, now_ms: i64, idle: Duration, max: Duration) {
        let (idle, max) = (millis(idle), millis(max));
        let message_timeout = millis(self.budgets.message_timeout);
        let out = &self.budgets.outbound;
        for handle in self.connections.lock().unwrap_or_else(|p| p.into_inner()).values() {
            if now_ms.saturating_sub(handle.ctx.connected_at) >= max {
                handle.request_close(GOING_AWAY.0, GOING_AWAY.1);
            } else if now_ms.saturating_sub(handle.last_active()) >= idle {
                handle.request_close(GOING_AWAY.0, IDLE_TIMEOUT);
            } else if handle
                .receiving_since()
                .is_some_and(|t| now_ms.saturating_sub(t) >= message_timeout)
            {
                let (code, reason) = budget::MESSAGE_TIMEOUT;
                if handle.request_close(code, reason) {
                    self.budgets.closed_timeout.inc();
                }
            } else if handle.over_share() {
                // Read after the mark, so a post refused since the sweep began is judged on
                // the budget it saw. A full budget must leave room for a client that holds
                // nothing yet: the share here counts one more holder.
                let full = out.used() + crate::contract::MAX_POST_BYTES > out.limit();
                if full && handle.queued_bytes() > self.budgets.fair_share(true) {
                    self.evict(handle);
                } else {
                    handle.clear_over_share();
                }
            }
        }
    }

    /// The shortest time limit the sweep enforces besides `idle` and `max`.
    pub fn message_timeout(&self) -> Duration {
        self.budgets.message_timeout
    }

    /// Asks every open connection to close with this status.
    pub fn close_all(&self, (code, reason): (u16, &str)) {
        for handle in self.connections.lock().unwrap_or_else(|p| p.into_inner()).values() {
            handle.request_close(code, reason);
        }
    }

    pub fn lookup(&self, id: &str) -> Option<Arc<ConnHandle>> {
        self.connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }
}

//! The open connections by id, and the slots that bound how many handshakes and connections
//! the gateway holds at once. `@connections` finds a connection here; a connection that is not
//! here is gone.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;

use super::connection::{ConnHandle, GOING_AWAY};

/// The close reason of a connection that was idle for the idle timeout.
pub const IDLE_TIMEOUT: &str = "Idle timeout";

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Open connections, and the slots taken by handshakes in progress plus open connections.
pub struct Registry {
    connections: Mutex<HashMap<String, Arc<ConnHandle>>>,
    slots: Arc<AtomicUsize>,
    max: usize,
    /// The open-connections gauge, kept equal to the map's size.
    active: Gauge,
}

/// A reserved connection slot, released on drop.
pub struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Registry {
    pub fn new(max: usize, active: Gauge) -> Self {
        Registry {
            connections: Mutex::new(HashMap::new()),
            slots: Arc::new(AtomicUsize::new(0)),
            max,
            active,
        }
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

    /// Asks each connection that has been quiet for `idle`, or open for `max`, to close (1001).
    /// The gateway runs this a few times per `idle` and at most a second apart, so the limits
    /// hold to within that tick; a connection's task keeps no timer of its own.
    pub fn sweep(&self, now_ms: i64, idle: Duration, max: Duration) {
        let (idle, max) = (millis(idle), millis(max));
        for handle in self.connections.lock().unwrap_or_else(|p| p.into_inner()).values() {
            if now_ms.saturating_sub(handle.ctx.connected_at) >= max {
                handle.request_close(GOING_AWAY.0, GOING_AWAY.1);
            } else if now_ms.saturating_sub(handle.last_active()) >= idle {
                handle.request_close(GOING_AWAY.0, IDLE_TIMEOUT);
            }
        }
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

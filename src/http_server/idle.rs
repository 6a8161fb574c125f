//! The keep-alive limit and the stop signal for a listener's connections, without a timer or a
//! watch polled for every request.
//!
//! hyper can time each request head itself (`header_read_timeout`), but it arms and drops a
//! boxed timer for every request, and a per-connection `select!` on the shutdown watch polls
//! that watch every time the connection wakes. A profile of the backend put the two at about
//! 1,100 instructions per request, 6% of the total. Here each connection keeps two counters
//! that its service updates (a request is being served; requests answered so far). One sweep
//! per listener, a few times per keep-alive period and at most a second apart, closes the
//! connections that had no request in flight and answered none for the whole keep-alive
//! timeout: an idle keep-alive connection, or a client that never finishes its request head.
//! When the listener stops, the sweep's owner wakes every connection once.
//!
//! A request in flight holds one reference to its connection's [`Activity`], which also tells
//! it whether the process is draining (its answer then closes the connection), and a
//! connection registers its task for the stop signal once, not at every wake-up.

use std::collections::HashMap;
use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};
use std::time::Duration;

use futures_util::task::AtomicWaker;
use tokio::task::AbortHandle;

use crate::lifecycle::Lifecycle;

/// The connections of one listener.
pub struct Connections {
    entries: Mutex<HashMap<u64, Entry>>,
    next_id: AtomicU64,
    stopping: AtomicBool,
    /// The process's lifecycle, read by each answer (see [`Serving::draining`]).
    lifecycle: Lifecycle,
    tick: Duration,
    /// Ticks in the keep-alive timeout: a connection quiet for one more sweep than this is closed.
    idle_ticks: u32,
}

struct Entry {
    activity: Arc<Activity>,
    abort: Option<AbortHandle>,
    answered_seen: u64,
    quiet_ticks: u32,
}

/// What one connection's service tells the sweep.
pub struct Activity {
    id: u64,
    busy: AtomicBool,
    answered: AtomicU64,
    stop_waker: AtomicWaker,
    connections: Arc<Connections>,
}

impl Connections {
    /// Connections that close after `keep_alive` without a request, in a process with
    /// `lifecycle`.
    pub fn new(keep_alive: Duration, lifecycle: Lifecycle) -> Arc<Self> {
        // Often enough that a connection closes at most an eighth of the timeout (and at most a
        // second) late; never early (see `sweep`).
        let tick = (keep_alive / 8).clamp(Duration::from_millis(1), Duration::from_secs(1));
        let idle_ticks = keep_alive.as_nanos().div_ceil(tick.as_nanos()).max(1);
        Arc::new(Connections {
            entries: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            stopping: AtomicBool::new(false),
            lifecycle,
            tick,
            idle_ticks: u32::try_from(idle_ticks).unwrap_or(u32::MAX),
        })
    }

    /// How often [`Connections::sweep`] must run.
    pub fn tick(&self) -> Duration {
        self.tick
    }

    /// Registers a new connection; it counts as active from now, and stays registered until
    /// the returned registration is dropped.
    pub fn open(self: &Arc<Self>) -> Registration {
        let activity = Arc::new(Activity {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            busy: AtomicBool::new(false),
            answered: AtomicU64::new(0),
            stop_waker: AtomicWaker::new(),
            connections: self.clone(),
        });
        let entry = Entry {
            activity: activity.clone(),
            abort: None,
            answered_seen: 0,
            quiet_ticks: 0,
        };
        self.lock().insert(activity.id, entry);
        Registration(activity)
    }

    /// Gives the sweep the means to close the connection's task.
    pub fn attach(&self, activity: &Activity, abort: AbortHandle) {
        // The task may already have ended and removed its entry; then there is nothing to do.
        if let Some(entry) = self.lock().get_mut(&activity.id) {
            entry.abort = Some(abort);
        }
    }

    /// Closes the connections that have been quiet for the keep-alive timeout.
    pub fn sweep(&self) {
        for entry in self.lock().values_mut() {
            let answered = entry.activity.answered.load(Ordering::Relaxed);
            if entry.activity.busy.load(Ordering::Relaxed) || answered != entry.answered_seen {
                entry.answered_seen = answered;
                entry.quiet_ticks = 0;
                continue;
            }
            entry.quiet_ticks = entry.quiet_ticks.saturating_add(1);
            // The first quiet sweep may come just after the last activity, so the connection
            // has been quiet for more than `idle_ticks - 1` ticks only at the one after.
            if entry.quiet_ticks > self.idle_ticks {
                if let Some(abort) = entry.abort.take() {
                    abort.abort();
                }
            }
        }
    }

    /// Tells every connection to finish what it is serving and close.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        for entry in self.lock().values() {
            entry.activity.stop_waker.wake();
        }
    }

    /// Connections open now.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Activity {
    /// Marks a request as being served until the guard is dropped.
    pub fn serving(self: &Arc<Self>) -> Serving {
        self.busy.store(true, Ordering::Relaxed);
        Serving(self.clone())
    }

    /// Resolves once the listener stops.
    ///
    /// A connection's task polls this every time it wakes, with the same waker each time: the
    /// waker is registered at the first poll and again only if a poll brings a different one.
    pub async fn stopped(&self) {
        let stopping = &self.connections.stopping;
        let mut registered: Option<Waker> = None;
        poll_fn(|cx| {
            if stopping.load(Ordering::SeqCst) {
                return Poll::Ready(());
            }
            if registered.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                return Poll::Pending;
            }
            self.stop_waker.register(cx.waker());
            registered = Some(cx.waker().clone());
            if stopping.load(Ordering::SeqCst) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await
    }
}

/// A connection's place in its listener's [`Connections`], held by the connection's task.
pub struct Registration(Arc<Activity>);

impl Registration {
    pub fn activity(&self) -> &Arc<Activity> {
        &self.0
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.0.connections.lock().remove(&self.0.id);
    }
}

/// A request being served; see [`Activity::serving`].
pub struct Serving(Arc<Activity>);

impl Serving {
    /// True from the moment the process begins its shutdown: the answer should close the
    /// connection.
    pub fn draining(&self) -> bool {
        self.0.connections.lifecycle.is_draining()
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        self.0.answered.fetch_add(1, Ordering::Relaxed);
        self.0.busy.store(false, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_never_close_early_and_at_most_a_second_late() {
        let c = Connections::new(Duration::from_secs(75), Lifecycle::new());
        assert_eq!((c.tick(), c.idle_ticks), (Duration::from_secs(1), 75));
        let c = Connections::new(Duration::from_millis(400), Lifecycle::new());
        assert_eq!((c.tick(), c.idle_ticks), (Duration::from_millis(50), 8));
        let c = Connections::new(Duration::from_millis(1500), Lifecycle::new());
        assert!(c.tick().as_nanos() * u128::from(c.idle_ticks) >= Duration::from_millis(1500).as_nanos());
    }

    #[tokio::test]
    async fn a_quiet_connection_is_closed_after_the_timeout_and_a_busy_one_is_not() {
        let c = Connections::new(Duration::from_secs(3), Lifecycle::new());
        assert_eq!(c.idle_ticks, 8);
        let quiet = c.open();
        let busy = c.open();
        let answering = c.open();
        let quiet_task = tokio::spawn(std::future::pending::<()>());
        let busy_task = tokio::spawn(std::future::pending::<()>());
        let answering_task = tokio::spawn(std::future::pending::<()>());
        c.attach(quiet.activity(), quiet_task.abort_handle());
        c.attach(busy.activity(), busy_task.abort_handle());
        c.attach(answering.activity(), answering_task.abort_handle());
        let _held = busy.activity().serving();
        for _ in 0..8 {
            c.sweep();
            drop(answering.activity().serving());
        }
        tokio::task::yield_now().await;
        assert!(!quiet_task.is_finished(), "closed before the timeout");
        c.sweep();
        drop(answering.activity().serving());
        let err = quiet_task.await.expect_err("aborted");
        assert!(err.is_cancelled());
        for _ in 0..20 {
            c.sweep();
            drop(answering.activity().serving());
        }
        tokio::task::yield_now().await;
        assert!(!busy_task.is_finished(), "a connection serving a request was closed");
        assert!(
            !answering_task.is_finished(),
            "a connection answering requests was closed"
        );
        drop(quiet);
        assert_eq!(c.len(), 2);
    }

    /// Counts its wake-ups.
    #[derive(Default)]
    struct Woken(AtomicU64);

    impl std::task::Wake for Woken {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn the_stop_signal_wakes_the_waker_of_the_latest_poll() {
        use std::future::Future;
        use std::task::Context;
        let c = Connections::new(Duration::from_secs(75), Lifecycle::new());
        let a = c.open();
        let mut stopped = std::pin::pin!(a.activity().stopped());
        let (first, second) = (Arc::new(Woken::default()), Arc::new(Woken::default()));
        for waker in [&first, &first, &second] {
            let waker = Waker::from(waker.clone());
            assert!(stopped.as_mut().poll(&mut Context::from_waker(&waker)).is_pending());
        }
        c.stop();
        assert_eq!(
            first.0.load(Ordering::SeqCst),
            0,
            "a waker replaced by a later poll was woken"
        );
        assert_eq!(second.0.load(Ordering::SeqCst), 1);
        let waker = Waker::from(second.clone());
        assert!(stopped.as_mut().poll(&mut Context::from_waker(&waker)).is_ready());
    }

    #[tokio::test]
    async fn stop_wakes_every_connection() {
        let c = Connections::new(Duration::from_secs(75), Lifecycle::new());
        let a = c.open();
        let waiting = tokio::spawn({
            let a = a.activity().clone();
            async move { a.stopped().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        c.stop();
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("woken")
            .expect("task");
        let late = c.open();
        tokio::time::timeout(Duration::from_secs(1), late.activity().stopped())
            .await
            .expect("a connection opened after stop sees it at once");
    }
}

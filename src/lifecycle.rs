//! Process lifecycle: readiness, signal handling and the ordered graceful shutdown.
//!
//! The order is: a signal arrives → readiness turns 503 at once → the process keeps serving for
//! the shutdown delay (load balancers deregister it meanwhile) → listeners close → in-flight work
//! drains for at most the drain timeout → exit 0. A second signal exits at once. The delay lives
//! in the binary because a scratch image has no shell for a `preStop: sleep`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::watch;

/// Exit code used when a second signal cuts the graceful shutdown short.
pub const FORCED_EXIT_CODE: i32 = 130;

/// Shared readiness and shutdown state. Cheap to clone.
#[derive(Clone)]
pub struct Lifecycle {
    inner: Arc<Inner>,
}

struct Inner {
    ready: AtomicBool,
    draining: AtomicBool,
    /// Flips to `true` when listeners must stop accepting.
    stop_tx: watch::Sender<bool>,
    /// Flips to `true` when the shutdown signal has arrived (before the delay).
    signal_tx: watch::Sender<bool>,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Self::new()
    }
}

impl Lifecycle {
    pub fn new() -> Self {
        let (stop_tx, _) = watch::channel(false);
        let (signal_tx, _) = watch::channel(false);
        Lifecycle {
            inner: Arc::new(Inner {
                ready: AtomicBool::new(false),
                draining: AtomicBool::new(false),
                stop_tx,
                signal_tx,
            }),
        }
    }

    /// Marks the process ready to receive traffic (start-up work is done).
    pub fn set_ready(&self) {
        if !self.inner.draining.load(Ordering::SeqCst) {
            self.inner.ready.store(true, Ordering::SeqCst);
        }
    }

    pub fn is_ready(&self) -> bool {
        self.inner.ready.load(Ordering::SeqCst)
    }

    /// True from the moment shutdown begins.
    pub fn is_draining(&self) -> bool {
        self.inner.draining.load(Ordering::SeqCst)
    }

    /// Begins shutdown: readiness turns false at once. Idempotent.
    pub fn begin_shutdown(&self) {
        self.inner.draining.store(true, Ordering::SeqCst);
        self.inner.ready.store(false, Ordering::SeqCst);
        self.inner.signal_tx.send_replace(true);
    }

    /// Tells every listener to stop accepting.
    pub fn stop_accepting(&self) {
        self.inner.stop_tx.send_replace(true);
    }

    /// True once listeners must stop accepting.
    pub fn is_stopping(&self) -> bool {
        *self.inner.stop_tx.borrow()
    }

    /// Resolves once listeners must stop accepting.
    pub async fn stopped(&self) {
        let mut rx = self.inner.stop_tx.subscribe();
        let _ = rx.wait_for(|stop| *stop).await;
    }

    /// Resolves once shutdown has begun (the signal arrived, before the delay).
    pub async fn shutdown_begun(&self) {
        let mut rx = self.inner.signal_tx.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    /// Runs the signal side of the shutdown: waits for SIGTERM or SIGINT, flips readiness, waits
    /// `delay` (still serving), then tells listeners to stop. A second signal at any point exits
    /// the process at once with [`FORCED_EXIT_CODE`].
    pub fn spawn_signal_handler(&self, delay: Duration) -> std::io::Result<()> {
        let mut signals = Signals::new()?;
        let lifecycle = self.clone();
        tokio::spawn(async move {
            let name = signals.next().await;
            tracing::info!(
                signal = name,
                delay_ms = delay.as_millis() as u64,
                "shutdown: not ready; serving until the delay ends"
            );
            lifecycle.begin_shutdown();
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                name = signals.next() => force_exit(name),
            }
            tracing::info!("shutdown: delay over; closing listeners and draining");
            lifecycle.stop_accepting();
            let name = signals.next().await;
            force_exit(name);
        });
        Ok(())
    }
}

fn force_exit(signal: &str) -> ! {
    tracing::warn!(signal, "second signal: exiting at once");
    std::process::exit(FORCED_EXIT_CODE)
}

struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

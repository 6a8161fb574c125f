//! Giving memory back to the OS after a burst. The binary's allocator (mimalloc) keeps pages it
//! freed for reuse and purges them only when it next runs its deferred work, which an idle
//! process never does: after a flood of connections or bodies ends, the resident size would
//! stay at the peak. A collection every few seconds purges what is free, at the cost of one
//! cheap call, and never on a request's path.

use std::time::Duration;

unsafe extern "C" {
    /// mimalloc's collection: frees the calling thread's empty pages and purges the arenas'
    /// free memory whose purge delay has passed.
    fn mi_collect(force: bool);
}

/// How often the collection runs.
const EVERY: Duration = Duration::from_secs(5);

/// Starts the periodic collection on the current runtime.
pub fn spawn_collector() {
    tokio::spawn(async {
        let mut tick = tokio::time::interval(EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            // SAFETY: mi_collect takes no pointers and may be called from any thread at any time.
            unsafe { mi_collect(false) };
        }
    });
}

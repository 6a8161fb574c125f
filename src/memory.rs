//! The binary's allocator, and giving memory back to the OS after a burst.
//!
//! The allocator is mimalloc: the static musl build's own allocator is slow under concurrency.
//! [`MiMalloc`] calls it the way the standard library calls the C allocator: plain `mi_malloc`
//! whenever the alignment asked for is one every block has (16 bytes), and the aligned entry
//! points only for larger alignments. The `mimalloc` crate's wrapper sends every allocation
//! through `mi_malloc_aligned`; with mimalloc 3 (that crate's default) the aligned path is fast
//! only for blocks of at most 1 KiB and over-allocates the rest, at alignment 8 too (a profile
//! of the backend counted four such calls per request).
//!
//! The build uses mimalloc 2 (`v2` in Cargo.toml). mimalloc 3 also over-allocates every
//! 128-byte-aligned block whose size is not a power of two, and every tokio task is one: an
//! idle gateway connection took 4,390 bytes of resident memory on mimalloc 3 and 4,000 on
//! mimalloc 2 (10,000 connections, same build otherwise).
//!
//! mimalloc keeps pages it freed for reuse and purges them only when it next runs its deferred
//! work, which an idle process never does: after a flood of connections or bodies ends, the
//! resident size would stay at the peak. A collection every few seconds purges what is free,
//! at the cost of one cheap call, and never on a request's path.

/// mimalloc, called like the C allocator (see the module's documentation).
#[cfg(feature = "mimalloc")]
pub struct MiMalloc;

/// Every block mimalloc hands out is aligned to this (its `MI_MAX_ALIGN_SIZE`), the same
/// guarantee the C library's `malloc` gives on this platform.
#[cfg(feature = "mimalloc")]
const MIN_ALIGN: usize = 16;

#[cfg(feature = "mimalloc")]
fn plain(align: usize, size: usize) -> bool {
    align <= MIN_ALIGN && align <= size
}

/// Allocates with `plain` when every block has the alignment asked for, else with `aligned`.
///
/// # Safety
/// As for [`std::alloc::GlobalAlloc::alloc`].
#[cfg(feature = "mimalloc")]
#[inline]
unsafe fn allocate(
    layout: std::alloc::Layout,
    plain_fn: unsafe extern "C" fn(usize) -> *mut std::ffi::c_void,
    aligned_fn: unsafe extern "C" fn(usize, usize) -> *mut std::ffi::c_void,
) -> *mut u8 {
    // SAFETY: the caller upholds GlobalAlloc::alloc's contract; both functions take any size.
    unsafe {
        if plain(layout.align(), layout.size()) {
            plain_fn(layout.size()).cast()
        } else {
            aligned_fn(layout.size(), layout.align()).cast()
        }
    }
}

// SAFETY: each method forwards to the mimalloc function with the same contract; blocks from
// either entry point are freed by `mi_free`, and the alignment rule is the one the standard
// library applies to `malloc` (a block of at least `align` bytes is aligned to `align` when
// `align` is at most 16).
#[cfg(feature = "mimalloc")]
unsafe impl std::alloc::GlobalAlloc for MiMalloc {
    #[inline]
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        // SAFETY: see the impl's comment.
        unsafe { allocate(layout, libmimalloc_sys::mi_malloc, libmimalloc_sys::mi_malloc_aligned) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        // SAFETY: see the impl's comment.
        unsafe { allocate(layout, libmimalloc_sys::mi_zalloc, libmimalloc_sys::mi_zalloc_aligned) }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: std::alloc::Layout) {
        // SAFETY: see the impl's comment.
        unsafe { libmimalloc_sys::mi_free(ptr.cast()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        use libmimalloc_sys as mi;
        // SAFETY: see the impl's comment.
        unsafe {
            if plain(layout.align(), new_size) {
                mi::mi_realloc(ptr.cast(), new_size).cast()
            } else {
                mi::mi_realloc_aligned(ptr.cast(), new_size, layout.align()).cast()
            }
        }
    }
}

#[cfg(feature = "mimalloc")]
unsafe extern "C" {
    /// mimalloc's collection: frees the calling thread's empty pages and purges the arenas'
    /// free memory. Forced (`true`), it purges at once instead of leaving what was freed since
    /// the last collection to the next one: a burst's memory goes back within one period, not
    /// two (measured: +20 MiB still resident 10 s after 5,000 closes without it, +4 MiB with).
    fn mi_collect(force: bool);
}

/// How often the collection runs.
#[cfg(feature = "mimalloc")]
const EVERY: std::time::Duration = crate::defaults::MEMORY_COLLECT_EVERY;

/// Bumped by each tick of the collector: a worker thread that has not collected since the
/// last bump collects when it next goes idle (see [`on_worker_park`]).
#[cfg(feature = "mimalloc")]
static EPOCH: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

#[cfg(feature = "mimalloc")]
thread_local! {
    static COLLECTED: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Run by each runtime worker as it goes idle (the runtime's park hook).
///
/// mimalloc frees and purges a thread's pages only on that thread, so a collection on the
/// collector's thread alone leaves what the other workers freed resident until they next
/// allocate, which an idle worker never does. Each worker therefore collects once per tick,
/// when it parks: one atomic load and a thread-local read otherwise, so the busy path does
/// not pay for it.
#[cfg(feature = "mimalloc")]
pub fn on_worker_park() {
    let epoch = EPOCH.load(std::sync::atomic::Ordering::Relaxed);
    COLLECTED.with(|seen| {
        if seen.get() != epoch {
            seen.set(epoch);
            // SAFETY: mi_collect takes no pointers and may be called from any thread at any time.
            unsafe { mi_collect(true) };
        }
    });
}

/// Without mimalloc there is nothing to collect.
#[cfg(not(feature = "mimalloc"))]
pub fn on_worker_park() {}

/// Starts the periodic collection on the current runtime.
///
/// Each tick collects on the collector's own thread, opens a new epoch for the others
/// ([`on_worker_park`]) and spawns one empty task per worker: the runtime wakes an idle worker
/// to take them, and that worker collects as it parks again.
#[cfg(feature = "mimalloc")]
pub fn spawn_collector() {
    tokio::spawn(async {
        let mut tick = tokio::time::interval(EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            EPOCH.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            // SAFETY: mi_collect takes no pointers and may be called from any thread at any time.
            unsafe { mi_collect(true) };
            let workers = tokio::runtime::Handle::current().metrics().num_workers();
            for _ in 0..workers {
                tokio::spawn(async {});
            }
        }
    });
}

/// Without mimalloc the C library's allocator returns memory on its own terms.
#[cfg(not(feature = "mimalloc"))]
pub fn spawn_collector() {}

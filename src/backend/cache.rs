//! A bounded per-pod cache of sessions known to be live. It is what keeps DynamoDB calls well
//! under one per message: a cached session is re-synced (lastSeenAt written, the message count
//! added, the item re-created if it went missing) at most once per sync interval. Losing the
//! cache (a pod dies) costs one extra write per connection, never correctness. Each entry also
//! keeps the session's [`Identity`] (principal and attributes, as stored at connect), which
//! every later message and disconnect gets from here; a pod that never saw the connect learns
//! it from the write that a miss makes anyway.

use std::num::NonZeroUsize;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use std::sync::Arc;

use lru::LruCache;

use super::identity::Identity;

/// Randomly seeded per process; see Cargo.toml for why not SipHash.
type Hasher = foldhash::fast::RandomState;

struct Entry {
    synced_at: Instant,
    /// Messages counted since the last sync, not yet written to the store.
    pending: u64,
    /// The session's identity; `None` until the store's answer to the first sync is in.
    identity: Option<Arc<Identity>>,
}

/// What the caller must do for a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The session is known live and was synced recently: no store call. Its identity.
    Fresh(Arc<Identity>),
    /// Write the session now (upsert), adding `add` messages to its count, and record its
    /// identity from the store's answer ([`SessionCache::set_identity`]).
    Sync { add: u64, cached: bool },
}

pub struct SessionCache {
    entries: Mutex<LruCache<String, Entry, Hasher>>,
    sync_interval: Duration,
}

impl SessionCache {
    pub fn new(capacity: usize, sync_interval: Duration) -> Self {
        let cap = NonZeroUsize::new(capacity.max(1)).unwrap_or(NonZeroUsize::MIN);
        SessionCache {
            entries: Mutex::new(LruCache::with_hasher(cap, Hasher::default())),
            sync_interval,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LruCache<String, Entry, Hasher>> {
        // The cache is an optimisation; a poisoned lock still holds a usable map.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a message for `id` and says whether the store must be written.
    pub fn on_message(&self, id: &str, now: Instant) -> Lookup {
        let mut entries = self.lock();
        match entries.get_mut(id) {
            Some(e) if now.saturating_duration_since(e.synced_at) < self.sync_interval => match &e.identity {
                Some(identity) => {
                    e.pending += 1;
                    Lookup::Fresh(identity.clone())
                }
                // A first sync still in flight: this message makes its own (and counts itself).
                None => Lookup::Sync { add: 1, cached: true },
            },
            Some(e) => {
                let add = e.pending + 1;
                e.pending = 0;
                e.synced_at = now;
                Lookup::Sync { add, cached: true }
            }
            None => {
                entries.put(
                    id.to_string(),
                    Entry {
                        synced_at: now,
                        pending: 0,
                        identity: None,
                    },
                );
                Lookup::Sync { add: 1, cached: false }
            }
        }
    }

    /// Undoes a [`Lookup::Sync`] whose write failed: the earlier pending messages are kept for
    /// the next attempt, and the entry is marked stale so the next message retries at once.
    pub fn sync_failed(&self, id: &str, add: u64, cached: bool) {
        let mut entries = self.lock();
        if !cached {
            entries.pop(id);
            return;
        }
        if let Some(e) = entries.get_mut(id) {
            e.pending += add.saturating_sub(1);
            e.synced_at = Instant::now().checked_sub(self.sync_interval).unwrap_or(e.synced_at);
        }
    }

    /// Records the identity a sync's write returned.
    pub fn set_identity(&self, id: &str, identity: Arc<Identity>) {
        if let Some(e) = self.lock().peek_mut(id) {
            e.identity = Some(identity);
        }
    }

    /// Records a session just written by a connect, with its identity.
    pub fn insert_synced(&self, id: &str, now: Instant, identity: Arc<Identity>) {
        self.lock().put(
            id.to_string(),
            Entry {
                synced_at: now,
                pending: 0,
                identity: Some(identity),
            },
        );
    }

    /// Forgets a session; its identity, when it was known.
    pub fn remove(&self, id: &str) -> Option<Arc<Identity>> {
        self.lock().pop(id).and_then(|e| e.identity)
    }

    /// Takes every pending count (for the flush at shutdown).
    pub fn take_pending(&self) -> Vec<(String, u64)> {
        let mut entries = self.lock();
        let mut out = Vec::new();
        for (id, e) in entries.iter_mut() {
            if e.pending > 0 {
                out.push((id.clone(), e.pending));
                e.pending = 0;
            }
        }
        out
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syncs_once_per_interval() {
        let cache = SessionCache::new(10, Duration::from_secs(60));
        let t0 = Instant::now();
        assert_eq!(cache.on_message("a", t0), Lookup::Sync { add: 1, cached: false });
        cache.set_identity("a", Arc::default());
        for i in 1..=5 {
            assert!(matches!(
                cache.on_message("a", t0 + Duration::from_secs(i)),
                Lookup::Fresh(_)
            ));
        }
        // Past the interval: the five pending plus this one are written together.
        assert_eq!(
            cache.on_message("a", t0 + Duration::from_secs(61)),
            Lookup::Sync { add: 6, cached: true }
        );
    }

    #[test]
    fn failed_sync_keeps_pending() {
        let cache = SessionCache::new(10, Duration::from_secs(60));
        let t0 = Instant::now();
        cache.insert_synced("a", t0, Arc::default());
        assert!(matches!(cache.on_message("a", t0), Lookup::Fresh(_)));
        assert!(matches!(cache.on_message("a", t0), Lookup::Fresh(_)));
        let later = t0 + Duration::from_secs(120);
        let Lookup::Sync { add, cached } = cache.on_message("a", later) else {
            panic!("expected a sync")
        };
        assert_eq!(add, 3);
        cache.sync_failed("a", add, cached);
        // The failed message itself is not counted; the two before it are kept.
        assert_eq!(cache.take_pending(), vec![("a".to_string(), 2)]);
    }

    #[test]
    fn failed_first_sync_forgets_the_session() {
        let cache = SessionCache::new(10, Duration::from_secs(60));
        let t0 = Instant::now();
        let Lookup::Sync { add, cached } = cache.on_message("a", t0) else {
            panic!()
        };
        cache.sync_failed("a", add, cached);
        assert!(cache.is_empty());
        assert_eq!(cache.on_message("a", t0), Lookup::Sync { add: 1, cached: false });
    }

    #[test]
    fn keeps_the_identity_and_waits_for_it() {
        let cache = SessionCache::new(10, Duration::from_secs(60));
        let t0 = Instant::now();
        let alice = Arc::new(Identity {
            principal_id: Some("alice".into()),
            attributes: [("tenant", "acme")].into_iter().collect(),
            session_id: None,
        });
        assert_eq!(cache.on_message("a", t0), Lookup::Sync { add: 1, cached: false });
        // The first write has not answered: another message makes its own.
        assert_eq!(cache.on_message("a", t0), Lookup::Sync { add: 1, cached: true });
        cache.set_identity("a", alice.clone());
        assert_eq!(cache.on_message("a", t0), Lookup::Fresh(alice.clone()));
        cache.insert_synced("b", t0, alice.clone());
        assert_eq!(cache.on_message("b", t0), Lookup::Fresh(alice.clone()));
        assert_eq!(cache.remove("b"), Some(alice));
        assert_eq!(cache.remove("b"), None);
    }

    #[test]
    fn bounded() {
        let cache = SessionCache::new(3, Duration::from_secs(60));
        let t0 = Instant::now();
        for id in ["a", "b", "c", "d", "e"] {
            cache.on_message(id, t0);
        }
        assert_eq!(cache.len(), 3);
        // The oldest entries were evicted; a message for one is a miss again.
        assert_eq!(cache.on_message("a", t0), Lookup::Sync { add: 1, cached: false });
    }
}

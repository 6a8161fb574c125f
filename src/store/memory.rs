//! The in-memory session store: the embedded default for `dev`, local use and tests. It lives
//! and dies with the process, so it is not for a fleet of pods.

use std::collections::hash_map::Entry;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Mutex;

use super::{Claim, ClaimRequest, Created, Disconnecting, Page, ResumeRecord, Session, SessionStore, StoreError};
use crate::future::BoxFuture;

/// Sessions by connection id. A connect storm keeps tens of thousands of sessions here (each
/// waits out `--disconnect-grace`), and every connect, claim and delete looks one up: a hash map
/// finds it in a probe or two, where a sorted map walked a key on the heap at every comparison.
/// Scans still page by key, like DynamoDB's (see [`MemoryStore::scan`]).
///
/// The hash is keyed: connection ids come from the gateway, behind the shared secret.
type Sessions = HashMap<String, Session, foldhash::fast::RandomState>;

#[derive(Default)]
pub struct MemoryStore {
    sessions: Mutex<Sessions>,
    /// Resume records by session id, apart from the sessions (so no scan meets them).
    resumes: Mutex<HashMap<String, ResumeRecord>>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut Sessions) -> T) -> T {
        // A poisoned lock only means another request panicked mid-update of a plain map; the
        // map itself is still consistent, so keep serving.
        let mut guard = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }

    fn with_resumes<T>(&self, f: impl FnOnce(&mut HashMap<String, ResumeRecord>) -> T) -> T {
        let mut guard = self.resumes.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }
}

impl SessionStore for MemoryStore {
    fn create<'a>(&'a self, session: &'a Session) -> BoxFuture<'a, Result<Created, StoreError>> {
        let out = self.with(|m| match m.entry(session.connection_id.clone()) {
            Entry::Occupied(existing) => Created::AlreadyExists(Some(Box::new(existing.get().clone()))),
            Entry::Vacant(slot) => {
                slot.insert(session.clone());
                Created::Created
            }
        });
        Box::pin(async move { Ok(out) })
    }

    fn upsert<'a>(&'a self, session: &'a Session, add_messages: u64) -> BoxFuture<'a, Result<Session, StoreError>> {
        let stored = self.with(|m| {
            let entry = m.entry(session.connection_id.clone()).or_insert_with(|| Session {
                message_count: 0,
                ..session.clone()
            });
            entry.last_seen_at = session.last_seen_at;
            entry.message_count += add_messages;
            entry.clone()
        });
        Box::pin(async { Ok(stored) })
    }

    fn touch_existing<'a>(
        &'a self,
        connection_id: &'a str,
        last_seen_at: i64,
        add_messages: u64,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        let existed = self.with(|m| match m.get_mut(connection_id) {
            Some(s) => {
                s.last_seen_at = last_seen_at;
                s.message_count += add_messages;
                true
            }
            None => false,
        });
        Box::pin(async move { Ok(existed) })
    }

    fn get<'a>(&'a self, connection_id: &'a str) -> BoxFuture<'a, Result<Option<Session>, StoreError>> {
        let out = self.with(|m| m.get(connection_id).cloned());
        Box::pin(async move { Ok(out) })
    }

    fn delete<'a>(&'a self, connection_id: &'a str) -> BoxFuture<'a, Result<Option<Session>, StoreError>> {
        let existed = self.with(|m| m.remove(connection_id));
        Box::pin(async move { Ok(existed) })
    }

    /// The `limit` sessions whose ids follow `start`, in id order: one pass over the map that
    /// keeps the smallest ids in a heap of `limit`. A page costs a pass over every session;
    /// the sweep takes a page at most as often as its GetConnection rate allows, and listing
    /// and broadcast pages are asked for by hand.
    fn scan<'a>(&'a self, start: Option<String>, limit: usize) -> BoxFuture<'a, Result<Page, StoreError>> {
        let limit = limit.max(1);
        let page = self.with(|m| {
            let mut smallest: BinaryHeap<&str> = BinaryHeap::with_capacity(limit + 1);
            for id in m.keys() {
                if start.as_deref().is_some_and(|start| id.as_str() <= start) {
                    continue;
                }
                if smallest.len() < limit {
                    smallest.push(id);
                } else if smallest.peek().is_some_and(|largest| id.as_str() < *largest) {
                    smallest.pop();
                    smallest.push(id);
                }
            }
            let sessions: Vec<Session> = smallest.into_sorted_vec().into_iter().map(|id| m[id].clone()).collect();
            let next = match sessions.last() {
                Some(last) if sessions.len() == limit => Some(last.connection_id.clone()),
                _ => None,
            };
            Page { sessions, next }
        });
        Box::pin(async move { Ok(page) })
    }

    fn claim_disconnect<'a>(
        &'a self,
        connection_id: &'a str,
        claim: &'a ClaimRequest<'a>,
    ) -> BoxFuture<'a, Result<Claim, StoreError>> {
        let out = self.with(|m| {
            let Some(s) = m.get_mut(connection_id) else {
                return Claim::Missing;
            };
            if claim.seen_before.is_some_and(|before| s.last_seen_at >= before) {
                return Claim::Held;
            }
            match &mut s.disconnect {
                Some(d) if d.lease_until >= claim.now => Claim::Held,
                Some(d) => {
                    d.lease_until = claim.lease_until;
                    d.owner = claim.owner.to_string();
                    s.expires_at = claim.expires_at;
                    Claim::Claimed(Box::new(s.clone()))
                }
                None => {
                    s.disconnect = Some(Disconnecting {
                        since: claim.now,
                        lease_until: claim.lease_until,
                        owner: claim.owner.to_string(),
                    });
                    s.expires_at = claim.expires_at;
                    Claim::Claimed(Box::new(s.clone()))
                }
            }
        });
        Box::pin(async move { Ok(out) })
    }

    fn renew_disconnect<'a>(
        &'a self,
        connection_id: &'a str,
        owner: &'a str,
        lease_until: i64,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        let renewed = self.with(|m| match m.get_mut(connection_id).and_then(|s| s.disconnect.as_mut()) {
            Some(d) if d.owner == owner => {
                d.lease_until = lease_until;
                true
            }
            _ => false,
        });
        Box::pin(async move { Ok(renewed) })
    }

    fn get_resume<'a>(&'a self, session_id: &'a str) -> BoxFuture<'a, Result<Option<ResumeRecord>, StoreError>> {
        let out = self.with_resumes(|m| m.get(session_id).cloned());
        Box::pin(async move { Ok(out) })
    }

    fn put_resume<'a>(
        &'a self,
        record: &'a ResumeRecord,
        expected: Option<u64>,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        let written = self.with_resumes(|m| {
            if m.get(&record.session_id).map(|r| r.version) != expected {
                return false;
            }
            m.insert(record.session_id.clone(), record.clone());
            true
        });
        Box::pin(async move { Ok(written) })
    }

    fn delete_resume<'a>(&'a self, session_id: &'a str, expected: u64) -> BoxFuture<'a, Result<bool, StoreError>> {
        let deleted = self.with_resumes(|m| {
            if m.get(session_id).map(|r| r.version) != Some(expected) {
                return false;
            }
            m.remove(session_id);
            true
        });
        Box::pin(async move { Ok(deleted) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::identity::Attributes;

    fn session(id: &str) -> Session {
        Session {
            connection_id: id.into(),
            connected_at: 1,
            last_seen_at: 1,
            source_ip: String::new(),
            user_agent: String::new(),
            domain: String::new(),
            stage: String::new(),
            message_count: 0,
            expires_at: 9,
            principal_id: None,
            attributes: Attributes::new(),
            session_id: None,
            resume_origin: None,
            disconnect: None,
        }
    }

    /// A claim wins once while its lease holds, again after it ran out (keeping the first
    /// claim's time), and only its owner renews it; a missing session is said to be missing.
    #[tokio::test]
    async fn claims_are_held_until_the_lease_runs_out() {
        let store = MemoryStore::new();
        store.create(&session("a")).await.unwrap();
        let claim = |owner: &'static str, now: i64| ClaimRequest {
            owner,
            now,
            lease_until: now + 100,
            expires_at: 99,
            seen_before: None,
        };
        let Claim::Claimed(first) = store.claim_disconnect("a", &claim("p1", 1000)).await.unwrap() else {
            panic!("the first claim wins")
        };
        let mark = first.disconnect.expect("marked");
        assert_eq!((mark.since, mark.lease_until, first.expires_at), (1000, 1100, 99));
        assert_eq!(
            store.claim_disconnect("a", &claim("p2", 1100)).await.unwrap(),
            Claim::Held
        );
        assert!(!store.renew_disconnect("a", "p2", 5000).await.unwrap());
        assert!(store.renew_disconnect("a", "p1", 1200).await.unwrap());
        assert_eq!(
            store.claim_disconnect("a", &claim("p2", 1150)).await.unwrap(),
            Claim::Held
        );
        let Claim::Claimed(again) = store.claim_disconnect("a", &claim("p2", 1201)).await.unwrap() else {
            panic!("a claim whose lease ran out is taken over")
        };
        let mark = again.disconnect.clone().expect("still marked");
        assert_eq!((mark.since, mark.owner.as_str()), (1000, "p2"));
        assert!(!store.renew_disconnect("a", "p1", 9000).await.unwrap(), "p1 lost it");
        assert_eq!(
            store.claim_disconnect("b", &claim("p1", 1)).await.unwrap(),
            Claim::Missing
        );
        // A session seen at or after `seen_before` is left alone.
        store.create(&session("c")).await.unwrap();
        let young = ClaimRequest {
            seen_before: Some(1),
            ..claim("p1", 5000)
        };
        assert_eq!(store.claim_disconnect("c", &young).await.unwrap(), Claim::Held);
        let old = ClaimRequest {
            seen_before: Some(2),
            ..claim("p1", 5000)
        };
        assert!(matches!(
            store.claim_disconnect("c", &old).await.unwrap(),
            Claim::Claimed(_)
        ));
        assert_eq!(again.disconnect_id(), crate::store::disconnect_id("a", 1));
    }

    /// Scans page by id, as DynamoDB's do, though the map keeps no order.
    #[tokio::test]
    async fn scans_page_through_every_session_once_in_id_order() {
        let store = MemoryStore::new();
        // Ids of every length, inserted out of order.
        let mut ids: Vec<String> = (0..1_000u32)
            .map(|i| format!("{:x}", i.wrapping_mul(2_654_435_761)))
            .collect();
        for id in &ids {
            store.create(&session(id)).await.unwrap();
        }
        ids.sort();
        for limit in [1, 7, 100, 999, 1_000, 5_000] {
            let (mut seen, mut start, mut pages) = (Vec::new(), None, 0);
            loop {
                let page = store.scan(start.take(), limit).await.unwrap();
                pages += 1;
                assert!(page.sessions.len() <= limit);
                seen.extend(page.sessions.into_iter().map(|s| s.connection_id));
                match page.next {
                    Some(next) => start = Some(next),
                    None => break,
                }
            }
            assert_eq!(seen, ids, "limit {limit}");
            // A full last page says there may be more; the page after it is empty.
            assert_eq!(pages, ids.len() / limit + 1, "limit {limit}");
        }
        store.delete(&ids[0]).await.unwrap();
        let page = store.scan(None, 2).await.unwrap();
        let got: Vec<_> = page.sessions.iter().map(|s| s.connection_id.as_str()).collect();
        assert_eq!(got, [ids[1].as_str(), ids[2].as_str()]);
        assert_eq!(page.next.as_deref(), Some(ids[2].as_str()));
    }

    /// The principal and attributes written at connect come back from every read: a duplicate
    /// create, the upsert of a message and the delete.
    #[tokio::test]
    async fn identity_round_trips() {
        let store = MemoryStore::new();
        let mut first = session("a");
        first.principal_id = Some("alice".into());
        first.attributes = [("tenant", "acme"), ("role", "admin")].into_iter().collect();
        assert_eq!(store.create(&first).await.unwrap(), Created::Created);
        let Created::AlreadyExists(Some(existing)) = store.create(&session("a")).await.unwrap() else {
            panic!("a duplicate create finds the first session")
        };
        assert_eq!(existing.identity(), first.identity());
        // A message's upsert carries no identity, and keeps the stored one.
        let stored = store.upsert(&session("a"), 3).await.unwrap();
        assert_eq!(stored.principal_id.as_deref(), Some("alice"));
        assert_eq!(stored.attributes.get("tenant"), Some("acme"));
        assert_eq!(stored.message_count, 3);
        let deleted = store.delete("a").await.unwrap().expect("it existed");
        assert_eq!(deleted.identity(), first.identity());
        assert_eq!(store.delete("a").await.unwrap(), None);
        // A session a message created has no identity.
        let made = store.upsert(&session("b"), 1).await.unwrap();
        assert_eq!(made.principal_id, None);
        assert!(made.attributes.is_empty());
    }

    /// A resume record is written only on the version read: a create loses to an existing
    /// record, a write or delete on a stale version changes nothing.
    #[tokio::test]
    async fn resume_records_are_written_on_their_version_only() {
        let store = MemoryStore::new();
        let mut r = ResumeRecord::attached("s", "a", 9);
        assert!(store.put_resume(&r, None).await.unwrap());
        assert!(!store.put_resume(&r, None).await.unwrap(), "one create wins");
        r.connection_id = "b".into();
        r.version = 2;
        assert!(!store.put_resume(&r, Some(0)).await.unwrap(), "a stale version loses");
        assert!(store.put_resume(&r, Some(1)).await.unwrap());
        assert_eq!(store.get_resume("s").await.unwrap().unwrap().connection_id, "b");
        assert!(!store.delete_resume("s", 1).await.unwrap());
        assert!(store.delete_resume("s", 2).await.unwrap());
        assert_eq!(store.get_resume("s").await.unwrap(), None);
        // Records are apart from the sessions: no scan meets them.
        assert!(store.scan(None, 10).await.unwrap().sessions.is_empty());
    }
}

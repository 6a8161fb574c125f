//! The in-memory group store: memberships of one process (`dev`, tests, a single replica), kept
//! both ways like the DynamoDB table and its `byConnection` index. A membership past its
//! `expiresAt` reads as absent, as DynamoDB's TTL would eventually make it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::Mutex;

use super::StoreError;
use super::groups::{GroupStore, Member, MemberPage};
use crate::future::BoxFuture;
use crate::timefmt::now_ms;

#[derive(Default)]
struct Maps {
    /// group → connection id → member, sorted so pages follow connection id order.
    by_group: HashMap<String, BTreeMap<String, Member>>,
    /// connection id → its groups.
    by_connection: HashMap<String, BTreeSet<String>>,
}

#[derive(Default)]
pub struct MemoryGroupStore {
    maps: Mutex<Maps>,
}

fn live(member: &Member, now_secs: i64) -> bool {
    member.expires_at == 0 || member.expires_at >= now_secs
}

impl MemoryGroupStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut Maps) -> T) -> T {
        // A poisoned lock only means another request panicked mid-update of plain maps.
        let mut guard = self.maps.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }
}

impl GroupStore for MemoryGroupStore {
    fn join<'a>(&'a self, group: &'a str, member: &'a Member) -> BoxFuture<'a, Result<(), StoreError>> {
        self.with(|m| {
            m.by_group
                .entry(group.to_owned())
                .or_default()
                .insert(member.connection_id.clone(), member.clone());
            m.by_connection
                .entry(member.connection_id.clone())
                .or_default()
                .insert(group.to_owned());
        });
        Box::pin(async { Ok(()) })
    }

    fn leave<'a>(&'a self, group: &'a str, connection_id: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        self.with(|m| {
            if let Some(members) = m.by_group.get_mut(group) {
                members.remove(connection_id);
                if members.is_empty() {
                    m.by_group.remove(group);
                }
            }
            if let Some(groups) = m.by_connection.get_mut(connection_id) {
                groups.remove(group);
                if groups.is_empty() {
                    m.by_connection.remove(connection_id);
                }
            }
        });
        Box::pin(async { Ok(()) })
    }

    fn members<'a>(
        &'a self,
        group: &'a str,
        start: Option<String>,
        limit: usize,
    ) -> BoxFuture<'a, Result<MemberPage, StoreError>> {
        let limit = limit.max(1);
        let now = now_ms() / 1000;
        let page = self.with(|m| {
            let Some(all) = m.by_group.get(group) else {
                return MemberPage::default();
            };
            let lower = start.map_or(Bound::Unbounded, Bound::Excluded);
            let members: Vec<Member> = all
                .range((lower, Bound::Unbounded))
                .map(|(_, member)| member)
                .filter(|member| live(member, now))
                .take(limit)
                .cloned()
                .collect();
            let next = match members.last() {
                Some(last) if members.len() == limit => Some(last.connection_id.clone()),
                _ => None,
            };
            MemberPage { members, next }
        });
        Box::pin(async { Ok(page) })
    }

    fn count<'a>(&'a self, group: &'a str) -> BoxFuture<'a, Result<u64, StoreError>> {
        let now = now_ms() / 1000;
        let n = self.with(|m| {
            m.by_group
                .get(group)
                .map_or(0, |all| all.values().filter(|member| live(member, now)).count() as u64)
        });
        Box::pin(async move { Ok(n) })
    }

    fn groups_of<'a>(&'a self, connection_id: &'a str, limit: usize) -> BoxFuture<'a, Result<Vec<String>, StoreError>> {
        let groups = self.with(|m| {
            m.by_connection
                .get(connection_id)
                .map(|g| g.iter().take(limit).cloned().collect())
                .unwrap_or_default()
        });
        Box::pin(async { Ok(groups) })
    }

    fn forget<'a>(&'a self, connection_id: &'a str) -> BoxFuture<'a, Result<usize, StoreError>> {
        let n = self.with(|m| {
            let groups = m.by_connection.remove(connection_id).unwrap_or_default();
            for group in &groups {
                if let Some(members) = m.by_group.get_mut(group) {
                    members.remove(connection_id);
                    if members.is_empty() {
                        m.by_group.remove(group);
                    }
                }
            }
            groups.len()
        });
        Box::pin(async move { Ok(n) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, expires_at: i64) -> Member {
        Member {
            connection_id: id.into(),
            domain: "d".into(),
            stage: "s".into(),
            expires_at,
        }
    }

    #[tokio::test]
    async fn join_page_leave_forget() {
        let store = MemoryGroupStore::new();
        let far = now_ms() / 1000 + 3600;
        for i in 0..25 {
            store.join("g", &member(&format!("c{i:02}"), far)).await.unwrap();
        }
        store.join("g", &member("c00", far)).await.unwrap();
        store.join("h", &member("c00", far)).await.unwrap();
        store.join("g", &member("old", 1)).await.unwrap();
        assert_eq!(store.count("g").await.unwrap(), 25, "expired memberships do not count");
        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let page = store.members("g", cursor, 10).await.unwrap();
            seen.extend(page.members.into_iter().map(|m| m.connection_id));
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        assert_eq!(seen.len(), 25);
        assert!(seen.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(store.groups_of("c00", 10).await.unwrap(), vec!["g", "h"]);
        store.leave("g", "c01").await.unwrap();
        store.leave("g", "c01").await.unwrap();
        assert_eq!(store.count("g").await.unwrap(), 24);
        assert_eq!(store.forget("c00").await.unwrap(), 2);
        assert_eq!(store.count("h").await.unwrap(), 0);
        assert!(store.groups_of("c00", 10).await.unwrap().is_empty());
    }
}

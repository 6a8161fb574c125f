//! Group membership: which connections belong to which named group, so any `serve` pod can
//! publish to a group and nothing is lost when a pod dies. DynamoDB in production (a second
//! table: partition key `group`, sort key `connectionId`, a KEYS_ONLY index `byConnection` for
//! cleanup), an in-memory map for `dev` and tests; both behind [`GroupStore`].
//!
//! One item per membership, written once per join or leave, read a page at a time by a `Query`
//! (never a Scan); removed on `/disconnect`, on a 410 during a push, and by TTL (`expiresAt`,
//! the session's) after a lost `$disconnect`.

use std::sync::Arc;

use serde::Serialize;

use super::{StoreError, StoreKind, StoreSettings};
use crate::future::BoxFuture;
use crate::metrics::BackendMetrics;

pub use super::groups_dynamo::{BY_CONNECTION, DynamoGroupStore};
pub use super::groups_memory::MemoryGroupStore;

/// Bytes of a group name, at most.
pub const MAX_GROUP_NAME: usize = 128;
/// Members in one page of `GET /v1/groups/{group}`, at most.
pub const MAX_PAGE: usize = 1000;
/// Members in one page when none is asked for.
pub const DEFAULT_PAGE: usize = 100;

/// Whether `name` is a group name: 1..=128 bytes of `[A-Za-z0-9._:@=-]`.
pub fn valid_group_name(name: &str) -> bool {
    (1..=MAX_GROUP_NAME).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:@=-".contains(&b))
}

/// The rule a group name breaks, in words, for a 400.
pub fn group_name_rule() -> String {
    format!("a group name is 1 to {MAX_GROUP_NAME} bytes of A-Z a-z 0-9 . _ : @ = -")
}

/// One membership: the connection, and the `@connections` address its session had when it
/// joined (so a publish reaches members without reading their sessions).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Member {
    pub connection_id: String,
    #[serde(skip)]
    pub domain: String,
    #[serde(skip)]
    pub stage: String,
    /// Epoch seconds: the session's TTL, so a membership never outlives its session.
    #[serde(skip)]
    pub expires_at: i64,
}

/// One page of a group's members, in connection id order.
#[derive(Debug, Default)]
pub struct MemberPage {
    pub members: Vec<Member>,
    /// The last connection id of this page, when more may follow.
    pub next: Option<String>,
}

/// A group store. Every method but [`GroupStore::count`] and [`GroupStore::forget`] is one
/// round trip to the backing store.
pub trait GroupStore: Send + Sync + 'static {
    /// Adds the member to the group (one write; joining twice leaves one membership).
    fn join<'a>(&'a self, group: &'a str, member: &'a Member) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Removes the connection from the group (one write; leaving twice is not an error).
    fn leave<'a>(&'a self, group: &'a str, connection_id: &'a str) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Members of the group in connection id order, at most `limit`, after `start`.
    fn members<'a>(
        &'a self,
        group: &'a str,
        start: Option<String>,
        limit: usize,
    ) -> BoxFuture<'a, Result<MemberPage, StoreError>>;

    /// The exact number of members (a counting Query, paged by the store as needed).
    fn count<'a>(&'a self, group: &'a str) -> BoxFuture<'a, Result<u64, StoreError>>;

    /// The groups a connection belongs to (the `byConnection` index), at most `limit`.
    fn groups_of<'a>(&'a self, connection_id: &'a str, limit: usize) -> BoxFuture<'a, Result<Vec<String>, StoreError>>;

    /// Removes every membership of a connection; returns how many there were.
    fn forget<'a>(&'a self, connection_id: &'a str) -> BoxFuture<'a, Result<usize, StoreError>>;
}

/// The groups table's default name: the sessions table's, with `-groups`.
pub fn default_table(sessions_table: &str) -> String {
    format!("{sessions_table}-groups")
}

/// Opens the group store beside the session store: memory with memory, a DynamoDB table with
/// DynamoDB (created with its index and TTL under `--create-table`).
pub async fn open(
    settings: &StoreSettings,
    table: &str,
    sdk: &aws_config::SdkConfig,
    metrics: Arc<BackendMetrics>,
) -> Result<Arc<dyn GroupStore>, StoreError> {
    Ok(match settings.kind {
        StoreKind::Memory => Arc::new(MemoryGroupStore::new()),
        StoreKind::DynamoDb => {
            let store = DynamoGroupStore::new(sdk, table, settings.endpoint.as_deref(), metrics);
            if settings.create_table {
                store.create_table().await?;
                tracing::info!(table, "groups table ready");
            }
            Arc::new(store)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_names() {
        for ok in [
            "a",
            "room-1",
            "tenant:acme",
            "user@example.com",
            "k=v",
            "a.b_c",
            &"x".repeat(128),
        ] {
            assert!(valid_group_name(ok), "{ok}");
        }
        for bad in ["", "a b", "a/b", "é", "a,b", "a%20", &"x".repeat(129)] {
            assert!(!valid_group_name(bad), "{bad}");
        }
    }
}

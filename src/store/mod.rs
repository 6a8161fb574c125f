//! Session stores: where the backend keeps what it knows about each connection. DynamoDB in
//! production, an in-memory map for `dev` and tests; both behind [`SessionStore`].

mod dynamo;
pub mod groups;
mod groups_dynamo;
mod groups_memory;
mod memory;
pub mod resume;
mod resume_dynamo;

use std::sync::Arc;

use serde::Serialize;

use crate::backend::identity::{Attributes, Identity};
use crate::metrics::BackendMetrics;

/// The plug-in traits' future, also reachable here for code written against this path.
pub use crate::future::BoxFuture;
pub use dynamo::{DynamoStore, DynamoStoreConfig};
pub use groups::{GroupStore, Member, MemberPage};
pub use memory::MemoryStore;
pub use resume::{Buffered, ResumeRecord};

/// Which store holds the sessions. A new store is a variant here, a module beside these, and a
/// branch in [`open`]; the settings and the start-up read only this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    /// One process only: `dev`, tests, a single replica.
    Memory,
    DynamoDb,
}

impl StoreKind {
    /// Names as `--store` takes them, in the order of `StoreKind::ALL`.
    pub const NAMES: &'static [&'static str] = &["memory", "dynamodb"];
    const ALL: &'static [StoreKind] = &[StoreKind::Memory, StoreKind::DynamoDb];

    /// The store a `--store` name selects.
    pub fn from_name(name: &str) -> Option<StoreKind> {
        let i = Self::NAMES.iter().position(|n| *n == name)?;
        Self::ALL.get(i).copied()
    }

    /// Whether the store calls AWS, and so needs a region.
    pub fn uses_aws(self) -> bool {
        self == StoreKind::DynamoDb
    }

    /// Whether the store has a table that `--create-table` can create.
    pub fn has_table(self) -> bool {
        self == StoreKind::DynamoDb
    }
}

/// Everything needed to open a store.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    pub kind: StoreKind,
    pub table: String,
    /// Endpoint override (moto, LocalStack).
    pub endpoint: Option<String>,
    /// Create the table at start if it is missing (and the groups table beside it).
    pub create_table: bool,
    /// The table of group memberships (`--groups-table`).
    pub groups_table: String,
}

/// Opens the configured store: the one place that knows every kind.
pub async fn open(
    settings: &StoreSettings,
    sdk: &aws_config::SdkConfig,
    metrics: Arc<BackendMetrics>,
) -> Result<Arc<dyn SessionStore>, StoreError> {
    Ok(match settings.kind {
        StoreKind::Memory => Arc::new(MemoryStore::new()),
        StoreKind::DynamoDb => {
            let store = DynamoStore::new(
                sdk,
                DynamoStoreConfig {
                    table: settings.table.clone(),
                    endpoint: settings.endpoint.clone(),
                },
                metrics,
            );
            if settings.create_table {
                store.create_table().await?;
                tracing::info!(table = %settings.table, "session table ready");
            }
            Arc::new(store)
        }
    })
}

/// One session: a live (or recently live) WebSocket connection held by the gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Session {
    pub connection_id: String,
    /// Epoch milliseconds.
    pub connected_at: i64,
    /// Epoch milliseconds; written at most once per sync interval (see the README).
    pub last_seen_at: i64,
    pub source_ip: String,
    pub user_agent: String,
    pub domain: String,
    pub stage: String,
    pub message_count: u64,
    /// DynamoDB TTL attribute, epoch seconds.
    pub expires_at: i64,
    /// The principal an authorizer vouched for at connect; `null` without one.
    pub principal_id: Option<String>,
    /// Set at connect by the handler or the app.
    pub attributes: Attributes,
    /// The logical session a resume key gave this connection (see [`crate::backend::resume`]);
    /// `None` for a session without a key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// With `session_id`: the first connection of that logical session, which tells its
    /// resume record apart from a later session of the same key.
    #[serde(skip)]
    pub resume_origin: Option<String>,
    /// Set once the session's `/disconnect` is under way (see [`crate::backend::disconnect`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disconnect: Option<Disconnecting>,
}

/// A session whose `/disconnect` is under way: marked before the handler or the app is called,
/// deleted once it answered. A `serve` that dies mid-call leaves the mark; another one takes it
/// over once the lease has run out. The disconnect id is not stored: it is
/// [`Session::disconnect_id`], fixed by the item's own key and `connectedAt`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Disconnecting {
    /// When the first claim was made (epoch milliseconds): the retry deadline counts from here.
    pub since: i64,
    /// The claim holds until then (epoch milliseconds); after it, any `serve` may take it over.
    pub lease_until: i64,
    /// Who holds the claim (a token per `serve` process).
    #[serde(skip)]
    pub owner: String,
}

/// What a claim on a session's `/disconnect` asks for.
#[derive(Debug, Clone)]
pub struct ClaimRequest<'a> {
    pub owner: &'a str,
    /// Now (epoch milliseconds): a lease that ends before this has run out.
    pub now: i64,
    pub lease_until: i64,
    /// The item's new TTL (epoch seconds), far enough out to cover the retries.
    pub expires_at: i64,
    /// Only a session whose `lastSeenAt` is before this (epoch milliseconds): a session created
    /// moments ago may belong to a handshake still under way, which GetConnection and pushes
    /// call gone. `None`: any session.
    pub seen_before: Option<i64>,
}

/// What a claim found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The session is this caller's to disconnect; as stored after the claim (with its mark).
    Claimed(Box<Session>),
    /// Someone else holds a live claim (or the session is younger than the claim allows).
    Held,
    /// No such session.
    Missing,
}

impl Session {
    /// The session's disconnect id (`x-socketless-disconnect-id`): the first 32 hex digits of
    /// SHA-256 over the connection id and `connectedAt`. Every `serve` derives the same one for
    /// a session, on every retry and duplicate; a reused connection id gets another.
    pub fn disconnect_id(&self) -> String {
        disconnect_id(&self.connection_id, self.connected_at)
    }

    /// Who the session belongs to, as the cache keeps it.
    pub fn identity(&self) -> Identity {
        Identity {
            principal_id: self.principal_id.as_deref().map(Into::into),
            session_id: self.session_id.as_deref().map(Into::into),
            attributes: self.attributes.clone(),
        }
    }
}

/// [`Session::disconnect_id`] from its two parts.
pub fn disconnect_id(connection_id: &str, connected_at: i64) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::new()
        .chain_update(connection_id.as_bytes())
        .chain_update(b"\n")
        .chain_update(connected_at.to_string().as_bytes())
        .finalize();
    hex::encode(&digest[..16])
}

/// What a conditional create found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    Created,
    /// A session with this id already existed and was left untouched; it is given when the
    /// store returned it with the refusal (DynamoDB and memory do).
    AlreadyExists(Option<Box<Session>>),
}

/// One page of a scan.
#[derive(Debug, Default)]
pub struct Page {
    pub sessions: Vec<Session>,
    /// Where the next page starts; `None` when this was the last page.
    pub next: Option<String>,
}

/// Why a store call failed. Messages are for logs, never for clients.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("session store timed out: {0}")]
    Timeout(String),
    #[error("session store unavailable: {0}")]
    Unavailable(String),
    #[error("session store rejected the request: {0}")]
    Rejected(String),
}

/// A session store. Every method is a single round trip to the backing store.
pub trait SessionStore: Send + Sync + 'static {
    /// Creates the session unless one with the same id exists (a conditional write).
    fn create<'a>(&'a self, session: &'a Session) -> BoxFuture<'a, Result<Created, StoreError>>;

    /// Makes sure the session exists: creates it from `session` if missing, otherwise sets
    /// `lastSeenAt` and adds `add_messages` to the message count, leaving the rest untouched.
    /// Returns the session as stored after the write (in the same round trip), so a pod that
    /// never saw the connect learns its principal and attributes.
    fn upsert<'a>(&'a self, session: &'a Session, add_messages: u64) -> BoxFuture<'a, Result<Session, StoreError>>;

    /// Adds to the message count and sets `lastSeenAt` only if the session still exists.
    /// Returns false when it did not (so nothing was written).
    fn touch_existing<'a>(
        &'a self,
        connection_id: &'a str,
        last_seen_at: i64,
        add_messages: u64,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;

    /// Reads one session (strongly consistent where the store offers it).
    fn get<'a>(&'a self, connection_id: &'a str) -> BoxFuture<'a, Result<Option<Session>, StoreError>>;

    /// Deletes one session; returns it when it existed (in the same round trip).
    fn delete<'a>(&'a self, connection_id: &'a str) -> BoxFuture<'a, Result<Option<Session>, StoreError>>;

    /// Reads sessions page by page, at most `limit` per page, starting after `start`.
    fn scan<'a>(&'a self, start: Option<String>, limit: usize) -> BoxFuture<'a, Result<Page, StoreError>>;

    /// Marks a session as disconnecting, for this caller, in one conditional write: only if it
    /// exists and no one else holds a live lease on it. The first claim's time is kept from an
    /// earlier claim; the lease, its owner and the TTL are set.
    fn claim_disconnect<'a>(
        &'a self,
        connection_id: &'a str,
        claim: &'a ClaimRequest<'a>,
    ) -> BoxFuture<'a, Result<Claim, StoreError>>;

    /// Extends this caller's lease; false when the claim is no longer `owner`'s (taken over
    /// after it ran out, or the session is gone).
    fn renew_disconnect<'a>(
        &'a self,
        connection_id: &'a str,
        owner: &'a str,
        lease_until: i64,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;

    /// Reads the resume record of a logical session (strongly consistent where the store
    /// offers it).
    fn get_resume<'a>(&'a self, session_id: &'a str) -> BoxFuture<'a, Result<Option<ResumeRecord>, StoreError>>;

    /// Writes a resume record if the stored one's version is `expected` (`None`: only if there
    /// is none); false when that condition did not hold, and nothing was written.
    fn put_resume<'a>(
        &'a self,
        record: &'a ResumeRecord,
        expected: Option<u64>,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;

    /// Deletes a resume record if its version is `expected`; false when it was not.
    fn delete_resume<'a>(&'a self, session_id: &'a str, expected: u64) -> BoxFuture<'a, Result<bool, StoreError>>;
}

//! Resume records: one per logical session that a client's resume key named (see
//! [`crate::backend::resume`]). The record says which connection holds the session now, whether
//! it is detached (its connection gone, the resume window running), who it belongs to, and the
//! gap buffer: the messages pushed while no connection could take them, replayed in order on
//! resume. Every write is conditional on the record's `version`, so two pods racing on one key
//! end with one owner. In DynamoDB the record is an item of the sessions table under the key
//! `session#<id>`, which no connection id can be (`#` is not in their alphabet); the scan skips
//! those items.

use bytes::Bytes;
use serde::Serialize;

use crate::backend::identity::Attributes;

/// What a record's key begins with, in the sessions table.
pub const RECORD_PREFIX: &str = "session#";

/// The store key of the record of session `id`.
pub fn record_key(id: &str) -> String {
    format!("{RECORD_PREFIX}{id}")
}

/// Whether a sessions table key is a resume record's, not a connection's.
pub fn is_record_key(key: &str) -> bool {
    key.starts_with(RECORD_PREFIX)
}

/// One buffered message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Buffered {
    pub data: Bytes,
    pub binary: bool,
}

/// A replay's hold on the head of a session's buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// The connection the held batch is being sent to.
    pub connection_id: String,
    /// Epoch milliseconds after which the hold lapses (its replay's pod died).
    pub until: i64,
}

/// One logical session's record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumeRecord {
    /// The logical session id (derived from the key; the key itself is never stored).
    pub session_id: String,
    /// The first connection of this logical session: a later session of the same key (after
    /// the window passed) has another, so a late `/disconnect` of the old one leaves it alone.
    pub origin: String,
    /// The connection that holds the session now, or held it last while detached.
    pub connection_id: String,
    /// When its connection went (epoch milliseconds); `None` while attached.
    pub detached_at: Option<i64>,
    pub principal_id: Option<String>,
    pub attributes: Attributes,
    pub domain: String,
    pub stage: String,
    /// The gap, oldest first.
    pub buffer: Vec<Buffered>,
    /// A bound dropped a message since the last resume.
    pub overflow: bool,
    /// The buffer is being replayed to the connection: newer pushes are appended, not sent.
    pub replaying: bool,
    /// A replay took a batch out of the buffer and has neither delivered nor returned it yet:
    /// no other replay takes a batch (or ends) until it has, so a batch put back after a cut
    /// never lands behind messages sent since.
    pub held: Option<Held>,
    /// Raised by every write; the condition of the next.
    pub version: u64,
    /// TTL, epoch seconds.
    pub expires_at: i64,
}

impl ResumeRecord {
    /// A first record for session `session_id`, attached to `connection_id`: empty buffer, no
    /// principal or attributes, version 1 (what unit tests start from).
    #[cfg(test)]
    pub fn attached(session_id: &str, connection_id: &str, expires_at: i64) -> Self {
        ResumeRecord {
            session_id: session_id.into(),
            origin: connection_id.into(),
            connection_id: connection_id.into(),
            detached_at: None,
            principal_id: None,
            attributes: Default::default(),
            domain: String::new(),
            stage: String::new(),
            buffer: Vec::new(),
            overflow: false,
            replaying: false,
            held: None,
            version: 1,
            expires_at,
        }
    }

    /// Bytes of the buffered messages together.
    pub fn buffered_bytes(&self) -> usize {
        self.buffer.iter().map(|b| b.data.len()).sum()
    }

    /// Whether a replay holds a batch of this session's buffer at `now` (epoch milliseconds).
    pub fn holding(&self, now: i64) -> bool {
        self.held.as_ref().is_some_and(|h| h.until > now)
    }

    /// Whether a connection can take pushes now (attached, and no replay in front of them).
    pub fn live(&self) -> bool {
        self.detached_at.is_none() && !self.replaying
    }

    /// What `GET /v1/sessions/{id}` answers.
    pub fn view(&self) -> SessionView<'_> {
        SessionView {
            session_id: &self.session_id,
            connection_id: self.detached_at.is_none().then_some(self.connection_id.as_str()),
            buffered: self.buffer.len(),
            buffered_bytes: self.buffered_bytes(),
            overflow: self.overflow,
            principal_id: self.principal_id.as_deref(),
        }
    }
}

/// A record as the internal API shows it (never the key, never the messages).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionView<'a> {
    pub session_id: &'a str,
    pub connection_id: Option<&'a str>,
    pub buffered: usize,
    pub buffered_bytes: usize,
    pub overflow: bool,
    pub principal_id: Option<&'a str>,
}

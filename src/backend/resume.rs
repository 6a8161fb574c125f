//! Resume by a client-held key. A client connects with `?resume=<key>` (22 to 128 of
//! `[A-Za-z0-9_-]`, which the template maps to `x-socketless-resume-key`); the logical session
//! id is derived from the key one way ([`session_id`]) and the key itself is never stored or
//! logged. A connect with the key of a session whose connection went less than
//! `--resume-window` ago (or is still live: it is replaced) joins that session: same session
//! id, principal, attributes and group memberships on the new connection id, the gap buffer
//! replayed (see [`super::resume_push`]), and no `/disconnect` for the old connection.
//!
//! The session's resume record ([`crate::store::ResumeRecord`]) is written only through
//! [`update`]: read, change, write on the version read, again on a conflict; two pods racing on
//! one key end with one owner. A resumable session's `/disconnect` waits the window (see
//! [`detach`]) and re-reads the record before calling the app ([`resumed_elsewhere`]), so a
//! resume on any pod cancels it.

use std::time::Duration;

use base64::Engine;
use http::StatusCode;

use super::error::ApiError;
use super::identity::Attributes;
pub(crate) use super::resume_metrics::ResumeMetrics;
use super::state::Backend;
use crate::contract::RequestContext;
use crate::handler::Rejection;
use crate::store::{ResumeRecord, Session, SessionStore, StoreError};
use crate::timefmt::now_ms;

/// `--resume-*`.
#[derive(Debug, Clone, Default)]
pub struct ResumeSettings {
    /// Zero: resume off.
    pub window: Duration,
    pub max_messages: usize,
    pub max_bytes: usize,
}

impl ResumeSettings {
    pub fn on(&self) -> bool {
        !self.window.is_zero()
    }
}

/// Whether a resume key is valid: 22 to 128 of `[A-Za-z0-9_-]` (128 bits or more, base64url or
/// hex).
pub fn valid_key(key: &str) -> bool {
    (22..=128).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The logical session id of a key: base64url (no padding) of SHA-256 over
/// `socketless-resume\0` and the key, its first 22 characters.
pub fn session_id(key: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::new()
        .chain_update(b"socketless-resume\0")
        .chain_update(key.as_bytes())
        .finalize();
    let mut id = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest);
    id.truncate(22);
    id
}

/// What one pass of an [`update`] decided.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Change<T> {
    /// Write this record (its version is set by `update`).
    Put(ResumeRecord, T),
    Delete(T),
    Keep(T),
}

/// Attempts of one [`update`] before it gives up (each after a short random wait).
const MAX_TRIES: u32 = 64;

/// Changes a session's record: reads it, lets `f` decide, writes on the version read; again on
/// a conflict.
pub(crate) async fn update<T>(
    store: &dyn SessionStore,
    id: &str,
    mut f: impl FnMut(Option<ResumeRecord>) -> Change<T>,
) -> Result<T, StoreError> {
    for attempt in 0..MAX_TRIES {
        let current = store.get_resume(id).await?;
        let expected = current.as_ref().map(|r| r.version);
        match f(current) {
            Change::Keep(out) => return Ok(out),
            Change::Put(mut record, out) => {
                record.version = expected.map_or(1, |v| v + 1);
                if store.put_resume(&record, expected).await? {
                    return Ok(out);
                }
            }
            Change::Delete(out) => match expected {
                None => return Ok(out),
                Some(v) => {
                    if store.delete_resume(id, v).await? {
                        return Ok(out);
                    }
                }
            },
        }
        let mut b = [0u8; 1];
        let _ = getrandom::fill(&mut b);
        let wait = u64::from(attempt.min(6)) * 2 + u64::from(b[0] % 8);
        tokio::time::sleep(Duration::from_millis(wait)).await;
    }
    Err(StoreError::Unavailable(
        "the resume record changed on every attempt".into(),
    ))
}

/// Whether a record still holds its session: attached, or detached less than `window` ago.
pub(crate) fn within_window(r: &ResumeRecord, window: Duration, now: i64) -> bool {
    let window = i64::try_from(window.as_millis()).unwrap_or(i64::MAX / 4);
    r.detached_at.is_none_or(|at| now - at < window)
}

/// A connect that gave a valid key, between the check and the attach.
pub(super) struct Resuming {
    id: String,
}

/// What the attach did.
pub(super) struct Attached {
    /// The connection the session had before, when another one.
    pub previous: Option<String>,
    /// That connection was still live (it is replaced: closed without a `/disconnect`).
    pub previous_live: bool,
    /// Messages wait in the buffer: replay them.
    pub replay: bool,
}

impl Backend {
    /// Before the handler: the key checked (400), the record read, the principal compared
    /// (403); the context gets the session id and whether this resumes it.
    pub(super) async fn resume_begin(&self, ctx: &mut RequestContext) -> Result<Option<Resuming>, ApiError> {
        ctx.resumed = Some(false);
        let key = ctx.resume_key.take();
        let Some(key) = key.filter(|_| self.settings.resume.on()) else {
            return Ok(None);
        };
        let m = &self.resume_metrics;
        if !valid_key(&key) {
            m.refuse("invalid_key");
            tracing::info!(connection_id = %ctx.connection_id, request_id = %ctx.request_id, "connect refused: invalid resume key");
            return Err(ApiError::Rejected(Rejection::new(
                StatusCode::BAD_REQUEST,
                "resume key refused: it must be 22 to 128 of A-Z a-z 0-9 _ - (128 random bits or more)",
            )));
        }
        let id = session_id(&key);
        let record = self
            .store
            .get_resume(&id)
            .await
            .map_err(|e| ApiError::store(e, &ctx.connection_id, Some(&ctx.request_id)))?
            .filter(|r| within_window(r, self.settings.resume.window, now_ms()));
        if let Some(r) = &record {
            if r.principal_id.as_deref() != ctx.principal_id.as_deref() {
                m.refuse("principal");
                tracing::warn!(connection_id = %ctx.connection_id, request_id = %ctx.request_id, session_id = %id, "resume refused: the session belongs to another principal");
                return Err(ApiError::Rejected(Rejection::new(
                    StatusCode::FORBIDDEN,
                    "resume refused: the session belongs to another principal",
                )));
            }
            ctx.resumed = Some(true);
            ctx.recovered = Some(!r.overflow);
        } else {
            // Nothing from before is carried over: a first use of the key, or one whose window
            // passed. Either way the app starts the client afresh.
            ctx.recovered = Some(false);
        }
        ctx.session_id = Some(id.as_str().into());
        Ok(Some(Resuming { id }))
    }

    /// After the handler accepted: the record points at the new connection (a fresh record for
    /// a new session), and the session gets the logical session's identity. `answered`: the
    /// attributes the handler set now (they replace the stored ones when there are any).
    pub(super) async fn resume_attach(
        &self,
        resuming: Resuming,
        ctx: &mut RequestContext,
        session: &mut Session,
    ) -> Result<Attached, ApiError> {
        let window = self.settings.resume.window;
        let me = session.connection_id.clone();
        let answered: Attributes = session.attributes.clone();
        let principal = session.principal_id.clone();
        let fresh = ResumeRecord {
            session_id: resuming.id.clone(),
            origin: me.clone(),
            connection_id: me.clone(),
            detached_at: None,
            principal_id: principal.clone(),
            attributes: answered.clone(),
            domain: session.domain.clone(),
            stage: session.stage.clone(),
            buffer: Vec::new(),
            overflow: false,
            replaying: false,
            held: None,
            version: 0,
            expires_at: session.expires_at,
        };
        let now = now_ms();
        let out = update(self.store.as_ref(), &resuming.id, |current| {
            let Some(mut r) = current.filter(|r| within_window(r, window, now)) else {
                return Change::Put(fresh.clone(), Ok(None));
            };
            if r.principal_id != principal {
                return Change::Keep(Err(()));
            }
            let before = r.clone();
            r.connection_id = me.clone();
            r.detached_at = None;
            // A replay to an earlier connection may still hold a batch: this one's replay waits
            // for it, and pushes queue behind both.
            r.replaying = !r.buffer.is_empty() || r.holding(now);
            r.overflow = false;
            if !answered.is_empty() {
                r.attributes = answered.clone();
            }
            r.domain = session.domain.clone();
            r.stage = session.stage.clone();
            r.expires_at = session.expires_at;
            let kept = (r.origin.clone(), r.attributes.clone(), r.replaying);
            Change::Put(r, Ok(Some((before, kept))))
        })
        .await
        .map_err(|e| ApiError::store(e, &me, Some(&ctx.request_id)))?;
        let resumed = match out {
            Err(()) => {
                self.resume_metrics.refuse("principal");
                return Err(ApiError::Rejected(Rejection::new(
                    StatusCode::FORBIDDEN,
                    "resume refused: the session belongs to another principal",
                )));
            }
            Ok(resumed) => resumed,
        };
        session.session_id = Some(resuming.id.clone());
        let Some((before, (origin, attributes, replay))) = resumed else {
            self.resume_metrics.connect("new");
            session.resume_origin = Some(me);
            ctx.resumed = Some(false);
            ctx.recovered = Some(false);
            return Ok(Attached {
                previous: None,
                previous_live: false,
                replay: false,
            });
        };
        self.resume_metrics.connect("resumed");
        if before.overflow {
            self.resume_metrics.not_recovered.inc();
        }
        ctx.resumed = Some(true);
        ctx.recovered = Some(!before.overflow);
        session.resume_origin = Some(origin);
        session.attributes = attributes;
        tracing::info!(connection_id = %me, session_id = %resuming.id, buffered = before.buffer.len(), "session resumed");
        let previous = (before.connection_id != me).then_some(before.connection_id);
        Ok(Attached {
            previous_live: previous.is_some() && before.detached_at.is_none(),
            previous,
            replay,
        })
    }

    /// After the new connection's session exists: the old connection's memberships move to the
    /// new one, its pending `/disconnect` (on this pod) is cancelled, and a live one is closed.
    pub(super) async fn resume_take_over(&self, attached: &Attached, session: &Session) {
        let Some(previous) = &attached.previous else {
            return;
        };
        let me = &session.connection_id;
        match self.groups.groups_of(previous, crate::store::groups::MAX_PAGE).await {
            Ok(groups) => {
                let member = crate::store::Member {
                    connection_id: me.clone(),
                    domain: session.domain.clone(),
                    stage: session.stage.clone(),
                    expires_at: session.expires_at,
                };
                for group in groups {
                    if let Err(err) = self.groups.join(&group, &member).await {
                        tracing::warn!(connection_id = %me, error = %err, "could not carry a group membership over on resume");
                    }
                }
                self.leave_all(previous).await;
            }
            Err(err) => {
                tracing::warn!(connection_id = %me, error = %err, "could not read the memberships to carry over on resume")
            }
        }
        self.disconnects.cancel_pending_disconnect(previous);
        if attached.previous_live {
            if let Some(endpoint) = self.pusher.endpoint(&session.domain, &session.stage) {
                let (pusher, previous) = (self.pusher.clone(), previous.clone());
                // A `socketless gateway` closes a connection still in its handshake as soon as
                // it opens (API Gateway answers 410 and leaves it open: see the README).
                tokio::spawn(async move {
                    let _ = pusher.delete(&endpoint, &previous).await;
                });
            }
        }
    }
}

/// What a resumable session's `/disconnect` found in its record.
pub(crate) enum Detach {
    /// Another connection holds the session now: no `/disconnect`.
    Replaced,
    /// The record is marked detached (since then, epoch milliseconds): the `/disconnect` waits
    /// out the window.
    Waiting(i64),
    /// No record of this logical session: an ordinary `/disconnect`.
    Ended,
}

/// Marks a resumable session's record detached, unless another connection holds it.
pub(crate) async fn detach(
    store: &dyn SessionStore,
    session: &Session,
    window: Duration,
) -> Result<Detach, StoreError> {
    let (Some(id), Some(origin)) = (&session.session_id, &session.resume_origin) else {
        return Ok(Detach::Ended);
    };
    let now = now_ms();
    let me = &session.connection_id;
    update(store, id, |current| match current {
        Some(r) if &r.origin != origin => Change::Keep(Detach::Ended),
        None => Change::Keep(Detach::Ended),
        Some(r) if &r.connection_id != me => Change::Keep(Detach::Replaced),
        Some(r) if r.detached_at.is_some() => Change::Keep(Detach::Waiting(r.detached_at.unwrap_or(now))),
        Some(mut r) => {
            r.detached_at = Some(now);
            r.replaying = false;
            r.expires_at = (now + i64::try_from(window.as_millis()).unwrap_or(0)) / 1000 + 3600;
            Change::Put(r, Detach::Waiting(now))
        }
    })
    .await
}

/// Whether another connection of the same logical session holds its record now: the re-read
/// before a resumable session's `/disconnect` is made.
pub(crate) async fn resumed_elsewhere(store: &dyn SessionStore, session: &Session) -> bool {
    let (Some(id), Some(origin)) = (&session.session_id, &session.resume_origin) else {
        return false;
    };
    match store.get_resume(id).await {
        Ok(Some(r)) => &r.origin == origin && r.connection_id != session.connection_id,
        Ok(None) => false,
        Err(err) => {
            tracing::warn!(connection_id = %session.connection_id, error = %err, "could not re-read a resume record; the disconnect goes ahead");
            false
        }
    }
}

/// Removes the record of a session whose `/disconnect` was taken (only its own: not a later
/// session of the same key, nor one another connection resumed meanwhile).
pub(crate) async fn end_record(store: &dyn SessionStore, session: &Session) {
    let (Some(id), Some(origin)) = (&session.session_id, &session.resume_origin) else {
        return;
    };
    let me = &session.connection_id;
    let res = update(store, id, |current| match current {
        Some(r) if &r.origin == origin && &r.connection_id == me => Change::Delete(()),
        _ => Change::Keep(()),
    })
    .await;
    if let Err(err) = res {
        tracing::warn!(connection_id = %me, error = %err, "could not delete an ended session's resume record; TTL will");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked_and_ids_derived_one_way() {
        assert!(valid_key(&"a".repeat(22)));
        assert!(valid_key(&"Z9_-".repeat(32)));
        for bad in [
            "",
            "short",
            &"a".repeat(21),
            &"a".repeat(129),
            "abcdefghijklmnopqrstu=",
            "abcdefghijklmnopqrstuv w",
        ] {
            assert!(!valid_key(bad), "{bad:?}");
        }
        let id = session_id("0123456789abcdefABCDEF");
        assert_eq!(id.len(), 22);
        assert_eq!(id, session_id("0123456789abcdefABCDEF"));
        assert_ne!(id, session_id("0123456789abcdefABCDEG"));
        assert!(!id.contains("0123456789"));
        assert!(id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'));
    }

    #[test]
    fn the_window_counts_from_the_detach() {
        let mut r = ResumeRecord::attached("s", "a", 0);
        let w = Duration::from_secs(2);
        assert!(within_window(&r, w, 1_000_000));
        r.detached_at = Some(1_000_000);
        assert!(within_window(&r, w, 1_001_999));
        assert!(!within_window(&r, w, 1_002_000));
    }
}

//! Pushes to a logical session (`POST /v1/sessions/{id}/messages`, `GET /v1/sessions/{id}`),
//! the gap buffer and its replay. A push to a session whose connection is live (and has no
//! replay in front of it) goes to the connection; one whose connection is gone, replaced or
//! still replaying is appended to the record's buffer, within `--resume-buffer-messages` and
//! `--resume-buffer-bytes` (past them it is dropped, and the overflow flag makes the resume say
//! `x-socketless-recovered: false`). On resume the buffer is replayed to the new connection in
//! order, newer pushes appended behind it, until it is empty.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Response, StatusCode};

use super::error::ApiError;
use super::push::{PushOutcome, Pusher};
use super::resume::{Change, update, within_window};
use super::state::Backend;
use crate::http_server::{self, Body};
use crate::store::resume::Held;
use crate::store::{Buffered, SessionStore};
use crate::timefmt::now_ms;

/// How long a replay retries a connection that answers 410 before its first message went
/// through: the gateway may not have finished the handshake yet.
const HANDSHAKE_WAIT: Duration = Duration::from_secs(5);

/// How long a replay retries a push that keeps failing (throttled, the gateway down) before it
/// stops; what is left stays buffered for the next resume.
const FAILING_FOR: Duration = Duration::from_secs(30);

/// What an append to the buffer did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Append {
    Buffered,
    Overflow,
    /// No such session (or its window passed).
    Missing,
    /// The session is live on another connection than the one named: send it there.
    Moved,
}

impl Backend {
    /// Appends a message to a session's buffer. `from`: the connection a push found gone; the
    /// message is kept only while that connection still holds the session, or none does.
    ///
    /// When that connection holds the session and nothing was waiting for it, the 410 came
    /// either from a connection that closed (its `/disconnect` or the sweep detaches it) or from
    /// one still in its handshake: a resume that found the buffer empty, as a client's
    /// make-before-break renewal does. The message then starts a replay to it, so that it goes
    /// out once the connection opens, ahead of every push after it (they queue behind the
    /// replay), instead of waiting for a later resume.
    pub(crate) async fn buffer(&self, id: &str, from: Option<&str>, data: &Bytes, binary: bool) -> Append {
        let s = &self.settings.resume;
        let (window, max_messages, max_bytes) = (s.window, s.max_messages, s.max_bytes);
        let now = now_ms();
        let res = update(self.store.as_ref(), id, |current| {
            let Some(mut r) = current.filter(|r| within_window(r, window, now)) else {
                return Change::Keep((Append::Missing, None));
            };
            if r.live() && from.is_none_or(|c| c != r.connection_id) {
                return Change::Keep((Append::Moved, None));
            }
            if r.buffer.len() >= max_messages || r.buffered_bytes() + data.len() > max_bytes {
                if r.overflow {
                    return Change::Keep((Append::Overflow, None));
                }
                r.overflow = true;
                return Change::Put(r, (Append::Overflow, None));
            }
            r.buffer.push(Buffered {
                data: data.clone(),
                binary,
            });
            let replay = r.live().then(|| {
                r.replaying = true;
                (r.connection_id.clone(), r.domain.clone(), r.stage.clone())
            });
            Change::Put(r, (Append::Buffered, replay))
        })
        .await;
        let (out, replay) = res.unwrap_or_else(|err| {
            tracing::warn!(session_id = %id, error = %err, "could not buffer a message for a resumable session");
            (Append::Overflow, None)
        });
        if let Some((connection_id, domain, stage)) = replay {
            self.spawn_replay(id.to_string(), connection_id, &domain, &stage);
        }
        match out {
            Append::Buffered => self.resume_metrics.buffered.inc(),
            Append::Overflow => self.resume_metrics.dropped.inc(),
            _ => 0,
        };
        out
    }

    /// `POST /v1/sessions/{id}/messages`.
    pub(super) async fn push_session(&self, id: &str, data: Bytes, binary: bool) -> Result<Response<Body>, ApiError> {
        for _ in 0..3 {
            let record = self
                .store
                .get_resume(id)
                .await
                .map_err(|e| ApiError::store(e, id, None))?
                .filter(|r| within_window(r, self.settings.resume.window, now_ms()));
            let Some(r) = record else {
                return self.push_plain_session(id, data, binary).await;
            };
            let answer = if r.live() {
                let Some(endpoint) = self.pusher.endpoint(&r.domain, &r.stage) else {
                    return Err(ApiError::NoEndpoint("the session has no domain and stage to push to"));
                };
                match self
                    .pusher
                    .post_frame(&endpoint, &r.connection_id, data.clone(), binary)
                    .await
                {
                    PushOutcome::Delivered => {
                        return Ok(http_server::json(
                            StatusCode::OK,
                            &serde_json::json!({ "delivered": true }),
                        ));
                    }
                    PushOutcome::Gone => {
                        let out = self.buffer(id, Some(&r.connection_id), &data, binary).await;
                        self.forget(&r.connection_id).await;
                        out
                    }
                    other => return Err(ApiError::Push(other)),
                }
            } else {
                self.buffer(id, Some(&r.connection_id), &data, binary).await
            };
            match answer {
                Append::Buffered => {
                    return Ok(http_server::json(
                        StatusCode::ACCEPTED,
                        &serde_json::json!({ "buffered": true }),
                    ));
                }
                Append::Overflow => {
                    return Ok(http_server::json(
                        StatusCode::ACCEPTED,
                        &serde_json::json!({ "buffered": false, "overflow": true }),
                    ));
                }
                Append::Missing => return Err(ApiError::NoSuchSession),
                Append::Moved => continue,
            }
        }
        Err(ApiError::NoSuchSession)
    }

    /// A session without a key: its id is its connection id.
    async fn push_plain_session(&self, id: &str, data: Bytes, binary: bool) -> Result<Response<Body>, ApiError> {
        let session = match self.store.get(id).await {
            Ok(Some(s)) if s.session_id.is_none() && !crate::store::resume::is_record_key(id) => s,
            Ok(_) => return Err(ApiError::NoSuchSession),
            Err(err) => return Err(ApiError::store(err, id, None)),
        };
        let endpoint = self
            .pusher
            .endpoint(&session.domain, &session.stage)
            .ok_or(ApiError::NoEndpoint("the session has no domain and stage to push to"))?;
        match self.pusher.post_frame(&endpoint, id, data, binary).await {
            PushOutcome::Delivered => Ok(http_server::json(
                StatusCode::OK,
                &serde_json::json!({ "delivered": true }),
            )),
            PushOutcome::Gone => {
                self.forget(id).await;
                Err(ApiError::NoSuchSession)
            }
            other => Err(ApiError::Push(other)),
        }
    }

    /// `GET /v1/sessions/{id}`.
    pub(super) async fn session_view(&self, id: &str) -> Result<Response<Body>, ApiError> {
        let record = self
            .store
            .get_resume(id)
            .await
            .map_err(|e| ApiError::store(e, id, None))?
            .filter(|r| within_window(r, self.settings.resume.window, now_ms()));
        if let Some(r) = record {
            return Ok(http_server::json(
                StatusCode::OK,
                &serde_json::to_value(r.view()).unwrap_or_default(),
            ));
        }
        match self.store.get(id).await {
            Ok(Some(s)) if s.session_id.is_none() && !crate::store::resume::is_record_key(id) => Ok(http_server::json(
                StatusCode::OK,
                &serde_json::json!({
                    "sessionId": s.connection_id,
                    "connectionId": s.connection_id,
                    "buffered": 0,
                    "bufferedBytes": 0,
                    "overflow": false,
                    "principalId": s.principal_id,
                }),
            )),
            Ok(_) => Err(ApiError::NoSuchSession),
            Err(err) => Err(ApiError::store(err, id, None)),
        }
    }

    /// Starts the replay of a resumed session's buffer to its new connection, in its own task.
    pub(super) fn spawn_replay(&self, id: String, connection_id: String, domain: &str, stage: &str) {
        let Some(endpoint) = self.pusher.endpoint(domain, stage) else {
            return;
        };
        let (store, pusher, metrics) = (self.store.clone(), self.pusher.clone(), self.resume_metrics.clone());
        tokio::spawn(async move {
            let replayed = replay(store.as_ref(), &pusher, &endpoint, &id, &connection_id).await;
            metrics.replayed.inc_by(replayed);
        });
    }
}

/// Messages a replay takes from the buffer at a time.
const REPLAY_BATCH: usize = 32;

/// How long a replay's hold on the batch it took stands. A batch ends well within it (the
/// handshake wait, then at most `FAILING_FOR` of failures and one push timeout), so only a
/// replay whose pod died lets it lapse; until then a newer connection's replay waits.
const HOLD: Duration = Duration::from_secs(60);

/// How often a replay waiting for another one's batch looks again.
const WAIT_POLL: Duration = Duration::from_millis(50);

/// What a replay does next.
enum Step {
    Send(Vec<Buffered>),
    /// Another connection's replay holds a batch: it is delivered or put back first.
    Wait,
    Done,
}

/// Sends the buffer to `connection_id` in order until it is empty (then the replay flag is
/// cleared), the session moved on, or the connection went. Each batch is taken out of the
/// record before it is sent, so two replays (of a connection and of the one that replaced it)
/// never send one message twice, and the record says a replay holds it: another replay waits
/// until the batch is delivered or put back. What a batch could not deliver goes back to the
/// head of the buffer, in front of anything pushed since, for the connection that holds the
/// session now. Returns how many messages were replayed.
async fn replay(store: &dyn SessionStore, pusher: &Arc<Pusher>, endpoint: &str, id: &str, connection_id: &str) -> u64 {
    let started = Instant::now();
    let mut sent_any = false;
    let mut total = 0;
    let hold_ms = i64::try_from(HOLD.as_millis()).unwrap_or(i64::MAX);
    loop {
        let now = now_ms();
        let taken = update(store, id, |current| {
            let Some(mut r) = current else {
                return Change::Keep(Step::Done);
            };
            let mine = r.held.as_ref().is_some_and(|h| h.connection_id == connection_id);
            if mine {
                r.held = None;
            }
            if r.connection_id != connection_id || r.detached_at.is_some() {
                return if mine {
                    Change::Put(r, Step::Done)
                } else {
                    Change::Keep(Step::Done)
                };
            }
            if r.holding(now) {
                return Change::Keep(Step::Wait);
            }
            r.held = None;
            if r.buffer.is_empty() {
                r.replaying = false;
                return Change::Put(r, Step::Done);
            }
            let n = r.buffer.len().min(REPLAY_BATCH);
            let batch: Vec<Buffered> = r.buffer.drain(..n).collect();
            r.held = Some(Held {
                connection_id: connection_id.to_string(),
                until: now.saturating_add(hold_ms),
            });
            Change::Put(r, Step::Send(batch))
        })
        .await;
        let batch = match taken {
            Ok(Step::Send(batch)) => batch,
            Ok(Step::Wait) => {
                tokio::time::sleep(WAIT_POLL).await;
                continue;
            }
            Ok(Step::Done) => return total,
            Err(err) => {
                tracing::warn!(session_id = %id, error = %err, "replay stopped: the resume record could not be updated");
                return total;
            }
        };
        let undelivered = send_batch(
            store,
            pusher,
            endpoint,
            id,
            connection_id,
            &batch,
            started,
            &mut sent_any,
        )
        .await;
        total += (undelivered.unwrap_or(batch.len())) as u64;
        if let Some(i) = undelivered {
            put_back(store, id, connection_id, &batch[i..]).await;
            return total;
        }
    }
}

/// Sends one batch in order. `None` when all of it went; else the index of the first message
/// that did not.
#[allow(clippy::too_many_arguments)]
async fn send_batch(
    store: &dyn SessionStore,
    pusher: &Arc<Pusher>,
    endpoint: &str,
    id: &str,
    connection_id: &str,
    batch: &[Buffered],
    started: Instant,
    sent_any: &mut bool,
) -> Option<usize> {
    let batch_started = Instant::now();
    let mut failures = 0u32;
    let mut handshake_tries = 0u32;
    for (i, m) in batch.iter().enumerate() {
        loop {
            match pusher
                .post_frame(endpoint, connection_id, m.data.clone(), m.binary)
                .await
            {
                PushOutcome::Delivered => {
                    *sent_any = true;
                    break;
                }
                // The gateway may not have finished the handshake yet, unless the session
                // already moved on.
                PushOutcome::Gone if !*sent_any && started.elapsed() < HANDSHAKE_WAIT => {
                    if !still_current(store, id, connection_id).await {
                        return Some(i);
                    }
                    // The handshake usually ends within milliseconds of `/connect`'s answer:
                    // 5 ms, doubling to 50.
                    let delay = (5u64 << handshake_tries.min(4)).min(50);
                    handshake_tries += 1;
                    tokio::time::sleep(Duration::from_millis(delay)).await;
                }
                PushOutcome::Gone => return Some(i),
                // Throttled or failing: again with backoff, for a while.
                outcome if batch_started.elapsed() < FAILING_FOR => {
                    tracing::debug!(session_id = %id, ?outcome, "replay push failed; retrying");
                    failures += 1;
                    tokio::time::sleep(Duration::from_millis(100 << failures.min(5))).await;
                }
                outcome => {
                    tracing::warn!(session_id = %id, ?outcome, "replay stopped: pushes to the resumed connection keep failing; the rest stays buffered");
                    return Some(i);
                }
            }
        }
    }
    None
}

/// Whether `connection_id` still holds session `id` (a failed read says yes: the wait is
/// bounded anyway).
async fn still_current(store: &dyn SessionStore, id: &str, connection_id: &str) -> bool {
    match store.get_resume(id).await {
        Ok(Some(r)) => r.connection_id == connection_id && r.detached_at.is_none(),
        Ok(None) => false,
        Err(_) => true,
    }
}

/// Puts what a batch could not deliver back at the head of the buffer and releases the hold.
async fn put_back(store: &dyn SessionStore, id: &str, connection_id: &str, rest: &[Buffered]) {
    let res = update(store, id, |current| match current {
        Some(mut r) => {
            let mine = r.held.as_ref().is_some_and(|h| h.connection_id == connection_id);
            if mine {
                r.held = None;
            }
            r.buffer.splice(0..0, rest.iter().cloned());
            Change::Put(r, mine)
        }
        None => Change::Keep(true),
    })
    .await;
    match res {
        Ok(true) => {}
        Ok(false) => {
            tracing::warn!(session_id = %id, returned = rest.len(), "a replay's hold lapsed before it put its batch back: later messages may have gone out first")
        }
        Err(err) => {
            tracing::warn!(session_id = %id, error = %err, lost = rest.len(), "messages a replay could not deliver could not be put back")
        }
    }
}

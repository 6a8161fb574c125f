//! `/disconnect` at least once per session. API Gateway calls `$disconnect` best effort, and a
//! gateway replica that dies calls it for none of its connections; this module makes sure every
//! session `serve` holds ends with at least one `/disconnect` at the handler or the app:
//!
//! - a claim marks the session as disconnecting (a conditional write: one caller wins), with its
//!   time and a lease; its disconnect id (`x-socketless-disconnect-id`, the same on every retry
//!   and every duplicate) is [`crate::store::Session::disconnect_id`], fixed by the connection id
//!   and `connectedAt` the item holds;
//! - after the grace (`--disconnect-grace`; a resumed session would cancel the call in it, see
//!   [`Disconnects::cancel_pending_disconnect`]) the handler or the app is called; every
//!   session waits the same grace, so they wait in one queue, in the order they are due, which
//!   one task empties (a connect storm's thousands of disconnects a second set no timer each);
//!   a resumable session, whose wait is its own, waits in its own task; a failure is
//!   retried with backoff, the lease renewed before each retry, until `--disconnect-deadline`
//!   counted from the first claim; then the disconnect is counted as abandoned and logged once;
//! - the session is deleted only after the handler or the app took the call, so a `serve`
//!   killed mid-call leaves the mark, and the sweep (see [`super::sweeper`]) of any `serve` takes
//!   it over once its lease has run out.
//!
//! The claims come from the gateway's `$disconnect`, from a push that found the connection gone
//! (410), and from the sweep.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tokio::sync::{Notify, oneshot};

use super::push::Pusher;
use crate::contract::RequestContext;
use crate::defaults;
use crate::handler::MessageHandler;
use crate::metrics::OutcomeLabels;
pub use crate::store::disconnect_id;
use crate::store::groups::GroupStore;
use crate::store::{Claim, ClaimRequest, Session, SessionStore, StoreError};
use crate::timefmt::now_ms;

/// Close status a `/disconnect` carries when no gateway reported one: the connection was found
/// gone (a push or GetConnection answered 410), as for an abnormal close.
pub const GONE_STATUS: u16 = 1006;

/// How `/disconnect` is made reliable: `--disconnect-*` and `--sweep-*`.
#[derive(Debug, Clone)]
pub struct DisconnectSettings {
    /// The call waits this long after the claim (zero: at once, within the gateway's call).
    pub grace: Duration,
    /// Retries stop this long after the first claim.
    pub deadline: Duration,
    /// A claim holds this long (renewed before each retry).
    pub lease: Duration,
    /// The sweep starts this often; zero turns it off.
    pub sweep_interval: Duration,
    /// GetConnection calls per second at most, during a sweep.
    pub sweep_rate: u32,
    /// The sweep leaves sessions created or synced less than this long ago alone.
    pub sweep_min_age: Duration,
    /// `--resume-window`: a resumable session's `/disconnect` waits this long, not the grace.
    pub resume_window: Duration,
}

/// A fresh request id for a `/disconnect` no gateway asked for.
fn request_id() -> String {
    let mut bytes = [0u8; 12];
    if getrandom::fill(&mut bytes).is_err() {
        return format!("sweep-{}", now_ms());
    }
    hex::encode(bytes)
}

/// The context of a `/disconnect` that no gateway sent: the session's own fields.
pub fn context_of(session: &Session, reason: &str) -> RequestContext {
    let identity = session.identity();
    RequestContext {
        connection_id: session.connection_id.clone(),
        route_key: "$disconnect".into(),
        event_type: "DISCONNECT".into(),
        request_id: request_id(),
        domain: session.domain.clone(),
        stage: session.stage.clone(),
        connected_at: Some(session.connected_at),
        source_ip: session.source_ip.clone(),
        user_agent: session.user_agent.clone(),
        disconnect_status: Some(GONE_STATUS),
        disconnect_reason: Some(reason.into()),
        principal_id: identity.principal_id,
        attributes: identity.attributes,
        ..RequestContext::default()
    }
}

/// The disconnects' and the sweep's counters.
pub(crate) struct DisconnectMetrics {
    /// By outcome: delivered, attempt_failed, abandoned, cancelled, resumed, taken_over,
    /// already_claimed.
    pub disconnects: Family<OutcomeLabels, Counter>,
    /// GetConnection answers and lease take-overs of the sweep, by outcome: alive, gone, failed,
    /// no_endpoint, lease_expired.
    pub sweep_checks: Family<OutcomeLabels, Counter>,
    pub sweeps: Counter,
}

impl DisconnectMetrics {
    fn register(registry: &mut Registry) -> Self {
        let m = DisconnectMetrics {
            disconnects: Family::default(),
            sweep_checks: Family::default(),
            sweeps: Counter::default(),
        };
        registry.register(
            "socketless_disconnects",
            "Disconnects by outcome: delivered, attempt_failed (retried), abandoned (deadline reached), cancelled, resumed (the session went on on another connection), taken_over, already_claimed",
            m.disconnects.clone(),
        );
        registry.register(
            "socketless_sweep_checks",
            "Sessions the disconnect sweep looked at, by outcome: alive, gone, failed, no_endpoint, lease_expired",
            m.sweep_checks.clone(),
        );
        registry.register("socketless_sweeps", "Disconnect sweeps run", m.sweeps.clone());
        m
    }

    pub fn disconnect(&self, outcome: &'static str) {
        self.disconnects.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    pub fn check(&self, outcome: &'static str) {
        self.sweep_checks.get_or_create(&OutcomeLabels { outcome }).inc();
    }
}

/// Everything a disconnect needs, shared by the public port, the pushes and the sweep.
pub struct Disconnects {
    pub(crate) store: Arc<dyn SessionStore>,
    /// Group memberships, removed with the session.
    groups: Arc<dyn GroupStore>,
    handler: Arc<dyn MessageHandler>,
    pub(crate) pusher: Arc<Pusher>,
    pub(crate) settings: DisconnectSettings,
    /// This process's claims carry this token.
    owner: String,
    /// Disconnects in their grace period, by connection id: removing one cancels it.
    pending: Mutex<HashMap<String, Pending, foldhash::fast::RandomState>>,
    /// Those that wait the grace, in the order they are due.
    waiting: Arc<GraceQueue>,
    /// Tells the entries of `waiting` apart when one connection id is claimed twice.
    next_token: AtomicU64,
    pub(crate) metrics: DisconnectMetrics,
}

/// A disconnect in its grace period, as the pending map knows it.
enum Pending {
    /// In its own task (a resumable session's wait): sending cancels it.
    Task(oneshot::Sender<()>),
    /// In the grace queue, with its token.
    Queued(u64),
}

/// A disconnect that waits the grace in the queue.
struct Waiting {
    due: Instant,
    token: u64,
    session: Session,
    ctx: RequestContext,
}

/// The grace queue: every entry waits the same grace, so they are due in the order they came.
#[derive(Default)]
struct GraceQueue {
    entries: Mutex<VecDeque<Waiting>>,
    /// An entry came into an empty queue, or the queue's owner is gone.
    wake: Notify,
    started: AtomicBool,
    closed: AtomicBool,
}

impl GraceQueue {
    fn entries(&self) -> std::sync::MutexGuard<'_, VecDeque<Waiting>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Disconnects {
    fn drop(&mut self) {
        self.waiting.closed.store(true, Ordering::Release);
        self.waiting.wake.notify_one();
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 4)
}

impl Disconnects {
    pub fn new(
        store: Arc<dyn SessionStore>,
        groups: Arc<dyn GroupStore>,
        handler: Arc<dyn MessageHandler>,
        pusher: Arc<Pusher>,
        settings: DisconnectSettings,
        registry: &mut Registry,
    ) -> Arc<Self> {
        Arc::new(Disconnects {
            store,
            groups,
            handler,
            pusher,
            settings,
            owner: request_id(),
            pending: Mutex::new(HashMap::default()),
            waiting: Arc::default(),
            next_token: AtomicU64::new(0),
            metrics: DisconnectMetrics::register(registry),
        })
    }

    /// Claims a session's disconnect for this process (the gateway said it closed).
    pub async fn claim(&self, connection_id: &str) -> Result<Claim, StoreError> {
        self.claim_seen_before(connection_id, None).await
    }

    /// Claims a session's disconnect only if it was last seen before `seen_before`: the sweep's
    /// claim, which leaves a session younger than `--sweep-min-age` alone.
    pub async fn claim_seen_before(&self, connection_id: &str, seen_before: Option<i64>) -> Result<Claim, StoreError> {
        let now = now_ms();
        let s = &self.settings;
        let request = ClaimRequest {
            owner: &self.owner,
            now,
            lease_until: now + ms(s.grace) + ms(s.lease),
            // Past every retry, with an hour's room: the TTL must not remove a session whose
            // disconnect is still owed.
            expires_at: (now + ms(s.grace) + ms(s.deadline) + ms(s.lease)) / 1000 + 3600,
            seen_before,
        };
        let claim = self.store.claim_disconnect(connection_id, &request).await?;
        if claim == Claim::Held {
            self.metrics.disconnect("already_claimed");
        }
        Ok(claim)
    }

    /// Runs the disconnect of a session this process has claimed: after the grace (when
    /// `grace` says so and one is set) in its own task; without one, the first attempt here and
    /// any retries in their own task.
    pub async fn start(self: &Arc<Self>, session: Session, mut ctx: RequestContext, grace: bool) {
        if session.disconnect.is_none() {
            return;
        }
        ctx.disconnect_id = Some(session.disconnect_id().into());
        let mut wait = if grace { self.settings.grace } else { Duration::ZERO };
        // Waits the grace, as every other session does: in the queue.
        let mut queued = !wait.is_zero();
        if session.session_id.is_some() && !self.settings.resume_window.is_zero() {
            ctx.session_id = session.session_id.as_deref().map(Into::into);
            match super::resume::detach(self.store.as_ref(), &session, self.settings.resume_window).await {
                Ok(super::resume::Detach::Replaced) => {
                    self.end_resumed(&session).await;
                    return;
                }
                Ok(super::resume::Detach::Waiting(since)) => {
                    let left = ms(self.settings.resume_window) - (now_ms() - since);
                    wait = Duration::from_millis(u64::try_from(left).unwrap_or(0));
                    queued = false;
                    let until = now_ms() + ms(wait) + ms(self.settings.lease);
                    if let Err(err) = self
                        .store
                        .renew_disconnect(&session.connection_id, &self.owner, until)
                        .await
                    {
                        tracing::debug!(connection_id = %session.connection_id, error = %err, "could not extend a resumable session's lease");
                    }
                }
                Ok(super::resume::Detach::Ended) => {}
                Err(err) => {
                    tracing::warn!(connection_id = %session.connection_id, error = %err, "could not mark a resume record detached; the disconnect waits the window")
                }
            }
        }
        if queued {
            self.enqueue(session, ctx);
            return;
        }
        if !wait.is_zero() {
            let (cancel, cancelled) = oneshot::channel();
            self.replace_pending(&ctx.connection_id, Pending::Task(cancel));
            let this = self.clone();
            tokio::spawn(async move {
                let waited = tokio::select! {
                    _ = tokio::time::sleep(wait) => true,
                    _ = cancelled => false,
                };
                {
                    // Its own entry only: the connection may have been claimed again since.
                    let mut pending = this.pending_map();
                    if matches!(pending.get(&ctx.connection_id), Some(Pending::Task(c)) if c.is_closed()) {
                        pending.remove(&ctx.connection_id);
                    }
                }
                if !waited {
                    this.metrics.disconnect("cancelled");
                    if session.session_id.is_some() {
                        this.end_resumed(&session).await;
                    }
                    return;
                }
                this.deliver(session, ctx, 0).await;
            });
            return;
        }
        if self.attempt(&session, &ctx).await {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move { this.deliver(session, ctx, 1).await });
    }

    /// Claims the session of a connection found gone (a push answered 410) and starts its
    /// disconnect, as [`Self::start`] does (without a grace, the first attempt is made before
    /// this returns). As before claims existed, a 410 ends the session whatever its age.
    pub async fn gone(self: &Arc<Self>, connection_id: &str, reason: &str) {
        match self.claim(connection_id).await {
            Ok(Claim::Claimed(session)) => {
                let ctx = context_of(&session, reason);
                self.start(*session, ctx, true).await;
            }
            Ok(Claim::Held | Claim::Missing) => {}
            Err(err) => {
                tracing::warn!(connection_id, error = %err, "could not claim the disconnect of a gone connection; the sweep retries it")
            }
        }
    }

    /// The cancel-on-resume hook: a session that resumes within the grace calls this with its
    /// old connection id, so the pending `/disconnect` is never made. Returns whether one was
    /// pending. A resume calls it with the connection it takes over; the cancelled task deletes
    /// that connection's item. A resume on another pod cancels through the store instead: the
    /// task re-reads the resume record before calling the app.
    pub fn cancel_pending_disconnect(&self, connection_id: &str) -> bool {
        match self.pending_map().remove(connection_id) {
            Some(Pending::Task(cancel)) => cancel.send(()).is_ok(),
            // The queue finds it gone when it is due (and ends a resumed session's item then).
            Some(Pending::Queued(_)) => {
                self.metrics.disconnect("cancelled");
                true
            }
            None => false,
        }
    }

    fn pending_map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Pending, foldhash::fast::RandomState>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a disconnect in its grace. One already there for the connection (claimed again
    /// since) is cancelled: a task's when its channel drops, a queued one's here.
    fn replace_pending(&self, connection_id: &str, pending: Pending) {
        let before = self.pending_map().insert(connection_id.to_owned(), pending);
        if matches!(before, Some(Pending::Queued(_))) {
            self.metrics.disconnect("cancelled");
        }
    }

    /// Puts a claimed session in the grace queue (starting the task that empties it).
    fn enqueue(self: &Arc<Self>, session: Session, ctx: RequestContext) {
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        self.replace_pending(&ctx.connection_id, Pending::Queued(token));
        let waiting = Waiting {
            due: Instant::now() + self.settings.grace,
            token,
            session,
            ctx,
        };
        let was_empty = {
            let mut entries = self.waiting.entries();
            let was_empty = entries.is_empty();
            entries.push_back(waiting);
            was_empty
        };
        if !self.waiting.started.swap(true, Ordering::AcqRel) {
            tokio::spawn(Self::empty_queue(self.waiting.clone(), Arc::downgrade(self)));
        }
        if was_empty {
            self.waiting.wake.notify_one();
        }
    }

    /// The grace queue's task: sleeps until the first entry is due (plus
    /// [`defaults::DISCONNECT_GRACE_TICK`], so that those due meanwhile go with it), then starts
    /// the disconnect of each entry due, unless it was cancelled. Ends with its owner.
    async fn empty_queue(queue: Arc<GraceQueue>, owner: Weak<Self>) {
        loop {
            if queue.closed.load(Ordering::Acquire) {
                return;
            }
            let first = queue.entries().front().map(|w| w.due);
            let Some(first) = first else {
                queue.wake.notified().await;
                continue;
            };
            let now = Instant::now();
            if first > now {
                tokio::time::sleep_until((first + defaults::DISCONNECT_GRACE_TICK).into()).await;
                continue;
            }
            let due: Vec<Waiting> = {
                let mut entries = queue.entries();
                let n = entries.iter().take_while(|w| w.due <= now).count();
                entries.drain(..n).collect()
            };
            let Some(this) = owner.upgrade() else { return };
            let mut live = Vec::with_capacity(due.len());
            {
                let mut pending = this.pending_map();
                for w in due {
                    let id = &w.ctx.connection_id;
                    if matches!(pending.get(id), Some(Pending::Queued(t)) if *t == w.token) {
                        pending.remove(id);
                        live.push((w, true));
                    } else {
                        // Cancelled in its grace, or claimed again since (counted then).
                        live.push((w, false));
                    }
                }
            }
            for (w, called) in live {
                let this = this.clone();
                if called {
                    tokio::spawn(this.deliver(w.session, w.ctx, 0));
                } else if w.session.session_id.is_some() {
                    tokio::spawn(async move { this.end_resumed(&w.session).await });
                }
            }
        }
    }

    /// One call to the handler or the app; on success the session is deleted. Returns whether
    /// it was taken.
    async fn attempt(&self, session: &Session, ctx: &RequestContext) -> bool {
        // A resume on any pod may have cancelled it: the record says.
        if session.session_id.is_some() && super::resume::resumed_elsewhere(self.store.as_ref(), session).await {
            self.end_resumed(session).await;
            return true;
        }
        // Half the lease: the call ends well before the claim could be taken over.
        let bound = self.settings.lease / 2;
        let answer = tokio::time::timeout(bound, self.handler.on_disconnect_result(ctx)).await;
        match answer {
            Ok(Ok(())) => {
                self.metrics.disconnect("delivered");
                self.forget_groups(&session.connection_id).await;
                super::resume::end_record(self.store.as_ref(), session).await;
                if let Err(err) = self.store.delete(&session.connection_id).await {
                    // The mark stays: a sweep delivers it again, a duplicate with the same id.
                    tracing::warn!(connection_id = %session.connection_id, error = %err, "disconnect delivered, but the session could not be deleted");
                }
                tracing::info!(
                    connection_id = %ctx.connection_id,
                    request_id = %ctx.request_id,
                    disconnect_id = ctx.disconnect_id.as_deref().unwrap_or_default(),
                    status = ?ctx.disconnect_status,
                    "disconnected"
                );
                true
            }
            Ok(Err(rejection)) => {
                self.metrics.disconnect("attempt_failed");
                tracing::debug!(connection_id = %ctx.connection_id, status = rejection.status.as_u16(), "disconnect refused; retrying");
                false
            }
            Err(_) => {
                self.metrics.disconnect("attempt_failed");
                tracing::debug!(connection_id = %ctx.connection_id, "disconnect not answered in time; retrying");
                false
            }
        }
    }

    /// Attempts from `attempt` on, with backoff, until one is taken, the deadline passes, or
    /// another process took the claim over.
    async fn deliver(self: Arc<Self>, session: Session, ctx: RequestContext, mut attempt: u32) {
        let since = session.disconnect.as_ref().map_or_else(now_ms, |d| d.since);
        let deadline = since + ms(self.settings.deadline);
        loop {
            if attempt > 0 {
                let backoff = backoff(attempt);
                if now_ms() + ms(backoff) > deadline {
                    self.abandon(&session, &ctx, attempt).await;
                    return;
                }
                // The lease covers the wait and the next call.
                let until = now_ms() + ms(backoff) + ms(self.settings.lease);
                match self
                    .store
                    .renew_disconnect(&session.connection_id, &self.owner, until)
                    .await
                {
                    Ok(true) => {}
                    Ok(false) => {
                        self.metrics.disconnect("taken_over");
                        return;
                    }
                    // The store is down: keep the call going; the lease may run out and
                    // another process deliver too (a duplicate, with the same id).
                    Err(err) => {
                        tracing::debug!(connection_id = %session.connection_id, error = %err, "could not renew a disconnect's lease")
                    }
                }
                tokio::time::sleep(backoff).await;
            } else if now_ms() > deadline {
                self.abandon(&session, &ctx, attempt).await;
                return;
            }
            if self.attempt(&session, &ctx).await {
                return;
            }
            attempt += 1;
        }
    }

    /// The deadline passed: counted, logged once, and the session deleted so nothing retries it.
    async fn abandon(&self, session: &Session, ctx: &RequestContext, attempts: u32) {
        self.metrics.disconnect("abandoned");
        tracing::warn!(
            connection_id = %ctx.connection_id,
            disconnect_id = ctx.disconnect_id.as_deref().unwrap_or_default(),
            attempts,
            deadline = ?self.settings.deadline,
            "disconnect abandoned: the handler or the app did not take it before the deadline"
        );
        self.forget_groups(&session.connection_id).await;
        super::resume::end_record(self.store.as_ref(), session).await;
        if let Err(err) = self.store.delete(&session.connection_id).await {
            tracing::warn!(connection_id = %session.connection_id, error = %err, "could not delete an abandoned session");
        }
    }

    /// A connection whose logical session another connection resumed: its item and any
    /// membership left go, without a `/disconnect`.
    async fn end_resumed(&self, session: &Session) {
        self.metrics.disconnect("resumed");
        self.forget_groups(&session.connection_id).await;
        if let Err(err) = self.store.delete(&session.connection_id).await {
            tracing::warn!(connection_id = %session.connection_id, error = %err, "could not delete the item of a resumed connection");
        }
    }

    /// Removes an ended session's group memberships (the TTL removes them when this fails).
    async fn forget_groups(&self, connection_id: &str) {
        if let Err(err) = self.groups.forget(connection_id).await {
            tracing::warn!(connection_id, error = %err, "could not remove an ended session's group memberships; TTL will");
        }
    }
}

/// The wait before retry `attempt` (1 for the first retry): doubling from the first backoff up
/// to the largest.
fn backoff(attempt: u32) -> Duration {
    let doublings = attempt.saturating_sub(1).min(16);
    (defaults::DISCONNECT_FIRST_BACKOFF * 2u32.pow(doublings)).min(defaults::DISCONNECT_MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_depends_on_the_connection_and_its_time_only() {
        let a = disconnect_id("AbCdEfGh1234567=", 1_700_000_000_000);
        assert_eq!(a, disconnect_id("AbCdEfGh1234567=", 1_700_000_000_000));
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(a, disconnect_id("AbCdEfGh1234567=", 1_700_000_000_001));
        assert_ne!(a, disconnect_id("AbCdEfGh1234568=", 1_700_000_000_000));
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        assert_eq!(backoff(1), defaults::DISCONNECT_FIRST_BACKOFF);
        assert_eq!(backoff(2), defaults::DISCONNECT_FIRST_BACKOFF * 2);
        assert_eq!(backoff(3), defaults::DISCONNECT_FIRST_BACKOFF * 4);
        assert_eq!(backoff(40), defaults::DISCONNECT_MAX_BACKOFF);
        assert!(defaults::DISCONNECT_MAX_BACKOFF < crate::config::parse_duration(defaults::DISCONNECT_LEASE).unwrap());
    }
}

//! The disconnect sweep: finds sessions whose connection is gone without a `$disconnect` (a
//! gateway replica that died, API Gateway's best-effort `$disconnect` that never came, a `serve`
//! that could not take it) and sessions whose disconnect's claim ran out (a `serve` killed
//! mid-call), and starts their `/disconnect` (see [`super::disconnect`]).
//!
//! Every `--sweep-interval` (or right after the previous sweep, when one takes longer), each
//! `serve` process scans the session store page by page and asks the gateway about each
//! unmarked session with GetConnection (`GET @connections/{id}`), at most `--sweep-rate` calls a
//! second: 410 means gone (API Gateway's answer for a closed connection; `socketless gateway`'s
//! when the owner replica does not hold it or is known not to exist), 200 alive, anything else
//! (a 503 from a replica whose owner did not answer, a throttle) says nothing and the session is
//! asked again next sweep. Several processes sweep at once; the claim is a conditional write, so
//! one of them runs each disconnect.

use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::disconnect::{Disconnects, context_of};
use super::push::PushOutcome;
use crate::defaults;
use crate::lifecycle::Lifecycle;
use crate::store::{Claim, Session};
use crate::timefmt::now_ms;

/// What one sweep found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Sweep {
    /// Sessions read from the store.
    pub sessions: usize,
    /// GetConnection calls made.
    pub checked: usize,
    /// Disconnects this sweep claimed and started (connections gone, or leases run out).
    pub claimed: usize,
    /// Sessions marked with a live claim (someone is delivering them).
    pub held: usize,
    /// Sessions created or synced less than `--sweep-min-age` ago, left for the next sweep.
    pub young: usize,
    /// The scan stopped early on a store error.
    pub incomplete: bool,
}

/// Sweeps every `--sweep-interval` until shutdown begins; nothing when the interval is zero.
pub async fn run(disconnects: Arc<Disconnects>, lifecycle: Lifecycle) {
    let interval = disconnects.settings.sweep_interval;
    if interval.is_zero() {
        return;
    }
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = lifecycle.shutdown_begun() => return,
        }
        let started = std::time::Instant::now();
        let sweep = tokio::select! {
            sweep = sweep_once(&disconnects) => sweep,
            _ = lifecycle.shutdown_begun() => return,
        };
        tracing::debug!(
            ?sweep,
            took_ms = started.elapsed().as_millis() as u64,
            "disconnect sweep done"
        );
    }
}

/// One sweep over the whole store; returns once every claim it made has started (the calls to
/// the handler or the app run on in their own tasks).
pub async fn sweep_once(disconnects: &Arc<Disconnects>) -> Sweep {
    disconnects.metrics.sweeps.inc();
    let rate = disconnects.settings.sweep_rate.max(1);
    let mut pace = tokio::time::interval(std::time::Duration::from_secs(1) / rate);
    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let slots = Arc::new(Semaphore::new(defaults::SWEEP_IN_FLIGHT));
    let mut checks: JoinSet<bool> = JoinSet::new();
    let mut sweep = Sweep::default();
    let young = i64::try_from(disconnects.settings.sweep_min_age.as_millis()).unwrap_or(i64::MAX);
    let mut start = None;
    loop {
        let page = match disconnects.store.scan(start.take(), defaults::SWEEP_PAGE).await {
            Ok(page) => page,
            Err(err) => {
                tracing::warn!(error = %err, "disconnect sweep: could not read the sessions; the next sweep tries again");
                sweep.incomplete = true;
                break;
            }
        };
        sweep.sessions += page.sessions.len();
        for session in page.sessions {
            match &session.disconnect {
                Some(mark) if mark.lease_until >= now_ms() => sweep.held += 1,
                Some(_) => {
                    disconnects.metrics.check("lease_expired");
                    if retake(disconnects, session).await {
                        sweep.claimed += 1;
                    }
                }
                // Created moments ago: maybe a handshake still under way.
                None if session.last_seen_at > now_ms() - young => sweep.young += 1,
                None => {
                    pace.tick().await;
                    let Ok(slot) = slots.clone().acquire_owned().await else {
                        break;
                    };
                    sweep.checked += 1;
                    let d = disconnects.clone();
                    checks.spawn(async move {
                        let claimed = check(&d, session).await;
                        drop(slot);
                        claimed
                    });
                }
            }
            while let Some(done) = checks.try_join_next() {
                sweep.claimed += usize::from(done.unwrap_or(false));
            }
        }
        match page.next {
            Some(next) => start = Some(next),
            None => break,
        }
    }
    while let Some(done) = checks.join_next().await {
        sweep.claimed += usize::from(done.unwrap_or(false));
    }
    sweep
}

/// Takes over a disconnect whose claim ran out and starts it (without a second grace).
async fn retake(disconnects: &Arc<Disconnects>, session: Session) -> bool {
    match disconnects.claim(&session.connection_id).await {
        Ok(Claim::Claimed(claimed)) => {
            let ctx = context_of(&claimed, "Disconnect retried after its claim ran out");
            let d = disconnects.clone();
            tokio::spawn(async move { d.start(*claimed, ctx, false).await });
            true
        }
        Ok(_) => false,
        Err(err) => {
            tracing::debug!(connection_id = %session.connection_id, error = %err, "disconnect sweep: claim failed");
            false
        }
    }
}

/// Asks the gateway whether a session's connection is still there; claims and starts its
/// disconnect when it is gone. Returns whether it claimed one.
async fn check(disconnects: &Arc<Disconnects>, session: Session) -> bool {
    let Some(endpoint) = disconnects.pusher.endpoint(&session.domain, &session.stage) else {
        disconnects.metrics.check("no_endpoint");
        return false;
    };
    match disconnects.pusher.get(&endpoint, &session.connection_id).await {
        PushOutcome::Gone => disconnects.metrics.check("gone"),
        PushOutcome::Delivered => {
            disconnects.metrics.check("alive");
            return false;
        }
        _ => {
            disconnects.metrics.check("failed");
            return false;
        }
    }
    let min_age = i64::try_from(disconnects.settings.sweep_min_age.as_millis()).unwrap_or(i64::MAX);
    let young = now_ms() - min_age;
    match disconnects.claim_seen_before(&session.connection_id, Some(young)).await {
        Ok(Claim::Claimed(claimed)) => {
            let ctx = context_of(&claimed, "Connection gone without a $disconnect");
            disconnects.start(*claimed, ctx, true).await;
            true
        }
        Ok(_) => false,
        Err(err) => {
            tracing::debug!(connection_id = %session.connection_id, error = %err, "disconnect sweep: claim failed");
            false
        }
    }
}

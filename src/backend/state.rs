//! The backend's state, shared by both listeners: the session and group stores, the session
//! cache, the pusher and the batch client,
//! the handler, metrics, lifecycle and settings; plus what both listeners do with it (count
//! requests, forget a gone session, flush pending counts at shutdown).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Response, StatusCode};
use prometheus_client::registry::Registry;

use super::batch::BatchClient;
use super::cache::SessionCache;
use super::disconnect::Disconnects;
use super::push::Pusher;
use super::settings::BackendSettings;
use crate::handler::MessageHandler;
use crate::http_server::{self, Body, BodyPolicy};
use crate::lifecycle::Lifecycle;
use crate::metrics::{self, BackendMetrics};
use crate::store::{GroupStore, SessionStore};
use crate::timefmt::now_ms;

/// The backend's state. Built by [`crate::serve::prepare`].
pub struct Backend {
    pub(crate) store: Arc<dyn SessionStore>,
    pub(crate) groups: Arc<dyn GroupStore>,
    /// The batch extension's client, for fan-out to a socketless gateway.
    pub(crate) batch: Arc<BatchClient>,
    pub(crate) cache: SessionCache,
    pub(crate) pusher: Arc<Pusher>,
    pub(crate) handler: Arc<dyn MessageHandler>,
    pub(crate) metrics: Arc<BackendMetrics>,
    pub(crate) registry: Arc<Registry>,
    pub(crate) lifecycle: Lifecycle,
    pub(crate) settings: BackendSettings,
    /// Deadline and shared budget for request bodies on both listeners.
    pub(crate) body: BodyPolicy,
    /// `/disconnect` at least once: claims, grace, retries and the sweep.
    pub(crate) disconnects: Arc<Disconnects>,
    /// Resume's counters.
    pub(crate) resume_metrics: Arc<super::resume::ResumeMetrics>,
}

/// A resumable session this young that a push found gone is not claimed: the gateway may still
/// be completing its handshake (a push answers 410 until then).
const HANDSHAKE_AGE_MS: i64 = 10_000;

/// Counts a request in flight for as long as it lives.
pub(super) struct InFlight<'a> {
    metrics: &'a BackendMetrics,
    listener: &'static str,
}

impl<'a> InFlight<'a> {
    pub(super) fn new(metrics: &'a BackendMetrics, listener: &'static str) -> Self {
        metrics.in_flight(listener, 1);
        InFlight { metrics, listener }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.metrics.in_flight(self.listener, -1);
    }
}

impl Backend {
    pub(super) fn observe(&self, listener: &'static str, route: &'static str, status: StatusCode, started: Instant) {
        self.metrics
            .request(listener, route, status.as_u16(), started.elapsed().as_secs_f64());
    }

    pub(super) fn metrics_response(&self) -> Response<Body> {
        http_server::with_body(
            StatusCode::OK,
            &http_server::content_type::OPENMETRICS,
            metrics::encode(&self.registry),
        )
    }

    /// Ends a session the gateway reported gone (410): its group memberships are removed, its
    /// `/disconnect` is claimed and started, and the session is deleted once the handler or the
    /// app took it.
    pub(super) async fn forget(&self, connection_id: &str) {
        self.forget_with(connection_id, None).await;
    }

    /// [`Self::forget`], for a push of `payload` that found the connection gone. A resumable
    /// session keeps its memberships (they move on resume), gets the payload buffered, and its
    /// `/disconnect` waits the resume window; one younger than [`HANDSHAKE_AGE_MS`] is not
    /// claimed here (its handshake may still be under way; the sweep looks at it later).
    pub(super) async fn forget_with(&self, connection_id: &str, payload: Option<(&Bytes, bool)>) {
        let cached = self.cache.remove(connection_id);
        if self.settings.resume.on() && cached.as_ref().is_none_or(|i| i.session_id.is_some()) {
            if let Ok(Some(session)) = self.store.get(connection_id).await {
                if let Some(id) = &session.session_id {
                    if let Some((data, binary)) = payload {
                        self.buffer(id, Some(connection_id), data, binary).await;
                    }
                    if now_ms() - session.connected_at >= HANDSHAKE_AGE_MS {
                        self.disconnects
                            .gone(connection_id, "Connection gone: a push answered 410")
                            .await;
                    }
                    return;
                }
            }
        }
        self.disconnects
            .gone(connection_id, "Connection gone: a push answered 410")
            .await;
        // A gone connection receives nothing more: its memberships go now, not after its
        // `/disconnect` was taken (a publish must not meet it again).
        self.leave_all(connection_id).await;
    }

    /// The disconnects: the cancel-on-resume hook and the settings live there.
    pub fn disconnects(&self) -> &Arc<Disconnects> {
        &self.disconnects
    }

    /// Runs one disconnect sweep now (the loop runs them every `--sweep-interval`).
    pub async fn sweep_disconnects(&self) -> super::sweeper::Sweep {
        super::sweeper::sweep_once(&self.disconnects).await
    }

    /// Writes message counts still pending in the cache, without re-creating sessions that
    /// were deleted meanwhile. Runs once at shutdown, bounded by `within`.
    pub async fn flush_pending(&self, within: Duration) {
        let pending = self.cache.take_pending();
        if pending.is_empty() {
            return;
        }
        let now = now_ms();
        let count = pending.len();
        let work = async {
            for (id, add) in pending {
                if let Err(err) = self.store.touch_existing(&id, now, add).await {
                    tracing::warn!(connection_id = %id, error = %err, "could not flush a message count");
                }
            }
        };
        if tokio::time::timeout(within, work).await.is_err() {
            tracing::warn!(sessions = count, "flush of pending message counts timed out");
        }
    }
}

//! Fan-out of one frame to many connections, for `POST /v1/broadcast` and group publishes.
//! To API Gateway (or with `--push-batch off`): one PostToConnection per connection, at most
//! `--broadcast-concurrency` at once. To a socketless gateway: the connections are grouped by
//! the replica that holds them (the ordinal in each id, [`crate::gateway::ids::ordinal_of`]),
//! and each replica's share goes in one `deliver` call (up to 10,000 ids), so a publish costs
//! O(replicas) calls rather than one per member. Connections found gone are forgotten after.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use http::StatusCode;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::batch::{Limits, ids_per_call};
use super::error::ApiError;
use super::push::PushOutcome;
use super::state::Backend;
use crate::handler::Rejection;
// The owner of an id is read by the very code that wrote it: the gateway's id scheme.
use crate::gateway::ids::ordinal_of;

/// Counts of one fan-out.
#[derive(Debug, Default)]
pub(super) struct Tally {
    pub targets: u64,
    pub delivered: u64,
    pub gone: u64,
    pub failed: u64,
}

/// What one send (a post or a deliver call) did.
#[derive(Default)]
struct Partial {
    delivered: u64,
    gone: Vec<String>,
    failed: u64,
}

pub(super) struct Fanout<'a> {
    backend: &'a Backend,
    data: Bytes,
    /// The frame as text, for `deliver`; `None` when it is not UTF-8 (then posts only).
    text: Option<Arc<str>>,
    limit: Arc<Semaphore>,
    tasks: JoinSet<Partial>,
    /// Ids waiting for their `deliver` call, by endpoint and owner replica.
    pending: HashMap<(String, u8), Vec<String>>,
    /// What each endpoint takes, asked once per fan-out.
    limits: HashMap<String, Option<Limits>>,
    gone: Vec<String>,
    tally: Tally,
}

impl<'a> Fanout<'a> {
    pub(super) fn new(backend: &'a Backend, data: Bytes) -> Self {
        let text = std::str::from_utf8(&data).ok().map(Arc::from);
        Fanout {
            backend,
            limit: Arc::new(Semaphore::new(backend.settings.broadcast_concurrency.max(1))),
            data,
            text,
            tasks: JoinSet::new(),
            pending: HashMap::new(),
            limits: HashMap::new(),
            gone: Vec::new(),
            tally: Tally::default(),
        }
    }

    /// Sends to one more connection through `endpoint` (`None`: no address known, counted as
    /// failed). Errs only when `--push-batch on` and the endpoint has no batch extension.
    pub(super) async fn add(&mut self, id: String, endpoint: Option<String>) -> Result<(), ApiError> {
        self.tally.targets += 1;
        let Some(endpoint) = endpoint else {
            self.tally.failed += 1;
            return Ok(());
        };
        let per_call = match self.text.clone() {
            Some(text) => self.limits_of(&endpoint).await?.map(|l| ids_per_call(l, &text)),
            None => None,
        };
        match (per_call, ordinal_of(&id)) {
            (Some(per_call), Some(owner)) if per_call > 0 => {
                let key = (endpoint, owner);
                let ids = self.pending.entry(key.clone()).or_default();
                ids.push(id);
                if ids.len() >= per_call {
                    let ids = self.pending.remove(&key).unwrap_or_default();
                    self.deliver(key.0, ids).await;
                }
            }
            _ => self.post(endpoint, id).await,
        }
        self.reap();
        Ok(())
    }

    async fn limits_of(&mut self, endpoint: &str) -> Result<Option<Limits>, ApiError> {
        if let Some(known) = self.limits.get(endpoint) {
            return Ok(*known);
        }
        let known = self
            .backend
            .batch
            .limits(endpoint)
            .await
            .map_err(|why| ApiError::Rejected(Rejection::new(StatusCode::BAD_GATEWAY, why)))?;
        self.limits.insert(endpoint.to_owned(), known);
        Ok(known)
    }

    async fn post(&mut self, endpoint: String, id: String) {
        let Ok(permit) = self.limit.clone().acquire_owned().await else {
            self.tally.failed += 1;
            return;
        };
        let pusher = self.backend.pusher.clone();
        let data = self.data.clone();
        self.tasks.spawn(async move {
            let outcome = pusher.post(&endpoint, &id, data).await;
            drop(permit);
            match outcome {
                PushOutcome::Delivered => Partial {
                    delivered: 1,
                    ..Partial::default()
                },
                PushOutcome::Gone => Partial {
                    gone: vec![id],
                    ..Partial::default()
                },
                _ => Partial {
                    failed: 1,
                    ..Partial::default()
                },
            }
        });
    }

    async fn deliver(&mut self, endpoint: String, ids: Vec<String>) {
        let (Some(text), Ok(permit)) = (self.text.clone(), self.limit.clone().acquire_owned().await) else {
            self.tally.failed += ids.len() as u64;
            return;
        };
        let batch = self.backend.batch.clone();
        self.tasks.spawn(async move {
            let out = batch.deliver(&endpoint, &ids, &text).await;
            drop(permit);
            Partial {
                delivered: out.delivered,
                gone: out.gone,
                failed: out.failed.len() as u64,
            }
        });
    }

    fn count(&mut self, partial: Partial) {
        self.tally.delivered += partial.delivered;
        self.tally.gone += partial.gone.len() as u64;
        self.tally.failed += partial.failed;
        self.gone.extend(partial.gone);
    }

    /// Takes in the sends that have finished, so the set stays small.
    fn reap(&mut self) {
        while let Some(Ok(partial)) = self.tasks.try_join_next() {
            self.count(partial);
        }
    }

    /// Sends what is still pending, waits for every send, and forgets the connections found
    /// gone (their sessions and memberships).
    pub(super) async fn finish(mut self) -> Tally {
        for ((endpoint, _), ids) in std::mem::take(&mut self.pending) {
            self.deliver(endpoint, ids).await;
        }
        while let Some(res) = self.tasks.join_next().await {
            match res {
                Ok(partial) => self.count(partial),
                Err(_) => self.tally.failed += 1,
            }
        }
        // As many at once as the sends were: each is a few store calls.
        // A resumable member's session keeps the message for its resume.
        let (backend, data) = (self.backend, &self.data);
        futures_util::stream::iter(std::mem::take(&mut self.gone))
            .for_each_concurrent(backend.settings.broadcast_concurrency.max(1), |id| async move {
                backend.forget_with(&id, Some((data, false))).await;
            })
            .await;
        self.tally
    }
}

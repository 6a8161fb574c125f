//! Who is connected, from the replicas' live registries: the batch extension's
//! `GET [/{stage}]/@socketless/v1/connections?cursor=&limit=` (one page, walking the replicas in
//! ordinal order and each replica's connections in id order) and
//! `GET [/{stage}]/@socketless/v1/connections/count` (every replica's live count, summed).
//! Authenticated like the rest of the extension (see `management.rs`). The replica that gets the
//! call answers its own share and forwards the rest, one call per replica the page reaches, to
//! the replica the cursor points at; a forwarded call is answered from that replica's registry
//! only. The admin port (`admin.rs`) answers its listing with the same walk. See docs/gateway.md.

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};

use super::error::GatewayError;
use super::management::{Target, authenticate, body_error, precheck, source_of};
use super::peers::{self, Owner, Unanswered};
use super::shared::Shared;
use crate::http_server::{self, Body};
use crate::listing::{Entry, Page, page_query, query_of};
use crate::timefmt::now_ms;

/// The largest answer read from a peer: a page of 1,000 entries with long User-Agents.
const MAX_PEER_ANSWER_BYTES: usize = 4 * 1_048_576;

/// One of the listing's calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    List,
    Count,
}

/// Reads the call from a raw `/{stage}/@socketless/v1/connections[/count]` path, where each
/// segment may be percent-encoded; `None` if the path is not one.
pub fn parse_path(raw: &str, stage: &str) -> Option<Call> {
    let decode = crate::percent::decode;
    let mut segments = raw.strip_prefix('/')?.split('/');
    if decode(segments.next()?)? != stage
        || decode(segments.next()?)? != "@socketless"
        || decode(segments.next()?)? != "v1"
        || decode(segments.next()?)? != "connections"
    {
        return None;
    }
    match segments.next() {
        None => Some(Call::List),
        Some(s) if decode(s)? == "count" && segments.next().is_none() => Some(Call::Count),
        _ => None,
    }
}

/// Live counts: open connections, and messages through them since each replica started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Totals {
    pub count: u64,
    /// Messages received from clients.
    pub messages_received: u64,
    /// Frames queued by `@connections` posts and deliveries.
    pub messages_pushed: u64,
    /// Replicas that answered.
    pub replicas: u32,
}

impl Totals {
    fn add(&mut self, other: Totals) {
        self.count += other.count;
        self.messages_received += other.messages_received;
        self.messages_pushed += other.messages_pushed;
        self.replicas += other.replicas;
    }
}

/// Serves one listing call of the extension, recording it by operation, source and status.
pub async fn extension(gw: &Shared, req: Request<Incoming>, call: Call) -> Response<Body> {
    let source = source_of(&req);
    let operation = match call {
        Call::List => "list",
        Call::Count => "count",
    };
    let resp = answer(gw, req, call).await.unwrap_or_else(|err| err.response());
    gw.metrics.management(operation, source, resp.status().as_u16());
    resp
}

async fn answer(gw: &Shared, req: Request<Incoming>, call: Call) -> Result<Response<Body>, GatewayError> {
    if req.method() != Method::GET {
        return Err(GatewayError::BadDelivery("use GET".into()));
    }
    let from_peer = req.headers().contains_key(peers::FORWARDED);
    precheck(gw, &req, from_peer)?;
    let target = Target::of(&req);
    let query = req.uri().query().map(str::to_owned);
    let read = http_server::read_body(req, 0, &gw.config.body)
        .await
        .map_err(body_error)?;
    authenticate(gw, from_peer, &Method::GET, &target, &read.parts.headers, &read.bytes)?;
    let body = match call {
        Call::Count if from_peer => serde_json::to_value(local_totals(gw)),
        Call::Count => serde_json::to_value(count_all(gw).await?),
        Call::List => {
            let (cursor, limit) = page_query(query.as_deref()).map_err(GatewayError::BadDelivery)?;
            if from_peer {
                let (_, after) = parse_cursor(cursor.as_deref())?;
                serde_json::to_value(local_page(gw, after.as_deref(), limit))
            } else {
                serde_json::to_value(list_all(gw, cursor.as_deref(), limit).await?)
            }
        }
    }
    .unwrap_or_default();
    Ok(http_server::json(StatusCode::OK, &body))
}

/// A cursor is `{ordinal}:{last connection id listed}`; an empty id starts that replica.
fn parse_cursor(cursor: Option<&str>) -> Result<(u8, Option<String>), GatewayError> {
    let Some(cursor) = cursor else {
        return Ok((0, None));
    };
    let bad = || GatewayError::BadDelivery(format!("cursor {cursor:?} is not one this gateway gave"));
    let (ordinal, after) = cursor.split_once(':').ok_or_else(bad)?;
    let ordinal = ordinal.parse::<u8>().map_err(|_| bad())?;
    Ok((ordinal, Some(after.to_string()).filter(|a| !a.is_empty())))
}

/// Up to `limit` of this replica's connections after `after`, in id order; the cursor of the
/// rest when more follow. The registry's lock is held only to take the page's handles.
fn local_page(gw: &Shared, after: Option<&str>, limit: usize) -> Page {
    let (handles, more) = gw.connections.page(after, limit);
    let connections: Vec<Entry> = handles
        .iter()
        .map(|h| Entry {
            connection_id: h.ctx.id.clone(),
            connected_at: h.ctx.connected_at,
            source_ip: h.ctx.source_ip.clone(),
            user_agent: Some(h.ctx.user_agent.clone()).filter(|ua| !ua.is_empty()),
            principal_id: h.ctx.authorizer.as_ref().map(|a| a.principal_id.clone()),
            messages: Some(u64::from(h.received())),
            pushed: Some(u64::from(h.pushed())),
            last_active_at: Some(h.last_active()),
        })
        .collect();
    let next = match connections.last() {
        Some(last) if more => Some(format!("{}:{}", gw.peers.ordinal(), last.connection_id)),
        _ => None,
    };
    Page { connections, next }
}

fn local_totals(gw: &Shared) -> Totals {
    Totals {
        count: gw.connections.len() as u64,
        messages_received: gw.metrics.messages_total(),
        messages_pushed: gw.connections.posted(),
        replicas: 1,
    }
}

/// The extension's path for a listing call to a peer.
fn peer_path(gw: &Shared, call: Call) -> String {
    let stage = &gw.config.model.stage;
    match call {
        Call::List => format!("/{stage}/@socketless/v1/connections"),
        Call::Count => format!("/{stage}/@socketless/v1/connections/count"),
    }
}

/// What one replica answered: `None` when it does not exist.
async fn ask<T: for<'de> Deserialize<'de>>(
    gw: &Shared,
    url: &str,
    call: Call,
    query: Option<String>,
) -> Result<Option<T>, GatewayError> {
    let path = peer_path(gw, call);
    let path_and_query = match query {
        Some(q) => format!("{path}?{q}"),
        None => path.clone(),
    };
    let answer = gw
        .peers
        .forward_bounded(
            url,
            &Method::GET,
            &path_and_query,
            &path,
            None,
            Bytes::new(),
            now_ms(),
            MAX_PEER_ANSWER_BYTES,
        )
        .await;
    let resp = match answer {
        Ok(resp) => resp,
        Err(Unanswered::NoOwner(_)) => return Ok(None),
        Err(Unanswered::Unavailable(why)) => {
            gw.metrics.forward("owner_unavailable");
            tracing::warn!(replica = %url, reason = %why, "a replica did not answer the listing in time");
            return Err(GatewayError::OwnerUnavailable);
        }
    };
    gw.metrics.forward("relayed");
    let status = resp.status();
    let bytes = match http_body_util::BodyExt::collect(resp.into_body()).await {
        Ok(collected) => collected.to_bytes(),
        Err(never) => match never {},
    };
    match serde_json::from_slice::<T>(&bytes) {
        Ok(answer) if status == StatusCode::OK => Ok(Some(answer)),
        _ => {
            tracing::warn!(replica = %url, status = %status, "a replica refused the listing");
            Err(GatewayError::OwnerUnavailable)
        }
    }
}

/// One page across the replicas, from `cursor` on: each replica's connections in id order,
/// the replicas in ordinal order, up to `limit` entries; where the walk ends is
/// [`last_replica`]'s rule. A replica that exists and does not answer fails the page with 503,
/// so a caller never takes a partial list for a whole one.
pub(super) async fn list_all(gw: &Shared, cursor: Option<&str>, limit: usize) -> Result<Page, GatewayError> {
    let (mut ordinal, mut after) = parse_cursor(cursor)?;
    let mut connections = Vec::new();
    loop {
        let want = limit - connections.len();
        let got = match gw.peers.replica(ordinal) {
            Owner::Here => Some(local_page(gw, after.as_deref(), want)),
            Owner::Nobody => None,
            Owner::Peer(url) => {
                let cursor = format!("{ordinal}:{}", after.as_deref().unwrap_or(""));
                ask::<Page>(gw, &url, Call::List, Some(query_of(Some(&cursor), want))).await?
            }
        };
        let absent = got.is_none();
        if let Some(page) = got {
            connections.extend(page.connections.into_iter().take(want));
            if page.next.is_some() {
                return Ok(Page {
                    connections,
                    next: page.next,
                });
            }
        }
        let following = ordinal.checked_add(1).filter(|_| !last_replica(gw, ordinal, absent));
        let Some(following) = following else {
            return Ok(Page {
                connections,
                next: None,
            });
        };
        (ordinal, after) = (following, None);
        if connections.len() >= limit {
            return Ok(Page {
                connections,
                next: Some(format!("{ordinal}:")),
            });
        }
    }
}

/// Every replica's live counts, summed, walking the ordinals as [`list_all`] does.
pub(super) async fn count_all(gw: &Shared) -> Result<Totals, GatewayError> {
    let mut totals = Totals::default();
    for ordinal in 0..=u8::MAX {
        let got = match gw.peers.replica(ordinal) {
            Owner::Here => Some(local_totals(gw)),
            Owner::Nobody => None,
            Owner::Peer(url) => ask::<Totals>(gw, &url, Call::Count, None).await?,
        };
        let absent = got.is_none();
        if let Some(t) = got {
            totals.add(t);
        }
        if last_replica(gw, ordinal, absent) {
            break;
        }
    }
    Ok(totals)
}

/// Whether the walk ends after `ordinal`: at the last of a known set of replicas (`--peers`, or
/// this one alone), where an absent replica is skipped; under `--peer-url-template`, at the
/// first absent one above this replica's own ordinal (below it, absent ones are skipped).
fn last_replica(gw: &Shared, ordinal: u8, absent: bool) -> bool {
    match gw.peers.last_ordinal() {
        Some(last) => ordinal >= last,
        None => absent && ordinal >= gw.peers.ordinal(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(parse_path("/dev/@socketless/v1/connections", "dev"), Some(Call::List));
        assert_eq!(
            parse_path("/dev/%40socketless/v1/connections/count", "dev"),
            Some(Call::Count)
        );
        assert_eq!(parse_path("/dev/@socketless/v1/connections/x", "dev"), None);
        assert_eq!(parse_path("/dev/@socketless/v1/connections/count/x", "dev"), None);
        assert_eq!(parse_path("/prod/@socketless/v1/connections", "dev"), None);
        assert_eq!(parse_path("/dev/@socketless/v1/info", "dev"), None);
    }

    #[test]
    fn cursors() {
        assert_eq!(parse_cursor(None).ok(), Some((0, None)));
        assert_eq!(parse_cursor(Some("2:")).ok(), Some((2, None)));
        assert_eq!(parse_cursor(Some("1:ab=")).ok(), Some((1, Some("ab=".into()))));
        for bad in ["x", "256:a", "-1:a", ":a"] {
            assert!(parse_cursor(Some(bad)).is_err(), "{bad}");
        }
    }
}

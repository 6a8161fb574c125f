//! Groups on the internal port: join and leave (`PUT`/`DELETE
//! /v1/groups/{group}/connections/{id}`, idempotent, 204), publish (`POST
//! /v1/groups/{group}/messages`), and the members, exact count and pages (`GET
//! /v1/groups/{group}?cursor=&limit=`); plus the joins a connect asks for in
//! `x-socketless-groups`, and the cleanup of a connection's memberships. Memberships live in the
//! [`crate::store::GroupStore`]; a publish goes through [`super::fanout`].

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use super::error::ApiError;
use super::fanout::Fanout;
use super::state::Backend;
use crate::contract::{self, RequestContext};
use crate::defaults;
use crate::handler::Rejection;
use crate::http_server::{self, Body};
use crate::store::Member;
use crate::store::groups::{DEFAULT_PAGE, MAX_PAGE, group_name_rule, valid_group_name};

/// A 4xx (or other) answer with a JSON `{"error": message}`.
fn refuse(status: StatusCode, message: impl Into<String>) -> ApiError {
    ApiError::Rejected(Rejection::new(status, message))
}

/// A group name from a path segment, percent-decoded and checked.
pub(super) fn group_name(segment: &str) -> Result<String, ApiError> {
    crate::percent::decode(segment)
        .filter(|g| valid_group_name(g))
        .ok_or_else(|| {
            refuse(
                StatusCode::BAD_REQUEST,
                format!("invalid group name: {}", group_name_rule()),
            )
        })
}

/// The groups an answer's `x-socketless-groups` headers name (comma-separated, repeatable),
/// without duplicates; an error names the first rule broken.
pub fn groups_from_headers(headers: &http::HeaderMap, max: usize) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::new();
    for value in headers.get_all(contract::GROUPS) {
        let value = value
            .to_str()
            .map_err(|_| format!("{}: not visible ASCII", contract::GROUPS))?;
        for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            check_connect_group(name)?;
            if !out.iter().any(|g| g == name) {
                out.push(name.to_owned());
            }
        }
    }
    check_connect_groups(&out, max)?;
    Ok(out)
}

fn check_connect_group(name: &str) -> Result<(), String> {
    if valid_group_name(name) {
        Ok(())
    } else {
        let shown: String = name.chars().take(40).collect();
        Err(format!(
            "{}: {shown:?} is not a group name ({})",
            contract::GROUPS,
            group_name_rule()
        ))
    }
}

/// The bound on the groups one connect may join: the per-connection limit, and at most
/// [`defaults::MAX_CONNECT_GROUPS`].
fn check_connect_groups(groups: &[String], max: usize) -> Result<(), String> {
    let max = max.min(defaults::MAX_CONNECT_GROUPS);
    if groups.len() > max {
        return Err(format!(
            "{}: {} groups, more than {max}",
            contract::GROUPS,
            groups.len()
        ));
    }
    Ok(())
}

/// `?cursor=&limit=` of a members page.
fn page_query(query: Option<&str>) -> Result<(Option<String>, usize), ApiError> {
    let mut cursor = None;
    let mut limit = DEFAULT_PAGE;
    for (k, v) in crate::percent::query_pairs(query.unwrap_or_default()) {
        match k.as_str() {
            "cursor" if v.is_empty() => {}
            "cursor" if super::context::valid_connection_id(&v) => cursor = Some(v),
            "cursor" => {
                return Err(refuse(
                    StatusCode::BAD_REQUEST,
                    "invalid cursor: pass the previous page's next",
                ));
            }
            "limit" => {
                limit = v
                    .parse::<usize>()
                    .ok()
                    .filter(|l| (1..=MAX_PAGE).contains(l))
                    .ok_or_else(|| refuse(StatusCode::BAD_REQUEST, format!("limit must be 1 to {MAX_PAGE}")))?;
            }
            _ => {}
        }
    }
    Ok((cursor, limit))
}

impl Backend {
    /// `PUT /v1/groups/{group}/connections/{id}`: joins a connection that has a session.
    pub(super) async fn join(&self, group: &str, id: &str) -> Result<Response<Body>, ApiError> {
        let session = match self.store.get(id).await {
            Ok(Some(session)) => session,
            Ok(None) => {
                return Err(refuse(
                    StatusCode::NOT_FOUND,
                    format!("no session for connection {id}: only a connected client can join a group"),
                ));
            }
            Err(err) => return Err(ApiError::store(err, id, None)),
        };
        let max = self.settings.max_groups_per_connection;
        let joined = self
            .groups
            .groups_of(id, max + 1)
            .await
            .map_err(|e| ApiError::store(e, id, None))?;
        if joined.len() >= max && !joined.iter().any(|g| g == group) {
            return Err(refuse(
                StatusCode::CONFLICT,
                format!("connection {id} is already in {max} groups (--max-groups-per-connection); leave one first"),
            ));
        }
        let member = Member {
            connection_id: session.connection_id,
            domain: session.domain,
            stage: session.stage,
            expires_at: session.expires_at,
        };
        self.groups
            .join(group, &member)
            .await
            .map_err(|e| ApiError::store(e, id, None))?;
        Ok(http_server::empty(StatusCode::NO_CONTENT))
    }

    /// `DELETE /v1/groups/{group}/connections/{id}`: idempotent.
    pub(super) async fn leave(&self, group: &str, id: &str) -> Result<Response<Body>, ApiError> {
        self.groups
            .leave(group, id)
            .await
            .map_err(|e| ApiError::store(e, id, None))?;
        Ok(http_server::empty(StatusCode::NO_CONTENT))
    }

    /// `GET /v1/groups/{group}`: the exact count and one page of members.
    pub(super) async fn group_page(&self, group: &str, query: Option<&str>) -> Result<Response<Body>, ApiError> {
        let (cursor, limit) = page_query(query)?;
        let count = self
            .groups
            .count(group)
            .await
            .map_err(|e| ApiError::store(e, group, None))?;
        let page = self
            .groups
            .members(group, cursor, limit)
            .await
            .map_err(|e| ApiError::store(e, group, None))?;
        let members: Vec<&str> = page.members.iter().map(|m| m.connection_id.as_str()).collect();
        Ok(http_server::json(
            StatusCode::OK,
            &serde_json::json!({ "group": group, "count": count, "members": members, "next": page.next }),
        ))
    }

    /// `POST /v1/groups/{group}/messages`: the body to every member.
    pub(super) async fn publish(&self, group: &str, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
        let body = http_server::read_body(req, contract::MAX_POST_BYTES, &self.body).await?;
        let mut fanout = Fanout::new(self, body.bytes.clone());
        let mut cursor = None;
        let mut complete = true;
        loop {
            let page = match self
                .groups
                .members(group, cursor.take(), defaults::GROUP_PUBLISH_PAGE)
                .await
            {
                Ok(page) => page,
                Err(err) => {
                    tracing::warn!(group, error = %err, "group members query failed; publish stopped early");
                    complete = false;
                    break;
                }
            };
            for m in page.members {
                let endpoint = self.pusher.endpoint(&m.domain, &m.stage);
                fanout.add(m.connection_id, endpoint).await?;
            }
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        let tally = fanout.finish().await;
        let status = if complete {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        Ok(http_server::json(
            status,
            &serde_json::json!({
                "members": tally.targets,
                "delivered": tally.delivered,
                "gone": tally.gone,
                "failed": tally.failed,
                "complete": complete,
            }),
        ))
    }

    /// Joins the groups a connect asked for (one write each); checks them first, so an
    /// invalid list refuses the connect before anything is written.
    pub(super) fn check_connect_groups(&self, ctx: &RequestContext, groups: &[String]) -> Result<(), ApiError> {
        let broken = groups
            .iter()
            .find_map(|g| check_connect_group(g).err())
            .or_else(|| check_connect_groups(groups, self.settings.max_groups_per_connection).err());
        match broken {
            None => Ok(()),
            Some(rule) => {
                tracing::warn!(connection_id = %ctx.connection_id, request_id = %ctx.request_id, rule = %rule, "connect refused: its groups break a rule");
                Err(refuse(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("connect groups refused: {rule}"),
                ))
            }
        }
    }

    /// Writes the memberships a connect asked for.
    pub(super) async fn join_at_connect(&self, member: &Member, groups: &[String]) -> Result<(), ApiError> {
        for group in groups {
            self.groups
                .join(group, member)
                .await
                .map_err(|e| ApiError::store(e, &member.connection_id, None))?;
        }
        Ok(())
    }

    /// Removes every membership of a connection (at `/disconnect` and when it is found gone);
    /// a failure is logged, and TTL removes what is left.
    pub(super) async fn leave_all(&self, connection_id: &str) {
        if let Err(err) = self.groups.forget(connection_id).await {
            tracing::warn!(connection_id, error = %err, "could not remove the connection's group memberships; TTL will");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_groups_header() {
        let mut h = http::HeaderMap::new();
        h.append(contract::GROUPS, "a, b,,a".parse().unwrap());
        h.append(contract::GROUPS, "room:1".parse().unwrap());
        assert_eq!(groups_from_headers(&h, 32).unwrap(), vec!["a", "b", "room:1"]);
        assert!(groups_from_headers(&h, 2).unwrap_err().contains("more than 2"));
        let mut bad = http::HeaderMap::new();
        bad.insert(contract::GROUPS, "a b".parse().unwrap());
        assert!(groups_from_headers(&bad, 32).unwrap_err().contains("not a group name"));
        assert!(groups_from_headers(&http::HeaderMap::new(), 32).unwrap().is_empty());
    }

    #[test]
    fn page_queries() {
        assert_eq!(page_query(None).unwrap(), (None, DEFAULT_PAGE));
        assert_eq!(
            page_query(Some("limit=1000&cursor=abc%3D")).unwrap(),
            (Some("abc=".into()), 1000)
        );
        for bad in ["limit=0", "limit=1001", "limit=10000", "limit=x", "cursor=a%2Fb"] {
            assert!(page_query(Some(bad)).is_err(), "{bad}");
        }
    }
}

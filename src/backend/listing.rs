//! Who is connected, on the internal port: `GET /v1/connections?cursor=&limit=` (exact and
//! paged; limit 1..=1000, default 100) and `GET /v1/connections/count`. When the push endpoint is
//! a socketless gateway (the batch extension's `info` probe says so, see [`super::batch`]), both
//! come from the gateway replicas' live registries through the extension's
//! `@socketless/v1/connections` calls; behind API Gateway, from the sessions table (a paged
//! scan, and a full scan for the count). The answers say which with `"source"`.

use http::{Method, Response, StatusCode};

use super::error::ApiError;
use super::state::Backend;
use crate::handler::Rejection;
use crate::http_server::{self, Body};
use crate::listing::{Entry, MAX_LIMIT, Page, page_query, query_of};

/// The extension's listing path under the stage.
const LIST_PATH: &str = "/@socketless/v1/connections";
const COUNT_PATH: &str = "/@socketless/v1/connections/count";

fn bad_gateway(message: String) -> ApiError {
    ApiError::Rejected(Rejection::new(StatusCode::BAD_GATEWAY, message))
}

impl Backend {
    /// The socketless gateway to ask, when the push endpoint is one.
    async fn listing_gateway(&self) -> Option<String> {
        if !self.pusher.has_fixed_endpoint() {
            return None;
        }
        let endpoint = self.pusher.endpoint("", "")?;
        match self.batch.limits(&endpoint).await {
            Ok(Some(_)) => Some(endpoint),
            _ => None,
        }
    }

    /// Relays one listing call to the gateway; its JSON answer with `"source":"gateway"` added.
    async fn ask_gateway(&self, url: String) -> Result<Response<Body>, ApiError> {
        let (status, body) = self
            .batch
            .call(Method::GET, &url, bytes::Bytes::new())
            .await
            .map_err(|why| bad_gateway(format!("the gateway's listing could not be asked: {why}")))?;
        let mut answer: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|_| bad_gateway(format!("the gateway's listing answered {status} without JSON")))?;
        if status != StatusCode::OK {
            return Ok(http_server::json(status, &answer));
        }
        if let Some(map) = answer.as_object_mut() {
            map.insert("source".into(), "gateway".into());
        }
        Ok(http_server::json(StatusCode::OK, &answer))
    }

    /// `GET /v1/connections?cursor=&limit=`.
    pub(super) async fn list_connections(&self, query: Option<&str>) -> Result<Response<Body>, ApiError> {
        let (cursor, limit) =
            page_query(query).map_err(|why| ApiError::Rejected(Rejection::new(StatusCode::BAD_REQUEST, why)))?;
        if let Some(endpoint) = self.listing_gateway().await {
            let url = format!("{endpoint}{LIST_PATH}?{}", query_of(cursor.as_deref(), limit));
            return self.ask_gateway(url).await;
        }
        let page = self
            .store
            .scan(cursor, limit)
            .await
            .map_err(|err| ApiError::store(err, "", None))?;
        let listed = Page {
            connections: page
                .sessions
                .into_iter()
                .map(|s| Entry {
                    connection_id: s.connection_id,
                    connected_at: s.connected_at,
                    source_ip: s.source_ip,
                    user_agent: Some(s.user_agent).filter(|ua| !ua.is_empty()),
                    principal_id: s.principal_id,
                    messages: Some(s.message_count),
                    pushed: None,
                    last_active_at: None,
                })
                .collect(),
            next: page.next,
        };
        let mut answer = serde_json::to_value(listed).unwrap_or_default();
        if let Some(map) = answer.as_object_mut() {
            map.insert("source".into(), "sessions".into());
        }
        Ok(http_server::json(StatusCode::OK, &answer))
    }

    /// `GET /v1/connections/count`.
    pub(super) async fn count_connections(&self) -> Result<Response<Body>, ApiError> {
        if let Some(endpoint) = self.listing_gateway().await {
            return self.ask_gateway(format!("{endpoint}{COUNT_PATH}")).await;
        }
        let mut count = 0u64;
        let mut cursor = None;
        loop {
            let page = self
                .store
                .scan(cursor, MAX_LIMIT)
                .await
                .map_err(|err| ApiError::store(err, "", None))?;
            count += page.sessions.len() as u64;
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        Ok(http_server::json(
            StatusCode::OK,
            &serde_json::json!({ "count": count, "source": "sessions" }),
        ))
    }
}

//! Who is connected: the shapes the listing shares between `serve`'s internal API
//! (`GET /v1/connections`, `GET /v1/connections/count`), the gateway's batch extension
//! (`GET [/{stage}]/@socketless/v1/connections`) and the gateway's admin port: one entry per
//! connection, a page with the cursor of the next one, the query's rules (`cursor`, `limit`
//! 1..=1000, default 100), and the live page (`live.html`, one static file with inline script)
//! that the admin port and the internal port serve at `/`.

use serde::{Deserialize, Serialize};

/// Entries per page unless `limit` says otherwise.
pub const DEFAULT_LIMIT: usize = 100;
/// The most entries one page may hold.
pub const MAX_LIMIT: usize = 1000;

/// The live page: connections, counts and rates, send and close; polls the JSON endpoints of the
/// port that serves it once a second.
pub const LIVE_PAGE: &str = include_str!("live.html");

/// One connection, with what the side that lists it knows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    pub connection_id: String,
    /// Epoch milliseconds.
    pub connected_at: i64,
    pub source_ip: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// The principal a `$connect` authorizer vouched for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal_id: Option<String>,
    /// Messages received from the client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages: Option<u64>,
    /// Frames pushed to the client through `@connections` posts and deliveries (replies to its
    /// messages are not counted); the gateway's listing only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pushed: Option<u64>,
    /// Epoch milliseconds; the gateway's listing only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_active_at: Option<i64>,
}

/// One page: its entries, and the cursor of the next page (`null` after the last).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page {
    pub connections: Vec<Entry>,
    pub next: Option<String>,
}

/// The `cursor` (absent or empty: the start) and `limit` of a listing's query string.
pub fn page_query(raw: Option<&str>) -> Result<(Option<String>, usize), String> {
    let mut cursor = None;
    let mut limit = DEFAULT_LIMIT;
    for (key, value) in crate::percent::query_pairs(raw.unwrap_or("")) {
        match key.as_str() {
            "cursor" => cursor = Some(value).filter(|v| !v.is_empty()),
            "limit" => {
                limit = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_LIMIT).contains(n))
                    .ok_or_else(|| format!("limit must be a whole number from 1 to {MAX_LIMIT}, not {value:?}"))?;
            }
            _ => {}
        }
    }
    Ok((cursor, limit))
}

/// The query string of a page request.
pub fn query_of(cursor: Option<&str>, limit: usize) -> String {
    match cursor {
        Some(c) => format!(
            "cursor={}&limit={limit}",
            percent_encoding::utf8_percent_encode(c, percent_encoding::NON_ALPHANUMERIC)
        ),
        None => format!("limit={limit}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries() {
        assert_eq!(page_query(None), Ok((None, DEFAULT_LIMIT)));
        assert_eq!(page_query(Some("cursor=&limit=5")), Ok((None, 5)));
        assert_eq!(
            page_query(Some("cursor=1%3AabcdEFGH_-123456%3D&limit=1000")),
            Ok((Some("1:abcdEFGH_-123456=".to_string()), 1000))
        );
        for bad in ["limit=0", "limit=1001", "limit=x", "limit="] {
            assert!(page_query(Some(bad)).is_err(), "{bad}");
        }
        let q = query_of(Some("2:ab=="), 7);
        assert_eq!(page_query(Some(&q)), Ok((Some("2:ab==".to_string()), 7)));
        assert_eq!(page_query(Some(&query_of(None, 9))), Ok((None, 9)));
    }

    #[test]
    fn entries_leave_out_what_is_unknown() {
        let e = Entry {
            connection_id: "a".into(),
            connected_at: 1,
            source_ip: "127.0.0.1".into(),
            user_agent: None,
            principal_id: None,
            messages: Some(2),
            pushed: None,
            last_active_at: None,
        };
        let v = serde_json::to_value(&e).expect("serialises");
        assert_eq!(
            v,
            serde_json::json!({"connectionId":"a","connectedAt":1,"sourceIp":"127.0.0.1","messages":2})
        );
    }
}

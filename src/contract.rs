//! The wire contract between a gateway and the backend: the request headers that carry the
//! gateway context, the paths of the integration endpoints, and the limits both sides enforce.
//!
//! The CloudFormation template (`cfn/websocket-api.yml`) maps API Gateway's `context.*` variables
//! onto exactly these header names, and `socketless gateway` applies the same mapping by reading
//! that template, so a backend cannot tell the two gateways apart. [`CONTEXT`] is the one table
//! of those variables: what the gateway supplies, which header carries it, and where the backend
//! keeps it.

use http::HeaderValue;

use crate::handler::RequestContext;

/// Connection id assigned by the gateway (`context.connectionId`). Required on every call.
pub const CONNECTION_ID: &str = "x-socketless-connection-id";
/// Selected route key (`context.routeKey`), e.g. `$connect`, `$default`.
pub const ROUTE_KEY: &str = "x-socketless-route-key";
/// `CONNECT`, `MESSAGE` or `DISCONNECT` (`context.eventType`).
pub const EVENT_TYPE: &str = "x-socketless-event-type";
/// Gateway request id (`context.requestId`).
pub const REQUEST_ID: &str = "x-socketless-request-id";
/// Domain the client connected to (`context.domainName`); used to build the callback URL.
pub const DOMAIN_NAME: &str = "x-socketless-domain-name";
/// Stage name (`context.stage`).
pub const STAGE: &str = "x-socketless-stage";
/// Connection time in epoch milliseconds (`context.connectedAt`).
pub const CONNECTED_AT: &str = "x-socketless-connected-at";
/// Client IP (`context.identity.sourceIp`).
pub const SOURCE_IP: &str = "x-socketless-source-ip";
/// Client User-Agent (`context.identity.userAgent`).
pub const USER_AGENT: &str = "x-socketless-user-agent";
/// Close status code on `$disconnect` (`context.disconnectStatusCode`; optional).
pub const DISCONNECT_STATUS: &str = "x-socketless-disconnect-status";
/// Close reason on `$disconnect` (`context.disconnectReason`; optional).
pub const DISCONNECT_REASON: &str = "x-socketless-disconnect-reason";
/// Shared secret the gateway adds as a literal; checked when the backend has one configured.
pub const SHARED_SECRET: &str = "x-socketless-secret";

/// What the gateway reads to supply a context variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Supply {
    ConnectionId,
    ConnectedAt,
    DomainName,
    EventType,
    RouteKey,
    RequestId,
    ApiId,
    SourceIp,
    UserAgent,
    /// The time of the event, as `dd/MMM/yyyy:HH:mm:ss +0000`.
    RequestTime,
    /// The time of the event, in epoch milliseconds.
    RequestTimeEpoch,
    Stage,
    /// Messages only: a fresh id per message.
    MessageId,
    /// `$disconnect` only: the close status.
    DisconnectStatus,
    /// `$disconnect` only: the close reason.
    DisconnectReason,
}

/// Why a context header's value was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed;

/// How the backend reads one header into the [`RequestContext`].
pub type Store = fn(&mut RequestContext, &HeaderValue) -> Result<(), Malformed>;

/// A context header: its name and where the backend keeps its value.
#[derive(Clone, Copy)]
pub struct Header {
    pub name: &'static str,
    pub store: Store,
}

/// One row of the context table.
#[derive(Clone, Copy)]
pub struct ContextVariable {
    /// API Gateway's name, after `context.`.
    pub variable: &'static str,
    /// The header the backend reads it from, when it reads it.
    pub header: Option<Header>,
    /// What the gateway supplies it from.
    pub supply: Supply,
}

/// A header's value as text; absent or not visible ASCII reads as empty.
fn text(value: &HeaderValue) -> &str {
    value.to_str().unwrap_or_default()
}

const fn header(name: &'static str, store: Store) -> Option<Header> {
    Some(Header { name, store })
}

const fn row(variable: &'static str, header: Option<Header>, supply: Supply) -> ContextVariable {
    ContextVariable {
        variable,
        header,
        supply,
    }
}

/// Every context variable the gateway supplies, with the header the backend reads it from.
/// The gateway's context, the mappings it accepts and the backend's header reader are all built
/// from this table; a test checks the template's RequestParameters against it.
pub const CONTEXT: &[ContextVariable] = &[
    row(
        "connectionId",
        header(CONNECTION_ID, |c, v| {
            c.connection_id = text(v).to_owned();
            Ok(())
        }),
        Supply::ConnectionId,
    ),
    row(
        "connectedAt",
        header(CONNECTED_AT, |c, v| {
            let ms = v.to_str().ok().and_then(|s| s.trim().parse::<i64>().ok());
            c.connected_at = Some(ms.filter(|ms| *ms >= 0).ok_or(Malformed)?);
            Ok(())
        }),
        Supply::ConnectedAt,
    ),
    row(
        "domainName",
        header(DOMAIN_NAME, |c, v| {
            c.domain = text(v).to_owned();
            Ok(())
        }),
        Supply::DomainName,
    ),
    row(
        "eventType",
        header(EVENT_TYPE, |c, v| {
            c.event_type = text(v).to_owned();
            Ok(())
        }),
        Supply::EventType,
    ),
    row("messageId", None, Supply::MessageId),
    row(
        "routeKey",
        header(ROUTE_KEY, |c, v| {
            c.route_key = text(v).to_owned();
            Ok(())
        }),
        Supply::RouteKey,
    ),
    row(
        "requestId",
        header(REQUEST_ID, |c, v| {
            c.request_id = text(v).to_owned();
            Ok(())
        }),
        Supply::RequestId,
    ),
    row("extendedRequestId", None, Supply::RequestId),
    row("apiId", None, Supply::ApiId),
    row(
        "identity.sourceIp",
        header(SOURCE_IP, |c, v| {
            c.source_ip = text(v).to_owned();
            Ok(())
        }),
        Supply::SourceIp,
    ),
    row(
        "identity.userAgent",
        header(USER_AGENT, |c, v| {
            c.user_agent = text(v).to_owned();
            Ok(())
        }),
        Supply::UserAgent,
    ),
    row("requestTime", None, Supply::RequestTime),
    row("requestTimeEpoch", None, Supply::RequestTimeEpoch),
    row(
        "stage",
        header(STAGE, |c, v| {
            c.stage = text(v).to_owned();
            Ok(())
        }),
        Supply::Stage,
    ),
    row(
        "disconnectStatusCode",
        header(DISCONNECT_STATUS, |c, v| {
            c.disconnect_status = v.to_str().ok().and_then(|s| s.trim().parse::<u16>().ok());
            Ok(())
        }),
        Supply::DisconnectStatus,
    ),
    row(
        "disconnectReason",
        header(DISCONNECT_REASON, |c, v| {
            c.disconnect_reason = v.to_str().ok().map(str::to_owned);
            Ok(())
        }),
        Supply::DisconnectReason,
    ),
];

/// The row of a `context.*` variable (named without the `context.` prefix).
pub fn context_variable(variable: &str) -> Option<&'static ContextVariable> {
    CONTEXT.iter().find(|row| row.variable == variable)
}

/// Integration paths on the backend's public port.
pub const PATH_CONNECT: &str = "/connect";
pub const PATH_DISCONNECT: &str = "/disconnect";
pub const PATH_MESSAGE: &str = "/message";

/// API Gateway's message payload limit (128 KiB), also the backend's request body limit.
pub const MAX_MESSAGE_BYTES: usize = 128 * 1024;
/// API Gateway's WebSocket frame limit (32 KiB).
pub const MAX_FRAME_BYTES: usize = 32 * 1024;
/// `@connections` PostToConnection payload limit.
pub const MAX_POST_BYTES: usize = 131_072;
/// API Gateway closes every connection after two hours.
pub const MAX_CONNECTION_SECS: u64 = 2 * 60 * 60;
/// API Gateway closes a connection after ten idle minutes.
pub const IDLE_TIMEOUT_SECS: u64 = 10 * 60;
/// Integration timeout default (29 s).
pub const INTEGRATION_TIMEOUT_MS: u64 = 29_000;
/// Request line and headers together, at most. API Gateway documents 10240 bytes for the
/// "total combined size of request line and header values" of REST and HTTP APIs; its WebSocket
/// quotas name no such limit, so the handshake and the backend's public port take the same.
pub const MAX_HEADER_BYTES: usize = 10_240;
/// API Gateway's quota "Length, in characters, of the URL for a WebSocket API" (not
/// increasable): longer handshakes are refused with 414 before `$connect`.
pub const MAX_URL_CHARS: usize = 4096;
/// What a session keeps of the client's User-Agent, at most.
pub const MAX_STORED_USER_AGENT: usize = 512;

/// Characters a shared secret may not contain: it travels in a header, as a single-quoted
/// literal in the template's RequestParameters (`'`), and in the gateway's comma-separated
/// parameter list (`,`).
const SECRET_FORBIDDEN: &[u8] = b" \"',\\`";

/// Checks a shared secret: at least 16 printable ASCII characters, none of space, `"`, `'`,
/// `,`, `\` or a backtick (the CloudFormation template's `SharedSecret` pattern says the same).
pub fn check_shared_secret(secret: &str) -> Result<(), String> {
    if secret.len() < 16 {
        return Err("must be at least 16 characters".into());
    }
    if !secret
        .bytes()
        .all(|b| b.is_ascii_graphic() && !SECRET_FORBIDDEN.contains(&b))
    {
        return Err(
            "must be printable ASCII without spaces, quotes, commas, backslashes or backticks (it travels in a header and in the template's literals)"
                .into(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `integration.request.header.x-socketless-*: context.X` line of the template names a
    /// row of [`CONTEXT`] with that header, and every header of the table is mapped there.
    #[test]
    fn template_maps_the_table() {
        let template = include_str!("../cfn/websocket-api.yml");
        let mut mapped = Vec::new();
        for line in template.lines() {
            let Some(rest) = line.trim().strip_prefix("integration.request.header.") else {
                continue;
            };
            let Some((name, value)) = rest.split_once(':') else {
                continue;
            };
            let Some(at) = value.find("context.") else {
                continue;
            };
            let variable: String = value[at + "context.".len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '.')
                .collect();
            let row = context_variable(&variable).unwrap_or_else(|| panic!("context.{variable} is not in the table"));
            assert_eq!(row.header.map(|h| h.name), Some(name), "context.{variable}");
            mapped.push(name.to_string());
        }
        for row in CONTEXT {
            if let Some(h) = row.header {
                assert!(
                    mapped.iter().any(|m| m == h.name),
                    "{} is not mapped by the template",
                    h.name
                );
            }
        }
    }
}

//! The wire contract between a gateway and the backend: the request headers that carry the
//! gateway context, the paths of the integration endpoints, and the limits both sides enforce.
//!
//! The CloudFormation template (`cfn/websocket-api.yml`) maps API Gateway's `context.*` variables
//! onto exactly these header names, and `socketless gateway` applies the same mapping by reading
//! that template, so a backend cannot tell the two gateways apart.

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

/// Every context header with the `context.*` variable API Gateway maps onto it.
pub const CONTEXT_HEADERS: &[(&str, &str)] = &[
    (CONNECTION_ID, "context.connectionId"),
    (ROUTE_KEY, "context.routeKey"),
    (EVENT_TYPE, "context.eventType"),
    (REQUEST_ID, "context.requestId"),
    (DOMAIN_NAME, "context.domainName"),
    (STAGE, "context.stage"),
    (CONNECTED_AT, "context.connectedAt"),
    (SOURCE_IP, "context.identity.sourceIp"),
    (USER_AGENT, "context.identity.userAgent"),
];

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

//! The wire contract between a gateway and the backend: the request headers that carry the
//! gateway context, the paths of the integration endpoints, and the limits both sides enforce.
//!
//! The CloudFormation template (`cfn/websocket-api.yml`) maps API Gateway's `context.*` variables
//! onto exactly these header names, and `socketless gateway` applies the same mapping by reading
//! that template, so a backend cannot tell the two gateways apart. [`CONTEXT`] is the one table
//! of those variables: what the gateway supplies, which header carries it, and where the backend
//! keeps it in the [`RequestContext`]. Every list of context headers is built from it: the
//! gateway's context values, the backend's reader, the headers `serve --upstream` passes on to
//! the app, the conformance kit's checks, the property test and the fuzz target. The rows a
//! `$connect` authorizer supplies (`authorizer.principalId`, and the `authorizer.<key>` pattern)
//! are optional: absent without one.

use http::HeaderValue;

use crate::gateway::IamIdentity;

/// What every header of the contract begins with.
pub const HEADER_PREFIX: &str = "x-socketless-";

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
/// Principal a `$connect` authorizer returned (`context.authorizer.principalId`; optional: absent
/// without an authorizer). `serve` trusts it on `/connect` only, stores it on the session and
/// gives the stored value to every later call (see [`crate::backend::identity`]).
pub const PRINCIPAL_ID: &str = "x-socketless-principal-id";
/// The subprotocols the client offered on `$connect`, as offered (comma-separated), mapped from
/// the handshake's `Sec-WebSocket-Protocol` (`route.request.header.Sec-WebSocket-Protocol`, not a
/// context variable). The backend confirms one by answering `/connect` with
/// `Sec-WebSocket-Protocol`; `serve` passes it on to an upstream app.
pub const SUBPROTOCOLS: &str = "x-socketless-subprotocols";
/// The resume key a client gave on `$connect` (`?resume=<key>`, the template parameter
/// `ResumeParameter`), mapped from the handshake's query string like [`SUBPROTOCOLS`]. `serve`
/// derives the logical session id from it and never stores or logs the key itself (see
/// [`crate::backend::resume`]).
pub const RESUME_KEY: &str = "x-socketless-resume-key";
/// Set by `serve` on every event it sends the handler or the app: the logical session id (the
/// connection id for a session without a resume key).
pub const SESSION_ID: &str = "x-socketless-session-id";
/// Set by `serve` on `/connect`: `true` when the connect resumed a session by its key.
pub const RESUMED: &str = "x-socketless-resumed";
/// Set by `serve` on a resumed `/connect`: `false` when a bound dropped messages of the gap.
pub const RECOVERED: &str = "x-socketless-recovered";
/// `binary` on a message that arrived in a binary frame (`socketless gateway --binary-frames`;
/// the body is the frame's bytes), and on an answer whose body is to go out as a binary frame.
/// `serve` passes it on to an upstream app, and answers with it for a binary reply.
pub const FRAME: &str = "x-socketless-frame";
/// The value of [`FRAME`] that marks a binary frame.
pub const FRAME_BINARY: &str = "binary";
/// Whether an answer's headers mark its body as a binary frame: `x-socketless-frame: binary`, or
/// `Content-Type: application/octet-stream`.
pub fn says_binary(headers: &http::HeaderMap) -> bool {
    let frame = headers.get(FRAME).map(|v| v.as_bytes());
    let binary_type = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/octet-stream"));
    binary_type || frame.is_some_and(|f| f.eq_ignore_ascii_case(FRAME_BINARY.as_bytes()))
}

/// Set by `serve` (not the gateway) on every `/disconnect` it sends the handler or the app: the
/// same value on every retry and duplicate for one session, so the app can drop duplicates.
pub const DISCONNECT_ID: &str = "x-socketless-disconnect-id";
/// Shared secret the gateway adds as a literal; checked when the backend has one configured.
pub const SHARED_SECRET: &str = "x-socketless-secret";

/// Headers of the answer to `/connect` (from a handler through `serve`, or from the app in
/// upstream mode) that `serve` keeps with the new session. None reaches the gateway.
/// `x-socketless-attribute-NAME: value`: a session attribute (see [`crate::backend::identity`]).
pub const ATTRIBUTE_PREFIX: &str = crate::backend::identity::ATTRIBUTE_PREFIX;
/// `x-socketless-groups: a,b`: the groups the connection joins (comma-separated, the header may
/// repeat; each name 1..=128 bytes of `[A-Za-z0-9._:@=-]`; at most `--max-groups-per-connection`
/// and 32). A name that breaks a rule refuses the connect with 500, and no session is made.
pub const GROUPS: &str = "x-socketless-groups";

/// The answer headers of `/connect`: the name (a prefix for attributes) and what it does.
pub const CONNECT_ANSWER_HEADERS: &[(&str, &str)] = &[
    (
        ATTRIBUTE_PREFIX,
        "sets session attribute NAME, given back on every later call",
    ),
    (GROUPS, "joins the connection to these groups"),
];

/// The gateway context of one call, read from the request headers by the rows of [`CONTEXT`]
/// (see [`crate::backend::request_context`]); what a [`crate::handler::MessageHandler`] receives.
#[derive(Debug, Clone, Default)]
pub struct RequestContext {
    pub connection_id: String,
    pub route_key: String,
    pub event_type: String,
    pub request_id: String,
    pub domain: String,
    pub stage: String,
    /// Epoch milliseconds, when the gateway sent it.
    pub connected_at: Option<i64>,
    pub source_ip: String,
    pub user_agent: String,
    /// Close status on `$disconnect`, when the gateway maps it.
    pub disconnect_status: Option<u16>,
    pub disconnect_reason: Option<String>,
    /// `/disconnect` only: the session's disconnect id ([`DISCONNECT_ID`]), set by `serve`.
    pub disconnect_id: Option<std::sync::Arc<str>>,
    /// The principal an authorizer vouched for at `$connect`, as stored on the session: on
    /// `/message` and `/disconnect` the stored value, never the request's own header.
    pub principal_id: Option<std::sync::Arc<str>>,
    /// The session's attributes, set at `/connect` by the handler or the app; empty on
    /// `/connect` itself.
    pub attributes: crate::backend::identity::Attributes,
    /// `$connect` only: the subprotocols the client offered, as offered (from [`SUBPROTOCOLS`]).
    pub subprotocols: Option<Box<str>>,
    /// The message arrived in a binary frame ([`FRAME`] said `binary`).
    pub binary: bool,
    /// `$connect` only: the resume key the client gave ([`RESUME_KEY`]); never logged.
    pub resume_key: Option<Box<str>>,
    /// The logical session id ([`SESSION_ID`]), set by `serve`; `None` reads as the connection id.
    pub session_id: Option<std::sync::Arc<str>>,
    /// `/connect` only, set by `serve`: whether the connect resumed a session ([`RESUMED`]).
    pub resumed: Option<bool>,
    /// A resumed `/connect` only: whether the gap was kept whole ([`RECOVERED`]).
    pub recovered: Option<bool>,
    /// Every header of the call, for handlers whose
    /// [`crate::handler::MessageHandler::wants_headers`] says so (to read parameters the
    /// template maps beyond the context); `None` otherwise.
    pub headers: Option<std::sync::Arc<http::HeaderMap>>,
    /// The W3C `traceparent` of this call: `serve`'s own span when it exports traces, else the
    /// one the call came with, unchanged; `None` when it came with none (see [`crate::trace`]).
    /// An upstream app receives it as its `traceparent` header.
    pub traceparent: Option<String>,
}

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
    /// The `principalId` a `$connect` authorizer returned, kept on the connection.
    AuthorizerPrincipalId,
    /// Connections authorized with `AWS_IAM` on `$connect` only: the caller's identity, from
    /// the gateway's SigV4 key.
    Iam(IamIdentity),
}

/// Why a context header's value was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed;

/// How the backend reads one header into the [`RequestContext`].
pub type Store = fn(&mut RequestContext, &HeaderValue) -> Result<(), Malformed>;

/// The header's value back out of the [`RequestContext`], to pass the context on (the upstream
/// app gets the same headers); `None` when the call carried none, or an empty one.
pub type Load = fn(&RequestContext) -> Option<String>;

/// A context header: its name and where the backend keeps its value.
#[derive(Clone, Copy)]
pub struct Header {
    pub name: &'static str,
    pub store: Store,
    pub load: Load,
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

/// A text field as a header value: an empty one is not passed on.
fn nonempty(field: &str) -> Option<String> {
    (!field.is_empty()).then(|| field.to_owned())
}

/// A header kept as text in a `String` field of the [`RequestContext`].
macro_rules! text_header {
    ($name:expr, $field:ident) => {
        Some(Header {
            name: $name,
            store: |c, v| {
                c.$field = text(v).to_owned();
                Ok(())
            },
            load: |c| nonempty(&c.$field),
        })
    };
}

impl RequestContext {
    /// The subprotocols the client offered, in order.
    pub fn offered_subprotocols(&self) -> impl Iterator<Item = &str> {
        self.subprotocols
            .as_deref()
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
    }
}

const fn row(variable: &'static str, header: Option<Header>, supply: Supply) -> ContextVariable {
    ContextVariable {
        variable,
        header,
        supply,
    }
}

/// Every context variable the gateway supplies, with the header the backend reads it from.
/// The gateway's context, the mappings it accepts, the backend's header reader and the headers
/// passed on to an upstream app are all built from this table; tests check the template's
/// RequestParameters against it and that every header row reaches every consumer.
///
/// A variable the gateway already supplies becomes a header in one row here (and a field of
/// [`RequestContext`] when it needs one), plus its mapping in `cfn/websocket-api.yml`.
pub const CONTEXT: &[ContextVariable] = &[
    row(
        "connectionId",
        text_header!(CONNECTION_ID, connection_id),
        Supply::ConnectionId,
    ),
    row(
        "connectedAt",
        Some(Header {
            name: CONNECTED_AT,
            store: |c, v| {
                let ms = v.to_str().ok().and_then(|s| s.trim().parse::<i64>().ok());
                c.connected_at = Some(ms.filter(|ms| *ms >= 0).ok_or(Malformed)?);
                Ok(())
            },
            load: |c| c.connected_at.map(|ms| ms.to_string()),
        }),
        Supply::ConnectedAt,
    ),
    row("domainName", text_header!(DOMAIN_NAME, domain), Supply::DomainName),
    row("eventType", text_header!(EVENT_TYPE, event_type), Supply::EventType),
    row("messageId", None, Supply::MessageId),
    row("routeKey", text_header!(ROUTE_KEY, route_key), Supply::RouteKey),
    row("requestId", text_header!(REQUEST_ID, request_id), Supply::RequestId),
    row("extendedRequestId", None, Supply::RequestId),
    row("apiId", None, Supply::ApiId),
    row(
        "identity.sourceIp",
        text_header!(SOURCE_IP, source_ip),
        Supply::SourceIp,
    ),
    row(
        "identity.userAgent",
        text_header!(USER_AGENT, user_agent),
        Supply::UserAgent,
    ),
    row("identity.accessKey", None, Supply::Iam(IamIdentity::AccessKey)),
    row("identity.caller", None, Supply::Iam(IamIdentity::Caller)),
    row("identity.user", None, Supply::Iam(IamIdentity::User)),
    row("identity.userArn", None, Supply::Iam(IamIdentity::UserArn)),
    row("identity.accountId", None, Supply::Iam(IamIdentity::AccountId)),
    row("requestTime", None, Supply::RequestTime),
    row("requestTimeEpoch", None, Supply::RequestTimeEpoch),
    row("stage", text_header!(STAGE, stage), Supply::Stage),
    row(
        "disconnectStatusCode",
        Some(Header {
            name: DISCONNECT_STATUS,
            store: |c, v| {
                c.disconnect_status = v.to_str().ok().and_then(|s| s.trim().parse::<u16>().ok());
                Ok(())
            },
            load: |c| c.disconnect_status.map(|status| status.to_string()),
        }),
        Supply::DisconnectStatus,
    ),
    row(
        "disconnectReason",
        Some(Header {
            name: DISCONNECT_REASON,
            store: |c, v| {
                c.disconnect_reason = v.to_str().ok().map(str::to_owned);
                Ok(())
            },
            load: |c| c.disconnect_reason.as_deref().and_then(nonempty),
        }),
        Supply::DisconnectReason,
    ),
    // Set on a connection a `$connect` REQUEST authorizer allowed, for every route of it.
    row(
        "authorizer.principalId",
        // Optional: absent without an authorizer. `serve` trusts it on `/connect` only, stores it
        // on the session and gives the stored value to every later call.
        Some(Header {
            name: PRINCIPAL_ID,
            store: |c, v| {
                c.principal_id = Some(text(v)).filter(|p| !p.is_empty()).map(Into::into);
                Ok(())
            },
            load: |c| c.principal_id.as_deref().and_then(nonempty),
        }),
        Supply::AuthorizerPrincipalId,
    ),
];

/// The pattern row of the context table: `context.authorizer.<key>` is each key of the
/// `context` map a `$connect` authorizer returned (values stringified), kept on the connection
/// like `authorizer.principalId`. Any key is accepted when a template loads; one the
/// authorizer did not return is absent, and its mapping is left out.
pub const AUTHORIZER_CONTEXT_PREFIX: &str = "authorizer.";

/// The key of a `context.authorizer.<key>` variable (named without `context.`) that is not a
/// row of [`CONTEXT`]: `None` for any other variable.
pub fn authorizer_context_key(variable: &str) -> Option<&str> {
    if context_variable(variable).is_some() {
        return None;
    }
    variable
        .strip_prefix(AUTHORIZER_CONTEXT_PREFIX)
        .filter(|k| !k.is_empty() && k.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.$".contains(&b)))
}

/// The rows the backend reads a header for, in table order, with their headers.
pub fn header_rows() -> impl Iterator<Item = (&'static ContextVariable, Header)> {
    CONTEXT.iter().filter_map(|row| Some((row, row.header?)))
}

/// Every context header, in table order.
pub fn headers() -> impl Iterator<Item = Header> {
    CONTEXT.iter().filter_map(|row| row.header)
}

/// A `context.*` variable (named without the `context.` prefix).
pub fn context_variable(variable: &str) -> Option<&'static ContextVariable> {
    CONTEXT.iter().find(|row| row.variable == variable)
}

/// Integration paths on the backend's public port.
pub const PATH_CONNECT: &str = "/connect";
pub const PATH_DISCONNECT: &str = "/disconnect";
pub const PATH_MESSAGE: &str = "/message";
/// `serve` takes `/disconnect` calls many to a call here (see [`crate::carried::requests`]).
pub const PATH_CARRIED_DISCONNECTS: &str = "/@socketless/v1/disconnects";
/// On `serve`'s answers to `/disconnect`: the path on the same origin where it takes
/// `/disconnect` calls many to a call. A gateway that reads it sends its later `$disconnect`
/// calls to that origin there, many to a call; no other backend sends it, so every other
/// backend gets them one by one, as API Gateway sends them.
pub const CARRIES_DISCONNECTS: &str = "x-socketless-carries-disconnects";

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
#[path = "contract_tests.rs"]
mod tests;

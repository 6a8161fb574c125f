//! The extension point: what the backend does with each connect, message and disconnect.
//!
//! The default, [`Echo`], answers every message with its own body (the seed's "type hello, get
//! hello back"). To plug in your own logic, implement [`MessageHandler`] in a crate that depends
//! on `socketless` and start the binary with [`crate::cli::main_with_handler`]; the README shows
//! a complete example.

use bytes::Bytes;
use http::StatusCode;

/// A session's attributes: set at connect, given back on every later call.
pub use crate::backend::identity::{AttributeError, Attributes};
/// The gateway context a handler receives; defined with the header table it is read from.
pub use crate::contract::RequestContext;
/// The future every handler method returns.
pub use crate::future::BoxFuture;

/// A handler's refusal: the status and a message for the caller. On `$connect` the status
/// becomes the handshake's status, so the client sees it.
#[derive(Debug, Clone)]
pub struct Rejection {
    pub status: StatusCode,
    pub message: String,
    /// The answer's body as it is (an upstream app's); `None` answers `{"error": message}`.
    pub body: Option<Bytes>,
}

impl Rejection {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Rejection {
            status,
            message: message.into(),
            body: None,
        }
    }

    /// A refusal whose answer is this status and body, unchanged.
    pub fn with_body(status: StatusCode, body: Bytes) -> Self {
        Rejection {
            status,
            message: String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
            body: Some(body),
        }
    }
}

/// What an accepted `$connect` keeps: the session's attributes, the groups the connection joins
/// at once (names as [`crate::store::groups::valid_group_name`] takes them; at most
/// `--max-groups-per-connection`, and 32; beyond that the connect is refused with 500), and the
/// subprotocol to confirm.
#[derive(Debug, Clone, Default)]
pub struct Accepted {
    pub attributes: Attributes,
    pub groups: Vec<String>,
    /// Sent as the answer's `Sec-WebSocket-Protocol`; the gateway copies it into the 101. It
    /// must be one of [`RequestContext::offered_subprotocols`]: a gateway refuses the handshake
    /// (502) for any other.
    pub subprotocol: Option<String>,
}

/// A reply to one message, and whether it goes out as a binary frame (with `socketless gateway
/// --binary-frames`; `serve` answers it as `application/octet-stream` with
/// `x-socketless-frame: binary`).
#[derive(Debug, Clone)]
pub struct Reply {
    pub body: Bytes,
    pub binary: bool,
}

/// Application logic. Implementations must be stateless across pods: any pod may receive any
/// call. Keep state in the session store or your own services.
pub trait MessageHandler: Send + Sync + 'static {
    /// Whether the handler reads [`RequestContext::headers`]; copying them costs an allocation
    /// per call, so the default is no.
    fn wants_headers(&self) -> bool {
        false
    }

    /// Runs before the session is created; a rejection refuses the WebSocket handshake.
    fn on_connect<'a>(&'a self, _ctx: &'a RequestContext) -> BoxFuture<'a, Result<(), Rejection>> {
        Box::pin(async { Ok(()) })
    }

    /// What `serve` calls at connect: [`Self::on_connect`], and the attributes to keep on the
    /// session. They come back in [`RequestContext::attributes`] on every later message and
    /// disconnect of the connection, on any pod, from `serve`'s cache (no store call). Beyond the
    /// limits of [`Attributes::check`] the connect is refused with 500 and no session is made.
    /// The default keeps none; override this instead of `on_connect` to set some.
    fn on_connect_with_attributes<'a>(
        &'a self,
        ctx: &'a RequestContext,
    ) -> BoxFuture<'a, Result<Attributes, Rejection>> {
        Box::pin(async move { self.on_connect(ctx).await.map(|()| Attributes::new()) })
    }

    /// For an accepted `$connect`: the subprotocol to confirm, sent as the answer's
    /// `Sec-WebSocket-Protocol` (the gateway copies it into the 101). It must be one the
    /// client offered; browsers close a connection that offered some and got none. Default: none.
    fn subprotocol(&self, _ctx: &RequestContext) -> Option<String> {
        None
    }

    /// What `serve` calls at connect: [`Self::on_connect_with_attributes`] and
    /// [`Self::subprotocol`] by default, joining no group. Override it to join groups at connect
    /// (written with the session; an app answers `x-socketless-groups: a,b`) or to choose the
    /// subprotocol from the connect's outcome (an upstream app does, from its answer's
    /// `Sec-WebSocket-Protocol`).
    fn on_connect_accepted<'a>(&'a self, ctx: &'a RequestContext) -> BoxFuture<'a, Result<Accepted, Rejection>> {
        Box::pin(async move {
            let attributes = self.on_connect_with_attributes(ctx).await?;
            Ok(Accepted {
                attributes,
                groups: Vec::new(),
                subprotocol: self.subprotocol(ctx),
            })
        })
    }

    /// What `serve` calls for a message: [`Self::on_message`], its reply binary when the
    /// message was ([`RequestContext::binary`]). Override it to choose the frame's kind.
    fn on_message_reply<'a>(
        &'a self,
        ctx: &'a RequestContext,
        body: Bytes,
    ) -> BoxFuture<'a, Result<Option<Reply>, Rejection>> {
        Box::pin(async move {
            let reply = self.on_message(ctx, body).await?;
            Ok(reply.map(|body| Reply {
                body,
                binary: ctx.binary,
            }))
        })
    }

    /// Handles one message. `Some(reply)` is sent back to the client: in the HTTP response
    /// (synchronous mode) or through `@connections` (asynchronous mode). `None` sends nothing.
    fn on_message<'a>(
        &'a self,
        ctx: &'a RequestContext,
        body: Bytes,
    ) -> BoxFuture<'a, Result<Option<Bytes>, Rejection>>;

    /// Runs after the connection closed, at least once per session: [`RequestContext::disconnect_id`]
    /// is the same on every call for one session, so a repeat can be recognised and dropped.
    fn on_disconnect<'a>(&'a self, _ctx: &'a RequestContext) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }

    /// What `serve` calls for a disconnect: [`Self::on_disconnect`], and whether it was taken.
    /// An `Err` is retried with backoff until `--disconnect-deadline`; the session is deleted
    /// once this returns `Ok`. The default always succeeds.
    fn on_disconnect_result<'a>(&'a self, ctx: &'a RequestContext) -> BoxFuture<'a, Result<(), Rejection>> {
        Box::pin(async move {
            self.on_disconnect(ctx).await;
            Ok(())
        })
    }
}

/// Replies to every message with the message itself.
#[derive(Debug, Default, Clone, Copy)]
pub struct Echo;

impl MessageHandler for Echo {
    fn on_message<'a>(
        &'a self,
        _ctx: &'a RequestContext,
        body: Bytes,
    ) -> BoxFuture<'a, Result<Option<Bytes>, Rejection>> {
        Box::pin(async move { Ok(Some(body)) })
    }

    /// What the default does, in one future instead of two (every message pays for each).
    fn on_message_reply<'a>(
        &'a self,
        ctx: &'a RequestContext,
        body: Bytes,
    ) -> BoxFuture<'a, Result<Option<Reply>, Rejection>> {
        let binary = ctx.binary;
        Box::pin(async move { Ok(Some(Reply { body, binary })) })
    }
}

//! The gateway's one error type, and the one place that turns it into what a client sees:
//! `@connections` errors in AWS's shape (`x-amzn-errortype` and `{"message": …}`, as the AWS
//! SDKs parse them), handshake and `$connect` refusals in API Gateway's, and the start-up
//! failures `socketless gateway` reports. The text a client gets is fixed per variant; causes
//! (a peer's failure, an I/O error) go to the log, never into a response.

use std::borrow::Cow;

use http::{HeaderValue, Response, StatusCode};

use crate::contract::MAX_POST_BYTES;
use crate::http_server::{self, Body};

/// Why the gateway refused a request, or could not start.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// `@connections` with a method other than POST, GET or DELETE.
    #[error("use POST, GET or DELETE")]
    MethodNotAllowed,
    /// The batch extension's `info` with a method other than GET, or `deliver` with one other
    /// than POST.
    #[error("use GET for info, POST for deliver")]
    ExtensionMethod,
    /// A batch delivery that is malformed or over a limit; the text says which.
    #[error("bad delivery: {0}")]
    BadDelivery(String),
    /// A path that is neither the stage nor `@connections`, or a call whose signature or
    /// forwarding marker does not verify.
    #[error("Forbidden")]
    Forbidden,
    /// An `@connections` body over [`MAX_POST_BYTES`].
    #[error("Request body exceeded {MAX_POST_BYTES} bytes")]
    PayloadTooLarge,
    /// The budget of `@connections` bodies held at once is spent.
    #[error("too many @connections bodies are being received; try again")]
    BodiesBusy,
    /// An `@connections` body that did not arrive within the body timeout.
    #[error("the body did not arrive in time")]
    BodyTimedOut,
    /// An `@connections` body that broke off.
    #[error("unreadable body")]
    BodyUnreadable,
    /// No replica holds the connection (AWS answers with an empty message).
    #[error("the connection is gone")]
    Gone,
    /// The replica that holds the connection did not answer in time.
    #[error("the gateway replica that holds this connection did not answer in time; try again")]
    OwnerUnavailable,
    /// The client's share of the outbound budget is spent.
    #[error("the client's outgoing buffer is full")]
    OutboxFull,
    /// A request on the stage that is not a WebSocket upgrade.
    #[error("this is a WebSocket endpoint")]
    NotWebSocket,
    /// A handshake URL longer than API Gateway takes.
    #[error("URI Too Long")]
    UriTooLong,
    /// A handshake without `Sec-WebSocket-Key`, or not version 13.
    #[error("missing Sec-WebSocket-Key or unsupported version")]
    BadHandshake,
    /// A handshake while the gateway drains.
    #[error("the gateway is shutting down")]
    ShuttingDown,
    /// A handshake past `--max-connections`.
    #[error("LimitExceededException: the gateway is at its maximum connection count")]
    TooManyConnections,
    /// A handshake under `AuthorizationType: AWS_IAM` whose presigned URL does not verify.
    #[error("Forbidden")]
    IamRefused,
    /// The handshake's task ended without an answer.
    #[error("handshake failed")]
    HandshakeFailed,
    /// The `$connect` integration answered with a status that is not 2xx.
    #[error("$connect refused with {status}")]
    ConnectRefused {
        status: StatusCode,
        connection_id: String,
        request_id: String,
    },
    /// The `$connect` integration did not answer within its timeout.
    #[error("Endpoint request timed out")]
    ConnectTimedOut,
    /// The `$connect` integration call failed.
    #[error("the $connect integration call failed")]
    ConnectFailed,
    /// The `$connect` integration accepted with a `Sec-WebSocket-Protocol` the client did not
    /// offer (or more than one): a malformed integration answer.
    #[error("the $connect integration chose a subprotocol the client did not offer")]
    SubprotocolNotOffered,
    /// A `$connect` authorizer's identity source is missing or empty, or the authorizer
    /// failed with `Unauthorized`.
    #[error("Unauthorized")]
    Unauthorized,
    /// The `$connect` authorizer's policy does not allow `$connect`.
    #[error("Forbidden")]
    AuthorizerDenied,
    /// The `$connect` authorizer failed, timed out, or gave a malformed or oversized answer.
    #[error("the $connect authorizer failed")]
    AuthorizerFailed,
    /// The signal handlers could not be installed.
    #[error(transparent)]
    Signals(std::io::Error),
    /// The template's `$connect` has `AuthorizationType: AWS_IAM` and no key pair verifies it.
    #[error(
        "the template's $connect route has AuthorizationType AWS_IAM: set --sigv4-access-key-id and --sigv4-secret-access-key (SOCKETLESS_GATEWAY_SIGV4_ACCESS_KEY_ID, SOCKETLESS_GATEWAY_SIGV4_SECRET_ACCESS_KEY) to the key pair its handshakes are presigned with"
    )]
    IamWithoutKey,
    /// The listen address could not be bound.
    #[error(transparent)]
    Bind(std::io::Error),
    /// The bound listener has no local address.
    #[error(transparent)]
    Listener(std::io::Error),
}

/// How an answer's body is built.
enum Shape {
    /// AWS's error shape: `x-amzn-errortype: KIND` and `{"message": …}`.
    Aws(&'static str),
    /// `{"message": …}`, as API Gateway refuses a handshake.
    Message,
    /// `{"error": …}`, the project's own shape (see [`http_server::error`]).
    Error,
}

impl GatewayError {
    /// The status, the shape and the message a client sees.
    fn answer(&self) -> (StatusCode, Shape, Cow<'static, str>) {
        use GatewayError as E;
        use Shape::{Aws, Error, Message};
        let (status, shape, message) = match self {
            E::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                Aws("MethodNotAllowedException"),
                "use POST, GET or DELETE",
            ),
            E::ExtensionMethod => (
                StatusCode::METHOD_NOT_ALLOWED,
                Aws("MethodNotAllowedException"),
                "use GET for info, POST for deliver",
            ),
            // The caller's own request described, never a cause from inside the gateway.
            E::BadDelivery(why) => {
                return (
                    StatusCode::BAD_REQUEST,
                    Aws("BadRequestException"),
                    Cow::Owned(why.clone()),
                );
            }
            E::Forbidden => (StatusCode::FORBIDDEN, Aws("ForbiddenException"), "Forbidden"),
            E::PayloadTooLarge => {
                let message = format!("Request body exceeded {MAX_POST_BYTES} bytes");
                return (
                    StatusCode::PAYLOAD_TOO_LARGE,
                    Aws("PayloadTooLargeException"),
                    message.into(),
                );
            }
            E::BodiesBusy => (
                StatusCode::TOO_MANY_REQUESTS,
                Aws("LimitExceededException"),
                "too many @connections bodies are being received; try again",
            ),
            E::BodyTimedOut => (
                StatusCode::REQUEST_TIMEOUT,
                Aws("BadRequestException"),
                "the body did not arrive in time",
            ),
            E::BodyUnreadable => (StatusCode::BAD_REQUEST, Aws("BadRequestException"), "unreadable body"),
            E::Gone => (StatusCode::GONE, Aws("GoneException"), ""),
            E::OwnerUnavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                Aws("ServiceUnavailableException"),
                "the gateway replica that holds this connection did not answer in time; try again",
            ),
            E::OutboxFull => (
                StatusCode::TOO_MANY_REQUESTS,
                Aws("LimitExceededException"),
                "the client's outgoing buffer is full",
            ),
            E::NotWebSocket => (StatusCode::UPGRADE_REQUIRED, Error, "this is a WebSocket endpoint"),
            E::UriTooLong => (StatusCode::URI_TOO_LONG, Error, "URI Too Long"),
            E::BadHandshake => (
                StatusCode::BAD_REQUEST,
                Error,
                "missing Sec-WebSocket-Key or unsupported version",
            ),
            E::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, Error, "the gateway is shutting down"),
            E::TooManyConnections => (
                StatusCode::TOO_MANY_REQUESTS,
                Message,
                "LimitExceededException: the gateway is at its maximum connection count",
            ),
            E::HandshakeFailed => (StatusCode::INTERNAL_SERVER_ERROR, Error, "handshake failed"),
            E::IamRefused => (StatusCode::FORBIDDEN, Message, "Forbidden"),
            E::ConnectRefused { status, .. } => (*status, Message, status.canonical_reason().unwrap_or("Forbidden")),
            E::ConnectTimedOut => (StatusCode::GATEWAY_TIMEOUT, Message, "Endpoint request timed out"),
            E::ConnectFailed | E::SubprotocolNotOffered => (StatusCode::BAD_GATEWAY, Message, "Internal server error"),
            E::Unauthorized => (StatusCode::UNAUTHORIZED, Message, "Unauthorized"),
            E::AuthorizerDenied => (StatusCode::FORBIDDEN, Message, "Forbidden"),
            E::AuthorizerFailed => (StatusCode::INTERNAL_SERVER_ERROR, Message, "Internal server error"),
            // Never sent: the gateway is not serving yet. Nothing of the cause in it.
            E::Signals(_) | E::Bind(_) | E::Listener(_) | E::IamWithoutKey => {
                (StatusCode::INTERNAL_SERVER_ERROR, Message, "Internal server error")
            }
        };
        (status, shape, Cow::Borrowed(message))
    }

    /// The answer a client gets, built only from the status and the fixed text of
    /// [`GatewayError::answer`] (plus the ids of a refused `$connect`).
    pub fn response(&self) -> Response<Body> {
        let (status, shape, message) = self.answer();
        let mut resp = match (&shape, self) {
            (
                Shape::Message,
                GatewayError::ConnectRefused {
                    connection_id,
                    request_id,
                    ..
                },
            ) => http_server::json(
                status,
                &serde_json::json!({
                    "message": message,
                    "connectionId": connection_id,
                    "requestId": request_id,
                }),
            ),
            (Shape::Message | Shape::Aws(_), _) => {
                http_server::json(status, &serde_json::json!({ "message": message }))
            }
            (Shape::Error, _) => http_server::error(status, &message),
        };
        if let Shape::Aws(kind) = shape {
            resp.headers_mut()
                .insert("x-amzn-errortype", HeaderValue::from_static(kind));
        }
        // The AWS SDKs retry a 503; this says when.
        if matches!(self, GatewayError::OwnerUnavailable) {
            resp.headers_mut()
                .insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn parts(err: GatewayError) -> (u16, Option<String>, Option<String>, String) {
        let resp = err.response();
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .map(|v| v.to_str().unwrap_or_default().to_string())
        };
        let (status, kind, retry) = (
            resp.status().as_u16(),
            header("x-amzn-errortype"),
            header("retry-after"),
        );
        // A `Full` body cannot fail.
        let body = match resp.into_body().collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(never) => match never {},
        };
        (status, kind, retry, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn aws_shapes_carry_the_error_type_and_a_message() {
        let (status, kind, retry, body) = parts(GatewayError::Gone).await;
        assert_eq!(
            (status, kind.as_deref(), retry, body.as_str()),
            (410, Some("GoneException"), None, r#"{"message":""}"#)
        );
        let (status, kind, _, body) = parts(GatewayError::PayloadTooLarge).await;
        assert_eq!(
            (status, kind.as_deref(), body.as_str()),
            (
                413,
                Some("PayloadTooLargeException"),
                r#"{"message":"Request body exceeded 131072 bytes"}"#
            )
        );
        let (status, kind, retry, _) = parts(GatewayError::OwnerUnavailable).await;
        assert_eq!(
            (status, kind.as_deref(), retry.as_deref()),
            (503, Some("ServiceUnavailableException"), Some("1"))
        );
    }

    #[tokio::test]
    async fn handshake_refusals_keep_their_shapes() {
        let (status, kind, _, body) = parts(GatewayError::TooManyConnections).await;
        assert_eq!(kind, None);
        assert_eq!(
            (status, body.as_str()),
            (
                429,
                r#"{"message":"LimitExceededException: the gateway is at its maximum connection count"}"#
            )
        );
        let (status, _, _, body) = parts(GatewayError::NotWebSocket).await;
        assert_eq!(
            (status, body.as_str()),
            (426, r#"{"error":"this is a WebSocket endpoint"}"#)
        );
        let refused = GatewayError::ConnectRefused {
            status: StatusCode::UNAUTHORIZED,
            connection_id: "c=".into(),
            request_id: "r".into(),
        };
        let (status, _, _, body) = parts(refused).await;
        assert_eq!(
            (status, body.as_str()),
            (401, r#"{"connectionId":"c=","message":"Unauthorized","requestId":"r"}"#)
        );
    }

    #[tokio::test]
    async fn start_up_causes_never_reach_a_body() {
        let err = GatewayError::Bind(std::io::Error::other("secret detail"));
        assert_eq!(err.to_string(), "secret detail");
        let (status, _, _, body) = parts(err).await;
        assert_eq!((status, body.as_str()), (500, r#"{"message":"Internal server error"}"#));
    }
}

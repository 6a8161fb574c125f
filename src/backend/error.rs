//! The one error type of both backend listeners, and the one place that maps it to an HTTP
//! status. Internal detail (store errors, push failures) goes to the log, never to the client.

use std::sync::LazyLock;

use http::{Response, StatusCode};

use super::push::PushOutcome;
use crate::handler::Rejection;
use crate::http_server::{self, Body, BodyError};
use crate::store::StoreError;
use crate::telemetry::LogThrottle;

/// One warning a second for failed store calls: an outage fails every request.
static STORE_WARNINGS: LazyLock<LogThrottle> = LazyLock::new(LogThrottle::default);

/// Why a request to the backend failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("missing {0} header")]
    MissingHeader(&'static str),
    #[error("invalid {0} header")]
    InvalidHeader(&'static str),
    #[error("missing shared secret")]
    NoSecret,
    #[error("wrong shared secret")]
    WrongSecret,
    #[error("missing bearer token (Authorization: Bearer TOKEN)")]
    NoToken,
    #[error("wrong bearer token")]
    WrongToken,
    #[error("no such route")]
    NoRoute,
    /// A body that is not what the route takes; the text says what it takes.
    #[error("{0}")]
    Malformed(&'static str),
    /// The method is not one the route takes; the text says which to use.
    #[error("{0}")]
    Method(&'static str),
    #[error("invalid connection id")]
    InvalidConnectionId,
    #[error("no such connection")]
    NoSuchConnection,
    #[error("no such session")]
    NoSuchSession,
    /// The connection cannot be reached through `@connections`; the text says why.
    #[error("{0}")]
    NoEndpoint(&'static str),
    #[error("the connection is gone")]
    Gone,
    #[error("the push failed: {0:?}")]
    Push(PushOutcome),
    /// The handler refused the call.
    #[error("{}", .0.message)]
    Rejected(Rejection),
    #[error(transparent)]
    Body(#[from] BodyError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ApiError {
    /// A store failure, logged with the call it belongs to.
    pub fn store(err: StoreError, connection_id: &str, request_id: Option<&str>) -> Self {
        if let Some(alike) = STORE_WARNINGS.admit() {
            match request_id {
                Some(request_id) => {
                    tracing::warn!(connection_id, request_id, error = %err, alike_since_last = alike, "session store call failed")
                }
                None => {
                    tracing::warn!(connection_id, error = %err, alike_since_last = alike, "session store call failed")
                }
            }
        }
        ApiError::Store(err)
    }

    /// The status and the message the caller sees.
    fn status(&self) -> (StatusCode, String) {
        let text = || self.to_string();
        match self {
            ApiError::MissingHeader(_)
            | ApiError::InvalidHeader(_)
            | ApiError::InvalidConnectionId
            | ApiError::Malformed(_) => (StatusCode::BAD_REQUEST, text()),
            ApiError::NoSecret | ApiError::NoToken | ApiError::WrongToken => (StatusCode::UNAUTHORIZED, text()),
            ApiError::WrongSecret => (StatusCode::FORBIDDEN, text()),
            ApiError::NoRoute | ApiError::NoSuchConnection | ApiError::NoSuchSession => (StatusCode::NOT_FOUND, text()),
            ApiError::Method(_) => (StatusCode::METHOD_NOT_ALLOWED, text()),
            ApiError::NoEndpoint(_) => (StatusCode::CONFLICT, text()),
            ApiError::Gone => (StatusCode::GONE, text()),
            ApiError::Push(outcome) => push_status(outcome),
            ApiError::Rejected(r) => (r.status, r.message.clone()),
            ApiError::Body(BodyError::TooLarge(_)) => (StatusCode::PAYLOAD_TOO_LARGE, text()),
            ApiError::Body(BodyError::TimedOut(_)) => (StatusCode::REQUEST_TIMEOUT, text()),
            ApiError::Body(BodyError::Busy) => (StatusCode::SERVICE_UNAVAILABLE, text()),
            ApiError::Body(BodyError::Read(_)) => (StatusCode::BAD_REQUEST, "request body could not be read".into()),
            ApiError::Store(StoreError::Rejected(_)) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "session store rejected the request".into(),
            ),
            ApiError::Store(_) => (StatusCode::SERVICE_UNAVAILABLE, "session store unavailable".into()),
        }
    }

    pub fn response(&self) -> Response<Body> {
        if let ApiError::Rejected(Rejection {
            status,
            body: Some(body),
            ..
        }) = self
        {
            return http_server::with_body(*status, &http_server::content_type::TEXT_UTF8, body.clone());
        }
        let (status, message) = self.status();
        let mut resp = http_server::error(status, &message);
        if matches!(self, ApiError::NoToken | ApiError::WrongToken) {
            resp.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Bearer realm=\"socketless-internal\""),
            );
        }
        resp
    }
}

/// The answer for a push that neither arrived nor found the connection gone.
fn push_status(outcome: &PushOutcome) -> (StatusCode, String) {
    let (status, message) = match outcome {
        PushOutcome::Throttled => (
            StatusCode::TOO_MANY_REQUESTS,
            "the gateway throttled the push (or the client's buffer is full)",
        ),
        PushOutcome::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "the message is over the gateway's limit"),
        PushOutcome::Forbidden => (
            StatusCode::BAD_GATEWAY,
            "the gateway refused the push (credentials or endpoint)",
        ),
        _ => (StatusCode::BAD_GATEWAY, "the push failed"),
    };
    (status, message.to_string())
}

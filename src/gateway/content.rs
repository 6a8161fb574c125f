//! Payload conversions between the client's frames and the backend's bodies: API Gateway's
//! ContentHandlingStrategy on an integration (the message on its way in) and on its `$default`
//! integration response (the answer on its way out), and the frame kind `--binary-frames` adds.
//!
//! API Gateway documents the strategies for WebSocket APIs as a workaround for binary data
//! sent base64-encoded in text frames: `CONVERT_TO_BINARY` on the integration decodes it for the
//! backend, `CONVERT_TO_TEXT` on the integration response encodes a binary answer as base64 text.
//! As for REST APIs, a payload already of the target kind passes through. Which answer is
//! binary is the gateway's choice (API Gateway's WebSocket APIs have no binary media types):
//! one whose `Content-Type` is `application/octet-stream`, or that carries
//! `x-socketless-frame: binary`, or that is not UTF-8.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::HeaderMap;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use super::connection::ClientMessage;
use super::template::ContentHandling;
use crate::contract::says_binary;

/// The body the backend receives for a message, and whether it is marked binary
/// (`x-socketless-frame: binary`: a binary frame passed as it is). `Err` when a conversion the
/// integration asks for fails (text that is not base64).
pub fn request(frame: ClientMessage, strategy: Option<ContentHandling>) -> Result<(Bytes, bool), ()> {
    match (frame, strategy) {
        (ClientMessage::Text(t), Some(ContentHandling::ConvertToBinary)) => STANDARD
            .decode(t.as_str().trim())
            .map(|b| (Bytes::from(b), false))
            .map_err(|_| ()),
        (ClientMessage::Binary(b), Some(ContentHandling::ConvertToText)) => {
            Ok((Bytes::from(STANDARD.encode(&b)), false))
        }
        (ClientMessage::Text(t), _) => Ok((Bytes::from(t), false)),
        // A binary frame with CONVERT_TO_BINARY, or without a strategy: its bytes, marked.
        (ClientMessage::Binary(b), _) => Ok((b, true)),
    }
}

/// The frame that carries the backend's answer to the client, or `Err` when it cannot be sent
/// (binary that no strategy or `--binary-frames` lets out, or text that is not base64 under
/// `CONVERT_TO_BINARY`).
pub fn reply(
    body: Bytes,
    headers: &HeaderMap,
    strategy: Option<ContentHandling>,
    binary_frames: bool,
) -> Result<Message, ()> {
    let marked = says_binary(headers);
    match strategy {
        Some(ContentHandling::ConvertToBinary) => {
            if marked {
                return Ok(Message::Binary(body));
            }
            let text = std::str::from_utf8(&body).map_err(|_| ())?;
            STANDARD
                .decode(text.trim())
                .map(|b| Message::Binary(Bytes::from(b)))
                .map_err(|_| ())
        }
        Some(ContentHandling::ConvertToText) => match (marked, Utf8Bytes::try_from(body.clone())) {
            (false, Ok(text)) => Ok(Message::Text(text)),
            _ => Ok(Message::Text(STANDARD.encode(&body).into())),
        },
        None if marked && binary_frames => Ok(Message::Binary(body)),
        // The answer becomes the frame without a copy when it is UTF-8.
        None => Utf8Bytes::try_from(body).map(Message::Text).map_err(|_| ()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn octet() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(http::header::CONTENT_TYPE, "application/octet-stream".parse().unwrap());
        h
    }

    fn marked() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(crate::contract::FRAME, "binary".parse().unwrap());
        h
    }

    #[test]
    fn requests() {
        let text = |s: &str| ClientMessage::Text(s.into());
        let bin = |b: &[u8]| ClientMessage::Binary(Bytes::copy_from_slice(b));
        let to_binary = Some(ContentHandling::ConvertToBinary);
        let to_text = Some(ContentHandling::ConvertToText);
        assert_eq!(
            request(text("AAEC/w=="), to_binary),
            Ok((Bytes::from_static(&[0, 1, 2, 255]), false))
        );
        assert_eq!(request(text("not base64!"), to_binary), Err(()));
        assert_eq!(
            request(text("{\"a\":1}"), to_text),
            Ok((Bytes::from_static(b"{\"a\":1}"), false))
        );
        assert_eq!(request(text("hi"), None), Ok((Bytes::from_static(b"hi"), false)));
        assert_eq!(
            request(bin(&[0, 255]), to_text),
            Ok((Bytes::from_static(b"AP8="), false))
        );
        assert_eq!(
            request(bin(&[0, 255]), to_binary),
            Ok((Bytes::from_static(&[0, 255]), true))
        );
        assert_eq!(request(bin(&[0, 255]), None), Ok((Bytes::from_static(&[0, 255]), true)));
    }

    #[test]
    fn replies() {
        let none = HeaderMap::new();
        let b = |s: &'static [u8]| Bytes::from_static(s);
        let to_binary = Some(ContentHandling::ConvertToBinary);
        let to_text = Some(ContentHandling::ConvertToText);
        // No strategy: text as text; binary only with --binary-frames and a mark.
        assert_eq!(reply(b(b"hi"), &none, None, false), Ok(Message::text("hi")));
        assert_eq!(reply(b(b"hi"), &octet(), None, false), Ok(Message::text("hi")));
        assert_eq!(reply(b(b"hi"), &octet(), None, true), Ok(Message::binary(b(b"hi"))));
        assert_eq!(reply(b(b"hi"), &marked(), None, true), Ok(Message::binary(b(b"hi"))));
        assert_eq!(reply(b(&[0xff]), &none, None, true), Err(()));
        // CONVERT_TO_TEXT: binary answers become base64 text; text passes.
        assert_eq!(reply(b(&[0, 255]), &none, to_text, false), Ok(Message::text("AP8=")));
        assert_eq!(reply(b(b"hi"), &octet(), to_text, false), Ok(Message::text("aGk=")));
        assert_eq!(reply(b(b"hi"), &none, to_text, false), Ok(Message::text("hi")));
        // CONVERT_TO_BINARY: base64 text becomes binary; binary passes.
        assert_eq!(
            reply(b(b"AP8="), &none, to_binary, false),
            Ok(Message::binary(b(&[0, 255])))
        );
        assert_eq!(
            reply(b(&[1, 2]), &octet(), to_binary, false),
            Ok(Message::binary(b(&[1, 2])))
        );
        assert_eq!(reply(b(b"%%%"), &none, to_binary, false), Err(()));
    }
}

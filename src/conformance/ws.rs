//! The kit's WebSocket client: open a connection (ws:// or wss://), read the next text or close
//! frame within a bound, and send raw frames that well-behaved clients never send.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

pub type Ws = WebSocketStream<Box<dyn Io>>;

/// Why a connection did not open.
#[derive(Debug)]
pub enum Refused {
    /// The handshake was answered with this status and body.
    Status(u16, Vec<u8>),
    Other(String),
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Status(s, body) => write!(f, "handshake answered {s} {}", String::from_utf8_lossy(body)),
            Refused::Other(e) => write!(f, "{e}"),
        }
    }
}

/// `url` with `query` appended.
pub fn with_query(url: &str, query: &str) -> String {
    if url.contains('?') {
        format!("{url}&{query}")
    } else {
        format!("{url}?{query}")
    }
}

/// Opens a connection, with extra handshake headers, within `within`.
pub async fn open(url: &str, headers: &[(&str, &str)], within: Duration) -> Result<Ws, Refused> {
    match tokio::time::timeout(within, open_inner(url, headers)).await {
        Ok(r) => r,
        Err(_) => Err(Refused::Other(format!(
            "no handshake answer within {} s",
            within.as_secs()
        ))),
    }
}

async fn open_inner(url: &str, headers: &[(&str, &str)]) -> Result<Ws, Refused> {
    let other = |e: String| Refused::Other(e);
    let mut request = url.into_client_request().map_err(|e| other(format!("bad URL: {e}")))?;
    for (k, v) in headers {
        let name = http::HeaderName::try_from(*k).map_err(|e| other(e.to_string()))?;
        let value = http::HeaderValue::try_from(*v).map_err(|e| other(e.to_string()))?;
        request.headers_mut().insert(name, value);
    }
    let uri = request.uri().clone();
    let secure = uri.scheme_str() == Some("wss");
    let host = uri.host().unwrap_or_default().trim_matches(['[', ']']).to_string();
    let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
    let tcp = TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| other(format!("connect: {e}")))?;
    let _ = tcp.set_nodelay(true);
    let io: Box<dyn Io> = if secure {
        let name = rustls::pki_types::ServerName::try_from(host.clone()).map_err(|e| other(e.to_string()))?;
        let tls = crate::probe::tls_connector()
            .map_err(other)?
            .connect(name, tcp)
            .await
            .map_err(|e| other(format!("TLS: {e}")))?;
        Box::new(tls)
    } else {
        Box::new(tcp)
    };
    // Replies of up to 128 KiB arrive as one frame; leave room above that.
    let config = WebSocketConfig::default()
        .max_frame_size(Some(1 << 20))
        .max_message_size(Some(1 << 20));
    match tokio_tungstenite::client_async_with_config(request, io, Some(config)).await {
        Ok((ws, _)) => Ok(ws),
        Err(WsError::Http(resp)) => Err(Refused::Status(
            resp.status().as_u16(),
            resp.body().clone().unwrap_or_default(),
        )),
        Err(e) => Err(other(e.to_string())),
    }
}

/// What ended a read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// A close frame: status (1005 when none) and reason.
    Close(u16, String),
    /// The stream ended or failed without a close frame.
    Dropped(String),
    TimedOut,
}

impl std::fmt::Display for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ended::Close(code, reason) => write!(f, "closed {code} {reason:?}"),
            Ended::Dropped(e) => write!(f, "dropped without a close frame ({e})"),
            Ended::TimedOut => write!(f, "nothing arrived in time"),
        }
    }
}

/// The next data message (text, or binary as lossy text), skipping control frames.
pub async fn next_data(ws: &mut Ws, within: Duration) -> Result<Message, Ended> {
    let read = async {
        loop {
            match ws.next().await {
                Some(Ok(m @ (Message::Text(_) | Message::Binary(_)))) => return Ok(m),
                Some(Ok(Message::Close(f))) => {
                    return Err(match f {
                        Some(f) => Ended::Close(u16::from(f.code), f.reason.to_string()),
                        None => Ended::Close(1005, String::new()),
                    });
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(Ended::Dropped(e.to_string())),
                None => return Err(Ended::Dropped("end of stream".into())),
            }
        }
    };
    tokio::time::timeout(within, read).await.unwrap_or(Err(Ended::TimedOut))
}

/// The next text message.
pub async fn next_text(ws: &mut Ws, within: Duration) -> Result<String, String> {
    match next_data(ws, within).await {
        Ok(Message::Text(t)) => Ok(t.to_string()),
        Ok(other) => Err(format!("expected text, got {} binary bytes", other.len())),
        Err(e) => Err(e.to_string()),
    }
}

/// Reads until the connection ends; data messages are skipped.
pub async fn closed(ws: &mut Ws, within: Duration) -> Ended {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match next_data(ws, left).await {
            Ok(_) => continue,
            Err(e) => return e,
        }
    }
}

/// Sends text.
pub async fn send(ws: &mut Ws, text: &str) -> Result<(), String> {
    ws.send(Message::text(text)).await.map_err(|e| format!("send: {e}"))
}

/// Sends a JSON message and parses the next text as JSON.
pub async fn ask(ws: &mut Ws, msg: &Value, within: Duration) -> Result<Value, String> {
    send(ws, &msg.to_string()).await?;
    let text = next_text(ws, within).await?;
    serde_json::from_str(&text).map_err(|_| format!("reply is not JSON: {text:?}"))
}

/// Sends one raw frame (masked by the client as usual).
pub async fn send_frame(ws: &mut Ws, payload: Vec<u8>, opcode: OpCode, fin: bool) -> Result<(), String> {
    ws.send(Message::Frame(Frame::message(payload, opcode, fin)))
        .await
        .map_err(|e| format!("send: {e}"))
}

pub const TEXT: OpCode = OpCode::Data(Data::Text);
pub const CONTINUE: OpCode = OpCode::Data(Data::Continue);
pub type OpCodeT = OpCode;
pub const RESERVED: OpCode = OpCode::Data(Data::Reserved(3));

/// Opens a connection and asks `whoami`.
pub async fn whoami(ws: &mut Ws, within: Duration) -> Result<Value, String> {
    ask(ws, &serde_json::json!({"action": "whoami", "op": "whoami"}), within).await
}

/// The connection id, from `whoami`.
pub async fn connection_id(ws: &mut Ws, within: Duration) -> Result<String, String> {
    let me = whoami(ws, within).await?;
    me.get("connectionId")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .ok_or_else(|| format!("whoami has no connectionId: {me}"))
}

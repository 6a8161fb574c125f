//! `socketless probe URL`: a tiny WebSocket client for smoke tests and `helm test`. It connects,
//! sends one message, waits for the expected reply and exits 0; anything else exits 1 with a
//! clear message. It needs no shell and no files besides a CA bundle for wss:// URLs, so it
//! runs inside the scratch image.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use http::HeaderValue;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::defaults;

/// Flags of `socketless probe`.
#[derive(clap::Args, Debug, Clone)]
pub struct ProbeArgs {
    /// ws:// or wss:// URL, e.g. ws://127.0.0.1:8081/dev or the API Gateway stage URL.
    pub url: String,
    /// Text to send.
    #[arg(long, default_value = defaults::PROBE_MESSAGE)]
    pub message: String,
    /// Reply to wait for (exact text). Default: the message itself (an echo).
    #[arg(long)]
    pub expect: Option<String>,
    /// Give up after this long (connect, send and reply together).
    #[arg(long, default_value = defaults::WAIT)]
    pub timeout: String,
    /// Extra handshake header, Name=Value (repeatable).
    #[arg(long = "header")]
    pub headers: Vec<String>,
}

/// Why a probe failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("invalid argument: {0}")]
    Usage(String),
    #[error("cannot connect to {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("no expected reply within {0:?}")]
    Timeout(Duration),
    #[error("the connection closed before the expected reply ({0})")]
    Closed(String),
}

pub(crate) fn tls_connector() -> Result<tokio_rustls::TlsConnector, String> {
    let mut roots = rustls::RootCertStore::empty();
    let loaded = rustls_native_certs::load_native_certs();
    for cert in loaded.certs {
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        return Err("no CA certificates found (set SSL_CERT_FILE or install a CA bundle)".into());
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// Connects, sends, and waits for `expect`. Returns the time the round trip took.
pub async fn probe(args: &ProbeArgs) -> Result<Duration, ProbeError> {
    let timeout = crate::config::parse_duration(&args.timeout).map_err(ProbeError::Usage)?;
    let expect = args.expect.clone().unwrap_or_else(|| args.message.clone());
    let mut request = args
        .url
        .as_str()
        .into_client_request()
        .map_err(|e| ProbeError::Usage(format!("{:?} is not a WebSocket URL: {e}", args.url)))?;
    for h in &args.headers {
        let (k, v) = h
            .split_once('=')
            .ok_or_else(|| ProbeError::Usage(format!("--header {h:?} is not Name=Value")))?;
        let name =
            http::HeaderName::try_from(k.trim()).map_err(|e| ProbeError::Usage(format!("--header {k:?}: {e}")))?;
        let value = HeaderValue::try_from(v).map_err(|e| ProbeError::Usage(format!("--header {k:?}: {e}")))?;
        request.headers_mut().insert(name, value);
    }
    let uri = request.uri().clone();
    let secure = match uri.scheme_str() {
        Some("ws") => false,
        Some("wss") => true,
        _ => {
            return Err(ProbeError::Usage(format!(
                "{:?} must start with ws:// or wss://",
                args.url
            )));
        }
    };
    let host = uri
        .host()
        .unwrap_or_default()
        .trim_matches(|c| c == '[' || c == ']')
        .to_string();
    let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
    let started = Instant::now();
    let connect_err = |reason: String| ProbeError::Connect {
        url: args.url.clone(),
        reason,
    };
    let work = async {
        let tcp = TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| connect_err(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        if secure {
            let name = rustls::pki_types::ServerName::try_from(host.clone()).map_err(|e| connect_err(e.to_string()))?;
            let tls = tls_connector()
                .map_err(connect_err)?
                .connect(name, tcp)
                .await
                .map_err(|e| connect_err(format!("TLS: {e}")))?;
            let (ws, _) = tokio_tungstenite::client_async(request, tls)
                .await
                .map_err(|e| connect_err(e.to_string()))?;
            exchange(ws, &args.message, &expect).await
        } else {
            let (ws, _) = tokio_tungstenite::client_async(request, tcp)
                .await
                .map_err(|e| connect_err(e.to_string()))?;
            exchange(ws, &args.message, &expect).await
        }
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(Ok(())) => Ok(started.elapsed()),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(ProbeError::Timeout(timeout)),
    }
}

async fn exchange<S>(
    mut ws: tokio_tungstenite::WebSocketStream<S>,
    message: &str,
    expect: &str,
) -> Result<(), ProbeError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    ws.send(Message::text(message))
        .await
        .map_err(|e| ProbeError::Closed(format!("send failed: {e}")))?;
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) if t.as_str() == expect => {
                let _ = ws.close(None).await;
                return Ok(());
            }
            Some(Ok(Message::Text(t))) => {
                eprintln!("probe: ignoring unexpected reply {:?}", t.as_str());
            }
            Some(Ok(Message::Close(f))) => {
                return Err(ProbeError::Closed(match f {
                    Some(f) => format!("close {} {}", u16::from(f.code), f.reason),
                    None => "close without status".into(),
                }));
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(ProbeError::Closed(e.to_string())),
            None => return Err(ProbeError::Closed("end of stream".into())),
        }
    }
}

/// Runs the probe and prints the result.
pub async fn run(args: ProbeArgs) -> ExitCode {
    match probe(&args).await {
        Ok(took) => {
            let _ = writeln!(
                std::io::stdout(),
                "probe: ok: {} answered in {} ms",
                args.url,
                took.as_millis()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("probe: FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

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

use crate::config::{ConfigError, Labels, Problems};
use crate::defaults;

/// Flags of `socketless probe`.
#[derive(clap::Args, Debug, Clone)]
pub struct ProbeArgs {
    /// ws:// or wss:// URL, e.g. ws://127.0.0.1:8081/dev or the API Gateway stage URL.
    #[arg(env = "SOCKETLESS_PROBE_URL")]
    pub url: String,
    /// Text to send.
    #[arg(long, env = "SOCKETLESS_PROBE_MESSAGE", default_value = defaults::PROBE_MESSAGE)]
    pub message: String,
    /// Reply to wait for (exact text). Default: the message itself (an echo).
    #[arg(long, env = "SOCKETLESS_PROBE_EXPECT")]
    pub expect: Option<String>,
    /// Give up after this long (connect, send and reply together).
    #[arg(long, env = "SOCKETLESS_PROBE_TIMEOUT", default_value = defaults::WAIT)]
    pub timeout: String,
    /// Extra handshake header, Name=Value (repeatable; the variable holds one).
    #[arg(long = "header", env = "SOCKETLESS_PROBE_HEADER")]
    pub headers: Vec<String>,
}

/// A probe's validated settings.
#[derive(Debug, Clone)]
pub struct ProbeConfig {
    pub url: String,
    request: http::Request<()>,
    secure: bool,
    host: String,
    port: u16,
    message: String,
    expect: String,
    timeout: Duration,
}

impl ProbeArgs {
    /// Checks every setting and reports all problems at once.
    pub fn validate(&self) -> Result<ProbeConfig, ConfigError> {
        let mut p = Problems::new();
        let l = Labels::of::<ProbeArgs>();
        let timeout = p.duration(l.get("timeout"), &self.timeout);
        if timeout.is_some_and(|t| t.is_zero()) {
            p.push(format!("{}: must be more than zero", l.get("timeout")));
        }
        let request = match self.url.as_str().into_client_request() {
            Ok(r) => match r.uri().scheme_str() {
                Some("ws") | Some("wss") if r.uri().host().is_some_and(|h| !h.is_empty()) => Some(r),
                _ => {
                    p.push(format!(
                        "{}: {:?} must start with ws:// or wss:// and name a host",
                        l.get("url"),
                        self.url
                    ));
                    None
                }
            },
            Err(e) => {
                p.push(format!("{}: {:?} is not a WebSocket URL: {e}", l.get("url"), self.url));
                None
            }
        };
        let mut headers = Vec::new();
        for h in &self.headers {
            let Some((k, v)) = h.split_once('=') else {
                p.push(format!("{}: {h:?} is not Name=Value", l.get("headers")));
                continue;
            };
            match (http::HeaderName::try_from(k.trim()), HeaderValue::try_from(v)) {
                (Ok(name), Ok(value)) => headers.push((name, value)),
                (Err(e), _) => p.push(format!("{}: {k:?}: {e}", l.get("headers"))),
                (_, Err(e)) => p.push(format!("{}: the value of {k:?}: {e}", l.get("headers"))),
            }
        }
        p.into_result()?;
        let (Some(mut request), Some(timeout)) = (request, timeout) else {
            return Err(ConfigError(vec!["the probe's settings are incomplete".into()]));
        };
        for (name, value) in headers {
            request.headers_mut().insert(name, value);
        }
        let uri = request.uri().clone();
        let secure = uri.scheme_str() == Some("wss");
        Ok(ProbeConfig {
            url: self.url.clone(),
            host: uri
                .host()
                .unwrap_or_default()
                .trim_matches(|c| c == '[' || c == ']')
                .to_string(),
            port: uri.port_u16().unwrap_or(if secure { 443 } else { 80 }),
            secure,
            request,
            message: self.message.clone(),
            expect: self.expect.clone().unwrap_or_else(|| self.message.clone()),
            timeout,
        })
    }
}

/// Why a probe failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
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
pub async fn probe(config: &ProbeConfig) -> Result<Duration, ProbeError> {
    let ProbeConfig {
        request,
        secure,
        host,
        port,
        message,
        expect,
        timeout,
        ..
    } = config.clone();
    let args = config;
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
            exchange(ws, &message, &expect).await
        } else {
            let (ws, _) = tokio_tungstenite::client_async(request, tcp)
                .await
                .map_err(|e| connect_err(e.to_string()))?;
            exchange(ws, &message, &expect).await
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
pub async fn run(args: ProbeConfig) -> ExitCode {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::FromFlags;

    fn validate(flags: &[&str]) -> Result<ProbeConfig, ConfigError> {
        ProbeArgs::from_flags(flags.iter().copied()).unwrap().validate()
    }

    #[test]
    fn a_valid_probe_keeps_its_settings() {
        let c = validate(&["wss://example.com/prod", "--header", "X-Test=a=b", "--timeout", "250ms"]).unwrap();
        assert!(c.secure);
        assert_eq!((c.host.as_str(), c.port), ("example.com", 443));
        assert_eq!(c.timeout, Duration::from_millis(250));
        assert_eq!((c.message.as_str(), c.expect.as_str()), ("hello", "hello"));
        assert_eq!(c.request.headers()["x-test"], "a=b");
        let c = validate(&["ws://[::1]:8081/dev", "--expect", "pong"]).unwrap();
        assert_eq!((c.host.as_str(), c.port, c.secure), ("::1", 8081, false));
        assert_eq!(c.expect, "pong");
    }

    #[test]
    fn every_bad_setting_is_reported() {
        let err = validate(&["ftp://example.com/", "--timeout", "0s", "--header", "bad name=x"]).unwrap_err();
        assert_eq!(err.0.len(), 3, "{err}");
        assert!(
            err.0[0].starts_with("--timeout (SOCKETLESS_PROBE_TIMEOUT): must be more than zero"),
            "{err}"
        );
        assert!(err.0[1].starts_with("URL (SOCKETLESS_PROBE_URL): "), "{err}");
        assert!(
            err.0[2].starts_with("--header (SOCKETLESS_PROBE_HEADER): \"bad name\""),
            "{err}"
        );
    }
}

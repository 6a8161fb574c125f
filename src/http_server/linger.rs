//! The lingering close every listener's sockets use (RFC 7230 §6.6).

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

/// How long a lingering close waits for the peer's remaining bytes, and how many it reads.
const LINGER_TIME: Duration = crate::defaults::LINGER_TIME;
const LINGER_BYTES: usize = crate::defaults::LINGER_BYTES;
/// Sockets lingering at once; past this a closing socket is dropped at once.
const MAX_LINGERING: usize = crate::defaults::MAX_LINGERING;
static LINGERING: AtomicUsize = AtomicUsize::new(0);

/// A TCP stream that, when dropped, closes the way RFC 7230 §6.6 asks: it shuts down its
/// sending side, then reads and discards what the peer still sends (bounded in time and
/// bytes) before closing. Closing with unread bytes in the receive queue makes the kernel send
/// a reset, and a reset can destroy an answer the peer has not read yet: a 413 sent before the
/// rest of a large body, or the Close frame that ends a WebSocket.
pub struct LingeringStream {
    inner: Option<TcpStream>,
}

impl LingeringStream {
    pub fn new(stream: TcpStream) -> Self {
        LingeringStream { inner: Some(stream) }
    }

    fn stream(&mut self) -> &mut TcpStream {
        // Only `drop` takes the stream out.
        self.inner.as_mut().expect("stream present until drop")
    }
}

impl Drop for LingeringStream {
    fn drop(&mut self) {
        let Some(mut stream) = self.inner.take() else { return };
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if LINGERING.fetch_add(1, Ordering::Relaxed) >= MAX_LINGERING {
            LINGERING.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        handle.spawn(async move {
            let _ = tokio::time::timeout(LINGER_TIME, async {
                let _ = stream.shutdown().await;
                let mut buf = [0u8; 4096];
                let mut read = 0;
                while read < LINGER_BYTES {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => read += n,
                    }
                }
            })
            .await;
            LINGERING.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

impl AsyncRead for LingeringStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(self.stream()).poll_read(cx, buf)
    }
}

impl AsyncWrite for LingeringStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(self.stream()).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(self.stream()).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.as_ref().is_some_and(|s| s.is_write_vectored())
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(self.stream()).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(self.stream()).poll_shutdown(cx)
    }
}

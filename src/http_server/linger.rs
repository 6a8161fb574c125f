//! The lingering close every listener's sockets use (RFC 7230 §6.6).

use std::cell::Cell;
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

thread_local! {
    /// Set while [`close_at_once`] drops its value: the streams dropped meanwhile close at once.
    static AT_ONCE: Cell<bool> = const { Cell::new(false) };
}

/// Drops `owner`, and every [`LingeringStream`] it owns closes at once instead of lingering.
///
/// For a socket whose peer has said it sends nothing more, such as a WebSocket whose client
/// sent its Close frame: no unread bytes can arrive to turn the close into a reset, so lingering
/// would only cost a task, a shutdown and a read of the peer's end of stream.
pub fn close_at_once<T>(owner: T) {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            AT_ONCE.set(false);
        }
    }
    AT_ONCE.set(true);
    let _reset = Reset;
    drop(owner);
}

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
        if AT_ONCE.get() {
            return;
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A connected pair: the client's end, and the server's end wrapped to linger.
    async fn pair() -> (TcpStream, LingeringStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (client, LingeringStream::new(server))
    }

    /// Writes to `client` every 20 ms for up to `within`; the first error, if any.
    async fn write_until_refused(client: &mut TcpStream, within: Duration) -> Option<std::io::Error> {
        let until = tokio::time::Instant::now() + within;
        while tokio::time::Instant::now() < until {
            if let Err(e) = client.write_all(b"sent after the close").await {
                return Some(e);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }

    #[tokio::test]
    async fn a_dropped_stream_lingers_and_one_closed_at_once_does_not() {
        let mut buf = [0u8; 64];
        // Dropped: the end of stream reaches the client, and what it sends after it is read
        // and discarded, never answered with a reset.
        let (mut client, server) = pair().await;
        drop(server);
        assert_eq!(client.read(&mut buf).await.unwrap(), 0);
        let refused = write_until_refused(&mut client, Duration::from_millis(300)).await;
        assert!(refused.is_none(), "a lingering socket reset the peer: {refused:?}");
        // Closed at once: the end of stream reaches the client too, but the socket is gone, so
        // the next bytes the client sends are refused.
        let (mut client, server) = pair().await;
        close_at_once(server);
        assert_eq!(client.read(&mut buf).await.unwrap(), 0);
        // (Well within LINGER_TIME, after which a lingering socket closes too.)
        let refused = write_until_refused(&mut client, LINGER_TIME / 4).await;
        assert!(refused.is_some(), "a socket closed at once still read the peer's bytes");
        // The flag lasts only for that drop: the next stream lingers again.
        let (mut client, server) = pair().await;
        drop(server);
        assert_eq!(client.read(&mut buf).await.unwrap(), 0);
        let refused = write_until_refused(&mut client, Duration::from_millis(300)).await;
        assert!(refused.is_none(), "lingering stopped after close_at_once: {refused:?}");
    }
}

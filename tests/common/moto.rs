//! A moto server (DynamoDB) for one test: started on a free port, ready once moto itself
//! answers, killed by PID when dropped. It runs through `ci/lib/moto_atomic.py`, which answers
//! one request at a time: moto alone lets two conditional writes to one item both succeed.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{T, free_port};

/// moto's server, one request at a time.
const ATOMIC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/ci/lib/moto_atomic.py");
const INSTALL: &str =
    "The DynamoDB tests need moto: run ci/test.sh, which installs it, or `pip install 'moto[server]'`";

/// A moto server (DynamoDB) started for one test and killed by PID when dropped.
pub struct Moto {
    child: Child,
    pub endpoint: String,
    pub port: u16,
}

impl Moto {
    /// Starts moto on a free port. A port picked free can be taken by another test before
    /// moto binds it; moto then exits, and it is started again on another port.
    pub async fn start() -> Moto {
        for _ in 0..5 {
            if let Some(moto) = Self::try_start(free_port()).await {
                return moto;
            }
        }
        panic!("moto exited at start on five ports in a row; is another moto or the port range exhausted?")
    }

    /// Starts moto on a given port (to bring DynamoDB back where it was).
    pub async fn start_on(port: u16) -> Moto {
        Self::try_start(port)
            .await
            .unwrap_or_else(|| panic!("moto exited at start on port {port} (port taken?)"))
    }

    /// Starts moto and waits until moto itself answers on the port: a TCP connect alone can
    /// reach another test's listener that took the port. `None` if moto exits first.
    async fn try_start(port: u16) -> Option<Moto> {
        let child = Command::new("python3")
            .arg(ATOMIC)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start python3 {ATOMIC} ({e}). {INSTALL}"));
        let endpoint = format!("http://127.0.0.1:{port}");
        let mut moto = Moto { child, endpoint, port };
        let deadline = std::time::Instant::now() + T;
        loop {
            if let Some(status) = moto.child.try_wait().ok().flatten() {
                assert_ne!(status.code(), Some(3), "python3 cannot import moto's server. {INSTALL}");
                return None;
            }
            if moto_answers(port).await {
                return Some(moto);
            }
            assert!(
                std::time::Instant::now() < deadline,
                "moto did not answer on port {port} within {T:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Whether moto's own API answers 200 on the port.
async fn moto_answers(port: u16) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
    let ask = b"GET /moto-api/data.json HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    if s.write_all(ask).await.is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    matches!(
        tokio::time::timeout(Duration::from_secs(2), s.read_exact(&mut head)).await,
        Ok(Ok(_)) if head.starts_with(b"HTTP/1.") && &head[9..12] == b"200"
    )
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

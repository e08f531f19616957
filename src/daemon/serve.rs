//! The daemon's two servers, the status socket and the metrics endpoint,
//! served off the event loop: the loop takes a snapshot of what to say,
//! then a task of its own writes it, bounded in time. At most
//! [`MAX_CLIENTS`] connections are served at once; more are closed at once,
//! so a slow or silent client never holds up keepalives.

use std::{path::PathBuf, sync::Arc, time::Duration};

use anyhow::{Context, Result};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream, UnixListener, UnixStream},
    sync::{OwnedSemaphorePermit, Semaphore},
};
use tracing::debug;

/// Connections served at once, status and metrics together.
pub const MAX_CLIENTS: usize = 16;
/// A client gets this long to send its request, and to take each chunk of
/// the answer: a client that stops reading is cut off after this long.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(2);
/// An answer is written in chunks of this size, each within
/// [`CLIENT_TIMEOUT`]: the status of a hub with 100,000 spokes is some
/// 20 MB, more than a busy reader takes in 2 s.
const CHUNK: usize = 64 << 10;
/// The longest any answer may take, however steadily it is read.
pub const MAX_ANSWER_TIME: Duration = Duration::from_secs(60);

pub struct Servers {
    status: UnixListener,
    status_path: PathBuf,
    metrics: Option<TcpListener>,
    slots: Arc<Semaphore>,
}

/// A connection accepted by one of the servers.
pub enum Client {
    Status(UnixStream),
    Metrics(TcpStream),
}

impl Servers {
    pub async fn bind(
        status_path: PathBuf,
        metrics: Option<std::net::SocketAddr>,
    ) -> Result<Servers> {
        let status = bind_status(&status_path)?;
        let metrics = match metrics {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("serving metrics on {addr}"))?,
            ),
            None => None,
        };
        Ok(Servers {
            status,
            status_path,
            metrics,
            slots: Arc::new(Semaphore::new(MAX_CLIENTS)),
        })
    }

    /// Move the status socket (the network was renamed).
    pub fn rebind_status(&mut self, path: PathBuf) -> Result<()> {
        if path != self.status_path {
            self.status = bind_status(&path)?;
            let _ = std::fs::remove_file(&self.status_path);
            self.status_path = path;
        }
        Ok(())
    }

    /// The next connection to either server.
    pub async fn accept(&self) -> std::io::Result<Client> {
        let metrics = async {
            match &self.metrics {
                Some(l) => l.accept().await.map(|(s, _)| s),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = self.status.accept() => r.map(|(s, _)| Client::Status(s)),
            r = metrics => r.map(Client::Metrics),
        }
    }

    /// Serve `client` off the loop with `body()` (called now, only if a
    /// slot is free); `false` if it was turned away.
    pub fn serve(&self, client: Client, body: impl FnOnce(bool) -> String) -> bool {
        let Ok(permit) = self.slots.clone().try_acquire_owned() else {
            return false;
        };
        match client {
            Client::Status(s) => {
                let text = body(false);
                tokio::spawn(write_status(s, text, permit));
            }
            Client::Metrics(s) => {
                let text = body(true);
                tokio::spawn(answer_http(s, text, permit));
            }
        }
        true
    }

    pub fn remove(&self) {
        let _ = std::fs::remove_file(&self.status_path);
    }
}

fn bind_status(path: &std::path::Path) -> Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating run directory {}", dir.display()))?;
    }
    let _ = std::fs::remove_file(path);
    UnixListener::bind(path).with_context(|| format!("listening on {}", path.display()))
}

async fn write_status(mut s: UnixStream, body: String, _slot: OwnedSemaphorePermit) {
    match write_bounded(&mut s, body.as_bytes()).await {
        Ok(()) => {
            let _ = tokio::time::timeout(CLIENT_TIMEOUT, s.shutdown()).await;
        }
        Err(e) => debug!("status client: {e}"),
    }
}

/// Write `bytes` in chunks, each within [`CLIENT_TIMEOUT`], all within
/// [`MAX_ANSWER_TIME`].
async fn write_bounded<W: AsyncWriteExt + Unpin>(w: &mut W, bytes: &[u8]) -> std::io::Result<()> {
    let timed_out = |what| std::io::Error::new(std::io::ErrorKind::TimedOut, what);
    let all = async {
        for chunk in bytes.chunks(CHUNK) {
            tokio::time::timeout(CLIENT_TIMEOUT, w.write_all(chunk))
                .await
                .map_err(|_| timed_out("the client stopped reading"))??;
        }
        Ok(())
    };
    tokio::time::timeout(MAX_ANSWER_TIME, all)
        .await
        .map_err(|_| timed_out("the answer took too long"))?
}

/// Answer one HTTP request on a metrics connection: GET /metrics gets the
/// text, anything else 404. Bounded in size and time.
async fn answer_http(mut s: TcpStream, body: String, _slot: OwnedSemaphorePermit) {
    let mut buf = [0u8; 4096];
    let mut n = 0;
    let read = async {
        while n < buf.len() {
            let k = s.read(&mut buf[n..]).await?;
            if k == 0 {
                break;
            }
            n += k;
            if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
        Ok::<_, std::io::Error>(())
    };
    if tokio::time::timeout(CLIENT_TIMEOUT, read).await.is_err() {
        return;
    }
    let req = String::from_utf8_lossy(&buf[..n]);
    let path = req.split_whitespace().nth(1).unwrap_or("");
    let (status, ctype, text) = if req.starts_with("GET ") && (path == "/metrics" || path == "/") {
        ("200 OK", "text/plain; version=0.0.4; charset=utf-8", body)
    } else {
        (
            "404 Not Found",
            "text/plain",
            "not found: try /metrics\n".to_string(),
        )
    };
    let resp = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    );
    if let Err(e) = write_bounded(&mut s, resp.as_bytes()).await {
        debug!("metrics client: {e}");
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use tokio::io::AsyncReadExt;

    use super::*;

    /// The status of a hub with 100k spokes was cut at 1.3 MB: the whole
    /// answer had 2 s, and a busy `lvn status` reads 20 MB slower.
    #[tokio::test]
    async fn a_big_answer_read_steadily_but_slowly_arrives_whole() {
        let (mut a, mut b) = UnixStream::pair().expect("socket pair");
        let body = vec![b'x'; 8 << 20];
        let writer = tokio::spawn(async move { write_bounded(&mut a, &body).await });
        let started = Instant::now();
        let mut got = 0;
        let mut buf = vec![0u8; 256 << 10];
        // 256 KiB every 80 ms: 8 MiB in about 2.6 s.
        for _ in 0..1000 {
            let n = b.read(&mut buf).await.expect("read");
            if n == 0 {
                break;
            }
            got += n;
            tokio::time::sleep(Duration::from_millis(80)).await;
        }
        assert!(
            started.elapsed() > CLIENT_TIMEOUT,
            "read slower than the per-chunk bound"
        );
        assert_eq!(got, 8 << 20);
        writer.await.expect("writer").expect("written whole");
    }

    #[tokio::test]
    async fn a_client_that_stops_reading_is_cut_off() {
        let (mut a, _b) = UnixStream::pair().expect("socket pair");
        let body = vec![b'x'; 8 << 20];
        let started = Instant::now();
        let r = write_bounded(&mut a, &body).await;
        assert!(r.is_err());
        assert!(started.elapsed() < CLIENT_TIMEOUT * 2);
    }
}

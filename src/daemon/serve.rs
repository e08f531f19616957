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
/// A client gets this long to send its request and to take the answer.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(2);

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
    let write = async {
        s.write_all(body.as_bytes()).await?;
        s.shutdown().await
    };
    match tokio::time::timeout(CLIENT_TIMEOUT, write).await {
        Ok(Err(e)) => debug!("status client: {e}"),
        Err(_) => debug!("status client: timed out"),
        Ok(Ok(())) => {}
    }
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
    let _ = tokio::time::timeout(CLIENT_TIMEOUT, s.write_all(resp.as_bytes())).await;
}

//! `lvn run --metrics ADDR`: Prometheus text exposition (format 0.0.4) on
//! a tiny HTTP endpoint, and systemd readiness notification. Both are edge
//! I/O; the numbers come from the daemon's own counters.

use std::{collections::BTreeMap, fmt::Write as _, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

use super::status::Status;

/// What the daemon measures besides the keepalive counters.
#[derive(Debug, Default, Clone)]
pub struct Metrics {
    pub reconcile_ok: u64,
    pub reconcile_failed: u64,
    pub reconcile_seconds_sum: f64,
    /// Changes applied, by (kind, action).
    pub changes: BTreeMap<(String, String), u64>,
    /// SHA-256 of the loaded topology file, hex.
    pub config_hash: String,
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The exposition text.
pub fn render(m: &Metrics, status: &Status) -> String {
    let mut o = String::new();
    let c = |k: &str| status.counters.get(k).copied().unwrap_or(0);
    let node = format!(
        "node=\"{}\",network=\"{}\"",
        label(&status.node),
        label(&status.network)
    );

    family(&mut o, "lvn_peers", "gauge", "Peers by state.");
    for state in ["up", "waiting", "expired", "refused"] {
        let n = status.peers.iter().filter(|p| p.state == state).count();
        let _ = writeln!(o, "lvn_peers{{{node},state=\"{state}\"}} {n}");
    }
    for (name, key, help) in [
        (
            "lvn_keepalives_sent_total",
            "sent",
            "Keepalives (spoke) or answers (hub) sent.",
        ),
        (
            "lvn_keepalives_received_total",
            "received",
            "Keepalives or answers received.",
        ),
        (
            "lvn_keepalives_accepted_total",
            "accepted",
            "Keepalives or answers accepted.",
        ),
        (
            "lvn_endpoint_changes_total",
            "endpoint_changes",
            "Learned endpoints that appeared or moved.",
        ),
    ] {
        family(&mut o, name, "counter", help);
        let _ = writeln!(o, "{name}{{{node}}} {}", c(key));
    }
    family(
        &mut o,
        "lvn_keepalives_rejected_total",
        "counter",
        "Keepalives or answers dropped, by reason.",
    );
    for (k, v) in &status.counters {
        if let Some(reason) = k.strip_prefix("rejected_") {
            let _ = writeln!(
                o,
                "lvn_keepalives_rejected_total{{{node},reason=\"{}\"}} {v}",
                label(reason)
            );
        }
    }
    family(
        &mut o,
        "lvn_reconcile_runs_total",
        "counter",
        "Reconcile runs, by result.",
    );
    let _ = writeln!(
        o,
        "lvn_reconcile_runs_total{{{node},result=\"ok\"}} {}",
        m.reconcile_ok
    );
    let _ = writeln!(
        o,
        "lvn_reconcile_runs_total{{{node},result=\"error\"}} {}",
        m.reconcile_failed
    );
    family(
        &mut o,
        "lvn_reconcile_duration_seconds",
        "summary",
        "Time spent observing, planning and applying.",
    );
    let _ = writeln!(
        o,
        "lvn_reconcile_duration_seconds_sum{{{node}}} {}",
        m.reconcile_seconds_sum
    );
    let _ = writeln!(
        o,
        "lvn_reconcile_duration_seconds_count{{{node}}} {}",
        m.reconcile_ok + m.reconcile_failed
    );
    family(
        &mut o,
        "lvn_changes_applied_total",
        "counter",
        "Kernel changes applied, by kind and action.",
    );
    for ((kind, action), v) in &m.changes {
        let _ = writeln!(
            o,
            "lvn_changes_applied_total{{{node},kind=\"{kind}\",action=\"{action}\"}} {v}"
        );
    }
    family(
        &mut o,
        "lvn_config_reloads_total",
        "counter",
        "Config reloads, by result.",
    );
    let _ = writeln!(
        o,
        "lvn_config_reloads_total{{{node},result=\"ok\"}} {}",
        c("reloads_ok")
    );
    let _ = writeln!(
        o,
        "lvn_config_reloads_total{{{node},result=\"failed\"}} {}",
        c("reloads_failed")
    );
    family(
        &mut o,
        "lvn_config_info",
        "gauge",
        "The loaded topology file, by SHA-256.",
    );
    let _ = writeln!(
        o,
        "lvn_config_info{{{node},sha256=\"{}\"}} 1",
        m.config_hash
    );
    o
}

/// Answer one HTTP request on a metrics connection: GET /metrics gets the
/// text, anything else 404. Bounded in size and time.
pub async fn serve(mut s: TcpStream, body: impl FnOnce() -> String) {
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
    if tokio::time::timeout(Duration::from_secs(2), read)
        .await
        .is_err()
    {
        return;
    }
    let req = String::from_utf8_lossy(&buf[..n]);
    let path = req.split_whitespace().nth(1).unwrap_or("");
    let (status, ctype, text) = if req.starts_with("GET ") && (path == "/metrics" || path == "/") {
        ("200 OK", "text/plain; version=0.0.4; charset=utf-8", body())
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
    let _ = tokio::time::timeout(Duration::from_secs(2), s.write_all(resp.as_bytes())).await;
}

pub async fn accept(l: &Option<TcpListener>) -> std::io::Result<TcpStream> {
    match l {
        Some(l) => l.accept().await.map(|(s, _)| s),
        None => std::future::pending().await,
    }
}

/// Tell systemd (Type=notify) about the daemon's state, if it listens.
pub fn sd_notify(state: &str) {
    use std::os::{linux::net::SocketAddrExt, unix::net::UnixDatagram};
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let path = path.to_string_lossy().into_owned();
    let addr = match path.strip_prefix('@') {
        Some(name) => std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()),
        None => std::os::unix::net::SocketAddr::from_pathname(&path),
    };
    if let (Ok(sock), Ok(addr)) = (UnixDatagram::unbound(), addr) {
        let _ = sock.send_to_addr(state.as_bytes(), &addr);
    }
}

/// SHA-256 of a file's bytes, hex.
pub fn file_hash(path: &std::path::Path) -> String {
    use sha2::{Digest, Sha256};
    match std::fs::read(path) {
        Ok(bytes) => Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
        Err(_) => String::new(),
    }
}

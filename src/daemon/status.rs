//! `lvn status`: the daemon answers on a unix socket in its run directory
//! (`<run-dir>/<network>.sock`) with one JSON document, then closes.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

/// Default run directory.
pub const DEFAULT_RUN_DIR: &str = "/run/lvn";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub node: String,
    pub network: String,
    pub role: String,
    /// This node's address and port as a hub sees them (spokes).
    pub reflexive: Option<SocketAddr>,
    /// A spoke's primary hub, the one its overlay route goes through; null
    /// while no hub answers, absent on hubs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary: Option<Option<String>>,
    pub peers: Vec<PeerStatus>,
    /// Keepalive counters: sent, received, accepted, rejected_<reason>, ...
    pub counters: BTreeMap<String, u64>,
    /// Whether the kernel matches the topology, and if not, why.
    #[serde(default)]
    pub reconcile: ReconcileStatus,
    /// The running topology file, and a refused newer one.
    #[serde(default)]
    pub config: ConfigStatus,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReconcileStatus {
    /// The last reconcile succeeded.
    pub ok: bool,
    /// Consecutive failed reconciles.
    pub failures: u32,
    /// The last error, while failing.
    pub error: Option<String>,
    /// Seconds until the next try, while failing.
    pub retry_in_secs: Option<f64>,
    /// What lvn wants and cannot have yet, e.g. a missing `attach` master.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waiting: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConfigStatus {
    /// SHA-256 of the file the daemon runs on.
    pub sha256: String,
    /// Why the file on disk now is refused, if it is.
    pub refused: Option<String>,
    /// SHA-256 of a changed file this spoke rolled back from (no hub
    /// answered within `confirm_after`); null otherwise.
    #[serde(default)]
    pub rolled_back_from: Option<String>,
    /// Seconds left to confirm the running file (a hub's answer) before
    /// the spoke goes back to the previous one; absent when nothing waits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirm_in_secs: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerStatus {
    pub name: String,
    pub address: IpAddr,
    pub endpoint: Option<SocketAddr>,
    /// "static", "learned", or "none" (nothing known yet).
    pub source: String,
    /// "up", "waiting" (nothing heard yet), "expired" (a hub's spoke), "down"
    /// (a spoke's hub, silent for `failover_after`), or "refused" (the
    /// datapath cannot carry it; `note` says why and what to do).
    pub state: String,
    /// Seconds since the last accepted keepalive (hub) or answer (spoke).
    pub last_seen_secs: Option<f64>,
    /// Spokes, per hub: round-trip time of the last answered keepalive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtt_ms: Option<f64>,
    /// Spokes, per hub: keepalives sent since its last answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unanswered: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Spokes, per hub: whether the path carries the device MTU (null while
    /// unknown); absent on hubs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_mtu_ok: Option<Option<bool>>,
    /// Spokes, per hub: the largest device MTU the path carried, or null.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_mtu: Option<Option<u32>>,
}

pub fn socket_path(run_dir: &Path, network: &str) -> PathBuf {
    run_dir.join(format!("{network}.sock"))
}

/// The status socket of the one daemon in `run_dir`: for `lvn status`
/// when the topology file cannot tell the network's name (it is being
/// edited and invalid, exactly when an operator wants to look).
pub fn find_socket(run_dir: &Path) -> Result<PathBuf, String> {
    let entries = std::fs::read_dir(run_dir).map_err(|e| {
        format!(
            "cannot list {}: {e} (is `lvn run` running with this --run-dir?)",
            run_dir.display()
        )
    })?;
    let mut found: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "sock"))
        .collect();
    found.sort();
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(format!(
            "no daemon socket in {} (is `lvn run` running with this --run-dir?)",
            run_dir.display()
        )),
        _ => Err(format!(
            "several daemons in {}: {}; pick one with --network",
            run_dir.display(),
            found
                .iter()
                .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// Ask a running daemon.
pub async fn query(path: &Path) -> Result<Status, String> {
    use tokio::io::AsyncReadExt;
    let mut s = tokio::net::UnixStream::connect(path).await.map_err(|e| {
        format!(
            "cannot reach the daemon at {}: {e} (is `lvn run` running with this --run-dir?)",
            path.display()
        )
    })?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)
        .await
        .map_err(|e| format!("reading {}: {e}", path.display()))?;
    serde_json::from_slice(&buf).map_err(|e| {
        if e.is_eof() {
            format!(
                "the answer from {} was cut short after {} bytes: the daemon stops writing to a client that takes more than {:?} for a chunk of it, or {:?} in all",
                path.display(),
                buf.len(),
                super::serve::CLIENT_TIMEOUT,
                super::serve::MAX_ANSWER_TIME
            )
        } else {
            format!("bad answer from {}: {e}", path.display())
        }
    })
}

/// The status as an aligned table.
pub fn table(s: &Status) -> String {
    let mut out = format!(
        "node {} ({}) in network {}; reflexive address: {}\n",
        s.node,
        s.role,
        s.network,
        s.reflexive.map_or("-".to_string(), |r| r.to_string())
    );
    if let Some(p) = &s.primary {
        out.push_str(&format!(
            "primary hub: {}\n",
            p.as_deref().unwrap_or("none (no hub answers)")
        ));
    }
    if !s.reconcile.ok && s.reconcile.failures > 0 {
        out.push_str(&format!(
            "reconcile FAILING ({} tries, next in {}): {}\n",
            s.reconcile.failures,
            s.reconcile
                .retry_in_secs
                .map_or("-".to_string(), |t| format!("{t:.0}s")),
            s.reconcile.error.as_deref().unwrap_or("")
        ));
    }
    for w in &s.reconcile.waiting {
        out.push_str(&format!("waiting: {w}\n"));
    }
    if let Some(bad) = &s.config.rolled_back_from {
        out.push_str(&format!(
            "topology file sha256 {} ROLLED BACK: no hub answered after it was applied; running on sha256 {} (the file is tried again when it changes, or on SIGHUP)\n",
            short(bad),
            short(&s.config.sha256)
        ));
    }
    if let Some(t) = s.config.confirm_in_secs {
        out.push_str(&format!(
            "topology file sha256 {} waits for a hub's answer: rolled back in {t:.0}s without one\n",
            short(&s.config.sha256)
        ));
    }
    if let Some(r) = &s.config.refused {
        out.push_str(&format!(
            "topology file refused (running on sha256 {}):\n{r}\n",
            short(&s.config.sha256)
        ));
    }
    let rows: Vec<[String; 6]> = s
        .peers
        .iter()
        .map(|p| {
            [
                p.name.clone(),
                p.address.to_string(),
                p.endpoint.map_or("-".into(), |e| e.to_string()),
                p.source.clone(),
                p.state.clone(),
                last_seen(p),
            ]
        })
        .collect();
    let head = [
        "PEER",
        "ADDRESS",
        "ENDPOINT",
        "SOURCE",
        "STATE",
        "LAST SEEN",
    ];
    let mut width = head.map(str::len);
    for r in &rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let line = |cells: [&str; 6]| {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i == 5 {
                l.push_str(c);
            } else {
                l.push_str(&format!("{c:<w$}  ", w = width[i]));
            }
        }
        l.trim_end().to_string() + "\n"
    };
    out.push_str(&line(head));
    for r in &rows {
        out.push_str(&line([&r[0], &r[1], &r[2], &r[3], &r[4], &r[5]]));
    }
    for p in s.peers.iter().filter_map(|p| p.note.as_ref()) {
        out.push_str(&format!("note: {p}\n"));
    }
    for p in &s.peers {
        match p.path_mtu_ok {
            Some(Some(false)) => out.push_str(&format!(
                "path MTU: the path to {} cannot carry the device MTU (keepalives are answered, full-size probes are lost)\n",
                p.name
            )),
            Some(Some(true)) => out.push_str(&format!(
                "path MTU: the path to {} carries the device MTU{}\n",
                p.name,
                p.path_mtu
                    .flatten()
                    .map(|m| format!(" ({m})"))
                    .unwrap_or_default()
            )),
            _ => {}
        }
    }
    out
}

/// "0.4s ago", with a spoke's view of the hub: "0.4s ago, rtt 0.3 ms, 2 unanswered".
fn last_seen(p: &PeerStatus) -> String {
    let mut v = p
        .last_seen_secs
        .map_or("-".into(), |t| format!("{t:.1}s ago"));
    if let Some(rtt) = p.rtt_ms {
        v.push_str(&format!(", rtt {rtt:.1} ms"));
    }
    if let Some(n) = p.unanswered.filter(|n| *n > 1) {
        v.push_str(&format!(", {n} unanswered"));
    }
    v
}

/// The first 12 hex digits of a SHA-256, as status and `lvn confirm` print it.
pub fn short(sha: &str) -> &str {
    sha.get(..12).unwrap_or(sha)
}

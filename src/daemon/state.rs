//! What a daemon learned, kept across restarts in the state directory
//! (`<state-dir>/<network>.json`, written atomically): learned endpoints,
//! the counters that guard against replays (expired peers' included), and
//! this node's own counter reservation; how the controller makes it and
//! takes it back.

use std::{
    collections::BTreeMap,
    io::Write,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Instant,
};

use serde::{Deserialize, Serialize};
use tracing::info;

use super::{
    controller::{Controller, Now},
    probes::Probe,
};
use crate::config::{Auth, Topology};

/// Default state directory.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/lvn";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Saved {
    pub network: String,
    pub node: String,
    /// What the hub heard from each peer, expired ones included, by name.
    #[serde(default)]
    pub learned: BTreeMap<String, SavedPeer>,
    /// This node's counter reservation: above every counter it has sent.
    #[serde(default)]
    pub counter: u64,
    /// The auth mode the counters were verified under ("none", "keys");
    /// absent in files of earlier versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<String>,
    /// A spoke's primary hub: a restart keeps routing where failover put it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedPeer {
    pub endpoint: SocketAddr,
    /// Highest counter accepted from the peer.
    pub counter: u64,
    /// Unix seconds of the last accepted keepalive.
    pub last_seen_unix: u64,
    /// False for an expired peer, kept for its counter: an old keepalive
    /// replayed after a restart must not bring the tunnel back.
    #[serde(default = "yes")]
    pub up: bool,
    /// The peer's public key when the counter was accepted: a counter
    /// verified under another key means nothing for this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
}

fn yes() -> bool {
    true
}

pub fn path(state_dir: &Path, network: &str) -> PathBuf {
    state_dir.join(format!("{network}.json"))
}

/// Read the saved state; a missing file is an empty state, a broken one an
/// error (never silently forget what was learned).
pub fn load(state_dir: &Path, network: &str) -> Result<Saved, String> {
    let p = path(state_dir, network);
    match std::fs::read_to_string(&p) {
        Ok(text) => serde_json::from_str(&text).map_err(|e| format!("{}: {e}", p.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Saved::default()),
        Err(e) => Err(format!("{}: {e}", p.display())),
    }
}

/// Write atomically and durably: a temporary file in the same directory,
/// fsync, rename, then fsync the directory so the rename itself survives a
/// power cut.
pub fn save(state_dir: &Path, s: &Saved) -> std::io::Result<()> {
    std::fs::create_dir_all(state_dir)?;
    let p = path(state_dir, &s.network);
    let tmp = state_dir.join(format!(".{}.json.tmp", s.network));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(serde_json::to_string_pretty(s)?.as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, &p)?;
    std::fs::File::open(state_dir)?.sync_all()
}

impl Controller {
    /// What survives a restart: every peer's endpoint and replay counter,
    /// expired ones included, and this node's counter reservation.
    pub fn saved(&self, now: Now) -> Saved {
        let mut s = Saved {
            network: self.topo.network.name.clone(),
            node: self.node.clone(),
            auth: Some(auth_label(&self.topo)),
            ..Saved::default()
        };
        match &self.probe {
            Probe::Hub(h) => {
                let wall = now.wall_ns / 1_000_000_000;
                for (name, l) in h.live() {
                    let age = now.at.saturating_duration_since(l.last_seen).as_secs();
                    s.learned.insert(
                        name.clone(),
                        SavedPeer {
                            endpoint: l.endpoint,
                            counter: l.counter,
                            last_seen_unix: wall.saturating_sub(age),
                            up: l.up,
                            public_key: public_key(&self.topo, name),
                        },
                    );
                }
            }
            Probe::Spoke(_) => {
                s.counter = self.reserved;
                s.primary = self
                    .failover
                    .as_ref()
                    .and_then(|f| f.primary().map(str::to_string));
            }
        }
        s
    }
}

fn auth_label(topo: &Topology) -> String {
    match topo.network.auth {
        Auth::None => "none",
        Auth::Keys => "keys",
    }
    .to_string()
}

fn public_key(topo: &Topology, name: &str) -> Option<String> {
    topo.nodes
        .get(name)
        .and_then(|n| n.public_key)
        .map(|k| k.to_string())
}

/// Restore what a previous run learned, as heard `now`: a restart neither
/// expires nor re-learns anyone, and forgets no counter that still means
/// something. A counter saved under another auth mode, or another key of
/// the peer, is dropped, as a reload would drop it.
pub(super) fn restore(probe: &mut Probe, saved: &Saved, topo: &Topology, now: Instant) {
    let auth_changed = saved.auth.as_ref().is_some_and(|a| *a != auth_label(topo));
    match probe {
        Probe::Hub(h) => {
            for (name, p) in &saved.learned {
                let key_changed = p.public_key.is_some() && p.public_key != public_key(topo, name);
                let counter = if auth_changed || key_changed {
                    0
                } else {
                    p.counter
                };
                h.restore(name, p.endpoint, counter, p.up, now);
            }
            if !saved.learned.is_empty() {
                info!(
                    "restored {} peers' endpoints and counters",
                    saved.learned.len()
                );
            }
        }
        Probe::Spoke(s) => s.restore_counter(saved.counter),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_missing_is_empty() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(load(d.path(), "n").unwrap(), Saved::default());
        let mut s = Saved {
            network: "n".into(),
            node: "hub1".into(),
            counter: 7,
            ..Saved::default()
        };
        s.learned.insert(
            "alice".into(),
            SavedPeer {
                endpoint: "198.51.100.2:40059".parse().unwrap(),
                counter: 3,
                last_seen_unix: 1,
                up: true,
                public_key: None,
            },
        );
        save(d.path(), &s).unwrap();
        assert_eq!(load(d.path(), "n").unwrap(), s);
        std::fs::write(path(d.path(), "n"), "{").unwrap();
        assert!(load(d.path(), "n").is_err());
    }
}

//! What a daemon learned, kept across restarts in the state directory
//! (`<state-dir>/<network>.json`, written atomically, and the journal that
//! continues it, `<network>.journal`: see `journal.rs`): learned
//! endpoints, the counters that guard against replays (expired peers'
//! included), and this node's own counter reservation; how the controller
//! makes it and takes it back.

use std::{
    collections::BTreeMap,
    io::Write,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Instant,
};

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::{
    controller::{Controller, Now},
    journal,
    probes::Probe,
};
use crate::{
    config::{Auth, Topology},
    probe::hub::Live,
};

/// Default state directory.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/lvn";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Saved {
    pub network: String,
    pub node: String,
    /// What the hub heard from each peer, expired ones included, by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
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
    /// SHA-256 of a changed file still to be confirmed by a hub's answer: a
    /// restart resumes its window (back to the last good file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<String>,
    /// SHA-256 of a file rolled back: a restart does not apply it again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected: Option<String>,
    /// The last good file when it changed since the last save, written
    /// beside the state as
    /// `<network>.last-good.toml` (not inside it: `lvn apply` keeps the same
    /// file, and an operator can read it).
    #[serde(skip)]
    pub good: Option<std::sync::Arc<str>>,
    /// The generation of the journal that continues this file (absent in
    /// files of earlier versions, which have no journal: 0).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub generation: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
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

/// The last good topology file of a network on this node: the last one
/// `lvn apply` applied (and `lvn confirm` kept), or the daemon confirmed.
pub fn good_path(state_dir: &Path, network: &str) -> PathBuf {
    state_dir.join(format!("{network}.last-good.toml"))
}

/// The last good file's text; `None` if there is none.
pub fn load_good(state_dir: &Path, network: &str) -> Result<Option<String>, String> {
    let p = good_path(state_dir, network);
    match std::fs::read_to_string(&p) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", p.display())),
    }
}

/// Keep `text` as the last good file (atomically, durably); nothing is
/// written when the file already holds it.
pub fn save_good(state_dir: &Path, network: &str, text: &str) -> std::io::Result<()> {
    if load_good(state_dir, network).ok().flatten().as_deref() == Some(text) {
        return Ok(());
    }
    write_atomic(state_dir, &good_path(state_dir, network), text.as_bytes())
}

/// Forget the last good file (`lvn down`: nothing of it runs any more).
pub fn remove_good(state_dir: &Path, network: &str) -> std::io::Result<()> {
    match std::fs::remove_file(good_path(state_dir, network)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Read the saved state: the state file and its journal replayed. A missing
/// file is an empty state, a broken one an error (never silently forget
/// what was learned); a journal's bad lines are reported and skipped.
pub fn load(state_dir: &Path, network: &str) -> Result<Saved, String> {
    load_all(state_dir, network).map(|(s, _)| s)
}

/// [`load`], and what the files are (for the [`journal::Store`] that
/// writes them next).
pub fn load_all(state_dir: &Path, network: &str) -> Result<(Saved, journal::OnDisk), String> {
    let p = path(state_dir, network);
    let (mut s, snapshot_bytes) = match std::fs::read_to_string(&p) {
        Ok(text) => (
            serde_json::from_str::<Saved>(&text).map_err(|e| format!("{}: {e}", p.display()))?,
            text.len() as u64,
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (Saved::default(), 0),
        Err(e) => return Err(format!("{}: {e}", p.display())),
    };
    let on = journal::replay(state_dir, network, &mut s)?;
    for problem in &on.problems {
        warn!("{problem}");
    }
    Ok((
        s,
        journal::OnDisk {
            snapshot_bytes,
            ..on
        },
    ))
}

/// Write the whole state (and the last good file, if it changed)
/// atomically and durably, as a new snapshot with an empty journal.
#[cfg(test)]
pub fn save(state_dir: &Path, s: &Saved) -> std::io::Result<()> {
    let (disk, on) = load_all(state_dir, &s.network).unwrap_or_default();
    journal::Store::new(state_dir.to_path_buf(), disk, on).write(journal::Save::Whole(s.clone()))
}

/// A temporary file in the same directory, fsync, rename, then fsync the
/// directory so the rename itself survives a power cut.
pub(super) fn write_atomic(state_dir: &Path, p: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(state_dir)?;
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let tmp = state_dir.join(format!(".{name}.tmp"));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, p)?;
    std::fs::File::open(state_dir)?.sync_all()
}

impl Controller {
    /// What survives a restart: every peer's endpoint and replay counter,
    /// expired ones included, and this node's counter reservation.
    pub fn saved(&self, now: Now) -> Saved {
        let mut s = self.saved_head();
        if let Probe::Hub(h) = &self.probe {
            for (name, l) in h.live() {
                s.learned
                    .insert(name.clone(), self.saved_peer(name, l, now));
            }
        }
        s
    }

    /// [`Controller::saved`] but the peers: small, whatever the number of
    /// peers.
    pub(super) fn saved_head(&self) -> Saved {
        let mut s = Saved {
            network: self.topo.network.name.clone(),
            node: self.node.clone(),
            auth: Some(auth_label(&self.topo)),
            pending: self.pending(),
            rejected: self.confirm.rejected.clone(),
            // The last good file goes with a save only when it changed
            // since the last one written: it may be megabytes.
            good: self
                .confirm
                .good
                .as_ref()
                .filter(|(sha, _)| self.confirm.good_written.as_ref() != Some(sha))
                .map(|(_, text)| text.clone()),
            ..Saved::default()
        };
        if let Probe::Spoke(_) = &self.probe {
            s.counter = self.reserved;
            s.primary = self
                .failover
                .as_ref()
                .and_then(|f| f.primary().map(str::to_string));
        }
        s
    }

    /// What the state keeps of `names` (`None`: a peer no longer heard of,
    /// to forget): a save of what changed, built in O(changes).
    pub(super) fn saved_peers<'a>(
        &self,
        names: impl IntoIterator<Item = &'a String>,
        now: Now,
    ) -> Vec<(String, Option<SavedPeer>)> {
        let Probe::Hub(h) = &self.probe else {
            return Vec::new();
        };
        names
            .into_iter()
            .map(|name| {
                let p = h.live().get(name).map(|l| self.saved_peer(name, l, now));
                (name.clone(), p)
            })
            .collect()
    }

    fn saved_peer(&self, name: &str, l: &Live, now: Now) -> SavedPeer {
        let wall = now.wall_ns / 1_000_000_000;
        let age = now.at.saturating_duration_since(l.last_seen).as_secs();
        SavedPeer {
            endpoint: l.endpoint,
            counter: l.counter,
            last_seen_unix: wall.saturating_sub(age),
            up: l.up,
            public_key: public_key(&self.topo, name),
        }
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
        let back = load(d.path(), "n").unwrap();
        assert_eq!(back.generation, 1);
        assert_eq!(
            Saved {
                generation: 0,
                ..back
            },
            s
        );
        std::fs::write(path(d.path(), "n"), "{").unwrap();
        assert!(load(d.path(), "n").is_err());
    }
}

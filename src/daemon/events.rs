//! What goes in and out of the controller: events with the time they
//! happened, effects for the runner to carry out, and the counts kept for
//! status and metrics.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Instant,
};

use super::{
    journal::Save,
    reconciler::{Outcome, Request},
};
use crate::{
    config::Topology,
    probe::{PrivateKey, io::Inner},
};

/// The clock, read by the runner only.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    pub at: Instant,
    /// Wall clock, nanoseconds since the Unix epoch (keepalive counters).
    pub wall_ns: u64,
}

/// A topology file, read and checked off the loop.
#[derive(Debug)]
pub struct Loaded {
    /// What triggered it ("file changed", "SIGHUP").
    pub why: &'static str,
    /// SHA-256 of the file's bytes, hex.
    pub sha256: String,
    /// The file's text (empty if it could not be read), kept as the last
    /// good file once it proves itself.
    pub text: Arc<str>,
    /// The topology and this node's key, or every error, one per line.
    pub result: Result<(Arc<Topology>, Option<PrivateKey>), Vec<String>>,
}

impl Loaded {
    /// The file as one the daemon can run on, or its errors.
    pub fn version(self) -> Result<Version, Vec<String>> {
        let (topo, key) = self.result?;
        Ok(Version {
            topo,
            key,
            sha256: self.sha256,
            text: self.text,
        })
    }
}

/// A valid topology file with this node's key: what the daemon runs on,
/// and what a rollback goes back to.
#[derive(Debug, Clone)]
pub struct Version {
    pub topo: Arc<Topology>,
    pub key: Option<PrivateKey>,
    pub sha256: String,
    pub text: Arc<str>,
}

#[cfg(test)]
impl Version {
    /// A version of `topo` with a made-up hash and no text.
    pub fn of(topo: Arc<Topology>, key: Option<PrivateKey>, sha256: &str) -> Version {
        Version {
            topo,
            key,
            sha256: sha256.into(),
            text: Arc::from(""),
        }
    }
}

pub enum Event {
    /// A hub's underlay socket saw a keepalive.
    Keepalive {
        payload: Vec<u8>,
        from: SocketAddr,
        inner: Inner,
    },
    /// A spoke's overlay socket received an answer.
    Answer(Vec<u8>),
    /// Time passed (the wake-up came).
    Tick,
    /// The topology file changed, or SIGHUP.
    Config(Loaded),
    /// A reconcile finished.
    Reconciled(Outcome),
    /// A state save finished.
    Saved(Result<(), String>),
    /// Something may have changed lvn's objects (a keepalive socket failed).
    KernelChanged,
    /// The kernel reported a change that leaves lvn's objects different
    /// from what lvn wants, described.
    Drift(String),
}

#[derive(Debug)]
pub enum Effect {
    Reconcile(Request),
    /// Send a keepalive or an answer to the node with this overlay address.
    Send {
        to: IpAddr,
        payload: Vec<u8>,
    },
    /// Write the state: what changed since the last save, or everything.
    Save(Save),
    /// A systemd notification (READY=1, RELOADING=1, STATUS=...).
    Notify(String),
}

/// Counts the daemon keeps for status and metrics.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    /// Keepalive counters: sent, received, accepted, rejected_<reason>, ...
    pub counters: BTreeMap<String, u64>,
    pub reconcile_ok: u64,
    pub reconcile_failed: u64,
    pub reconcile_seconds_sum: f64,
    /// Successful reconciles that planned only the peers that changed.
    pub reconcile_narrowed: u64,
    /// Changed files a spoke went back from (`confirm_after`).
    pub rollbacks: u64,
    /// Drift the kernel reported (each change to lvn's objects by hand).
    pub drift: u64,
    /// Changes applied, by (kind, action).
    pub changes: BTreeMap<(String, String), u64>,
}

impl Tally {
    /// Count an event; allocates only the first time a key is seen.
    pub fn count(&mut self, key: &str, n: u64) {
        match self.counters.get_mut(key) {
            Some(v) => *v = v.saturating_add(n),
            None => {
                self.counters.insert(key.to_string(), n);
            }
        }
    }
}

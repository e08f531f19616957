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
    reconciler::{Outcome, Request},
    state::Saved,
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
    /// The topology and this node's key, or every error, one per line.
    pub result: Result<(Arc<Topology>, Option<PrivateKey>), Vec<String>>,
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
    /// The kernel reported a change to lvn's objects.
    KernelChanged,
}

#[derive(Debug)]
pub enum Effect {
    Reconcile(Request),
    /// Send a keepalive or an answer to the node with this overlay address.
    Send {
        to: IpAddr,
        payload: Vec<u8>,
    },
    Save(Saved),
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

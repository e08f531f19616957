//! `lvn run`: the reconcile loop as a daemon, split the way the planner is.
//!
//! `controller.rs` is pure: events (a keepalive, an answer, a tick, a
//! topology file loaded, a reconcile or a save finished) come in with `now`,
//! effects (reconcile, send, save, notify) go out, and `next_wakeup()` says
//! when to call again; `reload.rs` is its all-or-nothing reload. `runner.rs`
//! owns the clock, the sockets (`sockets.rs`), the servers (`serve.rs`), the
//! datapath and the file watch (`watch.rs`), and runs each effect beside the
//! loop; `reconciler.rs` is one observe-plan-apply, shared with the
//! controller's tests on the fake kernel. `probes.rs` builds the probe state
//! machines (keepalives, a spoke's failover), `state.rs` keeps what was
//! learned across restarts, `status.rs`, `view.rs` and `metrics.rs` show it.

mod backoff;
mod controller;
mod events;
mod layer2;
mod metrics;
mod probes;
mod reconciler;
mod reload;
mod runner;
mod serve;
mod sockets;
mod state;
mod status;
mod view;
mod watch;

#[cfg(test)]
mod failover_tests;
#[cfg(test)]
mod runner_tests;
#[cfg(test)]
mod tests;

use std::{path::PathBuf, sync::Arc, time::Duration};

use anyhow::{Context, Result};

pub use state::{DEFAULT_STATE_DIR, Saved, SavedPeer};
pub use status::{DEFAULT_RUN_DIR, PeerStatus, Status, find_socket, query, socket_path, table};

use crate::{
    config::{self, Auth, Topology},
    datapath::kernel::Kernel,
    probe::{PrivateKey, keyfile},
    reconcile::Liveness,
};
use controller::Loaded;

/// Default private key file.
pub const DEFAULT_KEY_FILE: &str = "/etc/lvn/private.key";
/// Re-read the kernel at least this often, whatever happens (drift repair).
pub const DEFAULT_RESYNC: Duration = Duration::from_secs(30);
/// Bounds of `--resync`: often enough to matter, rarely enough not to spin.
pub const MIN_RESYNC: Duration = Duration::from_secs(1);
pub const MAX_RESYNC: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, Clone)]
pub struct Options {
    pub config: PathBuf,
    pub node: String,
    pub key_file: PathBuf,
    pub state_dir: PathBuf,
    pub run_dir: PathBuf,
    pub resync: Duration,
    pub metrics: Option<std::net::SocketAddr>,
}

/// Run until SIGTERM or SIGINT, on the kernel.
pub async fn run(opts: Options) -> Result<()> {
    let dp = Kernel::connect().context("opening netlink")?;
    runner::run(opts, dp).await
}

/// Read and check the topology file and this node's key (blocking I/O:
/// the runner calls it off the loop). Every error is one line.
fn load(opts: &Options, why: &'static str) -> Loaded {
    let sha256 = metrics::file_hash(&opts.config);
    let result = match config::load(&opts.config) {
        Err(errors) => Err(errors.0.iter().map(ToString::to_string).collect()),
        Ok(topo) => match topo.node(&opts.node) {
            Err(e) => Err(vec![e.to_string()]),
            Ok(_) => match load_key(&topo, opts) {
                Ok(key) => Ok((Arc::new(topo), key)),
                Err(e) => Err(vec![format!("{e:#}")]),
            },
        },
    };
    Loaded {
        why,
        sha256,
        result,
    }
}

fn load_key(topo: &Topology, opts: &Options) -> Result<Option<PrivateKey>> {
    if topo.network.auth != Auth::Keys {
        return Ok(None);
    }
    let key = keyfile::load_private_key(&opts.key_file)?;
    let me = topo.node(&opts.node)?;
    let mine = key.public();
    match me.public_key {
        Some(p) if p == mine => Ok(Some(key)),
        Some(p) => anyhow::bail!(
            "the key in {} has public key {mine}, but node '{}' declares {p} in {}",
            opts.key_file.display(),
            me.name,
            topo.file.display()
        ),
        None => anyhow::bail!("node '{}' has no public_key", me.name),
    }
}

/// What a daemon beside `lvn plan` saved: learned endpoints (hub), the
/// primary hub failover chose (spoke), so the plan shows what it would do.
pub fn saved_liveness(state_dir: &std::path::Path, topo: &Topology, node: &str) -> Liveness {
    let mut l = Liveness::default();
    if let Ok(s) = state::load(state_dir, &topo.network.name)
        && s.node == node
    {
        l.learned = s
            .learned
            .into_iter()
            .filter(|(n, p)| p.up && topo.nodes.get(n).is_some_and(|n| n.endpoint.is_none()))
            .map(|(n, p)| (n, p.endpoint))
            .collect();
        l.primary = s.primary.filter(|p| topo.nodes.contains_key(p));
    }
    l
}

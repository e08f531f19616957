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
//! learned across restarts (a snapshot and `journal.rs`), `status.rs`, `view.rs` and `metrics.rs` show it.

mod backoff;
mod confirm;
mod controller;
mod events;
mod journal;
mod kernel_watch;
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
mod confirm_tests;
#[cfg(test)]
mod delta_tests;
#[cfg(test)]
mod failover_tests;
#[cfg(test)]
mod runner_tests;
#[cfg(test)]
mod tests;

use std::{path::PathBuf, sync::Arc, time::Duration};

use anyhow::{Context, Result};

pub use metrics::text_hash;
pub use state::{
    DEFAULT_STATE_DIR, Saved, SavedPeer, good_path, load_good, remove_good, save_good,
};
pub use status::{
    DEFAULT_RUN_DIR, PeerStatus, Status, find_socket, query, short, socket_path, table,
};

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
    // Subscribe before the first observation, so nothing falls between.
    let kernel = match crate::datapath::kernel::monitor::Monitor::open() {
        Ok(m) => Some(kernel_watch::KernelWatch::spawn(m)),
        Err(e) => {
            tracing::warn!(
                "cannot subscribe to kernel notifications: {e}; drift is noticed by the resync only"
            );
            None
        }
    };
    runner::run(opts, dp, kernel).await
}

/// Read and check the topology file and this node's key (blocking I/O:
/// the runner calls it off the loop). Every error is one line.
fn load(opts: &Options, why: &'static str) -> Loaded {
    match std::fs::read_to_string(&opts.config) {
        Ok(text) => check(opts, &opts.config, text, why),
        Err(e) => Loaded {
            why,
            sha256: String::new(),
            text: Arc::from(""),
            result: Err(vec![format!("{}: cannot read: {e}", opts.config.display())]),
        },
    }
}

/// Check topology text read from `path` (the file, or the last good copy),
/// with this node's key.
fn check(opts: &Options, path: &std::path::Path, text: String, why: &'static str) -> Loaded {
    let sha256 = metrics::text_hash(&text);
    let result = match config::parse(path, &text) {
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
        text: Arc::from(text),
        result,
    }
}

/// The file the daemon starts on: the file on disk, or the last good file
/// of its network (see `confirm.rs`), with what the last run saved.
fn load_start(opts: &Options) -> Result<(confirm::Start, Saved, journal::OnDisk)> {
    let current = load(opts, "start");
    let network = match &current.result {
        Ok((topo, _)) => topo.network.name.clone(),
        // A broken file may still name its network: then its last good
        // file can be found.
        Err(errors) => {
            network_name(&current.text).ok_or_else(|| anyhow::anyhow!("{}", errors.join("\n")))?
        }
    };
    let (saved, on_disk) = state::load_all(&opts.state_dir, &network)
        .map_err(|e| anyhow::anyhow!("reading saved state: {e}"))?;
    let good = match state::load_good(&opts.state_dir, &network) {
        Ok(Some(text)) => {
            let path = state::good_path(&opts.state_dir, &network);
            match check(opts, &path, text, "start").version() {
                Ok(v) => Some(v),
                Err(errors) => {
                    tracing::warn!("ignoring the last good file: {}", errors.join("; "));
                    None
                }
            }
        }
        Ok(None) => None,
        Err(e) => {
            tracing::warn!("ignoring the last good file: {e}");
            None
        }
    };
    let start = confirm::choose_start(current.version(), good, &saved)
        .map_err(|errors| anyhow::anyhow!("{}", errors.join("\n")))?;
    Ok((start, saved, on_disk))
}

/// `[network] name` of topology text that may be invalid otherwise.
pub fn network_name(text: &str) -> Option<String> {
    let v: toml::Value = toml::from_str(text).ok()?;
    Some(v.get("network")?.get("name")?.as_str()?.to_string())
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

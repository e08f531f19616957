//! Drift from the kernel's own notifications, beside the loop: a task reads
//! the monitor socket, turns each notification into a change and judges it
//! against the last desired state (`reconcile::drift`). Only drift reaches
//! the controller, as one short description; lvn's own writes and changes
//! to what lvn does not own stay here. While a reconcile runs, changes wait
//! and are judged against the state it brings, so lvn's own writes are
//! never mistaken for drift.

use std::{sync::Arc, time::Duration};

use tokio::sync::{mpsc, watch};
use tracing::warn;

use crate::{
    daemon::reconciler::Update,
    datapath::kernel::monitor::{self, Monitor},
    reconcile::{
        State, delta,
        drift::{self, Change},
    },
};

/// Changes kept while a reconcile runs; past this, the burst counts as
/// lost and the next reconcile looks at everything.
const MAX_PENDING: usize = 100_000;
/// Pause after a read error that is not an overflow, before reading again.
const READ_RETRY: Duration = Duration::from_secs(1);

/// What the watch judges by, as the runner last set it.
#[derive(Debug, Clone, Default)]
pub struct Watched {
    /// A reconcile runs: judge nothing until it is done.
    pub busy: bool,
    pub network: String,
    pub device: String,
    pub watch: Arc<drift::Watch>,
}

/// The runner's ends: set what is judged by, receive drift.
pub struct KernelWatch {
    pub watched: watch::Sender<Arc<Watched>>,
    pub drift: mpsc::Receiver<String>,
}

impl KernelWatch {
    /// Start watching; nothing is judged until the first reconcile is done.
    pub fn spawn(mon: Monitor) -> KernelWatch {
        let busy = Arc::new(Watched {
            busy: true,
            ..Watched::default()
        });
        let (watched, rx) = watch::channel(busy);
        let (tx, drift) = mpsc::channel(16);
        tokio::spawn(run(mon, rx, tx));
        KernelWatch { watched, drift }
    }

    /// A reconcile for `network` and `device` starts.
    pub fn busy(&self, network: &str, device: &str) {
        self.watched.send_modify(|w| {
            let w = Arc::make_mut(w);
            w.busy = true;
            w.network = network.to_string();
            w.device = device.to_string();
        });
    }

    /// The reconcile is done; judge by the desired state it brings from
    /// now on (by the old one if it computed none). A whole new state comes
    /// with lvn's devices, from `watch_of`.
    pub fn done(&self, update: Option<Update>, watch_of: impl FnOnce(Arc<State>) -> drift::Watch) {
        self.watched.send_modify(|w| {
            let w = Arc::make_mut(w);
            w.busy = false;
            match update {
                Some(Update::Full(state)) => w.watch = Arc::new(watch_of(state)),
                Some(Update::Patch { keys, from }) => {
                    // In place: nobody else holds the state between
                    // reconciles, so a change to a few peers costs what it
                    // changes, not a copy of the whole state.
                    let watch = Arc::make_mut(&mut w.watch);
                    let state = Arc::make_mut(&mut watch.desired);
                    delta::patch(state, &keys, &from);
                }
                None => {}
            }
        });
    }
}

async fn run(
    mut mon: Monitor,
    mut watched: watch::Receiver<Arc<Watched>>,
    tx: mpsc::Sender<String>,
) {
    let mut pending: Vec<Change> = Vec::new();
    loop {
        tokio::select! {
            r = mon.next() => {
                let now = watched.borrow().clone();
                let changes = match r {
                    Ok(msgs) => msgs
                        .iter()
                        .filter_map(|m| monitor::change(m, &now.network, &now.device))
                        .collect(),
                    Err(e) if monitor::is_overflow(&e) => vec![Change::Lost],
                    Err(e) => {
                        warn!("reading kernel notifications: {e}; drift is noticed by the resync meanwhile");
                        tokio::time::sleep(READ_RETRY).await;
                        vec![Change::Lost]
                    }
                };
                if now.busy {
                    if pending.len() + changes.len() > MAX_PENDING {
                        pending.clear();
                        pending.push(Change::Lost);
                    } else {
                        pending.extend(changes);
                    }
                } else {
                    judge(&now, changes, &tx);
                }
            }
            r = watched.changed() => {
                if r.is_err() {
                    return; // the daemon is gone
                }
                let now = watched.borrow_and_update().clone();
                if !now.busy {
                    judge(&now, std::mem::take(&mut pending), &tx);
                }
            }
        }
    }
}

fn judge(w: &Watched, changes: Vec<Change>, tx: &mpsc::Sender<String>) {
    for c in drift::latest(changes) {
        if let Some(d) = drift::drift(&w.watch, &c) {
            // A full channel already holds drift to repair: one reconcile
            // repairs it all.
            let _ = tx.try_send(d);
        }
    }
}

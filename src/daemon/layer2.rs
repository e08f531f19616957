//! The daemon's share of layer 2 and of path MTU checks: saying once what
//! the desired state waits for (a missing `attach` master) and once that it
//! arrived; saying once when a spoke's path to a hub stops (or starts)
//! carrying the device MTU. The reconcile itself attaches the device on the
//! first run after the master appears (the periodic resync, or a kernel
//! change); the MTU is never changed by lvn.

use tracing::{info, warn};

use super::events::Tally;
use crate::{
    probe::{pmtu::Verdict, spoke::SpokeProbe},
    reconcile::Waiting,
};

/// Log the spoke's new path MTU verdicts and count the bad ones.
pub(super) fn note_path_mtu(spoke: &mut SpokeProbe, tally: &mut Tally) {
    for (hub, v) in spoke.take_verdicts() {
        match v {
            Verdict::CannotCarry(mtu) => {
                tally.count("path_mtu_failures", 1);
                warn!(
                    hub = %hub,
                    "path MTU: the path to {hub} cannot carry the device MTU {mtu}: keepalives are answered, full-size probes (outer DF set) are lost; lower `mtu` in the topology or fix the path (lvn does not change the MTU itself)"
                );
            }
            Verdict::Carries(mtu) => {
                info!(hub = %hub, "path MTU: the path to {hub} carries the device MTU {mtu}")
            }
        }
    }
}

/// Log what is new in `now` and what `now` no longer waits for, then keep
/// `now`.
pub(super) fn note_waiting(before: &mut Vec<Waiting>, now: Vec<Waiting>) {
    for w in &now {
        if !before.contains(w) {
            warn!("{w}");
        }
    }
    for w in before.iter().filter(|w| !now.contains(w)) {
        match w {
            Waiting::Master { master, dev } => {
                info!("attach: {master} exists now; {dev} is its port")
            }
        }
    }
    *before = now;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_latest_list() {
        let w = Waiting::Master {
            master: "bat0".into(),
            dev: "lvn-x".into(),
        };
        let mut before = Vec::new();
        note_waiting(&mut before, vec![w.clone()]);
        assert_eq!(before, vec![w]);
        note_waiting(&mut before, Vec::new());
        assert!(before.is_empty());
    }
}

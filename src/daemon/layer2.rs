//! The daemon's share of layer 2: saying once what the desired state waits
//! for (a missing `attach` master), and once that it arrived. The reconcile
//! itself attaches the device on the first run after the master appears
//! (the periodic resync, or a kernel change).

use tracing::{info, warn};

use crate::reconcile::Waiting;

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

//! A reload, in the controller: the new file's topology and key, all or
//! nothing. A file that fails anywhere (parse, validation, this node's key,
//! a peer's pair key) changes nothing, learned state included; an unchanged
//! invalid file is reported once.

use tracing::{debug, error, info};

use super::{
    controller::{Controller, Effect, Loaded, Now},
    probes,
    reconciler::must_retire,
};
use crate::{
    datapath::Scope,
    probe::{PrivateKey, PublicKey},
};

impl Controller {
    /// A reload: all or nothing. A file that fails anywhere (parse,
    /// validation, this node's key, a peer's pair key) changes nothing,
    /// learned state included.
    pub(super) fn on_config(&mut self, loaded: Loaded, now: Now, out: &mut Vec<Effect>) {
        let why = loaded.why;
        let (topo, key) = match loaded.result {
            Ok(ok) => ok,
            Err(errors) => return self.refuse(why, &loaded.sha256, &errors.join("\n")),
        };
        if *topo == *self.topo && public(&key) == public(&self.key) {
            debug!("reload ({why}): no change");
            self.invalid = None;
            self.sha256 = loaded.sha256;
            return;
        }
        let probe = match probes::configure(Some(&self.probe), &topo, &self.node, key.as_ref()) {
            Ok(p) => p,
            Err(e) => return self.refuse(why, &loaded.sha256, &e),
        };
        self.failover = probes::failover(self.failover.as_ref(), &topo, &self.node, now.at);
        self.invalid = None;
        let old = Scope::of(&self.topo.network);
        let new = Scope::of(&topo.network);
        if must_retire(&old, &new) && !self.retire.contains(&old) {
            info!(
                "reload ({why}): network {} device {} gives way to network {} device {}",
                old.network, old.device, new.network, new.device
            );
            self.retire.push(old);
        }
        self.retire.retain(|s| s != &new);
        self.topo = topo;
        self.key = key;
        self.probe = probe;
        self.sha256 = loaded.sha256;
        self.tally.count("reloads_ok", 1);
        info!("reload ({why}): applying the new topology");
        out.push(Effect::Notify("RELOADING=1".into()));
        self.reloading = true;
        // A new file may have fixed what was failing: try now.
        self.reconcile.retry_at = None;
        self.want(now.at, "reload");
        self.save_soon(now.at);
    }

    /// Report a refused file once per distinct content and reason.
    fn refuse(&mut self, why: &str, sha256: &str, reason: &str) {
        self.tally.count("reloads_failed", 1);
        let seen = (sha256.to_string(), reason.to_string());
        if self.invalid.as_ref() == Some(&seen) {
            debug!("reload ({why}): the file is still invalid");
            return;
        }
        for line in reason.lines() {
            error!("{line}");
        }
        error!("reload ({why}): the new file is refused; the running state stays as it was");
        self.invalid = Some(seen);
    }
}

fn public(key: &Option<PrivateKey>) -> Option<PublicKey> {
    key.as_ref().map(PrivateKey::public)
}

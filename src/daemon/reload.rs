//! A reload, in the controller: the new file's topology and key, all or
//! nothing. A file that fails anywhere (parse, validation, this node's key,
//! a peer's pair key) changes nothing, learned state included; an unchanged
//! invalid file is reported once.

use tracing::{debug, error, info};

use super::{
    controller::{Controller, Effect, Loaded, Now, Version},
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
        // An answer may have confirmed the running file since the last look.
        self.check_window(now, out);
        if why != "SIGHUP" && self.confirm.rejected.as_ref() == Some(&loaded.sha256) {
            debug!(
                "reload ({why}): sha256 {} was rolled back; not applying it again until it changes or SIGHUP",
                loaded.sha256
            );
            self.invalid = None;
            return;
        }
        let sha256 = loaded.sha256.clone();
        let v = match loaded.version() {
            Ok(v) => v,
            Err(errors) => return self.refuse(why, &sha256, &errors.join("\n")),
        };
        if *v.topo == *self.topo && public(&v.key) == public(&self.key) {
            debug!("reload ({why}): no change");
            self.invalid = None;
            self.sha256 = v.sha256;
            self.text = v.text;
            return;
        }
        let previous = self.rollback_target(now.at);
        if let Err(e) = self.switch(v, why, now, out) {
            return self.refuse(why, &sha256, &e);
        }
        self.invalid = None;
        self.confirm.rejected = None;
        self.open_window(previous, self.generation, now.at);
        self.tally.count("reloads_ok", 1);
    }

    /// Run on `v` from now on: its probe, failover and scope (retiring the
    /// old device if the name changed), and a reconcile at once. All or
    /// nothing: an error changes nothing.
    pub(super) fn switch(
        &mut self,
        v: Version,
        why: &str,
        now: Now,
        out: &mut Vec<Effect>,
    ) -> Result<(), String> {
        let probe = probes::configure(Some(&self.probe), &v.topo, &self.node, v.key.as_ref())?;
        self.failover = probes::failover(self.failover.as_ref(), &v.topo, &self.node, now.at);
        let old = Scope::of(&self.topo.network);
        let new = Scope::of(&v.topo.network);
        if must_retire(&old, &new) && !self.retire.contains(&old) {
            info!(
                "reload ({why}): network {} device {} gives way to network {} device {}",
                old.network, old.device, new.network, new.device
            );
            self.retire.push(old);
        }
        self.retire.retain(|s| s != &new);
        match crate::reconcile::delta::changed_nodes(&self.topo, &v.topo) {
            Some(nodes) => nodes.iter().for_each(|n| {
                self.touch(n);
                self.unsaved(n);
            }),
            None => {
                self.touch_all();
                self.unsaved_all();
            }
        }
        self.topo = v.topo;
        self.key = v.key;
        self.probe = probe;
        self.sha256 = v.sha256;
        self.text = v.text;
        self.generation += 1;
        // Peers' expire_after may have changed: look again now.
        self.next_expiry_check = now.at;
        info!("reload ({why}): applying topology sha256 {}", self.sha256);
        out.push(Effect::Notify("RELOADING=1".into()));
        self.reloading = true;
        // A new file may have fixed what was failing: try now.
        self.reconcile.retry_at = None;
        self.want(now.at, if why == "rollback" { why } else { "reload" });
        self.save_soon(now.at);
        Ok(())
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

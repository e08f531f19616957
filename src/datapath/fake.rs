//! An in-memory kernel for property tests of the planner and for tests of
//! what drives a datapath. It applies steps to a [`State`] and keeps the
//! foreign objects the planner must never touch, so a test can check that
//! they survive; it can fail on demand, and counts the calls it gets.
//!
//! [`State`]: crate::reconcile::State

use std::collections::BTreeMap;

use super::{ApplyReport, Datapath, DatapathError, Scope};
use crate::{
    naming::SysctlKey,
    reconcile::{Action, Object, Observed, Plan, Sysctl},
};

/// Index the fake reports for a device put into [`FakeKernel::observed`]
/// by hand rather than created by an apply.
pub const PRESET_IFINDEX: u32 = 1;

#[derive(Debug, Clone, Default)]
pub struct FakeKernel {
    /// What the fake kernel holds: lvn's objects in `state`, foreign ones
    /// beside. A test puts a foreign object in lvn's way here, and the next
    /// `reconcile::plan` against it returns a `PlanError`:
    /// - `observed.foreign_link = Some("kind bridge".into())`: a device that
    ///   is not lvn's has the name of lvn's VXLAN device
    ///   (`PlanError::ForeignLink`, for a network with datapath "vxlan");
    /// - `observed.other_links.insert(tunnel_name(net, peer), "kind dummy".into())`:
    ///   the same for a fou tunnel (`PlanError::ForeignLink`);
    /// - `observed.foreign_routes.insert(RouteKey { dst, metric }, "static".into())`:
    ///   a route lvn wants is someone else's (`PlanError::ForeignRoute`).
    pub observed: Observed,
    /// Writes applied so far.
    pub writes: usize,
    /// When set, `observe` returns this error instead of the state.
    pub fail_observe: Option<fn() -> DatapathError>,
    /// When set, `apply` returns this error and changes nothing.
    pub fail_apply: Option<fn() -> DatapathError>,
    /// Calls of `observe`, failed ones included.
    pub observe_calls: usize,
    /// Calls of `apply`, failed ones included (not of `apply_plan`).
    pub apply_calls: usize,
    /// Devices created so far (the link, re-creations and tunnels): a
    /// created device gets index `1 + created`, so a re-created one has a
    /// new index, as in the kernel.
    pub created: u32,
    /// Index of each device an apply created.
    pub ifindexes: BTreeMap<String, u32>,
}

impl Datapath for FakeKernel {
    async fn observe(&mut self, _scope: &Scope) -> Result<Observed, DatapathError> {
        self.observe_calls += 1;
        match self.fail_observe {
            Some(fail) => Err(fail()),
            None => Ok(self.observed.clone()),
        }
    }

    async fn apply(&mut self, _scope: &Scope, plan: &Plan) -> Result<ApplyReport, DatapathError> {
        self.apply_calls += 1;
        match self.fail_apply {
            Some(fail) => Err(fail()),
            None => Ok(self.apply_plan(plan)),
        }
    }

    /// Some index while lvn's link or tunnel `device` exists: the one it
    /// was created with, or [`PRESET_IFINDEX`] if a test put it there.
    fn ifindex(&self, device: &str) -> Option<u32> {
        let s = &self.observed.state;
        let exists =
            s.link.as_ref().is_some_and(|l| l.name == device) || s.tunnels.contains_key(device);
        exists.then(|| {
            self.ifindexes
                .get(device)
                .copied()
                .unwrap_or(PRESET_IFINDEX)
        })
    }
}

impl FakeKernel {
    /// Apply every step, as the kernel would.
    pub fn apply_plan(&mut self, plan: &Plan) -> ApplyReport {
        let mut report = ApplyReport::default();
        for step in &plan.steps {
            self.apply_step(step);
            report.writes += 1;
            report.done.push(step.clone());
        }
        self.writes += report.writes;
        report
    }

    /// A device comes into being with a new index.
    fn create(&mut self, device: &str) {
        self.created += 1;
        self.ifindexes
            .insert(device.to_string(), PRESET_IFINDEX + self.created);
    }

    fn apply_step(&mut self, step: &crate::reconcile::Step) {
        match &step.object {
            Object::Link(l) if step.action == Action::Remove => {
                self.ifindexes.remove(&l.name);
            }
            Object::Link(l) if step.action == Action::Add || !step.replace.is_empty() => {
                self.create(&l.name);
            }
            Object::Tunnel(t) if step.action == Action::Remove => {
                self.ifindexes.remove(&t.name);
            }
            Object::Tunnel(t) if !self.observed.state.tunnels.contains_key(&t.name) => {
                self.create(&t.name);
            }
            _ => {}
        }
        let s = &mut self.observed.state;
        let remove = step.action == Action::Remove;
        match &step.object {
            Object::Link(l) => {
                let fresh = step.action == Action::Add || !step.replace.is_empty();
                if remove || fresh {
                    // The device goes, and everything on it.
                    *s = Default::default();
                    self.observed.kernel_neighbours.clear();
                }
                if fresh {
                    // A new device starts with the kernel's default settings.
                    for (&(family, setting), value) in &self.observed.sysctl_defaults {
                        let key = SysctlKey::new(family, &l.name, setting);
                        let value = value.clone();
                        s.sysctls.insert(key.clone(), Sysctl { key, value });
                    }
                }
                if !remove {
                    s.link = Some(l.clone());
                }
            }
            Object::Address(a) => {
                if remove {
                    s.addresses.remove(&a.key());
                } else {
                    s.addresses.insert(a.key(), a.clone());
                }
            }
            Object::Fdb(f) => {
                if remove {
                    s.fdb.remove(&f.mac);
                } else {
                    s.fdb.insert(f.mac, f.clone());
                }
            }
            Object::Neigh(n) => {
                if remove {
                    s.neighbours.remove(&n.address);
                } else {
                    s.neighbours.insert(n.address, n.clone());
                }
            }
            Object::Route(r) => {
                if remove {
                    s.routes.remove(&r.key());
                } else {
                    s.routes.insert(r.key(), r.clone());
                }
            }
            Object::Tunnel(t) => {
                if remove {
                    // The tunnel goes, and what is on it.
                    s.tunnels.remove(&t.name);
                    s.addresses.retain(|k, _| k.dev != t.name);
                    s.routes.retain(|_, r| *r.dev != *t.name);
                    s.sysctls.retain(|k, _| k.device != t.name);
                } else {
                    if !s.tunnels.contains_key(&t.name) {
                        for (&(family, setting), value) in &self.observed.sysctl_defaults {
                            let key = SysctlKey::new(family, &t.name, setting);
                            let value = value.clone();
                            s.sysctls.insert(key.clone(), Sysctl { key, value });
                        }
                    }
                    s.tunnels.insert(t.name.clone(), t.clone());
                }
            }
            Object::Fou(f) => {
                if remove {
                    s.fou.remove(&f.port);
                } else {
                    s.fou.insert(f.port, *f);
                }
            }
            Object::Sysctl(x) => {
                s.sysctls.insert(x.key.clone(), x.clone());
            }
            Object::Flood(f) => {
                if remove {
                    s.flood.remove(&f.key());
                } else {
                    s.flood.insert(f.key(), f.clone());
                }
            }
            Object::Port(p) => s.port = (!remove).then(|| p.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use futures::executor::block_on;

    use super::*;
    use crate::{
        config::{self, Topology},
        reconcile::{self, Desired, PlanError, RouteKey},
    };

    fn topo(vni: u32) -> Topology {
        let text = format!(
            r#"
[network]
name = "ninux"
overlay = "100.64.0.0/16"
port = 4789
vni = {vni}

[nodes.hub1]
role = "hub"
address = "100.64.0.1"
endpoint = "198.51.100.1"

[nodes.alice]
address = "100.64.1.2"
"#
        );
        config::parse(Path::new("t.toml"), &text).unwrap_or_else(|e| panic!("{e}"))
    }

    fn desired(t: &Topology) -> Desired {
        let me = t.node("hub1").expect("hub1");
        reconcile::desired(t, me, &Default::default(), &Default::default())
    }

    /// Plan `t` against the fake and apply it through the trait.
    fn converge(k: &mut FakeKernel, t: &Topology) {
        let scope = Scope::of(&t.network);
        let observed = block_on(k.observe(&scope)).expect("observe");
        let plan = reconcile::plan(&desired(t), &observed).expect("plan");
        block_on(k.apply(&scope, &plan)).expect("apply");
    }

    #[test]
    fn a_recreated_device_has_a_new_index() {
        let mut k = FakeKernel::default();
        let t = topo(42);
        let dev = t.network.device.clone();
        assert_eq!(k.ifindex(&dev), None);
        converge(&mut k, &t);
        let first = k.ifindex(&dev).expect("created");
        converge(&mut k, &t);
        assert_eq!(k.ifindex(&dev), Some(first), "nothing changed");
        // A new VNI cannot change in place: the device is re-created.
        converge(&mut k, &topo(43));
        let second = k.ifindex(&dev).expect("re-created");
        assert_ne!(first, second);
        let down = reconcile::plan(&Desired::default(), &k.observed).expect("plan");
        k.apply_plan(&down);
        assert_eq!(k.ifindex(&dev), None);
        assert_eq!((k.observe_calls, k.apply_calls), (3, 3));
    }

    fn fou_topo() -> Topology {
        let text = r#"
[network]
name = "ninux"
overlay = "100.64.0.0/16"
port = 4789
vni = 42
datapath = "fou"

[nodes.hub1]
role = "hub"
address = "100.64.0.1"
endpoint = "198.51.100.1"

[nodes.alice]
address = "100.64.1.2"
endpoint = "203.0.113.7"
"#;
        config::parse(Path::new("t.toml"), text).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_tunnel_has_an_index_while_it_exists() {
        let t = fou_topo();
        let mut k = FakeKernel::default();
        converge(&mut k, &t);
        let tunnel = crate::naming::tunnel_name("ninux", "alice");
        assert!(k.ifindex(&tunnel).is_some());
        let down = reconcile::plan(&Desired::default(), &k.observed).expect("plan");
        k.apply_plan(&down);
        assert_eq!(k.ifindex(&tunnel), None);
    }

    #[test]
    fn a_device_put_there_by_hand_has_the_preset_index() {
        let mut k = FakeKernel::default();
        let t = topo(42);
        converge(&mut k, &t);
        let by_hand = FakeKernel {
            observed: k.observed.clone(),
            ..FakeKernel::default()
        };
        assert_eq!(by_hand.ifindex(&t.network.device), Some(PRESET_IFINDEX));
    }

    #[test]
    fn fails_on_demand_and_counts_every_call() {
        let mut k = FakeKernel {
            fail_observe: Some(|| DatapathError::Netlink("busy".into())),
            fail_apply: Some(|| DatapathError::Unsupported("no".into())),
            ..FakeKernel::default()
        };
        let t = topo(42);
        let scope = Scope::of(&t.network);
        let e = block_on(k.observe(&scope)).expect_err("fails");
        assert!(e.is_transient(), "{e}");
        let plan = reconcile::plan(&desired(&t), &k.observed).expect("plan");
        let e = block_on(k.apply(&scope, &plan)).expect_err("fails");
        assert!(!e.is_transient(), "{e}");
        assert!(
            k.observed.state.is_empty(),
            "a failed apply changes nothing"
        );
        assert_eq!((k.observe_calls, k.apply_calls, k.writes), (1, 1, 0));

        k.fail_observe = None;
        k.fail_apply = None;
        converge(&mut k, &t);
        assert!(k.observed.state.link.is_some());
        assert_eq!((k.observe_calls, k.apply_calls), (2, 2));
    }

    #[test]
    fn foreign_objects_in_the_way_make_the_plan_fail() {
        let t = topo(42);
        let want = desired(&t);
        let mut k = FakeKernel::default();
        k.observed.foreign_link = Some("kind bridge".into());
        let e = reconcile::plan(&want, &k.observed).expect_err("foreign device");
        assert!(matches!(e, PlanError::ForeignLink { .. }), "{e}");

        let mut k = FakeKernel::default();
        let key: RouteKey = *want.state.routes.keys().next().expect("a route");
        k.observed.foreign_routes.insert(key, "static".into());
        let e = reconcile::plan(&want, &k.observed).expect_err("foreign route");
        assert!(matches!(e, PlanError::ForeignRoute { .. }), "{e}");

        let mut k = FakeKernel::default();
        let tunnel = crate::naming::tunnel_name("ninux", "alice");
        k.observed.other_links.insert(tunnel, "kind dummy".into());
        let e = reconcile::plan(&desired(&fou_topo()), &k.observed).expect_err("foreign tunnel");
        assert!(matches!(e, PlanError::ForeignLink { .. }), "{e}");
    }
}

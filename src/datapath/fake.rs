//! An in-memory kernel for property tests of the planner. It applies steps
//! to a [`State`] and keeps the foreign objects the planner must never touch,
//! so a test can check that they survive.

use super::{ApplyReport, Datapath, DatapathError, Scope};
use crate::{
    naming::{Family, SysctlKey},
    reconcile::{Action, Object, Observed, Plan, Sysctl},
};

#[derive(Debug, Clone)]
pub struct FakeKernel {
    /// What the fake kernel holds: lvn's objects in `state`, foreign ones beside.
    pub observed: Observed,
    /// Writes applied so far.
    pub writes: usize,
    /// Overlay family of the devices' settings.
    pub sysctl_family: Family,
}

impl Default for FakeKernel {
    fn default() -> Self {
        FakeKernel {
            observed: Observed::default(),
            writes: 0,
            sysctl_family: Family::Ipv4,
        }
    }
}

impl Datapath for FakeKernel {
    async fn observe(&mut self, _scope: &Scope) -> Result<Observed, DatapathError> {
        Ok(self.observed.clone())
    }

    async fn apply(&mut self, _scope: &Scope, plan: &Plan) -> Result<ApplyReport, DatapathError> {
        Ok(self.apply_plan(plan))
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

    fn apply_step(&mut self, step: &crate::reconcile::Step) {
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
                    for (&setting, value) in &self.observed.sysctl_defaults {
                        let key = SysctlKey::new(self.sysctl_family, &l.name, setting);
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
                    s.routes.retain(|_, r| r.dev != t.name);
                    s.sysctls.retain(|k, _| k.device != t.name);
                } else {
                    if !s.tunnels.contains_key(&t.name) {
                        for (&setting, value) in &self.observed.sysctl_defaults {
                            let key = SysctlKey::new(self.sysctl_family, &t.name, setting);
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
        }
    }
}

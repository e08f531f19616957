//! Desired vs observed -> the smallest ordered list of steps that closes the
//! gap. Pure: no clock, no I/O. Everything a step needs (names, addresses,
//! MACs, ports) is resolved here, so applying it involves no choices.

use std::{cmp::Ordering, collections::BTreeMap};

use serde::Serialize;

use super::{
    Address, Desired, Fdb, Flood, Fou, Link, Neigh, ObjectKey, Observed, Port, Reason, Route,
    State, Sysctl, Tunnel,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Add,
    Change,
    Remove,
}

/// One kernel object, as a step adds, changes or removes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Object {
    Link(Link),
    Tunnel(Tunnel),
    Fou(Fou),
    Address(Address),
    Fdb(Fdb),
    Neigh(Neigh),
    Route(Route),
    Sysctl(Sysctl),
    Flood(Flood),
    Port(Port),
}

impl Object {
    pub fn kind(&self) -> &'static str {
        match self {
            Object::Link(_) => "link",
            Object::Tunnel(_) => "tunnel",
            Object::Fou(_) => "fou",
            Object::Address(_) => "address",
            Object::Fdb(_) => "fdb",
            Object::Neigh(_) => "neigh",
            Object::Route(_) => "route",
            Object::Sysctl(_) => "sysctl",
            Object::Flood(_) => "flood",
            Object::Port(_) => "port",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    pub action: Action,
    pub object: Object,
    /// What the kernel has now, for a change. Boxed: most steps have none,
    /// and a step is moved and copied as often as plans are long.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old: Option<Box<Object>>,
    /// For a link change the kernel cannot make in place: the fields that
    /// force deleting and re-creating the device.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub replace: Vec<&'static str>,
    pub reason: Reason,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub add: usize,
    pub change: usize,
    pub remove: usize,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub steps: Vec<Step>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    pub fn summary(&self) -> Summary {
        let mut s = Summary::default();
        for step in &self.steps {
            match step.action {
                Action::Add => s.add += 1,
                Action::Change => s.change += 1,
                Action::Remove => s.remove += 1,
            }
        }
        s
    }
}

/// Why a plan cannot be made: something lvn would have to modify is not lvn's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error(
        "device {name} exists and is not lvn's ({what}); lvn will not modify it: remove or rename it, or set `device` in [network]"
    )]
    ForeignLink { name: String, what: String },
    #[error(
        "route {dst} metric {metric} exists and is not lvn's (proto {owner}); lvn will not modify it"
    )]
    ForeignRoute {
        dst: ipnet::IpNet,
        metric: u32,
        owner: String,
    },
}

/// The steps that turn `observed` into `desired`.
pub fn plan(desired: &Desired, observed: &Observed) -> Result<Plan, PlanError> {
    let want = &desired.state;
    let have = &observed.state;
    if let (Some(link), Some(what)) = (&want.link, &observed.foreign_link) {
        return Err(PlanError::ForeignLink {
            name: link.name.clone(),
            what: what.clone(),
        });
    }
    if let Some((name, what)) = want
        .tunnels
        .keys()
        .find_map(|n| observed.other_links.get_key_value(n))
    {
        return Err(PlanError::ForeignLink {
            name: name.clone(),
            what: what.clone(),
        });
    }
    if let Some((key, owner)) = want
        .routes
        .keys()
        .find_map(|k| observed.foreign_routes.get_key_value(k))
    {
        return Err(PlanError::ForeignRoute {
            dst: key.dst,
            metric: key.metric,
            owner: owner.clone(),
        });
    }

    let mut steps = Vec::new();
    // No udp_checksum in the topology: whatever the kernel chose is right.
    let want_link = match (&want.link, &have.link) {
        (Some(w), Some(h)) if w.udp_checksum.is_none() => Some(Link {
            udp_checksum: h.udp_checksum,
            ..w.clone()
        }),
        (w, _) => w.clone(),
    };
    let link_step = match (&want_link, &have.link) {
        (Some(w), None) => Some(step(
            Action::Add,
            Object::Link(w.clone()),
            None,
            desired.reason(&ObjectKey::Link),
        )),
        (Some(w), Some(h)) if w != h => {
            let mut s = step(
                Action::Change,
                Object::Link(w.clone()),
                Some(Object::Link(h.clone())),
                desired.reason(&ObjectKey::Link),
            );
            s.replace = w.replace_fields(h);
            Some(s)
        }
        (None, Some(h)) if want.is_empty() => {
            // Everything lvn owns lives on its devices and goes with them.
            steps.push(step(
                Action::Remove,
                Object::Link(h.clone()),
                None,
                Reason::Teardown,
            ));
            teardown_rest(have, &mut steps);
            return Ok(Plan { steps });
        }
        (None, Some(h)) => Some(step(
            Action::Remove,
            Object::Link(h.clone()),
            None,
            Reason::NotDeclared,
        )),
        (None, None) if want.is_empty() => {
            teardown_rest(have, &mut steps);
            return Ok(Plan { steps });
        }
        _ => None,
    };
    // A new or re-created device starts empty, with the kernel's defaults.
    let fresh_link =
        matches!(&link_step, Some(s) if s.action == Action::Add || !s.replace.is_empty());
    let new_tunnels: Vec<&String> = want
        .tunnels
        .keys()
        .filter(|n| !have.tunnels.contains_key(*n))
        .collect();
    let fresh;
    let have = if fresh_link || !new_tunnels.is_empty() {
        fresh = fresh_state(want, observed, fresh_link, &new_tunnels);
        &fresh
    } else {
        have
    };

    let mut removes = Vec::new();
    let mut adds = Adds::default();
    let removal = |k: ObjectKey| desired.removal_reason(&k);
    let mut why = desired.reasons.routes_in_order();
    diff(
        (&want.routes, &have.routes),
        |k| why.reason(k),
        |k| removal(ObjectKey::Route(*k)),
        Object::Route,
        &mut removes,
        &mut adds,
    );
    let mut why = desired.reasons.neighbours_in_order();
    diff(
        (&want.neighbours, &have.neighbours),
        |k| why.reason(k),
        |k| removal(ObjectKey::Neigh(*k)),
        Object::Neigh,
        &mut removes,
        &mut adds,
    );
    let mut why = desired.reasons.fdb_in_order();
    diff(
        (&want.fdb, &have.fdb),
        |k| why.reason(k),
        |k| removal(ObjectKey::Fdb(*k)),
        Object::Fdb,
        &mut removes,
        &mut adds,
    );
    diff(
        (&want.addresses, &have.addresses),
        |k| desired.reason(&ObjectKey::Address(k.clone())),
        |k| removal(ObjectKey::Address(k.clone())),
        Object::Address,
        &mut removes,
        &mut adds,
    );
    diff(
        (&want.sysctls, &have.sysctls),
        |k| desired.reason(&ObjectKey::Sysctl(k.clone())),
        |k| removal(ObjectKey::Sysctl(k.clone())),
        Object::Sysctl,
        &mut removes,
        &mut adds,
    );
    diff(
        (&want.tunnels, &have.tunnels),
        |k| desired.reason(&ObjectKey::Tunnel(k.clone())),
        |k| removal(ObjectKey::Tunnel(k.clone())),
        Object::Tunnel,
        &mut removes,
        &mut adds,
    );
    diff(
        (&want.fou, &have.fou),
        |k| desired.reason(&ObjectKey::Fou(*k)),
        |k| removal(ObjectKey::Fou(*k)),
        Object::Fou,
        &mut removes,
        &mut adds,
    );
    let mut flood = Vec::new();
    super::layer2::diff_flood(desired, have, &mut removes, &mut flood);
    for s in flood {
        adds.push(s);
    }
    if let Some(s) = super::layer2::diff_port(desired, have) {
        match s.action {
            Action::Remove => removes.push(s),
            _ => adds.push(s),
        }
    }
    // Sysctls are settings, never removed: a device setting lvn stopped
    // caring about stays as it is. Addresses and routes on a tunnel that
    // goes, go with it.
    let gone: Vec<String> = removes
        .iter()
        .filter_map(|s| match &s.object {
            Object::Tunnel(t) => Some(t.name.clone()),
            _ => None,
        })
        .collect();
    removes.retain(|s: &Step| match &s.object {
        Object::Sysctl(_) => false,
        Object::Address(a) => !gone.contains(&a.dev),
        Object::Route(r) => !gone.iter().any(|t| **t == *r.dev),
        _ => true,
    });

    steps.reserve_exact(removes.len() + 1 + adds.len());
    steps.extend(removes);
    steps.extend(link_step);
    for kind in adds.0 {
        steps.extend(kind);
    }
    Ok(Plan { steps })
}

/// Adds and changes, one list per place in [`apply_order`]: concatenated,
/// the order a stable sort by `apply_order` gives, without moving every
/// step of a plan from empty (300k at 100k spokes) through a merge sort.
#[derive(Default)]
struct Adds([Vec<Step>; 7]);

impl Adds {
    fn push(&mut self, s: Step) {
        self.0[usize::from(apply_order(&s.object))].push(s);
    }

    fn len(&self) -> usize {
        self.0.iter().map(Vec::len).sum()
    }
}

fn step(action: Action, object: Object, old: Option<Object>, reason: Reason) -> Step {
    Step {
        action,
        object,
        old: old.map(Box::new),
        replace: Vec::new(),
        reason,
    }
}

/// Adds run in dependency order: the address before routes using it,
/// neighbours after the FDB entries they resolve through.
fn apply_order(o: &Object) -> u8 {
    match o {
        Object::Fou(_) | Object::Link(_) => 0,
        Object::Tunnel(_) | Object::Port(_) => 1,
        Object::Address(_) => 2,
        Object::Sysctl(_) => 3,
        Object::Fdb(_) | Object::Flood(_) => 4,
        Object::Neigh(_) => 5,
        Object::Route(_) => 6,
    }
}

/// Down: every tunnel and listener goes (addresses and routes on the
/// tunnels go with them).
fn teardown_rest(have: &State, steps: &mut Vec<Step>) {
    for t in have.tunnels.values() {
        steps.push(step(
            Action::Remove,
            Object::Tunnel(t.clone()),
            None,
            Reason::Teardown,
        ));
    }
    for f in have.fou.values() {
        steps.push(step(
            Action::Remove,
            Object::Fou(*f),
            None,
            Reason::Teardown,
        ));
    }
}

/// What the kernel will hold once the devices about to be created exist:
/// nothing on them, and the kernel's default settings. A re-created VXLAN
/// device loses everything on it; tunnels and listeners are other devices.
fn fresh_state(
    want: &State,
    observed: &Observed,
    fresh_link: bool,
    new_tunnels: &[&String],
) -> State {
    let mut s = if fresh_link {
        State {
            tunnels: observed.state.tunnels.clone(),
            fou: observed.state.fou.clone(),
            ..State::default()
        }
    } else {
        observed.state.clone()
    };
    let link = want
        .link
        .as_ref()
        .map(|l| l.name.as_str())
        .filter(|_| fresh_link);
    for (k, x) in &want.sysctls {
        let on_new = link == Some(k.device.as_str()) || new_tunnels.contains(&&k.device);
        if let (true, Some(value)) = (on_new, observed.sysctl_defaults.get(&(k.family, k.setting)))
        {
            s.sysctls.insert(
                k.clone(),
                Sysctl {
                    key: x.key.clone(),
                    value: value.clone(),
                },
            );
        }
    }
    s
}

/// Both maps are in key order, so one walk over the two finds every
/// difference: linear, where a search in `have` per wanted key is not.
/// `why` is asked in key order (see [`Reasons`](super::Reasons)), `gone`
/// for removals.
fn diff<K: Ord, V: Clone + PartialEq>(
    (want, have): (&BTreeMap<K, V>, &BTreeMap<K, V>),
    mut why: impl FnMut(&K) -> Reason,
    gone: impl Fn(&K) -> Reason,
    wrap: impl Fn(V) -> Object,
    removes: &mut Vec<Step>,
    adds: &mut Adds,
) {
    let (mut w, mut h) = (want.iter().peekable(), have.iter().peekable());
    loop {
        let order = match (w.peek(), h.peek()) {
            (None, None) => return,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some((wk, _)), Some((hk, _))) => wk.cmp(hk),
        };
        match order {
            Ordering::Less => {
                let Some((k, w)) = w.next() else { return };
                adds.push(step(Action::Add, wrap(w.clone()), None, why(k)));
            }
            Ordering::Greater => {
                let Some((k, h)) = h.next() else { return };
                removes.push(step(Action::Remove, wrap(h.clone()), None, gone(k)));
            }
            Ordering::Equal => {
                let (Some((k, w)), Some((_, h))) = (w.next(), h.next()) else {
                    return;
                };
                if h != w {
                    adds.push(step(
                        Action::Change,
                        wrap(w.clone()),
                        Some(wrap(h.clone())),
                        why(k),
                    ));
                }
            }
        }
    }
}

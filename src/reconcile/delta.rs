//! A change to a few peers, planned without looking at the whole kernel.
//!
//! A hub with 100,000 spokes holds some 300,000 objects; a spoke learned,
//! expired or edited in the file changes three of them. After a reconcile
//! succeeds, the kernel holds what it planned, so the daemon remembers how
//! it got there ([`Known`]: the topology, the liveness, the hub's own
//! objects) and plans a change to peers `P` from two small desired states:
//! what `P` had by the last reconcile, against what `P` needs now. The
//! full observe and plan stay for the start, the resync, drift and any
//! failure, which also keep this honest: a hand-made change is drift, and
//! drift is a full reconcile.
//!
//! Only a VXLAN hub narrows: its peers' objects are independent of each
//! other (an FDB entry, neighbours and host routes per peer, keyed by the
//! peer's own addresses; flooding entries, shared by peers behind one
//! endpoint, are counted). A spoke has a few hubs, and fou's tunnels share
//! remote addresses between peers: both plan everything, which is cheap
//! for a spoke and rare for fou hubs. Pure: no clock, no I/O.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    net::SocketAddr,
    sync::Arc,
};

use super::{
    Desired, Liveness, ObjectKey, Observed, RouteKey, State, Underlay,
    desired::{Peers, desired_for},
};
use crate::config::{Datapath, Role, Topology};

/// What the last successful reconcile worked from, for narrowing the next.
#[derive(Debug, Clone)]
pub struct Known {
    pub topo: Arc<Topology>,
    pub node: String,
    /// Every peer's liveness, as the last reconcile used it.
    pub live: Liveness,
    pub underlay: Underlay,
    /// `me`'s own objects: the desired state without peers.
    pub base: State,
    /// Foreign routes, as the last full observe found them.
    pub foreign_routes: BTreeMap<RouteKey, String>,
    /// Peers per flooding entry (layer 2).
    pub flood_users: HashMap<SocketAddr, u32>,
    /// What the desired state waited for (a missing master): the hub's own,
    /// so a narrowed change leaves it as it was.
    pub waiting: Vec<super::Waiting>,
}

/// A plan's inputs for a change to a few peers only.
#[derive(Debug)]
pub struct Narrowed {
    /// What `me` and the changed peers need now.
    pub desired: Desired,
    /// What the kernel holds for them (what the last reconcile left).
    pub observed: Observed,
    /// Every object the change may touch, for patching a copy of the
    /// whole desired state (see [`patch`]).
    pub keys: Vec<ObjectKey>,
    /// The changed peers' liveness entries, for [`Known::learn`].
    live: Liveness,
    flood_users: HashMap<SocketAddr, i64>,
}

impl Known {
    /// After a full reconcile that succeeded, from its inputs.
    pub fn new(
        topo: Arc<Topology>,
        node: &str,
        live: Liveness,
        observed: &Observed,
        desired: &Desired,
    ) -> Option<Known> {
        let me = topo.nodes.get(node)?;
        let base = desired_for(
            &topo,
            me,
            &observed.underlay,
            &live,
            Peers::Only(&BTreeSet::new()),
        )
        .state;
        Some(Known {
            node: node.to_string(),
            base,
            underlay: observed.underlay.clone(),
            foreign_routes: observed.foreign_routes.clone(),
            flood_users: desired.flood_users.clone(),
            waiting: desired.waiting.clone(),
            live,
            topo,
        })
    }

    /// Every peer's liveness: the known one with `changed`'s entries from
    /// `partial` (which holds the changed peers' entries only).
    pub fn merged(&self, changed: &BTreeSet<String>, partial: &Liveness) -> Liveness {
        let mut live = self.live.clone();
        merge(&mut live, changed, partial);
        live
    }

    /// The plan inputs for a change to `changed` only, under `topo` with
    /// `partial` (the changed peers' liveness entries); `None` when the
    /// change needs everything planned: another node, datapath or role, a
    /// change to `[network]` or to `me`'s own objects (the device, its MTU,
    /// its addresses), or more than half the nodes.
    pub fn narrow(
        &self,
        topo: &Topology,
        node: &str,
        changed: &BTreeSet<String>,
        partial: &Liveness,
    ) -> Option<Narrowed> {
        let me = topo.nodes.get(node)?;
        let was = self.topo.nodes.get(node)?;
        if node != self.node
            || me.role != Role::Hub
            || topo.network.datapath != Datapath::Vxlan
            || self.topo.network != topo.network
            // Past half the peers, one dump and plan of everything is
            // cheaper than two desired states of most of them.
            || changed.len().saturating_mul(2) > topo.nodes.len()
        {
            return None;
        }
        let none = BTreeSet::new();
        let base = desired_for(topo, me, &self.underlay, partial, Peers::Only(&none)).state;
        if base != self.base {
            return None;
        }
        let before = only(&self.live, changed);
        let old = desired_for(
            &self.topo,
            was,
            &self.underlay,
            &before,
            Peers::Only(changed),
        );
        let mut new = desired_for(topo, me, &self.underlay, partial, Peers::Only(changed));
        let mut have = old.state;
        // A flooding entry other peers also use stays, and is there already.
        let mut flood_users: HashMap<SocketAddr, i64> = HashMap::new();
        for (k, n) in &old.flood_users {
            *flood_users.entry(*k).or_default() -= i64::from(*n);
        }
        for (k, n) in &new.flood_users {
            *flood_users.entry(*k).or_default() += i64::from(*n);
        }
        for k in flood_users.keys() {
            let known = self.flood_users.get(k).copied().unwrap_or(0);
            let mine = old.flood_users.get(k).copied().unwrap_or(0);
            if known <= mine {
                continue;
            }
            if let Some(f) = have
                .flood
                .get(k)
                .or_else(|| new.state.flood.get(k))
                .cloned()
            {
                new.state.flood.entry(*k).or_insert_with(|| f.clone());
                have.flood.entry(*k).or_insert(f);
            }
        }
        let own: HashSet<ObjectKey> = object_keys(&base).into_iter().collect();
        let keys: HashSet<ObjectKey> = object_keys(&have)
            .into_iter()
            .chain(object_keys(&new.state))
            .filter(|k| !own.contains(k))
            .collect();
        let keys = keys.into_iter().collect();
        let foreign_routes = new
            .state
            .routes
            .keys()
            .filter_map(|k| Some((*k, self.foreign_routes.get(k)?.clone())))
            .collect();
        Some(Narrowed {
            desired: new,
            observed: Observed {
                state: have,
                foreign_routes,
                ..Observed::default()
            },
            keys,
            live: partial.clone(),
            flood_users,
        })
    }

    /// The narrowed change was applied: remember it.
    pub fn learn(&mut self, topo: Arc<Topology>, changed: &BTreeSet<String>, n: &Narrowed) {
        merge(&mut self.live, changed, &n.live);
        for (k, d) in &n.flood_users {
            let users = i64::from(self.flood_users.get(k).copied().unwrap_or(0)) + d;
            match u32::try_from(users) {
                Ok(u) if u > 0 => {
                    self.flood_users.insert(*k, u);
                }
                _ => {
                    self.flood_users.remove(k);
                }
            }
        }
        self.topo = topo;
    }
}

/// `live` restricted to `names`.
fn only(live: &Liveness, names: &BTreeSet<String>) -> Liveness {
    let mut out = Liveness {
        primary: live.primary.clone(),
        ..Liveness::default()
    };
    for n in names {
        if let Some(e) = live.learned.get(n) {
            out.learned.insert(n.clone(), *e);
        }
        if let Some(a) = live.expired.get(n) {
            out.expired.insert(n.clone(), *a);
        }
    }
    out
}

/// Replace `names`' entries of `live` by theirs in `partial`.
fn merge(live: &mut Liveness, names: &BTreeSet<String>, partial: &Liveness) {
    for n in names {
        match partial.learned.get(n) {
            Some(e) => live.learned.insert(n.clone(), *e),
            None => live.learned.remove(n),
        };
        match partial.expired.get(n) {
            Some(a) => live.expired.insert(n.clone(), *a),
            None => live.expired.remove(n),
        };
    }
    live.primary.clone_from(&partial.primary);
}

/// The key of every object of `s`.
fn object_keys(s: &State) -> Vec<ObjectKey> {
    let mut keys = Vec::with_capacity(s.len());
    keys.extend(s.link.iter().map(|_| ObjectKey::Link));
    keys.extend(s.tunnels.keys().cloned().map(ObjectKey::Tunnel));
    keys.extend(s.fou.keys().copied().map(ObjectKey::Fou));
    keys.extend(s.addresses.keys().cloned().map(ObjectKey::Address));
    keys.extend(s.fdb.keys().copied().map(ObjectKey::Fdb));
    keys.extend(s.neighbours.keys().copied().map(ObjectKey::Neigh));
    keys.extend(s.routes.keys().copied().map(ObjectKey::Route));
    keys.extend(s.sysctls.keys().cloned().map(ObjectKey::Sysctl));
    keys.extend(s.flood.keys().copied().map(ObjectKey::Flood));
    keys.extend(s.port.iter().map(|_| ObjectKey::Port));
    keys
}

/// Make `state`'s objects at `keys` what they are in `from` (absent there:
/// removed), so a copy of the whole desired state follows a narrowed
/// change.
pub fn patch(state: &mut State, keys: &[ObjectKey], from: &State) {
    fn set<K: Ord + Clone, V: Clone>(to: &mut BTreeMap<K, V>, from: &BTreeMap<K, V>, k: &K) {
        match from.get(k) {
            Some(v) => to.insert(k.clone(), v.clone()),
            None => to.remove(k),
        };
    }
    for key in keys {
        match key {
            ObjectKey::Link => state.link.clone_from(&from.link),
            ObjectKey::Port => state.port.clone_from(&from.port),
            ObjectKey::Tunnel(k) => set(&mut state.tunnels, &from.tunnels, k),
            ObjectKey::Fou(k) => set(&mut state.fou, &from.fou, k),
            ObjectKey::Address(k) => set(&mut state.addresses, &from.addresses, k),
            ObjectKey::Fdb(k) => set(&mut state.fdb, &from.fdb, k),
            ObjectKey::Neigh(k) => set(&mut state.neighbours, &from.neighbours, k),
            ObjectKey::Route(k) => set(&mut state.routes, &from.routes, k),
            ObjectKey::Sysctl(k) => set(&mut state.sysctls, &from.sysctls, k),
            ObjectKey::Flood(k) => set(&mut state.flood, &from.flood, k),
        }
    }
}

/// The nodes whose declaration differs between `old` and `new` (added,
/// removed or changed); `None` when the network itself changed, which
/// concerns every node.
pub fn changed_nodes(old: &Topology, new: &Topology) -> Option<BTreeSet<String>> {
    if old.network != new.network {
        return None;
    }
    let mut out = BTreeSet::new();
    for (name, n) in &new.nodes {
        if old.nodes.get(name) != Some(n) {
            out.insert(name.clone());
        }
    }
    for name in old.nodes.keys() {
        if !new.nodes.contains_key(name) {
            out.insert(name.clone());
        }
    }
    Some(out)
}

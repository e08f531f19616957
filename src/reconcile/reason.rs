use std::{
    collections::{BTreeMap, HashMap, btree_map},
    fmt,
    iter::Peekable,
    net::IpAddr,
    sync::Arc,
};

use serde::Serialize;

use super::{Mac, ObjectKey, RouteKey, model::append_sorted};

/// Why a step is in a plan. Typed, so the plan printout, the JSON output and
/// the log line all say the same thing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Reason {
    /// The network's device, `mtu_from` says where its MTU comes from.
    Network { network: String, mtu_from: String },
    /// This node's own overlay address.
    OwnAddress { node: String },
    /// A peer whose underlay endpoint is declared in the topology.
    StaticEndpoint { peer: Arc<str> },
    /// A peer whose endpoint a hub learned from its keepalives.
    LearnedEndpoint { peer: Arc<str> },
    /// A learned peer whose keepalives stopped.
    Expired { peer: Arc<str>, after_ms: u64 },
    /// The overlay address of a peer this node talks to directly.
    PeerAddress { peer: Arc<str> },
    /// A spoke reaches the rest of the overlay through its primary hub.
    ViaHub { hub: String },
    /// A spoke reaches a further hub directly.
    DirectHub { hub: String },
    /// A hub reaches every node of the overlay on its device.
    HubOverlay,
    /// A hub's gateway route to a live spoke, through the spoke itself.
    SpokeRoute { peer: Arc<str> },
    /// Device settings for this node's role.
    Role { role: crate::config::Role },
    /// Layer 2: broadcast, multicast and unknown unicast to a peer with an
    /// endpoint (static, or `learned` from its keepalives).
    Flood { peer: Arc<str>, learned: bool },
    /// Layer 2: the device is a port of `master` (`attach`), with hairpin
    /// on a hub's bridge.
    Attach {
        master: String,
        master_kind: String,
        hairpin: bool,
    },
    /// Layer 2: `attach` names an interface that does not exist now, so
    /// the device is no other interface's port either.
    MasterMissing { master: String },
    /// lvn owns it and the topology no longer wants it.
    NotDeclared,
    /// The network is not wanted here at all (`lvn down`): the device goes,
    /// and every entry on it with it.
    Teardown,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Network { network, mtu_from } => {
                write!(f, "network {network}, {mtu_from}")
            }
            Reason::OwnAddress { node } => write!(f, "{node}: own overlay address"),
            Reason::StaticEndpoint { peer } => write!(f, "{peer}: static endpoint"),
            Reason::PeerAddress { peer } => write!(f, "{peer}: overlay address"),
            Reason::LearnedEndpoint { peer } => write!(f, "{peer}: learned endpoint"),
            Reason::Expired { peer, after_ms } => write!(
                f,
                "{peer}: no keepalive for {:?}, expired",
                std::time::Duration::from_millis(*after_ms)
            ),
            Reason::ViaHub { hub } => write!(f, "overlay through primary hub {hub}"),
            Reason::DirectHub { hub } => write!(f, "{hub}: hub reached directly"),
            Reason::HubOverlay => write!(f, "hub: overlay on this device"),
            Reason::SpokeRoute { peer } => write!(f, "{peer}: live spoke, routed through itself"),
            Reason::Role { role } => match role {
                crate::config::Role::Hub => write!(f, "hub: forwards between spokes"),
                crate::config::Role::Spoke => write!(f, "spoke: does not forward"),
            },
            Reason::Flood { peer, learned } => write!(
                f,
                "{peer}: flooding to its {} endpoint",
                if *learned { "learned" } else { "static" }
            ),
            Reason::Attach {
                master,
                master_kind,
                hairpin,
            } => {
                write!(f, "attach: port of {master} ({master_kind})")?;
                if *hairpin {
                    write!(
                        f,
                        ", hairpin on: spokes reach each other through this hub's bridge"
                    )?;
                }
                Ok(())
            }
            Reason::MasterMissing { master } => {
                write!(
                    f,
                    "attach: {master} does not exist, the device is no other's port"
                )
            }
            Reason::NotDeclared => write!(f, "not declared"),
            Reason::Teardown => write!(f, "down: the device and every entry on it"),
        }
    }
}

/// The reason of each object of a desired state. The kinds there are one
/// of per peer (FDB entries, neighbours, routes) have an ordered map each,
/// keyed as the state's own maps are: `desired()` fills them in key order
/// (peers come in name order), which keeps each insert near the last one,
/// where one hash table of every object is a random write per object into
/// a table of tens of megabytes at 100k peers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reasons {
    fdb: BTreeMap<Mac, Reason>,
    neigh: BTreeMap<IpAddr, Reason>,
    route: BTreeMap<RouteKey, Reason>,
    other: HashMap<ObjectKey, Reason>,
}

impl Reasons {
    /// Set the reason of `key`, returning the one it replaces.
    pub fn insert(&mut self, key: ObjectKey, reason: Reason) -> Option<Reason> {
        match key {
            ObjectKey::Fdb(mac) => self.fdb.insert(mac, reason),
            ObjectKey::Neigh(ip) => self.neigh.insert(ip, reason),
            ObjectKey::Route(r) => self.route.insert(r, reason),
            other => self.other.insert(other, reason),
        }
    }

    /// Many per-peer reasons at once, in linear time (see
    /// [`append_sorted`](super::model::append_sorted)).
    pub(super) fn append(
        &mut self,
        fdb: Vec<(Mac, Reason)>,
        neigh: Vec<(IpAddr, Reason)>,
        route: Vec<(RouteKey, Reason)>,
    ) {
        append_sorted(&mut self.fdb, fdb);
        append_sorted(&mut self.neigh, neigh);
        append_sorted(&mut self.route, route);
    }

    pub fn get(&self, key: &ObjectKey) -> Option<&Reason> {
        match key {
            ObjectKey::Fdb(mac) => self.fdb.get(mac),
            ObjectKey::Neigh(ip) => self.neigh.get(ip),
            ObjectKey::Route(r) => self.route.get(r),
            other => self.other.get(other),
        }
    }

    /// FDB entries' reasons for look-ups in key order.
    pub(super) fn fdb_in_order(&self) -> InOrder<'_, Mac> {
        InOrder(self.fdb.iter().peekable())
    }

    /// Neighbours' reasons for look-ups in key order.
    pub(super) fn neighbours_in_order(&self) -> InOrder<'_, IpAddr> {
        InOrder(self.neigh.iter().peekable())
    }

    /// Routes' reasons for look-ups in key order.
    pub(super) fn routes_in_order(&self) -> InOrder<'_, RouteKey> {
        InOrder(self.route.iter().peekable())
    }

    pub fn len(&self) -> usize {
        self.fdb.len() + self.neigh.len() + self.route.len() + self.other.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The reasons of one kind, looked up in key order as `plan()` walks the
/// state's map of that kind: each look-up goes on from the last one, where
/// a search from the root is a few cache misses per step at 100k peers.
pub(super) struct InOrder<'a, K>(Peekable<btree_map::Iter<'a, K, Reason>>);

impl<K: Ord> InOrder<'_, K> {
    /// The reason of `key` ([`Reason::NotDeclared`] if none), for a `key`
    /// not below the last one asked for.
    pub(super) fn reason(&mut self, key: &K) -> Reason {
        while self.0.next_if(|(k, _)| *k < key).is_some() {}
        match self.0.peek() {
            Some((k, r)) if *k == key => (*r).clone(),
            _ => Reason::NotDeclared,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_lookups_skip_and_miss_like_searches() {
        let mut r = Reasons::default();
        let peer = |p: &str| Reason::PeerAddress { peer: p.into() };
        let ip = |n: u8| IpAddr::from([100, 64, 0, n]);
        r.append(
            Vec::new(),
            vec![(ip(2), peer("a")), (ip(4), peer("b")), (ip(6), peer("c"))],
            Vec::new(),
        );
        let mut why = r.neighbours_in_order();
        assert_eq!(why.reason(&ip(1)), Reason::NotDeclared);
        assert_eq!(why.reason(&ip(2)), peer("a"));
        assert_eq!(why.reason(&ip(5)), Reason::NotDeclared);
        assert_eq!(why.reason(&ip(6)), peer("c"));
        assert_eq!(why.reason(&ip(7)), Reason::NotDeclared);
        for n in 1..8 {
            assert_eq!(
                r.neighbours_in_order().reason(&ip(n)),
                r.get(&ObjectKey::Neigh(ip(n)))
                    .cloned()
                    .unwrap_or(Reason::NotDeclared)
            );
        }
    }
}

//! Layer 2 (`[network] layer = 2`): what lvn wants beyond the unicast FDB
//! entries, and how the planner compares it. Flooding entries (the
//! all-zero MAC, one per peer: head-end replication of broadcast,
//! multicast and unknown unicast), the device's master (`attach`), and one
//! MTU for the whole network. Pure, like the rest of `reconcile`.

use std::{fmt, net::SocketAddr, sync::Arc};

use serde::Serialize;

use super::{
    Desired, FALLBACK_UNDERLAY_MTU, ObjectKey, Reason, State, Underlay, VXLAN_OVERHEAD_V4,
    VXLAN_OVERHEAD_V6,
};
use crate::{
    config::{Role, Topology},
    naming::{Family, Mac},
};

/// A flooding entry: `bridge fdb append 00:00:00:00:00:00 dev D dst IP port
/// P self permanent`. Several coexist on one device, one per peer; they are
/// told apart by destination and port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Flood {
    pub dev: Arc<str>,
    pub dst: std::net::IpAddr,
    pub port: u16,
}

impl Flood {
    pub fn key(&self) -> SocketAddr {
        SocketAddr::new(self.dst, self.port)
    }
}

/// lvn's device as a port of an interface lvn does not own: a Linux
/// bridge or a batman-adv mesh interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Port {
    pub dev: String,
    pub master: String,
    /// The master's interface index: kernel notifications name it so.
    #[serde(skip)]
    pub master_index: u32,
    /// Bridge ports only: a frame may leave by the port it came in on.
    pub hairpin: bool,
}

impl fmt::Display for Flood {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} dst {} port {} dev {} (flood)",
            Mac([0; 6]),
            self.dst,
            self.port,
            self.dev
        )
    }
}

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} master {}", self.dev, self.master)?;
        if self.hairpin {
            write!(f, " hairpin on")?;
        }
        Ok(())
    }
}

/// Something lvn wants and cannot have yet, said in logs and status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Waiting {
    /// `attach` names an interface that does not exist (yet).
    Master { master: String, dev: String },
}

impl fmt::Display for Waiting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Waiting::Master { master, dev } => write!(
                f,
                "attach: {master} does not exist; {dev} becomes its port once it appears (lvn never creates it)"
            ),
        }
    }
}

/// A flooding entry to a peer with an endpoint, with the same liveness as
/// its unicast entry (`learned`: from its keepalives).
pub(super) fn add_flood(
    d: &mut Desired,
    dev: &Arc<str>,
    peer: &Arc<str>,
    endpoint: SocketAddr,
    learned: bool,
) {
    let flood = Flood {
        dev: dev.clone(),
        dst: endpoint.ip(),
        port: endpoint.port(),
    };
    d.reasons.insert(
        ObjectKey::Flood(flood.key()),
        Reason::Flood {
            peer: peer.clone(),
            learned,
        },
    );
    *d.flood_users.entry(flood.key()).or_default() += 1;
    d.state.flood.insert(flood.key(), flood);
}

/// The device's master, if the topology names one for `me` and it exists;
/// otherwise what lvn waits for.
pub(super) fn add_port(d: &mut Desired, topo: &Topology, me: &crate::config::Node, u: &Underlay) {
    let Some(master) = topo.attach_of(me) else {
        return;
    };
    let dev = &topo.network.device;
    d.attach = Some(master.to_string());
    let index = u
        .links
        .iter()
        .find_map(|(i, (name, _))| (name == master).then_some(*i));
    let (Some(kind), Some(master_index)) = (u.kinds.get(master), index) else {
        d.removal_reasons.insert(
            ObjectKey::Port,
            Reason::MasterMissing {
                master: master.to_string(),
            },
        );
        d.waiting.push(Waiting::Master {
            master: master.to_string(),
            dev: dev.clone(),
        });
        return;
    };
    let bridge = kind == "bridge";
    let hairpin = bridge && me.role == Role::Hub;
    d.state.port = Some(Port {
        dev: dev.clone(),
        master: master.to_string(),
        master_index,
        hairpin,
    });
    d.reasons.insert(
        ObjectKey::Port,
        Reason::Attach {
            master: master.to_string(),
            master_kind: kind.clone(),
            hairpin,
        },
    );
}

/// Layer 2: one MTU on every node of the network, so a mesh protocol sees
/// the same MTU on every link: declared, or 1500 minus the largest VXLAN
/// overhead among the underlay families the topology uses.
pub(super) fn fleet_mtu(topo: &Topology) -> (u32, String) {
    if let Some(mtu) = topo.network.mtu {
        return (
            mtu,
            format!("mtu {mtu} from the topology, the same on every node (layer 2)"),
        );
    }
    let (overhead, fam) = if topo.has_ipv6_endpoint() {
        (VXLAN_OVERHEAD_V6, Family::Ipv6)
    } else {
        (VXLAN_OVERHEAD_V4, Family::Ipv4)
    };
    let mtu = FALLBACK_UNDERLAY_MTU - overhead;
    (
        mtu,
        format!(
            "mtu {mtu} = {FALLBACK_UNDERLAY_MTU} - {overhead} (vxlan over {}, the largest overhead of the network's underlay families), the same on every node (layer 2)",
            fam.as_str()
        ),
    )
}

/// Flooding entries to add and remove. An entry that goes with an expired
/// peer says so: its unicast entry (same destination and port) carries the
/// expiry reason.
pub(super) fn diff_flood(
    desired: &Desired,
    have: &State,
    removes: &mut Vec<super::Step>,
    adds: &mut Vec<super::Step>,
) {
    use super::{Action, Object, Step};
    let want = &desired.state;
    for (k, h) in &have.flood {
        if want.flood.contains_key(k) {
            continue;
        }
        let mut reason = desired.removal_reason(&ObjectKey::Flood(*k));
        if reason == Reason::NotDeclared
            && let Some(f) = have
                .fdb
                .values()
                .find(|f| f.dst == h.dst && f.port == h.port)
        {
            reason = desired.removal_reason(&ObjectKey::Fdb(f.mac));
        }
        removes.push(Step {
            action: Action::Remove,
            object: Object::Flood(h.clone()),
            old: None,
            replace: Vec::new(),
            reason,
        });
    }
    for (k, w) in &want.flood {
        if !have.flood.contains_key(k) {
            adds.push(Step {
                action: Action::Add,
                object: Object::Flood(w.clone()),
                old: None,
                replace: Vec::new(),
                reason: desired.reason(&ObjectKey::Flood(*k)),
            });
        }
    }
}

/// The master step: attach, move back from another master (drift), or
/// leave a master the topology no longer names. Without `attach` lvn
/// leaves the device's master alone.
pub(super) fn diff_port(desired: &Desired, have: &State) -> Option<super::Step> {
    use super::{Action, Object, Step};
    let (action, object, old) = match (&desired.state.port, &have.port) {
        (Some(w), None) => (Action::Add, w.clone(), None),
        (Some(w), Some(h)) if w != h => (Action::Change, w.clone(), Some(Object::Port(h.clone()))),
        (None, Some(h)) if desired.attach.is_some() => (Action::Remove, h.clone(), None),
        _ => return None,
    };
    let reason = match action {
        Action::Remove => desired.removal_reason(&ObjectKey::Port),
        _ => desired.reason(&ObjectKey::Port),
    };
    Some(Step {
        action,
        object: Object::Port(object),
        old: old.map(Box::new),
        replace: Vec::new(),
        reason,
    })
}

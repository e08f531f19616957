//! Topology + this node's name (+ the underlay, for a default MTU) -> the
//! kernel state lvn wants, each object with the reason it exists.

use std::{
    collections::{BTreeMap, HashMap},
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use ipnet::IpNet;

use super::{
    Address, Family, Fdb, Link, Mac, Neigh, Reason, Route, RouteKey, State, Sysctl, Underlay,
};
use crate::config::{Node, Role, Topology};

/// Bytes VXLAN adds to every packet over IPv4: outer IPv4 (20), UDP (8),
/// VXLAN (8) and the inner Ethernet header (14).
pub const VXLAN_OVERHEAD_V4: u32 = 50;
/// The same over IPv6 (outer header of 40 bytes).
pub const VXLAN_OVERHEAD_V6: u32 = 70;
/// Assumed underlay MTU when no route to a peer is known.
pub const FALLBACK_UNDERLAY_MTU: u32 = 1500;
/// Kernel default metric of IPv6 routes added with metric 0.
const IPV6_DEFAULT_METRIC: u32 = 1024;

/// Identifies one object of a [`State`], to attach a reason to it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ObjectKey {
    Link,
    Address(IpNet),
    Fdb(Mac),
    Neigh(IpAddr),
    Route(RouteKey),
    Sysctl(String),
}

/// What the keepalive probe knows, as the planner needs it: endpoints learned
/// from live peers, and peers whose keepalives stopped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Liveness {
    pub learned: BTreeMap<String, SocketAddr>,
    /// Peers silent for longer than this, by name.
    pub expired: BTreeMap<String, std::time::Duration>,
}

/// The state lvn wants on this node, and why each object is wanted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Desired {
    pub state: State,
    /// Looked up only for steps, so hashed rather than ordered.
    pub reasons: HashMap<ObjectKey, Reason>,
    /// Why objects that are not wanted go, where it is more than "not declared".
    pub removal_reasons: HashMap<ObjectKey, Reason>,
}

impl Desired {
    pub fn reason(&self, key: &ObjectKey) -> Reason {
        self.reasons
            .get(key)
            .cloned()
            .unwrap_or(Reason::NotDeclared)
    }

    pub fn removal_reason(&self, key: &ObjectKey) -> Reason {
        self.removal_reasons
            .get(key)
            .cloned()
            .unwrap_or(Reason::NotDeclared)
    }
}

/// What `me` should have in the kernel for `topo`.
pub fn desired(topo: &Topology, me: &Node, underlay: &Underlay, live: &Liveness) -> Desired {
    let net = &topo.network;
    let dev = net.device.clone();
    let mut d = Desired::default();
    d.reasons.reserve(2 * topo.nodes.len() + 8);
    let family = topo
        .hubs()
        .find_map(|h| h.endpoint)
        .map_or(Family::Ipv4, |e| Family::of(e.ip()));

    let (mtu, mtu_from) = link_mtu(topo, me, underlay, family);
    d.state.link = Some(Link {
        name: dev.clone(),
        vni: net.vni,
        port: net.port,
        srcport: (net.port, net.port.saturating_add(1)),
        underlay: family,
        local: me
            .endpoint
            .map(|e| e.ip())
            .filter(|_| family == Family::Ipv6),
        mtu,
        mac: Mac::for_overlay(me.address),
        learning: false,
        up: true,
    });
    d.reasons.insert(
        ObjectKey::Link,
        Reason::Network {
            network: net.name.clone(),
            mtu_from,
        },
    );

    let own = IpNet::new(me.address, net.overlay.prefix_len()).unwrap_or(net.overlay);
    d.state.addresses.insert(
        own,
        Address {
            dev: dev.clone(),
            address: own,
            noprefixroute: true,
        },
    );
    d.reasons.insert(
        ObjectKey::Address(own),
        Reason::OwnAddress {
            node: me.name.clone(),
        },
    );

    for peer in topo.nodes.values() {
        let direct = peer.name != me.name && (me.role == Role::Hub || peer.role == Role::Hub);
        if !direct {
            continue;
        }
        let mac = Mac::for_overlay(peer.address);
        let name: Arc<str> = Arc::from(peer.name.as_str());
        let (ep, why) = match (peer.endpoint, live.learned.get(&peer.name)) {
            (Some(ep), _) => (ep, Reason::StaticEndpoint { peer: name.clone() }),
            (None, Some(ep)) => (*ep, Reason::LearnedEndpoint { peer: name.clone() }),
            (None, None) => {
                if let Some(after) = live.expired.get(&peer.name) {
                    let r = Reason::Expired {
                        peer: name.clone(),
                        after_ms: u64::try_from(after.as_millis()).unwrap_or(u64::MAX),
                    };
                    d.removal_reasons.insert(ObjectKey::Fdb(mac), r.clone());
                    d.removal_reasons.insert(ObjectKey::Neigh(peer.address), r);
                }
                continue;
            }
        };
        d.state.fdb.insert(
            mac,
            Fdb {
                dev: dev.clone(),
                mac,
                dst: ep.ip(),
                port: ep.port(),
            },
        );
        d.reasons.insert(ObjectKey::Fdb(mac), why);
        d.state.neighbours.insert(
            peer.address,
            Neigh {
                dev: dev.clone(),
                address: peer.address,
                mac,
            },
        );
        d.reasons.insert(
            ObjectKey::Neigh(peer.address),
            Reason::PeerAddress { peer: name },
        );
    }

    let metric = match net.overlay {
        IpNet::V4(_) => 0,
        IpNet::V6(_) => IPV6_DEFAULT_METRIC,
    };
    let mut add_route = |dst: IpNet, via: Option<IpAddr>, reason: Reason| {
        let r = Route {
            dev: dev.clone(),
            dst,
            metric,
            via,
        };
        d.reasons.insert(ObjectKey::Route(r.key()), reason);
        d.state.routes.insert(r.key(), r);
    };
    match me.role {
        Role::Hub => add_route(net.overlay, None, Reason::HubOverlay),
        Role::Spoke => {
            let mut hubs = topo.hubs();
            if let Some(first) = hubs.next() {
                add_route(
                    net.overlay,
                    Some(first.address),
                    Reason::ViaHub {
                        hub: first.name.clone(),
                    },
                );
            }
            for hub in hubs {
                add_route(
                    IpNet::from(hub.address),
                    None,
                    Reason::DirectHub {
                        hub: hub.name.clone(),
                    },
                );
            }
        }
    }

    let fam = match net.overlay {
        IpNet::V4(_) => "ipv4",
        IpNet::V6(_) => "ipv6",
    };
    let forwarding = if me.role == Role::Hub { "1" } else { "0" };
    let mut settings = vec![("forwarding", forwarding)];
    if me.role == Role::Hub && fam == "ipv4" {
        // Spokes reach each other through the hub on purpose; a redirect
        // would only tell them to try a path that does not exist.
        settings.push(("send_redirects", "0"));
    }
    for (setting, value) in settings {
        let key = sysctl_key(fam, &dev, setting);
        d.reasons.insert(
            ObjectKey::Sysctl(key.clone()),
            Reason::Role { role: me.role },
        );
        d.state.sysctls.insert(
            key.clone(),
            Sysctl {
                key,
                value: value.to_string(),
            },
        );
    }
    d
}

pub fn sysctl_key(family: &str, dev: &str, setting: &str) -> String {
    format!("net.{family}.conf.{dev}.{setting}")
}

/// The overlay MTU and a phrase saying where it came from.
fn link_mtu(topo: &Topology, me: &Node, underlay: &Underlay, family: Family) -> (u32, String) {
    if let Some(mtu) = topo.network.mtu {
        return (mtu, format!("mtu {mtu} from the topology"));
    }
    let overhead = match family {
        Family::Ipv4 => VXLAN_OVERHEAD_V4,
        Family::Ipv6 => VXLAN_OVERHEAD_V6,
    };
    // The path to the first other hub, else to any other declared endpoint.
    let target = topo
        .hubs()
        .chain(topo.nodes.values())
        .filter(|n| n.name != me.name)
        .find_map(|n| n.endpoint)
        // A lone hub: the path its own endpoint is reached by.
        .or(me.endpoint);
    let found = target.and_then(|t| {
        underlay
            .device_to(t.ip(), &topo.network.device)
            .map(|(dev, mtu)| (dev.to_string(), mtu, t))
    });
    match found {
        Some((dev, under, t)) => {
            let mtu = under.saturating_sub(overhead).max(68);
            (
                mtu,
                format!(
                    "mtu {mtu} = {dev} {under} - {overhead} (vxlan overhead) on the path to {}",
                    t.ip()
                ),
            )
        }
        None => {
            let mtu = FALLBACK_UNDERLAY_MTU - overhead;
            (
                mtu,
                format!(
                    "mtu {mtu} = {FALLBACK_UNDERLAY_MTU} (no underlay route known) - {overhead} (vxlan overhead)"
                ),
            )
        }
    }
}

//! Plain data for desired and observed kernel state of one network on one
//! node. Every collection is ordered, so plans and renderings are
//! deterministic.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    sync::Arc,
};

use ipnet::IpNet;
use serde::Serialize;

use crate::naming::{Family, Mac, Setting, SysctlKey};

/// The VXLAN device of a network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Link {
    pub name: String,
    pub vni: u32,
    pub port: u16,
    /// Source port range [low, high): pinned to `port` so a NAT sees one flow.
    pub srcport: (u16, u16),
    pub underlay: Family,
    /// Source address of encapsulated packets: none on IPv4 (the kernel
    /// picks, NAT rewrites); the node's own endpoint on IPv6, which is also
    /// what makes the kernel open an IPv6 socket.
    pub local: Option<IpAddr>,
    pub mtu: u32,
    pub mac: Mac,
    pub learning: bool,
    pub up: bool,
    /// UDP checksums on encapsulated packets; `None` in desired state: the
    /// kernel's default, whatever the device has. Fixed at creation.
    pub udp_checksum: Option<bool>,
}

impl Link {
    /// Fields the kernel cannot change in place: a difference means the
    /// device is deleted and created again.
    pub fn replace_fields(&self, old: &Link) -> Vec<&'static str> {
        let mut f = Vec::new();
        if self.vni != old.vni {
            f.push("vni");
        }
        if self.port != old.port {
            f.push("port");
        }
        if self.srcport != old.srcport {
            f.push("srcport");
        }
        if self.underlay != old.underlay {
            f.push("underlay family");
        }
        if self.udp_checksum.is_some() && self.udp_checksum != old.udp_checksum {
            f.push("udp_checksum");
        }
        f
    }
}

/// A tunnel with FOU encapsulation to one peer (datapath "fou"), no layer
/// 2: ipip in fou on an IPv4 underlay (28 bytes of overhead), ip6tnl (IPv4
/// and IPv6 inside) in GUE on an IPv6 one (52 bytes); the remote's family
/// says which.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tunnel {
    pub name: String,
    /// The node at the other end (recorded in the device's alias).
    pub peer: String,
    pub remote: IpAddr,
    pub local: Option<IpAddr>,
    /// UDP source port, pinned to the network's port like VXLAN's.
    pub sport: u16,
    /// The peer's UDP port: declared, or its NAT's mapping.
    pub dport: u16,
    pub mtu: u32,
    pub up: bool,
}

/// A fou listener: UDP on `port` carrying ipip (`ip fou add port P ipproto
/// 4`), or on an IPv6 underlay GUE (`ip fou add port P gue -6`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Fou {
    pub port: u16,
    pub ipv6: bool,
}

/// An address is identified by its device and prefix: with datapath "fou"
/// the node's address sits on every tunnel.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct AddrKey {
    pub dev: String,
    pub address: IpNet,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Address {
    pub dev: String,
    pub address: IpNet,
    /// The prefix route is lvn's own (proto lvn), not the kernel's.
    pub noprefixroute: bool,
}

/// A forwarding entry on the VXLAN device: this MAC lives behind that
/// underlay address and port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Fdb {
    pub dev: Arc<str>,
    pub mac: Mac,
    pub dst: IpAddr,
    pub port: u16,
}

/// A permanent neighbour entry: overlay address -> derived MAC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Neigh {
    pub dev: Arc<str>,
    pub address: IpAddr,
    pub mac: Mac,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct RouteKey {
    pub dst: IpNet,
    pub metric: u32,
}

/// A route in the main table, marked with lvn's route protocol.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Route {
    pub dev: Arc<str>,
    pub dst: IpNet,
    pub metric: u32,
    /// Next hop in the overlay (installed `onlink`); `None` is a link route.
    pub via: Option<IpAddr>,
}

impl Address {
    pub fn key(&self) -> AddrKey {
        AddrKey {
            dev: self.dev.clone(),
            address: self.address,
        }
    }
}

impl Route {
    pub fn key(&self) -> RouteKey {
        RouteKey {
            dst: self.dst,
            metric: self.metric,
        }
    }
}

/// Add `items` to `map`, a later item of a key replacing an earlier one as
/// inserts one by one would. Linear: one stable sort (of a run, for items
/// already in key order), one bulk build and, when `map` is not empty, one
/// merge, where an insert per item walks the tree from its root.
pub(super) fn append_sorted<K: Ord, V>(map: &mut BTreeMap<K, V>, items: Vec<(K, V)>) {
    let mut more: BTreeMap<K, V> = items.into_iter().collect();
    map.append(&mut more);
}

/// A per-device kernel setting and the value lvn wants or found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Sysctl {
    pub key: SysctlKey,
    pub value: String,
}

/// Everything lvn wants (or owns) for one network on one node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    pub link: Option<Link>,
    pub tunnels: BTreeMap<String, Tunnel>,
    pub fou: BTreeMap<u16, Fou>,
    pub addresses: BTreeMap<AddrKey, Address>,
    pub fdb: BTreeMap<Mac, Fdb>,
    pub neighbours: BTreeMap<IpAddr, Neigh>,
    pub routes: BTreeMap<RouteKey, Route>,
    pub sysctls: BTreeMap<SysctlKey, Sysctl>,
    /// Layer 2 flooding entries, by destination and port.
    pub flood: BTreeMap<std::net::SocketAddr, super::Flood>,
    /// Layer 2: the device's master (`attach`).
    pub port: Option<super::Port>,
}

impl State {
    /// Number of objects, the link included.
    pub fn len(&self) -> usize {
        usize::from(self.link.is_some())
            + self.tunnels.len()
            + self.fou.len()
            + self.addresses.len()
            + self.fdb.len()
            + self.neighbours.len()
            + self.routes.len()
            + self.sysctls.len()
            + self.flood.len()
            + usize::from(self.port.is_some())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What the kernel has, as the datapath saw it. `state` holds only what lvn
/// owns; the other fields are what the planner must know to stay away from
/// what it does not own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    pub state: State,
    /// A device with lvn's device name that lvn did not create.
    pub foreign_link: Option<String>,
    /// Every other device by name, with what it is: lvn must not take a
    /// name that is in use.
    pub other_links: BTreeMap<String, String>,
    /// Routes in the main table that are not lvn's, by key, with their owner.
    pub foreign_routes: BTreeMap<RouteKey, String>,
    /// Non-permanent neighbour entries the kernel made on lvn's device.
    pub kernel_neighbours: BTreeSet<IpAddr>,
    /// Values a new device starts with (`net.<family>.conf.default.*`).
    pub sysctl_defaults: BTreeMap<(Family, Setting), String>,
    pub underlay: Underlay,
}

/// Just enough of the underlay to pick a default MTU.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Underlay {
    /// Main-table routes: destination and output device index.
    pub routes: Vec<(IpNet, u32)>,
    /// Devices by index: name and MTU.
    pub links: BTreeMap<u32, (String, u32)>,
    /// Datapath "fou": which peer's tunnel holds each remote address now.
    /// ipip finds tunnels by outer addresses only, so one remote address
    /// carries one peer; the holder keeps it (no thrashing).
    pub holders: BTreeMap<IpAddr, String>,
    /// Every device that is not lvn's, by name, with its kind ("bridge",
    /// "batadv", ...): what `attach` may name.
    pub kinds: BTreeMap<String, String>,
    /// The kernel has per-device IPv6 `force_forwarding` (Linux 6.17+),
    /// the one way a hub forwards IPv6 without the global switch.
    pub force_forwarding: bool,
}

impl Underlay {
    /// The device a packet to `dst` leaves by (longest prefix match), with
    /// its MTU. Devices named in `exclude` (lvn's own) are skipped.
    pub fn device_to(&self, dst: IpAddr, exclude: &str) -> Option<(&str, u32)> {
        self.routes
            .iter()
            .filter(|(net, _)| net.contains(&dst))
            .filter_map(|(net, oif)| {
                let (name, mtu) = self.links.get(oif)?;
                (name != exclude).then_some((net.prefix_len(), name.as_str(), *mtu))
            })
            .max_by_key(|(len, _, _)| *len)
            .map(|(_, name, mtu)| (name, mtu))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_prefix_wins() {
        let u = Underlay {
            routes: vec![
                ("0.0.0.0/0".parse().unwrap(), 1),
                ("198.51.100.0/24".parse().unwrap(), 2),
                ("198.51.100.0/24".parse().unwrap(), 3),
            ],
            links: [
                (1, ("eth0".into(), 1500)),
                (2, ("wan".into(), 1492)),
                (3, ("lvn-x".into(), 1400)),
            ]
            .into_iter()
            .collect(),
            holders: BTreeMap::new(),
            kinds: BTreeMap::new(),
            force_forwarding: false,
        };
        assert_eq!(
            u.device_to("198.51.100.1".parse().unwrap(), "lvn-x"),
            Some(("wan", 1492))
        );
        assert_eq!(
            u.device_to("203.0.113.1".parse().unwrap(), "lvn-x"),
            Some(("eth0", 1500))
        );
        assert_eq!(u.device_to("2001:db8::1".parse().unwrap(), "lvn-x"), None);
    }
}

//! Drift from kernel notifications: is a change the kernel reported one
//! that leaves lvn's objects different from what lvn last wanted? Pure: a
//! change and the last desired state in, a description of the drift (or
//! nothing) out. lvn's own writes bring the kernel to the desired state,
//! so their notifications match it and cause nothing; changes to objects
//! lvn does not own (other devices, other route protocols, neighbours the
//! kernel makes) cause nothing either.

use std::{collections::BTreeMap, net::IpAddr, sync::Arc};

use ipnet::IpNet;

use super::model::{AddrKey, Link, RouteKey, State, Tunnel};
use crate::naming::{Mac, ROUTE_PROTOCOL};

/// One kernel notification, as far as drift needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A device appeared, changed or went. `link` is the device as lvn's
    /// VXLAN device, if it is one (lvn's name and owner alias).
    Link {
        index: u32,
        name: String,
        gone: bool,
        link: Option<Link>,
        /// The device's master's index (layer 2 `attach`), if it has one.
        master: Option<u32>,
    },
    /// One of lvn's fou tunnels (recognised by its owner alias).
    Tunnel {
        index: u32,
        gone: bool,
        tunnel: Tunnel,
    },
    Address {
        index: u32,
        gone: bool,
        address: IpNet,
    },
    Neigh {
        index: u32,
        gone: bool,
        address: IpAddr,
        mac: Option<Mac>,
        permanent: bool,
    },
    /// A VXLAN forwarding entry (`self`); `port` is absent when it equals
    /// the device's.
    Fdb {
        index: u32,
        gone: bool,
        mac: Mac,
        dst: IpAddr,
        port: Option<u16>,
    },
    /// A unicast route of the main table.
    Route {
        gone: bool,
        key: RouteKey,
        oif: Option<u32>,
        protocol: u8,
        via: Option<IpAddr>,
    },
    /// A nexthop object (lvn's gateway routes use them). Deleting one
    /// deletes the IPv4 routes on it without a route notification.
    Nexthop {
        id: u32,
        gone: bool,
        oif: Option<u32>,
        gateway: Option<IpAddr>,
        protocol: u8,
    },
    /// Notifications were lost (the socket overflowed): anything may have
    /// changed.
    Lost,
}

/// What identifies the object a change is about: of several changes to one
/// object, only the last says what it is now.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ChangeKey {
    Link(u32),
    Address(u32, IpNet),
    Neigh(u32, IpAddr),
    Fdb(u32, Mac, IpAddr),
    Route(RouteKey),
    Nexthop(u32),
    Lost,
}

impl Change {
    pub fn key(&self) -> ChangeKey {
        match self {
            Change::Link { index, .. } | Change::Tunnel { index, .. } => ChangeKey::Link(*index),
            Change::Address { index, address, .. } => ChangeKey::Address(*index, *address),
            Change::Neigh { index, address, .. } => ChangeKey::Neigh(*index, *address),
            Change::Fdb {
                index, mac, dst, ..
            } => ChangeKey::Fdb(*index, *mac, *dst),
            Change::Route { key, .. } => ChangeKey::Route(*key),
            Change::Nexthop { id, .. } => ChangeKey::Nexthop(*id),
            Change::Lost => ChangeKey::Lost,
        }
    }
}

/// The last change of each object, in the order of those last changes:
/// what a burst left behind. lvn's own device creation passes through a
/// state without its owner alias (the alias is set by a second request);
/// judged alone, that state would look like drift.
pub fn latest(changes: Vec<Change>) -> Vec<Change> {
    let mut last = std::collections::HashMap::with_capacity(changes.len());
    for (i, c) in changes.iter().enumerate() {
        last.insert(c.key(), i);
    }
    changes
        .into_iter()
        .enumerate()
        .filter(|(i, c)| last.get(&c.key()) == Some(i))
        .map(|(_, c)| c)
        .collect()
}

/// What drift is judged against: the last desired state, and lvn's devices
/// by index.
#[derive(Debug, Clone, Default)]
pub struct Watch {
    pub desired: Arc<State>,
    pub devices: BTreeMap<u32, String>,
}

impl Watch {
    fn dev(&self, index: u32) -> Option<&str> {
        self.devices.get(&index).map(String::as_str)
    }
}

/// The drift `c` makes, described for the log; `None` when it leaves lvn's
/// objects as lvn wants them, or touches nothing of lvn's.
pub fn drift(w: &Watch, c: &Change) -> Option<String> {
    let d = &w.desired;
    match c {
        Change::Lost => Some("kernel notifications were lost".into()),
        Change::Link {
            index,
            name,
            gone,
            link,
            master,
        } => {
            let wanted = d.link.as_ref().filter(|l| &l.name == name);
            let known = w.dev(*index);
            if wanted.is_none() && known.is_none() {
                return None;
            }
            if *gone {
                return Some(format!("device {name} removed"));
            }
            if let Some(old) = known
                && old != name
            {
                return Some(format!("device {old} renamed to {name}"));
            }
            // Moved to another master by hand. (No master at all is also
            // what lvn's own creation of the device reports before it
            // attaches it; the resync repairs a device taken off by hand.)
            if let (Some(want), Some(_), Some(m)) = (&d.port, wanted, master)
                && want.master_index != *m
            {
                return Some(format!(
                    "device {name} moved from {} to another master",
                    want.master
                ));
            }
            match (wanted, link) {
                (Some(want), Some(have)) if same_link(want, have) => None,
                (Some(_), None) => Some(format!("device {name} is not lvn's any more")),
                _ => Some(format!("device {name} changed")),
            }
        }
        Change::Tunnel {
            index,
            gone,
            tunnel,
        } => {
            let wanted = d.tunnels.get(&tunnel.name);
            if wanted.is_none() && w.dev(*index).is_none() {
                return None;
            }
            match (gone, wanted) {
                (true, Some(_)) => Some(format!("tunnel {} removed", tunnel.name)),
                (true, None) => None,
                (false, Some(want)) if want == tunnel => None,
                (false, _) => Some(format!("tunnel {} changed", tunnel.name)),
            }
        }
        Change::Address {
            index,
            gone,
            address,
        } => {
            let dev = w.dev(*index)?;
            if let IpAddr::V6(v6) = address.addr()
                && v6.is_unicast_link_local()
            {
                return None;
            }
            let key = AddrKey {
                dev: dev.to_string(),
                address: *address,
            };
            match (gone, d.addresses.contains_key(&key)) {
                (true, true) => Some(format!("address {address} removed from {dev}")),
                (false, false) => Some(format!("address {address} added to {dev}")),
                _ => None,
            }
        }
        Change::Neigh {
            index,
            gone,
            address,
            mac,
            permanent,
        } => {
            let dev = w.dev(*index)?;
            match (gone, d.neighbours.get(address)) {
                (true, Some(_)) => Some(format!("neighbour {address} removed from {dev}")),
                (false, Some(n)) if *permanent && *mac == Some(n.mac) => None,
                (false, Some(_)) => Some(format!("neighbour {address} on {dev} changed")),
                // Entries the kernel makes by itself come and go.
                (false, None) if *permanent => Some(format!("neighbour {address} added to {dev}")),
                _ => None,
            }
        }
        Change::Fdb {
            index,
            gone,
            mac,
            dst,
            port,
        } => {
            let dev = w.dev(*index)?;
            let own_port = d.link.as_ref().map(|l| l.port);
            let port = port.or(own_port);
            if *mac == Mac([0; 6]) {
                return flood_drift(d, dev, *gone, *dst, port);
            }
            match (gone, d.fdb.get(mac)) {
                (true, Some(f)) if f.dst == *dst => Some(format!("fdb {mac} removed from {dev}")),
                (true, _) => None,
                (false, Some(f)) if f.dst == *dst && Some(f.port) == port => None,
                (false, Some(_)) => Some(format!("fdb {mac} on {dev} changed")),
                (false, None) => Some(format!("fdb {mac} added to {dev}")),
            }
        }
        Change::Route {
            gone,
            key,
            oif,
            protocol,
            via,
        } => {
            let dev = oif.and_then(|o| w.dev(o));
            let wanted = d.routes.get(key);
            let dst = key.dst;
            match (gone, wanted) {
                (true, Some(_)) if *protocol == ROUTE_PROTOCOL => {
                    Some(format!("route {dst} removed"))
                }
                (true, _) => None,
                (false, Some(r))
                    if *protocol == ROUTE_PROTOCOL && dev == Some(&r.dev) && *via == r.via =>
                {
                    None
                }
                (false, Some(_)) if *protocol == ROUTE_PROTOCOL || dev.is_some() => {
                    Some(format!("route {dst} changed"))
                }
                (false, None) if *protocol == ROUTE_PROTOCOL && dev.is_some() => {
                    Some(format!("route {dst} added"))
                }
                _ => None,
            }
        }
        Change::Nexthop {
            id,
            gone: true,
            oif: Some(oif),
            gateway: Some(gw),
            protocol: ROUTE_PROTOCOL,
        } => {
            // lvn's own nexthops go when no route wants them any more.
            let dev = w.dev(*oif)?;
            let r = d
                .routes
                .values()
                .find(|r| &*r.dev == dev && r.via == Some(*gw))?;
            Some(format!(
                "nexthop {id} via {gw} on {dev} removed, and route {} with it",
                r.dst
            ))
        }
        Change::Nexthop { .. } => None,
    }
}

/// Equal as far as lvn cares: without `udp_checksum` in the topology,
/// whatever the kernel chose is right.
fn same_link(want: &Link, have: &Link) -> bool {
    match want.udp_checksum {
        Some(_) => want == have,
        None => {
            let have = Link {
                udp_checksum: None,
                ..have.clone()
            };
            *want == have
        }
    }
}

/// A flooding entry (all-zero MAC, layer 2): one per destination and port.
fn flood_drift(d: &State, dev: &str, gone: bool, dst: IpAddr, port: Option<u16>) -> Option<String> {
    let key = std::net::SocketAddr::new(dst, port?);
    match (gone, d.flood.contains_key(&key)) {
        (true, true) => Some(format!("flood entry to {key} removed from {dev}")),
        (false, false) => Some(format!("flood entry to {key} added to {dev}")),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::{Fdb, Neigh, Route};

    const DEV: &str = "lvn-lab";

    fn mac(n: u8) -> Mac {
        Mac([0x02, 0x4c, 100, 64, 1, n])
    }

    fn link() -> Link {
        Link {
            name: DEV.into(),
            vni: 1,
            port: 4789,
            srcport: (4789, 4790),
            underlay: crate::naming::Family::Ipv4,
            local: None,
            mtu: 1450,
            mac: mac(1),
            learning: false,
            up: true,
            udp_checksum: None,
        }
    }

    fn watch() -> Watch {
        let mut desired = State {
            link: Some(link()),
            ..State::default()
        };
        desired.fdb.insert(
            mac(2),
            Fdb {
                dev: DEV.into(),
                mac: mac(2),
                dst: "203.0.113.7".parse().unwrap(),
                port: 40001,
            },
        );
        desired.neighbours.insert(
            "100.64.1.2".parse().unwrap(),
            Neigh {
                dev: DEV.into(),
                address: "100.64.1.2".parse().unwrap(),
                mac: mac(2),
            },
        );
        let dst: IpNet = "100.64.1.2/32".parse().unwrap();
        desired.routes.insert(
            RouteKey { dst, metric: 0 },
            Route {
                dev: DEV.into(),
                dst,
                metric: 0,
                via: Some("100.64.1.2".parse().unwrap()),
            },
        );
        Watch {
            desired: Arc::new(desired),
            devices: [(7, DEV.to_string())].into(),
        }
    }

    fn fdb(gone: bool, n: u8, port: u16) -> Change {
        Change::Fdb {
            index: 7,
            gone,
            mac: mac(n),
            dst: "203.0.113.7".parse().unwrap(),
            port: Some(port),
        }
    }

    fn route(gone: bool, oif: u32, protocol: u8) -> Change {
        Change::Route {
            gone,
            key: RouteKey {
                dst: "100.64.1.2/32".parse().unwrap(),
                metric: 0,
            },
            oif: Some(oif),
            protocol,
            via: Some("100.64.1.2".parse().unwrap()),
        }
    }

    #[test]
    fn a_burst_is_judged_by_what_it_left() {
        let w = watch();
        let made = |alias_set: bool| Change::Link {
            index: 7,
            name: DEV.into(),
            gone: false,
            link: alias_set.then(link),
            master: None,
        };
        // lvn's own creation: first without its alias, then with it.
        assert!(
            drift(&w, &made(false)).is_some(),
            "alone, the first looks foreign"
        );
        let left = latest(vec![made(false), fdb(false, 2, 40001), made(true)]);
        assert_eq!(left, [fdb(false, 2, 40001), made(true)]);
        assert_eq!(left.iter().filter_map(|c| drift(&w, c)).count(), 0);
    }

    #[test]
    fn own_writes_are_not_drift() {
        let w = watch();
        assert_eq!(drift(&w, &fdb(false, 2, 40001)), None);
        assert_eq!(drift(&w, &route(false, 7, ROUTE_PROTOCOL)), None);
        let neigh = Change::Neigh {
            index: 7,
            gone: false,
            address: "100.64.1.2".parse().unwrap(),
            mac: Some(mac(2)),
            permanent: true,
        };
        assert_eq!(drift(&w, &neigh), None);
        // lvn removing what it no longer wants.
        assert_eq!(drift(&w, &fdb(true, 9, 40001)), None);
    }

    #[test]
    fn changes_by_hand_are_drift() {
        let w = watch();
        assert!(drift(&w, &fdb(true, 2, 40001)).is_some_and(|d| d.contains("removed")));
        assert!(drift(&w, &fdb(false, 2, 40002)).is_some_and(|d| d.contains("changed")));
        assert!(drift(&w, &fdb(false, 9, 40001)).is_some_and(|d| d.contains("added")));
        assert!(drift(&w, &route(true, 7, ROUTE_PROTOCOL)).is_some());
        let gone = Change::Link {
            index: 7,
            name: DEV.into(),
            gone: true,
            link: None,
            master: None,
        };
        assert_eq!(drift(&w, &gone).as_deref(), Some("device lvn-lab removed"));
        let addr = Change::Address {
            index: 7,
            gone: false,
            address: "100.64.9.9/16".parse().unwrap(),
        };
        assert!(drift(&w, &addr).is_some());
        assert!(drift(&w, &Change::Lost).is_some());
    }

    #[test]
    fn layer2_flood_entries_and_master() {
        use crate::reconcile::{Flood, Port};
        let mut desired = (*watch().desired).clone();
        let flood = Flood {
            dev: DEV.into(),
            dst: "203.0.113.7".parse().unwrap(),
            port: 40001,
        };
        desired.flood.insert(flood.key(), flood);
        desired.port = Some(Port {
            dev: DEV.into(),
            master: "br0".into(),
            master_index: 4,
            hairpin: false,
        });
        let link = link();
        desired.link = Some(link.clone());
        let w = Watch {
            desired: Arc::new(desired),
            ..watch()
        };
        let zero = |gone, port| Change::Fdb {
            index: 7,
            gone,
            mac: Mac([0; 6]),
            dst: "203.0.113.7".parse().unwrap(),
            port: Some(port),
        };
        assert_eq!(drift(&w, &zero(false, 40001)), None, "lvn's own entry");
        assert!(drift(&w, &zero(true, 40001)).is_some_and(|d| d.contains("removed")));
        assert!(drift(&w, &zero(false, 40002)).is_some_and(|d| d.contains("added")));
        assert_eq!(drift(&w, &zero(true, 40002)), None, "lvn removing one");
        // The kernel reports its own udp_checksum; the topology set none.
        let on = |master| Change::Link {
            index: 7,
            name: DEV.into(),
            gone: false,
            link: Some(Link {
                udp_checksum: Some(true),
                ..link.clone()
            }),
            master,
        };
        assert_eq!(drift(&w, &on(Some(4))), None);
        assert_eq!(drift(&w, &on(None)), None, "before lvn attaches it");
        assert_eq!(
            drift(&w, &on(Some(9))).as_deref(),
            Some("device lvn-lab moved from br0 to another master")
        );
    }

    #[test]
    fn what_lvn_does_not_own_is_not_drift() {
        let w = watch();
        // Another device's route, entries, addresses.
        assert_eq!(drift(&w, &route(false, 3, 4)), None);
        assert_eq!(drift(&w, &route(true, 3, 4)), None);
        let other = Change::Fdb {
            index: 3,
            gone: true,
            mac: mac(2),
            dst: "203.0.113.7".parse().unwrap(),
            port: None,
        };
        assert_eq!(drift(&w, &other), None);
        let link = Change::Link {
            index: 3,
            name: "eth0".into(),
            gone: true,
            link: None,
            master: None,
        };
        assert_eq!(drift(&w, &link), None);
        // A neighbour the kernel made on lvn's device.
        let kernel = Change::Neigh {
            index: 7,
            gone: false,
            address: "100.64.9.9".parse().unwrap(),
            mac: Some(mac(9)),
            permanent: false,
        };
        assert_eq!(drift(&w, &kernel), None);
    }

    #[test]
    fn a_nexthop_of_lvns_removed_is_drift_of_its_route() {
        let w = watch();
        let nh = |gone, oif, gw: &str, protocol| Change::Nexthop {
            id: 0x8000_0001,
            gone,
            oif: Some(oif),
            gateway: Some(gw.parse().unwrap()),
            protocol,
        };
        let d = drift(&w, &nh(true, 7, "100.64.1.2", ROUTE_PROTOCOL)).expect("drift");
        assert!(d.contains("route 100.64.1.2/32"), "{d}");
        // Made by lvn, or no route wants it (lvn removing what it left).
        assert_eq!(drift(&w, &nh(false, 7, "100.64.1.2", ROUTE_PROTOCOL)), None);
        assert_eq!(drift(&w, &nh(true, 7, "100.64.1.3", ROUTE_PROTOCOL)), None);
        // Someone else's, or on another device.
        assert_eq!(drift(&w, &nh(true, 7, "100.64.1.2", 4)), None);
        assert_eq!(drift(&w, &nh(true, 8, "100.64.1.2", ROUTE_PROTOCOL)), None);
    }
}

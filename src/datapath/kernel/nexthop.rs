//! Nexthop objects (`ip nexthop`) for lvn's gateway routes. A route with a
//! gateway (`X via G dev D onlink`) is installed as a nexthop object
//! (`id I via G dev D onlink proto 76`) plus a route that names it
//! (`X nhid I`): the kernel's fib_info hash ignores the gateway, so plain
//! gateway routes all share one hash chain and inserting n of them costs
//! n² (seen: 10k in 2.2 s, 40k in 36 s; with nexthop objects 0.24 s and
//! 0.94 s). The planner never sees nexthops: they are how this datapath
//! realises `Route { via: Some(_) }`.
//!
//! netlink-packet-route has no nexthop messages, so they are built and
//! read here by hand: `struct nhmsg` (family, scope, protocol, reserved,
//! flags: 8 bytes) and the attributes NHA_ID, NHA_OIF and NHA_GATEWAY.
//!
//! Ownership: lvn's nexthops carry lvn's protocol and sit on lvn's
//! devices; nothing else is touched. Ids come from the top half of the
//! id space, from a start drawn from the network's name, skipping every
//! id the namespace already uses.

use std::{
    collections::{HashMap, HashSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use crate::naming::ROUTE_PROTOCOL;

/// Message types (linux/rtnetlink.h).
pub(super) const RTM_NEWNEXTHOP: u16 = 104;
pub(super) const RTM_DELNEXTHOP: u16 = 105;
pub(super) const RTM_GETNEXTHOP: u16 = 106;
/// The multicast group of nexthop notifications.
pub(super) const RTNLGRP_NEXTHOP: u32 = 32;
/// Attributes (linux/nexthop.h).
const NHA_ID: u16 = 1;
const NHA_OIF: u16 = 5;
const NHA_GATEWAY: u16 = 6;
/// nh_flags: the gateway is on the link, whatever the addresses say.
const RTNH_F_ONLINK: u32 = 4;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
/// lvn's ids: the top half of the id space.
const FIRST_ID: u32 = 0x8000_0000;

/// One nexthop object as a dump or a notification reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Nexthop {
    pub id: u32,
    pub protocol: u8,
    pub oif: Option<u32>,
    pub gateway: Option<IpAddr>,
}

impl Nexthop {
    /// Made by lvn: lvn's protocol, on one of the devices `ours` accepts.
    pub fn is_ours(&self, ours: impl Fn(u32) -> bool) -> bool {
        self.protocol == ROUTE_PROTOCOL && self.oif.is_some_and(ours) && self.gateway.is_some()
    }
}

/// Decode the payload of an RTM_NEWNEXTHOP or RTM_DELNEXTHOP message (after
/// the netlink header); `None` if it is not one or has no id.
pub fn parse(payload: &[u8]) -> Option<Nexthop> {
    let header = payload.get(..8)?;
    let (family, protocol) = (header[0], header[2]);
    let mut nh = Nexthop {
        id: 0,
        protocol,
        oif: None,
        gateway: None,
    };
    let mut rest = &payload[8..];
    while rest.len() >= 4 {
        let len = u16::from_ne_bytes([rest[0], rest[1]]) as usize;
        let kind = u16::from_ne_bytes([rest[2], rest[3]]) & 0x3fff;
        if len < 4 || len > rest.len() {
            break;
        }
        let value = &rest[4..len];
        match (kind, value.len()) {
            (NHA_ID, 4) => nh.id = u32::from_ne_bytes([value[0], value[1], value[2], value[3]]),
            (NHA_OIF, 4) => {
                nh.oif = Some(u32::from_ne_bytes([value[0], value[1], value[2], value[3]]))
            }
            (NHA_GATEWAY, 4) if family == AF_INET => {
                nh.gateway = Some(IpAddr::V4(Ipv4Addr::new(
                    value[0], value[1], value[2], value[3],
                )))
            }
            (NHA_GATEWAY, 16) if family == AF_INET6 => {
                let mut o = [0; 16];
                o.copy_from_slice(value);
                nh.gateway = Some(IpAddr::V6(Ipv6Addr::from(o)));
            }
            _ => {}
        }
        rest = &rest[((len + 3) & !3).min(rest.len())..];
    }
    (nh.id != 0).then_some(nh)
}

fn header(family: u8, protocol: u8, flags: u32) -> Vec<u8> {
    let mut b = Vec::with_capacity(40);
    b.extend_from_slice(&[family, 0, protocol, 0]);
    b.extend_from_slice(&flags.to_ne_bytes());
    b
}

fn attr(b: &mut Vec<u8>, kind: u16, value: &[u8]) {
    b.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
    b.extend_from_slice(&kind.to_ne_bytes());
    b.extend_from_slice(value);
    b.resize((b.len() + 3) & !3, 0);
}

/// `nexthop add id ID via GATEWAY dev OIF onlink proto 76`.
pub fn new_message(id: u32, oif: u32, gateway: IpAddr) -> Vec<u8> {
    let family = if gateway.is_ipv4() { AF_INET } else { AF_INET6 };
    let mut b = header(family, ROUTE_PROTOCOL, RTNH_F_ONLINK);
    attr(&mut b, NHA_ID, &id.to_ne_bytes());
    attr(&mut b, NHA_OIF, &oif.to_ne_bytes());
    match gateway {
        IpAddr::V4(v4) => attr(&mut b, NHA_GATEWAY, &v4.octets()),
        IpAddr::V6(v6) => attr(&mut b, NHA_GATEWAY, &v6.octets()),
    }
    b
}

/// `nexthop del id ID`.
pub fn del_message(id: u32) -> Vec<u8> {
    let mut b = header(0, 0, 0);
    attr(&mut b, NHA_ID, &id.to_ne_bytes());
    b
}

/// A dump of every nexthop of the namespace.
pub fn dump_message() -> Vec<u8> {
    header(0, 0, 0)
}

/// Where a network's ids start: spread over lvn's range by its name, so
/// several networks on one node rarely even meet (they skip each other's
/// ids in any case).
pub fn first_id(network: &str) -> u32 {
    let h = network.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    FIRST_ID + (h % 0x7000_0000)
}

/// The nexthops of the namespace as lvn last saw them, and lvn's own among
/// them, by device and gateway.
#[derive(Debug, Default)]
pub struct Nexthops {
    /// Every id in use in the namespace, anyone's.
    used: HashSet<u32>,
    /// lvn's nexthops: id -> (device index, gateway).
    pub ours: HashMap<u32, (u32, IpAddr)>,
    by_gateway: HashMap<(u32, IpAddr), u32>,
    next: u32,
}

impl Nexthops {
    /// From a dump; `owned` says which device indexes are lvn's.
    pub fn new(all: &[Nexthop], network: &str, owned: impl Fn(u32) -> bool) -> Nexthops {
        let mut t = Nexthops {
            next: first_id(network),
            ..Nexthops::default()
        };
        for nh in all {
            t.used.insert(nh.id);
            if nh.is_ours(&owned)
                && let (Some(oif), Some(gw)) = (nh.oif, nh.gateway)
            {
                t.insert(nh.id, oif, gw);
            }
        }
        // Go on after lvn's highest id: a hub with 100k spokes does not
        // step over all of them for each one it learns.
        if let Some(top) = t.ours.keys().max()
            && *top >= t.next
        {
            t.next = top.checked_add(1).unwrap_or(FIRST_ID);
        }
        t
    }

    fn insert(&mut self, id: u32, oif: u32, gw: IpAddr) {
        self.used.insert(id);
        self.ours.insert(id, (oif, gw));
        self.by_gateway.entry((oif, gw)).or_insert(id);
    }

    /// lvn's nexthop to `gw` on device `oif`, if there is one.
    pub fn find(&self, oif: u32, gw: IpAddr) -> Option<u32> {
        self.by_gateway.get(&(oif, gw)).copied()
    }

    /// A free id for a new nexthop to `gw` on `oif`, recorded as made.
    pub fn allocate(&mut self, oif: u32, gw: IpAddr) -> u32 {
        // Each id skipped is one in use: the loop ends within used.len() + 1.
        while self.next < FIRST_ID || self.used.contains(&self.next) {
            self.next = self.next.checked_add(1).unwrap_or(FIRST_ID);
        }
        let id = self.next;
        self.insert(id, oif, gw);
        id
    }

    /// lvn's nexthop `id` is gone.
    pub fn remove(&mut self, id: u32) {
        if let Some(key) = self.ours.remove(&id)
            && self.by_gateway.get(&key) == Some(&id)
        {
            self.by_gateway.remove(&key);
        }
        self.used.remove(&id);
    }

    /// Forget lvn's nexthops on device `oif` (the device went).
    pub fn forget_device(&mut self, oif: u32) {
        let gone: Vec<u32> = self
            .ours
            .iter()
            .filter(|(_, (o, _))| *o == oif)
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            self.remove(id);
        }
    }

    pub fn is_ours(&self, id: u32) -> bool {
        self.ours.contains_key(&id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_made_reads_back() {
        let gw: IpAddr = "100.64.1.2".parse().unwrap();
        let mut m = new_message(0x8000_0007, 9, gw);
        assert_eq!(m.len(), 8 + 8 + 8 + 8);
        let nh = parse(&m).expect("parses");
        assert_eq!(
            nh,
            Nexthop {
                id: 0x8000_0007,
                protocol: ROUTE_PROTOCOL,
                oif: Some(9),
                gateway: Some(gw),
            }
        );
        assert!(nh.is_ours(|i| i == 9));
        assert!(!nh.is_ours(|i| i == 8));
        let v6: IpAddr = "fd00::2".parse().unwrap();
        assert_eq!(parse(&new_message(5, 9, v6)).unwrap().gateway, Some(v6));
        // A truncated attribute ends the walk without a panic.
        m.truncate(30);
        assert_eq!(parse(&m).map(|n| n.oif), Some(Some(9)));
        assert_eq!(parse(&del_message(3)).map(|n| n.id), Some(3));
        assert_eq!(parse(&[0; 7]), None);
    }

    #[test]
    fn ids_skip_what_is_used_and_stay_in_lvns_range() {
        let start = first_id("lab");
        let gw: IpAddr = "100.64.1.2".parse().unwrap();
        let foreign = Nexthop {
            id: start,
            protocol: 4,
            oif: Some(9),
            gateway: Some(gw),
        };
        let mut t = Nexthops::new(&[foreign], "lab", |i| i == 9);
        assert!(t.ours.is_empty(), "another protocol's nexthop is not ours");
        assert_eq!(t.find(9, gw), None);
        let a = t.allocate(9, gw);
        assert_eq!(a, start + 1);
        assert_eq!(t.find(9, gw), Some(a));
        let b = t.allocate(9, "100.64.1.3".parse().unwrap());
        assert_eq!(b, start + 2);
        t.remove(a);
        assert_eq!(t.find(9, gw), None);
        assert_ne!(first_id("lab"), first_id("lab2"));
        // Observed again with lvn's own at start + 1 and + 2: new ids go on
        // after them.
        let ours = |id| Nexthop {
            id,
            protocol: ROUTE_PROTOCOL,
            oif: Some(9),
            gateway: Some(gw),
        };
        let mut again = Nexthops::new(&[foreign, ours(a), ours(b)], "lab", |i| i == 9);
        assert_eq!(again.ours.len(), 2);
        assert_eq!(again.allocate(9, "100.64.1.4".parse().unwrap()), b + 1);
        let mut top = Nexthops {
            next: u32::MAX,
            ..Nexthops::default()
        };
        top.used.insert(u32::MAX);
        assert_eq!(top.allocate(1, gw), FIRST_ID, "wraps within lvn's range");
    }
}

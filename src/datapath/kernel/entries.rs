//! Netlink messages for the entries on lvn's devices (addresses, FDB
//! entries, neighbours, routes), and the attribute decoding their dumps
//! need. One request per step (`entry_request`); `apply.rs` sends them in
//! batches.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use rtnetlink::packet_route::{
    AddressFamily, RouteNetlinkMessage,
    address::{AddressAttribute, AddressFlags, AddressMessage},
    neighbour::{
        NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
    },
    route::{
        RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteProtocol,
        RouteScope, RouteType,
    },
};

use super::{family_of, nexthop::Nexthop};
use crate::{
    datapath::netlink::Mode,
    naming::{Mac, ROUTE_PROTOCOL},
    reconcile::{Action, Address, Fdb, Neigh, Object, Route, Step},
};

/// The device an entry lives on.
pub(super) fn object_dev(o: &Object) -> Option<&str> {
    match o {
        Object::Address(a) => Some(&a.dev),
        Object::Fdb(f) => Some(&f.dev),
        Object::Neigh(n) => Some(&n.dev),
        Object::Route(r) => Some(&r.dev),
        Object::Flood(f) => Some(&f.dev),
        _ => None,
    }
}

/// The request that carries out one entry step on the device with index
/// `index`; `None` for what is not a netlink entry (devices, settings).
pub(super) fn entry_request(index: u32, s: &Step) -> Option<(RouteNetlinkMessage, Mode)> {
    let remove = s.action == Action::Remove;
    let (new, del) = match &s.object {
        Object::Link(_)
        | Object::Tunnel(_)
        | Object::Fou(_)
        | Object::Port(_)
        | Object::Sysctl(_) => return None,
        Object::Flood(f) => return Some(super::layer2::flood_request(index, f, s.action)),
        Object::Address(a) => {
            let m = address_message(index, a);
            (
                RouteNetlinkMessage::NewAddress(m.clone()),
                RouteNetlinkMessage::DelAddress(m),
            )
        }
        Object::Fdb(f) => {
            let m = fdb_message(index, f);
            (
                RouteNetlinkMessage::NewNeighbour(m.clone()),
                RouteNetlinkMessage::DelNeighbour(m),
            )
        }
        Object::Neigh(n) => {
            let m = neigh_message(index, n);
            (
                RouteNetlinkMessage::NewNeighbour(m.clone()),
                RouteNetlinkMessage::DelNeighbour(m),
            )
        }
        Object::Route(r) => {
            let m = route_message(index, r);
            return Some(match s.action {
                Action::Remove => (RouteNetlinkMessage::DelRoute(m), Mode::Plain),
                // Never replace on add: a route that appeared since the
                // observation may be someone else's.
                Action::Add => (RouteNetlinkMessage::NewRoute(m), Mode::Create),
                Action::Change => (RouteNetlinkMessage::NewRoute(m), Mode::Replace),
            });
        }
    };
    Some(if remove {
        (del, Mode::Plain)
    } else {
        (new, Mode::Replace)
    })
}

fn address_message(index: u32, a: &Address) -> AddressMessage {
    let mut m = AddressMessage::default();
    m.header.family = family_of(&a.address);
    m.header.prefix_len = a.address.prefix_len();
    m.header.index = index;
    let ip = a.address.addr();
    if ip.is_ipv4() {
        m.attributes.push(AddressAttribute::Local(ip));
    }
    m.attributes.push(AddressAttribute::Address(ip));
    let mut flags = AddressFlags::empty();
    if a.noprefixroute {
        flags |= AddressFlags::Noprefixroute;
    }
    if ip.is_ipv6() {
        // No duplicate address detection: the topology makes addresses
        // unique, and a tentative address would refuse traffic for a
        // second after every apply.
        flags |= AddressFlags::Nodad;
    }
    if !flags.is_empty() {
        m.attributes.push(AddressAttribute::Flags(flags));
    }
    m
}

/// `bridge fdb ... dev D self permanent`: NTF_SELF, or an entry on a vxlan
/// that is a bridge port lands in the bridge's FDB.
fn fdb_message(index: u32, f: &Fdb) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = AddressFamily::Bridge;
    m.header.ifindex = index;
    m.header.state = NeighbourState::Permanent;
    m.header.flags = NeighbourFlags::Own;
    m.attributes
        .push(NeighbourAttribute::LinkLayerAddress(f.mac.0.to_vec()));
    m.attributes
        .push(NeighbourAttribute::Destination(neigh_addr(f.dst)));
    m.attributes.push(NeighbourAttribute::Port(f.port));
    m
}

fn neigh_message(index: u32, n: &Neigh) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = if n.address.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    m.header.ifindex = index;
    m.header.state = NeighbourState::Permanent;
    m.attributes
        .push(NeighbourAttribute::Destination(neigh_addr(n.address)));
    m.attributes
        .push(NeighbourAttribute::LinkLayerAddress(n.mac.0.to_vec()));
    m
}

pub(super) fn neigh_addr(ip: IpAddr) -> NeighbourAddress {
    match ip {
        IpAddr::V4(v4) => NeighbourAddress::Inet(v4),
        IpAddr::V6(v6) => NeighbourAddress::Inet6(v6),
    }
}

pub(super) fn route_message(index: u32, r: &Route) -> RouteMessage {
    let mut m = RouteMessage::default();
    m.header.address_family = family_of(&r.dst);
    m.header.destination_prefix_length = r.dst.prefix_len();
    m.header.table = RouteHeader::RT_TABLE_MAIN;
    m.header.protocol = RouteProtocol::from(ROUTE_PROTOCOL);
    m.header.kind = RouteType::Unicast;
    m.header.scope = if r.via.is_some() {
        RouteScope::Universe
    } else {
        RouteScope::Link
    };
    m.attributes
        .push(RouteAttribute::Destination(RouteAddress::from(
            r.dst.network(),
        )));
    if let Some(via) = r.via {
        m.header.flags = RouteFlags::Onlink;
        m.attributes
            .push(RouteAttribute::Gateway(RouteAddress::from(via)));
    }
    m.attributes.push(RouteAttribute::Oif(index));
    m.attributes.push(RouteAttribute::Priority(r.metric));
    m
}

/// `X nhid ID proto 76 metric M`: a gateway route through nexthop
/// object `id` (nexthop.rs). The kernel refuses a device or gateway
/// beside the id, and deletes such a route only by its id.
pub(super) fn route_nh_message(r: &Route, id: u32) -> RouteMessage {
    let mut m = RouteMessage::default();
    m.header.address_family = family_of(&r.dst);
    m.header.destination_prefix_length = r.dst.prefix_len();
    m.header.table = RouteHeader::RT_TABLE_MAIN;
    m.header.protocol = RouteProtocol::from(ROUTE_PROTOCOL);
    m.header.kind = RouteType::Unicast;
    m.header.scope = RouteScope::Universe;
    m.attributes
        .push(RouteAttribute::Destination(RouteAddress::from(
            r.dst.network(),
        )));
    m.attributes.push(RouteAttribute::NhId(id));
    m.attributes.push(RouteAttribute::Priority(r.metric));
    m
}

/// An address as neighbour dumps carry it. AF_BRIDGE dumps give NDA_DST
/// as raw bytes (4 or 16): the crate decodes addresses only for Inet/Inet6.
pub(super) fn neigh_ip(a: &NeighbourAddress) -> Option<IpAddr> {
    match a {
        NeighbourAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        NeighbourAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        NeighbourAddress::Other(b) if b.len() == 4 => {
            Some(IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3])))
        }
        NeighbourAddress::Other(b) if b.len() == 16 => {
            let mut o = [0; 16];
            o.copy_from_slice(b);
            Some(IpAddr::V6(Ipv6Addr::from(o)))
        }
        _ => None,
    }
}

pub(super) fn mac_of(b: &[u8]) -> Option<Mac> {
    (b.len() == 6).then(|| {
        let mut m = [0; 6];
        m.copy_from_slice(b);
        Mac(m)
    })
}

pub(super) fn route_ip(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

/// A unicast route of the main table, as a dump or a notification reports
/// it; `None` for any other.
pub(super) struct RouteEntry {
    pub dst: IpNet,
    pub metric: u32,
    pub oif: Option<u32>,
    pub via: Option<IpAddr>,
    pub protocol: u8,
    /// The nexthop object the route uses: its device and gateway come
    /// with it only while net.ipv4.nexthop_compat_mode is 1.
    pub nhid: Option<u32>,
}

impl RouteEntry {
    /// Fill in the device and gateway from the route's nexthop object.
    pub fn resolve(&mut self, nh: Option<&Nexthop>) {
        if let Some(nh) = nh.filter(|nh| Some(nh.id) == self.nhid) {
            self.oif = self.oif.or(nh.oif);
            self.via = self.via.or(nh.gateway);
        }
    }
}

/// Bytes of an rtmsg, and the route attributes lvn reads
/// (linux/rtnetlink.h).
const RTMSG: usize = 12;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTA_PRIORITY: u16 = 6;
const RTA_TABLE: u16 = 15;
const RTA_NH_ID: u16 = 30;
const RTN_UNICAST: u8 = 1;
const AF_INET6: u8 = 10;

/// [`route_entry`] of an RTM_NEWROUTE payload as it sits in a dump's
/// buffer, without decoding every attribute into owned values: a hub's
/// route dump holds a route per spoke. Also the route's protocol as
/// `ip route` names it, for routes that are not lvn's.
pub(super) fn route_entry_raw(payload: &[u8]) -> Option<RouteEntry> {
    let h = payload.get(..RTMSG)?;
    let (family, dst_len, mut table, protocol, kind) = (h[0], h[1], u32::from(h[4]), h[5], h[7]);
    let (mut dst, mut via, mut oif, mut metric, mut nhid) = (None, None, None, 0, None);
    let u32_of = |v: &[u8]| <[u8; 4]>::try_from(v).ok().map(u32::from_ne_bytes);
    for nla in rtnetlink::packet_core::NlasIterator::new(&payload[RTMSG..]) {
        let Ok(nla) = nla else { break };
        let v = nla.value();
        match nla.kind() {
            RTA_TABLE => table = u32_of(v).unwrap_or(table),
            RTA_DST => dst = ip_of(v),
            RTA_GATEWAY => via = ip_of(v),
            RTA_OIF => oif = u32_of(v),
            RTA_PRIORITY => metric = u32_of(v).unwrap_or(0),
            RTA_NH_ID => nhid = u32_of(v),
            _ => {}
        }
    }
    if table != u32::from(RouteHeader::RT_TABLE_MAIN) || kind != RTN_UNICAST {
        return None;
    }
    let any = match family {
        AF_INET6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        _ => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    };
    let dst = IpNet::new(dst.unwrap_or(any), dst_len).ok()?;
    Some(RouteEntry {
        dst,
        metric,
        oif,
        via,
        protocol,
        nhid,
    })
}

/// An address attribute: 4 bytes IPv4, 16 bytes IPv6.
pub(super) fn ip_of(b: &[u8]) -> Option<IpAddr> {
    match b.len() {
        4 => Some(IpAddr::from(<[u8; 4]>::try_from(b).ok()?)),
        16 => Some(IpAddr::from(<[u8; 16]>::try_from(b).ok()?)),
        _ => None,
    }
}

pub(super) fn route_entry(r: &RouteMessage) -> Option<RouteEntry> {
    let mut table = u32::from(r.header.table);
    let (mut dst, mut via, mut oif, mut metric, mut nhid) = (None, None, None, 0, None);
    for a in &r.attributes {
        match a {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Destination(d) => dst = route_ip(d),
            RouteAttribute::Gateway(g) => via = route_ip(g),
            RouteAttribute::Oif(o) => oif = Some(*o),
            RouteAttribute::Priority(p) => metric = *p,
            RouteAttribute::NhId(id) => nhid = Some(*id),
            _ => {}
        }
    }
    if table != u32::from(RouteHeader::RT_TABLE_MAIN) || r.header.kind != RouteType::Unicast {
        return None;
    }
    let any = match r.header.address_family {
        AddressFamily::Inet6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        _ => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    };
    let dst = IpNet::new(dst.unwrap_or(any), r.header.destination_prefix_length).ok()?;
    Some(RouteEntry {
        dst,
        metric,
        oif,
        via,
        protocol: u8::from(r.header.protocol),
        nhid,
    })
}

#[cfg(test)]
mod tests {
    use rtnetlink::packet_core::Emitable;

    use super::*;

    /// What the crate's encoder writes, `route_entry_raw` reads as
    /// `route_entry` reads the crate's decoding of it.
    #[test]
    fn a_route_read_as_bytes_is_the_route_decoded() {
        let route = |family, dst: Option<IpAddr>, len, attrs: Vec<RouteAttribute>| {
            let mut m = RouteMessage::default();
            m.header.address_family = family;
            m.header.destination_prefix_length = len;
            m.header.table = RouteHeader::RT_TABLE_MAIN;
            m.header.protocol = RouteProtocol::from(ROUTE_PROTOCOL);
            m.header.kind = RouteType::Unicast;
            if let Some(d) = dst {
                m.attributes
                    .push(RouteAttribute::Destination(RouteAddress::from(d)));
            }
            m.attributes.extend(attrs);
            m
        };
        let ip = |s: &str| s.parse::<IpAddr>().expect("address");
        let mut in_table = route(
            AddressFamily::Inet,
            None,
            0,
            vec![RouteAttribute::Table(1000)],
        );
        in_table.header.table = 0;
        let mut blackhole = route(AddressFamily::Inet, Some(ip("192.0.2.0")), 24, vec![]);
        blackhole.header.kind = RouteType::BlackHole;
        let mut kernel = route(AddressFamily::Inet6, Some(ip("fe80::")), 64, vec![]);
        kernel.header.protocol = RouteProtocol::Kernel;
        let messages = [
            route(
                AddressFamily::Inet,
                Some(ip("100.64.1.7")),
                32,
                vec![
                    RouteAttribute::Oif(3),
                    RouteAttribute::Gateway(RouteAddress::from(ip("100.64.1.7"))),
                    RouteAttribute::Priority(20),
                    RouteAttribute::NhId(70001),
                ],
            ),
            route(AddressFamily::Inet6, None, 0, vec![RouteAttribute::Oif(2)]),
            route(
                AddressFamily::Inet6,
                Some(ip("fd00:1::")),
                64,
                vec![RouteAttribute::Table(254), RouteAttribute::Oif(9)],
            ),
            in_table,
            blackhole,
            kernel,
        ];
        let mut seen = 0;
        for m in messages {
            let mut b = vec![0; m.buffer_len()];
            m.emit(&mut b);
            let decoded = route_entry(&m);
            let raw = route_entry_raw(&b);
            let key = |e: RouteEntry| (e.dst, e.metric, e.oif, e.via, e.protocol, e.nhid);
            assert_eq!(raw.map(key), decoded.map(key), "{m:?}");
            seen += usize::from(route_entry_raw(&b).is_some());
        }
        assert_eq!(seen, 4, "the other table's and the blackhole are not read");
    }
}

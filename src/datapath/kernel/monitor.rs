//! Kernel notifications: a netlink socket subscribed to link, address
//! (both families), neighbour and FDB, route (both families) and nexthop
//! changes, each turned into a [`Change`] for the drift check. A socket that
//! overflowed reports [`Change::Lost`]: anything may have changed.
//!
//! Deleting a nexthop object deletes the IPv4 routes that use it without
//! a route notification: the nexthop's own is the only sign. And a route
//! on a nexthop names its device and gateway only while
//! net.ipv4.nexthop_compat_mode is 1, so the monitor keeps the nexthops it
//! has heard of and fills them in.

use std::{collections::HashMap, io, os::fd::AsRawFd};

use ipnet::IpNet;
use rtnetlink::{
    packet_core::{NetlinkMessage, NetlinkPayload},
    packet_route::{
        AddressFamily, RouteNetlinkMessage,
        address::{AddressAttribute, AddressMessage},
        link::LinkMessage,
        neighbour::{NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState},
        route::{RouteAddress, RouteAttribute, RouteMessage},
    },
    sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE},
};
use tokio::io::unix::AsyncFd;

use super::{
    super::batch::raw_messages,
    entries::{mac_of, neigh_ip, route_entry},
    link::{link_alias, link_name_mtu, parse_link, parse_tunnel},
    nexthop::{self, Nexthop, RTM_DELNEXTHOP, RTM_NEWNEXTHOP, RTNLGRP_NEXTHOP},
};
use crate::{
    naming::{owner_alias, tunnel_peer},
    reconcile::{RouteKey, drift::Change},
};

/// rtnetlink multicast groups: link, neighbour (and bridge FDB), IPv4
/// address, IPv4 route, IPv6 address, IPv6 route, nexthop.
const GROUPS: [u32; 7] = [1, 3, 5, 7, 9, 11, RTNLGRP_NEXTHOP];
/// Nexthops remembered to fill in routes; past this, the table starts over
/// (a route it cannot fill in is judged by what it says).
const MAX_NEXTHOPS: usize = 1 << 20;

/// One notification.
#[derive(Debug, Clone)]
pub enum Notice {
    Route(RouteNetlinkMessage),
    Nexthop { gone: bool, nh: Nexthop },
}
/// Receive buffer: a burst of notifications (a flush of thousands of
/// entries) must fit, or they are lost and a full reconcile follows.
const RX_BUFFER: libc::c_int = 16 << 20;
/// One read: the kernel sends at most a page or so per datagram.
const DATAGRAM: usize = 64 << 10;

/// A socket that receives the kernel's notifications.
pub struct Monitor {
    fd: AsyncFd<Socket>,
    buf: Vec<u8>,
    /// The nexthops heard of, by id.
    nexthops: HashMap<u32, Nexthop>,
}

impl Monitor {
    /// Subscribe in the current network namespace (inside a tokio runtime).
    pub fn open() -> io::Result<Monitor> {
        let mut s = Socket::new(NETLINK_ROUTE)?;
        s.bind(&SocketAddr::new(0, 0))?;
        for g in GROUPS {
            s.add_membership(g)?;
        }
        s.set_non_blocking(true)?;
        force_rx_buffer(&s, RX_BUFFER);
        // SAFETY: the socket is ours alone and stays open as long as the
        // AsyncFd that owns it.
        let fd = unsafe { AsyncFd::register(s) }.map_err(|e| e.into_parts().1)?;
        Ok(Monitor {
            fd,
            buf: Vec::with_capacity(DATAGRAM),
            nexthops: HashMap::new(),
        })
    }

    /// The next datagram's messages; an overflow is one `Lost` entry.
    pub async fn next(&mut self) -> io::Result<Vec<Notice>> {
        loop {
            let mut guard = self.fd.readable().await?;
            self.buf.clear();
            let buf = &mut self.buf;
            match guard.try_io(|s| s.get_ref().recv(buf, 0)) {
                Ok(Ok(n)) => {
                    let mut notices = split(&self.buf[..n]);
                    for m in &mut notices {
                        self.follow(m);
                    }
                    return Ok(notices);
                }
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }

    /// Remember a nexthop; fill in a route on a nexthop.
    fn follow(&mut self, m: &mut Notice) {
        match m {
            Notice::Nexthop { gone: true, nh } => {
                self.nexthops.remove(&nh.id);
            }
            Notice::Nexthop { gone: false, nh } => {
                if self.nexthops.len() >= MAX_NEXTHOPS {
                    self.nexthops.clear();
                }
                self.nexthops.insert(nh.id, *nh);
            }
            Notice::Route(RouteNetlinkMessage::NewRoute(r) | RouteNetlinkMessage::DelRoute(r)) => {
                fill_in(r, &self.nexthops)
            }
            Notice::Route(_) => {}
        }
    }
}

/// A receive buffer of `size` bytes: past rmem_max as root
/// (SO_RCVBUFFORCE), as much as rmem_max allows otherwise.
pub(super) fn force_rx_buffer(s: &Socket, size: libc::c_int) {
    if set_option(s, libc::SO_RCVBUFFORCE, &size).is_err() {
        let _ = s.set_rx_buf_sz(size as usize);
    }
}

/// Set the socket-level option `name` to `value`.
pub(super) fn set_option<T>(s: &Socket, name: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: a valid socket, and a value of the size given.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            name,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Add the device and gateway of a route's nexthop object, if the route
/// names one that is known and lacks them.
fn fill_in(r: &mut RouteMessage, nexthops: &HashMap<u32, Nexthop>) {
    let Some(nh) = r.attributes.iter().find_map(|a| match a {
        RouteAttribute::NhId(id) => nexthops.get(id),
        _ => None,
    }) else {
        return;
    };
    let has = |f: fn(&RouteAttribute) -> bool| r.attributes.iter().any(f);
    let (has_oif, has_gw) = (
        has(|a| matches!(a, RouteAttribute::Oif(_))),
        has(|a| matches!(a, RouteAttribute::Gateway(_))),
    );
    if let (false, Some(oif)) = (has_oif, nh.oif) {
        r.attributes.push(RouteAttribute::Oif(oif));
    }
    if let (false, Some(gw)) = (has_gw, nh.gateway) {
        r.attributes
            .push(RouteAttribute::Gateway(RouteAddress::from(gw)));
    }
}

/// Whether a read error means notifications were dropped.
pub fn is_overflow(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::ENOBUFS)
}

/// The messages of one datagram; nexthops are decoded here (the crate
/// has no type for them), a message that does not decode is skipped.
fn split(bytes: &[u8]) -> Vec<Notice> {
    raw_messages(bytes)
        .filter_map(|m| {
            let kind = u16::from_ne_bytes([m[4], m[5]]);
            if kind == RTM_NEWNEXTHOP || kind == RTM_DELNEXTHOP {
                let nh = nexthop::parse(&m[16..])?;
                let gone = kind == RTM_DELNEXTHOP;
                return Some(Notice::Nexthop { gone, nh });
            }
            match NetlinkMessage::<RouteNetlinkMessage>::deserialize(m)
                .ok()?
                .payload
            {
                NetlinkPayload::InnerMessage(inner) => Some(Notice::Route(inner)),
                _ => None,
            }
        })
        .collect()
}

/// What a notification changed, for network `network` whose VXLAN device
/// is `device`; `None` for what drift never looks at.
pub fn change(n: &Notice, network: &str, device: &str) -> Option<Change> {
    use RouteNetlinkMessage as M;
    let m = match n {
        Notice::Route(m) => m,
        Notice::Nexthop { gone, nh } => {
            return Some(Change::Nexthop {
                id: nh.id,
                gone: *gone,
                oif: nh.oif,
                gateway: nh.gateway,
                protocol: nh.protocol,
            });
        }
    };
    match m {
        M::NewLink(l) => link_change(l, false, network, device),
        M::DelLink(l) => link_change(l, true, network, device),
        M::NewAddress(a) => address_change(a, false),
        M::DelAddress(a) => address_change(a, true),
        M::NewNeighbour(n) => neigh_change(n, false),
        M::DelNeighbour(n) => neigh_change(n, true),
        M::NewRoute(r) => route_change(r, false),
        M::DelRoute(r) => route_change(r, true),
        _ => None,
    }
}

fn link_change(l: &LinkMessage, gone: bool, network: &str, device: &str) -> Option<Change> {
    let (name, _) = link_name_mtu(l);
    let index = l.header.index;
    if name != device
        && let Some(peer) = link_alias(l).and_then(|a| tunnel_peer(a, network))
    {
        let tunnel = parse_tunnel(l, &name, peer)?;
        return Some(Change::Tunnel {
            index,
            gone,
            tunnel,
        });
    }
    let link = (name == device)
        .then(|| parse_link(l, &owner_alias(network)).ok())
        .flatten();
    let master = link
        .as_ref()
        .and_then(|_| super::layer2::parse_master(l))
        .map(|(m, _)| m);
    Some(Change::Link {
        index,
        name,
        gone,
        link,
        master,
    })
}

fn address_change(a: &AddressMessage, gone: bool) -> Option<Change> {
    let mut ip = None;
    let mut local = None;
    for attr in &a.attributes {
        match attr {
            AddressAttribute::Address(x) => ip = Some(*x),
            AddressAttribute::Local(x) => local = Some(*x),
            _ => {}
        }
    }
    let address = IpNet::new(local.or(ip)?, a.header.prefix_len).ok()?;
    Some(Change::Address {
        index: a.header.index,
        gone,
        address,
    })
}

fn neigh_change(n: &NeighbourMessage, gone: bool) -> Option<Change> {
    let (mut mac, mut dst, mut port) = (None, None, None);
    for attr in &n.attributes {
        match attr {
            NeighbourAttribute::LinkLayerAddress(b) => mac = mac_of(b),
            NeighbourAttribute::Destination(a) => dst = neigh_ip(a),
            NeighbourAttribute::Port(x) => port = Some(*x),
            _ => {}
        }
    }
    let index = n.header.ifindex;
    if n.header.family == AddressFamily::Bridge {
        // Only the VXLAN device's own entries (`self`), not a bridge's.
        if !n.header.flags.contains(NeighbourFlags::Own) {
            return None;
        }
        return Some(Change::Fdb {
            index,
            gone,
            mac: mac?,
            dst: dst?,
            port,
        });
    }
    Some(Change::Neigh {
        index,
        gone,
        address: dst?,
        mac,
        permanent: n.header.state == NeighbourState::Permanent,
    })
}

fn route_change(r: &RouteMessage, gone: bool) -> Option<Change> {
    let e = route_entry(r)?;
    Some(Change::Route {
        gone,
        key: RouteKey {
            dst: e.dst,
            metric: e.metric,
        },
        oif: e.oif,
        protocol: e.protocol,
        via: e.via,
    })
}

#[cfg(test)]
mod tests {
    use rtnetlink::packet_route::route::RouteHeader;

    use super::*;
    use crate::naming::ROUTE_PROTOCOL;

    /// A route notification under nexthop_compat_mode 0 names only the
    /// nexthop; the monitor fills in its device and gateway.
    #[test]
    fn a_route_on_a_known_nexthop_gets_its_device_and_gateway() {
        let gw: std::net::IpAddr = "100.64.1.2".parse().unwrap();
        let nh = Nexthop {
            id: 0x8000_0001,
            protocol: ROUTE_PROTOCOL,
            oif: Some(7),
            gateway: Some(gw),
        };
        let mut r = RouteMessage::default();
        r.header.table = RouteHeader::RT_TABLE_MAIN;
        r.header.destination_prefix_length = 32;
        r.header.protocol = ROUTE_PROTOCOL.into();
        r.header.kind = rtnetlink::packet_route::route::RouteType::Unicast;
        r.attributes
            .push(RouteAttribute::Destination(RouteAddress::from(gw)));
        r.attributes.push(RouteAttribute::NhId(nh.id));
        let mut unknown = r.clone();
        fill_in(&mut unknown, &HashMap::new());
        assert_eq!(unknown, r, "an unknown nexthop adds nothing");
        fill_in(&mut r, &[(nh.id, nh)].into());
        let Some(Change::Route { oif, via, .. }) = route_change(&r, false) else {
            panic!("a route change");
        };
        assert_eq!((oif, via), (Some(7), Some(gw)));
    }
}

//! Kernel notifications: a netlink socket subscribed to link, address
//! (both families), neighbour and FDB, and route (both families) changes,
//! each turned into a [`Change`] for the drift check. A socket that
//! overflowed reports [`Change::Lost`]: anything may have changed.

use std::{io, os::fd::AsRawFd};

use ipnet::IpNet;
use rtnetlink::{
    packet_core::NetlinkPayload,
    packet_route::{
        AddressFamily, RouteNetlinkMessage,
        address::{AddressAttribute, AddressMessage},
        link::LinkMessage,
        neighbour::{NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState},
        route::RouteMessage,
    },
    sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE},
};
use tokio::io::unix::AsyncFd;

use super::{
    super::batch::datagram,
    entries::{mac_of, neigh_ip, route_entry},
    link::{link_alias, link_name_mtu, parse_link, parse_tunnel},
};
use crate::{
    naming::{owner_alias, tunnel_peer},
    reconcile::{RouteKey, drift::Change},
};

/// rtnetlink multicast groups: link, neighbour (and bridge FDB), IPv4
/// address, IPv4 route, IPv6 address, IPv6 route.
const GROUPS: [u32; 6] = [1, 3, 5, 7, 9, 11];
/// Receive buffer: a burst of notifications (a flush of thousands of
/// entries) must fit, or they are lost and a full reconcile follows.
const RX_BUFFER: libc::c_int = 16 << 20;
/// One read: the kernel sends at most a page or so per datagram.
const DATAGRAM: usize = 64 << 10;

/// A socket that receives the kernel's notifications.
pub struct Monitor {
    fd: AsyncFd<Socket>,
    buf: Vec<u8>,
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
        // Past rmem_max as root (SO_RCVBUFFORCE); the default otherwise.
        let size = RX_BUFFER;
        // SAFETY: a valid socket and a c_int of the size given.
        let r = unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                (&raw const size).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r != 0 {
            let _ = s.set_rx_buf_sz(RX_BUFFER as usize);
        }
        // SAFETY: the socket is ours alone and stays open as long as the
        // AsyncFd that owns it.
        let fd = unsafe { AsyncFd::register(s) }.map_err(|e| e.into_parts().1)?;
        Ok(Monitor {
            fd,
            buf: Vec::with_capacity(DATAGRAM),
        })
    }

    /// The next datagram's messages; an overflow is one `Lost` entry.
    pub async fn next(&mut self) -> io::Result<Vec<RouteNetlinkMessage>> {
        loop {
            let mut guard = self.fd.readable().await?;
            self.buf.clear();
            let buf = &mut self.buf;
            match guard.try_io(|s| s.get_ref().recv(buf, 0)) {
                Ok(Ok(n)) => return Ok(split(&self.buf[..n])),
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }
}

/// Whether a read error means notifications were dropped.
pub fn is_overflow(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::ENOBUFS)
}

/// The messages of one datagram, up to one that does not decode.
fn split(bytes: &[u8]) -> Vec<RouteNetlinkMessage> {
    datagram(bytes)
        .map_while(Result::ok)
        .filter_map(|m| match m.payload {
            NetlinkPayload::InnerMessage(inner) => Some(inner),
            _ => None,
        })
        .collect()
}

/// What a notification changed, for network `network` whose VXLAN device
/// is `device`; `None` for what drift never looks at.
pub fn change(m: &RouteNetlinkMessage, network: &str, device: &str) -> Option<Change> {
    use RouteNetlinkMessage as M;
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

//! The probe's sockets, the only I/O of the keepalive protocol.
//!
//! - [`OverlaySocket`]: an `AF_PACKET` socket on lvn's VXLAN device for
//!   EtherType [`ETHERTYPE`]. What it sends, the kernel encapsulates like
//!   data: same source port, same NAT mapping. Spokes send keepalives and
//!   read answers with it; hubs send answers.
//! - [`UnderlaySocket`]: a raw UDP socket on the hub, with a BPF filter
//!   for VXLAN packets to the network's port and VNI that carry a keepalive.
//!   It sees the *outer* source address and port, as the NAT rewrote them:
//!   the reflexive address. The kernel's VXLAN socket still gets the packet.

use std::{
    io::{self, Read},
    mem::{MaybeUninit, size_of},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    os::fd::AsRawFd,
};

use socket2::{Domain, Protocol, SockAddr, SockFilter, Socket, Type};
use tokio::io::unix::AsyncFd;

pub use super::hub::Inner;
use super::wire::{ETHERTYPE, MAX_MESSAGE, MAX_PROBE};
use crate::reconcile::Mac;

/// A non-blocking, close-on-exec socket (socket2 sets close-on-exec).
fn socket(domain: Domain, ty: Type, proto: Option<Protocol>) -> io::Result<Socket> {
    Socket::new(domain, ty.nonblocking(), proto)
}

/// A BPF program that accepts nothing: for sockets that only send.
const DROP_ALL: [SockFilter; 1] = [bpf(0x06, 0, 0, 0)];

/// Every EtherType, for a tap socket.
const ETH_P_ALL: u16 = 0x0003;
/// Ancillary loads of classic BPF: skb->protocol and skb->pkt_type.
const SKF_AD_PROTOCOL: u32 = 0xffff_f000;
const SKF_AD_PKTTYPE: u32 = 0xffff_f004;
/// skb->pkt_type of a frame this host sends (a tap sees those too).
const PACKET_OUTGOING: u32 = 4;

/// Keepalive frames (EtherType 0x88b5) arriving on the device; not the
/// frames the device sends.
const KEEPALIVE_IN: [SockFilter; 6] = [
    bpf(0x28, 0, 0, SKF_AD_PROTOCOL),  // ldh proto
    bpf(0x15, 0, 3, ETHERTYPE as u32), // jeq 0x88b5, next, drop
    bpf(0x30, 0, 0, SKF_AD_PKTTYPE),   // ldb pkttype
    bpf(0x15, 1, 0, PACKET_OUTGOING),  // jeq outgoing, drop, accept
    bpf(0x06, 0, 0, 0x0004_0000),      // accept
    bpf(0x06, 0, 0, 0),                // drop
];

/// Packets may have queued before the filter was attached: drop them.
fn drain(sock: &Socket) {
    let mut buf = [0u8; 2048];
    let mut reader = sock;
    for _ in 0..10_000 {
        // The socket is non-blocking: an empty queue is an error.
        if reader.read(&mut buf).is_err() {
            break;
        }
    }
}

/// recvfrom(2) into an initialised buffer.
fn recv_from(sock: &Socket, buf: &mut [u8]) -> io::Result<(usize, SockAddr)> {
    // SAFETY: recvfrom(2) only writes initialised bytes, so the buffer stays
    // initialised; socket2's own `Read for Socket` casts the same way.
    let uninit = unsafe { &mut *(buf as *mut [u8] as *mut [MaybeUninit<u8>]) };
    sock.recv_from(uninit)
}

fn register(sock: Socket) -> io::Result<AsyncFd<Socket>> {
    // SAFETY: the Socket is ours alone and stays open as long as the AsyncFd.
    unsafe { AsyncFd::register(sock) }.map_err(|e| e.into_parts().1)
}

const fn bpf(code: u16, jt: u8, jf: u8, k: u32) -> SockFilter {
    SockFilter::new(code, jt, jf, k)
}

/// The `sockaddr_ll` of lvn's device `ifindex` for keepalive frames, to
/// `to` if given (socket2 builds no link-layer addresses itself).
fn link_addr(ifindex: u32, to: Option<Mac>) -> io::Result<SockAddr> {
    link_addr_proto(ifindex, to, ETHERTYPE)
}

/// The same for EtherType `proto` (`ETH_P_ALL` to bind a receiving socket).
fn link_addr_proto(ifindex: u32, to: Option<Mac>, proto: u16) -> io::Result<SockAddr> {
    let ifindex = i32::try_from(ifindex)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "interface index too large"))?;
    // SAFETY: the storage handed to the closure is zeroed and large enough
    // for any address; a sockaddr_ll is written and its length reported.
    let ((), addr) = unsafe {
        SockAddr::try_init(|storage, len| {
            let sll = &mut *storage.cast::<libc::sockaddr_ll>();
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_protocol = proto.to_be();
            sll.sll_ifindex = ifindex;
            if let Some(mac) = to {
                sll.sll_halen = 6;
                sll.sll_addr[..6].copy_from_slice(&mac.0);
            }
            *len = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            Ok(())
        })
    }?;
    Ok(addr)
}

/// The link-layer source in a `sockaddr_ll` filled by recvfrom(2).
fn link_source(addr: &SockAddr) -> Option<Mac> {
    if addr.family() != libc::AF_PACKET as libc::sa_family_t
        || (addr.len() as usize) < size_of::<libc::sockaddr_ll>()
    {
        return None;
    }
    let mut storage = addr.clone().as_storage();
    // SAFETY: the kernel wrote a whole sockaddr_ll (family and length
    // checked above) into storage large enough for any address.
    let sll = unsafe { storage.view_as::<libc::sockaddr_ll>() };
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&sll.sll_addr[..6]);
    Some(Mac(mac))
}

/// A keepalive frame on lvn's device, with the MAC it came from.
#[derive(Debug)]
pub struct Frame {
    pub from: Mac,
    pub payload: Vec<u8>,
}

pub struct OverlaySocket {
    fd: AsyncFd<Socket>,
    ifindex: u32,
}

impl OverlaySocket {
    /// Open on device `ifindex`. `receive` false: a send-only socket that
    /// drops every frame in the kernel (a hub reads the underlay instead).
    pub fn open(ifindex: u32, receive: bool) -> io::Result<OverlaySocket> {
        // A receiving socket taps every frame (ETH_P_ALL) and filters in
        // the kernel: on a bridge port or batman-adv hard interface (layer
        // 2, `attach`) frames go to the master before any socket bound to
        // one EtherType sees them; taps see them first.
        let bind_proto = if receive { ETH_P_ALL } else { ETHERTYPE };
        let proto = Protocol::from(i32::from(bind_proto.to_be()));
        let sock = socket(Domain::PACKET, Type::DGRAM, Some(proto))?;
        if receive {
            sock.attach_filter(&KEEPALIVE_IN)?;
        } else {
            sock.attach_filter(&DROP_ALL)?;
        }
        sock.bind(&link_addr_proto(ifindex, None, bind_proto)?)?;
        drain(&sock);
        Ok(OverlaySocket {
            fd: register(sock)?,
            ifindex,
        })
    }

    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// Send one frame to `to` (the kernel adds the Ethernet header and
    /// encapsulates it for the FDB entry of `to`).
    pub fn send(&self, to: Mac, payload: &[u8]) -> io::Result<()> {
        self.fd
            .get_ref()
            .send_to(payload, &link_addr(self.ifindex, Some(to))?)
            .map(|_| ())
    }

    pub async fn recv(&self) -> io::Result<Frame> {
        loop {
            let mut guard = self.fd.readable().await?;
            let r = guard.try_io(|fd| {
                let mut buf = [0u8; 2048];
                let (n, addr) = recv_from(fd.get_ref(), &mut buf)?;
                Ok(Frame {
                    from: link_source(&addr).unwrap_or(Mac([0; 6])),
                    payload: buf[..n.min(MAX_MESSAGE + 1)].to_vec(),
                })
            });
            match r {
                Ok(res) => return res,
                Err(_would_block) => continue,
            }
        }
    }
}

/// What is inside the UDP packets the hub's underlay socket looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encap {
    /// VXLAN with this VNI, carrying an EtherType 0x88b5 frame.
    Vxlan { vni: u32 },
    /// fou, carrying UDP to this overlay port: after a GUE header on an
    /// IPv6 underlay (ip6tnl), inside IPv6 when the node's primary overlay
    /// address is IPv6 (an IPv6-only overlay).
    Fou {
        keepalive_port: u16,
        gue: bool,
        inner_v6: bool,
    },
}

/// Bytes of the GUE header before the inner packet (version 0, no options).
const GUE_HEADER: u32 = 4;

impl Encap {
    /// Offsets from the UDP header of the inner packet, its protocol byte
    /// and its UDP destination port (fou only; the inner IPv4 header is
    /// assumed to have no options, as the kernel sends it).
    fn fou_offsets(gue: bool, inner_v6: bool) -> (u32, u32, u32) {
        let ip = 8 + if gue { GUE_HEADER } else { 0 };
        if inner_v6 {
            (ip, ip + 6, ip + 40 + 2)
        } else {
            (ip, ip + 9, ip + 20 + 2)
        }
    }
}

/// A keepalive as the hub's underlay saw it.
#[derive(Debug)]
pub struct Sighting {
    /// Outer source address and port: the reflexive address.
    pub from: SocketAddr,
    pub inner: Inner,
    pub payload: Vec<u8>,
}

pub struct UnderlaySocket {
    fd: AsyncFd<Socket>,
    v6: bool,
    encap: Encap,
}

/// Receive buffer of the hub's underlay socket: about 200 ms of a flood of
/// 148,000 packets a second (a queued copy takes about 1 KiB), so a daemon
/// kept off the CPU that long by the flood's own receive path loses no
/// spoke's keepalive. 4 MiB, 27 ms of that flood, lost 4 % of the spokes'
/// keepalives on the 2-core lab (docs/benchmarks.md). Taken only while
/// packets wait.
const UNDERLAY_RX_BUFFER: libc::c_int = 32 << 20;

/// Bytes from the UDP header to the keepalive: UDP 8, VXLAN 8, Ethernet 14.
const INNER: usize = 30;

/// SO_RCVBUFFORCE: a receive buffer past `rmem_max` (needs CAP_NET_ADMIN).
/// socket2 has no setter for it.
fn force_recv_buffer(sock: &Socket, size: libc::c_int) -> io::Result<()> {
    // SAFETY: `size` is a valid c_int for the duration of the call.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            &size as *const libc::c_int as *const libc::c_void,
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

impl UnderlaySocket {
    /// Copies of encapsulated packets to `port` that carry a keepalive.
    pub fn open(v6: bool, port: u16, encap: Encap) -> io::Result<UnderlaySocket> {
        let domain = if v6 { Domain::IPV6 } else { Domain::IPV4 };
        let sock = socket(domain, Type::RAW, Some(Protocol::UDP))?;
        // IPv4 raw sockets see the IP header (X = its length); IPv6 ones do not.
        let load_x = if v6 {
            bpf(0x01, 0, 0, 0)
        } else {
            bpf(0xb1, 0, 0, 0)
        };
        let prog = match encap {
            Encap::Vxlan { vni } => [
                load_x,
                bpf(0x48, 0, 0, 2),                    // A = UDP destination port
                bpf(0x15, 0, 5, u32::from(port)),      // != port: drop
                bpf(0x40, 0, 0, 12),                   // A = VNI << 8 | reserved
                bpf(0x15, 0, 3, vni << 8),             // != vni: drop
                bpf(0x48, 0, 0, 28),                   // A = inner EtherType
                bpf(0x15, 0, 1, u32::from(ETHERTYPE)), // != keepalive: drop
                bpf(0x06, 0, 0, 0xffff),               // accept
                bpf(0x06, 0, 0, 0),                    // drop
            ],
            Encap::Fou {
                keepalive_port,
                gue,
                inner_v6,
            } => {
                let (_, proto, dport) = Encap::fou_offsets(gue, inner_v6);
                [
                    load_x,
                    bpf(0x48, 0, 0, 2),               // A = UDP destination port
                    bpf(0x15, 0, 5, u32::from(port)), // != port: drop
                    bpf(0x50, 0, 0, proto),           // A = inner IP protocol
                    bpf(0x15, 0, 3, 17),              // != UDP: drop
                    bpf(0x48, 0, 0, dport),           // A = inner UDP dport
                    bpf(0x15, 0, 1, u32::from(keepalive_port)), // != keepalive: drop
                    bpf(0x06, 0, 0, 0xffff),          // accept
                    bpf(0x06, 0, 0, 0),               // drop
                ]
            }
        };
        sock.attach_filter(&prog)?;
        drain(&sock);
        // Room for a mass join while a reconcile runs. FORCE goes past
        // rmem_max (lvn has CAP_NET_ADMIN); fall back to the capped size.
        if force_recv_buffer(&sock, UNDERLAY_RX_BUFFER).is_err() {
            let _ = sock.set_recv_buffer_size(UNDERLAY_RX_BUFFER as usize);
        }
        Ok(UnderlaySocket {
            fd: register(sock)?,
            v6,
            encap,
        })
    }

    /// The next queued keepalive, if one is there already (no waiting).
    pub fn try_recv(&self) -> Option<Sighting> {
        for _ in 0..64 {
            match self.read_one() {
                Ok(Some(s)) => return Some(s),
                Ok(None) => continue,
                Err(_) => return None,
            }
        }
        None
    }

    fn read_one(&self) -> io::Result<Option<Sighting>> {
        // Room for a path MTU probe and its outer headers.
        let mut buf = [0u8; MAX_PROBE + 128];
        let (n, addr) = recv_from(self.fd.get_ref(), &mut buf)?;
        Ok(addr
            .as_socket()
            .and_then(|sender| parse_sighting(&buf[..n], self.v6, self.encap, sender.ip())))
    }

    pub async fn recv(&self) -> io::Result<Sighting> {
        loop {
            let mut guard = self.fd.readable().await?;
            let r = guard.try_io(|_| self.read_one());
            match r {
                Ok(Ok(Some(s))) => return Ok(s),
                Ok(Ok(None)) => continue, // too short to be a keepalive
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }
}

/// A keepalive in what a raw UDP socket read from `sender`: on IPv4 the
/// packet starts with the IP header, on IPv6 with the UDP header.
fn parse_sighting(buf: &[u8], v6: bool, encap: Encap, sender: IpAddr) -> Option<Sighting> {
    let udp = if v6 {
        0
    } else {
        usize::from(*buf.first()? & 0x0f) * 4
    };
    let sport = u16::from_be_bytes([*buf.get(udp)?, *buf.get(udp + 1)?]);
    let (inner, at) = match encap {
        Encap::Vxlan { .. } => {
            let mac_at = udp + 16 + 6;
            let mut mac = [0u8; 6];
            mac.copy_from_slice(buf.get(mac_at..mac_at + 6)?);
            (Inner::Mac(Mac(mac)), udp + INNER)
        }
        Encap::Fou { gue, inner_v6, .. } => {
            let (at, _, _) = Encap::fou_offsets(gue, inner_v6);
            let ip = udp + at as usize;
            if inner_v6 {
                let s: [u8; 16] = buf.get(ip + 8..ip + 24)?.try_into().ok()?;
                (Inner::Ip(IpAddr::V6(Ipv6Addr::from(s))), ip + 40 + 8)
            } else {
                let ihl = usize::from(*buf.get(ip)? & 0x0f) * 4;
                let s = buf.get(ip + 12..ip + 16)?;
                (
                    Inner::Ip(IpAddr::V4(Ipv4Addr::new(s[0], s[1], s[2], s[3]))),
                    ip + ihl + 8,
                )
            }
        }
    };
    let payload = buf.get(at..)?;
    Some(Sighting {
        from: SocketAddr::new(sender, sport),
        inner,
        payload: payload[..payload.len().min(MAX_PROBE + 1)].to_vec(),
    })
}

/// Keepalives on datapath "fou": plain UDP between overlay addresses on
/// `port + 1`, routed through the tunnel like data (ipip has no layer 2).
pub struct OverlayUdp {
    sock: tokio::net::UdpSocket,
    port: u16,
}

impl OverlayUdp {
    /// Bind to this node's overlay address (before it exists: IP_FREEBIND).
    /// `receive` false: a hub that only sends; what arrives is dropped in
    /// the kernel.
    pub fn open(addr: IpAddr, port: u16, receive: bool) -> io::Result<OverlayUdp> {
        let sock = match addr {
            IpAddr::V4(_) => {
                let s = socket(Domain::IPV4, Type::DGRAM, None)?;
                s.set_freebind_v4(true)?;
                s
            }
            IpAddr::V6(_) => {
                let s = socket(Domain::IPV6, Type::DGRAM, None)?;
                s.set_freebind_v6(true)?;
                s.set_only_v6(true)?;
                s
            }
        };
        if !receive {
            sock.attach_filter(&DROP_ALL)?;
        }
        sock.bind(&SocketAddr::new(addr, port).into())?;
        Ok(OverlayUdp {
            sock: tokio::net::UdpSocket::from_std(sock.into())?,
            port,
        })
    }

    pub fn send(&self, to: IpAddr, payload: &[u8]) -> io::Result<()> {
        self.sock
            .try_send_to(payload, SocketAddr::new(to, self.port))
            .map(|_| ())
    }

    pub async fn recv(&self) -> io::Result<(IpAddr, Vec<u8>)> {
        let mut buf = [0u8; 2048];
        let (n, from) = self.sock.recv_from(&mut buf).await?;
        Ok((from.ip(), buf[..n.min(MAX_MESSAGE + 1)].to_vec()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_addresses_round_trip() {
        let mac = Mac([2, 0x4c, 100, 64, 1, 2]);
        let addr = link_addr(7, Some(mac)).unwrap();
        assert_eq!(addr.family(), libc::AF_PACKET as libc::sa_family_t);
        assert_eq!(link_source(&addr), Some(mac));
        let ip: SockAddr = SocketAddr::from(([192, 0, 2, 1], 4789)).into();
        assert_eq!(link_source(&ip), None);
    }

    /// An IPv4 packet as the raw socket reads it: IP, UDP, VXLAN, Ethernet,
    /// keepalive.
    #[test]
    fn parses_a_vxlan_sighting_over_ipv4() {
        let mut p = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17, 0, 0];
        p.extend_from_slice(&[198, 51, 100, 2, 192, 0, 2, 1]);
        p.extend_from_slice(&40059u16.to_be_bytes());
        p.extend_from_slice(&4789u16.to_be_bytes());
        p.extend_from_slice(&[0; 4]); // UDP length, checksum
        p.extend_from_slice(&[8, 0, 0, 0, 0, 0, 42, 0]); // VXLAN, VNI 42
        p.extend_from_slice(&[2, 0x4c, 100, 64, 0, 1]); // destination
        p.extend_from_slice(&[2, 0x4c, 100, 64, 1, 2]); // source
        p.extend_from_slice(&ETHERTYPE.to_be_bytes());
        p.extend_from_slice(b"LVN1");
        let sender = IpAddr::from([198, 51, 100, 2]);
        let s = parse_sighting(&p, false, Encap::Vxlan { vni: 42 }, sender).unwrap();
        assert_eq!(s.from, SocketAddr::new(sender, 40059));
        assert_eq!(s.inner, Inner::Mac(Mac([2, 0x4c, 100, 64, 1, 2])));
        assert_eq!(s.payload, b"LVN1");
        assert!(parse_sighting(&p[..30], false, Encap::Vxlan { vni: 42 }, sender).is_none());
    }

    /// An IPv6 raw socket reads from the UDP header on; fou carries IPv4.
    #[test]
    fn parses_a_fou_sighting_over_ipv6() {
        let mut p = Vec::new();
        p.extend_from_slice(&40059u16.to_be_bytes());
        p.extend_from_slice(&5555u16.to_be_bytes());
        p.extend_from_slice(&[0; 4]);
        p.extend_from_slice(&[0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17, 0, 0]);
        p.extend_from_slice(&[100, 64, 1, 2, 100, 64, 0, 1]);
        p.extend_from_slice(&[0; 8]); // inner UDP header
        p.extend_from_slice(b"LVN1");
        let sender: IpAddr = "2001:db8::7".parse().unwrap();
        let encap = Encap::Fou {
            keepalive_port: 5556,
            gue: false,
            inner_v6: false,
        };
        let s = parse_sighting(&p, true, encap, sender).unwrap();
        assert_eq!(s.from, SocketAddr::new(sender, 40059));
        assert_eq!(s.inner, Inner::Ip([100, 64, 1, 2].into()));
        assert_eq!(s.payload, b"LVN1");
    }

    /// fou over an IPv6 underlay is GUE: a 4-byte header before the inner
    /// packet, which is IPv6 on an IPv6-only overlay.
    #[test]
    fn parses_a_gue_sighting_with_ipv4_or_ipv6_inside() {
        let sender: IpAddr = "2001:db8::7".parse().unwrap();
        let outer = |proto: u8| {
            let mut p = Vec::new();
            p.extend_from_slice(&40059u16.to_be_bytes());
            p.extend_from_slice(&5555u16.to_be_bytes());
            p.extend_from_slice(&[0; 4]);
            p.extend_from_slice(&[0, proto, 0, 0]); // GUE: version 0, protocol
            p
        };
        let mut v4 = outer(4);
        v4.extend_from_slice(&[0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17, 0, 0]);
        v4.extend_from_slice(&[100, 64, 1, 2, 100, 64, 0, 1]);
        v4.extend_from_slice(&[0; 8]);
        v4.extend_from_slice(b"LVN1");
        let encap = |inner_v6| Encap::Fou {
            keepalive_port: 5556,
            gue: true,
            inner_v6,
        };
        let s = parse_sighting(&v4, true, encap(false), sender).unwrap();
        assert_eq!(s.inner, Inner::Ip([100, 64, 1, 2].into()));
        assert_eq!(s.payload, b"LVN1");

        let mut v6 = outer(41);
        v6.extend_from_slice(&[0x60, 0, 0, 0, 0, 0, 17, 64]);
        let src: std::net::Ipv6Addr = "fd64:1::2".parse().unwrap();
        v6.extend_from_slice(&src.octets());
        v6.extend_from_slice(&[0; 16]); // destination
        v6.extend_from_slice(&[0; 8]); // inner UDP header
        v6.extend_from_slice(b"LVN1");
        let s = parse_sighting(&v6, true, encap(true), sender).unwrap();
        assert_eq!(s.inner, Inner::Ip(IpAddr::V6(src)));
        assert_eq!(s.payload, b"LVN1");
        assert!(parse_sighting(&v6[..40], true, encap(true), sender).is_none());
    }
}

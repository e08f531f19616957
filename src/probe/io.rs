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
    io,
    mem::{size_of, zeroed},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

use tokio::io::unix::AsyncFd;

pub use super::hub::Inner;
use super::wire::{ETHERTYPE, MAX_MESSAGE};
use crate::reconcile::Mac;

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn socket(domain: libc::c_int, ty: libc::c_int, proto: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the fd is owned from here on.
    let fd = check(unsafe {
        libc::socket(domain, ty | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, proto)
    })?;
    // SAFETY: fd was just returned by socket(2) and is not owned elsewhere.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn attach_filter(fd: &OwnedFd, prog: &[libc::sock_filter]) -> io::Result<()> {
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: fprog points at `prog`, alive for the call; the kernel copies it.
    check(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            &fprog as *const _ as *const libc::c_void,
            size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    })?;
    Ok(())
}

/// Packets may have queued before the filter was attached: drop them.
fn drain(fd: &OwnedFd) {
    let mut buf = [0u8; 2048];
    for _ in 0..10_000 {
        // SAFETY: buf is valid for its length.
        let n = unsafe {
            libc::recv(
                fd.as_raw_fd(),
                buf.as_mut_ptr() as *mut libc::c_void,
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            break;
        }
    }
}

fn register(fd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: the OwnedFd is ours alone and stays open as long as the AsyncFd.
    unsafe { AsyncFd::register(fd) }.map_err(|e| e.into_parts().1)
}

const fn bpf(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// A keepalive frame on lvn's device, with the MAC it came from.
#[derive(Debug)]
pub struct Frame {
    pub from: Mac,
    pub payload: Vec<u8>,
}

pub struct OverlaySocket {
    fd: AsyncFd<OwnedFd>,
    ifindex: u32,
}

impl OverlaySocket {
    /// Open on device `ifindex`. `receive` false: a send-only socket that
    /// drops every frame in the kernel (a hub reads the underlay instead).
    pub fn open(ifindex: u32, receive: bool) -> io::Result<OverlaySocket> {
        let proto = (ETHERTYPE).to_be() as libc::c_int;
        let fd = socket(libc::AF_PACKET, libc::SOCK_DGRAM, proto)?;
        if !receive {
            attach_filter(&fd, &[bpf(0x06, 0, 0, 0)])?;
        }
        // SAFETY: zeroed sockaddr_ll is a valid value; fields set below.
        let mut sll: libc::sockaddr_ll = unsafe { zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = ETHERTYPE.to_be();
        sll.sll_ifindex = ifindex as i32;
        // SAFETY: sll is a valid sockaddr_ll of the given size.
        check(unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &sll as *const _ as *const libc::sockaddr,
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        })?;
        if !receive {
            drain(&fd);
        }
        Ok(OverlaySocket {
            fd: register(fd)?,
            ifindex,
        })
    }

    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// Send one frame to `to` (the kernel adds the Ethernet header and
    /// encapsulates it for the FDB entry of `to`).
    pub fn send(&self, to: Mac, payload: &[u8]) -> io::Result<()> {
        // SAFETY: zeroed sockaddr_ll is a valid value; fields set below.
        let mut sll: libc::sockaddr_ll = unsafe { zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = ETHERTYPE.to_be();
        sll.sll_ifindex = self.ifindex as i32;
        sll.sll_halen = 6;
        sll.sll_addr[..6].copy_from_slice(&to.0);
        // SAFETY: payload and sll are valid for the given lengths.
        let n = unsafe {
            libc::sendto(
                self.fd.get_ref().as_raw_fd(),
                payload.as_ptr() as *const libc::c_void,
                payload.len(),
                libc::MSG_DONTWAIT,
                &sll as *const _ as *const libc::sockaddr,
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        check(n as libc::c_int).map(|_| ())
    }

    pub async fn recv(&self) -> io::Result<Frame> {
        loop {
            let mut guard = self.fd.readable().await?;
            let r = guard.try_io(|fd| {
                let mut buf = [0u8; 2048];
                // SAFETY: zeroed sockaddr_ll is valid; recvfrom fills it.
                let mut sll: libc::sockaddr_ll = unsafe { zeroed() };
                let mut len = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
                // SAFETY: buffers are valid for their lengths.
                let n = unsafe {
                    libc::recvfrom(
                        fd.get_ref().as_raw_fd(),
                        buf.as_mut_ptr() as *mut libc::c_void,
                        buf.len(),
                        libc::MSG_DONTWAIT,
                        &mut sll as *mut _ as *mut libc::sockaddr,
                        &mut len,
                    )
                };
                let n = check(n as libc::c_int)? as usize;
                let mut from = [0u8; 6];
                from.copy_from_slice(&sll.sll_addr[..6]);
                Ok(Frame {
                    from: Mac(from),
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
    /// fou (ipip), carrying IPv4 UDP to this overlay port.
    Fou { keepalive_port: u16 },
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
    fd: AsyncFd<OwnedFd>,
    v6: bool,
    encap: Encap,
}

/// Receive buffer of the hub's underlay socket.
const UNDERLAY_RX_BUFFER: libc::c_int = 4 << 20;

/// Bytes from the UDP header to the keepalive: UDP 8, VXLAN 8, Ethernet 14.
const INNER: usize = 30;

impl UnderlaySocket {
    /// Copies of encapsulated packets to `port` that carry a keepalive.
    pub fn open(v6: bool, port: u16, encap: Encap) -> io::Result<UnderlaySocket> {
        let fd = if v6 {
            socket(libc::AF_INET6, libc::SOCK_RAW, libc::IPPROTO_UDP)?
        } else {
            socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_UDP)?
        };
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
            Encap::Fou { keepalive_port } => [
                load_x,
                bpf(0x48, 0, 0, 2),               // A = UDP destination port
                bpf(0x15, 0, 5, u32::from(port)), // != port: drop
                bpf(0x50, 0, 0, 8 + 9),           // A = inner IP protocol
                bpf(0x15, 0, 3, 17),              // != UDP: drop
                bpf(0x48, 0, 0, 8 + 20 + 2),      // A = inner UDP dport
                bpf(0x15, 0, 1, u32::from(keepalive_port)), // != keepalive: drop
                bpf(0x06, 0, 0, 0xffff),          // accept
                bpf(0x06, 0, 0, 0),               // drop
            ],
        };
        attach_filter(&fd, &prog)?;
        drain(&fd);
        // Room for a mass join while a reconcile runs. FORCE goes past
        // rmem_max (lvn has CAP_NET_ADMIN); fall back to the capped size.
        let size: libc::c_int = UNDERLAY_RX_BUFFER;
        for opt in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
            // SAFETY: `size` is a valid c_int for the duration of the call.
            let r = unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    opt,
                    &size as *const _ as *const libc::c_void,
                    size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            if r == 0 {
                break;
            }
        }
        Ok(UnderlaySocket {
            fd: register(fd)?,
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
        let mut buf = [0u8; 2048];
        // SAFETY: zeroed sockaddr_storage is valid; recvfrom fills it.
        let mut ss: libc::sockaddr_storage = unsafe { zeroed() };
        let mut len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        // SAFETY: buffers are valid for their lengths.
        let n = unsafe {
            libc::recvfrom(
                self.fd.get_ref().as_raw_fd(),
                buf.as_mut_ptr() as *mut libc::c_void,
                buf.len(),
                libc::MSG_DONTWAIT,
                &mut ss as *mut _ as *mut libc::sockaddr,
                &mut len,
            )
        };
        let n = check(n as libc::c_int)? as usize;
        Ok(parse_sighting(&buf[..n], self.v6, self.encap, &ss))
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

fn parse_sighting(
    buf: &[u8],
    v6: bool,
    encap: Encap,
    ss: &libc::sockaddr_storage,
) -> Option<Sighting> {
    let (src_ip, udp) = if v6 {
        // SAFETY: an AF_INET6 raw socket fills a sockaddr_in6.
        let sin6: &libc::sockaddr_in6 = unsafe { &*(ss as *const _ as *const libc::sockaddr_in6) };
        (IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)), 0)
    } else {
        let ihl = usize::from(*buf.first()? & 0x0f) * 4;
        let s = buf.get(12..16)?;
        (IpAddr::V4(Ipv4Addr::new(s[0], s[1], s[2], s[3])), ihl)
    };
    let sport = u16::from_be_bytes([*buf.get(udp)?, *buf.get(udp + 1)?]);
    let (inner, at) = match encap {
        Encap::Vxlan { .. } => {
            let mac_at = udp + 16 + 6;
            let mut mac = [0u8; 6];
            mac.copy_from_slice(buf.get(mac_at..mac_at + 6)?);
            (Inner::Mac(Mac(mac)), udp + INNER)
        }
        Encap::Fou { .. } => {
            let ip = udp + 8;
            let ihl = usize::from(*buf.get(ip)? & 0x0f) * 4;
            let s = buf.get(ip + 12..ip + 16)?;
            (
                Inner::Ip(IpAddr::V4(Ipv4Addr::new(s[0], s[1], s[2], s[3]))),
                ip + ihl + 8,
            )
        }
    };
    let payload = buf.get(at..)?;
    Some(Sighting {
        from: SocketAddr::new(src_ip, sport),
        inner,
        payload: payload[..payload.len().min(MAX_MESSAGE + 1)].to_vec(),
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
        let IpAddr::V4(v4) = addr else {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "fou overlays are IPv4",
            ));
        };
        let fd = socket(libc::AF_INET, libc::SOCK_DGRAM, 0)?;
        let one: libc::c_int = 1;
        // SAFETY: `one` is a valid c_int for the duration of the call.
        check(unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_FREEBIND,
                &one as *const _ as *const libc::c_void,
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        })?;
        if !receive {
            attach_filter(&fd, &[bpf(0x06, 0, 0, 0)])?;
        }
        // SAFETY: zeroed sockaddr_in is valid; fields set below.
        let mut sin: libc::sockaddr_in = unsafe { zeroed() };
        sin.sin_family = libc::AF_INET as u16;
        sin.sin_port = port.to_be();
        sin.sin_addr.s_addr = u32::from(v4).to_be();
        // SAFETY: sin is a valid sockaddr_in of the given size.
        check(unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &sin as *const _ as *const libc::sockaddr,
                size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        })?;
        let std = std::net::UdpSocket::from(fd);
        Ok(OverlayUdp {
            sock: tokio::net::UdpSocket::from_std(std)?,
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

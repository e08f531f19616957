//! Devices as netlink sees them: lvn's VXLAN device and its ipip tunnels
//! with fou encapsulation, parsed from link dumps and built into the
//! requests that create and change them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use rtnetlink::{
    LinkIp6Tnl, LinkIpIp, LinkUnspec, LinkVxlan,
    packet_route::{
        IpProtocol,
        link::{
            InfoData, InfoIpTunnel, InfoKind, InfoVxlan, Ip6TunnelFlags, LinkAttribute, LinkFlags,
            LinkInfo, LinkMessage, TunnelEncapType, VxlanDf,
        },
    },
};

/// ip6tnl `mode any`: IPv4 and IPv6 inside (protocol 0 in IFLA_IPTUN_PROTO).
const IP6TNL_MODE_ANY: i32 = 0;

use crate::{
    naming::{Family, Mac},
    reconcile::{Link, Tunnel},
};

/// The device's alias (IFLA_IFALIAS): lvn's mark of ownership.
pub(super) fn link_alias(l: &LinkMessage) -> Option<&str> {
    l.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfAlias(a) => Some(a.as_str()),
        _ => None,
    })
}

/// What a device is, for telling people why lvn will not touch it.
pub(super) fn link_kind(l: &LinkMessage) -> String {
    l.attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
                LinkInfo::Kind(k) => Some(format!("kind {k:?}").to_lowercase()),
                _ => None,
            }),
            _ => None,
        })
        .unwrap_or_else(|| "a device".to_string())
}

/// An ipip or ip6tnl device lvn made (its alias names the peer).
pub(super) fn parse_tunnel(l: &LinkMessage, name: &str, peer: &str) -> Option<Tunnel> {
    let (_, mtu) = link_name_mtu(l);
    let mut t = Tunnel {
        name: name.to_string(),
        peer: peer.to_string(),
        remote: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        local: None,
        sport: 0,
        dport: 0,
        mtu,
        up: l.header.flags.contains(LinkFlags::Up),
    };
    let mut tunnel = false;
    for a in &l.attributes {
        let LinkAttribute::LinkInfo(infos) = a else {
            continue;
        };
        for i in infos {
            match i {
                LinkInfo::Kind(InfoKind::IpIp | InfoKind::Ip6Tnl) => tunnel = true,
                LinkInfo::Data(InfoData::IpTunnel(v)) => {
                    for x in v {
                        match x {
                            InfoIpTunnel::Remote(r) => t.remote = *r,
                            InfoIpTunnel::Local(l) if !l.is_unspecified() => t.local = Some(*l),
                            InfoIpTunnel::EncapSPort(p) => t.sport = *p,
                            InfoIpTunnel::EncapDPort(p) => t.dport = *p,
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
    }
    tunnel.then_some(t)
}

/// A change addresses the device by index. Kernels before 6.2 refuse
/// IFLA_IFNAME on an up device with EBUSY, even when the name is the same.
fn without_name(m: &mut LinkMessage) {
    m.attributes
        .retain(|a| !matches!(a, LinkAttribute::IfName(_)));
}

/// The whole tunnel: ipip to the peer encapsulated in fou on an IPv4
/// underlay, ip6tnl encapsulated in GUE on an IPv6 one.
pub(super) fn tunnel_message(t: &Tunnel) -> LinkMessage {
    let remote = match t.remote {
        IpAddr::V4(v4) => v4,
        IpAddr::V6(v6) => return ip6tnl_message(t, v6),
    };
    let mut b = LinkIpIp::new(&t.name)
        .remote(remote)
        .encap_type(TunnelEncapType::Fou)
        .encap_sport(t.sport)
        .encap_dport(t.dport)
        .mtu(t.mtu);
    if let Some(IpAddr::V4(l)) = t.local {
        b = b.local(l);
    }
    if t.up {
        b = b.up();
    }
    b.build()
}

/// `ip link add T type ip6tnl mode any remote R local L encaplimit none
/// encap gue encap-sport S encap-dport D`: `any` carries both inner
/// families, GUE tells the receiver which one each packet holds (one fou
/// listener has one protocol), and without `encaplimit none` every packet
/// would carry an extra destination options header.
fn ip6tnl_message(t: &Tunnel, remote: Ipv6Addr) -> LinkMessage {
    let mut b = LinkIp6Tnl::new(&t.name)
        .remote(remote)
        .mode(IpProtocol::from(IP6TNL_MODE_ANY))
        .set_flag(Ip6TunnelFlags::IgnEncapLimit, true)
        .encap_type(TunnelEncapType::Gue)
        .encap_sport(t.sport)
        .encap_dport(t.dport)
        .mtu(t.mtu);
    if let Some(IpAddr::V6(l)) = t.local {
        b = b.local(l);
    }
    if t.up {
        b = b.up();
    }
    b.build()
}

/// A change to tunnel `index` in place.
pub(super) fn tunnel_change_message(t: &Tunnel, index: u32) -> LinkMessage {
    let mut m = tunnel_message(t);
    m.header.index = index;
    without_name(&mut m);
    m
}

/// The whole VXLAN device, for creating it. An IPv6 underlay without a
/// source address still says `local6 ::`: that is what makes the kernel
/// open an IPv6 socket.
pub(super) fn vxlan_message(link: &Link) -> LinkMessage {
    let mut b = LinkVxlan::new(&link.name, link.vni)
        .port(link.port)
        .port_range(link.srcport.0, link.srcport.1)
        .learning(link.learning)
        .mtu(link.mtu)
        .address(link.mac.0.to_vec());
    b = match link.local {
        Some(IpAddr::V6(a)) => b.local6(a),
        Some(IpAddr::V4(a)) => b.local(a),
        None if link.underlay == Family::Ipv6 => b.local6(Ipv6Addr::UNSPECIFIED),
        None => b,
    };
    // Outer packets are never fragmented (DF set, as Open vSwitch does by
    // default): a path narrower than the device's MTU then loses the large
    // packets where the path MTU check (and ICMP "fragmentation needed")
    // can see it, instead of depending on fragments crossing NATs and
    // firewalls, which many drop, and on reassembly at the other end.
    b = b.df(VxlanDf::Set);
    b = match (link.udp_checksum, link.underlay) {
        (Some(c), Family::Ipv4) => b.udp_csum(c),
        (Some(c), Family::Ipv6) => b.udp_zero_csum6_tx(!c),
        (None, _) => b,
    };
    if link.up {
        b = b.up();
    }
    b.build()
}

/// The VXLAN settings that change in place (learning, local) of device
/// `index`; dstport and VNI cannot (EOPNOTSUPP).
pub(super) fn vxlan_change_message(link: &Link, index: u32) -> LinkMessage {
    let mut b = LinkVxlan::new(&link.name, link.vni).learning(link.learning);
    b = match link.local {
        Some(IpAddr::V6(a)) => b.local6(a),
        Some(IpAddr::V4(a)) => b.local(a),
        None => b,
    };
    let mut m = b.build();
    m.header.index = index;
    without_name(&mut m);
    m
}

/// MTU, MAC and up/down of device `index`.
pub(super) fn link_settings_message(link: &Link, index: u32) -> LinkMessage {
    let b = LinkUnspec::new_with_index(index)
        .mtu(link.mtu)
        .address(link.mac.0.to_vec());
    let b = if link.up { b.up() } else { b.down() };
    b.build()
}

/// Mark device `name` as lvn's. A second request: the kernel ignores an
/// alias given at creation.
pub(super) fn alias_message(name: &str, alias: String) -> LinkMessage {
    LinkUnspec::new_with_name(name).alias(alias).build()
}

pub(super) fn link_name_mtu(l: &LinkMessage) -> (String, u32) {
    let mut name = String::new();
    let mut mtu = 0;
    for a in &l.attributes {
        match a {
            LinkAttribute::IfName(n) => name = n.clone(),
            LinkAttribute::Mtu(m) => mtu = *m,
            _ => {}
        }
    }
    (name, mtu)
}

/// lvn's view of its device, or why the device is not lvn's.
pub(super) fn parse_link(l: &LinkMessage, alias: &str) -> Result<Link, String> {
    let (name, mtu) = link_name_mtu(l);
    let mut kind = None;
    let mut info = Vec::new();
    let mut mac = None;
    let mut owner = None;
    for a in &l.attributes {
        match a {
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    match i {
                        LinkInfo::Kind(k) => kind = Some(k.clone()),
                        LinkInfo::Data(InfoData::Vxlan(v)) => info = v.clone(),
                        _ => {}
                    }
                }
            }
            LinkAttribute::Address(a) if a.len() == 6 => {
                let mut m = [0; 6];
                m.copy_from_slice(a);
                mac = Some(Mac(m));
            }
            LinkAttribute::IfAlias(a) => owner = Some(a.clone()),
            _ => {}
        }
    }
    if kind != Some(InfoKind::Vxlan) {
        return Err(format!(
            "kind {}",
            kind.map_or("unknown".to_string(), |k| format!("{k:?}").to_lowercase())
        ));
    }
    if owner.as_deref() != Some(alias) {
        return Err(format!(
            "a vxlan device with alias {:?}, not {alias:?}",
            owner.unwrap_or_default()
        ));
    }
    let mut link = Link {
        name,
        vni: 0,
        port: 0,
        srcport: (0, 0),
        underlay: Family::Ipv4,
        local: None,
        mtu,
        mac: mac.unwrap_or(Mac([0; 6])),
        learning: true,
        up: l.header.flags.contains(LinkFlags::Up),
        udp_checksum: None,
    };
    let (mut csum4, mut zero6) = (None, None);
    for i in info {
        match i {
            InfoVxlan::Id(v) => link.vni = v,
            InfoVxlan::Port(p) => link.port = p,
            InfoVxlan::PortRange(r) => link.srcport = r,
            InfoVxlan::Learning(b) => link.learning = b,
            InfoVxlan::Local(a) => link.local = Some(IpAddr::V4(a)),
            InfoVxlan::Local6(a) => {
                link.underlay = Family::Ipv6;
                link.local = Some(IpAddr::V6(a));
            }
            InfoVxlan::UDPCsum(b) => csum4 = Some(b),
            InfoVxlan::UDPZeroCsumTX(b) => zero6 = Some(!b),
            _ => {}
        }
    }
    link.udp_checksum = match link.underlay {
        Family::Ipv4 => csum4,
        Family::Ipv6 => zero6,
    };
    Ok(link)
}

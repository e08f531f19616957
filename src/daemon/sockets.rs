//! The probe's two sockets, as the topology wants them: keepalives and
//! answers inside the overlay (an EtherType 0x88b5 frame on the VXLAN
//! device, or UDP between overlay addresses through the fou tunnels), and
//! on a hub the underlay socket that sees keepalives with their NAT-mapped
//! source. Edge I/O, owned by the runner.

use std::net::IpAddr;

use crate::{
    config::{self, Topology},
    probe::io::{Encap, OverlaySocket, OverlayUdp, Sighting, UnderlaySocket},
    reconcile::{Family, Mac},
};

/// Overlay UDP port of keepalives on datapath "fou": the network's port
/// plus one (the fou listener holds the port itself; `port` is at most
/// 65534, so this fits).
pub fn keepalive_port(port: u16) -> u16 {
    port.saturating_add(1)
}

/// What the sockets depend on; a change means opening them again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    pub datapath: config::Datapath,
    pub device: String,
    pub vni: u32,
    pub port: u16,
    pub hub: bool,
    /// This node's overlay address.
    pub address: IpAddr,
    /// Hubs are reached over IPv6.
    pub v6: bool,
}

impl Spec {
    pub fn of(topo: &Topology, node: &str) -> Option<Spec> {
        let me = topo.nodes.get(node)?;
        let net = &topo.network;
        Some(Spec {
            datapath: net.datapath,
            device: net.device.clone(),
            vni: net.vni,
            port: net.port,
            hub: me.role == config::Role::Hub,
            address: me.address,
            v6: topo
                .hubs()
                .find_map(|h| h.endpoint)
                .is_some_and(|e| Family::of(e.ip()) == Family::Ipv6),
        })
    }
}

pub enum Overlay {
    Packet(OverlaySocket),
    Udp(OverlayUdp),
}

impl Overlay {
    /// Open for `spec`; `ifindex` is the VXLAN device's.
    pub fn open(spec: &Spec, ifindex: Option<u32>) -> std::io::Result<Option<Overlay>> {
        Ok(match spec.datapath {
            config::Datapath::Vxlan => match ifindex {
                Some(i) => Some(Overlay::Packet(OverlaySocket::open(i, !spec.hub)?)),
                None => None,
            },
            config::Datapath::Fou => Some(Overlay::Udp(OverlayUdp::open(
                spec.address,
                keepalive_port(spec.port),
                !spec.hub,
            )?)),
        })
    }

    /// The device it is bound to (VXLAN), to notice a re-created device.
    pub fn ifindex(&self) -> Option<u32> {
        match self {
            Overlay::Packet(p) => Some(p.ifindex()),
            Overlay::Udp(_) => None,
        }
    }

    /// Send to the node with overlay address `to`.
    pub fn send(&self, to: IpAddr, payload: &[u8]) -> std::io::Result<()> {
        match self {
            Overlay::Packet(p) => p.send(Mac::for_overlay(to), payload),
            Overlay::Udp(u) => u.send(to, payload),
        }
    }

    pub async fn recv(&self) -> std::io::Result<Vec<u8>> {
        match self {
            Overlay::Packet(p) => p.recv().await.map(|f| f.payload),
            Overlay::Udp(u) => u.recv().await.map(|(_, payload)| payload),
        }
    }
}

pub fn open_underlay(spec: &Spec) -> std::io::Result<UnderlaySocket> {
    let encap = match spec.datapath {
        config::Datapath::Vxlan => Encap::Vxlan { vni: spec.vni },
        config::Datapath::Fou => Encap::Fou {
            keepalive_port: keepalive_port(spec.port),
            // An IPv6 underlay runs ip6tnl with GUE.
            gue: spec.v6,
            inner_v6: spec.address.is_ipv6(),
        },
    };
    UnderlaySocket::open(spec.v6, spec.port, encap)
}

pub async fn recv_underlay(s: &Option<UnderlaySocket>) -> std::io::Result<Sighting> {
    match s {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

/// Answers, read by spokes only (a hub's overlay socket only sends).
pub async fn recv_overlay(s: &Option<Overlay>, read: bool) -> std::io::Result<Vec<u8>> {
    match s {
        Some(s) if read => s.recv().await,
        _ => std::future::pending().await,
    }
}

//! Topology + this node's name (+ the underlay, for a default MTU) -> the
//! kernel state lvn wants, each object with the reason it exists.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use ipnet::IpNet;

use super::{
    AddrKey, Address, Fdb, Fou, Link, Neigh, Reason, Reasons, Route, RouteKey, State, Sysctl,
    Tunnel, Underlay, layer2, model::append_sorted,
};
use crate::{
    config::{Datapath, Layer, Node, Role, Topology},
    naming::{Family, Mac, Setting, SysctlKey, tunnel_name},
};

/// Bytes FOU adds over IPv4: outer IPv4 (20) and UDP (8).
pub const FOU_OVERHEAD_V4: u32 = 28;
/// Bytes fou adds over IPv6: outer IPv6 (40), UDP (8) and the GUE header
/// (4) that tells the receiver which inner family follows.
pub const FOU_OVERHEAD_V6: u32 = 52;

/// Bytes VXLAN adds to every packet over IPv4: outer IPv4 (20), UDP (8),
/// VXLAN (8) and the inner Ethernet header (14).
pub const VXLAN_OVERHEAD_V4: u32 = 50;
/// The same over IPv6 (outer header of 40 bytes).
pub const VXLAN_OVERHEAD_V6: u32 = 70;
/// Assumed underlay MTU when no route to a peer is known.
pub const FALLBACK_UNDERLAY_MTU: u32 = 1500;
/// Kernel default metric of IPv6 routes added with metric 0.
const IPV6_DEFAULT_METRIC: u32 = 1024;

/// Identifies one object of a [`State`], to attach a reason to it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ObjectKey {
    Link,
    Tunnel(String),
    Fou(u16),
    Address(AddrKey),
    Fdb(Mac),
    Neigh(IpAddr),
    Route(RouteKey),
    Sysctl(SysctlKey),
    /// Layer 2 flooding entry, by destination and port.
    Flood(SocketAddr),
    /// Layer 2: the device's master.
    Port,
}

/// What the keepalive probe knows, as the planner needs it: endpoints learned
/// from live peers, and peers whose keepalives stopped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Liveness {
    pub learned: BTreeMap<String, SocketAddr>,
    /// Peers silent for longer than this, by name.
    pub expired: BTreeMap<String, std::time::Duration>,
    /// A spoke's primary hub as its keepalives decide it (failover); `None`:
    /// the first of its placement order.
    pub primary: Option<String>,
}

/// The state lvn wants on this node, and why each object is wanted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Desired {
    pub state: State,
    /// Looked up only for steps.
    pub reasons: Reasons,
    /// Why objects that are not wanted go, where it is more than "not declared".
    pub removal_reasons: HashMap<ObjectKey, Reason>,
    /// Peers the datapath cannot carry, and why (FOU: one per remote address).
    pub conflicts: Vec<Conflict>,
    /// Layer 2: the master `attach` names for this node; with it, a device
    /// found on another master is drift.
    pub attach: Option<String>,
    /// What lvn wants and cannot have yet (a missing master).
    pub waiting: Vec<super::Waiting>,
    /// Layer 2: how many peers use each flooding entry (two peers behind
    /// one endpoint share one), so a change to one peer keeps an entry the
    /// other still needs.
    pub flood_users: HashMap<SocketAddr, u32>,
}

/// Two peers behind one public address on datapath "fou": ipip tells
/// tunnels apart by outer addresses only, so only `kept` is carried.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Conflict {
    pub remote: IpAddr,
    pub kept: String,
    pub refused: String,
}

impl std::fmt::Display for Conflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} and {} share the public address {}: ipip (datapath \"fou\") tells tunnels apart by outer addresses only, so {} is carried and {} is refused; use datapath = \"vxlan\" to carry both",
            self.kept, self.refused, self.remote, self.kept, self.refused
        )
    }
}

impl Desired {
    pub fn reason(&self, key: &ObjectKey) -> Reason {
        self.reasons
            .get(key)
            .cloned()
            .unwrap_or(Reason::NotDeclared)
    }

    pub fn removal_reason(&self, key: &ObjectKey) -> Reason {
        self.removal_reasons
            .get(key)
            .cloned()
            .unwrap_or(Reason::NotDeclared)
    }
}

/// What `me` should have in the kernel for `topo`.
pub fn desired(topo: &Topology, me: &Node, underlay: &Underlay, live: &Liveness) -> Desired {
    desired_for(topo, me, underlay, live, Peers::All)
}

/// Which peers' objects a desired state holds.
#[derive(Debug, Clone, Copy)]
pub enum Peers<'a> {
    All,
    /// Only these (by name; names that are not declared, or not peers of
    /// `me`, contribute nothing), with everything that is `me`'s own: the
    /// device, its addresses and settings, the overlay routes. A daemon
    /// works out what one peer's change needs from this (`reconcile::delta`).
    Only(&'a BTreeSet<String>),
}

/// [`desired`], for the objects of `peers` and `me`'s own only.
pub fn desired_for(
    topo: &Topology,
    me: &Node,
    underlay: &Underlay,
    live: &Liveness,
    peers: Peers,
) -> Desired {
    let mut d = Desired::default();
    let family = topo
        .hubs()
        .find_map(|h| h.endpoint)
        .map_or(Family::Ipv4, |e| Family::of(e.ip()));
    let l2 = topo.network.l2.layer == Layer::Two;
    let (mtu, mtu_from) = if l2 {
        layer2::fleet_mtu(topo)
    } else {
        link_mtu(topo, me, underlay, family)
    };
    let network = Reason::Network {
        network: topo.network.name.clone(),
        mtu_from,
    };
    let peers = direct_peers(topo, me, live, peers, &mut d);
    let hubs = hub_order(topo, me, live);
    match topo.network.datapath {
        Datapath::Vxlan => {
            let at = Outer { family, mtu };
            vxlan(topo, me, at, network, &peers, &hubs, underlay, &mut d)
        }
        Datapath::Fou => {
            let at = Outer { family, mtu };
            fou(topo, me, at, network, &peers, &hubs, underlay, &mut d)
        }
    }
    d
}

/// A peer this node talks to directly, with the endpoint to use.
struct Direct<'a> {
    node: &'a Node,
    name: Arc<str>,
    endpoint: SocketAddr,
    why: Reason,
}

/// The objects there is one or more of per peer (FDB entries, neighbours,
/// routes) and their reasons, gathered in lists and made into the ordered
/// maps at once ([`PerPeer::add_to`]): a map built from a sorted list costs
/// a copy, where an insert per object walks the tree from its root, six
/// per peer, which made planning 100k peers grow faster than linearly.
struct PerPeer {
    fdb: Vec<(Mac, Fdb)>,
    neighbours: Vec<(IpAddr, Neigh)>,
    routes: Vec<(RouteKey, Route)>,
    fdb_why: Vec<(Mac, Reason)>,
    neigh_why: Vec<(IpAddr, Reason)>,
    route_why: Vec<(RouteKey, Reason)>,
}

impl PerPeer {
    /// Room for `n` peers' FDB entries and neighbours (one address each)
    /// and `routes` routes.
    fn with_capacity(n: usize, routes: usize) -> PerPeer {
        PerPeer {
            fdb: Vec::with_capacity(n),
            neighbours: Vec::with_capacity(n),
            routes: Vec::with_capacity(routes),
            fdb_why: Vec::with_capacity(n),
            neigh_why: Vec::with_capacity(n),
            route_why: Vec::with_capacity(routes),
        }
    }

    fn route(&mut self, r: Route, reason: Reason) {
        self.route_why.push((r.key(), reason));
        self.routes.push((r.key(), r));
    }

    /// Into `d`'s maps, a later object of a key replacing an earlier one
    /// as inserts one by one would.
    fn add_to(self, d: &mut Desired) {
        append_sorted(&mut d.state.fdb, self.fdb);
        append_sorted(&mut d.state.neighbours, self.neighbours);
        append_sorted(&mut d.state.routes, self.routes);
        d.reasons
            .append(self.fdb_why, self.neigh_why, self.route_why);
    }
}

/// The unicast FDB entry of a peer (both layers): its MAC behind its
/// endpoint. Returns the MAC.
fn add_fdb(o: &mut PerPeer, dev: &Arc<str>, p: &Direct) -> Mac {
    let mac = Mac::for_overlay(p.node.address);
    o.fdb.push((
        mac,
        Fdb {
            dev: dev.clone(),
            mac,
            dst: p.endpoint.ip(),
            port: p.endpoint.port(),
        },
    ));
    o.fdb_why.push((mac, p.why.clone()));
    mac
}

/// Hubs talk to every node, spokes to hubs. Peers without an endpoint
/// (neither declared nor learned) get nothing; expired ones get a reason
/// for the removal of what they had.
fn direct_peers<'a>(
    topo: &'a Topology,
    me: &Node,
    live: &Liveness,
    only: Peers,
    d: &mut Desired,
) -> Vec<Direct<'a>> {
    let mut out = Vec::new();
    let nodes: Box<dyn Iterator<Item = &'a Node>> = match only {
        Peers::All => Box::new(topo.nodes.values()),
        Peers::Only(names) => Box::new(names.iter().filter_map(|n| topo.nodes.get(n))),
    };
    for peer in nodes {
        if peer.name == me.name || (me.role != Role::Hub && peer.role != Role::Hub) {
            continue;
        }
        let name: Arc<str> = Arc::from(peer.name.as_str());
        let (endpoint, why) = match (peer.endpoint, live.learned.get(&peer.name)) {
            (Some(ep), _) => (ep, Reason::StaticEndpoint { peer: name.clone() }),
            (None, Some(ep)) => (*ep, Reason::LearnedEndpoint { peer: name.clone() }),
            (None, None) => {
                if let Some(after) = live.expired.get(&peer.name) {
                    let r = Reason::Expired {
                        peer: name.clone(),
                        after_ms: u64::try_from(after.as_millis()).unwrap_or(u64::MAX),
                    };
                    let mac = Mac::for_overlay(peer.address);
                    d.removal_reasons.insert(ObjectKey::Fdb(mac), r.clone());
                    for &a in &peer.addresses {
                        d.removal_reasons.insert(ObjectKey::Neigh(a), r.clone());
                        let host = RouteKey {
                            dst: IpNet::from(a),
                            metric: route_metric(Family::of(a)),
                        };
                        d.removal_reasons.insert(ObjectKey::Route(host), r.clone());
                    }
                    let tunnel = tunnel_name(&topo.network.name, &peer.name);
                    d.removal_reasons.insert(ObjectKey::Tunnel(tunnel), r);
                }
                continue;
            }
        };
        out.push(Direct {
            node: peer,
            name,
            endpoint,
            why,
        });
    }
    out
}

/// The metric lvn gives routes of a family: what the kernel would make of 0.
fn route_metric(family: Family) -> u32 {
    match family {
        Family::Ipv4 => 0,
        Family::Ipv6 => IPV6_DEFAULT_METRIC,
    }
}

/// Each of `me`'s overlay addresses with the overlay prefix of its family.
fn own_overlays<'a>(
    topo: &'a Topology,
    me: &'a Node,
) -> impl Iterator<Item = (IpAddr, IpNet)> + 'a {
    me.addresses
        .iter()
        .filter_map(|&a| Some((a, topo.network.overlay_for(a)?)))
}

/// The address of `node` in the family of `overlay`.
fn address_in(node: &Node, overlay: IpNet) -> Option<IpAddr> {
    node.addresses
        .iter()
        .copied()
        .find(|a| a.is_ipv4() == overlay.addr().is_ipv4())
}

fn add_address(d: &mut Desired, a: Address, me: &Node) {
    d.reasons.insert(
        ObjectKey::Address(a.key()),
        Reason::OwnAddress {
            node: me.name.clone(),
        },
    );
    d.state.addresses.insert(a.key(), a);
}

/// Device settings for the role, per overlay family of the node: hubs
/// forward, spokes do not.
fn add_settings(d: &mut Desired, me: &Node, underlay: &Underlay, dev: &str, redirects: bool) {
    let forwarding = if me.role == Role::Hub { "1" } else { "0" };
    let mut settings = Vec::new();
    for fam in me.addresses.iter().map(|a| Family::of(*a)) {
        settings.push((fam, Setting::Forwarding, forwarding));
        if redirects && me.role == Role::Hub && fam == Family::Ipv4 {
            // Spokes reach each other through the hub on purpose; a redirect
            // would only tell them to try a path that does not exist.
            settings.push((fam, Setting::SendRedirects, "0"));
        }
        if me.role == Role::Hub && fam == Family::Ipv6 && underlay.force_forwarding {
            settings.push((fam, Setting::ForceForwarding, "1"));
        }
    }
    for (fam, setting, value) in settings {
        let key = SysctlKey::new(fam, dev, setting);
        d.reasons.insert(
            ObjectKey::Sysctl(key.clone()),
            Reason::Role { role: me.role },
        );
        d.state.sysctls.insert(
            key.clone(),
            Sysctl {
                key,
                value: value.to_string(),
            },
        );
    }
}

/// VXLAN: one device, an FDB entry and a permanent neighbour per peer.
#[allow(clippy::too_many_arguments)]
fn vxlan(
    topo: &Topology,
    me: &Node,
    outer: Outer,
    network: Reason,
    peers: &[Direct],
    hubs: &[&Node],
    underlay: &Underlay,
    d: &mut Desired,
) {
    let Outer { family, mtu } = outer;
    let net = &topo.network;
    let dev = net.device.clone();
    d.state.link = Some(Link {
        name: dev.clone(),
        vni: net.vni,
        port: net.port,
        srcport: (net.port, net.port.saturating_add(1)),
        underlay: family,
        local: me
            .endpoint
            .map(|e| e.ip())
            .filter(|_| family == Family::Ipv6),
        mtu,
        mac: Mac::for_overlay(me.address),
        learning: false,
        up: true,
        udp_checksum: net.l2.udp_checksum,
    });
    d.reasons.insert(ObjectKey::Link, network);
    // One name shared by every object on the device.
    let shared: Arc<str> = Arc::from(dev.as_str());
    if net.l2.layer == Layer::Two {
        let mut o = PerPeer::with_capacity(peers.len(), 0);
        // Layer 2: the device, its FDB and its master; the overlay's
        // addresses and routes belong to whatever sits on top (a bridge,
        // batman-adv), not to lvn.
        for p in peers {
            add_fdb(&mut o, &shared, p);
            let learned = matches!(p.why, Reason::LearnedEndpoint { .. });
            layer2::add_flood(d, &shared, &p.name, p.endpoint, learned);
        }
        o.add_to(d);
        layer2::add_port(d, topo, me, underlay);
        return;
    }
    for (a, overlay) in own_overlays(topo, me) {
        let own = IpNet::new(a, overlay.prefix_len()).unwrap_or(overlay);
        add_address(
            d,
            Address {
                dev: dev.clone(),
                address: own,
                noprefixroute: true,
            },
            me,
        );
    }
    // Per peer an FDB entry, a neighbour per address and, on a hub, a
    // route per address; a few routes of `me`'s own.
    let mut o = PerPeer::with_capacity(peers.len(), peers.len() * me.addresses.len() + 2);
    for p in peers {
        let mac = add_fdb(&mut o, &shared, p);
        // One MAC for every family of the peer: one device carries both.
        for &address in &p.node.addresses {
            o.neighbours.push((
                address,
                Neigh {
                    dev: shared.clone(),
                    address,
                    mac,
                },
            ));
            let why = Reason::PeerAddress {
                peer: p.name.clone(),
            };
            o.neigh_why.push((address, why));
        }
    }
    for (_, overlay) in own_overlays(topo, me) {
        vxlan_routes(&mut o, me, &shared, overlay, peers, hubs);
    }
    o.add_to(d);
    add_settings(d, me, underlay, &dev, true);
}

/// The routes of one overlay family on the VXLAN device.
fn vxlan_routes(
    o: &mut PerPeer,
    me: &Node,
    dev: &Arc<str>,
    overlay: IpNet,
    peers: &[Direct],
    hubs: &[&Node],
) {
    let metric = route_metric(Family::of(overlay.addr()));
    let route = |dst: IpNet, via: Option<IpAddr>| Route {
        dev: dev.clone(),
        dst,
        metric,
        via,
    };
    match me.role {
        Role::Hub => {
            o.route(route(overlay, None), Reason::HubOverlay);
            // A gateway route to each live spoke through itself: forwarding
            // between spokes then sends no ICMP redirect (the kernel sends
            // one when the route back is the on-link overlay route), and a
            // routing daemon beside lvn can announce the hub's spokes to
            // the other hubs (`lvn export bird`).
            for p in peers.iter().filter(|p| p.node.role == Role::Spoke) {
                let Some(a) = address_in(p.node, overlay) else {
                    continue;
                };
                let why = Reason::SpokeRoute {
                    peer: p.name.clone(),
                };
                o.route(route(IpNet::from(a), Some(a)), why);
            }
        }
        Role::Spoke => {
            // The overlay goes through the primary hub (placement, then
            // failover); with several hubs each is also reached directly,
            // the primary included, so a failover changes one route.
            if let Some(first) = hubs.first()
                && let Some(a) = address_in(first, overlay)
            {
                let why = Reason::ViaHub {
                    hub: first.name.clone(),
                };
                o.route(route(overlay, Some(a)), why);
            }
            if hubs.len() > 1 {
                for hub in hubs {
                    let Some(a) = address_in(hub, overlay) else {
                        continue;
                    };
                    let why = Reason::DirectHub {
                        hub: hub.name.clone(),
                    };
                    o.route(route(IpNet::from(a), None), why);
                }
            }
        }
    }
}

/// The underlay family and the tunnels' MTU.
#[derive(Clone, Copy)]
struct Outer {
    family: Family,
    mtu: u32,
}

/// FOU: a listener, and per peer a tunnel with FOU encapsulation (ipip on
/// an IPv4 underlay; ip6tnl, which carries both inner families, with GUE on
/// an IPv6 one), the node's addresses on it and routes through it.
#[allow(clippy::too_many_arguments)]
fn fou(
    topo: &Topology,
    me: &Node,
    outer: Outer,
    network: Reason,
    peers: &[Direct],
    hubs: &[&Node],
    underlay: &Underlay,
    d: &mut Desired,
) {
    let net = &topo.network;
    d.state.fou.insert(
        net.port,
        Fou {
            port: net.port,
            ipv6: outer.family == Family::Ipv6,
        },
    );
    d.reasons.insert(ObjectKey::Fou(net.port), network.clone());
    // ipip finds a tunnel by outer addresses only: one peer per remote
    // address. Whoever holds it now keeps it; then static before learned,
    // then name order.
    let mut by_remote: BTreeMap<IpAddr, Vec<&Direct>> = BTreeMap::new();
    for p in peers {
        by_remote.entry(p.endpoint.ip()).or_default().push(p);
    }
    let mut carried = Vec::new();
    for (remote, mut group) in by_remote {
        let holder = underlay.holders.get(&remote);
        group.sort_by_key(|p| {
            (
                Some(p.node.name.as_str()) != holder.map(String::as_str),
                !matches!(p.why, Reason::StaticEndpoint { .. }),
                p.node.name.clone(),
            )
        });
        let kept = group[0];
        for refused in &group[1..] {
            d.conflicts.push(Conflict {
                remote,
                kept: kept.node.name.clone(),
                refused: refused.node.name.clone(),
            });
        }
        carried.push(kept);
    }
    // IPv6 has no NAT: the tunnel sends from the node's own endpoint,
    // which is also how the kernel finds the tunnel of a packet.
    let local = me
        .endpoint
        .map(|e| e.ip())
        .filter(|_| outer.family == Family::Ipv6);
    let first_hub = hubs.first().map(|h| h.name.as_str());
    let mut o = PerPeer::with_capacity(0, carried.len() * me.addresses.len() + 1);
    for p in carried {
        let name = tunnel_name(&net.name, &p.node.name);
        let on: Arc<str> = Arc::from(name.as_str());
        d.state.tunnels.insert(
            name.clone(),
            Tunnel {
                name: name.clone(),
                peer: p.node.name.clone(),
                remote: p.endpoint.ip(),
                local,
                sport: net.port,
                dport: p.endpoint.port(),
                mtu: outer.mtu,
                up: true,
            },
        );
        d.reasons
            .insert(ObjectKey::Tunnel(name.clone()), p.why.clone());
        // A spoke sends the whole overlay to its primary hub; everyone else
        // is reached on its own tunnel. With several hubs every hub keeps
        // its own route too, so a failover changes one route.
        let primary = me.role == Role::Spoke && Some(p.node.name.as_str()) == first_hub;
        for (a, overlay) in own_overlays(topo, me) {
            let Some(peer_address) = address_in(p.node, overlay) else {
                continue;
            };
            let own = IpNet::from(a);
            add_address(
                d,
                Address {
                    dev: name.clone(),
                    address: own,
                    noprefixroute: true,
                },
                me,
            );
            let on_tunnel = |dst| Route {
                dev: on.clone(),
                dst,
                metric: route_metric(Family::of(a)),
                via: None,
            };
            if primary {
                let why = Reason::ViaHub {
                    hub: p.node.name.clone(),
                };
                o.route(on_tunnel(overlay), why);
            }
            if !primary || hubs.len() > 1 {
                let why = Reason::PeerAddress {
                    peer: p.name.clone(),
                };
                o.route(on_tunnel(IpNet::from(peer_address)), why);
            }
        }
        add_settings(d, me, underlay, &name, false);
    }
    o.add_to(d);
}

/// The overlay MTU and a phrase saying where it came from.
fn link_mtu(topo: &Topology, me: &Node, underlay: &Underlay, family: Family) -> (u32, String) {
    if let Some(mtu) = topo.network.mtu {
        return (mtu, format!("mtu {mtu} from the topology"));
    }
    let (overhead, what) = match (topo.network.datapath, family) {
        (Datapath::Fou, Family::Ipv4) => (FOU_OVERHEAD_V4, "fou"),
        (Datapath::Fou, Family::Ipv6) => (FOU_OVERHEAD_V6, "fou"),
        (Datapath::Vxlan, Family::Ipv4) => (VXLAN_OVERHEAD_V4, "vxlan"),
        (Datapath::Vxlan, Family::Ipv6) => (VXLAN_OVERHEAD_V6, "vxlan"),
    };
    // The path to the first other hub, else to any other declared endpoint.
    let target = topo
        .other_endpoint(&me.name)
        // A lone hub: the path its own endpoint is reached by.
        .or(me.endpoint);
    let found = target.and_then(|t| {
        underlay
            .device_to(t.ip(), &topo.network.device)
            .map(|(dev, mtu)| (dev.to_string(), mtu, t))
    });
    match found {
        Some((dev, under, t)) => {
            let mtu = under.saturating_sub(overhead).max(68);
            (
                mtu,
                format!(
                    "mtu {mtu} = {dev} {under} - {overhead} ({what} overhead) on the path to {}",
                    t.ip()
                ),
            )
        }
        None => {
            let mtu = FALLBACK_UNDERLAY_MTU - overhead;
            (
                mtu,
                format!(
                    "mtu {mtu} = {FALLBACK_UNDERLAY_MTU} (no underlay route known) - {overhead} ({what} overhead)"
                ),
            )
        }
    }
}

/// A spoke's hubs, its current primary first: placement's order, with the
/// hub failover chose moved to the front.
fn hub_order<'t>(topo: &'t Topology, me: &Node, live: &Liveness) -> Vec<&'t Node> {
    let mut order = topo.hub_order(me);
    if let Some(p) = &live.primary
        && let Some(i) = order.iter().position(|h| &h.name == p)
    {
        let primary = order.remove(i);
        order.insert(0, primary);
    }
    order
}

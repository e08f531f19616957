//! Reading what lvn owns: one dump each of links, addresses, neighbours
//! and FDB entries, nexthops and routes, filtered to lvn's devices (a
//! route on a nexthop object gets its gateway from the nexthop dump). Everything else
//! seen on the way is recorded only as far as the planner must stay away
//! from it (foreign devices and routes, kernel-made neighbours).

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
};

use ipnet::IpNet;
use rtnetlink::packet_route::{
    AddressFamily, RouteNetlinkMessage,
    address::{AddressAttribute, AddressFlags, AddressMessage},
    link::LinkMessage,
    neighbour::{NeighbourAttribute, NeighbourMessage, NeighbourState},
    route::{RouteHeader, RouteMessage},
};

use super::{
    Kernel,
    entries::{RouteEntry, mac_of, neigh_ip, route_entry},
    gateway::Gateways,
    layer2::{kind_name, parse_master, port_of},
    link::{link_alias, link_kind, link_name_mtu, parse_link, parse_tunnel},
    nexthop::{Nexthop, Nexthops},
    nl_err,
    sysctl::{observe_defaults, observe_settings},
};
use crate::{
    config,
    datapath::{DatapathError, Scope},
    naming::{Mac, ROUTE_PROTOCOL, owner_alias, tunnel_peer},
    reconcile::{Address, Fdb, Flood, Link, Neigh, Observed, Route, RouteKey},
};

impl Kernel {
    /// Everything lvn owns for `scope`, and what it must stay away from.
    pub(super) async fn observe_scope(&mut self, scope: &Scope) -> Result<Observed, DatapathError> {
        let mut obs = Observed::default();
        if scope.datapath == config::Datapath::Fou {
            self.check_fou(scope.underlay).await?;
        }
        let (vxlan, owned) = self.observe_links(scope, &mut obs).await?;
        self.index = owned.iter().map(|(i, n)| (n.clone(), *i)).collect();
        observe_defaults(&mut obs);
        if let Some((index, link)) = vxlan {
            let port = link.port;
            obs.state.link = Some(link);
            self.observe_entries(scope, index, port, &mut obs).await?;
        }
        if !owned.is_empty() {
            self.observe_addresses(&owned, &mut obs).await?;
        }
        observe_settings(&owned, &mut obs);
        let nexthops = self.dump_nexthops().await?;
        let all: Vec<_> = nexthops.values().copied().collect();
        self.gw = Gateways {
            nexthops: Nexthops::new(&all, &scope.network, |i| owned.contains_key(&i)),
            ..Gateways::default()
        };
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            self.observe_routes(family, &owned, &nexthops, &mut obs)
                .await?;
        }
        if scope.datapath == config::Datapath::Fou {
            self.observe_listeners(scope, &mut obs).await?;
        }
        Ok(obs)
    }

    /// Every device: lvn's VXLAN device (with its index), lvn's tunnels, and
    /// the rest by name. Returns the VXLAN device and every device lvn owns,
    /// by index.
    async fn observe_links(
        &self,
        scope: &Scope,
        obs: &mut Observed,
    ) -> Result<(Option<(u32, Link)>, BTreeMap<u32, String>), DatapathError> {
        let links = self
            .nl
            .dump(RouteNetlinkMessage::GetLink(LinkMessage::default()))
            .await
            .map_err(nl_err("listing links"))?;
        let alias = owner_alias(&scope.network);
        let mut vxlan = None;
        let mut master = None;
        let mut owned: BTreeMap<u32, String> = BTreeMap::new();
        for m in links {
            let RouteNetlinkMessage::NewLink(l) = m else {
                continue;
            };
            let (name, mtu) = link_name_mtu(&l);
            let index = l.header.index;
            obs.underlay.links.insert(index, (name.clone(), mtu));
            if name == scope.device {
                match parse_link(&l, &alias) {
                    Ok(link) => {
                        master = parse_master(&l);
                        vxlan = Some((index, link));
                        owned.insert(index, name);
                        continue;
                    }
                    Err(what) => obs.foreign_link = Some(what),
                }
            } else if let Some(peer) = link_alias(&l)
                .and_then(|a| tunnel_peer(a, &scope.network))
                .map(str::to_string)
                && let Some(t) = parse_tunnel(&l, &name, &peer)
            {
                obs.underlay.holders.insert(t.remote, t.peer.clone());
                obs.state.tunnels.insert(name.clone(), t);
                owned.insert(index, name);
                continue;
            }
            obs.underlay.kinds.insert(name.clone(), kind_name(&l));
            obs.other_links.insert(name, link_kind(&l));
        }
        obs.state.port = port_of(&scope.device, master, &obs.underlay.links);
        Ok((vxlan, owned))
    }
}

/// One neighbour or FDB entry as a dump reports it.
struct NeighEntry {
    mac: Option<Mac>,
    dst: Option<IpAddr>,
    /// Left out of dumps when it equals the device's port.
    port: Option<u16>,
    permanent: bool,
}

impl Kernel {
    /// The overlay addresses on lvn's devices, of both families: everything
    /// on them is lvn's, whatever families the overlay has now.
    async fn observe_addresses(
        &self,
        owned: &BTreeMap<u32, String>,
        obs: &mut Observed,
    ) -> Result<(), DatapathError> {
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            self.observe_addresses_of(family, owned, obs).await?;
        }
        Ok(())
    }

    async fn observe_addresses_of(
        &self,
        family: AddressFamily,
        owned: &BTreeMap<u32, String>,
        obs: &mut Observed,
    ) -> Result<(), DatapathError> {
        let mut req = AddressMessage::default();
        req.header.family = family;

        for m in self
            .nl
            .dump(RouteNetlinkMessage::GetAddress(req))
            .await
            .map_err(nl_err("listing addresses"))?
        {
            let RouteNetlinkMessage::NewAddress(a) = m else {
                continue;
            };
            let Some(dev) = owned.get(&a.header.index) else {
                continue;
            };
            let mut ip = None;
            let mut local = None;
            let mut noprefixroute = false;
            for attr in &a.attributes {
                match attr {
                    AddressAttribute::Address(x) => ip = Some(*x),
                    AddressAttribute::Local(x) => local = Some(*x),
                    AddressAttribute::Flags(f) => {
                        noprefixroute = f.contains(AddressFlags::Noprefixroute)
                    }
                    _ => {}
                }
            }
            let Some(ip) = local.or(ip) else { continue };
            if let IpAddr::V6(v6) = ip
                && v6.is_unicast_link_local()
            {
                continue; // the kernel's own link-local address
            }
            let Ok(address) = IpNet::new(ip, a.header.prefix_len) else {
                continue;
            };
            obs.state.addresses.insert(
                crate::reconcile::AddrKey {
                    dev: dev.clone(),
                    address,
                },
                Address {
                    dev: dev.clone(),
                    address,
                    noprefixroute,
                },
            );
        }

        Ok(())
    }

    async fn observe_entries(
        &self,
        scope: &Scope,
        index: u32,
        port: u16,
        obs: &mut Observed,
    ) -> Result<(), DatapathError> {
        let dev = &scope.device;
        let mut req = NeighbourMessage::default();
        req.header.family = AddressFamily::Bridge;
        req.header.ifindex = index;
        let fdb = self
            .neighbours_on(req, index, &format!("listing fdb entries of {dev}"))
            .await?;
        for e in fdb {
            if let (Some(Mac([0, 0, 0, 0, 0, 0])), Some(dst)) = (e.mac, e.dst) {
                let port = e.port.unwrap_or(port);
                let dev = dev.clone();
                let f = Flood { dev, dst, port };
                obs.state.flood.insert(f.key(), f);
            } else if let (Some(mac), Some(dst)) = (e.mac, e.dst) {
                let port = e.port.unwrap_or(port);
                let dev = dev.clone();
                obs.state.fdb.insert(
                    mac,
                    Fdb {
                        dev,
                        mac,
                        dst,
                        port,
                    },
                );
            }
        }

        let mut neighbours = Vec::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut req = NeighbourMessage::default();
            req.header.family = family;
            req.attributes.push(NeighbourAttribute::IfIndex(index));
            neighbours.extend(
                self.neighbours_on(req, index, &format!("listing neighbours of {dev}"))
                    .await?,
            );
        }
        for e in neighbours {
            let Some(address) = e.dst else { continue };
            match e.mac {
                Some(mac) if e.permanent => {
                    let dev = dev.clone();
                    obs.state
                        .neighbours
                        .insert(address, Neigh { dev, address, mac });
                }
                _ => {
                    obs.kernel_neighbours.insert(address);
                }
            }
        }
        Ok(())
    }

    /// Dump neighbour or FDB entries and keep those on device `index`.
    async fn neighbours_on(
        &self,
        req: NeighbourMessage,
        index: u32,
        op: &str,
    ) -> Result<Vec<NeighEntry>, DatapathError> {
        let replies = self
            .nl
            .dump(RouteNetlinkMessage::GetNeighbour(req))
            .await
            .map_err(nl_err(op))?;
        let mut out = Vec::new();
        for m in replies {
            let RouteNetlinkMessage::NewNeighbour(n) = m else {
                continue;
            };
            if n.header.ifindex != index {
                continue;
            }
            let mut e = NeighEntry {
                mac: None,
                dst: None,
                port: None,
                permanent: n.header.state == NeighbourState::Permanent,
            };
            for attr in &n.attributes {
                match attr {
                    NeighbourAttribute::LinkLayerAddress(b) => e.mac = mac_of(b),
                    NeighbourAttribute::Destination(a) => e.dst = neigh_ip(a),
                    NeighbourAttribute::Port(x) => e.port = Some(*x),
                    _ => {}
                }
            }
            out.push(e);
        }
        Ok(out)
    }

    /// Routes of the main table; a route on a nexthop object gets its
    /// device and gateway from `nexthops` (they are in the route only while
    /// net.ipv4.nexthop_compat_mode is 1).
    async fn observe_routes(
        &mut self,
        family: AddressFamily,
        owned: &BTreeMap<u32, String>,
        nexthops: &HashMap<u32, Nexthop>,
        obs: &mut Observed,
    ) -> Result<(), DatapathError> {
        let mut req = RouteMessage::default();
        req.header.address_family = family;
        req.header.table = RouteHeader::RT_TABLE_MAIN;
        let routes = self
            .nl
            .dump(RouteNetlinkMessage::GetRoute(req))
            .await
            .map_err(nl_err("listing routes"))?;
        for m in routes {
            let RouteNetlinkMessage::NewRoute(r) = m else {
                continue;
            };
            let Some(mut e) = route_entry(&r) else {
                continue;
            };
            e.resolve(e.nhid.and_then(|id| nexthops.get(&id)));
            let RouteEntry {
                dst,
                metric,
                oif,
                via,
                protocol: proto,
                nhid,
            } = e;
            if let Some(o) = oif {
                obs.underlay.routes.push((dst, o));
            }
            let key = RouteKey { dst, metric };
            let ours = oif.and_then(|o| owned.get(&o));
            if let (ROUTE_PROTOCOL, Some(dev)) = (proto, ours) {
                let route = Route {
                    dev: dev.clone(),
                    dst,
                    metric,
                    via,
                };
                if via.is_some() {
                    self.gw.routes.insert(key, (route.clone(), nhid));
                } else if let Some(id) = nhid {
                    self.gw.others.insert(id);
                }
                obs.state.routes.insert(key, route);
            } else {
                if let Some(id) = nhid {
                    self.gw.others.insert(id);
                }
                obs.foreign_routes
                    .insert(key, format!("{:?}", r.header.protocol).to_lowercase());
            }
        }
        Ok(())
    }
}

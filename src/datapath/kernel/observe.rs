//! Reading what lvn owns: one dump each of links, addresses, neighbours
//! and FDB entries, nexthops and routes, filtered to lvn's devices (a
//! route on a nexthop object gets its gateway from the nexthop dump). Everything else
//! seen on the way is recorded only as far as the planner must stay away
//! from it (foreign devices and routes, kernel-made neighbours).

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    sync::Arc,
};

use ipnet::IpNet;
use rtnetlink::packet_core::NlasIterator;
use rtnetlink::packet_route::{
    AddressFamily, RouteNetlinkMessage,
    address::{AddressAttribute, AddressFlags, AddressMessage},
    link::LinkMessage,
    neighbour::{NeighbourAttribute, NeighbourHeader, NeighbourMessage, NeighbourState},
    route::{RouteHeader, RouteMessage, RouteProtocol},
};

use super::{
    Kernel,
    entries::{RouteEntry, ip_of, mac_of, route_entry_raw},
    gateway::Gateways,
    layer2::{kind_name, parse_master, port_of},
    link::{link_alias, link_kind, link_name_mtu, parse_link, parse_tunnel},
    nexthop::{Nexthop, Nexthops},
    nl_err,
    sysctl::{observe_defaults, observe_settings},
    witness::{Prior, replay},
};
use crate::{
    config,
    datapath::{
        DatapathError, Scope,
        dump::{dump_raw, dump_raw_blocking},
    },
    naming::{Mac, ROUTE_PROTOCOL, owner_alias, tunnel_peer},
    reconcile::{Address, Fdb, Flood, Link, Neigh, Observed, Route, RouteKey},
};

impl Kernel {
    /// Everything lvn owns for `scope`, and what it must stay away from.
    /// With `prior`, the neighbour and FDB entries are the observation
    /// before an apply with the changes heard since replayed on it
    /// (`witness.rs`), not dumped.
    pub(super) async fn observe_scope(
        &mut self,
        scope: &Scope,
        prior: Option<Prior>,
    ) -> Result<Observed, DatapathError> {
        let mut obs = Observed::default();
        if scope.datapath == config::Datapath::Fou {
            self.check_fou(scope.underlay).await?;
        }
        let (vxlan, owned) = self.observe_links(scope, &mut obs).await?;
        // The route dumps run on a thread of their own meanwhile.
        let routes = route_dump();
        self.index = owned.iter().map(|(i, n)| (n.clone(), *i)).collect();
        observe_defaults(&mut obs);
        // The FDB dump, the largest, runs on a thread of its own meanwhile.
        let mut fdb = None;
        if let Some((index, link)) = vxlan {
            let port = link.port;
            obs.state.link = Some(link);
            if let Some(prior) = prior {
                replay(&scope.device, port, index, prior, &mut obs);
            } else {
                fdb = Some((fdb_dump(&scope.device, index), port));
                self.observe_entries(scope, index, &mut obs).await?;
            }
        }
        if !owned.is_empty() {
            self.observe_addresses(&owned, &mut obs).await?;
        }
        observe_settings(&owned, &mut obs);
        let nexthops = self.dump_nexthops().await?;
        let all: Vec<_> = nexthops.values().copied().collect();
        self.gw = Gateways {
            nexthops: Nexthops::new(&all, &scope.network, |i| owned.contains_key(&i)),
            rescan: true,
            ..Gateways::default()
        };
        let routes = routes.finish().await?;
        self.observe_routes(routes, &owned, &nexthops, &mut obs);
        if scope.datapath == config::Datapath::Fou {
            self.observe_listeners(scope, &mut obs).await?;
        }
        if let Some((dump, port)) = fdb {
            let entries = dump.finish().await?;
            fdb_entries(&scope.device, port, entries, &mut obs);
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

/// A dump message's neighbour or FDB entry, if it is one on device
/// `index`.
fn on_device(index: u32) -> impl Fn(u16, &[u8]) -> Option<NeighEntry> + Send + 'static {
    move |kind, payload| {
        (kind == RTM_NEWNEIGH)
            .then(|| neigh_entry(payload, index))
            .flatten()
    }
}

/// Dump `dev`'s FDB (index `index`) on a blocking thread.
fn fdb_dump(dev: &str, index: u32) -> DumpThread<NeighEntry> {
    let mut req = NeighbourMessage::default();
    req.header.family = AddressFamily::Bridge;
    req.header.ifindex = index;
    DumpThread::start(
        format!("listing fdb entries of {dev}"),
        vec![RouteNetlinkMessage::GetNeighbour(req)],
        on_device(index),
    )
}

/// Dump the main table's routes of both families on a blocking thread,
/// read as bytes (`route_entry_raw`).
fn route_dump() -> DumpThread<RouteEntry> {
    let requests = [AddressFamily::Inet, AddressFamily::Inet6].map(|family| {
        let mut req = RouteMessage::default();
        req.header.address_family = family;
        req.header.table = RouteHeader::RT_TABLE_MAIN;
        RouteNetlinkMessage::GetRoute(req)
    });
    DumpThread::start("listing routes".into(), requests.into(), |kind, payload| {
        (kind == RTM_NEWROUTE)
            .then(|| route_entry_raw(payload))
            .flatten()
    })
}

/// Dumps read on a blocking thread of their own (`dump_raw_blocking`),
/// each message kept as `read` makes it: the kernel does a dump's work in
/// the reader's `recv`, so two threads overlap it. A hub's FDB and route
/// dumps hold an entry per spoke.
struct DumpThread<T> {
    op: String,
    thread: tokio::task::JoinHandle<std::io::Result<Vec<T>>>,
}

impl<T: Send + 'static> DumpThread<T> {
    fn start(
        op: String,
        requests: Vec<RouteNetlinkMessage>,
        mut read: impl FnMut(u16, &[u8]) -> Option<T> + Send + 'static,
    ) -> Self {
        let thread = tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            for req in requests {
                dump_raw_blocking(req, |kind, payload| out.extend(read(kind, payload)))?;
            }
            Ok(out)
        });
        DumpThread { op, thread }
    }

    async fn finish(self) -> Result<Vec<T>, DatapathError> {
        let r = self.thread.await.map_err(std::io::Error::other);
        r.and_then(|r| r).map_err(nl_err(self.op))
    }
}

/// The FDB of lvn's device, from its dump: unicast entries and flooding
/// entries (all-zero MAC).
fn fdb_entries(dev: &str, port: u16, fdb: Vec<NeighEntry>, obs: &mut Observed) {
    // Dumps come in the kernel's hash order: collected and then built
    // into the (empty) maps at once, sorted, rather than inserted one by
    // one at random places.
    let mut unicast = Vec::with_capacity(fdb.len());
    // One name for every entry (100k at 100k spokes), not a copy each.
    let dev: Arc<str> = Arc::from(dev);
    for e in fdb {
        if let (Some(Mac([0, 0, 0, 0, 0, 0])), Some(dst)) = (e.mac, e.dst) {
            let port = e.port.unwrap_or(port);
            let f = Flood {
                dev: dev.clone(),
                dst,
                port,
            };
            obs.state.flood.insert(f.key(), f);
        } else if let (Some(mac), Some(dst)) = (e.mac, e.dst) {
            let port = e.port.unwrap_or(port);
            let f = Fdb {
                dev: dev.clone(),
                mac,
                dst,
                port,
            };
            unicast.push((mac, f));
        }
    }
    obs.state.fdb = unicast.into_iter().collect();
}

/// One neighbour or FDB entry as a dump (or a notification) reports it.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct NeighEntry {
    pub mac: Option<Mac>,
    pub dst: Option<IpAddr>,
    /// Left out of dumps when it equals the device's port.
    pub port: Option<u16>,
    pub permanent: bool,
}

/// RTM_NEWNEIGH and RTM_DELNEIGH: a neighbour or FDB entry, made or gone.
pub(super) const RTM_NEWNEIGH: u16 = 28;
pub(super) const RTM_DELNEIGH: u16 = 29;
/// RTM_NEWROUTE: a route.
const RTM_NEWROUTE: u16 = 24;
/// Neighbour attributes lvn reads (linux/neighbour.h).
const NDA_DST: u16 = 1;
const NDA_LLADDR: u16 = 2;
const NDA_PORT: u16 = 6;

/// The entry in an RTM_NEWNEIGH payload (ndmsg, then attributes), if it
/// is on device `index`.
fn neigh_entry(payload: &[u8], index: u32) -> Option<NeighEntry> {
    let (header, e) = neigh_header(payload)?;
    (header.ifindex == index).then_some(e)
}

/// The header and entry of an RTM_NEWNEIGH or RTM_DELNEIGH payload.
pub(super) fn neigh_header(payload: &[u8]) -> Option<(NeighbourHeader, NeighEntry)> {
    let header = NeighbourHeader::parse(payload).ok()?;
    let mut e = NeighEntry {
        mac: None,
        dst: None,
        port: None,
        permanent: header.state == NeighbourState::Permanent,
    };
    for nla in NlasIterator::new(payload.get(NEIGHBOUR_HEADER..)?) {
        let Ok(nla) = nla else { break };
        let v = nla.value();
        match nla.kind() {
            NDA_LLADDR => e.mac = mac_of(v),
            NDA_DST => e.dst = ip_of(v),
            NDA_PORT if v.len() == 2 => e.port = Some(u16::from_be_bytes([v[0], v[1]])),
            _ => {}
        }
    }
    Some((header, e))
}

/// Bytes of an ndmsg.
const NEIGHBOUR_HEADER: usize = 12;

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
        obs: &mut Observed,
    ) -> Result<(), DatapathError> {
        let dev = &scope.device;
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
        let mut permanent = Vec::with_capacity(neighbours.len());
        let dev: Arc<str> = Arc::from(dev.as_str());
        for e in neighbours {
            let Some(address) = e.dst else { continue };
            match e.mac {
                Some(mac) if e.permanent => {
                    let dev = dev.clone();
                    permanent.push((address, Neigh { dev, address, mac }));
                }
                _ => {
                    obs.kernel_neighbours.insert(address);
                }
            }
        }
        obs.state.neighbours = permanent.into_iter().collect();
        Ok(())
    }

    /// Dump neighbour or FDB entries and keep those on device `index`.
    /// Read as bytes (`dump_raw`): a hub's dumps hold an entry per spoke,
    /// and only three attributes of each are needed.
    async fn neighbours_on(
        &self,
        req: NeighbourMessage,
        index: u32,
        op: &str,
    ) -> Result<Vec<NeighEntry>, DatapathError> {
        let mut out = Vec::new();
        let read = on_device(index);
        dump_raw(RouteNetlinkMessage::GetNeighbour(req), |kind, payload| {
            out.extend(read(kind, payload))
        })
        .await
        .map_err(nl_err(op))?;
        Ok(out)
    }

    /// Routes of the main table; a route on a nexthop object gets its
    /// device and gateway from `nexthops` (they are in the route only while
    /// net.ipv4.nexthop_compat_mode is 1).
    fn observe_routes(
        &mut self,
        routes: Vec<RouteEntry>,
        owned: &BTreeMap<u32, String>,
        nexthops: &HashMap<u32, Nexthop>,
        obs: &mut Observed,
    ) {
        // One name per device for every route on it, not a copy each.
        let owned: BTreeMap<u32, Arc<str>> = owned
            .iter()
            .map(|(i, name)| (*i, Arc::from(name.as_str())))
            .collect();
        for mut e in routes {
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
                let owner = format!("{:?}", RouteProtocol::from(proto));
                obs.foreign_routes.insert(key, owner.to_lowercase());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use rtnetlink::packet_core::Emitable;
    use rtnetlink::packet_route::neighbour::NeighbourAddress;

    use super::*;

    /// What the crate's own encoder writes, `neigh_entry` reads back: an
    /// FDB entry (raw destination bytes, port) and a neighbour on another
    /// device (skipped).
    #[test]
    fn neigh_entry_reads_what_the_crate_writes() {
        let mut m = NeighbourMessage::default();
        m.header.family = AddressFamily::Bridge;
        m.header.ifindex = 7;
        m.header.state = NeighbourState::Permanent;
        m.attributes.extend([
            NeighbourAttribute::LinkLayerAddress(vec![2, 0x4c, 100, 64, 1, 2]),
            NeighbourAttribute::Destination(NeighbourAddress::Other(vec![203, 0, 113, 7])),
            NeighbourAttribute::Port(40059),
        ]);
        let mut b = vec![0; m.buffer_len()];
        m.emit(&mut b);
        assert_eq!(
            neigh_entry(&b, 7),
            Some(NeighEntry {
                mac: Some(Mac([2, 0x4c, 100, 64, 1, 2])),
                dst: Some(IpAddr::from([203, 0, 113, 7])),
                port: Some(40059),
                permanent: true,
            })
        );
        assert_eq!(neigh_entry(&b, 8), None, "another device");

        let mut n = NeighbourMessage::default();
        n.header.family = AddressFamily::Inet6;
        n.header.ifindex = 7;
        n.attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet6(
                "2001:db8::1".parse().expect("address"),
            )));
        let mut b = vec![0; n.buffer_len()];
        n.emit(&mut b);
        let e = neigh_entry(&b, 7).expect("on the device");
        assert_eq!(e.dst, Some("2001:db8::1".parse().expect("address")));
        assert_eq!((e.mac, e.port, e.permanent), (None, None, false));
    }
}

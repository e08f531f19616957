//! The kernel VXLAN datapath over rtnetlink. Observes only the device lvn
//! created (recognised by its alias) and the entries on it; applies a plan
//! in phases, each phase's requests pipelined on one socket.

use std::{
    collections::BTreeMap,
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use futures::{StreamExt, stream};
use ipnet::IpNet;
use rtnetlink::{
    LinkIpIp, LinkUnspec, LinkVxlan,
    packet_route::{
        AddressFamily, RouteNetlinkMessage,
        address::{AddressAttribute, AddressFlags, AddressMessage},
        link::{
            InfoData, InfoIpTunnel, InfoKind, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo,
            LinkMessage, TunnelEncapType,
        },
        neighbour::{
            NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
        },
        route::{
            RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteProtocol,
            RouteScope, RouteType,
        },
    },
};

use super::{
    ApplyReport, Datapath, DatapathError, Scope,
    fou_genl::{FouClient, FouError, FouListener},
    netlink::{IN_FLIGHT, Mode, Netlink},
    owner_alias,
};
use crate::{
    config,
    reconcile::{
        Action, Address, Family, Fdb, Fou, Link, Mac, Neigh, Object, Observed, Plan,
        ROUTE_PROTOCOL, Route, RouteKey, Step, Sysctl, Tunnel, sysctl_key,
    },
};

/// The real kernel, through rtnetlink and /proc/sys.
pub struct Kernel {
    nl: Netlink,
    /// Index of lvn's devices, by name, as last observed or created.
    index: BTreeMap<String, u32>,
    /// Generic netlink "fou", connected when datapath "fou" needs it.
    fou: Option<FouClient>,
}

impl Kernel {
    /// Index of lvn's device as last observed or created.
    pub fn ifindex(&self, device: &str) -> Option<u32> {
        self.index.get(device).copied()
    }

    /// Connect in the current network namespace (inside a tokio runtime).
    pub fn connect() -> io::Result<Kernel> {
        Ok(Kernel {
            nl: Netlink::connect()?,
            index: BTreeMap::new(),
            fou: None,
        })
    }
}

fn nl_err(op: impl Into<String>) -> impl FnOnce(io::Error) -> DatapathError {
    move |source| DatapathError::Kernel {
        op: op.into(),
        source,
    }
}

fn family_of(net: &IpNet) -> AddressFamily {
    match net {
        IpNet::V4(_) => AddressFamily::Inet,
        IpNet::V6(_) => AddressFamily::Inet6,
    }
}

/// Device settings lvn reads and writes, per overlay family.
fn settings(overlay: &IpNet) -> (&'static str, &'static [&'static str]) {
    match overlay {
        IpNet::V4(_) => ("ipv4", &["forwarding", "send_redirects"]),
        IpNet::V6(_) => ("ipv6", &["forwarding"]),
    }
}

impl Datapath for Kernel {
    fn ifindex(&self, device: &str) -> Option<u32> {
        Kernel::ifindex(self, device)
    }

    async fn observe(&mut self, scope: &Scope) -> Result<Observed, DatapathError> {
        let mut obs = Observed::default();
        if scope.datapath == config::Datapath::Fou {
            check_fou_support()?;
        }
        let links = self
            .nl
            .dump(RouteNetlinkMessage::GetLink(LinkMessage::default()))
            .await
            .map_err(nl_err("listing links"))?;
        let alias = owner_alias(&scope.network);
        let tunnel_alias = format!("{alias}:");
        let mut vxlan = None;
        // Every device lvn owns, by index.
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
                        vxlan = Some((index, link));
                        owned.insert(index, name);
                        continue;
                    }
                    Err(what) => obs.foreign_link = Some(what),
                }
            } else if let Some(peer) = link_alias(&l)
                .and_then(|a| a.strip_prefix(&tunnel_alias))
                .map(str::to_string)
                && let Some(t) = parse_tunnel(&l, &name, &peer)
            {
                obs.underlay.holders.insert(t.remote, t.peer.clone());
                obs.state.tunnels.insert(name.clone(), t);
                owned.insert(index, name);
                continue;
            }
            obs.other_links.insert(name, link_kind(&l));
        }
        self.index = owned.iter().map(|(i, n)| (n.clone(), *i)).collect();
        let (fam, names) = settings(&scope.overlay);
        for setting in names {
            if let Some(v) = read_sysctl(&format!("/proc/sys/net/{fam}/conf/default/{setting}")) {
                obs.sysctl_defaults.insert(setting.to_string(), v);
            }
        }
        if let Some((index, link)) = vxlan {
            let port = link.port;
            obs.state.link = Some(link);
            self.observe_entries(scope, index, port, &mut obs).await?;
        }
        if !owned.is_empty() {
            self.observe_addresses(scope, &owned, &mut obs).await?;
        }
        for dev in owned.values() {
            for setting in names {
                let key = sysctl_key(fam, dev, setting);
                if let Some(value) = read_sysctl(&Sysctl::proc_path(&key)) {
                    obs.state.sysctls.insert(key.clone(), Sysctl { key, value });
                }
            }
        }
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            self.observe_routes(scope, family, &owned, &mut obs).await?;
        }
        if scope.datapath == config::Datapath::Fou {
            let port = scope.port;
            for l in self.fou().await?.list().await.map_err(fou_err)? {
                // The listener on the network's port carrying ipip is lvn's.
                if l.port == port && l.ipproto == IPPROTO_IPIP {
                    obs.state.fou.insert(
                        l.port,
                        Fou {
                            port: l.port,
                            ipv6: l.ipv6,
                        },
                    );
                }
            }
        }
        Ok(obs)
    }

    async fn apply(&mut self, scope: &Scope, plan: &Plan) -> Result<ApplyReport, DatapathError> {
        let mut report = ApplyReport::default();
        let total = plan.steps.len();
        let mut rest = plan.steps.as_slice();
        while let Some(first) = rest.first() {
            let phase = phase_of(first);
            let n = rest.iter().take_while(|s| phase_of(s) == phase).count();
            let (batch, tail) = rest.split_at(n);
            let result = if phase == Phase::Device {
                let mut r = Ok(());
                for s in batch {
                    r = self.apply_device(scope, s, &mut report).await;
                    if r.is_err() {
                        break;
                    }
                    report.done.push(s.clone());
                }
                r
            } else {
                self.apply_batch(batch, &mut report).await
            };
            if let Err(e) = result {
                return Err(DatapathError::Partial {
                    done: report.done.len(),
                    total,
                    source: Box::new(e),
                });
            }
            rest = tail;
        }
        Ok(report)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// The VXLAN device, tunnels and fou listeners: one at a time.
    Device,
    Entries(bool, u8),
}

/// Steps of one phase have no order among themselves and run pipelined.
fn phase_of(s: &Step) -> Phase {
    let order = match s.object {
        Object::Link(_) | Object::Tunnel(_) | Object::Fou(_) => return Phase::Device,
        Object::Address(_) => 1,
        Object::Sysctl(_) => 2,
        Object::Fdb(_) => 3,
        Object::Neigh(_) => 4,
        Object::Route(_) => 5,
    };
    Phase::Entries(s.action == Action::Remove, order)
}

/// IP protocol number of IPv4-in-IPv4, what lvn's fou listener carries.
const IPPROTO_IPIP: u8 = 4;

/// Datapath "fou" needs the kernel's fou and ipip; say plainly what is
/// missing and how to load it, instead of failing deep inside netlink.
fn check_fou_support() -> Result<(), DatapathError> {
    if !std::path::Path::new("/sys/module/ipip").exists() {
        return Err(DatapathError::Unsupported(
            "the kernel has no ipip support (/sys/module/ipip is missing): load it with `modprobe ipip`, or use datapath = \"vxlan\"".into(),
        ));
    }
    Ok(())
}

/// Whether this kernel can run datapath "fou": ipip and the fou family.
pub async fn fou_support() -> Result<(), DatapathError> {
    check_fou_support()?;
    FouClient::connect().await.map_err(fou_err)?;
    Ok(())
}

fn fou_err(e: FouError) -> DatapathError {
    match e {
        FouError::Missing => {
            DatapathError::Unsupported(format!("{e}, or use datapath = \"vxlan\""))
        }
        other => DatapathError::Netlink(other.to_string()),
    }
}

fn link_alias(l: &LinkMessage) -> Option<&str> {
    l.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfAlias(a) => Some(a.as_str()),
        _ => None,
    })
}

fn link_kind(l: &LinkMessage) -> String {
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

/// An ipip device lvn made (its alias names the peer).
fn parse_tunnel(l: &LinkMessage, name: &str, peer: &str) -> Option<Tunnel> {
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
    let mut ipip = false;
    for a in &l.attributes {
        let LinkAttribute::LinkInfo(infos) = a else {
            continue;
        };
        for i in infos {
            match i {
                LinkInfo::Kind(InfoKind::IpIp) => ipip = true,
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
    ipip.then_some(t)
}

/// A change addresses the device by index. Kernels before 6.2 refuse
/// IFLA_IFNAME on an up device with EBUSY, even when the name is the same.
fn without_name(m: &mut LinkMessage) {
    m.attributes
        .retain(|a| !matches!(a, LinkAttribute::IfName(_)));
}

fn tunnel_message(t: &Tunnel) -> LinkMessage {
    let remote = match t.remote {
        IpAddr::V4(v4) => v4,
        IpAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
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

fn read_sysctl(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

fn link_name_mtu(l: &LinkMessage) -> (String, u32) {
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
fn parse_link(l: &LinkMessage, alias: &str) -> Result<Link, String> {
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
    };
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
            _ => {}
        }
    }
    Ok(link)
}

fn neigh_ip(a: &NeighbourAddress) -> Option<IpAddr> {
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

/// One neighbour or FDB entry as a dump reports it.
struct NeighEntry {
    mac: Option<Mac>,
    dst: Option<IpAddr>,
    /// Left out of dumps when it equals the device's port.
    port: Option<u16>,
    permanent: bool,
}

fn mac_of(b: &[u8]) -> Option<Mac> {
    (b.len() == 6).then(|| {
        let mut m = [0; 6];
        m.copy_from_slice(b);
        Mac(m)
    })
}

impl Kernel {
    /// The overlay addresses on lvn's devices.
    async fn observe_addresses(
        &self,
        scope: &Scope,
        owned: &BTreeMap<u32, String>,
        obs: &mut Observed,
    ) -> Result<(), DatapathError> {
        let mut req = AddressMessage::default();
        req.header.family = family_of(&scope.overlay);

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
            if let (Some(mac), Some(dst)) = (e.mac, e.dst) {
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

        let mut req = NeighbourMessage::default();
        req.header.family = family_of(&scope.overlay);
        req.attributes.push(NeighbourAttribute::IfIndex(index));
        let neighbours = self
            .neighbours_on(req, index, &format!("listing neighbours of {dev}"))
            .await?;
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

    async fn observe_routes(
        &self,
        scope: &Scope,
        family: AddressFamily,
        owned: &BTreeMap<u32, String>,
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
        let overlay_family = family == family_of(&scope.overlay);
        for m in routes {
            let RouteNetlinkMessage::NewRoute(r) = m else {
                continue;
            };
            let mut table = u32::from(r.header.table);
            let (mut dst, mut via, mut oif, mut metric) = (None, None, None, 0);
            for a in &r.attributes {
                match a {
                    RouteAttribute::Table(t) => table = *t,
                    RouteAttribute::Destination(d) => dst = route_ip(d),
                    RouteAttribute::Gateway(g) => via = route_ip(g),
                    RouteAttribute::Oif(o) => oif = Some(*o),
                    RouteAttribute::Priority(p) => metric = *p,
                    _ => {}
                }
            }
            if table != u32::from(RouteHeader::RT_TABLE_MAIN) || r.header.kind != RouteType::Unicast
            {
                continue;
            }
            let any = match family {
                AddressFamily::Inet6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
                _ => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            };
            let Ok(dst) = IpNet::new(dst.unwrap_or(any), r.header.destination_prefix_length) else {
                continue;
            };
            if let Some(o) = oif {
                obs.underlay.routes.push((dst, o));
            }
            if !overlay_family {
                continue;
            }
            let key = RouteKey { dst, metric };
            let proto = u8::from(r.header.protocol);
            let ours = oif.and_then(|o| owned.get(&o));
            if let (ROUTE_PROTOCOL, Some(dev)) = (proto, ours) {
                obs.state.routes.insert(
                    key,
                    Route {
                        dev: dev.clone(),
                        dst,
                        metric,
                        via,
                    },
                );
            } else {
                obs.foreign_routes
                    .insert(key, format!("{:?}", r.header.protocol).to_lowercase());
            }
        }
        Ok(())
    }
}

fn route_ip(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

/// "adding fdb 02:.. dst .. port .. dev lvn-x"
fn describe(s: &Step) -> String {
    let verb = match s.action {
        Action::Add => "adding",
        Action::Change => "changing",
        Action::Remove => "removing",
    };
    format!("{verb} {} {}", s.object.kind(), s.object)
}

impl Kernel {
    fn index_of(&self, dev: &str) -> Result<u32, DatapathError> {
        self.index
            .get(dev)
            .copied()
            .ok_or_else(|| DatapathError::Kernel {
                op: format!("looking up device {dev}"),
                source: io::Error::from_raw_os_error(super::libc_errno::ENOENT),
            })
    }

    async fn lookup_index(&mut self, name: &str) -> Result<u32, DatapathError> {
        let links = self
            .nl
            .dump(RouteNetlinkMessage::GetLink(LinkMessage::default()))
            .await
            .map_err(nl_err("listing links"))?;
        for m in links {
            if let RouteNetlinkMessage::NewLink(l) = m
                && link_name_mtu(&l).0 == name
            {
                self.index.insert(name.to_string(), l.header.index);
                return Ok(l.header.index);
            }
        }
        self.index_of(name)
    }

    async fn apply_device(
        &mut self,
        scope: &Scope,
        s: &Step,
        report: &mut ApplyReport,
    ) -> Result<(), DatapathError> {
        match &s.object {
            Object::Link(_) => self.apply_link(scope, s, report).await,
            Object::Tunnel(t) => self.apply_tunnel(scope, s, t, report).await,
            Object::Fou(f) => {
                let l = FouListener {
                    port: f.port,
                    ipv6: f.ipv6,
                    ipproto: IPPROTO_IPIP,
                };
                report.writes += 1;
                let fou = self.fou().await?;
                let r = if s.action == Action::Remove {
                    fou.del(&l).await
                } else {
                    fou.add(&l).await
                };
                r.map_err(|e| DatapathError::Netlink(format!("{}: {e}", describe(s))))
            }
            _ => Ok(()),
        }
    }

    async fn apply_tunnel(
        &mut self,
        scope: &Scope,
        s: &Step,
        t: &Tunnel,
        report: &mut ApplyReport,
    ) -> Result<(), DatapathError> {
        let op = describe(s);
        report.writes += 1;
        match s.action {
            Action::Remove => {
                let mut m = LinkMessage::default();
                m.header.index = self.index_of(&t.name)?;
                self.nl
                    .ack(RouteNetlinkMessage::DelLink(m), Mode::Plain)
                    .await
                    .map_err(nl_err(op))?;
                self.index.remove(&t.name);
            }
            Action::Add => {
                self.nl
                    .ack(
                        RouteNetlinkMessage::NewLink(tunnel_message(t)),
                        Mode::Create,
                    )
                    .await
                    .map_err(nl_err(op))?;
                let alias = LinkUnspec::new_with_name(&t.name)
                    .alias(format!("{}:{}", owner_alias(&scope.network), t.peer))
                    .build();
                report.writes += 1;
                self.nl
                    .ack(RouteNetlinkMessage::SetLink(alias), Mode::Plain)
                    .await
                    .map_err(nl_err(format!("marking tunnel {} as lvn's", t.name)))?;
                self.lookup_index(&t.name).await?;
            }
            Action::Change => {
                let mut m = tunnel_message(t);
                m.header.index = self.index_of(&t.name)?;
                without_name(&mut m);
                self.nl
                    .ack(RouteNetlinkMessage::NewLink(m), Mode::Plain)
                    .await
                    .map_err(nl_err(op))?;
            }
        }
        Ok(())
    }

    /// The fou client, connected on first use.
    async fn fou(&mut self) -> Result<&FouClient, DatapathError> {
        if self.fou.is_none() {
            self.fou = Some(FouClient::connect().await.map_err(fou_err)?);
        }
        self.fou
            .as_ref()
            .ok_or_else(|| DatapathError::Netlink("fou client".into()))
    }

    async fn apply_link(
        &mut self,
        scope: &Scope,
        s: &Step,
        report: &mut ApplyReport,
    ) -> Result<(), DatapathError> {
        let Object::Link(link) = &s.object else {
            return Ok(());
        };
        let op = describe(s);
        match (s.action, s.replace.is_empty()) {
            (Action::Remove, _) => {
                let index = self.index_of(&link.name)?;
                let mut m = LinkMessage::default();
                m.header.index = index;
                report.writes += 1;
                self.nl
                    .ack(RouteNetlinkMessage::DelLink(m), Mode::Plain)
                    .await
                    .map_err(nl_err(op))?;
                self.index.remove(&link.name);
            }
            (Action::Add, _) | (Action::Change, false) => {
                if s.action == Action::Change {
                    let index = self.index_of(&link.name)?;
                    let mut m = LinkMessage::default();
                    m.header.index = index;
                    report.writes += 1;
                    self.nl
                        .ack(RouteNetlinkMessage::DelLink(m), Mode::Plain)
                        .await
                        .map_err(nl_err(format!(
                            "removing link {} to re-create it",
                            link.name
                        )))?;
                }
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
                if link.up {
                    b = b.up();
                }
                report.writes += 1;
                self.nl
                    .ack(RouteNetlinkMessage::NewLink(b.build()), Mode::Create)
                    .await
                    .map_err(nl_err(op.clone()))?;
                // The kernel ignores an alias given at creation.
                let alias = LinkUnspec::new_with_name(&link.name)
                    .alias(owner_alias(&scope.network))
                    .build();
                report.writes += 1;
                self.nl
                    .ack(RouteNetlinkMessage::SetLink(alias), Mode::Plain)
                    .await
                    .map_err(nl_err(format!("marking link {} as lvn's", link.name)))?;
                self.lookup_index(&link.name).await?;
            }
            (Action::Change, true) => {
                let index = self.index_of(&link.name)?;
                let Some(Object::Link(old)) = &s.old else {
                    return Ok(());
                };
                if old.learning != link.learning || old.local != link.local {
                    let mut b = LinkVxlan::new(&link.name, link.vni).learning(link.learning);
                    b = match link.local {
                        Some(IpAddr::V6(a)) => b.local6(a),
                        Some(IpAddr::V4(a)) => b.local(a),
                        None => b,
                    };
                    let mut m = b.build();
                    m.header.index = index;
                    without_name(&mut m);
                    report.writes += 1;
                    self.nl
                        .ack(RouteNetlinkMessage::NewLink(m), Mode::Plain)
                        .await
                        .map_err(nl_err(op.clone()))?;
                }
                let mut b = LinkUnspec::new_with_index(index)
                    .mtu(link.mtu)
                    .address(link.mac.0.to_vec());
                b = if link.up { b.up() } else { b.down() };
                report.writes += 1;
                self.nl
                    .ack(RouteNetlinkMessage::SetLink(b.build()), Mode::Plain)
                    .await
                    .map_err(nl_err(op))?;
            }
        }
        Ok(())
    }

    async fn apply_batch(
        &mut self,
        batch: &[Step],
        report: &mut ApplyReport,
    ) -> Result<(), DatapathError> {
        let mut indexed = Vec::with_capacity(batch.len());
        for s in batch {
            let index = match object_dev(&s.object) {
                Some(dev) => self.index_of(dev)?,
                None => 0,
            };
            indexed.push((s, index));
        }
        let nl = self.nl.clone();
        report.writes += batch.len();
        let results: Vec<Result<(), DatapathError>> = stream::iter(indexed)
            .map(|(s, index)| {
                let nl = nl.clone();
                async move {
                    write_entry(&nl, index, s)
                        .await
                        .map_err(nl_err(describe(s)))
                }
            })
            .buffered(IN_FLIGHT)
            .collect()
            .await;
        for (s, r) in batch.iter().zip(results) {
            r?;
            report.done.push(s.clone());
        }
        Ok(())
    }
}

/// The device an entry lives on.
fn object_dev(o: &Object) -> Option<&str> {
    match o {
        Object::Address(a) => Some(&a.dev),
        Object::Fdb(f) => Some(&f.dev),
        Object::Neigh(n) => Some(&n.dev),
        Object::Route(r) => Some(&r.dev),
        _ => None,
    }
}

async fn write_entry(nl: &Netlink, index: u32, s: &Step) -> io::Result<()> {
    let remove = s.action == Action::Remove;
    match &s.object {
        Object::Link(_) | Object::Tunnel(_) | Object::Fou(_) => Ok(()),
        Object::Sysctl(x) => {
            let path = Sysctl::proc_path(&x.key);
            tokio::fs::write(&path, format!("{}\n", x.value)).await
        }
        Object::Address(a) => {
            let mut m = AddressMessage::default();
            m.header.family = family_of(&a.address);
            m.header.prefix_len = a.address.prefix_len();
            m.header.index = index;
            let ip = a.address.addr();
            if ip.is_ipv4() {
                m.attributes.push(AddressAttribute::Local(ip));
            }
            m.attributes.push(AddressAttribute::Address(ip));
            if a.noprefixroute {
                m.attributes
                    .push(AddressAttribute::Flags(AddressFlags::Noprefixroute));
            }
            if remove {
                nl.ack(RouteNetlinkMessage::DelAddress(m), Mode::Plain)
                    .await
            } else {
                nl.ack(RouteNetlinkMessage::NewAddress(m), Mode::Replace)
                    .await
            }
        }
        Object::Fdb(f) => {
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
            if remove {
                nl.ack(RouteNetlinkMessage::DelNeighbour(m), Mode::Plain)
                    .await
            } else {
                nl.ack(RouteNetlinkMessage::NewNeighbour(m), Mode::Replace)
                    .await
            }
        }
        Object::Neigh(n) => {
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
            if remove {
                nl.ack(RouteNetlinkMessage::DelNeighbour(m), Mode::Plain)
                    .await
            } else {
                nl.ack(RouteNetlinkMessage::NewNeighbour(m), Mode::Replace)
                    .await
            }
        }
        Object::Route(r) => {
            let m = route_message(index, r);
            match s.action {
                Action::Remove => nl.ack(RouteNetlinkMessage::DelRoute(m), Mode::Plain).await,
                // Never replace on add: a route that appeared since the
                // observation may be someone else's.
                Action::Add => nl.ack(RouteNetlinkMessage::NewRoute(m), Mode::Create).await,
                Action::Change => {
                    nl.ack(RouteNetlinkMessage::NewRoute(m), Mode::Replace)
                        .await
                }
            }
        }
    }
}

fn neigh_addr(ip: IpAddr) -> NeighbourAddress {
    match ip {
        IpAddr::V4(v4) => NeighbourAddress::Inet(v4),
        IpAddr::V6(v6) => NeighbourAddress::Inet6(v6),
    }
}

fn route_message(index: u32, r: &Route) -> RouteMessage {
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

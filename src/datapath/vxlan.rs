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
    LinkUnspec, LinkVxlan,
    packet_route::{
        AddressFamily, RouteNetlinkMessage,
        address::{AddressAttribute, AddressFlags, AddressMessage},
        link::{InfoData, InfoKind, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage},
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
    netlink::{IN_FLIGHT, Mode, Netlink},
    owner_alias,
};
use crate::reconcile::{
    Action, Address, Family, Fdb, Link, Mac, Neigh, Object, Observed, Plan, ROUTE_PROTOCOL, Route,
    RouteKey, Step, Sysctl, sysctl_key,
};

/// The real kernel, through rtnetlink and /proc/sys.
pub struct VxlanKernel {
    nl: Netlink,
    /// Index of lvn's device, by name, as last observed or created.
    index: BTreeMap<String, u32>,
}

impl VxlanKernel {
    /// Index of lvn's device as last observed or created.
    pub fn ifindex(&self, device: &str) -> Option<u32> {
        self.index.get(device).copied()
    }

    /// Connect in the current network namespace (inside a tokio runtime).
    pub fn connect() -> io::Result<VxlanKernel> {
        Ok(VxlanKernel {
            nl: Netlink::connect()?,
            index: BTreeMap::new(),
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

impl Datapath for VxlanKernel {
    async fn observe(&mut self, scope: &Scope) -> Result<Observed, DatapathError> {
        let mut obs = Observed::default();
        let links = self
            .nl
            .dump(RouteNetlinkMessage::GetLink(LinkMessage::default()))
            .await
            .map_err(nl_err("listing links"))?;
        let mut ours = None;
        for m in links {
            let RouteNetlinkMessage::NewLink(l) = m else {
                continue;
            };
            let (name, mtu) = link_name_mtu(&l);
            if name == scope.device {
                match parse_link(&l, &owner_alias(&scope.network)) {
                    Ok(link) => ours = Some((l.header.index, link)),
                    Err(what) => obs.foreign_link = Some(what),
                }
            }
            obs.underlay.links.insert(l.header.index, (name, mtu));
        }
        let (fam, names) = settings(&scope.overlay);
        for setting in names {
            if let Some(v) = read_sysctl(&format!("/proc/sys/net/{fam}/conf/default/{setting}")) {
                obs.sysctl_defaults.insert(setting.to_string(), v);
            }
        }
        if let Some((index, link)) = ours {
            self.index.insert(scope.device.clone(), index);
            let port = link.port;
            obs.state.link = Some(link);
            self.observe_entries(scope, index, port, &mut obs).await?;
            for setting in names {
                let key = sysctl_key(fam, &scope.device, setting);
                if let Some(value) = read_sysctl(&Sysctl::proc_path(&key)) {
                    obs.state.sysctls.insert(key.clone(), Sysctl { key, value });
                }
            }
        } else {
            self.index.remove(&scope.device);
        }
        let our_index = self.index.get(&scope.device).copied();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            self.observe_routes(scope, family, our_index, &mut obs)
                .await?;
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
            let result = if phase == Phase::Link {
                let mut r = Ok(());
                for s in batch {
                    r = self.apply_link(scope, s, &mut report).await;
                    if r.is_err() {
                        break;
                    }
                    report.done.push(s.clone());
                }
                r
            } else {
                self.apply_batch(scope, batch, &mut report).await
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
    Link,
    Entries(bool, u8),
}

/// Steps of one phase have no order among themselves and run pipelined.
fn phase_of(s: &Step) -> Phase {
    let order = match s.object {
        Object::Link(_) => return Phase::Link,
        Object::Address(_) => 1,
        Object::Sysctl(_) => 2,
        Object::Fdb(_) => 3,
        Object::Neigh(_) => 4,
        Object::Route(_) => 5,
    };
    Phase::Entries(s.action == Action::Remove, order)
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

fn mac_of(b: &[u8]) -> Option<Mac> {
    (b.len() == 6).then(|| {
        let mut m = [0; 6];
        m.copy_from_slice(b);
        Mac(m)
    })
}

impl VxlanKernel {
    async fn observe_entries(
        &self,
        scope: &Scope,
        index: u32,
        port: u16,
        obs: &mut Observed,
    ) -> Result<(), DatapathError> {
        let dev = &scope.device;
        let mut req = AddressMessage::default();
        req.header.family = family_of(&scope.overlay);
        req.header.index = index;
        for m in self
            .nl
            .dump(RouteNetlinkMessage::GetAddress(req))
            .await
            .map_err(nl_err(format!("listing addresses of {dev}")))?
        {
            let RouteNetlinkMessage::NewAddress(a) = m else {
                continue;
            };
            if a.header.index != index {
                continue;
            }
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
                address,
                Address {
                    dev: dev.clone(),
                    address,
                    noprefixroute,
                },
            );
        }

        let mut req = NeighbourMessage::default();
        req.header.family = AddressFamily::Bridge;
        req.header.ifindex = index;
        for m in self
            .nl
            .dump(RouteNetlinkMessage::GetNeighbour(req))
            .await
            .map_err(nl_err(format!("listing fdb entries of {dev}")))?
        {
            let RouteNetlinkMessage::NewNeighbour(n) = m else {
                continue;
            };
            if n.header.ifindex != index {
                continue;
            }
            let (mut mac, mut dst, mut p) = (None, None, port);
            for attr in &n.attributes {
                match attr {
                    NeighbourAttribute::LinkLayerAddress(b) => mac = mac_of(b),
                    NeighbourAttribute::Destination(a) => dst = neigh_ip(a),
                    NeighbourAttribute::Port(x) => p = *x,
                    _ => {}
                }
            }
            if let (Some(mac), Some(dst)) = (mac, dst) {
                obs.state.fdb.insert(
                    mac,
                    Fdb {
                        dev: dev.clone(),
                        mac,
                        dst,
                        port: p,
                    },
                );
            }
        }

        let mut req = NeighbourMessage::default();
        req.header.family = family_of(&scope.overlay);
        req.attributes.push(NeighbourAttribute::IfIndex(index));
        for m in self
            .nl
            .dump(RouteNetlinkMessage::GetNeighbour(req))
            .await
            .map_err(nl_err(format!("listing neighbours of {dev}")))?
        {
            let RouteNetlinkMessage::NewNeighbour(n) = m else {
                continue;
            };
            if n.header.ifindex != index {
                continue;
            }
            let (mut mac, mut dst) = (None, None);
            for attr in &n.attributes {
                match attr {
                    NeighbourAttribute::LinkLayerAddress(b) => mac = mac_of(b),
                    NeighbourAttribute::Destination(a) => dst = neigh_ip(a),
                    _ => {}
                }
            }
            let Some(address) = dst else { continue };
            match mac {
                Some(mac) if n.header.state == NeighbourState::Permanent => {
                    obs.state.neighbours.insert(
                        address,
                        Neigh {
                            dev: dev.clone(),
                            address,
                            mac,
                        },
                    );
                }
                _ => {
                    obs.kernel_neighbours.insert(address);
                }
            }
        }
        Ok(())
    }

    async fn observe_routes(
        &self,
        scope: &Scope,
        family: AddressFamily,
        our_index: Option<u32>,
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
            if proto == ROUTE_PROTOCOL && oif.is_some() && oif == our_index {
                obs.state.routes.insert(
                    key,
                    Route {
                        dev: scope.device.clone(),
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

impl VxlanKernel {
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
        scope: &Scope,
        batch: &[Step],
        report: &mut ApplyReport,
    ) -> Result<(), DatapathError> {
        let index = self.index_of(&scope.device)?;
        let nl = self.nl.clone();
        report.writes += batch.len();
        let results: Vec<Result<(), DatapathError>> = stream::iter(batch)
            .map(|s| {
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

async fn write_entry(nl: &Netlink, index: u32, s: &Step) -> io::Result<()> {
    let remove = s.action == Action::Remove;
    match &s.object {
        Object::Link(_) => Ok(()),
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

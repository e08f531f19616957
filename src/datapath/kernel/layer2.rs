//! Layer 2 on the kernel: flooding entries (all-zero MAC, appended, one
//! per peer) and the device's master (`attach`), with hairpin on a hub's
//! bridge. The master is never lvn's: lvn only sets and clears IFLA_MASTER
//! of its own device and the hairpin flag of its own bridge port.

use std::{collections::BTreeMap, io};

use rtnetlink::{
    LinkUnspec,
    packet_route::{
        AddressFamily, RouteNetlinkMessage,
        link::{InfoBridgePort, InfoPortData, InfoPortKind, LinkAttribute, LinkInfo, LinkMessage},
        neighbour::{NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState},
    },
};

use super::{Kernel, entries::neigh_addr, link::link_name_mtu, nl_err};
use crate::{
    datapath::{ApplyReport, DatapathError, netlink::Mode},
    reconcile::{Action, Flood, Object, Port, Step},
};

/// The kind of a device as `ip -d link` names it ("bridge", "batadv"),
/// or "device" for one without link info (a physical NIC, lo).
pub(super) fn kind_name(l: &LinkMessage) -> String {
    l.attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
                LinkInfo::Kind(k) => Some(k.to_string()),
                _ => None,
            }),
            _ => None,
        })
        .unwrap_or_else(|| "device".to_string())
}

/// The master's index and, on a bridge, the port's hairpin flag.
pub(super) fn parse_master(l: &LinkMessage) -> Option<(u32, bool)> {
    let master = l.attributes.iter().find_map(|a| match a {
        LinkAttribute::Controller(i) => Some(*i),
        _ => None,
    })?;
    let hairpin = l.attributes.iter().any(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos.iter().any(|i| match i {
            LinkInfo::PortData(InfoPortData::BridgePort(v)) => {
                v.contains(&InfoBridgePort::HairpinMode(true))
            }
            _ => false,
        }),
        _ => false,
    });
    Some((master, hairpin))
}

/// The port as lvn sees it, the master's name looked up by index among
/// every device of the dump.
pub(super) fn port_of(
    dev: &str,
    master: Option<(u32, bool)>,
    links: &BTreeMap<u32, (String, u32)>,
) -> Option<Port> {
    let (index, hairpin) = master?;
    let name = links
        .get(&index)
        .map_or_else(|| format!("if{index}"), |(n, _)| n.clone());
    Some(Port {
        dev: dev.to_string(),
        master: name,
        master_index: index,
        hairpin,
    })
}

/// `bridge fdb append 00:00:00:00:00:00 dev D dst IP port P self
/// permanent` (delete: the same entry, its destination picks which one).
pub(super) fn flood_request(index: u32, f: &Flood, action: Action) -> (RouteNetlinkMessage, Mode) {
    let mut m = NeighbourMessage::default();
    m.header.family = AddressFamily::Bridge;
    m.header.ifindex = index;
    m.header.state = NeighbourState::Permanent;
    m.header.flags = NeighbourFlags::Own;
    m.attributes
        .push(NeighbourAttribute::LinkLayerAddress(vec![0; 6]));
    m.attributes
        .push(NeighbourAttribute::Destination(neigh_addr(f.dst)));
    m.attributes.push(NeighbourAttribute::Port(f.port));
    match action {
        Action::Remove => (RouteNetlinkMessage::DelNeighbour(m), Mode::Plain),
        _ => (RouteNetlinkMessage::NewNeighbour(m), Mode::Append),
    }
}

impl Kernel {
    /// Index of a device lvn does not own (a master), by name.
    async fn foreign_index(&self, name: &str) -> Result<Option<u32>, DatapathError> {
        let links = self
            .nl
            .dump(RouteNetlinkMessage::GetLink(LinkMessage::default()))
            .await
            .map_err(nl_err("listing links"))?;
        Ok(links.into_iter().find_map(|m| match m {
            RouteNetlinkMessage::NewLink(l) if link_name_mtu(&l).0 == name => Some(l.header.index),
            _ => None,
        }))
    }

    /// Attach to the master (or move back to it), set hairpin; or leave
    /// the master.
    pub(super) async fn apply_port(
        &mut self,
        s: &Step,
        p: &Port,
        report: &mut ApplyReport,
    ) -> Result<(), DatapathError> {
        let index = self.index_of(&p.dev)?;
        let op = format!("{} port {p}", super::apply::verb(s.action));
        if s.action == Action::Remove {
            report.writes += 1;
            let m = LinkUnspec::new_with_index(index).nocontroller().build();
            return self
                .nl
                .ack(RouteNetlinkMessage::SetLink(m), Mode::Plain)
                .await
                .map_err(nl_err(op));
        }
        let master = self
            .foreign_index(&p.master)
            .await?
            .ok_or_else(|| DatapathError::Kernel {
                op: op.clone(),
                source: io::Error::from_raw_os_error(crate::datapath::libc_errno::ENOENT),
            })?;
        report.writes += 1;
        let m = LinkUnspec::new_with_index(index).controller(master).build();
        self.nl
            .ack(RouteNetlinkMessage::SetLink(m), Mode::Plain)
            .await
            .map_err(nl_err(op.clone()))?;
        let was_hairpin =
            matches!(s.old.as_deref(), Some(Object::Port(o)) if o.hairpin && o.master == p.master);
        if p.hairpin || was_hairpin {
            report.writes += 1;
            let m = LinkUnspec::new_with_index(index)
                .set_port_kind(InfoPortKind::Bridge)
                .set_port_data(InfoPortData::BridgePort(vec![InfoBridgePort::HairpinMode(
                    p.hairpin,
                )]))
                .build();
            // RTM_NEWLINK: RTM_SETLINK ignores IFLA_LINKINFO, port data included.
            self.nl
                .ack(RouteNetlinkMessage::NewLink(m), Mode::Plain)
                .await
                .map_err(nl_err(format!("{op}: setting hairpin")))?;
        }
        Ok(())
    }
}

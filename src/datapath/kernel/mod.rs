//! The kernel datapath over rtnetlink and /proc/sys. Observes only the
//! devices lvn created (recognised by their alias) and the entries on them;
//! applies a plan in phases, each phase's entry requests batched, many per
//! `sendto`.
//!
//! `observe.rs` reads (dumps of links, addresses, neighbours and FDB
//! entries, nexthops, routes), `apply.rs` writes (phases, device changes, batches);
//! the netlink messages live in `link.rs` (VXLAN device, ipip/fou and
//! ip6tnl/GUE tunnels)
//! and `entries.rs` (addresses, FDB, neighbours, routes), device settings
//! in `sysctl.rs`, and what datapath "fou" needs from the kernel in `fou.rs`.
//! `monitor.rs` listens to the kernel's notifications (drift). Routes
//! with a gateway go through nexthop objects (`nexthop.rs`, `gateway.rs`).

mod apply;
mod entries;
mod fou;
mod gateway;
mod layer2;
mod link;
pub mod monitor;
pub mod nexthop;
mod observe;
mod sysctl;
mod witness;

use std::{collections::BTreeMap, io};

use ipnet::IpNet;
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage, link::LinkMessage};

pub use self::fou::fou_support;
use self::{fou::FouClient, link::link_name_mtu};
use super::{ApplyReport, Datapath, DatapathError, Scope, batch::Batch, netlink::Netlink};
use crate::reconcile::{Observed, Plan};

/// The real kernel, through rtnetlink and /proc/sys.
pub struct Kernel {
    nl: Netlink,
    /// Index of lvn's devices, by name, as last observed or created.
    index: BTreeMap<String, u32>,
    /// Generic netlink "fou", connected when datapath "fou" needs it.
    fou: Option<FouClient>,
    /// The socket for batches of entry requests, opened on first use.
    batch: Option<Batch>,
    /// lvn's gateway routes and their nexthop objects.
    gw: gateway::Gateways,
    /// The reader of the entry changes of an apply under way, for the
    /// observation after it.
    witness: Option<witness::Witness>,
}

impl Kernel {
    /// Connect in the current network namespace (inside a tokio runtime).
    pub fn connect() -> io::Result<Kernel> {
        Ok(Kernel {
            nl: Netlink::connect()?,
            index: BTreeMap::new(),
            fou: None,
            batch: None,
            gw: gateway::Gateways::default(),
            witness: None,
        })
    }

    /// The batch socket, opened on first use.
    fn batch(&mut self) -> Result<&mut Batch, DatapathError> {
        if self.batch.is_none() {
            let b = Batch::open().map_err(nl_err("opening a netlink socket for batches"))?;
            self.batch = Some(b);
        }
        self.batch
            .as_mut()
            .ok_or_else(|| DatapathError::Netlink("no batch socket".into()))
    }
}

impl Datapath for Kernel {
    async fn observe(&mut self, scope: &Scope) -> Result<Observed, DatapathError> {
        self.witness = None;
        self.observe_scope(scope, None).await
    }

    fn witness(&mut self, scope: &Scope) {
        self.witness = None;
        if scope.datapath != crate::config::Datapath::Vxlan {
            return; // no FDB, and few neighbours
        }
        let before = self.index.get(&scope.device).copied();
        self.witness = witness::Witness::start(before).ok();
    }

    async fn observe_after(
        &mut self,
        scope: &Scope,
        before: Observed,
    ) -> Result<Observed, DatapathError> {
        let Some(w) = self.witness.take() else {
            return self.observe_scope(scope, None).await;
        };
        let index = w.before;
        let heard = tokio::task::spawn_blocking(move || w.finish())
            .await
            .ok()
            .flatten();
        if heard.is_none() {
            tracing::info!(
                "the check after apply dumps FDB and neighbour entries: notifications were lost"
            );
        }
        let prior = heard.map(|heard| witness::Prior {
            before,
            index,
            heard,
        });
        self.observe_scope(scope, prior).await
    }

    async fn apply(&mut self, scope: &Scope, plan: &Plan) -> Result<ApplyReport, DatapathError> {
        self.apply_plan(scope, plan).await
    }

    fn ifindex(&self, device: &str) -> Option<u32> {
        self.index.get(device).copied()
    }

    fn untidy(&self) -> bool {
        self.is_untidy()
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

    /// Find a device just created by name, and remember its index.
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
}

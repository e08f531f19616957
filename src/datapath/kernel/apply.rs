//! Carrying out a plan. Steps run in phases: devices (the VXLAN device,
//! tunnels, fou listeners) one at a time, because later steps need their
//! indexes; then each kind of entry as one batch, many requests per
//! `sendto`, since entries of one kind have no order among themselves.

use rtnetlink::packet_route::{RouteNetlinkMessage, link::LinkMessage};

use super::{
    Kernel,
    entries::{entry_request, object_dev},
    fou::listener,
    link::{
        alias_message, link_settings_message, tunnel_change_message, tunnel_message,
        vxlan_change_message, vxlan_message,
    },
    nl_err,
    sysctl::write_sysctl,
};
use crate::{
    datapath::{ApplyReport, DatapathError, Scope, netlink::Mode},
    naming::{owner_alias, tunnel_alias},
    reconcile::{Action, Object, Plan, Step, Tunnel},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// The VXLAN device, tunnels and fou listeners: one at a time.
    Device,
    Entries(bool, u8),
}

/// Steps of one phase have no order among themselves and go in one batch.
fn phase_of(s: &Step) -> Phase {
    let order = match s.object {
        Object::Link(_) | Object::Tunnel(_) | Object::Fou(_) | Object::Port(_) => {
            return Phase::Device;
        }
        Object::Address(_) => 1,
        Object::Sysctl(_) => 2,
        Object::Fdb(_) | Object::Flood(_) => 3,
        Object::Neigh(_) => 4,
        Object::Route(_) => 5,
    };
    Phase::Entries(s.action == Action::Remove, order)
}

/// "adding fdb 02:.. dst .. port .. dev lvn-x"
fn describe(s: &Step) -> String {
    format!("{} {} {}", verb(s.action), s.object.kind(), s.object)
}

pub(super) fn verb(a: Action) -> &'static str {
    match a {
        Action::Add => "adding",
        Action::Change => "changing",
        Action::Remove => "removing",
    }
}

impl Kernel {
    /// Every step in order; on the first failure, how far it got.
    pub(super) async fn apply_plan(
        &mut self,
        scope: &Scope,
        plan: &Plan,
    ) -> Result<ApplyReport, DatapathError> {
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
        report.writes += self.tidy().await?;
        Ok(report)
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
            Object::Port(p) => self.apply_port(s, p, report).await,
            Object::Fou(f) => {
                let l = listener(f);
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

    /// Send one link request and wait for the kernel's answer.
    async fn link_request(
        &self,
        m: RouteNetlinkMessage,
        mode: Mode,
        op: impl Into<String>,
    ) -> Result<(), DatapathError> {
        self.nl.ack(m, mode).await.map_err(nl_err(op))
    }

    /// Delete device `name` by its index, and forget the index.
    async fn delete_link(
        &mut self,
        name: &str,
        op: String,
        report: &mut ApplyReport,
    ) -> Result<(), DatapathError> {
        let mut m = LinkMessage::default();
        m.header.index = self.index_of(name)?;
        let index = m.header.index;
        report.writes += self.clear_device(name, index).await?;
        self.link_request(RouteNetlinkMessage::DelLink(m), Mode::Plain, op)
            .await?;
        self.index.remove(name);
        // The kernel removes the device's nexthops and routes with it.
        self.gw.nexthops.forget_device(index);
        self.gw.routes.retain(|_, (r, _)| r.dev != name);
        self.gw.rescan = true;
        Ok(())
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
            Action::Remove => self.delete_link(&t.name, op, report).await?,
            Action::Add => {
                let m = tunnel_message(t);
                self.link_request(RouteNetlinkMessage::NewLink(m), Mode::Create, op)
                    .await?;
                let alias = tunnel_alias(&scope.network, &t.peer);
                report.writes += 1;
                self.link_request(
                    RouteNetlinkMessage::SetLink(alias_message(&t.name, alias)),
                    Mode::Plain,
                    format!("marking tunnel {} as lvn's", t.name),
                )
                .await?;
                self.lookup_index(&t.name).await?;
            }
            Action::Change => {
                let m = tunnel_change_message(t, self.index_of(&t.name)?);
                self.link_request(RouteNetlinkMessage::NewLink(m), Mode::Plain, op)
                    .await?;
            }
        }
        Ok(())
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
                report.writes += 1;
                self.delete_link(&link.name, op, report).await?;
            }
            (Action::Add, _) | (Action::Change, false) => {
                if s.action == Action::Change {
                    report.writes += 1;
                    let op = format!("removing link {} to re-create it", link.name);
                    self.delete_link(&link.name, op, report).await?;
                }
                report.writes += 1;
                let m = vxlan_message(link);
                self.link_request(RouteNetlinkMessage::NewLink(m), Mode::Create, op)
                    .await?;
                // The kernel ignores an alias given at creation.
                report.writes += 1;
                self.link_request(
                    RouteNetlinkMessage::SetLink(alias_message(
                        &link.name,
                        owner_alias(&scope.network),
                    )),
                    Mode::Plain,
                    format!("marking link {} as lvn's", link.name),
                )
                .await?;
                self.lookup_index(&link.name).await?;
            }
            (Action::Change, true) => {
                let index = self.index_of(&link.name)?;
                let Some(Object::Link(old)) = &s.old else {
                    return Ok(());
                };
                if old.learning != link.learning || old.local != link.local {
                    report.writes += 1;
                    let m = vxlan_change_message(link, index);
                    self.link_request(RouteNetlinkMessage::NewLink(m), Mode::Plain, op.clone())
                        .await?;
                }
                report.writes += 1;
                let m = link_settings_message(link, index);
                self.link_request(RouteNetlinkMessage::SetLink(m), Mode::Plain, op)
                    .await?;
            }
        }
        Ok(())
    }

    /// One kind of entry: settings one by one, netlink entries in batches
    /// of many requests per `sendto` (`datapath::batch`), results in order.
    async fn apply_batch(
        &mut self,
        batch: &[Step],
        report: &mut ApplyReport,
    ) -> Result<(), DatapathError> {
        // Each step's requests (a gateway route: its nexthop, then itself).
        let mut requests = Vec::with_capacity(batch.len());
        let mut steps: Vec<(&Step, u32, usize)> = Vec::with_capacity(batch.len());
        for s in batch {
            if let Object::Sysctl(x) = &s.object {
                report.writes += 1;
                write_sysctl(x).await.map_err(nl_err(describe(s)))?;
                report.done.push(s.clone());
                continue;
            }
            let index = match object_dev(&s.object) {
                Some(dev) => self.index_of(dev)?,
                None => 0,
            };
            let at = requests.len();
            if let Object::Route(r) = &s.object {
                self.route_requests(index, s.action, r, &mut requests);
            } else if let Some(r) = entry_request(index, s) {
                requests.push(r.into());
            }
            if requests.len() > at {
                steps.push((s, index, requests.len() - at));
            }
        }
        if requests.is_empty() {
            return Ok(());
        }
        report.writes += requests.len();
        let results = self
            .batch()?
            .ack_all(requests)
            .await
            .map_err(nl_err("sending a batch of requests"))?;
        let mut results = results.into_iter();
        for (s, index, n) in steps {
            for r in results.by_ref().take(n) {
                // Described only when it failed: a join formats nothing
                // per entry.
                if let Err(e) = r {
                    return Err(nl_err(describe(s))(e));
                }
            }
            if let Object::Route(r) = &s.object {
                self.route_done(index, s.action, r);
            }
            report.done.push(s.clone());
        }
        Ok(())
    }
}

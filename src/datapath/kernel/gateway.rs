//! Routes with a gateway, realised as nexthop objects (nexthop.rs): what
//! the observation learns about them, the requests a route step becomes,
//! and the datapath's own tidying after a plan: routes an older lvn made
//! with a plain gateway move onto a nexthop, and lvn's nexthops no route
//! uses any more go.

use std::collections::{HashMap, HashSet};

use rtnetlink::packet_route::RouteNetlinkMessage;

use super::{
    Kernel,
    entries::{route_message, route_nh_message},
    nexthop::{self, Nexthop, Nexthops, RTM_DELNEXTHOP, RTM_GETNEXTHOP, RTM_NEWNEXTHOP},
    nl_err,
};
use crate::{
    datapath::{DatapathError, batch::Request, libc_errno::ENOENT, netlink::Mode},
    reconcile::{Action, Route, RouteKey},
};

/// lvn's gateway routes and nexthops as last observed, and as changed by
/// the requests that succeeded since.
#[derive(Debug, Default)]
pub(super) struct Gateways {
    pub nexthops: Nexthops,
    /// lvn's routes with a gateway, with the nexthop id each uses, if any
    /// (none: made by an older lvn with a plain gateway).
    pub routes: HashMap<RouteKey, (Route, Option<u32>)>,
    /// Nexthop ids that other routes use: lvn's nexthops among them stay.
    pub others: HashSet<u32>,
    /// Look at every route and nexthop at the next tidy (set by an
    /// observation and by a device's removal); otherwise only at what
    /// changed since the last one, so a plan of one spoke is tidied in
    /// what it changed, not in a walk over 100k routes.
    pub rescan: bool,
    /// Routes of lvn's with a gateway by nexthop id (tidy's `unused`).
    pub users: HashMap<u32, u32>,
    pub maybe_stray: Vec<RouteKey>,
    pub maybe_unused: Vec<u32>,
}

impl Gateways {
    /// `route` (by `key`) now uses nexthop `id` (`None`: no route).
    fn set_route(&mut self, key: RouteKey, route: Option<(Route, Option<u32>)>) {
        let new = route.as_ref().and_then(|(_, id)| *id);
        let old = match route {
            Some(r) => self.routes.insert(key, r),
            None => self.routes.remove(&key),
        }
        .and_then(|(_, id)| id);
        if old != new {
            if let Some(o) = old {
                if let Some(n) = self.users.get_mut(&o) {
                    *n = n.saturating_sub(1);
                }
                self.maybe_unused.push(o);
            }
            if let Some(n) = new {
                *self.users.entry(n).or_default() += 1;
            }
        }
        self.maybe_stray.push(key);
    }

    /// What tidy must do: lvn's gateway routes (on a device still there)
    /// that are not on one of lvn's nexthops, to move onto one, and lvn's
    /// nexthops (likewise) that no route uses, to delete. Everything after
    /// a rescan, else only what changed since the last tidy.
    fn untidy(&self, index: &HashMap<&str, u32>) -> (Vec<(RouteKey, Route)>, Vec<u32>) {
        let counted;
        let (users, keys, ids): (_, Vec<&RouteKey>, Vec<u32>) = if self.rescan {
            counted = users_of(&self.routes);
            let ids = self.nexthops.ours.keys().copied().collect();
            (&counted, self.routes.keys().collect(), ids)
        } else {
            let keys = self.maybe_stray.iter().collect();
            (&self.users, keys, self.maybe_unused.clone())
        };
        let mut stray: Vec<_> = keys
            .into_iter()
            .filter_map(|k| {
                let (r, id) = self.routes.get(k)?;
                let stray =
                    index.contains_key(&*r.dev) && !id.is_some_and(|i| self.nexthops.is_ours(i));
                stray.then(|| (*k, r.clone()))
            })
            .collect();
        stray.sort_by_key(|(k, _)| *k);
        stray.dedup_by_key(|(k, _)| *k);
        let devices: HashSet<u32> = index.values().copied().collect();
        let mut unused: Vec<u32> = ids
            .into_iter()
            .filter(|id| {
                self.nexthops
                    .ours
                    .get(id)
                    .is_some_and(|(oif, _)| devices.contains(oif))
                    && users.get(id).copied().unwrap_or(0) == 0
                    && !self.others.contains(id)
            })
            .collect();
        unused.sort_unstable();
        unused.dedup();
        (stray, unused)
    }

    /// A tidy is done: from now on, only what changes needs a look.
    fn tidied(&mut self) {
        if self.rescan {
            self.users = users_of(&self.routes);
            self.rescan = false;
        }
        self.maybe_stray.clear();
        self.maybe_unused.clear();
    }

    /// A nexthop of lvn's was made for a route: if the route fails, it
    /// is left unused, for the next tidy.
    pub fn made(&mut self, id: u32) {
        self.maybe_unused.push(id);
    }
}

/// How many of `routes` use each nexthop.
fn users_of(routes: &HashMap<RouteKey, (Route, Option<u32>)>) -> HashMap<u32, u32> {
    let mut users = HashMap::new();
    for id in routes.values().filter_map(|(_, id)| *id) {
        *users.entry(id).or_default() += 1;
    }
    users
}

impl Kernel {
    /// Every nexthop of the namespace.
    pub(super) async fn dump_nexthops(&mut self) -> Result<HashMap<u32, Nexthop>, DatapathError> {
        let mut all = HashMap::new();
        self.batch()?
            .dump_raw(RTM_GETNEXTHOP, &nexthop::dump_message(), |kind, body| {
                if kind == RTM_NEWNEXTHOP
                    && let Some(nh) = nexthop::parse(body)
                {
                    all.insert(nh.id, nh);
                }
            })
            .await
            .map_err(nl_err("listing nexthops"))?;
        Ok(all)
    }

    /// The requests for a route step on device `index`: a gateway route to
    /// be made goes through lvn's nexthop to that gateway, made first if
    /// there is none.
    pub(super) fn route_requests(
        &mut self,
        index: u32,
        action: Action,
        r: &Route,
        out: &mut Vec<Request>,
    ) {
        let key = RouteKey {
            dst: r.dst,
            metric: r.metric,
        };
        let msg = match (action, r.via) {
            (Action::Remove, Some(_)) => match self.gw.routes.get(&key) {
                Some((_, Some(id))) => route_nh_message(r, *id),
                _ => route_message(index, r),
            },
            (_, Some(via)) => {
                let id = match self.gw.nexthops.find(index, via) {
                    Some(id) => id,
                    None => {
                        let id = self.gw.nexthops.allocate(index, via);
                        self.gw.made(id);
                        out.push(Request::Raw {
                            kind: RTM_NEWNEXTHOP,
                            mode: Mode::Create,
                            payload: nexthop::new_message(id, index, via),
                        });
                        id
                    }
                };
                route_nh_message(r, id)
            }
            (_, None) => route_message(index, r),
        };
        out.push(Request::Route(
            match action {
                Action::Remove => RouteNetlinkMessage::DelRoute(msg),
                _ => RouteNetlinkMessage::NewRoute(msg),
            },
            match action {
                Action::Remove => Mode::Plain,
                // Never replace on add: a route that appeared since the
                // observation may be someone else's.
                Action::Add => Mode::Create,
                Action::Change => Mode::Replace,
            },
        ));
    }

    /// Record a route step the kernel carried out.
    pub(super) fn route_done(&mut self, index: u32, action: Action, r: &Route) {
        let key = RouteKey {
            dst: r.dst,
            metric: r.metric,
        };
        match (action, r.via) {
            (Action::Remove, _) | (_, None) => self.gw.set_route(key, None),
            (_, Some(via)) => {
                let id = self.gw.nexthops.find(index, via);
                self.gw.set_route(key, Some((r.clone(), id)));
            }
        }
    }

    /// Before device `name` (index `index`) goes: delete lvn's gateway
    /// routes on it, then its nexthops. The kernel would remove them with
    /// the device, but a nexthop removed while routes use it costs a walk
    /// of every route table (fib_flush), so a device with n of them took
    /// time quadratic in n (seen: 10k 0.9 s, 30k 14.7 s, 100k 125 s; routes
    /// and nexthops first, then the device: 30k 2.5 s). Returns the
    /// requests sent.
    pub(super) async fn clear_device(
        &mut self,
        name: &str,
        index: u32,
    ) -> Result<usize, DatapathError> {
        let mut requests = Vec::new();
        let mut routes: Vec<_> = self
            .gw
            .routes
            .iter()
            .filter(|(_, (r, id))| &*r.dev == name && id.is_some())
            .collect();
        routes.sort_by_key(|(k, _)| **k);
        for (_, (r, id)) in routes {
            let Some(id) = id else { continue };
            requests.push(Request::Route(
                RouteNetlinkMessage::DelRoute(route_nh_message(r, *id)),
                Mode::Plain,
            ));
        }
        let mut ids: Vec<u32> = self
            .gw
            .nexthops
            .ours
            .iter()
            .filter(|(_, (oif, _))| *oif == index)
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        for id in ids {
            requests.push(Request::Raw {
                kind: RTM_DELNEXTHOP,
                mode: Mode::Plain,
                payload: nexthop::del_message(id),
            });
        }
        if requests.is_empty() {
            return Ok(0);
        }
        let n = requests.len();
        // Whatever fails here (gone already) goes with the device anyway.
        let _ = self
            .batch()?
            .ack_all(requests)
            .await
            .map_err(nl_err("sending a batch of requests"))?;
        Ok(n)
    }

    /// Work of the datapath's own that no plan step shows.
    pub(super) fn is_untidy(&self) -> bool {
        let index = self.index_by_name();
        let (stray, unused) = self.gw.untidy(&index);
        !stray.is_empty() || !unused.is_empty()
    }

    fn index_by_name(&self) -> HashMap<&str, u32> {
        self.index.iter().map(|(n, i)| (n.as_str(), *i)).collect()
    }

    /// After a plan: move lvn's gateway routes that are not on one of its
    /// nexthops onto one (`route replace`), then delete lvn's nexthops
    /// that no route uses. Returns the requests sent.
    pub(super) async fn tidy(&mut self) -> Result<usize, DatapathError> {
        let index: HashMap<String, u32> = self.index.clone().into_iter().collect();
        let by_name: HashMap<&str, u32> = index.iter().map(|(n, i)| (n.as_str(), *i)).collect();
        let (stray, unused) = self.gw.untidy(&by_name);
        self.gw.tidied();
        let mut requests = Vec::new();
        let mut owner = Vec::new();
        for (_, r) in &stray {
            let at = requests.len();
            self.route_requests(by_name[&*r.dev], Action::Change, r, &mut requests);
            owner.extend(std::iter::repeat_n(Some(r), requests.len() - at));
        }
        for (_, r) in &stray {
            self.route_done(by_name[&*r.dev], Action::Change, r);
        }
        for id in &unused {
            requests.push(Request::Raw {
                kind: RTM_DELNEXTHOP,
                mode: Mode::Plain,
                payload: nexthop::del_message(*id),
            });
            owner.push(None);
            self.gw.nexthops.remove(*id);
        }
        if requests.is_empty() {
            return Ok(0);
        }
        let n = requests.len();
        let results = self
            .batch()?
            .ack_all(requests)
            .await
            .map_err(nl_err("sending a batch of requests"))?;
        for (r, result) in owner.into_iter().zip(results) {
            match (r, result) {
                (_, Ok(())) => {}
                // Gone with its device, or by hand: what was wanted.
                (None, Err(e)) if e.raw_os_error() == Some(ENOENT) => {}
                (None, Err(e)) => return Err(nl_err("removing a nexthop of lvn's")(e)),
                (Some(r), Err(e)) => {
                    let op = format!("moving route {} onto a nexthop object", r.dst);
                    return Err(nl_err(op)(e));
                }
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;
    use crate::datapath::kernel::nexthop::Nexthop;

    fn route(last: u8) -> (RouteKey, Route) {
        let a = IpAddr::from([100, 64, 0, last]);
        let r = Route {
            dev: "lvn-t".into(),
            dst: a.into(),
            metric: 0,
            via: Some(a),
        };
        (r.key(), r)
    }

    /// A route planned away between two observations (an expired spoke in
    /// a narrowed reconcile) leaves its nexthop to the next tidy, which
    /// looks only at what changed.
    #[test]
    fn a_route_removed_without_an_observation_leaves_its_nexthop_to_tidy() {
        let ours = |i: u32| i == 7;
        let nh = |id, last| Nexthop {
            id,
            protocol: crate::naming::ROUTE_PROTOCOL,
            oif: Some(7),
            gateway: Some(IpAddr::from([100, 64, 0, last])),
        };
        let mut g = Gateways {
            nexthops: Nexthops::new(&[nh(100, 2), nh(101, 3)], "t", ours),
            rescan: true,
            ..Gateways::default()
        };
        let (k2, r2) = route(2);
        let (k3, r3) = route(3);
        g.routes.insert(k2, (r2, Some(100)));
        g.routes.insert(k3, (r3, Some(101)));
        let index = HashMap::from([("lvn-t", 7)]);
        assert_eq!(g.untidy(&index), (vec![], vec![]));
        g.tidied();
        g.set_route(k3, None);
        assert_eq!(g.untidy(&index), (vec![], vec![101]));
        g.tidied();
        assert_eq!(g.untidy(&index), (vec![], vec![]));
    }
}

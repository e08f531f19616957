//! The probe state machine for this node's role, built from a topology and
//! this node's key. Pure: a reload builds the new probe from a copy of the
//! old one, so a failure leaves the running probe, and all it learned,
//! untouched.

use std::{collections::BTreeSet, net::IpAddr, time::Instant};

use crate::{
    config::{self, Auth, Role, Topology},
    probe::{
        PairKey, PrivateKey, failover::Failover, hub::HubProbe, hub::Peer, pair_key,
        spoke::SpokeProbe,
    },
    reconcile::{Liveness, Mac},
};

#[derive(Debug, Clone)]
pub enum Probe {
    Hub(HubProbe),
    Spoke(SpokeProbe),
}

/// The probe for `node` in `topo`, keeping what `old` knew if the role is
/// the same. `old` itself is never modified.
pub fn configure(
    old: Option<&Probe>,
    topo: &Topology,
    node: &str,
    key: Option<&PrivateKey>,
) -> Result<Probe, String> {
    let me = topo.node(node).map_err(|e| e.to_string())?;
    let auth = topo.network.auth == Auth::Keys;
    let pk = |peer: &config::Node| -> Result<Option<PairKey>, String> {
        match (key, peer.public_key) {
            (Some(k), Some(p)) => pair_key(k, &me.name, &p, &peer.name, &topo.network.name)
                .map(Some)
                .map_err(|e| format!("pair key with node '{}': {e}", peer.name)),
            _ => Ok(None),
        }
    };
    Ok(match me.role {
        Role::Hub => {
            let mut peers = Vec::with_capacity(topo.nodes.len());
            for p in topo.nodes.values().filter(|p| p.name != me.name) {
                peers.push(Peer {
                    name: p.name.clone(),
                    mac: Mac::for_overlay(p.address),
                    address: p.address,
                    key: pk(p)?,
                    static_endpoint: p.endpoint,
                    expire_after: topo.expire_after_of(p),
                });
            }
            match old {
                Some(Probe::Hub(h)) => {
                    let mut h = h.clone();
                    h.reconfigure(&me.name, auth, peers);
                    Probe::Hub(h)
                }
                _ => Probe::Hub(HubProbe::new(&me.name, auth, peers)),
            }
        }
        Role::Spoke => {
            let mut hubs = Vec::new();
            for h in topo.hubs() {
                hubs.push((h.name.clone(), Mac::for_overlay(h.address), pk(h)?));
            }
            let interval = topo.keepalive_of(me);
            match old {
                Some(Probe::Spoke(s)) => {
                    let mut s = s.clone();
                    s.reconfigure(&me.name, auth, interval, hubs);
                    Probe::Spoke(s)
                }
                _ => Probe::Spoke(SpokeProbe::new(&me.name, auth, interval, hubs)),
            }
        }
    })
}

impl Probe {
    /// What the planner installs: learned endpoints of live peers, and the
    /// expired ones (for their reasons). The probe is the only source.
    pub fn liveness(&self) -> Liveness {
        match self {
            Probe::Hub(h) => {
                let mut l = Liveness::default();
                for name in h.live().keys() {
                    hub_liveness(h, name, &mut l);
                }
                l
            }
            Probe::Spoke(_) => Liveness::default(),
        }
    }

    /// [`Probe::liveness`] of `names` only.
    pub fn liveness_of(&self, names: &BTreeSet<String>) -> Liveness {
        let mut l = Liveness::default();
        if let Probe::Hub(h) = self {
            for name in names {
                hub_liveness(h, name, &mut l);
            }
        }
        l
    }
}

/// One peer's entry in the liveness a hub's planner gets: its learned
/// endpoint while it is up, its expiry once it is down (peers with a
/// static endpoint have neither).
fn hub_liveness(h: &HubProbe, name: &str, l: &mut Liveness) {
    let (Some(live), Some(p)) = (h.live().get(name), h.peers().get(name)) else {
        return;
    };
    if p.static_endpoint.is_some() {
        return;
    }
    if live.up {
        l.learned.insert(name.to_string(), live.endpoint);
    } else {
        l.expired.insert(name.to_string(), p.expire_after);
    }
}

/// A spoke's failover state for `topo`, keeping the current primary of
/// `old` if it is still a hub; `None` on a hub.
pub fn failover(
    old: Option<&Failover>,
    topo: &Topology,
    node: &str,
    now: Instant,
) -> Option<Failover> {
    let me = topo.nodes.get(node).filter(|n| n.role == Role::Spoke)?;
    let order: Vec<String> = topo.hub_order(me).iter().map(|h| h.name.clone()).collect();
    let (over, back) = (topo.network.failover_after, topo.network.failback_after);
    Some(match old {
        Some(f) => {
            let mut f = f.clone();
            f.reconfigure(node, order, over, back);
            f
        }
        None => Failover::new(node, order, over, back, now),
    })
}

/// Overlay address of a declared node.
pub fn address_of(topo: &Topology, name: &str) -> Option<IpAddr> {
    topo.nodes.get(name).map(|n| n.address)
}

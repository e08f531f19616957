//! Placement: which hubs a spoke uses, in order of preference. A spoke may
//! declare its list (`hubs = ["h2", "h1"]`); otherwise every hub is ranked
//! by weighted rendezvous hashing of (spoke name, hub name), so spokes
//! spread over hubs in proportion to their `weight`, and adding or removing
//! a hub moves only the spokes that must move. The order depends on the
//! file alone: every node, and `lvn plan`, computes the same one.

use std::{net::SocketAddr, sync::OnceLock};

use sha2::{Digest, Sha256};

use super::{Node, Role, Topology};

/// What would otherwise take a walk over every node, found once per
/// topology on first use: a hub with 100,000 spokes asks for its hubs on
/// every reconcile, and a walk over 100k nodes costs milliseconds.
#[derive(Debug, Clone, Default)]
pub struct Index(OnceLock<Found>);

#[derive(Debug, Clone)]
struct Found {
    /// Hub names, in name order.
    hubs: Vec<String>,
    /// The first two nodes with a declared endpoint, in name order.
    endpoints: Vec<String>,
    /// Some node declares an IPv6 endpoint.
    v6_endpoint: bool,
}

/// Derived from the nodes, so two topologies with equal nodes are equal
/// whether or not either has been asked yet.
impl PartialEq for Index {
    fn eq(&self, _: &Index) -> bool {
        true
    }
}

impl Eq for Index {}

impl Topology {
    fn found(&self) -> &Found {
        self.index.0.get_or_init(|| {
            let hubs = self
                .nodes
                .values()
                .filter(|n| n.role == Role::Hub)
                .map(|n| n.name.clone())
                .collect();
            let endpoints = self
                .nodes
                .values()
                .filter(|n| n.endpoint.is_some())
                .take(2)
                .map(|n| n.name.clone())
                .collect();
            let v6_endpoint = self
                .nodes
                .values()
                .any(|n| n.endpoint.is_some_and(|e| e.is_ipv6()));
            Found {
                hubs,
                endpoints,
                v6_endpoint,
            }
        })
    }

    /// Whether some node declares an IPv6 endpoint.
    pub fn has_ipv6_endpoint(&self) -> bool {
        self.found().v6_endpoint
    }

    /// The hubs, in name order.
    pub fn hubs(&self) -> impl Iterator<Item = &Node> {
        self.found().hubs.iter().filter_map(|n| self.nodes.get(n))
    }

    /// The endpoint of the first other hub that has one, else of the first
    /// other node that has one (in name order): where `me`'s default MTU is
    /// measured towards.
    pub fn other_endpoint(&self, me: &str) -> Option<SocketAddr> {
        let f = self.found();
        f.hubs
            .iter()
            .chain(&f.endpoints)
            .filter(|n| *n != me)
            .find_map(|n| self.nodes.get(n)?.endpoint)
    }

    /// The hubs `node` uses, first choice first: its declared `hubs`, then
    /// the others by rendezvous score. A hub's own list is every other hub,
    /// ranked the same way.
    pub fn hub_order(&self, node: &Node) -> Vec<&Node> {
        let hubs: Vec<&Node> = self.hubs().collect();
        self.hub_order_among(&hubs, node)
    }

    /// [`Topology::hub_order`] with the hubs already collected, for callers
    /// that place many spokes (finding the hubs is a walk over every node).
    pub fn hub_order_among<'t>(&'t self, hubs: &[&'t Node], node: &Node) -> Vec<&'t Node> {
        let mut ranked: Vec<(&Node, f64)> = hubs
            .iter()
            .filter(|h| h.name != node.name)
            .map(|h| (*h, score(&node.name, &h.name, h.weight)))
            .collect();
        ranked.sort_by(|(a, sa), (b, sb)| sb.total_cmp(sa).then_with(|| a.name.cmp(&b.name)));
        let mut order: Vec<&Node> = Vec::with_capacity(ranked.len());
        if node.role == Role::Spoke {
            for name in &node.hubs {
                if let Some(h) = self.nodes.get(name) {
                    order.push(h);
                }
            }
        }
        for (h, _) in ranked {
            if !order.iter().any(|o| o.name == h.name) {
                order.push(h);
            }
        }
        order
    }

    /// The hub a spoke routes the overlay through while every hub answers.
    pub fn primary_hub(&self, node: &Node) -> Option<&Node> {
        self.hub_order(node).into_iter().next()
    }
}

/// Weighted rendezvous score of `hub` for `spoke`: `weight / -ln(u)` with
/// `u` in (0, 1) from SHA-256 of the two names, so the highest score wins a
/// share of spokes proportional to the weight (Schindelhauer and Schomaker,
/// "Weighted distributed hash tables", 2005). SHA-256, not the standard
/// library's hasher, so every build and every node agree.
fn score(spoke: &str, hub: &str, weight: u32) -> f64 {
    f64::from(weight) / -unit_interval(spoke, hub).ln()
}

/// A number strictly between 0 and 1 drawn from SHA-256 of two names: the
/// same on every node and in every build (placement, failback delays).
pub fn unit_interval(a: &str, b: &str) -> f64 {
    let mut h = Sha256::new();
    h.update(a.as_bytes());
    h.update([0]);
    h.update(b.as_bytes());
    let digest = h.finalize();
    let mut top = [0u8; 8];
    top.copy_from_slice(&digest[..8]);
    // 53 bits of the hash, as a number strictly between 0 and 1.
    let bits = u64::from_be_bytes(top) >> 11;
    (bits as f64 + 0.5) / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeMap, path::Path};

    use super::*;

    fn fleet(hubs: &[(&str, u32)], spokes: usize) -> Topology {
        let mut t = String::from(
            "[network]\nname = \"p\"\noverlay = \"100.64.0.0/10\"\nport = 4789\nvni = 1\n",
        );
        for (i, (h, w)) in hubs.iter().enumerate() {
            t.push_str(&format!(
                "[nodes.{h}]\nrole = \"hub\"\naddress = \"100.64.0.{}\"\nendpoint = \"198.51.100.{}\"\nweight = {w}\n",
                i + 1,
                i + 1
            ));
        }
        for i in 0..spokes {
            t.push_str(&format!(
                "[nodes.spoke{i}]\naddress = \"100.65.{}.{}\"\n",
                i / 200,
                i % 200 + 1
            ));
        }
        crate::config::parse(Path::new("t.toml"), &t).expect("valid")
    }

    fn primaries(t: &Topology) -> BTreeMap<String, String> {
        t.nodes
            .values()
            .filter(|n| n.role == Role::Spoke)
            .map(|n| (n.name.clone(), t.primary_hub(n).unwrap().name.clone()))
            .collect()
    }

    #[test]
    fn placement_is_deterministic_and_lists_every_hub() {
        let t = fleet(&[("h1", 1), ("h2", 1), ("h3", 1)], 50);
        let again = fleet(&[("h1", 1), ("h2", 1), ("h3", 1)], 50);
        assert_eq!(primaries(&t), primaries(&again));
        for n in t.nodes.values().filter(|n| n.role == Role::Spoke) {
            let mut names: Vec<&str> = t.hub_order(n).iter().map(|h| h.name.as_str()).collect();
            names.sort_unstable();
            assert_eq!(names, ["h1", "h2", "h3"]);
        }
        // A fixed point, so a change of hash or formula cannot pass unseen.
        let s0 = t.nodes.get("spoke0").unwrap();
        let order: Vec<&str> = t.hub_order(s0).iter().map(|h| h.name.as_str()).collect();
        assert_eq!(order, ["h3", "h1", "h2"]);
    }

    #[test]
    fn placement_spreads_spokes_in_proportion_to_weight() {
        let t = fleet(&[("h1", 1), ("h2", 2), ("h3", 1)], 1000);
        let mut count: BTreeMap<String, usize> = BTreeMap::new();
        for h in primaries(&t).into_values() {
            *count.entry(h).or_default() += 1;
        }
        // Expected 250, 500, 250; binomial spread is about +-15 at one sigma.
        for (hub, want) in [("h1", 250), ("h2", 500), ("h3", 250)] {
            let got = count.get(hub).copied().unwrap_or(0);
            assert!(
                got.abs_diff(want) <= 60,
                "{hub}: {got} spokes, expected about {want}: {count:?}"
            );
        }
    }

    #[test]
    fn adding_or_removing_a_hub_moves_only_the_spokes_that_must_move() {
        let before = primaries(&fleet(&[("h1", 1), ("h2", 1), ("h3", 1)], 1000));
        let added = primaries(&fleet(&[("h1", 1), ("h2", 1), ("h3", 1), ("h4", 1)], 1000));
        for (spoke, hub) in &added {
            if hub != "h4" {
                assert_eq!(&before[spoke], hub, "{spoke} moved between old hubs");
            }
        }
        let to_h4 = added.values().filter(|h| *h == "h4").count();
        assert!(
            (150..=350).contains(&to_h4),
            "{to_h4} spokes moved to the new hub"
        );
        let removed = primaries(&fleet(&[("h1", 1), ("h3", 1)], 1000));
        for (spoke, hub) in &before {
            if hub != "h2" {
                assert_eq!(&removed[spoke], hub, "{spoke} moved though its hub stayed");
            }
        }
    }

    #[test]
    fn a_declared_list_comes_first() {
        let mut t = fleet(&[("h1", 1), ("h2", 1), ("h3", 1)], 1);
        let s = t.nodes.get_mut("spoke0").unwrap();
        s.hubs = vec!["h2".into()];
        let s = t.nodes.get("spoke0").unwrap();
        let order: Vec<&str> = t.hub_order(s).iter().map(|h| h.name.as_str()).collect();
        assert_eq!(order[0], "h2");
        assert_eq!(order.len(), 3);
    }
}

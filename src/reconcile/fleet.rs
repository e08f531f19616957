//! `lvn diff OLD NEW`: the plan of a change to the fleet's file, for every
//! node, before it is merged. Each node's plan comes from the same
//! `desired()` and `plan()` as `lvn plan` and `lvn apply`, with the state
//! OLD gives that node standing in for its kernel. Pure: no kernel, no clock.
//!
//! What only the running fleet knows is not invented: no endpoint is
//! learned (hubs' entries for spokes without a declared endpoint appear at
//! run time, and are listed as such), and the underlay MTU is the fallback
//! one, the same for both files.

use std::collections::BTreeSet;

use serde::Serialize;
use serde_json::{Value, json};

use super::{
    Desired, Liveness, Observed, Plan, PlanError, Summary, Underlay, desired, plan, render,
};
use crate::config::{Node, Role, Topology};

/// One node's part of a fleet-wide diff.
#[derive(Debug, Clone)]
pub struct NodeDiff {
    pub node: String,
    pub role: Role,
    /// In NEW only, in OLD only, or in both.
    pub presence: Presence,
    pub plan: Plan,
    /// Spokes this hub has entries for only once they are learned at run
    /// time (no declared endpoint), in NEW.
    pub learned_at_run_time: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Presence {
    Added,
    Removed,
    Kept,
}

/// A spoke whose primary hub changes (placement).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Move {
    pub spoke: String,
    pub from: String,
    pub to: String,
}

#[derive(Debug, Clone, Default)]
pub struct FleetDiff {
    /// Nodes whose kernel state would change, and nodes added or removed.
    pub nodes: Vec<NodeDiff>,
    pub moves: Vec<Move>,
}

/// The fleet-wide plan from OLD to NEW, for every node or just `only`.
pub fn diff(old: &Topology, new: &Topology, only: Option<&str>) -> Result<FleetDiff, PlanError> {
    let names: BTreeSet<&str> = old
        .nodes
        .keys()
        .chain(new.nodes.keys())
        .map(String::as_str)
        .filter(|n| only.is_none_or(|o| o == *n))
        .collect();
    // Finding the hubs is a walk over every node: once per file.
    let hubs = (
        old.hubs().collect::<Vec<_>>(),
        new.hubs().collect::<Vec<_>>(),
    );
    let hubs_same = hubs.0 == hubs.1;
    let mut out = FleetDiff::default();
    for name in names {
        let (o, n) = (old.nodes.get(name), new.nodes.get(name));
        // A spoke's state depends on the network, its hubs and itself
        // only: with those unchanged, its plan is empty, without planning
        // (10,000 spokes cost nothing when one changes).
        if let (Some(o), Some(n)) = (o, n)
            && o == n
            && n.role == Role::Spoke
            && hubs_same
            && old.network == new.network
        {
            continue;
        }
        let before = o.map_or_else(Desired::default, |o| state_of(old, o));
        let after = n.map_or_else(Desired::default, |n| state_of(new, n));
        let observed = Observed {
            state: before.state,
            ..Observed::default()
        };
        let plan = plan(&after, &observed)?;
        let presence = match (o, n) {
            (None, _) => Presence::Added,
            (_, None) => Presence::Removed,
            _ => Presence::Kept,
        };
        if plan.is_empty() && presence == Presence::Kept {
            continue;
        }
        let node = n.or(o).expect("in one of the files");
        out.nodes.push(NodeDiff {
            node: name.to_string(),
            role: node.role,
            presence,
            learned_at_run_time: n
                .filter(|n| n.role == Role::Hub)
                .map(|_| learned_spokes(new))
                .unwrap_or_default(),
            plan,
        });
    }
    out.moves = moves(old, new, &hubs, only);
    Ok(out)
}

fn state_of(topo: &Topology, node: &Node) -> Desired {
    desired(topo, node, &Underlay::default(), &Liveness::default())
}

fn learned_spokes(topo: &Topology) -> Vec<String> {
    topo.nodes
        .values()
        .filter(|n| n.role == Role::Spoke && n.endpoint.is_none())
        .map(|n| n.name.clone())
        .collect()
}

/// Spokes in both files whose primary hub (placement) differs. With the
/// same hubs, only a spoke whose own `hubs` changed can move.
fn moves(
    old: &Topology,
    new: &Topology,
    (old_hubs, new_hubs): &(Vec<&Node>, Vec<&Node>),
    only: Option<&str>,
) -> Vec<Move> {
    let hubs_same = old_hubs == new_hubs;
    let mut out = Vec::new();
    for (name, n) in &new.nodes {
        let Some(o) = old.nodes.get(name) else {
            continue;
        };
        if n.role != Role::Spoke
            || only.is_some_and(|x| x != name)
            || (hubs_same && o.hubs == n.hubs && o.role == n.role)
        {
            continue;
        }
        let from = old
            .hub_order_among(old_hubs, o)
            .first()
            .map(|h| h.name.clone());
        let to = new
            .hub_order_among(new_hubs, n)
            .first()
            .map(|h| h.name.clone());
        if let (Some(from), Some(to)) = (from, to)
            && from != to
        {
            out.push(Move {
                spoke: name.clone(),
                from,
                to,
            });
        }
    }
    out
}

impl FleetDiff {
    /// Nodes whose kernel state changes, and the changes summed.
    pub fn summary(&self) -> (usize, Summary) {
        let mut total = Summary::default();
        let mut nodes = 0;
        for n in &self.nodes {
            let s = n.plan.summary();
            if !n.plan.is_empty() {
                nodes += 1;
            }
            total.add += s.add;
            total.change += s.change;
            total.remove += s.remove;
        }
        (nodes, total)
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.iter().all(|n| n.plan.is_empty())
    }

    fn summary_line(&self) -> String {
        let (nodes, s) = self.summary();
        format!(
            "{nodes} node{} change: {} to add, {} to change, {} to remove.",
            if nodes == 1 { "" } else { "s" },
            s.add,
            s.change,
            s.remove
        )
    }

    /// For people: each node's plan as `lvn plan` prints it.
    pub fn text(&self) -> String {
        let mut o = String::new();
        for n in &self.nodes {
            o.push_str(&format!(
                "node {} ({}{}):\n",
                n.node,
                role(n.role),
                presence(n.presence)
            ));
            if n.plan.is_empty() {
                o.push_str("  No changes.\n");
            }
            for s in &n.plan.steps {
                o.push_str(&format!("  {s}\n"));
            }
            if !n.plan.is_empty() {
                o.push_str(&format!("  {}\n", render::summary_line(&n.plan)));
            }
            if !n.learned_at_run_time.is_empty() {
                o.push_str(&format!(
                    "  (entries for {} appear when their keepalives arrive: endpoints learned at run time)\n",
                    n.learned_at_run_time.join(", ")
                ));
            }
            o.push('\n');
        }
        for m in &self.moves {
            o.push_str(&format!(
                "spoke {} moves from hub {} to hub {}\n",
                m.spoke, m.from, m.to
            ));
        }
        o.push_str(&self.summary_line());
        o.push('\n');
        o
    }

    /// The `lvn diff --json` contract.
    pub fn json(&self, network: &str) -> Value {
        let nodes: Vec<Value> = self
            .nodes
            .iter()
            .map(|n| {
                let mut v = render::plan_json(&n.node, network, &n.plan);
                v["role"] = json!(role(n.role));
                v["presence"] = json!(n.presence);
                v["learned_at_run_time"] = json!(n.learned_at_run_time);
                v
            })
            .collect();
        let (count, s) = self.summary();
        json!({
            "nodes": nodes,
            "moves": self.moves,
            "summary": {"nodes": count, "add": s.add, "change": s.change, "remove": s.remove},
        })
    }

    /// A table and per-node details, ready to post on a pull request.
    pub fn markdown(&self, network: &str) -> String {
        let mut o = format!(
            "### lvn diff: network `{network}`\n\n{}\n\n",
            self.summary_line()
        );
        if self.nodes.is_empty() && self.moves.is_empty() {
            return o;
        }
        o.push_str("| node | role | | add | change | remove |\n|---|---|---|---:|---:|---:|\n");
        for n in &self.nodes {
            let s = n.plan.summary();
            o.push_str(&format!(
                "| `{}` | {} | {} | {} | {} | {} |\n",
                n.node,
                role(n.role),
                presence(n.presence).trim_start_matches(", "),
                s.add,
                s.change,
                s.remove
            ));
        }
        if !self.moves.is_empty() {
            o.push_str("\nPlacement:\n");
            for m in &self.moves {
                o.push_str(&format!(
                    "- `{}` moves from hub `{}` to hub `{}`\n",
                    m.spoke, m.from, m.to
                ));
            }
        }
        for n in self.nodes.iter().filter(|n| !n.plan.is_empty()) {
            o.push_str(&format!(
                "\n<details><summary><code>{}</code>: {}</summary>\n\n```diff\n",
                n.node,
                render::summary_line(&n.plan)
            ));
            for s in &n.plan.steps {
                o.push_str(&format!("{s}\n"));
            }
            o.push_str("```\n</details>\n");
        }
        o
    }
}

fn role(r: Role) -> &'static str {
    match r {
        Role::Hub => "hub",
        Role::Spoke => "spoke",
    }
}

fn presence(p: Presence) -> &'static str {
    match p {
        Presence::Added => ", added",
        Presence::Removed => ", removed",
        Presence::Kept => "",
    }
}

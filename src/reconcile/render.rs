//! Plans and states for people (one line per change, iproute2 words) and for
//! machines (JSON). One `Display` per object serves the plan printout, the
//! apply report and the log line.

use std::fmt;

use serde_json::{Value, json};

use super::{
    Action, Address, Fdb, Fou, Link, Neigh, Object, Plan, Route, State, Step, Sysctl, Tunnel,
};
use crate::naming::ROUTE_PROTOCOL;

impl fmt::Display for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} vxlan vni {} port {} srcport {}-{} underlay {}{} mtu {} mac {}{}{}",
            self.name,
            self.vni,
            self.port,
            self.srcport.0,
            self.srcport.1,
            self.underlay.as_str(),
            self.local
                .map(|l| format!(" local {l}"))
                .unwrap_or_default(),
            self.mtu,
            self.mac,
            if self.learning {
                " learning"
            } else {
                " nolearning"
            },
            if self.up { " up" } else { " down" },
        )?;
        match self.udp_checksum {
            Some(true) => write!(f, " udpcsum"),
            Some(false) => write!(f, " noudpcsum"),
            None => Ok(()),
        }
    }
}

impl fmt::Display for Tunnel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // ipip on an IPv4 underlay; ip6tnl (IPv4 and IPv6 inside) with GUE,
        // which names the inner protocol, on an IPv6 one.
        let (kind, encap) = if self.remote.is_ipv4() {
            ("ipip", "fou")
        } else {
            ("ip6tnl any", "gue")
        };
        write!(
            f,
            "{} {kind} remote {} local {} encap {encap} sport {} dport {} mtu {} {} (peer {})",
            self.name,
            self.remote,
            self.local
                .map_or_else(|| "any".to_string(), |l| l.to_string()),
            self.sport,
            self.dport,
            self.mtu,
            if self.up { "up" } else { "down" },
            self.peer
        )
    }
}

impl fmt::Display for Fou {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.ipv6 {
            write!(f, "port {} gue ipv6", self.port)
        } else {
            write!(f, "port {} ipproto 4 ipv4", self.port)
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} dev {}", self.address, self.dev)?;
        if self.noprefixroute {
            write!(f, " noprefixroute")?;
        }
        Ok(())
    }
}

impl fmt::Display for Fdb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} dst {} port {} dev {}",
            self.mac, self.dst, self.port, self.dev
        )
    }
}

impl fmt::Display for Neigh {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} lladdr {} dev {} permanent",
            self.address, self.mac, self.dev
        )
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.dst)?;
        if let Some(via) = self.via {
            write!(f, " via {via}")?;
        }
        write!(f, " dev {}", self.dev)?;
        if self.via.is_some() {
            write!(f, " onlink")?;
        }
        write!(f, " proto {ROUTE_PROTOCOL} metric {}", self.metric)
    }
}

impl fmt::Display for Sysctl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} = {}", self.key, self.value)
    }
}

impl fmt::Display for Object {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Object::Link(o) => o.fmt(f),
            Object::Tunnel(o) => o.fmt(f),
            Object::Fou(o) => o.fmt(f),
            Object::Address(o) => o.fmt(f),
            Object::Fdb(o) => o.fmt(f),
            Object::Neigh(o) => o.fmt(f),
            Object::Route(o) => o.fmt(f),
            Object::Sysctl(o) => o.fmt(f),
            Object::Flood(o) => o.fmt(f),
            Object::Port(o) => o.fmt(f),
        }
    }
}

fn fmt_opt(ip: Option<std::net::IpAddr>) -> String {
    ip.map_or_else(|| "any".to_string(), |ip| ip.to_string())
}

/// What differs between two links, e.g. `mtu 1450 -> 1400`.
fn link_changes(new: &Link, old: &Link) -> String {
    let mut c = Vec::new();
    let mut field = |name: &str, n: String, o: String| {
        if n != o {
            c.push(format!("{name} {o} -> {n}"));
        }
    };
    field("vni", new.vni.to_string(), old.vni.to_string());
    field("port", new.port.to_string(), old.port.to_string());
    field(
        "srcport",
        format!("{}-{}", new.srcport.0, new.srcport.1),
        format!("{}-{}", old.srcport.0, old.srcport.1),
    );
    field(
        "underlay",
        format!("{:?}", new.underlay),
        format!("{:?}", old.underlay),
    );
    field("local", fmt_opt(new.local), fmt_opt(old.local));
    field("mtu", new.mtu.to_string(), old.mtu.to_string());
    field("mac", new.mac.to_string(), old.mac.to_string());
    field(
        "learning",
        new.learning.to_string(),
        old.learning.to_string(),
    );
    field("up", new.up.to_string(), old.up.to_string());
    field(
        "udp_checksum",
        format!("{:?}", new.udp_checksum),
        format!("{:?}", old.udp_checksum),
    );
    c.join(", ")
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = match (self.action, self.replace.is_empty()) {
            (Action::Add, _) => "+",
            (Action::Remove, _) => "-",
            (Action::Change, true) => "~",
            (Action::Change, false) => "-/+",
        };
        write!(f, "{sign} {} {}", self.object.kind(), self.object)?;
        match (&self.object, self.old.as_deref()) {
            (Object::Link(new), Some(Object::Link(old))) => {
                write!(f, "  [{}]", link_changes(new, old))?;
                if !self.replace.is_empty() {
                    write!(
                        f,
                        " [replace: {} cannot change in place]",
                        self.replace.join(", ")
                    )?;
                }
            }
            (_, Some(Object::Sysctl(old))) => write!(f, "  [was {}]", old.value)?,
            (_, Some(Object::Fdb(old))) => write!(f, "  [was dst {} port {}]", old.dst, old.port)?,
            (_, Some(Object::Neigh(old))) => write!(f, "  [was lladdr {}]", old.mac)?,
            (_, Some(Object::Tunnel(old))) => write!(
                f,
                "  [was remote {} dport {} mtu {}]",
                old.remote, old.dport, old.mtu
            )?,
            (_, Some(old)) => write!(f, "  [was {old}]")?,
            _ => {}
        }
        write!(f, "  ({})", self.reason)
    }
}

/// The summary line of a plan.
pub fn summary_line(plan: &Plan) -> String {
    let s = plan.summary();
    format!(
        "Plan: {} to add, {} to change, {} to remove.",
        s.add, s.change, s.remove
    )
}

/// The plan as JSON, the `lvn plan --json` contract.
pub fn plan_json(node: &str, network: &str, plan: &Plan) -> Value {
    let changes: Vec<Value> = plan.steps.iter().map(step_json).collect();
    json!({
        "node": node,
        "network": network,
        "changes": changes,
        "summary": plan.summary(),
    })
}

pub fn step_json(s: &Step) -> Value {
    let mut object = serde_json::to_value(&s.object).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut object {
        m.remove("kind");
    }
    let mut v = json!({
        "action": s.action,
        "kind": s.object.kind(),
        "object": object,
        "reason": s.reason.to_string(),
        "reason_detail": s.reason,
    });
    if let Some(old) = &s.old {
        let mut o = serde_json::to_value(old).unwrap_or(Value::Null);
        if let Value::Object(m) = &mut o {
            m.remove("kind");
        }
        v["old"] = o;
    }
    if !s.replace.is_empty() {
        v["replace"] = json!(s.replace);
    }
    v
}

/// A state as sorted text lines, for a diff of observed against desired.
pub fn state_lines(s: &State) -> String {
    let mut out = String::new();
    let mut line = |kind: &str, o: &dyn fmt::Display| {
        out.push_str(kind);
        out.push(' ');
        out.push_str(&o.to_string());
        out.push('\n');
    };
    if let Some(l) = &s.link {
        line("link", l);
    }
    s.fou.values().for_each(|o| line("fou", o));
    s.tunnels.values().for_each(|o| line("tunnel", o));
    s.addresses.values().for_each(|o| line("address", o));
    s.sysctls.values().for_each(|o| line("sysctl", o));
    s.fdb.values().for_each(|o| line("fdb", o));
    s.neighbours.values().for_each(|o| line("neigh", o));
    s.routes.values().for_each(|o| line("route", o));
    s.flood.values().for_each(|o| line("flood", o));
    if let Some(p) = &s.port {
        line("port", p);
    }
    out
}

/// A unified diff of two renderings, coloured for a terminal.
pub fn state_diff(observed: &State, desired: &State, color: bool) -> String {
    let old = state_lines(observed);
    let new = state_lines(desired);
    let diff = similar::TextDiff::from_lines(&old, &new);
    let mut out = String::new();
    for change in diff.iter_all_changes() {
        let (sign, code) = match change.tag() {
            similar::ChangeTag::Delete => ("-", "\x1b[31m"),
            similar::ChangeTag::Insert => ("+", "\x1b[32m"),
            similar::ChangeTag::Equal => continue,
        };
        if color {
            out.push_str(&format!("{code}{sign} {change}\x1b[0m"));
        } else {
            out.push_str(&format!("{sign} {change}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::{Mac, Reason};

    /// The JSON contract of a change: shared device names and the boxed old
    /// object are written as the plain strings and objects they were.
    #[test]
    fn a_change_step_in_json() {
        let fdb = |port| Fdb {
            dev: "lvn-x".into(),
            mac: Mac([2, 0x4c, 0x64, 0x40, 0, 2]),
            dst: [192, 0, 2, 1].into(),
            port,
        };
        let s = Step {
            action: Action::Change,
            object: Object::Fdb(fdb(4789)),
            old: Some(Box::new(Object::Fdb(fdb(9999)))),
            replace: Vec::new(),
            reason: Reason::StaticEndpoint { peer: "s1".into() },
        };
        let object = |port| json!({"dev": "lvn-x", "mac": "02:4c:64:40:00:02", "dst": "192.0.2.1", "port": port});
        assert_eq!(
            step_json(&s),
            json!({
                "action": "change",
                "kind": "fdb",
                "object": object(4789),
                "old": object(9999),
                "reason": "s1: static endpoint",
                "reason_detail": {"kind": "static_endpoint", "peer": "s1"},
            })
        );
    }
}

//! A hub's gateway routes (`spoke/32 via spoke onlink`) against the real
//! kernel: each is a nexthop object of lvn's plus a route by `nhid`, made
//! and removed together; other nexthops are left alone and their ids never
//! taken; routes an older lvn made with a plain gateway are observed as
//! before and moved onto a nexthop by the next apply. The hub runs with
//! net.ipv4.nexthop_compat_mode = 0, so routes name only their nexthop.

mod common;

use common::{Lab, run, sh};
use lvn::datapath::kernel::nexthop::first_id;
use serde_json::Value;

const HUB: &str = "198.51.100.1";
const DEV: &str = "lvn-ninux";

fn topology(spokes: &[(&str, &str)]) -> String {
    let mut t = format!(
        r#"[network]
name = "ninux"
overlay = "100.64.0.0/16"
port = 4789
vni = 4242

[nodes.hub1]
role = "hub"
address = "100.64.0.1"
endpoint = "{HUB}"
"#
    );
    for (i, (name, address)) in spokes.iter().enumerate() {
        t += &format!(
            "\n[nodes.{name}]\naddress = \"{address}\"\nendpoint = \"198.51.100.{}:4789\"\n",
            i + 10
        );
    }
    t
}

/// `ip nexthop show` lines, one per nexthop.
fn nexthops(ns: &str) -> Vec<String> {
    sh(&["ip", "-n", ns, "-d", "nexthop", "show"])
        .lines()
        .map(str::to_string)
        .collect()
}

/// The line of nexthop `id`, if it exists.
fn nexthop(ns: &str, id: u32) -> Option<String> {
    let prefix = format!("id {id} ");
    nexthops(ns).into_iter().find(|l| l.starts_with(&prefix))
}

/// The route to `dst`, as `ip route show` prints it.
fn route(ns: &str, dst: &str) -> String {
    sh(&["ip", "-n", ns, "route", "show", dst])
        .trim()
        .to_string()
}

/// The nexthop id a route uses.
fn nhid(route: &str) -> Option<u32> {
    let mut words = route.split_whitespace();
    words.find(|w| *w == "nhid")?;
    words.next()?.parse().ok()
}

fn remaining(v: &Value) -> usize {
    v["remaining"].as_array().map_or(usize::MAX, Vec::len)
}

#[test]
fn gateway_routes_are_nexthop_objects_of_lvns_own() {
    let mut lab = Lab::new("nh");
    let hub = lab.host("hub", &[&format!("{HUB}/24")]);
    sh(&[
        "ip",
        "netns",
        "exec",
        &hub,
        "sysctl",
        "-qw",
        "net.ipv4.nexthop_compat_mode=0",
    ]);
    let first = first_id("ninux");
    // Someone else's nexthop with lvn's protocol, on another device, at
    // the first id lvn would take.
    let foreign = first.to_string();
    sh(&[
        "ip",
        "-n",
        &hub,
        "nexthop",
        "add",
        "id",
        &foreign,
        "via",
        "198.51.100.9",
        "dev",
        "u0",
        "proto",
        "76",
    ]);
    let foreign_before = nexthop(&hub, first).expect("the foreign nexthop");

    let two = [("alice", "100.64.1.2"), ("bob", "100.64.1.3")];
    let cfg = lab.write_config("t.toml", &topology(&two));
    let v = lab.apply_json(&hub, &cfg, "hub1");
    assert_eq!(remaining(&v), 0, "{v}");
    let alice = route(&hub, "100.64.1.2");
    let bob = route(&hub, "100.64.1.3");
    let (a, b) = (nhid(&alice), nhid(&bob));
    assert!(
        a.is_some() && b.is_some(),
        "routes by nhid: {alice} / {bob}"
    );
    assert!(
        a != Some(first) && b != Some(first),
        "the foreign id is taken"
    );
    for (id, gw) in [(a, "100.64.1.2"), (b, "100.64.1.3")] {
        let line = nexthop(&hub, id.unwrap()).expect("lvn's nexthop");
        for want in [gw, DEV, "proto 76", "onlink"] {
            assert!(line.contains(want), "{want} in {line}");
        }
    }
    assert!(alice.contains("proto 76"), "{alice}");
    // The hub reaches the spoke's address through the gateway route.
    let get = sh(&["ip", "-n", &hub, "route", "get", "100.64.1.2"]);
    assert!(get.contains(&format!("dev {DEV}")), "{get}");
    // Observed back from the nexthop dump: nothing left to do.
    let out = lab.lvn(&hub, &cfg, "hub1", &["plan", "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");

    // Another protocol's nexthop on lvn's device, at the next free id.
    let mut other = b.unwrap() + 1;
    while nexthop(&hub, other).is_some() {
        other += 1;
    }
    let other_s = other.to_string();
    sh(&[
        "ip",
        "-n",
        &hub,
        "nexthop",
        "add",
        "id",
        &other_s,
        "via",
        "100.64.1.99",
        "dev",
        DEV,
        "onlink",
    ]);
    let other_before = nexthop(&hub, other).expect("the other nexthop");
    // A spoke joins, another leaves: its nexthop goes with its route.
    let carol_cfg = [("alice", "100.64.1.2"), ("carol", "100.64.1.4")];
    let cfg = lab.write_config("t2.toml", &topology(&carol_cfg));
    let v = lab.apply_json(&hub, &cfg, "hub1");
    assert_eq!(remaining(&v), 0, "{v}");
    let carol = nhid(&route(&hub, "100.64.1.4")).expect("carol's route by nhid");
    assert_ne!(carol, other, "the other protocol's id is taken");
    assert_ne!(carol, first);
    assert_eq!(route(&hub, "100.64.1.3"), "", "bob's route is gone");
    assert_eq!(nexthop(&hub, b.unwrap()), None, "bob's nexthop is gone");
    assert_eq!(nexthop(&hub, other).as_ref(), Some(&other_before));
    assert_eq!(nexthop(&hub, first).as_ref(), Some(&foreign_before));

    // An older lvn's route: a plain gateway, no nexthop. Observed as before
    // (nothing to plan), moved onto a nexthop by the next apply; a
    // nexthop of lvn's that no route uses goes too.
    let a = a.unwrap().to_string();
    sh(&["ip", "-n", &hub, "nexthop", "del", "id", &a]);
    sh(&[
        "ip",
        "-n",
        &hub,
        "route",
        "add",
        "100.64.1.2/32",
        "via",
        "100.64.1.2",
        "dev",
        DEV,
        "onlink",
        "proto",
        "76",
    ]);
    let stray = (other + 1..)
        .find(|i| nexthop(&hub, *i).is_none())
        .expect("a free id");
    sh(&[
        "ip",
        "-n",
        &hub,
        "nexthop",
        "add",
        "id",
        &stray.to_string(),
        "via",
        "100.64.1.50",
        "dev",
        DEV,
        "onlink",
        "proto",
        "76",
    ]);
    let out = lab.lvn(&hub, &cfg, "hub1", &["plan", "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(0), "the old route plans nothing");
    let v = lab.apply_json(&hub, &cfg, "hub1");
    assert_eq!(remaining(&v), 0, "{v}");
    let alice = route(&hub, "100.64.1.2");
    let moved = nhid(&alice).expect("alice's route is on a nexthop again");
    assert!(nexthop(&hub, moved).unwrap().contains("via 100.64.1.2 "));
    assert_eq!(nexthop(&hub, stray), None, "the unused nexthop of lvn's");

    // Down: lvn's nexthops go with its device; the foreign one stays.
    lab.lvn_ok(&hub, &cfg, "hub1", &["down"]);
    let left = nexthops(&hub);
    assert_eq!(left, [foreign_before], "only the foreign nexthop is left");
    let out = run(&["ip", "-n", &hub, "route", "show", "proto", "76"]);
    assert!(out.stdout.is_empty(), "{out:?}");
}

/// Dual stack: the IPv6 gateway route to a spoke is on an IPv6 nexthop
/// object of lvn's too, and goes with its route.
#[test]
fn ipv6_gateway_routes_are_nexthop_objects_too() {
    let mut lab = Lab::new("nh6");
    let hub = lab.host("hub", &[&format!("{HUB}/24")]);
    let topo = |spoke: bool| {
        let mut t = format!(
            r#"[network]
name = "ninux"
overlay = ["100.64.0.0/16", "fd00:64::/64"]
port = 4789
vni = 4242

[nodes.hub1]
role = "hub"
address = ["100.64.0.1", "fd00:64::1"]
endpoint = "{HUB}"

[nodes.alice]
address = ["100.64.1.2", "fd00:64::2"]
endpoint = "198.51.100.10:4789"
"#
        );
        if spoke {
            t += "\n[nodes.bob]\naddress = [\"100.64.1.3\", \"fd00:64::3\"]\nendpoint = \"198.51.100.11:4789\"\n";
        }
        t
    };
    let cfg = lab.write_config("t.toml", &topo(true));
    let v = lab.apply_json(&hub, &cfg, "hub1");
    assert_eq!(remaining(&v), 0, "{v}");
    let bob = sh(&["ip", "-n", &hub, "-6", "route", "show", "fd00:64::3"]);
    let id = nhid(&bob).unwrap_or_else(|| panic!("bob's IPv6 route by nhid: {bob}"));
    let line = nexthop(&hub, id).expect("the IPv6 nexthop");
    for want in ["via fd00:64::3 ", DEV, "proto 76", "onlink"] {
        assert!(line.contains(want), "{want} in {line}");
    }
    let out = lab.lvn(&hub, &cfg, "hub1", &["plan", "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");

    let cfg = lab.write_config("t2.toml", &topo(false));
    let v = lab.apply_json(&hub, &cfg, "hub1");
    assert_eq!(remaining(&v), 0, "{v}");
    let bob = sh(&["ip", "-n", &hub, "-6", "route", "show", "fd00:64::3"]);
    assert_eq!(bob.trim(), "", "bob's IPv6 route is gone");
    assert_eq!(nexthop(&hub, id), None, "and its nexthop");
    let alice = sh(&["ip", "-n", &hub, "-6", "route", "show", "fd00:64::2"]);
    assert!(nhid(&alice).is_some(), "alice's stays: {alice}");
}

//! lvn against the real kernel: a hub and two spokes in network namespaces on
//! a shared underlay (a bridge in its own namespace).

mod common;

use common::{Lab, sh};
use serde_json::Value;

const HUB: &str = "198.51.100.1";
const ALICE: &str = "198.51.100.2";
const BOB: &str = "198.51.100.3";

fn topology(extra: &str, bob_endpoint: &str, vni: u32) -> String {
    format!(
        r#"[network]
name = "ninux"
overlay = "100.64.0.0/16"
port = 4789
vni = {vni}

[nodes.hub1]
role = "hub"
address = "100.64.0.1"
endpoint = "{HUB}"

[nodes.alice]
address = "100.64.1.2"
endpoint = "{ALICE}:4789"

[nodes.bob]
address = "100.64.1.3"
endpoint = "{bob_endpoint}"
{extra}"#
    )
}

struct Fleet {
    lab: Lab,
    hub: String,
    alice: String,
    bob: String,
}

fn fleet(tag: &str) -> Fleet {
    let mut lab = Lab::new(tag);
    let hub = lab.host("hub", &[&format!("{HUB}/24")]);
    let alice = lab.host("alice", &[&format!("{ALICE}/24")]);
    let bob = lab.host("bob", &[&format!("{BOB}/24")]);
    Fleet {
        lab,
        hub,
        alice,
        bob,
    }
}

impl Fleet {
    fn nodes(&self) -> [(&str, &str); 3] {
        [
            (self.hub.as_str(), "hub1"),
            (self.alice.as_str(), "alice"),
            (self.bob.as_str(), "bob"),
        ]
    }

    fn apply_all(&self, cfg: &std::path::Path) {
        for (ns, node) in self.nodes() {
            self.lab.lvn_ok(ns, cfg, node, &["apply"]);
        }
    }
}

fn changes(v: &Value) -> &Vec<Value> {
    v["changes"].as_array().expect("changes is an array")
}

#[test]
fn hub_and_spokes_ping_and_second_apply_writes_nothing() {
    let f = fleet("ping");
    let cfg = f.lab.write_config("t.toml", &topology("", BOB, 4242));
    for (ns, node) in f.nodes() {
        let v = f.lab.apply_json(ns, &cfg, node);
        assert!(
            !changes(&v).is_empty(),
            "first apply on {node} changes something"
        );
        assert_eq!(v["remaining"], Value::Array(vec![]), "{node}: {v}");
    }
    assert!(f.lab.ping(&f.hub, "100.64.1.2"), "hub -> alice");
    assert!(f.lab.ping(&f.alice, "100.64.0.1"), "alice -> hub");
    assert!(f.lab.ping(&f.bob, "100.64.0.1"), "bob -> hub");
    assert!(
        f.lab.ping(&f.alice, "100.64.1.3"),
        "alice -> bob through the hub"
    );
    assert!(
        f.lab.ping(&f.bob, "100.64.1.2"),
        "bob -> alice through the hub"
    );
    // The hub routes each spoke through the spoke itself (a gateway host
    // route), so forwarding between spokes sends no ICMP redirect.
    let out = f.lab.in_ns(
        &f.alice,
        &["ping", "-c", "5", "-i", "0.2", "-W", "1", "100.64.1.3"],
    );
    assert!(!out.contains("Redirect"), "the hub sent redirects: {out}");

    // The data really goes through the hub: alice has no entry for bob.
    let fdb = f
        .lab
        .in_ns(&f.alice, &["bridge", "fdb", "show", "dev", "lvn-ninux"]);
    assert!(!fdb.contains(BOB), "alice knows bob's endpoint: {fdb}");

    for (ns, node) in f.nodes() {
        let v = f.lab.apply_json(ns, &cfg, node);
        assert_eq!(v["writes"], 0, "second apply on {node} writes nothing: {v}");
        assert!(changes(&v).is_empty(), "{v}");
        let out = f.lab.lvn(ns, &cfg, node, &["plan", "--detailed-exitcode"]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "no-change plan exits 0 on {node}"
        );
    }
}

#[test]
fn one_endpoint_changed_is_exactly_one_fdb_change() {
    let f = fleet("endpoint");
    let cfg = f.lab.write_config("t.toml", &topology("", BOB, 4242));
    f.apply_all(&cfg);
    // bob moves to a new underlay address.
    let moved = "198.51.100.13";
    sh(&[
        "ip",
        "-n",
        &f.bob,
        "addr",
        "del",
        &format!("{BOB}/24"),
        "dev",
        "u0",
    ]);
    f.lab.add_addr(&f.bob, &format!("{moved}/24"));
    let cfg2 = f.lab.write_config("t2.toml", &topology("", moved, 4242));
    let out = f
        .lab
        .lvn(&f.hub, &cfg2, "hub1", &["plan", "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(2), "a plan with changes exits 2");
    let plan = f.lab.plan_json(&f.hub, &cfg2, "hub1");
    let ch = changes(&plan);
    assert_eq!(ch.len(), 1, "exactly one change: {plan}");
    assert_eq!(ch[0]["action"], "change");
    assert_eq!(ch[0]["kind"], "fdb");
    assert_eq!(ch[0]["object"]["dst"], moved);
    assert_eq!(ch[0]["old"]["dst"], BOB);
    assert_eq!(plan["summary"]["change"], 1);
    let v = f.lab.apply_json(&f.hub, &cfg2, "hub1");
    assert_eq!(v["writes"], 1, "one netlink write: {v}");
    // Spokes know only hubs: nothing changes there.
    for (ns, node) in [(&f.alice, "alice"), (&f.bob, "bob")] {
        assert!(changes(&f.lab.plan_json(ns, &cfg2, node)).is_empty());
    }
    assert!(
        f.lab.ping(&f.alice, "100.64.1.3"),
        "alice -> bob at its new address"
    );
}

#[test]
fn spoke_added_adds_only_its_entries() {
    let mut f = fleet("add");
    let cfg = f.lab.write_config("t.toml", &topology("", BOB, 4242));
    f.apply_all(&cfg);
    let carol_ns = f.lab.host("carol", &["198.51.100.4/24"]);
    let carol = "\n[nodes.carol]\naddress = \"100.64.1.4\"\nendpoint = \"198.51.100.4\"\n";
    let cfg2 = f.lab.write_config("t2.toml", &topology(carol, BOB, 4242));
    let plan = f.lab.plan_json(&f.hub, &cfg2, "hub1");
    let mut kinds: Vec<(String, String)> = changes(&plan)
        .iter()
        .map(|c| (c["action"].to_string(), c["kind"].to_string()))
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        vec![
            ("\"add\"".to_string(), "\"fdb\"".to_string()),
            ("\"add\"".to_string(), "\"neigh\"".to_string()),
            ("\"add\"".to_string(), "\"route\"".to_string())
        ],
        "{plan}"
    );
    for c in changes(&plan) {
        assert!(c["reason"].as_str().unwrap().starts_with("carol:"), "{c}");
    }
    f.lab.lvn_ok(&f.hub, &cfg2, "hub1", &["apply"]);
    f.lab.lvn_ok(&carol_ns, &cfg2, "carol", &["apply"]);
    assert!(f.lab.ping(&carol_ns, "100.64.1.2"), "carol -> alice");
}

#[test]
fn device_deleted_by_hand_is_planned_and_restored() {
    let f = fleet("drift");
    let cfg = f.lab.write_config("t.toml", &topology("", BOB, 4242));
    f.apply_all(&cfg);
    sh(&["ip", "-n", &f.hub, "link", "del", "lvn-ninux"]);
    assert!(!f.lab.ping(&f.alice, "100.64.0.1"), "hub is gone");
    let out = f.lab.lvn_ok(&f.hub, &cfg, "hub1", &["plan"]);
    assert!(out.contains("+ link lvn-ninux"), "{out}");
    assert!(out.contains("+ fdb 02:4c:64:40:01:02 dst 198.51.100.2 port 4789 dev lvn-ninux  (alice: static endpoint)"), "{out}");
    f.lab.lvn_ok(&f.hub, &cfg, "hub1", &["apply"]);
    assert!(
        f.lab.ping(&f.alice, "100.64.1.3"),
        "alice -> bob after repair"
    );

    // An entry removed by hand is put back, and only it.
    sh(&[
        "ip",
        "-n",
        &f.hub,
        "neigh",
        "del",
        "100.64.1.3",
        "dev",
        "lvn-ninux",
    ]);
    let plan = f.lab.plan_json(&f.hub, &cfg, "hub1");
    assert_eq!(changes(&plan).len(), 1, "{plan}");
    assert_eq!(changes(&plan)[0]["kind"], "neigh");
}

#[test]
fn foreign_route_and_vxlan_survive_apply_and_down() {
    let f = fleet("foreign");
    let hub = &f.hub;
    // Someone else's VXLAN device on the same port, and their routes,
    // one of them for lvn's own overlay prefix at another metric.
    sh(&[
        "ip",
        "-n",
        hub,
        "link",
        "add",
        "vx-other",
        "type",
        "vxlan",
        "id",
        "7",
        "dstport",
        "4789",
        "nolearning",
    ]);
    sh(&["ip", "-n", hub, "link", "set", "vx-other", "up"]);
    sh(&[
        "ip",
        "-n",
        hub,
        "route",
        "add",
        "100.64.200.0/24",
        "dev",
        "u0",
        "proto",
        "static",
    ]);
    sh(&[
        "ip",
        "-n",
        hub,
        "route",
        "add",
        "100.64.0.0/16",
        "dev",
        "u0",
        "metric",
        "500",
    ]);
    let before_link = sh(&["ip", "-n", hub, "-d", "link", "show", "vx-other"]);
    let before_routes = sh(&["ip", "-n", hub, "route", "show", "proto", "static"]);

    let cfg = f.lab.write_config("t.toml", &topology("", BOB, 4242));
    f.apply_all(&cfg);
    assert!(
        f.lab.ping(&f.alice, "100.64.1.3"),
        "lvn works beside the foreign device"
    );
    assert_eq!(
        sh(&["ip", "-n", hub, "route", "show", "proto", "static"]),
        before_routes
    );
    assert!(sh(&["ip", "-n", hub, "route", "show", "100.64.0.0/16"]).contains("metric 500"));

    f.lab.lvn_ok(hub, &cfg, "hub1", &["down"]);
    let links = sh(&["ip", "-n", hub, "link", "show"]);
    assert!(
        !links.contains("lvn-"),
        "down leaves no lvn device: {links}"
    );
    assert!(sh(&["ip", "-n", hub, "route", "show", "proto", "76"]).is_empty());
    assert_eq!(
        sh(&["ip", "-n", hub, "-d", "link", "show", "vx-other"]).replace("state UNKNOWN", ""),
        before_link.replace("state UNKNOWN", "")
    );
    assert_eq!(
        sh(&["ip", "-n", hub, "route", "show", "proto", "static"]),
        before_routes
    );
    assert!(sh(&["ip", "-n", hub, "route", "show", "100.64.0.0/16"]).contains("metric 500"));
    // Down again: nothing there, still success.
    let out = f.lab.lvn_ok(hub, &cfg, "hub1", &["down"]);
    assert!(out.contains("No changes"), "{out}");
}

#[test]
fn foreign_objects_in_the_way_are_refused_not_modified() {
    let f = fleet("conflict");
    let hub = &f.hub;
    let cfg = f.lab.write_config("t.toml", &topology("", BOB, 4242));
    // A device with lvn's name that lvn did not create.
    sh(&[
        "ip",
        "-n",
        hub,
        "link",
        "add",
        "lvn-ninux",
        "type",
        "vxlan",
        "id",
        "9",
        "dstport",
        "4800",
    ]);
    let before = sh(&["ip", "-n", hub, "-d", "link", "show", "lvn-ninux"]);
    for cmd in [&["plan"][..], &["apply"], &["down"]] {
        let out = f.lab.lvn(hub, &cfg, "hub1", cmd);
        let err = String::from_utf8_lossy(&out.stderr);
        if cmd[0] == "down" {
            // Down never deletes what is not lvn's; with nothing of lvn's
            // there it succeeds.
            assert!(out.status.success(), "{err}");
        } else {
            assert_eq!(out.status.code(), Some(1), "{cmd:?}: {err}");
            assert!(
                err.contains("device lvn-ninux exists and is not lvn's"),
                "{err}"
            );
        }
    }
    assert_eq!(
        sh(&["ip", "-n", hub, "-d", "link", "show", "lvn-ninux"]),
        before
    );
    sh(&["ip", "-n", hub, "link", "del", "lvn-ninux"]);

    // A foreign route with the exact key of lvn's route.
    sh(&[
        "ip",
        "-n",
        hub,
        "route",
        "add",
        "100.64.0.0/16",
        "dev",
        "u0",
        "proto",
        "static",
    ]);
    let out = f.lab.lvn(hub, &cfg, "hub1", &["apply"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("route 100.64.0.0/16 metric 0 exists and is not lvn's (proto static)"),
        "{err}"
    );
    assert!(
        !sh(&["ip", "-n", hub, "link", "show"]).contains("lvn-ninux"),
        "nothing applied"
    );
}

#[test]
fn vni_change_replaces_the_link() {
    let f = fleet("vni");
    let cfg = f.lab.write_config("t.toml", &topology("", BOB, 4242));
    f.apply_all(&cfg);
    let cfg2 = f.lab.write_config("t2.toml", &topology("", BOB, 4243));
    let out = f.lab.lvn_ok(&f.hub, &cfg2, "hub1", &["plan"]);
    assert!(out.contains("-/+ link lvn-ninux"), "{out}");
    assert!(
        out.contains("[replace: vni cannot change in place]"),
        "{out}"
    );
    let plan = f.lab.plan_json(&f.hub, &cfg2, "hub1");
    assert_eq!(changes(&plan)[0]["kind"], "link");
    assert_eq!(changes(&plan)[0]["replace"][0], "vni");
    f.apply_all(&cfg2);
    let link = sh(&["ip", "-n", &f.hub, "-d", "link", "show", "lvn-ninux"]);
    assert!(link.contains("vxlan id 4243"), "{link}");
    assert!(f.lab.ping(&f.alice, "100.64.1.3"), "works on the new vni");
}

#[test]
fn spoke_on_an_ipv6_underlay() {
    let mut lab = Lab::new("six");
    let hub = lab.host("hub", &["2001:db8::1/64"]);
    let spoke = lab.host("spoke", &["2001:db8::2/64"]);
    let cfg = lab.write_config(
        "six.toml",
        r#"[network]
name = "six"
overlay = "100.96.0.0/24"
port = 4789
vni = 6

[nodes.hub]
role = "hub"
address = "100.96.0.1"
endpoint = "[2001:db8::1]:4789"

[nodes.spoke]
address = "100.96.0.2"
endpoint = "[2001:db8::2]"
"#,
    );
    // The default MTU follows the underlay device on the path to the peer.
    sh(&["ip", "-n", &hub, "link", "set", "u0", "mtu", "1400"]);
    sh(&["ip", "-n", &spoke, "link", "set", "u0", "mtu", "1400"]);
    for (ns, node) in [(&hub, "hub"), (&spoke, "spoke")] {
        let out = lab.lvn_ok(ns, &cfg, node, &["apply"]);
        assert!(out.contains("underlay ipv6 local 2001:db8::"), "{out}");
        // VXLAN over IPv6 costs 70 bytes: 1400 - 70.
        assert!(out.contains("mtu 1330 = u0 1400 - 70"), "{out}");
    }
    assert!(lab.ping(&spoke, "100.96.0.1"), "spoke -> hub over IPv6");
    assert!(lab.ping(&hub, "100.96.0.2"), "hub -> spoke over IPv6");
    let v = lab.apply_json(&hub, &cfg, "hub");
    assert_eq!(v["writes"], 0, "{v}");
}

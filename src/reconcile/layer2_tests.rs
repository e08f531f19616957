//! Layer 2 planning: what `desired` wants and how `plan` closes the gap,
//! against plain data (no kernel).

use std::{path::Path, time::Duration};

use super::*;
use crate::config::{Topology, parse};

fn topo(extra_network: &str, extra_nodes: &str) -> Topology {
    let text = format!(
        r#"[network]
name = "ff"
overlay = "100.64.0.0/16"
port = 4789
vni = 7
layer = 2
{extra_network}

[nodes.hub1]
role = "hub"
address = "100.64.0.1"
endpoint = "198.51.100.1"

[nodes.hub2]
role = "hub"
address = "100.64.0.9"
endpoint = "198.51.100.9"

[nodes.a]
address = "100.64.1.2"

[nodes.b]
address = "100.64.1.3"
{extra_nodes}"#
    );
    parse(Path::new("t.toml"), &text).expect("valid topology")
}

/// Masters by name and kind, at interface indexes 10, 11, ...
fn underlay(masters: &[(&str, &str)]) -> Underlay {
    Underlay {
        kinds: masters
            .iter()
            .map(|(n, k)| (n.to_string(), k.to_string()))
            .collect(),
        links: (10..)
            .zip(masters)
            .map(|(i, (n, _))| (i, (n.to_string(), 1500)))
            .collect(),
        ..Underlay::default()
    }
}

fn want(t: &Topology, node: &str, u: &Underlay, live: &Liveness) -> Desired {
    desired(t, &t.nodes[node], u, live)
}

fn learned_a() -> Liveness {
    Liveness {
        learned: [("a".to_string(), "203.0.113.5:40001".parse().unwrap())].into(),
        ..Liveness::default()
    }
}

#[test]
fn layer2_owns_the_device_and_fdb_only() {
    let t = topo("", "");
    let d = want(&t, "hub1", &Underlay::default(), &learned_a());
    assert!(d.state.link.is_some());
    assert!(d.state.addresses.is_empty());
    assert!(d.state.neighbours.is_empty());
    assert!(d.state.routes.is_empty());
    assert!(d.state.sysctls.is_empty());
    // The other hub (static) and the live spoke a; not b (no endpoint).
    let floods: Vec<String> = d.state.flood.keys().map(ToString::to_string).collect();
    assert_eq!(floods, ["198.51.100.9:4789", "203.0.113.5:40001"]);
    assert_eq!(d.state.fdb.len(), 2);
    assert_eq!(
        d.reason(&ObjectKey::Flood("203.0.113.5:40001".parse().unwrap()))
            .to_string(),
        "a: flooding to its learned endpoint"
    );
    // A spoke floods to its hubs.
    let d = want(&t, "a", &Underlay::default(), &Liveness::default());
    let floods: Vec<String> = d.state.flood.keys().map(ToString::to_string).collect();
    assert_eq!(floods, ["198.51.100.1:4789", "198.51.100.9:4789"]);
}

#[test]
fn an_expired_spoke_loses_its_flood_entry_and_the_plan_says_why() {
    let t = topo("", "");
    let mut k = crate::datapath::fake::FakeKernel::default();
    let live = learned_a();
    let plan1 = plan(&want(&t, "hub1", &Underlay::default(), &live), &k.observed).unwrap();
    k.apply_plan(&plan1);
    let gone = Liveness {
        expired: [("a".to_string(), Duration::from_secs(5))].into(),
        ..Liveness::default()
    };
    let d = want(&t, "hub1", &Underlay::default(), &gone);
    let p = plan(&d, &k.observed).unwrap();
    let lines: Vec<String> = p.steps.iter().map(ToString::to_string).collect();
    assert_eq!(
        lines,
        [
            "- fdb 02:4c:64:40:01:02 dst 203.0.113.5 port 40001 dev lvn-ff  (a: no keepalive for 5s, expired)",
            "- flood 00:00:00:00:00:00 dst 203.0.113.5 port 40001 dev lvn-ff (flood)  (a: no keepalive for 5s, expired)",
        ]
    );
    k.apply_plan(&p);
    assert!(plan(&d, &k.observed).unwrap().is_empty());
}

#[test]
fn one_mtu_for_the_fleet_from_the_largest_overhead() {
    let t = topo("", "");
    let d = want(&t, "a", &Underlay::default(), &Liveness::default());
    assert_eq!(d.state.link.as_ref().map(|l| l.mtu), Some(1450));
    // An IPv6 underlay: its overhead, on every node. (With both families in
    // one network, once they may mix, the larger overhead wins.)
    let text = r#"[network]
name = "ff"
overlay = "100.64.0.0/16"
port = 4789
vni = 7
layer = 2

[nodes.hub1]
role = "hub"
address = "100.64.0.1"
endpoint = "[2001:db8::1]:4789"

[nodes.a]
address = "100.64.1.2"
endpoint = "[2001:db8::2]:4789"
"#;
    let t6 = parse(Path::new("t.toml"), text).expect("valid topology");
    let d = want(&t6, "a", &Underlay::default(), &Liveness::default());
    assert_eq!(d.state.link.as_ref().map(|l| l.mtu), Some(1430));
    let why = d.reason(&ObjectKey::Link).to_string();
    assert!(
        why.contains("mtu 1430 = 1500 - 70 (vxlan over ipv6"),
        "{why}"
    );
    let declared = topo("mtu = 1500", "");
    let d = want(
        &declared,
        "hub1",
        &Underlay::default(),
        &Liveness::default(),
    );
    assert_eq!(d.state.link.as_ref().map(|l| l.mtu), Some(1500));
}

#[test]
fn attach_waits_for_the_master_then_hairpins_on_a_hubs_bridge() {
    let t = topo("attach = \"br0\"", "attach = \"bat0\"\n");
    let none = Liveness::default();
    let d = want(&t, "hub1", &underlay(&[]), &none);
    assert!(d.state.port.is_none());
    assert_eq!(
        d.waiting
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        [
            "attach: br0 does not exist; lvn-ff becomes its port once it appears (lvn never creates it)"
        ]
    );
    let d = want(&t, "hub1", &underlay(&[("br0", "bridge")]), &none);
    assert!(d.waiting.is_empty());
    let port = d.state.port.clone().expect("a port");
    assert_eq!(port.to_string(), "lvn-ff master br0 hairpin on");
    // A spoke's bridge needs no hairpin; node b attaches to bat0 instead.
    let d = want(&t, "a", &underlay(&[("br0", "bridge")]), &none);
    assert!(!d.state.port.expect("a port").hairpin);
    let d = want(&t, "b", &underlay(&[("bat0", "batadv")]), &none);
    assert_eq!(
        d.state.port.expect("a port").to_string(),
        "lvn-ff master bat0"
    );
}

#[test]
fn a_device_on_another_master_is_drift() {
    let t = topo("attach = \"br0\"", "");
    let none = Liveness::default();
    let u = underlay(&[("br0", "bridge"), ("br9", "bridge")]);
    let d = want(&t, "a", &u, &none);
    let mut k = crate::datapath::fake::FakeKernel::default();
    k.apply_plan(&plan(&d, &k.observed).unwrap());
    k.observed.state.port = Some(Port {
        dev: "lvn-ff".into(),
        master: "br9".into(),
        master_index: 9,
        hairpin: false,
    });
    let p = plan(&d, &k.observed).unwrap();
    assert_eq!(p.steps.len(), 1);
    assert_eq!(
        p.steps[0].to_string(),
        "~ port lvn-ff master br0  [was lvn-ff master br9]  (attach: port of br0 (bridge))"
    );
    // Its master gone: the device leaves the other one too.
    let d = want(&t, "a", &underlay(&[("br9", "bridge")]), &none);
    let p = plan(&d, &k.observed).unwrap();
    assert_eq!(
        p.steps[0].to_string(),
        "- port lvn-ff master br9  (attach: br0 does not exist, the device is no other's port)"
    );
    // Without attach lvn leaves the device's master alone.
    let t = topo("", "");
    let d = want(&t, "a", &u, &none);
    assert!(plan(&d, &k.observed).unwrap().is_empty());
}

#[test]
fn udp_checksum_is_fixed_at_creation() {
    let t = topo("udp_checksum = true", "");
    let none = Liveness::default();
    let d = want(&t, "a", &Underlay::default(), &none);
    let mut k = crate::datapath::fake::FakeKernel::default();
    k.apply_plan(&plan(&d, &k.observed).unwrap());
    if let Some(l) = &mut k.observed.state.link {
        l.udp_checksum = Some(false);
    }
    let p = plan(&d, &k.observed).unwrap();
    assert_eq!(p.steps[0].replace, ["udp_checksum"]);
    // Not declared: whatever the kernel has is right.
    let d = want(&topo("", ""), "a", &Underlay::default(), &none);
    assert!(plan(&d, &k.observed).unwrap().is_empty());
}

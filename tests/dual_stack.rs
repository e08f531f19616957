//! Dual-stack and IPv6-only overlays against the real kernel (issue 13):
//! `lvn run` daemons in the NAT lab (IPv4 underlay, spokes behind a
//! port-randomising NAT) carrying both overlay families on one device, a
//! reload that adds the IPv6 overlay to a running IPv4 network, and an
//! IPv6-only overlay on an IPv6 underlay.

mod common;
#[path = "common/fleet.rs"]
mod fleet;
#[path = "common/nat.rs"]
mod nat;

use common::{Lab, run, sh};
use fleet::*;
use nat::*;

/// The lab's IPv6 overlay (the IPv4 one is fleet.rs's 100.64.0.0/16).
const OVERLAY6: &str = "fd64:77::/64";
const HUB6: &str = "fd64:77::1";
const A6: &str = "fd64:77::1:2";
const B6: &str = "fd64:77::1:3";

/// Hub 1 and spokes a and b (both behind nat1, one public address), IPv4
/// only, or with the IPv6 overlay beside it.
fn lab_topology(dual: bool) -> String {
    let text = topology(NODE_B, "");
    // Spoke c stays out: two spokes behind one NAT are the harder case.
    let text = text.replace("\n[nodes.c]\naddress = \"100.64.3.2\"\n", "\n");
    if !dual {
        return text;
    }
    text.replace(
        "overlay = \"100.64.0.0/16\"",
        &format!("overlay = [\"100.64.0.0/16\", \"{OVERLAY6}\"]"),
    )
    .replace(
        "address = \"100.64.0.1\"",
        &format!("address = [\"100.64.0.1\", \"{HUB6}\"]"),
    )
    .replace(
        "address = \"100.64.1.2\"",
        &format!("address = [\"100.64.1.2\", \"{A6}\"]"),
    )
    .replace(
        "address = \"100.64.1.3\"",
        &format!("address = [\"{B6}\", \"100.64.1.3\"]"),
    )
}

/// `ping -6`: three answers from `dst`.
fn ping6(ns: &str, dst: &str) -> bool {
    run(&[
        "ip", "netns", "exec", ns, "ping", "-6", "-c", "3", "-i", "0.2", "-W", "1", dst,
    ])
    .status
    .success()
}

/// `ping -4`, the same.
fn ping4(ns: &str, dst: &str) -> bool {
    run(&[
        "ip", "netns", "exec", ns, "ping", "-4", "-c", "3", "-i", "0.2", "-W", "1", dst,
    ])
    .status
    .success()
}

/// `lvn plan --detailed-exitcode` beside a running daemon (its learned
/// endpoints included): 0 means nothing to do.
fn plan_exit(f: &Fleet, ns: &str, node: &str) -> (Option<i32>, String) {
    let out = f.n.lab.lvn(
        ns,
        &f.cfg,
        node,
        &[
            "plan",
            "--detailed-exitcode",
            "--state-dir",
            &f.dir(node, "state"),
        ],
    );
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn dual_stack_spokes_behind_nat_ping_each_other_in_both_families_through_the_hub() {
    let f = Fleet::new("dual", &lab_topology(true));
    let _hub = f.start(&f.n.hub.clone(), "hub1");
    let _a = f.start(&f.n.a.clone(), "a");
    let _b = f.start(&f.n.b.clone(), "b");
    let (pa, pb) = (f.wait_peer("a", "up"), f.wait_peer("b", "up"));
    // Both behind one NAT address, each on its own mapped port.
    assert_ne!(pa["endpoint"], pb["endpoint"]);
    for p in [&pa, &pb] {
        let port = mapped_port(&p["endpoint"]);
        assert!((NAT_PORT_MIN..=NAT_PORT_MAX).contains(&port), "{p}");
    }
    // The hub forwards IPv6 on its device alone: the global switch stays
    // off, so the spoke-to-spoke pings below pass through lvn's setting.
    assert_eq!(sysctl(&f.n.hub, "net.ipv6.conf.all.forwarding"), "0");
    assert_eq!(
        sysctl(&f.n.hub, "net.ipv6.conf.lvn-lab.force_forwarding"),
        "1"
    );

    let (hub, a, b) = (f.n.hub.clone(), f.n.a.clone(), f.n.b.clone());
    assert!(ping4(&a, "100.64.1.3"), "a -> b over IPv4, through the hub");
    assert!(ping6(&a, B6), "a -> b over IPv6, through the hub");
    assert!(ping6(&b, A6), "b -> a over IPv6, through the hub");
    assert!(ping6(&hub, A6), "hub -> a over IPv6");
    assert!(ping6(&b, HUB6), "b -> hub over IPv6");
    // One device, both families, one MAC per peer.
    let neigh = sh(&["ip", "-n", &hub, "neigh", "show", "dev", "lvn-lab"]);
    for line in [
        "100.64.1.2 lladdr 02:4c:64:40:01:02 PERMANENT",
        "fd64:77::1:2 lladdr 02:4c:64:40:01:02 PERMANENT",
        "fd64:77::1:3 lladdr 02:4c:64:40:01:03 PERMANENT",
    ] {
        assert!(neigh.contains(line), "{line}: {neigh}");
    }
    // Nothing left to do, on the hub and on a spoke.
    for (ns, node) in [(&hub, "hub1"), (&a, "a")] {
        let (code, out) = plan_exit(&f, ns, node);
        assert_eq!(code, Some(0), "{node}: {out}");
    }
}

#[test]
fn adding_the_ipv6_overlay_by_reload_adds_only_ipv6_objects() {
    let f = Fleet::new("addsix", &lab_topology(false));
    let hub = f.start(&f.n.hub.clone(), "hub1");
    let _a = f.start(&f.n.a.clone(), "a");
    let _b = f.start(&f.n.b.clone(), "b");
    f.wait_peer("a", "up");
    f.wait_peer("b", "up");
    let (a, b) = (f.n.a.clone(), f.n.b.clone());
    assert!(ping4(&a, "100.64.1.3"), "a -> b before the edit");
    assert!(!ping6(&a, B6), "no IPv6 overlay yet");

    let ping = f.n.ping_bg(&a, "100.64.1.3", 60);
    let tmp = f.cfg.with_extension("tmp");
    std::fs::write(&tmp, lab_topology(true)).unwrap();
    std::fs::rename(&tmp, &f.cfg).unwrap();
    wait_until(WAIT, || {
        hub.output()
            .contains("reload (file changed): applying")
            .then_some(())
    })
    .expect("hub reloaded");
    // The spokes reload the same file; a -> b over IPv6 once all three have.
    wait_until(WAIT, || ping6(&a, B6).then_some(())).expect("a -> b over IPv6 after the reload");
    assert!(ping6(&b, A6), "b -> a over IPv6 after the reload");
    let (sent, got) = ping.finish();
    assert_eq!(
        sent, got,
        "the IPv4 ping a -> b lost nothing during the reload"
    );

    let log = hub.output();
    let after = log
        .split("reload (file changed): applying")
        .nth(1)
        .unwrap_or("");
    assert!(!after.contains(" - "), "nothing removed: {after}");
    let changes: Vec<&str> = after
        .lines()
        .filter(|l| l.contains(" + ") || l.contains(" ~ "))
        .collect();
    // address, forwarding, force_forwarding, two neighbours, the overlay
    // route and two spoke routes: IPv6 objects only.
    assert!(changes.len() >= 8, "{after}");
    for line in &changes {
        assert!(
            line.contains("fd64:77:") || line.contains("net.ipv6.conf.lvn-lab"),
            "only IPv6 objects change: {line}"
        );
    }
    let (code, out) = plan_exit(&f, &f.n.hub.clone(), "hub1");
    assert_eq!(code, Some(0), "{out}");
}

/// NAT discovery does not care about the overlay's family: spokes of an
/// IPv6-only overlay behind one NAT address are learned from their
/// keepalives (EtherType frames from the MAC derived from their IPv6
/// address) on the NAT's mapped ports, and reach each other through the hub.
#[test]
fn ipv6_only_spokes_behind_nat_are_learned_and_ping_each_other() {
    let text = lab_topology(false)
        .replace(
            "overlay = \"100.64.0.0/16\"",
            &format!("overlay = \"{OVERLAY6}\""),
        )
        .replace("address = \"100.64.0.1\"", &format!("address = \"{HUB6}\""))
        .replace("address = \"100.64.1.2\"", &format!("address = \"{A6}\""))
        .replace("address = \"100.64.1.3\"", &format!("address = \"{B6}\""));
    let f = Fleet::new("sixnat", &text);
    let _hub = f.start(&f.n.hub.clone(), "hub1");
    let _a = f.start(&f.n.a.clone(), "a");
    let _b = f.start(&f.n.b.clone(), "b");
    for (peer, spoke_ip) in [("a", A_IP), ("b", B_IP)] {
        let p = f.wait_peer(peer, "up");
        assert_eq!(p["source"], "learned", "{p}");
        let m = udp_mapping(&f.n.nat1, spoke_ip, 4789, HUB_IP).expect("NAT mapping");
        assert_eq!(mapped_port(&p["endpoint"]), m.public_port, "{peer}: {p}");
    }
    assert!(ping6(&f.n.a, B6), "a -> b through the hub");
    assert!(ping6(&f.n.hub, A6), "hub -> a");
    let (code, out) = plan_exit(&f, &f.n.hub.clone(), "hub1");
    assert_eq!(code, Some(0), "{out}");
}

#[test]
fn an_ipv6_only_overlay_on_an_ipv6_underlay() {
    let mut lab = Lab::new("sixsix");
    let hub = lab.host("hub", &["2001:db8:66::1/64"]);
    let s1 = lab.host("s1", &["2001:db8:66::2/64"]);
    let s2 = lab.host("s2", &["2001:db8:66::3/64"]);
    let cfg = lab.write_config(
        "sixsix.toml",
        r#"[network]
name = "sixsix"
overlay = "fd64:66::/64"
port = 4789
vni = 66

[nodes.hub]
role = "hub"
address = "fd64:66::1"
endpoint = "[2001:db8:66::1]"

[nodes.s1]
address = "fd64:66::2"
endpoint = "[2001:db8:66::2]"

[nodes.s2]
address = "fd64:66::3"
endpoint = "[2001:db8:66::3]"
"#,
    );
    for (ns, node) in [(&hub, "hub"), (&s1, "s1"), (&s2, "s2")] {
        let out = lab.lvn_ok(ns, &cfg, node, &["apply"]);
        assert!(out.contains("underlay ipv6 local 2001:db8:66::"), "{out}");
        assert!(!out.contains("net.ipv4"), "no IPv4 settings: {out}");
    }
    // IPv6-only: the MAC comes from the IPv6 address (02:4d + last 32 bits).
    let link = sh(&["ip", "-n", &s1, "link", "show", "lvn-sixsix"]);
    assert!(link.contains("02:4d:00:00:00:02"), "{link}");
    assert!(ping6(&s1, "fd64:66::1"), "s1 -> hub");
    assert!(ping6(&hub, "fd64:66::3"), "hub -> s2");
    assert!(ping6(&s1, "fd64:66::3"), "s1 -> s2 through the hub");
    assert!(ping6(&s2, "fd64:66::2"), "s2 -> s1 through the hub");
    for (ns, node) in [(&hub, "hub"), (&s1, "s1")] {
        let out = lab.lvn(ns, &cfg, node, &["plan", "--detailed-exitcode"]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{node}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

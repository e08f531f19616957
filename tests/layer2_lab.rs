//! Layer 2 (`layer = 2`, `attach`) in the NAT lab: a hub and spokes behind
//! port-randomising NATs, lvn's device a port of a Linux bridge `br0` on
//! each node. Flooding entries follow liveness, the hub's port hairpins,
//! ARP and pings between two spokes' bridge addresses go through the hub's
//! bridge, a missing master is waited for, a device moved by hand comes
//! back. Short timings: keepalive 1s, expire_after 4s.

mod common;
#[path = "common/fleet.rs"]
mod fleet;
#[path = "common/nat.rs"]
mod nat;

use std::time::Duration;

use common::sh;
use fleet::*;
use nat::*;

const DEV: &str = "lvn-lab";
/// Addresses on the bridges: the overlay is theirs, not lvn's.
const HUB_BR: &str = "100.127.0.1";
const A_BR: &str = "100.127.0.2";
const C_BR: &str = "100.127.0.3";

fn layer2_topology() -> String {
    topology(NODE_B, "layer = 2\nattach = \"br0\"")
}

fn bridge(ns: &str, addr: &str) {
    sh(&["ip", "-n", ns, "link", "add", "br0", "type", "bridge"]);
    sh(&["ip", "-n", ns, "link", "set", "br0", "up"]);
    sh(&[
        "ip",
        "-n",
        ns,
        "addr",
        "add",
        &format!("{addr}/24"),
        "dev",
        "br0",
    ]);
}

fn link(ns: &str) -> String {
    sh(&["ip", "-n", ns, "-d", "link", "show", "dev", DEV])
}

fn fdb(ns: &str) -> String {
    sh(&[
        "ip", "netns", "exec", ns, "bridge", "fdb", "show", "dev", DEV,
    ])
}

/// Destinations ("ip port") of the flooding entries on `ns`'s device.
fn floods(ns: &str) -> Vec<String> {
    let mut v: Vec<String> = fdb(ns)
        .lines()
        .filter(|l| l.starts_with("00:00:00:00:00:00 "))
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            let dst = w.iter().position(|x| *x == "dst").map(|i| w[i + 1])?;
            // The port is left out when it is the device's own (4789).
            let port = w
                .iter()
                .position(|x| *x == "port")
                .map_or("4789", |i| w[i + 1]);
            Some(format!("{dst} {port}"))
        })
        .collect();
    v.sort();
    v
}

#[test]
fn layer2_spokes_reach_each_other_through_the_hubs_bridge() {
    let f = Fleet::new("l2", &layer2_topology());
    let (hub_ns, a_ns, c_ns) = (f.n.hub.clone(), f.n.a.clone(), f.n.c.clone());
    bridge(&hub_ns, HUB_BR);
    bridge(&a_ns, A_BR);
    let hub = f.start(&hub_ns, "hub1");
    let _a = f.start(&a_ns, "a");
    // c's bridge does not exist yet: c waits for it, and says so.
    let mut c = f.start(&c_ns, "c");
    let waiting = wait_until(WAIT, || {
        let s = f.status("c")?;
        let w = s["reconcile"]["waiting"].as_array()?.first()?.as_str()?;
        Some(w.to_string())
    })
    .unwrap_or_else(|| panic!("c never said it waits: {:?}", f.status("c")));
    assert!(waiting.contains("br0 does not exist"), "{waiting}");
    assert!(!link(&c_ns).contains("master"), "{}", link(&c_ns));
    assert!(c.output().contains("br0 does not exist"), "{}", c.output());
    bridge(&c_ns, C_BR);
    wait_until(WAIT, || link(&c_ns).contains("master br0").then_some(()))
        .unwrap_or_else(|| panic!("c never attached: {}", link(&c_ns)));
    wait_until(WAIT, || {
        f.status("c")?["reconcile"]["waiting"]
            .is_null()
            .then_some(())
    })
    .unwrap_or_else(|| panic!("c still waits: {:?}", f.status("c")));

    let pa = f.wait_peer("a", "up");
    let pc = f.wait_peer("c", "up");
    let (a_port, c_port) = (mapped_port(&pa["endpoint"]), mapped_port(&pc["endpoint"]));

    // Layer 2: the device is a port of br0, with hairpin on the hub only;
    // lvn put no address on it.
    let hub_link = link(&hub_ns);
    assert!(hub_link.contains("master br0"), "{hub_link}");
    assert!(hub_link.contains("hairpin on"), "{hub_link}");
    assert!(link(&a_ns).contains("hairpin off"), "{}", link(&a_ns));
    let hub_addrs = sh(&["ip", "-n", &hub_ns, "-4", "addr", "show", "dev", DEV]);
    assert!(!hub_addrs.contains("inet "), "{hub_addrs}");

    // Flooding: the hub to its live spokes (not to b, declared but silent),
    // each spoke to its hub.
    assert_eq!(
        floods(&hub_ns),
        vec![
            format!("{NAT1_PUBLIC} {a_port}"),
            format!("{NAT2_PUBLIC} {c_port}")
        ],
        "{}",
        fdb(&hub_ns)
    );
    assert_eq!(floods(&a_ns), vec![format!("{HUB_IP} 4789")]);
    assert_eq!(floods(&c_ns), vec![format!("{HUB_IP} 4789")]);
    let log = hub.output();
    assert!(
        log.contains(&format!(
            "+ flood 00:00:00:00:00:00 dst {NAT1_PUBLIC} port {a_port} dev {DEV} (flood)  (a: flooding to its learned endpoint)"
        )),
        "{log}"
    );

    // ARP between the spokes' bridges resolves through the hub's bridge
    // (hairpin), and they ping.
    let lab = &f.n.lab;
    assert!(lab.ping(&a_ns, C_BR), "a -> c through the hub's bridge");
    assert!(lab.ping(&c_ns, A_BR), "c -> a");
    assert!(lab.ping(&a_ns, HUB_BR), "a -> hub");
    let neigh = sh(&["ip", "-n", &a_ns, "neigh", "show", C_BR]);
    assert!(neigh.contains("lladdr"), "a resolved c: {neigh}");

    // A plan beside the daemons has nothing to do.
    let out = lab.lvn(
        &hub_ns,
        &f.cfg,
        "hub1",
        &[
            "plan",
            "--detailed-exitcode",
            "--state-dir",
            &f.dir("hub1", "state"),
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // lvn's own writes once the device exists (flood entries appended as
    // spokes are learned) are never taken for drift. (Creating the device
    // itself is reported once as drift on every layer: its first
    // notification comes before lvn marks it as its own.)
    let log = hub.output();
    let after: Vec<&str> = log
        .lines()
        .skip_while(|l| !l.contains("+ flood"))
        .filter(|l| l.contains("drift:"))
        .collect();
    assert!(after.is_empty(), "{after:?}");

    // Moved to another master by hand: drift, shown by plan, repaired.
    sh(&["ip", "-n", &a_ns, "link", "add", "br9", "type", "bridge"]);
    sh(&["ip", "-n", &a_ns, "link", "set", DEV, "master", "br9"]);
    let plan = lab.lvn_ok(&a_ns, &f.cfg, "a", &["plan"]);
    assert!(
        plan.contains(&format!("~ port {DEV} master br0  [was {DEV} master br9]")),
        "{plan}"
    );
    wait_until(WAIT, || link(&a_ns).contains("master br0").then_some(()))
        .unwrap_or_else(|| panic!("a never moved back: {}", link(&a_ns)));
    assert!(lab.ping(&a_ns, C_BR), "a -> c after the repair");

    // c stops: its flooding entry on the hub goes with its expiry.
    c.stop(Duration::from_secs(5));
    f.wait_peer("c", "expired");
    wait_until(WAIT, || (floods(&hub_ns).len() == 1).then_some(()))
        .unwrap_or_else(|| panic!("c's flood entry stayed: {}", fdb(&hub_ns)));
    assert_eq!(floods(&hub_ns), vec![format!("{NAT1_PUBLIC} {a_port}")]);
    let log = hub.output();
    assert!(
        log.contains(&format!(
            "- flood 00:00:00:00:00:00 dst {NAT2_PUBLIC} port {c_port} dev {DEV} (flood)  (c: no keepalive for"
        )),
        "{log}"
    );
    assert!(!lab.ping(&a_ns, C_BR), "c is gone");
}

/// One node, no NAT: the device's MTU is the fleet's, udp_checksum is set
/// at creation (a change re-creates the device), outer DF is set.
#[test]
fn layer2_device_settings_reach_the_kernel() {
    let mut lab = common::Lab::new("l2dev");
    let ns = lab.host("hub", &[&format!("{HUB_IP}/24")]);
    let text = |csum: bool| {
        format!(
            "[network]\nname = \"lab\"\noverlay = \"100.64.0.0/16\"\nport = 4789\nvni = 77\nlayer = 2\nudp_checksum = {csum}\n\n[nodes.hub1]\nrole = \"hub\"\naddress = \"100.64.0.1\"\nendpoint = \"{HUB_IP}\"\n"
        )
    };
    let cfg = lab.write_config("off.toml", &text(false));
    lab.lvn_ok(&ns, &cfg, "hub1", &["apply"]);
    let l = link(&ns);
    assert!(l.contains("mtu 1450 "), "{l}");
    assert!(l.contains(" noudpcsum "), "{l}");
    assert!(l.contains(" df set "), "{l}");
    let cfg = lab.write_config("on.toml", &text(true));
    let plan = lab.lvn_ok(&ns, &cfg, "hub1", &["plan"]);
    assert!(
        plan.contains("[replace: udp_checksum cannot change in place]"),
        "{plan}"
    );
    lab.lvn_ok(&ns, &cfg, "hub1", &["apply"]);
    let l = link(&ns);
    assert!(l.contains(" udpcsum "), "{l}");
    let plan = lab.lvn_ok(&ns, &cfg, "hub1", &["plan"]);
    assert!(plan.starts_with("No changes"), "{plan}");
}

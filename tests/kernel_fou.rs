//! Datapath "fou" against a kernel that has fou and ipip. This machine's
//! kernel has neither, so these tests are ignored in a plain `cargo test`;
//! `scripts/test-vm` runs them (with `--ignored`) in a VM booting Debian's
//! stock kernel.

mod common;
#[path = "common/nat.rs"]
mod nat;

use std::time::Duration;

use common::{Lab, lvn_bin, run, sh};
use nat::*;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);

fn changes(v: &Value) -> &Vec<Value> {
    v["changes"].as_array().expect("changes")
}

fn fou_static(bob: &str) -> String {
    format!(
        r#"[network]
name = "fo"
overlay = "100.64.0.0/16"
port = 4789
vni = 1
datapath = "fou"

[nodes.hub1]
role = "hub"
address = "100.64.0.1"
endpoint = "198.51.100.1"

[nodes.alice]
address = "100.64.1.2"
endpoint = "198.51.100.2"

[nodes.bob]
address = "100.64.1.3"
endpoint = "{bob}"
"#
    )
}

#[test]
#[ignore = "needs fou and ipip: run by scripts/test-vm"]
fn static_fou_hub_and_spokes_ping_with_minimal_changes() {
    let mut lab = Lab::new("fou");
    let hub = lab.host("hub", &["198.51.100.1/24"]);
    let alice = lab.host("alice", &["198.51.100.2/24"]);
    let bob = lab.host("bob", &["198.51.100.3/24"]);
    let cfg = lab.write_config("fou.toml", &fou_static("198.51.100.3"));
    for (ns, node) in [(&hub, "hub1"), (&alice, "alice"), (&bob, "bob")] {
        let out = lab.lvn_ok(ns, &cfg, node, &["apply"]);
        assert!(out.contains("+ fou port 4789 ipproto 4"), "{out}");
        // FOU costs 28 bytes: 1500 - 28.
        assert!(out.contains("mtu 1472"), "{out}");
    }
    assert!(lab.ping(&hub, "100.64.1.2"), "hub -> alice over fou");
    assert!(lab.ping(&alice, "100.64.0.1"), "alice -> hub");
    assert!(
        lab.ping(&alice, "100.64.1.3"),
        "alice -> bob through the hub"
    );
    for (ns, node) in [(&hub, "hub1"), (&alice, "alice"), (&bob, "bob")] {
        let v = lab.apply_json(ns, &cfg, node);
        assert_eq!(v["writes"], 0, "second apply on {node}: {v}");
    }
    // bob moves: exactly one change on the hub, to bob's tunnel.
    sh(&[
        "ip",
        "-n",
        &bob,
        "addr",
        "del",
        "198.51.100.3/24",
        "dev",
        "u0",
    ]);
    lab.add_addr(&bob, "198.51.100.13/24");
    let cfg2 = lab.write_config("fou2.toml", &fou_static("198.51.100.13"));
    let plan = lab.plan_json(&hub, &cfg2, "hub1");
    assert_eq!(changes(&plan).len(), 1, "{plan}");
    assert_eq!(changes(&plan)[0]["kind"], "tunnel");
    assert_eq!(changes(&plan)[0]["action"], "change");
    let v = lab.apply_json(&hub, &cfg2, "hub1");
    assert_eq!(v["remaining"], Value::Array(vec![]), "{v}");
    assert!(
        lab.ping(&alice, "100.64.1.3"),
        "alice -> bob at its new address"
    );
    // Down leaves nothing of lvn's: no tunnel, no listener.
    for (ns, node) in [(&hub, "hub1"), (&alice, "alice"), (&bob, "bob")] {
        lab.lvn_ok(ns, &cfg2, node, &["down"]);
        let links = sh(&["ip", "-n", ns, "-d", "link", "show"]);
        assert!(!links.contains("lfo-"), "{node}: {links}");
        let fou = sh(&["ip", "netns", "exec", ns, "ip", "fou", "show"]);
        assert!(fou.trim().is_empty(), "{node}: {fou}");
    }
}

fn fou_nat() -> String {
    r#"[network]
name = "fo"
overlay = "100.64.0.0/16"
port = 4789
vni = 1
datapath = "fou"
keepalive = "1s"
expire_after = "4s"

[nodes.hub1]
role = "hub"
address = "100.64.0.1"
endpoint = "198.51.100.1"

[nodes.a]
address = "100.64.1.2"

[nodes.b]
address = "100.64.1.3"

[nodes.c]
address = "100.64.3.2"
"#
    .to_string()
}

#[test]
#[ignore = "needs fou and ipip: run by scripts/test-vm"]
fn fou_daemons_behind_nat_learn_expire_and_refuse_a_second_spoke_behind_one_address() {
    let n = NatLab::new("foun");
    let cfg = n.lab.write_config("fou.toml", &fou_nat());
    let dir = |node: &str, what: &str| {
        n.lab
            .dir
            .path()
            .join(format!("{node}-{what}"))
            .to_string_lossy()
            .into_owned()
    };
    let cfg_s = cfg.to_string_lossy().into_owned();
    let start = |ns: &str, node: &str| {
        let (state, runs) = (dir(node, "state"), dir(node, "run"));
        n.spawn_env(
            ns,
            node,
            &[
                lvn_bin(),
                "run",
                "--config",
                &cfg_s,
                "--node",
                node,
                "--state-dir",
                &state,
                "--run-dir",
                &runs,
                "--resync",
                "2s",
            ],
            &[("LVN_LOG", "info")],
        )
    };
    let status = || -> Option<Value> {
        let out = run(&[
            lvn_bin(),
            "status",
            "--json",
            "--config",
            &cfg_s,
            "--run-dir",
            &dir("hub1", "run"),
        ]);
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).ok())
            .flatten()
    };
    let peer = |name: &str, state: &str| {
        wait_until(WAIT, || {
            status()?["peers"]
                .as_array()?
                .iter()
                .find(|p| p["name"] == name && p["state"] == state)
                .cloned()
        })
        .unwrap_or_else(|| panic!("{name} never {state}: {:?}", status()))
    };
    let hub = start(&n.hub, "hub1");
    let _a = start(&n.a, "a");
    let a = peer("a", "up");
    let m = udp_mapping(&n.nat1, A_IP, 4789, HUB_IP).expect("a's data flow mapping");
    assert_eq!(
        a["endpoint"],
        format!("{NAT1_PUBLIC}:{}", m.public_port),
        "learned = NAT mapping"
    );
    let _c = start(&n.c, "c");
    peer("c", "up");
    assert!(
        n.lab.ping(&n.hub, "100.64.1.2"),
        "hub -> a over fou through NAT"
    );
    assert!(n.lab.ping(&n.a, "100.64.3.2"), "a -> c through the hub");

    // b behind the same NAT address: refused, clearly, and a keeps working.
    let _b = start(&n.b, "b");
    let b = peer("b", "refused");
    let note = b["note"].as_str().unwrap_or_default();
    assert!(
        note.contains("a and b share the public address 198.51.100.2"),
        "{note}"
    );
    assert!(note.contains("datapath = \"vxlan\""), "{note}");
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        n.lab.ping(&n.a, "100.64.0.1"),
        "a still works: no thrashing"
    );
    let log = hub.output();
    assert_eq!(
        log.matches("share the public address").count(),
        1,
        "logged once: {log}"
    );
    let adds_of_a = log
        .lines()
        .filter(|l| l.contains("+ tunnel") && l.contains("(peer a)"))
        .count();
    assert_eq!(adds_of_a, 1, "a's tunnel was made once: {log}");

    // c stops: its tunnel goes after expire_after; it comes back with it.
    drop(_c);
    peer("c", "expired");
    wait_until(WAIT, || {
        hub.output()
            .lines()
            .any(|l| l.contains("- tunnel") && l.contains("(peer c)"))
            .then_some(())
    })
    .expect("c's tunnel removed on expiry");
    assert!(!n.lab.ping(&n.hub, "100.64.3.2"), "no tunnel to c");
    let _c = start(&n.c, "c");
    peer("c", "up");
    assert!(n.lab.ping(&n.hub, "100.64.3.2"), "c is back");
}

/// Hub and two spokes on an IPv6 underlay with static endpoints, datapath
/// "fou": ip6tnl tunnels with GUE, carrying `overlay`'s families.
fn fou_six(overlay: &str, addresses: [&str; 3]) -> String {
    format!(
        r#"[network]
name = "fs"
overlay = {overlay}
port = 4789
datapath = "fou"
keepalive = "1s"
expire_after = "4s"

[nodes.hub1]
role = "hub"
address = {}
endpoint = "[2001:db8:f0::1]"

[nodes.s1]
address = {}
endpoint = "[2001:db8:f0::2]"

[nodes.s2]
address = {}
endpoint = "[2001:db8:f0::3]"
"#,
        addresses[0], addresses[1], addresses[2]
    )
}

/// `ping -4` or `ping -6`, by the address's family: three answers.
fn ping_family(ns: &str, dst: &str) -> bool {
    let family = if dst.contains(':') { "-6" } else { "-4" };
    run(&[
        "ip", "netns", "exec", ns, "ping", family, "-c", "3", "-i", "0.2", "-W", "1", dst,
    ])
    .status
    .success()
}

/// Three hosts on an IPv6 underlay (2001:db8:f0::/64). IPv6 forwarding
/// through the hub: lvn sets the hub device's `force_forwarding` where the
/// kernel has it (6.17+); Debian 12's 6.1 has only the global switch,
/// which lvn leaves alone, so the test turns it on there.
fn six_lab(tag: &str) -> (Lab, [String; 3]) {
    let mut lab = Lab::new(tag);
    let hub = lab.host("hub", &["2001:db8:f0::1/64"]);
    let s1 = lab.host("s1", &["2001:db8:f0::2/64"]);
    let s2 = lab.host("s2", &["2001:db8:f0::3/64"]);
    if !std::path::Path::new("/proc/sys/net/ipv6/conf/default/force_forwarding").exists() {
        set_sysctl(&hub, "net.ipv6.conf.all.forwarding", "1");
    }
    (lab, [hub, s1, s2])
}

/// `lvn run` for `node` in `ns`, with its state and run directories in
/// the lab's temporary directory (not on the VM's shared filesystem).
fn start_daemon(lab: &Lab, ns: &str, cfg: &std::path::Path, node: &str) -> NsProcess {
    let dir = |what: &str| {
        lab.dir
            .path()
            .join(format!("{node}-{what}"))
            .to_string_lossy()
            .into_owned()
    };
    let cfg = cfg.to_string_lossy().into_owned();
    let log = lab.dir.path().join(format!("{node}.log"));
    spawn_in(
        ns,
        &[
            lvn_bin(),
            "run",
            "--config",
            &cfg,
            "--node",
            node,
            "--state-dir",
            &dir("state"),
            "--run-dir",
            &dir("run"),
            "--resync",
            "2s",
        ],
        &[("LVN_LOG", "info")],
        &log,
    )
}

/// The hub's view of `peer` once its keepalives arrived through the tunnel
/// and the hub's underlay socket recognised them (a static peer is "up"
/// from the start; `last_seen_secs` is set by a keepalive only).
fn wait_heard(lab: &Lab, cfg: &std::path::Path, peer: &str) -> Value {
    let run_dir = lab
        .dir
        .path()
        .join("hub1-run")
        .to_string_lossy()
        .into_owned();
    let cfg = cfg.to_string_lossy().into_owned();
    let status = || -> Option<Value> {
        let out = run(&[
            lvn_bin(),
            "status",
            "--json",
            "--config",
            &cfg,
            "--run-dir",
            &run_dir,
        ]);
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).ok())
            .flatten()
    };
    wait_until(WAIT, || {
        status()?["peers"]
            .as_array()?
            .iter()
            .find(|p| p["name"] == peer && p["last_seen_secs"].is_number())
            .cloned()
    })
    .unwrap_or_else(|| panic!("no keepalive from {peer}: {:?}", status()))
}

#[test]
#[ignore = "needs fou, fou6 and ip6_tunnel: run by scripts/test-vm"]
fn fou_over_an_ipv6_underlay_carries_both_overlay_families() {
    let (lab, [hub, s1, s2]) = six_lab("fou6");
    let cfg = lab.write_config(
        "fou6.toml",
        &fou_six(
            r#"["100.64.0.0/16", "fd64:f0::/64"]"#,
            [
                r#"["100.64.0.1", "fd64:f0::1"]"#,
                r#"["100.64.1.2", "fd64:f0::2"]"#,
                r#"["100.64.1.3", "fd64:f0::3"]"#,
            ],
        ),
    );
    for (ns, node) in [(&hub, "hub1"), (&s1, "s1"), (&s2, "s2")] {
        let out = lab.lvn_ok(ns, &cfg, node, &["apply"]);
        assert!(out.contains("+ fou port 4789 gue ipv6"), "{out}");
        assert!(out.contains("ip6tnl any remote 2001:db8:f0::"), "{out}");
        // fou over IPv6 with GUE costs 52 bytes: 1500 - 52.
        assert!(out.contains("mtu 1448"), "{out}");
    }
    let links = sh(&["ip", "-n", &hub, "-d", "link", "show"]);
    assert!(
        links.contains("ip6tnl any remote 2001:db8:f0::2"),
        "{links}"
    );
    assert!(
        links.contains("encap gue encap-sport 4789 encap-dport 4789"),
        "{links}"
    );
    for dst in ["100.64.1.2", "fd64:f0::2", "100.64.1.3", "fd64:f0::3"] {
        assert!(ping_family(&hub, dst), "hub -> {dst} over ip6tnl/GUE");
    }
    for dst in ["100.64.0.1", "fd64:f0::1", "100.64.1.3", "fd64:f0::3"] {
        assert!(ping_family(&s1, dst), "s1 -> {dst} (s2 through the hub)");
    }
    for (ns, node) in [(&hub, "hub1"), (&s1, "s1"), (&s2, "s2")] {
        let v = lab.apply_json(ns, &cfg, node);
        assert_eq!(v["writes"], 0, "second apply on {node}: {v}");
    }
    // Keepalives (inner IPv4, after the GUE header) reach the hub's
    // underlay socket.
    let _h = start_daemon(&lab, &hub, &cfg, "hub1");
    let _s1 = start_daemon(&lab, &s1, &cfg, "s1");
    let p = wait_heard(&lab, &cfg, "s1");
    assert_eq!(p["endpoint"], "[2001:db8:f0::2]:4789", "{p}");
    drop((_h, _s1));
    // Down leaves nothing of lvn's: no tunnel, no listener.
    for (ns, node) in [(&hub, "hub1"), (&s1, "s1"), (&s2, "s2")] {
        lab.lvn_ok(ns, &cfg, node, &["down"]);
        let links = sh(&["ip", "-n", ns, "-d", "link", "show"]);
        assert!(!links.contains("lfs-"), "{node}: {links}");
        let fou = sh(&["ip", "netns", "exec", ns, "ip", "fou", "show"]);
        assert!(fou.trim().is_empty(), "{node}: {fou}");
    }
}

#[test]
#[ignore = "needs fou, fou6 and ip6_tunnel: run by scripts/test-vm"]
fn fou_over_an_ipv6_underlay_with_an_ipv6_only_overlay() {
    let (lab, [hub, s1, s2]) = six_lab("fou66");
    let cfg = lab.write_config(
        "fou66.toml",
        &fou_six(
            r#""fd64:f6::/64""#,
            [r#""fd64:f6::1""#, r#""fd64:f6::2""#, r#""fd64:f6::3""#],
        ),
    );
    for (ns, node) in [(&hub, "hub1"), (&s1, "s1"), (&s2, "s2")] {
        lab.lvn_ok(ns, &cfg, node, &["apply"]);
    }
    assert!(ping_family(&hub, "fd64:f6::2"), "hub -> s1");
    assert!(ping_family(&s1, "fd64:f6::3"), "s1 -> s2 through the hub");
    // Keepalives inside IPv6, after the GUE header.
    let _h = start_daemon(&lab, &hub, &cfg, "hub1");
    let _s2 = start_daemon(&lab, &s2, &cfg, "s2");
    wait_heard(&lab, &cfg, "s2");
}

/// On a kernel without the modules (this machine's has none of fou, fou6,
/// ip6_tunnel), plan fails naming every missing one and the command that
/// loads them, not ipip; where they are loaded (the VM), it plans.
#[test]
fn fou_over_an_ipv6_underlay_names_the_missing_modules() {
    let mut lab = Lab::new("fou6mod");
    let hub = lab.host("hub", &["2001:db8:f0::1/64"]);
    let cfg = lab.write_config(
        "fou6.toml",
        &fou_six(
            r#""fd64:f6::/64""#,
            [r#""fd64:f6::1""#, r#""fd64:f6::2""#, r#""fd64:f6::3""#],
        ),
    );
    let out = lab.lvn(&hub, &cfg, "hub1", &["plan"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let loaded = |m: &str| std::path::Path::new("/sys/module").join(m).exists();
    if ["fou", "fou6", "ip6_tunnel"].iter().all(|m| loaded(m)) {
        assert!(out.status.success(), "{stderr}");
        return;
    }
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("needs kernel modules fou, fou6 and ip6_tunnel"),
        "{stderr}"
    );
    assert!(!stderr.contains("ipip"), "{stderr}");
    let missing: Vec<&str> = ["fou", "fou6", "ip6_tunnel"]
        .into_iter()
        .filter(|m| !loaded(m))
        .collect();
    let load = if missing.len() == 1 {
        format!("`modprobe {}`", missing[0])
    } else {
        format!("`modprobe -a {}`", missing.join(" "))
    };
    assert!(stderr.contains(&load), "{load}: {stderr}");
}

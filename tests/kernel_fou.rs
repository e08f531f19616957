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

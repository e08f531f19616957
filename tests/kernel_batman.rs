//! batman-adv over lvn (layer 2, `attach = "bat0"`) in the NAT lab: a hub
//! and two spokes behind port-randomising NATs, lvn's device the hard
//! interface of `bat0` on each. This machine's kernel has no batman-adv,
//! so the test is ignored in a plain `cargo test`; `scripts/test-vm` runs
//! it in a VM booting Debian's stock kernel (with `batctl` installed).

mod common;
#[path = "common/fleet.rs"]
mod fleet;
#[path = "common/nat.rs"]
mod nat;

use std::time::Duration;

use common::sh;
use fleet::*;
use nat::*;

/// Emulated CPUs are slow; batman-adv's originator interval is 1 s.
const SLOW: Duration = Duration::from_secs(120);
const HUB_BAT: &str = "100.127.0.1";
const A_BAT: &str = "100.127.0.2";
const C_BAT: &str = "100.127.0.3";
/// The spokes' MACs, derived from their node addresses (100.64.1.2, 100.64.3.2).
const A_MAC: &str = "02:4c:64:40:01:02";
const C_MAC: &str = "02:4c:64:40:03:02";

fn mesh(ns: &str, addr: &str) {
    sh(&["ip", "-n", ns, "link", "add", "bat0", "type", "batadv"]);
    sh(&["ip", "-n", ns, "link", "set", "bat0", "up"]);
    sh(&[
        "ip",
        "-n",
        ns,
        "addr",
        "add",
        &format!("{addr}/24"),
        "dev",
        "bat0",
    ]);
}

fn neighbours(ns: &str) -> String {
    let out = common::run(&["ip", "netns", "exec", ns, "batctl", "meshif", "bat0", "n"]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
#[ignore = "needs batman-adv and batctl: run by scripts/test-vm"]
fn batman_adv_meshes_over_lvn_through_nat() {
    // Expiry well above an emulated VM's hiccups.
    let text = topology("", "layer = 2\nattach = \"bat0\"")
        .replace("expire_after = \"4s\"", "expire_after = \"30s\"");
    let f = Fleet::new("bat", &text);
    let (hub_ns, a_ns, c_ns) = (f.n.hub.clone(), f.n.a.clone(), f.n.c.clone());
    for (ns, addr) in [(&hub_ns, HUB_BAT), (&a_ns, A_BAT), (&c_ns, C_BAT)] {
        mesh(ns, addr);
    }
    let hub = f.start(&hub_ns, "hub1");
    let a = f.start(&a_ns, "a");
    let c = f.start(&c_ns, "c");
    for ns in [&hub_ns, &a_ns, &c_ns] {
        // The daemon creates the device first: until then `ip` fails.
        wait_until(SLOW, || {
            let out = common::run(&["ip", "-n", ns, "link", "show", "dev", "lvn-lab"]);
            String::from_utf8_lossy(&out.stdout)
                .contains("master bat0")
                .then_some(())
        })
        .unwrap_or_else(|| {
            panic!(
                "lvn-lab never became bat0's hard interface in {ns}:\nhub: {}\na: {}\nc: {}",
                hub.output(),
                a.output(),
                c.output()
            )
        });
    }
    // The hub's batman-adv sees both spokes, through their NATs.
    wait_until(SLOW, || {
        let n = neighbours(&hub_ns);
        (n.contains(A_MAC) && n.contains(C_MAC)).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "hub's batctl n: {}\nhub fdb: {}\nhub: {}",
            neighbours(&hub_ns),
            sh(&[
                "ip", "netns", "exec", &hub_ns, "bridge", "fdb", "show", "dev", "lvn-lab"
            ]),
            hub.output()
        )
    });
    // Spoke to spoke over bat0, relayed by the hub's batman-adv.
    let pinged = wait_until(SLOW, || f.n.lab.ping(&a_ns, C_BAT).then_some(()));
    assert!(pinged.is_some(), "a -> c over bat0: {}", neighbours(&a_ns));
    assert!(f.n.lab.ping(&c_ns, A_BAT), "c -> a over bat0");
    assert!(f.n.lab.ping(&a_ns, HUB_BAT), "a -> hub over bat0");
}

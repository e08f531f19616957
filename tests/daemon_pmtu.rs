//! Path MTU checks in the NAT lab: spoke c's NAT router has an outside link
//! of MTU 1400, narrower than the 1450 device MTU's 1500-byte outer
//! packets; spoke a's path is 1500 all the way. Both keep their tunnels
//! (keepalives are small); c reports its hub's path unable to carry the
//! MTU, a reports it fine. Layer 3 here; the check is the same in layer 2.

mod common;
#[path = "common/fleet.rs"]
mod fleet;
#[path = "common/nat.rs"]
mod nat;

use common::sh;
use fleet::*;
use nat::*;
use serde_json::Value;

/// The spoke's view of hub1, once its path MTU verdict is known.
fn verdict(f: &Fleet, node: &str) -> Value {
    wait_until(WAIT, || {
        let s = f.status(node)?;
        let hub = s["peers"].as_array()?.first()?.clone();
        (!hub["path_mtu_ok"].is_null()).then_some(hub)
    })
    .unwrap_or_else(|| panic!("{node} never knew its path MTU: {:?}", f.status(node)))
}

#[test]
fn a_narrow_path_is_reported_and_a_wide_one_is_fine() {
    let f = Fleet::new("pmtu", &topology("", ""));
    sh(&[
        "ip", "-n", &f.n.nat2, "link", "set", PUBLIC_DEV, "mtu", "1400",
    ]);
    let _hub = f.start(&f.n.hub.clone(), "hub1");
    let a = f.start(&f.n.a.clone(), "a");
    let c = f.start(&f.n.c.clone(), "c");
    let va = verdict(&f, "a");
    assert_eq!(va["path_mtu_ok"], true, "{va}");
    assert_eq!(va["path_mtu"], 1450, "{va}");
    let vc = verdict(&f, "c");
    assert_eq!(vc["path_mtu_ok"], false, "{vc}");
    assert!(vc["path_mtu"].is_null(), "{vc}");
    // Small keepalives still get through: the tunnel is up.
    assert_eq!(vc["state"], "up", "{vc}");
    assert!(f.n.lab.ping(&f.n.c, "100.64.0.1"), "c -> hub, small pings");
    // Said once in the log, not at every probe: wait out another check
    // (every ten keepalive intervals).
    std::thread::sleep(std::time::Duration::from_secs(12));
    assert_eq!(f.status("c").unwrap()["peers"][0]["path_mtu_ok"], false);
    let log = c.output();
    assert_eq!(
        log.matches("cannot carry the device MTU 1450").count(),
        1,
        "{log}"
    );
    assert!(!a.output().contains("cannot carry"), "{}", a.output());
    // And in the text status.
    let cfg = f.cfg.to_string_lossy().into_owned();
    let text = sh(&[
        common::lvn_bin(),
        "status",
        "--config",
        &cfg,
        "--run-dir",
        &f.dir("c", "run"),
    ]);
    assert!(
        text.contains("path MTU: the path to hub1 cannot carry the device MTU"),
        "{text}"
    );
}

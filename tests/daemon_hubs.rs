//! `lvn run` with two hubs in the NAT lab (issue 9): placement, failover when
//! a hub loses its network, failback once it answers steadily again.
//!
//! ```text
//!   h1 198.51.100.1 ──┬── public segment ──┬── h2 198.51.100.4
//!              nat1 (a, b)            nat2 (c)
//! ```

mod common;
#[path = "common/fleet.rs"]
mod fleet;
#[path = "common/nat.rs"]
mod nat;

use std::time::{Duration, Instant};

use common::sh;
use fleet::*;
use nat::*;

const H2_IP: &str = "198.51.100.4";

fn two_hubs() -> String {
    format!(
        r#"[network]
name = "lab"
overlay = "100.64.0.0/16"
port = 4789
vni = 77
keepalive = "1s"
expire_after = "4s"
failover_after = "3s"
failback_after = "4s"

[nodes.hub1]
role = "hub"
address = "100.64.0.1"
endpoint = "{HUB_IP}"

[nodes.h2]
role = "hub"
address = "100.64.0.4"
endpoint = "{H2_IP}"

[nodes.a]
address = "100.64.1.2"
hubs = ["hub1", "h2"]

[nodes.b]
address = "100.64.1.3"
hubs = ["h2", "hub1"]

[nodes.c]
address = "100.64.3.2"
hubs = ["h2", "hub1"]
"#
    )
}

fn primary(f: &Fleet, node: &str) -> Option<String> {
    f.status(node)?["primary"].as_str().map(str::to_string)
}

#[test]
fn spokes_fail_over_to_the_next_hub_and_come_back() {
    let mut f = Fleet::new("hubs", &two_hubs());
    let h2 = f.n.lab.host("h2", &[&format!("{H2_IP}/24")]);
    let _h1 = f.start(&f.n.hub.clone(), "hub1");
    let _h2 = f.start(&h2, "h2");
    let a = f.start(&f.n.a.clone(), "a");
    let _b = f.start(&f.n.b.clone(), "b");
    let _c = f.start(&f.n.c.clone(), "c");
    for (node, want) in [("a", "hub1"), ("b", "h2"), ("c", "h2")] {
        wait_until(WAIT, || (primary(&f, node)? == want).then_some(()))
            .unwrap_or_else(|| panic!("{node}'s primary is not {want}: {:?}", f.status(node)));
    }
    // Spokes with different primaries reach each other.
    wait_until(WAIT, || f.n.lab.ping(&f.n.a, "100.64.3.2").then_some(()))
        .expect("a (on hub1) reaches c (on h2)");
    assert!(f.n.lab.ping(&f.n.c, "100.64.1.2"), "c reaches a");

    // hub1 loses its network. b and c stay on h2 and lose nothing; a's
    // traffic flows again through h2 within 5 s.
    let steady = f.n.ping_bg(&f.n.b, "100.64.3.2", 80);
    std::thread::sleep(Duration::from_millis(500));
    // a pings c every 100 ms through the failure: what it loses is the
    // cost of one failover.
    let through = f.n.ping_bg(&f.n.a, "100.64.3.2", 60);
    std::thread::sleep(Duration::from_millis(300));
    sh(&["ip", "-n", &f.n.hub, "link", "set", "u0", "down"]);
    let down = Instant::now();
    let flowing = wait_until(Duration::from_secs(10), || {
        let ok = common::run(&[
            "ip",
            "netns",
            "exec",
            &f.n.a,
            "ping",
            "-c",
            "1",
            "-W",
            "0.3",
            "100.64.3.2",
        ])
        .status
        .success();
        ok.then(|| down.elapsed())
    })
    .unwrap_or_else(|| panic!("a never reached c after hub1 went down: {}", a.output()));
    eprintln!("failover: a -> c flows again {flowing:?} after hub1 went down");
    assert!(
        flowing <= Duration::from_secs(5),
        "failover took {flowing:?}"
    );
    assert_eq!(primary(&f, "a").as_deref(), Some("h2"));
    let (sent_a, got_a) = through.finish();
    eprintln!(
        "failover: a -> c lost {} of {sent_a} pings (100 ms apart)",
        sent_a - got_a
    );
    let (sent, got) = steady.finish();
    assert_eq!(
        sent, got,
        "b -> c (both on h2) lost pings during hub1's failure"
    );

    // hub1 returns: a goes back after failback_after (4 s) plus its delay
    // (up to 4 s more), not at once.
    sh(&["ip", "-n", &f.n.hub, "link", "set", "u0", "up"]);
    let up = Instant::now();
    wait_until(Duration::from_secs(20), || {
        (primary(&f, "a")? == "hub1").then_some(())
    })
    .unwrap_or_else(|| panic!("a never failed back: {}", a.output()));
    let back = up.elapsed();
    eprintln!("failback: a is on hub1 again {back:?} after it came back");
    assert!(
        back >= Duration::from_secs(4) && back <= Duration::from_secs(12),
        "failback after {back:?}"
    );
    let log = a.output();
    assert!(
        log.contains("failing over") && log.contains("failing back"),
        "{log}"
    );
    assert!(f.n.lab.ping(&f.n.a, "100.64.3.2"), "a -> c after failback");
}

/// Start BIRD in `ns` with the configuration `lvn export bird` makes for
/// `hub`.
fn start_bird(f: &Fleet, ns: &str, hub: &str) -> NsProcess {
    let bird = ["/usr/sbin/bird", "/usr/bin/bird"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("BIRD 2 is not installed: scripts/test installs Debian's bird2");
    let cfg = f.cfg.to_string_lossy().into_owned();
    let text = sh(&[
        common::lvn_bin(),
        "export",
        "bird",
        "--config",
        &cfg,
        "--node",
        hub,
    ]);
    let conf = f.dir(hub, "bird.conf");
    std::fs::write(&conf, text).unwrap();
    let check = common::run(&[bird, "-p", "-c", &conf]);
    assert!(
        check.status.success(),
        "bird -p refuses the exported file: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    let (sock, pid) = (f.dir(hub, "bird.ctl"), f.dir(hub, "bird.pid"));
    f.n.spawn(
        ns,
        &format!("bird-{hub}"),
        &[bird, "-f", "-c", &conf, "-s", &sock, "-P", &pid],
    )
}

/// A spoke that one hub cannot reach (it answers only the other hub) is
/// still reachable from spokes on that hub: the hubs learn each other's
/// spokes through BIRD (iBGP over the overlay), configured by `lvn export
/// bird`, from lvn's gateway host routes.
#[test]
fn a_spoke_one_hub_cannot_reach_is_reached_through_the_other_hub() {
    let mut f = Fleet::new("bird", &two_hubs());
    let h2 = f.n.lab.host("h2", &[&format!("{H2_IP}/24")]);
    let hub1_ns = f.n.hub.clone();
    let _bird1 = start_bird(&f, &hub1_ns, "hub1");
    let _bird2 = start_bird(&f, &h2, "h2");
    let hub1 = f.start(&hub1_ns, "hub1");
    let _h2 = f.start(&h2, "h2");
    let _a = f.start(&f.n.a.clone(), "a");
    let _c = f.start(&f.n.c.clone(), "c");
    f.wait_peer("c", "up");
    wait_until(WAIT, || f.n.lab.ping(&f.n.a, "100.64.3.2").then_some(()))
        .expect("a (on hub1) reaches c");
    // Gateway host routes: hub1 routes c through c itself, on a nexthop
    // object (`nhid`); BIRD learns them like any kernel route.
    let routes = sh(&["ip", "-n", &hub1_ns, "route", "show", "proto", "76"]);
    assert!(
        routes.lines().any(|l| l.starts_with("100.64.3.2 nhid ")
            && l.contains(" via 100.64.3.2 dev lvn-lab")),
        "{routes}"
    );

    // hub1 stops hearing c (it drops everything from c's NAT address): c
    // expires there, and hub1 routes c through h2, as BIRD learned it.
    let drop = format!(
        "table inet lvntest {{\n chain input {{\n  type filter hook input priority -10; policy accept;\n  ip saddr {NAT2_PUBLIC} drop\n }}\n}}\n"
    );
    load_nft(&hub1_ns, &drop);
    f.wait_peer("c", "expired");
    let via_h2 = wait_until(Duration::from_secs(30), || {
        let r = sh(&["ip", "-n", &hub1_ns, "route", "show", "100.64.3.2"]);
        r.contains("via 100.64.0.4").then_some(r)
    })
    .unwrap_or_else(|| panic!("hub1 never learned c through h2: {}", hub1.output()));
    assert!(via_h2.contains("proto bird"), "{via_h2}");
    wait_until(WAIT, || f.n.lab.ping(&f.n.a, "100.64.3.2").then_some(()))
        .expect("a (on hub1) reaches c through h2");
}

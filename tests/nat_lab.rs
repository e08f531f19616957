//! The NAT lab (tests/common/nat.rs) works, without lvn's daemon: spokes
//! behind port-randomising NAT routers reach the hub, and plain kernel VXLAN
//! through the NAT reproduces ../shared/notes/nat-traversal.md: the hub can
//! reach a spoke only at the public port its *data flow* was mapped to.

mod common;
#[path = "common/nat.rs"]
mod nat;

use std::time::Duration;

use common::{run, sh};
use nat::*;

const VNI: &str = "42";
const HUB_OVERLAY: &str = "100.64.0.1";
const HUB_MAC: &str = "02:4c:64:40:00:01";

/// Overlay address and MAC of spoke number `n` (a = 2, b = 3, c = 4).
fn overlay(n: u8) -> (String, String) {
    (format!("100.64.0.{n}"), format!("02:4c:64:40:00:{n:02x}"))
}

/// Plain kernel VXLAN, as lvn makes it: source port pinned to 4789, no
/// learning.
fn vxlan(ns: &str, mac: &str, addr: &str) {
    sh(&[
        "ip",
        "-n",
        ns,
        "link",
        "add",
        "vx0",
        "type",
        "vxlan",
        "id",
        VNI,
        "dstport",
        "4789",
        "srcport",
        "4789",
        "4790",
        "nolearning",
    ]);
    sh(&["ip", "-n", ns, "link", "set", "vx0", "address", mac, "up"]);
    sh(&[
        "ip",
        "-n",
        ns,
        "addr",
        "add",
        &format!("{addr}/24"),
        "dev",
        "vx0",
    ]);
}

/// A permanent neighbour and FDB entry for an overlay peer.
fn peer(ns: &str, addr: &str, mac: &str, dst: &str, port: Option<u16>) {
    sh(&[
        "ip",
        "-n",
        ns,
        "neigh",
        "replace",
        addr,
        "lladdr",
        mac,
        "dev",
        "vx0",
        "nud",
        "permanent",
    ]);
    let port = port.map(|p| p.to_string());
    let mut fdb = vec![
        "bridge", "-n", ns, "fdb", "append", mac, "dev", "vx0", "dst", dst,
    ];
    if let Some(p) = &port {
        fdb.extend_from_slice(&["port", p]);
    }
    fdb.extend_from_slice(&["self", "permanent"]);
    sh(&fdb);
}

/// One ping, at most 1 s: enough to make the spoke send one encapsulated
/// packet (and so a NAT mapping), whether or not an answer comes back.
fn ping_once(ns: &str, dst: &str) -> bool {
    run(&[
        "ip", "netns", "exec", ns, "ping", "-n", "-c", "1", "-W", "1", dst,
    ])
    .status
    .success()
}

/// The value of a named nftables counter in `table ip probe`.
fn counter(ns: &str, name: &str) -> u64 {
    let out = sh(&[
        "ip", "netns", "exec", ns, "nft", "list", "counter", "ip", "probe", name,
    ]);
    let words: Vec<&str> = out.split_whitespace().collect();
    let i = words
        .iter()
        .position(|w| *w == "packets")
        .unwrap_or_else(|| panic!("no packets in {out}"));
    words[i + 1].parse().expect("packet count")
}

/// The NAT mapping of a spoke's VXLAN flow to the hub (source port 4789),
/// waiting at most 3 s for conntrack to show it.
fn vxlan_mapping(nat: &str, spoke: &str) -> UdpMapping {
    wait_until(Duration::from_secs(3), || {
        udp_mapping(nat, spoke, 4789, HUB_IP)
    })
    .unwrap_or_else(|| {
        panic!(
            "no mapping for {spoke}:4789 -> {HUB_IP} on {nat}:\n{}",
            nat_mappings(nat)
        )
    })
}

fn in_nat_range(port: u16) -> bool {
    (NAT_PORT_MIN..=NAT_PORT_MAX).contains(&port)
}

#[test]
fn spokes_reach_the_hub_from_their_nats_public_address() {
    let nl = NatLab::new("icmp");
    load_nft(
        &nl.hub,
        &format!(
            "table ip probe {{
                counter from_nat1 {{}}
                counter from_nat2 {{}}
                counter from_private {{}}
                chain input {{
                    type filter hook input priority 0;
                    icmp type echo-request ip saddr {NAT1_PUBLIC} counter name from_nat1
                    icmp type echo-request ip saddr {NAT2_PUBLIC} counter name from_nat2
                    ip saddr {{ 192.0.2.0/24, 203.0.113.0/24 }} counter name from_private
                }}
            }}"
        ),
    );
    for spoke in [&nl.a, &nl.b, &nl.c] {
        assert!(nl.lab.ping(spoke, HUB_IP), "{spoke} -> hub underlay");
    }
    assert_eq!(counter(&nl.hub, "from_nat1"), 6, "a and b, 3 pings each");
    assert_eq!(counter(&nl.hub, "from_nat2"), 3, "c, 3 pings");
    assert_eq!(counter(&nl.hub, "from_private"), 0, "no private source");

    let icmp = sh(&[
        "ip",
        "netns",
        "exec",
        &nl.nat1,
        "conntrack",
        "-L",
        "-p",
        "icmp",
    ]);
    for spoke in [A_IP, B_IP] {
        let line = icmp
            .lines()
            .find(|l| l.contains(&format!("src={spoke} dst={HUB_IP}")))
            .unwrap_or_else(|| panic!("no icmp entry for {spoke}:\n{icmp}"));
        assert!(
            line.contains(&format!("src={HUB_IP} dst={NAT1_PUBLIC}")),
            "replies go to the NAT's address: {line}"
        );
    }
    // The hub has no route to the private segments.
    assert!(!nl.lab.ping(&nl.hub, A_IP), "hub reached a private address");
}

#[test]
fn vxlan_through_nat_works_only_at_the_data_flows_mapped_port() {
    let nl = NatLab::new("vxmap");
    let (a_addr, a_mac) = overlay(2);
    vxlan(&nl.hub, HUB_MAC, HUB_OVERLAY);
    vxlan(&nl.a, &a_mac, &a_addr);
    peer(&nl.a, HUB_OVERLAY, HUB_MAC, HUB_IP, None);
    load_nft(
        &nl.hub,
        &format!(
            "table ip probe {{
                counter mapped {{}}
                counter unmapped {{}}
                chain input {{
                    type filter hook input priority 0;
                    ip saddr {NAT1_PUBLIC} udp sport {NAT_PORT_MIN}-{NAT_PORT_MAX} udp dport 4789 counter name mapped
                    ip saddr {NAT1_PUBLIC} udp sport 4789 counter name unmapped
                }}
            }}"
        ),
    );

    // a sends; the hub knows nothing of a yet, so no answer.
    assert!(
        !ping_once(&nl.a, HUB_OVERLAY),
        "hub answered without an entry"
    );
    let m = vxlan_mapping(&nl.nat1, A_IP);
    eprintln!("a's data flow: {m:?}");
    assert_eq!(m.public, NAT1_PUBLIC);
    assert_ne!(m.public_port, 4789, "the NAT kept the port: {m:?}");
    assert!(in_nat_range(m.public_port), "{m:?}");
    assert!(!m.replied, "{m:?}");
    assert!(counter(&nl.hub, "mapped") >= 1, "hub saw the mapped port");
    assert_eq!(counter(&nl.hub, "unmapped"), 0);

    // The hub sends to a's own port 4789 at the NAT's address: lost.
    peer(&nl.hub, &a_addr, &a_mac, NAT1_PUBLIC, None);
    assert!(
        !nl.lab.ping(&nl.hub, &a_addr),
        "reached a without its mapped port"
    );

    // The hub sends to the data flow's mapping: both ways work.
    sh(&[
        "bridge",
        "-n",
        &nl.hub,
        "fdb",
        "del",
        &a_mac,
        "dev",
        "vx0",
        "dst",
        NAT1_PUBLIC,
        "self",
    ]);
    peer(&nl.hub, &a_addr, &a_mac, NAT1_PUBLIC, Some(m.public_port));
    assert!(nl.lab.ping(&nl.hub, &a_addr), "hub -> a at the mapped port");
    assert!(nl.lab.ping(&nl.a, HUB_OVERLAY), "a -> hub");
    let after = vxlan_mapping(&nl.nat1, A_IP);
    assert_eq!(after.public_port, m.public_port, "the mapping stayed");
    assert!(after.replied && after.assured, "{after:?}");
    assert_eq!(counter(&nl.hub, "unmapped"), 0);
}

#[test]
fn spokes_behind_one_nat_get_different_ports_and_all_are_reachable() {
    let nl = NatLab::new("two");
    vxlan(&nl.hub, HUB_MAC, HUB_OVERLAY);
    let spokes = [
        (&nl.a, A_IP, &nl.nat1, 2u8),
        (&nl.b, B_IP, &nl.nat1, 3),
        (&nl.c, C_IP, &nl.nat2, 4),
    ];
    let mut mapped = Vec::new();
    for (ns, ip, nat, n) in spokes {
        let (addr, mac) = overlay(n);
        vxlan(ns, &mac, &addr);
        peer(ns, HUB_OVERLAY, HUB_MAC, HUB_IP, None);
        ping_once(ns, HUB_OVERLAY);
        mapped.push(vxlan_mapping(nat, ip));
    }
    eprintln!("a, b, c: {mapped:#?}");
    let (ma, mb, mc) = (&mapped[0], &mapped[1], &mapped[2]);
    assert_eq!(ma.public, NAT1_PUBLIC);
    assert_eq!(mb.public, NAT1_PUBLIC);
    assert_eq!(mc.public, NAT2_PUBLIC);
    assert_ne!(
        ma.public_port, mb.public_port,
        "two spokes behind one NAT share a port"
    );
    for m in &mapped {
        assert!(in_nat_range(m.public_port), "{m:?}");
    }

    // Two FDB entries to one address with different ports.
    for ((ns, _, _, n), m) in spokes.iter().zip(&mapped) {
        let (addr, mac) = overlay(*n);
        peer(&nl.hub, &addr, &mac, &m.public, Some(m.public_port));
        assert!(nl.lab.ping(&nl.hub, &addr), "hub -> {ns}");
        assert!(nl.lab.ping(ns, HUB_OVERLAY), "{ns} -> hub");
    }
    let fdb = sh(&["bridge", "-n", &nl.hub, "fdb", "show", "dev", "vx0"]);
    for m in &mapped {
        let entry = format!("dst {} port {}", m.public, m.public_port);
        assert!(fdb.contains(&entry), "no `{entry}` in\n{fdb}");
    }
}

#[test]
fn mapping_is_kept_between_packets_and_a_flush_remaps() {
    let nl = NatLab::new("remap");
    let (t_unreplied, t_stream) = udp_timeouts(&nl.nat1);
    assert!(t_unreplied > 0 && t_stream >= t_unreplied);
    set_udp_timeouts(&nl.nat2, 5, 10);
    assert_eq!(
        udp_timeouts(&nl.nat2),
        (5, 10),
        "timeouts are per namespace"
    );
    assert_eq!(udp_timeouts(&nl.nat1), (t_unreplied, t_stream));

    let (a_addr, a_mac) = overlay(2);
    vxlan(&nl.hub, HUB_MAC, HUB_OVERLAY);
    vxlan(&nl.a, &a_mac, &a_addr);
    peer(&nl.a, HUB_OVERLAY, HUB_MAC, HUB_IP, None);
    ping_once(&nl.a, HUB_OVERLAY);
    let first = vxlan_mapping(&nl.nat1, A_IP);
    peer(
        &nl.hub,
        &a_addr,
        &a_mac,
        NAT1_PUBLIC,
        Some(first.public_port),
    );
    assert!(nl.lab.ping(&nl.a, HUB_OVERLAY), "a -> hub");
    std::thread::sleep(Duration::from_secs(1));
    assert!(nl.lab.ping(&nl.a, HUB_OVERLAY), "a -> hub, a second later");
    let later = vxlan_mapping(&nl.nat1, A_IP);
    eprintln!("udp timeouts {t_unreplied}/{t_stream}; first {first:?}; later {later:?}");
    assert_eq!(later.public_port, first.public_port, "same flow, same port");
    assert!(later.assured, "{later:?}");
    assert!(
        later.timeout_secs > t_unreplied,
        "an answered flow gets the stream timeout: {later:?}"
    );

    // A flush forgets the mapping; the next packet gets a new random port
    // (rarely the same one again: try a few times).
    let mut new = None;
    for _ in 0..5 {
        flush_conntrack(&nl.nat1);
        assert!(udp_mapping(&nl.nat1, A_IP, 4789, HUB_IP).is_none());
        ping_once(&nl.a, HUB_OVERLAY);
        let m = vxlan_mapping(&nl.nat1, A_IP);
        if m.public_port != first.public_port {
            new = Some(m);
            break;
        }
    }
    let new = new.expect("five flushes, never a new port");
    eprintln!("after flush: {new:?}");
    assert!(in_nat_range(new.public_port), "{new:?}");
    // The hub still sends to the old port: a's pings go unanswered.
    assert!(
        !nl.lab.ping(&nl.a, HUB_OVERLAY),
        "answer reached a through a stale mapping"
    );
    sh(&[
        "bridge",
        "-n",
        &nl.hub,
        "fdb",
        "replace",
        &a_mac,
        "dev",
        "vx0",
        "dst",
        NAT1_PUBLIC,
        "port",
        &new.public_port.to_string(),
        "self",
        "permanent",
    ]);
    assert!(
        nl.lab.ping(&nl.a, HUB_OVERLAY),
        "a -> hub after the fdb follows"
    );
}

#[test]
fn background_processes_are_in_their_namespace_and_killed_on_drop() {
    let nl = NatLab::new("proc");
    let ping = nl.ping_bg(&nl.a, HUB_IP, 20);
    // Nothing answers in the overlay range here: all lost, none hang.
    let lost = nl.ping_bg(&nl.c, "100.64.0.99", 5);
    assert_eq!(ping.finish(), (20, 20));
    assert_eq!(lost.finish(), (5, 0));

    let ns_of = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/net")).ok();
    let sleeper = nl.spawn(&nl.b, "sleep", &["sleep", "30"]);
    let pid = sleeper.pid().to_string();
    let comm = wait_until(Duration::from_secs(3), || {
        std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .ok()
            .filter(|c| c.trim() == "sleep")
    });
    assert!(comm.is_some(), "ip netns exec did not exec sleep in place");
    let b_net = sh(&[
        "ip",
        "netns",
        "exec",
        &nl.b,
        "readlink",
        "/proc/self/ns/net",
    ]);
    assert_eq!(
        ns_of(&pid).map(|p| p.to_string_lossy().into_owned()),
        Some(b_net.trim().to_string())
    );
    drop(sleeper);
    assert!(ns_of(&pid).is_none(), "sleep {pid} outlived its guard");

    let mut term = nl.spawn(&nl.b, "sleep2", &["sleep", "30"]);
    let status = term.stop(Duration::from_secs(3));
    assert_eq!(status.code(), None, "killed by SIGTERM: {status:?}");

    let prefix = nl.lab.prefix.clone();
    drop(nl);
    let left = sh(&["ip", "netns", "list"]);
    assert!(!left.contains(&prefix), "namespaces left behind:\n{left}");
}

#[test]
fn parsers() {
    let text = "udp      17 28 src=192.0.2.2 dst=198.51.100.1 sport=4789 dport=4789 [UNREPLIED] src=198.51.100.1 dst=198.51.100.2 sport=4789 dport=40063 mark=0 use=1\n\
                udp      17 117 src=192.0.2.3 dst=198.51.100.1 sport=4789 dport=4789 src=198.51.100.1 dst=198.51.100.2 sport=4789 dport=40001 [ASSURED] mark=0 use=1\n";
    let m = parse_udp_mappings(text);
    assert_eq!(m.len(), 2);
    assert_eq!(
        m[0],
        UdpMapping {
            src: "192.0.2.2".into(),
            sport: 4789,
            dst: "198.51.100.1".into(),
            dport: 4789,
            public: "198.51.100.2".into(),
            public_port: 40063,
            replied: false,
            assured: false,
            timeout_secs: 28,
        }
    );
    assert!(m[1].replied && m[1].assured && m[1].public_port == 40001);
    assert_eq!(
        parse_ping_summary(
            "--- x ping statistics ---\n5 packets transmitted, 0 received, +5 errors, 100% packet loss, time 400ms\n"
        ),
        Some((5, 0))
    );
    assert!(nat_ruleset("u0").contains("masquerade to :40000-40100 random"));
}

//! `lvn run` in the NAT lab: a hub on the public segment, spokes behind NAT
//! routers that masquerade with port randomisation (two behind one NAT
//! address). Short timings: keepalive 1s, expire_after 4s.

mod common;
#[path = "common/fleet.rs"]
mod fleet;
#[path = "common/nat.rs"]
mod nat;

use std::time::Duration;

use common::{lvn_bin, run, sh};
use fleet::*;
use nat::*;
use serde_json::Value;

#[test]
fn spokes_behind_nat_get_tunnels_learned_from_their_data_flow() {
    let f = Fleet::new("disc", &topology(NODE_B, ""));
    let _hub = f.start(&f.n.hub.clone(), "hub1");
    let _a = f.start(&f.n.a.clone(), "a");
    let _b = f.start(&f.n.b.clone(), "b");
    let _c = f.start(&f.n.c.clone(), "c");
    for (peer, public, spoke_ip, nat) in [
        ("a", NAT1_PUBLIC, A_IP, &f.n.nat1),
        ("b", NAT1_PUBLIC, B_IP, &f.n.nat1),
        ("c", NAT2_PUBLIC, C_IP, &f.n.nat2),
    ] {
        let p = f.wait_peer(peer, "up");
        assert_eq!(p["source"], "learned");
        let ep = p["endpoint"].as_str().unwrap().to_string();
        assert!(ep.starts_with(&format!("{public}:")), "{peer}: {ep}");
        // The learned port is the NAT's mapping of the spoke's VXLAN flow
        // (source port 4789), not of some other socket.
        let port = mapped_port(&p["endpoint"]);
        assert!(
            (NAT_PORT_MIN..=NAT_PORT_MAX).contains(&port),
            "{peer}: {ep}"
        );
        let m =
            udp_mapping(nat, spoke_ip, 4789, HUB_IP).expect("conntrack mapping of the data flow");
        assert_eq!(
            m.public_port, port,
            "{peer}: learned {ep}, NAT mapped {m:?}"
        );
        assert!(
            f.hub_fdb().contains(&format!("dst {public} port {port}")),
            "{}",
            f.hub_fdb()
        );
    }
    // Both spokes behind one NAT address have tunnels, on different ports.
    let (pa, pb) = (f.wait_peer("a", "up"), f.wait_peer("b", "up"));
    assert_ne!(pa["endpoint"], pb["endpoint"]);

    let lab = &f.n.lab;
    assert!(lab.ping(&f.n.hub, "100.64.1.2"), "hub -> a");
    assert!(lab.ping(&f.n.a, "100.64.0.1"), "a -> hub");
    assert!(
        lab.ping(&f.n.a, "100.64.3.2"),
        "a -> c (different NATs, through the hub)"
    );
    assert!(
        lab.ping(&f.n.a, "100.64.1.3"),
        "a -> b (same NAT, through the hub)"
    );
    assert!(lab.ping(&f.n.c, "100.64.1.3"), "c -> b");

    // The spoke knows its reflexive address, as the hub saw it.
    let s = f.status("a").expect("a's status");
    assert_eq!(s["reflexive"], pa["endpoint"], "{s}");
    assert_eq!(s["peers"][0]["state"], "up");
    // A plan beside the daemon shows nothing to do: learned endpoints included.
    let out = lab.lvn(
        &f.n.hub,
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
}

#[test]
fn a_stopped_spoke_expires_and_returns_behind_a_new_mapping() {
    let f = Fleet::new("expiry", &topology("", ""));
    let _hub = f.start(&f.n.hub.clone(), "hub1");
    let _a = f.start(&f.n.a.clone(), "a");
    let mut c = f.start(&f.n.c.clone(), "c");
    let before = f.wait_peer("c", "up");
    c.stop(Duration::from_secs(5));
    let gone = f.wait_peer("c", "expired");
    assert!(gone["last_seen_secs"].as_f64().unwrap() > 4.0, "{gone}");
    let old = before["endpoint"]
        .as_str()
        .unwrap()
        .rsplit_once(':')
        .unwrap()
        .1
        .to_string();
    assert!(
        !f.hub_fdb().contains(&format!("port {old}")),
        "c's entry is gone: {}",
        f.hub_fdb()
    );
    assert!(!f.n.lab.ping(&f.n.hub, "100.64.3.2"), "no tunnel to c");
    // The nexthop of c's route goes with it: the expiry is planned for c
    // alone, and the datapath tidies what that plan changed.
    let nexthops = || sh(&["ip", "netns", "exec", &f.n.hub, "ip", "nexthop", "show"]);
    for _ in 0..60 {
        if !nexthops().contains("via 100.64.3.2 ") {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!nexthops().contains("via 100.64.3.2 "), "{}", nexthops());
    f.wait_peer("a", "up");
    assert!(
        nexthops().contains("via 100.64.1.2 "),
        "a's stays: {}",
        nexthops()
    );

    flush_conntrack(&f.n.nat2);
    let _c = f.start(&f.n.c.clone(), "c");
    let back = f.wait_peer("c", "up");
    assert!(
        f.n.lab.ping(&f.n.hub, "100.64.3.2"),
        "hub -> c after its return"
    );
    assert!(
        f.n.lab.ping(&f.n.a, "100.64.3.2"),
        "a -> c after its return"
    );
    let m = udp_mapping(&f.n.nat2, C_IP, 4789, HUB_IP).expect("new mapping");
    assert_eq!(
        mapped_port(&back["endpoint"]),
        m.public_port,
        "follows the new mapping"
    );
}

fn genkey(path: &str) -> String {
    sh(&[lvn_bin(), "genkey", path]).trim().to_string()
}

#[test]
fn wrong_keys_get_no_tunnel_and_a_replayed_keepalive_moves_nothing() {
    let n = NatLab::new("auth");
    let dir = n.lab.dir.path().to_path_buf();
    let key = |name: &str| {
        dir.join(format!("{name}.key"))
            .to_string_lossy()
            .into_owned()
    };
    let (kh, ka, kc) = (genkey(&key("hub1")), genkey(&key("a")), genkey(&key("c")));
    let impostor = genkey(&key("c-impostor"));
    let text = |c_key: &str| {
        topology("", "auth = \"keys\"")
            .replace(
                &format!("endpoint = \"{HUB_IP}\""),
                &format!("endpoint = \"{HUB_IP}\"\npublic_key = \"{kh}\""),
            )
            .replace(
                "address = \"100.64.1.2\"",
                &format!("address = \"100.64.1.2\"\npublic_key = \"{ka}\""),
            )
            .replace(
                "address = \"100.64.3.2\"",
                &format!("address = \"100.64.3.2\"\npublic_key = \"{c_key}\""),
            )
    };
    let cfg = n.lab.write_config("topology.toml", &text(&kc));
    // c's machine runs with a key the fleet does not know (its own file
    // declares it): its keepalives cannot be verified by the hub.
    let cfg_c = n.lab.write_config("impostor.toml", &text(&impostor));
    let f = Fleet { n, cfg };
    let _hub = f.start_with(
        &f.n.hub.clone(),
        "hub1",
        &f.cfg.clone(),
        &["--key-file", &key("hub1")],
    );
    let _a = f.start_with(
        &f.n.a.clone(),
        "a",
        &f.cfg.clone(),
        &["--key-file", &key("a")],
    );
    let _c = f.start_with(
        &f.n.c.clone(),
        "c",
        &cfg_c,
        &["--key-file", &key("c-impostor")],
    );
    let a = f.wait_peer("a", "up");
    std::thread::sleep(Duration::from_secs(3));
    let s = f.status("hub1").expect("hub status");
    let c = s["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "c")
        .unwrap()
        .clone();
    assert_eq!(c["state"], "waiting", "c never gets a tunnel: {s}");
    assert!(
        s["counters"]["rejected_bad_tag"].as_u64().unwrap_or(0) >= 2,
        "{s}"
    );
    assert!(!f.hub_fdb().contains(NAT2_PUBLIC), "{}", f.hub_fdb());

    // Capture one of a's keepalives on the hub's underlay and replay it
    // from c's network (another address and port).
    let payload = capture_keepalive(&f.n.hub);
    replay(&f.n.c, &payload);
    std::thread::sleep(Duration::from_millis(500));
    let s = f.status("hub1").expect("hub status");
    assert!(
        s["counters"]["rejected_replay"].as_u64().unwrap_or(0) >= 1,
        "{s}"
    );
    let a_now = s["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "a")
        .unwrap()
        .clone();
    assert_eq!(
        a_now["endpoint"], a["endpoint"],
        "the replay did not move a's endpoint"
    );
    assert!(f.n.lab.ping(&f.n.hub, "100.64.1.2"), "a still works");
}

#[test]
fn live_reload_applies_only_the_diff_and_refuses_an_invalid_file() {
    let f = Fleet::new("reload", &topology("", ""));
    let mut hub = f.start(&f.n.hub.clone(), "hub1");
    let _a = f.start(&f.n.a.clone(), "a");
    let _c = f.start(&f.n.c.clone(), "c");
    f.wait_peer("a", "up");
    f.wait_peer("c", "up");
    assert!(f.n.lab.ping(&f.n.a, "100.64.3.2"), "a -> c before the edit");

    let ping = f.n.ping_bg(&f.n.a, "100.64.3.2", 60);
    // An editor-style atomic rename adds spoke b.
    let tmp = f.cfg.with_extension("tmp");
    std::fs::write(&tmp, topology(NODE_B, "")).unwrap();
    std::fs::rename(&tmp, &f.cfg).unwrap();
    wait_until(WAIT, || {
        hub.output()
            .contains("reload (file changed): applying")
            .then_some(())
    })
    .expect("hub reloaded");
    let _b = f.start(&f.n.b.clone(), "b");
    f.wait_peer("b", "up");
    // An invalid edit: refused with FILE:LINE:COL, nothing changes.
    std::fs::write(&tmp, topology(NODE_B, "").replace("vni = 77", "vni = 77x")).unwrap();
    std::fs::rename(&tmp, &f.cfg).unwrap();
    wait_until(WAIT, || {
        hub.output()
            .contains("the new file is refused")
            .then_some(())
    })
    .expect("invalid file refused");
    let (sent, got) = ping.finish();
    assert_eq!(
        sent, got,
        "the continuous ping a -> c lost nothing during reloads"
    );

    let log = hub.output();
    let cfg = f.cfg.to_string_lossy();
    assert!(
        log.contains(&format!("{cfg}:5:7: string values must be quoted")),
        "error names file:line:col: {log}"
    );
    // Only b's entries were added after the first reload; nothing removed.
    let after_reload = log
        .split("reload (file changed): applying")
        .nth(1)
        .unwrap_or("");
    assert!(
        !after_reload.contains(" - "),
        "nothing removed: {after_reload}"
    );
    assert!(
        after_reload.contains("+ fdb") && after_reload.contains("(b: learned endpoint)"),
        "{after_reload}"
    );
    for line in after_reload
        .lines()
        .filter(|l| l.contains(" + ") || l.contains(" ~ "))
    {
        assert!(line.contains("(b: "), "only b's entries change: {line}");
    }
    assert!(
        f.n.lab.ping(&f.n.a, "100.64.1.3"),
        "a -> b after the reload"
    );
    hub.stop(Duration::from_secs(5));
}

#[test]
fn restarting_the_hub_daemon_loses_no_ping_and_deletes_nothing() {
    let f = Fleet::new("restart", &topology("", ""));
    let mut hub = f.start(&f.n.hub.clone(), "hub1");
    let _a = f.start(&f.n.a.clone(), "a");
    let _c = f.start(&f.n.c.clone(), "c");
    f.wait_peer("a", "up");
    f.wait_peer("c", "up");
    let ping = f.n.ping_bg(&f.n.a, "100.64.3.2", 50);
    std::thread::sleep(Duration::from_millis(1000));
    hub.stop(Duration::from_secs(5));
    let hub2 = f.start(&f.n.hub.clone(), "hub1");
    std::thread::sleep(Duration::from_millis(1500));
    let (sent, got) = ping.finish();
    assert_eq!(sent, got, "no ping lost across the hub's restart");
    let log = hub2.output();
    assert!(log.contains("restored 2 peers"), "{log}");
    assert!(!log.contains(" - "), "the restart deleted nothing: {log}");
    assert!(!log.contains(" + fdb"), "nor re-added anything: {log}");
}

#[test]
fn drift_is_repaired_by_the_daemon() {
    let f = Fleet::new("drift", &topology("", ""));
    let hub = f.start(&f.n.hub.clone(), "hub1");
    let _a = f.start(&f.n.a.clone(), "a");
    f.wait_peer("a", "up");
    // A learned entry removed by hand comes back (resync every 2s here).
    sh(&[
        "ip",
        "-n",
        &f.n.hub,
        "neigh",
        "del",
        "100.64.1.2",
        "dev",
        "lvn-lab",
    ]);
    wait_until(WAIT, || f.n.lab.ping(&f.n.hub, "100.64.1.2").then_some(()))
        .expect("neighbour restored");
    // The device deleted by hand comes back with everything on it, learned
    // endpoints included.
    sh(&["ip", "-n", &f.n.hub, "link", "del", "lvn-lab"]);
    wait_until(WAIT, || f.n.lab.ping(&f.n.a, "100.64.0.1").then_some(())).expect("device restored");
    assert!(
        f.n.lab.ping(&f.n.hub, "100.64.1.2"),
        "hub -> a after repair"
    );
    let log = hub.output();
    assert!(log.contains("+ link lvn-lab"), "{log}");
    assert!(log.contains("(a: learned endpoint)"), "{log}");
}

#[test]
fn a_kubernetes_configmap_symlink_swap_is_reloaded() {
    let f = Fleet::new("k8s", &topology("", ""));
    // The layout kubelet makes: topology.toml -> ..data/topology.toml,
    // ..data -> ..<timestamp>/, swapped by renaming a new ..data symlink.
    let dir = f.n.lab.dir.path().join("configmap");
    let v1 = dir.join("..2026_11_25_v1");
    std::fs::create_dir_all(&v1).unwrap();
    std::fs::write(v1.join("topology.toml"), topology("", "")).unwrap();
    std::os::unix::fs::symlink("..2026_11_25_v1", dir.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/topology.toml", dir.join("topology.toml")).unwrap();
    let cfg = dir.join("topology.toml");
    let hub = f.start_with(&f.n.hub.clone(), "hub1", &cfg, &[]);
    wait_until(WAIT, || hub.output().contains("running").then_some(())).expect("hub up");

    let v2 = dir.join("..2026_11_25_v2");
    std::fs::create_dir_all(&v2).unwrap();
    std::fs::write(
        v2.join("topology.toml"),
        topology("", "").replace("vni = 77", "vni = 77\nmtu = 1400"),
    )
    .unwrap();
    std::os::unix::fs::symlink("..2026_11_25_v2", dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    wait_until(WAIT, || {
        hub.output().contains("[mtu 1450 -> 1400]").then_some(())
    })
    .unwrap_or_else(|| panic!("the swap was not applied: {}", hub.output()));
    let link = sh(&["ip", "-n", &f.n.hub, "link", "show", "lvn-lab"]);
    assert!(link.contains("mtu 1400"), "{link}");
}

/// The metrics endpoint of a hub, fetched from inside its namespace.
fn scrape(ns: &str, port: u16) -> String {
    let script = format!(
        "import urllib.request\nprint(urllib.request.urlopen('http://127.0.0.1:{port}/metrics', timeout=5).read().decode(), end='')\n"
    );
    sh(&["ip", "netns", "exec", ns, "python3", "-c", &script])
}

fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no metric {prefix} in:\n{text}"))
}

#[test]
fn metrics_match_what_happened_and_pass_promtool() {
    let f = Fleet::new("metrics", &topology("", ""));
    let hub = f.start_with(
        &f.n.hub.clone(),
        "hub1",
        &f.cfg.clone(),
        &["--metrics", "127.0.0.1:9477", "--resync", "1h"],
    );
    // One spoke after the other: two of the three nodes learned in one
    // burst are more than the half a narrowed reconcile takes (one full
    // reconcile is cheaper then), and the check of narrowed reconciles
    // below failed so in CI. A resync's full reconcile could install
    // them too, hence 1h.
    let _a = f.start(&f.n.a.clone(), "a");
    f.wait_peer("a", "up");
    let _c = f.start(&f.n.c.clone(), "c");
    f.wait_peer("c", "up");
    // Something to reject: a VXLAN packet (VNI 77) carrying a keepalive
    // frame whose payload is cut short, from c's network.
    replay(
        &f.n.c,
        "0800000000004d00024c64400001024c6440030288b54c564e3100",
    );
    std::thread::sleep(Duration::from_millis(300));

    let text = scrape(&f.n.hub, 9477);
    let file = f.n.lab.dir.path().join("metrics.txt");
    std::fs::write(&file, &text).unwrap();
    let out = run(&[
        "sh",
        "-c",
        &format!("promtool check metrics < {}", file.display()),
    ]);
    assert!(
        out.status.success(),
        "promtool: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let node = "lvn_peers{node=\"hub1\",network=\"lab\",state=";
    assert_eq!(metric(&text, &format!("{node}\"up\"}}")), 2.0, "{text}");
    assert_eq!(
        metric(&text, &format!("{node}\"waiting\"}}")),
        0.0,
        "{text}"
    );
    // Two learned peers: two fdb entries and two neighbours added, two
    // endpoint changes.
    let added = |kind: &str| {
        metric(
            &text,
            &format!(
                "lvn_changes_applied_total{{node=\"hub1\",network=\"lab\",kind=\"{kind}\",action=\"add\"}}"
            ),
        )
    };
    assert_eq!(added("fdb"), 2.0, "{text}");
    assert_eq!(added("neigh"), 2.0, "{text}");
    assert_eq!(metric(&text, "lvn_endpoint_changes_total{"), 2.0, "{text}");
    // The start, and at least one for the learned endpoints (a burst of
    // learning is installed by one reconcile).
    let runs = metric(
        &text,
        "lvn_reconcile_runs_total{node=\"hub1\",network=\"lab\",result=\"ok\"}",
    );
    assert!(runs >= 2.0, "{text}");
    // The learned endpoints were installed without a dump of the kernel:
    // only the start looked at everything.
    let narrowed = metric(&text, "lvn_reconcile_narrowed_total{");
    assert!(narrowed >= 1.0 && narrowed < runs, "{text}");
    assert_eq!(
        metric(&text, "lvn_reconcile_duration_seconds_count{"),
        runs + metric(
            &text,
            "lvn_reconcile_runs_total{node=\"hub1\",network=\"lab\",result=\"error\"}"
        ),
        "{text}"
    );
    // The counters agree with the daemon's own status.
    let s = f.status("hub1").unwrap();
    let accepted = metric(&text, "lvn_keepalives_accepted_total{");
    assert!(
        accepted >= 2.0 && accepted <= s["counters"]["accepted"].as_f64().unwrap(),
        "{text}"
    );
    assert!(
        metric(
            &text,
            "lvn_keepalives_rejected_total{node=\"hub1\",network=\"lab\",reason=\"malformed\"}"
        ) >= 1.0,
        "{text}"
    );
    let hash = sh(&["sha256sum", &f.cfg.to_string_lossy()]);
    let hash = hash.split_whitespace().next().unwrap();
    assert!(text.contains(&format!("sha256=\"{hash}\"}} 1")), "{text}");
    drop(hub);
}

#[test]
fn json_logs_carry_one_change_per_line_with_its_reason() {
    let f = Fleet::new("json", &topology("", ""));
    let cfg = f.cfg.to_string_lossy().into_owned();
    let (state, runs) = (f.dir("hub1", "state"), f.dir("hub1", "run"));
    let hub = f.n.spawn_env(
        &f.n.hub.clone(),
        "hub1",
        &[
            lvn_bin(),
            "run",
            "--config",
            &cfg,
            "--node",
            "hub1",
            "--state-dir",
            &state,
            "--run-dir",
            &runs,
            "--log-format",
            "json",
        ],
        &[("LVN_LOG", "info")],
    );
    let _a = f.start(&f.n.a.clone(), "a");
    f.wait_peer("a", "up");
    let log = hub.output();
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let fdb = lines
        .iter()
        .find(|v| {
            v["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("+ fdb"))
        })
        .unwrap_or_else(|| panic!("no fdb line: {log}"));
    assert!(
        fdb["message"]
            .as_str()
            .unwrap()
            .ends_with("(a: learned endpoint)"),
        "{fdb}"
    );
    assert_eq!(fdb["level"], "INFO");
}

//! `lvn run` when things go wrong, in the NAT lab: a datapath the kernel
//! cannot carry, a foreign device in the way, a reload that fails late, a
//! silent metrics client, an invalid file beside the daemon's own log, a
//! reload that renames the device. Each test is named after the defect it
//! guards against (issue 8).

mod common;
#[path = "common/fleet.rs"]
mod fleet;
#[path = "common/nat.rs"]
mod nat;

use std::time::{Duration, Instant};

use common::{lvn_bin, sh};
use fleet::*;
use nat::*;

/// CPU seconds (user + system) a process has used, from /proc.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let f: Vec<f64> = after
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0.0))
        .collect();
    // Fields 14 and 15 (utime, stime) are the 12th and 13th after the name.
    let ticks = f.get(11).copied().unwrap_or(0.0) + f.get(12).copied().unwrap_or(0.0);
    ticks / 100.0
}

/// Watch a hub that cannot reconcile for `secs`: its error lines and CPU.
fn watch_failing_hub(f: &Fleet, secs: u64) -> (usize, f64, String) {
    let mut hub = f.start(&f.n.hub.clone(), "hub1");
    wait_until(WAIT, || hub.output().contains("running").then_some(()))
        .unwrap_or_else(|| panic!("hub did not start: {}", hub.output()));
    let cpu0 = cpu_seconds(hub.pid());
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    let cpu = (cpu_seconds(hub.pid()) - cpu0) / t0.elapsed().as_secs_f64();
    let status = f
        .status("hub1")
        .map(|s| s["reconcile"].to_string())
        .unwrap_or_default();
    assert!(
        hub.is_running(),
        "the hub must keep running: {}",
        hub.output()
    );
    hub.stop(Duration::from_secs(5));
    let log = hub.output();
    let errors = log.lines().filter(|l| l.contains("ERROR")).count();
    (errors, cpu, format!("{status}\n{log}"))
}

/// Defect 3.1: with an unloadable datapath (fou on a kernel without ipip)
/// or a foreign device named lvn-lab in the way, `lvn run` wrote thousands
/// of error lines a second. Now: a few a minute, under 1 % of a core, and
/// `lvn status` says what is wrong.
#[test]
fn busy_loop_on_a_persistent_error_backs_off() {
    let f = Fleet::new("busy-dev", &topology("", ""));
    sh(&[
        "ip", "-n", &f.n.hub, "link", "add", "lvn-lab", "type", "bridge",
    ]);
    let (errors, cpu, log) = watch_failing_hub(&f, 12);
    assert!(errors <= 3, "{errors} error lines in 12 s:\n{log}");
    assert!(cpu < 0.01, "{:.2} % of a core:\n{log}", cpu * 100.0);
    assert!(log.contains("is not lvn's"), "{log}");
    assert!(
        log.contains("\"failures\":"),
        "status shows the failure: {log}"
    );
    // The foreign device is untouched.
    let link = sh(&["ip", "-n", &f.n.hub, "-d", "link", "show", "lvn-lab"]);
    assert!(link.contains("bridge"), "{link}");

    if std::path::Path::new("/sys/module/ipip").exists() {
        return; // this kernel can run fou: nothing fails
    }
    let f = Fleet::new("busy-fou", &topology("", "datapath = \"fou\""));
    let (errors, cpu, log) = watch_failing_hub(&f, 12);
    assert!(errors <= 3, "{errors} error lines in 12 s:\n{log}");
    assert!(cpu < 0.01, "{:.2} % of a core:\n{log}", cpu * 100.0);
    assert!(log.contains("modprobe"), "says how to fix it: {log}");
}

/// Defect 3.2: a reload that fails after `lvn check` would pass (a peer's
/// low-order public key) rebuilt the hub's probe from nothing, and the next
/// resync deleted every learned spoke's entries.
#[test]
fn a_failed_reload_keeps_every_learned_spoke_pingable() {
    let f = Fleet::new("lowkey", &topology("", ""));
    let (keys, text) = f.keyed_topology(&["hub1", "a", "c"]);
    std::fs::write(&f.cfg, &text).unwrap();
    let mut hub = f.start_keyed("hub1", &keys);
    let _a = f.start_keyed("a", &keys);
    let _c = f.start_keyed("c", &keys);
    f.wait_peer("a", "up");
    f.wait_peer("c", "up");
    let ping = f.n.ping_bg(&f.n.a, "100.64.3.2", 60);
    // Node c's key becomes the all-zero point: refused, nothing changes.
    let low = text.replace(&keys["c"].1, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=");
    assert_ne!(low, text);
    std::fs::write(&f.cfg, low).unwrap();
    hub.signal("HUP");
    wait_until(WAIT, || hub.output().contains("refused").then_some(()))
        .unwrap_or_else(|| panic!("reload not refused: {}", hub.output()));
    // Two resyncs later (every 2 s), everyone is still there.
    std::thread::sleep(Duration::from_secs(5));
    let (sent, got) = ping.finish();
    assert_eq!(sent, got, "a -> c lost pings after a failed reload");
    let log = hub.output();
    let after = log.split("refused").nth(1).unwrap_or("");
    assert!(!after.contains(" - "), "removed something: {after}");
    assert!(f.n.lab.ping(&f.n.hub, "100.64.1.2") && f.n.lab.ping(&f.n.hub, "100.64.3.2"));
}

/// Defect 3.7: three silent TCP connections to `--metrics` stopped
/// keepalive handling for about 6 s, and `lvn status` timed out.
#[test]
fn a_slow_http_client_does_not_freeze_the_daemon() {
    let f = Fleet::new("slowhttp", &topology("", ""));
    let hub = f.start_with(
        &f.n.hub.clone(),
        "hub1",
        &f.cfg.clone(),
        &["--metrics", "127.0.0.1:9477"],
    );
    let _a = f.start(&f.n.a.clone(), "a");
    f.wait_peer("a", "up");
    let received = |f: &Fleet| {
        f.status("hub1")
            .and_then(|s| s["counters"]["received"].as_u64())
            .unwrap_or(0)
    };
    // Three clients connect and say nothing for 8 s.
    let silent = "import socket, time\nss = [socket.create_connection(('127.0.0.1', 9477)) for _ in range(3)]\ntime.sleep(8)\n";
    let mut clients = f.n.spawn(&f.n.hub, "silent", &["python3", "-c", silent]);
    std::thread::sleep(Duration::from_millis(500));
    let before = received(&f);
    let t0 = Instant::now();
    for _ in 0..4 {
        let t = Instant::now();
        let st = f.status("hub1");
        assert!(st.is_some(), "lvn status failed while clients were silent");
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "lvn status took {:?}",
            t.elapsed()
        );
        std::thread::sleep(Duration::from_millis(800));
    }
    let after = received(&f);
    assert!(
        after >= before + 2,
        "keepalives handled in {:?}: {before} -> {after}",
        t0.elapsed()
    );
    assert!(
        clients.is_running(),
        "the silent clients were still connected"
    );
    clients.kill();
    drop(hub);
}

/// Defect 3.10: `lvn status` failed with the file's parse error while the
/// topology held an invalid edit, instead of asking the daemon.
#[test]
fn status_answers_while_the_file_is_invalid() {
    let f = Fleet::new("statusbad", &topology("", ""));
    let hub = f.start(&f.n.hub.clone(), "hub1");
    wait_until(WAIT, || f.status("hub1")).expect("hub answers");
    std::fs::write(&f.cfg, "[network\nname = ").unwrap();
    let st = wait_until(WAIT, || {
        let s = f.status("hub1")?;
        s["config"]["refused"].is_string().then_some(s)
    })
    .unwrap_or_else(|| panic!("no status with an invalid file: {}", hub.output()));
    assert_eq!(st["network"], "lab");
    assert_eq!(st["role"], "hub");
}

/// Defect 3.11: with the daemon's log file beside an invalid topology, the
/// hub logged the same parse error 12 times in 6 s: its own log line changed
/// the directory, which triggered another reload. Also (3.12): `lvn run`
/// logs what it does at info without LVN_LOG.
#[test]
fn the_file_watch_ignores_the_daemons_own_log() {
    let f = Fleet::new("watchlog", &topology("", ""));
    let log = f.cfg.with_file_name("hub.log");
    let cfg = f.cfg.to_string_lossy().into_owned();
    let (state, runs) = (f.dir("hub1", "state"), f.dir("hub1", "run"));
    let args = [
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
    ];
    let hub = spawn_in(&f.n.hub, &args, &[], &log);
    // "running" comes before the first reconcile's lines: wait for both.
    wait_until(WAIT, || {
        let out = hub.output();
        (out.contains("running") && out.contains("+ link lvn-lab")).then_some(())
    })
    .unwrap_or_else(|| panic!("no info lines by default: {}", hub.output()));
    std::fs::write(&f.cfg, "[network]\nname = 3\n").unwrap();
    std::thread::sleep(Duration::from_secs(6));
    let out = hub.output();
    assert_eq!(out.matches("the new file is refused").count(), 1, "{out}");
}

/// Defect 3.9: changing `device` in a reload must remove the old device and
/// create the new one, in one reload, without an endless retry.
#[test]
fn a_reload_that_renames_the_device_replaces_it() {
    let f = Fleet::new("rename", &topology("", ""));
    let hub = f.start(&f.n.hub.clone(), "hub1");
    let _a = f.start(&f.n.a.clone(), "a");
    f.wait_peer("a", "up");
    let renamed = topology("", "").replace("vni = 77", "vni = 77\ndevice = \"lvn-new\"");
    let tmp = f.cfg.with_extension("tmp");
    std::fs::write(&tmp, renamed).unwrap();
    std::fs::rename(&tmp, &f.cfg).unwrap();
    wait_until(WAIT, || f.n.lab.ping(&f.n.hub, "100.64.1.2").then_some(()))
        .unwrap_or_else(|| panic!("a unreachable after the rename: {}", hub.output()));
    let links = sh(&["ip", "-n", &f.n.hub, "-o", "link", "show"]);
    assert!(links.contains("lvn-new"), "{links}");
    assert!(!links.contains("lvn-lab"), "the old device stayed: {links}");
    let out = hub.output();
    assert!(!out.contains("ERROR"), "{out}");
}

/// Defect 3.4: only live peers went to the state file, so after a hub
/// restart a captured keepalive of an expired spoke was accepted again, from
/// any address, and moved its endpoint.
#[test]
fn replay_counters_of_expired_peers_survive_a_restart() {
    let f = Fleet::new("replayexp", &topology("", ""));
    let (keys, text) = f.keyed_topology(&["hub1", "a", "c"]);
    std::fs::write(&f.cfg, &text).unwrap();
    let mut hub = f.start_keyed("hub1", &keys);
    let mut a = f.start_keyed("a", &keys);
    f.wait_peer("a", "up");
    let captured = capture_keepalive(&f.n.hub);
    a.stop(Duration::from_secs(5));
    f.wait_peer("a", "expired");
    hub.stop(Duration::from_secs(5));
    let hub2 = f.start_keyed("hub1", &keys);
    f.wait_peer("a", "expired");
    // Replayed from behind the other NAT.
    replay(&f.n.c, &captured);
    let rejected = wait_until(WAIT, || {
        let s = f.status("hub1")?;
        s["counters"]["rejected_replay"]
            .as_u64()
            .filter(|n| *n >= 1)
    });
    let st = f.status("hub1").unwrap_or_default();
    let peer = st["peers"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["name"] == "a").cloned())
        .unwrap_or_default();
    assert_eq!(
        peer["state"],
        "expired",
        "a replay brought a back: {peer}\n{}",
        hub2.output()
    );
    assert!(rejected.is_some(), "the replay was not refused: {st}");
}

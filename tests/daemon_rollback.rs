//! A reload that cuts a spoke off, in the NAT lab: spoke a gets a file where
//! its hub's endpoint is wrong; no hub answers, so within `confirm_after`
//! (default four keepalives: 4 s here) plus a keepalive it goes back to the
//! previous file and pings through the hub again. The bad file is not
//! applied again until it changes; a harmless change is kept (issue 10).

mod common;
#[path = "common/fleet.rs"]
mod fleet;
#[path = "common/nat.rs"]
mod nat;

use std::time::{Duration, Instant};

use fleet::*;
use nat::*;

fn sha256(text: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn count(log: &str, needle: &str) -> usize {
    log.matches(needle).count()
}

/// Replace `path` the way editors and git do: write beside it, rename.
fn replace(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[test]
fn a_reload_that_cuts_a_spoke_off_is_rolled_back_and_not_retried() {
    let f = Fleet::new("rollback", &topology("", ""));
    let good = topology("", "");
    // Spoke a reads its own copy: the hub keeps the good file.
    let cfg_a = f.n.lab.write_config("a.toml", &good);
    let _hub = f.start(&f.n.hub.clone(), "hub1");
    let a = f.start_with(&f.n.a.clone(), "a", &cfg_a, &[]);
    f.wait_peer("a", "up");
    assert!(f.n.lab.ping(&f.n.a, "100.64.0.1"), "a -> hub before");
    wait_until(WAIT, || {
        let s = f.status("a")?;
        (s["config"]["confirm_in_secs"].is_null() && s["primary"] == "hub1").then_some(())
    })
    .expect("a's file confirmed");

    // The hub's endpoint is wrong in the new file.
    let bad = good.replace(
        &format!("endpoint = \"{HUB_IP}\""),
        "endpoint = \"198.51.100.99\"",
    );
    assert_ne!(bad, good);
    let bad_sha = sha256(&bad);
    let t0 = Instant::now();
    replace(&cfg_a, &bad);
    wait_until(WAIT, || {
        a.output()
            .contains(&format!("applying topology sha256 {bad_sha}"))
            .then_some(())
    })
    .unwrap_or_else(|| panic!("a never applied the new file: {}", a.output()));
    let back = wait_until(WAIT, || {
        a.output()
            .contains(&format!("rolled back topology sha256 {bad_sha}"))
            .then(|| t0.elapsed())
    })
    .unwrap_or_else(|| panic!("a never rolled back: {}", a.output()));
    // confirm_after (4 s) plus one keepalive (1 s), plus the file watch
    // and the reconciles.
    eprintln!("rolled back {back:?} after the file was written");
    assert!(back < Duration::from_secs(7), "rolled back after {back:?}");
    let log = a.output();
    let line = log
        .lines()
        .find(|l| l.contains("rolled back topology"))
        .unwrap_or_default();
    assert!(
        line.contains(&sha256(&good)) && line.contains("no hub answered"),
        "the log line names both hashes and the reason: {line}"
    );
    assert!(
        wait_until(WAIT, || f.n.lab.ping(&f.n.a, "100.64.0.1").then_some(())).is_some(),
        "a -> hub after the rollback"
    );
    let s = f.status("a").expect("a's status");
    assert_eq!(s["config"]["sha256"], sha256(&good));
    assert_eq!(s["config"]["rolled_back_from"], bad_sha.as_str());

    // Resyncs (every 2 s) and the same file written again: not retried.
    std::thread::sleep(Duration::from_secs(3));
    replace(&cfg_a, &bad);
    std::thread::sleep(Duration::from_secs(3));
    let log = a.output();
    assert_eq!(
        count(&log, &format!("applying topology sha256 {bad_sha}")),
        1,
        "the rolled-back file was applied again: {log}"
    );
    assert!(f.n.lab.ping(&f.n.a, "100.64.0.1"), "a -> hub still");

    // A harmless change (a new spoke) is applied and kept.
    let harmless = topology(NODE_B, "");
    replace(&cfg_a, &harmless);
    wait_until(WAIT, || {
        let s = f.status("a")?;
        (s["config"]["sha256"] == sha256(&harmless)
            && s["config"]["confirm_in_secs"].is_null()
            && s["config"]["rolled_back_from"].is_null())
        .then_some(())
    })
    .unwrap_or_else(|| panic!("the harmless change was not confirmed: {:?}", f.status("a")));
    std::thread::sleep(Duration::from_secs(5));
    let log = a.output();
    assert_eq!(count(&log, "rolled back topology"), 1, "{log}");
    let s = f.status("a").expect("a's status");
    assert_eq!(s["config"]["sha256"], sha256(&harmless));
    let kept = std::fs::read_to_string(
        std::path::Path::new(&f.dir("a", "state")).join("lab.last-good.toml"),
    )
    .expect("the last good file");
    assert_eq!(kept, harmless);
    assert!(f.n.lab.ping(&f.n.a, "100.64.0.1"), "a -> hub at the end");
}

#[test]
fn a_spoke_restarted_on_a_rolled_back_file_starts_on_the_last_good_one() {
    let f = Fleet::new("rbrestart", &topology("", ""));
    let good = topology("", "");
    let cfg_a = f.n.lab.write_config("a.toml", &good);
    let _hub = f.start(&f.n.hub.clone(), "hub1");
    let mut a = f.start_with(&f.n.a.clone(), "a", &cfg_a, &[]);
    f.wait_peer("a", "up");
    wait_until(WAIT, || {
        let s = f.status("a")?;
        s["config"]["confirm_in_secs"].is_null().then_some(())
    })
    .expect("a's file confirmed");
    let bad = good.replace(
        &format!("endpoint = \"{HUB_IP}\""),
        "endpoint = \"198.51.100.99\"",
    );
    replace(&cfg_a, &bad);
    wait_until(WAIT, || {
        a.output().contains("rolled back topology").then_some(())
    })
    .unwrap_or_else(|| panic!("a never rolled back: {}", a.output()));
    a.stop(Duration::from_secs(5));
    // The bad file is still on disk; the restarted spoke runs the good one.
    let mut again = f.start_with(&f.n.a.clone(), "a", &cfg_a, &[]);
    wait_until(WAIT, || {
        again
            .output()
            .contains("starting on the last good file")
            .then_some(())
    })
    .unwrap_or_else(|| panic!("{}", again.output()));
    assert!(
        wait_until(WAIT, || f.n.lab.ping(&f.n.a, "100.64.0.1").then_some(())).is_some(),
        "a -> hub after the restart"
    );
    let s = f.status("a").expect("a's status");
    assert_eq!(s["config"]["sha256"], sha256(&good));
    assert_eq!(s["config"]["rolled_back_from"], sha256(&bad).as_str());
    again.stop(Duration::from_secs(5));
}

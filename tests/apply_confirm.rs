//! `lvn apply --confirm` and `lvn confirm` against the real kernel: a hub in
//! a namespace; without a confirmation the kernel goes back to the last good
//! file (a second plan against it is empty), with one it keeps the new file.

mod common;

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use common::Lab;

const HUB: &str = "198.51.100.1";

fn topology(extra: &str) -> String {
    format!(
        r#"[network]
name = "conf"
overlay = "100.64.0.0/16"
port = 4789
vni = 77

[nodes.hub1]
role = "hub"
address = "100.64.0.1"
endpoint = "{HUB}"

[nodes.alice]
address = "100.64.1.2"
endpoint = "198.51.100.2"
{extra}"#
    )
}

const BOB: &str = "\n[nodes.bob]\naddress = \"100.64.1.3\"\nendpoint = \"198.51.100.3\"\n";

struct Case {
    lab: Lab,
    hub: String,
    old: std::path::PathBuf,
    new: std::path::PathBuf,
}

fn case(tag: &str) -> Case {
    let mut lab = Lab::new(tag);
    let hub = lab.host("hub", &[&format!("{HUB}/24")]);
    let old = lab.write_config("old.toml", &topology(""));
    let new = lab.write_config("new.toml", &topology(BOB));
    lab.lvn_ok(&hub, &old, "hub1", &["apply"]);
    Case { lab, hub, old, new }
}

impl Case {
    /// `lvn apply --confirm WINDOW` with the new file, in the background.
    fn apply_confirm(&self, window: &str) -> Child {
        let args = self.lab.lvn_args(
            &self.hub,
            &self.new,
            "hub1",
            &["apply", "--confirm", window],
        );
        Command::new(&args[0])
            .args(&args[1..])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn lvn apply --confirm")
    }

    fn socket(&self) -> std::path::PathBuf {
        self.lab.dirs(&self.hub).1.join("conf.confirm.sock")
    }

    /// `lvn plan --detailed-exitcode` against `cfg`: 0 when the kernel
    /// matches it.
    fn plan_code(&self, cfg: &std::path::Path) -> Option<i32> {
        self.lab
            .lvn(&self.hub, cfg, "hub1", &["plan", "--detailed-exitcode"])
            .status
            .code()
    }

    fn last_good(&self) -> String {
        let state = self.lab.dirs(&self.hub).0;
        std::fs::read_to_string(state.join("conf.last-good.toml")).expect("last good file")
    }
}

/// Poll `f` every 50 ms until it gives something, for at most `timeout`.
fn wait_until<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Wait for the child to exit (killing it after `timeout`); its exit code
/// and everything it printed.
fn wait_exit(mut child: Child, timeout: Duration) -> (Option<i32>, String) {
    let end = Instant::now() + timeout;
    while Instant::now() < end && child.try_wait().ok().flatten().is_none() {
        std::thread::sleep(Duration::from_millis(50));
    }
    if child.try_wait().ok().flatten().is_none() {
        let _ = child.kill();
    }
    let out = child.wait_with_output().expect("wait");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code(), text)
}

#[test]
fn apply_confirm_without_confirmation_goes_back_to_the_last_good_file() {
    let c = case("unconfirmed");
    assert_eq!(
        c.plan_code(&c.new),
        Some(2),
        "the new file changes something"
    );
    let started = Instant::now();
    let apply = c.apply_confirm("3s");
    // While it waits, the new file is what the kernel holds.
    wait_until(Duration::from_secs(10), || {
        c.socket().exists().then_some(())
    })
    .expect("the apply waits for a confirmation");
    assert_eq!(c.plan_code(&c.new), Some(0), "the new file is applied");
    let (code, out) = wait_exit(apply, Duration::from_secs(20));
    assert_eq!(code, Some(1), "reverted: exit 1\n{out}");
    assert!(started.elapsed() >= Duration::from_secs(3), "{out}");
    assert!(out.contains("no `lvn confirm` within 3s"), "{out}");
    assert_eq!(c.plan_code(&c.old), Some(0), "back on the old file\n{out}");
    assert_eq!(c.last_good(), topology(""), "the last good file stays");
    assert!(!c.socket().exists(), "the socket is removed");
}

#[test]
fn apply_confirm_with_confirmation_keeps_the_new_file() {
    let c = case("confirmed");
    let apply = c.apply_confirm("30s");
    wait_until(Duration::from_secs(10), || {
        c.socket().exists().then_some(())
    })
    .expect("the apply waits for a confirmation");
    // The wrong node is refused, and the apply keeps waiting.
    let wrong = c.lab.lvn(&c.hub, &c.new, "alice", &["confirm"]);
    assert_eq!(wrong.status.code(), Some(1));
    let ok = c.lab.lvn_ok(&c.hub, &c.new, "hub1", &["confirm"]);
    assert!(ok.contains("Confirmed"), "{ok}");
    let (code, out) = wait_exit(apply, Duration::from_secs(10));
    assert_eq!(code, Some(0), "confirmed: exit 0\n{out}");
    assert_eq!(c.plan_code(&c.new), Some(0), "the new file stays");
    assert_eq!(
        c.last_good(),
        topology(BOB),
        "the new file is the last good one"
    );
    // Nothing waits any more.
    let none = c.lab.lvn(&c.hub, &c.new, "hub1", &["confirm"]);
    assert_eq!(none.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&none.stderr).contains("no `lvn apply --confirm` is waiting"));
}

#[test]
fn ctrl_c_during_the_window_goes_back() {
    let c = case("interrupted");
    let apply = c.apply_confirm("60s");
    wait_until(Duration::from_secs(10), || {
        c.socket().exists().then_some(())
    })
    .expect("the apply waits for a confirmation");
    let pid = apply.id().to_string();
    // `ip netns exec` runs lvn in its own process (exec): the PID is lvn's.
    common::sh(&["kill", "-INT", &pid]);
    let (code, out) = wait_exit(apply, Duration::from_secs(10));
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("interrupted"), "{out}");
    assert_eq!(c.plan_code(&c.old), Some(0), "back on the old file\n{out}");
}

#[test]
fn apply_confirm_needs_a_previous_apply() {
    let mut lab = Lab::new("noprevious");
    let hub = lab.host("hub", &[&format!("{HUB}/24")]);
    let cfg = lab.write_config("t.toml", &topology(""));
    let out = lab.lvn(&hub, &cfg, "hub1", &["apply", "--confirm", "3s"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("run `lvn apply` without --confirm once"),
        "{err}"
    );
    let plan = lab.lvn(&hub, &cfg, "hub1", &["plan", "--detailed-exitcode"]);
    assert_eq!(plan.status.code(), Some(2), "nothing was applied");
}

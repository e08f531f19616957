//! A lab of network namespaces for tests against the real kernel. Every
//! namespace a lab makes carries the lab's unique prefix and is deleted by
//! name when the lab is dropped, pass or fail.

#![allow(dead_code)]

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::atomic::{AtomicUsize, Ordering},
};

static LABS: AtomicUsize = AtomicUsize::new(0);

pub fn lvn_bin() -> &'static str {
    env!("CARGO_BIN_EXE_lvn")
}

pub fn require_root() {
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
        })
        .unwrap_or_default();
    assert_eq!(
        uid, "0",
        "kernel tests need root: run them with `sudo ./scripts/test`"
    );
}

/// Run a command, panic with its output if it fails.
pub fn sh(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "command failed: {}\nstdout: {}\nstderr: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn run<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Output {
    Command::new(&args[0])
        .args(&args[1..])
        .env_remove("LVN_CONFIG")
        .env_remove("LVN_NODE")
        .env_remove("LVN_STATE_DIR")
        .env_remove("LVN_RUN_DIR")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {:?}: {e}", args[0].as_ref()))
}

pub struct Lab {
    pub prefix: String,
    namespaces: Vec<String>,
    pub dir: tempfile::TempDir,
}

impl Lab {
    /// A lab with an underlay switch (a bridge in its own namespace).
    pub fn new(tag: &str) -> Lab {
        require_root();
        let n = LABS.fetch_add(1, Ordering::SeqCst);
        let prefix = format!("lvnt-{}-{n}-{tag}", std::process::id());
        let mut lab = Lab {
            prefix,
            namespaces: Vec::new(),
            dir: tempfile::tempdir().expect("tempdir"),
        };
        let sw = lab.add_ns("sw");
        sh(&["ip", "-n", &sw, "link", "add", "br0", "type", "bridge"]);
        sh(&["ip", "-n", &sw, "link", "set", "br0", "up"]);
        lab
    }

    pub fn ns(&self, name: &str) -> String {
        format!("{}-{name}", self.prefix)
    }

    fn add_ns(&mut self, name: &str) -> String {
        let ns = self.ns(name);
        sh(&["ip", "netns", "add", &ns]);
        self.namespaces.push(ns.clone());
        sh(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
        ns
    }

    /// A host on the underlay switch with device `u0` and these addresses
    /// (IPv6 ones without duplicate address detection).
    pub fn host(&mut self, name: &str, addrs: &[&str]) -> String {
        let ns = self.add_ns(name);
        let sw = self.ns("sw");
        let port = format!("p-{name}");
        sh(&[
            "ip", "-n", &ns, "link", "add", "u0", "type", "veth", "peer", "name", &port, "netns",
            &sw,
        ]);
        sh(&["ip", "-n", &sw, "link", "set", &port, "master", "br0", "up"]);
        sh(&["ip", "-n", &ns, "link", "set", "u0", "up"]);
        for a in addrs {
            self.add_addr(&ns, a);
        }
        ns
    }

    pub fn add_addr(&self, ns: &str, a: &str) {
        if a.contains(':') {
            sh(&["ip", "-n", ns, "addr", "add", a, "dev", "u0", "nodad"]);
        } else {
            sh(&["ip", "-n", ns, "addr", "add", a, "dev", "u0"]);
        }
    }

    pub fn write_config(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).expect("write config");
        p
    }

    /// The state and run directories of lvn commands in namespace `ns`
    /// (never the machine's own /var/lib/lvn and /run/lvn).
    pub fn dirs(&self, ns: &str) -> (PathBuf, PathBuf) {
        let base = self.dir.path().join(ns);
        (base.join("state"), base.join("run"))
    }

    /// Run lvn inside a namespace, with the namespace's own state and run
    /// directories unless `args` name others.
    pub fn lvn(&self, ns: &str, config: &Path, node: &str, args: &[&str]) -> Output {
        run(&self.lvn_args(ns, config, node, args))
    }

    /// The command line of [`Lab::lvn`].
    pub fn lvn_args(&self, ns: &str, config: &Path, node: &str, args: &[&str]) -> Vec<String> {
        let (state, run_dir) = self.dirs(ns);
        let mut all: Vec<String> = ["ip", "netns", "exec", ns, lvn_bin()]
            .iter()
            .map(ToString::to_string)
            .collect();
        all.extend(args.iter().map(ToString::to_string));
        for (flag, v) in [
            ("--config", config),
            ("--state-dir", &state),
            ("--run-dir", &run_dir),
        ] {
            if args.contains(&flag) {
                continue;
            }
            all.push(flag.into());
            all.push(v.to_string_lossy().into_owned());
        }
        all.push("--node".into());
        all.push(node.into());
        all
    }

    /// Run lvn and require exit 0; return stdout.
    pub fn lvn_ok(&self, ns: &str, config: &Path, node: &str, args: &[&str]) -> String {
        let out = self.lvn(ns, config, node, args);
        assert!(
            out.status.success(),
            "lvn {} on {node} failed ({:?})\nstdout: {}\nstderr: {}",
            args.join(" "),
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `lvn apply --json`, parsed.
    pub fn apply_json(&self, ns: &str, config: &Path, node: &str) -> serde_json::Value {
        let out = self.lvn_ok(ns, config, node, &["apply", "--json"]);
        serde_json::from_str(&out).expect("apply --json output is JSON")
    }

    /// `lvn plan --json`, parsed.
    pub fn plan_json(&self, ns: &str, config: &Path, node: &str) -> serde_json::Value {
        let out = self.lvn_ok(ns, config, node, &["plan", "--json"]);
        serde_json::from_str(&out).expect("plan --json output is JSON")
    }

    /// True if `dst` answers 3 pings from `ns` (each waits at most 1 s).
    pub fn ping(&self, ns: &str, dst: &str) -> bool {
        run(&[
            "ip", "netns", "exec", ns, "ping", "-c", "3", "-i", "0.2", "-W", "1", dst,
        ])
        .status
        .success()
    }

    pub fn in_ns(&self, ns: &str, args: &[&str]) -> String {
        let mut all = vec!["ip", "netns", "exec", ns];
        all.extend_from_slice(args);
        sh(&all)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.namespaces.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

//! A NAT lab for daemon tests: a hub on a public segment, NAT routers that
//! masquerade with port randomisation, and spokes behind them.
//!
//! ```text
//!                      public segment "sw" 198.51.100.0/24
//!   hub 198.51.100.1 ───────┬────────────────────────────┐
//!                    nat1 u0 198.51.100.2          nat2 u0 198.51.100.3
//!                    nat1 lan0 192.0.2.1           nat2 lan0 203.0.113.1
//!                      ├── a 192.0.2.2               └── c 203.0.113.2
//!                      └── b 192.0.2.3
//! ```
//!
//! Use it from a test crate root with
//! `mod common; #[path = "common/nat.rs"] mod nat;`.
//!
//! The hub and the NAT routers are hosts of the underlying [`Lab`] (device
//! `u0` on its switch). Each NAT router holds its private segment as a bridge
//! `lan0`; a spoke's device is `u0` too, a veth whose peer `l-<name>` is a
//! port of that bridge. Spokes' namespaces carry the lab's prefix and are
//! deleted by name when the `NatLab` is dropped (and if building it panics).

#![allow(dead_code)]

use std::{
    cell::RefCell,
    fs::File,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::atomic::{AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use crate::common::{Lab, run, sh};

pub const HUB_IP: &str = "198.51.100.1";
pub const NAT1_PUBLIC: &str = "198.51.100.2";
pub const NAT1_LAN: &str = "192.0.2.1";
pub const A_IP: &str = "192.0.2.2";
pub const B_IP: &str = "192.0.2.3";
pub const NAT2_PUBLIC: &str = "198.51.100.3";
pub const NAT2_LAN: &str = "203.0.113.1";
pub const C_IP: &str = "203.0.113.2";
/// The NAT routers' device on the public segment.
pub const PUBLIC_DEV: &str = "u0";
/// The NAT routers' bridge for their private segment.
pub const LAN_DEV: &str = "lan0";
/// UDP leaving a NAT router gets a random source port in this range.
pub const NAT_PORT_MIN: u16 = 40000;
pub const NAT_PORT_MAX: u16 = 40100;

static LOGS: AtomicUsize = AtomicUsize::new(0);

/// The nftables ruleset of a NAT router whose public device is `public_dev`:
/// UDP is masqueraded to a random port in 40000-40100, everything else
/// (ICMP included) is masqueraded with a random port/id.
pub fn nat_ruleset(public_dev: &str) -> String {
    format!(
        "table ip lvnnat {{\n\
         \tchain post {{\n\
         \t\ttype nat hook postrouting priority srcnat;\n\
         \t\toifname \"{public_dev}\" meta l4proto udp masquerade to :{NAT_PORT_MIN}-{NAT_PORT_MAX} random\n\
         \t\toifname \"{public_dev}\" masquerade random\n\
         \t}}\n\
         }}\n"
    )
}

/// Namespaces made here (not by `Lab`), deleted by name on drop.
struct Namespaces(RefCell<Vec<String>>);

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in self.0.borrow().iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

pub struct NatLab {
    // Field order is drop order: the spokes go first, then the lab.
    own: Namespaces,
    pub lab: Lab,
    /// Namespace names (pass them to `ip -n`, `lab.lvn`, the helpers below).
    pub hub: String,
    pub nat1: String,
    pub nat2: String,
    pub a: String,
    pub b: String,
    pub c: String,
}

impl NatLab {
    /// The whole topology of the module comment; nothing is running in it.
    pub fn new(tag: &str) -> NatLab {
        let own = Namespaces(RefCell::new(Vec::new()));
        let mut lab = Lab::new(tag);
        let hub = lab.host("hub", &[&format!("{HUB_IP}/24")]);
        let nat1 = add_nat(
            &mut lab,
            "nat1",
            &format!("{NAT1_PUBLIC}/24"),
            &format!("{NAT1_LAN}/24"),
        );
        let nat2 = add_nat(
            &mut lab,
            "nat2",
            &format!("{NAT2_PUBLIC}/24"),
            &format!("{NAT2_LAN}/24"),
        );
        let a = add_spoke(&lab, &own, "a", &nat1, &format!("{A_IP}/24"), NAT1_LAN);
        let b = add_spoke(&lab, &own, "b", &nat1, &format!("{B_IP}/24"), NAT1_LAN);
        let c = add_spoke(&lab, &own, "c", &nat2, &format!("{C_IP}/24"), NAT2_LAN);
        NatLab {
            own,
            lab,
            hub,
            nat1,
            nat2,
            a,
            b,
            c,
        }
    }

    /// One more NAT router: `u0` on the public segment with `public_cidr`,
    /// bridge `lan0` with `lan_cidr`, forwarding on, [`nat_ruleset`] loaded.
    /// Returns its namespace.
    pub fn add_nat(&mut self, name: &str, public_cidr: &str, lan_cidr: &str) -> String {
        add_nat(&mut self.lab, name, public_cidr, lan_cidr)
    }

    /// One more spoke (name at most 13 characters) behind the NAT router in
    /// namespace `nat`: device `u0` with `cidr`, default route via `gateway`.
    /// Returns its namespace.
    pub fn add_spoke(&self, name: &str, nat: &str, cidr: &str, gateway: &str) -> String {
        add_spoke(&self.lab, &self.own, name, nat, cidr, gateway)
    }

    /// A fresh log file path in the lab's temporary directory.
    pub fn log_path(&self, name: &str) -> PathBuf {
        let n = LOGS.fetch_add(1, Ordering::SeqCst);
        self.lab.dir.path().join(format!("{name}-{n}.log"))
    }

    /// Start `args` inside `ns`, stdout and stderr to a log file in the lab's
    /// directory. Killed (by PID) when the guard is dropped.
    pub fn spawn(&self, ns: &str, name: &str, args: &[&str]) -> NsProcess {
        spawn_in(ns, args, &[], &self.log_path(name))
    }

    /// [`NatLab::spawn`] with extra environment variables.
    pub fn spawn_env(
        &self,
        ns: &str,
        name: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> NsProcess {
        spawn_in(ns, args, env, &self.log_path(name))
    }

    /// A continuous ping (`ping -i 0.1 -c count -W 1 dst`) from `ns`, running
    /// in the background until [`BgPing::finish`].
    pub fn ping_bg(&self, ns: &str, dst: &str, count: u32) -> BgPing {
        ping_bg(ns, dst, count, &self.log_path("ping"))
    }
}

fn add_nat(lab: &mut Lab, name: &str, public_cidr: &str, lan_cidr: &str) -> String {
    let ns = lab.host(name, &[public_cidr]);
    sh(&["ip", "-n", &ns, "link", "add", LAN_DEV, "type", "bridge"]);
    sh(&["ip", "-n", &ns, "link", "set", LAN_DEV, "up"]);
    sh(&["ip", "-n", &ns, "addr", "add", lan_cidr, "dev", LAN_DEV]);
    set_sysctl(&ns, "net.ipv4.ip_forward", "1");
    load_nft(&ns, &nat_ruleset(PUBLIC_DEV));
    ns
}

fn add_spoke(
    lab: &Lab,
    own: &Namespaces,
    name: &str,
    nat: &str,
    cidr: &str,
    gateway: &str,
) -> String {
    let peer = format!("l-{name}");
    assert!(peer.len() <= 15, "spoke name too long: {name}");
    let ns = lab.ns(name);
    sh(&["ip", "netns", "add", &ns]);
    own.0.borrow_mut().push(ns.clone());
    sh(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
    sh(&[
        "ip", "-n", &ns, "link", "add", "u0", "type", "veth", "peer", "name", &peer, "netns", nat,
    ]);
    sh(&[
        "ip", "-n", nat, "link", "set", &peer, "master", LAN_DEV, "up",
    ]);
    sh(&["ip", "-n", &ns, "link", "set", "u0", "up"]);
    sh(&["ip", "-n", &ns, "addr", "add", cidr, "dev", "u0"]);
    sh(&["ip", "-n", &ns, "route", "add", "default", "via", gateway]);
    ns
}

/// Load an nftables ruleset (text in `nft -f` syntax) into a namespace.
pub fn load_nft(ns: &str, ruleset: &str) {
    use std::io::Write;
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot run nft");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(ruleset.as_bytes())
        .expect("write ruleset to nft");
    let out = child.wait_with_output().expect("wait for nft");
    assert!(
        out.status.success(),
        "nft -f in {ns} failed: {}\n{ruleset}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `sysctl -w key=value` inside a namespace.
pub fn set_sysctl(ns: &str, key: &str, value: &str) {
    sh(&[
        "ip",
        "netns",
        "exec",
        ns,
        "sysctl",
        "-qw",
        &format!("{key}={value}"),
    ]);
}

/// `sysctl -n key` inside a namespace.
pub fn sysctl(ns: &str, key: &str) -> String {
    sh(&["ip", "netns", "exec", ns, "sysctl", "-n", key])
        .trim()
        .to_string()
}

/// The NAT's UDP conntrack timeouts in seconds: (unreplied, stream). The
/// kernel's defaults are (30, 120).
pub fn udp_timeouts(nat: &str) -> (u64, u64) {
    let get = |k: &str| -> u64 {
        let v = sysctl(nat, k);
        v.parse().unwrap_or_else(|_| panic!("{k} = {v:?}"))
    };
    (
        get("net.netfilter.nf_conntrack_udp_timeout"),
        get("net.netfilter.nf_conntrack_udp_timeout_stream"),
    )
}

/// Set the NAT's UDP conntrack timeouts (unreplied, stream) in seconds, e.g.
/// to make a binding expire quickly without keepalives. Entries that already
/// exist keep the timeout they were last refreshed with.
pub fn set_udp_timeouts(nat: &str, unreplied: u64, stream: u64) {
    set_sysctl(
        nat,
        "net.netfilter.nf_conntrack_udp_timeout",
        &unreplied.to_string(),
    );
    set_sysctl(
        nat,
        "net.netfilter.nf_conntrack_udp_timeout_stream",
        &stream.to_string(),
    );
}

/// Forget every NAT mapping of the router in namespace `nat`: the next packet
/// of each flow gets a new (random) public port.
pub fn flush_conntrack(nat: &str) {
    sh(&["ip", "netns", "exec", nat, "conntrack", "-F"]);
}

/// `conntrack -L -p udp` in the router's namespace, as text.
pub fn nat_mappings(nat: &str) -> String {
    sh(&["ip", "netns", "exec", nat, "conntrack", "-L", "-p", "udp"])
}

/// One UDP conntrack entry of a NAT router.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpMapping {
    /// Original direction, as the spoke sent it.
    pub src: String,
    pub sport: u16,
    pub dst: String,
    pub dport: u16,
    /// The public address and port the NAT rewrote the source to (the reply
    /// direction's destination). Equal to src/sport for a flow not NATed.
    pub public: String,
    pub public_port: u16,
    /// False while conntrack shows `[UNREPLIED]`.
    pub replied: bool,
    pub assured: bool,
    /// Seconds left before the entry (and the mapping) expires.
    pub timeout_secs: u64,
}

/// Parse `conntrack -L -p udp` output.
pub fn parse_udp_mappings(text: &str) -> Vec<UdpMapping> {
    let mut out = Vec::new();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.first() != Some(&"udp") || words.len() < 3 {
            continue;
        }
        let timeout_secs = words[2].parse().unwrap_or(0);
        let values =
            |key: &str| -> Vec<&str> { words.iter().filter_map(|w| w.strip_prefix(key)).collect() };
        let (src, dst, sport, dport) = (
            values("src="),
            values("dst="),
            values("sport="),
            values("dport="),
        );
        if src.len() < 2 || dst.len() < 2 || sport.len() < 2 || dport.len() < 2 {
            continue;
        }
        let port = |s: &str| s.parse::<u16>().unwrap_or(0);
        out.push(UdpMapping {
            src: src[0].to_string(),
            sport: port(sport[0]),
            dst: dst[0].to_string(),
            dport: port(dport[0]),
            public: dst[1].to_string(),
            public_port: port(dport[1]),
            replied: !words.contains(&"[UNREPLIED]"),
            assured: words.contains(&"[ASSURED]"),
            timeout_secs,
        });
    }
    out
}

/// Every UDP conntrack entry of the router in namespace `nat`.
pub fn udp_mappings(nat: &str) -> Vec<UdpMapping> {
    parse_udp_mappings(&nat_mappings(nat))
}

/// The mapping of the flow `src:sport -> dst` (any destination port) on the
/// router in namespace `nat`, if conntrack has one.
pub fn udp_mapping(nat: &str, src: &str, sport: u16, dst: &str) -> Option<UdpMapping> {
    udp_mappings(nat)
        .into_iter()
        .find(|m| m.src == src && m.sport == sport && m.dst == dst)
}

/// Poll `f` every 50 ms until it returns `Some`, for at most `timeout`.
pub fn wait_until<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A process started inside a namespace. Dropping the guard kills it (SIGKILL
/// to its own PID) and reaps it.
pub struct NsProcess {
    child: Child,
    pub log: PathBuf,
    exited: Option<ExitStatus>,
}

/// Start `args` in namespace `ns` with `ip netns exec`, which execs the
/// program in place: the child's PID is the program's own. stdout and stderr
/// go to `log`; stdin is closed. `LVN_CONFIG` and `LVN_NODE` are removed from
/// the environment, then `env` is added.
pub fn spawn_in(ns: &str, args: &[&str], env: &[(&str, &str)], log: &Path) -> NsProcess {
    let out = File::create(log).unwrap_or_else(|e| panic!("create {}: {e}", log.display()));
    let err = out.try_clone().expect("dup log file");
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns])
        .args(args)
        .env_remove("LVN_CONFIG")
        .env_remove("LVN_NODE")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {args:?} in {ns}: {e}"));
    NsProcess {
        child,
        log: log.to_path_buf(),
        exited: None,
    }
}

impl NsProcess {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the process wrote so far (stdout and stderr interleaved).
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// True until the process has exited.
    pub fn is_running(&mut self) -> bool {
        self.poll().is_none()
    }

    /// The exit status, if the process has exited (reaps it).
    pub fn poll(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().expect("try_wait");
        }
        self.exited
    }

    /// Send a signal by name (`TERM`, `HUP`, `INT`, `KILL`, ...) to the
    /// process's PID, unless it has already exited.
    pub fn signal(&mut self, sig: &str) {
        if self.is_running() {
            let _ = run(&["kill", "-s", sig, &self.pid().to_string()]);
        }
    }

    /// Wait at most `timeout` for the process to exit by itself.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        wait_until(timeout, || self.poll())
    }

    /// SIGTERM, wait at most `timeout`, then SIGKILL. Returns the exit status
    /// (a signal death shows as `code() == None`).
    pub fn stop(&mut self, timeout: Duration) -> ExitStatus {
        self.signal("TERM");
        if let Some(s) = self.wait_timeout(timeout) {
            return s;
        }
        self.kill()
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) -> ExitStatus {
        if let Some(s) = self.poll() {
            return s;
        }
        let _ = self.child.kill();
        let s = self.child.wait().expect("wait");
        self.exited = Some(s);
        s
    }
}

impl Drop for NsProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A `ping -i 0.1 -c N -W 1` running in the background.
pub struct BgPing {
    proc: NsProcess,
    count: u32,
}

/// Start a continuous ping from `ns` to `dst`, output to `log`.
pub fn ping_bg(ns: &str, dst: &str, count: u32, log: &Path) -> BgPing {
    let c = count.to_string();
    let proc = spawn_in(
        ns,
        &["ping", "-n", "-i", "0.1", "-c", &c, "-W", "1", dst],
        &[],
        log,
    );
    BgPing { proc, count }
}

impl BgPing {
    /// Wait for ping to finish (at most count x 0.1 s + 5 s, then SIGINT so
    /// it still prints its summary) and return (transmitted, received).
    pub fn finish(mut self) -> (u32, u32) {
        let budget = Duration::from_millis(100 * u64::from(self.count) + 5000);
        if self.proc.wait_timeout(budget).is_none() {
            self.proc.signal("INT");
            if self.proc.wait_timeout(Duration::from_secs(3)).is_none() {
                self.proc.kill();
            }
        }
        let out = self.proc.output();
        parse_ping_summary(&out).unwrap_or_else(|| panic!("no ping summary in:\n{out}"))
    }

    /// What ping printed so far.
    pub fn output(&self) -> String {
        self.proc.output()
    }
}

/// (transmitted, received) from ping's "N packets transmitted, M received" line.
pub fn parse_ping_summary(text: &str) -> Option<(u32, u32)> {
    let line = text.lines().find(|l| l.contains("packets transmitted"))?;
    let mut parts = line.split(", ");
    let tx = parts.next()?.split_whitespace().next()?.parse().ok()?;
    let rx = parts.next()?.split_whitespace().next()?.parse().ok()?;
    Some((tx, rx))
}

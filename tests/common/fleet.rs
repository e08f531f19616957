//! A fleet of `lvn run` daemons in the NAT lab: the topology they share,
//! starting them, asking them for their status.

#![allow(dead_code)]

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::Duration,
};

use serde_json::Value;

use super::{
    common::{lvn_bin, run, sh},
    nat::*,
};

pub const WAIT: Duration = Duration::from_secs(15);

pub fn topology(extra_nodes: &str, auth: &str) -> String {
    format!(
        r#"[network]
name = "lab"
overlay = "100.64.0.0/16"
port = 4789
vni = 77
keepalive = "1s"
expire_after = "4s"
{auth}

[nodes.hub1]
role = "hub"
address = "100.64.0.1"
endpoint = "{HUB_IP}"

[nodes.a]
address = "100.64.1.2"

[nodes.c]
address = "100.64.3.2"
{extra_nodes}"#
    )
}

pub const NODE_B: &str = "\n[nodes.b]\naddress = \"100.64.1.3\"\n";

pub struct Fleet {
    pub n: NatLab,
    pub cfg: PathBuf,
}

impl Fleet {
    pub fn new(tag: &str, text: &str) -> Fleet {
        let n = NatLab::new(tag);
        let cfg = n.lab.write_config("topology.toml", text);
        Fleet { n, cfg }
    }

    pub fn dir(&self, node: &str, what: &str) -> String {
        self.n
            .lab
            .dir
            .path()
            .join(format!("{node}-{what}"))
            .to_string_lossy()
            .into_owned()
    }

    pub fn start_with(&self, ns: &str, node: &str, cfg: &Path, extra: &[&str]) -> NsProcess {
        let cfg = cfg.to_string_lossy().into_owned();
        let (state, runs) = (self.dir(node, "state"), self.dir(node, "run"));
        let mut args = vec![
            lvn_bin(),
            "run",
            "--config",
            &cfg,
            "--node",
            node,
            "--state-dir",
            &state,
            "--run-dir",
            &runs,
        ];
        // Every 2 s unless the test picks its own.
        if !extra.contains(&"--resync") {
            args.extend_from_slice(&["--resync", "2s"]);
        }
        args.extend_from_slice(extra);
        self.n.spawn_env(ns, node, &args, &[("LVN_LOG", "info")])
    }

    pub fn start(&self, ns: &str, node: &str) -> NsProcess {
        self.start_with(ns, node, &self.cfg.clone(), &[])
    }

    pub fn status(&self, node: &str) -> Option<Value> {
        let cfg = self.cfg.to_string_lossy().into_owned();
        let out = run(&[
            lvn_bin(),
            "status",
            "--json",
            "--config",
            &cfg,
            "--run-dir",
            &self.dir(node, "run"),
        ]);
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).ok())
            .flatten()
    }

    /// The hub's view of `peer`, once it is in `state`. "up" also waits
    /// for the peer's entry in the hub's kernel: status says "up" once the
    /// keepalive is accepted, a moment before the reconcile installs it.
    pub fn wait_peer(&self, peer: &str, state: &str) -> Value {
        let seen = wait_until(WAIT, || {
            let s = self.status("hub1")?;
            s["peers"]
                .as_array()?
                .iter()
                .find(|p| p["name"] == peer && p["state"] == state)
                .cloned()
        })
        .unwrap_or_else(|| panic!("hub never saw {peer} {state}: {:?}", self.status("hub1")));
        if let (Some(mac), "up") = (overlay_mac(&seen["address"]), state) {
            wait_until(WAIT, || {
                let out = run(&self.hub_fdb_command());
                // No such VXLAN device (fou): nothing to wait for.
                (!out.status.success() || String::from_utf8_lossy(&out.stdout).contains(&mac))
                    .then_some(())
            })
            .unwrap_or_else(|| panic!("{peer} is up but not in the hub's fdb: {}", self.hub_fdb()));
        }
        seen
    }

    /// `bridge fdb show dev lvn-lab` in the hub's namespace.
    fn hub_fdb_command(&self) -> [&str; 9] {
        [
            "ip",
            "netns",
            "exec",
            &self.n.hub,
            "bridge",
            "fdb",
            "show",
            "dev",
            "lvn-lab",
        ]
    }

    pub fn hub_fdb(&self) -> String {
        sh(&self.hub_fdb_command())
    }

    /// `text` with `auth = "keys"` and a fresh key for each of `nodes`:
    /// returns node -> (key file, public key) and the text.
    pub fn keyed_topology(&self, nodes: &[&str]) -> (BTreeMap<String, (String, String)>, String) {
        let mut keys = BTreeMap::new();
        let mut text = topology("", "auth = \"keys\"");
        for node in nodes {
            let path = self.dir(node, "key");
            let public = sh(&[lvn_bin(), "genkey", &path]).trim().to_string();
            let header = format!("[nodes.{node}]\n");
            text = text.replace(&header, &format!("{header}public_key = \"{public}\"\n"));
            keys.insert(node.to_string(), (path, public));
        }
        (keys, text)
    }

    /// Start `node` in its own namespace with its key from `keys`.
    pub fn start_keyed(&self, node: &str, keys: &BTreeMap<String, (String, String)>) -> NsProcess {
        let ns = match node {
            "hub1" => self.n.hub.clone(),
            "a" => self.n.a.clone(),
            "b" => self.n.b.clone(),
            _ => self.n.c.clone(),
        };
        self.start_with(&ns, node, &self.cfg.clone(), &["--key-file", &keys[node].0])
    }
}

/// The MAC lvn derives from an IPv4 overlay address (02:4c + its bytes).
fn overlay_mac(address: &Value) -> Option<String> {
    let ip: std::net::Ipv4Addr = address.as_str()?.parse().ok()?;
    let [a, b, c, d] = ip.octets();
    Some(format!("02:4c:{a:02x}:{b:02x}:{c:02x}:{d:02x}"))
}

pub fn mapped_port(endpoint: &Value) -> u16 {
    endpoint
        .as_str()
        .and_then(|e| e.rsplit_once(':'))
        .and_then(|(_, p)| p.parse().ok())
        .expect("endpoint ip:port")
}

/// The UDP payload (VXLAN header onwards) of one of a's keepalives reaching the hub.
pub fn capture_keepalive(hub_ns: &str) -> String {
    let script = r#"
import socket, sys, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
s.bind(("u0", 0))
s.settimeout(5)
end = time.time() + 5
while time.time() < end:
    f = s.recv(2048)
    ip = f[14:]
    ihl = (ip[0] & 15) * 4
    if ip[9] != 17: continue
    udp = ip[ihl:]
    if int.from_bytes(udp[2:4], "big") != 4789: continue
    inner = udp[16:]
    # a's keepalives only: the sender name (length 1, "a") at body offset 16.
    if inner[12:14] == b"\x88\xb5" and inner[14:18] == b"LVN1" and inner[30:32] == b"\x01a":
        print(udp[8:].hex()); sys.exit(0)
sys.exit(1)
"#;
    sh(&["ip", "netns", "exec", hub_ns, "python3", "-c", script])
        .trim()
        .to_string()
}

pub fn replay(ns: &str, hex: &str) {
    let script = format!(
        "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.sendto(bytes.fromhex('{hex}'), ('{HUB_IP}', 4789))\n"
    );
    sh(&["ip", "netns", "exec", ns, "python3", "-c", &script]);
}

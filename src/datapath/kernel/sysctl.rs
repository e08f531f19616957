//! Per-device settings under /proc/sys (`forwarding`, `send_redirects`):
//! read for lvn's devices and for `default` (what a new device starts
//! with), written as plain files.

use std::{collections::BTreeMap, io};

use ipnet::IpNet;

use crate::reconcile::{Observed, Sysctl, sysctl_key};

/// Device settings lvn reads and writes, per overlay family.
fn settings(overlay: &IpNet) -> (&'static str, &'static [&'static str]) {
    match overlay {
        IpNet::V4(_) => ("ipv4", &["forwarding", "send_redirects"]),
        IpNet::V6(_) => ("ipv6", &["forwarding"]),
    }
}

fn read_sysctl(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// The values a new device starts with (`net.<family>.conf.default.*`).
pub(super) fn observe_defaults(overlay: &IpNet, obs: &mut Observed) {
    let (fam, names) = settings(overlay);
    for setting in names {
        if let Some(v) = read_sysctl(&format!("/proc/sys/net/{fam}/conf/default/{setting}")) {
            obs.sysctl_defaults.insert(setting.to_string(), v);
        }
    }
}

/// The settings of every device lvn owns.
pub(super) fn observe_settings(overlay: &IpNet, owned: &BTreeMap<u32, String>, obs: &mut Observed) {
    let (fam, names) = settings(overlay);
    for dev in owned.values() {
        for setting in names {
            let key = sysctl_key(fam, dev, setting);
            if let Some(value) = read_sysctl(&Sysctl::proc_path(&key)) {
                obs.state.sysctls.insert(key.clone(), Sysctl { key, value });
            }
        }
    }
}

pub(super) async fn write_sysctl(x: &Sysctl) -> io::Result<()> {
    let path = Sysctl::proc_path(&x.key);
    tokio::fs::write(&path, format!("{}\n", x.value)).await
}

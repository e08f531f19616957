//! Per-device settings under /proc/sys (`forwarding`, `send_redirects`):
//! read for lvn's devices and for `default` (what a new device starts
//! with), written as plain files.

use std::{collections::BTreeMap, io, path::Path};

use ipnet::IpNet;

use crate::{
    naming::{Family, Setting, SysctlKey},
    reconcile::{Observed, Sysctl},
};

fn read_sysctl(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// The values a new device starts with (`net.<family>.conf.default.*`).
pub(super) fn observe_defaults(overlay: &IpNet, obs: &mut Observed) {
    let family = Family::of(overlay.addr());
    for &setting in Setting::managed(family) {
        let key = SysctlKey::default_for(family, setting);
        if let Some(v) = read_sysctl(&key.proc_path()) {
            obs.sysctl_defaults.insert(setting, v);
        }
    }
}

/// The settings of every device lvn owns.
pub(super) fn observe_settings(overlay: &IpNet, owned: &BTreeMap<u32, String>, obs: &mut Observed) {
    let family = Family::of(overlay.addr());
    for dev in owned.values() {
        for &setting in Setting::managed(family) {
            let key = SysctlKey::new(family, dev, setting);
            if let Some(value) = read_sysctl(&key.proc_path()) {
                obs.state.sysctls.insert(key.clone(), Sysctl { key, value });
            }
        }
    }
}

pub(super) async fn write_sysctl(x: &Sysctl) -> io::Result<()> {
    tokio::fs::write(x.key.proc_path(), format!("{}\n", x.value)).await
}

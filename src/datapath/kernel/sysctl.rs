//! Per-device settings under /proc/sys (`forwarding`, `send_redirects`):
//! read for lvn's devices and for `default` (what a new device starts
//! with), written as plain files.

use std::{collections::BTreeMap, io, path::Path};

use crate::{
    naming::{Family, Setting, SysctlKey},
    reconcile::{Observed, Sysctl},
};

fn read_sysctl(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// Both families: a dual-stack overlay has settings of each, and a reload
/// may add or drop a family.
const FAMILIES: [Family; 2] = [Family::Ipv4, Family::Ipv6];

/// The values a new device starts with (`net.<family>.conf.default.*`),
/// and whether the kernel has IPv6 `force_forwarding` at all.
pub(super) fn observe_defaults(obs: &mut Observed) {
    for family in FAMILIES {
        for &setting in Setting::managed(family) {
            let key = SysctlKey::default_for(family, setting);
            if let Some(v) = read_sysctl(&key.proc_path()) {
                obs.sysctl_defaults.insert((family, setting), v);
            }
        }
    }
    obs.underlay.force_forwarding = obs
        .sysctl_defaults
        .contains_key(&(Family::Ipv6, Setting::ForceForwarding));
}

/// The settings of every device lvn owns, of both families (an ipip
/// tunnel has no IPv6 settings, and reads nothing there).
pub(super) fn observe_settings(owned: &BTreeMap<u32, String>, obs: &mut Observed) {
    for dev in owned.values() {
        for (family, setting) in FAMILIES
            .iter()
            .flat_map(|&f| Setting::managed(f).iter().map(move |&s| (f, s)))
        {
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

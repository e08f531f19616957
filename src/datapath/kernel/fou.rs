//! What datapath "fou" needs from the kernel (the fou module's generic
//! netlink family, and ipip on an IPv4 underlay or fou6 and ip6_tunnel on
//! an IPv6 one), checked up front so that everything missing is named at
//! once, with the command that loads it, instead of failing deep inside
//! netlink; and lvn's fou listener.

use std::path::{Path, PathBuf};

use super::Kernel;
pub(super) use crate::datapath::fou_genl::FouClient;
use crate::{
    datapath::{
        DatapathError, Scope,
        fou_genl::{FouError, FouListener},
    },
    naming::Family,
    reconcile::{Fou, Observed},
};

/// IP protocol number of IPv4-in-IPv4, what lvn's fou listener carries on
/// an IPv4 underlay.
pub(super) const IPPROTO_IPIP: u8 = 4;
/// What a GUE listener reports as its protocol: none, the GUE header of
/// each packet names it. lvn's listener on an IPv6 underlay is GUE, so one
/// port carries IPv4 and IPv6 inside.
pub(super) const IPPROTO_GUE: u8 = 0;

/// What a probe of the kernel found of the parts datapath "fou" needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FouSupport {
    /// The underlay the tunnels run on: ipip on IPv4, ip6tnl on IPv6.
    pub underlay: Family,
    /// The generic netlink family "fou" resolves (module fou).
    pub fou: bool,
    /// The ipip module is loaded (IPv4 underlay).
    pub ipip: bool,
    /// fou6 (fou and GUE encapsulation for ip6tnl) is loaded (IPv6 underlay).
    pub fou6: bool,
    /// ip6_tunnel (ip6tnl devices) is loaded (IPv6 underlay).
    pub ip6_tunnel: bool,
}

impl FouSupport {
    /// The modules that are missing, by name, in the order to load them.
    pub fn missing(self) -> Vec<&'static str> {
        let needed = match self.underlay {
            Family::Ipv4 => vec![(self.fou, "fou"), (self.ipip, "ipip")],
            Family::Ipv6 => vec![
                (self.fou, "fou"),
                (self.fou6, "fou6"),
                (self.ip6_tunnel, "ip6_tunnel"),
            ],
        };
        needed
            .into_iter()
            .filter(|(present, _)| !present)
            .map(|(_, name)| name)
            .collect()
    }

    /// The modules datapath "fou" needs on this underlay.
    fn needed(self) -> &'static str {
        match self.underlay {
            Family::Ipv4 => "fou and ipip",
            Family::Ipv6 => "fou, fou6 and ip6_tunnel (an IPv6 underlay)",
        }
    }

    /// Whether datapath "fou" can run; if not, one error naming every
    /// missing module and one command that loads them all.
    pub fn check(self) -> Result<(), DatapathError> {
        let missing = self.missing();
        if missing.is_empty() {
            return Ok(());
        }
        // `modprobe fou ipip` would pass "ipip" to fou as a parameter.
        let load = match missing.as_slice() {
            [one] => format!("load it with `modprobe {one}`"),
            more => format!("load them with `modprobe -a {}`", more.join(" ")),
        };
        Err(DatapathError::Unsupported(format!(
            "datapath \"fou\" needs kernel modules {} (missing: {}): {load}, or use datapath = \"vxlan\"",
            self.needed(),
            missing.join(", ")
        )))
    }

    /// What this kernel has of it; `fou` comes from the genl family.
    fn probe(underlay: Family, fou: bool) -> FouSupport {
        FouSupport {
            underlay,
            fou,
            ipip: module_present("ipip"),
            fou6: module_present("fou6"),
            ip6_tunnel: module_present("ip6_tunnel"),
        }
    }
}

/// A module is loaded (listed in /sys/module), or built in (listed in
/// modules.builtin: a built-in module without parameters has no entry in
/// /sys/module).
fn module_present(name: &str) -> bool {
    if Path::new("/sys/module").join(name).exists() {
        return true;
    }
    let Ok(release) = std::fs::read_to_string("/proc/sys/kernel/osrelease") else {
        return false;
    };
    let builtin: PathBuf = ["/lib/modules", release.trim(), "modules.builtin"]
        .iter()
        .collect();
    let file = format!("/{name}.ko");
    std::fs::read_to_string(builtin).is_ok_and(|text| text.lines().any(|l| l.ends_with(&file)))
}

/// A client of the "fou" family, or none if the kernel lacks it.
async fn connect_fou() -> Result<Option<FouClient>, DatapathError> {
    match FouClient::connect().await {
        Ok(c) => Ok(Some(c)),
        Err(FouError::Missing) => Ok(None),
        Err(e) => Err(fou_err(e)),
    }
}

/// Whether this kernel can run datapath "fou" on `underlay`: the fou
/// family and the tunnel modules.
pub async fn fou_support(underlay: Family) -> Result<(), DatapathError> {
    let fou = connect_fou().await?.is_some();
    FouSupport::probe(underlay, fou).check()
}

pub(super) fn fou_err(e: FouError) -> DatapathError {
    match e {
        // Without the family the underlay is unknown here; the check in
        // observation, which knows it, comes first.
        FouError::Missing => FouSupport::probe(Family::Ipv4, false)
            .check()
            .err()
            .unwrap_or_else(|| DatapathError::Unsupported(e.to_string())),
        other => DatapathError::Netlink(other.to_string()),
    }
}

/// The listener lvn owns: ipip on an IPv4 underlay, GUE on an IPv6 one.
pub(super) fn listener(f: &Fou) -> FouListener {
    FouListener {
        port: f.port,
        ipv6: f.ipv6,
        ipproto: if f.ipv6 { IPPROTO_GUE } else { IPPROTO_IPIP },
    }
}

impl Kernel {
    /// Datapath "fou" can run here on `underlay`; connects the fou client
    /// on the way.
    pub(super) async fn check_fou(&mut self, underlay: Family) -> Result<(), DatapathError> {
        if self.fou.is_none() {
            self.fou = connect_fou().await?;
        }
        FouSupport::probe(underlay, self.fou.is_some()).check()
    }

    /// The fou client, connected on first use.
    pub(super) async fn fou(&mut self) -> Result<&FouClient, DatapathError> {
        if self.fou.is_none() {
            self.fou = connect_fou().await?;
        }
        self.fou
            .as_ref()
            .ok_or_else(|| DatapathError::Netlink("fou client".into()))
    }

    /// A listener on the network's port of either shape lvn makes (ipip
    /// on IPv4, GUE on IPv6) is lvn's: a change of underlay then replaces
    /// one with the other.
    pub(super) async fn observe_listeners(
        &mut self,
        scope: &Scope,
        obs: &mut Observed,
    ) -> Result<(), DatapathError> {
        let port = scope.port;
        for l in self.fou().await?.list().await.map_err(fou_err)? {
            let fou = Fou {
                port: l.port,
                ipv6: l.ipv6,
            };
            if l.port == port && listener(&fou) == l {
                obs.state.fou.insert(
                    l.port,
                    Fou {
                        port: l.port,
                        ipv6: l.ipv6,
                    },
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(fou: bool, ipip: bool) -> Option<String> {
        FouSupport {
            underlay: Family::Ipv4,
            fou,
            ipip,
            fou6: false,
            ip6_tunnel: false,
        }
        .check()
        .err()
        .map(|e| e.to_string())
    }

    /// Defect 12: with neither module the error named only ipip, so fixing
    /// that led straight to a second error about fou.
    #[test]
    fn fou_support_error_names_every_missing_module() {
        let e = message(false, false).expect("an error");
        assert!(e.contains("missing: fou, ipip"), "{e}");
        assert!(e.contains("`modprobe -a fou ipip`"), "{e}");
        assert!(e.contains("datapath = \"vxlan\""), "{e}");
    }

    #[test]
    fn fou_support_error_names_just_what_is_missing() {
        let e = message(true, false).expect("an error");
        assert!(e.contains("missing: ipip)"), "{e}");
        assert!(e.contains("`modprobe ipip`"), "{e}");
        let e = message(false, true).expect("an error");
        assert!(e.contains("missing: fou)"), "{e}");
        assert!(e.contains("`modprobe fou`"), "{e}");
        assert_eq!(message(true, true), None);
    }

    #[test]
    fn a_missing_module_is_not_transient() {
        let e = FouSupport {
            underlay: Family::Ipv4,
            fou: false,
            ipip: false,
            fou6: false,
            ip6_tunnel: false,
        }
        .check()
        .unwrap_err();
        assert!(!e.is_transient());
    }

    /// On an IPv6 underlay the tunnels are ip6tnl with fou6's encapsulation:
    /// ipip is not needed, and the error names what is.
    #[test]
    fn an_ipv6_underlay_needs_fou6_and_ip6_tunnel_not_ipip() {
        let six = |fou, fou6, ip6_tunnel| {
            FouSupport {
                underlay: Family::Ipv6,
                fou,
                ipip: false,
                fou6,
                ip6_tunnel,
            }
            .check()
            .err()
            .map(|e| e.to_string())
        };
        let e = six(false, false, false).expect("an error");
        assert!(e.contains("missing: fou, fou6, ip6_tunnel)"), "{e}");
        assert!(e.contains("`modprobe -a fou fou6 ip6_tunnel`"), "{e}");
        assert!(!e.contains("ipip"), "{e}");
        let e = six(true, false, true).expect("an error");
        assert!(e.contains("`modprobe fou6`"), "{e}");
        assert_eq!(six(true, true, true), None);
    }
}

//! What datapath "fou" needs from the kernel (the fou module's generic
//! netlink family and ipip), checked up front so that everything missing
//! is named at once, with the command that loads it, instead of failing
//! deep inside netlink; and lvn's fou listener.

use std::path::Path;

use super::Kernel;
pub(super) use crate::datapath::fou_genl::FouClient;
use crate::{
    datapath::{
        DatapathError, Scope,
        fou_genl::{FouError, FouListener},
    },
    reconcile::{Fou, Observed},
};

/// IP protocol number of IPv4-in-IPv4, what lvn's fou listener carries.
pub(super) const IPPROTO_IPIP: u8 = 4;

/// Present while the ipip module is loaded (built in too: it has
/// parameters, so it is listed there).
const IPIP_MODULE: &str = "/sys/module/ipip";

/// What a probe of the kernel found of the parts datapath "fou" needs.
/// An IPv6 underlay would need ip6_tunnel too, but datapath "fou" carries
/// IPv4 only (the config refuses IPv6 endpoints), so it is not probed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FouSupport {
    /// The generic netlink family "fou" resolves (module fou).
    pub fou: bool,
    /// The ipip module is loaded.
    pub ipip: bool,
}

impl FouSupport {
    /// The modules that are missing, by name, in the order to load them.
    pub fn missing(self) -> Vec<&'static str> {
        [(self.fou, "fou"), (self.ipip, "ipip")]
            .into_iter()
            .filter(|(present, _)| !present)
            .map(|(_, name)| name)
            .collect()
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
            "datapath \"fou\" needs kernel modules fou and ipip (missing: {}): {load}, or use datapath = \"vxlan\"",
            missing.join(", ")
        )))
    }
}

fn ipip_loaded() -> bool {
    Path::new(IPIP_MODULE).exists()
}

/// A client of the "fou" family, or none if the kernel lacks it.
async fn connect_fou() -> Result<Option<FouClient>, DatapathError> {
    match FouClient::connect().await {
        Ok(c) => Ok(Some(c)),
        Err(FouError::Missing) => Ok(None),
        Err(e) => Err(fou_err(e)),
    }
}

/// Whether this kernel can run datapath "fou": ipip and the fou family.
pub async fn fou_support() -> Result<(), DatapathError> {
    let fou = connect_fou().await?.is_some();
    FouSupport {
        fou,
        ipip: ipip_loaded(),
    }
    .check()
}

pub(super) fn fou_err(e: FouError) -> DatapathError {
    match e {
        FouError::Missing => FouSupport {
            fou: false,
            ipip: ipip_loaded(),
        }
        .check()
        .err()
        .unwrap_or_else(|| DatapathError::Unsupported(e.to_string())),
        other => DatapathError::Netlink(other.to_string()),
    }
}

/// The listener lvn owns: the one on the network's port carrying ipip.
pub(super) fn listener(f: &Fou) -> FouListener {
    FouListener {
        port: f.port,
        ipv6: f.ipv6,
        ipproto: IPPROTO_IPIP,
    }
}

impl Kernel {
    /// Datapath "fou" can run here; connects the fou client on the way.
    pub(super) async fn check_fou(&mut self) -> Result<(), DatapathError> {
        if self.fou.is_none() {
            self.fou = connect_fou().await?;
        }
        FouSupport {
            fou: self.fou.is_some(),
            ipip: ipip_loaded(),
        }
        .check()
    }

    /// The fou client, connected on first use.
    pub(super) async fn fou(&mut self) -> Result<&FouClient, DatapathError> {
        if self.fou.is_none() {
            self.check_fou().await?;
        }
        self.fou
            .as_ref()
            .ok_or_else(|| DatapathError::Netlink("fou client".into()))
    }

    /// The fou listener on the network's port carrying ipip is lvn's.
    pub(super) async fn observe_listeners(
        &mut self,
        scope: &Scope,
        obs: &mut Observed,
    ) -> Result<(), DatapathError> {
        let port = scope.port;
        for l in self.fou().await?.list().await.map_err(fou_err)? {
            if l.port == port && l.ipproto == IPPROTO_IPIP {
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
        FouSupport { fou, ipip }
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
            fou: false,
            ipip: false,
        }
        .check()
        .unwrap_err();
        assert!(!e.is_transient());
    }
}

//! What datapath "fou" needs from the kernel (the fou module's generic
//! netlink family and ipip), checked up front so a missing module is named
//! plainly instead of failing deep inside netlink; and lvn's fou listener.

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

/// Datapath "fou" needs the kernel's fou and ipip; say plainly what is
/// missing and how to load it, instead of failing deep inside netlink.
pub(super) fn check_fou_support() -> Result<(), DatapathError> {
    if !std::path::Path::new("/sys/module/ipip").exists() {
        return Err(DatapathError::Unsupported(
            "the kernel has no ipip support (/sys/module/ipip is missing): load it with `modprobe ipip`, or use datapath = \"vxlan\"".into(),
        ));
    }
    Ok(())
}

/// Whether this kernel can run datapath "fou": ipip and the fou family.
pub async fn fou_support() -> Result<(), DatapathError> {
    check_fou_support()?;
    FouClient::connect().await.map_err(fou_err)?;
    Ok(())
}

pub(super) fn fou_err(e: FouError) -> DatapathError {
    match e {
        FouError::Missing => {
            DatapathError::Unsupported(format!("{e}, or use datapath = \"vxlan\""))
        }
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
    /// The fou client, connected on first use.
    pub(super) async fn fou(&mut self) -> Result<&FouClient, DatapathError> {
        if self.fou.is_none() {
            self.fou = Some(FouClient::connect().await.map_err(fou_err)?);
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

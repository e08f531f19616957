//! Datapaths turn plans into kernel state. The trait has two verbs:
//! `observe` reads what lvn owns (and what it must stay away from),
//! `apply` carries out a plan's steps in order. `kernel/` does it with
//! rtnetlink, generic netlink (`fou_genl.rs`) and /proc/sys against the
//! real kernel, for datapaths "vxlan" and "fou"; `fake.rs` keeps an
//! in-memory kernel for property tests of the planner and for tests of
//! what drives a datapath.

pub mod batch;
mod dump;
pub mod fake;
pub mod fou_genl;
pub mod kernel;
mod netlink;

use ipnet::IpNet;

use crate::reconcile::{Observed, Plan, Step};

/// What a datapath looks at for one network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub network: String,
    pub device: String,
    /// Overlay prefix: decides the family of addresses, neighbours, routes.
    pub overlay: IpNet,
    pub datapath: crate::config::Datapath,
    /// The underlay family: with "fou", ipip or ip6tnl.
    pub underlay: crate::naming::Family,
    /// The encapsulation's UDP port (the fou listener's, with "fou").
    pub port: u16,
}

impl Scope {
    /// The scope of a topology's network.
    pub fn of(net: &crate::config::Network) -> Scope {
        Scope {
            network: net.name.clone(),
            device: net.device.clone(),
            overlay: net.overlay,
            datapath: net.datapath,
            underlay: net.underlay,
            port: net.port,
        }
    }
}

/// What an apply did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyReport {
    /// Steps carried out, in order.
    pub done: Vec<Step>,
    /// Kernel write requests sent (netlink messages and sysctl writes).
    pub writes: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    #[error("{op}: {source}")]
    Kernel {
        op: String,
        #[source]
        source: std::io::Error,
    },
    #[error("netlink: {0}")]
    Netlink(String),
    /// The kernel lacks what the datapath needs; the message says how to fix it.
    #[error("{0}")]
    Unsupported(String),
    #[error("applying the plan stopped after {done} of {total} steps: {source}")]
    Partial {
        done: usize,
        total: usize,
        #[source]
        source: Box<DatapathError>,
    },
}

impl DatapathError {
    /// Worth retrying after a back-off (the kernel was busy or out of
    /// memory, or something raced with us), as opposed to a request the
    /// kernel will always refuse.
    pub fn is_transient(&self) -> bool {
        match self {
            DatapathError::Kernel { source, .. } => matches!(
                source.raw_os_error(),
                Some(
                    libc_errno::EBUSY
                        | libc_errno::EAGAIN
                        | libc_errno::ENOBUFS
                        | libc_errno::ENOMEM
                        | libc_errno::EEXIST
                        | libc_errno::ENOENT
                )
            ),
            DatapathError::Netlink(_) => true,
            DatapathError::Unsupported(_) => false,
            DatapathError::Partial { source, .. } => source.is_transient(),
        }
    }
}

/// The few errno values the datapath distinguishes.
pub(crate) mod libc_errno {
    pub const ENOENT: i32 = 2;
    pub const EAGAIN: i32 = 11;
    pub const ENOMEM: i32 = 12;
    pub const EBUSY: i32 = 16;
    pub const EEXIST: i32 = 17;
    pub const ENOBUFS: i32 = 105;
}

/// A kernel datapath: observe what lvn owns, apply a plan.
#[allow(async_fn_in_trait)]
pub trait Datapath {
    async fn observe(&mut self, scope: &Scope) -> Result<Observed, DatapathError>;
    async fn apply(&mut self, scope: &Scope, plan: &Plan) -> Result<ApplyReport, DatapathError>;
    /// Interface index of lvn's device `device`, as last observed or
    /// created; `None` if lvn has no such device. A device deleted and
    /// created again has a new index, which is how a caller holding a
    /// socket bound to the old one knows to reopen it.
    fn ifindex(&self, device: &str) -> Option<u32>;
    /// Start taking down the kernel's own account of the entries the next
    /// `apply` changes, for [`Datapath::observe_after`]. Default: nothing.
    fn witness(&mut self, _scope: &Scope) {}
    /// Observe once an `apply` is over; `before` is the observation its
    /// plan came from. The kernel datapath replays what it heard since
    /// [`Datapath::witness`] on `before`'s entries instead of dumping
    /// them again; by default, and whenever a change may have been
    /// missed, this is [`Datapath::observe`].
    async fn observe_after(
        &mut self,
        scope: &Scope,
        before: Observed,
    ) -> Result<Observed, DatapathError> {
        let _ = before;
        self.observe(scope).await
    }
    /// The datapath has work of its own that no plan step shows (the
    /// kernel's: gateway routes of an older lvn to move onto nexthop
    /// objects, nexthops left without a route), done by the next `apply`,
    /// even of an empty plan.
    fn untidy(&self) -> bool {
        false
    }
}

/// Run `test` on a thread in a network namespace of its own, on a runtime
/// of that thread (root only: without it, say so and return). Threads
/// and sockets the test makes from there are in the namespace too.
#[cfg(test)]
pub(crate) fn in_own_netns<F, Fut>(test: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    std::thread::spawn(|| {
        // SAFETY: unshare only changes this thread's namespace.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            println!("skipped: unshare(CLONE_NEWNET) needs root");
            return;
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(test());
    })
    .join()
    .expect("test thread");
}

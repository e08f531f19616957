//! The pure core: topology -> desired state (`desired.rs`), kernel ->
//! observed state (built by a datapath, `model.rs`), and `plan()`: the
//! ordered steps between the two (`plan.rs`), rendered for people and for
//! machines (`render.rs`). No clock, no I/O.

mod desired;
mod model;
mod plan;
mod reason;
pub mod render;

pub use desired::{
    Conflict, Desired, FALLBACK_UNDERLAY_MTU, FOU_OVERHEAD_V4, Liveness, ObjectKey,
    VXLAN_OVERHEAD_V4, VXLAN_OVERHEAD_V6, desired, sysctl_key, tunnel_name,
};
pub use model::{
    AddrKey, Address, Family, Fdb, Fou, Link, Mac, Neigh, Observed, Route, RouteKey, State, Sysctl,
    Tunnel, Underlay,
};
pub use plan::{Action, Object, Plan, PlanError, Step, Summary, plan};
pub use reason::Reason;

/// Route protocol number that marks lvn's routes (`ip route ... proto 76`).
/// Not registered in iproute2's rt_protos; 76 is "L" in ASCII.
pub const ROUTE_PROTOCOL: u8 = 76;

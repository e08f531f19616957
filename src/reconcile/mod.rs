//! The pure core: topology -> desired state (`desired.rs`), kernel ->
//! observed state (built by a datapath, `model.rs`), and `plan()`: the
//! ordered steps between the two (`plan.rs`), rendered for people and for
//! machines (`render.rs`). No clock, no I/O.

pub mod bird;
pub mod delta;
mod desired;
pub mod drift;
pub mod fleet;
mod layer2;
#[cfg(test)]
mod layer2_tests;
mod model;
mod plan;
mod reason;
pub mod render;

pub use desired::{
    Conflict, Desired, FALLBACK_UNDERLAY_MTU, FOU_OVERHEAD_V4, Liveness, ObjectKey, Peers,
    VXLAN_OVERHEAD_V4, VXLAN_OVERHEAD_V6, desired, desired_for,
};
pub use layer2::{Flood, Port, Waiting};
pub use model::{
    AddrKey, Address, Fdb, Fou, Link, Neigh, Observed, Route, RouteKey, State, Sysctl, Tunnel,
    Underlay,
};
pub use plan::{Action, Object, Plan, PlanError, Step, Summary, plan};
pub use reason::{Reason, Reasons};

// The naming rules the planner applies, under the names callers know them by.
pub use crate::naming::{Family, Mac, tunnel_name};

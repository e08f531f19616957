//! One reconcile, as the controller asks for it: retire what a reload left
//! behind (a renamed network or device, another datapath), then observe,
//! plan and apply. Generic over [`Datapath`], so the runner drives the
//! kernel with it and the controller's tests drive the fake kernel with the
//! very same code.

use std::sync::Arc;

use crate::{
    config::Topology,
    datapath::{Datapath, DatapathError, Scope},
    reconcile::{self, Conflict, Desired, Liveness, PlanError, State, Step, Waiting},
};

/// What the controller asks for.
#[derive(Debug, Clone)]
pub struct Request {
    /// Why, for the log ("start", "resync", "learned endpoint", ...).
    pub why: String,
    pub topo: Arc<Topology>,
    pub node: String,
    pub liveness: Liveness,
    /// Scopes of earlier topologies whose objects must go first.
    pub retire: Vec<Scope>,
}

/// What happened.
#[derive(Debug)]
pub struct Outcome {
    pub result: Result<Applied, ReconcileError>,
    /// Peers the datapath cannot carry (from the desired state).
    pub conflicts: Vec<Conflict>,
    /// What the desired state waits for (layer 2: a missing master).
    pub waiting: Vec<Waiting>,
    /// The device MTU wanted (VXLAN): what a spoke's path MTU checks test.
    pub mtu: Option<u32>,
    /// The desired state this reconcile worked towards, once it was
    /// computed: kernel notifications are judged against it (drift).
    pub desired: Option<Arc<State>>,
    /// Wall time the reconcile took (measured by the runner).
    pub seconds: f64,
}

/// Changes made, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    pub done: Vec<Step>,
    pub writes: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("reading the kernel state of device {device}: {source}")]
    Observe {
        device: String,
        #[source]
        source: DatapathError,
    },
    #[error("{0}")]
    Plan(#[from] PlanError),
    #[error("{source}")]
    Apply {
        #[source]
        source: DatapathError,
    },
    #[error("{0}")]
    Config(String),
}

/// What the desired state says beyond its objects.
#[derive(Default)]
struct Wanted {
    waiting: Vec<Waiting>,
    mtu: Option<u32>,
    /// The desired state, for judging kernel notifications (drift).
    desired: Option<Arc<State>>,
}

/// Run one reconcile against `dp`.
pub async fn execute<D: Datapath>(dp: &mut D, req: &Request) -> Outcome {
    let mut applied = Applied::default();
    let mut conflicts = Vec::new();
    let mut want = Wanted::default();
    let result = run(dp, req, &mut applied, &mut conflicts, &mut want).await;
    Outcome {
        result: result.map(|()| applied),
        conflicts,
        waiting: want.waiting,
        mtu: want.mtu,
        desired: want.desired,
        seconds: 0.0,
    }
}

async fn run<D: Datapath>(
    dp: &mut D,
    req: &Request,
    applied: &mut Applied,
    conflicts: &mut Vec<Conflict>,
    want: &mut Wanted,
) -> Result<(), ReconcileError> {
    for old in &req.retire {
        converge(dp, old, &Desired::default(), applied).await?;
    }
    let scope = Scope::of(&req.topo.network);
    let me = req
        .topo
        .node(&req.node)
        .map_err(|e| ReconcileError::Config(e.to_string()))?;
    let observed = observe(dp, &scope).await?;
    let desired = reconcile::desired(&req.topo, me, &observed.underlay, &req.liveness);
    *conflicts = desired.conflicts.clone();
    want.waiting = desired.waiting.clone();
    want.mtu = desired.state.link.as_ref().map(|l| l.mtu);
    let plan = reconcile::plan(&desired, &observed)?;
    want.desired = Some(Arc::new(desired.state));
    apply(dp, &scope, &plan, applied).await
}

/// Make `scope` match `desired` (used to remove a retired scope).
async fn converge<D: Datapath>(
    dp: &mut D,
    scope: &Scope,
    desired: &Desired,
    applied: &mut Applied,
) -> Result<(), ReconcileError> {
    let observed = observe(dp, scope).await?;
    let plan = reconcile::plan(desired, &observed)?;
    apply(dp, scope, &plan, applied).await
}

async fn observe<D: Datapath>(
    dp: &mut D,
    scope: &Scope,
) -> Result<reconcile::Observed, ReconcileError> {
    dp.observe(scope)
        .await
        .map_err(|source| ReconcileError::Observe {
            device: scope.device.clone(),
            source,
        })
}

async fn apply<D: Datapath>(
    dp: &mut D,
    scope: &Scope,
    plan: &reconcile::Plan,
    applied: &mut Applied,
) -> Result<(), ReconcileError> {
    if plan.is_empty() && !dp.untidy() {
        return Ok(());
    }
    let report = dp
        .apply(scope, plan)
        .await
        .map_err(|source| ReconcileError::Apply { source })?;
    applied.done.extend(report.done);
    applied.writes += report.writes;
    Ok(())
}

/// Whether moving from `old` to `new` leaves objects that only a separate
/// removal pass can find: observation looks for one device by name and
/// owner, one datapath, one port, one overlay family.
pub fn must_retire(old: &Scope, new: &Scope) -> bool {
    old.network != new.network
        || old.device != new.device
        || old.datapath != new.datapath
        || old.port != new.port
        || old.overlay.addr().is_ipv4() != new.overlay.addr().is_ipv4()
}

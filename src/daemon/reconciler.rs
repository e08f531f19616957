//! One reconcile, as the controller asks for it: retire what a reload left
//! behind (a renamed network or device, another datapath), then observe,
//! plan and apply. Generic over [`Datapath`], so the runner drives the
//! kernel with it and the controller's tests drive the fake kernel with the
//! very same code.

use std::{collections::BTreeSet, sync::Arc};

use crate::{
    config::Topology,
    datapath::{Datapath, DatapathError, Scope},
    reconcile::{
        self, Conflict, Desired, Liveness, ObjectKey, PlanError, State, Step, Waiting,
        delta::{self, Known},
    },
};

/// What the controller asks for.
#[derive(Debug, Clone)]
pub struct Request {
    /// Why, for the log ("start", "resync", "learned endpoint", ...).
    pub why: String,
    pub topo: Arc<Topology>,
    pub node: String,
    /// Every peer's liveness; with `changed`, only the changed peers'.
    pub liveness: Liveness,
    /// Scopes of earlier topologies whose objects must go first.
    pub retire: Vec<Scope>,
    /// `None`: look at everything. `Some`: only these peers changed (in the
    /// probe or in the file) since the last reconcile, which succeeded; the
    /// reconciler may plan their objects only (`reconcile::delta`).
    pub changed: Option<BTreeSet<String>>,
}

/// What one reconcile leaves for the next: how it got to what the kernel
/// now holds. Forgotten on any failure.
#[derive(Debug, Default)]
pub struct Memo {
    last: Option<(Scope, Known)>,
    /// Reconciles that planned a few peers only, and ones that looked at
    /// everything (for tests and the log).
    pub narrowed: usize,
    pub full: usize,
}

/// The desired state, for judging kernel notifications (drift).
#[derive(Debug, Clone)]
pub enum Update {
    /// All of it.
    Full(Arc<State>),
    /// The objects at `keys` are now as in `from` (absent: gone).
    Patch {
        keys: Vec<ObjectKey>,
        from: Box<State>,
    },
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
    pub desired: Option<Update>,
    /// Wall time the reconcile took (measured by the runner).
    pub seconds: f64,
    /// It planned the changed peers only, without reading the kernel.
    pub narrowed: bool,
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
    desired: Option<Update>,
}

/// Run one reconcile against `dp`, narrowed to the changed peers where
/// `memo` allows.
pub async fn execute<D: Datapath>(dp: &mut D, memo: &mut Memo, req: &Request) -> Outcome {
    let mut applied = Applied::default();
    let mut conflicts = Vec::new();
    let mut want = Wanted::default();
    let last = memo.last.take();
    let mut was_narrowed = false;
    let result = match narrowed(last, req) {
        Ok((scope, mut known, n)) => {
            memo.narrowed += 1;
            was_narrowed = true;
            want.waiting = known.waiting.clone();
            want.mtu = known.base.link.as_ref().map(|l| l.mtu);
            let r = apply(dp, &scope, &n, &mut applied).await;
            if r.is_ok() {
                let changed = req.changed.as_ref().expect("narrowed");
                known.learn(req.topo.clone(), changed, &n);
                want.desired = Some(Update::Patch {
                    keys: n.keys,
                    from: Box::new(n.desired.state),
                });
                memo.last = Some((scope, known));
            }
            r
        }
        Err(last) => {
            memo.full += 1;
            let r = run(dp, req, last, &mut applied, &mut conflicts, &mut want).await;
            match r {
                Ok(known) => {
                    memo.last = known;
                    Ok(())
                }
                Err(e) => Err(e),
            }
        }
    };
    Outcome {
        result: result.map(|()| applied),
        conflicts,
        waiting: want.waiting,
        mtu: want.mtu,
        desired: want.desired,
        seconds: 0.0,
        narrowed: was_narrowed,
    }
}

/// The narrowed inputs of `req`, or why not: the memo back (a full
/// reconcile still merges the changed peers' liveness into it).
#[allow(clippy::result_large_err)]
fn narrowed(
    last: Option<(Scope, Known)>,
    req: &Request,
) -> Result<(Scope, Known, delta::Narrowed), Option<(Scope, Known)>> {
    let (Some((scope, known)), Some(changed)) = (last, &req.changed) else {
        return Err(None);
    };
    if !req.retire.is_empty() || scope != Scope::of(&req.topo.network) {
        return Err(Some((scope, known)));
    }
    match known.narrow(&req.topo, &req.node, changed, &req.liveness) {
        Some(n) => Ok((scope, known, n)),
        None => Err(Some((scope, known))),
    }
}

async fn run<D: Datapath>(
    dp: &mut D,
    req: &Request,
    last: Option<(Scope, Known)>,
    applied: &mut Applied,
    conflicts: &mut Vec<Conflict>,
    want: &mut Wanted,
) -> Result<Option<(Scope, Known)>, ReconcileError> {
    // Every peer's liveness: the request's, or the memo's with the changed
    // peers' from the request.
    let liveness = match (&req.changed, &last) {
        (None, _) => req.liveness.clone(),
        (Some(changed), Some((_, known))) => known.merged(changed, &req.liveness),
        (Some(_), None) => {
            return Err(ReconcileError::Config(
                "a reconcile of a few peers came without the last one to start from; the next looks at everything".into(),
            ));
        }
    };
    for old in &req.retire {
        converge(dp, old, &Desired::default(), applied).await?;
    }
    let scope = Scope::of(&req.topo.network);
    let me = req
        .topo
        .node(&req.node)
        .map_err(|e| ReconcileError::Config(e.to_string()))?;
    let observed = observe(dp, &scope).await?;
    let desired = reconcile::desired(&req.topo, me, &observed.underlay, &liveness);
    *conflicts = desired.conflicts.clone();
    want.waiting = desired.waiting.clone();
    want.mtu = desired.state.link.as_ref().map(|l| l.mtu);
    let plan = reconcile::plan(&desired, &observed)?;
    let known = Known::new(req.topo.clone(), &req.node, liveness, &observed, &desired);
    want.desired = Some(Update::Full(Arc::new(desired.state)));
    apply_plan(dp, &scope, &plan, applied).await?;
    Ok(known.map(|k| (scope, k)))
}

/// Plan and apply a narrowed change.
async fn apply<D: Datapath>(
    dp: &mut D,
    scope: &Scope,
    n: &delta::Narrowed,
    applied: &mut Applied,
) -> Result<(), ReconcileError> {
    let plan = reconcile::plan(&n.desired, &n.observed)?;
    apply_plan(dp, scope, &plan, applied).await
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
    apply_plan(dp, scope, &plan, applied).await
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

async fn apply_plan<D: Datapath>(
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

//! One node's observe -> plan -> apply -> verify, for `plan`, `apply` and
//! `down`; a successful apply keeps its file as the node's last good one,
//! which `lvn apply --confirm` goes back to.

use std::{path::PathBuf, process::ExitCode};

use anyhow::{Context, Result};

use super::{Cli, hostname, load_text};
use crate::{
    config::Topology,
    daemon,
    datapath::{Datapath, Scope, kernel::Kernel},
    reconcile::{self, Desired, Observed, Plan, render},
};

/// Print a plan, one line per step, through one buffer: a plan of 100k
/// steps is one write per 8 KiB, not one per line.
pub fn print_plan(plan: &Plan) {
    if plan.is_empty() {
        println!("No changes: the kernel matches the topology.");
        return;
    }
    print_steps(&plan.steps);
    println!("{}", render::summary_line(plan));
}

/// Steps, one per line, buffered (stdout is line-buffered otherwise).
fn print_steps(steps: &[crate::reconcile::Step]) {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for s in steps {
        if writeln!(out, "{s}").is_err() {
            return; // stdout closed (a pager quit): nothing more to say
        }
    }
    let _ = out.flush();
}

/// A loaded topology, its text, and the node this machine acts as.
pub struct Session {
    pub topo: Topology,
    pub text: String,
    pub node: String,
    pub state_dir: PathBuf,
}

impl Session {
    /// `None` after printing config errors.
    pub fn load(cli: &Cli) -> Result<Option<Session>> {
        let Ok((topo, text)) = load_text(&cli.config) else {
            return Ok(None);
        };
        let node = match &cli.node {
            Some(n) => n.clone(),
            None => hostname()?,
        };
        if let Err(e) = topo.node(&node) {
            eprintln!("{e}");
            return Ok(None);
        }
        Ok(Some(Session {
            topo,
            text,
            node,
            state_dir: cli.state_dir.clone(),
        }))
    }

    /// Endpoints a daemon beside us learned, so `plan` shows what it would do.
    fn liveness(&self) -> reconcile::Liveness {
        daemon::saved_liveness(&self.state_dir, &self.topo, &self.node)
    }

    pub fn scope(&self) -> Scope {
        Scope::of(&self.topo.network)
    }

    /// Observe and plan; `down` plans removal of everything lvn owns.
    pub async fn plan<D: Datapath>(
        &self,
        dp: &mut D,
        down: bool,
    ) -> Result<(Desired, Observed, Plan)> {
        let observed = dp.observe(&self.scope()).await?;
        let desired = if down {
            Desired::default()
        } else {
            let me = self.topo.node(&self.node)?;
            reconcile::desired(&self.topo, me, &observed.underlay, &self.liveness())
        };
        let plan = reconcile::plan(&desired, &observed)?;
        Ok((desired, observed, plan))
    }

    /// `lvn apply` and `lvn down`: apply, verify, keep (or, for `down`,
    /// forget) the last good file.
    pub async fn apply(self, down: bool, json: bool) -> Result<ExitCode> {
        let mut dp = Kernel::connect().context("opening netlink")?;
        let ok = self.apply_on(&mut dp, down, json).await?;
        if ok {
            self.keep(down);
        }
        Ok(if ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        })
    }

    /// Apply and verify on `dp`, printing what was done; false when the
    /// kernel still differs afterwards.
    pub async fn apply_on<D: Datapath>(&self, dp: &mut D, down: bool, json: bool) -> Result<bool> {
        let (desired, before, plan) = self.plan(dp, down).await?;
        // The kernel's notifications of the entries written stand in for
        // dumping them again to verify (see `datapath::kernel::witness`).
        dp.witness(&self.scope());
        let result = dp.apply(&self.scope(), &plan).await;
        let (done, writes, failure) = match result {
            Ok(r) => (r.done, r.writes, None),
            Err(e) => (Vec::new(), 0, Some(e)),
        };
        if !json {
            print_steps(&done);
        }
        if let Some(e) = failure {
            anyhow::bail!("{e}");
        }
        // Verify like nmstate: re-read the kernel, expect nothing left to
        // do for the desired state just applied.
        let after = dp.observe_after(&self.scope(), before).await?;
        let rest = reconcile::plan(&desired, &after)?;
        let done = Plan { steps: done };
        let summary = done.summary();
        if json {
            let mut v = render::plan_json(&self.node, &self.topo.network.name, &done);
            v["writes"] = writes.into();
            v["remaining"] = rest.steps.iter().map(render::step_json).collect();
            println!("{}", serde_json::to_string_pretty(&v)?);
        } else if summary.add + summary.change + summary.remove == 0 {
            println!("No changes: the kernel matches the topology.");
        } else {
            println!(
                "Apply complete: {} added, {} changed, {} removed ({writes} kernel writes).",
                summary.add, summary.change, summary.remove
            );
        }
        if !rest.is_empty() {
            eprintln!("error: the kernel still differs after apply:");
            for s in &rest.steps {
                eprintln!("  {s}");
            }
            return Ok(false);
        }
        Ok(true)
    }

    /// Keep this file as the node's last good one (after `apply`), or
    /// forget it (after `down`). A failure here does not undo the apply:
    /// it is reported, and only `--confirm` needs the file.
    pub fn keep(&self, down: bool) {
        let network = &self.topo.network.name;
        let r = if down {
            daemon::remove_good(&self.state_dir, network)
        } else {
            daemon::save_good(&self.state_dir, network, &self.text)
        };
        if let Err(e) = r {
            eprintln!(
                "warning: the last good file in {} is not up to date: {e} (`lvn apply --confirm` goes back to it)",
                self.state_dir.display()
            );
        }
    }
}

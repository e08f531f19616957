//! The daemon's brain, with no I/O and no clock of its own: events come in
//! with `now`, effects go out, and [`Controller::next_wakeup`] says when to
//! call again. Every reconcile outcome, success or error, sets when the next
//! one runs; an error backs off (1 s doubling to 60 s) and is logged once per
//! distinct error. The runner (`runner.rs`) does the I/O.

use std::{
    collections::BTreeSet,
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant},
};

use tracing::{debug, error, info, warn};

pub use super::events::{Effect, Event, Loaded, Now, Tally, Version};
use super::{
    backoff::{Backoff, Report},
    confirm::{Confirm, Start},
    journal::Save,
    probes::{self, Probe},
    reconciler::{Outcome, Request},
    state::{self, Saved},
};
use crate::{
    config::Topology,
    datapath::Scope,
    probe::{PrivateKey, failover::Failover, hub::Outcome as Heard, io::Inner},
    reconcile::{Conflict, Mac},
};

/// A hub looks for expired peers when the first live one would expire (a
/// scan of every peer finds that time), at most this often...
pub const EXPIRY_CHECK: Duration = Duration::from_millis(250);
/// ...and at least this often when no learned peer is live.
pub const EXPIRY_IDLE: Duration = Duration::from_secs(3600);
/// How long drift the kernel reports is collected before one reconcile
/// repairs it all (a device deleted by hand takes its entries with it, in
/// one burst of notifications).
pub const DRIFT_SETTLE: Duration = Duration::from_millis(50);
/// How long a hub collects newly learned endpoints before installing them
/// in one reconcile (a mass join costs one reconcile, not one per spoke).
pub const LEARN_BATCH: Duration = Duration::from_millis(3);
/// Replay counters that changed reach the disk at least this often.
pub const COUNTER_SAVE_INTERVAL: Duration = Duration::from_secs(30);
/// A spoke saves a counter this far (in nanoseconds: one hour of its
/// wall-clock counter) ahead of what it sends, and saves again when half of
/// it is used: one write per half hour, and after a crash, even with a clock
/// that went back, it resumes above every counter it ever sent.
pub const COUNTER_RESERVE: u64 = 3_600_000_000_000;

pub struct Controller {
    pub(super) node: String,
    pub(super) topo: Arc<Topology>,
    pub(super) sha256: String,
    /// The running file's text: kept as the last good file once it proves
    /// itself.
    pub(super) text: Arc<str>,
    pub(super) key: Option<PrivateKey>,
    /// Confirmation of a changed file, rollback, the last good file.
    pub(super) confirm: Confirm,
    /// Counts switches to another file; a reconcile carries the generation
    /// it started under.
    pub(super) generation: u64,
    pub(super) probe: Probe,
    /// A spoke's primary hub, failing over and back.
    pub(super) failover: Option<Failover>,
    resync: Duration,
    pub(super) tally: Tally,
    pub(super) conflicts: Vec<Conflict>,
    /// What the last reconcile's desired state waits for (a missing master).
    pub(super) waiting: Vec<crate::reconcile::Waiting>,
    /// Reconcile: running now, wanted (by when, why), failures.
    in_flight: Option<InFlight>,
    wanted: Option<(Instant, String)>,
    pub(super) next_resync: Instant,
    pub(super) reconcile: Backoff,
    /// Scopes of earlier topologies still to remove.
    pub(super) retire: Vec<Scope>,
    /// Answers waiting for the reconcile that installs their endpoints.
    pending_answers: Vec<(IpAddr, Vec<u8>)>,
    learn_at: Option<Instant>,
    pub(super) next_expiry_check: Instant,
    /// Saving: something changed since the last save, a save is running,
    /// the next save is due, failures.
    dirty: bool,
    save_in_flight: bool,
    save_at: Option<Instant>,
    save: Backoff,
    /// Peers whose saved state changed since the last save started;
    /// `None`: save everything (the first save of a run, after a failed
    /// save, after a reload that changed the network).
    unsaved: Option<BTreeSet<String>>,
    /// The spoke's counter as saved (its reservation).
    pub(super) reserved: u64,
    /// SHA-256 of an invalid file already reported.
    pub(super) invalid: Option<(String, String)>,
    ready: bool,
    pub(super) reloading: bool,
    /// Drift reported since the last reconcile started.
    drift_burst: u64,
    /// Peers changed since the last reconcile started, in the probe or in
    /// the file; `None`: something beyond peers changed (or the last
    /// reconcile failed), so the next looks at everything.
    touched: Option<BTreeSet<String>>,
}

struct InFlight {
    answers: Vec<(IpAddr, Vec<u8>)>,
    why: String,
    generation: u64,
}

impl Controller {
    /// A controller for `node`, with what a previous run saved. The first
    /// reconcile is due at once.
    #[cfg(test)]
    pub fn new(
        node: &str,
        v: Version,
        saved: &Saved,
        resync: Duration,
        now: Now,
    ) -> Result<Controller, String> {
        Controller::start(
            node,
            Start {
                run: v,
                instead_of: None,
                previous: None,
            },
            saved,
            resync,
            now,
        )
    }

    /// A controller that starts as [`super::confirm::choose_start`] chose:
    /// on the file on disk, maybe inside a confirmation window resumed from
    /// a previous run, or on the last good file instead of a broken or
    /// rolled-back one.
    pub fn start(
        node: &str,
        start: Start,
        saved: &Saved,
        resync: Duration,
        now: Now,
    ) -> Result<Controller, String> {
        let Version {
            topo,
            key,
            sha256,
            text,
        } = start.run;
        let mut probe = probes::configure(None, &topo, node, key.as_ref())?;
        let mut reserved = 0;
        if saved.node == node || saved.node.is_empty() {
            state::restore(&mut probe, saved, &topo, now.at);
            reserved = saved.counter;
        } else {
            warn!("saved state belongs to node {}; ignoring it", saved.node);
        }
        let mut failover = probes::failover(None, &topo, node, now.at);
        if let (Some(f), Some(p)) = (&mut failover, &saved.primary)
            && saved.node == node
        {
            f.restore_primary(p);
        }
        let mut ctl = Controller {
            failover,
            node: node.to_string(),
            topo,
            sha256,
            text,
            key,
            confirm: Confirm::default(),
            generation: 0,
            probe,
            resync,
            tally: Tally::default(),
            conflicts: Vec::new(),
            waiting: Vec::new(),
            in_flight: None,
            wanted: Some((now.at, "start".into())),
            next_resync: now.at + resync,
            reconcile: Backoff::default(),
            retire: Vec::new(),
            pending_answers: Vec::new(),
            learn_at: None,
            next_expiry_check: now.at,
            dirty: false,
            save_in_flight: false,
            save_at: None,
            save: Backoff::default(),
            unsaved: None,
            reserved,
            invalid: None,
            ready: false,
            reloading: false,
            drift_burst: 0,
            touched: None,
        };
        let fallback = start.instead_of.is_some();
        match start.instead_of {
            Some((_, Ok(errors))) => {
                for e in &errors {
                    error!("{e}");
                }
                error!(
                    "the topology file is refused; starting on the last good file, sha256 {}",
                    ctl.sha256
                );
                ctl.invalid = Some((String::new(), errors.join("\n")));
            }
            Some((bad, Err(()))) => {
                warn!(
                    "topology sha256 {bad} was rolled back before the restart; starting on the last good file, sha256 {} (SIGHUP tries the file again)",
                    ctl.sha256
                );
                ctl.confirm.rejected = Some(bad);
            }
            None => {}
        }
        if let Some(p) = &start.previous {
            info!(
                "resuming the confirmation of topology sha256 {}: back to sha256 {} unless a hub answers within {:?}",
                ctl.sha256, p.sha256, ctl.topo.network.confirm_after
            );
        }
        if !fallback {
            ctl.open_window(start.previous, 0, now.at);
        } else {
            // The last good file needs no proving.
            ctl.confirm.good = Some((ctl.sha256.clone(), ctl.text.clone()));
        }
        Ok(ctl)
    }

    pub fn topology(&self) -> &Arc<Topology> {
        &self.topo
    }

    /// Take one event; returns what to do, including anything now due.
    pub fn on(&mut self, event: Event, now: Now) -> Vec<Effect> {
        let mut out = Vec::new();
        match event {
            Event::Keepalive {
                payload,
                from,
                inner,
            } => self.on_keepalive(&payload, from, inner, now, &mut out),
            Event::Answer(payload) => self.on_answer(&payload, now),
            Event::Tick => {}
            Event::Config(loaded) => self.on_config(loaded, now, &mut out),
            Event::Reconciled(outcome) => self.on_reconciled(outcome, now, &mut out),
            Event::Saved(r) => self.on_saved(r, now),
            Event::KernelChanged => {
                self.touch_all();
                self.want(now.at, "kernel changed");
            }
            Event::Drift(d) => self.on_drift(&d, now.at),
        }
        self.poll(now, &mut out);
        out
    }

    /// When the controller next has something to do, if nothing happens
    /// before.
    pub fn next_wakeup(&self, now: Instant) -> Instant {
        // A running reconcile reports back by itself.
        let reconcile = self.in_flight.is_none().then(|| self.reconcile_due());
        let probe = match &self.probe {
            Probe::Spoke(s) => s.next_due(now),
            Probe::Hub(_) => self.next_expiry_check,
        };
        let failover = match (&self.failover, &self.probe) {
            (Some(f), Probe::Spoke(s)) => f.next_check(now, |h| last_answer(s, h)),
            _ => None,
        };
        [
            reconcile,
            self.learn_at,
            self.save_due(),
            failover,
            self.window_due(),
        ]
        .into_iter()
        .flatten()
        .fold(probe, Instant::min)
    }

    #[cfg(test)]
    pub fn debug_timers(&self, now: Instant) -> String {
        let d = |t: Option<Instant>| t.map(|t| t.saturating_duration_since(now));
        format!(
            "resync {:?} due {:?} learn {:?} save {:?} in flight {}",
            d(Some(self.next_resync)),
            d(Some(self.reconcile_due())),
            d(self.learn_at),
            d(self.save_due()),
            self.in_flight.is_some()
        )
    }

    /// What the planner needs of the probe: learned and expired peers
    /// (hub), the current primary hub (spoke).
    pub(super) fn liveness(&self) -> crate::reconcile::Liveness {
        let mut l = self.probe.liveness();
        l.primary = self.liveness_primary();
        l
    }

    fn liveness_primary(&self) -> Option<String> {
        self.failover
            .as_ref()
            .and_then(|f| f.primary().map(str::to_string))
    }

    /// Something beyond single peers changed: the next reconcile looks at
    /// everything.
    pub(super) fn touch_all(&mut self) {
        self.touched = None;
    }

    /// `peer` changed (in the probe or the file).
    pub(super) fn touch(&mut self, peer: &str) {
        if let Some(t) = &mut self.touched {
            t.insert(peer.to_string());
        }
    }

    /// Ask for a reconcile by `at` (coalesced with any other request).
    pub(super) fn want(&mut self, at: Instant, why: &str) {
        match &mut self.wanted {
            Some((t, _)) if *t <= at => {}
            w => *w = Some((at, why.to_string())),
        }
    }

    /// When the next reconcile may start: what was asked, or the resync,
    /// but never before a failing one's back-off ends.
    fn reconcile_due(&self) -> Instant {
        let asked = self.wanted.as_ref().map(|(t, _)| *t);
        let due = asked.map_or(self.next_resync, |t| t.min(self.next_resync));
        match self.reconcile.retry_at {
            Some(r) => due.max(r),
            None => due,
        }
    }

    /// When the next save may start: when one is wanted, none is running,
    /// and a failed one's back-off is over.
    fn save_due(&self) -> Option<Instant> {
        if self.save_in_flight {
            return None;
        }
        let at = self.save_at?;
        Some(self.save.retry_at.map_or(at, |r| at.max(r)))
    }

    /// Emit whatever is due at `now`.
    fn poll(&mut self, now: Now, out: &mut Vec<Effect>) {
        let t = now.at;
        if self.learn_at.is_some_and(|l| t >= l) {
            self.learn_at = None;
            self.want(t, "learned endpoint");
        }
        if let Probe::Hub(h) = &mut self.probe
            && t >= self.next_expiry_check
        {
            let (gone, next) = h.expire(t);
            self.next_expiry_check = next.map_or(t + EXPIRY_IDLE, |n| n.max(t + EXPIRY_CHECK));
            for name in &gone {
                let after = h.peers().get(name).map(|p| p.expire_after);
                info!(peer = %name, "no keepalive for {after:?}: expired");
            }
            for name in &gone {
                self.touch(name);
                self.unsaved(name);
            }
            if !gone.is_empty() {
                self.want(t, "expiry");
                self.save_soon(t);
            }
        }
        if let (Some(f), Probe::Spoke(s)) = (&mut self.failover, &self.probe)
            && let Some(c) = f.update(t, |h| last_answer(s, h))
        {
            let from = c.from.as_deref().unwrap_or("none");
            if c.failback {
                info!(hub = %c.to, "primary hub {from} -> {}: it answered steadily, failing back", c.to);
            } else {
                warn!(hub = %c.to, "primary hub {from} -> {}: {from} silent for {:?}, failing over", c.to, self.topo.network.failover_after);
                self.tally.count("failovers", 1);
            }
            self.touched = None;
            self.want(t, "primary hub changed");
        }
        self.check_window(now, out);
        if self.in_flight.is_none() && t >= self.reconcile_due() {
            self.start_reconcile(t, out);
        }
        if let Probe::Spoke(s) = &mut self.probe {
            let sends = s.on_tick(t, now.wall_ns);
            crate::daemon::layer2::note_path_mtu(s, &mut self.tally);
            for (mac, payload) in sends {
                if let Some(to) = hub_address(&self.topo, mac) {
                    out.push(Effect::Send { to, payload });
                }
            }
            // Reserve counters ahead, so a crash never reuses one.
            let c = s.counter();
            if c.saturating_add(COUNTER_RESERVE / 2) > self.reserved {
                self.reserved = c.saturating_add(COUNTER_RESERVE);
                self.save_soon(t);
            }
        }
        if self.dirty && self.save_at.is_none() {
            self.save_at = Some(t + COUNTER_SAVE_INTERVAL);
        }
        if self.save_due().is_some_and(|s| t >= s) {
            self.save_at = None;
            self.dirty = false;
            self.save_in_flight = true;
            let s = self.save(now);
            self.confirm.good_saving = s
                .good()
                .and(self.confirm.good.as_ref())
                .map(|(sha, _)| sha.clone());
            out.push(Effect::Save(s));
        }
    }

    fn start_reconcile(&mut self, t: Instant, out: &mut Vec<Effect>) {
        let why = match self.wanted.take() {
            Some((_, why)) => why,
            None if self.reconcile.is_failing() => "retry".into(),
            None => "resync".into(),
        };
        // The resync timer restarts with every run.
        self.next_resync = t + self.resync;
        if self.drift_burst > 1 {
            info!(
                "drift: {} changes by hand in all; repairing",
                self.drift_burst
            );
        }
        self.drift_burst = 0;
        self.in_flight = Some(InFlight {
            answers: std::mem::take(&mut self.pending_answers),
            why: why.clone(),
            generation: self.generation,
        });
        // The resync and retries look at everything; otherwise only what
        // changed needs planning.
        let changed = match self.touched.replace(BTreeSet::new()) {
            Some(_) if why == "resync" || why == "retry" => None,
            t => t,
        };
        let liveness = match &changed {
            None => self.liveness(),
            Some(names) => {
                let mut l = self.probe.liveness_of(names);
                l.primary = self.liveness_primary();
                l
            }
        };
        out.push(Effect::Reconcile(Request {
            why,
            topo: self.topo.clone(),
            node: self.node.clone(),
            liveness,
            retire: self.retire.clone(),
            changed,
        }));
    }

    fn on_reconciled(&mut self, o: Outcome, now: Now, out: &mut Vec<Effect>) {
        let t = now.at;
        let Some(flight) = self.in_flight.take() else {
            return;
        };
        let why = flight.why;
        self.tally.reconcile_seconds_sum += o.seconds;
        for c in &o.conflicts {
            if !self.conflicts.contains(c) {
                warn!("{c}");
            }
        }
        self.conflicts = o.conflicts;
        crate::daemon::layer2::note_waiting(&mut self.waiting, o.waiting);
        if let Probe::Spoke(s) = &mut self.probe
            && o.result.is_ok()
        {
            s.set_mtu(o.mtu, t);
        }
        match o.result {
            Ok(applied) => {
                self.tally.reconcile_ok += 1;
                if o.narrowed {
                    self.tally.reconcile_narrowed += 1;
                }
                self.window_applied(flight.generation, t);
                let ended = self.reconcile.succeeded();
                if ended > 0 {
                    info!("reconcile ({why}): the kernel matches again after {ended} failed tries");
                }
                self.retire.clear();
                for s in &applied.done {
                    info!("{s}");
                    let action = serde_json::to_value(s.action)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default();
                    let n = self
                        .tally
                        .changes
                        .entry((s.object.kind().to_string(), action))
                        .or_default();
                    *n = n.saturating_add(1);
                }
                if applied.done.is_empty() {
                    debug!("reconcile ({why}): no changes");
                } else {
                    info!(
                        "reconcile ({why}): {} changes, {} kernel writes",
                        applied.done.len(),
                        applied.writes
                    );
                }
                if !self.ready {
                    self.ready = true;
                    out.push(Effect::Notify("READY=1\nSTATUS=reconciled".into()));
                } else if self.reloading {
                    out.push(Effect::Notify("READY=1".into()));
                }
                self.reloading = false;
            }
            Err(e) => {
                self.tally.reconcile_failed += 1;
                self.touch_all();
                let msg = e.to_string();
                let report = self.reconcile.failed(t, msg.clone());
                let delay = self.reconcile.current_delay();
                match report {
                    Report::New => error!(
                        "reconcile ({why}) failed: {msg}; retrying in {delay:?}, backing off up to {:?}",
                        super::backoff::MAX_RETRY
                    ),
                    Report::Repeated => debug!("reconcile ({why}) failed again: {msg}"),
                }
                if self.reloading {
                    self.reloading = false;
                    out.push(Effect::Notify(format!(
                        "READY=1\nSTATUS=reconcile failing: {msg}"
                    )));
                }
            }
        }
        for (to, payload) in flight.answers {
            out.push(Effect::Send { to, payload });
            self.tally.count("sent", 1);
        }
    }

    /// A keepalive seen on the underlay. A new or moved endpoint is
    /// installed by one reconcile for the whole burst (`LEARN_BATCH` later),
    /// and its answer waits for that; an unchanged one is answered now.
    fn on_keepalive(
        &mut self,
        payload: &[u8],
        from: SocketAddr,
        inner: Inner,
        now: Now,
        out: &mut Vec<Effect>,
    ) {
        let Probe::Hub(hub) = &mut self.probe else {
            return;
        };
        self.tally.count("received", 1);
        match hub.on_keepalive(payload, from, inner, now.at, now.wall_ns) {
            Heard::Rejected(r) => {
                debug!(from = %from, "keepalive rejected: {r}");
                self.tally.count(&format!("rejected_{}", r.label()), 1);
            }
            Heard::Accepted {
                peer,
                changed,
                answer,
                ..
            } => {
                let Some(address) = probes::address_of(&self.topo, &peer) else {
                    return;
                };
                // The peer is live until its expire_after from now: the
                // expiry check must come by then.
                if let Some(p) = hub.peers().get(&peer) {
                    let due = now.at + p.expire_after;
                    self.next_expiry_check = self.next_expiry_check.min(due);
                }
                self.tally.count("accepted", 1);
                self.dirty = true;
                self.unsaved(&peer);
                if changed {
                    info!(peer = %peer, endpoint = %from, "learned endpoint");
                    self.touch(&peer);
                    self.tally.count("endpoint_changes", 1);
                    self.pending_answers.push((address, answer));
                    self.learn_at.get_or_insert(now.at + LEARN_BATCH);
                    self.save_soon(now.at);
                } else {
                    out.push(Effect::Send {
                        to: address,
                        payload: answer,
                    });
                    self.tally.count("sent", 1);
                }
            }
        }
    }

    fn on_answer(&mut self, payload: &[u8], now: Now) {
        let Probe::Spoke(spoke) = &mut self.probe else {
            return;
        };
        self.tally.count("received", 1);
        match spoke.on_answer(payload, now.at) {
            Ok(hub) => {
                debug!(hub = %hub, "answer");
                self.tally.count("accepted", 1);
            }
            Err(r) => self.tally.count(&format!("rejected_{}", r.label()), 1),
        }
        crate::daemon::layer2::note_path_mtu(spoke, &mut self.tally);
    }

    /// Drift reported by the kernel: the first of a burst is logged, and one
    /// reconcile repairs the burst.
    fn on_drift(&mut self, d: &str, t: Instant) {
        self.tally.drift = self.tally.drift.saturating_add(1);
        self.touch_all();
        if self.drift_burst == 0 {
            info!("drift: {d}; repairing");
        } else {
            debug!("drift: {d}");
        }
        self.drift_burst += 1;
        self.want(t + DRIFT_SETTLE, "drift");
    }

    /// `peer`'s saved state changed (its endpoint, counter, liveness or
    /// declaration).
    pub(super) fn unsaved(&mut self, peer: &str) {
        if let Some(u) = &mut self.unsaved
            && !u.contains(peer)
        {
            u.insert(peer.to_string());
        }
    }

    /// Everything must be saved again.
    pub(super) fn unsaved_all(&mut self) {
        self.unsaved = None;
    }

    /// What the next save writes: what changed since the last one, in
    /// O(changes); the whole state only when asked for.
    fn save(&mut self, now: Now) -> Save {
        match self.unsaved.replace(BTreeSet::new()) {
            None => Save::Whole(self.saved(now)),
            Some(names) => Save::Delta(self.saved_head(), self.saved_peers(&names, now)),
        }
    }

    /// What a stopping daemon writes last: everything, as one snapshot.
    pub fn save_all(&self, now: Now) -> Save {
        Save::Whole(self.saved(now))
    }

    pub(super) fn save_soon(&mut self, t: Instant) {
        self.dirty = true;
        self.save_at = Some(self.save_at.map_or(t, |s| s.min(t)));
    }

    fn on_saved(&mut self, r: Result<(), String>, now: Now) {
        self.save_in_flight = false;
        match r {
            Ok(()) => {
                self.save.succeeded();
                if let Some(sha) = self.confirm.good_saving.take() {
                    self.confirm.good_written = Some(sha);
                }
            }
            Err(e) => {
                self.confirm.good_saving = None;
                // What the failed save carried is not known to be written.
                self.unsaved_all();
                if self.save.failed(now.at, e.clone()) == Report::New {
                    error!("saving state: {e}; retrying with back-off");
                }
                self.save_soon(now.at);
            }
        }
    }
}

fn last_answer(s: &crate::probe::spoke::SpokeProbe, hub: &str) -> Option<Instant> {
    s.hubs().get(hub).and_then(|h| h.last_answer)
}

fn hub_address(topo: &Topology, mac: Mac) -> Option<IpAddr> {
    topo.hubs()
        .find(|h| Mac::for_overlay(h.address) == mac)
        .map(|h| h.address)
}

//! Reloads that roll themselves back, in the controller. After a changed
//! file reaches the kernel, a spoke waits for a hub to answer. If none has
//! `confirm_after` later, and one did before the change, the spoke goes back
//! to the file it ran before and keeps running on it; the rolled-back file
//! is not applied again until it changes or SIGHUP asks. A file that proves
//! itself (an answer on a spoke, a successful reconcile on a hub) becomes
//! the last good file, kept in the state directory, so a restart in the
//! middle of a confirmation window resumes it, and a restart on a broken
//! file starts on the last good one. Hubs never roll back: they have no
//! hub to lose.

use std::{sync::Arc, time::Instant};

use tracing::{error, info, warn};

use super::{
    controller::{Controller, Effect, Now, Version},
    probes::Probe,
    state::Saved,
};

/// What the controller knows of confirmation and rollback.
#[derive(Debug, Default)]
pub(super) struct Confirm {
    /// The running file, until it proves itself.
    pub window: Option<Window>,
    /// SHA-256 of a file rolled back: not applied again until the file
    /// changes or SIGHUP.
    pub rejected: Option<String>,
    /// The last good file (SHA-256, text), kept in the state directory.
    pub good: Option<(String, Arc<str>)>,
    /// SHA-256 of the last good file as written by a save that succeeded,
    /// and as sent with the save running now.
    pub good_written: Option<String>,
    pub good_saving: Option<String>,
}

#[derive(Debug)]
pub(super) struct Window {
    /// The file to go back to: `None` when no hub answered before the
    /// change (there was no connectivity to protect), and on hubs.
    pub previous: Option<Version>,
    /// Roll back when nothing answered by then.
    pub deadline: Instant,
    /// The reconcile generation that carries the change, and when it
    /// reached the kernel.
    pub generation: u64,
    pub applied_at: Option<Instant>,
}

/// Which file a daemon starts on: the file on disk, or the last good one.
#[derive(Debug)]
pub struct Start {
    pub run: Version,
    /// The file on disk, when the daemon does not run on it: its SHA-256
    /// and why (its errors, or that it was rolled back).
    pub instead_of: Option<(String, Result<Vec<String>, ()>)>,
    /// The file runs inside a confirmation window that goes back to this.
    pub previous: Option<Version>,
}

/// Choose the file to start on, from the file on disk, the last good file
/// in the state directory and what the previous run saved. Pure.
///
/// - A file on disk that is broken: the last good file, if there is one.
/// - The file a previous run rolled back: the last good file again.
/// - The file a previous run was confirming: it, with a new window back to
///   the last good file.
/// - Otherwise the file on disk.
pub fn choose_start(
    current: Result<Version, Vec<String>>,
    good: Option<Version>,
    saved: &Saved,
) -> Result<Start, Vec<String>> {
    let good = good.filter(|g| current.as_ref().map_or(true, |c| c.sha256 != g.sha256));
    match (current, good) {
        (Err(errors), None) => Err(errors),
        (Err(errors), Some(g)) => Ok(Start {
            instead_of: Some((String::new(), Ok(errors))),
            run: g,
            previous: None,
        }),
        (Ok(c), Some(g)) if saved.rejected.as_ref() == Some(&c.sha256) => Ok(Start {
            instead_of: Some((c.sha256, Err(()))),
            run: g,
            previous: None,
        }),
        (Ok(c), Some(g)) if saved.pending.as_ref() == Some(&c.sha256) => Ok(Start {
            run: c,
            instead_of: None,
            previous: Some(g),
        }),
        (Ok(c), _) => Ok(Start {
            run: c,
            instead_of: None,
            previous: None,
        }),
    }
}

impl Controller {
    /// The running file as a version to go back to.
    pub(super) fn running(&self) -> Version {
        Version {
            topo: self.topo.clone(),
            key: self.key.clone(),
            sha256: self.sha256.clone(),
            text: self.text.clone(),
        }
    }

    /// Open a confirmation window for the file just switched to (generation
    /// `generation`), going back to `previous` if it leaves no hub
    /// answering. On hubs, and where nothing answered before, it only waits
    /// for the file to prove itself.
    pub(super) fn open_window(&mut self, previous: Option<Version>, generation: u64, t: Instant) {
        let previous = previous.filter(|_| matches!(self.probe, Probe::Spoke(_)));
        self.confirm.window = Some(Window {
            previous,
            deadline: t + self.topo.network.confirm_after,
            generation,
            applied_at: None,
        });
    }

    /// What a switch to a new file goes back to: the file an open window
    /// would go back to (the running one has not proved itself), else the
    /// running file if a hub answers now.
    pub(super) fn rollback_target(&self, t: Instant) -> Option<Version> {
        if let Some(w) = &self.confirm.window {
            return w.previous.clone();
        }
        let Probe::Spoke(s) = &self.probe else {
            return None;
        };
        let f = self.failover.as_ref()?;
        s.hubs()
            .values()
            .any(|h| f.answering(h.last_answer, t))
            .then(|| self.running())
    }

    /// A reconcile of `generation` succeeded at `t`.
    pub(super) fn window_applied(&mut self, generation: u64, t: Instant) {
        if let Some(w) = &mut self.confirm.window
            && w.generation == generation
            && w.applied_at.is_none()
        {
            w.applied_at = Some(t);
        }
    }

    /// When the window next needs a look (its rollback deadline).
    pub(super) fn window_due(&self) -> Option<Instant> {
        let w = self.confirm.window.as_ref()?;
        w.previous.as_ref().map(|_| w.deadline)
    }

    /// Keep the running file once it proves itself; roll back once its
    /// deadline passes without an answer.
    pub(super) fn check_window(&mut self, now: Now, out: &mut Vec<Effect>) {
        let t = now.at;
        let Some(w) = &self.confirm.window else {
            return;
        };
        let proved = match (&self.probe, w.applied_at) {
            (_, None) => false,
            (Probe::Hub(_), Some(_)) => true,
            (Probe::Spoke(s), Some(at)) => s
                .hubs()
                .values()
                .any(|h| h.last_answer.is_some_and(|a| a >= at)),
        };
        if proved {
            let w = self.confirm.window.take();
            if w.is_some_and(|w| w.previous.is_some()) {
                info!(
                    "topology sha256 {} confirmed: a hub answered after it was applied",
                    self.sha256
                );
            }
            self.confirm.good = Some((self.sha256.clone(), self.text.clone()));
            self.save_soon(t);
        } else if w.previous.is_some() && t >= w.deadline {
            let reason = match w.applied_at {
                Some(_) => format!(
                    "no hub answered within confirm_after ({:?}) of applying it",
                    self.topo.network.confirm_after
                ),
                None => match &self.reconcile.error {
                    Some(e) => format!("it could not be applied: {e}"),
                    None => "it was not applied in time".to_string(),
                },
            };
            self.roll_back(&reason, now, out);
        }
    }

    fn roll_back(&mut self, reason: &str, now: Now, out: &mut Vec<Effect>) {
        let Some(previous) = self.confirm.window.take().and_then(|w| w.previous) else {
            return;
        };
        let bad = self.sha256.clone();
        let good = previous.sha256.clone();
        if let Err(e) = self.switch(previous, "rollback", now, out) {
            error!("rolling back topology sha256 {bad}: {e}; staying on it");
            return;
        }
        warn!(
            "rolled back topology sha256 {bad} to sha256 {good}: {reason}; the rolled-back file is not applied again until it changes or SIGHUP"
        );
        self.tally.rollbacks = self.tally.rollbacks.saturating_add(1);
        self.confirm.rejected = Some(bad);
        // The file gone back to proved itself before: no new window.
        self.confirm.window = None;
        self.confirm.good = Some((good, self.text.clone()));
        self.save_soon(now.at);
    }

    /// The SHA-256 of the running file while it waits to be confirmed with
    /// somewhere to go back to: saved, so a restart resumes the window.
    pub(super) fn pending(&self) -> Option<String> {
        let w = self.confirm.window.as_ref()?;
        w.previous.as_ref().map(|_| self.sha256.clone())
    }
}

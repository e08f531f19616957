//! Path MTU checks, a spoke's side, per hub, as a pure state machine.
//!
//! Every device MTU is a promise about the underlay path. Now and then
//! ([`PROBE_EVERY`] keepalive intervals), and soon after the path changes
//! (the first answer, a new reflexive address, a new MTU), the spoke sends
//! its hub a probe: a keepalive padded to the device's MTU, which the
//! device encapsulates with DF set, so a narrower path drops it instead of
//! fragmenting it. The hub answers probes like keepalives.
//!
//! A probe is lost once [`PROBE_WAIT`] passed without its answer while an
//! answer to a small keepalive arrived after it was sent: small packets get
//! through, full-size ones do not. [`LOST_PROBES`] lost in a row (a single
//! loss is just loss; the next probe goes at once) and the path cannot carry
//! the MTU. At the default keepalive (25 s) that takes about two intervals.
//! lvn only reports it: it never changes the MTU itself (a mesh protocol
//! such as batman-adv cannot follow per-link MTUs).

use std::time::{Duration, Instant};

/// Keepalive intervals between checks of a path that is fine.
pub const PROBE_EVERY: u32 = 10;
/// How long a probe's answer may take.
pub const PROBE_WAIT: Duration = Duration::from_secs(2);
/// Probes lost in a row before the path is reported unable.
pub const LOST_PROBES: u32 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Outstanding {
    size: u32,
    sent: Instant,
    /// A small keepalive was answered since: the path is up.
    answered_since: bool,
}

/// What is known of one hub's path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PathMtu {
    /// The device MTU to check: the whole length of a probe.
    size: Option<u32>,
    next: Option<Instant>,
    outstanding: Option<Outstanding>,
    lost: u32,
    /// Whether the path carries `size`: `None` while unknown.
    pub ok: Option<bool>,
    /// The largest device MTU a probe on this path was answered at.
    pub carried: Option<u32>,
}

/// A change in what is known, for the log (said once per change).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Carries(u32),
    CannotCarry(u32),
}

impl PathMtu {
    /// The device's MTU (`None`: nothing to check, e.g. datapath fou). A new
    /// one makes what was known stale.
    pub fn set_size(&mut self, size: Option<u32>, now: Instant) {
        if self.size != size {
            *self = PathMtu {
                size,
                next: Some(now),
                ..PathMtu::default()
            };
        }
    }

    /// Check again soon: the path may have changed (a new NAT mapping, the
    /// first answer).
    pub fn path_changed(&mut self, now: Instant) {
        self.next = Some(now);
        self.outstanding = None;
        self.lost = 0;
    }

    /// The probe length to send now, if one is due. Only once small
    /// keepalives are answered (`answering`): otherwise a lost probe says
    /// nothing about its size.
    pub fn due(&mut self, now: Instant, interval: Duration, answering: bool) -> Option<u32> {
        let size = self.size?;
        if !answering || self.outstanding.is_some() || self.next.is_none_or(|t| now < t) {
            return None;
        }
        self.outstanding = Some(Outstanding {
            size,
            sent: now,
            answered_since: false,
        });
        self.next = Some(now + interval * PROBE_EVERY);
        Some(size)
    }

    /// An answer to a small keepalive.
    pub fn on_answer(&mut self) {
        if let Some(o) = &mut self.outstanding {
            o.answered_since = true;
        }
    }

    /// When [`PathMtu::check`] or [`PathMtu::due`] has something to do:
    /// a probe to judge, or one to send (once keepalives are answered).
    pub fn next_event(&self, answering: bool) -> Option<Instant> {
        match self.outstanding {
            Some(o) => o.answered_since.then_some(o.sent + PROBE_WAIT),
            None if answering && self.size.is_some() => self.next,
            None => None,
        }
    }

    /// Judge the outstanding probe: lost once [`PROBE_WAIT`] passed and a
    /// small keepalive was answered meanwhile.
    pub fn check(&mut self, now: Instant) -> Option<Verdict> {
        let o = self.outstanding?;
        if !o.answered_since || now < o.sent + PROBE_WAIT {
            return None;
        }
        self.outstanding = None;
        self.lost += 1;
        if self.lost < LOST_PROBES {
            // Maybe one lost packet: ask again at once.
            self.next = Some(now);
            return None;
        }
        let was = self.ok;
        self.ok = Some(false);
        (was != Some(false)).then_some(Verdict::CannotCarry(o.size))
    }

    /// The hub answered a probe of `len` bytes.
    pub fn on_probe_answer(&mut self, len: u32) -> Option<Verdict> {
        self.outstanding = None;
        self.lost = 0;
        if self.size != Some(len) {
            return None; // a stale answer, to a probe of an older MTU
        }
        self.carried = Some(self.carried.map_or(len, |c| c.max(len)));
        let was = self.ok;
        self.ok = Some(true);
        (was != Some(true)).then_some(Verdict::Carries(len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const I: Duration = Duration::from_secs(1);

    fn started(t0: Instant) -> PathMtu {
        let mut p = PathMtu::default();
        p.set_size(Some(1450), t0);
        p
    }

    #[test]
    fn waits_for_answers_then_probes_now_and_then() {
        let t0 = Instant::now();
        let mut p = started(t0);
        assert_eq!(p.due(t0, I, false), None, "no answers yet");
        assert_eq!(p.next_event(true), Some(t0));
        assert_eq!(p.due(t0, I, true), Some(1450));
        assert_eq!(p.due(t0 + I, I, true), None, "one at a time");
        assert_eq!(p.on_probe_answer(1450), Some(Verdict::Carries(1450)));
        assert_eq!((p.ok, p.carried), (Some(true), Some(1450)));
        assert_eq!(p.next_event(true), Some(t0 + 10 * I));
        assert_eq!(p.due(t0 + 9 * I, I, true), None);
        assert_eq!(p.due(t0 + 10 * I, I, true), Some(1450));
        assert_eq!(p.on_probe_answer(1450), None, "said once");
    }

    #[test]
    fn small_answers_without_probe_answers_mean_the_path_cannot_carry() {
        let t0 = Instant::now();
        let mut p = started(t0);
        assert_eq!(p.due(t0, I, true), Some(1450));
        // No small answer since: nothing to judge, however long it takes.
        assert_eq!(p.next_event(true), None);
        assert_eq!(p.check(t0 + 30 * I), None);
        p.on_answer();
        assert_eq!(p.next_event(true), Some(t0 + PROBE_WAIT));
        assert_eq!(p.check(t0 + I), None, "its answer may still come");
        assert_eq!(p.check(t0 + 30 * I), None, "one probe lost: retry");
        assert_eq!(p.ok, None);
        let t1 = t0 + 30 * I;
        assert_eq!(p.due(t1, I, true), Some(1450), "at once");
        p.on_answer();
        assert_eq!(p.check(t1 + PROBE_WAIT), Some(Verdict::CannotCarry(1450)));
        assert_eq!((p.ok, p.carried), (Some(false), None));
        // Said once; checked again at the usual pace.
        assert_eq!(p.due(t1 + 5 * I, I, true), None);
        assert_eq!(p.due(t1 + 10 * I, I, true), Some(1450));
        p.on_answer();
        assert_eq!(p.check(t1 + 13 * I), None, "still false: not said again");
        assert_eq!(p.ok, Some(false));
        assert_eq!(
            p.due(t1 + 13 * I, I, true),
            None,
            "known bad: the usual pace"
        );
        // The path changed (a new mapping): checked at once, and fine now.
        p.path_changed(t1 + 19 * I);
        assert_eq!(p.due(t1 + 19 * I, I, true), Some(1450));
        assert_eq!(p.on_probe_answer(1450), Some(Verdict::Carries(1450)));
    }

    #[test]
    fn a_new_mtu_forgets_the_old_verdict() {
        let t0 = Instant::now();
        let mut p = started(t0);
        p.due(t0, I, true);
        p.on_probe_answer(1450);
        p.set_size(Some(1500), t0 + I);
        assert_eq!((p.ok, p.carried), (None, None));
        assert_eq!(p.on_probe_answer(1450), None, "an old answer");
        assert_eq!(p.ok, None);
        p.set_size(None, t0 + I);
        assert_eq!(p.due(t0 + 2 * I, I, true), None, "nothing to check");
    }
}

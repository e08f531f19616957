//! Path MTU checks, a spoke's side, per hub, as a pure state machine.
//!
//! Every device MTU is a promise about the underlay path. Now and then
//! ([`PROBE_EVERY`] keepalive intervals), and soon after the path changes
//! (the first answer, a new reflexive address, a new MTU), the spoke sends
//! its hub a probe: a keepalive padded to the device's MTU, which the
//! device encapsulates with DF set, so a narrower path drops it instead of
//! fragmenting it. The hub answers probes like keepalives.
//!
//! A probe is lost once [`LOST_AFTER_ANSWERS`] answers to small keepalives
//! arrived after it and its own answer did not: small packets get through,
//! full-size ones do not. [`LOST_PROBES`] lost in a row (a single loss is
//! just loss) and the path cannot carry the MTU. lvn only reports it: it
//! never changes the MTU itself (a mesh protocol such as batman-adv cannot
//! follow per-link MTUs).

use std::time::{Duration, Instant};

/// Keepalive intervals between checks of a path that is fine.
pub const PROBE_EVERY: u32 = 10;
/// Answers to small keepalives after a probe that make it lost.
pub const LOST_AFTER_ANSWERS: u32 = 2;
/// Probes lost in a row before the path is reported unable.
pub const LOST_PROBES: u32 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Outstanding {
    size: u32,
    answers_since: u32,
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
            answers_since: 0,
        });
        self.next = Some(now + interval * PROBE_EVERY);
        Some(size)
    }

    /// An answer to a small keepalive.
    pub fn on_answer(&mut self, now: Instant) -> Option<Verdict> {
        let o = self.outstanding.as_mut()?;
        o.answers_since += 1;
        if o.answers_since < LOST_AFTER_ANSWERS {
            return None;
        }
        let size = o.size;
        self.outstanding = None;
        self.lost += 1;
        if self.lost < LOST_PROBES {
            // Maybe one lost packet: ask again at once.
            self.next = Some(now);
            return None;
        }
        let was = self.ok;
        self.ok = Some(false);
        (was != Some(false)).then_some(Verdict::CannotCarry(size))
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
        assert_eq!(p.due(t0, I, true), Some(1450));
        assert_eq!(p.due(t0 + I, I, true), None, "one at a time");
        assert_eq!(p.on_probe_answer(1450), Some(Verdict::Carries(1450)));
        assert_eq!((p.ok, p.carried), (Some(true), Some(1450)));
        assert_eq!(p.due(t0 + 9 * I, I, true), None);
        assert_eq!(p.due(t0 + 10 * I, I, true), Some(1450));
        assert_eq!(p.on_probe_answer(1450), None, "said once");
    }

    #[test]
    fn small_answers_without_probe_answers_mean_the_path_cannot_carry() {
        let t0 = Instant::now();
        let mut p = started(t0);
        assert_eq!(p.due(t0, I, true), Some(1450));
        assert_eq!(p.on_answer(t0 + I), None);
        assert_eq!(p.on_answer(t0 + 2 * I), None, "one probe lost: retry");
        assert_eq!(p.ok, None);
        assert_eq!(p.due(t0 + 2 * I, I, true), Some(1450));
        assert_eq!(p.on_answer(t0 + 3 * I), None);
        assert_eq!(p.on_answer(t0 + 4 * I), Some(Verdict::CannotCarry(1450)));
        assert_eq!((p.ok, p.carried), (Some(false), None));
        // Said once; the path is checked again later.
        assert_eq!(p.on_answer(t0 + 5 * I), None);
        assert_eq!(p.due(t0 + 14 * I, I, true), Some(1450));
        assert_eq!(p.on_answer(t0 + 15 * I), None);
        assert_eq!(
            p.on_answer(t0 + 16 * I),
            None,
            "still false: not said again"
        );
        assert_eq!(p.ok, Some(false));
        assert_eq!(
            p.due(t0 + 16 * I, I, true),
            None,
            "known bad: the usual pace"
        );
        // The path got better.
        p.path_changed(t0 + 19 * I);
        assert_eq!(p.due(t0 + 19 * I, I, true), Some(1450));
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

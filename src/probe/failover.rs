//! Which hub a spoke routes the overlay through: the first hub of its
//! placement order that answers. A pure state machine, `now` passed in.
//!
//! - **Failover.** The primary is down once it has not answered for
//!   `failover_after`; the route moves to the first hub, in order, that is
//!   answering.
//! - **Failback without storms.** A hub earlier in the order becomes primary
//!   again only after it has answered steadily for `failback_after`, plus a
//!   delay of up to `failback_after` drawn from the spoke's and the hub's
//!   names: the spokes of a returning hub come back spread over that window,
//!   not in one second, and the same file always gives the same delays.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use crate::config::placement::unit_interval;

#[derive(Debug, Clone)]
pub struct Failover {
    me: String,
    /// Hubs in placement order, first choice first.
    order: Vec<String>,
    failover_after: Duration,
    failback_after: Duration,
    /// Before any answer, hubs count as up until this long after start.
    started: Instant,
    primary: Option<String>,
    /// Since when each hub has been answering without a gap.
    up_since: BTreeMap<String, Instant>,
    /// Route changes away from a silent primary.
    pub failovers: u64,
}

/// A change of primary, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub from: Option<String>,
    pub to: String,
    /// True when going back to a preferred hub.
    pub failback: bool,
}

impl Failover {
    pub fn new(
        me: &str,
        order: Vec<String>,
        failover_after: Duration,
        failback_after: Duration,
        now: Instant,
    ) -> Failover {
        Failover {
            me: me.to_string(),
            primary: order.first().cloned(),
            order,
            failover_after,
            failback_after,
            started: now,
            up_since: BTreeMap::new(),
            failovers: 0,
        }
    }

    /// New topology: keep the primary if it is still one of the hubs.
    pub fn reconfigure(
        &mut self,
        me: &str,
        order: Vec<String>,
        failover_after: Duration,
        failback_after: Duration,
    ) {
        self.me = me.to_string();
        if !self.primary.as_ref().is_some_and(|p| order.contains(p)) {
            self.primary = order.first().cloned();
        }
        self.up_since.retain(|h, _| order.contains(h));
        self.order = order;
        self.failover_after = failover_after;
        self.failback_after = failback_after;
    }

    /// Resume with the primary a previous run had chosen, if it is still
    /// one of the hubs (a restart does not move the route back by itself).
    pub fn restore_primary(&mut self, hub: &str) {
        if self.order.iter().any(|h| h == hub) {
            self.primary = Some(hub.to_string());
        }
    }

    pub fn primary(&self) -> Option<&str> {
        self.primary.as_deref()
    }

    pub fn order(&self) -> &[String] {
        &self.order
    }

    /// The delay added to `failback_after` before this spoke returns to `hub`.
    pub fn jitter(&self, hub: &str) -> Duration {
        self.failback_after.mul_f64(unit_interval(&self.me, hub))
    }

    /// Answering now: an answer within `failover_after`. A hub that is not
    /// is down for this spoke (status and metrics use the same rule).
    pub fn answering(&self, last_answer: Option<Instant>, now: Instant) -> bool {
        last_answer.is_some_and(|t| now.saturating_duration_since(t) <= self.failover_after)
    }

    /// Up for the primary's sake: answering, or never heard but still
    /// within the grace time after start.
    fn up(&self, last_answer: Option<Instant>, now: Instant) -> bool {
        let since = last_answer.unwrap_or(self.started);
        now.saturating_duration_since(since) <= self.failover_after
    }

    /// Look at the hubs' last answers at `now`; a change of primary, if any.
    pub fn update(
        &mut self,
        now: Instant,
        last_answer: impl Fn(&str) -> Option<Instant>,
    ) -> Option<Change> {
        for h in &self.order {
            if self.answering(last_answer(h), now) {
                self.up_since.entry(h.clone()).or_insert(now);
            } else {
                self.up_since.remove(h);
            }
        }
        let current = self.primary.clone();
        let rank = |h: &str| self.order.iter().position(|o| o == h);
        let next = match current.as_deref() {
            Some(p) if !self.up(last_answer(p), now) => {
                // Failover: the first hub that answers, if any does.
                self.order
                    .iter()
                    .find(|h| self.answering(last_answer(h), now))
                    .cloned()
                    .map(|to| (to, false))
            }
            Some(p) => self.order[..rank(p).unwrap_or(0)]
                .iter()
                .find(|h| {
                    self.up_since.get(*h).is_some_and(|since| {
                        now.saturating_duration_since(*since)
                            >= self.failback_after + self.jitter(h)
                    })
                })
                .cloned()
                .map(|to| (to, true)),
            None => self.order.first().cloned().map(|to| (to, false)),
        };
        let (to, failback) = next?;
        if current.as_deref() == Some(to.as_str()) {
            return None;
        }
        if !failback && current.is_some() {
            self.failovers = self.failovers.saturating_add(1);
        }
        self.primary = Some(to.clone());
        Some(Change {
            from: current,
            to,
            failback,
        })
    }

    /// When `update` may next change something, after `now`: a hub's
    /// answers growing stale, or a failback coming due. (What is past has
    /// been seen by `update` already; only an answer changes it again.)
    pub fn next_check(
        &self,
        now: Instant,
        last_answer: impl Fn(&str) -> Option<Instant>,
    ) -> Option<Instant> {
        let tick = Duration::from_millis(1);
        let stale = self
            .order
            .iter()
            .map(|h| last_answer(h).unwrap_or(self.started) + self.failover_after + tick);
        let failbacks = self
            .up_since
            .iter()
            .map(|(h, since)| *since + self.failback_after + self.jitter(h));
        stale.chain(failbacks).filter(|t| *t > now).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn hubs() -> Vec<String> {
        vec!["h1".into(), "h2".into()]
    }

    #[test]
    fn a_silent_primary_fails_over_to_the_next_hub_that_answers() {
        let t0 = Instant::now();
        let mut f = Failover::new("alice", hubs(), 3 * S, 10 * S, t0);
        let mut answers: BTreeMap<&str, Instant> = BTreeMap::new();
        // Both answer every second for 5 s.
        for i in 0..=5 {
            let t = t0 + i * S;
            answers.insert("h1", t);
            answers.insert("h2", t);
            assert_eq!(f.update(t, |h| answers.get(h).copied()), None);
        }
        assert_eq!(f.primary(), Some("h1"));
        // h1 goes silent at 5 s: still primary at 8 s, gone just after.
        for i in 6..=8 {
            let t = t0 + i * S;
            answers.insert("h2", t);
            assert_eq!(f.update(t, |h| answers.get(h).copied()), None, "{i}");
        }
        let next = f
            .next_check(t0 + 8 * S, |h| answers.get(h).copied())
            .unwrap();
        assert_eq!(next, t0 + 8 * S + Duration::from_millis(1));
        let c = f.update(next, |h| answers.get(h).copied());
        assert_eq!(
            c,
            Some(Change {
                from: Some("h1".into()),
                to: "h2".into(),
                failback: false
            })
        );
        assert_eq!(f.failovers, 1);
    }

    #[test]
    fn failback_waits_for_steady_answers_plus_a_per_spoke_delay() {
        let t0 = Instant::now();
        let mut f = Failover::new("alice", hubs(), 3 * S, 10 * S, t0);
        let mut answers: BTreeMap<&str, Instant> = BTreeMap::new();
        // Only h2 answers; after the grace time, h1 (never heard) is down.
        answers.insert("h2", t0 + 4 * S);
        let c = f.update(t0 + 4 * S, |h| answers.get(h).copied());
        assert_eq!(c.map(|c| (c.to, c.failback)), Some(("h2".into(), false)));
        // h1 answers from 10 s on, every second.
        let due = 10 * S + 10 * S + f.jitter("h1");
        let mut moved_at = None;
        for i in 10..40 {
            let t = t0 + i * S;
            answers.insert("h1", t);
            answers.insert("h2", t);
            if let Some(c) = f.update(t, |h| answers.get(h).copied()) {
                assert!(c.failback && c.to == "h1");
                moved_at = Some(i * S);
                break;
            }
        }
        let moved = moved_at.expect("failed back");
        assert!(
            moved >= due && moved < due + S,
            "moved at {moved:?}, due {due:?}"
        );
    }

    #[test]
    fn failback_delays_spread_spokes_over_the_window() {
        let t0 = Instant::now();
        let delays: Vec<f64> = (0..1000)
            .map(|i| {
                Failover::new(&format!("spoke{i}"), hubs(), 3 * S, 60 * S, t0)
                    .jitter("h1")
                    .as_secs_f64()
            })
            .collect();
        // Over 60 one-second buckets, none holds more than a few percent.
        let mut buckets = [0usize; 60];
        for d in &delays {
            buckets[(*d as usize).min(59)] += 1;
        }
        let max = buckets.iter().max().copied().unwrap_or(0);
        let tens: Vec<usize> = buckets.chunks(10).map(|c| c.iter().sum()).collect();
        eprintln!(
            "failback of 1000 spokes, failback_after 60 s: per 10 s of delay {tens:?}, at most {max} in one second"
        );
        assert!(
            max <= 40,
            "{max} of 1000 spokes fail back in the same second"
        );
        assert!(delays.iter().all(|d| (0.0..60.0).contains(d)));
    }

    #[test]
    fn no_answer_anywhere_keeps_the_primary() {
        let t0 = Instant::now();
        let mut f = Failover::new("alice", hubs(), 3 * S, 10 * S, t0);
        assert_eq!(f.update(t0 + 100 * S, |_| None), None);
        assert_eq!(f.primary(), Some("h1"));
    }
}

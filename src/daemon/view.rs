//! What the controller shows: the `lvn status` document and the metrics
//! text, built from its state and `now`. Pure.

use std::time::Instant;

use super::{
    controller::Controller,
    metrics,
    probes::Probe,
    status::{ConfigStatus, PeerStatus, ReconcileStatus, Status},
};

impl Controller {
    pub fn status(&self, now: Instant) -> Status {
        let secs = |t: Instant| Some(now.saturating_duration_since(t).as_secs_f64());
        let mut peers = Vec::new();
        let (role, reflexive) = match &self.probe {
            Probe::Hub(h) => {
                for (name, p) in h.peers() {
                    let Some(node) = self.topo.nodes.get(name) else {
                        continue;
                    };
                    let live = h.live().get(name);
                    let conflict = self.conflicts.iter().find(|c| &c.refused == name);
                    let (endpoint, source, state) = match (p.static_endpoint, live) {
                        (Some(e), _) => (Some(e), "static", "up"),
                        (None, Some(l)) if conflict.is_some() => {
                            (Some(l.endpoint), "learned", "refused")
                        }
                        (None, Some(l)) if l.up => (Some(l.endpoint), "learned", "up"),
                        (None, Some(l)) => (Some(l.endpoint), "learned", "expired"),
                        (None, None) => (None, "none", "waiting"),
                    };
                    peers.push(PeerStatus {
                        name: name.clone(),
                        address: node.address,
                        endpoint,
                        source: source.into(),
                        state: state.into(),
                        last_seen_secs: live.and_then(|l| secs(l.last_seen)),
                        rtt_ms: None,
                        unanswered: None,
                        note: conflict.map(ToString::to_string),
                        path_mtu_ok: None,
                        path_mtu: None,
                    });
                }
                ("hub", None)
            }
            Probe::Spoke(s) => {
                // A hub is down for this spoke by the failover's own rule.
                let answering = |t: Option<Instant>| {
                    self.failover.as_ref().is_some_and(|f| f.answering(t, now))
                };
                for (name, h) in s.hubs() {
                    let Some(node) = self.topo.nodes.get(name) else {
                        continue;
                    };
                    let state = match h.last_answer {
                        None => "waiting",
                        Some(_) if !answering(h.last_answer) => "down",
                        Some(_) => "up",
                    };
                    peers.push(PeerStatus {
                        name: name.clone(),
                        address: node.address,
                        endpoint: node.endpoint,
                        source: "static".into(),
                        state: state.into(),
                        last_seen_secs: h.last_answer.and_then(secs),
                        rtt_ms: h.rtt.map(|d| d.as_secs_f64() * 1000.0),
                        unanswered: Some(h.unanswered),
                        note: None,
                        path_mtu_ok: Some(h.pmtu.ok),
                        path_mtu: Some(h.pmtu.carried),
                    });
                }
                ("spoke", s.reflexive())
            }
        };
        let r = &self.reconcile;
        Status {
            node: self.node.clone(),
            network: self.topo.network.name.clone(),
            role: role.into(),
            reflexive,
            primary: self.primary_answering(now),
            peers,
            counters: self.tally.counters.clone(),
            reconcile: ReconcileStatus {
                ok: !r.is_failing() && self.tally.reconcile_ok > 0,
                failures: r.failures,
                error: r.error.clone(),
                retry_in_secs: r
                    .retry_at
                    .map(|t| t.saturating_duration_since(now).as_secs_f64()),
                waiting: self.waiting.iter().map(ToString::to_string).collect(),
            },
            config: ConfigStatus {
                sha256: self.sha256.clone(),
                refused: self.invalid.as_ref().map(|(_, why)| why.clone()),
                rolled_back_from: self.confirm.rejected.clone(),
                confirm_in_secs: self
                    .window_due()
                    .map(|t| t.saturating_duration_since(now).as_secs_f64()),
            },
        }
    }

    /// A spoke's primary hub if it answers (`Some(None)` if it does not);
    /// `None` on a hub.
    fn primary_answering(&self, now: Instant) -> Option<Option<String>> {
        let (Some(f), Probe::Spoke(s)) = (&self.failover, &self.probe) else {
            return None;
        };
        Some(f.primary().and_then(|p| {
            let answered = s.hubs().get(p)?.last_answer;
            f.answering(answered, now).then(|| p.to_string())
        }))
    }

    /// The Prometheus text exposition.
    pub fn metrics_text(&self, now: Instant) -> String {
        metrics::render(&self.tally, &self.status(now))
    }
}

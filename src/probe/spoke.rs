//! A spoke's side: send a keepalive to every hub each interval on the data
//! flow, check the answers, remember the reflexive address hubs report.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    time::{Duration, Instant},
};

use super::{
    PairKey,
    hub::seal,
    pmtu::{PathMtu, Verdict},
    verify::{self, Freshness, Reject},
    wire::{self, Kind, Message},
};
use crate::{config::placement::unit_interval, reconcile::Mac};

/// Keepalives go out up to this fraction of an interval early, drawn from
/// the spoke's name and counter, so a fleet that booted together does not
/// send in step.
pub const KEEPALIVE_JITTER: f64 = 0.1;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubLink {
    pub name: String,
    pub mac: Mac,
    pub key: Option<PairKey>,
    pub last_sent: Option<Instant>,
    /// When the next keepalive is due: up to a tenth of an interval early,
    /// never late (the interval is chosen to beat NAT timeouts), so spokes
    /// that started together drift apart.
    pub next_send: Option<Instant>,
    pub last_answer: Option<Instant>,
    /// Time from the last keepalive sent to the answer that followed it.
    pub rtt: Option<Duration>,
    /// Keepalives sent since the last answer.
    pub unanswered: u32,
    /// Highest counter of a verified answer (auth = "keys"); 0 otherwise.
    pub answer_counter: u64,
    /// This spoke's address and port as this hub sees them.
    pub reflexive: Option<SocketAddr>,
    /// Whether the path to this hub carries the device's MTU.
    pub pmtu: PathMtu,
}

#[derive(Debug, Clone)]
pub struct SpokeProbe {
    me: String,
    auth: bool,
    interval: Duration,
    hubs: BTreeMap<String, HubLink>,
    counter: u64,
    /// The device MTU the paths are checked for (datapath vxlan).
    mtu: Option<u32>,
    /// Path MTU verdicts not yet taken by the caller (for the log).
    verdicts: Vec<(String, Verdict)>,
}

impl SpokeProbe {
    pub fn new(
        me: &str,
        auth: bool,
        interval: Duration,
        hubs: Vec<(String, Mac, Option<PairKey>)>,
    ) -> Self {
        let mut s = SpokeProbe {
            me: String::new(),
            auth,
            interval,
            hubs: BTreeMap::new(),
            counter: 0,
            mtu: None,
            verdicts: Vec::new(),
        };
        s.reconfigure(me, auth, interval, hubs);
        s
    }

    /// New topology: keep what is known of hubs still declared. A hub's
    /// answer counter is forgotten when the auth mode or its key changes:
    /// it was accepted under other rules, and kept it could refuse the
    /// genuine hub's answers as replays forever.
    pub fn reconfigure(
        &mut self,
        me: &str,
        auth: bool,
        interval: Duration,
        hubs: Vec<(String, Mac, Option<PairKey>)>,
    ) {
        let auth_changed = auth != self.auth;
        self.me = me.to_string();
        self.auth = auth;
        self.interval = interval;
        let mut old = std::mem::take(&mut self.hubs);
        for (name, mac, key) in hubs {
            let mut link = old.remove(&name).unwrap_or(HubLink {
                name: name.clone(),
                mac,
                key: None,
                last_sent: None,
                next_send: None,
                last_answer: None,
                rtt: None,
                unanswered: 0,
                answer_counter: 0,
                reflexive: None,
                pmtu: PathMtu::default(),
            });
            if auth_changed || link.key != key {
                link.answer_counter = 0;
            }
            link.mac = mac;
            link.key = key;
            self.hubs.insert(name, link);
        }
    }

    /// Restore the counter floor (from the state directory), so a restart
    /// with a clock that went back still sends fresh counters.
    pub fn restore_counter(&mut self, counter: u64) {
        self.counter = self.counter.max(counter);
    }

    pub fn counter(&self) -> u64 {
        self.counter
    }

    /// Keepalives (and path MTU probes) due now: (hub MAC, payload).
    pub fn on_tick(&mut self, now: Instant, counter_hint: u64) -> Vec<(Mac, Vec<u8>)> {
        let mut out = Vec::new();
        for h in self.hubs.values_mut() {
            let key = h.key.as_ref().filter(|_| self.auth);
            if h.next_send.is_none_or(|t| now >= t) {
                self.counter = counter_hint.max(self.counter.saturating_add(1));
                let m = Message {
                    kind: Kind::Keepalive,
                    counter: self.counter,
                    from: self.me.clone(),
                    to: h.name.clone(),
                    probe: None,
                };
                h.last_sent = Some(now);
                h.unanswered = h.unanswered.saturating_add(1);
                let early = KEEPALIVE_JITTER * unit_interval(&self.me, &m.counter.to_string());
                h.next_send = Some(now + self.interval.mul_f64(1.0 - early));
                out.push((h.mac, seal(&m, key)));
            }
            if let Some(v) = h.pmtu.check(now) {
                self.verdicts.push((h.name.clone(), v));
            }
            if let Some(size) = h.pmtu.due(now, self.interval, answering(h)) {
                self.counter = counter_hint.max(self.counter.saturating_add(1));
                let probe = Message {
                    kind: Kind::Keepalive,
                    counter: self.counter,
                    from: self.me.clone(),
                    to: h.name.clone(),
                    probe: Some(0),
                };
                if let Some(p) = padded(probe, size, key.is_some()) {
                    out.push((h.mac, seal(&p, key)));
                }
            }
        }
        out
    }

    /// The device MTU to check the paths for; `None`: no checks.
    pub fn set_mtu(&mut self, mtu: Option<u32>, now: Instant) {
        // Larger than a probe may be: not checked (unknown), never "false".
        let mtu = mtu.filter(|m| usize::try_from(*m).is_ok_and(|m| m <= wire::MAX_PROBE));
        self.mtu = mtu;
        for h in self.hubs.values_mut() {
            h.pmtu.set_size(mtu, now);
        }
    }

    /// Path MTU verdicts since the last call, by hub.
    pub fn take_verdicts(&mut self) -> Vec<(String, Verdict)> {
        std::mem::take(&mut self.verdicts)
    }

    /// When the next keepalive is due.
    pub fn next_due(&self, now: Instant) -> Instant {
        self.hubs
            .values()
            .map(|h| {
                let keepalive = h.next_send.unwrap_or(now);
                h.pmtu
                    .next_event(answering(h))
                    .map_or(keepalive, |t| t.min(keepalive))
            })
            .min()
            .unwrap_or(now + self.interval)
    }

    /// An answer arrived on the overlay; returns the hub's name.
    pub fn on_answer(&mut self, payload: &[u8], now: Instant) -> Result<String, Reject> {
        let d = wire::decode(payload).map_err(Reject::Malformed)?;
        let m = &d.message;
        let Kind::Answer { seen } = m.kind else {
            return Err(Reject::NotKeepalive);
        };
        if m.to != self.me {
            return Err(Reject::NotForMe);
        }
        let h = self.hubs.get_mut(&m.from).ok_or(Reject::Unknown)?;
        if self.auth {
            let fresh = Freshness::Above(h.answer_counter);
            verify::authenticate(h.key.as_ref(), payload, &d, fresh)?;
            // Only a verified counter is the hub's.
            h.answer_counter = m.counter;
        }
        h.last_answer = Some(now);
        h.rtt = h.last_sent.map(|t| now.saturating_duration_since(t));
        h.unanswered = 0;
        if h.reflexive != Some(seen) {
            h.pmtu.path_changed(now);
        }
        h.reflexive = Some(seen);
        let verdict = match m.probe {
            Some(len) => h.pmtu.on_probe_answer(u32::from(len)),
            None => {
                h.pmtu.on_answer();
                None
            }
        };
        if let Some(v) = verdict {
            self.verdicts.push((h.name.clone(), v));
        }
        Ok(h.name.clone())
    }

    pub fn mtu(&self) -> Option<u32> {
        self.mtu
    }

    pub fn hubs(&self) -> &BTreeMap<String, HubLink> {
        &self.hubs
    }

    /// The reflexive address reported by the first hub (by name) that answered.
    pub fn reflexive(&self) -> Option<SocketAddr> {
        self.hubs.values().find_map(|h| h.reflexive)
    }
}

/// `m` (a probe with no padding yet) padded so the whole message, tag
/// included, is `size` bytes; `None` if it cannot be (too small or larger
/// than a probe may be).
fn padded(mut m: Message, size: u32, tagged: bool) -> Option<Message> {
    let fixed = wire::encode_body(&m, false).len() + if tagged { wire::TAG_LEN } else { 0 };
    let size = usize::try_from(size).ok()?;
    if size > wire::MAX_PROBE {
        return None;
    }
    m.probe = Some(u16::try_from(size.checked_sub(fixed)?).ok()?);
    Some(m)
}

/// Small keepalives to `h` are answered: a lost probe then says something
/// about its size.
fn answering(h: &HubLink) -> bool {
    h.last_answer.is_some() && h.unanswered <= 1
}

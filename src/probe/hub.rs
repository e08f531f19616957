//! A hub's side of the keepalive protocol, as a pure state machine: what a
//! keepalive from an address means, given what the hub knows and `now`.
//! The caller does the I/O: it reconciles when an endpoint appears or moves,
//! then sends the answer.
//!
//! Every check comes before the first change: a keepalive that is refused,
//! for whatever reason, leaves the hub exactly as it was.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

pub use super::verify::Reject;
use super::{
    PairKey,
    verify::{self, Freshness},
    wire::{self, Kind, Message, TAG_LEN},
};
use crate::reconcile::Mac;

/// Who sent the inner packet of a keepalive, as its inner headers say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inner {
    /// VXLAN: the inner Ethernet source.
    Mac(Mac),
    /// FOU: the inner IPv4 source.
    Ip(IpAddr),
}

/// A node that may send this hub keepalives.
#[derive(Debug, Clone)]
pub struct Peer {
    pub name: String,
    pub mac: Mac,
    /// The node's overlay address: the inner source of its keepalives on fou.
    pub address: IpAddr,
    /// With auth = "keys": the pair key of this hub and the peer.
    pub key: Option<PairKey>,
    /// A declared endpoint wins over anything learned, and never expires.
    pub static_endpoint: Option<SocketAddr>,
    pub expire_after: Duration,
}

impl Peer {
    /// Whether the inner packet came from this peer. Without this, anyone
    /// on the underlay could name a peer in a keepalive whose inner frame
    /// is theirs.
    fn sent(&self, inner: Inner) -> bool {
        match inner {
            Inner::Mac(m) => m == self.mac,
            Inner::Ip(ip) => ip == self.address,
        }
    }
}

/// What the hub has heard from a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Live {
    pub endpoint: SocketAddr,
    pub last_seen: Instant,
    /// Highest counter accepted from the peer under auth = "keys" (replay
    /// protection). 0: none known, as under auth = "none" (where anyone can
    /// write any counter) or since the peer's key or the auth mode changed.
    pub counter: u64,
    /// False once `expire_after` passed without a keepalive.
    pub up: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Accepted. If `changed`, the endpoint is new or moved: install it
    /// before sending `answer` to `to`.
    Accepted {
        peer: String,
        changed: bool,
        answer: Vec<u8>,
        to: Mac,
    },
    Rejected(Reject),
}

/// Accepted keepalives per second and burst allowed from one peer. A spoke
/// sends one per interval; this leaves room for restarts and several
/// daemons' worth of retries while bounding what one peer (or, under auth =
/// "none", anyone naming it) can make the hub reconcile and answer.
pub const RATE_PER_PEER: f64 = 10.0;
pub const BURST_PER_PEER: f64 = 20.0;

/// How far behind the hub's clock the counter of a keepalive may be when
/// the hub knows no counter for its sender (a fresh hub, or one that lost
/// its state directory). Counters are wall-clock nanoseconds, so:
/// - a spoke whose clock is more than this behind the hub's, and whose
///   counter the hub does not know, is refused until its clock is right;
/// - a keepalive captured more than this long ago cannot be replayed to a
///   hub that lost its state (a shorter bound narrows that window but
///   refuses spokes with worse clocks).
///
/// Once a counter is known, only a strictly higher one is accepted.
pub const MAX_COUNTER_AGE: Duration = Duration::from_secs(24 * 3600);
const MAX_COUNTER_AGE_NS: u64 = MAX_COUNTER_AGE.as_nanos() as u64;

/// A token bucket: [`RATE_PER_PEER`] tokens a second, at most
/// [`BURST_PER_PEER`].
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(now: Instant) -> Self {
        Bucket {
            tokens: BURST_PER_PEER,
            at: now,
        }
    }

    fn level(&self, now: Instant) -> f64 {
        let refill = now.saturating_duration_since(self.at).as_secs_f64() * RATE_PER_PEER;
        (self.tokens + refill).min(BURST_PER_PEER)
    }

    fn take(&mut self, now: Instant) -> bool {
        self.tokens = self.level(now);
        self.at = self.at.max(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[derive(Debug, Clone)]
pub struct HubProbe {
    me: String,
    auth: bool,
    peers: BTreeMap<String, Peer>,
    live: BTreeMap<String, Live>,
    counter: u64,
    /// Per declared peer, charged only by keepalives that passed every
    /// check: junk naming a peer cannot lock it out, and the map is as
    /// bounded as the topology.
    limits: BTreeMap<String, Bucket>,
}

impl HubProbe {
    pub fn new(me: &str, auth: bool, peers: Vec<Peer>) -> Self {
        HubProbe {
            me: me.to_string(),
            auth,
            peers: peers.into_iter().map(|p| (p.name.clone(), p)).collect(),
            live: BTreeMap::new(),
            counter: 0,
            limits: BTreeMap::new(),
        }
    }

    /// New topology: keep what was heard from peers still declared. A
    /// peer's counter is forgotten when the auth mode or its key changes:
    /// it was accepted under other rules, and kept it could refuse the
    /// genuine peer as a replay forever.
    pub fn reconfigure(&mut self, me: &str, auth: bool, peers: Vec<Peer>) {
        let peers: BTreeMap<String, Peer> =
            peers.into_iter().map(|p| (p.name.clone(), p)).collect();
        let auth_changed = auth != self.auth;
        self.live.retain(|name, _| peers.contains_key(name));
        self.limits.retain(|name, _| peers.contains_key(name));
        for (name, l) in &mut self.live {
            let old_key = self.peers.get(name).and_then(|p| p.key.as_ref());
            let new_key = peers.get(name).and_then(|p| p.key.as_ref());
            if auth_changed || old_key != new_key {
                l.counter = 0;
            }
        }
        self.me = me.to_string();
        self.auth = auth;
        self.peers = peers;
    }

    /// Restore what the state directory kept of a peer, as heard `now`. An
    /// expired one (`up` false) only keeps its counter, which still refuses
    /// replays of its old keepalives.
    pub fn restore(
        &mut self,
        name: &str,
        endpoint: SocketAddr,
        counter: u64,
        up: bool,
        now: Instant,
    ) {
        if self.peers.contains_key(name) {
            self.live.insert(
                name.to_string(),
                Live {
                    endpoint,
                    last_seen: now,
                    counter,
                    up,
                },
            );
        }
    }

    /// A UDP payload's inner keepalive arrived from `from` (the outer source
    /// address and port, as NAT rewrote them), in an inner packet from
    /// `inner`. `counter_hint` is the hub's clock in nanoseconds since the
    /// epoch: it numbers the answer and dates counters of unknown peers.
    pub fn on_keepalive(
        &mut self,
        payload: &[u8],
        from: SocketAddr,
        inner: Inner,
        now: Instant,
        counter_hint: u64,
    ) -> Outcome {
        match self.accept(payload, from, inner, now, counter_hint) {
            Ok(o) => o,
            Err(r) => Outcome::Rejected(r),
        }
    }

    /// Checks everything, then changes state: an `Err` leaves `self` as it
    /// was.
    fn accept(
        &mut self,
        payload: &[u8],
        from: SocketAddr,
        inner: Inner,
        now: Instant,
        counter_hint: u64,
    ) -> Result<Outcome, Reject> {
        let d = wire::decode(payload).map_err(Reject::Malformed)?;
        let m = &d.message;
        if m.kind != Kind::Keepalive {
            return Err(Reject::NotKeepalive);
        }
        if m.to != self.me {
            return Err(Reject::NotForMe);
        }
        let peer = self.peers.get(&m.from).ok_or(Reject::Unknown)?;
        if !peer.sent(inner) {
            return Err(Reject::InnerMismatch);
        }
        let live = self.live.get(&m.from);
        if self.auth {
            let fresh = match live.map(|l| l.counter) {
                Some(last) if last > 0 => Freshness::Above(last),
                _ => Freshness::AtLeast(counter_hint.saturating_sub(MAX_COUNTER_AGE_NS)),
            };
            verify::authenticate(peer.key.as_ref(), payload, &d, fresh)?;
        }
        let bucket = self.limits.get_mut(&m.from);
        let mut charged = bucket.as_deref().copied().unwrap_or(Bucket::full(now));
        if !charged.take(now) {
            return Err(Reject::RateLimited);
        }

        // Accepted: from here on, state changes (in place where an entry
        // exists: no allocation per keepalive).
        match bucket {
            Some(b) => *b = charged,
            None => {
                self.limits.insert(peer.name.clone(), charged);
            }
        }
        let endpoint = peer.static_endpoint.unwrap_or(from);
        let changed = match live {
            Some(l) => !l.up || l.endpoint != endpoint,
            None => true,
        } && peer.static_endpoint.is_none();
        let heard = Live {
            endpoint,
            last_seen: now,
            // Only a verified counter is the peer's: under auth = "none"
            // anyone could have written it.
            counter: if self.auth { m.counter } else { 0 },
            up: true,
        };
        match self.live.get_mut(&m.from) {
            Some(l) => *l = heard,
            None => {
                self.live.insert(peer.name.clone(), heard);
            }
        }
        let name = peer.name.clone();
        let to = peer.mac;
        let key = peer.key.clone().filter(|_| self.auth);
        self.counter = counter_hint.max(self.counter.saturating_add(1));
        let answer = Message {
            kind: Kind::Answer { seen: from },
            counter: self.counter,
            from: self.me.clone(),
            to: name.clone(),
            // A probe's answer says how long the probe was (the path MTU
            // check); small itself, the answer always gets back.
            probe: m
                .probe
                .map(|_| u16::try_from(payload.len()).unwrap_or(u16::MAX)),
        };
        Ok(Outcome::Accepted {
            peer: name,
            changed,
            answer: seal(&answer, key.as_ref()),
            to,
        })
    }

    /// Mark peers silent for longer than their `expire_after` as down;
    /// returns their names (their entries should go), and when the next
    /// live peer would expire if nothing is heard from it (`None`: no live
    /// learned peer). Nothing expires before that, so the caller need not
    /// look again until then, or until a keepalive is accepted.
    pub fn expire(&mut self, now: Instant) -> (Vec<String>, Option<Instant>) {
        let mut gone = Vec::new();
        let mut next: Option<Instant> = None;
        // Both maps are in name order and every live peer is declared: one
        // walk of the two together, not a search of `peers` per live peer
        // (at 100k peers that search was most of an expiry's cost).
        let mut peers = self.peers.iter().peekable();
        for (name, l) in &mut self.live {
            while peers.next_if(|(n, _)| *n < name).is_some() {}
            let Some((_, p)) = peers.next_if(|(n, _)| *n == name) else {
                continue;
            };
            if !l.up || p.static_endpoint.is_some() {
                continue;
            }
            if now.saturating_duration_since(l.last_seen) > p.expire_after {
                l.up = false;
                gone.push(name.clone());
            } else {
                let at = l.last_seen + p.expire_after;
                next = Some(next.map_or(at, |n| n.min(at)));
            }
        }
        (gone, next)
    }

    /// Learned endpoints of live peers: what the planner installs.
    pub fn learned(&self) -> BTreeMap<String, SocketAddr> {
        self.live
            .iter()
            .filter(|(name, l)| {
                l.up && self
                    .peers
                    .get(*name)
                    .is_some_and(|p| p.static_endpoint.is_none())
            })
            .map(|(n, l)| (n.clone(), l.endpoint))
            .collect()
    }

    /// Everything heard from every peer, expired and static ones included:
    /// what the state directory must keep (each entry's `counter` refuses
    /// replays after a restart, see [`HubProbe::restore`]).
    pub fn live(&self) -> &BTreeMap<String, Live> {
        &self.live
    }

    pub fn peers(&self) -> &BTreeMap<String, Peer> {
        &self.peers
    }

    /// Peers whose next keepalive would be refused as rate limited `now`.
    pub fn rate_limited_peers(&self, now: Instant) -> impl Iterator<Item = &str> {
        self.limits
            .iter()
            .filter(move |(_, b)| b.level(now) < 1.0)
            .map(|(name, _)| name.as_str())
    }
}

/// Encode a message, with a tag if there is a key.
pub fn seal(m: &Message, key: Option<&PairKey>) -> Vec<u8> {
    let mut b = wire::encode_body(m, key.is_some());
    if let Some(k) = key {
        let tag: [u8; TAG_LEN] = k.tag(&b);
        b.extend_from_slice(&tag);
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub() -> HubProbe {
        HubProbe::new(
            "hub1",
            false,
            vec![Peer {
                name: "alice".into(),
                mac: Mac([2, 0, 0, 0, 0, 2]),
                address: [100, 64, 1, 2].into(),
                key: None,
                static_endpoint: None,
                expire_after: Duration::from_secs(4),
            }],
        )
    }

    /// Whatever arrives from however many sources, the limiter holds at
    /// most one bucket per declared peer.
    #[test]
    fn rate_limiter_memory_is_bounded_by_the_peers() {
        let mut h = hub();
        let now = Instant::now();
        let keepalive = |from: &str| {
            seal(
                &Message {
                    kind: Kind::Keepalive,
                    counter: 1,
                    from: from.into(),
                    to: "hub1".into(),
                    probe: None,
                },
                None,
            )
        };
        let (alice, stranger) = (keepalive("alice"), keepalive("mallory"));
        let inner = Inner::Mac(Mac([2, 0, 0, 0, 0, 2]));
        for i in 0..10_000u32 {
            let src = SocketAddr::new(
                std::net::Ipv6Addr::from((0x2001_0db8u128 << 96) | u128::from(i)).into(),
                1,
            );
            h.on_keepalive(b"junk", src, inner, now, 0);
            h.on_keepalive(&stranger, src, inner, now, 0);
            h.on_keepalive(&alice, src, inner, now, 0);
        }
        assert_eq!(h.limits.len(), 1);
        assert_eq!(h.rate_limited_peers(now).collect::<Vec<_>>(), ["alice"]);
    }

    #[test]
    fn bucket_refills_at_the_rate_up_to_the_burst() {
        let t0 = Instant::now();
        let mut b = Bucket::full(t0);
        let taken = (0..1000).filter(|_| b.take(t0)).count();
        assert_eq!(taken, BURST_PER_PEER as usize);
        let t1 = t0 + Duration::from_secs(1);
        let taken = (0..1000).filter(|_| b.take(t1)).count();
        assert_eq!(taken, RATE_PER_PEER as usize);
        // A clock that goes back neither refills nor panics.
        assert!(!b.take(t0));
        let t2 = t1 + Duration::from_secs(3600);
        assert_eq!(b.level(t2), BURST_PER_PEER);
    }
}

//! A hub's side of the keepalive protocol, as a pure state machine: what a
//! keepalive from an address means, given what the hub knows and `now`.
//! The caller does the I/O: it reconciles when an endpoint appears or moves,
//! then sends the answer.

use std::{
    collections::{BTreeMap, HashMap},
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use super::{
    PairKey,
    wire::{self, Kind, Message, TAG_LEN},
};
use crate::reconcile::Mac;

/// A node that may send this hub keepalives.
#[derive(Debug, Clone)]
pub struct Peer {
    pub name: String,
    pub mac: Mac,
    /// With auth = "keys": the pair key of this hub and the peer.
    pub key: Option<PairKey>,
    /// A declared endpoint wins over anything learned, and never expires.
    pub static_endpoint: Option<SocketAddr>,
    pub expire_after: Duration,
}

/// What the hub has heard from a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Live {
    pub endpoint: SocketAddr,
    pub last_seen: Instant,
    /// Highest counter accepted from the peer (replay protection).
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Reject {
    #[error("rate limited")]
    RateLimited,
    #[error("malformed: {0}")]
    Malformed(wire::WireError),
    #[error("not a keepalive")]
    NotKeepalive,
    #[error("addressed to another node")]
    NotForMe,
    #[error("unknown node")]
    Unknown,
    #[error("missing tag")]
    MissingTag,
    #[error("bad tag")]
    BadTag,
    #[error("replayed or old counter")]
    Replay,
}

impl Reject {
    pub fn label(&self) -> &'static str {
        match self {
            Reject::RateLimited => "rate_limited",
            Reject::Malformed(_) => "malformed",
            Reject::NotKeepalive => "not_keepalive",
            Reject::NotForMe => "not_for_me",
            Reject::Unknown => "unknown_node",
            Reject::MissingTag => "missing_tag",
            Reject::BadTag => "bad_tag",
            Reject::Replay => "replay",
        }
    }
}

/// Per-source token bucket, bounded in size whatever arrives.
#[derive(Debug, Clone)]
pub struct RateLimit {
    buckets: HashMap<IpAddr, (f64, Instant)>,
    rate: f64,
    burst: f64,
    max_sources: usize,
}

impl RateLimit {
    pub fn new(rate_per_sec: f64, burst: f64, max_sources: usize) -> Self {
        RateLimit {
            buckets: HashMap::new(),
            rate: rate_per_sec,
            burst,
            max_sources,
        }
    }

    pub fn allow(&mut self, src: IpAddr, now: Instant) -> bool {
        if !self.buckets.contains_key(&src) && self.buckets.len() >= self.max_sources {
            // Forget sources that are full again; if none, refuse newcomers.
            let (rate, burst) = (self.rate, self.burst);
            self.buckets.retain(|_, (tokens, at)| {
                *tokens + now.saturating_duration_since(*at).as_secs_f64() * rate < burst
            });
            if self.buckets.len() >= self.max_sources {
                return false;
            }
        }
        let (tokens, at) = self.buckets.entry(src).or_insert((self.burst, now));
        *tokens = (*tokens + now.saturating_duration_since(*at).as_secs_f64() * self.rate)
            .min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }

    pub fn sources(&self) -> usize {
        self.buckets.len()
    }
}

/// Keepalives per second and burst allowed from one source address (a NAT
/// address may hide many spokes).
pub const RATE_PER_SOURCE: f64 = 50.0;
pub const BURST_PER_SOURCE: f64 = 100.0;
/// Sources tracked at most; memory stays bounded whatever arrives.
pub const MAX_SOURCES: usize = 65_536;

#[derive(Debug, Clone)]
pub struct HubProbe {
    me: String,
    auth: bool,
    peers: BTreeMap<String, Peer>,
    live: BTreeMap<String, Live>,
    counter: u64,
    limit: RateLimit,
}

impl HubProbe {
    pub fn new(me: &str, auth: bool, peers: Vec<Peer>) -> Self {
        HubProbe {
            me: me.to_string(),
            auth,
            peers: peers.into_iter().map(|p| (p.name.clone(), p)).collect(),
            live: BTreeMap::new(),
            counter: 0,
            limit: RateLimit::new(RATE_PER_SOURCE, BURST_PER_SOURCE, MAX_SOURCES),
        }
    }

    /// New topology: keep what was heard from peers still declared.
    pub fn reconfigure(&mut self, me: &str, auth: bool, peers: Vec<Peer>) {
        self.me = me.to_string();
        self.auth = auth;
        self.peers = peers.into_iter().map(|p| (p.name.clone(), p)).collect();
        let peers = &self.peers;
        self.live.retain(|name, _| peers.contains_key(name));
    }

    /// Restore a learned endpoint (from the state directory) as heard `now`;
    /// an expired one only keeps its counter.
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
    /// address and port, as NAT rewrote them). `counter_hint` is the hub's
    /// clock in nanoseconds, used to number the answer.
    pub fn on_keepalive(
        &mut self,
        payload: &[u8],
        from: SocketAddr,
        now: Instant,
        counter_hint: u64,
    ) -> Outcome {
        if !self.limit.allow(from.ip(), now) {
            return Outcome::Rejected(Reject::RateLimited);
        }
        match self.accept(payload, from, now, counter_hint) {
            Ok(o) => o,
            Err(r) => Outcome::Rejected(r),
        }
    }

    fn accept(
        &mut self,
        payload: &[u8],
        from: SocketAddr,
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
        if self.auth {
            let key = peer.key.as_ref().ok_or(Reject::Unknown)?;
            let tag = d.tag.ok_or(Reject::MissingTag)?;
            if !key.verify(&payload[..d.signed_len], &tag) {
                return Err(Reject::BadTag);
            }
            // Only an authenticated counter can tell a replay.
            if let Some(l) = self.live.get(&m.from)
                && m.counter <= l.counter
            {
                return Err(Reject::Replay);
            }
        }
        let endpoint = peer.static_endpoint.unwrap_or(from);
        let changed = match self.live.get(&m.from) {
            Some(l) => !l.up || l.endpoint != endpoint,
            None => true,
        } && peer.static_endpoint.is_none();
        let name = peer.name.clone();
        let to = peer.mac;
        let key = peer.key.clone();
        self.live.insert(
            name.clone(),
            Live {
                endpoint,
                last_seen: now,
                counter: m.counter,
                up: true,
            },
        );
        self.counter = counter_hint.max(self.counter + 1);
        let answer = Message {
            kind: Kind::Answer { seen: from },
            counter: self.counter,
            from: self.me.clone(),
            to: name.clone(),
        };
        Ok(Outcome::Accepted {
            peer: name,
            changed,
            answer: seal(&answer, key.as_ref().filter(|_| self.auth)),
            to,
        })
    }

    /// Mark peers silent for longer than their `expire_after` as down;
    /// returns their names (their entries should go).
    pub fn expire(&mut self, now: Instant) -> Vec<String> {
        let mut gone = Vec::new();
        for (name, l) in &mut self.live {
            let Some(p) = self.peers.get(name) else {
                continue;
            };
            if l.up
                && p.static_endpoint.is_none()
                && now.saturating_duration_since(l.last_seen) > p.expire_after
            {
                l.up = false;
                gone.push(name.clone());
            }
        }
        gone
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

    pub fn live(&self) -> &BTreeMap<String, Live> {
        &self.live
    }

    pub fn peers(&self) -> &BTreeMap<String, Peer> {
        &self.peers
    }

    pub fn rate_limited_sources(&self) -> usize {
        self.limit.sources()
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

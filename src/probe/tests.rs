//! The keepalive protocol end to end, without sockets: a spoke's state
//! machine talking to a hub's, with forged, replayed and hostile input.
//! `tests/counters.rs` holds the replay counters' tests.

use std::{
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use proptest::prelude::*;

use super::{
    PairKey, PrivateKey,
    hub::{BURST_PER_PEER, HubProbe, Inner, Outcome, Peer, RATE_PER_PEER, Reject, seal},
    pair_key,
    spoke::SpokeProbe,
    wire::{Kind, Message},
};
use crate::reconcile::Mac;

mod counters;
mod expiry;

const NET: &str = "ninux";
/// A hub's or spoke's clock, in nanoseconds since the epoch (mid-2025).
const WALL: u64 = 1_750_000_000_000_000_000;
const SECOND: u64 = 1_000_000_000;

fn mac(n: u8) -> Mac {
    Mac([2, 0x4c, 100, 64, 1, n])
}

fn address(n: u8) -> IpAddr {
    [100, 64, 1, n].into()
}

/// Alice's inner source on VXLAN.
fn alice() -> Inner {
    Inner::Mac(mac(2))
}

/// Carol's inner source on VXLAN.
fn carol() -> Inner {
    Inner::Mac(mac(4))
}

/// Hub "hub1" and its spokes: alice and carol (learned endpoints) and bob
/// (a static endpoint, no key). Pair keys exist whatever `auth` says, as
/// when a topology with keys switches `auth` on and off.
struct Pair {
    hub: HubProbe,
    /// Alice.
    spoke: SpokeProbe,
    carol: SpokeProbe,
    /// What the hub was built with, to reconfigure it.
    peers: Vec<Peer>,
    /// Alice's and the hub's pair key.
    alice_key: PairKey,
}

fn pair(auth: bool) -> Pair {
    let (hk, ak, ck) = (
        PrivateKey::generate(),
        PrivateKey::generate(),
        PrivateKey::generate(),
    );
    let key = |a: &PrivateKey, an: &str, b: &PrivateKey, bn: &str| {
        pair_key(a, an, &b.public(), bn, NET).expect("pair key")
    };
    let peer = |name: &str, n: u8, key: Option<PairKey>, static_endpoint| Peer {
        name: name.into(),
        mac: mac(n),
        address: address(n),
        key,
        static_endpoint,
        expire_after: Duration::from_secs(4),
    };
    let peers = vec![
        peer("alice", 2, Some(key(&hk, "hub1", &ak, "alice")), None),
        peer("bob", 3, None, Some("192.0.2.3:4789".parse().unwrap())),
        peer("carol", 4, Some(key(&hk, "hub1", &ck, "carol")), None),
    ];
    let spoke = |me: &str, k: &PrivateKey| {
        SpokeProbe::new(
            me,
            auth,
            Duration::from_secs(1),
            vec![("hub1".into(), mac(1), Some(key(k, me, &hk, "hub1")))],
        )
    };
    Pair {
        hub: HubProbe::new("hub1", auth, peers.clone()),
        spoke: spoke("alice", &ak),
        carol: spoke("carol", &ck),
        peers,
        alice_key: key(&ak, "alice", &hk, "hub1"),
    }
}

impl Pair {
    /// Alice's keepalive with `counter`, sealed with `key`.
    fn keepalive(&self, counter: u64, key: Option<&PairKey>) -> Vec<u8> {
        keepalive("alice", counter, key)
    }

    /// Alice's keepalive with `counter`, sealed with her key.
    fn signed(&self, counter: u64) -> Vec<u8> {
        self.keepalive(counter, Some(&self.alice_key))
    }
}

fn keepalive(from: &str, counter: u64, key: Option<&PairKey>) -> Vec<u8> {
    seal(
        &Message {
            kind: Kind::Keepalive,
            counter,
            from: from.into(),
            to: "hub1".into(),
            probe: None,
        },
        key,
    )
}

fn nat(port: u16) -> SocketAddr {
    SocketAddr::new([198, 51, 100, 2].into(), port)
}

fn accepted(o: &Outcome) -> (bool, Vec<u8>) {
    match o {
        Outcome::Accepted {
            changed, answer, ..
        } => (*changed, answer.clone()),
        Outcome::Rejected(r) => panic!("rejected: {r}"),
    }
}

#[test]
fn learns_the_mapping_answers_and_follows_a_rebinding() {
    for auth in [false, true] {
        let mut p = pair(auth);
        let t0 = Instant::now();
        let sends = p.spoke.on_tick(t0, 1);
        assert_eq!(sends.len(), 1);
        assert_eq!(sends[0].0, mac(1));
        let (changed, answer) =
            accepted(&p.hub.on_keepalive(&sends[0].1, nat(40059), alice(), t0, 1));
        assert!(changed, "first keepalive installs the tunnel");
        assert_eq!(p.hub.learned().get("alice"), Some(&nat(40059)));
        assert_eq!(p.spoke.on_answer(&answer, t0), Ok("hub1".to_string()));
        assert_eq!(p.spoke.reflexive(), Some(nat(40059)));

        // Nothing due before the interval; then the same mapping: no change.
        assert!(
            p.spoke
                .on_tick(t0 + Duration::from_millis(500), 2)
                .is_empty()
        );
        let t1 = t0 + Duration::from_secs(1);
        let s = p.spoke.on_tick(t1, 3);
        assert!(!accepted(&p.hub.on_keepalive(&s[0].1, nat(40059), alice(), t1, 3)).0);
        // NAT rebinding: a new port is one change.
        let t2 = t1 + Duration::from_secs(1);
        let s = p.spoke.on_tick(t2, 4);
        assert!(accepted(&p.hub.on_keepalive(&s[0].1, nat(40077), alice(), t2, 4)).0);
        assert_eq!(p.hub.learned().get("alice"), Some(&nat(40077)));
    }
}

#[test]
fn expires_after_silence_and_comes_back() {
    let mut p = pair(false);
    let t0 = Instant::now();
    let s = p.spoke.on_tick(t0, 1);
    accepted(&p.hub.on_keepalive(&s[0].1, nat(40059), alice(), t0, 1));
    assert_eq!(
        p.hub.expire(t0 + Duration::from_secs(1)),
        (vec![], Some(t0 + Duration::from_secs(4))),
        "nothing to look at before t0 + expire_after"
    );
    assert!(
        p.hub.expire(t0 + Duration::from_secs(4)).0.is_empty(),
        "not before expire_after"
    );
    assert_eq!(
        p.hub.expire(t0 + Duration::from_millis(4001)).0,
        vec!["alice"]
    );
    assert!(p.hub.learned().is_empty());
    assert_eq!(
        p.hub.expire(t0 + Duration::from_secs(60)),
        (vec![], None),
        "expires once, and nothing is left to expire"
    );
    let t1 = t0 + Duration::from_secs(61);
    let s = p.spoke.on_tick(t1, 2);
    assert!(
        accepted(&p.hub.on_keepalive(&s[0].1, nat(41000), alice(), t1, 2)).0,
        "back"
    );
    assert_eq!(p.hub.learned().get("alice"), Some(&nat(41000)));
}

#[test]
fn static_peers_never_expire_and_keep_their_endpoint() {
    let mut p = pair(false);
    let t0 = Instant::now();
    let ka = keepalive("bob", 1, None);
    let (changed, _) = accepted(
        &p.hub
            .on_keepalive(&ka, nat(40001), Inner::Mac(mac(3)), t0, 1),
    );
    assert!(!changed, "a static endpoint is not moved by a keepalive");
    assert!(p.hub.learned().is_empty());
    assert!(p.hub.expire(t0 + Duration::from_secs(3600)).0.is_empty());
}

#[test]
fn with_keys_forged_replayed_and_unknown_keepalives_are_ignored() {
    let mut p = pair(true);
    let t0 = Instant::now();
    let s = p.spoke.on_tick(t0, 10);
    let good = s[0].1.clone();
    accepted(&p.hub.on_keepalive(&good, nat(40059), alice(), t0, 1));

    // A captured keepalive re-sent from another address: replay, endpoint stays.
    let t1 = t0 + Duration::from_millis(10);
    assert_eq!(
        p.hub.on_keepalive(&good, nat(50000), alice(), t1, 2),
        Outcome::Rejected(Reject::Replay)
    );
    assert_eq!(p.hub.learned().get("alice"), Some(&nat(40059)));

    // A spoke with the wrong key: its tags do not verify.
    let mut impostor = pair(true).spoke;
    let forged = impostor.on_tick(t1, 99).remove(0).1;
    assert_eq!(
        p.hub.on_keepalive(&forged, nat(50001), alice(), t1, 3),
        Outcome::Rejected(Reject::BadTag)
    );
    // Without a tag.
    let mut plain = pair(false).spoke;
    let untagged = plain.on_tick(t1, 100).remove(0).1;
    assert_eq!(
        p.hub.on_keepalive(&untagged, nat(50002), alice(), t1, 4),
        Outcome::Rejected(Reject::MissingTag)
    );
    // A flipped bit in the body.
    let mut flipped = p.spoke.on_tick(t0 + Duration::from_secs(1), 11).remove(0).1;
    flipped[10] ^= 1;
    assert_eq!(
        p.hub.on_keepalive(&flipped, nat(40059), alice(), t1, 5),
        Outcome::Rejected(Reject::BadTag)
    );
    // A node without a key.
    assert_eq!(
        p.hub.on_keepalive(
            &keepalive("bob", 12, None),
            nat(1),
            Inner::Mac(mac(3)),
            t1,
            6
        ),
        Outcome::Rejected(Reject::Unknown)
    );
    assert_eq!(p.hub.learned().get("alice"), Some(&nat(40059)));
}

/// Answers signed with another key, unsigned, tampered with or replayed
/// are refused, and the spoke learns nothing from them.
#[test]
fn forged_answers_change_nothing_in_the_spoke() {
    let mut p = pair(true);
    let t0 = Instant::now();
    let s = p.spoke.on_tick(t0, WALL);
    let (_, genuine) = accepted(&p.hub.on_keepalive(&s[0].1, nat(40059), alice(), t0, WALL));
    assert_eq!(p.spoke.on_answer(&genuine, t0), Ok("hub1".to_string()));
    let before = p.spoke.hubs().clone();

    let t1 = t0 + Duration::from_secs(1);
    let later = WALL + 10 * SECOND;
    // Another "hub1" answering "alice", with its own key: a well-formed
    // answer whose tag the spoke's key does not verify.
    let mut other = pair(true);
    let s = other.spoke.on_tick(t1, later);
    let (_, wrong_key) = accepted(
        &other
            .hub
            .on_keepalive(&s[0].1, nat(666), alice(), t1, later),
    );
    assert_eq!(p.spoke.on_answer(&wrong_key, t1), Err(Reject::BadTag));

    let answer = Message {
        kind: Kind::Answer { seen: nat(666) },
        counter: later,
        from: "hub1".into(),
        to: "alice".into(),
        probe: None,
    };
    assert_eq!(
        p.spoke.on_answer(&seal(&answer, None), t1),
        Err(Reject::MissingTag)
    );
    // The genuine answer with the address it reports changed.
    let mut tampered = genuine.clone();
    let port_at = tampered.len() - 16 - 4 - 2;
    tampered[port_at] ^= 0x01;
    assert_eq!(p.spoke.on_answer(&tampered, t1), Err(Reject::BadTag));
    assert_eq!(p.spoke.on_answer(&genuine, t1), Err(Reject::Replay));
    assert_eq!(p.spoke.hubs(), &before, "the spoke learned nothing");
    assert_eq!(p.spoke.reflexive(), Some(nat(40059)));
}

/// A keepalive whose inner packet is not from the node it names is refused
/// before anything changes: endpoint, counter, liveness, rate limit.
#[test]
fn inner_mismatch_changes_nothing() {
    for auth in [false, true] {
        let mut p = pair(auth);
        let t0 = Instant::now();
        let s = p.spoke.on_tick(t0, WALL);
        accepted(&p.hub.on_keepalive(&s[0].1, nat(40059), alice(), t0, WALL));
        let live = p.hub.live().clone();
        let learned = p.hub.learned();

        let t1 = t0 + Duration::from_secs(1);
        let next = p.spoke.on_tick(t1, WALL + SECOND).remove(0).1;
        for inner in [
            Inner::Mac(mac(9)),
            Inner::Mac(mac(4)),
            Inner::Ip(address(9)),
            Inner::Ip(address(4)),
        ] {
            assert_eq!(
                p.hub
                    .on_keepalive(&next, nat(50000), inner, t1, WALL + SECOND),
                Outcome::Rejected(Reject::InnerMismatch),
                "{inner:?}"
            );
        }
        // Many, each with a fresh counter: not one charges alice's rate limit.
        for i in 0..(10 * BURST_PER_PEER as u64) {
            let ka = p.signed(WALL + SECOND + 1 + i);
            assert_eq!(
                p.hub
                    .on_keepalive(&ka, nat(50000), carol(), t1, WALL + SECOND),
                Outcome::Rejected(Reject::InnerMismatch)
            );
        }
        assert_eq!(p.hub.live(), &live, "auth {auth}");
        assert_eq!(p.hub.learned(), learned);
        assert_eq!(p.hub.rate_limited_peers(t1).count(), 0);

        // The very same keepalive, from alice's own packet: fresh, and from
        // the endpoint the hub knows, so nothing to install.
        let (changed, _) = accepted(&p.hub.on_keepalive(&next, nat(40059), alice(), t1, WALL));
        assert!(!changed, "auth {auth}");
        // On fou the inner source is alice's overlay address.
        let t2 = t1 + Duration::from_secs(1);
        let s = p.spoke.on_tick(t2, WALL + 2 * SECOND);
        let (changed, _) =
            accepted(
                &p.hub
                    .on_keepalive(&s[0].1, nat(40059), Inner::Ip(address(2)), t2, WALL),
            );
        assert!(!changed);
    }
}

/// Thousands of unauthenticated packets from a spoke's NAT address, every
/// port, between its keepalives: every keepalive is still accepted.
#[test]
fn junk_from_a_spokes_address_does_not_rate_limit_its_keepalives() {
    for auth in [false, true] {
        let mut p = pair(auth);
        let impostor = pair(true).alice_key;
        let t0 = Instant::now();
        let mut last = None;
        let mut junk_sent = 0;
        for second in 1..=60u64 {
            let now = t0 + Duration::from_secs(second);
            let wall = WALL + second * SECOND;
            // 250 packets over the second before the keepalive, every 4 ms,
            // the last three at the very instant it arrives.
            for j in 0..250u16 {
                let at = now - Duration::from_millis((250 - (u64::from(j) + 3).min(250)) * 4);
                let from = nat(1024 + j * 7 + second as u16);
                let fresh = wall + u64::from(j);
                let (junk, inner) = match (j % 6, auth) {
                    (0, _) => (format!("junk {j}").into_bytes(), alice()),
                    (1, _) => (keepalive("mallory", fresh, None), alice()),
                    (2, _) => (p.signed(fresh), Inner::Mac(mac(9))),
                    (3, true) => (p.keepalive(fresh, Some(&impostor)), alice()),
                    (4, true) => (p.keepalive(fresh, None), alice()),
                    (5, true) => (last.clone().unwrap_or_default(), alice()),
                    _ => (keepalive("carol", fresh, None), alice()),
                };
                let o = p.hub.on_keepalive(&junk, from, inner, at, wall);
                assert!(matches!(o, Outcome::Rejected(_)), "{o:?}");
                assert_ne!(o, Outcome::Rejected(Reject::RateLimited));
                junk_sent += 1;
            }
            let s = p.spoke.on_tick(now, wall).remove(0).1;
            let (changed, _) = accepted(&p.hub.on_keepalive(&s, nat(40059), alice(), now, wall));
            assert_eq!(changed, second == 1, "second {second}");
            last = Some(s);
        }
        assert_eq!(junk_sent, 15_000);
        assert_eq!(p.hub.learned().get("alice"), Some(&nat(40059)));
    }
}

/// One peer flooding valid keepalives is limited; others are not.
#[test]
fn one_peer_flooding_valid_keepalives_is_rate_limited_alone() {
    for auth in [false, true] {
        let mut p = pair(auth);
        let key = Some(&p.alice_key).filter(|_| auth).cloned();
        let t0 = Instant::now();
        let mut counter = WALL;
        let mut flood = |p: &mut Pair, now: Instant, n: usize| {
            (0..n)
                .filter(|_| {
                    counter += 1;
                    let ka = p.keepalive(counter, key.as_ref());
                    match p.hub.on_keepalive(&ka, nat(40059), alice(), now, WALL) {
                        Outcome::Accepted { .. } => true,
                        Outcome::Rejected(Reject::RateLimited) => false,
                        Outcome::Rejected(r) => panic!("{r}"),
                    }
                })
                .count()
        };
        assert_eq!(flood(&mut p, t0, 1000), BURST_PER_PEER as usize);
        assert_eq!(p.hub.rate_limited_peers(t0).collect::<Vec<_>>(), ["alice"]);
        let s = p.carol.on_tick(t0, WALL).remove(0).1;
        accepted(&p.hub.on_keepalive(&s, nat(40060), carol(), t0, WALL));

        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(flood(&mut p, t1, 1000), RATE_PER_PEER as usize);
        // Back to one a second: never limited.
        for second in 2..30 {
            let now = t0 + Duration::from_secs(second);
            assert_eq!(flood(&mut p, now, 1), 1);
        }
        assert_eq!(
            p.hub
                .rate_limited_peers(t0 + Duration::from_secs(30))
                .count(),
            0
        );
    }
}

proptest! {
    /// Whatever arrives, the hub never panics and learns nothing from it.
    #[test]
    fn hostile_bytes_learn_nothing(bytes in prop::collection::vec(any::<u8>(), 0..400), port in 1u16..) {
        for auth in [false, true] {
            let mut p = pair(auth);
            let o = p.hub.on_keepalive(&bytes, nat(port), alice(), Instant::now(), 0);
            prop_assert!(matches!(o, Outcome::Rejected(_)));
            prop_assert!(p.hub.learned().is_empty());
            prop_assert!(p.hub.live().is_empty());
            prop_assert!(p.spoke.on_answer(&bytes, Instant::now()).is_err());
        }
    }
}

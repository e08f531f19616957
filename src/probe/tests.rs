//! The keepalive protocol end to end, without sockets: a spoke's state
//! machine talking to a hub's, with forged, replayed and hostile input.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use proptest::prelude::*;

use super::{
    PrivateKey,
    hub::{HubProbe, Outcome, Peer, Reject},
    pair_key,
    spoke::SpokeProbe,
};
use crate::reconcile::Mac;

const NET: &str = "ninux";

fn mac(n: u8) -> Mac {
    Mac([2, 0x4c, 100, 64, 1, n])
}

struct Pair {
    hub: HubProbe,
    spoke: SpokeProbe,
}

fn pair(auth: bool) -> Pair {
    let (hk, sk) = (PrivateKey::generate(), PrivateKey::generate());
    let key = |a: &PrivateKey, an: &str, b: &PrivateKey, bn: &str| {
        auth.then(|| pair_key(a, an, &b.public(), bn, NET).expect("pair key"))
    };
    let hub = HubProbe::new(
        "hub1",
        auth,
        vec![
            Peer {
                name: "alice".into(),
                mac: mac(2),
                key: key(&hk, "hub1", &sk, "alice"),
                static_endpoint: None,
                expire_after: Duration::from_secs(4),
            },
            Peer {
                name: "bob".into(),
                mac: mac(3),
                key: None,
                static_endpoint: Some("192.0.2.3:4789".parse().unwrap()),
                expire_after: Duration::from_secs(4),
            },
        ],
    );
    let spoke = SpokeProbe::new(
        "alice",
        auth,
        Duration::from_secs(1),
        vec![("hub1".into(), mac(1), key(&sk, "alice", &hk, "hub1"))],
    );
    Pair { hub, spoke }
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
        let (changed, answer) = accepted(&p.hub.on_keepalive(&sends[0].1, nat(40059), t0, 1));
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
        assert!(!accepted(&p.hub.on_keepalive(&s[0].1, nat(40059), t1, 3)).0);
        // NAT rebinding: a new port is one change.
        let t2 = t1 + Duration::from_secs(1);
        let s = p.spoke.on_tick(t2, 4);
        assert!(accepted(&p.hub.on_keepalive(&s[0].1, nat(40077), t2, 4)).0);
        assert_eq!(p.hub.learned().get("alice"), Some(&nat(40077)));
    }
}

#[test]
fn expires_after_silence_and_comes_back() {
    let mut p = pair(false);
    let t0 = Instant::now();
    let s = p.spoke.on_tick(t0, 1);
    p.hub.on_keepalive(&s[0].1, nat(40059), t0, 1);
    assert!(
        p.hub.expire(t0 + Duration::from_secs(4)).is_empty(),
        "not before expire_after"
    );
    assert_eq!(
        p.hub.expire(t0 + Duration::from_millis(4001)),
        vec!["alice"]
    );
    assert!(p.hub.learned().is_empty());
    assert!(
        p.hub.expire(t0 + Duration::from_secs(60)).is_empty(),
        "expires once"
    );
    let t1 = t0 + Duration::from_secs(61);
    let s = p.spoke.on_tick(t1, 2);
    assert!(
        accepted(&p.hub.on_keepalive(&s[0].1, nat(41000), t1, 2)).0,
        "back"
    );
    assert_eq!(p.hub.learned().get("alice"), Some(&nat(41000)));
}

#[test]
fn static_peers_never_expire_and_keep_their_endpoint() {
    let mut p = pair(false);
    let t0 = Instant::now();
    let ka = super::hub::seal(
        &super::wire::Message {
            kind: super::wire::Kind::Keepalive,
            counter: 1,
            from: "bob".into(),
            to: "hub1".into(),
        },
        None,
    );
    let (changed, _) = accepted(&p.hub.on_keepalive(&ka, nat(40001), t0, 1));
    assert!(!changed, "a static endpoint is not moved by a keepalive");
    assert!(p.hub.learned().is_empty());
    assert!(p.hub.expire(t0 + Duration::from_secs(3600)).is_empty());
}

#[test]
fn with_keys_forged_replayed_and_unknown_keepalives_are_ignored() {
    let mut p = pair(true);
    let t0 = Instant::now();
    let s = p.spoke.on_tick(t0, 10);
    let good = s[0].1.clone();
    accepted(&p.hub.on_keepalive(&good, nat(40059), t0, 1));

    // A captured keepalive re-sent from another address: replay, endpoint stays.
    let t1 = t0 + Duration::from_millis(10);
    assert_eq!(
        p.hub.on_keepalive(&good, nat(50000), t1, 2),
        Outcome::Rejected(Reject::Replay)
    );
    assert_eq!(p.hub.learned().get("alice"), Some(&nat(40059)));

    // A spoke with the wrong key: its tags do not verify.
    let mut impostor = pair(true).spoke;
    let forged = impostor.on_tick(t1, 99).remove(0).1;
    assert_eq!(
        p.hub.on_keepalive(&forged, nat(50001), t1, 3),
        Outcome::Rejected(Reject::BadTag)
    );
    // Without a tag.
    let mut plain = pair(false).spoke;
    let untagged = plain.on_tick(t1, 100).remove(0).1;
    assert_eq!(
        p.hub.on_keepalive(&untagged, nat(50002), t1, 4),
        Outcome::Rejected(Reject::MissingTag)
    );
    // A flipped bit in the body.
    let mut flipped = p.spoke.on_tick(t0 + Duration::from_secs(1), 11).remove(0).1;
    flipped[10] ^= 1;
    assert_eq!(
        p.hub.on_keepalive(&flipped, nat(40059), t1, 5),
        Outcome::Rejected(Reject::BadTag)
    );
    assert_eq!(p.hub.learned().get("alice"), Some(&nat(40059)));

    // Forged answers do not fool the spoke.
    let hub2 = pair(true).hub;
    let mut hub2 = hub2;
    let fresh = pair(true).spoke.on_tick(t1, 1).remove(0).1;
    if let Outcome::Accepted { answer, .. } = hub2.on_keepalive(&fresh, nat(1), t1, 1) {
        assert_eq!(p.spoke.on_answer(&answer, t1), Err(Reject::BadTag));
    }
}

#[test]
fn rate_limit_per_source_and_bounded_memory() {
    let mut p = pair(false);
    let t0 = Instant::now();
    let junk = b"not a keepalive";
    let mut limited = 0;
    for _ in 0..1000 {
        if p.hub.on_keepalive(junk, nat(1), t0, 0) == Outcome::Rejected(Reject::RateLimited) {
            limited += 1;
        }
    }
    assert!(
        limited >= 800,
        "one source cannot flood: {limited} of 1000 limited"
    );
    // Many sources: the table stays bounded.
    for i in 0..(super::hub::MAX_SOURCES as u32 + 1000) {
        let src = SocketAddr::new(
            std::net::Ipv6Addr::from((0x2001_0db8u128 << 96) | u128::from(i)).into(),
            1,
        );
        p.hub.on_keepalive(junk, src, t0, 0);
    }
    assert!(p.hub.rate_limited_sources() <= super::hub::MAX_SOURCES);
}

proptest! {
    /// Whatever arrives, the hub never panics and learns nothing from it.
    #[test]
    fn hostile_bytes_learn_nothing(bytes in prop::collection::vec(any::<u8>(), 0..400), port in 1u16..) {
        for auth in [false, true] {
            let mut p = pair(auth);
            let o = p.hub.on_keepalive(&bytes, nat(port), Instant::now(), 0);
            prop_assert!(matches!(o, Outcome::Rejected(_)));
            prop_assert!(p.hub.learned().is_empty());
            prop_assert!(p.spoke.on_answer(&bytes, Instant::now()).is_err());
        }
    }
}

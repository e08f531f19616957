//! Replay counters: only verified ones count, a change of rules forgets
//! them, a hub that knows none still refuses ancient ones, and none of it
//! overflows.

use super::*;
use crate::probe::{
    hub::{Live, MAX_COUNTER_AGE},
    wire,
};

/// Under auth = "none" anyone can write any counter: a forged maximum must
/// not become the peer's counter (it would be saved, and refuse the real
/// spoke as a replay once keys are on).
#[test]
fn counter_from_an_unauthenticated_keepalive_is_not_recorded() {
    let mut p = pair(false);
    let t0 = Instant::now();
    let forged = p.keepalive(u64::MAX, None);
    accepted(&p.hub.on_keepalive(&forged, nat(666), alice(), t0, WALL));
    assert_eq!(p.hub.live()["alice"].counter, 0);
}

/// The spoke's side of the same: an answer under auth = "none" leaves no
/// counter behind.
#[test]
fn counter_from_an_unauthenticated_answer_is_not_recorded() {
    let mut p = pair(false);
    let t0 = Instant::now();
    let forged = seal(
        &Message {
            kind: Kind::Answer { seen: nat(666) },
            counter: u64::MAX,
            from: "hub1".into(),
            to: "alice".into(),
            probe: None,
        },
        None,
    );
    assert_eq!(p.spoke.on_answer(&forged, t0), Ok("hub1".to_string()));
    assert_eq!(p.spoke.hubs()["hub1"].answer_counter, 0);
}

/// A counter kept from auth = "none" (here restored from a state file that
/// recorded a forged maximum) is forgotten when keys come on.
#[test]
fn switching_to_keys_resets_counters() {
    let mut p = pair(false);
    let t0 = Instant::now();
    p.hub.restore("alice", nat(666), u64::MAX, true, t0);
    p.hub.reconfigure("hub1", true, p.peers.clone());
    p.spoke.reconfigure(
        "alice",
        true,
        Duration::from_secs(1),
        vec![("hub1".into(), mac(1), Some(p.alice_key.clone()))],
    );
    let s = p.spoke.on_tick(t0, WALL).remove(0).1;
    let (changed, answer) = accepted(&p.hub.on_keepalive(&s, nat(40059), alice(), t0, WALL));
    assert!(changed);
    assert_eq!(p.hub.live()["alice"].counter, WALL);
    assert_eq!(p.spoke.on_answer(&answer, t0), Ok("hub1".to_string()));
}

/// A counter accepted under a peer's old key (perhaps pushed to the
/// maximum by whoever stole it) is forgotten when the key changes; the
/// counters of peers whose key stayed are kept.
#[test]
fn changing_a_peers_key_resets_its_counter() {
    let mut p = pair(true);
    let t0 = Instant::now();
    let stolen = p.signed(u64::MAX);
    accepted(&p.hub.on_keepalive(&stolen, nat(666), alice(), t0, WALL));
    let s = p.carol.on_tick(t0, WALL).remove(0).1;
    accepted(&p.hub.on_keepalive(&s, nat(40060), carol(), t0, WALL));

    // Nothing changed: both counters stay.
    p.hub.reconfigure("hub1", true, p.peers.clone());
    assert_eq!(p.hub.live()["alice"].counter, u64::MAX);
    assert_eq!(
        p.hub.on_keepalive(&s, nat(40060), carol(), t0, WALL),
        Outcome::Rejected(Reject::Replay)
    );

    // Alice's new key.
    let fresh = pair(true);
    let mut peers = p.peers.clone();
    peers[0].key = fresh.peers[0].key.clone();
    p.hub.reconfigure("hub1", true, peers);
    let genuine = fresh.signed(WALL + SECOND);
    accepted(&p.hub.on_keepalive(&genuine, nat(40059), alice(), t0, WALL));
    assert_eq!(p.hub.live()["alice"].counter, WALL + SECOND);
    assert_eq!(
        p.hub.on_keepalive(&s, nat(40060), carol(), t0, WALL),
        Outcome::Rejected(Reject::Replay),
        "carol's counter is kept"
    );
}

/// The spoke forgets a hub's answer counter when keys come on or the hub's
/// key changes, and keeps it otherwise.
#[test]
fn spoke_resets_answer_counters_when_auth_or_a_key_changes() {
    let mut p = pair(true);
    let t0 = Instant::now();
    let hubs = |key: &PairKey| vec![("hub1".to_string(), mac(1), Some(key.clone()))];
    let answer = |counter: u64, key: Option<&PairKey>| {
        seal(
            &Message {
                kind: Kind::Answer { seen: nat(40059) },
                counter,
                from: "hub1".into(),
                to: "alice".into(),
                probe: None,
            },
            key,
        )
    };
    let second = Duration::from_secs(1);
    let key = p.alice_key.clone();
    p.spoke
        .on_answer(&answer(u64::MAX, Some(&key)), t0)
        .unwrap();
    p.spoke.reconfigure("alice", true, second, hubs(&key));
    assert_eq!(p.spoke.hubs()["hub1"].answer_counter, u64::MAX, "kept");

    let new_key = pair(true).alice_key;
    p.spoke.reconfigure("alice", true, second, hubs(&new_key));
    assert_eq!(
        p.spoke.on_answer(&answer(WALL, Some(&new_key)), t0),
        Ok("hub1".into())
    );

    p.spoke
        .on_answer(&answer(u64::MAX, Some(&new_key)), t0)
        .unwrap();
    p.spoke.reconfigure("alice", false, second, hubs(&new_key));
    p.spoke.reconfigure("alice", true, second, hubs(&new_key));
    assert_eq!(
        p.spoke.on_answer(&answer(WALL, Some(&new_key)), t0),
        Ok("hub1".into())
    );
}

/// A hub that knows no counter for a peer (fresh, or its state lost)
/// refuses a keepalive more than [`MAX_COUNTER_AGE`] older than its clock:
/// a keepalive captured that long ago cannot be replayed to it.
#[test]
fn captured_keepalive_older_than_max_counter_age_is_refused_by_a_hub_without_state() {
    let age = MAX_COUNTER_AGE.as_nanos() as u64;
    let t0 = Instant::now();
    let mut p = pair(true);
    let captured = p.signed(WALL);
    let hub_clock = WALL + age + SECOND;
    assert_eq!(
        p.hub
            .on_keepalive(&captured, nat(666), alice(), t0, hub_clock),
        Outcome::Rejected(Reject::Stale)
    );
    assert_eq!(Reject::Stale.label(), "stale_counter");
    assert!(p.hub.live().is_empty());

    // Within the age: accepted (a spoke whose clock is behind).
    let behind = p.signed(WALL + 2 * SECOND);
    accepted(
        &p.hub
            .on_keepalive(&behind, nat(40059), alice(), t0, hub_clock),
    );
    // Once a counter is known, only "higher" matters, however old.
    let next = p.signed(WALL + 3 * SECOND);
    accepted(
        &p.hub
            .on_keepalive(&next, nat(40059), alice(), t0, hub_clock + age),
    );

    // Under auth = "none" there is no counter to judge.
    let mut p = pair(false);
    accepted(
        &p.hub
            .on_keepalive(&p.keepalive(1, None), nat(1), alice(), t0, hub_clock),
    );
}

/// An expired peer's counter survives a save and restore (`live()` has
/// every peer, expired ones included), so a keepalive captured before the
/// restart is refused, though recent enough to pass for a fresh one.
#[test]
fn restored_expired_peer_refuses_a_replayed_keepalive() {
    let mut p = pair(true);
    let t0 = Instant::now();
    let captured = p.spoke.on_tick(t0, WALL).remove(0).1;
    accepted(&p.hub.on_keepalive(&captured, nat(40059), alice(), t0, WALL));
    let t1 = t0 + Duration::from_secs(60);
    assert_eq!(p.hub.expire(t1).0, ["alice"]);

    let saved: Vec<(String, Live)> = p
        .hub
        .live()
        .iter()
        .map(|(name, l)| (name.clone(), *l))
        .collect();
    assert_eq!(saved.len(), 1, "the expired peer is there to save");
    let mut restarted = HubProbe::new("hub1", true, p.peers.clone());
    let mut lost = restarted.clone();
    for (name, l) in &saved {
        restarted.restore(name, l.endpoint, l.counter, l.up, t1);
    }
    let hub_clock = WALL + 60 * SECOND;
    assert_eq!(
        restarted.on_keepalive(&captured, nat(666), alice(), t1, hub_clock),
        Outcome::Rejected(Reject::Replay)
    );
    assert!(restarted.learned().is_empty());
    // Without the saved counter, the same keepalive would have been taken.
    accepted(&lost.on_keepalive(&captured, nat(666), alice(), t1, hub_clock));
    // The spoke itself is welcome back.
    let s = p.spoke.on_tick(t1, hub_clock).remove(0).1;
    let (changed, _) = accepted(&restarted.on_keepalive(&s, nat(40059), alice(), t1, hub_clock));
    assert!(changed, "an expired peer coming back is installed again");
}

/// Counters at the top of `u64` stay there instead of overflowing.
#[test]
fn counters_saturate_at_u64_max() {
    let mut p = pair(true);
    let t0 = Instant::now();
    let answer_counter = |o: &Outcome| {
        let (_, answer) = accepted(o);
        wire::decode(&answer).expect("answer").message.counter
    };
    for (i, counter) in [u64::MAX - 1, u64::MAX].into_iter().enumerate() {
        let o = p
            .hub
            .on_keepalive(&p.signed(counter), nat(40059), alice(), t0, u64::MAX);
        assert_eq!(answer_counter(&o), u64::MAX, "answer {i}");
    }
    assert_eq!(
        p.hub
            .on_keepalive(&p.signed(u64::MAX), nat(40059), alice(), t0, u64::MAX),
        Outcome::Rejected(Reject::Replay)
    );

    p.spoke.restore_counter(u64::MAX);
    for second in 0..2 {
        let sent = p.spoke.on_tick(t0 + Duration::from_secs(second), 1);
        let counter = wire::decode(&sent[0].1).expect("keepalive").message.counter;
        assert_eq!(counter, u64::MAX);
    }
}

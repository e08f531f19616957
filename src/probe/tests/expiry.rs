//! Expiry, which walks the live and the declared peers together: the same
//! peers expire, at the same checks, as a walk of every peer with a lookup
//! of each declaration would find.

use std::collections::BTreeMap;

use super::*;

/// `n` learned peers p0.. with expire_after of 2-5 s.
fn peers(n: u8, static_every: u8) -> Vec<Peer> {
    (0..n)
        .map(|i| Peer {
            name: format!("p{i}"),
            mac: mac(10 + i),
            address: address(10 + i),
            key: None,
            static_endpoint: (static_every > 0 && i % static_every == 0)
                .then(|| "192.0.2.9:4789".parse().expect("endpoint")),
            expire_after: Duration::from_millis(2000 + 1000 * u64::from(i % 4)),
        })
        .collect()
}

/// What a walk of every peer finds: the learned peers silent for longer
/// than their expire_after, and the earliest deadline of the others.
fn walk(
    peers: &[Peer],
    seen: &mut BTreeMap<String, (Instant, bool)>,
    now: Instant,
) -> (Vec<String>, Option<Instant>) {
    let mut gone = Vec::new();
    let mut next: Option<Instant> = None;
    for p in peers.iter().filter(|p| p.static_endpoint.is_none()) {
        let Some((last, up)) = seen.get_mut(&p.name) else {
            continue;
        };
        if !*up {
            continue;
        }
        if now.saturating_duration_since(*last) > p.expire_after {
            *up = false;
            gone.push(p.name.clone());
        } else {
            let at = *last + p.expire_after;
            next = Some(next.map_or(at, |n| n.min(at)));
        }
    }
    gone.sort(); // name order, as the hub's walk of its map had it
    (gone, next)
}

#[test]
fn each_check_expires_what_a_walk_of_every_peer_would() {
    for seed in [1u64, 7, 42, 1234] {
        let mut rng = seed;
        let mut roll = |n: u64| {
            rng = rng
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (rng >> 33) % n
        };
        let mut topo = peers(40, 0);
        let mut hub = HubProbe::new("hub1", false, topo.clone());
        let mut seen: BTreeMap<String, (Instant, bool)> = BTreeMap::new();
        let t0 = Instant::now();
        let mut now = t0;
        let mut expired = 0;
        for step in 0..3000 {
            now += Duration::from_millis(roll(400));
            match roll(10) {
                0..=5 => {
                    let i = roll(40) as u8;
                    let name = format!("p{i}");
                    let ka = keepalive(&name, step, None);
                    let o = hub.on_keepalive(
                        &ka,
                        nat(40000 + u16::from(i)),
                        Inner::Mac(mac(10 + i)),
                        now,
                        1,
                    );
                    if matches!(o, Outcome::Accepted { .. }) {
                        seen.insert(name, (now, true));
                    }
                }
                6..=8 => {
                    let (gone, next) = hub.expire(now);
                    let (want, earliest) = walk(&topo, &mut seen, now);
                    assert_eq!(gone, want, "seed {seed} step {step}");
                    expired += gone.len();
                    // A bound the caller may sleep until: never after the
                    // earliest deadline, and there while anyone is live.
                    assert_eq!(
                        next.is_some(),
                        earliest.is_some(),
                        "seed {seed} step {step}"
                    );
                    if let (Some(n), Some(e)) = (next, earliest) {
                        assert!(n <= e, "seed {seed} step {step}: {n:?} after {e:?}");
                    }
                }
                _ => {
                    // A reload: other expire_after values, some peers static.
                    let every = roll(5) as u8;
                    topo = peers(40, every);
                    for p in &mut topo {
                        p.expire_after += Duration::from_millis(500 * roll(3));
                    }
                    hub.reconfigure("hub1", false, topo.clone());
                }
            }
        }
        assert!(expired > 50, "seed {seed}: only {expired} expiries");
    }
}

//! Reconciles narrowed to the peers that changed (`reconcile::delta`): a
//! hub under learned, moved and expired endpoints and reloads, checked
//! after every step against what a full observe and plan would want.

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use super::{
    controller::Event,
    state::Saved,
    tests::{Sim, loaded, spoke_probe},
};
use crate::{
    probe::{io::Inner, spoke::SpokeProbe},
    reconcile::{self, Mac},
};

const SPOKES: usize = 12;

/// A tiny deterministic generator (xorshift), so a failure replays.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        usize::try_from(self.0 % n as u64).unwrap_or(0)
    }
}

/// What a reload may change about one spoke.
#[derive(Clone, Copy, PartialEq)]
enum Decl {
    Learned,
    Static,
    /// Moved to another overlay address.
    Moved,
    Gone,
}

fn text(layer2: bool, decl: &[Decl]) -> String {
    let mut t = format!(
        r#"[network]
name = "lab"
overlay = "100.64.0.0/24"
port = 4789
vni = 42
keepalive = "1s"
expire_after = "4s"
{}
[nodes.hub1]
role = "hub"
address = "100.64.0.1"
endpoint = "198.51.100.1:4789"
"#,
        if layer2 { "layer = 2\n" } else { "" }
    );
    for (i, d) in decl.iter().enumerate() {
        let (address, endpoint) = match d {
            Decl::Gone => continue,
            Decl::Learned => (10 + i, String::new()),
            Decl::Static => (
                10 + i,
                format!("endpoint = \"198.51.100.{}:4789\"\n", 10 + i),
            ),
            Decl::Moved => (100 + i, String::new()),
        };
        t.push_str(&format!(
            "\n[nodes.s{i}]\nrole = \"spoke\"\naddress = \"100.64.0.{address}\"\n{endpoint}"
        ));
    }
    t
}

fn address(decl: Decl, i: usize) -> IpAddr {
    let last = if decl == Decl::Moved { 100 + i } else { 10 + i };
    IpAddr::from([100, 64, 0, u8::try_from(last).unwrap()])
}

/// A keepalive from spoke `i`, as its own probe makes it.
fn keepalive(
    sim: &Sim,
    probes: &mut [(SpokeProbe, u64)],
    i: usize,
    decl: Decl,
    from: SocketAddr,
) -> Event {
    // Each keepalive from a later tick of the spoke's own clock, so one is
    // always due.
    let (p, tick) = &mut probes[i];
    *tick += 1;
    let mut sends = p.on_tick(
        sim.now.at + Duration::from_secs(3600 * *tick),
        sim.now.wall_ns,
    );
    Event::Keepalive {
        payload: sends.pop().expect("a keepalive").1,
        from,
        inner: Inner::Mac(Mac::for_overlay(address(decl, i))),
    }
}

fn probe(i: usize) -> (SpokeProbe, u64) {
    (spoke_probe(&format!("s{i}")), 0)
}

/// The fake kernel holds what a full reconcile would want now, and the
/// kernel watch's copy of the desired state is that state.
fn check(sim: &Sim, step: usize, what: &str) {
    let topo = sim.ctl.topology();
    let me = topo.node("hub1").expect("hub");
    let observed = &sim.dp.observed;
    let want = reconcile::desired(topo, me, &observed.underlay, &sim.ctl.liveness());
    let plan = reconcile::plan(&want, observed).expect("plan");
    assert!(
        plan.is_empty(),
        "step {step} ({what}): the kernel differs from the full desired state: {:#?}",
        plan.steps
    );
    assert_eq!(
        sim.judged, want.state,
        "step {step} ({what}): the watch's desired state differs"
    );
}

fn run(seed: u64, layer2: bool) -> (usize, usize) {
    let mut rng = Rng(seed);
    let mut decl = vec![Decl::Learned; SPOKES];
    decl[0] = Decl::Static;
    let mut sim = Sim::new(&text(layer2, &decl), "hub1", None, &Saved::default());
    sim.event(Event::Tick);
    let mut probes: Vec<(SpokeProbe, u64)> = (0..SPOKES).map(probe).collect();
    for step in 0..400 {
        let i = rng.below(SPOKES);
        let what = match rng.below(10) {
            0..=5 => {
                if decl[i] == Decl::Gone {
                    continue;
                }
                // Few ports: endpoints move, and two spokes sometimes share
                // one (one flooding entry for both, on layer 2).
                let from = SocketAddr::new([203, 0, 113, 9].into(), 40000 + rng.below(4) as u16);
                let ev = keepalive(&sim, &mut probes, i, decl[i], from);
                sim.event(ev);
                "keepalive"
            }
            6 | 7 => {
                sim.advance(Duration::from_millis(500 * (1 + rng.below(6) as u64)));
                "time"
            }
            _ => {
                decl[i] = match rng.below(4) {
                    0 => Decl::Learned,
                    1 => Decl::Static,
                    2 => Decl::Moved,
                    _ => Decl::Gone,
                };
                if decl[i] == Decl::Gone || decl[i] == Decl::Moved {
                    probes[i] = probe(i);
                }
                sim.event(Event::Config(loaded(&text(layer2, &decl), None)));
                "reload"
            }
        };
        // Let the learn batch and any reconcile run.
        sim.advance(Duration::from_millis(60));
        check(&sim, step, what);
    }
    (sim.memo.narrowed, sim.memo.full)
}

#[test]
fn narrowed_reconciles_leave_the_kernel_as_a_full_one_would() {
    for seed in 1..=6u64 {
        for layer2 in [false, true] {
            let (narrowed, full) = run(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15), layer2);
            // Resyncs (every 30 s) and the start are full; learned, moved
            // and expired endpoints and reloads of spokes are not.
            assert!(
                narrowed > 5 * full,
                "seed {seed} layer2 {layer2}: {narrowed} narrowed, {full} full"
            );
        }
    }
}

#[test]
fn a_learned_spoke_is_installed_without_looking_at_the_kernel() {
    let decl = vec![Decl::Learned; SPOKES];
    let mut sim = Sim::new(&text(false, &decl), "hub1", None, &Saved::default());
    sim.event(Event::Tick);
    let mut probes: Vec<(SpokeProbe, u64)> = (0..SPOKES).map(probe).collect();
    let observes = sim.dp.observe_calls;
    let from = SocketAddr::new([203, 0, 113, 9].into(), 40001);
    let ev = keepalive(&sim, &mut probes, 3, Decl::Learned, from);
    sim.event(ev);
    sim.advance(Duration::from_millis(60));
    assert!(
        sim.dp
            .observed
            .state
            .fdb
            .contains_key(&Mac::for_overlay(address(Decl::Learned, 3)))
    );
    assert_eq!(sim.dp.observe_calls, observes, "no dump for one spoke");
    // Expiry, the same.
    sim.advance(Duration::from_secs(5));
    assert!(sim.dp.observed.state.fdb.is_empty());
    assert_eq!(sim.dp.observe_calls, observes);
    // Drift is a full reconcile.
    sim.event(Event::Drift("fdb removed by hand".into()));
    sim.advance(Duration::from_millis(100));
    assert_eq!(sim.dp.observe_calls, observes + 1);
}

#[test]
fn a_narrowed_reconcile_keeps_what_the_hub_waits_for() {
    let decl = vec![Decl::Learned; SPOKES];
    let text = text(true, &decl).replace("layer = 2\n", "layer = 2\nattach = \"br-missing\"\n");
    let mut sim = Sim::new(&text, "hub1", None, &Saved::default());
    sim.event(Event::Tick);
    assert_eq!(sim.ctl.waiting.len(), 1, "no master yet");
    let mut probes: Vec<(SpokeProbe, u64)> = (0..SPOKES).map(probe).collect();
    let from = SocketAddr::new([203, 0, 113, 9].into(), 40001);
    let ev = keepalive(&sim, &mut probes, 3, Decl::Learned, from);
    sim.event(ev);
    sim.advance(Duration::from_millis(60));
    assert_eq!(sim.memo.narrowed, 1);
    assert_eq!(sim.ctl.waiting.len(), 1, "still no master");
}

//! A hub's reconcile for one learned spoke, narrowed (`reconcile::delta`)
//! against whole (desired and plan of every peer), in memory: the planning
//! a daemon does per event, without the kernel.
//!
//!   cargo bench --bench delta
//!
//! See docs/benchmarks.md ("Narrowed reconciles").

use std::{
    collections::BTreeSet,
    fmt::Write,
    hint::black_box,
    net::{IpAddr, SocketAddr},
    path::Path,
    sync::Arc,
    time::Duration,
};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use lvn::{
    config::{self, Topology},
    reconcile::{self, Liveness, Observed, delta::Known},
};

const SIZES: [usize; 3] = [1_000, 10_000, 100_000];
const HUB: &str = "hub";

/// One hub and `n` spokes without endpoints (all learned).
fn topology(n: usize) -> Topology {
    let mut t = String::with_capacity(64 * (n + 8));
    t.push_str(
        "[network]\nname = \"bench\"\noverlay = \"100.64.0.0/10\"\nport = 4789\nvni = 4242\n\n\
         [nodes.hub]\nrole = \"hub\"\naddress = \"100.64.0.1\"\nendpoint = \"198.51.100.254:4789\"\n",
    );
    for i in 0..n {
        let [a0, a1, a2, a3] = (0x6440_0002_u32 + i as u32).to_be_bytes();
        let _ = write!(t, "\n[nodes.s{i:06}]\naddress = \"{a0}.{a1}.{a2}.{a3}\"\n");
    }
    config::parse(Path::new("bench.toml"), &t).expect("generated topology is valid")
}

/// Every spoke learned at its own documentation address and port.
fn learned(topo: &Topology) -> Liveness {
    let mut l = Liveness::default();
    for (i, name) in topo.nodes.keys().filter(|n| *n != HUB).enumerate() {
        let ip = IpAddr::from([203, 0, 113, (i % 254 + 1) as u8]);
        l.learned
            .insert(name.clone(), SocketAddr::new(ip, 10_000 + (i / 254) as u16));
    }
    l
}

fn delta(c: &mut Criterion) {
    let mut g = c.benchmark_group("one_learned_spoke");
    for n in SIZES {
        if n >= 100_000 {
            g.sample_size(10)
                .warm_up_time(Duration::from_secs(1))
                .measurement_time(Duration::from_secs(3));
        } else {
            g.sample_size(20);
        }
        let topo = Arc::new(topology(n));
        let hub = topo.node(HUB).expect("hub");
        let live = learned(&topo);
        let desired = reconcile::desired(&topo, hub, &Default::default(), &live);
        let observed = Observed {
            state: desired.state.clone(),
            ..Observed::default()
        };
        let known = Known::new(topo.clone(), HUB, live.clone(), &observed, &desired)
            .expect("hub is declared");
        // The spoke in the middle moves to another port.
        let name = topo.nodes.keys().nth(n / 2).expect("spoke").clone();
        let changed: BTreeSet<String> = [name.clone()].into();
        let mut partial = Liveness::default();
        partial
            .learned
            .insert(name.clone(), "192.0.2.77:4000".parse().expect("address"));
        let mut moved = live.clone();
        moved.learned.extend(partial.learned.clone());

        g.bench_with_input(BenchmarkId::new("whole", n), &n, |b, _| {
            b.iter(|| {
                let d = reconcile::desired(&topo, hub, &Default::default(), &moved);
                let p = reconcile::plan(&d, &observed).expect("plan");
                assert_eq!(p.steps.len(), 1);
                black_box(p)
            });
        });
        g.bench_with_input(BenchmarkId::new("narrowed", n), &n, |b, _| {
            b.iter(|| {
                let x = known
                    .narrow(&topo, HUB, &changed, &partial)
                    .expect("narrows");
                let p = reconcile::plan(&x.desired, &x.observed).expect("plan");
                assert_eq!(p.steps.len(), 1);
                black_box(p)
            });
        });
    }
    g.finish();
}

criterion_group!(benches, delta);
criterion_main!(benches);

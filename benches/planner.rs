//! Planner speed: one hub and N spokes with static endpoints, planned for
//! the hub (the node with the most peers: N fdb entries and N neighbours).
//!
//!   cargo bench --bench planner
//!
//! Target (issue): planning 10k peers in under 10 ms. See docs/benchmarks.md.

use std::{fmt::Write, hint::black_box, net::IpAddr, path::Path, time::Duration};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use lvn::{
    config::{self, Topology},
    reconcile::{self, Desired, Liveness, Observed, Underlay},
};

const SIZES: [usize; 3] = [1_000, 10_000, 100_000];
const HUB: &str = "hub";

/// Documentation underlay prefixes (RFC 5737); each spoke gets a distinct
/// ip:port from them: 3 x 254 addresses, the port grows every 762 spokes.
const UNDERLAY: [[u8; 3]; 3] = [[192, 0, 2], [198, 51, 100], [203, 0, 113]];

/// Topology text: one hub, `n` spokes, overlay 100.64.0.0/10.
pub fn topology_text(n: usize) -> String {
    let mut t = String::with_capacity(80 * (n + 8));
    t.push_str(
        "[network]\nname = \"bench\"\noverlay = \"100.64.0.0/10\"\nport = 4789\nvni = 4242\n\n",
    );
    t.push_str(
        "[nodes.hub]\nrole = \"hub\"\naddress = \"100.64.0.1\"\nendpoint = \"198.51.100.254:4789\"\n",
    );
    for i in 0..n {
        // 100.64.0.2 onwards: never the network, broadcast or hub address.
        let a = 0x6440_0002_u32 + i as u32;
        let [a0, a1, a2, a3] = a.to_be_bytes();
        let [u0, u1, u2] = UNDERLAY[i % 3];
        let host = (i / 3) % 254 + 1;
        let port = 10_000 + i / (3 * 254);
        let _ = write!(
            t,
            "\n[nodes.s{i:06}]\naddress = \"{a0}.{a1}.{a2}.{a3}\"\nendpoint = \"{u0}.{u1}.{u2}.{host}:{port}\"\n"
        );
    }
    t
}

fn parse(text: &str) -> Topology {
    config::parse(Path::new("bench.toml"), text).expect("generated topology is valid")
}

/// The hub's desired state, the observed state equal to it, and the same
/// with one spoke's endpoint changed.
fn fixtures(topo: &Topology) -> (Desired, Observed, Observed) {
    let hub = topo.node(HUB).expect("hub is declared");
    let desired = reconcile::desired(topo, hub, &Underlay::default(), &Liveness::default());
    let same = Observed {
        state: desired.state.clone(),
        ..Observed::default()
    };
    let mut moved = same.clone();
    let n = moved.state.fdb.len();
    let fdb = moved
        .state
        .fdb
        .values_mut()
        .nth(n / 2)
        .expect("the hub has fdb entries");
    fdb.dst = IpAddr::from([203, 0, 113, 254]);
    fdb.port = 9_999;
    (desired, same, moved)
}

fn planner(c: &mut Criterion) {
    let mut g = c.benchmark_group("planner");
    for n in SIZES {
        if n >= 100_000 {
            g.sample_size(10)
                .warm_up_time(Duration::from_secs(1))
                .measurement_time(Duration::from_secs(2));
        } else {
            g.sample_size(20)
                .warm_up_time(Duration::from_secs(1))
                .measurement_time(Duration::from_secs(2));
        }
        let topo = parse(&topology_text(n));
        let hub = topo.node(HUB).expect("hub is declared").clone();
        let (desired, same, moved) = fixtures(&topo);
        let empty = Observed::default();

        // Sanity: the fixtures mean what the benchmark names say.
        let p = reconcile::plan(&desired, &empty).expect("plans");
        assert_eq!(
            p.steps.len(),
            3 * n + 5,
            "link, address, 2 sysctls, overlay route; per spoke fdb, neigh, host route"
        );
        assert!(reconcile::plan(&desired, &same).expect("plans").is_empty());
        assert_eq!(
            reconcile::plan(&desired, &moved)
                .expect("plans")
                .steps
                .len(),
            1
        );

        let underlay = Underlay::default();
        // Baseline: copying the desired state (same maps, same allocations)
        // without deciding anything. desired() cannot be much cheaper.
        g.bench_with_input(BenchmarkId::new("baseline/clone-desired", n), &n, |b, _| {
            b.iter(|| black_box(&desired).clone())
        });
        g.bench_with_input(BenchmarkId::new("desired", n), &n, |b, _| {
            b.iter(|| {
                reconcile::desired(
                    black_box(&topo),
                    black_box(&hub),
                    &underlay,
                    &Liveness::default(),
                )
            })
        });
        g.bench_with_input(
            BenchmarkId::new("desired+plan/from-empty", n),
            &n,
            |b, _| {
                b.iter(|| {
                    let d = reconcile::desired(
                        black_box(&topo),
                        black_box(&hub),
                        &underlay,
                        &Liveness::default(),
                    );
                    reconcile::plan(&d, black_box(&empty)).expect("plans")
                })
            },
        );
        g.bench_with_input(BenchmarkId::new("plan/no-change", n), &n, |b, _| {
            b.iter(|| reconcile::plan(black_box(&desired), black_box(&same)).expect("plans"))
        });
        g.bench_with_input(BenchmarkId::new("desired+plan/no-change", n), &n, |b, _| {
            b.iter(|| {
                let d = reconcile::desired(
                    black_box(&topo),
                    black_box(&hub),
                    &underlay,
                    &Liveness::default(),
                );
                reconcile::plan(&d, black_box(&same)).expect("plans")
            })
        });
        g.bench_with_input(BenchmarkId::new("plan/one-endpoint", n), &n, |b, _| {
            b.iter(|| reconcile::plan(black_box(&desired), black_box(&moved)).expect("plans"))
        });
    }
    g.finish();
}

fn parsing(c: &mut Criterion) {
    let mut g = c.benchmark_group("config");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    // Every size, to show parsing grows linearly (issue 12).
    for n in SIZES {
        let text = topology_text(n);
        assert_eq!(parse(&text).nodes.len(), n + 1);
        g.bench_with_input(BenchmarkId::new("parse", n), &text, |b, text| {
            b.iter(|| parse(black_box(text)))
        });
    }
    g.finish();
}

/// `lvn diff` of a 10k-node fleet where one spoke's endpoint moved (issue
/// 10: under a second), against planning the hub alone, in the same run.
fn fleet_diff(c: &mut Criterion) {
    let mut g = c.benchmark_group("diff");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    let n = 10_000;
    let text = topology_text(n);
    let old = parse(&text);
    let new = parse(&text.replacen(":10000\"", ":20000\"", 1));
    let d = reconcile::fleet::diff(&old, &new, None).expect("diffs");
    assert_eq!(d.summary().0, 1, "only the hub changes");
    g.bench_with_input(BenchmarkId::new("fleet/one-endpoint", n), &n, |b, _| {
        b.iter(|| reconcile::fleet::diff(black_box(&old), black_box(&new), None).expect("diffs"))
    });
    g.finish();
}

criterion_group!(benches, planner, parsing, fleet_diff);
criterion_main!(benches);

//! The planner's contract, without a kernel: golden plans for the cases an
//! operator meets, and property tests of its laws against the in-memory fake.
//! Regenerate the golden files with `LVN_BLESS=1 cargo test --test planner`.

use std::{net::IpAddr, path::Path};

use futures::executor::block_on;
use lvn::{
    config::{self, Topology},
    datapath::{Datapath, Scope, fake::FakeKernel},
    naming::{Family, Setting},
    reconcile::{self, Action, Desired, Object, Observed, Plan, RouteKey, Underlay, render},
};
use proptest::prelude::*;

fn topo(text: &str) -> Topology {
    config::parse(Path::new("t.toml"), text).unwrap_or_else(|e| panic!("{e}"))
}

fn desired(t: &Topology, node: &str) -> Desired {
    reconcile::desired(
        t,
        t.node(node).expect("node"),
        &underlay(),
        &Default::default(),
    )
}

/// An underlay with one 1500-byte device and a default route.
fn underlay() -> Underlay {
    Underlay {
        routes: vec![
            ("0.0.0.0/0".parse().unwrap(), 2),
            ("::/0".parse().unwrap(), 2),
        ],
        links: [
            (2, ("eth0".to_string(), 1500)),
            (3, ("br0".to_string(), 1500)),
        ]
        .into_iter()
        .collect(),
        holders: Default::default(),
        // A bridge that layer 2 topologies attach to.
        kinds: [("br0".to_string(), "bridge".to_string())].into(),
        force_forwarding: true,
    }
}

fn kernel() -> FakeKernel {
    let mut k = FakeKernel::default();
    k.observed.sysctl_defaults = [
        ((Family::Ipv4, Setting::Forwarding), "0"),
        ((Family::Ipv4, Setting::SendRedirects), "1"),
        ((Family::Ipv6, Setting::Forwarding), "0"),
        ((Family::Ipv6, Setting::ForceForwarding), "0"),
    ]
    .into_iter()
    .map(|(a, b)| (a, b.to_string()))
    .collect();
    k.observed.underlay = underlay();
    k
}

const BASE: &str = r#"
[network]
name = "ninux"
overlay = "100.64.0.0/16"
port = 4789
vni = 4242

[nodes.hub1]
role = "hub"
address = "100.64.0.1"
endpoint = "198.51.100.1"

[nodes.alice]
address = "100.64.1.2"
endpoint = "203.0.113.7:4789"

[nodes.bob]
address = "100.64.1.3"
endpoint = "192.0.2.3"

[nodes.carol]
address = "100.64.1.4"
"#;

/// Apply `from` on `node`, then plan `to`: the golden text is that plan.
fn golden_case(name: &str, from: Option<&str>, to: Option<&str>, node: &str) {
    let mut k = kernel();
    if let Some(from) = from {
        let p = reconcile::plan(&desired(&topo(from), node), &k.observed).expect("plan");
        k.apply_plan(&p);
    }
    let want = match to {
        Some(t) => desired(&topo(t), node),
        None => Desired::default(),
    };
    let plan = reconcile::plan(&want, &k.observed).expect("plan");
    let mut text: String = plan.steps.iter().map(|s| format!("{s}\n")).collect();
    text.push_str(&render::summary_line(&plan));
    text.push('\n');
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(format!("{name}.plan"));
    if std::env::var_os("LVN_BLESS").is_some() {
        std::fs::write(&path, &text).expect("bless");
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|_| panic!("{} missing: run with LVN_BLESS=1", path.display()));
    assert_eq!(
        text, expected,
        "golden {name} differs (LVN_BLESS=1 to accept)"
    );
    // Whatever the case, applying the plan converges.
    k.apply_plan(&plan);
    assert!(
        reconcile::plan(&want, &k.observed)
            .expect("plan")
            .is_empty()
    );
}

#[test]
fn golden_fresh_hub() {
    golden_case("fresh-hub", None, Some(BASE), "hub1");
}

#[test]
fn golden_fresh_spoke() {
    golden_case("fresh-spoke", None, Some(BASE), "alice");
}

#[test]
fn golden_endpoint_changed() {
    let to = BASE.replace("192.0.2.3", "192.0.2.33");
    golden_case("endpoint-changed", Some(BASE), Some(&to), "hub1");
}

#[test]
fn golden_spoke_removed() {
    let to = BASE.replace(
        "[nodes.bob]\naddress = \"100.64.1.3\"\nendpoint = \"192.0.2.3\"\n",
        "",
    );
    golden_case("spoke-removed", Some(BASE), Some(&to), "hub1");
}

#[test]
fn golden_vni_changed() {
    let to = BASE.replace("vni = 4242", "vni = 4243");
    golden_case("vni-changed", Some(BASE), Some(&to), "hub1");
}

#[test]
fn golden_mtu_changed_in_place() {
    let to = BASE.replace("vni = 4242", "vni = 4242\nmtu = 1400");
    golden_case("mtu-changed", Some(BASE), Some(&to), "hub1");
}

#[test]
fn golden_down() {
    golden_case("down", Some(BASE), None, "hub1");
}

/// BASE with an IPv6 overlay beside the IPv4 one: every node gets an
/// address of each family (listed IPv6 first for one, which changes nothing).
fn dual_stack() -> String {
    BASE.replace(
        "overlay = \"100.64.0.0/16\"",
        "overlay = [\"100.64.0.0/16\", \"fd64:1::/64\"]",
    )
    .replace(
        "address = \"100.64.0.1\"",
        "address = [\"100.64.0.1\", \"fd64:1::1\"]",
    )
    .replace(
        "address = \"100.64.1.2\"",
        "address = [\"fd64:1::1:2\", \"100.64.1.2\"]",
    )
    .replace(
        "address = \"100.64.1.3\"",
        "address = [\"100.64.1.3\", \"fd64:1::1:3\"]",
    )
    .replace(
        "address = \"100.64.1.4\"",
        "address = [\"100.64.1.4\", \"fd64:1::1:4\"]",
    )
}

#[test]
fn golden_dual_stack_hub() {
    golden_case("dual-stack-hub", None, Some(&dual_stack()), "hub1");
}

#[test]
fn golden_dual_stack_spoke() {
    golden_case("dual-stack-spoke", None, Some(&dual_stack()), "alice");
}

/// Adding the IPv6 overlay to a running IPv4 network adds the IPv6 objects
/// and touches nothing else: same device, same MAC, same IPv4 entries.
#[test]
fn golden_ipv6_added_to_ipv4_overlay() {
    golden_case("ipv6-added", Some(BASE), Some(&dual_stack()), "hub1");
}

#[test]
fn a_spoke_routes_the_overlay_through_its_primary_hub() {
    let two_hubs = BASE.replace(
        "[nodes.alice]",
        "[nodes.hub2]\nrole = \"hub\"\naddress = \"100.64.0.2\"\nendpoint = \"198.51.100.2\"\n\n[nodes.alice]",
    );
    let t = topo(&two_hubs);
    let alice = t.nodes.get("alice").unwrap();
    // Placement by rendezvous hashing puts alice on hub2 first.
    let order: Vec<&str> = t.hub_order(alice).iter().map(|h| h.name.as_str()).collect();
    assert_eq!(order, ["hub2", "hub1"]);
    let routes = |t: &Topology| -> Vec<String> {
        let d = desired(t, "alice");
        let mut v: Vec<String> = d
            .state
            .routes
            .values()
            .map(|r| format!("{r}  ({})", d.reason(&reconcile::ObjectKey::Route(r.key()))))
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        routes(&t),
        [
            "100.64.0.0/16 via 100.64.0.2 dev lvn-ninux onlink proto 76 metric 0  (overlay through primary hub hub2)",
            "100.64.0.1/32 dev lvn-ninux proto 76 metric 0  (hub1: hub reached directly)",
            "100.64.0.2/32 dev lvn-ninux proto 76 metric 0  (hub2: hub reached directly)",
        ]
    );
    // A declared list wins over placement.
    let declared = topo(&two_hubs.replace(
        "address = \"100.64.1.2\"",
        "address = \"100.64.1.2\"\nhubs = [\"hub1\"]",
    ));
    assert_eq!(
        routes(&declared),
        [
            "100.64.0.0/16 via 100.64.0.1 dev lvn-ninux onlink proto 76 metric 0  (overlay through primary hub hub1)",
            "100.64.0.1/32 dev lvn-ninux proto 76 metric 0  (hub1: hub reached directly)",
            "100.64.0.2/32 dev lvn-ninux proto 76 metric 0  (hub2: hub reached directly)",
        ]
    );
    // Failover to hub1 (the probe's choice) is one change: the overlay route.
    let mut kernel = FakeKernel::default();
    let scope = Scope::of(&t.network);
    let alice = t.nodes.get("alice").unwrap();
    let underlay = Underlay::default();
    let on_hub2 = reconcile::desired(&t, alice, &underlay, &reconcile::Liveness::default());
    kernel.apply_plan(&reconcile::plan(&on_hub2, &kernel.observed).unwrap());
    let failed_over = reconcile::Liveness {
        primary: Some("hub1".into()),
        ..Default::default()
    };
    let on_hub1 = reconcile::desired(&t, alice, &underlay, &failed_over);
    let observed = block_on(kernel.observe(&scope)).unwrap();
    let plan = reconcile::plan(&on_hub1, &observed).unwrap();
    let lines: Vec<String> = plan.steps.iter().map(ToString::to_string).collect();
    assert_eq!(
        lines,
        [
            "~ route 100.64.0.0/16 via 100.64.0.1 dev lvn-ninux onlink proto 76 metric 0  [was 100.64.0.0/16 via 100.64.0.2 dev lvn-ninux onlink proto 76 metric 0]  (overlay through primary hub hub1)"
        ]
    );
    // A spoke has entries for hubs only; carol has no endpoint anywhere.
    let d = desired(&t, "alice");
    assert_eq!(d.state.fdb.len(), 2);
    let hub = desired(&t, "hub1");
    assert_eq!(hub.state.fdb.len(), 3, "hub2, alice, bob; not carol");
}

#[test]
fn foreign_route_with_lvn_key_is_a_plan_error() {
    let t = topo(BASE);
    let mut obs = Observed::default();
    obs.foreign_routes.insert(
        RouteKey {
            dst: "100.64.0.0/16".parse().unwrap(),
            metric: 0,
        },
        "static".into(),
    );
    let err = reconcile::plan(&desired(&t, "hub1"), &obs).unwrap_err();
    assert_eq!(
        err.to_string(),
        "route 100.64.0.0/16 metric 0 exists and is not lvn's (proto static); lvn will not modify it"
    );
    obs.foreign_routes.clear();
    obs.foreign_link = Some("kind dummy".into());
    assert!(reconcile::plan(&desired(&t, "hub1"), &obs).is_err());
    // Down with a foreign device of that name plans nothing at all.
    assert!(
        reconcile::plan(&Desired::default(), &obs)
            .unwrap()
            .is_empty()
    );
}

// ---- properties ----

fn arb_topology() -> impl Strategy<Value = String> {
    let node = (
        any::<bool>(),
        prop::option::of((0u8..3, 1u8..250, prop::option::of(1000u16..1010))),
    );
    (
        prop::collection::vec(node, 1..12),
        prop::sample::select(vec![4242u32, 4243]),
        prop::option::of(1300u32..1450),
        prop::sample::select(vec!["vxlan", "fou", "vxlan layer 2", "vxlan layer 2 br0"]),
        any::<bool>(),
    )
        .prop_map(|(nodes, vni, mtu, datapath, dual)| {
            let (datapath, layer2) = match datapath {
                "vxlan layer 2" => ("vxlan", "layer = 2\n"),
                "vxlan layer 2 br0" => ("vxlan", "layer = 2\nattach = \"br0\"\n"),
                d => (d, ""),
            };
            // Dual-stack on VXLAN only: fou on an IPv4 underlay is ipip.
            let dual = dual && datapath == "vxlan";
            let overlay = if dual {
                "[\"100.64.0.0/16\", \"fd64:1::/64\"]"
            } else {
                "\"100.64.0.0/16\""
            };
            let mut s = format!(
                "[network]\nname = \"p\"\noverlay = {overlay}\nport = 4789\nvni = {vni}\ndatapath = \"{datapath}\"\n{layer2}"
            );
            if let Some(m) = mtu {
                s.push_str(&format!("mtu = {m}\n"));
            }
            let nets = ["192.0.2", "198.51.100", "203.0.113"];
            for (i, (hub, ep)) in nodes.iter().enumerate() {
                let hub = *hub || i == 0;
                if dual {
                    s.push_str(&format!(
                        "\n[nodes.n{i}]\naddress = [\"100.64.0.{}\", \"fd64:1::{}\"]\n",
                        i + 1,
                        i + 1
                    ));
                } else {
                    s.push_str(&format!(
                        "\n[nodes.n{i}]\naddress = \"100.64.0.{}\"\n",
                        i + 1
                    ));
                }
                if hub {
                    s.push_str("role = \"hub\"\n");
                }
                // Endpoints unique per node: the node index is the last octet.
                let ep = ep.or(hub.then_some((0, 0, None)));
                if let Some((net, _, port)) = ep {
                    let port = port.map(|p| format!(":{p}")).unwrap_or_default();
                    s.push_str(&format!(
                        "endpoint = \"{}.{}{port}\"\n",
                        nets[net as usize],
                        i + 1
                    ));
                }
            }
            s
        })
}

/// Changes to the fake kernel behind lvn's back.
#[derive(Debug, Clone)]
enum Drift {
    DropFdb(usize),
    DropNeigh(usize),
    DropRoute(usize),
    MoveFdb(usize),
    DeleteLink,
    Mtu(u32),
}

fn arb_drift() -> impl Strategy<Value = Drift> {
    prop_oneof![
        (0usize..20).prop_map(Drift::DropFdb),
        (0usize..20).prop_map(Drift::DropNeigh),
        (0usize..3).prop_map(Drift::DropRoute),
        (0usize..20).prop_map(Drift::MoveFdb),
        Just(Drift::DeleteLink),
        (1200u32..1500).prop_map(Drift::Mtu),
    ]
}

fn drift(k: &mut FakeKernel, d: &Drift) {
    let s = &mut k.observed.state;
    match *d {
        Drift::DropFdb(i) => {
            if let Some(m) = s.fdb.keys().nth(i).copied() {
                s.fdb.remove(&m);
            }
        }
        Drift::DropNeigh(i) => {
            if let Some(a) = s.neighbours.keys().nth(i).copied() {
                s.neighbours.remove(&a);
            }
        }
        Drift::DropRoute(i) => {
            if let Some(r) = s.routes.keys().nth(i).copied() {
                s.routes.remove(&r);
            }
        }
        Drift::MoveFdb(i) => {
            if let Some(f) = s.fdb.values_mut().nth(i) {
                f.dst = IpAddr::from([203, 0, 113, 250]);
            }
        }
        Drift::DeleteLink => *s = Default::default(),
        Drift::Mtu(m) => {
            if let Some(l) = &mut s.link {
                l.mtu = m;
            }
        }
    }
}

fn removes_nothing_desired(plan: &Plan, want: &Desired) -> bool {
    plan.steps
        .iter()
        .filter(|s| s.action == Action::Remove)
        .all(|s| match &s.object {
            Object::Link(_) => want.state.link.is_none(),
            Object::Address(a) => !want.state.addresses.contains_key(&a.key()),
            Object::Tunnel(t) => !want.state.tunnels.contains_key(&t.name),
            Object::Fou(f) => !want.state.fou.contains_key(&f.port),
            Object::Fdb(f) => !want.state.fdb.contains_key(&f.mac),
            Object::Neigh(n) => !want.state.neighbours.contains_key(&n.address),
            Object::Route(r) => !want.state.routes.contains_key(&r.key()),
            Object::Sysctl(_) => false,
            Object::Flood(f) => !want.state.flood.contains_key(&f.key()),
            Object::Port(_) => want.state.port.is_none(),
        })
}

/// A fake kernel that has lived: node `node_pick` of `before` applied, then
/// `drifts` behind lvn's back, and `foreign` routes beside lvn's.
fn lived_in(before: &str, node_pick: usize, drifts: &[Drift], foreign: &[u8]) -> FakeKernel {
    let t0 = topo(before);
    let mut k = kernel();
    if let Some(n0) = t0.nodes.keys().nth(node_pick % t0.nodes.len()) {
        let p = reconcile::plan(&desired(&t0, n0), &k.observed).expect("plan");
        k.apply_plan(&p);
    }
    for d in drifts {
        drift(&mut k, d);
    }
    for f in foreign {
        let key = RouteKey {
            dst: format!("100.64.{f}.0/24").parse().unwrap(),
            metric: 0,
        };
        k.observed.foreign_routes.insert(key, "static".into());
    }
    k
}

/// What node `node_pick` of `t` wants.
fn desired_of_pick(t: &Topology, node_pick: usize) -> Desired {
    let node = t
        .nodes
        .keys()
        .nth(node_pick % t.nodes.len())
        .expect("a node");
    desired(t, node)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// From any earlier topology plus drift: nothing desired is removed,
    /// foreign routes are never touched, and every step names lvn's own
    /// device.
    #[test]
    fn planner_laws(
        before in arb_topology(),
        after in arb_topology(),
        node_pick in 0usize..12,
        drifts in prop::collection::vec(arb_drift(), 0..4),
        foreign in prop::collection::vec(1u8..250, 0..3),
    ) {
        let mut k = lived_in(&before, node_pick, &drifts, &foreign);
        let foreign_before = k.observed.foreign_routes.clone();
        let want = desired_of_pick(&topo(&after), node_pick);
        let tunnel_prefix = reconcile::tunnel_name("p", "x")[..3].to_string();
        let plan = reconcile::plan(&want, &k.observed).expect("plan");
        prop_assert!(removes_nothing_desired(&plan, &want));
        for s in &plan.steps {
            if let Object::Route(r) = &s.object {
                prop_assert!(!foreign_before.contains_key(&r.key()), "touches a foreign route: {s}");
            }
            let dev = match &s.object {
                Object::Link(l) => l.name.clone(),
                Object::Address(a) => a.dev.clone(),
                Object::Fdb(f) => f.dev.to_string(),
                Object::Neigh(n) => n.dev.to_string(),
                Object::Route(r) => r.dev.to_string(),
                Object::Sysctl(x) => x.key.to_string(),
                Object::Tunnel(t) => t.name.clone(),
                Object::Fou(f) => format!("fou {}", f.port),
                Object::Flood(f) => f.dev.to_string(),
                Object::Port(p) => p.dev.clone(),
            };
            let ours = dev.contains("lvn-p") || dev.contains(&tunnel_prefix) || dev == "fou 4789";
            prop_assert!(ours, "step outside lvn's devices: {s}");
        }
        k.apply_plan(&plan);
        prop_assert_eq!(&k.observed.foreign_routes, &foreign_before);
    }

    /// One apply converges, from any earlier topology plus drift: after it,
    /// the next pass (observe the kernel again, plan, apply, as `lvn apply`
    /// and the daemon do) writes nothing.
    #[test]
    fn second_pass_writes_nothing(
        before in arb_topology(),
        after in arb_topology(),
        node_pick in 0usize..12,
        drifts in prop::collection::vec(arb_drift(), 0..4),
        foreign in prop::collection::vec(1u8..250, 0..3),
    ) {
        let mut k = lived_in(&before, node_pick, &drifts, &foreign);
        let t1 = topo(&after);
        let want = desired_of_pick(&t1, node_pick);
        let scope = Scope::of(&t1.network);
        let pass = |k: &mut FakeKernel| -> Plan {
            let observed = block_on(k.observe(&scope)).expect("observe");
            let plan = reconcile::plan(&want, &observed).expect("plan");
            block_on(k.apply(&scope, &plan)).expect("apply");
            plan
        };
        pass(&mut k);
        let writes = k.writes;
        let second = pass(&mut k);
        prop_assert_eq!(
            k.writes, writes,
            "the second pass wrote, carrying out: {:?}", second.steps
        );
    }

    /// Down from any state removes everything lvn owns, one step per device
    /// (what is on a device goes with it).
    #[test]
    fn down_removes_everything(before in arb_topology(), node_pick in 0usize..12) {
        let t = topo(&before);
        let mut k = kernel();
        let n = t.nodes.keys().nth(node_pick % t.nodes.len()).expect("node");
        let p = reconcile::plan(&desired(&t, n), &k.observed).expect("plan");
        k.apply_plan(&p);
        let down = reconcile::plan(&Desired::default(), &k.observed).expect("plan");
        let st = &k.observed.state;
        let devices = usize::from(st.link.is_some()) + st.tunnels.len() + st.fou.len();
        prop_assert!(devices >= 1);
        prop_assert_eq!(down.steps.len(), devices);
        k.apply_plan(&down);
        prop_assert!(k.observed.state.is_empty());
    }
}

const FOU: &str = r#"
[network]
name = "ninux"
overlay = "100.64.0.0/16"
port = 4789
vni = 4242
datapath = "fou"

[nodes.hub1]
role = "hub"
address = "100.64.0.1"
endpoint = "198.51.100.1"

[nodes.alice]
address = "100.64.1.2"

[nodes.bob]
address = "100.64.1.3"
endpoint = "192.0.2.3"
"#;

fn learned(pairs: &[(&str, &str)]) -> reconcile::Liveness {
    reconcile::Liveness {
        learned: pairs
            .iter()
            .map(|(n, e)| (n.to_string(), e.parse().unwrap()))
            .collect(),
        ..Default::default()
    }
}

#[test]
fn golden_fou_hub_and_spoke() {
    let t = topo(FOU);
    let live = learned(&[("alice", "198.51.100.2:40059")]);
    for (node, file) in [("hub1", "fou-hub"), ("alice", "fou-spoke")] {
        let mut k = kernel();
        let want = reconcile::desired(&t, t.node(node).unwrap(), &underlay(), &live);
        let plan = reconcile::plan(&want, &k.observed).expect("plan");
        let mut text: String = plan.steps.iter().map(|s| format!("{s}\n")).collect();
        text.push_str(&render::summary_line(&plan));
        text.push('\n');
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/golden/{file}.plan"));
        if std::env::var_os("LVN_BLESS").is_some() {
            std::fs::write(&path, &text).expect("bless");
        }
        assert_eq!(
            text,
            std::fs::read_to_string(&path).expect("golden file"),
            "{file}"
        );
        k.apply_plan(&plan);
        assert!(reconcile::plan(&want, &k.observed).unwrap().is_empty());
        // A NAT rebinding is one change, to the tunnel.
        if node == "hub1" {
            let moved = learned(&[("alice", "198.51.100.2:40077")]);
            let want = reconcile::desired(&t, t.node(node).unwrap(), &underlay(), &moved);
            let plan = reconcile::plan(&want, &k.observed).unwrap();
            assert_eq!(plan.steps.len(), 1, "{:?}", plan.steps);
            assert_eq!(plan.steps[0].object.kind(), "tunnel");
            assert_eq!(plan.steps[0].action, Action::Change);
        }
    }
}

#[test]
fn fou_carries_one_spoke_per_public_address_and_never_thrashes() {
    let text = FOU.replace("endpoint = \"192.0.2.3\"", "");
    let t = topo(&text);
    let hub = t.node("hub1").unwrap();
    // alice and bob behind one NAT address, different ports.
    let live = learned(&[
        ("alice", "198.51.100.2:40001"),
        ("bob", "198.51.100.2:40002"),
    ]);
    let d = reconcile::desired(&t, hub, &underlay(), &live);
    assert_eq!(d.state.tunnels.len(), 1);
    assert_eq!(d.conflicts.len(), 1);
    let c = &d.conflicts[0];
    assert_eq!((c.kept.as_str(), c.refused.as_str()), ("alice", "bob"));
    let msg = c.to_string();
    assert!(
        msg.contains("alice and bob share the public address 198.51.100.2"),
        "{msg}"
    );
    assert!(msg.contains("use datapath = \"vxlan\""), "{msg}");
    // Whoever holds the address keeps it, whatever the name order.
    let mut u = underlay();
    u.holders
        .insert("198.51.100.2".parse().unwrap(), "bob".into());
    let d = reconcile::desired(&t, hub, &u, &live);
    let kept: Vec<&str> = d.state.tunnels.values().map(|t| t.peer.as_str()).collect();
    assert_eq!(kept, ["bob"]);
    assert_eq!(d.conflicts[0].refused, "alice");
}

/// fou on an IPv6 underlay with a dual-stack overlay: a GUE listener, an
/// ip6tnl tunnel per peer from the node's own endpoint, both families'
/// addresses and routes on each tunnel.
#[test]
fn golden_fou_ipv6_underlay_dual_stack() {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/fou-ipv6.toml"),
    )
    .expect("example");
    for (node, name) in [("hub1", "fou6-hub"), ("alice", "fou6-spoke")] {
        golden_case(name, None, Some(&text), node);
    }
}

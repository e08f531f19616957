//! A spoke's controller with two hubs, under a fake clock and the fake
//! kernel; the hubs are real hub probes that answer its keepalives, until
//! one stops.

use std::{
    net::{IpAddr, SocketAddr},
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use super::{
    controller::{Controller, Effect, Event, Now, Version},
    reconciler,
    state::Saved,
};
use crate::{
    config,
    datapath::fake::FakeKernel,
    probe::{
        hub::{HubProbe, Outcome, Peer},
        io::Inner,
    },
    reconcile::Mac,
};

const TOPOLOGY: &str = r#"[network]
name = "lab"
overlay = "100.64.0.0/16"
port = 4789
vni = 9
keepalive = "1s"
failover_after = "3s"
failback_after = "10s"

[nodes.h1]
role = "hub"
address = "100.64.0.1"
endpoint = "198.51.100.1"

[nodes.h2]
role = "hub"
address = "100.64.0.2"
endpoint = "198.51.100.2"

[nodes.alice]
address = "100.64.1.2"
hubs = ["h1", "h2"]
"#;

struct Lab {
    spoke: Controller,
    dp: FakeKernel,
    memo: reconciler::Memo,
    hubs: Vec<(IpAddr, HubProbe, bool)>,
    now: Now,
}

impl Lab {
    fn new() -> Lab {
        let topo = config::parse(Path::new("t.toml"), TOPOLOGY).expect("valid");
        let alice = topo.nodes.get("alice").unwrap();
        let peer = Peer {
            name: "alice".into(),
            mac: Mac::for_overlay(alice.address),
            address: alice.address,
            key: None,
            static_endpoint: None,
            expire_after: Duration::from_secs(10),
        };
        let hubs = ["h1", "h2"]
            .iter()
            .map(|h| {
                let addr = topo.nodes[*h].address;
                (addr, HubProbe::new(h, false, vec![peer.clone()]), true)
            })
            .collect();
        let now = Now {
            at: Instant::now(),
            wall_ns: 1_800_000_000_000_000_000,
        };
        let spoke = Controller::new(
            "alice",
            Version::of(Arc::new(topo), None, "0"),
            &Saved::default(),
            Duration::from_secs(30),
            now,
        )
        .expect("controller");
        Lab {
            spoke,
            dp: FakeKernel::default(),
            memo: reconciler::Memo::default(),
            hubs,
            now,
        }
    }

    fn event(&mut self, ev: Event) {
        let mut queue = self.spoke.on(ev, self.now);
        for _ in 0..1000 {
            let Some(e) = queue.pop() else { return };
            let more = match e {
                Effect::Reconcile(req) => {
                    let o = futures::executor::block_on(reconciler::execute(
                        &mut self.dp,
                        &mut self.memo,
                        &req,
                    ));
                    self.spoke.on(Event::Reconciled(o), self.now)
                }
                Effect::Send { to, payload } => self.deliver(to, &payload),
                Effect::Save(_) => self.spoke.on(Event::Saved(Ok(())), self.now),
                Effect::Notify(_) => Vec::new(),
            };
            queue.extend(more);
        }
        panic!("effects never settle");
    }

    /// A keepalive reaches a hub that is up, which answers at once.
    fn deliver(&mut self, to: IpAddr, payload: &[u8]) -> Vec<Effect> {
        let from = SocketAddr::new([203, 0, 113, 7].into(), 40000);
        let inner = Inner::Mac(Mac::for_overlay("100.64.1.2".parse().unwrap()));
        let now = self.now;
        let Some((_, hub, up)) = self.hubs.iter_mut().find(|(a, _, _)| *a == to) else {
            return Vec::new();
        };
        if !*up {
            return Vec::new();
        }
        match hub.on_keepalive(payload, from, inner, now.at, now.wall_ns) {
            Outcome::Accepted { answer, .. } => self.spoke.on(Event::Answer(answer), now),
            Outcome::Rejected(r) => panic!("hub rejected a keepalive: {r}"),
        }
    }

    fn advance(&mut self, d: Duration) {
        let end = self.now.at + d;
        for _ in 0..100_000 {
            let next = self.spoke.next_wakeup(self.now.at);
            assert!(next > self.now.at, "a busy loop");
            if next > end {
                break;
            }
            self.step_to(next);
            self.event(Event::Tick);
        }
        self.step_to(end);
    }

    fn step_to(&mut self, t: Instant) {
        if t > self.now.at {
            self.now.wall_ns += u64::try_from((t - self.now.at).as_nanos()).unwrap_or(0);
            self.now.at = t;
        }
    }

    /// The hub the overlay route goes through, as the fake kernel has it.
    fn via(&self) -> Option<IpAddr> {
        self.dp
            .observed
            .state
            .routes
            .values()
            .find(|r| r.dst.prefix_len() == 16)
            .and_then(|r| r.via)
    }
}

#[test]
fn a_silent_primary_hub_fails_over_and_comes_back_after_failback_after() {
    let h1: IpAddr = "100.64.0.1".parse().unwrap();
    let h2: IpAddr = "100.64.0.2".parse().unwrap();
    let mut lab = Lab::new();
    lab.event(Event::Tick);
    lab.advance(Duration::from_secs(5));
    assert_eq!(lab.via(), Some(h1), "alice prefers h1");
    let st = lab.spoke.status(lab.now.at);
    assert_eq!(st.primary, Some(Some("h1".to_string())));

    // h1 loses its network: within failover_after and one keepalive the
    // route goes through h2, in one change.
    lab.hubs[0].2 = false;
    let writes = lab.dp.writes;
    let t0 = lab.now.at;
    let mut moved = None;
    for _ in 0..50 {
        lab.advance(Duration::from_millis(100));
        if lab.via() == Some(h2) {
            moved = Some(lab.now.at - t0);
            break;
        }
    }
    let moved = moved.expect("failed over");
    assert!(moved <= Duration::from_secs(4), "failover took {moved:?}");
    assert_eq!(lab.dp.writes - writes, 1, "one netlink change");
    assert_eq!(
        lab.spoke.status(lab.now.at).primary,
        Some(Some("h2".to_string()))
    );
    let text = lab.spoke.metrics_text(lab.now.at);
    for line in [
        "lvn_hub_primary{node=\"alice\",network=\"lab\",hub=\"h2\"} 1",
        "lvn_hub_primary{node=\"alice\",network=\"lab\",hub=\"h1\"} 0",
        "lvn_hub_up{node=\"alice\",network=\"lab\",hub=\"h1\"} 0",
        "lvn_failovers_total{node=\"alice\",network=\"lab\"} 1",
        // h2 answered alice's full-size probes (path MTU check).
        "lvn_hub_path_mtu_ok{node=\"alice\",network=\"lab\",hub=\"h2\"} 1",
    ] {
        assert!(text.lines().any(|l| l == line), "no {line} in:\n{text}");
    }

    // h1 returns: alice waits for 10 s of answers plus her delay.
    lab.hubs[0].2 = true;
    let back = lab.now.at;
    let jitter = lab.spoke.failover.as_ref().unwrap().jitter("h1");
    let mut returned = None;
    for _ in 0..400 {
        lab.advance(Duration::from_millis(100));
        if lab.via() == Some(h1) {
            returned = Some(lab.now.at - back);
            break;
        }
    }
    let returned = returned.expect("failed back");
    let due = Duration::from_secs(10) + jitter;
    assert!(
        returned >= due && returned <= due + Duration::from_secs(2),
        "failback after {returned:?}, due {due:?}"
    );
}

#[test]
fn a_restart_keeps_routing_through_the_hub_failover_chose() {
    let h2: IpAddr = "100.64.0.2".parse().unwrap();
    let mut lab = Lab::new();
    lab.event(Event::Tick);
    lab.hubs[0].2 = false;
    lab.advance(Duration::from_secs(6));
    assert_eq!(lab.via(), Some(h2));
    let saved = lab.spoke.saved(lab.now);
    assert_eq!(saved.primary.as_deref(), Some("h2"));
    // The spoke restarts; its first reconcile keeps the route on h2.
    let topo = lab.spoke.topology().clone();
    let mut again = Controller::new(
        "alice",
        Version::of(topo, None, "0"),
        &saved,
        Duration::from_secs(30),
        lab.now,
    )
    .expect("controller");
    assert_eq!(again.liveness().primary.as_deref(), Some("h2"));
    let effects = again.on(Event::Tick, lab.now);
    let req = effects
        .iter()
        .find_map(|e| match e {
            Effect::Reconcile(r) => Some(r),
            _ => None,
        })
        .expect("a first reconcile");
    assert_eq!(req.liveness.primary.as_deref(), Some("h2"));
}

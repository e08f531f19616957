//! The controller under a fake clock, with its reconciles run by the same
//! `reconciler::execute` the runner uses, against the fake kernel.

use std::{
    net::{IpAddr, SocketAddr},
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use super::{
    backoff::MAX_RETRY,
    controller::{COUNTER_RESERVE, Controller, Effect, Event, Loaded, Now, Version},
    reconciler::{self, Request},
    state::Saved,
};
use crate::{
    config::{self, Topology},
    datapath::{DatapathError, fake::FakeKernel},
    probe::{PrivateKey, io::Inner, pair_key, spoke::SpokeProbe},
    reconcile::{Mac, Observed},
};

const NET: &str = "lab";

fn unsupported() -> DatapathError {
    DatapathError::Unsupported(
        "datapath \"fou\" needs kernel modules fou and ipip (missing: ipip): load them with `modprobe -a fou ipip`".into(),
    )
}

fn invalid_argument() -> DatapathError {
    DatapathError::Kernel {
        op: "adding device lvn-lab".into(),
        source: std::io::Error::from_raw_os_error(22),
    }
}

struct Keys {
    hub: PrivateKey,
    alice: PrivateKey,
    bob: PrivateKey,
}

fn topology_text(keys: Option<&Keys>, device: &str) -> String {
    let auth = if keys.is_some() { "keys" } else { "none" };
    let pk = |k: Option<&PrivateKey>| {
        k.map_or(String::new(), |k| {
            format!("public_key = \"{}\"\n", k.public())
        })
    };
    let bob_pk = pk(keys.map(|k| &k.bob));
    format!(
        r#"[network]
name = "{NET}"
device = "{device}"
overlay = "100.64.0.0/24"
port = 4789
vni = 42
auth = "{auth}"
keepalive = "1s"
expire_after = "4s"

[nodes.hub1]
role = "hub"
address = "100.64.0.1"
endpoint = "198.51.100.1:4789"
{}
[nodes.alice]
role = "spoke"
address = "100.64.0.2"
{}
[nodes.bob]
role = "spoke"
address = "100.64.0.3"
{bob_pk}"#,
        pk(keys.map(|k| &k.hub)),
        pk(keys.map(|k| &k.alice)),
    )
}

fn parse(text: &str) -> Topology {
    config::parse(Path::new("topology.toml"), text).expect("valid topology")
}

pub(super) fn loaded(text: &str, key: Option<PrivateKey>) -> Loaded {
    Loaded {
        why: "file changed",
        sha256: super::metrics::text_hash(text),
        text: Arc::from(text),
        result: config::parse(Path::new("topology.toml"), text)
            .map(|t| (Arc::new(t), key))
            .map_err(|e| e.0.iter().map(ToString::to_string).collect()),
    }
}

/// A controller, a fake kernel and a fake clock.
pub(super) struct Sim {
    pub(super) ctl: Controller,
    pub(super) dp: FakeKernel,
    pub(super) memo: reconciler::Memo,
    pub(super) now: Now,
    sent: Vec<(IpAddr, Vec<u8>)>,
    /// What the state files hold after each save.
    saves: Vec<Saved>,
    disk: Saved,
    /// The saves as the controller made them.
    pub(super) made: Vec<super::journal::Save>,
    pub(super) reconciles: Vec<String>,
    /// The desired state as the kernel watch would hold it, kept from
    /// each reconcile's outcome the way the runner passes it on.
    pub(super) judged: crate::reconcile::State,
}

impl Sim {
    pub(super) fn new(text: &str, node: &str, key: Option<PrivateKey>, saved: &Saved) -> Sim {
        let now = Now {
            at: Instant::now(),
            wall_ns: 1_800_000_000_000_000_000,
        };
        let topo = Arc::new(parse(text));
        let ctl = Controller::new(
            node,
            Version::of(topo, key, "0"),
            saved,
            Duration::from_secs(30),
            now,
        )
        .expect("controller");
        Sim {
            ctl,
            dp: FakeKernel::default(),
            memo: reconciler::Memo::default(),
            now,
            sent: Vec::new(),
            saves: Vec::new(),
            disk: saved.clone(),
            made: Vec::new(),
            reconciles: Vec::new(),
            judged: crate::reconcile::State::default(),
        }
    }

    /// Feed an event, then carry out every effect (a reconcile and a save
    /// finish at once, and their outcomes are fed back).
    pub(super) fn event(&mut self, ev: Event) {
        let mut queue = self.ctl.on(ev, self.now);
        for _ in 0..1000 {
            let Some(e) = queue.pop() else { return };
            let more = match e {
                Effect::Reconcile(req) => self.reconcile(&req),
                Effect::Send { to, payload } => {
                    self.sent.push((to, payload));
                    Vec::new()
                }
                Effect::Save(s) => {
                    self.made.push(s.clone());
                    self.disk.apply(s);
                    self.saves.push(self.disk.clone());
                    self.ctl.on(Event::Saved(Ok(())), self.now)
                }
                Effect::Notify(_) => Vec::new(),
            };
            queue.extend(more);
        }
        panic!("effects never settle");
    }

    fn reconcile(&mut self, req: &Request) -> Vec<Effect> {
        self.reconciles.push(req.why.clone());
        let outcome =
            futures::executor::block_on(reconciler::execute(&mut self.dp, &mut self.memo, req));
        match &outcome.desired {
            Some(reconciler::Update::Full(s)) => self.judged = (**s).clone(),
            Some(reconciler::Update::Patch { keys, from }) => {
                crate::reconcile::delta::patch(&mut self.judged, keys, from);
            }
            None => {}
        }
        self.ctl.on(Event::Reconciled(outcome), self.now)
    }

    /// Let `d` pass, waking the controller whenever it asked to be.
    pub(super) fn advance(&mut self, d: Duration) {
        let end = self.now.at + d;
        for _ in 0..1_000_000 {
            let next = self.ctl.next_wakeup(self.now.at);
            // After a tick at `now`, every timer must lie ahead: a
            // wake-up in the past with nothing to do is a busy loop.
            assert!(
                next > self.now.at,
                "the controller asks to be woken at {:?} again: a busy loop ({})",
                self.now.at,
                self.ctl.debug_timers(self.now.at)
            );
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
            let d = t - self.now.at;
            self.now.at = t;
            self.now.wall_ns += u64::try_from(d.as_nanos()).unwrap_or(0);
        }
    }

    fn fdb_has(&self, mac: Mac) -> bool {
        self.dp.observed.state.fdb.contains_key(&mac)
    }
}

fn alice_mac() -> Mac {
    Mac::for_overlay("100.64.0.2".parse().unwrap())
}

fn nat(port: u16) -> SocketAddr {
    SocketAddr::new([203, 0, 113, 9].into(), port)
}

/// A spoke's probe speaking for `alice`, to make real keepalives.
fn alice_probe(keys: Option<&Keys>) -> SpokeProbe {
    let key = keys.map(|k| pair_key(&k.alice, "alice", &k.hub.public(), "hub1", NET).unwrap());
    SpokeProbe::new(
        "alice",
        keys.is_some(),
        Duration::from_secs(1),
        vec![(
            "hub1".into(),
            Mac::for_overlay("100.64.0.1".parse().unwrap()),
            key,
        )],
    )
}

fn keepalive(spoke: &mut SpokeProbe, sim: &Sim) -> Vec<u8> {
    let mut sends = spoke.on_tick(sim.now.at, sim.now.wall_ns);
    // Keepalives are due once per interval; a test may ask for several.
    if sends.is_empty() {
        let later = sim.now.at + Duration::from_secs(3600);
        sends = spoke.on_tick(later, sim.now.wall_ns);
    }
    sends.pop().expect("a keepalive").1
}

fn heard(payload: Vec<u8>, from: SocketAddr) -> Event {
    Event::Keepalive {
        payload,
        from,
        inner: Inner::Mac(alice_mac()),
    }
}

fn keys() -> Keys {
    Keys {
        hub: PrivateKey::generate(),
        alice: PrivateKey::generate(),
        bob: PrivateKey::generate(),
    }
}

/// Collect what the controller logs while `f` runs.
fn logs<T>(f: impl FnOnce() -> T) -> (T, String) {
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Buf::default();
    let writer = buf.clone();
    let sub = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    let r = tracing::subscriber::with_default(sub, f);
    let text = String::from_utf8_lossy(&buf.0.lock().unwrap()).into_owned();
    (r, text)
}

fn hub_sim(keys: Option<&Keys>) -> Sim {
    let key = keys.map(|k| PrivateKey::from_base64(&k.hub.to_base64()).unwrap());
    let mut sim = Sim::new(
        &topology_text(keys, "lvn-lab"),
        "hub1",
        key,
        &Saved::default(),
    );
    sim.event(Event::Tick);
    sim
}

/// Defect 3.1: observe and plan errors returned before anything scheduled
/// the next try, so `lvn run` spun (4,224 error lines in 5 s).
#[test]
fn busy_loop_on_a_persistent_error_backs_off() {
    type Fail = Option<fn() -> DatapathError>;
    let cases: [(&str, Fail, Fail); 3] = [
        ("observe", Some(unsupported), None),
        ("plan", None, None),
        ("apply", None, Some(invalid_argument)),
    ];
    for (fail, fail_observe, fail_apply) in cases {
        let (tries, text) = logs(|| {
            let mut sim = hub_sim(None);
            let before = sim.dp.observe_calls;
            // The device is gone; with no failure injected, a foreign
            // device with lvn's name is in the way and planning refuses.
            sim.dp.observed = Observed::default();
            if fail == "plan" {
                sim.dp.observed.foreign_link = Some("kind dummy, no lvn alias".into());
            }
            sim.dp.fail_observe = fail_observe;
            sim.dp.fail_apply = fail_apply;
            sim.event(Event::KernelChanged);
            sim.advance(Duration::from_secs(300));
            let tries = sim.dp.observe_calls - before;
            let status = sim.ctl.status(sim.now.at);
            assert!(!status.reconcile.ok, "{fail}");
            assert!(status.reconcile.error.is_some(), "{fail}");
            assert!(status.reconcile.retry_in_secs.is_some_and(|s| s <= 60.0));
            // The error clears: the next try succeeds and the schedule
            // returns to the resync.
            sim.dp.fail_observe = None;
            sim.dp.fail_apply = None;
            sim.dp.observed.foreign_link = None;
            sim.advance(MAX_RETRY);
            assert!(sim.ctl.status(sim.now.at).reconcile.ok, "{fail}");
            tries
        });
        // 1 + 2 + 4 + 8 + 16 + 32 + 60 + 60 + 60 + 60 ... s: about 10 in 300 s.
        assert!((6..=12).contains(&tries), "{fail}: {tries} tries in 300 s");
        let errors = text.lines().filter(|l| l.contains("ERROR")).count();
        assert_eq!(
            errors, 1,
            "{fail}: one error line per distinct error:\n{text}"
        );
        assert!(text.contains("matches again"), "{text}");
    }
}

/// Defect 3.2: a reload whose file passes `lvn check` but fails later (a
/// low-order public key) rebuilt the hub's probe from nothing, and the next
/// resync deleted every learned spoke's entries.
#[test]
fn a_failed_reload_forgets_nothing_learned() {
    let k = keys();
    let mut sim = hub_sim(Some(&k));
    let mut alice = alice_probe(Some(&k));
    sim.event(heard(keepalive(&mut alice, &sim), nat(40001)));
    sim.advance(Duration::from_millis(10));
    assert!(sim.fdb_has(alice_mac()), "alice learned and installed");
    let hub_key = PrivateKey::from_base64(&k.hub.to_base64()).unwrap();
    // A file no pair key can come of: bob's key is a low-order point.
    // Validation refuses those too; this is the controller's own guard, for
    // whatever else may fail after the file is read.
    let mut topo = parse(&topology_text(Some(&k), "lvn-lab"));
    topo.network.mtu = Some(1400);
    if let Some(bob) = topo.nodes.get_mut("bob") {
        bob.public_key = Some(
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
                .parse()
                .unwrap(),
        );
    }
    let bad = Loaded {
        why: "SIGHUP",
        sha256: "bad".into(),
        text: Arc::from(""),
        result: Ok((Arc::new(topo), Some(hub_key))),
    };
    sim.event(Event::Config(bad));
    let status = sim.ctl.status(sim.now.at);
    assert!(
        status
            .config
            .refused
            .as_deref()
            .is_some_and(|r| r.contains("low-order"))
    );
    // Resyncs come and go: alice stays, and her counter guards her still.
    sim.advance(Duration::from_secs(3));
    sim.event(Event::KernelChanged);
    assert!(
        sim.fdb_has(alice_mac()),
        "a failed reload removed a learned spoke"
    );
    let live = match &sim.ctl.probe {
        super::probes::Probe::Hub(h) => h.live().get("alice").copied(),
        super::probes::Probe::Spoke(_) => None,
    };
    assert!(live.is_some_and(|l| l.endpoint == nat(40001) && l.counter > 0));
}

/// Defect 3.4: only live peers went to the state file, so after a restart a
/// captured keepalive of an expired spoke was accepted again.
#[test]
fn replay_counters_of_expired_peers_survive_a_restart() {
    let k = keys();
    let mut sim = hub_sim(Some(&k));
    let mut alice = alice_probe(Some(&k));
    let captured = keepalive(&mut alice, &sim);
    sim.event(heard(captured.clone(), nat(40001)));
    sim.advance(Duration::from_secs(10));
    assert!(!sim.fdb_has(alice_mac()), "alice expired");
    let saved = sim.ctl.saved(sim.now);
    assert!(
        saved
            .learned
            .get("alice")
            .is_some_and(|p| !p.up && p.counter > 0)
    );

    // Restart from what was saved; the attacker replays from elsewhere.
    let key = PrivateKey::from_base64(&k.hub.to_base64()).unwrap();
    let mut again = Sim::new(
        &topology_text(Some(&k), "lvn-lab"),
        "hub1",
        Some(key),
        &saved,
    );
    again.now = sim.now;
    again.event(Event::Tick);
    again.event(heard(captured, nat(50000)));
    again.advance(Duration::from_millis(10));
    assert!(
        !again.fdb_has(alice_mac()),
        "a replayed keepalive brought alice back"
    );
    let st = again.ctl.status(again.now.at);
    assert_eq!(
        st.counters.get("rejected_replay"),
        Some(&1),
        "{:?}",
        st.counters
    );
}

/// Defect 3.3: the inner source was checked after the probe had stored the
/// new endpoint, so a rejected keepalive still moved the peer.
#[test]
fn inner_source_mismatch_changes_nothing() {
    let mut sim = hub_sim(None);
    let mut alice = alice_probe(None);
    sim.event(heard(keepalive(&mut alice, &sim), nat(40001)));
    sim.advance(Duration::from_millis(10));
    let saves = sim.saves.len();
    let reconciles = sim.reconciles.len();
    // Bob's machine sends a keepalive naming alice from another mapping.
    let forged = Event::Keepalive {
        payload: keepalive(&mut alice, &sim),
        from: nat(40002),
        inner: Inner::Mac(Mac::for_overlay("100.64.0.3".parse().unwrap())),
    };
    sim.event(forged);
    sim.advance(Duration::from_millis(10));
    let fdb = &sim.dp.observed.state.fdb;
    assert_eq!(
        fdb.get(&alice_mac())
            .map(|f| SocketAddr::new(f.dst, f.port)),
        Some(nat(40001))
    );
    assert_eq!(
        sim.reconciles.len(),
        reconciles,
        "no reconcile for a rejected keepalive"
    );
    assert_eq!(sim.saves.len(), saves, "nothing to save");
    let st = sim.ctl.status(sim.now.at);
    assert_eq!(st.counters.get("rejected_inner_mismatch"), Some(&1));
}

/// Defect 3.8: a spoke saved its counter only on SIGTERM; after a crash
/// with a clock behind, the hub refused it as a replay.
#[test]
fn a_spoke_saves_its_counter_ahead_of_what_it_sends() {
    let text = topology_text(None, "lvn-lab");
    let mut sim = Sim::new(&text, "alice", None, &Saved::default());
    sim.event(Event::Tick);
    sim.advance(Duration::from_secs(5));
    let highest = sim
        .sent
        .iter()
        .map(|(_, p)| crate::probe::wire::decode(p).unwrap().message.counter)
        .max()
        .unwrap();
    let saved = sim.saves.last().expect("a save without SIGTERM").clone();
    assert!(saved.counter >= highest + COUNTER_RESERVE / 2);
    // Crash; the clock comes back an hour behind.
    let mut again = Sim::new(&text, "alice", None, &saved);
    again.now.wall_ns = sim.now.wall_ns - 3_600_000_000_000;
    again.event(Event::Tick);
    let first = again.sent.first().expect("a keepalive");
    let counter = crate::probe::wire::decode(&first.1)
        .unwrap()
        .message
        .counter;
    assert!(
        counter > highest,
        "{counter} <= {highest}: the hub would refuse it"
    );
}

/// Defect 3.9: changing `device` in a reload must remove the old device
/// (lvn's by its alias) and create the new one, in one reload.
#[test]
fn a_reload_that_renames_the_device_replaces_it() {
    let mut sim = hub_sim(None);
    assert_eq!(
        sim.dp.observed.state.link.as_ref().map(|l| l.name.as_str()),
        Some("lvn-lab")
    );
    let renamed = topology_text(None, "lvn-new");
    let before = sim.reconciles.len();
    sim.event(Event::Config(loaded(&renamed, None)));
    assert_eq!(
        sim.reconciles.len(),
        before + 1,
        "one reconcile for the reload"
    );
    let link = sim.dp.observed.state.link.clone();
    assert_eq!(link.map(|l| l.name), Some("lvn-new".into()));
    assert!(sim.ctl.status(sim.now.at).reconcile.ok);
    // Nothing is left to retire: later reconciles have no removal pass.
    sim.advance(Duration::from_secs(31));
    assert!(sim.ctl.status(sim.now.at).reconcile.ok);
}

/// Defect 3.11: an unchanged invalid file was reported again at every event
/// in its directory.
#[test]
fn an_unchanged_invalid_file_is_reported_once() {
    let ((), text) = logs(|| {
        let mut sim = hub_sim(None);
        let bad = "[network]\nname = 3\n";
        for _ in 0..5 {
            sim.event(Event::Config(loaded(bad, None)));
        }
        let st = sim.ctl.status(sim.now.at);
        assert_eq!(st.counters.get("reloads_failed"), Some(&5));
        assert!(st.config.refused.is_some());
    });
    let refusals = text.matches("the new file is refused").count();
    assert_eq!(refusals, 1, "{text}");
}

#[test]
fn learned_endpoints_of_a_burst_cost_one_reconcile() {
    let mut sim = hub_sim(None);
    let before = sim.reconciles.len();
    let mut alice = alice_probe(None);
    sim.event(heard(keepalive(&mut alice, &sim), nat(40001)));
    sim.event(heard(keepalive(&mut alice, &sim), nat(40003)));
    assert!(sim.sent.is_empty(), "answers wait for the entry");
    sim.advance(Duration::from_millis(10));
    assert_eq!(sim.reconciles.len(), before + 1);
    assert_eq!(sim.sent.len(), 2);
    assert!(sim.fdb_has(alice_mac()));
}

#[test]
fn an_idle_hub_wakes_up_for_expiry_only_when_a_peer_may_expire() {
    let mut sim = hub_sim(None);
    let mut alice = alice_probe(None);
    sim.event(heard(keepalive(&mut alice, &sim), nat(40001)));
    sim.advance(Duration::from_millis(500));
    // expire_after is 4 s: no scan of the peers before then (it was one
    // every 250 ms: 10 % of a core at 100k learned spokes).
    let wake = sim.ctl.next_wakeup(sim.now.at) - sim.now.at;
    assert!(
        wake > Duration::from_secs(3),
        "{}",
        sim.ctl.debug_timers(sim.now.at)
    );
    // Silent, alice expires on time.
    sim.advance(Duration::from_secs(4));
    assert!(!sim.fdb_has(alice_mac()), "alice expired");
    // Nobody is live: the next look is far off.
    let wake = sim.ctl.next_wakeup(sim.now.at) - sim.now.at;
    assert!(wake >= Duration::from_secs(20), "{wake:?}");
}

#[test]
fn a_burst_of_drift_costs_one_reconcile() {
    let mut sim = hub_sim(None);
    sim.advance(Duration::from_secs(1));
    let before = sim.reconciles.len();
    for i in 0..100 {
        sim.event(Event::Drift(format!("fdb {i} removed from lvn-lab")));
    }
    assert_eq!(sim.reconciles.len(), before, "the burst settles first");
    sim.advance(Duration::from_millis(100));
    assert_eq!(sim.reconciles[before..], ["drift".to_string()]);
    assert_eq!(sim.ctl.tally.drift, 100);
}

#[test]
fn the_kernel_state_is_left_alone_when_nothing_changed() {
    let mut sim = hub_sim(None);
    let writes = sim.dp.writes;
    sim.advance(Duration::from_secs(95));
    assert_eq!(sim.reconciles.iter().filter(|w| *w == "resync").count(), 3);
    assert_eq!(sim.dp.writes, writes);
}

/// Defect 3.6, across a restart: a counter recorded under `auth = "none"`
/// (a forged 2^64-1, say) or under a peer's old key must not lock the real
/// spoke out once the hub runs with keys.
#[test]
fn counters_saved_under_another_auth_mode_or_key_are_dropped_on_restart() {
    let k = keys();
    let forged = |auth: &str, public_key: Option<String>| {
        let mut saved = Saved {
            network: NET.into(),
            node: "hub1".into(),
            auth: Some(auth.into()),
            ..Saved::default()
        };
        saved.learned.insert(
            "alice".into(),
            super::state::SavedPeer {
                endpoint: nat(40001),
                counter: u64::MAX,
                last_seen_unix: 0,
                up: false,
                public_key,
            },
        );
        saved
    };
    let old_key = PrivateKey::generate().public().to_string();
    for saved in [forged("none", None), forged("keys", Some(old_key))] {
        let key = PrivateKey::from_base64(&k.hub.to_base64()).unwrap();
        let text = topology_text(Some(&k), "lvn-lab");
        let mut sim = Sim::new(&text, "hub1", Some(key), &saved);
        sim.event(Event::Tick);
        let mut alice = alice_probe(Some(&k));
        sim.event(heard(keepalive(&mut alice, &sim), nat(40002)));
        sim.advance(Duration::from_millis(10));
        assert!(
            sim.fdb_has(alice_mac()),
            "alice refused after a restart: {saved:?}"
        );
    }
}

/// Spoke `name`'s probe, auth "none", with hub1 (100.64.0.1) its hub.
pub(super) fn spoke_probe(name: &str) -> SpokeProbe {
    SpokeProbe::new(
        name,
        false,
        Duration::from_secs(1),
        vec![(
            "hub1".into(),
            Mac::for_overlay("100.64.0.1".parse().unwrap()),
            None,
        )],
    )
}

/// A keepalive of spoke `name` (overlay address `address`) from `from`.
fn keepalive_of(name: &str, address: &str, sim: &Sim, from: SocketAddr) -> Event {
    let mut probe = spoke_probe(name);
    Event::Keepalive {
        payload: keepalive(&mut probe, sim),
        from,
        inner: Inner::Mac(Mac::for_overlay(address.parse().unwrap())),
    }
}

/// Issue 12: each learned or expired spoke wrote the whole state (every
/// peer, ~14 MB at 100,000), built in the loop. A save after the first
/// carries the peers that changed, nothing else; what the files hold is
/// still everything.
#[test]
fn a_save_carries_only_the_peers_that_changed() {
    use super::journal::Save;
    let mut sim = hub_sim(None);
    // The first save of a run is whole (here: the file applied at start,
    // kept as the last good file).
    assert!(matches!(sim.made.first(), Some(Save::Whole(_))));
    let bob = keepalive_of("bob", "100.64.0.3", &sim, nat(40003));
    sim.event(bob);
    sim.advance(Duration::from_millis(10));
    assert!(
        matches!(sim.made.last(), Some(Save::Delta(_, c)) if c.len() == 1),
        "{:?}",
        sim.made
    );

    let alice = keepalive_of("alice", "100.64.0.2", &sim, nat(40001));
    sim.event(alice);
    sim.advance(Duration::from_millis(10));
    match sim.made.last() {
        Some(Save::Delta(head, changed)) => {
            assert!(head.learned.is_empty());
            assert_eq!(changed.len(), 1, "{changed:?}");
            assert_eq!(changed[0].0, "alice");
            assert_eq!(changed[0].1.as_ref().map(|p| p.endpoint), Some(nat(40001)));
        }
        other => panic!("not a save of alice alone: {other:?}"),
    }
    assert_eq!(sim.disk.learned.len(), 2);

    // Both expire (4 s): one save of the two, down.
    sim.advance(Duration::from_secs(6));
    match sim.made.last() {
        Some(Save::Delta(_, changed)) => {
            assert_eq!(changed.len(), 2, "{changed:?}");
            assert!(
                changed
                    .iter()
                    .all(|(_, p)| p.as_ref().is_some_and(|p| !p.up))
            );
        }
        other => panic!("not a save of the expired: {other:?}"),
    }
    assert_eq!(
        Saved {
            good: None,
            ..sim.disk.clone()
        },
        sim.ctl.saved(sim.now),
        "the files hold everything"
    );
}

/// After a failed save nothing is known of what reached the disk: the
/// next save is whole.
#[test]
fn after_a_failed_save_the_next_is_whole() {
    use super::journal::Save;
    let mut sim = hub_sim(None);
    let alice = keepalive_of("alice", "100.64.0.2", &sim, nat(40001));
    sim.event(alice);
    sim.advance(Duration::from_millis(10));
    let made = sim.made.len();
    sim.event(Event::Saved(Err("no space left on device".into())));
    sim.advance(Duration::from_secs(2));
    assert_eq!(sim.made.len(), made + 1);
    assert!(matches!(sim.made.last(), Some(Save::Whole(s)) if s.learned.len() == 1));
}

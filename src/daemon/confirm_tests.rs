//! Rollback of a reload that cuts a spoke off, under a fake clock and the
//! fake kernel. The hub is a real hub probe; a keepalive reaches it only
//! while the spoke's fdb entry for the hub points at the hub's real
//! endpoint, as on the wire.

use std::{
    net::{IpAddr, SocketAddr},
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use super::{
    confirm::choose_start,
    controller::{Controller, Effect, Event, Loaded, Now, Version},
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

const HUB_ENDPOINT: &str = "198.51.100.1";

fn topology(hub_endpoint: &str, extra: &str) -> String {
    format!(
        r#"[network]
name = "lab"
overlay = "100.64.0.0/16"
port = 4789
vni = 9
keepalive = "1s"
confirm_after = "3s"

[nodes.h1]
role = "hub"
address = "100.64.0.1"
endpoint = "{hub_endpoint}"

[nodes.alice]
address = "100.64.1.2"
{extra}"#
    )
}

fn loaded(text: &str, why: &'static str) -> Loaded {
    Loaded {
        why,
        sha256: super::metrics::text_hash(text),
        text: Arc::from(text),
        result: config::parse(Path::new("t.toml"), text)
            .map(|t| (Arc::new(t), None))
            .map_err(|e| e.0.iter().map(ToString::to_string).collect()),
    }
}

fn version(text: &str) -> Version {
    loaded(text, "start").version().expect("valid")
}

struct Lab {
    ctl: Controller,
    dp: FakeKernel,
    memo: reconciler::Memo,
    hub: HubProbe,
    now: Now,
    saved: Saved,
    /// Saves that carried the last good file.
    good_writes: usize,
}

impl Lab {
    fn new(start: Version, previous: Option<Version>, saved: &Saved) -> Lab {
        let topo = start.topo.clone();
        let alice = &topo.nodes["alice"];
        let peer = Peer {
            name: "alice".into(),
            mac: Mac::for_overlay(alice.address),
            address: alice.address,
            key: None,
            static_endpoint: None,
            expire_after: Duration::from_secs(10),
        };
        let now = Now {
            at: Instant::now(),
            wall_ns: 1_800_000_000_000_000_000,
        };
        let start = super::confirm::Start {
            run: start,
            instead_of: None,
            previous,
        };
        let ctl = Controller::start("alice", start, saved, Duration::from_secs(30), now)
            .expect("controller");
        Lab {
            ctl,
            dp: FakeKernel::default(),
            memo: reconciler::Memo::default(),
            hub: HubProbe::new("h1", false, vec![peer]),
            now,
            saved: Saved::default(),
            good_writes: 0,
        }
    }

    fn event(&mut self, ev: Event) {
        let mut queue = self.ctl.on(ev, self.now);
        for _ in 0..1000 {
            let Some(e) = queue.pop() else { return };
            let more = match e {
                Effect::Reconcile(req) => {
                    let o = futures::executor::block_on(reconciler::execute(
                        &mut self.dp,
                        &mut self.memo,
                        &req,
                    ));
                    self.ctl.on(Event::Reconciled(o), self.now)
                }
                Effect::Send { payload, .. } => self.deliver(&payload),
                Effect::Save(s) => {
                    // As on disk: the last good file stays until a save
                    // brings another.
                    if s.good().is_some() {
                        self.good_writes += 1;
                    }
                    self.saved.apply(s);
                    self.ctl.on(Event::Saved(Ok(())), self.now)
                }
                Effect::Notify(_) => Vec::new(),
            };
            queue.extend(more);
        }
        panic!("effects never settle");
    }

    /// The keepalive reaches the hub only through an fdb entry with its
    /// real endpoint; the hub answers at once.
    fn deliver(&mut self, payload: &[u8]) -> Vec<Effect> {
        let hub_mac = Mac::for_overlay("100.64.0.1".parse().unwrap());
        let real: IpAddr = HUB_ENDPOINT.parse().unwrap();
        if self.dp.observed.state.fdb.get(&hub_mac).map(|f| f.dst) != Some(real) {
            return Vec::new();
        }
        let from = SocketAddr::new([203, 0, 113, 7].into(), 40000);
        let inner = Inner::Mac(Mac::for_overlay("100.64.1.2".parse().unwrap()));
        let now = self.now;
        match self
            .hub
            .on_keepalive(payload, from, inner, now.at, now.wall_ns)
        {
            Outcome::Accepted { answer, .. } => self.ctl.on(Event::Answer(answer), now),
            Outcome::Rejected(r) => panic!("hub rejected a keepalive: {r}"),
        }
    }

    fn advance(&mut self, d: Duration) {
        let end = self.now.at + d;
        for _ in 0..100_000 {
            let next = self.ctl.next_wakeup(self.now.at);
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

    fn hub_dst(&self) -> Option<IpAddr> {
        let hub_mac = Mac::for_overlay("100.64.0.1".parse().unwrap());
        self.dp.observed.state.fdb.get(&hub_mac).map(|f| f.dst)
    }

    fn answers(&self) -> u64 {
        self.ctl
            .tally
            .counters
            .get("accepted")
            .copied()
            .unwrap_or(0)
    }
}

/// A spoke that runs and is answered.
fn answered_spoke() -> (Lab, String) {
    let good = topology(HUB_ENDPOINT, "");
    let mut lab = Lab::new(version(&good), None, &Saved::default());
    lab.event(Event::Tick);
    lab.advance(Duration::from_secs(3));
    assert!(lab.answers() > 0, "the hub answers");
    assert_eq!(
        lab.saved.good.as_deref(),
        Some(good.as_str()),
        "an answered file is kept as the last good one"
    );
    assert_eq!(lab.good_writes, 1, "written once, not with every save");
    (lab, good)
}

#[test]
fn a_reload_that_cuts_the_spoke_off_rolls_back_within_confirm_after() {
    let (mut lab, good) = answered_spoke();
    let bad = topology("198.51.100.99", "");
    lab.event(Event::Config(loaded(&bad, "file changed")));
    lab.advance(Duration::from_millis(100));
    assert_eq!(lab.hub_dst(), Some("198.51.100.99".parse().unwrap()));
    let st = lab.ctl.status(lab.now.at);
    assert!(st.config.confirm_in_secs.is_some(), "a window is open");
    assert_eq!(lab.saved.pending.as_deref(), Some(&*st.config.sha256));
    // No answer: back on the good file within confirm_after (3 s) plus a
    // keepalive, and answered again.
    let t0 = lab.now.at;
    let mut back = None;
    for _ in 0..60 {
        lab.advance(Duration::from_millis(100));
        if lab.hub_dst() == Some(HUB_ENDPOINT.parse().unwrap()) {
            back = Some(lab.now.at - t0);
            break;
        }
    }
    let back = back.expect("rolled back");
    assert!(back <= Duration::from_secs(4), "rolled back after {back:?}");
    let answers = lab.answers();
    lab.advance(Duration::from_secs(2));
    assert!(lab.answers() > answers, "answered again after the rollback");
    let st = lab.ctl.status(lab.now.at);
    let bad_sha = super::metrics::text_hash(&bad);
    assert_eq!(st.config.sha256, super::metrics::text_hash(&good));
    assert_eq!(
        st.config.rolled_back_from.as_deref(),
        Some(bad_sha.as_str())
    );
    assert_eq!(st.config.confirm_in_secs, None);
    assert_eq!(lab.ctl.tally.rollbacks, 1);
    assert!(
        lab.ctl
            .metrics_text(lab.now.at)
            .contains("lvn_config_rollbacks_total{node=\"alice\",network=\"lab\"} 1")
    );
    assert_eq!(lab.saved.rejected.as_deref(), Some(bad_sha.as_str()));
    assert_eq!(lab.saved.pending, None);
    assert_eq!(lab.saved.good.as_deref(), Some(good.as_str()));
    assert_eq!(
        lab.good_writes, 1,
        "the good file was on disk all along: no save carries it again"
    );

    // The same file again (a file watch event, a resync) is not applied.
    let writes = lab.dp.writes;
    lab.event(Event::Config(loaded(&bad, "file changed")));
    lab.advance(Duration::from_secs(2));
    assert_eq!(
        lab.dp.writes, writes,
        "the rolled-back file was applied again"
    );
    // SIGHUP tries it again (and it rolls back again).
    lab.event(Event::Config(loaded(&bad, "SIGHUP")));
    lab.advance(Duration::from_millis(100));
    assert_eq!(lab.hub_dst(), Some("198.51.100.99".parse().unwrap()));
    lab.advance(Duration::from_secs(4));
    assert_eq!(lab.hub_dst(), Some(HUB_ENDPOINT.parse().unwrap()));
    assert_eq!(lab.ctl.tally.rollbacks, 2);
}

#[test]
fn a_harmless_change_is_kept_and_a_changed_file_is_tried_again() {
    let (mut lab, _) = answered_spoke();
    let bad = topology("198.51.100.99", "");
    lab.event(Event::Config(loaded(&bad, "file changed")));
    lab.advance(Duration::from_secs(5));
    assert_eq!(lab.ctl.tally.rollbacks, 1);
    // A new file (a new spoke declared) replaces the rolled-back one.
    let harmless = topology(HUB_ENDPOINT, "\n[nodes.bob]\naddress = \"100.64.1.3\"\n");
    lab.event(Event::Config(loaded(&harmless, "file changed")));
    lab.advance(Duration::from_secs(10));
    let st = lab.ctl.status(lab.now.at);
    assert_eq!(st.config.sha256, super::metrics::text_hash(&harmless));
    assert_eq!(st.config.rolled_back_from, None);
    assert_eq!(st.config.confirm_in_secs, None, "confirmed");
    assert_eq!(lab.ctl.tally.rollbacks, 1);
    assert_eq!(lab.saved.good.as_deref(), Some(harmless.as_str()));
}

#[test]
fn a_spoke_that_heard_no_hub_before_the_change_does_not_roll_back() {
    // No hub answered before: there is no connectivity to protect, and the
    // old file is no better than the new one.
    let good = topology(HUB_ENDPOINT, "");
    let mut lab = Lab::new(version(&good), None, &Saved::default());
    let bad = topology("198.51.100.99", "");
    lab.event(Event::Config(loaded(&bad, "file changed")));
    lab.advance(Duration::from_secs(10));
    assert_eq!(lab.ctl.tally.rollbacks, 0);
    assert_eq!(lab.hub_dst(), Some("198.51.100.99".parse().unwrap()));
}

#[test]
fn a_restart_inside_the_window_resumes_it() {
    let good = topology(HUB_ENDPOINT, "");
    let bad = topology("198.51.100.99", "");
    let bad_sha = super::metrics::text_hash(&bad);
    let saved = Saved {
        network: "lab".into(),
        node: "alice".into(),
        pending: Some(bad_sha.clone()),
        ..Saved::default()
    };
    let start = choose_start(Ok(version(&bad)), Some(version(&good)), &saved).expect("start");
    assert!(start.previous.is_some(), "the window is resumed");
    let mut lab = Lab::new(start.run, start.previous, &saved);
    lab.event(Event::Tick);
    lab.advance(Duration::from_secs(5));
    assert_eq!(lab.ctl.tally.rollbacks, 1);
    assert_eq!(lab.hub_dst(), Some(HUB_ENDPOINT.parse().unwrap()));
    assert_eq!(lab.saved.rejected.as_deref(), Some(bad_sha.as_str()));
}

#[test]
fn a_restart_starts_on_the_last_good_file_instead_of_a_rolled_back_or_broken_one() {
    let good = topology(HUB_ENDPOINT, "");
    let bad = topology("198.51.100.99", "");
    let bad_sha = super::metrics::text_hash(&bad);
    let saved = Saved {
        rejected: Some(bad_sha.clone()),
        ..Saved::default()
    };
    let start = choose_start(Ok(version(&bad)), Some(version(&good)), &saved).expect("start");
    assert_eq!(start.run.sha256, super::metrics::text_hash(&good));
    let broken = loaded("[network\n", "start").version();
    let start = choose_start(broken.clone(), Some(version(&good)), &Saved::default())
        .expect("the last good file");
    assert_eq!(start.run.sha256, super::metrics::text_hash(&good));
    assert!(matches!(start.instead_of, Some((_, Ok(_)))));
    assert!(choose_start(broken, None, &Saved::default()).is_err());
    // Nothing saved against the file on disk: it runs, no window back.
    let start =
        choose_start(Ok(version(&bad)), Some(version(&good)), &Saved::default()).expect("start");
    assert_eq!(start.run.sha256, bad_sha);
    assert!(start.previous.is_none());
}

#[test]
fn a_hub_never_rolls_back() {
    let good = topology(HUB_ENDPOINT, "");
    let v = version(&good);
    let now = Now {
        at: Instant::now(),
        wall_ns: 1_800_000_000_000_000_000,
    };
    let mut ctl =
        Controller::new("h1", v, &Saved::default(), Duration::from_secs(30), now).expect("hub");
    let mut dp = FakeKernel::default();
    let mut memo = reconciler::Memo::default();
    let mut t = now;
    let mut run = |ctl: &mut Controller, ev: Event, t: Now| {
        let mut q = ctl.on(ev, t);
        for _ in 0..100 {
            let Some(e) = q.pop() else { return };
            if let Effect::Reconcile(req) = e {
                let o = futures::executor::block_on(reconciler::execute(&mut dp, &mut memo, &req));
                q.extend(ctl.on(Event::Reconciled(o), t));
            }
        }
    };
    run(&mut ctl, Event::Tick, t);
    let changed = topology("198.51.100.7", "");
    run(&mut ctl, Event::Config(loaded(&changed, "file changed")), t);
    for _ in 0..20 {
        t.at += Duration::from_millis(500);
        run(&mut ctl, Event::Tick, t);
    }
    assert_eq!(ctl.tally.rollbacks, 0);
    let st = ctl.status(t.at);
    assert_eq!(st.config.sha256, super::metrics::text_hash(&changed));
    assert_eq!(st.config.confirm_in_secs, None);
    assert_eq!(
        ctl.saved(t).good.as_deref(),
        Some(changed.as_str()),
        "a hub keeps what it applied as the last good file"
    );
}

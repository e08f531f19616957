//! `lvn run`: the reconcile loop as a daemon. Events (a keepalive, a tick,
//! a config change, SIGHUP, the periodic resync, a status request) feed the
//! pure probe state machines and the planner; the only effects are netlink
//! writes, the probe's two sockets, the state file and the status socket.

mod metrics;
mod state;
mod status;
mod watch;

use std::{
    collections::BTreeMap,
    path::PathBuf,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result, bail};
use tokio::{net::UnixListener, sync::mpsc};
use tracing::{debug, error, info, warn};

pub use state::{DEFAULT_STATE_DIR, Saved, SavedPeer};
pub use status::{DEFAULT_RUN_DIR, PeerStatus, Status, query, socket_path, table};

use crate::{
    config::{self, Auth, Role, Topology},
    datapath::{Datapath, Scope, kernel::Kernel},
    probe::{
        PrivateKey,
        hub::{HubProbe, Outcome, Peer},
        io::{Encap, OverlaySocket, OverlayUdp, UnderlaySocket},
        keyfile, pair_key,
        spoke::SpokeProbe,
    },
    reconcile::{self, Family, Liveness, Mac},
};

/// Overlay UDP port of keepalives on datapath "fou": the network's port
/// plus one (the fou listener holds the port itself; `port` is at most
/// 65534, so this fits).
fn keepalive_port(port: u16) -> u16 {
    port.saturating_add(1)
}

/// Default private key file.
pub const DEFAULT_KEY_FILE: &str = "/etc/lvn/private.key";
/// Re-read the kernel at least this often, whatever happens (drift repair).
pub const DEFAULT_RESYNC: Duration = Duration::from_secs(30);
/// How often a hub looks for expired peers.
const EXPIRY_CHECK: Duration = Duration::from_millis(250);
/// How long a hub collects newly learned endpoints before installing them
/// in one reconcile (a mass join costs one reconcile, not one per spoke).
const LEARN_BATCH: Duration = Duration::from_millis(3);
/// Keepalives read per wake-up at most, before other events get a turn.
const SIGHTINGS_PER_WAKEUP: usize = 256;
/// Back-off after a failed reconcile.
const RETRY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct Options {
    pub config: PathBuf,
    pub node: String,
    pub key_file: PathBuf,
    pub state_dir: PathBuf,
    pub run_dir: PathBuf,
    pub resync: Duration,
    pub metrics: Option<std::net::SocketAddr>,
}

enum Probe {
    Hub(HubProbe),
    Spoke(SpokeProbe),
}

enum Event {
    Sighting(std::io::Result<crate::probe::io::Sighting>),
    Frame(std::io::Result<Vec<u8>>),
    Tick,
    Reload(&'static str),
    Status(std::io::Result<tokio::net::UnixStream>),
    Metrics(std::io::Result<tokio::net::TcpStream>),
    Stop(&'static str),
}

struct Daemon {
    opts: Options,
    topo: Topology,
    key: Option<PrivateKey>,
    dp: Kernel,
    probe: Probe,
    overlay: Option<Overlay>,
    underlay: Option<UnderlaySocket>,
    /// Peers whose keepalives stopped, with their expire_after.
    expired: BTreeMap<String, Duration>,
    counters: BTreeMap<String, u64>,
    /// Peers the datapath cannot carry (fou: one per public address).
    conflicts: Vec<reconcile::Conflict>,
    metrics: metrics::Metrics,
    /// Answers waiting for the reconcile that installs their endpoints.
    pending_answers: Vec<(std::net::IpAddr, Vec<u8>)>,
    /// When to run that reconcile.
    learn_at: Option<Instant>,
    /// Something worth saving (counters, endpoints) changed since the last save.
    dirty: bool,
    /// READY=1 sent to systemd (after the first successful reconcile).
    ready: bool,
    next_resync: Instant,
    retry_at: Option<Instant>,
    next_expiry_check: Instant,
}

fn wall_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn wall_secs() -> u64 {
    wall_ns() / 1_000_000_000
}

/// Run until SIGTERM or SIGINT. Kernel state is left in place on exit, so a
/// restart does not interrupt traffic.
pub async fn run(opts: Options) -> Result<()> {
    let topo = config::load(&opts.config).map_err(|e| anyhow::anyhow!("{e}"))?;
    topo.node(&opts.node)?;
    let key = load_key(&topo, &opts)?;
    let probe = build_probe(&topo, &opts.node, key.as_ref(), None)?;
    let dp = Kernel::connect().context("opening netlink")?;
    let now = Instant::now();
    let mut d = Daemon {
        opts,
        topo,
        key,
        dp,
        probe,
        overlay: None,
        underlay: None,
        expired: BTreeMap::new(),
        counters: BTreeMap::new(),
        conflicts: Vec::new(),
        metrics: metrics::Metrics::default(),
        pending_answers: Vec::new(),
        learn_at: None,
        dirty: false,
        ready: false,
        next_resync: now,
        retry_at: None,
        next_expiry_check: now,
    };
    d.restore(now)?;

    std::fs::create_dir_all(&d.opts.run_dir)
        .with_context(|| format!("creating run directory {}", d.opts.run_dir.display()))?;
    let sock_path = socket_path(&d.opts.run_dir, &d.topo.network.name);
    let _ = std::fs::remove_file(&sock_path);
    let listener = UnixListener::bind(&sock_path)
        .with_context(|| format!("listening on {}", sock_path.display()))?;

    d.metrics.config_hash = metrics::file_hash(&d.opts.config);
    let metrics_listener = match d.opts.metrics {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("serving metrics on {addr}"))?,
        ),
        None => None,
    };
    let (reload_tx, mut reload_rx) = mpsc::channel::<&'static str>(8);
    let _watcher = watch::watch(&d.opts.config, reload_tx.clone())?;
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;

    if let Err(e) = d.reconcile("start").await {
        error!("first reconcile failed: {e:#}; retrying");
    }
    d.open_sockets();
    info!(
        node = %d.opts.node,
        network = %d.topo.network.name,
        "running"
    );
    loop {
        let deadline = d.next_deadline();
        let ev = tokio::select! {
            r = recv_underlay(&d.underlay) => Event::Sighting(r),
            r = recv_overlay(&d.overlay, matches!(d.probe, Probe::Spoke(_))) => Event::Frame(r),
            _ = tokio::time::sleep_until(deadline.into()) => Event::Tick,
            Some(why) = reload_rx.recv() => Event::Reload(why),
            _ = hup.recv() => Event::Reload("SIGHUP"),
            r = listener.accept() => Event::Status(r.map(|(s, _)| s)),
            r = metrics::accept(&metrics_listener) => Event::Metrics(r),
            _ = term.recv() => Event::Stop("SIGTERM"),
            _ = int.recv() => Event::Stop("SIGINT"),
        };
        match ev {
            Event::Stop(sig) => {
                info!("{sig}: saving state and exiting; the kernel state stays");
                metrics::sd_notify("STOPPING=1");
                d.save();
                let _ = std::fs::remove_file(&sock_path);
                return Ok(());
            }
            ev => d.handle(ev).await,
        }
    }
}

async fn recv_underlay(s: &Option<UnderlaySocket>) -> std::io::Result<crate::probe::io::Sighting> {
    match s {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

async fn recv_overlay(s: &Option<Overlay>, read: bool) -> std::io::Result<Vec<u8>> {
    match s {
        Some(s) if read => s.recv().await,
        _ => std::future::pending().await,
    }
}

/// The socket keepalives travel on inside the overlay: an EtherType
/// 0x88b5 frame on the VXLAN device, or UDP between overlay addresses
/// through the fou tunnels.
enum Overlay {
    Packet(OverlaySocket),
    Udp(OverlayUdp),
}

impl Overlay {
    /// Send to the node with overlay address `to`.
    fn send(&self, to: std::net::IpAddr, payload: &[u8]) -> std::io::Result<()> {
        match self {
            Overlay::Packet(p) => p.send(Mac::for_overlay(to), payload),
            Overlay::Udp(u) => u.send(to, payload),
        }
    }

    async fn recv(&self) -> std::io::Result<Vec<u8>> {
        match self {
            Overlay::Packet(p) => p.recv().await.map(|f| f.payload),
            Overlay::Udp(u) => u.recv().await.map(|(_, payload)| payload),
        }
    }
}

fn load_key(topo: &Topology, opts: &Options) -> Result<Option<PrivateKey>> {
    if topo.network.auth != Auth::Keys {
        return Ok(None);
    }
    let key = keyfile::load_private_key(&opts.key_file)?;
    let me = topo.node(&opts.node)?;
    let mine = key.public();
    match me.public_key {
        Some(p) if p == mine => Ok(Some(key)),
        Some(p) => bail!(
            "the key in {} has public key {mine}, but node '{}' declares {p} in {}",
            opts.key_file.display(),
            me.name,
            topo.file.display()
        ),
        None => bail!("node '{}' has no public_key", me.name),
    }
}

/// The probe for this node's role, keeping what `old` knew.
fn build_probe(
    topo: &Topology,
    me_name: &str,
    key: Option<&PrivateKey>,
    old: Option<Probe>,
) -> Result<Probe> {
    let me = topo.node(me_name)?;
    let auth = topo.network.auth == Auth::Keys;
    let pk = |peer: &config::Node| -> Result<Option<crate::probe::PairKey>> {
        match (key, peer.public_key) {
            (Some(k), Some(p)) => Ok(Some(pair_key(
                k,
                &me.name,
                &p,
                &peer.name,
                &topo.network.name,
            )?)),
            _ => Ok(None),
        }
    };
    Ok(match me.role {
        Role::Hub => {
            let mut peers = Vec::new();
            for p in topo.nodes.values().filter(|p| p.name != me.name) {
                peers.push(Peer {
                    name: p.name.clone(),
                    mac: Mac::for_overlay(p.address),
                    address: p.address,
                    key: pk(p)?,
                    static_endpoint: p.endpoint,
                    expire_after: topo.expire_after_of(p),
                });
            }
            match old {
                Some(Probe::Hub(mut h)) => {
                    h.reconfigure(&me.name, auth, peers);
                    Probe::Hub(h)
                }
                _ => Probe::Hub(HubProbe::new(&me.name, auth, peers)),
            }
        }
        Role::Spoke => {
            let mut hubs = Vec::new();
            for h in topo.hubs() {
                hubs.push((h.name.clone(), Mac::for_overlay(h.address), pk(h)?));
            }
            let interval = topo.keepalive_of(me);
            match old {
                Some(Probe::Spoke(mut s)) => {
                    s.reconfigure(&me.name, auth, interval, hubs);
                    Probe::Spoke(s)
                }
                _ => Probe::Spoke(SpokeProbe::new(&me.name, auth, interval, hubs)),
            }
        }
    })
}

impl Daemon {
    /// Count an event; allocates only the first time a key is seen.
    fn count(&mut self, key: &str) {
        match self.counters.get_mut(key) {
            Some(v) => *v += 1,
            None => {
                self.counters.insert(key.to_string(), 1);
            }
        }
    }

    fn scope(&self) -> Scope {
        Scope::of(&self.topo.network)
    }

    fn liveness(&self) -> Liveness {
        Liveness {
            learned: match &self.probe {
                Probe::Hub(h) => h.learned(),
                Probe::Spoke(_) => BTreeMap::new(),
            },
            expired: self.expired.clone(),
        }
    }

    fn next_deadline(&self) -> Instant {
        let now = Instant::now();
        let mut t = self.next_resync;
        if let Some(r) = self.retry_at {
            t = t.min(r);
        }
        if let Some(l) = self.learn_at {
            t = t.min(l);
        }
        match &self.probe {
            Probe::Spoke(s) if self.overlay.is_some() => t = t.min(s.next_due(now)),
            Probe::Hub(_) => t = t.min(self.next_expiry_check),
            _ => {}
        }
        t.max(now)
    }

    /// Observe, plan, apply, counting runs, time and changes.
    async fn reconcile(&mut self, why: &str) -> Result<()> {
        let started = Instant::now();
        let r = self.reconcile_once(why).await;
        self.metrics.reconcile_seconds_sum += started.elapsed().as_secs_f64();
        match &r {
            Ok(()) => {
                self.metrics.reconcile_ok += 1;
                if !self.ready {
                    self.ready = true;
                    metrics::sd_notify("READY=1\nSTATUS=reconciled");
                }
            }
            Err(_) => self.metrics.reconcile_failed += 1,
        }
        r
    }

    /// Observe, plan, apply. Each change applied is one log line.
    async fn reconcile_once(&mut self, why: &str) -> Result<()> {
        let scope = self.scope();
        let me = self.topo.node(&self.opts.node)?.clone();
        let observed = self.dp.observe(&scope).await?;
        let desired = reconcile::desired(&self.topo, &me, &observed.underlay, &self.liveness());
        let plan = reconcile::plan(&desired, &observed)?;
        for c in &desired.conflicts {
            if !self.conflicts.contains(c) {
                warn!("{c}");
            }
        }
        self.conflicts = desired.conflicts;
        self.next_resync = Instant::now() + self.opts.resync;
        if plan.is_empty() {
            debug!("reconcile ({why}): no changes");
            self.retry_at = None;
            return Ok(());
        }
        let result = self.dp.apply(&scope, &plan).await;
        match result {
            Ok(report) => {
                for s in &report.done {
                    info!("{s}");
                    let action = serde_json::to_value(s.action)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default();
                    *self
                        .metrics
                        .changes
                        .entry((s.object.kind().to_string(), action))
                        .or_default() += 1;
                }
                info!(
                    "reconcile ({why}): {} changes, {} kernel writes",
                    report.done.len(),
                    report.writes
                );
                self.retry_at = None;
                // A re-created device has a new index: reopen the probe's socket.
                if let Some(Overlay::Packet(p)) = &self.overlay
                    && Some(p.ifindex()) != self.dp.ifindex(&scope.device)
                {
                    self.overlay = None;
                    self.open_sockets();
                }
                Ok(())
            }
            Err(e) => {
                self.retry_at = Some(Instant::now() + RETRY);
                Err(e.into())
            }
        }
    }

    fn open_sockets(&mut self) {
        let is_hub = matches!(self.probe, Probe::Hub(_));
        let net = &self.topo.network;
        if self.overlay.is_none() {
            let opened = match net.datapath {
                config::Datapath::Vxlan => self
                    .dp
                    .ifindex(&net.device)
                    .map(|index| OverlaySocket::open(index, !is_hub).map(Overlay::Packet)),
                config::Datapath::Fou => self.topo.node(&self.opts.node).ok().map(|me| {
                    OverlayUdp::open(me.address, keepalive_port(net.port), !is_hub)
                        .map(Overlay::Udp)
                }),
            };
            match opened {
                Some(Ok(s)) => self.overlay = Some(s),
                Some(Err(e)) => error!("opening the overlay keepalive socket: {e}"),
                None => {}
            }
        }
        if is_hub && self.underlay.is_none() {
            let v6 = self
                .topo
                .hubs()
                .find_map(|h| h.endpoint)
                .is_some_and(|e| Family::of(e.ip()) == Family::Ipv6);
            let encap = match net.datapath {
                config::Datapath::Vxlan => Encap::Vxlan { vni: net.vni },
                config::Datapath::Fou => Encap::Fou {
                    keepalive_port: keepalive_port(net.port),
                },
            };
            match UnderlaySocket::open(v6, net.port, encap) {
                Ok(s) => self.underlay = Some(s),
                Err(e) => error!("opening the underlay keepalive socket: {e}"),
            }
        }
        if !is_hub {
            self.underlay = None;
        }
    }

    async fn handle(&mut self, ev: Event) {
        match ev {
            Event::Sighting(Ok(s)) => {
                self.on_sighting(s);
                // Take what else queued up while we were busy, without
                // another trip through the event loop.
                for _ in 0..SIGHTINGS_PER_WAKEUP {
                    let Some(more) = self.underlay.as_ref().and_then(UnderlaySocket::try_recv)
                    else {
                        break;
                    };
                    self.on_sighting(more);
                }
            }
            Event::Frame(Ok(f)) => self.on_frame(f),
            Event::Sighting(Err(e)) | Event::Frame(Err(e)) => {
                warn!("keepalive socket: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Event::Tick => self.on_tick().await,
            Event::Reload(why) => self.reload(why).await,
            Event::Status(Ok(stream)) => self.serve_status(stream).await,
            Event::Status(Err(e)) => warn!("status socket: {e}"),
            Event::Metrics(Ok(stream)) => {
                let text = metrics::render(&self.metrics, &self.status());
                metrics::serve(stream, move || text).await;
            }
            Event::Metrics(Err(e)) => warn!("metrics socket: {e}"),
            Event::Stop(_) => {}
        }
    }

    /// A keepalive seen on the underlay. A new or moved endpoint is
    /// installed by one reconcile for the whole burst (`LEARN_BATCH` later),
    /// and its answer waits for that; an unchanged one is answered now.
    fn on_sighting(&mut self, s: crate::probe::io::Sighting) {
        let Probe::Hub(hub) = &mut self.probe else {
            return;
        };
        let outcome = hub.on_keepalive(&s.payload, s.from, s.inner, Instant::now(), wall_ns());
        self.count("received");
        match outcome {
            Outcome::Rejected(r) => {
                debug!(from = %s.from, "keepalive rejected: {r}");
                self.count(&format!("rejected_{}", r.label()));
            }
            Outcome::Accepted {
                peer,
                changed,
                answer,
                ..
            } => {
                let Some(address) = self.topo.nodes.get(&peer).map(|n| n.address) else {
                    return;
                };
                self.count("accepted");
                self.dirty = true;
                if changed {
                    info!(peer = %peer, endpoint = %s.from, "learned endpoint");
                    self.count("endpoint_changes");
                    self.expired.remove(&peer);
                    self.pending_answers.push((address, answer));
                    self.learn_at
                        .get_or_insert_with(|| Instant::now() + LEARN_BATCH);
                } else {
                    self.answer(address, &answer);
                }
            }
        }
    }

    fn answer(&mut self, to: std::net::IpAddr, answer: &[u8]) {
        if let Some(o) = &self.overlay {
            match o.send(to, answer) {
                Ok(()) => self.count("sent"),
                Err(e) => debug!("answer to {to}: {e}"),
            }
        }
    }

    /// Install what the last burst of keepalives taught, then answer them.
    async fn learn(&mut self) {
        self.learn_at = None;
        if let Err(e) = self.reconcile("learned endpoint").await {
            error!("reconcile after learning endpoints: {e:#}");
        }
        for (to, answer) in std::mem::take(&mut self.pending_answers) {
            self.answer(to, &answer);
        }
        self.save();
    }

    fn on_frame(&mut self, payload: Vec<u8>) {
        let Probe::Spoke(spoke) = &mut self.probe else {
            return;
        };
        let r = spoke.on_answer(&payload, Instant::now());
        self.count("received");
        match r {
            Ok(hub) => {
                debug!(hub = %hub, "answer");
                self.count("accepted");
            }
            Err(r) => self.count(&format!("rejected_{}", r.label())),
        }
    }

    async fn on_tick(&mut self) {
        let now = Instant::now();
        if self.learn_at.is_some_and(|t| now >= t) {
            self.learn().await;
        }
        if now >= self.next_resync && self.dirty {
            // Replay counters reach the disk at least every resync, so a
            // crash loses little.
            self.save();
        }
        if self.retry_at.is_some_and(|t| now >= t) || now >= self.next_resync {
            if let Err(e) = self.reconcile("resync").await {
                error!("reconcile: {e:#}");
            }
            self.open_sockets();
        }
        match &mut self.probe {
            Probe::Spoke(s) => {
                let sends = s.on_tick(now, wall_ns());
                let mut sent = 0;
                if let Some(o) = &self.overlay {
                    for (mac, payload) in sends {
                        let hub = self
                            .topo
                            .hubs()
                            .find(|h| Mac::for_overlay(h.address) == mac);
                        let Some(hub) = hub else { continue };
                        match o.send(hub.address, &payload) {
                            Ok(()) => sent += 1,
                            Err(e) => debug!("keepalive to {}: {e}", hub.name),
                        }
                    }
                }
                if sent > 0 {
                    *self.counters.entry("sent".into()).or_default() += sent;
                }
            }
            Probe::Hub(h) if now >= self.next_expiry_check => {
                self.next_expiry_check = now + EXPIRY_CHECK;
                let gone = h.expire(now);
                if !gone.is_empty() {
                    for name in gone {
                        let after = h
                            .peers()
                            .get(&name)
                            .map_or(Duration::ZERO, |p| p.expire_after);
                        info!(peer = %name, "no keepalive for {after:?}: expired");
                        self.expired.insert(name, after);
                    }
                    if let Err(e) = self.reconcile("expiry").await {
                        error!("reconcile after expiry: {e:#}");
                    }
                    self.save();
                }
            }
            Probe::Hub(_) => {}
        }
    }

    async fn reload(&mut self, why: &'static str) {
        let topo = match config::load(&self.opts.config) {
            Ok(t) => t,
            Err(errors) => {
                for e in &errors.0 {
                    error!("{e}");
                }
                error!(
                    "reload ({why}): the new file is invalid; the running state stays as it was"
                );
                self.count("reloads_failed");
                return;
            }
        };
        if topo == self.topo {
            debug!("reload ({why}): no change");
            return;
        }
        let built = topo
            .node(&self.opts.node)
            .map_err(anyhow::Error::from)
            .and_then(|_| {
                let key = load_key(&topo, &self.opts)?;
                Ok(key)
            });
        let key = match built {
            Ok(k) => k,
            Err(e) => {
                error!("reload ({why}): {e:#}; the running state stays as it was");
                self.count("reloads_failed");
                return;
            }
        };
        let old = std::mem::replace(
            &mut self.probe,
            Probe::Spoke(SpokeProbe::new(
                "",
                false,
                Duration::from_secs(1),
                Vec::new(),
            )),
        );
        match build_probe(&topo, &self.opts.node, key.as_ref(), Some(old)) {
            Ok(p) => self.probe = p,
            Err(e) => {
                error!("reload ({why}): {e:#}");
                self.count("reloads_failed");
                // Rebuild from the old topology; nothing learned is lost
                // for peers still declared.
                if let Ok(p) = build_probe(&self.topo, &self.opts.node, self.key.as_ref(), None) {
                    self.probe = p;
                }
                return;
            }
        }
        let me = |t: &Topology| t.node(&self.opts.node).map(|n| (n.role, n.address)).ok();
        // A new device, datapath, address or role (a hub's overlay socket
        // drops what it receives, a spoke's reads answers): open the
        // probe's sockets again.
        let device_changed = topo.network.device != self.topo.network.device
            || topo.network.datapath != self.topo.network.datapath
            || topo.network.port != self.topo.network.port
            || topo.network.vni != self.topo.network.vni
            || me(&topo) != me(&self.topo);
        self.topo = topo;
        self.key = key;
        self.expired.retain(|n, _| self.topo.nodes.contains_key(n));
        self.count("reloads_ok");
        info!("reload ({why}): applying the new topology");
        metrics::sd_notify("RELOADING=1");
        self.metrics.config_hash = metrics::file_hash(&self.opts.config);
        if device_changed {
            self.overlay = None;
            self.underlay = None;
        }
        if let Err(e) = self.reconcile("reload").await {
            error!("reconcile after reload: {e:#}");
        }
        metrics::sd_notify("READY=1");
        self.open_sockets();
    }

    fn status(&self) -> Status {
        let now = Instant::now();
        let secs = |t: Instant| Some(now.saturating_duration_since(t).as_secs_f64());
        let mut peers = Vec::new();
        let (role, reflexive) = match &self.probe {
            Probe::Hub(h) => {
                for (name, p) in h.peers() {
                    let Some(node) = self.topo.nodes.get(name) else {
                        continue;
                    };
                    let live = h.live().get(name);
                    let conflict = self.conflicts.iter().find(|c| &c.refused == name);
                    let (endpoint, source, state) = match (p.static_endpoint, live) {
                        (Some(e), _) => (Some(e), "static", "up"),
                        (None, Some(l)) if conflict.is_some() => {
                            (Some(l.endpoint), "learned", "refused")
                        }
                        (None, Some(l)) if l.up => (Some(l.endpoint), "learned", "up"),
                        (None, Some(l)) => (Some(l.endpoint), "learned", "expired"),
                        (None, None) => (None, "none", "waiting"),
                    };
                    peers.push(PeerStatus {
                        name: name.clone(),
                        address: node.address,
                        endpoint,
                        source: source.into(),
                        state: state.into(),
                        last_seen_secs: live.and_then(|l| secs(l.last_seen)),
                        note: conflict.map(ToString::to_string),
                    });
                }
                ("hub", None)
            }
            Probe::Spoke(s) => {
                let expire = self.topo.network.expire_after;
                for (name, h) in s.hubs() {
                    let Some(node) = self.topo.nodes.get(name) else {
                        continue;
                    };
                    let state = match h.last_answer {
                        None => "waiting",
                        Some(t) if now.saturating_duration_since(t) > expire => "expired",
                        Some(_) => "up",
                    };
                    peers.push(PeerStatus {
                        name: name.clone(),
                        address: node.address,
                        endpoint: node.endpoint,
                        source: "static".into(),
                        state: state.into(),
                        last_seen_secs: h.last_answer.and_then(secs),
                        note: None,
                    });
                }
                ("spoke", s.reflexive())
            }
        };
        Status {
            node: self.opts.node.clone(),
            network: self.topo.network.name.clone(),
            role: role.into(),
            reflexive,
            peers,
            counters: self.counters.clone(),
        }
    }

    async fn serve_status(&self, mut stream: tokio::net::UnixStream) {
        use tokio::io::AsyncWriteExt;
        let body = serde_json::to_vec(&self.status()).unwrap_or_default();
        let write = async {
            stream.write_all(&body).await?;
            stream.shutdown().await
        };
        if let Err(e) = tokio::time::timeout(Duration::from_secs(1), write)
            .await
            .unwrap_or(Ok(()))
        {
            debug!("status client: {e}");
        }
    }

    fn saved(&self) -> Saved {
        let mut s = Saved {
            network: self.topo.network.name.clone(),
            node: self.opts.node.clone(),
            ..Saved::default()
        };
        match &self.probe {
            Probe::Hub(h) => {
                let now = Instant::now();
                let wall = wall_secs();
                for (name, l) in h.live() {
                    if l.up
                        && h.peers()
                            .get(name)
                            .is_some_and(|p| p.static_endpoint.is_none())
                    {
                        let age = now.saturating_duration_since(l.last_seen).as_secs();
                        s.learned.insert(
                            name.clone(),
                            SavedPeer {
                                endpoint: l.endpoint,
                                counter: l.counter,
                                last_seen_unix: wall.saturating_sub(age),
                                up: l.up,
                            },
                        );
                    }
                }
            }
            Probe::Spoke(sp) => s.counter = sp.counter(),
        }
        s
    }

    fn save(&mut self) {
        match state::save(&self.opts.state_dir, &self.saved()) {
            Ok(()) => self.dirty = false,
            Err(e) => error!("saving state in {}: {e}", self.opts.state_dir.display()),
        }
    }

    /// Restore what a previous run learned, as heard now: a restart neither
    /// expires nor re-learns anyone.
    fn restore(&mut self, now: Instant) -> Result<()> {
        let saved = state::load(&self.opts.state_dir, &self.topo.network.name)
            .map_err(|e| anyhow::anyhow!("reading saved state: {e}"))?;
        if saved.node != self.opts.node && !saved.node.is_empty() {
            warn!("saved state belongs to node {}; ignoring it", saved.node);
            return Ok(());
        }
        match &mut self.probe {
            Probe::Hub(h) => {
                for (name, p) in &saved.learned {
                    h.restore(name, p.endpoint, p.counter, p.up, now);
                }
                if !saved.learned.is_empty() {
                    info!("restored {} learned endpoints", saved.learned.len());
                }
            }
            Probe::Spoke(s) => s.restore_counter(saved.counter),
        }
        Ok(())
    }
}

/// Learned endpoints saved by a daemon, for `lvn plan` beside it.
pub fn saved_liveness(state_dir: &std::path::Path, topo: &Topology, node: &str) -> Liveness {
    let mut l = Liveness::default();
    if let Ok(s) = state::load(state_dir, &topo.network.name)
        && s.node == node
    {
        l.learned = s
            .learned
            .into_iter()
            .filter(|(n, _)| topo.nodes.contains_key(n))
            .filter(|(_, p)| p.up)
            .map(|(n, p)| (n, p.endpoint))
            .collect();
    }
    l
}

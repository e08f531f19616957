//! The runner: the only part of the daemon that reads the clock, owns
//! sockets, servers and the datapath, and does what the controller says.
//! Nothing it does waits inside the loop: a reconcile, a state save and a
//! topology load each run beside it and come back as events; status and
//! metrics clients are served by tasks of their own.

use std::{future::Future, pin::Pin, sync::Arc, time::Instant};

use anyhow::{Result, anyhow};
use tokio::{sync::mpsc, task::JoinHandle};
use tracing::{debug, error, info, warn};

use super::{
    Options,
    backoff::{Backoff, Report},
    controller::{Controller, Effect, Event, Loaded, Now},
    journal::{OnDisk, Save, Store},
    kernel_watch::KernelWatch,
    metrics,
    reconciler::{self, Memo, Outcome},
    serve::Servers,
    sockets::{self, Overlay, Spec},
    status::socket_path,
    watch,
};
use crate::{
    datapath::{Datapath, Scope},
    probe::io::UnderlaySocket,
    reconcile::{State, drift},
};

/// Keepalives read per wake-up at most, before other events get a turn.
const SIGHTINGS_PER_WAKEUP: usize = 256;

pub fn clock() -> Now {
    let wall_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    Now {
        at: Instant::now(),
        wall_ns,
    }
}

/// What one turn of the loop produced.
enum Next {
    Effects(Vec<Effect>),
    Event(Event),
    Nothing,
}

type Reconciling<D> = Pin<Box<dyn Future<Output = (D, Memo, Outcome)>>>;

/// The probe's sockets and what they were opened for.
struct Sockets {
    spec: Option<Spec>,
    overlay: Option<Overlay>,
    underlay: Option<UnderlaySocket>,
    failing: Backoff,
}

/// Run until SIGTERM or SIGINT. Kernel state is left in place on exit, so a
/// restart does not interrupt traffic.
pub async fn run<D: Datapath + 'static>(
    opts: Options,
    dp: D,
    mut kernel: Option<KernelWatch>,
) -> Result<()> {
    let (start, saved, on_disk) = super::load_start(&opts)?;
    let network = start.run.topo.network.name.clone();
    let mut ctl = Controller::start(&opts.node, start, &saved, opts.resync, clock())
        .map_err(|e| anyhow!("{e}"))?;
    // The state files' writer, with its own copy of what they hold: it
    // goes to a blocking thread with each save and comes back with it.
    let mut store = Some(Store::new(opts.state_dir.clone(), saved, on_disk));
    let mut servers = Servers::bind(socket_path(&opts.run_dir, &network), opts.metrics).await?;
    let (reload_tx, mut reload_rx) = mpsc::channel::<&'static str>(8);
    let _watcher = watch::watch(&opts.config, reload_tx)?;
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;

    let mut dp = Some(dp);
    // What the last reconcile leaves for the next; travels with `dp`.
    let mut memo = Memo::default();
    let mut reconciling: Option<Reconciling<D>> = None;
    let mut saving: Option<JoinHandle<(Store, Result<(), String>)>> = None;
    let mut loading: Option<JoinHandle<Loaded>> = None;
    let mut load_again: Option<&'static str> = None;
    let mut socks = Sockets {
        spec: None,
        overlay: None,
        underlay: None,
        failing: Backoff::default(),
    };
    info!(node = %opts.node, network = %network, "running");

    let mut effects = ctl.on(Event::Tick, clock());
    // Sockets are looked at after a reconcile or a reload (a device may be
    // new), and when a failed one is due again.
    let mut check_sockets = true;
    let mut watch_gone = false;
    let sig = loop {
        let mut bounced = None;
        for e in effects.drain(..) {
            match e {
                Effect::Reconcile(req) => match dp.take() {
                    Some(mut d) => {
                        debug!("reconcile ({})", req.why);
                        if let Some(k) = &kernel {
                            let scope = Scope::of(&req.topo.network);
                            k.busy(&scope.network, &scope.device);
                        }
                        let mut m = std::mem::take(&mut memo);
                        reconciling = Some(Box::pin(async move {
                            let started = Instant::now();
                            let mut o = reconciler::execute(&mut d, &mut m, &req).await;
                            o.seconds = started.elapsed().as_secs_f64();
                            (d, m, o)
                        }));
                    }
                    // Cannot happen (the controller runs one at a time), but
                    // if it did, the controller hears a failure and
                    // schedules a retry rather than waiting forever.
                    None => {
                        error!("a reconcile was asked for while one runs; retrying later");
                        bounced = Some(Event::Reconciled(Outcome {
                            result: Err(reconciler::ReconcileError::Config(
                                "a reconcile was asked for while one ran".into(),
                            )),
                            conflicts: Vec::new(),
                            waiting: Vec::new(),
                            mtu: None,
                            desired: None,
                            seconds: 0.0,
                            narrowed: false,
                        }));
                    }
                },
                Effect::Send { to, payload } => match &socks.overlay {
                    Some(o) => {
                        if let Err(e) = o.send(to, &payload) {
                            debug!("keepalive to {to}: {e}");
                        }
                    }
                    None => debug!("no overlay socket yet: nothing sent to {to}"),
                },
                Effect::Save(s) => match store.take() {
                    Some(mut st) => {
                        let dir = opts.state_dir.clone();
                        saving = Some(tokio::task::spawn_blocking(move || {
                            let r =
                                write(&mut st, s).map_err(|e| format!("{}: {e}", dir.display()));
                            (st, r)
                        }));
                    }
                    // Cannot happen (the controller saves one at a time);
                    // if it did, it hears a failure and saves everything.
                    None => {
                        error!("a state save was asked for while one runs; retrying later");
                        bounced = Some(Event::Saved(Err(
                            "a save was asked for while one ran".into()
                        )));
                    }
                },
                Effect::Notify(s) => metrics::sd_notify(&s),
            }
        }
        if let Some(ev) = bounced {
            effects = ctl.on(ev, clock());
            continue;
        }
        let retry_due = socks.failing.retry_at.is_some_and(|r| Instant::now() >= r);
        if let Some(d) = &dp
            && (check_sockets || retry_due)
        {
            refresh_sockets(&mut socks, &ctl, &opts.node, d);
            check_sockets = false;
        }
        if load_again.is_some() && loading.is_none() {
            loading = Some(spawn_load(
                &opts,
                load_again.take().unwrap_or("file changed"),
            ));
        }

        let now = Instant::now();
        let mut wake = ctl.next_wakeup(now);
        if let Some(r) = socks.failing.retry_at {
            wake = wake.min(r);
        }
        let is_spoke = socks.spec.as_ref().is_some_and(|s| !s.hub);
        let event = tokio::select! {
            r = sockets::recv_underlay(&socks.underlay) => match r {
                Ok(s) => {
                    let mut effects = ctl.on(
                        Event::Keepalive { payload: s.payload, from: s.from, inner: s.inner },
                        clock(),
                    );
                    // Take what else queued up, without another trip
                    // through the loop.
                    for _ in 0..SIGHTINGS_PER_WAKEUP {
                        let Some(more) = socks.underlay.as_ref().and_then(UnderlaySocket::try_recv)
                        else {
                            break;
                        };
                        effects.extend(ctl.on(
                            Event::Keepalive { payload: more.payload, from: more.from, inner: more.inner },
                            clock(),
                        ));
                    }
                    Next::Effects(effects)
                }
                Err(e) => {
                    socket_failed(&mut socks, format!("underlay keepalive socket: {e}"));
                    Next::Event(Event::KernelChanged)
                }
            },
            r = sockets::recv_overlay(&socks.overlay, is_spoke) => match r {
                Ok(payload) => Next::Event(Event::Answer(payload)),
                Err(e) => {
                    // Its device went (ENETDOWN): look at the kernel now.
                    socket_failed(&mut socks, format!("overlay keepalive socket: {e}"));
                    Next::Event(Event::KernelChanged)
                }
            },
            _ = tokio::time::sleep_until(wake.into()) => Next::Event(Event::Tick),
            Some(why) = reload_rx.recv() => {
                load_again = Some(why);
                Next::Nothing
            }
            _ = hup.recv() => {
                load_again = Some("SIGHUP");
                Next::Nothing
            }
            r = async { loading.as_mut().expect("guarded").await }, if loading.is_some() => {
                loading = None;
                match r {
                    Ok(l) => Next::Event(Event::Config(l)),
                    Err(e) => {
                        error!("loading the topology: {e}");
                        Next::Nothing
                    }
                }
            }
            (d, m, mut o) = async { reconciling.as_mut().expect("guarded").await }, if reconciling.is_some() => {
                reconciling = None;
                // The watch takes the desired state; the controller does
                // not need it.
                let desired = o.desired.take();
                if let Some(k) = &kernel {
                    k.done(desired, |s| drift_watch(s, &d));
                }
                dp = Some(d);
                memo = m;
                Next::Event(Event::Reconciled(o))
            }
            r = async { saving.as_mut().expect("guarded").await }, if saving.is_some() => {
                saving = None;
                let r = match r {
                    Ok((st, r)) => {
                        store = Some(st);
                        r
                    }
                    // The writer's copy is gone with its thread: a fresh
                    // one, and the controller saves everything next.
                    Err(e) => {
                        let fresh = OnDisk { compact: true, ..OnDisk::default() };
                        store = Some(Store::new(opts.state_dir.clone(), Default::default(), fresh));
                        Err(format!("the state writer failed: {e}"))
                    }
                };
                Next::Event(Event::Saved(r))
            }
            c = servers.accept() => {
                match c {
                    Ok(c) => {
                        let at = Instant::now();
                        let ctl = &ctl;
                        if !servers.serve(c, |metrics| if metrics {
                            ctl.metrics_text(at)
                        } else {
                            serde_json::to_string(&ctl.status(at)).unwrap_or_default()
                        }) {
                            debug!("{} clients already: connection closed", super::serve::MAX_CLIENTS);
                        }
                    }
                    Err(e) => warn!("accepting a status or metrics client: {e}"),
                }
                Next::Nothing
            }
            r = async { kernel.as_mut().expect("guarded").drift.recv().await }, if kernel.is_some() => {
                match r {
                    Some(d) => Next::Event(Event::Drift(d)),
                    None => {
                        warn!("the kernel notification watch stopped; drift is noticed by the resync");
                        watch_gone = true;
                        Next::Nothing
                    }
                }
            }
            _ = term.recv() => break "SIGTERM",
            _ = int.recv() => break "SIGINT",
        };
        if watch_gone {
            kernel = None;
            watch_gone = false;
        }
        match event {
            Next::Effects(more) => effects = more,
            Next::Event(ev) => {
                let renamed = matches!(ev, Event::Config(_));
                check_sockets |= renamed || matches!(ev, Event::Reconciled(_));
                effects = ctl.on(ev, clock());
                if renamed {
                    let path = socket_path(&opts.run_dir, &ctl.topology().network.name);
                    if let Err(e) = servers.rebind_status(path) {
                        error!("{e:#}");
                    }
                }
            }
            Next::Nothing => {}
        }
    };
    info!("{sig}: saving state and exiting; the kernel state stays");
    metrics::sd_notify("STOPPING=1");
    if let Some(s) = saving.take()
        && let Ok((st, _)) = s.await
    {
        store = Some(st);
    }
    // Everything into one snapshot: the journal starts empty again.
    let mut st = store.unwrap_or_else(|| {
        Store::new(
            opts.state_dir.clone(),
            Default::default(),
            OnDisk::default(),
        )
    });
    if let Err(e) = write(&mut st, ctl.save_all(clock())) {
        error!("saving state in {}: {e}", opts.state_dir.display());
    }
    servers.remove();
    Ok(())
}

/// One save, on the writer's thread; a panic is a failed save.
fn write(store: &mut Store, s: Save) -> std::io::Result<()> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| store.write(s)))
        .unwrap_or_else(|_| Err(std::io::Error::other("the state writer panicked")))
}

/// What drift is judged by after a reconcile: its desired state, and the
/// index of each device in it.
fn drift_watch<D: Datapath>(desired: Arc<State>, dp: &D) -> drift::Watch {
    let names = desired
        .link
        .iter()
        .map(|l| l.name.clone())
        .chain(desired.tunnels.keys().cloned());
    let devices = names
        .filter_map(|n| dp.ifindex(&n).map(|i| (i, n)))
        .collect();
    drift::Watch { desired, devices }
}

fn spawn_load(opts: &Options, why: &'static str) -> JoinHandle<Loaded> {
    let opts = opts.clone();
    tokio::task::spawn_blocking(move || super::load(&opts, why))
}

/// A socket failed: drop it and open it again after a back-off.
fn socket_failed(socks: &mut Sockets, error: String) {
    if socks.failing.failed(Instant::now(), error.clone()) == Report::New {
        warn!("{error}; opening it again");
    }
    socks.overlay = None;
    socks.underlay = None;
}

/// Open the probe's sockets the topology wants, again if what they depend
/// on changed or the device was re-created, at most once per back-off.
fn refresh_sockets<D: Datapath>(socks: &mut Sockets, ctl: &Controller, node: &str, dp: &D) {
    let spec = Spec::of(ctl.topology(), node);
    if spec != socks.spec {
        socks.overlay = None;
        socks.underlay = None;
        socks.spec = spec;
        socks.failing = Backoff::default();
    }
    let Some(spec) = &socks.spec else {
        return;
    };
    let ifindex = dp.ifindex(&spec.device);
    if socks
        .overlay
        .as_ref()
        .is_some_and(|o| o.ifindex().is_some() && o.ifindex() != ifindex)
    {
        // A re-created device has a new index.
        socks.overlay = None;
    }
    let missing = socks.overlay.is_none() || (spec.hub && socks.underlay.is_none());
    if !missing || socks.failing.retry_at.is_some_and(|r| Instant::now() < r) {
        return;
    }
    let mut errors = Vec::new();
    if socks.overlay.is_none() {
        match Overlay::open(spec, ifindex) {
            Ok(o) => socks.overlay = o,
            Err(e) => errors.push(format!("opening the overlay keepalive socket: {e}")),
        }
    }
    if spec.hub && socks.underlay.is_none() {
        match sockets::open_underlay(spec) {
            Ok(u) => socks.underlay = Some(u),
            Err(e) => errors.push(format!("opening the underlay keepalive socket: {e}")),
        }
    }
    if errors.is_empty() {
        if socks.failing.succeeded() > 0 {
            info!("keepalive sockets open again");
        }
    } else {
        let error = errors.join("; ");
        if socks.failing.failed(Instant::now(), error.clone()) == Report::New {
            error!("{error}; retrying with back-off");
        }
    }
}

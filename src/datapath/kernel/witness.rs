//! The kernel's own account of what an apply did to neighbour and FDB
//! entries, so the check after `lvn apply` need not dump them again.
//!
//! A socket joins the neighbour notification group (RTNLGRP_NEIGH, which
//! carries FDB entries too) before the first write, and a thread of its
//! own reads it while the apply writes. The kernel queues a change's
//! notification before it acknowledges the write, so once the apply's last
//! acknowledgement is in, the socket holds every change made to these
//! entries since the observation before the apply, by lvn or by anyone
//! else meanwhile. The observation after the apply takes the entries seen
//! before and replays these changes on them, instead of dumping 100k
//! entries again: a VXLAN FDB dump walks the device's entries from the
//! start for every 32 KiB it returns, about a second of kernel work at
//! 100k. A socket that overflowed, or a thread that failed, has lost
//! changes: the observation then dumps, as before.

use std::{
    collections::{BTreeMap, BTreeSet},
    io,
    net::{IpAddr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use rtnetlink::{
    packet_route::AddressFamily,
    sys::{Socket, SocketAddr as NlAddr, protocols::NETLINK_ROUTE},
};

use super::{
    super::batch::raw_messages,
    monitor::{force_rx_buffer, is_overflow, set_option},
    observe::{NeighEntry, RTM_DELNEIGH, RTM_NEWNEIGH, neigh_header},
};
use crate::{
    naming::Mac,
    reconcile::{Fdb, Flood, Neigh, Observed},
};

/// rtnetlink's neighbour group: neighbours of every family and bridge FDB
/// entries.
const RTNLGRP_NEIGH: u32 = 3;
/// Room for the notifications of a burst the reader has not caught up with
/// (each is a small message in a buffer of about 1 KiB of kernel memory):
/// tens of thousands. The reader keeps up as they come; past this, the
/// check dumps instead, so a small router never queues more.
const RX_BUFFER: libc::c_int = 64 << 20;
/// How long one read waits before the reader looks whether the apply is
/// over.
const POLL: Duration = Duration::from_millis(20);
/// Once the apply is over, the reader drains what is queued; a table that
/// keeps changing faster than it reads for this long counts as lost.
const DRAIN_LIMIT: Duration = Duration::from_secs(5);
/// One read: the kernel sends a notification per datagram.
const DATAGRAM: usize = 64 << 10;

/// One change the kernel reported.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Heard {
    pub ifindex: u32,
    /// An FDB entry (family AF_BRIDGE), else a neighbour.
    pub fdb: bool,
    /// RTM_DELNEIGH.
    pub gone: bool,
    pub entry: NeighEntry,
}

/// A reader of neighbour and FDB notifications, started before an apply.
/// Dropped unfinished, its reader stops on its own.
pub(super) struct Witness {
    stop: Arc<AtomicBool>,
    reader: Option<JoinHandle<Option<Vec<Heard>>>>,
    /// lvn's device as observed before the apply (its index), if it was
    /// there: the entries seen then are on it.
    pub before: Option<u32>,
}

/// What the observation after an apply starts from instead of dumping
/// entries: the observation before it, and the changes since.
pub(super) struct Prior {
    pub before: Observed,
    /// lvn's device's index when `before` was observed.
    pub index: Option<u32>,
    pub heard: Vec<Heard>,
}

impl Drop for Witness {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

impl Witness {
    /// Subscribe, then read on a thread of its own until [`Witness::finish`].
    pub fn start(before: Option<u32>) -> io::Result<Witness> {
        let mut s = Socket::new(NETLINK_ROUTE)?;
        s.bind(&NlAddr::new(0, 0))?;
        s.add_membership(RTNLGRP_NEIGH)?;
        force_rx_buffer(&s, RX_BUFFER);
        set_read_timeout(&s, POLL)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let reader = std::thread::Builder::new()
            .name("lvn-witness".into())
            .spawn(move || read(&s, &flag))?;
        Ok(Witness {
            stop,
            reader: Some(reader),
            before,
        })
    }

    /// Every change since [`Witness::start`], in order; `None` if some
    /// were lost. Call once the apply's writes are all acknowledged.
    /// Blocks until the reader has drained the socket.
    pub fn finish(mut self) -> Option<Vec<Heard>> {
        self.stop.store(true, Ordering::SeqCst);
        self.reader.take()?.join().ok().flatten()
    }
}

/// The reader's loop: everything until `stop`, then what is queued.
fn read(s: &Socket, stop: &AtomicBool) -> Option<Vec<Heard>> {
    let mut heard = Vec::new();
    let mut buf: Vec<u8> = Vec::with_capacity(DATAGRAM);
    let mut lost = false;
    let mut draining: Option<Instant> = None;
    loop {
        if draining.is_none() && stop.load(Ordering::SeqCst) {
            draining = Some(Instant::now());
        }
        let flags = if draining.is_some() {
            libc::MSG_DONTWAIT
        } else {
            0
        };
        buf.clear();
        match s.recv(&mut buf, flags) {
            Ok(n) => heard.extend(changes(&buf[..n.min(buf.len())])),
            Err(e) if is_overflow(&e) => lost = true,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if draining.is_some() {
                    break; // drained: everything queued before the stop
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
        if draining.is_some_and(|t| t.elapsed() > DRAIN_LIMIT) {
            return None;
        }
    }
    (!lost).then_some(heard)
}

/// The neighbour and FDB changes in one datagram.
fn changes(bytes: &[u8]) -> impl Iterator<Item = Heard> + '_ {
    raw_messages(bytes).filter_map(|m| {
        let kind = u16::from_ne_bytes([m[4], m[5]]);
        if kind != RTM_NEWNEIGH && kind != RTM_DELNEIGH {
            return None;
        }
        let (header, entry) = neigh_header(&m[16..])?;
        Some(Heard {
            ifindex: header.ifindex,
            fdb: header.family == AddressFamily::Bridge,
            gone: kind == RTM_DELNEIGH,
            entry,
        })
    })
}

/// A read that gives up after `t`, for the reader to look at its flag.
fn set_read_timeout(s: &Socket, t: Duration) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: t.as_secs() as libc::time_t,
        tv_usec: t.subsec_micros() as libc::suseconds_t,
    };
    set_option(s, libc::SO_RCVTIMEO, &tv)
}

/// The neighbour and FDB entries of lvn's device `dev` (index `index`
/// now, its port `port`), as the dumps would find them: those of the
/// observation before, if the device is the one observed then, with what
/// was heard since replayed on them.
pub(super) fn replay(dev: &str, port: u16, index: u32, prior: Prior, obs: &mut Observed) {
    let Prior {
        mut before,
        index: was,
        heard,
    } = prior;
    if was == Some(index) {
        obs.state.fdb = std::mem::take(&mut before.state.fdb);
        obs.state.flood = std::mem::take(&mut before.state.flood);
        obs.state.neighbours = std::mem::take(&mut before.state.neighbours);
        obs.kernel_neighbours = std::mem::take(&mut before.kernel_neighbours);
    }
    // One name for every entry on the device, not a copy each.
    let dev: Arc<str> = Arc::from(dev);
    for h in heard.into_iter().filter(|h| h.ifindex == index) {
        if h.fdb {
            fdb_change(&dev, port, h, &mut obs.state.fdb, &mut obs.state.flood);
        } else {
            neigh_change(
                &dev,
                h,
                &mut obs.state.neighbours,
                &mut obs.kernel_neighbours,
            );
        }
    }
}

/// One FDB change, as `observe::fdb_entries` reads a dumped entry: a
/// unicast entry by MAC, a flooding entry (all-zero MAC) by destination.
fn fdb_change(
    dev: &Arc<str>,
    port: u16,
    h: Heard,
    fdb: &mut BTreeMap<Mac, Fdb>,
    flood: &mut BTreeMap<SocketAddr, Flood>,
) {
    let (Some(mac), Some(dst)) = (h.entry.mac, h.entry.dst) else {
        return; // a bridge's own entry on the port: no destination
    };
    let port = h.entry.port.unwrap_or(port);
    if mac == Mac([0; 6]) {
        let key = SocketAddr::new(dst, port);
        if h.gone {
            flood.remove(&key);
        } else {
            let dev = Arc::clone(dev);
            flood.insert(key, Flood { dev, dst, port });
        }
    } else if h.gone {
        // One destination of the MAC went; another it has stays.
        if fdb
            .get(&mac)
            .is_some_and(|f| f.dst == dst && f.port == port)
        {
            fdb.remove(&mac);
        }
    } else {
        let dev = Arc::clone(dev);
        fdb.insert(
            mac,
            Fdb {
                dev,
                mac,
                dst,
                port,
            },
        );
    }
}

/// One neighbour change, as `observe_entries` reads a dumped one: a
/// permanent entry with a MAC is lvn's kind, anything else the kernel's.
/// The kernel makes some entries of its own kind without a notification
/// (an IPv6 multicast neighbour when the device comes up), so the set of
/// those may lack some; nothing plans from it.
fn neigh_change(
    dev: &Arc<str>,
    h: Heard,
    neighbours: &mut BTreeMap<IpAddr, Neigh>,
    kernel: &mut BTreeSet<IpAddr>,
) {
    let Some(address) = h.entry.dst else { return };
    neighbours.remove(&address);
    kernel.remove(&address);
    if h.gone {
        return;
    }
    match h.entry.mac {
        Some(mac) if h.entry.permanent => {
            let dev = Arc::clone(dev);
            neighbours.insert(address, Neigh { dev, address, mac });
        }
        _ => {
            kernel.insert(address);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn heard(fdb: bool, gone: bool, mac: [u8; 6], dst: &str, port: Option<u16>) -> Heard {
        Heard {
            ifindex: 7,
            fdb,
            gone,
            entry: NeighEntry {
                mac: Some(Mac(mac)),
                dst: Some(dst.parse().expect("address")),
                port,
                permanent: true,
            },
        }
    }

    const M1: [u8; 6] = [2, 0x4c, 100, 64, 0, 2];
    const M2: [u8; 6] = [2, 0x4c, 100, 64, 0, 3];

    #[test]
    fn changes_replay_on_the_entries_seen_before() {
        let mut before = Observed::default();
        let f = |mac, dst: &str, port| Fdb {
            dev: "lvn-x".into(),
            mac: Mac(mac),
            dst: dst.parse().expect("address"),
            port,
        };
        before.state.fdb.insert(Mac(M1), f(M1, "192.0.2.1", 4789));
        before.state.fdb.insert(Mac(M2), f(M2, "192.0.2.2", 4789));
        let heard = vec![
            // M1 moves; M2 loses a destination it does not have here.
            heard(true, false, M1, "192.0.2.9", Some(5000)),
            heard(true, true, M2, "192.0.2.8", None),
            // A flooding entry comes and goes, another stays.
            heard(true, false, [0; 6], "198.51.100.1", None),
            heard(true, false, [0; 6], "198.51.100.2", None),
            heard(true, true, [0; 6], "198.51.100.1", None),
            // A neighbour is added, another made by the kernel, then gone.
            heard(false, false, M1, "100.64.0.2", None),
            Heard {
                entry: NeighEntry {
                    permanent: false,
                    ..heard(false, false, M2, "100.64.0.3", None).entry
                },
                ..heard(false, false, M2, "100.64.0.3", None)
            },
            heard(false, false, M2, "100.64.0.4", None),
            heard(false, true, M2, "100.64.0.4", None),
            // Another device's entry is not lvn's.
            Heard {
                ifindex: 8,
                ..heard(true, false, M2, "203.0.113.1", None)
            },
        ];
        let mut obs = Observed::default();
        let prior = Prior {
            before,
            index: Some(7),
            heard,
        };
        replay("lvn-x", 4789, 7, prior, &mut obs);
        assert_eq!(
            obs.state.fdb.values().cloned().collect::<Vec<_>>(),
            vec![f(M1, "192.0.2.9", 5000), f(M2, "192.0.2.2", 4789)]
        );
        let flood: Vec<_> = obs.state.flood.keys().map(|k| k.to_string()).collect();
        assert_eq!(flood, ["198.51.100.2:4789"]);
        let neigh: Vec<_> = obs.state.neighbours.keys().map(|k| k.to_string()).collect();
        assert_eq!(neigh, ["100.64.0.2"]);
        let kernel: Vec<_> = obs
            .kernel_neighbours
            .iter()
            .map(|k| k.to_string())
            .collect();
        assert_eq!(kernel, ["100.64.0.3"]);
    }

    #[test]
    fn a_new_device_starts_from_nothing() {
        let mut before = Observed::default();
        before.state.fdb.insert(
            Mac(M1),
            Fdb {
                dev: "lvn-x".into(),
                mac: Mac(M1),
                dst: "192.0.2.1".parse().expect("address"),
                port: 4789,
            },
        );
        let mut obs = Observed::default();
        let heard = vec![heard(true, false, M2, "192.0.2.2", None)];
        let prior = Prior {
            before,
            index: Some(6),
            heard,
        };
        replay("lvn-x", 4789, 7, prior, &mut obs);
        assert_eq!(obs.state.fdb.keys().copied().collect::<Vec<_>>(), [Mac(M2)]);
    }

    /// A hub's topology with spokes `(i, port)`: spoke i at 100.64.1.i,
    /// endpoint 192.0.2.i:port.
    fn topology(spokes: impl Iterator<Item = (u32, u16)>) -> crate::config::Topology {
        let mut t = String::from(
            "[network]\nname = \"wit\"\noverlay = \"100.64.0.0/16\"\nport = 4789\nvni = 42\n\n\
             [nodes.hub]\nrole = \"hub\"\naddress = \"100.64.0.1\"\nendpoint = \"198.51.100.1\"\n",
        );
        for (i, port) in spokes {
            t += &format!(
                "\n[nodes.s{i}]\naddress = \"100.64.1.{i}\"\nendpoint = \"192.0.2.{i}:{port}\"\n"
            );
        }
        crate::config::parse(std::path::Path::new("wit.toml"), &t).expect("topology")
    }

    /// `a` and `b` are equal; if not, the entries that differ.
    fn same(a: &Observed, b: &Observed, what: &str) {
        fn differ<K: Ord + std::fmt::Debug, V: PartialEq + std::fmt::Debug>(
            a: &BTreeMap<K, V>,
            b: &BTreeMap<K, V>,
        ) -> Vec<String> {
            let one = a.iter().filter(|(k, v)| b.get(k) != Some(v));
            let two = b.iter().filter(|(k, _)| !a.contains_key(k));
            one.map(|e| format!("heard {e:?}"))
                .chain(two.map(|e| format!("dumped {e:?}")))
                .collect()
        }
        let mut d = differ(&a.state.fdb, &b.state.fdb);
        d.extend(differ(&a.state.flood, &b.state.flood));
        d.extend(differ(&a.state.neighbours, &b.state.neighbours));
        assert!(d.is_empty(), "{what}: {d:#?}");
        // The kernel makes some neighbours of its own without a word
        // (ff02::16 when the device comes up): the two sets differ there.
        let (mut a, mut b) = (a.clone(), b.clone());
        a.kernel_neighbours.clear();
        b.kernel_neighbours.clear();
        assert!(a == b, "{what}: something else differs");
    }

    /// Observe and plan for the hub of `topo`.
    async fn prepare(
        dp: &mut crate::datapath::kernel::Kernel,
        topo: crate::config::Topology,
    ) -> (
        crate::datapath::Scope,
        Observed,
        crate::reconcile::Desired,
        crate::reconcile::Plan,
    ) {
        use crate::datapath::Datapath;
        use crate::reconcile::{Liveness, desired, plan};
        let scope = crate::datapath::Scope::of(&topo.network);
        let before = dp.observe(&scope).await.expect("observe");
        let me = topo.node("hub").expect("hub");
        let d = desired(&topo, me, &before.underlay, &Liveness::default());
        let p = plan(&d, &before).expect("plan");
        (scope, before, d, p)
    }

    /// Against the running kernel, in a network namespace of this thread's
    /// own (root only): what the observation after an apply finds from
    /// the notifications equals what a full observation dumps, with the
    /// apply adding, moving and removing entries and changes made by hand
    /// meanwhile (an FDB entry of lvn's deleted, a flooding entry and a
    /// neighbour of the kernel's kind added, a neighbour of lvn's
    /// replaced). And the plan after it shows the hand-made changes.
    #[test]
    fn what_was_heard_is_what_a_dump_finds() {
        use crate::datapath::{Datapath, kernel::Kernel};
        use crate::reconcile::plan;
        crate::datapath::in_own_netns(|| async {
            // SAFETY: gettid has no preconditions.
            let tid = unsafe { libc::gettid() };
            let here = format!("--net=/proc/{}/task/{tid}/ns/net", std::process::id());
            let by_hand = |args: &[&str]| {
                let out = std::process::Command::new("nsenter")
                    .arg(&here)
                    .args(args)
                    .output()
                    .expect("nsenter");
                assert!(out.status.success(), "{args:?}: {out:?}");
            };
            let mut dp = Kernel::connect().expect("netlink");
            // From empty: the device is new, nothing seen before.
            let (scope, before, _, p) =
                prepare(&mut dp, topology((1..201).map(|i| (i, 4789)))).await;
            dp.witness(&scope);
            dp.apply(&scope, &p).await.expect("apply");
            let after = dp.observe_after(&scope, before).await.expect("after");
            let full = dp.observe(&scope).await.expect("observe");
            same(&after, &full, "from empty");
            assert_eq!(full.state.fdb.len(), 200);

            // Spokes 1-50 go, 101-150 move to port 5000, 201-250 come.
            let topo =
                topology((51..251).map(|i| (i, if (101..151).contains(&i) { 5000 } else { 4789 })));
            let (scope, before, d, p) = prepare(&mut dp, topo).await;
            dp.witness(&scope);
            dp.apply(&scope, &p).await.expect("apply");
            let dev = scope.device.clone();
            // By hand, after lvn's writes and before the observation.
            by_hand(&[
                "bridge",
                "fdb",
                "del",
                "02:4c:64:40:01:3c",
                "dev",
                &dev,
                "dst",
                "192.0.2.60",
            ]);
            by_hand(&[
                "bridge",
                "fdb",
                "append",
                "00:00:00:00:00:00",
                "dev",
                &dev,
                "dst",
                "203.0.113.7",
            ]);
            by_hand(&[
                "ip",
                "neigh",
                "add",
                "100.64.9.9",
                "dev",
                &dev,
                "lladdr",
                "02:00:00:00:09:09",
                "nud",
                "stale",
            ]);
            by_hand(&[
                "ip",
                "neigh",
                "replace",
                "100.64.1.70",
                "dev",
                &dev,
                "lladdr",
                "02:00:00:00:00:70",
                "nud",
                "permanent",
            ]);
            let after = dp.observe_after(&scope, before).await.expect("after");
            let full = dp.observe(&scope).await.expect("observe");
            same(&after, &full, "after changes");
            let rest: Vec<String> = plan(&d, &after)
                .expect("plan")
                .steps
                .iter()
                .map(|s| s.to_string())
                .collect();
            assert_eq!(rest.len(), 3, "{rest:#?}");
        });
    }
}

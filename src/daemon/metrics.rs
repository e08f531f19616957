//! `lvn run --metrics ADDR`: the Prometheus text exposition (format
//! 0.0.4) of the daemon's own counters, systemd readiness notification and
//! the file hash. The HTTP side is in `serve.rs`.

use std::fmt::Write as _;

use super::{controller::Tally, status::Status};

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The exposition text.
pub fn render(m: &Tally, status: &Status) -> String {
    let mut o = String::new();
    let c = |k: &str| status.counters.get(k).copied().unwrap_or(0);
    let node = format!(
        "node=\"{}\",network=\"{}\"",
        label(&status.node),
        label(&status.network)
    );

    family(&mut o, "lvn_peers", "gauge", "Peers by state.");
    for state in ["up", "waiting", "expired", "refused", "down"] {
        let n = status.peers.iter().filter(|p| p.state == state).count();
        let _ = writeln!(o, "lvn_peers{{{node},state=\"{state}\"}} {n}");
    }
    for (name, key, help) in [
        (
            "lvn_keepalives_sent_total",
            "sent",
            "Keepalives (spoke) or answers (hub) sent.",
        ),
        (
            "lvn_keepalives_received_total",
            "received",
            "Keepalives or answers received.",
        ),
        (
            "lvn_keepalives_accepted_total",
            "accepted",
            "Keepalives or answers accepted.",
        ),
        (
            "lvn_endpoint_changes_total",
            "endpoint_changes",
            "Learned endpoints that appeared or moved.",
        ),
    ] {
        family(&mut o, name, "counter", help);
        let _ = writeln!(o, "{name}{{{node}}} {}", c(key));
    }
    family(
        &mut o,
        "lvn_keepalives_rejected_total",
        "counter",
        "Keepalives or answers dropped, by reason.",
    );
    for (k, v) in &status.counters {
        if let Some(reason) = k.strip_prefix("rejected_") {
            let _ = writeln!(
                o,
                "lvn_keepalives_rejected_total{{{node},reason=\"{}\"}} {v}",
                label(reason)
            );
        }
    }
    family(
        &mut o,
        "lvn_reconcile_runs_total",
        "counter",
        "Reconcile runs, by result.",
    );
    let _ = writeln!(
        o,
        "lvn_reconcile_runs_total{{{node},result=\"ok\"}} {}",
        m.reconcile_ok
    );
    let _ = writeln!(
        o,
        "lvn_reconcile_runs_total{{{node},result=\"error\"}} {}",
        m.reconcile_failed
    );
    family(
        &mut o,
        "lvn_reconcile_narrowed_total",
        "counter",
        "Successful reconciles that planned only the peers that changed (learned, expired or edited), without reading the kernel's state.",
    );
    let _ = writeln!(
        o,
        "lvn_reconcile_narrowed_total{{{node}}} {}",
        m.reconcile_narrowed
    );
    family(
        &mut o,
        "lvn_reconcile_duration_seconds",
        "summary",
        "Time spent observing, planning and applying.",
    );
    let _ = writeln!(
        o,
        "lvn_reconcile_duration_seconds_sum{{{node}}} {}",
        m.reconcile_seconds_sum
    );
    let _ = writeln!(
        o,
        "lvn_reconcile_duration_seconds_count{{{node}}} {}",
        m.reconcile_ok + m.reconcile_failed
    );
    family(
        &mut o,
        "lvn_changes_applied_total",
        "counter",
        "Kernel changes applied, by kind and action.",
    );
    for ((kind, action), v) in &m.changes {
        let _ = writeln!(
            o,
            "lvn_changes_applied_total{{{node},kind=\"{kind}\",action=\"{action}\"}} {v}"
        );
    }
    family(
        &mut o,
        "lvn_config_reloads_total",
        "counter",
        "Config reloads, by result.",
    );
    let _ = writeln!(
        o,
        "lvn_config_reloads_total{{{node},result=\"ok\"}} {}",
        c("reloads_ok")
    );
    let _ = writeln!(
        o,
        "lvn_config_reloads_total{{{node},result=\"failed\"}} {}",
        c("reloads_failed")
    );
    family(
        &mut o,
        "lvn_drift_detected_total",
        "counter",
        "Changes to lvn's kernel objects by hand, as the kernel reported them (each repaired).",
    );
    let _ = writeln!(o, "lvn_drift_detected_total{{{node}}} {}", m.drift);
    family(
        &mut o,
        "lvn_config_rollbacks_total",
        "counter",
        "Changed topology files a spoke went back from: no hub answered within confirm_after.",
    );
    let _ = writeln!(o, "lvn_config_rollbacks_total{{{node}}} {}", m.rollbacks);
    family(
        &mut o,
        "lvn_config_info",
        "gauge",
        "The loaded topology file, by SHA-256.",
    );
    let _ = writeln!(
        o,
        "lvn_config_info{{{node},sha256=\"{}\"}} 1",
        status.config.sha256
    );
    if let Some(primary) = &status.primary {
        hubs_of_a_spoke(&mut o, &node, status, primary.as_deref());
    }
    family(
        &mut o,
        "lvn_config_refused",
        "gauge",
        "1 while the topology file on disk is refused (the daemon runs on the last good one).",
    );
    let _ = writeln!(
        o,
        "lvn_config_refused{{{node}}} {}",
        u8::from(status.config.refused.is_some())
    );
    family(
        &mut o,
        "lvn_reconcile_consecutive_failures",
        "gauge",
        "Reconciles failed in a row (0 while the kernel matches); the error is in `lvn status`.",
    );
    let _ = writeln!(
        o,
        "lvn_reconcile_consecutive_failures{{{node}}} {}",
        status.reconcile.failures
    );
    o
}

/// A spoke's view of its hubs: up, primary, round-trip time, failovers.
fn hubs_of_a_spoke(o: &mut String, node: &str, status: &Status, primary: Option<&str>) {
    family(
        o,
        "lvn_hub_up",
        "gauge",
        "Spokes: 1 while the hub answers keepalives.",
    );
    for p in &status.peers {
        let up = u8::from(p.state == "up");
        let _ = writeln!(o, "lvn_hub_up{{{node},hub=\"{}\"}} {up}", label(&p.name));
    }
    family(
        o,
        "lvn_hub_primary",
        "gauge",
        "Spokes: 1 for the hub the overlay route goes through.",
    );
    for p in &status.peers {
        let is = u8::from(primary == Some(p.name.as_str()));
        let _ = writeln!(
            o,
            "lvn_hub_primary{{{node},hub=\"{}\"}} {is}",
            label(&p.name)
        );
    }
    family(
        o,
        "lvn_hub_rtt_seconds",
        "gauge",
        "Spokes: round-trip time of the last answered keepalive.",
    );
    for p in &status.peers {
        if let Some(ms) = p.rtt_ms {
            let _ = writeln!(
                o,
                "lvn_hub_rtt_seconds{{{node},hub=\"{}\"}} {}",
                label(&p.name),
                ms / 1000.0
            );
        }
    }
    family(
        o,
        "lvn_failovers_total",
        "counter",
        "Spokes: overlay route moved away from a silent primary hub.",
    );
    let n = status.counters.get("failovers").copied().unwrap_or(0);
    let _ = writeln!(o, "lvn_failovers_total{{{node}}} {n}");
    family(
        o,
        "lvn_hub_path_mtu_ok",
        "gauge",
        "Spokes: 1 if the path to the hub carries the device MTU, 0 if full-size probes are lost while keepalives are answered; absent while unknown.",
    );
    for p in &status.peers {
        if let Some(Some(ok)) = p.path_mtu_ok {
            let _ = writeln!(
                o,
                "lvn_hub_path_mtu_ok{{{node},hub=\"{}\"}} {}",
                label(&p.name),
                u8::from(ok)
            );
        }
    }
}

/// Tell systemd (Type=notify) about the daemon's state, if it listens.
pub fn sd_notify(state: &str) {
    use std::os::{linux::net::SocketAddrExt, unix::net::UnixDatagram};
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let path = path.to_string_lossy().into_owned();
    let addr = match path.strip_prefix('@') {
        Some(name) => std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()),
        None => std::os::unix::net::SocketAddr::from_pathname(&path),
    };
    if let (Ok(sock), Ok(addr)) = (UnixDatagram::unbound(), addr) {
        let _ = sock.send_to_addr(state.as_bytes(), &addr);
    }
}

/// SHA-256 of a file's bytes, hex.
/// SHA-256 of topology text, hex.
pub fn text_hash(text: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

//! Semantic checks: everything TOML and serde cannot say. All errors of a file
//! are collected, so an operator fixes them in one pass.

use std::{
    collections::{BTreeMap, HashMap},
    net::{IpAddr, SocketAddr},
    ops::Range,
    path::PathBuf,
    time::Duration,
};

use ipnet::IpNet;
use toml::Spanned;

use crate::naming::Family;

use super::{
    ConfigError, ConfigErrors, Layer, Layer2, Source, layer2,
    overlay::{
        address_span, check_families, check_node_addresses, check_overlays, family_name, items,
    },
    parse_endpoint, parse_public_key,
    raw::{RawNetwork, RawNode, RawTopology},
};

/// Longest network name: "lvn-" plus it must fit IFNAMSIZ (15 characters).
pub const MAX_NETWORK_NAME: usize = 11;
const MAX_DEVICE_NAME: usize = 15;
const MAX_NODE_NAME: usize = 63;
/// Default interval of spokes' keepalives: inside common NAT UDP timeouts (30 s).
pub const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(25);
/// Default time after which a hub forgets a learned endpoint.
pub const DEFAULT_EXPIRE_AFTER: Duration = Duration::from_secs(120);
/// Default `failover_after`, in keepalive intervals: three answers missed in
/// a row. One or two lost packets never move a route, and with
/// `keepalive = "1s"` traffic moves within about four seconds.
pub const FAILOVER_KEEPALIVES: u32 = 3;
/// Default `failback_after`, in keepalive intervals: a hub back from
/// maintenance gets ten answers' worth of steadiness (about four minutes at
/// the default keepalive) before its spokes return, so a flapping hub does
/// not pull them back and forth.
pub const FAILBACK_KEEPALIVES: u32 = 10;
/// Default `confirm_after`, in keepalive intervals: a changed file must
/// bring an answer from a hub within four keepalives (three may be lost)
/// or a spoke goes back to the file before it.
pub const CONFIRM_KEEPALIVES: u32 = 4;
const MIN_DURATION: Duration = Duration::from_millis(100);
const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

/// Whole seconds (integer) or "<n>ms", "<n>s", "<n>m", "<n>h".
pub fn parse_duration(v: &toml::Value) -> Option<Duration> {
    match v {
        toml::Value::Integer(n) => u64::try_from(*n).ok().map(Duration::from_secs),
        toml::Value::String(s) => {
            let digits = s.bytes().take_while(u8::is_ascii_digit).count();
            let (num, unit) = s.split_at(digits);
            let n: u64 = num.parse().ok()?;
            match unit {
                "ms" => Some(Duration::from_millis(n)),
                "s" => Some(Duration::from_secs(n)),
                "m" => n.checked_mul(60).map(Duration::from_secs),
                "h" => n.checked_mul(3600).map(Duration::from_secs),
                _ => None,
            }
        }
        _ => None,
    }
}

/// A hub's share of the spokes placed by hashing, unless it says otherwise.
pub const DEFAULT_WEIGHT: u32 = 1;
const MAX_WEIGHT: u32 = 1000;

/// Port assumed for node checks when `network.port` itself is invalid.
const DEFAULT_PORT: u16 = 4789;
/// The source port range is [port, port + 1), so the port must leave room.
const MAX_PORT: i64 = 65534;
const MAX_VNI: i64 = (1 << 24) - 1;

/// A checked topology.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    pub file: PathBuf,
    pub network: Network,
    pub nodes: BTreeMap<String, Node>,
    /// Where `[nodes]` starts, to point at when `--node` names no node.
    nodes_at: (usize, usize),
    /// The hubs and the first endpoints, found once (`placement.rs`).
    pub(super) index: super::placement::Index,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    pub name: String,
    pub device: String,
    /// The primary overlay prefix: the IPv4 one where there is one.
    pub overlay: IpNet,
    /// Every overlay prefix, at most one per family, IPv4 first.
    pub overlays: Vec<IpNet>,
    pub port: u16,
    pub datapath: Datapath,
    /// The underlay family: the hubs' endpoints' (all endpoints share it).
    pub underlay: Family,
    /// The VXLAN network identifier; 0 with datapath fou, which has none
    /// (a vni written in the file is ignored there).
    pub vni: u32,
    pub mtu: Option<u32>,
    /// Default keepalive interval of spokes.
    pub keepalive: Duration,
    /// Default time after which a hub forgets a learned endpoint.
    pub expire_after: Duration,
    /// A spoke's primary hub is down after this long without an answer.
    pub failover_after: Duration,
    /// A preferred hub answering this long (plus a per-spoke delay) is
    /// primary again.
    pub failback_after: Duration,
    /// A spoke that hears no hub this long after a reload rolls it back.
    pub confirm_after: Duration,
    pub auth: Auth,
    /// Layer, attach and udp_checksum (`layer2.rs`).
    pub l2: Layer2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Auth {
    /// Any keepalive that names a declared node is accepted.
    None,
    /// Keepalives carry a MAC from the pair key of sender and receiver.
    Keys,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Datapath {
    /// Kernel VXLAN: one device, FDB entries per peer (50 bytes overhead).
    Vxlan,
    /// Kernel fou: a tunnel per peer, ipip on an IPv4 underlay (28 bytes
    /// overhead, IPv4 inside), ip6tnl with GUE on an IPv6 one (52 bytes,
    /// both families inside).
    Fou,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Hub,
    Spoke,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub name: String,
    pub role: Role,
    /// The primary overlay address: the IPv4 one where there is one. It
    /// names the node inside the tunnel (its MAC is derived from it, fou
    /// keepalives come from it).
    pub address: IpAddr,
    /// Every overlay address of the node, one per overlay family, IPv4 first.
    pub addresses: Vec<IpAddr>,
    pub endpoint: Option<SocketAddr>,
    pub keepalive: Option<Duration>,
    pub expire_after: Option<Duration>,
    pub public_key: Option<crate::probe::PublicKey>,
    /// Spokes: the hubs declared with `hubs`, first choice first.
    pub hubs: Vec<String>,
    /// Hubs: the share of spokes placed on this hub (default 1).
    pub weight: u32,
    /// Layer 2: the node's own `attach`, overriding the network's.
    pub attach: Option<String>,
}

impl Network {
    /// The overlay prefix of `ip`'s family, if the network has one.
    pub fn overlay_for(&self, ip: IpAddr) -> Option<IpNet> {
        self.overlays
            .iter()
            .copied()
            .find(|o| o.addr().is_ipv4() == ip.is_ipv4())
    }
}

impl Topology {
    /// The node this machine acts as, or an error listing the declared ones.
    pub fn node(&self, name: &str) -> Result<&Node, ConfigError> {
        self.nodes.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.nodes.keys().map(String::as_str).collect();
            ConfigError {
                file: self.file.clone(),
                line: self.nodes_at.0,
                col: self.nodes_at.1,
                message: format!(
                    "node '{name}' is not declared (declared: {}); pick one with --node or LVN_NODE",
                    known.join(", ")
                ),
            }
        })
    }

    /// The keepalive interval of a node.
    pub fn keepalive_of(&self, node: &Node) -> Duration {
        node.keepalive.unwrap_or(self.network.keepalive)
    }

    /// How long hubs keep a node's learned endpoint without a keepalive.
    pub fn expire_after_of(&self, node: &Node) -> Duration {
        node.expire_after.unwrap_or(self.network.expire_after)
    }

    /// The interface a node's device is a port of (layer 2), if any.
    pub fn attach_of<'a>(&'a self, node: &'a Node) -> Option<&'a str> {
        node.attach.as_deref().or(self.network.l2.attach.as_deref())
    }
}

pub(super) struct Checker<'a> {
    source: &'a Source<'a>,
    errors: Vec<ConfigError>,
}

impl Checker<'_> {
    pub(super) fn err(&mut self, span: Range<usize>, message: impl Into<String>) {
        self.errors.push(self.source.error(span, message));
    }

    /// A duration key: whole seconds or "<n>ms|s|m|h", within [min, max].
    fn duration(&mut self, value: &Option<Spanned<toml::Value>>, key: &str) -> Option<Duration> {
        let v = value.as_ref()?;
        match parse_duration(v.get_ref()) {
            Some(d) if (MIN_DURATION..=MAX_DURATION).contains(&d) => Some(d),
            Some(d) => {
                self.err(
                    v.span(),
                    format!("{key} {d:?} is out of range, expected 100ms to 24h"),
                );
                None
            }
            None => {
                self.err(
                    v.span(),
                    format!(
                        "{key} must be whole seconds or a duration like \"25s\", \"500ms\", \"2m\""
                    ),
                );
                None
            }
        }
    }
}

pub(super) fn validate(source: &Source<'_>, raw: RawTopology) -> Result<Topology, ConfigErrors> {
    let mut c = Checker {
        source,
        errors: Vec::new(),
    };
    let (network, overlays, port) = check_network(&mut c, &raw.network);
    let raw_nodes = match &raw.nodes {
        Some(n) if !n.get_ref().0.is_empty() => n,
        other => {
            let at = other
                .as_ref()
                .map_or_else(|| raw.network.span(), Spanned::span);
            c.err(
                at,
                "no nodes are declared: add at least a hub, e.g. [nodes.hub1] with role, address and endpoint",
            );
            c.errors.sort_by_key(|e| (e.line, e.col));
            return Err(ConfigErrors(c.errors));
        }
    };
    let nodes_at = {
        let e = source.error(raw_nodes.span(), "");
        (e.line, e.col)
    };
    let layer = network.as_ref().map(|n| n.l2.layer).unwrap_or_default();
    // The raw nodes come in name order, so the checked ones do too, and
    // the map is built in one pass instead of one search per node.
    let nodes: BTreeMap<String, Node> = raw_nodes
        .get_ref()
        .0
        .iter()
        .filter_map(|(name, node)| {
            let n = check_node(
                &mut c,
                name,
                node.get_ref(),
                overlays.as_deref(),
                port,
                layer,
            )?;
            Some((n.name.clone(), n))
        })
        .collect();
    let declared = declared(&raw_nodes.get_ref().0, &nodes);
    check_fleet(
        &mut c,
        raw_nodes.span(),
        &declared,
        network.as_ref().map(|n| n.auth),
        &nodes,
    );
    let mut network = network;
    if let Some(net) = network.as_mut()
        && let Some(ep) = nodes
            .values()
            .filter(|n| n.role == Role::Hub)
            .find_map(|n| n.endpoint)
    {
        net.underlay = Family::of(ep.ip());
    }
    if let Some(net) = network.as_ref().filter(|n| n.datapath == Datapath::Fou) {
        check_fou(&mut c, &declared, net);
        check_fou_families(&mut c, raw.network.get_ref(), net, &nodes);
    }
    c.errors.sort_by_key(|e| (e.line, e.col));
    match network {
        Some(network) if c.errors.is_empty() => Ok(Topology {
            file: source.path.clone(),
            network,
            nodes,
            nodes_at,
            index: Default::default(),
        }),
        _ => Err(ConfigErrors(c.errors)),
    }
}

/// The checked network, plus the parts node checks can use even when
/// another part of `[network]` is wrong (so one pass reports everything).
fn check_network(
    c: &mut Checker,
    network: &Spanned<RawNetwork>,
) -> (Option<Network>, Option<Vec<IpNet>>, u16) {
    let (n, at) = (network.get_ref(), network.span());
    let name = n.name.get_ref();
    let name_ok = !name.is_empty()
        && name.len() <= MAX_NETWORK_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !name_ok {
        c.err(
            n.name.span(),
            format!(
                "network name '{name}' is invalid: expected 1-{MAX_NETWORK_NAME} characters of [a-z0-9-] (the device is 'lvn-<name>', at most 15 characters)"
            ),
        );
    }
    let device = match &n.device {
        Some(d) => {
            let s = d.get_ref();
            let ok = !s.is_empty()
                && s.len() <= MAX_DEVICE_NAME
                && s != "."
                && s != ".."
                && !s
                    .chars()
                    .any(|ch| ch == '/' || ch == ':' || ch.is_whitespace());
            if !ok {
                c.err(
                    d.span(),
                    format!("device name '{s}' is invalid: expected 1-{MAX_DEVICE_NAME} characters without '/', ':' or whitespace"),
                );
            }
            s.clone()
        }
        None => format!("lvn-{name}"),
    };
    let overlays = check_overlays(c, &n.overlay);
    let port = *n.port.get_ref();
    if !(1..=MAX_PORT).contains(&port) {
        c.err(
            n.port.span(),
            format!("port {port} is out of range, expected 1-{MAX_PORT} (the source port is pinned with the range port..port+1, and port+1 must fit in 16 bits)"),
        );
    }
    let datapath = match n.datapath.as_ref().map(|d| d.get_ref().as_str()) {
        None | Some("vxlan") => Some(Datapath::Vxlan),
        Some("fou") => Some(Datapath::Fou),
        Some(d @ "userspace") => {
            c.err(
                n.datapath.as_ref().map_or(0..0, Spanned::span),
                format!("datapath '{d}' is not supported yet, expected \"vxlan\" or \"fou\""),
            );
            None
        }
        Some(d) => {
            c.err(
                n.datapath.as_ref().map_or(0..0, Spanned::span),
                format!("unknown datapath '{d}', expected \"vxlan\" or \"fou\""),
            );
            None
        }
    };
    let vni = check_vni(c, n, at, datapath);
    let min_mtu = match &overlays {
        Some(o) if o.iter().any(|o| o.addr().is_ipv6()) => 1280,
        _ => 68,
    };
    let mtu = n.mtu.as_ref().and_then(|m| {
        let v = *m.get_ref();
        if (min_mtu..=65535).contains(&v) {
            Some(v as u32)
        } else {
            c.err(
                m.span(),
                format!("mtu {v} is out of range, expected {min_mtu}-65535"),
            );
            None
        }
    });
    let keepalive = c
        .duration(&n.keepalive, "keepalive")
        .unwrap_or(DEFAULT_KEEPALIVE);
    let expire_after = c
        .duration(&n.expire_after, "expire_after")
        .unwrap_or(DEFAULT_EXPIRE_AFTER);
    if expire_after <= keepalive {
        let at = n
            .expire_after
            .as_ref()
            .or(n.keepalive.as_ref())
            .map_or(0..0, Spanned::span);
        c.err(
            at,
            format!("expire_after ({expire_after:?}) must be longer than keepalive ({keepalive:?}); three keepalives or more is usual"),
        );
    }
    let failover_after = c
        .duration(&n.failover_after, "failover_after")
        .unwrap_or(keepalive * FAILOVER_KEEPALIVES);
    if failover_after <= keepalive {
        c.err(
            n.failover_after.as_ref().map_or(0..0, Spanned::span),
            format!("failover_after ({failover_after:?}) must be longer than keepalive ({keepalive:?}): a hub is down only after answers are missed"),
        );
    }
    let failback_after = c
        .duration(&n.failback_after, "failback_after")
        .unwrap_or(keepalive * FAILBACK_KEEPALIVES);
    let confirm_after = c
        .duration(&n.confirm_after, "confirm_after")
        .unwrap_or(keepalive * CONFIRM_KEEPALIVES);
    if confirm_after <= keepalive {
        c.err(
            n.confirm_after.as_ref().map_or(0..0, Spanned::span),
            format!("confirm_after ({confirm_after:?}) must be longer than keepalive ({keepalive:?}): a changed file is kept once a hub answers, and needs time to"),
        );
    }
    let auth = match n.auth.as_ref().map(|a| a.get_ref().as_str()) {
        None | Some("none") => Auth::None,
        Some("keys") => Auth::Keys,
        Some(other) => {
            c.err(
                n.auth.as_ref().map_or(0..0, Spanned::span),
                format!("unknown auth '{other}', expected \"none\" or \"keys\""),
            );
            Auth::None
        }
    };
    let mut l2_errors = Vec::new();
    let l2 = layer2::check_network(n, datapath, &mut l2_errors);
    for (span, message) in l2_errors {
        c.err(span, message);
    }
    let port = u16::try_from(port).ok().filter(|p| *p != 0);
    let network = (|| {
        Some(Network {
            name: name.clone(),
            device,
            overlay: *overlays.as_ref()?.first()?,
            overlays: overlays.clone()?,
            port: port?,
            datapath: datapath?,
            // Known once the nodes are checked.
            underlay: Family::Ipv4,
            vni: vni?,
            mtu,
            keepalive,
            expire_after,
            failover_after,
            failback_after,
            confirm_after,
            auth,
            l2,
        })
    })()
    .filter(|_| name_ok);
    (network, overlays, port.unwrap_or(DEFAULT_PORT))
}

/// The VXLAN network identifier: required with "vxlan", range-checked but
/// ignored (0) with "fou". Accepting a vni with fou keeps files written when
/// it was required for every datapath valid, and switching datapath back and
/// forth a one-line edit; fou itself has no identifier to put it in.
fn check_vni(
    c: &mut Checker,
    n: &RawNetwork,
    network_at: Range<usize>,
    datapath: Option<Datapath>,
) -> Option<u32> {
    let vni = match &n.vni {
        Some(v) => {
            let vni = *v.get_ref();
            let ok = u32::try_from(vni).ok().filter(|v| i64::from(*v) <= MAX_VNI);
            if ok.is_none() {
                c.err(
                    v.span(),
                    format!("vni {vni} is out of range, expected 0-{MAX_VNI}"),
                );
            }
            ok
        }
        None if datapath == Some(Datapath::Vxlan) => {
            c.err(
                network_at,
                format!("network has no vni: datapath \"vxlan\" needs one, e.g. vni = 4242 (0-{MAX_VNI}); only datapath \"fou\" does without"),
            );
            None
        }
        None => Some(0),
    };
    match datapath? {
        Datapath::Vxlan => vni,
        Datapath::Fou => vni.map(|_| 0),
    }
}

fn check_node(
    c: &mut Checker,
    name: &Spanned<String>,
    n: &RawNode,
    overlays: Option<&[IpNet]>,
    port: u16,
    layer: Layer,
) -> Option<Node> {
    let s = name.get_ref();
    if s.is_empty()
        || s.len() > MAX_NODE_NAME
        || !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        c.err(
            name.span(),
            format!("node name '{s}' is invalid: expected 1-{MAX_NODE_NAME} characters of [A-Za-z0-9._-]"),
        );
    }
    let role = match n.role.as_ref().map(|r| r.get_ref().as_str()) {
        None | Some("spoke") => Role::Spoke,
        Some("hub") => Role::Hub,
        Some(other) => {
            c.err(
                n.role.as_ref().map_or(0..0, Spanned::span),
                format!("unknown role '{other}', expected \"hub\" or \"spoke\""),
            );
            Role::Spoke
        }
    };
    let addresses = check_node_addresses(c, s, &n.address, overlays);
    let endpoint = n.endpoint.as_ref().and_then(|e| {
        parse_endpoint(e.get_ref(), port)
            .map_err(|m| c.err(e.span(), m))
            .ok()
    });
    if role == Role::Hub && n.endpoint.is_none() {
        c.err(
            name.span(),
            format!("hub '{s}' has no endpoint: a hub needs a public endpoint that spokes can reach, e.g. endpoint = \"198.51.100.1\""),
        );
    }
    let keepalive = c.duration(&n.keepalive, "keepalive");
    let expire_after = c.duration(&n.expire_after, "expire_after");
    let public_key = n.public_key.as_ref().and_then(|k| {
        parse_public_key(k.get_ref())
            .map_err(|e| c.err(k.span(), format!("public_key of node '{s}' {e}")))
            .ok()
    });
    let weight = match &n.weight {
        None => DEFAULT_WEIGHT,
        Some(w) if role != Role::Hub => {
            c.err(
                w.span(),
                format!("weight is for hubs only, and '{s}' is a spoke: weight sets a hub's share of the spokes"),
            );
            DEFAULT_WEIGHT
        }
        Some(w) => match u32::try_from(*w.get_ref()) {
            Ok(v) if (1..=MAX_WEIGHT).contains(&v) => v,
            _ => {
                c.err(
                    w.span(),
                    format!(
                        "weight {} of hub '{s}' is out of range, expected 1 to {MAX_WEIGHT}",
                        w.get_ref()
                    ),
                );
                DEFAULT_WEIGHT
            }
        },
    };
    let hubs = match &n.hubs {
        Some(h) if role == Role::Hub => {
            c.err(
                h.span(),
                format!(
                    "hubs is for spokes only, and '{s}' is a hub: it lists the hubs a spoke prefers"
                ),
            );
            Vec::new()
        }
        Some(h) => h.get_ref().iter().map(|n| n.get_ref().clone()).collect(),
        None => Vec::new(),
    };
    let mut l2_errors = Vec::new();
    let attach = layer2::check_node(n, layer, &mut l2_errors);
    for (span, message) in l2_errors {
        c.err(span, message);
    }
    Some(Node {
        name: s.clone(),
        role,
        address: *addresses.as_ref()?.first()?,
        addresses: addresses?,
        endpoint,
        keepalive,
        expire_after,
        public_key,
        hubs,
        weight,
        attach,
    })
}

/// A node as declared: its name and table as written, and the checked
/// node where its own checks passed.
pub(super) struct Declared<'a> {
    pub name: &'a Spanned<String>,
    pub raw: &'a RawNode,
    pub node: Option<&'a Node>,
}

/// Every declared node in name order, each with its checked node: one
/// walk over both maps (both are in name order) instead of a search per
/// node in each check.
fn declared<'a>(
    raw: &'a [(Spanned<String>, Spanned<RawNode>)],
    nodes: &'a BTreeMap<String, Node>,
) -> Vec<Declared<'a>> {
    let mut checked = nodes.values().peekable();
    raw.iter()
        .map(|(name, rn)| Declared {
            name,
            raw: rn.get_ref(),
            node: checked.next_if(|n| &n.name == name.get_ref()),
        })
        .collect()
}

/// Checks across nodes: duplicates, hubs, one underlay family.
fn check_fleet(
    c: &mut Checker,
    nodes_at: Range<usize>,
    declared: &[Declared],
    auth: Option<Auth>,
    nodes: &BTreeMap<String, Node>,
) {
    let mut seen_addr: HashMap<IpAddr, &str> = HashMap::with_capacity(declared.len());
    let mut seen_ep: HashMap<SocketAddr, &str> = HashMap::with_capacity(declared.len());
    let mut seen_mac: HashMap<crate::reconcile::Mac, &Node> =
        HashMap::with_capacity(declared.len());
    let hub_family = nodes
        .values()
        .filter(|n| n.role == Role::Hub)
        .find_map(|n| n.endpoint.map(|e| (n.name.as_str(), e.is_ipv4())));
    // File order, so a duplicate is blamed on the later declaration.
    let mut in_file_order: Vec<(&Declared, &Node)> =
        declared.iter().filter_map(|d| Some((d, d.node?))).collect();
    in_file_order.sort_by_key(|(d, _)| d.name.span().start);
    for (d, node) in in_file_order {
        let (name, rn) = (d.name, d.raw);
        for &a in &node.addresses {
            if let Some(other) = seen_addr.insert(a, name.get_ref()) {
                c.err(
                    address_span(&rn.address, a),
                    format!(
                        "address {a} of node '{}' is already used by node '{other}'",
                        node.name
                    ),
                );
            }
        }
        let mac = crate::reconcile::Mac::for_overlay(node.address);
        if let Some(other) = seen_mac.insert(mac, node)
            && other.address != node.address
        {
            c.err(
                address_span(&rn.address, node.address),
                format!("address {} of node '{}' maps to MAC {mac} like node '{}'s; pick addresses that differ in their last 32 bits", node.address, node.name, other.name),
            );
        }
        if let (Some(ep), Some(at)) = (node.endpoint, rn.endpoint.as_ref()) {
            if let Some(other) = seen_ep.insert(ep, name.get_ref()) {
                c.err(
                    at.span(),
                    format!(
                        "endpoint {ep} of node '{}' is already used by node '{other}'",
                        node.name
                    ),
                );
            }
            if let Some((hub, v4)) = hub_family
                && ep.is_ipv4() != v4
            {
                c.err(
                    at.span(),
                    format!(
                        "endpoint {ep} of node '{}' is {} but hub '{hub}' is {}: all endpoints of a network share one underlay family (declare a second network for the other one)",
                        node.name,
                        family_name(ep.is_ipv4()),
                        family_name(v4)
                    ),
                );
            }
        }
    }
    if let Some((hub, false)) = hub_family {
        for d in declared {
            // A hub without endpoint is reported on its own already.
            let is_hub = d.node.is_some_and(|n| n.role == Role::Hub);
            if d.raw.endpoint.is_none() && !is_hub {
                c.err(
                    d.name.span(),
                    format!("node '{}' has no endpoint, but hub '{hub}' is on IPv6: on an IPv6 underlay every node declares its own address as endpoint (the device sends from it)", d.name.get_ref()),
                );
            }
        }
    }
    if auth == Some(Auth::Keys) {
        for d in declared {
            if d.raw.public_key.is_none() {
                c.err(
                    d.name.span(),
                    format!("node '{}' has no public_key, but auth = \"keys\": every node needs one (make a key pair with `lvn genkey /etc/lvn/private.key`)", d.name.get_ref()),
                );
            }
        }
    }
    check_hub_lists(c, declared, nodes);
    check_families(c, declared);
    if !nodes.is_empty() && !nodes.values().any(|n| n.role == Role::Hub) {
        c.err(
            nodes_at,
            "no hub is declared: a network needs at least one node with role = \"hub\"",
        );
    }
}

/// A spoke's `hubs` names hubs of the file, each once, and at least one.
fn check_hub_lists(c: &mut Checker, declared: &[Declared], nodes: &BTreeMap<String, Node>) {
    let hubs: Vec<&str> = nodes
        .values()
        .filter(|n| n.role == Role::Hub)
        .map(|n| n.name.as_str())
        .collect();
    for d in declared {
        let Some(list) = &d.raw.hubs else {
            continue;
        };
        let name = d.name;
        if d.node.is_some_and(|n| n.role == Role::Hub) {
            continue; // reported by the node's own check
        }
        if list.get_ref().is_empty() {
            c.err(
                list.span(),
                format!("hubs of node '{}' is empty: name at least one hub, or leave hubs out to let placement choose", name.get_ref()),
            );
        }
        let mut seen = Vec::new();
        for h in list.get_ref() {
            let hub = h.get_ref().as_str();
            if !hubs.contains(&hub) {
                c.err(
                    h.span(),
                    format!(
                        "hubs of node '{}' names '{hub}', which is not a hub of this file (hubs: {})",
                        name.get_ref(),
                        hubs.join(", ")
                    ),
                );
            } else if seen.contains(&hub) {
                c.err(
                    h.span(),
                    format!("hubs of node '{}' names '{hub}' twice", name.get_ref()),
                );
            }
            seen.push(hub);
        }
    }
}

/// On an IPv4 underlay datapath "fou" is ipip, which carries IPv4 only;
/// on an IPv6 underlay it is ip6tnl, which carries both families.
fn check_fou_families(
    c: &mut Checker,
    raw: &RawNetwork,
    net: &Network,
    nodes: &BTreeMap<String, Node>,
) {
    let ipv4_underlay = nodes
        .values()
        .filter(|n| n.role == Role::Hub)
        .find_map(|n| n.endpoint)
        .is_some_and(|e| e.is_ipv4());
    if let Some(v6) = net.overlays.iter().find(|o| o.addr().is_ipv6())
        && ipv4_underlay
    {
        let span = items(&raw.overlay)
            .into_iter()
            .find(|(text, _)| text.parse::<IpNet>().ok() == Some(*v6))
            .map_or_else(|| raw.overlay.span(), |(_, span)| span);
        c.err(
            span,
            format!("overlay {v6} is IPv6, but datapath \"fou\" on an IPv4 underlay is ipip, which carries IPv4 only; use datapath = \"vxlan\", or an IPv6 underlay (ip6tnl carries both)"),
        );
    }
}

/// Datapath "fou" finds a tunnel by outer addresses only (ipip and
/// ip6tnl alike), so two declared endpoints may not share an address.
fn check_fou(c: &mut Checker, declared: &[Declared], net: &Network) {
    let mut in_file_order: Vec<(&Declared, &Node)> =
        declared.iter().filter_map(|d| Some((d, d.node?))).collect();
    in_file_order.sort_by_key(|(d, _)| d.name.span().start);
    let mut by_ip: HashMap<IpAddr, &str> = HashMap::with_capacity(declared.len());
    let mut names: HashMap<String, &str> = HashMap::with_capacity(declared.len());
    for (d, node) in in_file_order {
        let name = d.name;
        let tunnel = crate::reconcile::tunnel_name(&net.name, &node.name);
        if let Some(other) = names.insert(tunnel.clone(), name.get_ref()) {
            c.err(
                name.span(),
                format!(
                    "nodes '{other}' and '{}' would both get tunnel device {tunnel}; rename one",
                    node.name
                ),
            );
        }
        let (Some(ep), Some(at)) = (node.endpoint, d.raw.endpoint.as_ref()) else {
            continue;
        };
        if let Some(other) = by_ip.insert(ep.ip(), name.get_ref()) {
            c.err(
                at.span(),
                format!("endpoint {ep} of node '{}' shares its address with node '{other}': ipip (datapath \"fou\") tells tunnels apart by outer addresses only; use datapath = \"vxlan\" to carry both", node.name),
            );
        }
    }
}

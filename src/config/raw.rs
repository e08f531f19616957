//! The file as written, every value with its byte span. The JSON Schema in
//! `schemas/topology.schema.json` is generated from these types, so the schema
//! and the parser cannot disagree about which keys exist.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;
use toml::Spanned;

/// An lvn topology: one file for the whole fleet, kept in git. Each machine
/// acts as one node of it.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "lvn topology")]
pub struct RawTopology {
    /// Settings shared by every node of the network.
    #[schemars(with = "RawNetwork")]
    pub network: Spanned<RawNetwork>,
    /// The nodes, by name. A machine picks its own with `--node`, `LVN_NODE` or its hostname.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, RawNode>")]
    pub nodes: Option<Spanned<RawNodes>>,
}

/// The nodes as written, in name order. A list, not a map: TOML has
/// already refused a name declared twice, and validation only walks them;
/// a map costs a search per node to build, and its nodes have room for
/// eleven entries each.
#[derive(Debug, Default)]
pub struct RawNodes(pub Vec<(Spanned<String>, Spanned<RawNode>)>);

impl<'de> Deserialize<'de> for RawNodes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = RawNodes;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a map")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<RawNodes, A::Error> {
                let mut out = Vec::with_capacity(map.size_hint().unwrap_or(0));
                while let Some(entry) = map.next_entry()? {
                    out.push(entry);
                }
                // Name order, whatever order the parser hands them in.
                out.sort_by(|(a, _): &(Spanned<String>, _), (b, _)| a.get_ref().cmp(b.get_ref()));
                Ok(RawNodes(out))
            }
        }
        d.deserialize_map(Visitor)
    }
}

/// Settings shared by every node of the network.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
// `vni` is required unless `datapath` is "fou", as validation says.
#[schemars(extend(
    "if" = { "properties": { "datapath": { "const": "fou" } }, "required": ["datapath"] },
    "else" = { "required": ["vni"] }
))]
pub struct RawNetwork {
    /// 1-11 characters of [a-z0-9-]; the device is `lvn-<name>` unless `device` is set.
    #[schemars(with = "String", regex(pattern = r"^[a-z0-9-]{1,11}$"))]
    pub name: Spanned<String>,
    /// Device name override (1-15 characters, no '/', ':' or whitespace).
    #[serde(default)]
    #[schemars(with = "Option<String>", length(min = 1, max = 15))]
    pub device: Option<Spanned<String>>,
    /// Overlay prefix, e.g. "100.64.0.0/16", or a list of at most one IPv4
    /// and one IPv6 prefix for a dual-stack overlay, e.g.
    /// ["100.64.0.0/16", "fd64:1::/64"]; every node address lies inside.
    #[schemars(with = "OneOrTwo")]
    pub overlay: Spanned<OneOrList>,
    /// UDP port of the encapsulation, the same on every node.
    #[schemars(with = "u16", range(min = 1, max = 65534))]
    pub port: Spanned<i64>,
    /// Data path: "vxlan" (kernel VXLAN, the default) or "fou" (kernel fou:
    /// ipip on an IPv4 underlay, ip6tnl with GUE on an IPv6 one).
    #[serde(default)]
    #[schemars(with = "Option<String>", extend("enum" = ["vxlan", "fou"]))]
    pub datapath: Option<Spanned<String>>,
    /// VXLAN network identifier, 0-16777215. Required with datapath "vxlan";
    /// ignored with "fou" (ipip carries no network identifier).
    #[serde(default)]
    #[schemars(with = "Option<u32>", range(max = 16_777_215))]
    pub vni: Option<Spanned<i64>>,
    /// Overlay MTU; default: underlay MTU minus encapsulation overhead.
    #[serde(default)]
    #[schemars(with = "Option<u32>", range(min = 68, max = 65535))]
    pub mtu: Option<Spanned<i64>>,
    /// How often spokes send keepalives: seconds, or "25s", "500ms", "2m". Default 25s.
    #[serde(default)]
    #[schemars(with = "Option<DurationValue>")]
    pub keepalive: Option<Spanned<toml::Value>>,
    /// A hub removes a learned peer after this long without an accepted keepalive. Default 120s.
    #[serde(default)]
    #[schemars(with = "Option<DurationValue>")]
    pub expire_after: Option<Spanned<toml::Value>>,
    /// A spoke moves its overlay route to its next hub once its primary hub
    /// has not answered for this long. Default: three keepalive intervals.
    #[serde(default)]
    #[schemars(with = "Option<DurationValue>")]
    pub failover_after: Option<Spanned<toml::Value>>,
    /// A spoke moves back to a preferred hub once it has answered steadily
    /// for this long, plus a per-spoke delay of up to as long again.
    /// Default: ten keepalive intervals.
    #[serde(default)]
    #[schemars(with = "Option<DurationValue>")]
    pub failback_after: Option<Spanned<toml::Value>>,
    /// After a reload, a spoke that had a hub answering and has none
    /// answering this long after the change goes back to the previous file.
    /// Default: four keepalive intervals.
    #[serde(default)]
    #[schemars(with = "Option<DurationValue>")]
    pub confirm_after: Option<Spanned<toml::Value>>,
    /// "none" (default): any keepalive naming a declared node is accepted.
    /// "keys": keepalives carry a MAC from a key pair per node (`public_key`).
    #[serde(default)]
    #[schemars(with = "Option<String>", extend("enum" = ["none", "keys"]))]
    pub auth: Option<Spanned<String>>,
    /// 3 (default): a routed overlay, lvn owns addresses, neighbours and
    /// routes on its device. 2: lvn's device is a plain Ethernet link (for a
    /// bridge or batman-adv), lvn owns its MAC, MTU and FDB only. VXLAN only.
    #[serde(default)]
    #[schemars(with = "Option<u8>", range(min = 2, max = 3))]
    pub layer: Option<Spanned<i64>>,
    /// Layer 2: make lvn's device a port of this existing interface (a
    /// Linux bridge or a batman-adv mesh interface such as "bat0"). lvn
    /// never creates, changes or deletes it.
    #[serde(default)]
    #[schemars(with = "Option<String>", length(min = 1, max = 15))]
    pub attach: Option<Spanned<String>>,
    /// UDP checksums on encapsulated packets (VXLAN). Default: the kernel's
    /// (none over IPv4, present over IPv6). Set true where routers drop
    /// UDP with a zero checksum.
    #[serde(default)]
    #[schemars(with = "Option<bool>")]
    pub udp_checksum: Option<Spanned<bool>>,
}

/// A duration: whole seconds, or a number with a unit (ms, s, m, h).
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum DurationValue {
    Seconds(u32),
    Text(#[schemars(regex(pattern = r"^[0-9]+(ms|s|m|h)$"))] String),
}

/// One string, or a list of strings (each with its span): `overlay` and
/// `address` take either. A hand-written visitor rather than an untagged
/// enum, because an untagged enum buffers its input and loses the spans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OneOrList {
    One(String),
    List(Vec<Spanned<String>>),
}

impl<'de> Deserialize<'de> for OneOrList {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = OneOrList;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string or a list of strings")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<OneOrList, E> {
                Ok(OneOrList::One(v.to_string()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<OneOrList, A::Error> {
                let mut out = Vec::new();
                while let Some(s) = seq.next_element::<Spanned<String>>()? {
                    out.push(s);
                }
                Ok(OneOrList::List(out))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// One value, or a list of one or two (one per IP family).
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum OneOrTwo {
    One(String),
    List(#[schemars(length(min = 1, max = 2))] Vec<String>),
}

/// One node of the network.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawNode {
    /// "hub" (public endpoint, forwards between spokes) or "spoke" (the default).
    #[serde(default)]
    #[schemars(with = "Option<String>", extend("enum" = ["hub", "spoke"]))]
    pub role: Option<Spanned<String>>,
    /// The node's overlay address, inside `network.overlay`; with a
    /// dual-stack overlay a list of one address per overlay family, e.g.
    /// ["100.64.1.2", "fd64:1::2"].
    #[schemars(with = "OneOrTwo")]
    pub address: Spanned<OneOrList>,
    /// Underlay endpoint: "ip", "ip:port" or "[v6]:port". Required for a hub;
    /// optional for a spoke.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub endpoint: Option<Spanned<String>>,
    /// This node's keepalive interval, overriding the network's.
    #[serde(default)]
    #[schemars(with = "Option<DurationValue>")]
    pub keepalive: Option<Spanned<toml::Value>>,
    /// How long hubs keep this node's learned endpoint without a keepalive.
    #[serde(default)]
    #[schemars(with = "Option<DurationValue>")]
    pub expire_after: Option<Spanned<toml::Value>>,
    /// The node's public key (base64, 32 bytes), from `lvn genkey`. Required with auth = "keys".
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub public_key: Option<Spanned<String>>,
    /// Spokes only: the hubs this spoke prefers, first choice first. Hubs
    /// not listed follow, in the order placement gives them. Default: all
    /// hubs, ordered by weighted rendezvous hashing of the spoke's and each
    /// hub's name.
    #[serde(default)]
    #[schemars(with = "Option<Vec<String>>")]
    pub hubs: Option<Spanned<Vec<Spanned<String>>>>,
    /// Hubs only: this hub's share of the spokes placed by hashing,
    /// relative to the other hubs' (1 to 1000, default 1).
    #[serde(default)]
    #[schemars(with = "Option<u32>", range(min = 1, max = 1000))]
    pub weight: Option<Spanned<i64>>,
    /// Layer 2: this node's `attach`, overriding the network's.
    #[serde(default)]
    #[schemars(with = "Option<String>", length(min = 1, max = 15))]
    pub attach: Option<Spanned<String>>,
}

/// The JSON Schema of the topology file, pretty-printed with a final newline.
pub fn schema_json() -> String {
    let schema = schemars::schema_for!(RawTopology);
    let mut s = serde_json::to_string_pretty(&schema).unwrap_or_default();
    s.push('\n');
    s
}

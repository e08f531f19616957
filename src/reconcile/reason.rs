use std::{fmt, sync::Arc};

use serde::Serialize;

/// Why a step is in a plan. Typed, so the plan printout, the JSON output and
/// the log line all say the same thing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Reason {
    /// The network's device, `mtu_from` says where its MTU comes from.
    Network { network: String, mtu_from: String },
    /// This node's own overlay address.
    OwnAddress { node: String },
    /// A peer whose underlay endpoint is declared in the topology.
    StaticEndpoint { peer: Arc<str> },
    /// A peer whose endpoint a hub learned from its keepalives.
    LearnedEndpoint { peer: Arc<str> },
    /// A learned peer whose keepalives stopped.
    Expired { peer: Arc<str>, after_ms: u64 },
    /// The overlay address of a peer this node talks to directly.
    PeerAddress { peer: Arc<str> },
    /// A spoke reaches the rest of the overlay through its primary hub.
    ViaHub { hub: String },
    /// A spoke reaches a further hub directly.
    DirectHub { hub: String },
    /// A hub reaches every node of the overlay on its device.
    HubOverlay,
    /// A hub's gateway route to a live spoke, through the spoke itself.
    SpokeRoute { peer: Arc<str> },
    /// Device settings for this node's role.
    Role { role: crate::config::Role },
    /// Layer 2: broadcast, multicast and unknown unicast to a peer with an
    /// endpoint (static, or `learned` from its keepalives).
    Flood { peer: Arc<str>, learned: bool },
    /// Layer 2: the device is a port of `master` (`attach`), with hairpin
    /// on a hub's bridge.
    Attach {
        master: String,
        master_kind: String,
        hairpin: bool,
    },
    /// Layer 2: `attach` names an interface that does not exist now, so
    /// the device is no other interface's port either.
    MasterMissing { master: String },
    /// lvn owns it and the topology no longer wants it.
    NotDeclared,
    /// The network is not wanted here at all (`lvn down`): the device goes,
    /// and every entry on it with it.
    Teardown,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Network { network, mtu_from } => {
                write!(f, "network {network}, {mtu_from}")
            }
            Reason::OwnAddress { node } => write!(f, "{node}: own overlay address"),
            Reason::StaticEndpoint { peer } => write!(f, "{peer}: static endpoint"),
            Reason::PeerAddress { peer } => write!(f, "{peer}: overlay address"),
            Reason::LearnedEndpoint { peer } => write!(f, "{peer}: learned endpoint"),
            Reason::Expired { peer, after_ms } => write!(
                f,
                "{peer}: no keepalive for {:?}, expired",
                std::time::Duration::from_millis(*after_ms)
            ),
            Reason::ViaHub { hub } => write!(f, "overlay through primary hub {hub}"),
            Reason::DirectHub { hub } => write!(f, "{hub}: hub reached directly"),
            Reason::HubOverlay => write!(f, "hub: overlay on this device"),
            Reason::SpokeRoute { peer } => write!(f, "{peer}: live spoke, routed through itself"),
            Reason::Role { role } => match role {
                crate::config::Role::Hub => write!(f, "hub: forwards between spokes"),
                crate::config::Role::Spoke => write!(f, "spoke: does not forward"),
            },
            Reason::Flood { peer, learned } => write!(
                f,
                "{peer}: flooding to its {} endpoint",
                if *learned { "learned" } else { "static" }
            ),
            Reason::Attach {
                master,
                master_kind,
                hairpin,
            } => {
                write!(f, "attach: port of {master} ({master_kind})")?;
                if *hairpin {
                    write!(
                        f,
                        ", hairpin on: spokes reach each other through this hub's bridge"
                    )?;
                }
                Ok(())
            }
            Reason::MasterMissing { master } => {
                write!(
                    f,
                    "attach: {master} does not exist, the device is no other's port"
                )
            }
            Reason::NotDeclared => write!(f, "not declared"),
            Reason::Teardown => write!(f, "down: the device and every entry on it"),
        }
    }
}

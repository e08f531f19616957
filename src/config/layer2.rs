//! `[network] layer`, `attach` and `udp_checksum`: what makes lvn's VXLAN
//! device a plain layer 2 link for a bridge or a batman-adv mesh. Kept
//! apart from `validate.rs` because layer 2 is one idea with its own rules:
//! VXLAN only, and `attach` only where there is an Ethernet device to attach.

use std::ops::Range;

use serde::Serialize;
use toml::Spanned;

use super::{
    Datapath,
    raw::{RawNetwork, RawNode},
};

/// Longest interface name the kernel takes (IFNAMSIZ - 1).
const MAX_IFNAME: usize = 15;

/// What lvn manages on its device.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub enum Layer {
    /// Layer 2: the device, its MAC, MTU and FDB (unicast and flooding
    /// entries), and its master; no addresses, neighbours, routes or
    /// forwarding settings.
    #[serde(rename = "2")]
    Two,
    /// Layer 3 (the default): the overlay is routed, lvn owns the device's
    /// address, neighbours and routes too.
    #[default]
    #[serde(rename = "3")]
    Three,
}

/// The layer 2 settings of `[network]`, checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Layer2 {
    pub layer: Layer,
    pub attach: Option<String>,
    pub udp_checksum: Option<bool>,
}

/// `errs` collects (span, message) pairs: the caller owns the error list.
pub(super) fn check_network(
    n: &RawNetwork,
    datapath: Option<Datapath>,
    errs: &mut Vec<(Range<usize>, String)>,
) -> Layer2 {
    let layer = match n.layer.as_ref() {
        None => Layer::Three,
        Some(l) => match *l.get_ref() {
            3 => Layer::Three,
            2 => Layer::Two,
            v => {
                errs.push((
                    l.span(),
                    format!("layer {v} is not supported, expected 2 or 3"),
                ));
                Layer::Three
            }
        },
    };
    if layer == Layer::Two && datapath == Some(Datapath::Fou) {
        let at = n.layer.as_ref().map_or(0..0, Spanned::span);
        errs.push((
            at,
            "layer 2 needs datapath \"vxlan\": fou carries IP packets only (ipip), with no Ethernet header to bridge or to run batman-adv over".to_string(),
        ));
    }
    let attach = check_attach(n.attach.as_ref(), layer, errs);
    if let (Some(c), Some(Datapath::Fou)) = (n.udp_checksum.as_ref(), datapath) {
        errs.push((
            c.span(),
            "udp_checksum is for datapath \"vxlan\"; fou tunnels keep the kernel's default"
                .to_string(),
        ));
    }
    Layer2 {
        layer,
        attach,
        udp_checksum: n.udp_checksum.as_ref().map(|c| *c.get_ref()),
    }
}

/// A node's own `attach`, overriding the network's.
pub(super) fn check_node(
    n: &RawNode,
    layer: Layer,
    errs: &mut Vec<(Range<usize>, String)>,
) -> Option<String> {
    check_attach(n.attach.as_ref(), layer, errs)
}

fn check_attach(
    attach: Option<&Spanned<String>>,
    layer: Layer,
    errs: &mut Vec<(Range<usize>, String)>,
) -> Option<String> {
    let a = attach?;
    let s = a.get_ref();
    let valid = !s.is_empty()
        && s.len() <= MAX_IFNAME
        && s != "."
        && s != ".."
        && !s.chars().any(|c| c == '/' || c == ':' || c.is_whitespace());
    if !valid {
        errs.push((
            a.span(),
            format!("attach '{s}' is not an interface name: expected 1-{MAX_IFNAME} characters without '/', ':' or whitespace"),
        ));
        return None;
    }
    if layer != Layer::Two {
        errs.push((
            a.span(),
            format!("attach = \"{s}\" needs layer = 2 in [network]: in layer 3 lvn's device carries the routed overlay itself"),
        ));
        return None;
    }
    Some(s.clone())
}

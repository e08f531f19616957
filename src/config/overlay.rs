//! The overlay's prefixes and the nodes' addresses: one value or a list of
//! one per family (a dual-stack overlay), each checked at its own span.

use std::{net::IpAddr, ops::Range};

use ipnet::IpNet;
use toml::Spanned;

use super::{
    raw::OneOrList,
    validate::{Checker, Declared, Node},
};

/// The items of a one-or-list value, each with its span (a single value
/// has the value's own).
pub(super) fn items(v: &Spanned<OneOrList>) -> Vec<(&str, Range<usize>)> {
    match v.get_ref() {
        OneOrList::One(s) => vec![(s.as_str(), v.span())],
        OneOrList::List(l) => l.iter().map(|s| (s.get_ref().as_str(), s.span())).collect(),
    }
}

/// `overlay`: one prefix, or a list of at most one IPv4 and one IPv6
/// prefix. Returned IPv4 first; `None` if any is wrong.
pub(super) fn check_overlays(c: &mut Checker, v: &Spanned<OneOrList>) -> Option<Vec<IpNet>> {
    let list = items(v);
    if list.is_empty() {
        c.err(
            v.span(),
            "overlay is an empty list, expected a prefix or a list of one IPv4 and one IPv6 prefix, e.g. [\"100.64.0.0/16\", \"fd64:1::/64\"]",
        );
        return None;
    }
    let mut out: Vec<IpNet> = Vec::new();
    let mut ok = true;
    for (text, span) in list {
        match text.parse::<IpNet>() {
            Ok(net) if net.trunc() != net => {
                c.err(
                    span,
                    format!(
                        "overlay '{net}' has host bits set, did you mean '{}'?",
                        net.trunc()
                    ),
                );
                ok = false;
            }
            Ok(net) => {
                if let Some(other) = out
                    .iter()
                    .find(|o| o.addr().is_ipv4() == net.addr().is_ipv4())
                {
                    c.err(
                        span,
                        format!(
                            "overlay {net} is a second {} prefix beside {other}: a network has at most one overlay prefix per family",
                            family_name(net.addr().is_ipv4())
                        ),
                    );
                    ok = false;
                } else {
                    out.push(net);
                }
            }
            Err(_) => {
                c.err(
                    span,
                    format!(
                        "overlay '{text}' is not a prefix, expected e.g. \"100.64.0.0/16\" or \"fd64:1::/64\""
                    ),
                );
                ok = false;
            }
        }
    }
    out.sort_by_key(|o| o.addr().is_ipv6());
    ok.then_some(out)
}

/// A node's `address`: one address, or a list of one per overlay family,
/// each inside the overlay prefix of its family. Returned IPv4 first.
pub(super) fn check_node_addresses(
    c: &mut Checker,
    node: &str,
    v: &Spanned<OneOrList>,
    overlays: Option<&[IpNet]>,
) -> Option<Vec<IpAddr>> {
    let list = items(v);
    if list.is_empty() {
        c.err(
            v.span(),
            format!(
                "address of node '{node}' is an empty list, expected one address per overlay family"
            ),
        );
        return None;
    }
    let mut out: Vec<IpAddr> = Vec::new();
    let mut ok = true;
    for (text, span) in list {
        let Ok(a) = text.parse::<IpAddr>() else {
            c.err(
                span,
                format!(
                    "address '{text}' is not an IP address, expected e.g. \"100.64.1.2\" (no prefix length)"
                ),
            );
            ok = false;
            continue;
        };
        if let Some(other) = out.iter().find(|o| o.is_ipv4() == a.is_ipv4()) {
            c.err(
                span,
                format!(
                    "address {a} is a second {} address of node '{node}' beside {other}: one address per overlay family",
                    family_name(a.is_ipv4())
                ),
            );
            ok = false;
            continue;
        }
        if let Some(overlays) = overlays {
            match overlays.iter().find(|o| o.addr().is_ipv4() == a.is_ipv4()) {
                Some(overlay) => check_address(c, span.clone(), a, *overlay),
                None => {
                    let have: Vec<String> = overlays.iter().map(ToString::to_string).collect();
                    c.err(
                        span,
                        format!(
                            "address {a} is {}, but the overlay has no {} prefix (overlay: {}); add one to network.overlay, e.g. overlay = [\"100.64.0.0/16\", \"fd64:1::/64\"]",
                            family_name(a.is_ipv4()),
                            family_name(a.is_ipv4()),
                            have.join(", ")
                        ),
                    );
                    ok = false;
                }
            }
        }
        out.push(a);
    }
    out.sort_by_key(IpAddr::is_ipv6);
    ok.then_some(out)
}

fn check_address(c: &mut Checker, at: Range<usize>, a: IpAddr, overlay: IpNet) {
    if !overlay.contains(&a) {
        c.err(
            at.clone(),
            format!("address {a} lies outside the overlay {overlay}"),
        );
    } else if let IpNet::V4(v4) = overlay
        && v4.prefix_len() <= 30
        && (a == IpAddr::V4(v4.network()) || a == IpAddr::V4(v4.broadcast()))
    {
        c.err(
            at,
            format!("address {a} is the network or broadcast address of the overlay {overlay}"),
        );
    }
}

/// The span of address `a` inside a node's `address` value.
pub(super) fn address_span(v: &Spanned<OneOrList>, a: IpAddr) -> Range<usize> {
    items(v)
        .into_iter()
        .find(|(text, _)| text.parse::<IpAddr>().ok() == Some(a))
        .map_or_else(|| v.span(), |(_, span)| span)
}

/// A family's addresses are given for every node or for none: a node
/// without an IPv6 address could not reach, nor be reached by, the others'.
pub(super) fn check_families(c: &mut Checker, declared: &[Declared]) {
    for v4 in [true, false] {
        let has = |n: &Node| n.addresses.iter().any(|a| a.is_ipv4() == v4);
        let Some(example) = declared.iter().filter_map(|d| d.node).find(|n| has(n)) else {
            continue;
        };
        for d in declared {
            if d.node.is_some_and(|n| !has(n)) {
                c.err(
                    d.raw.address.span(),
                    format!(
                        "node '{}' has no {fam} address, but node '{}' has one: give every node an {fam} address, or none",
                        d.name.get_ref(),
                        example.name,
                        fam = family_name(v4)
                    ),
                );
            }
        }
    }
}

pub(super) fn family_name(v4: bool) -> &'static str {
    if v4 { "IPv4" } else { "IPv6" }
}

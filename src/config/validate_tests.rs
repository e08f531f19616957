//! Validation cases that are easier to state in Rust than as a fixture: many
//! keys in a loop, and what a valid file turns into. The fixtures in
//! `tests/fixtures/invalid/` cover the messages as `lvn check` prints them.

use std::path::Path;

use base64::{Engine, engine::general_purpose::STANDARD as BASE64};

use super::{ConfigErrors, Datapath, Topology, parse};

const NETWORK: &str = r#"[network]
name = "ninux"
overlay = "100.64.0.0/16"
port = 4789
"#;

const NODES: &str = r#"
[nodes.hub1]
role = "hub"
address = "100.64.0.1"
endpoint = "198.51.100.1"

[nodes.alice]
address = "100.64.1.2"
"#;

fn topology(network_keys: &str) -> Result<Topology, ConfigErrors> {
    parse(
        Path::new("t.toml"),
        &format!("{NETWORK}{network_keys}{NODES}"),
    )
}

/// The one error of a file that must have exactly one: (line, col, message).
fn one_error(result: Result<Topology, ConfigErrors>) -> (usize, usize, String) {
    let errors = result.expect_err("the file is refused").0;
    assert_eq!(errors.len(), 1, "one error: {errors:?}");
    let e = &errors[0];
    (e.line, e.col, e.message.clone())
}

fn hex(text: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).expect("hex");
    }
    out
}

/// The X25519 points x25519 sends to zero whatever the private key: the
/// list libsodium refuses (`has_small_order`), and the same points with the
/// top bit set, which X25519 ignores (RFC 7748 section 5).
const LOW_ORDER_POINTS: [&str; 10] = [
    // 0, order 4
    "0000000000000000000000000000000000000000000000000000000000000000",
    // 1, order 1
    "0100000000000000000000000000000000000000000000000000000000000000",
    // order 8
    "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
    // order 8
    "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
    // p - 1, order 2
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    // p, that is 0 again
    "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    // p + 1, that is 1 again
    "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    // 0, 1 and an order-8 point with the top bit set
    "0000000000000000000000000000000000000000000000000000000000000080",
    "0100000000000000000000000000000000000000000000000000000000000080",
    "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b880",
];

/// RFC 7748 section 6.1, Alice's public key: a real one.
const REAL_PUBLIC_KEY: &str = "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a";

fn with_public_key(key_hex: &str) -> Result<Topology, ConfigErrors> {
    let text = format!(
        "{NETWORK}vni = 1\n{NODES}public_key = \"{}\"\n",
        BASE64.encode(hex(key_hex))
    );
    parse(Path::new("t.toml"), &text)
}

#[test]
fn public_key_low_order_is_refused() {
    for point in LOW_ORDER_POINTS {
        let (line, col, message) = one_error(with_public_key(point));
        // alice's public_key, the last line of the file.
        assert_eq!((line, col), (14, 14), "{point}: {message}");
        assert!(
            message.starts_with("public_key of node 'alice' is a low-order point"),
            "{point}: {message}"
        );
        assert!(message.contains("lvn genkey"), "{point}: {message}");
    }
}

#[test]
fn a_real_public_key_is_accepted() {
    let t = with_public_key(REAL_PUBLIC_KEY).expect("valid");
    let key = t.nodes["alice"].public_key.expect("alice has a key");
    assert_eq!(key.to_base64(), BASE64.encode(hex(REAL_PUBLIC_KEY)));
}

#[test]
fn fou_network_without_vni_is_valid() {
    let t = topology("datapath = \"fou\"\n").expect("valid");
    assert_eq!(t.network.datapath, Datapath::Fou);
    assert_eq!(t.network.vni, 0, "fou has no network identifier");
}

/// A fou file written when vni was still required keeps working: the vni is
/// range-checked, then ignored.
#[test]
fn fou_network_ignores_a_given_vni() {
    let t = topology("datapath = \"fou\"\nvni = 4242\n").expect("valid");
    assert_eq!(t.network.vni, 0);
    let (line, col, message) = one_error(topology("datapath = \"fou\"\nvni = 16777216\n"));
    assert_eq!((line, col), (6, 7));
    assert_eq!(message, "vni 16777216 is out of range, expected 0-16777215");
}

#[test]
fn vxlan_network_without_vni_is_refused() {
    for datapath in ["", "datapath = \"vxlan\"\n"] {
        let (line, col, message) = one_error(topology(datapath));
        assert_eq!((line, col), (1, 1), "{message}");
        assert!(
            message.starts_with("network has no vni: datapath \"vxlan\" needs one"),
            "{message}"
        );
    }
    let t = topology("vni = 4242\n").expect("valid");
    assert_eq!((t.network.datapath, t.network.vni), (Datapath::Vxlan, 4242));
}

/// A dual-stack file: addresses in any order come out IPv4 first, and the
/// IPv4 address is the primary one (MAC, keepalives).
#[test]
fn dual_stack_overlay_lists_ipv4_first() {
    let text = r#"[network]
name = "ninux"
overlay = ["fd64:1::/64", "100.64.0.0/16"]
port = 4789
vni = 4242

[nodes.hub1]
role = "hub"
address = ["fd64:1::1", "100.64.0.1"]
endpoint = "198.51.100.1"

[nodes.alice]
address = ["100.64.1.2", "fd64:1::2"]
"#;
    let t = parse(Path::new("t.toml"), text).expect("valid");
    let v4: std::net::IpAddr = "100.64.0.1".parse().unwrap();
    let v6: std::net::IpAddr = "fd64:1::1".parse().unwrap();
    assert_eq!(t.network.overlay.to_string(), "100.64.0.0/16");
    assert_eq!(t.network.overlays.len(), 2);
    assert_eq!(t.nodes["hub1"].address, v4);
    assert_eq!(t.nodes["hub1"].addresses, vec![v4, v6]);
    assert_eq!(
        t.network.overlay_for(v6).map(|o| o.to_string()).as_deref(),
        Some("fd64:1::/64")
    );
}

/// An IPv6-only overlay: the IPv6 address is the primary one, and a list
/// of one is the same as the plain value.
#[test]
fn ipv6_only_overlay_in_a_list_of_one() {
    let text = r#"[network]
name = "ninux"
overlay = ["fd64:1::/64"]
port = 4789
vni = 4242

[nodes.hub1]
role = "hub"
address = "fd64:1::1"
endpoint = "198.51.100.1"

[nodes.alice]
address = ["fd64:1::2"]
"#;
    let t = parse(Path::new("t.toml"), text).expect("valid");
    assert_eq!(t.nodes["alice"].address.to_string(), "fd64:1::2");
    assert_eq!(t.network.overlays.len(), 1);
    let (line, col, message) = one_error(parse(
        Path::new("t.toml"),
        &text.replace("overlay = [\"fd64:1::/64\"]", "overlay = []"),
    ));
    assert_eq!((line, col), (3, 11));
    assert!(message.starts_with("overlay is an empty list"), "{message}");
}

//! lvn's naming rules, in one place: how lvn names and marks what it puts
//! in the kernel, so the planner that decides, the datapaths that write and
//! read back, and the config checks that warn all agree. Nothing here
//! depends on the rest of lvn.
//!
//! - the MAC of a node, derived from its overlay address ([`Mac::for_overlay`]),
//! - the tunnel device of a fou peer ([`tunnel_name`]),
//! - the alias that marks a device as lvn's ([`owner_alias`], [`tunnel_alias`]),
//! - the route protocol number of lvn's routes ([`ROUTE_PROTOCOL`]),
//! - the per-device kernel settings lvn manages ([`SysctlKey`], [`Setting`]).

use std::{cmp::Ordering, fmt, net::IpAddr, path::PathBuf};

use serde::{Serialize, Serializer};

/// Route protocol number that marks lvn's routes (`ip route ... proto 76`).
/// Not registered in iproute2's rt_protos; 76 is "L" in ASCII.
pub const ROUTE_PROTOCOL: u8 = 76;

/// A MAC address. lvn derives every node's MAC from its overlay address, so
/// nodes never have to exchange MACs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// `02:4c:` + the IPv4 address (locally administered, unicast); IPv6
    /// overlay addresses use `02:4d:` + their last 32 bits.
    pub fn for_overlay(ip: IpAddr) -> Mac {
        let (tag, tail) = match ip {
            IpAddr::V4(v4) => (0x4c, v4.octets()),
            IpAddr::V6(v6) => {
                let o = v6.octets();
                (0x4d, [o[12], o[13], o[14], o[15]])
            }
        };
        Mac([0x02, tag, tail[0], tail[1], tail[2], tail[3]])
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl Serialize for Mac {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// An IP address family: of the underlay (what a device encapsulates in)
/// or of the overlay (which device settings apply).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    Ipv4,
    Ipv6,
}

impl Family {
    pub fn of(ip: IpAddr) -> Family {
        if ip.is_ipv4() {
            Family::Ipv4
        } else {
            Family::Ipv6
        }
    }

    /// The name the kernel uses in sysctl keys: `ipv4` or `ipv6`.
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Ipv4 => "ipv4",
            Family::Ipv6 => "ipv6",
        }
    }
}

/// Alias lvn writes on the devices it creates: `lvn:<network>`. A device
/// without it is not lvn's, whatever its name.
pub fn owner_alias(network: &str) -> String {
    format!("lvn:{network}")
}

/// Alias of a fou tunnel: `lvn:<network>:<peer>`. It records the peer,
/// which the device's name (a hash) does not give back.
pub fn tunnel_alias(network: &str, peer: &str) -> String {
    format!("{}:{peer}", owner_alias(network))
}

/// The peer named by a tunnel's alias, if the alias is one of `network`'s.
pub fn tunnel_peer<'a>(alias: &'a str, network: &str) -> Option<&'a str> {
    alias.strip_prefix(&owner_alias(network))?.strip_prefix(':')
}

/// The tunnel device of `peer` in `network`: `l` + up to 6 characters of
/// the network + `-` + 7 hex digits of a hash of both names (15 in all).
pub fn tunnel_name(network: &str, peer: &str) -> String {
    // FNV-1a: stable across versions and platforms, unlike std's hasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in network.bytes().chain([0]).chain(peer.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let short: String = network.chars().take(6).collect();
    format!("l{short}-{:07x}", h & 0x0fff_ffff)
}

/// A per-device setting lvn manages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Setting {
    /// Hubs forward between spokes; spokes do not.
    Forwarding,
    /// Off on an IPv4 hub: a redirect would send spokes to a path that
    /// does not exist.
    SendRedirects,
    /// IPv6 only, Linux 6.17 and later: forward packets that came in on
    /// this device although `net.ipv6.conf.all.forwarding` is 0. IPv6 has
    /// no per-device forwarding otherwise (its `forwarding` only makes the
    /// device behave as a router's), and lvn leaves global settings alone.
    ForceForwarding,
}

impl Setting {
    /// The settings lvn reads and writes on its devices, per overlay
    /// family (IPv6 has no `send_redirects`).
    pub fn managed(family: Family) -> &'static [Setting] {
        match family {
            Family::Ipv4 => &[Setting::Forwarding, Setting::SendRedirects],
            Family::Ipv6 => &[Setting::Forwarding, Setting::ForceForwarding],
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Setting::Forwarding => "forwarding",
            Setting::SendRedirects => "send_redirects",
            Setting::ForceForwarding => "force_forwarding",
        }
    }
}

impl fmt::Display for Setting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A per-device kernel setting, written `net.<family>.conf.<device>.<setting>`
/// (`net.ipv4.conf.lvn-ninux.forwarding`) and kept in parts, so nothing has
/// to split the text again: a device name may itself contain dots.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SysctlKey {
    pub family: Family,
    pub device: String,
    pub setting: Setting,
}

/// The pseudo-device whose settings a new device starts with.
const DEFAULT_DEVICE: &str = "default";

impl SysctlKey {
    pub fn new(family: Family, device: &str, setting: Setting) -> SysctlKey {
        SysctlKey {
            family,
            device: device.to_string(),
            setting,
        }
    }

    /// `net.<family>.conf.default.<setting>`: what a new device starts with.
    pub fn default_for(family: Family, setting: Setting) -> SysctlKey {
        SysctlKey::new(family, DEFAULT_DEVICE, setting)
    }

    /// The file under /proc/sys. Dots in the device name stay dots there.
    pub fn proc_path(&self) -> PathBuf {
        [
            "/proc/sys/net",
            self.family.as_str(),
            "conf",
            &self.device,
            self.setting.as_str(),
        ]
        .iter()
        .collect()
    }
}

impl fmt::Display for SysctlKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "net.{}.conf.{}.{}",
            self.family.as_str(),
            self.device,
            self.setting
        )
    }
}

impl Serialize for SysctlKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Keys sort as their text does, so plans and states list settings in the
/// same order as when keys were strings (`lvn-x` before `lvn`, as `-` sorts
/// before `.`).
impl Ord for SysctlKey {
    fn cmp(&self, other: &Self) -> Ordering {
        fn tail(k: &SysctlKey) -> impl Iterator<Item = u8> + '_ {
            k.device
                .bytes()
                .chain([b'.'])
                .chain(k.setting.as_str().bytes())
        }
        self.family
            .cmp(&other.family)
            .then_with(|| tail(self).cmp(tail(other)))
            // Equal text means equal parts; this keeps Ord and Eq in step
            // even so.
            .then_with(|| (&self.device, self.setting).cmp(&(&other.device, other.setting)))
    }
}

impl PartialOrd for SysctlKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn mac_from_overlay_address() {
        let m = Mac::for_overlay("100.64.1.2".parse().unwrap());
        assert_eq!(m.to_string(), "02:4c:64:40:01:02");
        let m = Mac::for_overlay("fd00::1:2".parse().unwrap());
        assert_eq!(m.to_string(), "02:4d:00:01:00:02");
    }

    #[test]
    fn sysctl_key_text_and_path_keep_dots_in_device_names() {
        let k = SysctlKey::new(Family::Ipv4, "lvn-ninux", Setting::Forwarding);
        assert_eq!(k.to_string(), "net.ipv4.conf.lvn-ninux.forwarding");
        assert_eq!(
            k.proc_path(),
            Path::new("/proc/sys/net/ipv4/conf/lvn-ninux/forwarding")
        );
        let k = SysctlKey::new(Family::Ipv4, "my.dev", Setting::SendRedirects);
        assert_eq!(k.to_string(), "net.ipv4.conf.my.dev.send_redirects");
        assert_eq!(
            k.proc_path(),
            Path::new("/proc/sys/net/ipv4/conf/my.dev/send_redirects")
        );
        // Plans in JSON carry the key as text, as when it was a string.
        assert_eq!(
            serde_json::to_value(&k).unwrap(),
            serde_json::json!("net.ipv4.conf.my.dev.send_redirects")
        );
        let k = SysctlKey::default_for(Family::Ipv6, Setting::Forwarding);
        assert_eq!(
            k.proc_path(),
            Path::new("/proc/sys/net/ipv6/conf/default/forwarding")
        );
    }

    #[test]
    fn sysctl_keys_sort_as_their_text() {
        let mut keys = Vec::new();
        for family in [Family::Ipv6, Family::Ipv4] {
            for device in ["lvn", "lvn-x", "lvn.x", "a.b", "lvn0", "l"] {
                for setting in [Setting::SendRedirects, Setting::Forwarding] {
                    keys.push(SysctlKey::new(family, device, setting));
                }
            }
        }
        let mut by_text = keys.clone();
        by_text.sort_by_key(|k| k.to_string());
        keys.sort();
        assert_eq!(keys, by_text);
    }

    #[test]
    fn tunnel_alias_names_the_peer() {
        let a = tunnel_alias("ninux", "spoke-1");
        assert_eq!(a, "lvn:ninux:spoke-1");
        assert_eq!(tunnel_peer(&a, "ninux"), Some("spoke-1"));
        assert_eq!(tunnel_peer(&a, "nin"), None);
        assert_eq!(tunnel_peer("lvn:ninux", "ninux"), None);
    }

    #[test]
    fn tunnel_names_fit_ifnamsiz() {
        let n = tunnel_name("ninux-backbone", "a-very-long-peer-name");
        assert_eq!(n.len(), 15);
        assert!(n.starts_with("lninux-"));
        assert_ne!(n, tunnel_name("ninux-backbone", "another-peer"));
    }
}

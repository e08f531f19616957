use std::net::{IpAddr, SocketAddr};

/// Parse an endpoint: "ip", "ip:port", "[v6]" or "[v6]:port". A missing port
/// is `default_port`.
pub fn parse_endpoint(s: &str, default_port: u16) -> Result<SocketAddr, String> {
    let s = s.trim();
    let addr = if let Ok(sa) = s.parse::<SocketAddr>() {
        sa
    } else if let Ok(ip) = s.parse::<IpAddr>() {
        SocketAddr::new(ip, default_port)
    } else if let Some(inner) = s.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        let ip: std::net::Ipv6Addr = inner
            .parse()
            .map_err(|_| format!("'{inner}' is not an IPv6 address"))?;
        SocketAddr::new(IpAddr::V6(ip), default_port)
    } else {
        return Err(format!(
            "endpoint '{s}' is not an address, expected \"ip\", \"ip:port\" or \"[v6]:port\""
        ));
    };
    if addr.port() == 0 {
        return Err(format!("endpoint '{s}' has port 0, expected 1-65535"));
    }
    let ip = addr.ip();
    if ip.is_unspecified() || ip.is_multicast() || ip == IpAddr::from([255, 255, 255, 255]) {
        return Err(format!(
            "endpoint '{s}' is not a unicast address a peer could send to"
        ));
    }
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        assert_eq!(
            parse_endpoint("198.51.100.1", 4789).unwrap(),
            "198.51.100.1:4789".parse().unwrap()
        );
        assert_eq!(
            parse_endpoint("203.0.113.7:5000", 4789).unwrap(),
            "203.0.113.7:5000".parse().unwrap()
        );
        assert_eq!(
            parse_endpoint("[2001:db8::1]:5000", 4789).unwrap(),
            "[2001:db8::1]:5000".parse().unwrap()
        );
        assert_eq!(
            parse_endpoint("[2001:db8::1]", 4789).unwrap(),
            "[2001:db8::1]:4789".parse().unwrap()
        );
        assert_eq!(
            parse_endpoint("2001:db8::1", 4789).unwrap(),
            "[2001:db8::1]:4789".parse().unwrap()
        );
        assert!(parse_endpoint("hub.example", 4789).is_err());
        assert!(parse_endpoint("0.0.0.0", 4789).is_err());
        assert!(parse_endpoint("198.51.100.1:0", 4789).is_err());
        assert!(parse_endpoint("[2001:db8::1", 4789).is_err());
    }
}

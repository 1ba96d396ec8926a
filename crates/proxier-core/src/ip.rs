//! Address parsing as Kubernetes tolerates it.

use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;

/// A parsed address, and whether it was written sloppily (IPv4 with leading zeros).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParsedIp {
    /// The address read.
    pub ip: IpAddr,
    /// Whether the text needed tolerance (leading zeros) to be read.
    pub sloppy: bool,
}

/// Parses an address the way Kubernetes' `ParseIPSloppy` does: IPv4 octets with leading zeros are read
/// as decimal (`010.001.002.003` is `10.1.2.3`), since the API server accepted such values before 1.30.
///
/// ```
/// use proxier_core::ip::parse_ip_sloppy;
/// assert_eq!(parse_ip_sloppy("010.096.000.001").unwrap().ip.to_string(), "10.96.0.1");
/// assert!(parse_ip_sloppy("10.96.0.300").is_none());
/// ```
pub fn parse_ip_sloppy(text: &str) -> Option<ParsedIp> {
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(ParsedIp { ip, sloppy: false });
    }
    let mut octets = [0u8; 4];
    let mut parts = text.split('.');
    for octet in &mut octets {
        let part = parts.next()?;
        if part.is_empty() || part.len() > 3 || !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        *octet = part.parse().ok()?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(ParsedIp { ip: IpAddr::V4(Ipv4Addr::from(octets)), sloppy: true })
}

/// Parses a CIDR, tolerating surrounding whitespace and IPv4 leading zeros. Host bits are cleared.
pub fn parse_cidr_sloppy(text: &str) -> Option<IpNet> {
    let text = text.trim();
    let (addr, len) = text.split_once('/')?;
    let ip = parse_ip_sloppy(addr)?.ip;
    let len: u8 = len.parse().ok()?;
    IpNet::new(ip, len).ok().map(|net| net.trunc())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_addresses_are_not_sloppy() {
        let parsed = parse_ip_sloppy("fd00:10:96::a").unwrap();
        assert_eq!(parsed.ip.to_string(), "fd00:10:96::a");
        assert!(!parsed.sloppy);
    }

    #[test]
    fn leading_zeros_are_decimal() {
        let parsed = parse_ip_sloppy("192.168.001.010").unwrap();
        assert_eq!(parsed.ip.to_string(), "192.168.1.10");
        assert!(parsed.sloppy);
    }

    #[test]
    fn garbage_is_rejected() {
        for bad in ["", "10.0.0", "10.0.0.0.1", "1.2.3.4444", "a.b.c.d", "10.0.0.256", " 10.0.0.1", "::g"] {
            assert!(parse_ip_sloppy(bad).is_none(), "{bad:?} parsed");
        }
    }

    #[test]
    fn cidrs_tolerate_spaces_and_clear_host_bits() {
        assert_eq!(parse_cidr_sloppy(" 10.244.1.7/16 ").unwrap().to_string(), "10.244.0.0/16");
        assert!(parse_cidr_sloppy("10.0.0.0/33").is_none());
        assert!(parse_cidr_sloppy("10.0.0.0").is_none());
    }
}

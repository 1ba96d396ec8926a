//! Where NodePorts are served in live mode, as kube-proxy serves them: with `--nodeport-addresses`
//! CIDRs, on every local interface address inside them (secondary NICs, node VIPs; `0.0.0.0/0` and
//! `::/0` mean every local address), kept in step as addresses come and go; with `primary` (the
//! default), on the Node's primary address of each family. Loopback and IPv6 link-local addresses
//! are left out: NodePorts are not served there in nftables mode.

use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::Node;
use proxier_core::NodeConfig;

/// The addresses on this namespace's interfaces (getifaddrs), sorted, without loopback and IPv6
/// link-local ones.
pub fn local_addresses() -> std::io::Result<Vec<IpAddr>> {
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list` with a linked list we free below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut addresses = Vec::new();
    let mut cursor = list;
    while !cursor.is_null() {
        // SAFETY: `cursor` is a node of the list getifaddrs returned, not yet freed.
        let entry = unsafe { &*cursor };
        cursor = entry.ifa_next;
        if entry.ifa_addr.is_null() {
            continue;
        }
        // SAFETY: ifa_addr points to a sockaddr whose family says which struct it is.
        let family = i32::from(unsafe { (*entry.ifa_addr).sa_family });
        let ip = match family {
            libc::AF_INET => {
                // SAFETY: an AF_INET sockaddr is a sockaddr_in.
                let address = unsafe { &*(entry.ifa_addr as *const libc::sockaddr_in) };
                IpAddr::from(u32::from_be(address.sin_addr.s_addr).to_be_bytes())
            }
            libc::AF_INET6 => {
                // SAFETY: an AF_INET6 sockaddr is a sockaddr_in6.
                let address = unsafe { &*(entry.ifa_addr as *const libc::sockaddr_in6) };
                IpAddr::from(address.sin6_addr.s6_addr)
            }
            _ => continue,
        };
        addresses.push(ip);
    }
    // SAFETY: `list` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(list) };
    addresses.retain(usable);
    addresses.sort();
    addresses.dedup();
    Ok(addresses)
}

fn usable(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !v4.is_loopback() && !v4.is_unspecified(),
        IpAddr::V6(v6) => !v6.is_loopback() && !v6.is_unspecified() && (v6.segments()[0] & 0xffc0) != 0xfe80,
    }
}

/// The node configuration to program, from the configured one (`base`), the Node object and the local
/// addresses. Without CIDRs, `base` as it is. With CIDRs: the Node's addresses then the local ones are
/// the node's addresses, and NodePorts are served on those inside the CIDRs (and, with `primary`
/// beside them, on the Node's primary address of each family).
pub fn resolve(base: &NodeConfig, primary: bool, cidrs: &[IpNet], node: Option<&Node>, local: &[IpAddr]) -> NodeConfig {
    if cidrs.is_empty() {
        return base.clone();
    }
    let mut config = base.clone();
    let from_node = proxier_core::node::node_ips(node, base, &mut Vec::new());
    let mut ips = from_node.clone();
    ips.extend(local.iter().filter(|ip| !from_node.contains(ip)));
    config.node_ips = ips;
    config.nodeport_addresses = cidrs.to_vec();
    if primary {
        for family in [true, false] {
            if let Some(&ip) = from_node.iter().find(|ip| ip.is_ipv4() == family) {
                config.nodeport_addresses.push(IpNet::from(ip));
            }
        }
    }
    config
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{NodeAddress, NodeStatus};
    use proxier_core::IpFamily;

    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn node(addresses: &[&str]) -> Node {
        Node {
            status: Some(NodeStatus {
                addresses: Some(
                    addresses
                        .iter()
                        .map(|a| NodeAddress { type_: "InternalIP".into(), address: a.to_string() })
                        .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn served(config: &NodeConfig, family: IpFamily) -> Vec<IpAddr> {
        proxier_core::node::node_port_ips(&config.node_ips, config, family)
    }

    #[test]
    fn cidrs_match_every_local_address() {
        let base = NodeConfig { node_name: "n".into(), ..Default::default() };
        let node = node(&["192.168.50.1", "fd00::1"]);
        let local = [ip("192.168.50.1"), ip("10.9.0.7"), ip("172.16.0.4"), ip("fd00::1")];
        // Without CIDRs: the Node's primary addresses, as configured.
        assert_eq!(resolve(&base, true, &[], Some(&node), &local), base);
        // A CIDR: every local address inside it, not only the Node object's.
        let config = resolve(&base, false, &["10.0.0.0/8".parse().unwrap()], Some(&node), &local);
        assert_eq!(served(&config, IpFamily::V4), [ip("10.9.0.7")]);
        assert!(served(&config, IpFamily::V6).is_empty());
        // 0.0.0.0/0: every local IPv4 address.
        let config = resolve(&base, false, &["0.0.0.0/0".parse().unwrap()], Some(&node), &local);
        assert_eq!(served(&config, IpFamily::V4), [ip("10.9.0.7"), ip("172.16.0.4"), ip("192.168.50.1")]);
        // `primary` beside a CIDR: the primary address of each family too.
        let config = resolve(&base, true, &["10.0.0.0/8".parse().unwrap()], Some(&node), &local);
        assert_eq!(served(&config, IpFamily::V4), [ip("10.9.0.7"), ip("192.168.50.1")]);
        assert_eq!(served(&config, IpFamily::V6), [ip("fd00::1")]);
        // The Node's addresses stay first, so the primary address of each family is unchanged.
        assert_eq!(config.node_ips[0], ip("192.168.50.1"));
    }

    #[test]
    fn local_addresses_skip_loopback_and_link_local() {
        let addresses = local_addresses().unwrap();
        assert!(addresses.iter().all(usable), "{addresses:?}");
        assert!(!usable(&ip("127.0.0.1")) && !usable(&ip("::1")) && !usable(&ip("fe80::1")));
        assert!(usable(&ip("10.0.0.1")) && usable(&ip("2001:db8::1")));
    }
}

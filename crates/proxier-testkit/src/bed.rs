//! The cluster topology: a switch, nodes, pods and an outside client (see the crate docs).

use std::fmt::Write as _;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::netns::{Netns, context};
use crate::server::{Server, serve};
use crate::sock::Proto;

/// IPv4 node network; the switch (gateway) is .1, node `i` is `.(10+i)`, the client `.100`.
pub const NODE_NET_V4: &str = "192.168.49.0/24";
/// IPv6 node network; the switch is `::1`, node `i` is `::(10+i)` written in decimal digits
/// (node 1 → `fd00:49::11`), the client `::100`.
pub const NODE_NET_V6: &str = "fd00:49::/64";
/// The switch's own addresses: the nodes' default gateway, which silently discards.
pub const GATEWAY_IPV4: Ipv4Addr = Ipv4Addr::new(192, 168, 49, 1);
pub const GATEWAY_IPV6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x49, 0, 0, 0, 0, 0, 0x1);
/// The outside client's addresses.
pub const CLIENT_IPV4: Ipv4Addr = Ipv4Addr::new(192, 168, 49, 100);
pub const CLIENT_IPV6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x49, 0, 0, 0, 0, 0, 0x100);
/// Pod addresses of all nodes (node `i` owns `10.244.i.0/24` and `fd00:10:244:i::/64`).
pub const CLUSTER_CIDR_V4: &str = "10.244.0.0/16";
pub const CLUSTER_CIDR_V6: &str = "fd00:10:244::/48";
/// Service ClusterIP ranges.
pub const SERVICE_CIDR_V4: &str = "10.96.0.0/16";
pub const SERVICE_CIDR_V6: &str = "fd00:10:96::/112";
/// Ranges for LoadBalancer and external IPs (documentation ranges).
pub const EXTERNAL_CIDRS_V4: [&str; 2] = ["203.0.113.0/24", "198.51.100.0/24"];
pub const EXTERNAL_CIDRS_V6: [&str; 1] = ["2001:db8::/64"];

/// Most nodes a bed can have (names `node-a` … `node-z`).
pub const MAX_NODES: usize = 26;

/// Node `i`'s (1-based) IPv4 address on the node network: node 1 → 192.168.49.11.
pub fn node_ipv4(i: usize) -> Ipv4Addr {
    assert!((1..=MAX_NODES).contains(&i), "node index {i} out of 1..={MAX_NODES}");
    Ipv4Addr::new(192, 168, 49, 10 + i as u8)
}

/// Node `i`'s IPv6 address: node 1 → fd00:49::11 (the decimal digits of the IPv4 octet).
pub fn node_ipv6(i: usize) -> Ipv6Addr {
    format!("fd00:49::{}", node_ipv4(i).octets()[3]).parse().expect("valid IPv6")
}

/// Node `i`'s name: node 1 → `node-a`.
pub fn node_name(i: usize) -> String {
    assert!((1..=MAX_NODES).contains(&i), "node index {i} out of 1..={MAX_NODES}");
    format!("node-{}", (b'a' + (i - 1) as u8) as char)
}

/// Node `i`'s pod CIDRs: `10.244.i.0/24`, `fd00:10:244:i::/64`.
pub fn pod_cidrs(i: usize) -> [String; 2] {
    [format!("10.244.{i}.0/24"), format!("fd00:10:244:{i}::/64")]
}

/// The `k`th address (2..=254) of node `i`'s pod CIDRs; `k == 1` is the node's own pod-side
/// gateway address.
fn pod_ips(i: usize, k: u8) -> (Ipv4Addr, Ipv6Addr) {
    (Ipv4Addr::new(10, 244, i as u8, k), format!("fd00:10:244:{i}::{k}").parse().expect("valid IPv6"))
}

/// Sysctls every namespace of a bed gets, before any interface exists (so `default` applies to
/// all interfaces): no DAD delays, no reverse-path filtering, no ICMP redirects (a redirect
/// would teach the client a route around node 1 and change later probes).
const BASE_SYSCTLS: [(&str, &str); 10] = [
    ("net.ipv6.conf.all.accept_dad", "0"),
    ("net.ipv6.conf.default.accept_dad", "0"),
    ("net.ipv4.conf.all.rp_filter", "0"),
    ("net.ipv4.conf.default.rp_filter", "0"),
    ("net.ipv4.conf.all.accept_redirects", "0"),
    ("net.ipv4.conf.default.accept_redirects", "0"),
    ("net.ipv6.conf.all.accept_redirects", "0"),
    ("net.ipv6.conf.default.accept_redirects", "0"),
    ("net.ipv4.conf.all.send_redirects", "0"),
    ("net.ipv4.conf.default.send_redirects", "0"),
];

fn new_ns(role: &str, extra_sysctls: &[(&str, &str)]) -> io::Result<Netns> {
    let ns = Netns::new(role)?;
    ns.sysctl(&BASE_SYSCTLS)?;
    ns.sysctl(extra_sysctls)?;
    Ok(ns)
}

/// A node: a namespace on the node network that routes for its pods.
#[derive(Debug)]
pub struct Node {
    netns: Netns,
    index: usize,
    name: String,
    zone: String,
    next_pod: u8,
}

impl Node {
    /// 1-based position; node `i` has the addresses [`node_ipv4`]`(i)` / [`node_ipv6`]`(i)`.
    pub fn index(&self) -> usize {
        self.index
    }

    /// `node-a`, `node-b`, …
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The `topology.kubernetes.io/zone` label value.
    pub fn zone(&self) -> &str {
        &self.zone
    }

    pub fn ipv4(&self) -> Ipv4Addr {
        node_ipv4(self.index)
    }

    pub fn ipv6(&self) -> Ipv6Addr {
        node_ipv6(self.index)
    }

    /// `[ipv4, ipv6]`.
    pub fn ips(&self) -> [IpAddr; 2] {
        [self.ipv4().into(), self.ipv6().into()]
    }

    /// `["10.244.i.0/24", "fd00:10:244:i::/64"]`.
    pub fn pod_cidrs(&self) -> [String; 2] {
        pod_cidrs(self.index)
    }

    pub fn netns(&self) -> &Netns {
        &self.netns
    }

    /// A server in the node's namespace (a hostNetwork endpoint) answering with the node name.
    pub fn serve(&self, proto: Proto, port: u16) -> io::Result<Server> {
        serve(&self.netns, &self.name, proto, port)
    }
}

impl AsRef<Netns> for Node {
    fn as_ref(&self) -> &Netns {
        &self.netns
    }
}

/// A pod: a namespace joined to its node by a veth.
#[derive(Debug)]
pub struct Pod {
    netns: Netns,
    name: String,
    node: usize,
    node_name: String,
    ipv4: Ipv4Addr,
    ipv6: Ipv6Addr,
}

impl Pod {
    /// The pod name; its servers answer with it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Index of the node it runs on (1-based).
    pub fn node_index(&self) -> usize {
        self.node
    }

    /// Name of the node it runs on (EndpointSlice `nodeName`).
    pub fn node_name(&self) -> &str {
        &self.node_name
    }

    pub fn ipv4(&self) -> Ipv4Addr {
        self.ipv4
    }

    pub fn ipv6(&self) -> Ipv6Addr {
        self.ipv6
    }

    /// `[ipv4, ipv6]`.
    pub fn ips(&self) -> [IpAddr; 2] {
        [self.ipv4.into(), self.ipv6.into()]
    }

    pub fn netns(&self) -> &Netns {
        &self.netns
    }

    /// A server in the pod answering with the pod name.
    pub fn serve(&self, proto: Proto, port: u16) -> io::Result<Server> {
        serve(&self.netns, &self.name, proto, port)
    }
}

impl AsRef<Netns> for Pod {
    fn as_ref(&self) -> &Netns {
        &self.netns
    }
}

/// Builder for a [`TestBed`] with chosen zones.
#[derive(Debug, Default, Clone)]
pub struct TestBedBuilder {
    zones: Vec<String>,
}

impl TestBedBuilder {
    /// Adds the next node (`node-a`, `node-b`, …) in `zone`.
    pub fn node(mut self, zone: impl Into<String>) -> Self {
        self.zones.push(zone.into());
        self
    }

    pub fn build(self) -> io::Result<TestBed> {
        TestBed::build(self.zones)
    }
}

/// The switch, the nodes, the pods and the outside client; all namespaces are deleted on drop.
#[derive(Debug)]
pub struct TestBed {
    switch: Netns,
    client: Netns,
    nodes: Vec<Node>,
    pods: Vec<Pod>,
}

impl TestBed {
    /// `nodes` nodes (1..=26), node `x` in zone `zone-x` (`node-a` in `zone-a`, …).
    pub fn new(nodes: usize) -> io::Result<TestBed> {
        (1..=nodes).fold(TestBed::builder(), |b, i| b.node(node_name(i).replacen("node", "zone", 1))).build()
    }

    pub fn builder() -> TestBedBuilder {
        TestBedBuilder::default()
    }

    fn build(zones: Vec<String>) -> io::Result<TestBed> {
        if zones.is_empty() || zones.len() > MAX_NODES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("a test bed needs 1..={MAX_NODES} nodes, not {}", zones.len()),
            ));
        }
        // The switch: a bridge for the node network, whose own addresses act as the nodes'
        // default gateway. It does not forward (ip_forward=0) and has blackhole default routes,
        // so whatever the nodes send "out" is discarded without any ICMP error.
        let switch = new_ns("switch", &[])?;
        switch
            .ip_batch(&format!(
                "link add br0 type bridge mcast_snooping 0\n\
                 addr add {GATEWAY_IPV4}/24 dev br0\n\
                 addr add {GATEWAY_IPV6}/64 dev br0 nodad\n\
                 link set br0 up\n\
                 route add blackhole default\n\
                 route add blackhole ::/0\n"
            ))
            .map_err(|e| context(e, "switch"))?;

        // The outside client: only on the node network; service and external ranges via node 1.
        let client = new_ns("client", &[])?;
        attach_to_switch(&switch, &client, "client")?;
        client.ip_batch(&format!(
            "addr add {CLIENT_IPV4}/24 dev eth0\n\
             addr add {CLIENT_IPV6}/64 dev eth0 nodad\n\
             link set eth0 up\n"
        ))?;

        let mut nodes = Vec::with_capacity(zones.len());
        for (i, zone) in (1..).zip(zones) {
            let name = node_name(i);
            let netns = new_ns(&name, &[("net.ipv4.ip_forward", "1"), ("net.ipv6.conf.all.forwarding", "1")])?;
            attach_to_switch(&switch, &netns, &format!("node{i}"))?;
            netns
                .ip_batch(&format!(
                    "addr add {}/24 dev eth0\n\
                     addr add {}/64 dev eth0 nodad\n\
                     link set eth0 up\n\
                     route add default via {GATEWAY_IPV4} dev eth0\n\
                     route add ::/0 via {GATEWAY_IPV6} dev eth0\n",
                    node_ipv4(i),
                    node_ipv6(i)
                ))
                .map_err(|e| context(e, &name))?;
            nodes.push(Node { netns, index: i, name, zone, next_pod: 2 });
        }
        // Every node routes the other nodes' pod CIDRs to them.
        for node in &nodes {
            let mut routes = String::new();
            for other in nodes.iter().filter(|o| o.index != node.index) {
                let [v4, v6] = other.pod_cidrs();
                let _ = writeln!(routes, "route add {v4} via {} dev eth0", other.ipv4());
                let _ = writeln!(routes, "route add {v6} via {} dev eth0", other.ipv6());
            }
            if !routes.is_empty() {
                node.netns.ip_batch(&routes)?;
            }
        }

        let bed = TestBed { switch, client, nodes, pods: Vec::new() };
        bed.route_external_via(1)?;
        Ok(bed)
    }

    /// Node `i` (1-based). Panics if there is no such node.
    pub fn node(&self, i: usize) -> &Node {
        assert!((1..=self.nodes.len()).contains(&i), "node index {i} out of 1..={}", self.nodes.len());
        &self.nodes[i - 1]
    }

    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The pod called `name`. Panics if there is none.
    pub fn pod(&self, name: &str) -> &Pod {
        self.pods.iter().find(|p| p.name == name).unwrap_or_else(|| panic!("no pod {name:?} in this test bed"))
    }

    pub fn pods(&self) -> &[Pod] {
        &self.pods
    }

    /// The outside client namespace (192.168.49.100, fd00:49::100).
    pub fn client(&self) -> &Netns {
        &self.client
    }

    /// The switch namespace (bridge `br0`, gateway addresses).
    pub fn switch(&self) -> &Netns {
        &self.switch
    }

    /// All namespace names of the bed (switch, client, nodes, pods).
    pub fn netns_names(&self) -> Vec<String> {
        [&self.switch, &self.client]
            .into_iter()
            .chain(self.nodes.iter().map(|n| &n.netns))
            .chain(self.pods.iter().map(|p| &p.netns))
            .map(|ns| ns.name().to_string())
            .collect()
    }

    /// Adds pod `name` (a DNS label: `[a-z0-9-]`, ≤ 63) on node `node` (1-based). It gets the
    /// next free addresses of the node's pod CIDRs, starting at `10.244.i.2` / `fd00:10:244:i::2`.
    pub fn add_pod(&mut self, node: usize, name: &str) -> io::Result<&Pod> {
        self.add_pod_with_host(node, name, None)
    }

    /// Adds pod `name` on node `node` with host number `host` in the node's pod CIDRs
    /// (`10.244.i.host` / `fd00:10:244:i::host`, `host` ≥ 2), so that a scenario can reproduce the
    /// addresses of a cluster snapshot.
    pub fn add_pod_at(&mut self, node: usize, name: &str, host: u8) -> io::Result<&Pod> {
        self.add_pod_with_host(node, name, Some(host))
    }

    fn add_pod_with_host(&mut self, node: usize, name: &str, host: Option<u8>) -> io::Result<&Pod> {
        let valid = !name.is_empty()
            && name.len() <= 63
            && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !valid || self.pods.iter().any(|p| p.name == name) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("pod name {name:?} must be a new DNS label ([a-z0-9-], at most 63)"),
            ));
        }
        if !(1..=self.nodes.len()).contains(&node) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("node index {node} out of 1..={}", self.nodes.len()),
            ));
        }
        let taken: Vec<Ipv4Addr> = self.pods.iter().map(|p| p.ipv4).collect();
        let n = &mut self.nodes[node - 1];
        let k = match host {
            Some(k) if k < 2 || k == 255 => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("pod host number {k} is not in 2..=254"),
                ));
            }
            Some(k) => k,
            None => {
                while n.next_pod < 255 && taken.contains(&pod_ips(node, n.next_pod).0) {
                    n.next_pod += 1;
                }
                n.next_pod
            }
        };
        if k == 255 {
            return Err(io::Error::other(format!("node {} is full", n.name)));
        }
        if taken.contains(&pod_ips(node, k).0) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("pod address .{k} on {} is taken", n.name),
            ));
        }
        if host.is_none() {
            n.next_pod += 1;
        }
        let (ipv4, ipv6) = pod_ips(node, k);
        let (gw4, gw6) = pod_ips(node, 1);
        let netns = new_ns(&format!("pod-{name}"), &[])?;
        let veth = format!("veth{k}");
        let node_ns = &n.netns;
        node_ns
            .ip(&["link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", netns.name()])
            .map_err(|e| context(e, &format!("pod {name}")))?;
        // Node side: the pod gateway address on every pod veth, a host route per pod whose
        // preferred source is the node IP (so node-originated traffic shows the node IP).
        node_ns.ip_batch(&format!(
            "addr add {gw4}/32 dev {veth}\n\
             addr add {gw6}/128 dev {veth} nodad\n\
             link set {veth} up\n\
             route add {ipv4}/32 dev {veth} src {}\n\
             route add {ipv6}/128 dev {veth} src {}\n",
            n.ipv4(),
            n.ipv6()
        ))?;
        // Pod side: host addresses, the gateway on-link, default route via the gateway.
        netns.ip_batch(&format!(
            "addr add {ipv4}/32 dev eth0\n\
             addr add {ipv6}/128 dev eth0 nodad\n\
             link set eth0 up\n\
             route add {gw4}/32 dev eth0 scope link src {ipv4}\n\
             route add default via {gw4} dev eth0 src {ipv4}\n\
             route add {gw6}/128 dev eth0 src {ipv6}\n\
             route add ::/0 via {gw6} dev eth0 src {ipv6}\n"
        ))?;
        let node_name = n.name.clone();
        self.pods.push(Pod { netns, name: name.to_string(), node, node_name, ipv4, ipv6 });
        Ok(self.pods.last().expect("just pushed"))
    }

    /// Points the client's routes for the service CIDRs and the external ranges at node `node`
    /// (node 1 after [`TestBed::new`]), e.g. to test externalTrafficPolicy: Local on another node.
    pub fn route_external_via(&self, node: usize) -> io::Result<()> {
        let n = self.node(node);
        let mut routes = String::new();
        for cidr in std::iter::once(SERVICE_CIDR_V4).chain(EXTERNAL_CIDRS_V4) {
            let _ = writeln!(routes, "route replace {cidr} via {} dev eth0", n.ipv4());
        }
        for cidr in std::iter::once(SERVICE_CIDR_V6).chain(EXTERNAL_CIDRS_V6) {
            let _ = writeln!(routes, "route replace {cidr} via {} dev eth0", n.ipv6());
        }
        self.client.ip_batch(&routes)
    }

    /// The `kind: Node` objects of the bed as multi-document YAML (`---` separated), for a
    /// snapshot: name, `kubernetes.io/hostname` and `topology.kubernetes.io/zone` labels,
    /// `spec.podCIDR(s)`, InternalIP addresses (IPv4 then IPv6) and Hostname.
    pub fn nodes_yaml(&self) -> String {
        let mut out = String::new();
        for (i, n) in self.nodes.iter().enumerate() {
            if i > 0 {
                out.push_str("---\n");
            }
            let [v4cidr, v6cidr] = n.pod_cidrs();
            let _ = write!(
                out,
                "apiVersion: v1\n\
                 kind: Node\n\
                 metadata:\n  \
                   name: {name}\n  \
                   labels:\n    \
                     kubernetes.io/hostname: {name}\n    \
                     topology.kubernetes.io/zone: {zone}\n\
                 spec:\n  \
                   podCIDR: {v4cidr}\n  \
                   podCIDRs:\n  \
                   - {v4cidr}\n  \
                   - {v6cidr}\n\
                 status:\n  \
                   addresses:\n  \
                   - type: InternalIP\n    \
                     address: {v4}\n  \
                   - type: InternalIP\n    \
                     address: {v6}\n  \
                   - type: Hostname\n    \
                     address: {name}\n",
                name = n.name,
                zone = yaml_str(&n.zone),
                v4 = n.ipv4(),
                v6 = n.ipv6(),
            );
        }
        out
    }
}

/// A YAML double-quoted scalar (zones are free text).
fn yaml_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Joins `ns` to the switch bridge: `eth0` in `ns`, `port` (≤ 15 chars) in the switch.
fn attach_to_switch(switch: &Netns, ns: &Netns, port: &str) -> io::Result<()> {
    switch
        .ip(&["link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns.name()])
        .map_err(|e| context(e, &format!("veth {port} to {}", ns.name())))?;
    switch.ip_batch(&format!("link set {port} master br0\nlink set {port} up\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addressing_plan() {
        assert_eq!(node_ipv4(1).to_string(), "192.168.49.11");
        assert_eq!(node_ipv6(1).to_string(), "fd00:49::11");
        assert_eq!(node_ipv4(12).to_string(), "192.168.49.22");
        assert_eq!(node_name(2), "node-b");
        assert_eq!(pod_cidrs(3), ["10.244.3.0/24", "fd00:10:244:3::/64"]);
        let (v4, v6) = pod_ips(2, 3);
        assert_eq!((v4.to_string(), v6.to_string()), ("10.244.2.3".into(), "fd00:10:244:2::3".into()));
    }

    #[test]
    fn zones_are_quoted() {
        assert_eq!(yaml_str("zone-a"), "\"zone-a\"");
        assert_eq!(yaml_str("a\"b"), "\"a\\\"b\"");
    }
}

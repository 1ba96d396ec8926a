//! What proxier needs to know about the node it programs, beyond the cluster snapshot.

use std::net::IpAddr;

use ipnet::IpNet;

/// Node-level settings; the CLI flags of the same names fill it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeConfig {
    /// The Node object's name; endpoints on this node are local.
    pub node_name: String,
    /// Overrides the addresses read from the Node's `status.addresses` (`--node-ip`).
    pub node_ips: Vec<IpAddr>,
    /// The pod network (`--cluster-cidr`): sources inside are pods, others are masqueraded when they
    /// reach a ClusterIP. Empty means no local-traffic detector.
    pub cluster_cidrs: Vec<IpNet>,
    /// Restricts NodePorts to node addresses in these ranges (`--nodeport-addresses`). Empty means the
    /// node's primary address of each family, as kube-proxy's nftables mode does.
    pub nodeport_addresses: Vec<IpNet>,
    /// Masquerade every connection to a ClusterIP (`--masquerade-all`).
    pub masquerade_all: bool,
}

//! What proxier needs to know about the node it programs, beyond the cluster snapshot.

use std::net::IpAddr;

use ipnet::IpNet;

/// How pods are told apart from other sources (`--detect-local-mode` and its companion flags).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum DetectLocal {
    /// Sources inside `--cluster-cidr` are pods (kube-proxy's default).
    #[default]
    ClusterCidr,
    /// Sources inside this Node's `spec.podCIDRs` are pods.
    NodeCidr,
    /// Packets arriving on this bridge (`--pod-bridge-interface`) come from pods.
    BridgeInterface(String),
    /// Packets arriving on interfaces named with this prefix (`--pod-interface-name-prefix`) come from pods.
    InterfaceNamePrefix(String),
}

/// Node-level settings; the CLI flags of the same names fill it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeConfig {
    /// The Node object's name; endpoints on this node are local.
    pub node_name: String,
    /// Overrides the addresses read from the Node's `status.addresses` (`--node-ip`).
    pub node_ips: Vec<IpAddr>,
    /// The pod network (`--cluster-cidr`).
    pub cluster_cidrs: Vec<IpNet>,
    /// How pod sources are recognised; without one, ClusterIP traffic is not masqueraded by source.
    pub detect_local: DetectLocal,
    /// Restricts NodePorts to node addresses in these ranges (`--nodeport-addresses`). Empty means the
    /// node's primary address of each family (`primary`), as kube-proxy's nftables mode does.
    pub nodeport_addresses: Vec<IpNet>,
    /// The Service ranges (`--service-cidr`): an address in them that is no ClusterIP is dropped.
    pub service_cidrs: Vec<IpNet>,
    /// Masquerade every connection to a ClusterIP (`--masquerade-all`).
    pub masquerade_all: bool,
}

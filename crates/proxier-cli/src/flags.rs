//! Flag groups shared by several commands (`render`, `apply`, `diff`, `delete`, `trace`, `run`): the
//! snapshot, the node being programmed, and proxier's table. Flags are named as kube-proxy names them
//! wherever kube-proxy has them. A leaf module: it uses nothing else of the binary.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Args, ValueEnum};
use ipnet::IpNet;
use proxier_core::{DetectLocal, NodeConfig};

/// The snapshot to read and the node to compute rules for.
#[derive(Debug, Args)]
pub struct Input {
    /// Files or directories of `kubectl get svc,endpointslices,nodes -A -o yaml|json` output.
    #[arg(long, required = true, num_args = 1.., value_name = "PATH")]
    pub snapshot: Vec<PathBuf>,
    #[command(flatten)]
    pub node: NodeArgs,
}

/// The node being programmed and how; shared by every command that computes rules.
#[derive(Debug, Args)]
pub struct NodeArgs {
    /// The Node this ruleset is for (`proxier run`: default --hostname-override, else the host name).
    #[arg(long, value_name = "NAME")]
    pub node: Option<String>,
    /// The pod network; non-pod sources reaching a ClusterIP are masqueraded. Comma-separated or repeated.
    #[arg(long, value_delimiter = ',', value_name = "CIDR")]
    pub cluster_cidr: Vec<IpNet>,
    /// How pod sources are recognised [default: ClusterCIDR].
    #[arg(long, value_enum)]
    pub detect_local_mode: Option<DetectLocalMode>,
    /// The pods' bridge, with --detect-local-mode BridgeInterface.
    #[arg(long, value_name = "NAME", value_parser = interface_name)]
    pub pod_bridge_interface: Option<String>,
    /// The pods' interface name prefix, with --detect-local-mode InterfaceNamePrefix.
    #[arg(long, value_name = "PREFIX", value_parser = interface_name)]
    pub pod_interface_name_prefix: Option<String>,
    /// Serve NodePorts only on node addresses inside these ranges, or `primary` (the default): the
    /// node's primary address of each family.
    #[arg(long, value_delimiter = ',', value_name = "CIDR|primary", value_parser = nodeport_address)]
    pub nodeport_addresses: Vec<Option<IpNet>>,
    /// The Service ranges: an address in them that no Service holds is dropped.
    #[arg(long, value_delimiter = ',', value_name = "CIDR")]
    pub service_cidr: Vec<IpNet>,
    /// Masquerade every connection to a ClusterIP.
    #[arg(long)]
    pub masquerade_all: bool,
    /// The node's addresses, overriding the Node object's status.addresses. Repeatable.
    #[arg(long, value_delimiter = ',', value_name = "IP")]
    pub node_ip: Vec<IpAddr>,
    /// Lay out the rules without per-Service counters (`proxier stats` and the counter metrics then
    /// have nothing to report).
    #[arg(long)]
    pub no_counters: bool,
    #[command(flatten)]
    pub nft: NftArgs,
}

/// `--detect-local-mode`, spelled as kube-proxy spells it.
#[allow(clippy::upper_case_acronyms)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DetectLocalMode {
    #[value(name = "ClusterCIDR")]
    ClusterCIDR,
    #[value(name = "NodeCIDR")]
    NodeCIDR,
    #[value(name = "BridgeInterface")]
    BridgeInterface,
    #[value(name = "InterfaceNamePrefix")]
    InterfaceNamePrefix,
}

impl DetectLocalMode {
    /// The detector of this mode, given the bridge or interface prefix it may need.
    pub fn detector(self, bridge: Option<String>, prefix: Option<String>) -> Result<DetectLocal, String> {
        Ok(match self {
            DetectLocalMode::ClusterCIDR => DetectLocal::ClusterCidr,
            DetectLocalMode::NodeCIDR => DetectLocal::NodeCidr,
            DetectLocalMode::BridgeInterface => DetectLocal::BridgeInterface(
                bridge
                    .ok_or("detect-local-mode BridgeInterface needs a pod bridge interface (--pod-bridge-interface)")?,
            ),
            DetectLocalMode::InterfaceNamePrefix => DetectLocal::InterfaceNamePrefix(prefix.ok_or(
                "detect-local-mode InterfaceNamePrefix needs an interface name prefix (--pod-interface-name-prefix)",
            )?),
        })
    }
}

impl NodeArgs {
    /// The node configuration these flags describe; `--node` is required.
    pub fn config(&self) -> Result<NodeConfig, String> {
        let name = self.node.clone().ok_or("--node NAME is required: the Node these rules are for")?;
        self.config_named(name)
    }

    /// The node configuration these flags describe, for the Node `name`.
    pub fn config_named(&self, name: String) -> Result<NodeConfig, String> {
        let detect_local = self
            .detect_local_mode
            .unwrap_or(DetectLocalMode::ClusterCIDR)
            .detector(self.pod_bridge_interface.clone(), self.pod_interface_name_prefix.clone())?;
        Ok(NodeConfig {
            node_name: name,
            node_ips: self.node_ip.clone(),
            cluster_cidrs: self.cluster_cidr.clone(),
            detect_local,
            // `primary` is the default; beside CIDRs it is resolved where the Node is known (`render`,
            // `apply` and `diff` from the snapshot, `run` live).
            nodeport_addresses: self.nodeport_addresses.iter().flatten().copied().collect(),
            service_cidrs: self.service_cidr.clone(),
            masquerade_all: self.masquerade_all,
        })
    }
}

/// One `--nodeport-addresses` entry: a CIDR, or `primary` (`None`).
pub fn nodeport_address(text: &str) -> Result<Option<IpNet>, String> {
    if text == "primary" {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|e| format!("{text:?} is neither a CIDR nor `primary`: {e}"))
}

/// Interface names reach nft rules: allow only what the kernel allows in one (at most 15 bytes).
pub fn interface_name(name: &str) -> Result<String, String> {
    let valid =
        !name.is_empty() && name.len() <= 15 && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c));
    if valid {
        Ok(name.to_owned())
    } else {
        Err("an interface name is 1-15 letters, digits, '-', '_', '.' or '@'".into())
    }
}

/// proxier's table and the program that changes it.
#[derive(Debug, Args)]
pub struct NftArgs {
    /// Name of proxier's table in the ip and ip6 families.
    #[arg(long, default_value = "proxier", value_name = "NAME", value_parser = table_name)]
    pub table: String,
    /// The nft program to run.
    #[arg(long, default_value = "nft", value_name = "PATH")]
    pub nft: PathBuf,
}

/// Table names go into nft commands: allow only what nft's grammar takes as a plain identifier.
fn table_name(name: &str) -> Result<String, String> {
    let mut chars = name.chars();
    let valid = name.len() <= 64
        && chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if valid {
        Ok(name.to_owned())
    } else {
        Err("a table name is a letter followed by up to 63 letters, digits, '_' or '-'".into())
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Render {
        #[command(flatten)]
        input: Input,
    }

    #[test]
    fn the_one_shot_commands_need_a_node_name() {
        let render = Render::try_parse_from(["render", "--snapshot", "x.yaml"]).unwrap();
        assert_eq!(render.input.node.config().unwrap_err(), "--node NAME is required: the Node these rules are for");
        let render = Render::try_parse_from(["render", "--snapshot", "x.yaml", "--node", "a"]).unwrap();
        assert_eq!(render.input.node.config().unwrap().node_name, "a");
    }
}

//! Flag groups shared by several commands (`render`, `apply`, `diff`, `delete`, `trace`, `explain`, `run`):
//! the snapshot, the node being programmed, proxier's table, and the one output flag. Flags are named as
//! kube-proxy names them wherever kube-proxy has them, and as kubectl names them otherwise (`-f`, `-o`,
//! `-n`, `-A`). A leaf module: it uses nothing else of the binary.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{ArgAction, Args, ValueEnum};
use ipnet::IpNet;
use proxier_core::{DetectLocal, NodeConfig};

/// The snapshot to read and the node to compute rules for.
#[derive(Debug, Args)]
pub struct Input {
    #[command(flatten)]
    pub snapshot: SnapshotArgs,
    #[command(flatten)]
    pub node: NodeArgs,
}

/// Where the cluster objects come from, and how much is said about them on stderr.
#[derive(Debug, Args)]
pub struct SnapshotArgs {
    /// A file or directory of `kubectl get svc,endpointslices,nodes -A -o yaml|json` output, or `-` for
    /// stdin. Repeatable: `-f a.yaml -f dir/`.
    #[arg(short = 'f', long = "snapshot", visible_alias = "filename", required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Print every note, not only the first few of each kind.
    #[arg(short = 'v', long = "verbose", action = ArgAction::Count)]
    pub verbose: u8,
}

/// The one output flag, `-o/--output`, of every command that prints data. Each command accepts the
/// formats that fit it (see [`output_parser`]); `--help` lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// For people.
    Text,
    /// For programs; versioned where proxier defines the schema (`apiVersion`, `kind`).
    Json,
    /// The same as `json`, as YAML.
    Yaml,
    /// nft's text syntax (what `nft -f` reads).
    Nft,
}

/// `apiVersion` of the JSON and YAML that proxier defines (`trace`, `explain`, `stats`, `version`):
/// fields are only ever added within one version.
pub const API_VERSION: &str = "proxier.dev/v1";

/// The value parser for `-o/--output` of a command that prints `allowed` (the first is its default):
///
/// ```ignore
/// #[arg(short = 'o', long = "output", default_value = "text", value_parser = output_parser(&[Output::Text, Output::Json]))]
/// output: Output,
/// ```
pub fn output_parser(allowed: &'static [Output]) -> impl TypedValueParser<Value = Output> {
    let names: Vec<&'static str> = allowed.iter().map(|o| o.name()).collect();
    PossibleValuesParser::new(names).map(|name: String| {
        // PossibleValuesParser let through only the names of `allowed`.
        Output::ALL.into_iter().find(|o| o.name() == name).unwrap_or(Output::Text)
    })
}

impl Output {
    const ALL: [Output; 4] = [Output::Text, Output::Json, Output::Yaml, Output::Nft];

    /// The name `-o` takes.
    pub fn name(self) -> &'static str {
        match self {
            Output::Text => "text",
            Output::Json => "json",
            Output::Yaml => "yaml",
            Output::Nft => "nft",
        }
    }
}

/// A document whose schema proxier defines, as `-o json` and `-o yaml` print it: `apiVersion` and `kind`
/// first, then the document's own fields.
#[derive(Debug, serde::Serialize)]
pub struct Versioned<'a, T: serde::Serialize> {
    #[serde(rename = "apiVersion")]
    pub api_version: &'static str,
    pub kind: &'static str,
    #[serde(flatten)]
    pub body: &'a T,
}

/// `body` as `-o json` (pretty, with a final newline) or `-o yaml` print it, under [`API_VERSION`] and
/// `kind`; `None` for the other formats, which each command prints its own way.
pub fn document<T: serde::Serialize>(output: Output, kind: &'static str, body: &T) -> Option<Result<String, String>> {
    let versioned = Versioned { api_version: API_VERSION, kind, body };
    match output {
        Output::Json => Some(serde_json::to_string_pretty(&versioned).map(|t| t + "\n").map_err(|e| e.to_string())),
        Output::Yaml => Some(serde_yaml_ng::to_string(&versioned).map_err(|e| e.to_string())),
        Output::Text | Output::Nft => None,
    }
}

/// A CIDR, with errors that name the bad part (the address or the prefix length).
pub fn cidr(text: &str) -> Result<IpNet, String> {
    let Some((address, prefix)) = text.split_once('/') else {
        return Err(format!("{text:?} is not a CIDR: expected ADDRESS/PREFIX-LENGTH, e.g. 10.244.0.0/16"));
    };
    let address: IpAddr =
        address.parse().map_err(|_| format!("{text:?}: {address:?} is not an IPv4 or IPv6 address"))?;
    let max = if address.is_ipv4() { 32 } else { 128 };
    let family = if address.is_ipv4() { "IPv4" } else { "IPv6" };
    let length: u8 = prefix
        .parse()
        .ok()
        .filter(|&l| l <= max)
        .ok_or_else(|| format!("{text:?}: prefix length {prefix:?} is not a number from 0 to {max} ({family})"))?;
    IpNet::new(address, length).map_err(|e| format!("{text:?}: {e}"))
}

/// An IP address, with an error that names it.
pub fn ip_address(text: &str) -> Result<IpAddr, String> {
    text.parse().map_err(|_| format!("{text:?} is not an IPv4 or IPv6 address"))
}

/// One entry of `--nodeport-addresses` (every command) or of a configuration file's `nodePortAddresses`:
/// the forms kube-proxy takes, read by this one parser so they mean the same everywhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodePortAddress {
    /// `primary`: the Node's primary address of each family (the default).
    Primary,
    /// `all`: every node address, as `0.0.0.0/0` and `::/0` together.
    All,
    /// `localhost`: loopback addresses, on which nftables mode serves no NodePorts.
    Localhost,
    /// A CIDR: the node's addresses inside it (`0.0.0.0/0` and `::/0`: every address of the family).
    Cidr(IpNet),
}

/// Why `localhost` changes nothing: said wherever it is given.
pub const LOCALHOST_NODEPORTS: &str = "NodePorts are not served on loopback addresses in nftables mode";

/// `--nodeport-addresses` / `nodePortAddresses`: a CIDR, `primary`, `all` or `localhost`; an error names
/// the bad part.
pub fn nodeport_address(text: &str) -> Result<NodePortAddress, String> {
    match text {
        "primary" => Ok(NodePortAddress::Primary),
        "all" => Ok(NodePortAddress::All),
        "localhost" => Ok(NodePortAddress::Localhost),
        _ => cidr(text).map(NodePortAddress::Cidr).map_err(|e| format!("{e}; or `primary`, `all` or `localhost`")),
    }
}

/// What a list of [`NodePortAddress`]es means.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodePortAddresses {
    /// The Node's primary addresses are served: `primary` was named, or no CIDR was (the default).
    pub primary: bool,
    /// The node's addresses inside these are served (`all`: `0.0.0.0/0` and `::/0`).
    pub cidrs: Vec<IpNet>,
    /// `localhost` was named (and is not served: [`LOCALHOST_NODEPORTS`]).
    pub localhost: bool,
}

impl NodePortAddresses {
    /// The meaning of `entries`, in their order.
    pub fn new(entries: &[NodePortAddress]) -> NodePortAddresses {
        let mut cidrs = Vec::new();
        for entry in entries {
            match entry {
                NodePortAddress::Cidr(net) => cidrs.push(*net),
                NodePortAddress::All => cidrs.extend(ALL_ADDRESSES.map(|(address, length)| {
                    IpNet::new(address, length).expect("a zero-length prefix is valid for both families")
                })),
                NodePortAddress::Primary | NodePortAddress::Localhost => {}
            }
        }
        NodePortAddresses {
            primary: cidrs.is_empty() || entries.contains(&NodePortAddress::Primary),
            cidrs,
            localhost: entries.contains(&NodePortAddress::Localhost),
        }
    }
}

/// `all`: the zero CIDRs of both families.
const ALL_ADDRESSES: [(IpAddr, u8); 2] =
    [(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0), (IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED), 0)];

/// The node being programmed and how; shared by every command that computes rules.
#[derive(Debug, Args)]
pub struct NodeArgs {
    /// The Node this ruleset is for (`proxier run`: default --hostname-override, else the host name).
    #[arg(long, value_name = "NAME")]
    pub node: Option<String>,
    /// The pod network; non-pod sources reaching a ClusterIP are masqueraded. Comma-separated or repeated.
    #[arg(long, value_delimiter = ',', value_name = "CIDR", value_parser = cidr)]
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
    /// node's primary address of each family; `all` (as 0.0.0.0/0,::/0): every node address;
    /// `localhost`: none (nftables mode serves no NodePorts on loopback).
    #[arg(long, value_delimiter = ',', value_name = "CIDR|primary|all|localhost", value_parser = nodeport_address)]
    pub nodeport_addresses: Vec<NodePortAddress>,
    /// The Service ranges: an address in them that no Service holds is dropped.
    #[arg(long, value_delimiter = ',', value_name = "CIDR", value_parser = cidr)]
    pub service_cidr: Vec<IpNet>,
    /// Masquerade every connection to a ClusterIP.
    #[arg(long)]
    pub masquerade_all: bool,
    /// The node's addresses, overriding the Node object's status.addresses. Repeatable.
    #[arg(long, value_delimiter = ',', value_name = "IP", value_parser = ip_address)]
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
    /// What `--nodeport-addresses` says.
    pub fn nodeport(&self) -> NodePortAddresses {
        NodePortAddresses::new(&self.nodeport_addresses)
    }

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
            nodeport_addresses: self.nodeport().cidrs,
            service_cidrs: self.service_cidr.clone(),
            masquerade_all: self.masquerade_all,
        })
    }
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

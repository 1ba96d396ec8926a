//! Command-line arguments. Flags are named as kube-proxy names them wherever kube-proxy has them.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use ipnet::IpNet;
use proxier_core::{DetectLocal, NodeConfig};

pub const EXIT_HELP: &str = "\
Exit status:
  0  success (diff: no change)
  1  diff: apply would change the kernel
  2  bad arguments, unreadable snapshot (nothing read, nothing changed), or apply refused to
     empty live tables that program Services (see --allow-empty)
  3  nft failed (apply, delete, diff); the previous ruleset is unchanged";

/// A Kubernetes service proxy on nftables.
#[derive(Debug, Parser)]
#[command(name = "proxier", version, about, after_help = EXIT_HELP)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the full nft transaction for a node on stdout.
    Render {
        #[command(flatten)]
        input: Input,
        /// `json` is exactly what `nft -j -f -` reads; `nft` is the same in nft's text syntax.
        #[arg(long, value_enum, default_value_t = Format::Json)]
        format: Format,
    },
    /// Apply the transaction atomically to the kernel of the current network namespace.
    Apply {
        #[command(flatten)]
        input: Input,
        /// Only check the transaction against the kernel (`nft -c`); change nothing.
        #[arg(long)]
        check: bool,
        /// Replace live rules that hold Services even when the snapshot gives this node none (without it,
        /// such an apply is refused: a snapshot without Services is more often a wrong file than an empty
        /// cluster).
        #[arg(long)]
        allow_empty: bool,
    },
    /// Show, as nft text, what `apply` would change in the live kernel (exit 1 when it would).
    Diff {
        #[command(flatten)]
        input: Input,
    },
    /// Remove proxier's tables (and nothing else).
    Delete {
        #[command(flatten)]
        nft: NftArgs,
    },
    /// Keep this node's rules in step with the cluster: watch the API server and sync incrementally.
    Run(Box<crate::run::RunArgs>),
    /// Write a synthetic cluster snapshot (Services, EndpointSlices, Nodes) for benchmarks and scale tests.
    Gen(GenArgs),
    /// Show where one new connection goes on a node and why, from the snapshot (the kernel is not read).
    Trace(Box<crate::tools::TraceArgs>),
    /// Show how each Service is reached: addresses, DNS names, Ingresses, warnings.
    Explain(Box<crate::tools::ExplainArgs>),
}

/// `proxier gen`: see `generator.rs` for what is generated.
#[derive(Debug, Args)]
pub struct GenArgs {
    /// Number of Services.
    #[arg(long, value_name = "N")]
    pub services: usize,
    /// Ready endpoints per Service (cut into EndpointSlices of at most 100).
    #[arg(long, value_name = "M")]
    pub endpoints: usize,
    /// The same seed gives the same output.
    #[arg(long, default_value_t = 1, value_name = "S")]
    pub seed: u64,
    /// Number of Nodes (default: one per 100 pods, at least 3).
    #[arg(long, value_name = "K")]
    pub nodes: Option<usize>,
    /// Service types by relative weight.
    #[arg(long, default_value_t = crate::generator::Mix::default(), value_name = "TYPE=WEIGHT,...")]
    pub mix: crate::generator::Mix,
    /// Ports per Service (1-8).
    #[arg(long, default_value_t = 1, value_name = "P")]
    pub ports: usize,
    /// Percent of Services with UDP ports.
    #[arg(long, default_value_t = 0, value_name = "PCT", value_parser = clap::value_parser!(u8).range(0..=100))]
    pub udp: u8,
    /// Percent of NodePort, LoadBalancer and externalIP Services with externalTrafficPolicy Local.
    #[arg(long, default_value_t = 0, value_name = "PCT", value_parser = clap::value_parser!(u8).range(0..=100))]
    pub local: u8,
    /// Percent of Services with sessionAffinity ClientIP.
    #[arg(long, default_value_t = 0, value_name = "PCT", value_parser = clap::value_parser!(u8).range(0..=100))]
    pub affinity: u8,
    /// kube-apiserver's --service-node-port-range.
    #[arg(long, default_value = "30000-32767", value_name = "LOW-HIGH", value_parser = port_range)]
    pub node_port_range: (u16, u16),
    /// Output syntax (default: yaml for a *.yaml or *.yml --out, else json).
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub format: Option<GenFormat>,
    /// Write here instead of stdout.
    #[arg(long, value_name = "PATH")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GenFormat {
    Json,
    Yaml,
}

fn port_range(text: &str) -> Result<(u16, u16), String> {
    let (low, high) = text.split_once('-').ok_or("expected LOW-HIGH")?;
    let parse = |t: &str| t.trim().parse::<u16>().map_err(|e| format!("{t:?}: {e}"));
    let (low, high) = (parse(low)?, parse(high)?);
    if low == 0 || low > high {
        return Err(format!("{low}-{high} is empty"));
    }
    Ok((low, high))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Json,
    Nft,
}

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
    /// The Node this ruleset is for.
    #[arg(long, value_name = "NAME")]
    pub node: String,
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
    /// The node configuration these flags describe.
    pub fn config(&self) -> Result<NodeConfig, String> {
        let detect_local = self
            .detect_local_mode
            .unwrap_or(DetectLocalMode::ClusterCIDR)
            .detector(self.pod_bridge_interface.clone(), self.pod_interface_name_prefix.clone())?;
        Ok(NodeConfig {
            node_name: self.node.clone(),
            node_ips: self.node_ip.clone(),
            cluster_cidrs: self.cluster_cidr.clone(),
            detect_local,
            // `primary` is the default; CIDRs given beside it widen nothing, as in kube-proxy.
            nodeport_addresses: self.nodeport_addresses.iter().flatten().copied().collect(),
            service_cidrs: self.service_cidr.clone(),
            masquerade_all: self.masquerade_all,
        })
    }
}

fn nodeport_address(text: &str) -> Result<Option<IpNet>, String> {
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

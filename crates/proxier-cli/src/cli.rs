//! Command-line arguments. Flags are named as kube-proxy names them wherever kube-proxy has them.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use ipnet::IpNet;

pub const EXIT_HELP: &str = "\
Exit status:
  0  success (diff: no change)
  1  diff: apply would change the kernel
  2  bad arguments or unreadable snapshot
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
    /// The Node this ruleset is for.
    #[arg(long, value_name = "NAME")]
    pub node: String,
    /// The pod network; non-pod sources reaching a ClusterIP are masqueraded. Comma-separated or repeated.
    #[arg(long, value_delimiter = ',', value_name = "CIDR")]
    pub cluster_cidr: Vec<IpNet>,
    /// Serve NodePorts only on node addresses inside these ranges (default: the node's primary addresses).
    #[arg(long, value_delimiter = ',', value_name = "CIDR")]
    pub nodeport_addresses: Vec<IpNet>,
    /// Masquerade every connection to a ClusterIP.
    #[arg(long)]
    pub masquerade_all: bool,
    /// The node's addresses, overriding the Node object's status.addresses. Repeatable.
    #[arg(long, value_delimiter = ',', value_name = "IP")]
    pub node_ip: Vec<IpAddr>,
    #[command(flatten)]
    pub nft: NftArgs,
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

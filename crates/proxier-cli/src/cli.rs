//! The command line: the subcommands and their own flags. Flag groups several commands share are in
//! `flags`; the exit statuses `--help` lists are in `exit`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::flags::{Input, NftArgs};

/// A Kubernetes service proxy on nftables.
#[derive(Debug, Parser)]
#[command(name = "proxier", version, about, after_help = crate::exit::help())]
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
    Trace(Box<crate::inspect::TraceArgs>),
    /// Show how each Service is reached: addresses, DNS names, Ingresses, warnings.
    Explain(Box<crate::inspect::ExplainArgs>),
    /// Show the kernel's per-Service counts of new connections sent, rejected and dropped (live tables).
    Stats(crate::stats::StatsArgs),
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

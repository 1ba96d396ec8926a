//! The command line: the subcommands and their own flags. Flag groups several commands share are in
//! `flags`; the exit statuses `--help` lists are in `exit`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::flags::{Input, NftArgs, Output, output_parser};

/// A Kubernetes service proxy on nftables: run it on a node in place of kube-proxy, or render, diff,
/// apply, trace and explain a node's rules from a snapshot of the cluster.
#[derive(Debug, Parser)]
#[command(
    name = "proxier",
    version,
    long_version = crate::version::LONG,
    long_about = None,
    after_help = format!("{}\n\n{}", EXAMPLES, crate::exit::help()),
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

const EXAMPLES: &str = "Examples:
  proxier render -f cluster.yaml --node node-a --cluster-cidr 10.244.0.0/16 -o nft
  kubectl get svc,endpointslices,nodes -A -o yaml | proxier explain -f - -n shop web
  proxier trace -f cluster.yaml --node node-a --from node --to 10.96.0.10:53/udp
  sudo proxier diff -f cluster.yaml --node node-a --cluster-cidr 10.244.0.0/16
  proxier completion bash > /etc/bash_completion.d/proxier";

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the full nft transaction for a node on stdout.
    #[command(after_help = "Examples:
  proxier render -f cluster.yaml --node node-a --cluster-cidr 10.244.0.0/16 -o nft
  proxier render -f cluster.yaml --node node-a | nft -c -j -f -")]
    Render {
        #[command(flatten)]
        input: Input,
        /// `json` is exactly what `nft -j -f -` reads; `nft` is the same in nft's text syntax.
        #[arg(short = 'o', long = "output", alias = "format", value_name = "FORMAT", default_value = "json",
              value_parser = output_parser(&[Output::Json, Output::Nft]))]
        output: Output,
    },
    /// Apply the transaction atomically to the kernel of the current network namespace.
    #[command(after_help = "Examples:
  sudo proxier apply -f cluster.yaml --node node-a --cluster-cidr 10.244.0.0/16
  sudo proxier apply -f cluster.yaml --node node-a --check")]
    Apply {
        #[command(flatten)]
        input: Input,
        /// Only check the transaction against the kernel (`nft -c`); change nothing. Says what was checked.
        #[arg(long)]
        check: bool,
        /// Replace live rules that hold Services even when the snapshot gives this node none (without it,
        /// such an apply is refused: a snapshot without Services is more often a wrong file than an empty
        /// cluster).
        #[arg(long)]
        allow_empty: bool,
        /// Load the rules over an nf_tables netlink socket, in one atomic batch, without running `nft`
        /// (`false`: with `nft -j -f`). `nft` still finds the Services to blame when the kernel refuses.
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
        netlink: bool,
    },
    /// Show, as nft text, what `apply` would change in the live kernel (exit 1 when it would).
    ///
    /// Both sides are valid nft: the live tables as the kernel lists them, and the desired ones loaded into
    /// a scratch network namespace and listed back, each with its sets, maps and chains sorted by name and
    /// set elements in address order. Needs root (CAP_SYS_ADMIN for the scratch namespace, CAP_NET_ADMIN to
    /// list the tables).
    #[command(after_help = "Examples:
  sudo proxier diff -f cluster.yaml --node node-a --cluster-cidr 10.244.0.0/16
  sudo proxier diff -f cluster.yaml --node node-a --color=always | less -R")]
    Diff {
        #[command(flatten)]
        input: Input,
        /// Colour the diff: `auto` on a terminal unless NO_COLOR is set.
        #[arg(long, value_enum, value_name = "WHEN", default_value_t = Color::Auto, num_args = 0..=1,
              default_missing_value = "always", require_equals = true)]
        color: Color,
    },
    /// Remove proxier's tables (and nothing else).
    #[command(after_help = "Examples:
  sudo proxier delete
  sudo proxier delete --table proxier-test")]
    Delete {
        #[command(flatten)]
        nft: NftArgs,
    },
    /// Keep this node's rules in step with the cluster: watch the API server and sync incrementally.
    #[command(after_help = "Examples:
  proxier run --node \"$NODE_NAME\" --cluster-cidr 10.244.0.0/16
  proxier run --node node-a --kubeconfig /etc/kubernetes/proxier.conf --config /etc/proxier/config.yaml")]
    Run(Box<crate::run::RunArgs>),
    /// Write a synthetic cluster snapshot (Services, EndpointSlices, Nodes) for benchmarks and scale tests.
    #[command(after_help = "Examples:
  proxier gen --services 10000 --endpoints 5 --out big.json
  proxier gen --services 50 --endpoints 3 --mix clusterip=1,nodeport=1 -o yaml | proxier explain -f -")]
    Gen(GenArgs),
    /// Show where one new connection goes on a node and why, from the snapshot (the kernel is not read).
    #[command(after_help = "Examples:
  proxier trace -f cluster.yaml --node node-a --from pod:shop/web-1 --to 10.96.120.33:80/tcp
  proxier trace -f cluster.yaml --node node-b --from 198.51.100.7 --to 192.168.49.12:30200/tcp -o json")]
    Trace(Box<crate::inspect::TraceArgs>),
    /// Show how each Service is reached: addresses, DNS names, Ingresses, warnings.
    #[command(after_help = "Examples:
  proxier explain -f cluster.yaml shop/web
  proxier explain -f cluster.yaml -n shop web -o yaml
  kubectl get svc,endpointslices,nodes,ingresses -A -o yaml | proxier explain -f - -A")]
    Explain(Box<crate::inspect::ExplainArgs>),
    /// Show the kernel's per-Service counts of new connections sent, rejected and dropped (live tables).
    Stats(crate::stats::StatsArgs),
    /// Print a shell completion script on stdout.
    #[command(after_help = "Examples:
  proxier completion bash > /etc/bash_completion.d/proxier
  proxier completion zsh > \"${fpath[1]}/_proxier\"
  proxier completion fish > ~/.config/fish/completions/proxier.fish")]
    Completion {
        /// The shell to complete in.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff) of proxier or one of its commands on stdout.
    #[command(after_help = "Examples:
  proxier man | man -l -
  proxier man diff > proxier-diff.1")]
    Man {
        /// A command, for its own page (`proxier-COMMAND(1)`).
        #[arg(value_name = "COMMAND")]
        command: Option<String>,
    },
    /// Print the version, the commit and date it was built from, the Rust compiler and the nft found.
    #[command(after_help = "Examples:
  proxier version
  proxier version -o json --nft /usr/sbin/nft")]
    Version {
        #[arg(short = 'o', long = "output", value_name = "FORMAT", default_value = "text",
              value_parser = output_parser(&[Output::Text, Output::Json, Output::Yaml]))]
        output: Output,
        /// The nft program whose version is reported.
        #[arg(long, default_value = "nft", value_name = "PATH")]
        nft: PathBuf,
    },
}

/// `--color`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Color {
    /// On a terminal, unless the NO_COLOR environment variable is set (and not empty).
    Auto,
    Always,
    Never,
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
    #[arg(short = 'o', long = "output", alias = "format", value_name = "FORMAT",
          value_parser = output_parser(&[Output::Json, Output::Yaml]))]
    pub output: Option<Output>,
    /// Write here instead of stdout.
    #[arg(long, value_name = "PATH")]
    pub out: Option<PathBuf>,
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

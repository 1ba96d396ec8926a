//! `proxier trace` and `proxier explain`: read-only answers from a snapshot, computed by
//! `proxier_core::trace` and `proxier_core::explain`.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use ipnet::IpNet;
use proxier_core::explain::{DEFAULT_CLUSTER_DOMAIN, ExplainOptions, explain};
use proxier_core::trace::{Source, Target, trace_computation};
use proxier_core::{Computation, Snapshot};

use crate::exit::{Exit, Failure};
use crate::flags::NodeArgs;

/// How `trace` and `explain` print their answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// For people.
    Text,
    /// Stable JSON for programs (the serde form of `proxier_core::trace::Trace` / `explain::Explanation`).
    Json,
}

/// `proxier trace`.
#[derive(Debug, Args)]
pub struct TraceArgs {
    /// Files or directories of `kubectl get svc,endpointslices,nodes -A -o yaml|json` output.
    #[arg(long, required = true, num_args = 1.., value_name = "PATH")]
    pub snapshot: Vec<PathBuf>,
    /// Where the connection comes from: `pod:NAMESPACE/NAME`, a pod's IP, `node` (this node), or any IP.
    #[arg(long, value_name = "SRC")]
    pub from: Source,
    /// Where it goes: `IP:PORT/PROTO`, e.g. `10.96.0.10:53/udp` or `[fd00::a]:53/udp`.
    #[arg(long, value_name = "IP:PORT/PROTO")]
    pub to: Target,
    /// `text` for people, `json` for programs.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    #[command(flatten)]
    pub node: NodeArgs,
}

/// `proxier explain`.
#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// Files or directories of `kubectl get svc,endpointslices,nodes,ingresses -A -o yaml|json` output.
    #[arg(long, required = true, num_args = 1.., value_name = "PATH")]
    pub snapshot: Vec<PathBuf>,
    /// Only this Service.
    #[arg(value_name = "NAMESPACE/NAME", value_parser = service_name)]
    pub service: Option<(String, String)>,
    /// `text` for people, `json` for programs.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// The cluster DNS domain.
    #[arg(long, default_value = DEFAULT_CLUSTER_DOMAIN, value_name = "DOMAIN")]
    pub cluster_domain: String,
    /// List NodePorts only on node addresses inside these ranges (default: each node's primary addresses).
    #[arg(long, value_delimiter = ',', value_name = "CIDR")]
    pub nodeport_addresses: Vec<IpNet>,
}

fn service_name(text: &str) -> Result<(String, String), String> {
    match text.split_once('/') {
        Some((namespace, name)) if !namespace.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok((namespace.to_owned(), name.to_owned()))
        }
        _ => Err(format!("{text:?}: expected NAMESPACE/NAME")),
    }
}

fn load(paths: &[PathBuf]) -> Result<Snapshot, Failure> {
    let (snapshot, report) = crate::input::load_snapshot(paths).map_err(|e| Failure::Input(e.into()))?;
    for diagnostic in &report.diagnostics {
        eprintln!("proxier: {diagnostic}");
    }
    Ok(snapshot)
}

/// Runs `proxier trace`.
pub fn run_trace(args: &TraceArgs) -> Result<Exit, Failure> {
    let snapshot = load(&args.snapshot)?;
    let config = args.node.config().map_err(|e| Failure::Input(anyhow::anyhow!(e)))?;
    let computation = Computation::new(&snapshot, &config);
    for diagnostic in &computation.model.diagnostics {
        eprintln!("proxier: {diagnostic}");
    }
    let trace = trace_computation(&snapshot, &config, &computation, &args.from, args.to)
        .map_err(|e| Failure::Input(e.into()))?;
    match args.output {
        Output::Text => print!("{}", trace.to_text()),
        Output::Json => println!("{}", serde_json::to_string_pretty(&trace).map_err(|e| Failure::Input(e.into()))?),
    }
    Ok(Exit::Success)
}

/// Runs `proxier explain`.
///
/// `--snapshot` takes several values, so in `explain --snapshot PATH NAMESPACE/NAME` the Service lands among
/// the paths: a last value that is no existing path but reads NAMESPACE/NAME is taken as the Service.
pub fn run_explain(args: &ExplainArgs) -> Result<Exit, Failure> {
    let mut paths = args.snapshot.clone();
    let mut only = args.service.clone();
    if only.is_none()
        && paths.len() > 1
        && let Some(last) = paths.last().filter(|p| !p.exists())
        && let Ok(service) = service_name(&last.to_string_lossy())
    {
        only = Some(service);
        paths.pop();
    }
    let snapshot = load(&paths)?;
    let options = ExplainOptions {
        cluster_domain: args.cluster_domain.clone(),
        nodeport_addresses: args.nodeport_addresses.clone(),
        only: only.clone(),
    };
    let explanation = explain(&snapshot, &options);
    if let Some((namespace, name)) = &only
        && explanation.services.is_empty()
    {
        return Err(Failure::Input(anyhow::anyhow!("no Service {namespace}/{name} in the snapshot")));
    }
    match args.output {
        Output::Text => print!("{}", explanation.to_text()),
        Output::Json => {
            println!("{}", serde_json::to_string_pretty(&explanation).map_err(|e| Failure::Input(e.into()))?)
        }
    }
    Ok(Exit::Success)
}

//! `proxier trace` and `proxier explain`: read-only answers from a snapshot, computed by
//! `proxier_core::trace` and `proxier_core::explain`.

use clap::Args;
use proxier_core::explain::{DEFAULT_CLUSTER_DOMAIN, ExplainOptions, explain};
use proxier_core::trace::{Source, Target, trace_computation};
use proxier_core::{Computation, Snapshot};

use crate::exit::{Exit, Failure};
use crate::flags::{
    NodeArgs, NodePortAddress, NodePortAddresses, Output, SnapshotArgs, document, nodeport_address, output_parser,
};

/// `proxier trace`.
#[derive(Debug, Args)]
pub struct TraceArgs {
    #[command(flatten)]
    pub snapshot: SnapshotArgs,
    /// Where the connection comes from: `pod:NAMESPACE/NAME`, a pod's IP, `node` (this node), or any IP.
    #[arg(long, value_name = "SRC")]
    pub from: Source,
    /// Where it goes: `IP:PORT/PROTO`, e.g. `10.96.0.10:53/udp` or `[fd00::a]:53/udp`.
    #[arg(long, value_name = "IP:PORT/PROTO")]
    pub to: Target,
    /// `text` for people; `json` and `yaml` for programs (`apiVersion: proxier.dev/v1`, `kind: Trace`).
    #[arg(short = 'o', long = "output", value_name = "FORMAT", default_value = "text",
          value_parser = output_parser(&[Output::Text, Output::Json, Output::Yaml]))]
    pub output: Output,
    #[command(flatten)]
    pub node: NodeArgs,
}

/// `proxier explain`.
#[derive(Debug, Args)]
pub struct ExplainArgs {
    #[command(flatten)]
    pub snapshot: SnapshotArgs,
    /// Only this Service: `NAME` (in the namespace of -n, else `default`) or `NAMESPACE/NAME`. Without it,
    /// every Service of -n's namespace, or of every namespace.
    #[arg(value_name = "[NAMESPACE/]NAME")]
    pub service: Option<String>,
    /// The namespace of the Service(s), as in kubectl.
    #[arg(short = 'n', long, value_name = "NAMESPACE")]
    pub namespace: Option<String>,
    /// Every namespace (the default without a NAME or -n).
    #[arg(short = 'A', long, conflicts_with = "namespace")]
    pub all_namespaces: bool,
    /// `text` for people; `json` and `yaml` for programs (`apiVersion: proxier.dev/v1`, `kind: Explanation`).
    #[arg(short = 'o', long = "output", value_name = "FORMAT", default_value = "text",
          value_parser = output_parser(&[Output::Text, Output::Json, Output::Yaml]))]
    pub output: Output,
    /// The cluster DNS domain.
    #[arg(long, default_value = DEFAULT_CLUSTER_DOMAIN, value_name = "DOMAIN")]
    pub cluster_domain: String,
    /// List NodePorts only on node addresses inside these ranges, or `primary` (the default): each node's
    /// primary address of each family; `all` (as 0.0.0.0/0,::/0): every node address; `localhost`: none
    /// (nftables mode serves no NodePorts on loopback).
    #[arg(long, value_delimiter = ',', value_name = "CIDR|primary|all|localhost", value_parser = nodeport_address)]
    pub nodeport_addresses: Vec<NodePortAddress>,
}

/// Which Services `explain` is asked about.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Selection {
    All,
    Namespace(String),
    One(String, String),
}

impl ExplainArgs {
    fn selection(&self) -> Result<Selection, String> {
        let Some(service) = &self.service else {
            return Ok(match &self.namespace {
                Some(namespace) => Selection::Namespace(namespace.clone()),
                None => Selection::All,
            });
        };
        if self.all_namespaces {
            return Err(format!("{service:?}: a Service cannot be named across all namespaces (-A)"));
        }
        let (namespace, name) = match service.split_once('/') {
            Some((namespace, name)) => {
                if let Some(flag) = self.namespace.as_deref().filter(|n| *n != namespace) {
                    return Err(format!("{service:?} is in namespace {namespace:?}, but -n says {flag:?}"));
                }
                (namespace, name)
            }
            None => (self.namespace.as_deref().unwrap_or("default"), service.as_str()),
        };
        if namespace.is_empty() || name.is_empty() || name.contains('/') {
            return Err(format!("{service:?}: expected NAME or NAMESPACE/NAME"));
        }
        Ok(Selection::One(namespace.to_owned(), name.to_owned()))
    }
}

fn load(args: &SnapshotArgs) -> Result<Snapshot, Failure> {
    let loaded = crate::input::load_snapshot(&args.paths).map_err(|e| Failure::Input(e.into()))?;
    loaded.print_skipped();
    crate::notes::print_diagnostics(&loaded.report.diagnostics, args.verbose);
    Ok(loaded.snapshot)
}

fn print_document<T: serde::Serialize>(
    output: Output,
    kind: &'static str,
    body: &T,
    text: impl FnOnce(&T) -> String,
) -> Result<(), Failure> {
    let printed = match document(output, kind, body) {
        Some(document) => document.map_err(|e| Failure::Input(anyhow::anyhow!(e)))?,
        None => text(body),
    };
    crate::emit(&printed)
}

/// Runs `proxier trace`.
pub fn run_trace(args: &TraceArgs) -> Result<Exit, Failure> {
    let snapshot = load(&args.snapshot)?;
    let config = crate::node_config(&args.node, &snapshot).map_err(|e| Failure::Input(anyhow::anyhow!(e)))?;
    let computation = Computation::new(&snapshot, &config);
    crate::notes::print_diagnostics(&computation.model.diagnostics, args.snapshot.verbose);
    let trace = trace_computation(&snapshot, &config, &computation, &args.from, args.to)
        .map_err(|e| Failure::Input(e.into()))?;
    print_document(args.output, "Trace", &trace, |trace| trace.to_text())?;
    Ok(Exit::Success)
}

/// Runs `proxier explain`.
pub fn run_explain(args: &ExplainArgs) -> Result<Exit, Failure> {
    let selection = args.selection().map_err(|e| Failure::Input(anyhow::anyhow!(e)))?;
    let snapshot = load(&args.snapshot)?;
    let only = match &selection {
        Selection::One(namespace, name) => Some((namespace.clone(), name.clone())),
        Selection::All | Selection::Namespace(_) => None,
    };
    let nodeport = NodePortAddresses::new(&args.nodeport_addresses);
    crate::warn_localhost_nodeports(&nodeport);
    let options = ExplainOptions {
        cluster_domain: args.cluster_domain.clone(),
        // The same meaning as for `render`: `primary` (the default) beside CIDRs keeps each node's
        // primary addresses; `all` is both zero CIDRs.
        nodeport_addresses: nodeport.cidrs,
        nodeport_primary: nodeport.primary,
        only,
    };
    let mut explanation = explain(&snapshot, &options);
    match &selection {
        Selection::One(namespace, name) if explanation.services.is_empty() => {
            return Err(Failure::Input(anyhow::anyhow!("no Service {namespace}/{name} in the snapshot")));
        }
        Selection::Namespace(namespace) => {
            explanation.services.retain(|s| &s.service.namespace == namespace);
            if explanation.services.is_empty() {
                eprintln!("proxier: no Services in namespace {namespace}");
            }
        }
        Selection::One(..) | Selection::All => {}
    }
    print_document(args.output, "Explanation", &explanation, |e| e.to_text())?;
    Ok(Exit::Success)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: ExplainArgs,
    }

    fn selection(args: &[&str]) -> Result<Selection, String> {
        let wrapper =
            Wrapper::try_parse_from(["explain", "-f", "x.yaml"].iter().chain(args)).map_err(|e| e.to_string())?;
        wrapper.args.selection()
    }

    #[test]
    fn services_are_named_as_kubectl_names_them() {
        let one = |ns: &str, name: &str| Ok(Selection::One(ns.into(), name.into()));
        assert_eq!(selection(&[]), Ok(Selection::All));
        assert_eq!(selection(&["-A"]), Ok(Selection::All));
        assert_eq!(selection(&["-n", "shop"]), Ok(Selection::Namespace("shop".into())));
        assert_eq!(selection(&["web"]), one("default", "web"));
        assert_eq!(selection(&["-n", "shop", "web"]), one("shop", "web"));
        assert_eq!(selection(&["shop/web"]), one("shop", "web"));
        assert_eq!(selection(&["shop/web", "-n", "shop"]), one("shop", "web"));
        assert!(selection(&["shop/web", "-n", "other"]).unwrap_err().contains("-n says \"other\""));
        assert!(selection(&["-A", "web"]).unwrap_err().contains("across all namespaces"));
        assert!(selection(&["a/b/c"]).unwrap_err().contains("expected NAME or NAMESPACE/NAME"));
        assert!(selection(&["-A", "-n", "x"]).is_err(), "-A and -n conflict");
    }
}

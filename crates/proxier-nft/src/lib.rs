//! proxier-nft: proxier's rule model as atomic nft transactions, and the only code that runs `nft`.
//!
//! A model from `proxier-core` becomes a [`ruleset::Table`] per family ([`layout`]), which renders as
//! JSON for `nft -j -f -` ([`json`], mended for nft 1.0.6 by [`compat`]; [`json_writer`] writes the same
//! bytes fast) and as nft text for humans ([`text`]), each a list of [`change::Change`] steps.
//! [`Transaction`] ties them together; [`Nft`] runs them; [`diff()`] compares with the kernel;
//! [`Proxier`] keeps a node in step with the [`proxier_core::ClusterState`] it owns, through the
//! `ledger` (per-Service shares in, the objects that appear or disappear out), [`refusal`] and
//! [`conntrack`].
//!
//! # Embedding proxier
//!
//! Four steps take a cluster state to the kernel; each is a plain value until the last one:
//!
//! 1. **Snapshot**: [`proxier_core::Snapshot`] holds Services, EndpointSlices and Nodes, read from kubectl
//!    output ([`proxier_core::Snapshot::from_text`]) or filled by your own watch code.
//! 2. **Model**: [`proxier_core::compute()`] turns it into the [`proxier_core::RuleModel`] of one node,
//!    given that node's [`proxier_core::NodeConfig`]. Problems in the input are in
//!    [`proxier_core::RuleModel::diagnostics`]; everything else is programmed.
//! 3. **Transaction**: [`Transaction::full`] replaces proxier's tables (and only those) with the model's.
//! 4. **Apply**: [`Nft::apply_json`] loads it atomically: on failure the kernel keeps what it had.
//!
//! ```no_run
//! use proxier_core::{NodeConfig, Severity, Snapshot, compute};
//! use proxier_nft::{Nft, Transaction, diff};
//!
//! // 1. The cluster state, as `kubectl get svc,endpointslices,nodes -A -o yaml` prints it.
//! let text = std::fs::read_to_string("cluster.yaml")?;
//! let (snapshot, report) = Snapshot::from_text("cluster.yaml", &text);
//! for problem in &report.diagnostics {
//!     eprintln!("{problem}");
//! }
//!
//! // 2. What node-a must do.
//! let config = NodeConfig {
//!     node_name: "node-a".into(),
//!     cluster_cidrs: vec!["10.244.0.0/16".parse()?],
//!     ..NodeConfig::default()
//! };
//! let model = compute(&snapshot, &config);
//! let errors = model.diagnostics.iter().filter(|d| d.severity == Severity::Error).count();
//! eprintln!("{} families, {errors} objects not (fully) programmed", model.families.len());
//!
//! // 3. The transaction: `to_json()` is what `nft -j -f -` reads, `to_text()` the same for people.
//! let transaction = Transaction::full(&model, "proxier");
//! print!("{}", transaction.to_text());
//!
//! // 4. What would change, then apply (root or CAP_NET_ADMIN in the node's network namespace).
//! let nft = Nft::default();
//! println!("{}", diff(&nft, &transaction)?.unified);
//! nft.apply_json(&transaction.to_json())?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! A long-running agent holds a [`proxier_core::ClusterState`] instead of a snapshot, inside a
//! [`Proxier`]: feed it watch events through [`Proxier::state_mut`]
//! ([`proxier_core::ClusterState::fold`], with list boundaries so that a relist removes what vanished,
//! or `apply_*`/`delete_*` one object at a time), and [`Proxier::sync`] writes the transaction of the
//! changed Services' shares only (its size and cost follow the change, not the cluster), repairs
//! out-of-band changes on [`Proxier::resync`], leaves out Services whose rules the kernel refuses, and
//! cleans stale UDP conntrack entries ([`Proxier::with_conntrack`]). `proxier run` is exactly that loop
//! around Kubernetes watches; `crates/proxier-nft/examples/embed.rs` is a small one.
//!
//! ```no_run
//! use proxier_core::{ClusterState, NodeConfig, Snapshot};
//! use proxier_nft::{Nft, Proxier};
//!
//! let config = NodeConfig { node_name: "node-a".into(), ..NodeConfig::default() };
//! let mut proxier = Proxier::new(ClusterState::new(config), "proxier", Nft::default());
//! let (snapshot, _) = Snapshot::from_text("cluster.yaml", &std::fs::read_to_string("cluster.yaml")?);
//! proxier.state_mut().relist(&snapshot); // as a watch's list would
//! proxier.sync()?; // full: takes over any table of an earlier run
//! let (newer, _) = Snapshot::from_text("cluster.yaml", &std::fs::read_to_string("cluster.yaml")?);
//! proxier.state_mut().relist(&newer);
//! let outcome = proxier.sync()?; // partial: only what changed
//! println!("{} steps", outcome.changes);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The tables count, per destination, the new connections sent to an endpoint, rejected and dropped
//! ([`layout`]'s "Counters"); [`counters`] reads those counts from the kernel (over netlink, no `nft`
//! run) and attributes them to Service ports, and transactions carry them over when they would reset them
//! ([`Transaction::with_carried_counts`]: in nft text for `nft`, as counter expressions over netlink).
//!
//! Without an `nft` process: [`netlink::NftSocket`] applies a transaction — a full load, rules, sets,
//! elements — on one persistent nf_tables socket, message by message as `nft` would send it (a change
//! well under a millisecond, where an `nft` run costs about 16 ms), and says when it cannot carry one
//! (ranges added to an existing interval set: those stay with `nft`).
//! [`netlink::TableWatch`] tells from nf_tables' own change events whether anyone else touched
//! proxier's tables, so that the expensive comparison with the kernel runs only when someone did.
//!
//! To see where a packet goes without touching the kernel, use [`proxier_core::trace()`] on the same
//! snapshot and config; [`proxier_core::explain()`] tells how each Service is reached.

#![warn(missing_docs)]

pub mod change;
pub mod compat;
pub mod conntrack;
pub mod counters;
pub mod diff;
pub mod json;
pub mod json_writer;
pub mod layout;
mod ledger;
pub mod netlink;
pub mod proxier;
pub mod refusal;
pub mod ruleset;
pub mod runner;
pub mod text;
pub mod transaction;

pub use change::Change;
pub use conntrack::{Conntrack, ConntrackFilter, ConntrackOutcome};
pub use diff::{TableDiff, diff};
pub use proxier::{Proxier, SyncError, SyncKind, SyncOutcome};
pub use refusal::Refused;
pub use runner::{Nft, NftError, TableNames};
pub use transaction::Transaction;

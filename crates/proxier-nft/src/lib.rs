//! proxier-nft: proxier's rule model as atomic nft transactions, and the only code that runs `nft`.
//!
//! A model from `proxier-core` becomes a [`ruleset::Table`] per family ([`layout`]), which renders as
//! JSON for `nft -j -f -` ([`json`], mended for nft 1.0.6 by [`compat`]; [`json_writer`] writes the same
//! bytes fast) and as nft text for humans ([`text`]). [`Transaction`] ties them together; [`Nft`] runs
//! them; [`diff()`] compares with the kernel; [`Proxier`] keeps a node in step with a changing cluster.
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
//! 3. **Transaction**: [`Transaction::full`] replaces proxier's tables (and only those) with the model's;
//!    [`Transaction::between`] writes only what changed since the tables last committed.
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
//!
//! // Later: only the changes, starting from what the kernel now holds.
//! let committed = Transaction::tables(&model, "proxier");
//! let newer = compute(&snapshot, &config);
//! let (changes, _now_committed) =
//!     Transaction::between(&committed, &Transaction::tables(&newer, "proxier"), "proxier");
//! if !changes.is_empty() {
//!     nft.apply_json(&changes.to_json())?;
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! A long-running agent need not track tables itself: [`Proxier`] keeps what the rules depend on of
//! the objects it is fed (feed it watch events with [`Proxier::apply_service`],
//! [`Proxier::apply_endpoint_slice`], [`Proxier::apply_node`] and their `delete_*` twins), and
//! [`Proxier::sync`] recomputes only the Services that changed, writes the transaction of their
//! difference (its size and cost follow the change, not the cluster), repairs out-of-band changes on
//! [`Proxier::resync`], leaves out Services whose rules the kernel refuses, and cleans stale UDP
//! conntrack entries ([`Proxier::with_conntrack`]). `proxier run` is exactly that loop around
//! Kubernetes watches.
//!
//! The tables count, per destination, the new connections sent to an endpoint, rejected and dropped
//! ([`layout`]'s "Counters"); [`counters`] reads those counts from the kernel and attributes them to
//! Service ports, and transactions carry them over when they would reset them
//! ([`Transaction::with_carried_counts`]).
//!
//! To see where a packet goes without touching the kernel, use [`proxier_core::trace()`] on the same
//! snapshot and config; [`proxier_core::explain()`] tells how each Service is reached.

#![warn(missing_docs)]

pub mod compat;
pub mod conntrack;
pub mod counters;
pub mod diff;
pub mod json;
pub mod json_writer;
pub mod layout;
mod ledger;
pub mod proxier;
pub mod refusal;
pub mod ruleset;
pub mod runner;
pub mod text;
pub mod transaction;

pub use conntrack::{Conntrack, ConntrackFilter, ConntrackOutcome};
pub use diff::{TableDiff, diff};
pub use proxier::{Proxier, SyncError, SyncKind, SyncOutcome};
pub use refusal::Refused;
pub use runner::{Nft, NftError};
pub use transaction::Transaction;

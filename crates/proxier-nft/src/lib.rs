//! proxier-nft: proxier's rule model as atomic nft transactions, and the only code that runs `nft`.
//!
//! A model from `proxier-core` becomes a [`ruleset::Table`] per family ([`layout`]), which renders as
//! JSON for `nft -j -f -` ([`json`], mended for nft 1.0.6 by [`compat`]) and as nft text for humans
//! ([`text`]). [`Transaction`] ties them together; [`Nft`] runs them; [`diff()`] compares with the kernel.
//!
//! ```no_run
//! use proxier_core::{NodeConfig, Snapshot, compute};
//! use proxier_nft::{Nft, Transaction};
//! let (snapshot, _report) = Snapshot::from_text("cluster.yaml", &std::fs::read_to_string("cluster.yaml")?);
//! let model = compute(&snapshot, &NodeConfig { node_name: "node-a".into(), ..Default::default() });
//! Nft::default().apply_json(&Transaction::full(&model, "proxier").to_json())?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod compat;
pub mod diff;
pub mod json;
pub mod layout;
pub mod ruleset;
pub mod runner;
pub mod text;
pub mod transaction;

pub use diff::{TableDiff, diff};
pub use runner::{Nft, NftError};
pub use transaction::Transaction;

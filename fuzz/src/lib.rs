//! The logic of proxier's fuzz targets (see docs/robustness.md). The checks live in the test support of
//! proxier-nft so that the normal test suite runs the same code on a smoke corpus.

pub mod bytes;
#[path = "../../crates/proxier-nft/tests/support/invariants.rs"]
pub mod invariants;
pub mod targets;

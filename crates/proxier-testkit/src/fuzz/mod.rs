//! The fuzz targets' logic (docs/robustness.md), shared by the `fuzz/` binaries, which call
//! [`targets`] with libFuzzer's input, and by proxier-nft's smoke test, which runs the same checks on
//! a small corpus in CI.

pub mod input;
pub mod targets;

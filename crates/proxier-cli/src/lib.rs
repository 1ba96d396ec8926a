//! What the `proxier` command shares with its benchmarks, examples and tests: the synthetic cluster
//! generator behind `proxier gen` ([`generator`]). The command itself is the `proxier` binary
//! (`src/main.rs`); nothing else of it is a library.

pub mod generator;

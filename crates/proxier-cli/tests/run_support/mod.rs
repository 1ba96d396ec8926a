//! Test support for `proxier run` (tests/run.rs): the stand-in API server (from proxier-testkit), and a
//! node in a network namespace with "pods" (addresses on a local interface), echo servers and probes.

pub use proxier_testkit::apiserver;
pub mod node;

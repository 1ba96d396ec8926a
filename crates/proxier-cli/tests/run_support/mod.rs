//! Test support for `proxier run` (tests/run.rs): a fake API server, and a node in a network
//! namespace with "pods" (addresses on a local interface), echo servers and probes.

pub mod apiserver;
pub mod node;

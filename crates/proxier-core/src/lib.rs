//! proxier-core: Kubernetes Services, EndpointSlices and Nodes in, a declarative rule model out.
//!
//! Everything here is pure: no files, no processes, no sockets.

pub mod diagnostic;
pub mod snapshot;

pub use diagnostic::{Diagnostic, ObjectRef, Severity};
pub use snapshot::Snapshot;

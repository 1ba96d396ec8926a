//! proxier-core: Kubernetes Services, EndpointSlices and Nodes in, a declarative rule model out.
//!
//! Everything here is pure: no files, no processes, no sockets. A Service travels through one module
//! per stage:
//!
//! 1. [`snapshot`]: kubectl's YAML or JSON text to typed objects;
//! 2. [`service`] and [`endpoints`]: objects checked and reduced to service ports and their endpoints;
//! 3. [`compute()`]: the [`RuleModel`] for one node — destinations and the action for each, per family.
//!
//! `proxier-nft` turns the model into nft transactions. Two read-only tools sit beside the stages: [`trace()`]
//! walks one connection through a node's model, and [`explain()`] tells how each Service is reached.

// Pure code needs no unsafe; forbidding it keeps the core safe to fuzz and to embed.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod compute;
pub mod config;
pub mod diagnostic;
pub mod endpoints;
pub mod explain;
pub mod ip;
pub mod model;
pub mod node;
pub mod service;
pub mod snapshot;
pub mod trace;

pub use compute::{NodeContext, ParsedService, ServiceFamilyRules, ServiceRules, assemble, compute, service_rules};
pub use config::{DetectLocal, NodeConfig};
pub use diagnostic::{Diagnostic, ObjectRef, Severity};
pub use explain::{ExplainOptions, Explanation, explain};
pub use model::{
    Action, Backend, Destination, DestinationKind, FamilyRules, HealthCheck, IpFamily, LocalTraffic, Masquerade,
    Protocol, RuleModel, ServicePortName, ServiceSummary, Treatment,
};
pub use snapshot::{LoadReport, Snapshot};
pub use trace::{Source, Target, Trace, TraceError, trace};

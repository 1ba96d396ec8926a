//! proxier-core: Kubernetes Services, EndpointSlices and Nodes in, a declarative rule model out.
//!
//! Everything here is pure: no files, no processes, no sockets, no clock. Work on a whole cluster at
//! once (reading a snapshot, computing every Service) is spread over the machine's cores, with the same
//! result on any number of them. A Service travels through one module per stage:
//!
//! 1. [`snapshot`]: kubectl's YAML or JSON text to typed objects;
//! 2. [`service`] and [`endpoints`]: objects checked and reduced to service ports and their endpoints;
//!    [`node`]: the node's own facts (addresses, zone, pod ranges, how pod traffic is recognised);
//! 3. [`compute()`]: the [`RuleModel`] for one node — destinations and the action for each, per family.
//!
//! A live agent holds a [`state::ClusterState`] instead of a snapshot: it folds watch events, keeps
//! what the rules depend on, and hands out each changed Service's share of the same model, with each
//! destination's backends kept in stable positions ([`positions`]) so that a change of one endpoint
//! rewrites one position.
//!
//! `proxier-nft` turns the model (or the shares) into nft transactions. Two read-only tools sit beside
//! the stages: [`trace()`] walks one connection through a node's model, and [`explain()`] tells how
//! each Service is reached.

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
mod parallel;
pub mod positions;
pub mod service;
pub mod snapshot;
mod snapshot_v1beta1;
pub mod state;
pub mod trace;

pub use compute::{Computation, ParsedService, ServiceFamilyRules, ServiceRules, compute, service_rules};
pub use config::{DetectLocal, NodeConfig};
pub use diagnostic::{Diagnostic, ObjectRef, Severity};
pub use explain::{ExplainOptions, Explanation, explain};
pub use model::{
    Action, Backend, Destination, DestinationKind, FamilyRules, HealthCheck, IpFamily, LocalTraffic, Masquerade,
    Protocol, RuleModel, ServicePortName, ServiceSummary, Treatment,
};
pub use node::NodeContext;
pub use snapshot::{LoadReport, Snapshot, TextContents, TextError};
pub use state::{Changes, ClusterState, ShareChange, WatchEvent};
pub use trace::{Source, Target, Trace, TraceError, trace};

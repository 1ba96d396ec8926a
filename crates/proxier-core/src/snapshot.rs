//! Cluster state as read from kubectl output: Services, EndpointSlices, Nodes (and legacy Endpoints).
//! (Being written by a helper: see its task.)

use k8s_openapi::api::core::v1::{Endpoints, Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// The objects proxier reads, as the API server returns them.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub services: Vec<Service>,
    pub endpoint_slices: Vec<EndpointSlice>,
    /// Legacy v1 Endpoints; used only for Services that have no EndpointSlice.
    pub endpoints: Vec<Endpoints>,
    pub nodes: Vec<Node>,
}

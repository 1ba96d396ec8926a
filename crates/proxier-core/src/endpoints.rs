//! Stage 2 of the core: EndpointSlices merged into the endpoints of each service port.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;

use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::diagnostic::{Diagnostic, ObjectRef};
use crate::ip::parse_ip_sloppy;
use crate::model::{Backend, IpFamily, Protocol};
use crate::parallel;
use crate::service::shorten;
use crate::snapshot::{LEGACY_ENDPOINTS_MANAGER, MANAGED_BY_LABEL, SERVICE_NAME_LABEL, Snapshot};

/// One endpoint of one service port, with the conditions that decide whether it is used.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct EndpointInfo {
    /// The endpoint's address and the target port of its slice.
    pub backend: Backend,
    /// `nodeName`: the node it runs on.
    pub node_name: Option<String>,
    /// `zone`: the zone it runs in.
    pub zone: Option<String>,
    /// `ready` (nil ⇒ true).
    pub ready: bool,
    /// `serving` (nil ⇒ ready: the API's rule).
    pub serving: bool,
    /// `terminating` (nil ⇒ false).
    pub terminating: bool,
    /// Topology hints: the zones and nodes this endpoint is meant for. `None` when the slice has none.
    pub zone_hints: Option<Vec<String>>,
    /// `hints.forNodes`. `None` when the slice has none.
    pub node_hints: Option<Vec<String>>,
}

/// Identifies a service port across Service and EndpointSlice: namespace, Service name, port name, protocol.
pub type PortKey = (String, String, String, Protocol);

/// Slices indexed together on one thread by [`EndpointIndex::build`].
const PARALLEL_RUN: usize = 1024;

/// All endpoints of every service port, from every slice.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointIndex {
    ports: BTreeMap<PortKey, Vec<EndpointInfo>>,
    services: BTreeMap<(String, String), Vec<ObjectRef>>,
}

impl EndpointIndex {
    /// Merges `slices`, recording problems in `diagnostics`.
    pub fn build<'a>(
        slices: impl IntoIterator<Item = &'a EndpointSlice>,
        diagnostics: &mut Vec<Diagnostic>,
    ) -> EndpointIndex {
        let slices: Vec<&EndpointSlice> = slices.into_iter().collect();
        let index_run = |run: &&[&EndpointSlice]| {
            let mut part = EndpointIndex::default();
            let mut found = Vec::new();
            for slice in *run {
                part.add_slice(slice, &mut found);
            }
            (part, found)
        };
        // Runs of slices indexed on every core, then merged in order: as if indexed one by one. A live
        // agent's one changed slice is one run, indexed here.
        let runs: Vec<&[&EndpointSlice]> = slices.chunks(PARALLEL_RUN).collect();
        let mut parts = parallel::map(&runs, 2, index_run).into_iter();
        let (mut index, found) = parts.next().unwrap_or_default();
        diagnostics.extend(found);
        for (part, found) in parts {
            diagnostics.extend(found);
            for (key, mut endpoints) in part.ports {
                index.ports.entry(key).or_default().append(&mut endpoints);
            }
            for (key, mut slices) in part.services {
                index.services.entry(key).or_default().append(&mut slices);
            }
        }
        for endpoints in index.ports.values_mut() {
            dedup_endpoints(endpoints);
        }
        index
    }

    /// The endpoints of each service port, by port: a compact form to keep an index in (a slice's
    /// usually holds one port), made an index again by [`EndpointIndex::from_ports`].
    pub(crate) fn into_ports(self) -> Vec<(PortKey, Vec<EndpointInfo>)> {
        self.ports
            .into_iter()
            .map(|(key, mut endpoints)| {
                (key, {
                    endpoints.shrink_to_fit();
                    endpoints
                })
            })
            .collect()
    }

    /// An index of the endpoints of several [`EndpointIndex::into_ports`], as if built from all their
    /// slices at once. It does not know which slices there were ([`EndpointIndex::slices_by_service`]
    /// is empty).
    pub(crate) fn from_ports<'a>(parts: impl IntoIterator<Item = &'a [(PortKey, Vec<EndpointInfo>)]>) -> EndpointIndex {
        let mut index = EndpointIndex::default();
        for (key, endpoints) in parts.into_iter().flatten() {
            index.ports.entry(key.clone()).or_default().extend(endpoints.iter().cloned());
        }
        // Each part is deduplicated already; the best copy of the best copies is the best copy.
        for endpoints in index.ports.values_mut() {
            dedup_endpoints(endpoints);
        }
        index
    }

    /// Every slice of `snapshot`, and its legacy Endpoints converted for Services that have no slice.
    pub fn of_snapshot(snapshot: &Snapshot, diagnostics: &mut Vec<Diagnostic>) -> EndpointIndex {
        let legacy = snapshot.legacy_endpoint_slices();
        EndpointIndex::build(snapshot.endpoint_slices.iter().chain(&legacy), diagnostics)
    }

    /// The endpoints of one service port, in one family. Empty when there are none.
    pub fn endpoints(&self, key: &PortKey, family: IpFamily) -> Vec<&EndpointInfo> {
        self.ports.get(key).into_iter().flatten().filter(|e| IpFamily::of(&e.backend.ip) == family).collect()
    }

    /// Slices naming a Service, by (namespace, Service name).
    pub fn slices_by_service(&self) -> &BTreeMap<(String, String), Vec<ObjectRef>> {
        &self.services
    }

    fn add_slice(&mut self, slice: &EndpointSlice, diagnostics: &mut Vec<Diagnostic>) {
        let namespace = slice.metadata.namespace.clone().unwrap_or_default();
        let labels = slice.metadata.labels.as_ref();
        let legacy = labels.and_then(|l| l.get(MANAGED_BY_LABEL)).is_some_and(|m| m == LEGACY_ENDPOINTS_MANAGER);
        // A slice converted from legacy Endpoints is named as the Endpoints object (the Service's name), so
        // that messages point at what is in the user's file; its fields are the slice's, so none is named.
        let object = match labels.and_then(|l| l.get(SERVICE_NAME_LABEL)) {
            Some(service) if legacy => ObjectRef::new("Endpoints", &namespace, service),
            _ => ObjectRef::new("EndpointSlice", &namespace, slice.metadata.name.as_deref().unwrap_or_default()),
        };
        let at = |diagnostic: Diagnostic, field: String| if legacy { diagnostic } else { diagnostic.at(field) };
        let endpoint_count = slice.endpoints.as_ref().map_or(0, Vec::len);
        let addressed = matches!(slice.address_type.as_str(), "IPv4" | "IPv6");
        if addressed && slice.ports.as_ref().is_none_or(Vec::is_empty) && endpoint_count > 0 {
            let warning = Diagnostic::warning(
                object.clone(),
                format!("no ports: its {endpoint_count} endpoint(s) serve no Service port"),
            );
            diagnostics.push(at(warning, "ports".into()));
        }
        let mut problem = |field: String, message: String| {
            diagnostics.push(at(Diagnostic::error(object.clone(), message), field));
        };
        let Some(service) = slice.metadata.labels.as_ref().and_then(|l| l.get(SERVICE_NAME_LABEL)) else {
            problem(format!("metadata.labels[{SERVICE_NAME_LABEL:?}]"), "missing: slice belongs to no Service".into());
            return;
        };
        self.services.entry((namespace.clone(), service.clone())).or_default().push(object.clone());
        let family = match slice.address_type.as_str() {
            "IPv4" => IpFamily::V4,
            "IPv6" => IpFamily::V6,
            // FQDN slices are not for proxies.
            _ => return,
        };
        let mut ports = Vec::new();
        for (i, port) in slice.ports.iter().flatten().enumerate() {
            let protocol_text = port.protocol.as_deref().unwrap_or("TCP");
            let Some(protocol) = Protocol::from_kubernetes(protocol_text) else {
                problem(
                    format!("ports[{i}].protocol"),
                    format!("unknown protocol {:?}; port skipped", shorten(protocol_text)),
                );
                continue;
            };
            let number = port.port.unwrap_or(0);
            let Some(number) = u16::try_from(number).ok().filter(|&n| n != 0) else {
                problem(format!("ports[{i}].port"), format!("port {number} is outside 1-65535; port skipped"));
                continue;
            };
            ports.push((port.name.clone().unwrap_or_default(), protocol, number));
        }
        // Each endpoint is read once; it then joins the list of every port of the slice.
        let mut infos = Vec::with_capacity(endpoint_count);
        for (i, endpoint) in slice.endpoints.iter().flatten().enumerate() {
            // Kubernetes guarantees one address per endpoint today; the first is the one to use.
            let Some(text) = endpoint.addresses.first() else { continue };
            let field = || format!("endpoints[{i}].addresses[0]");
            let Some(parsed) = parse_ip_sloppy(text) else {
                problem(field(), format!("{:?} is not an IP address; endpoint skipped", shorten(text)));
                continue;
            };
            if IpFamily::of(&parsed.ip) != family {
                problem(field(), format!("{} is not {family} as addressType says; endpoint skipped", parsed.ip));
                continue;
            }
            let conditions = endpoint.conditions.as_ref();
            let hints = endpoint.hints.as_ref();
            let ready = conditions.and_then(|c| c.ready).unwrap_or(true);
            infos.push(EndpointInfo {
                // The port is each slice port's, set below.
                backend: Backend { ip: parsed.ip, port: 0 },
                node_name: endpoint.node_name.clone(),
                zone: endpoint.zone.clone(),
                ready,
                serving: conditions.and_then(|c| c.serving).unwrap_or(ready),
                terminating: conditions.and_then(|c| c.terminating).unwrap_or(false),
                zone_hints: hints
                    .and_then(|h| h.for_zones.as_ref())
                    .map(|z| z.iter().map(|z| z.name.clone()).collect()),
                node_hints: hints
                    .and_then(|h| h.for_nodes.as_ref())
                    .map(|n| n.iter().map(|n| n.name.clone()).collect()),
            });
        }
        if infos.is_empty() {
            return;
        }
        let last = ports.len().saturating_sub(1);
        for (k, (name, protocol, number)) in ports.into_iter().enumerate() {
            // The last port takes the endpoints themselves; the others copies.
            let mut list = if k == last { std::mem::take(&mut infos) } else { infos.clone() };
            list.iter_mut().for_each(|info| info.backend.port = number);
            match self.ports.entry((namespace.clone(), service.clone(), name, protocol)) {
                Entry::Vacant(entry) => {
                    entry.insert(list);
                }
                Entry::Occupied(mut entry) => entry.get_mut().append(&mut list),
            }
        }
    }
}

/// The same address and port twice (a pod moving between slices, or an IP reused): the copy that is not
/// terminating wins, then the ready one.
fn dedup_endpoints(endpoints: &mut Vec<EndpointInfo>) {
    endpoints.sort_by(|a, b| {
        a.backend.cmp(&b.backend).then(a.terminating.cmp(&b.terminating)).then(b.ready.cmp(&a.ready)).then(a.cmp(b))
    });
    endpoints.dedup_by(|later, first| later.backend == first.backend);
}

/// Where this node is, for topology-aware routing.
#[derive(Debug, Clone, Copy)]
pub struct Locality<'a> {
    /// This node's name.
    pub node: &'a str,
    /// This node's zone (its `topology.kubernetes.io/zone` label).
    pub zone: Option<&'a str>,
}

/// The endpoints of one service port this node balances over, per traffic policy.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EndpointSets {
    /// For the Cluster policy: topology hints applied when they cover this node.
    pub cluster: Vec<Backend>,
    /// For the Local policies: endpoints on this node (hints never apply).
    pub local: Vec<Backend>,
    /// Whether any endpoint anywhere is usable; when not, the service port is rejected.
    pub any: bool,
    /// Ready endpoints on this node, for the health-check nodePort.
    pub local_ready: usize,
}

impl EndpointSets {
    /// Categorises endpoints as kube-proxy's `CategorizeEndpoints` does.
    pub fn categorize(endpoints: &[&EndpointInfo], here: Locality<'_>) -> EndpointSets {
        let is_local = |e: &&&EndpointInfo| e.node_name.as_deref() == Some(here.node);
        let local: Vec<&EndpointInfo> = endpoints.iter().copied().filter(|e| is_local(&e)).collect();
        EndpointSets {
            cluster: usable_backends(&topology_filter(endpoints, here)),
            local: usable_backends(&local),
            any: !usable_backends(endpoints).is_empty(),
            local_ready: local.iter().filter(|e| e.ready).count(),
        }
    }
}

/// Topology hints narrow the Cluster set only when every ready endpoint carries them and at least
/// one is meant for this node (node hints, checked first) or its zone; otherwise every endpoint
/// stays, so traffic is never dropped for lack of a close endpoint. Unready endpoints are ignored
/// when deciding, and kept for the terminating fallback.
fn topology_filter<'a>(endpoints: &[&'a EndpointInfo], here: Locality<'_>) -> Vec<&'a EndpointInfo> {
    match hints_in_use(endpoints, here) {
        Some(scope) => endpoints.iter().copied().filter(|e| !e.ready || scope.admits(e)).collect(),
        None => endpoints.to_vec(),
    }
}

/// The topology hints that narrow a Cluster-policy endpoint set on this node, if any (see
/// [`EndpointSets::categorize`]): node hints when they cover this node, else zone hints when they cover
/// its zone. `None` when hints are absent, incomplete, or meant for other nodes and zones only.
pub fn hints_in_use(endpoints: &[&EndpointInfo], here: Locality<'_>) -> Option<HintScope> {
    let ready: Vec<&EndpointInfo> = endpoints.iter().copied().filter(|e| e.ready).collect();
    let applies = |scope: &HintScope| {
        !ready.is_empty()
            && ready.iter().all(|e| scope.hints(e).is_some_and(|h| !h.is_empty()))
            && ready.iter().any(|e| scope.admits(e))
    };
    let node = HintScope::Node(here.node.to_owned());
    if applies(&node) {
        return Some(node);
    }
    let zone = HintScope::Zone(here.zone?.to_owned());
    applies(&zone).then_some(zone)
}

/// Which topology hints are in force for a node: those for its name, or those for its zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HintScope {
    /// `hints.forNodes` naming this node (trafficDistribution `PreferSameNode`).
    Node(String),
    /// `hints.forZones` naming this node's zone (trafficDistribution `PreferClose`/`PreferSameZone`).
    Zone(String),
}

impl HintScope {
    /// The hints of this kind an endpoint carries.
    pub fn hints<'e>(&self, endpoint: &'e EndpointInfo) -> Option<&'e Vec<String>> {
        match self {
            HintScope::Node(_) => endpoint.node_hints.as_ref(),
            HintScope::Zone(_) => endpoint.zone_hints.as_ref(),
        }
    }

    /// Whether an endpoint's hints name this node (or zone).
    pub fn admits(&self, endpoint: &EndpointInfo) -> bool {
        let wanted = match self {
            HintScope::Node(name) | HintScope::Zone(name) => name,
        };
        self.hints(endpoint).is_some_and(|h| h.iter().any(|n| n == wanted))
    }
}

/// The endpoints a service port balances over: the ready ones; when none is ready, the ones still
/// serving while terminating, so that connections are not refused during a rollout.
pub fn usable_backends(endpoints: &[&EndpointInfo]) -> Vec<Backend> {
    let ready: Vec<Backend> = endpoints.iter().filter(|e| e.ready).map(|e| e.backend).collect();
    if !ready.is_empty() {
        return ready;
    }
    endpoints.iter().filter(|e| e.serving && e.terminating).map(|e| e.backend).collect()
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::discovery::v1::EndpointSlice;

    use super::EndpointIndex;

    /// Enough slices for the threads; some Services have several, some endpoints are in two slices,
    /// some slices are bad.
    fn slices() -> Vec<EndpointSlice> {
        (0..6000)
            .map(|i| {
                let service = i % 2500;
                // Every 997th slice names no Service; every 401st has an address that is none.
                let label = match i % 997 {
                    0 => serde_json::json!({}),
                    _ => serde_json::json!({"kubernetes.io/service-name": format!("s{service}")}),
                };
                let shared = format!("10.1.{}.{}", service / 250, service % 250);
                let own = match i % 401 {
                    0 => "bad".to_owned(),
                    _ => format!("10.2.{}.{}", i / 250, i % 250),
                };
                serde_json::from_value(serde_json::json!({
                    "metadata": {"name": format!("s{service}-{i}"), "namespace": "ns", "labels": label},
                    "addressType": "IPv4",
                    "endpoints": [
                        {"addresses": [shared], "conditions": {"ready": i % 3 != 0}},
                        {"addresses": [own]},
                    ],
                    "ports": [{"name": "http", "port": 8080}],
                }))
                .unwrap()
            })
            .collect()
    }

    #[test]
    fn an_index_built_on_many_threads_is_the_one_built_slice_by_slice() {
        let slices = slices();
        let mut diagnostics = Vec::new();
        let built = EndpointIndex::build(&slices, &mut diagnostics);

        let mut expected = EndpointIndex::default();
        let mut expected_diagnostics = Vec::new();
        for slice in &slices {
            expected.add_slice(slice, &mut expected_diagnostics);
        }
        for endpoints in expected.ports.values_mut() {
            super::dedup_endpoints(endpoints);
        }
        assert_eq!(built, expected);
        assert_eq!(diagnostics, expected_diagnostics);
        assert!(diagnostics.len() > 10, "{diagnostics:?}");
    }
}

//! Stage 3 of the core: a snapshot and a node's settings in, the rule model out.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::Service;

use crate::config::NodeConfig;
use crate::diagnostic::{Diagnostic, ObjectRef};
use crate::endpoints::{EndpointIndex, EndpointSets};
use crate::model::{
    Action, Backend, Destination, DestinationKind, HealthCheck, IpFamily, LocalTraffic, Masquerade, RuleModel,
    ServicePortName, ServiceSummary, Treatment,
};
use crate::node::NodeContext;
use crate::parallel;
use crate::service::{ProxiedService, ServiceClass, read_service};
use crate::snapshot::Snapshot;

/// Computes the rules `config.node_name` needs for the cluster state in `snapshot`.
///
/// Pure and deterministic: the same input gives the same model, whatever the order of objects.
/// Bad input never fails the whole computation; it is named in [`RuleModel::diagnostics`] and the rest
/// is programmed.
///
/// ```
/// use proxier_core::{NodeConfig, Snapshot, compute};
/// let yaml = r#"
/// apiVersion: v1
/// kind: Service
/// metadata: {name: web, namespace: shop}
/// spec: {clusterIP: 10.96.0.20, ports: [{name: http, port: 80, protocol: TCP}]}
/// "#;
/// let (snapshot, _) = Snapshot::from_text("inline", yaml);
/// let config = NodeConfig { node_name: "node-a".into(), ..Default::default() };
/// let model = compute(&snapshot, &config);
/// let v4 = model.families.first().unwrap();
/// assert_eq!(v4.destinations[0].service_port.to_string(), "shop/web:http/tcp");
/// ```
pub fn compute(snapshot: &Snapshot, config: &NodeConfig) -> RuleModel {
    Computation::new(snapshot, config).model
}

/// Below this many Services they are computed on one thread: the threads would cost more than they save.
const PARALLEL_MIN_SERVICES: usize = 256;

/// A model with what it was computed from besides the snapshot: the node's facts and the endpoint index
/// of the whole snapshot. [`crate::trace()`] walks a model and explains it from these, without deriving
/// them a second time.
#[derive(Debug, Clone)]
pub struct Computation {
    /// The rule model, as [`compute()`] returns it.
    pub model: RuleModel,
    /// The node's facts the model was computed for.
    pub node: NodeContext,
    /// Every endpoint of every service port of the snapshot.
    pub endpoints: EndpointIndex,
}

impl Computation {
    /// Computes the rules `config.node_name` needs for `snapshot`, keeping the node's facts and the
    /// endpoint index.
    pub fn new(snapshot: &Snapshot, config: &NodeConfig) -> Computation {
        let node = NodeContext::new(snapshot.node(&config.node_name), config);
        let mut diagnostics = Vec::new();
        let endpoints = EndpointIndex::of_snapshot(snapshot, &mut diagnostics);
        let services: Vec<ServiceRules> = parallel::map(&snapshot.services, PARALLEL_MIN_SERVICES, |service| {
            service_rules(&ParsedService::read(service), &endpoints, &node)
        });
        let mut model = assemble(&node, &services);
        model.diagnostics.extend(diagnostics);
        model.diagnostics.extend(orphan_slices(&endpoints, &model.services));
        if let Some(warning) = no_endpoints_at_all(snapshot, &model) {
            model.diagnostics.push(warning);
        }
        for diagnostic in &mut model.diagnostics {
            if diagnostic.source.is_none() {
                diagnostic.source = snapshot.sources.get(&diagnostic.object).cloned();
            }
        }
        model.diagnostics.sort();
        model.diagnostics.dedup();
        Computation { model, node, endpoints }
    }
}

/// One warning when the snapshot has proxied Services but not a single EndpointSlice or Endpoints: then
/// every one is rejected, and the likely cause is a `kubectl get` that left out `endpointslices`.
fn no_endpoints_at_all(snapshot: &Snapshot, model: &RuleModel) -> Option<Diagnostic> {
    let proxied = model.services.iter().filter(|s| matches!(s.treatment, Treatment::Proxied { .. })).count();
    if proxied == 0 || !snapshot.endpoint_slices.is_empty() || !snapshot.endpoints.is_empty() {
        return None;
    }
    Some(Diagnostic::warning(
        ObjectRef::snapshot(),
        format!(
            "{proxied} proxied Service(s) but no EndpointSlices or Endpoints at all: none has an endpoint, and \
             every one rejects connections (was `endpointslices` left out of `kubectl get`?)"
        ),
    ))
}

/// A Service as read from the API: what kind of Service it is and the problems found reading it.
/// Reading is the costly, object-sized part of a Service's rules; keep this instead of the Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedService {
    /// The Service.
    pub object: ObjectRef,
    /// Whether and how it is proxied.
    pub class: ServiceClass,
    /// Problems found in it.
    pub diagnostics: Vec<Diagnostic>,
}

impl ParsedService {
    /// Reads a Service.
    pub fn read(service: &Service) -> ParsedService {
        let mut diagnostics = Vec::new();
        let class = read_service(service, &mut diagnostics);
        let object = ObjectRef::new(
            "Service",
            service.metadata.namespace.as_deref().unwrap_or_default(),
            service.metadata.name.as_deref().unwrap_or_default(),
        );
        ParsedService { object, class, diagnostics }
    }
}

/// One Service's share of a node's rules, computed on its own: a change to one Service or its
/// endpoints recomputes only its share, and the shares merge into a [`RuleModel`] (see [`crate::state::ClusterState`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRules {
    /// What proxier does with the Service.
    pub summary: ServiceSummary,
    /// One entry per family the Service has a ClusterIP in, IPv4 first.
    pub families: Vec<ServiceFamilyRules>,
    /// Problems found in the Service, and destinations it repeats.
    pub diagnostics: Vec<Diagnostic>,
    /// Whether the Service asks for a nodePort (on a port, or for health checks): what makes a node
    /// without a known address worth a warning.
    pub node_ports: bool,
}

/// A Service's rules in one family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceFamilyRules {
    /// The family.
    pub family: IpFamily,
    /// The Service's ClusterIP in this family.
    pub cluster_ip: IpAddr,
    /// Sorted by (ip, protocol, port); each key appears once.
    pub destinations: Vec<Destination>,
    /// The health-check nodePort, for an externalTrafficPolicy `Local` Service.
    pub health_check: Option<HealthCheck>,
    /// The backends that may reach themselves through this node's rules (see
    /// [`FamilyRules::hairpin_ips`](crate::FamilyRules::hairpin_ips)), sorted.
    pub hairpin_ips: Vec<IpAddr>,
}

/// One Service's rules on the node `node` describes, given the endpoints of its ports.
///
/// ```
/// use proxier_core::compute::{ParsedService, service_rules};
/// use proxier_core::node::NodeContext;
/// use proxier_core::endpoints::EndpointIndex;
/// use proxier_core::NodeConfig;
/// let service = serde_json::from_str(r#"{"metadata":{"namespace":"shop","name":"web"},
///     "spec":{"clusterIP":"10.96.0.20","ports":[{"port":80,"protocol":"TCP"}]}}"#).unwrap();
/// let node = NodeContext::new(None, &NodeConfig { node_name: "node-a".into(), ..Default::default() });
/// let rules = service_rules(&ParsedService::read(&service), &EndpointIndex::default(), &node);
/// assert_eq!(rules.families[0].destinations.len(), 1); // 10.96.0.20:80, rejected: no endpoints
/// ```
pub fn service_rules(service: &ParsedService, endpoints: &EndpointIndex, node: &NodeContext) -> ServiceRules {
    let mut diagnostics = service.diagnostics.clone();
    let treatment = match &service.class {
        ServiceClass::Proxied(proxied) => {
            let mut families: Vec<IpFamily> = proxied.cluster_ips.iter().map(IpFamily::of).collect();
            families.sort();
            Treatment::Proxied { ports: proxied.ports.len(), families }
        }
        ServiceClass::Headless => Treatment::Headless,
        ServiceClass::ExternalName(target) => Treatment::ExternalName { target: target.clone() },
        ServiceClass::NotProxied(reason) => Treatment::NotProxied { reason: reason.clone() },
        ServiceClass::Invalid => Treatment::Invalid,
    };
    let families = match &service.class {
        ServiceClass::Proxied(proxied) => IpFamily::ALL
            .into_iter()
            .filter_map(|family| service_family_rules(family, proxied, endpoints, node, &mut diagnostics))
            .collect(),
        _ => Vec::new(),
    };
    let node_ports = match &service.class {
        ServiceClass::Proxied(proxied) => {
            proxied.health_check_node_port.is_some() || proxied.ports.iter().any(|port| port.node_port.is_some())
        }
        _ => false,
    };
    ServiceRules {
        summary: ServiceSummary { service: service.object.clone(), treatment },
        families,
        diagnostics,
        node_ports,
    }
}

/// Merges the rules of every Service into the node's model. A destination two Services claim goes to
/// the first in namespace/name order, whatever the order given; the other is named in a diagnostic.
pub(crate) fn assemble<'a>(node: &NodeContext, services: impl IntoIterator<Item = &'a ServiceRules>) -> RuleModel {
    let mut services: Vec<&ServiceRules> = services.into_iter().collect();
    services.sort_by(|a, b| a.summary.service.cmp(&b.summary.service));
    let mut diagnostics = node.diagnostics.clone();
    if services.iter().any(|service| service.node_ports) {
        diagnostics.extend(node.node_port_warning.clone());
    }
    let mut families: Vec<IpFamily> = node.node_families.clone();
    families.extend(services.iter().flat_map(|s| s.families.iter().map(|f| f.family)));
    families.sort();
    families.dedup();

    let families = families
        .into_iter()
        .map(|family| {
            let mut rules = node.empty_rules(family);
            let mut cluster_ips = BTreeSet::new();
            let mut hairpin_ips = BTreeSet::new();
            let mut destinations = BTreeMap::new();
            for service in &services {
                let Some(own) = service.families.iter().find(|f| f.family == family) else { continue };
                cluster_ips.insert(own.cluster_ip);
                hairpin_ips.extend(own.hairpin_ips.iter().copied());
                for destination in &own.destinations {
                    insert_destination(
                        &mut destinations,
                        destination.clone(),
                        &service.summary.service,
                        &mut diagnostics,
                    );
                }
                rules.health_checks.extend(own.health_check.clone());
            }
            rules.cluster_ips = cluster_ips.into_iter().collect();
            rules.hairpin_ips = hairpin_ips.into_iter().collect();
            rules.destinations = destinations.into_values().collect();
            rules
        })
        .collect();
    for service in &services {
        diagnostics.extend(service.diagnostics.iter().cloned());
    }
    diagnostics.sort();
    diagnostics.dedup();
    RuleModel {
        node: node.node_name.clone(),
        families,
        services: services.iter().map(|s| s.summary.clone()).collect(),
        diagnostics,
    }
}

fn service_family_rules(
    family: IpFamily,
    service: &ProxiedService,
    endpoints: &EndpointIndex,
    node: &NodeContext,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<ServiceFamilyRules> {
    let cluster_ip = service.cluster_ip(family)?;
    let context = node.family(family);
    let here = node.locality();
    let of_family =
        |ips: &[IpAddr]| -> Vec<IpAddr> { ips.iter().copied().filter(|ip| IpFamily::of(ip) == family).collect() };
    let namespace = &service.object.namespace;
    let name = &service.object.name;
    let mut local_ready = BTreeSet::new();
    let mut local = BTreeSet::new();
    let mut from_other_nodes = BTreeSet::new();
    let mut destinations: BTreeMap<(IpAddr, crate::Protocol, u16), Destination> = BTreeMap::new();
    for port in &service.ports {
        let service_port = ServicePortName {
            namespace: namespace.clone(),
            name: name.clone(),
            port: port.name.clone(),
            protocol: port.protocol,
        };
        let key = (namespace.clone(), name.clone(), port.name.clone(), port.protocol);
        let port_endpoints = endpoints.endpoints(&key, family);
        local_ready.extend(
            port_endpoints
                .iter()
                .filter(|e| e.ready && e.node_name.as_deref() == Some(here.node))
                .map(|e| e.backend.ip),
        );
        local.extend(port_endpoints.iter().filter(|e| e.node_name.as_deref() == Some(here.node)).map(|e| e.backend.ip));
        let sets = EndpointSets::categorize(&port_endpoints, here);
        let balance = |backends: &[Backend], masquerade| {
            if backends.is_empty() {
                Action::Drop
            } else {
                Action::Balance { backends: backends.to_vec(), masquerade, affinity: service.affinity }
            }
        };
        let (internal, external) = if !sets.any {
            (Action::Reject, Action::Reject)
        } else {
            let internal_set = if service.internal_local { &sets.local } else { &sets.cluster };
            let internal = balance(internal_set, context.cluster_masquerade);
            let external = if service.external_local {
                let pods_and_node = |masquerade| balance(&sets.cluster, masquerade);
                let others = balance(&sets.local, Masquerade::Never);
                Action::BySource {
                    // Without a detector pods cannot be told apart: they are treated as others.
                    pods: Box::new(if context.local_traffic == LocalTraffic::None {
                        others.clone()
                    } else {
                        pods_and_node(Masquerade::Never)
                    }),
                    node: Box::new(pods_and_node(Masquerade::Always)),
                    others: Box::new(others),
                }
            } else {
                // External traffic with the Cluster policy may land on any node: always masquerade
                // so that replies come back through this node.
                balance(&sets.cluster, Masquerade::Always)
            };
            (internal, external)
        };
        let mut targets = vec![(cluster_ip, port.port, DestinationKind::ClusterIp, internal)];
        for ip in of_family(&service.external_ips) {
            targets.push((ip, port.port, DestinationKind::ExternalIp, external.clone()));
        }
        for ip in of_family(&service.load_balancer_ips) {
            targets.push((ip, port.port, DestinationKind::LoadBalancerIp, external.clone()));
        }
        if let Some(node_port) = port.node_port {
            // A pod on another node may send to this node's NodePort; under the Local policy pods are
            // balanced over every endpoint without masquerade, so it may land on itself here.
            if let Action::BySource { pods, .. } = &external
                && !context.node_port_ips.is_empty()
            {
                from_other_nodes.extend(pods.backends().into_iter().map(|b| b.ip));
            }
            for &ip in &context.node_port_ips {
                targets.push((ip, node_port, DestinationKind::NodePort, external.clone()));
            }
        }
        let lb_ips = of_family(&service.load_balancer_ips);
        for (ip, number, kind, action) in targets {
            let allowed_sources = match (&service.source_ranges, kind) {
                (Some(ranges), DestinationKind::LoadBalancerIp) => {
                    source_allow_list(ranges, &node.ips, &lb_ips, family)
                }
                _ => None,
            };
            let destination = Destination {
                ip,
                protocol: port.protocol,
                port: number,
                kind,
                service_port: service_port.clone(),
                action,
                allowed_sources,
            };
            insert_destination(&mut destinations, destination, &service.object, diagnostics);
        }
    }
    let health_check = service.health_check_node_port.map(|node_port| HealthCheck {
        service: service.object.clone(),
        node_port,
        local_endpoints: local_ready.len(),
    });
    // Only a connection DNATed on this node to its own source needs the hairpin masquerade, and only a
    // source whose packets pass this node's DNAT can be that: a pod on this node (traffic of pods
    // elsewhere to ClusterIPs, externalIPs and LoadBalancer IPs is DNATed on their own node), or a pod
    // elsewhere reaching a NodePort here without being masqueraded.
    let backends: BTreeSet<IpAddr> =
        destinations.values().flat_map(|d| d.action.backends()).map(|backend| backend.ip).collect();
    let mut hairpin: BTreeSet<IpAddr> = local.intersection(&backends).copied().collect();
    hairpin.extend(from_other_nodes);
    Some(ServiceFamilyRules {
        family,
        cluster_ip,
        destinations: destinations.into_values().collect(),
        health_check,
        hairpin_ips: hairpin.into_iter().collect(),
    })
}

/// The sources allowed to reach a LoadBalancer IP. When a range holds one of the node's addresses,
/// the LoadBalancer IPs themselves are allowed too: VIP-style load balancers hand traffic back to the
/// node with the VIP as its source.
fn source_allow_list(ranges: &[IpNet], node_ips: &[IpAddr], lb_ips: &[IpAddr], family: IpFamily) -> Option<Vec<IpNet>> {
    let mut allowed: Vec<IpNet> = ranges.iter().copied().filter(|n| IpFamily::of_net(n) == family).collect();
    if ranges.iter().any(|net| node_ips.iter().any(|ip| net.contains(ip))) {
        allowed.extend(lb_ips.iter().map(|&ip| IpNet::from(ip)));
    }
    allowed.sort();
    allowed.dedup();
    Some(allowed)
}

/// Two Services claiming one address, protocol and port (an externalIP or NodePort clash): the first
/// in namespace/name order keeps it, so the outcome does not depend on input order.
fn insert_destination(
    destinations: &mut BTreeMap<(IpAddr, crate::Protocol, u16), Destination>,
    destination: Destination,
    object: &ObjectRef,
    diagnostics: &mut Vec<Diagnostic>,
) {
    let key = (destination.ip, destination.protocol, destination.port);
    if let Some(existing) = destinations.get(&key) {
        diagnostics.push(Diagnostic::error(
            object.clone(),
            format!(
                "{} {}:{}/{} is already used by {}; not programmed for {}",
                destination.kind,
                destination.ip,
                destination.port,
                destination.protocol,
                existing.service_port,
                destination.service_port
            ),
        ));
        return;
    }
    destinations.insert(key, destination);
}

/// A warning for each slice in `endpoints` whose Service is not among `services`.
pub(crate) fn orphan_slices(endpoints: &EndpointIndex, services: &[ServiceSummary]) -> Vec<Diagnostic> {
    let known: BTreeSet<(&str, &str)> =
        services.iter().map(|s| (s.service.namespace.as_str(), s.service.name.as_str())).collect();
    let mut diagnostics = Vec::new();
    for ((namespace, service), slices) in endpoints.slices_by_service() {
        if !known.contains(&(namespace.as_str(), service.as_str())) {
            diagnostics.extend(slices.iter().map(|slice| orphan_slice(slice, namespace, service)));
        }
    }
    diagnostics
}

/// The warning for an EndpointSlice whose Service (`namespace/service`) is unknown.
pub(crate) fn orphan_slice(slice: &ObjectRef, namespace: &str, service: &str) -> Diagnostic {
    Diagnostic::warning(
        slice.clone(),
        format!("its {} is not in the snapshot; ignored", ObjectRef::new("Service", namespace, service)),
    )
}

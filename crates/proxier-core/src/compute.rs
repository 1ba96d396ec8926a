//! Stage 3 of the core: a snapshot and a node's settings in, the rule model out.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::Node;

use crate::config::{DetectLocal, NodeConfig};
use crate::diagnostic::{Diagnostic, ObjectRef, Severity};
use crate::endpoints::{EndpointIndex, EndpointSets, Locality};
use crate::model::{
    Action, Backend, Destination, DestinationKind, FamilyRules, HealthCheck, IpFamily, LocalTraffic, Masquerade,
    RuleModel, ServicePortName, ServiceSummary, Treatment,
};
use crate::node::{node_ips, node_port_ips};
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
    let mut diagnostics = Vec::new();
    let node = node_facts(snapshot.node(&config.node_name), config, &mut diagnostics);

    let endpoints = EndpointIndex::of_snapshot(snapshot, &mut diagnostics);

    let mut services = Vec::new();
    let mut proxied = Vec::new();
    for service in &snapshot.services {
        let class = read_service(service, &mut diagnostics);
        let object = ObjectRef::new(
            "Service",
            service.metadata.namespace.as_deref().unwrap_or_default(),
            service.metadata.name.as_deref().unwrap_or_default(),
        );
        let treatment = match class {
            ServiceClass::Proxied(service) => {
                let mut families: Vec<IpFamily> = service.cluster_ips.iter().map(IpFamily::of).collect();
                families.sort();
                let treatment = Treatment::Proxied { ports: service.ports.len(), families };
                proxied.push(service);
                treatment
            }
            ServiceClass::Headless => Treatment::Headless,
            ServiceClass::ExternalName(target) => Treatment::ExternalName { target },
            ServiceClass::NotProxied(reason) => Treatment::NotProxied { reason },
            ServiceClass::Invalid => Treatment::Invalid,
        };
        services.push(ServiceSummary { service: object, treatment });
    }
    services.sort_by(|a, b| a.service.cmp(&b.service));
    report_orphan_slices(&endpoints, &services, &mut diagnostics);

    let families = IpFamily::ALL
        .into_iter()
        .filter(|&family| {
            node.ips.iter().any(|ip| IpFamily::of(ip) == family)
                || config.cluster_cidrs.iter().any(|net| IpFamily::of_net(net) == family)
                || proxied.iter().any(|s| s.cluster_ip(family).is_some())
        })
        .map(|family| family_rules(family, &proxied, &endpoints, &node, config, &mut diagnostics))
        .collect();

    for diagnostic in &mut diagnostics {
        if diagnostic.source.is_none() {
            diagnostic.source = snapshot.sources.get(&diagnostic.object).cloned();
        }
    }
    diagnostics.sort();
    diagnostics.dedup();
    RuleModel { node: config.node_name.clone(), families, services, diagnostics }
}

/// What this node knows about itself, shared by both families.
struct NodeFacts<'a> {
    ips: Vec<IpAddr>,
    zone: Option<&'a str>,
    pod_cidrs: Vec<IpNet>,
}

fn node_facts<'a>(node: Option<&'a Node>, config: &NodeConfig, diagnostics: &mut Vec<Diagnostic>) -> NodeFacts<'a> {
    let labels = node.and_then(|n| n.metadata.labels.as_ref());
    let pod_cidrs = node
        .and_then(|n| n.spec.as_ref())
        .and_then(|s| s.pod_cidrs.clone().or_else(|| s.pod_cidr.clone().map(|c| vec![c])))
        .unwrap_or_default()
        .iter()
        .filter_map(|text| crate::ip::parse_cidr_sloppy(text))
        .collect();
    NodeFacts {
        ips: node_ips(node, config, diagnostics),
        zone: labels.and_then(|l| l.get(LABEL_ZONE)).map(String::as_str),
        pod_cidrs,
    }
}

/// The Node label that names its zone.
pub const LABEL_ZONE: &str = "topology.kubernetes.io/zone";

fn local_traffic(family: IpFamily, config: &NodeConfig, node: &NodeFacts<'_>) -> LocalTraffic {
    let of_family =
        |nets: &[IpNet]| -> Vec<IpNet> { nets.iter().copied().filter(|n| IpFamily::of_net(n) == family).collect() };
    let cidrs = match &config.detect_local {
        DetectLocal::ClusterCidr => of_family(&config.cluster_cidrs),
        DetectLocal::NodeCidr => of_family(&node.pod_cidrs),
        DetectLocal::BridgeInterface(name) => return LocalTraffic::Interface(name.clone()),
        DetectLocal::InterfaceNamePrefix(prefix) => return LocalTraffic::InterfacePrefix(prefix.clone()),
    };
    if cidrs.is_empty() { LocalTraffic::None } else { LocalTraffic::Cidrs(cidrs) }
}

fn family_rules(
    family: IpFamily,
    services: &[ProxiedService],
    endpoints: &EndpointIndex,
    node: &NodeFacts<'_>,
    config: &NodeConfig,
    diagnostics: &mut Vec<Diagnostic>,
) -> FamilyRules {
    let node_port_ips = node_port_ips(&node.ips, config, family);
    let local_traffic = local_traffic(family, config, node);
    let cluster_masquerade = if config.masquerade_all {
        Masquerade::Always
    } else if local_traffic == LocalTraffic::None {
        Masquerade::Never
    } else {
        Masquerade::OutsidePodNetwork
    };
    let here = Locality { node: &config.node_name, zone: node.zone };
    let of_family =
        |ips: &[IpAddr]| -> Vec<IpAddr> { ips.iter().copied().filter(|ip| IpFamily::of(ip) == family).collect() };

    let mut cluster_ips = BTreeSet::new();
    let mut health_checks = Vec::new();
    let mut destinations: BTreeMap<(IpAddr, crate::Protocol, u16), Destination> = BTreeMap::new();
    for service in services {
        let Some(cluster_ip) = service.cluster_ip(family) else { continue };
        cluster_ips.insert(cluster_ip);
        let namespace = &service.object.namespace;
        let name = &service.object.name;
        let mut local_ready = BTreeSet::new();
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
                let internal = balance(internal_set, cluster_masquerade);
                let external = if service.external_local {
                    let pods_and_node = |masquerade| balance(&sets.cluster, masquerade);
                    let others = balance(&sets.local, Masquerade::Never);
                    Action::BySource {
                        // Without a detector pods cannot be told apart: they are treated as others.
                        pods: Box::new(if local_traffic == LocalTraffic::None {
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
                for &ip in &node_port_ips {
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
        if let Some(node_port) = service.health_check_node_port {
            health_checks.push(HealthCheck {
                service: service.object.clone(),
                node_port,
                local_endpoints: local_ready.len(),
            });
        }
    }

    FamilyRules {
        family,
        node_port_ips,
        local_traffic,
        cluster_ips: cluster_ips.into_iter().collect(),
        service_cidrs: config.service_cidrs.iter().copied().filter(|n| IpFamily::of_net(n) == family).collect(),
        destinations: destinations.into_values().collect(),
        health_checks,
    }
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
        diagnostics.push(Diagnostic {
            severity: Severity::Error,
            source: None,
            object: object.clone(),
            field: None,
            message: format!(
                "{} {}:{}/{} is already used by {}; not programmed for {}",
                destination.kind,
                destination.ip,
                destination.port,
                destination.protocol,
                existing.service_port,
                destination.service_port
            ),
        });
        return;
    }
    destinations.insert(key, destination);
}

fn report_orphan_slices(endpoints: &EndpointIndex, services: &[ServiceSummary], diagnostics: &mut Vec<Diagnostic>) {
    let known: BTreeSet<(&str, &str)> =
        services.iter().map(|s| (s.service.namespace.as_str(), s.service.name.as_str())).collect();
    for ((namespace, service), slices) in endpoints.slices_by_service() {
        if known.contains(&(namespace.as_str(), service.as_str())) {
            continue;
        }
        for slice in slices {
            diagnostics.push(Diagnostic {
                severity: Severity::Warning,
                source: None,
                object: slice.clone(),
                field: None,
                message: format!(
                    "its {} is not in the snapshot; ignored",
                    ObjectRef::new("Service", namespace, service)
                ),
            });
        }
    }
}

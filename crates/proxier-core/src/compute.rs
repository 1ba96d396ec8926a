//! Stage 3 of the core: a snapshot and a node's settings in, the rule model out.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use crate::config::NodeConfig;
use crate::diagnostic::{Diagnostic, ObjectRef, Severity};
use crate::endpoints::{EndpointIndex, usable_backends};
use crate::model::{
    Action, Destination, DestinationKind, FamilyRules, IpFamily, Masquerade, RuleModel, ServicePortName,
    ServiceSummary, Treatment,
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
    let node_ips = node_ips(snapshot.node(&config.node_name), config, &mut diagnostics);

    let mut slices = snapshot.endpoint_slices.clone();
    slices.extend(snapshot.legacy_endpoint_slices());
    let endpoints = EndpointIndex::build(&slices, &mut diagnostics);

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
            node_ips.iter().any(|ip| IpFamily::of(ip) == family)
                || config.cluster_cidrs.iter().any(|net| IpFamily::of_net(net) == family)
                || proxied.iter().any(|s| s.cluster_ip(family).is_some())
        })
        .map(|family| family_rules(family, &proxied, &endpoints, &node_ips, config, &mut diagnostics))
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

fn family_rules(
    family: IpFamily,
    services: &[ProxiedService],
    endpoints: &EndpointIndex,
    node_ips: &[IpAddr],
    config: &NodeConfig,
    diagnostics: &mut Vec<Diagnostic>,
) -> FamilyRules {
    let node_port_ips = node_port_ips(node_ips, config, family);
    let pod_cidrs: Vec<_> =
        config.cluster_cidrs.iter().copied().filter(|net| IpFamily::of_net(net) == family).collect();
    let cluster_masquerade = if config.masquerade_all {
        Masquerade::Always
    } else if pod_cidrs.is_empty() {
        Masquerade::Never
    } else {
        Masquerade::OutsidePodNetwork
    };

    let mut cluster_ips = BTreeSet::new();
    let mut destinations: BTreeMap<(IpAddr, crate::Protocol, u16), Destination> = BTreeMap::new();
    for service in services {
        let Some(cluster_ip) = service.cluster_ip(family) else { continue };
        cluster_ips.insert(cluster_ip);
        let namespace = &service.object.namespace;
        let name = &service.object.name;
        for port in &service.ports {
            let service_port = ServicePortName {
                namespace: namespace.clone(),
                name: name.clone(),
                port: port.name.clone(),
                protocol: port.protocol,
            };
            let key = (namespace.clone(), name.clone(), port.name.clone(), port.protocol);
            let backends = usable_backends(&endpoints.endpoints(&key, family));
            let action = |masquerade| {
                if backends.is_empty() {
                    Action::Reject
                } else {
                    Action::Balance { backends: backends.clone(), masquerade }
                }
            };
            let mut targets = vec![(cluster_ip, port.port, DestinationKind::ClusterIp, action(cluster_masquerade))];
            let of_family = |ips: &[IpAddr]| -> Vec<IpAddr> {
                ips.iter().copied().filter(|ip| IpFamily::of(ip) == family).collect()
            };
            // External traffic with the Cluster policy may land on any node: always masquerade so that
            // replies come back through this node.
            for ip in of_family(&service.external_ips) {
                targets.push((ip, port.port, DestinationKind::ExternalIp, action(Masquerade::Always)));
            }
            for ip in of_family(&service.load_balancer_ips) {
                targets.push((ip, port.port, DestinationKind::LoadBalancerIp, action(Masquerade::Always)));
            }
            if let Some(node_port) = port.node_port {
                for &ip in &node_port_ips {
                    targets.push((ip, node_port, DestinationKind::NodePort, action(Masquerade::Always)));
                }
            }
            for (ip, number, kind, action) in targets {
                let destination = Destination {
                    ip,
                    protocol: port.protocol,
                    port: number,
                    kind,
                    service_port: service_port.clone(),
                    action,
                };
                insert_destination(&mut destinations, destination, &service.object, diagnostics);
            }
        }
    }

    FamilyRules {
        family,
        node_port_ips,
        pod_cidrs,
        cluster_ips: cluster_ips.into_iter().collect(),
        destinations: destinations.into_values().collect(),
    }
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
                message: format!("its Service {namespace}/{service} is not in the snapshot; ignored"),
            });
        }
    }
}

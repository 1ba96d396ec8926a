//! `proxier explain`: how each Service of a snapshot is reached — from a pod, from a node, from outside.
//!
//! [`explain`] reads the whole snapshot (not one node's rules) and answers, per Service:
//!
//! - its **DNS names** (`name.namespace.svc.<domain>` with A/AAAA records for the ClusterIPs and SRV
//!   records for named ports; for a headless Service, the endpoints' addresses and one record per pod,
//!   named by the endpoint's `hostname` or its dashed address; for an ExternalName Service, the CNAME);
//! - per port, the **concrete addresses**: ClusterIP:port (from pods and nodes), every node's
//!   address:nodePort, LoadBalancer IPs and externalIPs (from outside), with the endpoints behind them;
//! - the **Ingresses** that route to it, and the Service their controller is exposed through;
//! - **warnings**: no usable endpoint (connections are rejected), a `Local` traffic policy on nodes
//!   without a local endpoint (connections there are dropped), source ranges that let nothing through,
//!   and Services proxier does not program.
//!
//! NodePorts are listed on each Node's primary address per family, or on its addresses inside
//! [`ExplainOptions::nodeport_addresses`] when set, as `proxier run --nodeport-addresses` would serve them.
//!
//! ## Finding an Ingress controller's Service
//!
//! The snapshot does not say which Service exposes an Ingress controller, so it is guessed: a Service of
//! type LoadBalancer or NodePort whose name or `app.kubernetes.io/name`, `app.kubernetes.io/instance`,
//! `app.kubernetes.io/part-of` or `app` label contains a known controller's name ([`CONTROLLER_NAMES`]:
//! `ingress-nginx`, `nginx`, `traefik`, `haproxy`, `contour`, `envoy`, `kong`, `istio-ingressgateway`,
//! `emissary`, `ambassador`, `skipper`, or just `ingress`). When the Ingress names a class
//! (`spec.ingressClassName`, or the legacy `kubernetes.io/ingress.class` annotation), candidates whose
//! name or labels contain the class name are preferred. Every remaining candidate is listed; none means
//! the controller is not in the snapshot (or exposed some other way, e.g. host ports).

use std::collections::BTreeSet;
use std::fmt::{self, Write as _};
use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::{LoadBalancerIngress, Service};
use k8s_openapi::api::networking::v1::{Ingress, IngressBackend};
use serde::Serialize;

use crate::config::NodeConfig;
use crate::diagnostic::ObjectRef;
use crate::endpoints::{EndpointIndex, EndpointInfo, usable_backends};
use crate::model::{Backend, IpFamily, Protocol};
use crate::node::NodeContext;
use crate::service::{ProxiedService, ServiceClass, read_service};
use crate::snapshot::{SERVICE_NAME_LABEL, Snapshot};

/// The default cluster DNS domain.
pub const DEFAULT_CLUSTER_DOMAIN: &str = "cluster.local";

/// Words that mark a Service as an Ingress controller's, checked against its name and identity labels.
pub const CONTROLLER_NAMES: &[&str] = &[
    "ingress-nginx",
    "nginx",
    "traefik",
    "haproxy",
    "contour",
    "envoy",
    "kong",
    "istio-ingressgateway",
    "emissary",
    "ambassador",
    "skipper",
    "ingress",
];

/// Labels read to recognise an Ingress controller's Service.
const IDENTITY_LABELS: &[&str] =
    &["app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/part-of", "app"];

/// What [`explain`] needs beyond the snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExplainOptions {
    /// The cluster DNS domain (`cluster.local`).
    pub cluster_domain: String,
    /// `--nodeport-addresses`: NodePorts only on node addresses in these ranges; empty means each node's
    /// primary address per family.
    pub nodeport_addresses: Vec<IpNet>,
    /// `primary` named beside [`ExplainOptions::nodeport_addresses`]: each node's primary address per
    /// family is listed too (without ranges it is anyway).
    pub nodeport_primary: bool,
    /// Only this Service (`namespace`, `name`); `None` for all.
    pub only: Option<(String, String)>,
}

impl Default for ExplainOptions {
    fn default() -> Self {
        ExplainOptions {
            cluster_domain: DEFAULT_CLUSTER_DOMAIN.to_owned(),
            nodeport_addresses: Vec::new(),
            nodeport_primary: false,
            only: None,
        }
    }
}

/// One DNS record the cluster DNS serves for a Service.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct DnsRecord {
    /// The name asked for.
    pub name: String,
    /// `A`, `AAAA`, `CNAME` or `SRV`.
    pub record: String,
    /// The answer.
    pub value: String,
}

/// An address a client uses, and what it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Access {
    /// `address:port` (`[v6]:port`), or `name:port`.
    pub address: String,
    /// `ClusterIP`, `DNS`, `NodePort on node-a`, `LoadBalancer IP`, `externalIP`, `pod`.
    pub via: String,
    /// A caveat (source ranges, `ipMode: Proxy`, a `Local` policy).
    pub note: Option<String>,
}

/// The endpoints behind a port, by condition.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct EndpointCounts {
    /// Ready.
    pub ready: usize,
    /// Not ready, still serving while terminating (used only when none is ready).
    pub serving_terminating: usize,
    /// Neither: never used.
    pub not_serving: usize,
}

/// One port of a Service and how it is reached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PortExplanation {
    /// The port's name (empty for a single unnamed port).
    pub name: String,
    /// Its protocol.
    pub protocol: Protocol,
    /// The Service port.
    pub port: u16,
    /// The nodePort, if any.
    pub node_port: Option<u16>,
    /// The endpoints connections go to (the usable ones over all nodes, both families).
    pub endpoints: Vec<Backend>,
    /// Counts by condition.
    pub counts: EndpointCounts,
    /// Addresses for pods.
    pub from_pods: Vec<Access>,
    /// Addresses for processes on the nodes.
    pub from_nodes: Vec<Access>,
    /// Addresses for clients outside the cluster.
    pub from_outside: Vec<Access>,
}

/// An Ingress rule that sends traffic to a Service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IngressRoute {
    /// The Ingress.
    pub ingress: ObjectRef,
    /// Its class (`spec.ingressClassName` or the legacy annotation).
    pub class: Option<String>,
    /// `host/path` routed here (`*` for any host; `(default backend)` for the default backend).
    pub routes: Vec<String>,
    /// The Service port it names (a name or a number).
    pub port: String,
    /// The addresses in the Ingress's status.
    pub addresses: Vec<String>,
    /// The Services its controller is guessed to be exposed through (see the module docs).
    pub controllers: Vec<ObjectRef>,
    /// Their outside addresses (LoadBalancer IPs, externalIPs, node addresses with nodePorts).
    pub controller_addresses: Vec<String>,
}

/// Everything about one Service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceExplanation {
    /// The Service.
    pub service: ObjectRef,
    /// `ClusterIP`, `NodePort`, `LoadBalancer`, `ExternalName`, or `headless`.
    #[serde(rename = "type")]
    pub type_: String,
    /// What proxier does with it, in a few words.
    pub treatment: String,
    /// Its DNS records.
    pub dns: Vec<DnsRecord>,
    /// Its ports.
    pub ports: Vec<PortExplanation>,
    /// Ingresses routing to it.
    pub ingresses: Vec<IngressRoute>,
    /// What may surprise.
    pub warnings: Vec<String>,
}

/// The answer for a snapshot: serialized as `proxier explain --output json` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Explanation {
    /// One entry per Service, sorted by namespace and name.
    pub services: Vec<ServiceExplanation>,
}

/// Explains every Service of `snapshot` (or only `options.only`).
pub fn explain(snapshot: &Snapshot, options: &ExplainOptions) -> Explanation {
    let mut slices = snapshot.endpoint_slices.clone();
    slices.extend(snapshot.legacy_endpoint_slices());
    let index = EndpointIndex::build(&slices, &mut Vec::new());
    let nodes = node_addresses(snapshot, options);
    let context = Context { snapshot, options, index: &index, nodes: &nodes, slices: &slices };
    let services = snapshot
        .services
        .iter()
        .filter(|service| match &options.only {
            Some((namespace, name)) => {
                service.metadata.namespace.as_deref() == Some(namespace)
                    && service.metadata.name.as_deref() == Some(name)
            }
            None => true,
        })
        .map(|service| context.service(service))
        .collect();
    Explanation { services }
}

/// A node's name and the addresses its NodePorts are served on.
struct NodeAddresses {
    name: String,
    node_port_ips: Vec<IpAddr>,
}

fn node_addresses(snapshot: &Snapshot, options: &ExplainOptions) -> Vec<NodeAddresses> {
    snapshot
        .nodes
        .iter()
        .filter_map(|node| {
            let name = node.metadata.name.clone()?;
            let config = NodeConfig {
                node_name: name.clone(),
                nodeport_addresses: options.nodeport_addresses.clone(),
                ..NodeConfig::default()
            };
            let mut node_port_ips = NodeContext::new(Some(node), &config).node_port_ips();
            if options.nodeport_primary && !options.nodeport_addresses.is_empty() {
                let primary = NodeConfig { node_name: name.clone(), ..NodeConfig::default() };
                for ip in NodeContext::new(Some(node), &primary).node_port_ips() {
                    if !node_port_ips.contains(&ip) {
                        node_port_ips.push(ip);
                    }
                }
                node_port_ips.sort();
            }
            Some(NodeAddresses { name, node_port_ips })
        })
        .collect()
}

struct Context<'a> {
    snapshot: &'a Snapshot,
    options: &'a ExplainOptions,
    index: &'a EndpointIndex,
    nodes: &'a [NodeAddresses],
    slices: &'a [k8s_openapi::api::discovery::v1::EndpointSlice],
}

fn address(ip: IpAddr, port: u16) -> String {
    Backend { ip, port }.to_string()
}

fn record_type(ip: &IpAddr) -> &'static str {
    if ip.is_ipv4() { "A" } else { "AAAA" }
}

impl Context<'_> {
    fn service(&self, service: &Service) -> ServiceExplanation {
        let namespace = service.metadata.namespace.clone().unwrap_or_default();
        let name = service.metadata.name.clone().unwrap_or_default();
        let object = ObjectRef::new("Service", &namespace, &name);
        let fqdn = format!("{name}.{namespace}.svc.{}", self.options.cluster_domain);
        let spec = service.spec.as_ref();
        let declared_type = spec.and_then(|s| s.type_.clone()).unwrap_or_else(|| "ClusterIP".to_owned());
        let mut diagnostics = Vec::new();
        let class = read_service(service, &mut diagnostics);
        let mut explanation = ServiceExplanation {
            service: object.clone(),
            type_: declared_type.clone(),
            treatment: String::new(),
            dns: Vec::new(),
            ports: Vec::new(),
            ingresses: self.ingress_routes(&namespace, &name),
            warnings: Vec::new(),
        };
        // A DNS label is at most 63 characters: the cluster DNS serves no name for longer ones.
        let named = name.len() <= 63 && namespace.len() <= 63;
        if !named {
            explanation.warnings.push("the name is longer than a DNS label (63 characters): no DNS record".to_owned());
        }
        match class {
            ServiceClass::Proxied(proxied) => {
                explanation.treatment = "proxied".to_owned();
                self.proxied(&proxied, &fqdn, &mut explanation);
            }
            ServiceClass::Headless => {
                explanation.type_ = "headless".to_owned();
                explanation.treatment = "headless: no proxy rules, DNS returns its endpoints' addresses".to_owned();
                self.headless(service, &namespace, &name, &fqdn, &mut explanation);
            }
            ServiceClass::ExternalName(target) => {
                explanation.treatment = "ExternalName: no proxy rules, DNS returns a CNAME".to_owned();
                explanation.dns.push(DnsRecord { name: fqdn, record: "CNAME".into(), value: target });
            }
            ServiceClass::NotProxied(reason) => {
                explanation.treatment = format!("not proxied: {reason}");
                explanation.warnings.push(format!("proxier programs nothing for it: {reason}"));
            }
            ServiceClass::Invalid => {
                explanation.treatment = "invalid: not programmed".to_owned();
            }
        }
        if !named {
            explanation.dns.clear();
            for port in &mut explanation.ports {
                port.from_pods.retain(|access| access.via != "DNS");
            }
        }
        for diagnostic in diagnostics {
            let field = diagnostic.field.map(|f| format!("{f}: ")).unwrap_or_default();
            explanation.warnings.push(format!("{field}{}", diagnostic.message));
        }
        explanation
    }

    fn proxied(&self, service: &ProxiedService, fqdn: &str, out: &mut ServiceExplanation) {
        let mut cluster_ips = service.cluster_ips.clone();
        cluster_ips.sort();
        for ip in &cluster_ips {
            out.dns.push(DnsRecord { name: fqdn.to_owned(), record: record_type(ip).into(), value: ip.to_string() });
        }
        let object = &service.object;
        let families: BTreeSet<IpFamily> = cluster_ips.iter().map(IpFamily::of).collect();
        for port in &service.ports {
            if !port.name.is_empty() {
                out.dns.push(DnsRecord {
                    name: format!("_{}._{}.{fqdn}", port.name, port.protocol),
                    record: "SRV".into(),
                    value: format!("0 100 {} {fqdn}", port.port),
                });
            }
            let key = (object.namespace.clone(), object.name.clone(), port.name.clone(), port.protocol);
            let endpoints: Vec<&EndpointInfo> =
                IpFamily::ALL.into_iter().flat_map(|family| self.index.endpoints(&key, family)).collect();
            let counts = counts(&endpoints);
            let usable: Vec<Backend> = IpFamily::ALL
                .into_iter()
                .flat_map(|family| usable_backends(&self.index.endpoints(&key, family)))
                .collect();
            let label = port_label(&port.name, port.port, port.protocol);

            let mut from_pods = Vec::new();
            let mut from_nodes = Vec::new();
            let itp_note = service
                .internal_local
                .then(|| "internalTrafficPolicy Local: only endpoints on the client's own node are used".to_owned());
            for &ip in &cluster_ips {
                let access =
                    Access { address: address(ip, port.port), via: "ClusterIP".into(), note: itp_note.clone() };
                from_pods.push(access.clone());
                from_nodes.push(access);
            }
            from_pods.push(Access { address: format!("{fqdn}:{}", port.port), via: "DNS".into(), note: None });

            let mut from_outside = Vec::new();
            let without_local = self.nodes_without_local(&endpoints);
            let with_local: Vec<&str> =
                self.nodes.iter().map(|n| n.name.as_str()).filter(|n| !without_local.iter().any(|w| w == n)).collect();
            let etp_note = service.external_local.then(|| {
                if self.nodes.is_empty() {
                    "externalTrafficPolicy Local: the snapshot has no Nodes, so which nodes have a local endpoint \
                     is not known; each node serves it from its own endpoints and drops it where it has none"
                        .to_owned()
                } else if with_local.is_empty() {
                    "externalTrafficPolicy Local: no node has a local endpoint, dropped everywhere".to_owned()
                } else {
                    format!("externalTrafficPolicy Local: served by {}, client address kept", with_local.join(", "))
                }
            });
            let node_port_note = |node: &str| {
                service.external_local.then(|| {
                    if without_local.iter().any(|w| w == node) {
                        "externalTrafficPolicy Local: no local endpoint here, dropped".to_owned()
                    } else {
                        "externalTrafficPolicy Local: client address kept".to_owned()
                    }
                })
            };
            if let Some(node_port) = port.node_port
                && self.nodes.is_empty()
            {
                out.warnings.push(format!(
                    "{label}: nodePort {node_port}: the snapshot has no Nodes, so the addresses it is served on are \
                     not known (add the Node objects to the snapshot: `kubectl get nodes -o yaml`)"
                ));
            }
            if let Some(node_port) = port.node_port {
                for node in self.nodes {
                    for &ip in node.node_port_ips.iter().filter(|ip| families.contains(&IpFamily::of(ip))) {
                        from_outside.push(Access {
                            address: address(ip, node_port),
                            via: format!("NodePort on {}", node.name),
                            note: node_port_note(&node.name),
                        });
                    }
                }
            }
            let mut lb_ips = service.load_balancer_ips.clone();
            lb_ips.sort();
            for &ip in &lb_ips {
                let mut notes: Vec<String> = etp_note.iter().cloned().collect();
                if let Some(ranges) = &service.source_ranges {
                    let ranges: Vec<String> = ranges.iter().map(ToString::to_string).collect();
                    notes.push(if ranges.is_empty() {
                        "loadBalancerSourceRanges: no valid range, every source is dropped".to_owned()
                    } else {
                        format!("only from {}", ranges.join(", "))
                    });
                }
                from_outside.push(Access {
                    address: address(ip, port.port),
                    via: "LoadBalancer IP".into(),
                    note: (!notes.is_empty()).then(|| notes.join("; ")),
                });
            }
            for ip in self.proxy_mode_ingress(&object.namespace, &object.name) {
                let note = match port.node_port {
                    Some(node_port) => {
                        format!("ipMode Proxy: the load balancer forwards to the nodes' port {node_port}")
                    }
                    None => "ipMode Proxy: the load balancer forwards to the nodes".to_owned(),
                };
                from_outside.push(Access {
                    address: format!("{ip}:{}", port.port),
                    via: "LoadBalancer IP".into(),
                    note: Some(note),
                });
            }
            for hostname in self.hostname_ingress(&object.namespace, &object.name) {
                let forward = match port.node_port {
                    Some(node_port) => format!("the load balancer must forward to the nodes' port {node_port}"),
                    None => "the load balancer must forward to the nodes".to_owned(),
                };
                from_outside.push(Access {
                    address: format!("{hostname}:{}", port.port),
                    via: "LoadBalancer hostname".into(),
                    note: Some(format!("not programmed: a hostname has no address to match; {forward}")),
                });
            }
            let mut external_ips = service.external_ips.clone();
            external_ips.sort();
            for &ip in &external_ips {
                from_outside.push(Access {
                    address: address(ip, port.port),
                    via: "externalIP".into(),
                    note: etp_note.clone(),
                });
            }

            if usable.is_empty() {
                out.warnings.push(format!("{label} has no usable endpoint: new connections are rejected"));
            } else {
                if service.external_local
                    && (port.node_port.is_some() || !lb_ips.is_empty() || !external_ips.is_empty())
                    && !without_local.is_empty()
                {
                    out.warnings.push(format!(
                        "{label}: externalTrafficPolicy Local and no local endpoint on {}: outside traffic \
                         arriving there is dropped (health check 503)",
                        without_local.join(", ")
                    ));
                }
                if service.internal_local && !without_local.is_empty() {
                    out.warnings.push(format!(
                        "{label}: internalTrafficPolicy Local and no local endpoint on {}: ClusterIP traffic from \
                         there is dropped",
                        without_local.join(", ")
                    ));
                }
            }
            out.ports.push(PortExplanation {
                name: port.name.clone(),
                protocol: port.protocol,
                port: port.port,
                node_port: port.node_port,
                endpoints: usable,
                counts,
                from_pods,
                from_nodes,
                from_outside,
            });
        }
        if let Some(ranges) = &service.source_ranges
            && !service.load_balancer_ips.is_empty()
        {
            for family in service.load_balancer_ips.iter().map(IpFamily::of).collect::<BTreeSet<_>>() {
                if !ranges.iter().any(|net| IpFamily::of_net(net) == family) {
                    out.warnings.push(format!(
                        "loadBalancerSourceRanges allow no {family} source: every connection to the {family} \
                         LoadBalancer IPs is dropped"
                    ));
                }
            }
        }
    }

    /// The LoadBalancer ingress entries in the status of Service `namespace/name`.
    fn ingress(&self, namespace: &str, name: &str) -> impl Iterator<Item = &LoadBalancerIngress> {
        let service =
            self.snapshot.services.iter().find(|s| {
                s.metadata.namespace.as_deref() == Some(namespace) && s.metadata.name.as_deref() == Some(name)
            });
        service
            .and_then(|s| s.status.as_ref())
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
            .into_iter()
            .flatten()
    }

    /// LoadBalancer ingress addresses with `ipMode: Proxy`, which proxier leaves to the load balancer.
    fn proxy_mode_ingress(&self, namespace: &str, name: &str) -> Vec<String> {
        self.ingress(namespace, name)
            .filter(|entry| entry.ip_mode.as_deref() == Some("Proxy"))
            .filter_map(|entry| entry.ip.clone().or_else(|| entry.hostname.clone()))
            .collect()
    }

    /// LoadBalancer ingress given only as a hostname (AWS load balancers), not with `ipMode: Proxy` (those are
    /// in [`Context::proxy_mode_ingress`]): proxier has no address to program for them.
    fn hostname_ingress(&self, namespace: &str, name: &str) -> Vec<String> {
        self.ingress(namespace, name)
            .filter(|entry| entry.ip_mode.as_deref() != Some("Proxy") && entry.ip.as_deref().is_none_or(str::is_empty))
            .filter_map(|entry| entry.hostname.clone().filter(|h| !h.is_empty()))
            .collect()
    }

    /// Nodes of the snapshot where no endpoint would serve a `Local` policy.
    fn nodes_without_local(&self, endpoints: &[&EndpointInfo]) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|node| {
                let local: Vec<&EndpointInfo> =
                    endpoints.iter().copied().filter(|e| e.node_name.as_deref() == Some(&node.name)).collect();
                usable_backends(&local).is_empty()
            })
            .map(|node| node.name.clone())
            .collect()
    }

    fn headless(&self, service: &Service, namespace: &str, name: &str, fqdn: &str, out: &mut ServiceExplanation) {
        let publish_not_ready = service.spec.as_ref().and_then(|s| s.publish_not_ready_addresses).unwrap_or(false);
        let mut records = BTreeSet::new();
        // Each endpoint: address, what it is, whether ready, and its DNS host label.
        let mut members: Vec<(IpAddr, String, bool)> = Vec::new();
        let mut ports: Vec<(String, Protocol, u16)> = Vec::new();
        // SRV targets per named port: one per endpoint serving it, as the Kubernetes DNS specification
        // gives them for headless Services (`<hostname>.<service>.<ns>.svc.<zone>`).
        let mut srv: BTreeSet<(String, Protocol, u16, String)> = BTreeSet::new();
        for slice in self.slices.iter().filter(|slice| {
            slice.metadata.namespace.as_deref() == Some(namespace)
                && slice.metadata.labels.as_ref().and_then(|l| l.get(SERVICE_NAME_LABEL)).map(String::as_str)
                    == Some(name)
                && matches!(slice.address_type.as_str(), "IPv4" | "IPv6")
        }) {
            let mut slice_ports = Vec::new();
            for port in slice.ports.iter().flatten() {
                let protocol =
                    Protocol::from_kubernetes(port.protocol.as_deref().unwrap_or("TCP")).unwrap_or(Protocol::Tcp);
                if let Some(number) = port.port.and_then(|p| u16::try_from(p).ok()).filter(|&p| p != 0) {
                    let entry = (port.name.clone().unwrap_or_default(), protocol, number);
                    if !ports.contains(&entry) {
                        ports.push(entry.clone());
                    }
                    slice_ports.push(entry);
                }
            }
            for endpoint in slice.endpoints.iter().flatten() {
                let ready = endpoint.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
                if !(ready || publish_not_ready) {
                    continue;
                }
                let Some(ip) = endpoint.addresses.first().and_then(|a| crate::ip::parse_ip_sloppy(a)).map(|p| p.ip)
                else {
                    continue;
                };
                records.insert(DnsRecord {
                    name: fqdn.to_owned(),
                    record: record_type(&ip).into(),
                    value: ip.to_string(),
                });
                let host = endpoint.hostname.clone().unwrap_or_else(|| ip.to_string().replace(['.', ':'], "-"));
                records.insert(DnsRecord {
                    name: format!("{host}.{fqdn}"),
                    record: record_type(&ip).into(),
                    value: ip.to_string(),
                });
                for (port_name, protocol, number) in slice_ports.iter().filter(|(n, _, _)| !n.is_empty()) {
                    srv.insert((port_name.clone(), *protocol, *number, format!("{host}.{fqdn}")));
                }
                members.push((ip, describe_target(endpoint.target_ref.as_ref(), namespace), ready));
            }
        }
        out.dns = records.into_iter().collect();
        if out.dns.is_empty() {
            out.warnings.push("no ready endpoint: the name resolves to nothing".to_owned());
        }
        for (port_name, protocol, number, target) in &srv {
            out.dns.push(DnsRecord {
                name: format!("_{port_name}._{protocol}.{fqdn}"),
                record: "SRV".into(),
                value: format!("0 100 {number} {target}"),
            });
        }
        for (port_name, protocol, number) in ports {
            let direct: Vec<Access> = members
                .iter()
                .map(|(ip, via, _)| Access { address: address(*ip, number), via: via.clone(), note: None })
                .collect();
            let mut with_dns = direct.clone();
            with_dns.push(Access {
                address: format!("{fqdn}:{number}"),
                via: "DNS".into(),
                note: Some("resolves to the endpoints' addresses".into()),
            });
            let mut counts = EndpointCounts::default();
            for (_, _, ready) in &members {
                if *ready {
                    counts.ready += 1;
                } else {
                    counts.not_serving += 1;
                }
            }
            out.ports.push(PortExplanation {
                name: port_name,
                protocol,
                port: number,
                node_port: None,
                endpoints: members.iter().map(|(ip, _, _)| Backend { ip: *ip, port: number }).collect(),
                counts,
                from_pods: with_dns,
                from_nodes: direct,
                from_outside: Vec::new(),
            });
        }
    }

    fn ingress_routes(&self, namespace: &str, name: &str) -> Vec<IngressRoute> {
        let mut routes = Vec::new();
        for ingress in &self.snapshot.ingresses {
            if ingress.metadata.namespace.as_deref() != Some(namespace) {
                continue;
            }
            let Some(spec) = &ingress.spec else { continue };
            let mut found: Vec<(String, String)> = Vec::new();
            let mut consider = |backend: &IngressBackend, route: String| {
                let Some(service) = backend.service.as_ref().filter(|s| s.name == name) else { return };
                let port = service.port.as_ref();
                let port = port
                    .and_then(|p| p.name.clone().filter(|n| !n.is_empty()))
                    .or_else(|| port.and_then(|p| p.number).map(|n| n.to_string()))
                    .unwrap_or_else(|| "?".to_owned());
                found.push((port, route));
            };
            if let Some(backend) = &spec.default_backend {
                consider(backend, "(default backend)".to_owned());
            }
            for rule in spec.rules.iter().flatten() {
                let host = rule.host.clone().unwrap_or_else(|| "*".to_owned());
                for path in rule.http.iter().flat_map(|h| &h.paths) {
                    let route = format!("{host}{}", path.path.as_deref().unwrap_or("/"));
                    consider(&path.backend, route);
                }
            }
            let class = ingress_class(ingress);
            let controllers = controller_services(self.snapshot, class.as_deref());
            let controller_addresses = controllers.iter().flat_map(|c| self.outside_addresses(c)).collect::<Vec<_>>();
            let addresses = ingress
                .status
                .as_ref()
                .and_then(|s| s.load_balancer.as_ref())
                .and_then(|lb| lb.ingress.as_ref())
                .into_iter()
                .flatten()
                .filter_map(|entry| entry.ip.clone().or_else(|| entry.hostname.clone()))
                .collect::<Vec<_>>();
            let ports: BTreeSet<String> = found.iter().map(|(port, _)| port.clone()).collect();
            for port in ports {
                routes.push(IngressRoute {
                    ingress: ObjectRef::new("Ingress", namespace, ingress.metadata.name.as_deref().unwrap_or_default()),
                    class: class.clone(),
                    routes: found.iter().filter(|(p, _)| *p == port).map(|(_, r)| r.clone()).collect(),
                    port,
                    addresses: addresses.clone(),
                    controllers: controllers.iter().map(|c| c.object.clone()).collect(),
                    controller_addresses: controller_addresses.clone(),
                });
            }
        }
        routes
    }

    /// A controller Service's addresses from outside: LoadBalancer IPs and externalIPs on each port, and
    /// each node's address on each nodePort.
    fn outside_addresses(&self, service: &ProxiedService) -> Vec<String> {
        let mut out = Vec::new();
        for port in &service.ports {
            for &ip in service.load_balancer_ips.iter().chain(&service.external_ips) {
                out.push(address(ip, port.port));
            }
            if let Some(node_port) = port.node_port {
                for node in self.nodes {
                    for &ip in &node.node_port_ips {
                        out.push(address(ip, node_port));
                    }
                }
            }
        }
        out
    }
}

/// What an endpoint is, as explain shows it: `pod NS/NAME`, `node NAME` for an endpoint backed by a Node
/// (the API server's own endpoints, kubelets), another kind by name, or `endpoint` when nothing says.
fn describe_target(target: Option<&k8s_openapi::api::core::v1::ObjectReference>, namespace: &str) -> String {
    let Some(target) = target else { return "endpoint".to_owned() };
    let Some(name) = target.name.as_deref() else { return "endpoint".to_owned() };
    match target.kind.as_deref() {
        Some("Pod") | None => format!("pod {}/{name}", target.namespace.as_deref().unwrap_or(namespace)),
        Some("Node") => format!("node {name}"),
        Some(kind) => format!("{kind} {name}"),
    }
}

fn counts(endpoints: &[&EndpointInfo]) -> EndpointCounts {
    let mut counts = EndpointCounts::default();
    for e in endpoints {
        if e.ready {
            counts.ready += 1;
        } else if e.serving && e.terminating {
            counts.serving_terminating += 1;
        } else {
            counts.not_serving += 1;
        }
    }
    counts
}

fn port_label(name: &str, port: u16, protocol: Protocol) -> String {
    if name.is_empty() { format!("port {port}/{protocol}") } else { format!("port {name} ({port}/{protocol})") }
}

/// An Ingress's class: `spec.ingressClassName`, else the legacy `kubernetes.io/ingress.class` annotation.
pub fn ingress_class(ingress: &Ingress) -> Option<String> {
    ingress
        .spec
        .as_ref()
        .and_then(|s| s.ingress_class_name.clone())
        .or_else(|| ingress.metadata.annotations.as_ref().and_then(|a| a.get("kubernetes.io/ingress.class")).cloned())
}

/// The Services an Ingress controller of `class` is guessed to be exposed through (see the module docs).
pub fn controller_services(snapshot: &Snapshot, class: Option<&str>) -> Vec<ProxiedService> {
    let identity = |service: &Service| -> Vec<String> {
        let mut words: Vec<String> = service.metadata.name.iter().cloned().collect();
        if let Some(labels) = &service.metadata.labels {
            words.extend(IDENTITY_LABELS.iter().filter_map(|l| labels.get(*l)).cloned());
        }
        words.iter().map(|w| w.to_ascii_lowercase()).collect()
    };
    let candidates: Vec<(Vec<String>, ProxiedService)> = snapshot
        .services
        .iter()
        .filter(|s| matches!(s.spec.as_ref().and_then(|s| s.type_.as_deref()), Some("LoadBalancer" | "NodePort")))
        .filter_map(|s| {
            let words = identity(s);
            if !words.iter().any(|w| CONTROLLER_NAMES.iter().any(|c| w.contains(c))) {
                return None;
            }
            match read_service(s, &mut Vec::new()) {
                ServiceClass::Proxied(p) => Some((words, p)),
                _ => None,
            }
        })
        .collect();
    let class = class.map(str::to_ascii_lowercase);
    let preferred: Vec<ProxiedService> = candidates
        .iter()
        .filter(|(words, _)| class.as_ref().is_some_and(|c| words.iter().any(|w| w.contains(c.as_str()))))
        .map(|(_, s)| s.clone())
        .collect();
    if preferred.is_empty() { candidates.into_iter().map(|(_, s)| s).collect() } else { preferred }
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.address, self.via)?;
        if let Some(note) = &self.note {
            write!(f, " — {note}")?;
        }
        Ok(())
    }
}

impl Explanation {
    /// The explanation as operators read it.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for (i, service) in self.services.iter().enumerate() {
            if i > 0 {
                out.push('\n');
            }
            let object = &service.service;
            let _ = writeln!(
                out,
                "Service {}/{} ({}): {}",
                object.namespace, object.name, service.type_, service.treatment
            );
            for record in &service.dns {
                let _ = writeln!(out, "  dns      {} {} {}", record.name, record.record, record.value);
            }
            for port in &service.ports {
                let mut head = port_label(&port.name, port.port, port.protocol);
                if let Some(node_port) = port.node_port {
                    let _ = write!(head, ", nodePort {node_port}");
                }
                let c = &port.counts;
                let endpoints = if port.endpoints.is_empty() {
                    if c == &EndpointCounts::default() { String::new() } else { " → no usable endpoint".to_owned() }
                } else {
                    let list: Vec<String> = port.endpoints.iter().map(ToString::to_string).collect();
                    format!(" → {}", list.join(", "))
                };
                let detail = if c == &EndpointCounts::default() {
                    String::new()
                } else {
                    format!(
                        " ({} ready, {} serving while terminating, {} not serving)",
                        c.ready, c.serving_terminating, c.not_serving
                    )
                };
                let _ = writeln!(out, "  {head}{endpoints}{detail}");
                for (who, list) in [
                    ("from a pod:  ", &port.from_pods),
                    ("from a node: ", &port.from_nodes),
                    ("from outside:", &port.from_outside),
                ] {
                    for (j, access) in list.iter().enumerate() {
                        let label = if j == 0 { who } else { "             " };
                        let _ = writeln!(out, "    {label} {access}");
                    }
                }
            }
            for route in &service.ingresses {
                let class = route.class.as_deref().map(|c| format!(" (class {c})")).unwrap_or_default();
                let _ = writeln!(
                    out,
                    "  ingress  {}/{}{class}: {} → port {}",
                    route.ingress.namespace,
                    route.ingress.name,
                    route.routes.join(", "),
                    route.port
                );
                if !route.addresses.is_empty() {
                    let _ = writeln!(out, "           its status addresses: {}", route.addresses.join(", "));
                }
                if route.controllers.is_empty() {
                    let _ = writeln!(out, "           controller Service: none found in the snapshot");
                } else {
                    let names: Vec<String> =
                        route.controllers.iter().map(|c| format!("{}/{}", c.namespace, c.name)).collect();
                    let _ = writeln!(
                        out,
                        "           controller Service: {} at {}",
                        names.join(", "),
                        route.controller_addresses.join(", ")
                    );
                }
            }
            for warning in &service.warnings {
                let _ = writeln!(out, "  warning  {warning}");
            }
        }
        out
    }
}

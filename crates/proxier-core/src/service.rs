//! Stage 1 of the core: a Service object, checked and reduced to what the data plane needs.

use std::collections::BTreeSet;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::Service;

use crate::diagnostic::{Diagnostic, ObjectRef, Severity};
use crate::ip::parse_ip_sloppy;
use crate::model::{IpFamily, Protocol};

/// Services with this label belong to another proxy (any value: proxier is the default proxy).
pub const LABEL_SERVICE_PROXY_NAME: &str = "service.kubernetes.io/service-proxy-name";
/// Services with this label are headless whatever their spec says.
pub const LABEL_HEADLESS: &str = "service.kubernetes.io/headless";
/// The pre-1.x way of setting `loadBalancerSourceRanges`, still honoured when the field is empty.
pub const ANNOTATION_SOURCE_RANGES: &str = "service.beta.kubernetes.io/load-balancer-source-ranges";
/// kube-proxy's default for `sessionAffinityConfig.clientIP.timeoutSeconds`: three hours.
pub const DEFAULT_AFFINITY_TIMEOUT: u32 = 10800;
/// The API server's default `--service-node-port-range`.
pub const DEFAULT_NODE_PORT_RANGE: std::ops::RangeInclusive<u16> = 30000..=32767;
/// The API server's upper bound for the affinity timeout: one day.
const MAX_AFFINITY_TIMEOUT: u32 = 86400;

/// One port of a Service, as the data plane sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    /// Empty for an unnamed port. Together with `protocol`, it finds the EndpointSlice port (and so the
    /// DNAT target port): the Service's own `targetPort` is not used.
    pub name: String,
    /// The port's protocol.
    pub protocol: Protocol,
    /// The Service port (`port`).
    pub port: u16,
    /// `nodePort`, for NodePort and LoadBalancer Services.
    pub node_port: Option<u16>,
}

/// A Service that proxier programs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxiedService {
    /// The Service.
    pub object: ObjectRef,
    /// At most one per family.
    pub cluster_ips: Vec<IpAddr>,
    /// The ports that could be programmed.
    pub ports: Vec<ServicePort>,
    /// `spec.externalIPs`, parsed.
    pub external_ips: Vec<IpAddr>,
    /// `status.loadBalancer.ingress[].ip`, except entries with `ipMode: Proxy`.
    pub load_balancer_ips: Vec<IpAddr>,
    /// externalTrafficPolicy `Local`, for a Service reachable from outside (NodePort, LoadBalancer or
    /// externalIPs); otherwise the policy has no effect.
    pub external_local: bool,
    /// internalTrafficPolicy `Local`.
    pub internal_local: bool,
    /// Session affinity `ClientIP`, with its timeout in seconds.
    pub affinity: Option<u32>,
    /// `loadBalancerSourceRanges` (or the legacy annotation), parsed; `None` when not set. Set but
    /// with no valid range means nothing is allowed: a typo must not open a firewall.
    pub source_ranges: Option<Vec<ipnet::IpNet>>,
    /// `healthCheckNodePort`, kept only with externalTrafficPolicy `Local`.
    pub health_check_node_port: Option<u16>,
}

impl ProxiedService {
    /// The ClusterIP of one family, if the Service has one.
    pub fn cluster_ip(&self, family: IpFamily) -> Option<IpAddr> {
        self.cluster_ips.iter().copied().find(|ip| IpFamily::of(ip) == family)
    }
}

/// What a Service is to proxier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceClass {
    /// Programmed.
    Proxied(ProxiedService),
    /// `clusterIP: None` or the `service.kubernetes.io/headless` label: nothing to proxy.
    Headless,
    /// `type: ExternalName`, with its target: nothing to proxy.
    ExternalName(String),
    /// Left to another proxy, for the reason given.
    NotProxied(String),
    /// Nothing usable; diagnostics were recorded.
    Invalid,
}

/// Reads a Service, recording every problem found in `diagnostics`. Problems confined to one port or
/// one address drop only that part.
pub fn read_service(service: &Service, diagnostics: &mut Vec<Diagnostic>) -> ServiceClass {
    let object = ObjectRef::new(
        "Service",
        service.metadata.namespace.as_deref().unwrap_or_default(),
        service.metadata.name.as_deref().unwrap_or_default(),
    );
    let mut problem = |severity: Severity, field: String, message: String| {
        diagnostics.push(Diagnostic::new(severity, object.clone(), message).at(field));
    };
    let labels = service.metadata.labels.as_ref();
    if let Some(name) = labels.and_then(|l| l.get(LABEL_SERVICE_PROXY_NAME)) {
        return ServiceClass::NotProxied(format!(
            "label {LABEL_SERVICE_PROXY_NAME}={name:?} hands it to another proxy"
        ));
    }
    if labels.is_some_and(|l| l.contains_key(LABEL_HEADLESS)) {
        return ServiceClass::Headless;
    }
    let Some(spec) = &service.spec else {
        problem(Severity::Error, "spec".into(), "missing".into());
        return ServiceClass::Invalid;
    };
    if spec.type_.as_deref() == Some("ExternalName") {
        return match spec.external_name.as_deref().map(str::trim).filter(|target| !target.is_empty()) {
            Some(target) => ServiceClass::ExternalName(target.to_owned()),
            None => {
                // The API server refuses such a Service; a CNAME to nothing is no answer either.
                let message = "missing: an ExternalName Service needs a target; not programmed".to_owned();
                problem(Severity::Error, "spec.externalName".into(), message);
                ServiceClass::Invalid
            }
        };
    }

    let ip_texts: Vec<(String, &str)> = match (&spec.cluster_ips, &spec.cluster_ip) {
        (Some(ips), _) if !ips.is_empty() => {
            ips.iter().enumerate().map(|(i, ip)| (format!("spec.clusterIPs[{i}]"), ip.as_str())).collect()
        }
        (_, Some(ip)) => vec![("spec.clusterIP".to_owned(), ip.as_str())],
        _ => Vec::new(),
    };
    if ip_texts.iter().any(|(_, ip)| *ip == "None") {
        return ServiceClass::Headless;
    }
    if ip_texts.is_empty() || ip_texts.iter().all(|(_, ip)| ip.is_empty()) {
        problem(Severity::Error, "spec.clusterIP".into(), "no ClusterIP allocated".into());
        return ServiceClass::Invalid;
    }
    let declared: Vec<IpFamily> = spec
        .ip_families
        .iter()
        .flatten()
        .filter_map(|f| match f.as_str() {
            "IPv4" => Some(IpFamily::V4),
            "IPv6" => Some(IpFamily::V6),
            _ => None,
        })
        .collect();
    let mut cluster_ips = Vec::new();
    for (field, text) in &ip_texts {
        let Some(ip) = parse_address(text, field, &mut problem) else { continue };
        let family = IpFamily::of(&ip);
        if !declared.is_empty() && !declared.contains(&family) {
            problem(
                Severity::Error,
                field.clone(),
                format!("{text} is {family}, but spec.ipFamilies does not list {family}; ignored"),
            );
        } else if cluster_ips.iter().any(|other| IpFamily::of(other) == family) {
            problem(Severity::Error, field.clone(), format!("a second {family} ClusterIP {text}; ignored"));
        } else {
            cluster_ips.push(ip);
        }
    }
    if cluster_ips.is_empty() {
        return ServiceClass::Invalid;
    }

    let exposes_node_ports = matches!(spec.type_.as_deref(), Some("NodePort" | "LoadBalancer"));
    let mut ports: Vec<ServicePort> = Vec::new();
    let mut seen = BTreeSet::new();
    for (i, port) in spec.ports.iter().flatten().enumerate() {
        let field = format!("spec.ports[{i}]");
        let name = port.name.clone().unwrap_or_default();
        let protocol_text = port.protocol.as_deref().unwrap_or("TCP");
        let Some(protocol) = Protocol::from_kubernetes(protocol_text) else {
            problem(
                Severity::Error,
                format!("{field}.protocol"),
                format!("unknown protocol {protocol_text:?} (expected TCP, UDP or SCTP); port skipped"),
            );
            continue;
        };
        let Some(number) = port_number(port.port) else {
            problem(
                Severity::Error,
                format!("{field}.port"),
                format!("port {} is outside 1-65535; port skipped", port.port),
            );
            continue;
        };
        let node_port = match port.node_port.filter(|_| exposes_node_ports) {
            None => None,
            Some(n) => match port_number(n) {
                Some(n) => {
                    // The API server allocates from --service-node-port-range, which proxier cannot see: a
                    // value outside the default range is most likely a custom range, so it is programmed.
                    if !DEFAULT_NODE_PORT_RANGE.contains(&n) {
                        problem(
                            Severity::Warning,
                            format!("{field}.nodePort"),
                            format!(
                                "nodePort {n} is outside the default range {}-{}; programmed anyway",
                                DEFAULT_NODE_PORT_RANGE.start(),
                                DEFAULT_NODE_PORT_RANGE.end()
                            ),
                        );
                    }
                    Some(n)
                }
                None => {
                    problem(
                        Severity::Error,
                        format!("{field}.nodePort"),
                        format!("nodePort {n} is outside 1-65535; NodePort not programmed"),
                    );
                    None
                }
            },
        };
        if !seen.insert((name.clone(), protocol)) {
            problem(
                Severity::Error,
                format!("{field}.name"),
                format!("duplicate port name {name:?} for {protocol}; this port skipped"),
            );
            continue;
        }
        if ports.iter().any(|p| p.port == number && p.protocol == protocol) {
            problem(
                Severity::Error,
                format!("{field}.port"),
                format!("duplicate port {number}/{protocol}; this port skipped"),
            );
            continue;
        }
        ports.push(ServicePort { name, protocol, port: number, node_port });
    }
    if ports.is_empty() {
        problem(Severity::Error, "spec.ports".into(), "no usable port: the Service is not programmed".into());
        return ServiceClass::Invalid;
    }

    let external_ips: Vec<IpAddr> = spec
        .external_ips
        .iter()
        .flatten()
        .enumerate()
        .filter_map(|(i, text)| parse_address(text, &format!("spec.externalIPs[{i}]"), &mut problem))
        .collect();
    let mut load_balancer_ips = Vec::new();
    let ingress = service.status.as_ref().and_then(|s| s.load_balancer.as_ref()).and_then(|lb| lb.ingress.as_ref());
    for (i, entry) in ingress.into_iter().flatten().enumerate() {
        // With ipMode Proxy the load balancer delivers to the node, not to the VIP: nothing to intercept.
        if entry.ip_mode.as_deref() == Some("Proxy") {
            continue;
        }
        let Some(text) = &entry.ip else { continue };
        let field = format!("status.loadBalancer.ingress[{i}].ip");
        load_balancer_ips.extend(parse_address(text, &field, &mut problem));
    }

    let external_local =
        spec.external_traffic_policy.as_deref() == Some("Local") && (exposes_node_ports || !external_ips.is_empty());
    let internal_local = spec.internal_traffic_policy.as_deref() == Some("Local");

    let affinity = match spec.session_affinity.as_deref() {
        Some("ClientIP") => {
            let configured = spec
                .session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds);
            Some(match configured {
                None => DEFAULT_AFFINITY_TIMEOUT,
                Some(t) if (1..=MAX_AFFINITY_TIMEOUT as i32).contains(&t) => t.unsigned_abs(),
                Some(t) => {
                    problem(
                        Severity::Warning,
                        "spec.sessionAffinityConfig.clientIP.timeoutSeconds".into(),
                        format!("{t} is outside 1-{MAX_AFFINITY_TIMEOUT}; using {DEFAULT_AFFINITY_TIMEOUT}"),
                    );
                    DEFAULT_AFFINITY_TIMEOUT
                }
            })
        }
        _ => None,
    };

    let annotation = service.metadata.annotations.as_ref().and_then(|a| a.get(ANNOTATION_SOURCE_RANGES));
    let range_texts: Vec<(String, &str)> = match (&spec.load_balancer_source_ranges, annotation) {
        (Some(ranges), _) if !ranges.is_empty() => ranges
            .iter()
            .enumerate()
            .map(|(i, r)| (format!("spec.loadBalancerSourceRanges[{i}]"), r.as_str()))
            .collect(),
        (_, Some(text)) => text
            .split(',')
            .filter(|r| !r.trim().is_empty())
            .map(|r| (format!("metadata.annotations[{ANNOTATION_SOURCE_RANGES:?}]"), r))
            .collect(),
        _ => Vec::new(),
    };
    let mut source_ranges = (!range_texts.is_empty()).then(Vec::new);
    for (field, text) in range_texts {
        match crate::ip::parse_cidr_sloppy(text) {
            Some(net) => source_ranges.iter_mut().for_each(|r| r.push(net)),
            None => problem(Severity::Error, field, format!("{:?} is not a CIDR; ignored", shorten(text))),
        }
    }

    let health_check_node_port = spec.health_check_node_port.and_then(port_number).filter(|_| external_local);

    ServiceClass::Proxied(ProxiedService {
        object,
        cluster_ips,
        ports,
        external_ips,
        load_balancer_ips,
        external_local,
        internal_local,
        affinity,
        source_ranges,
        health_check_node_port,
    })
}

fn port_number(port: i32) -> Option<u16> {
    u16::try_from(port).ok().filter(|&p| p != 0)
}

fn parse_address(text: &str, field: &str, problem: &mut impl FnMut(Severity, String, String)) -> Option<IpAddr> {
    match parse_ip_sloppy(text) {
        Some(parsed) => {
            if parsed.sloppy {
                problem(
                    Severity::Warning,
                    field.to_owned(),
                    format!("{text:?} has leading zeros; read as {}", parsed.ip),
                );
            }
            Some(parsed.ip)
        }
        None => {
            problem(Severity::Error, field.to_owned(), format!("{:?} is not an IP address; ignored", shorten(text)));
            None
        }
    }
}

/// Bounds a hostile value quoted in a message.
pub(crate) fn shorten(text: &str) -> String {
    const MAX: usize = 64;
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

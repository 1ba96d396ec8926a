//! The declarative rule model: what the data plane of one node must do, per IP family.
//!
//! The model names destinations (address, protocol, port) and the action taken for new connections to
//! each. It says nothing about nft syntax or chain layout: `proxier-nft` decides how to express it.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::Serialize;

use crate::diagnostic::{Diagnostic, ObjectRef};

/// An IP family. Each family is programmed on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum IpFamily {
    #[serde(rename = "IPv4")]
    V4,
    #[serde(rename = "IPv6")]
    V6,
}

impl IpFamily {
    pub const ALL: [IpFamily; 2] = [IpFamily::V4, IpFamily::V6];

    pub fn of(ip: &IpAddr) -> IpFamily {
        match ip {
            IpAddr::V4(_) => IpFamily::V4,
            IpAddr::V6(_) => IpFamily::V6,
        }
    }

    pub fn of_net(net: &IpNet) -> IpFamily {
        IpFamily::of(&net.addr())
    }
}

impl fmt::Display for IpFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IpFamily::V4 => "IPv4",
            IpFamily::V6 => "IPv6",
        })
    }
}

/// A transport protocol a Service port can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    /// Parses the Kubernetes spelling (`TCP`, `UDP`, `SCTP`).
    pub fn from_kubernetes(name: &str) -> Option<Protocol> {
        match name {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }

    /// The lowercase name, as nft and `/etc/protocols` spell it.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One port of one Service: the unit kube-proxy calls a "service port".
///
/// Displayed as `namespace/name:port-name/protocol`, e.g. `kube-system/kube-dns:dns/udp`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ServicePortName {
    pub namespace: String,
    pub name: String,
    /// The port's name; empty for a Service's single unnamed port.
    pub port: String,
    pub protocol: Protocol,
}

impl fmt::Display for ServicePortName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}:{}/{}", self.namespace, self.name, self.port, self.protocol)
    }
}

/// How a destination was reached, which decides the policy applied to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DestinationKind {
    ClusterIp,
    ExternalIp,
    LoadBalancerIp,
    NodePort,
}

impl DestinationKind {
    /// Whether this destination is "external" in the sense of externalTrafficPolicy.
    pub fn is_external(self) -> bool {
        !matches!(self, DestinationKind::ClusterIp)
    }
}

impl fmt::Display for DestinationKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DestinationKind::ClusterIp => "ClusterIP",
            DestinationKind::ExternalIp => "externalIP",
            DestinationKind::LoadBalancerIp => "LoadBalancer IP",
            DestinationKind::NodePort => "NodePort",
        })
    }
}

/// An address and port an endpoint listens on: the DNAT target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Backend {
    pub ip: IpAddr,
    pub port: u16,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.ip {
            IpAddr::V4(ip) => write!(f, "{ip}:{}", self.port),
            IpAddr::V6(ip) => write!(f, "[{ip}]:{}", self.port),
        }
    }
}

/// Whether a balanced connection's source is rewritten to the node's address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Masquerade {
    /// The source is kept (pod traffic, or no local-traffic detector configured).
    Never,
    /// Every new connection is masqueraded.
    Always,
    /// Only sources outside [`FamilyRules::pod_cidrs`] are masqueraded.
    OutsidePodNetwork,
}

/// What happens to a new connection to a destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Pick one backend at random per new connection and DNAT to it.
    Balance {
        /// Never empty; sorted.
        backends: Vec<Backend>,
        masquerade: Masquerade,
    },
    /// Refuse at once: TCP reset or ICMP unreachable. Used when a Service has no usable endpoint.
    Reject,
    /// Discard silently.
    Drop,
}

/// An address, protocol and port that new connections are intercepted on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Destination {
    pub ip: IpAddr,
    pub protocol: Protocol,
    pub port: u16,
    pub kind: DestinationKind,
    pub service_port: ServicePortName,
    pub action: Action,
}

/// Everything one IP family's data plane must do on this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FamilyRules {
    pub family: IpFamily,
    /// Node addresses on which NodePorts are served.
    pub node_port_ips: Vec<IpAddr>,
    /// The local-traffic detector: sources inside these ranges are pods. Empty when none is configured.
    pub pod_cidrs: Vec<IpNet>,
    /// Every allocated ClusterIP of this family with at least one programmed port, sorted. Traffic to one
    /// of them on a port no Service defines is rejected.
    pub cluster_ips: Vec<IpAddr>,
    /// Sorted by (ip, protocol, port); each key appears once.
    pub destinations: Vec<Destination>,
}

impl FamilyRules {
    /// Every backend any destination may be DNATed to, sorted and deduplicated.
    pub fn backend_ips(&self) -> Vec<IpAddr> {
        let mut ips: Vec<IpAddr> = self
            .destinations
            .iter()
            .filter_map(|d| match &d.action {
                Action::Balance { backends, .. } => Some(backends.iter().map(|b| b.ip)),
                _ => None,
            })
            .flatten()
            .collect();
        ips.sort();
        ips.dedup();
        ips
    }
}

/// How proxier treats a Service, for reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "treatment")]
pub enum Treatment {
    /// Programmed: this many service ports, over these families.
    Proxied { ports: usize, families: Vec<IpFamily> },
    /// `clusterIP: None`: DNS returns the pod IPs; there is nothing to proxy.
    Headless,
    /// `type: ExternalName`: DNS returns a CNAME; there is nothing to proxy.
    ExternalName { target: String },
    /// Deliberately left to another proxy or controller.
    NotProxied { reason: String },
    /// Nothing could be programmed; the diagnostics say why.
    Invalid,
}

/// One Service and what proxier does with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceSummary {
    pub service: ObjectRef,
    #[serde(flatten)]
    pub treatment: Treatment,
}

/// The complete, deterministic result of [`crate::compute`] for one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleModel {
    pub node: String,
    /// One entry per family this node programs, IPv4 first.
    pub families: Vec<FamilyRules>,
    /// Every Service in the snapshot, sorted by namespace and name.
    pub services: Vec<ServiceSummary>,
    /// Problems found in the input, sorted. Everything not named here was programmed.
    pub diagnostics: Vec<Diagnostic>,
}

impl RuleModel {
    pub fn family(&self, family: IpFamily) -> Option<&FamilyRules> {
        self.families.iter().find(|f| f.family == family)
    }
}

//! The declarative rule model: what the data plane of one node must do, per IP family.
//!
//! The model names destinations (address, protocol, port) and the action taken for new connections to
//! each. It says nothing about nft syntax or chain layout: `proxier-nft` decides how to express it.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::Serialize;

use crate::diagnostic::{Diagnostic, ObjectRef};

/// An IP family. Each family is programmed on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum IpFamily {
    #[serde(rename = "IPv4")]
    /// IPv4.
    V4,
    #[serde(rename = "IPv6")]
    /// IPv6.
    V6,
}

impl IpFamily {
    /// Both families, IPv4 first.
    pub const ALL: [IpFamily; 2] = [IpFamily::V4, IpFamily::V6];

    /// The family of an address.
    pub fn of(ip: &IpAddr) -> IpFamily {
        match ip {
            IpAddr::V4(_) => IpFamily::V4,
            IpAddr::V6(_) => IpFamily::V6,
        }
    }

    /// The family of a range.
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
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
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
    /// The Service's namespace.
    pub namespace: String,
    /// The Service's name.
    pub name: String,
    /// The port's name; empty for a Service's single unnamed port.
    pub port: String,
    /// The port's protocol.
    pub protocol: Protocol,
}

impl fmt::Display for ServicePortName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Names from the input: control characters escaped, cut after 253 characters.
        use crate::diagnostic::printable;
        write!(
            f,
            "{}/{}:{}/{}",
            printable(&self.namespace),
            printable(&self.name),
            printable(&self.port),
            self.protocol
        )
    }
}

/// How a destination was reached, which decides the policy applied to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DestinationKind {
    /// The Service's ClusterIP (internalTrafficPolicy applies).
    ClusterIp,
    /// One of `spec.externalIPs`.
    ExternalIp,
    /// One of `status.loadBalancer.ingress[].ip` (not `ipMode: Proxy`).
    LoadBalancerIp,
    /// A node address with the port's `nodePort`.
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
    /// The endpoint's address.
    pub ip: IpAddr,
    /// The endpoint's port (from the EndpointSlice port of the Service port's name and protocol).
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
    /// Only sources the local-traffic detector does not recognise as pods are masqueraded.
    OutsidePodNetwork,
}

/// What happens to a new connection to a destination.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Pick one backend at random per new connection and DNAT to it.
    Balance {
        /// Never empty; each once. In address order as [`crate::compute()`] gives them; in a
        /// [`crate::state::ClusterState`]'s shares, in stable positions ([`crate::positions`]): the
        /// data plane picks a backend by its position in this list.
        backends: Vec<Backend>,
        /// Whether the source is rewritten to the node's address.
        masquerade: Masquerade,
        /// Session affinity `ClientIP`: a client keeps its backend for this many seconds of inactivity.
        affinity: Option<u32>,
    },
    /// Refuse at once: TCP reset or ICMP unreachable. Used when a Service has no usable endpoint.
    Reject,
    /// Discard silently: endpoints exist, but none this node may use (a `Local` policy).
    Drop,
    /// externalTrafficPolicy `Local`: where the connection comes from decides. Pods and the node
    /// itself are short-circuited to every endpoint (the node masqueraded, so replies return); other
    /// clients go to local endpoints only, keeping their source address.
    BySource {
        /// For sources the local-traffic detector recognises as pods.
        pods: Box<Action>,
        /// For sources that are this node's own addresses.
        node: Box<Action>,
        /// For everything else.
        others: Box<Action>,
    },
}

/// An address, protocol and port that new connections are intercepted on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Destination {
    /// The destination address.
    pub ip: IpAddr,
    /// The destination protocol.
    pub protocol: Protocol,
    /// The destination port (the Service port, or the nodePort for [`DestinationKind::NodePort`]).
    pub port: u16,
    /// How it was reached.
    pub kind: DestinationKind,
    /// The service port it belongs to.
    pub service_port: ServicePortName,
    /// What happens to new connections.
    pub action: Action,
    /// `loadBalancerSourceRanges`: when set, new connections from other sources are dropped.
    pub allowed_sources: Option<Vec<IpNet>>,
}

/// How pods are told apart from other sources (`--detect-local-mode`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case", tag = "mode", content = "value")]
pub enum LocalTraffic {
    /// No detector: ClusterIP traffic is not masqueraded by source.
    #[default]
    None,
    /// Sources inside these ranges are pods (`ClusterCIDR`, or `NodeCIDR` with the Node's podCIDRs).
    Cidrs(Vec<IpNet>),
    /// Packets arriving on this bridge come from pods (`BridgeInterface`).
    Interface(String),
    /// Packets arriving on interfaces with this name prefix come from pods (`InterfaceNamePrefix`).
    InterfacePrefix(String),
}

/// The answer of a health-check nodePort for an externalTrafficPolicy `Local` Service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HealthCheck {
    /// The Service.
    pub service: ObjectRef,
    /// The `healthCheckNodePort` it answers on.
    pub node_port: u16,
    /// Ready endpoints on this node (terminating ones do not count, even while they still serve).
    pub local_endpoints: usize,
}

impl HealthCheck {
    /// The HTTP status kube-proxy answers: 200 with at least one local ready endpoint, else 503.
    pub fn status(&self) -> u16 {
        if self.local_endpoints > 0 { 200 } else { 503 }
    }
}

/// Everything one IP family's data plane must do on this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FamilyRules {
    /// The family these rules are for.
    pub family: IpFamily,
    /// Node addresses on which NodePorts are served.
    pub node_port_ips: Vec<IpAddr>,
    /// The local-traffic detector.
    pub local_traffic: LocalTraffic,
    /// Every allocated ClusterIP of this family with at least one programmed port, sorted. Traffic to one
    /// of them on a port no Service defines is rejected.
    pub cluster_ips: Vec<IpAddr>,
    /// `--service-cidr`: traffic to an address in these ranges that is no allocated ClusterIP is dropped.
    pub service_cidrs: Vec<IpNet>,
    /// Sorted by (ip, protocol, port); each key appears once.
    pub destinations: Vec<Destination>,
    /// Health-check nodePorts of externalTrafficPolicy `Local` Services, by Service.
    pub health_checks: Vec<HealthCheck>,
    /// Backends that may connect to a Service destination, be DNATed on this node to themselves, and
    /// so need masquerading for the reply to come back (hairpin): this node's endpoints, plus the
    /// endpoints a pod elsewhere may reach through a NodePort here unmasqueraded. Sorted.
    pub hairpin_ips: Vec<IpAddr>,
}

impl Action {
    /// Every backend this action may DNAT to.
    pub fn backends(&self) -> Vec<Backend> {
        match self {
            Action::Balance { backends, .. } => backends.clone(),
            Action::Reject | Action::Drop => Vec::new(),
            Action::BySource { pods, node, others } => {
                let mut all = [pods, node, others].iter().flat_map(|a| a.backends()).collect::<Vec<_>>();
                all.sort();
                all.dedup();
                all
            }
        }
    }
}

impl FamilyRules {
    /// Every backend any destination may be DNATed to, sorted and deduplicated.
    pub fn backend_ips(&self) -> Vec<IpAddr> {
        let mut ips: Vec<IpAddr> = self.destinations.iter().flat_map(|d| d.action.backends()).map(|b| b.ip).collect();
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
    Proxied {
        /// Service ports programmed.
        ports: usize,
        /// Families programmed.
        families: Vec<IpFamily>,
    },
    /// `clusterIP: None`: DNS returns the pod IPs; there is nothing to proxy.
    Headless,
    /// `type: ExternalName`: DNS returns a CNAME; there is nothing to proxy.
    ExternalName {
        /// `spec.externalName`.
        target: String,
    },
    /// Deliberately left to another proxy or controller.
    NotProxied {
        /// Why.
        reason: String,
    },
    /// Nothing could be programmed; the diagnostics say why.
    Invalid,
}

/// One Service and what proxier does with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceSummary {
    /// The Service.
    pub service: ObjectRef,
    #[serde(flatten)]
    /// What proxier does with it.
    pub treatment: Treatment,
}

/// The complete, deterministic result of [`crate::compute()`] for one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleModel {
    /// The node the model is for.
    pub node: String,
    /// One entry per family this node programs, IPv4 first.
    pub families: Vec<FamilyRules>,
    /// Every Service in the snapshot, sorted by namespace and name.
    pub services: Vec<ServiceSummary>,
    /// Problems found in the input, sorted. Everything not named here was programmed.
    pub diagnostics: Vec<Diagnostic>,
}

impl RuleModel {
    /// The rules of one family, if this node programs it.
    pub fn family(&self, family: IpFamily) -> Option<&FamilyRules> {
        self.families.iter().find(|f| f.family == family)
    }

    /// The Services (kind `Service`) with at least one destination, in order.
    pub fn programmed_services(&self) -> Vec<ObjectRef> {
        let mut services: Vec<ObjectRef> = self
            .families
            .iter()
            .flat_map(|f| &f.destinations)
            .map(|d| ObjectRef::new("Service", &d.service_port.namespace, &d.service_port.name))
            .collect();
        services.sort();
        services.dedup();
        services
    }

    /// Puts every destination's backends in address order, as [`crate::compute()`] gives them: a
    /// [`crate::state::ClusterState`]'s model keeps them in stable positions instead
    /// ([`crate::positions`]), which changes which position each takes, not what the rules do.
    pub fn sort_backends(&mut self) {
        fn sort(action: &mut Action) {
            match action {
                Action::Balance { backends, .. } => backends.sort_unstable(),
                Action::BySource { pods, node, others } => [pods, node, others].into_iter().for_each(|a| sort(a)),
                Action::Reject | Action::Drop => {}
            }
        }
        self.families.iter_mut().flat_map(|f| &mut f.destinations).for_each(|d| sort(&mut d.action));
    }

    /// This model without the rules of `left_out` (their destinations and health checks, in every
    /// family), each named in an error diagnostic saying why. For when the kernel refuses some
    /// Services' rules: the others are still programmed. Their ClusterIPs stay in
    /// [`FamilyRules::cluster_ips`], so new connections to them are rejected rather than left to time out.
    ///
    /// ```
    /// # use std::collections::BTreeMap;
    /// use proxier_core::{NodeConfig, ObjectRef, Snapshot, compute};
    /// let yaml = "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\n\
    ///             spec: {clusterIP: 10.96.0.20, ports: [{port: 80, protocol: TCP}]}";
    /// let model = compute(&Snapshot::from_text("inline", yaml).0, &NodeConfig::default());
    /// let web = ObjectRef::new("Service", "shop", "web");
    /// let rest = model.without_services(&BTreeMap::from([(web, "the kernel refused its rules".to_owned())]));
    /// assert!(rest.families[0].destinations.is_empty());
    /// assert_eq!(rest.families[0].cluster_ips, model.families[0].cluster_ips);
    /// assert!(!model.families[0].destinations.is_empty());
    /// assert!(rest.diagnostics.iter().any(|d| d.to_string() == "error: Service shop/web: the kernel refused its rules"));
    /// ```
    pub fn without_services(&self, left_out: &BTreeMap<ObjectRef, String>) -> RuleModel {
        let kept = |namespace: &str, name: &str| !left_out.contains_key(&ObjectRef::new("Service", namespace, name));
        let mut model = self.clone();
        for family in &mut model.families {
            family.destinations.retain(|d| kept(&d.service_port.namespace, &d.service_port.name));
            family.health_checks.retain(|h| kept(&h.service.namespace, &h.service.name));
        }
        model
            .diagnostics
            .extend(left_out.iter().map(|(service, why)| Diagnostic::error(service.clone(), why.as_str())));
        model.diagnostics.sort();
        model
    }
}

//! `proxier trace`: where one new connection goes on one node, and why.
//!
//! [`trace`] walks the [`RuleModel`] of a node the way the kernel walks the tables `proxier-nft` lays out
//! from it, in the same order:
//!
//! 1. **Source ranges** (filter, before DNAT): a destination with `loadBalancerSourceRanges` drops sources
//!    outside them.
//! 2. **Services** (nat, DNAT): a destination with usable endpoints balances to one of them. For an
//!    externalTrafficPolicy `Local` destination, the source picks the branch: pods (as the local-traffic
//!    detector recognises them) first, then the node itself (a source address of this node), then others.
//! 3. **No endpoints** (filter, after DNAT): a destination without usable endpoints is rejected, or
//!    dropped when endpoints exist but the `Local` policy leaves none to this node; a known ClusterIP on a
//!    port no Service defines is rejected; any other address in `--service-cidr` is dropped. Everything
//!    else is not proxier's: it passes untouched.
//! 4. **Masquerade** (nat, postrouting): as the balancing action says, plus hairpin (an endpoint reaching
//!    itself through the Service).
//!
//! The verdict comes from the model alone, so it is what the kernel does with the rules rendered from the
//! same model. The explanations (why each candidate endpoint is in or out) come from the same endpoint
//! categorisation [`crate::compute()`] uses. The result is plain data: [`Trace`] serializes to stable JSON
//! and [`Trace::to_text`] prints it for operators.

use std::fmt::{self, Write as _};
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde::Serialize;

use crate::compute::Computation;
use crate::config::NodeConfig;
use crate::diagnostic::ObjectRef;
use crate::endpoints::{EndpointIndex, EndpointInfo, EndpointSets, HintScope, hints_in_use};
use crate::model::{
    Action, Backend, Destination, DestinationKind, FamilyRules, IpFamily, LocalTraffic, Masquerade, Protocol,
    RuleModel, ServicePortName,
};
use crate::node::NodeContext;
use crate::service::{ProxiedService, ServiceClass, read_service};
use crate::snapshot::Snapshot;

/// Where a traced connection comes from, as given on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `pod:NAMESPACE/NAME`: its address is looked up in the EndpointSlices' `targetRef`s.
    Pod {
        /// The pod's namespace.
        namespace: String,
        /// The pod's name.
        name: String,
    },
    /// `node`: the traced node itself, from its primary address of the destination's family.
    Node,
    /// Any address: a pod's, a node's or an outside client's, recognised as such where the snapshot can.
    Ip(IpAddr),
}

impl FromStr for Source {
    type Err = String;

    fn from_str(text: &str) -> Result<Source, String> {
        if text == "node" {
            return Ok(Source::Node);
        }
        if let Some(pod) = text.strip_prefix("pod:") {
            return match pod.split_once('/') {
                Some((namespace, name)) if !namespace.is_empty() && !name.is_empty() && !name.contains('/') => {
                    Ok(Source::Pod { namespace: namespace.to_owned(), name: name.to_owned() })
                }
                _ => Err(format!("{text:?}: a pod is pod:NAMESPACE/NAME")),
            };
        }
        crate::ip::parse_ip_sloppy(text)
            .map(|parsed| Source::Ip(parsed.ip))
            .ok_or_else(|| format!("{text:?} is neither pod:NAMESPACE/NAME, `node`, nor an IP address"))
    }
}

/// The destination of a traced connection: `IP:PORT/PROTO` (`[IPv6]:PORT/PROTO`; `/tcp` may be left out).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Target {
    /// The destination address.
    pub ip: IpAddr,
    /// The destination port.
    pub port: u16,
    /// The transport protocol.
    pub protocol: Protocol,
}

impl FromStr for Target {
    type Err = String;

    fn from_str(text: &str) -> Result<Target, String> {
        let bad = || format!("{text:?}: expected IP:PORT/PROTO, e.g. 10.96.0.10:53/udp or [fd00::a]:53/udp");
        let (address, protocol) = match text.rsplit_once('/') {
            Some((address, protocol)) => {
                let protocol = Protocol::from_kubernetes(&protocol.to_ascii_uppercase())
                    .ok_or_else(|| format!("{protocol:?}: the protocol is tcp, udp or sctp"))?;
                (address, protocol)
            }
            None => (text, Protocol::Tcp),
        };
        let (ip, port) = address.rsplit_once(':').ok_or_else(bad)?;
        let ip = ip.strip_prefix('[').and_then(|ip| ip.strip_suffix(']')).unwrap_or(ip);
        // Name the bad part, so that a typo in a long target is found at once.
        let ip = crate::ip::parse_ip_sloppy(ip)
            .ok_or_else(|| format!("{text:?}: {ip:?} is not an IPv4 or IPv6 address"))?
            .ip;
        let port = port
            .parse::<u16>()
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| format!("{text:?}: port {port:?} is not a number from 1 to 65535"))?;
        Ok(Target { ip, port, protocol })
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", Backend { ip: self.ip, port: self.port }, self.protocol)
    }
}

/// Why a trace could not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TraceError {
    /// No EndpointSlice (or legacy Endpoints) of the snapshot names this pod in a `targetRef`.
    #[error("pod {namespace}/{name} is not an endpoint of any Service in the snapshot; give its IP instead")]
    UnknownPod {
        /// The pod's namespace.
        namespace: String,
        /// The pod's name.
        name: String,
    },
    /// Endpoints name this as their `targetRef`, but as another kind (a Node: kubelet and API server
    /// endpoints); it is traced from its address.
    #[error("{namespace}/{name} is not a pod: endpoints name it as a {kind}; trace from its address ({ips}) instead")]
    NotAPod {
        /// The namespace given.
        namespace: String,
        /// The name given.
        name: String,
        /// The `targetRef` kind the endpoints give.
        kind: String,
        /// Its endpoint addresses, comma-separated.
        ips: String,
    },
    /// The pod is known, but has no address of the destination's family.
    #[error("pod {pod} has no {family} address in the snapshot")]
    PodWithoutAddress {
        /// `namespace/name`.
        pod: String,
        /// The destination's family.
        family: IpFamily,
    },
    /// The node has no address of the destination's family (neither in its Node object nor `--node-ip`).
    #[error("node {node} has no {family} address; configure the node's IP, or trace from an IP address")]
    NodeWithoutAddress {
        /// The node's name.
        node: String,
        /// The destination's family.
        family: IpFamily,
    },
    /// Source and destination are of different families.
    #[error("source {source_ip} and destination {destination} are not of the same IP family")]
    FamilyMismatch {
        /// The source address.
        source_ip: IpAddr,
        /// The destination address.
        destination: IpAddr,
    },
}

/// What the source is, as far as this node can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SourceRole {
    /// A pod: named, found among the endpoints, or inside `--cluster-cidr`.
    Pod,
    /// This node: one of its own addresses.
    Node,
    /// Anything else: another node, or a client outside the cluster.
    Other,
}

/// A pod, with the node it runs on when the EndpointSlice says.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct PodRef {
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's name.
    pub name: String,
    /// The endpoint's `nodeName`.
    pub node: Option<String>,
}

impl fmt::Display for PodRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// The traced connection's source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceReport {
    /// The source address.
    pub ip: IpAddr,
    /// What it is.
    pub role: SourceRole,
    /// The pod with this address, when the snapshot names one.
    pub pod: Option<PodRef>,
    /// Whether the local-traffic detector recognises it as a pod (what masquerade and the
    /// externalTrafficPolicy `Local` short-circuit go by).
    pub detected_as_pod: bool,
    /// Whether it is one of this node's addresses (what the `Local` short-circuit for the node goes by).
    pub from_this_node: bool,
    /// One line for people.
    pub description: String,
}

/// What the destination matched in the rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "match")]
pub enum Matched {
    /// A programmed destination: a service port reached one way.
    Destination {
        /// How it is reached.
        kind: DestinationKind,
        /// The service port.
        service_port: ServicePortName,
    },
    /// An allocated ClusterIP on a port (or protocol) none of its Services defines.
    ClusterIpOtherPort {
        /// The Services holding this ClusterIP.
        services: Vec<ObjectRef>,
    },
    /// An address in `--service-cidr` that no Service holds.
    ServiceCidr {
        /// The range it is in.
        cidr: IpNet,
    },
    /// Nothing: proxier's rules do not touch it.
    Nothing,
}

/// The `loadBalancerSourceRanges` check of a LoadBalancer IP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FirewallCheck {
    /// The sources allowed (the ranges, plus the LoadBalancer IPs when a range holds a node address).
    pub allowed_sources: Vec<IpNet>,
    /// Whether the traced source is among them.
    pub allowed: bool,
}

/// Which endpoints a policy lets this node use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EndpointSet {
    /// Every endpoint in the cluster (narrowed by topology hints when they cover this node).
    Cluster,
    /// Endpoints on this node only.
    Local,
}

/// The branch an externalTrafficPolicy `Local` destination took.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Branch {
    /// A pod: short-circuited to every endpoint, source kept.
    Pods,
    /// The node itself: short-circuited to every endpoint, masqueraded.
    Node,
    /// An outside client: local endpoints only, source kept.
    Others,
}

/// The traffic policy applied to the matched destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyReport {
    /// `internalTrafficPolicy` (ClusterIPs) or `externalTrafficPolicy` (NodePorts, LoadBalancer IPs,
    /// externalIPs).
    pub name: String,
    /// `Cluster` or `Local`.
    pub value: String,
    /// For externalTrafficPolicy `Local`: the branch the source took.
    pub branch: Option<Branch>,
    /// The endpoints the policy allows.
    pub endpoint_set: EndpointSet,
    /// Topology hints narrowing the Cluster set, as `zone zone-a` or `node node-a`.
    pub topology_hints: Option<String>,
    /// One line for people.
    pub explanation: String,
}

/// One endpoint of the matched service port, and why it is or is not a possible target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Candidate {
    /// Its address and the target port.
    pub endpoint: Backend,
    /// The pod behind it, from the EndpointSlice's `targetRef`.
    pub pod: Option<String>,
    /// Its `nodeName`.
    pub node: Option<String>,
    /// Its `zone`.
    pub zone: Option<String>,
    /// Condition `ready`.
    pub ready: bool,
    /// Condition `serving`.
    pub serving: bool,
    /// Condition `terminating`.
    pub terminating: bool,
    /// Whether it runs on the traced node.
    pub local: bool,
    /// `hints.forZones`.
    pub zone_hints: Option<Vec<String>>,
    /// `hints.forNodes`.
    pub node_hints: Option<Vec<String>>,
    /// Whether the connection may be DNATed to it.
    pub chosen: bool,
    /// Why it is in or out.
    pub reason: String,
}

/// What happens to the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum VerdictKind {
    /// DNAT to one of [`Verdict::endpoints`].
    Dnat,
    /// Refused at once: TCP reset, ICMP port unreachable otherwise.
    Reject,
    /// Discarded silently.
    Drop,
    /// Not proxier's: the packet passes untouched.
    NotHandled,
}

/// The outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// What happens.
    pub kind: VerdictKind,
    /// For DNAT: the endpoints one of which is picked at random per new connection.
    pub endpoints: Vec<Backend>,
    /// Session affinity ClientIP: a client keeps its endpoint for this many seconds of inactivity.
    pub affinity_timeout: Option<u32>,
    /// One line for people.
    pub reason: String,
}

/// Whether the source address is rewritten to the node's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MasqueradeReport {
    /// Whether connections are masqueraded (to any endpoint other than [`MasqueradeReport::hairpin`]).
    pub masqueraded: bool,
    /// The endpoint that is the source itself, if it is a candidate: reaching it is always masqueraded.
    pub hairpin: Option<Backend>,
    /// Why.
    pub reason: String,
}

impl MasqueradeReport {
    /// Whether a connection DNATed to `endpoint` is masqueraded.
    pub fn masqueraded_to(&self, endpoint: Backend) -> bool {
        self.masqueraded || self.hairpin == Some(endpoint)
    }
}

/// The full answer: serialized as `proxier trace --output json` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Trace {
    /// The node whose rules were walked.
    pub node: String,
    /// The connection's family.
    pub family: IpFamily,
    /// Where it comes from.
    pub source: SourceReport,
    /// Where it goes.
    pub destination: Target,
    /// What the destination matched.
    pub matched: Matched,
    /// The source-range check, for a LoadBalancer IP that has one.
    pub firewall: Option<FirewallCheck>,
    /// The traffic policy, for a destination with endpoints somewhere.
    pub policy: Option<PolicyReport>,
    /// Every endpoint of the matched service port in this family.
    pub candidates: Vec<Candidate>,
    /// What happens.
    pub verdict: Verdict,
    /// For DNAT: whether the source is masqueraded.
    pub masquerade: Option<MasqueradeReport>,
    /// Anything else worth knowing.
    pub notes: Vec<String>,
}

/// A pod address found in an EndpointSlice's `targetRef`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PodAddress {
    /// The pod.
    pub pod: PodRef,
    /// One of its addresses.
    pub ip: IpAddr,
}

/// Every pod address the snapshot's EndpointSlices (and converted legacy Endpoints) name, sorted.
pub fn pod_addresses(snapshot: &Snapshot) -> Vec<PodAddress> {
    let mut slices: Vec<EndpointSlice> = snapshot.endpoint_slices.clone();
    slices.extend(snapshot.legacy_endpoint_slices());
    let mut pods = Vec::new();
    for slice in &slices {
        let slice_namespace = slice.metadata.namespace.clone().unwrap_or_default();
        for endpoint in slice.endpoints.iter().flatten() {
            let Some(target) = endpoint.target_ref.as_ref().filter(|t| t.kind.as_deref() == Some("Pod")) else {
                continue;
            };
            let (Some(name), Some(ip)) = (
                target.name.clone(),
                endpoint.addresses.first().and_then(|a| crate::ip::parse_ip_sloppy(a)).map(|p| p.ip),
            ) else {
                continue;
            };
            let namespace = target.namespace.clone().unwrap_or_else(|| slice_namespace.clone());
            pods.push(PodAddress { pod: PodRef { namespace, name, node: endpoint.node_name.clone() }, ip });
        }
    }
    pods.sort();
    pods.dedup();
    pods
}

/// An endpoint whose `targetRef` names `name` as some kind other than Pod (a Node: its namespace is not
/// checked, Nodes have none), with its addresses; `None` when no endpoint does.
fn non_pod_target(snapshot: &Snapshot, namespace: &str, name: &str) -> Option<(String, Vec<IpAddr>)> {
    let legacy = snapshot.legacy_endpoint_slices();
    let mut found: Option<(String, Vec<IpAddr>)> = None;
    for slice in snapshot.endpoint_slices.iter().chain(&legacy) {
        let slice_namespace = slice.metadata.namespace.as_deref().unwrap_or_default();
        for endpoint in slice.endpoints.iter().flatten() {
            let Some(target) = endpoint.target_ref.as_ref() else { continue };
            let kind = target.kind.as_deref().unwrap_or_default();
            let target_namespace = target.namespace.as_deref().unwrap_or(slice_namespace);
            if kind == "Pod"
                || target.name.as_deref() != Some(name)
                || (kind != "Node" && target_namespace != namespace)
            {
                continue;
            }
            let entry = found.get_or_insert_with(|| (kind.to_owned(), Vec::new()));
            let ips = endpoint.addresses.iter().filter_map(|a| crate::ip::parse_ip_sloppy(a)).map(|p| p.ip);
            for ip in ips {
                if !entry.1.contains(&ip) {
                    entry.1.push(ip);
                }
            }
        }
    }
    found
}

/// Traces a new connection from `source` to `target` through the rules `config.node_name` gets for
/// `snapshot`. Computes the model; see [`trace_computation`] to reuse one.
pub fn trace(snapshot: &Snapshot, config: &NodeConfig, source: &Source, target: Target) -> Result<Trace, TraceError> {
    trace_computation(snapshot, config, &Computation::new(snapshot, config), source, target)
}

/// [`trace`] over a [`Computation`] of the same snapshot and config: its model, node facts and
/// endpoint index are used as they are.
pub fn trace_computation(
    snapshot: &Snapshot,
    config: &NodeConfig,
    computation: &Computation,
    source: &Source,
    target: Target,
) -> Result<Trace, TraceError> {
    let family = IpFamily::of(&target.ip);
    let model = &computation.model;
    let node = &computation.node;
    let pods = pod_addresses(snapshot);
    let source = source_report(source, family, config, node, &pods, snapshot, model)?;
    if IpFamily::of(&source.ip) != family {
        return Err(TraceError::FamilyMismatch { source_ip: source.ip, destination: target.ip });
    }
    let mut walk = Walk {
        snapshot,
        config,
        node,
        endpoints: &computation.endpoints,
        pods: &pods,
        trace: Trace {
            node: config.node_name.clone(),
            family,
            source,
            destination: target,
            matched: Matched::Nothing,
            firewall: None,
            policy: None,
            candidates: Vec::new(),
            verdict: Verdict {
                kind: VerdictKind::NotHandled,
                endpoints: Vec::new(),
                affinity_timeout: None,
                reason: String::new(),
            },
            masquerade: None,
            notes: Vec::new(),
        },
    };
    match model.family(family) {
        None => {
            walk.trace.verdict.reason = format!("{} programs no {family} rules", config.node_name);
        }
        Some(rules) => walk.run(rules),
    }
    Ok(walk.trace)
}

fn source_report(
    source: &Source,
    family: IpFamily,
    config: &NodeConfig,
    node: &NodeContext,
    pods: &[PodAddress],
    snapshot: &Snapshot,
    model: &RuleModel,
) -> Result<SourceReport, TraceError> {
    let (ip, named_pod) = match source {
        Source::Pod { namespace, name } => {
            let mine: Vec<&PodAddress> =
                pods.iter().filter(|p| &p.pod.namespace == namespace && &p.pod.name == name).collect();
            if mine.is_empty() {
                if let Some((kind, ips)) = non_pod_target(snapshot, namespace, name) {
                    let ips = ips.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
                    return Err(TraceError::NotAPod { namespace: namespace.clone(), name: name.clone(), kind, ips });
                }
                return Err(TraceError::UnknownPod { namespace: namespace.clone(), name: name.clone() });
            }
            let Some(address) = mine.iter().find(|p| IpFamily::of(&p.ip) == family) else {
                return Err(TraceError::PodWithoutAddress { pod: format!("{namespace}/{name}"), family });
            };
            (address.ip, Some(address.pod.clone()))
        }
        Source::Node => {
            let Some(ip) = node.primary_ip(family) else {
                return Err(TraceError::NodeWithoutAddress { node: config.node_name.clone(), family });
            };
            (ip, None)
        }
        Source::Ip(ip) => (*ip, None),
    };
    let pod = named_pod.or_else(|| pods.iter().find(|p| p.ip == ip).map(|p| p.pod.clone()));
    let from_this_node = node.ips().contains(&ip);
    let in_cluster_cidr = config.cluster_cidrs.iter().any(|net| net.contains(&ip));
    let role = if matches!(source, Source::Pod { .. }) || (!from_this_node && (pod.is_some() || in_cluster_cidr)) {
        SourceRole::Pod
    } else if from_this_node {
        SourceRole::Node
    } else {
        SourceRole::Other
    };
    let local_traffic = model.family(family).map(|f| &f.local_traffic).unwrap_or(&LocalTraffic::None);
    let this_node = config.node_name.as_str();
    let pod_here = pod.as_ref().is_some_and(|p| p.node.as_deref() == Some(this_node))
        || (pod.is_none() && role == SourceRole::Pod && node.pod_cidrs().iter().any(|n| n.contains(&ip)));
    let (detected_as_pod, detector) = match local_traffic {
        LocalTraffic::None => (false, "no local-traffic detector is configured".to_owned()),
        LocalTraffic::Cidrs(cidrs) => {
            let list = join(cidrs.iter());
            let hit = cidrs.iter().any(|net| net.contains(&ip));
            (hit, format!("{} the pod ranges {list}", if hit { "inside" } else { "outside" }))
        }
        LocalTraffic::Interface(name) => {
            let hit = role == SourceRole::Pod && pod_here;
            (hit, format!("{} on bridge {name} of this node", if hit { "arrives" } else { "does not arrive" }))
        }
        LocalTraffic::InterfacePrefix(prefix) => {
            let hit = role == SourceRole::Pod && pod_here;
            let verb = if hit { "arrives" } else { "does not arrive" };
            (hit, format!("{verb} on an interface {prefix}* of this node"))
        }
    };
    let what = match (&role, &pod) {
        (SourceRole::Pod, Some(pod)) => match &pod.node {
            Some(node) => format!("pod {pod} on {node}"),
            None => format!("pod {pod}"),
        },
        (SourceRole::Pod, None) => "a pod address (inside the cluster CIDR)".to_owned(),
        (SourceRole::Node, _) => format!("node {this_node} itself"),
        (SourceRole::Other, _) => match other_node(snapshot, ip, this_node) {
            Some(node) => format!("node {node} (another node: an outside client to {this_node})"),
            None => "an outside client".to_owned(),
        },
    };
    let description =
        format!("{ip}: {what}; {} pod to the rules: {detector}", if detected_as_pod { "a" } else { "not a" });
    Ok(SourceReport { ip, role, pod, detected_as_pod, from_this_node, description })
}

/// The name of another Node of the snapshot that has this address.
fn other_node(snapshot: &Snapshot, ip: IpAddr, this_node: &str) -> Option<String> {
    snapshot.nodes.iter().find_map(|node| {
        let name = node.metadata.name.as_deref()?;
        let addresses = node.status.as_ref()?.addresses.as_ref()?;
        let hit = addresses.iter().any(|a| crate::ip::parse_ip_sloppy(&a.address).is_some_and(|p| p.ip == ip));
        (hit && name != this_node).then(|| name.to_owned())
    })
}

fn join<T: fmt::Display>(items: impl Iterator<Item = T>) -> String {
    items.map(|i| i.to_string()).collect::<Vec<_>>().join(", ")
}

struct Walk<'a> {
    snapshot: &'a Snapshot,
    config: &'a NodeConfig,
    node: &'a NodeContext,
    endpoints: &'a EndpointIndex,
    pods: &'a [PodAddress],
    trace: Trace,
}

impl Walk<'_> {
    fn run(&mut self, rules: &FamilyRules) {
        let target = self.trace.destination;
        let found = rules
            .destinations
            .iter()
            .find(|d| d.ip == target.ip && d.protocol == target.protocol && d.port == target.port);
        let Some(destination) = found else {
            return self.unmatched(rules);
        };
        self.trace.matched =
            Matched::Destination { kind: destination.kind, service_port: destination.service_port.clone() };

        if let Some(allowed) = &destination.allowed_sources {
            let ok = allowed.iter().any(|net| net.contains(&self.trace.source.ip));
            self.trace.firewall = Some(FirewallCheck { allowed_sources: allowed.clone(), allowed: ok });
            if !ok {
                return self.verdict(
                    VerdictKind::Drop,
                    format!(
                        "{} is outside loadBalancerSourceRanges ({}): dropped before DNAT",
                        self.trace.source.ip,
                        if allowed.is_empty() { "none valid".to_owned() } else { join(allowed.iter()) }
                    ),
                );
            }
        }

        let service = self.service(&destination.service_port);
        let (action, branch) = match &destination.action {
            Action::BySource { pods, node, others } => {
                // Chain order: the pod rule exists only where it differs from the others' action.
                if pods != others && self.trace.source.detected_as_pod {
                    (pods.as_ref(), Some(Branch::Pods))
                } else if self.trace.source.from_this_node {
                    (node.as_ref(), Some(Branch::Node))
                } else {
                    (others.as_ref(), Some(Branch::Others))
                }
            }
            action => (action, None),
        };
        self.policy_and_candidates(rules, destination, service.as_ref(), action, branch);

        match action {
            Action::Reject => self.verdict(
                VerdictKind::Reject,
                format!("{} has no usable endpoint anywhere: rejected", destination.service_port),
            ),
            Action::Drop => {
                let policy =
                    if destination.kind.is_external() { "externalTrafficPolicy" } else { "internalTrafficPolicy" };
                self.verdict(
                    VerdictKind::Drop,
                    format!(
                        "{policy} Local and no usable endpoint on {}: dropped (endpoints exist elsewhere)",
                        self.config.node_name
                    ),
                )
            }
            Action::Balance { backends, masquerade, affinity } => {
                self.trace.verdict = Verdict {
                    kind: VerdictKind::Dnat,
                    endpoints: backends.clone(),
                    affinity_timeout: *affinity,
                    reason: match affinity {
                        Some(timeout) => format!(
                            "DNAT to one of {} endpoints, chosen at random for a client's first connection; \
                             sessionAffinity ClientIP keeps the client on it for {timeout}s of inactivity",
                            backends.len()
                        ),
                        None if backends.len() == 1 => "DNAT to the only usable endpoint".to_owned(),
                        None => {
                            format!("DNAT to one of {} endpoints, chosen at random per new connection", backends.len())
                        }
                    },
                };
                self.masquerade(rules, destination, *masquerade, branch, backends);
            }
            Action::BySource { .. } => {
                self.verdict(VerdictKind::NotHandled, "nested source branches are not produced by compute".into())
            }
        }
        self.notes(destination);
    }

    fn verdict(&mut self, kind: VerdictKind, reason: String) {
        self.trace.verdict = Verdict { kind, endpoints: Vec::new(), affinity_timeout: None, reason };
    }

    /// No destination matched: the filter rules for ClusterIPs and the service CIDR, or nothing.
    fn unmatched(&mut self, rules: &FamilyRules) {
        let target = self.trace.destination;
        if rules.cluster_ips.contains(&target.ip) {
            let services = self.services_with_cluster_ip(target.ip);
            let names = join(services.iter().map(|s| format!("{}/{}", s.namespace, s.name)));
            self.trace.matched = Matched::ClusterIpOtherPort { services };
            return self.verdict(
                VerdictKind::Reject,
                format!(
                    "{} is the ClusterIP of {names}, which defines no port {}/{}: rejected",
                    target.ip, target.port, target.protocol
                ),
            );
        }
        if let Some(&cidr) = rules.service_cidrs.iter().find(|net| net.contains(&target.ip)) {
            self.trace.matched = Matched::ServiceCidr { cidr };
            return self.verdict(
                VerdictKind::Drop,
                format!("{} is in the service CIDR {cidr} but no Service holds it: dropped", target.ip),
            );
        }
        let reason = if rules.node_port_ips.contains(&target.ip) {
            format!(
                "{} is a NodePort address of {}, but no Service has nodePort {}/{}: not proxier's",
                target.ip, self.config.node_name, target.port, target.protocol
            )
        } else {
            format!("no Service destination is {target}: not proxier's, the packet passes untouched")
        };
        self.verdict(VerdictKind::NotHandled, reason);
    }

    fn services_with_cluster_ip(&self, ip: IpAddr) -> Vec<ObjectRef> {
        let mut found: Vec<ObjectRef> = self
            .snapshot
            .services
            .iter()
            .filter_map(|service| match read_service(service, &mut Vec::new()) {
                ServiceClass::Proxied(p) if p.cluster_ips.contains(&ip) => Some(p.object),
                _ => None,
            })
            .collect();
        found.sort();
        found
    }

    fn service(&self, port: &ServicePortName) -> Option<ProxiedService> {
        self.snapshot.services.iter().find_map(|service| {
            let meta = &service.metadata;
            if meta.name.as_deref() != Some(&port.name) || meta.namespace.as_deref() != Some(&port.namespace) {
                return None;
            }
            match read_service(service, &mut Vec::new()) {
                ServiceClass::Proxied(p) => Some(p),
                _ => None,
            }
        })
    }

    fn policy_and_candidates(
        &mut self,
        rules: &FamilyRules,
        destination: &Destination,
        service: Option<&ProxiedService>,
        action: &Action,
        branch: Option<Branch>,
    ) {
        let node = self.node.node_name();
        let here = self.node.locality();
        let port = &destination.service_port;
        let key = (port.namespace.clone(), port.name.clone(), port.port.clone(), port.protocol);
        let endpoints = self.endpoints.endpoints(&key, rules.family);
        let sets = EndpointSets::categorize(&endpoints, here);
        let hints = hints_in_use(&endpoints, here);

        let external = destination.kind.is_external();
        let local_policy = service.is_some_and(|s| if external { s.external_local } else { s.internal_local });
        let set = match branch {
            Some(Branch::Others) => EndpointSet::Local,
            Some(_) => EndpointSet::Cluster,
            None if local_policy => EndpointSet::Local,
            None => EndpointSet::Cluster,
        };
        let hint_text = hints.as_ref().filter(|_| set == EndpointSet::Cluster).map(|scope| match scope {
            HintScope::Node(n) => format!("node {n}"),
            HintScope::Zone(z) => format!("zone {z}"),
        });
        let name = if external { "externalTrafficPolicy" } else { "internalTrafficPolicy" };
        let value = if local_policy { "Local" } else { "Cluster" };
        let explanation = match (external, local_policy, branch) {
            (_, _, _) if !sets.any => "no endpoint is usable anywhere, whatever the policy".to_owned(),
            (false, true, _) => format!("ClusterIP traffic uses only endpoints on {node}"),
            (true, true, Some(Branch::Pods)) => {
                "a pod reaching an external address of a Local Service is short-circuited to every endpoint, \
                 as if it used the ClusterIP"
                    .to_owned()
            }
            (true, true, Some(Branch::Node)) => {
                format!("traffic from {node} itself is short-circuited to every endpoint and masqueraded")
            }
            (true, true, _) => format!("an outside client is sent only to endpoints on {node}, keeping its address"),
            (_, false, _) => "any usable endpoint in the cluster".to_owned(),
        };
        let explanation = match &hint_text {
            Some(hint) => format!("{explanation}; topology hints for {hint} narrow the set"),
            None => explanation,
        };
        self.trace.policy = Some(PolicyReport {
            name: name.to_owned(),
            value: value.to_owned(),
            branch,
            endpoint_set: set,
            topology_hints: hint_text,
            explanation,
        });

        let chosen: Vec<Backend> = match action {
            Action::Balance { backends, .. } => backends.clone(),
            _ => Vec::new(),
        };
        let set_members: Vec<&EndpointInfo> = match set {
            EndpointSet::Local => endpoints.iter().copied().filter(|e| e.node_name.as_deref() == Some(node)).collect(),
            EndpointSet::Cluster => endpoints
                .iter()
                .copied()
                .filter(|e| !e.ready || hints.as_ref().is_none_or(|scope| scope.admits(e)))
                .collect(),
        };
        let set_has_ready = set_members.iter().any(|e| e.ready);
        for endpoint in &endpoints {
            let local = endpoint.node_name.as_deref() == Some(node);
            let is_chosen = chosen.contains(&endpoint.backend);
            let reason = candidate_reason(CandidateFacts {
                endpoint,
                chosen: is_chosen,
                local,
                set,
                node,
                hints: hints.as_ref(),
                set_has_ready,
                policy: name,
            });
            let pod = self.pods.iter().find(|p| p.ip == endpoint.backend.ip).map(|p| p.pod.to_string());
            self.trace.candidates.push(Candidate {
                endpoint: endpoint.backend,
                pod,
                node: endpoint.node_name.clone(),
                zone: endpoint.zone.clone(),
                ready: endpoint.ready,
                serving: endpoint.serving,
                terminating: endpoint.terminating,
                local,
                zone_hints: endpoint.zone_hints.clone(),
                node_hints: endpoint.node_hints.clone(),
                chosen: is_chosen,
                reason,
            });
        }
    }

    fn masquerade(
        &mut self,
        rules: &FamilyRules,
        destination: &Destination,
        masquerade: Masquerade,
        branch: Option<Branch>,
        backends: &[Backend],
    ) {
        let source = &self.trace.source;
        // Without a detector, "masquerade non-pod sources" cannot be expressed: nothing is marked.
        let effective = match masquerade {
            Masquerade::OutsidePodNetwork if rules.local_traffic == LocalTraffic::None => Masquerade::Never,
            other => other,
        };
        let (masqueraded, reason) = match (effective, destination.kind, branch) {
            (Masquerade::Always, DestinationKind::ClusterIp, _) => {
                (true, "masquerade-all is configured: every connection to a ClusterIP is masqueraded".to_owned())
            }
            (Masquerade::Always, _, Some(Branch::Node)) => {
                (true, "traffic from the node to a Local destination is masqueraded so replies return".to_owned())
            }
            (Masquerade::Always, _, _) => (
                true,
                "externalTrafficPolicy Cluster: external destinations are always masqueraded, so replies return \
                 through this node"
                    .to_owned(),
            ),
            (Masquerade::OutsidePodNetwork, _, _) if source.detected_as_pod => {
                (false, "the source is a pod to the local-traffic detector: its address is kept".to_owned())
            }
            (Masquerade::OutsidePodNetwork, _, _) => (
                true,
                "the source is not a pod to the local-traffic detector: masqueraded so replies return through \
                 this node"
                    .to_owned(),
            ),
            (Masquerade::Never, DestinationKind::ClusterIp, _) if rules.local_traffic == LocalTraffic::None => (
                false,
                "no local-traffic detector (no cluster CIDR configured): ClusterIP traffic is not masqueraded by source"
                    .to_owned(),
            ),
            (Masquerade::Never, _, Some(Branch::Pods)) => {
                (false, "pod traffic short-circuited to a Local Service keeps its address".to_owned())
            }
            (Masquerade::Never, _, Some(Branch::Others)) => {
                (false, "externalTrafficPolicy Local: the client address is preserved".to_owned())
            }
            (Masquerade::Never, _, _) => (false, "the source address is kept".to_owned()),
        };
        // The kernel masquerades hairpin connections only of the backends that can hairpin here (this
        // node's endpoints, and NodePort cases): `hairpin_ips`.
        let hairpin = backends
            .iter()
            .copied()
            .find(|b| b.ip == source.ip)
            .filter(|b| rules.hairpin_ips.binary_search(&b.ip).is_ok());
        let (masqueraded, reason) = match hairpin {
            Some(_) if backends.len() == 1 => {
                (true, format!("hairpin: the source is the only endpoint, reaching itself is masqueraded ({reason})"))
            }
            Some(endpoint) => (
                masqueraded,
                format!("{reason}; hairpin: a connection landing on {endpoint} (the source itself) is masqueraded"),
            ),
            None => (masqueraded, reason),
        };
        self.trace.masquerade = Some(MasqueradeReport { masqueraded, hairpin, reason });
    }

    fn notes(&mut self, destination: &Destination) {
        let node = &self.config.node_name;
        let source = &self.trace.source;
        if destination.kind == DestinationKind::ClusterIp
            && let Some(pod) = &source.pod
            && let Some(pod_node) = pod.node.as_ref().filter(|n| *n != node)
        {
            self.trace.notes.push(format!(
                "{pod} runs on {pod_node}: its connections to ClusterIPs are handled by {pod_node}'s rules \
                 (trace on {pod_node} to see them); this trace walks {node}'s"
            ));
        }
        if destination.kind == DestinationKind::ClusterIp && source.role == SourceRole::Other {
            self.trace.notes.push(format!(
                "an outside client reaches a ClusterIP only if it routes the service range through {node}"
            ));
        }
    }
}

struct CandidateFacts<'a> {
    endpoint: &'a EndpointInfo,
    chosen: bool,
    local: bool,
    set: EndpointSet,
    node: &'a str,
    hints: Option<&'a HintScope>,
    set_has_ready: bool,
    policy: &'a str,
}

fn candidate_reason(facts: CandidateFacts<'_>) -> String {
    let e = facts.endpoint;
    let hinted = facts.set == EndpointSet::Cluster && e.ready && facts.hints.is_some();
    let mut qualities = Vec::new();
    if facts.local {
        qualities.push("on this node".to_owned());
    }
    if hinted && let Some(scope) = facts.hints {
        qualities.push(match scope {
            HintScope::Node(n) => format!("hinted for node {n}"),
            HintScope::Zone(z) => format!("hinted for zone {z}"),
        });
    }
    let qualities = if qualities.is_empty() { String::new() } else { format!(" ({})", qualities.join(", ")) };
    if facts.chosen {
        return if e.ready {
            format!("ready{qualities}")
        } else {
            format!("serving while terminating{qualities}: used because no endpoint of the set is ready")
        };
    }
    if !e.ready && !e.serving {
        return if e.terminating { "terminating and no longer serving".into() } else { "not ready".into() };
    }
    if facts.set == EndpointSet::Local && !facts.local {
        let on = e.node_name.as_deref().map_or("no node".to_owned(), |n| format!("node {n}"));
        return format!("on {on}, not {}: {} Local uses this node's endpoints only", facts.node, facts.policy);
    }
    if facts.set == EndpointSet::Cluster
        && e.ready
        && let Some(scope) = facts.hints
        && !scope.admits(e)
    {
        let (kind, wanted) = match scope {
            HintScope::Node(n) => ("node", n),
            HintScope::Zone(z) => ("zone", z),
        };
        let hints = scope.hints(e).map(|h| h.join(", ")).unwrap_or_default();
        return format!("hinted for {kind} {hints}, not {wanted}: topology hints keep traffic close");
    }
    if !e.ready && e.terminating && facts.set_has_ready {
        return "terminating (still serving): used only while no endpoint of the set is ready".into();
    }
    if !e.ready {
        return "not ready".into();
    }
    "not chosen".into()
}

impl Trace {
    /// The trace as operators read it.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let source = &self.source;
        let _ = writeln!(out, "trace {} → {} on {} ({})", source.ip, self.destination, self.node, self.family);
        let _ = writeln!(out, "  source:      {}", source.description);
        let matched = match &self.matched {
            Matched::Destination { kind, service_port } => format!("{kind} of {service_port}"),
            Matched::ClusterIpOtherPort { services } => format!(
                "a ClusterIP of {} on a port it does not define",
                join(services.iter().map(|s| format!("{}/{}", s.namespace, s.name)))
            ),
            Matched::ServiceCidr { cidr } => format!("the service CIDR {cidr}, no ClusterIP"),
            Matched::Nothing => "nothing".to_owned(),
        };
        let _ = writeln!(out, "  matched:     {matched}");
        if let Some(firewall) = &self.firewall {
            let allowed = if firewall.allowed_sources.is_empty() {
                "nothing".to_owned()
            } else {
                join(firewall.allowed_sources.iter())
            };
            let _ = writeln!(
                out,
                "  firewall:    loadBalancerSourceRanges allow {allowed}: source {}",
                if firewall.allowed { "allowed" } else { "NOT allowed" }
            );
        }
        if let Some(policy) = &self.policy {
            let _ = writeln!(out, "  policy:      {} {}: {}", policy.name, policy.value, policy.explanation);
        }
        if !self.candidates.is_empty() {
            let _ = writeln!(out, "  endpoints:");
            for c in &self.candidates {
                let mark = if c.chosen { '+' } else { '-' };
                let mut place = Vec::new();
                if let Some(pod) = &c.pod {
                    place.push(format!("pod {pod}"));
                }
                if let Some(node) = &c.node {
                    place.push(node.clone());
                }
                if let Some(zone) = &c.zone {
                    place.push(zone.clone());
                }
                let place = if place.is_empty() { String::new() } else { format!(" [{}]", place.join(", ")) };
                let _ = writeln!(out, "    {mark} {}{place}: {}", c.endpoint, c.reason);
            }
        }
        let verdict = match self.verdict.kind {
            VerdictKind::Dnat => format!("DNAT to {}", join(self.verdict.endpoints.iter())),
            VerdictKind::Reject => "REJECT".to_owned(),
            VerdictKind::Drop => "DROP".to_owned(),
            VerdictKind::NotHandled => "not handled".to_owned(),
        };
        let _ = writeln!(out, "  verdict:     {verdict}");
        let _ = writeln!(out, "               {}", self.verdict.reason);
        if let Some(masquerade) = &self.masquerade {
            let _ = writeln!(
                out,
                "  masquerade:  {}: {}",
                if masquerade.masqueraded { "yes" } else { "no" },
                masquerade.reason
            );
        }
        for note in &self.notes {
            let _ = writeln!(out, "  note:        {note}");
        }
        out
    }
}

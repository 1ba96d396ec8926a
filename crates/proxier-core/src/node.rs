//! The node being programmed, in one place: its addresses, which of them serve NodePorts, its zone,
//! its pod ranges and how pod traffic is recognised ([`NodeContext`]). [`crate::compute()`],
//! [`crate::trace()`], [`crate::explain()`] and [`crate::state::ClusterState`] all read the node's facts
//! from here.

use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::{Node, NodeSpec, NodeStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::config::{DetectLocal, NodeConfig};
use crate::diagnostic::{Diagnostic, ObjectRef};
use crate::endpoints::Locality;
use crate::ip::{parse_cidr_sloppy, parse_ip_sloppy};
use crate::model::{FamilyRules, IpFamily, LocalTraffic, Masquerade};

/// The Node label that names its zone.
pub const LABEL_ZONE: &str = "topology.kubernetes.io/zone";

/// What every Service's rules on one node depend on besides the Service and its endpoints: the node's
/// addresses, zone and pod ranges, and its settings. Two equal contexts give equal rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeContext {
    pub(crate) node_name: String,
    pub(crate) ips: Vec<IpAddr>,
    pub(crate) zone: Option<String>,
    /// The Node's `spec.podCIDRs` (or `podCIDR`).
    pub(crate) pod_cidrs: Vec<IpNet>,
    /// Families programmed whatever the Services: those of the node's addresses and pod ranges.
    pub(crate) node_families: Vec<IpFamily>,
    /// Both families, IPv4 first.
    pub(crate) families: [FamilyContext; 2],
    pub(crate) diagnostics: Vec<Diagnostic>,
    /// Why NodePorts cannot be served here (no node address known): reported only when a Service
    /// asks for a nodePort, since nothing else needs the node's addresses.
    pub(crate) node_port_warning: Option<Diagnostic>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FamilyContext {
    pub(crate) node_port_ips: Vec<IpAddr>,
    pub(crate) local_traffic: LocalTraffic,
    /// How ClusterIP traffic is masqueraded.
    pub(crate) cluster_masquerade: Masquerade,
    pub(crate) service_cidrs: Vec<IpNet>,
}

impl NodeContext {
    /// The context of `config.node_name`, whose Node object (if known) is `node`.
    pub fn new(node: Option<&Node>, config: &NodeConfig) -> NodeContext {
        let mut diagnostics = Vec::new();
        let labels = node.and_then(|n| n.metadata.labels.as_ref());
        let pod_cidrs = pod_cidrs(node);
        let ips = node_ips(node, config, &mut diagnostics);
        let node_port_warning = ips.is_empty().then(|| no_node_ips(node, config));
        let family = |family| {
            let local_traffic = local_traffic(family, config, &pod_cidrs);
            let cluster_masquerade = if config.masquerade_all {
                Masquerade::Always
            } else if local_traffic == LocalTraffic::None {
                Masquerade::Never
            } else {
                Masquerade::OutsidePodNetwork
            };
            FamilyContext {
                node_port_ips: node_port_ips(&ips, config, family),
                local_traffic,
                cluster_masquerade,
                service_cidrs: config.service_cidrs.iter().copied().filter(|n| IpFamily::of_net(n) == family).collect(),
            }
        };
        let families = [family(IpFamily::V4), family(IpFamily::V6)];
        let node_families = IpFamily::ALL
            .into_iter()
            .filter(|&family| {
                ips.iter().any(|ip| IpFamily::of(ip) == family)
                    || config.cluster_cidrs.iter().any(|net| IpFamily::of_net(net) == family)
            })
            .collect();
        NodeContext {
            node_name: config.node_name.clone(),
            zone: labels.and_then(|l| l.get(LABEL_ZONE)).cloned(),
            ips,
            pod_cidrs,
            node_families,
            families,
            diagnostics,
            node_port_warning,
        }
    }

    /// The node's name.
    pub fn node_name(&self) -> &str {
        &self.node_name
    }

    /// The node's addresses (see [`node_ips`]); the first of each family is its primary address.
    pub fn ips(&self) -> &[IpAddr] {
        &self.ips
    }

    /// The node's primary address of `family`.
    pub fn primary_ip(&self, family: IpFamily) -> Option<IpAddr> {
        self.ips.iter().copied().find(|ip| IpFamily::of(ip) == family)
    }

    /// The node's zone (its `topology.kubernetes.io/zone` label).
    pub fn zone(&self) -> Option<&str> {
        self.zone.as_deref()
    }

    /// Where the node is, for topology-aware routing.
    pub fn locality(&self) -> Locality<'_> {
        Locality { node: &self.node_name, zone: self.zone.as_deref() }
    }

    /// The node's pod ranges (`spec.podCIDRs`).
    pub fn pod_cidrs(&self) -> &[IpNet] {
        &self.pod_cidrs
    }

    /// The addresses NodePorts (and health-check nodePorts) are served on, IPv4 first.
    pub fn node_port_ips(&self) -> Vec<IpAddr> {
        self.families.iter().flat_map(|f| f.node_port_ips.iter().copied()).collect()
    }

    /// How pod traffic is recognised in `family`.
    pub fn local_traffic(&self, family: IpFamily) -> &LocalTraffic {
        &self.family(family).local_traffic
    }

    /// Families this node programs even without Services: those of its addresses and pod ranges.
    pub(crate) fn node_families(&self) -> &[IpFamily] {
        &self.node_families
    }

    /// Problems found in the node's own object.
    pub fn diagnostics(&self) -> &[Diagnostic] {
        &self.diagnostics
    }

    /// One family's rules with no Service in them: the node's side only.
    pub(crate) fn empty_rules(&self, family: IpFamily) -> FamilyRules {
        let context = self.family(family);
        FamilyRules {
            family,
            node_port_ips: context.node_port_ips.clone(),
            local_traffic: context.local_traffic.clone(),
            cluster_ips: Vec::new(),
            service_cidrs: context.service_cidrs.clone(),
            destinations: Vec::new(),
            health_checks: Vec::new(),
            hairpin_ips: Vec::new(),
        }
    }

    pub(crate) fn family(&self, family: IpFamily) -> &FamilyContext {
        match family {
            IpFamily::V4 => &self.families[0],
            IpFamily::V6 => &self.families[1],
        }
    }
}

/// A Node's pod ranges: `spec.podCIDRs`, or the older `spec.podCIDR`; unreadable ones are skipped.
pub fn pod_cidrs(node: Option<&Node>) -> Vec<IpNet> {
    node.and_then(|n| n.spec.as_ref())
        .and_then(|s| s.pod_cidrs.clone().or_else(|| s.pod_cidr.clone().map(|c| vec![c])))
        .unwrap_or_default()
        .iter()
        .filter_map(|text| parse_cidr_sloppy(text))
        .collect()
}

/// The Node object reduced to what a node's rules depend on: its name and labels (the zone),
/// podCIDRs and addresses. Everything else (conditions, images, heartbeats) changes often and
/// matters to no rule.
pub fn reduced_node(node: Node) -> Node {
    Node {
        metadata: ObjectMeta { name: node.metadata.name, labels: node.metadata.labels, ..ObjectMeta::default() },
        spec: node.spec.map(|spec| NodeSpec {
            pod_cidr: spec.pod_cidr,
            pod_cidrs: spec.pod_cidrs,
            ..NodeSpec::default()
        }),
        status: node.status.map(|status| NodeStatus { addresses: status.addresses, ..NodeStatus::default() }),
    }
}

fn local_traffic(family: IpFamily, config: &NodeConfig, pod_cidrs: &[IpNet]) -> LocalTraffic {
    let of_family =
        |nets: &[IpNet]| -> Vec<IpNet> { nets.iter().copied().filter(|n| IpFamily::of_net(n) == family).collect() };
    let cidrs = match &config.detect_local {
        DetectLocal::ClusterCidr => of_family(&config.cluster_cidrs),
        DetectLocal::NodeCidr => of_family(pod_cidrs),
        DetectLocal::BridgeInterface(name) => return LocalTraffic::Interface(name.clone()),
        DetectLocal::InterfaceNamePrefix(prefix) => return LocalTraffic::InterfacePrefix(prefix.clone()),
    };
    if cidrs.is_empty() { LocalTraffic::None } else { LocalTraffic::Cidrs(cidrs) }
}

/// The node's addresses: every InternalIP then ExternalIP of the Node object, or the configured
/// override ([`NodeConfig::node_ips`]). The first of each family is that family's primary address.
pub fn node_ips(node: Option<&Node>, config: &NodeConfig, diagnostics: &mut Vec<Diagnostic>) -> Vec<IpAddr> {
    if !config.node_ips.is_empty() {
        return config.node_ips.clone();
    }
    let object = ObjectRef::new("Node", "", &config.node_name);
    let Some(node) = node else { return Vec::new() };
    let addresses = node.status.as_ref().and_then(|s| s.addresses.as_ref());
    let mut ips = Vec::new();
    for wanted in ["InternalIP", "ExternalIP"] {
        for (i, address) in addresses.into_iter().flatten().enumerate() {
            if address.type_ != wanted {
                continue;
            }
            match parse_ip_sloppy(&address.address) {
                Some(parsed) if !ips.contains(&parsed.ip) => ips.push(parsed.ip),
                Some(_) => {}
                None => diagnostics.push(
                    Diagnostic::error(
                        object.clone(),
                        format!("{:?} is not an IP address; ignored", crate::service::shorten(&address.address)),
                    )
                    .at(format!("status.addresses[{i}].address")),
                ),
            }
        }
    }
    ips
}

/// The warning for a node without any address ([`node_ips`] found none): its NodePorts cannot be
/// programmed.
fn no_node_ips(node: Option<&Node>, config: &NodeConfig) -> Diagnostic {
    let object = ObjectRef::new("Node", "", &config.node_name);
    match node {
        None => {
            Diagnostic::warning(object, "not in the snapshot and no node IP configured: NodePorts are not programmed")
        }
        Some(_) => Diagnostic::warning(
            object,
            "no usable InternalIP or ExternalIP address and no node IP configured: NodePorts are not programmed on \
             this node",
        )
        .at("status.addresses"),
    }
}

/// The addresses NodePorts are served on: with [`NodeConfig::nodeport_addresses`], every node address
/// inside those ranges; without, the primary address of each family.
pub fn node_port_ips(node_ips: &[IpAddr], config: &NodeConfig, family: IpFamily) -> Vec<IpAddr> {
    let of_family = node_ips.iter().copied().filter(|ip| IpFamily::of(ip) == family);
    let mut ips: Vec<IpAddr> = if config.nodeport_addresses.is_empty() {
        of_family.take(1).collect()
    } else {
        of_family.filter(|ip| config.nodeport_addresses.iter().any(|net| net.contains(ip))).collect()
    };
    ips.sort();
    ips
}

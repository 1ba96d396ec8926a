//! The node being programmed: its addresses, and which of them serve NodePorts.

use std::net::IpAddr;

use k8s_openapi::api::core::v1::Node;

use crate::config::NodeConfig;
use crate::diagnostic::{Diagnostic, ObjectRef, Severity};
use crate::ip::parse_ip_sloppy;
use crate::model::IpFamily;

/// The node's addresses: every InternalIP then ExternalIP of the Node object, or the `--node-ip`
/// override. The first of each family is that family's primary address.
pub fn node_ips(node: Option<&Node>, config: &NodeConfig, diagnostics: &mut Vec<Diagnostic>) -> Vec<IpAddr> {
    if !config.node_ips.is_empty() {
        return config.node_ips.clone();
    }
    let object = ObjectRef::new("Node", "", &config.node_name);
    let Some(node) = node else {
        diagnostics.push(Diagnostic {
            severity: Severity::Warning,
            source: None,
            object,
            field: None,
            message: "not in the snapshot and no --node-ip given: NodePorts are not programmed".into(),
        });
        return Vec::new();
    };
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
                None => diagnostics.push(Diagnostic {
                    severity: Severity::Error,
                    source: None,
                    object: object.clone(),
                    field: Some(format!("status.addresses[{i}].address")),
                    message: format!("{:?} is not an IP address; ignored", crate::service::shorten(&address.address)),
                }),
            }
        }
    }
    if ips.is_empty() {
        diagnostics.push(Diagnostic {
            severity: Severity::Warning,
            source: None,
            object,
            field: Some("status.addresses".into()),
            message: "no usable InternalIP or ExternalIP address and no --node-ip given: NodePorts are not \
                      programmed on this node"
                .into(),
        });
    }
    ips
}

/// The addresses NodePorts are served on: with `--nodeport-addresses`, every node address inside those
/// ranges; without, the primary address of each family.
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

//! `trace`: every verdict kind, every source branch and every masquerade reason, on the bundled
//! semantics and single-stack clusters. That the verdicts are what the kernel does is checked with real
//! traffic in proxier-cli/tests/trace_agreement.rs.

use proxier_core::trace::{Branch, Matched, Source, SourceRole, Target, Trace, TraceError, VerdictKind, trace};
use proxier_core::{Action, DestinationKind, IpFamily, NodeConfig, Snapshot, compute};

const SEMANTICS: &str = include_str!("../../../testdata/clusters/semantics.yaml");
const SINGLE_STACK: &str = include_str!("../../../testdata/clusters/single-stack.yaml");
const DUAL_STACK: &str = include_str!("../../../testdata/clusters/dual-stack.json");

fn config(node: &str) -> NodeConfig {
    NodeConfig {
        node_name: node.into(),
        cluster_cidrs: vec!["10.244.0.0/16".parse().unwrap()],
        service_cidrs: vec!["10.96.0.0/16".parse().unwrap()],
        ..Default::default()
    }
}

fn run(text: &str, config: &NodeConfig, from: &str, to: &str) -> Trace {
    let (snapshot, _) = Snapshot::from_text("cluster", text);
    trace(&snapshot, config, &from.parse().unwrap(), to.parse().unwrap()).unwrap()
}

fn endpoints(trace: &Trace) -> Vec<String> {
    trace.verdict.endpoints.iter().map(ToString::to_string).collect()
}

fn chosen(trace: &Trace) -> Vec<String> {
    trace.candidates.iter().filter(|c| c.chosen).map(|c| c.endpoint.to_string()).collect()
}

fn reason_of<'a>(trace: &'a Trace, endpoint: &str) -> &'a str {
    &trace.candidates.iter().find(|c| c.endpoint.to_string() == endpoint).unwrap().reason
}

#[test]
fn sources_and_targets_parse() {
    assert_eq!("node".parse::<Source>().unwrap(), Source::Node);
    assert_eq!(
        "pod:shop/web-1".parse::<Source>().unwrap(),
        Source::Pod { namespace: "shop".into(), name: "web-1".into() }
    );
    assert_eq!("10.0.0.1".parse::<Source>().unwrap(), Source::Ip("10.0.0.1".parse().unwrap()));
    assert!("pod:shop".parse::<Source>().is_err());
    assert!("somewhere".parse::<Source>().is_err());

    let target: Target = "10.96.0.10:53/UDP".parse().unwrap();
    assert_eq!(target.to_string(), "10.96.0.10:53/udp");
    assert_eq!("[fd00::a]:53/udp".parse::<Target>().unwrap().to_string(), "[fd00::a]:53/udp");
    assert_eq!("10.96.0.1:443".parse::<Target>().unwrap().to_string(), "10.96.0.1:443/tcp");
    for bad in ["10.96.0.1", "10.96.0.1:0/tcp", "10.96.0.1:80/icmp", "x:80/tcp", "10.96.0.1:70000/tcp"] {
        assert!(bad.parse::<Target>().is_err(), "{bad}");
    }
}

#[test]
fn cluster_ip_from_a_pod_is_dnat_without_masquerade_and_hairpin_is_named() {
    let t = run(SINGLE_STACK, &config("node-a"), "pod:shop/web-6d8f7c9b54-2vqlm", "10.96.120.33:80/tcp");
    assert_eq!(t.source.role, SourceRole::Pod);
    assert!(t.source.detected_as_pod);
    assert_eq!(t.source.ip.to_string(), "10.244.1.5");
    assert!(matches!(&t.matched, Matched::Destination { kind: DestinationKind::ClusterIp, .. }));
    assert_eq!(t.verdict.kind, VerdictKind::Dnat);
    assert_eq!(endpoints(&t), ["10.244.1.5:8080", "10.244.2.6:8080"]);
    assert_eq!(chosen(&t), endpoints(&t));
    assert_eq!(reason_of(&t, "10.244.2.7:8080"), "not ready");
    let masquerade = t.masquerade.as_ref().unwrap();
    assert!(!masquerade.masqueraded);
    assert_eq!(masquerade.hairpin.unwrap().to_string(), "10.244.1.5:8080");
    assert!(masquerade.masqueraded_to(masquerade.hairpin.unwrap()));
    assert!(!masquerade.masqueraded_to(t.verdict.endpoints[1]));
}

#[test]
fn cluster_ip_from_the_node_is_masqueraded_and_without_a_detector_is_not() {
    let t = run(SINGLE_STACK, &config("node-a"), "node", "10.96.0.10:53/udp");
    assert_eq!(t.source.role, SourceRole::Node);
    assert_eq!(t.source.ip.to_string(), "192.168.49.11");
    assert_eq!(endpoints(&t), ["10.244.1.2:53", "10.244.2.2:53"]);
    assert!(t.masquerade.as_ref().unwrap().masqueraded);

    let bare = NodeConfig { node_name: "node-a".into(), ..Default::default() };
    let t = run(SINGLE_STACK, &bare, "node", "10.96.0.10:53/udp");
    let masquerade = t.masquerade.unwrap();
    assert!(!masquerade.masqueraded);
    assert!(masquerade.reason.contains("no local-traffic detector"), "{}", masquerade.reason);
}

#[test]
fn masquerade_all_masquerades_pods_too() {
    let config = NodeConfig { masquerade_all: true, ..config("node-a") };
    let t = run(SINGLE_STACK, &config, "10.244.1.5", "10.96.0.10:53/udp");
    let masquerade = t.masquerade.unwrap();
    assert!(masquerade.masqueraded);
    assert!(masquerade.reason.contains("masquerade-all"), "{}", masquerade.reason);
}

#[test]
fn node_port_and_load_balancer_with_the_cluster_policy_masquerade_outside_clients() {
    for to in ["192.168.49.11:30080/tcp", "203.0.113.10:80/tcp", "198.51.100.20:5432/tcp"] {
        let t = run(SINGLE_STACK, &config("node-a"), "203.0.113.99", to);
        assert_eq!(t.source.role, SourceRole::Other);
        assert_eq!(t.verdict.kind, VerdictKind::Dnat, "{to}");
        let masquerade = t.masquerade.unwrap();
        assert!(masquerade.masqueraded, "{to}");
        assert!(masquerade.reason.contains("externalTrafficPolicy Cluster"), "{to}");
    }
    let t = run(SINGLE_STACK, &config("node-a"), "203.0.113.99", "198.51.100.20:5432/tcp");
    assert!(matches!(t.matched, Matched::Destination { kind: DestinationKind::ExternalIp, .. }));
    let t = run(SINGLE_STACK, &config("node-a"), "203.0.113.99", "203.0.113.10:80/tcp");
    assert!(matches!(t.matched, Matched::Destination { kind: DestinationKind::LoadBalancerIp, .. }));
}

#[test]
fn no_endpoints_rejects_and_a_known_cluster_ip_on_another_port_rejects() {
    let t = run(SINGLE_STACK, &config("node-a"), "10.244.1.5", "10.96.50.50:80/tcp");
    assert_eq!(t.verdict.kind, VerdictKind::Reject);
    assert!(t.masquerade.is_none());

    let t = run(SINGLE_STACK, &config("node-a"), "10.244.1.5", "10.96.0.10:54/udp");
    assert_eq!(t.verdict.kind, VerdictKind::Reject);
    let Matched::ClusterIpOtherPort { services } = &t.matched else { panic!("{:?}", t.matched) };
    assert_eq!(services[0].name, "kube-dns");
    // TCP and UDP are independent: 53/sctp is not defined.
    let t = run(SINGLE_STACK, &config("node-a"), "10.244.1.5", "10.96.0.10:53/sctp");
    assert_eq!(t.verdict.kind, VerdictKind::Reject);
}

#[test]
fn service_cidr_drops_and_other_addresses_are_not_handled() {
    let t = run(SINGLE_STACK, &config("node-a"), "10.244.1.5", "10.96.99.99:80/tcp");
    assert_eq!(t.verdict.kind, VerdictKind::Drop);
    assert!(matches!(t.matched, Matched::ServiceCidr { .. }));

    let t = run(SINGLE_STACK, &config("node-a"), "10.244.1.5", "1.1.1.1:443/tcp");
    assert_eq!(t.verdict.kind, VerdictKind::NotHandled);
    assert_eq!(t.matched, Matched::Nothing);

    // A node address on a port no Service uses.
    let t = run(SINGLE_STACK, &config("node-a"), "203.0.113.99", "192.168.49.11:22/tcp");
    assert_eq!(t.verdict.kind, VerdictKind::NotHandled);
    assert!(t.verdict.reason.contains("NodePort address"), "{}", t.verdict.reason);

    // A single-stack IPv4 node programs no IPv6.
    let t = run(SINGLE_STACK, &config("node-a"), "fd00::1", "fd00:10:96::1:443/tcp");
    assert_eq!(t.verdict.kind, VerdictKind::NotHandled);
    assert!(t.verdict.reason.contains("no IPv6 rules"), "{}", t.verdict.reason);
}

#[test]
fn internal_traffic_policy_local_drops_without_a_local_endpoint() {
    let t = run(SEMANTICS, &config("node-a"), "10.244.1.5", "10.96.10.3:53/udp");
    assert_eq!(t.verdict.kind, VerdictKind::Drop);
    let policy = t.policy.as_ref().unwrap();
    assert_eq!((policy.name.as_str(), policy.value.as_str()), ("internalTrafficPolicy", "Local"));
    assert!(reason_of(&t, "10.244.2.30:5353").contains("Local uses this node's endpoints only"));

    let t = run(SEMANTICS, &config("node-b"), "10.244.2.5", "10.96.10.3:53/udp");
    assert_eq!(endpoints(&t), ["10.244.2.30:5353"]);
}

#[test]
fn external_traffic_policy_local_takes_the_branch_of_the_source() {
    // node-b has no local endpoint of demo/local-lb.
    let outside = run(SEMANTICS, &config("node-b"), "198.51.100.7", "192.168.49.12:30200/tcp");
    assert_eq!(outside.policy.as_ref().unwrap().branch, Some(Branch::Others));
    assert_eq!(outside.verdict.kind, VerdictKind::Drop);

    let pod = run(SEMANTICS, &config("node-b"), "10.244.2.99", "192.168.49.12:30200/tcp");
    assert_eq!(pod.policy.as_ref().unwrap().branch, Some(Branch::Pods));
    assert_eq!(endpoints(&pod), ["10.244.1.20:8080"]);
    assert!(!pod.masquerade.unwrap().masqueraded);

    let node = run(SEMANTICS, &config("node-b"), "node", "192.168.49.12:30200/tcp");
    assert_eq!(node.policy.as_ref().unwrap().branch, Some(Branch::Node));
    assert_eq!(endpoints(&node), ["10.244.1.20:8080"]);
    assert!(node.masquerade.unwrap().masqueraded);

    // node-a has one: outside clients go there with their address kept; the terminating local endpoint
    // is not used while a ready one exists.
    let outside = run(SEMANTICS, &config("node-a"), "198.51.100.7", "192.168.49.11:30200/tcp");
    assert_eq!(endpoints(&outside), ["10.244.1.20:8080"]);
    assert!(!outside.masquerade.as_ref().unwrap().masqueraded);
    assert!(reason_of(&outside, "10.244.1.21:8080").contains("terminating"), "{outside:?}");
}

#[test]
fn load_balancer_source_ranges_drop_other_sources_before_anything_else() {
    let t = run(SEMANTICS, &config("node-a"), "203.0.113.99", "203.0.113.50:80/tcp");
    assert_eq!(t.verdict.kind, VerdictKind::Drop);
    assert!(!t.firewall.as_ref().unwrap().allowed);
    assert!(t.candidates.is_empty());

    let t = run(SEMANTICS, &config("node-a"), "198.51.100.7", "203.0.113.50:80/tcp");
    assert!(t.firewall.as_ref().unwrap().allowed);
    assert_eq!(t.verdict.kind, VerdictKind::Dnat);
    // The ranges hold node addresses, so the LoadBalancer IP itself is allowed as a source.
    let t = run(SEMANTICS, &config("node-a"), "203.0.113.50", "203.0.113.50:80/tcp");
    assert!(t.firewall.unwrap().allowed);
    // Source ranges do not apply to the NodePort.
    let t = run(SEMANTICS, &config("node-a"), "203.0.113.99", "192.168.49.11:30200/tcp");
    assert!(t.firewall.is_none());
    assert_eq!(t.verdict.kind, VerdictKind::Dnat);
}

#[test]
fn topology_hints_and_terminating_fallback_are_explained() {
    let t = run(SEMANTICS, &config("node-a"), "10.244.1.5", "10.96.10.4:80/tcp");
    assert_eq!(endpoints(&t), ["10.244.1.40:8080"]);
    assert_eq!(t.policy.as_ref().unwrap().topology_hints.as_deref(), Some("zone zone-a"));
    assert!(reason_of(&t, "10.244.2.40:8080").contains("hinted for zone zone-b, not zone-a"));
    assert!(reason_of(&t, "10.244.1.40:8080").contains("hinted for zone zone-a"));

    let t = run(SEMANTICS, &config("node-a"), "10.244.1.5", "10.96.10.5:80/tcp");
    assert_eq!(endpoints(&t), ["10.244.1.50:8080"]);
    assert!(reason_of(&t, "10.244.1.50:8080").contains("serving while terminating"));
    assert!(reason_of(&t, "10.244.2.50:8080").contains("no longer serving"));
}

#[test]
fn session_affinity_is_reported() {
    let t = run(SEMANTICS, &config("node-a"), "10.244.1.5", "10.96.10.1:80/tcp");
    assert_eq!(t.verdict.affinity_timeout, Some(60));
    assert!(t.to_text().contains("sessionAffinity ClientIP"));
}

#[test]
fn pods_resolve_by_name_per_family_and_unknown_ones_are_errors() {
    let (snapshot, _) = Snapshot::from_text("dual", DUAL_STACK);
    let config = NodeConfig { node_name: "node-a".into(), ..Default::default() };
    let kube_dns = snapshot
        .endpoint_slices
        .iter()
        .flat_map(|s| s.endpoints.iter().flatten())
        .find_map(|e| e.target_ref.as_ref().and_then(|t| t.name.clone()).filter(|n| n.starts_with("coredns")))
        .unwrap();
    let source = Source::Pod { namespace: "kube-system".into(), name: kube_dns };
    let v4 = trace(&snapshot, &config, &source, "10.96.0.10:53/udp".parse().unwrap()).unwrap();
    let v6 = trace(&snapshot, &config, &source, "[fd00:10:96::a]:53/udp".parse().unwrap()).unwrap();
    assert_eq!(IpFamily::of(&v4.source.ip), IpFamily::V4);
    assert_eq!(IpFamily::of(&v6.source.ip), IpFamily::V6);
    assert_eq!(v6.family, IpFamily::V6);
    assert_eq!(v6.verdict.kind, VerdictKind::Dnat);

    let missing = Source::Pod { namespace: "kube-system".into(), name: "nope".into() };
    let error = trace(&snapshot, &config, &missing, "10.96.0.10:53/udp".parse().unwrap()).unwrap_err();
    assert!(matches!(error, TraceError::UnknownPod { .. }));
    let mismatch =
        trace(&snapshot, &config, &Source::Ip("10.0.0.1".parse().unwrap()), "[fd00::1]:1/tcp".parse().unwrap());
    assert!(matches!(mismatch, Err(TraceError::FamilyMismatch { .. })));
}

/// Whatever the destination, the trace's verdict is the model's action for the branch it names.
#[test]
fn every_destination_of_every_bundled_cluster_traces_to_its_model_action() {
    for text in [SEMANTICS, SINGLE_STACK, DUAL_STACK] {
        let (snapshot, _) = Snapshot::from_text("cluster", text);
        for node in ["node-a", "node-b"] {
            let config = NodeConfig {
                cluster_cidrs: vec!["10.244.0.0/16".parse().unwrap(), "fd00:10:244::/56".parse().unwrap()],
                ..config(node)
            };
            let model = compute(&snapshot, &config);
            for family in &model.families {
                for destination in &family.destinations {
                    let outside = if family.family == IpFamily::V4 { "198.51.100.7" } else { "2001:db8:ff::7" };
                    let target = Target { ip: destination.ip, port: destination.port, protocol: destination.protocol };
                    let t = trace(&snapshot, &config, &outside.parse().unwrap(), target).unwrap();
                    let action = match &destination.action {
                        Action::BySource { others, .. } => others.as_ref(),
                        action => action,
                    };
                    let expected = match action {
                        Action::Balance { .. } => VerdictKind::Dnat,
                        Action::Reject => VerdictKind::Reject,
                        Action::Drop => VerdictKind::Drop,
                        Action::BySource { .. } => unreachable!(),
                    };
                    let source: std::net::IpAddr = outside.parse().unwrap();
                    let firewalled =
                        destination.allowed_sources.as_ref().is_some_and(|a| !a.iter().any(|n| n.contains(&source)));
                    if firewalled {
                        assert_eq!(t.verdict.kind, VerdictKind::Drop, "{node} {target}");
                    } else {
                        assert_eq!(t.verdict.kind, expected, "{node} {target}");
                        assert_eq!(t.verdict.endpoints, action.backends(), "{node} {target}");
                    }
                    assert!(!t.to_text().is_empty());
                }
            }
        }
    }
}

#[test]
fn a_node_backed_endpoint_is_not_a_pod_and_is_traced_by_its_address() {
    let text = r#"
apiVersion: v1
kind: Service
metadata: {name: kubernetes, namespace: default}
spec: {clusterIP: 10.96.0.1, ports: [{name: https, port: 443, protocol: TCP}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: kubernetes, namespace: default, labels: {kubernetes.io/service-name: kubernetes}}
addressType: IPv4
endpoints: [{addresses: [192.168.49.11], conditions: {ready: true}, targetRef: {kind: Node, name: node-a}}]
ports: [{name: https, port: 6443, protocol: TCP}]
"#;
    let (snapshot, _) = Snapshot::from_text("cluster", text);
    let error = trace(
        &snapshot,
        &config("node-a"),
        &"pod:default/node-a".parse().unwrap(),
        "10.96.0.1:443/tcp".parse().unwrap(),
    )
    .unwrap_err();
    assert_eq!(
        error.to_string(),
        "default/node-a is not a pod: endpoints name it as a Node; trace from its address (192.168.49.11) instead"
    );
    assert!(matches!(error, TraceError::NotAPod { .. }));
    // By its address it is traced.
    let by_ip = run(text, &config("node-a"), "192.168.49.11", "10.96.0.1:443/tcp");
    assert_eq!(endpoints(&by_ip), ["192.168.49.11:6443"]);
}

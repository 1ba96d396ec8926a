//! The Service semantics (the rules of docs/semantics.md) that the core decides, one test
//! per rule (named `rule_NN_…`), on testdata/clusters/semantics.yaml and small inline objects. What the
//! rules mean for packets is proven again with real traffic in proxier-cli/tests/traffic.rs.

use std::net::IpAddr;

use proxier_core::{
    Action, Backend, Destination, DestinationKind, FamilyRules, IpFamily, Masquerade, NodeConfig, Protocol, RuleModel,
    Snapshot, Treatment, compute,
};

const SEMANTICS: &str = include_str!("../../../testdata/clusters/semantics.yaml");

fn config(node: &str) -> NodeConfig {
    NodeConfig { node_name: node.into(), cluster_cidrs: vec!["10.244.0.0/16".parse().unwrap()], ..Default::default() }
}

fn model_of(text: &str, config: &NodeConfig) -> RuleModel {
    let (snapshot, report) = Snapshot::from_text("semantics.yaml", text);
    assert!(report.diagnostics.is_empty(), "{:?}", report.diagnostics);
    compute(&snapshot, config)
}

fn semantics(node: &str) -> RuleModel {
    model_of(SEMANTICS, &config(node))
}

fn v4(model: &RuleModel) -> &FamilyRules {
    model.family(IpFamily::V4).unwrap()
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn destination<'a>(model: &'a RuleModel, addr: &str, port: u16) -> &'a Destination {
    v4(model)
        .destinations
        .iter()
        .find(|d| d.ip == ip(addr) && d.port == port)
        .unwrap_or_else(|| panic!("no destination {addr}:{port}"))
}

fn backends(action: &Action) -> Vec<String> {
    match action {
        Action::Balance { backends, .. } => backends.iter().map(Backend::to_string).collect(),
        other => panic!("expected Balance, got {other:?}"),
    }
}

#[test]
fn rule_02_a_service_proxy_name_label_hands_the_service_over_and_removing_it_programs_it() {
    let model = semantics("node-a");
    let other = model.services.iter().find(|s| s.service.name == "other-proxy").unwrap();
    assert!(matches!(other.treatment, Treatment::NotProxied { .. }));
    assert!(v4(&model).destinations.iter().all(|d| d.ip != ip("10.96.10.8")));

    let unlabelled = SEMANTICS.replace("  labels: {service.kubernetes.io/service-proxy-name: mesh}\n", "");
    let model = model_of(&unlabelled, &config("node-a"));
    assert_eq!(destination(&model, "10.96.10.8", 80).action, Action::Reject);

    let headless =
        SEMANTICS.replace("service.kubernetes.io/service-proxy-name: mesh", "service.kubernetes.io/headless: \"\"");
    let model = model_of(&headless, &config("node-a"));
    let other = model.services.iter().find(|s| s.service.name == "other-proxy").unwrap();
    assert_eq!(other.treatment, Treatment::Headless);
}

#[test]
fn rule_05_sloppy_input_is_tolerated() {
    let (snapshot, _) = Snapshot::from_text("semantics.yaml", SEMANTICS);
    let model = compute(&snapshot, &config("node-a"));
    assert_eq!(destination(&model, "10.96.10.9", 80).action, Action::Reject, "010.096.010.009 is 10.96.10.9");
    assert!(model.diagnostics.iter().any(|d| d.message.contains("leading zeros")));
    // " 198.51.100.0/24 " in loadBalancerSourceRanges is read despite its spaces.
    let allowed = destination(&model, "203.0.113.50", 80).allowed_sources.clone().unwrap();
    assert!(allowed.contains(&"198.51.100.0/24".parse().unwrap()), "{allowed:?}");
}

#[test]
fn rule_07_missing_conditions_default_as_the_api_says() {
    // ready nil ⇒ ready; serving nil ⇒ as ready (our documented choice; kube-proxy assumes true);
    // terminating nil ⇒ not terminating.
    let yaml = r#"
apiVersion: v1
kind: Service
metadata: {name: s, namespace: n}
spec: {clusterIP: 10.96.0.1, ports: [{port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: s-1, namespace: n, labels: {kubernetes.io/service-name: s}}
addressType: IPv4
endpoints:
- {addresses: [10.244.1.1]}
- {addresses: [10.244.1.2], conditions: {ready: false, terminating: true}}
ports: [{port: 80, name: ""}]
"#;
    let model = model_of(yaml, &config("node-a"));
    assert_eq!(backends(&destination(&model, "10.96.0.1", 80).action), ["10.244.1.1:80"]);
}

#[test]
fn rule_08_terminating_endpoints_serve_only_when_none_is_ready() {
    let model = semantics("node-a");
    assert_eq!(backends(&destination(&model, "10.96.10.5", 80).action), ["10.244.1.50:8080"]);
    // The Local set falls back on its own: local-lb's only local ready endpoint is 10.244.1.20, and
    // the terminating 10.244.1.21 is not used while it is ready.
    let Action::BySource { others, .. } = &destination(&model, "203.0.113.50", 80).action else { panic!() };
    assert_eq!(backends(others), ["10.244.1.20:8080"]);
}

#[test]
fn rule_09_a_duplicate_endpoint_keeps_its_non_terminating_copy() {
    let model = semantics("node-a");
    assert_eq!(backends(&destination(&model, "10.96.10.6", 80).action), ["10.244.1.60:8080"]);
}

#[test]
fn rule_10_locality_is_by_node_name() {
    let a = semantics("node-a");
    let b = semantics("node-b");
    assert_eq!(destination(&a, "10.96.10.3", 53).action, Action::Drop, "internal-local's endpoint is on node-b");
    assert_eq!(backends(&destination(&b, "10.96.10.3", 53).action), ["10.244.2.30:5353"]);
}

#[test]
fn rule_12_and_18_local_policies_without_local_endpoints_drop_external_clients() {
    let b = semantics("node-b");
    let Action::BySource { pods, node, others } = &destination(&b, "203.0.113.50", 80).action else { panic!() };
    assert_eq!(**others, Action::Drop);
    // Pods and the node itself are short-circuited to every endpoint (rule 19).
    assert_eq!(backends(pods), ["10.244.1.20:8080"]);
    assert_eq!(backends(node), ["10.244.1.20:8080"]);
}

#[test]
fn rule_18_and_19_external_local_keeps_client_addresses_and_short_circuits_pods_and_node() {
    let a = semantics("node-a");
    for (addr, port) in [("203.0.113.50", 80), ("192.168.49.11", 30200)] {
        let Action::BySource { pods, node, others } = &destination(&a, addr, port).action else { panic!() };
        let masquerade = |a: &Action| match a {
            Action::Balance { masquerade, .. } => *masquerade,
            other => panic!("{other:?}"),
        };
        assert_eq!(masquerade(others), Masquerade::Never, "client address preserved");
        assert_eq!(masquerade(pods), Masquerade::Never);
        assert_eq!(masquerade(node), Masquerade::Always);
    }
    // The ClusterIP of an eTP Local service is not affected.
    assert!(matches!(destination(&a, "10.96.10.2", 80).action, Action::Balance { .. }));
    // With the Cluster policy, external destinations are always masqueraded.
    let Action::Balance { masquerade, .. } = destination(&a, "192.168.49.11", 30700).action else { panic!() };
    assert_eq!(masquerade, Masquerade::Always);
}

#[test]
fn rule_20_health_check_counts_local_ready_endpoints_only() {
    let a = semantics("node-a");
    let b = semantics("node-b");
    let check = |m: &RuleModel| v4(m).health_checks.clone();
    assert_eq!(check(&a).len(), 1);
    assert_eq!(check(&a)[0].node_port, 32000);
    assert_eq!(check(&a)[0].local_endpoints, 1, "the terminating endpoint does not count");
    assert_eq!(check(&a)[0].status(), 200);
    assert_eq!(check(&b)[0].local_endpoints, 0);
    assert_eq!(check(&b)[0].status(), 503);
    // Switching the policy to Cluster removes the health check.
    let cluster = SEMANTICS.replace("externalTrafficPolicy: Local", "externalTrafficPolicy: Cluster");
    assert!(v4(&model_of(&cluster, &config("node-a"))).health_checks.is_empty());
}

#[test]
fn rule_21_nodeports_only_on_nodeport_addresses() {
    let a = semantics("node-a");
    assert_eq!(v4(&a).node_port_ips, vec![ip("192.168.49.11")], "primary address by default");
    let config = NodeConfig { nodeport_addresses: vec!["10.0.0.0/8".parse().unwrap()], ..config("node-a") };
    let model = model_of(SEMANTICS, &config);
    assert!(v4(&model).node_port_ips.is_empty());
    assert!(v4(&model).destinations.iter().all(|d| d.kind != DestinationKind::NodePort));
}

#[test]
fn rule_23_source_ranges_apply_to_load_balancer_ips_only_and_let_the_vip_in() {
    let a = semantics("node-a");
    let allowed = destination(&a, "203.0.113.50", 80).allowed_sources.clone().unwrap();
    let expected: Vec<ipnet::IpNet> =
        ["192.168.49.0/24", "198.51.100.0/24", "203.0.113.50/32"].iter().map(|n| n.parse().unwrap()).collect();
    assert_eq!(allowed, expected, "a range holds the node IP, so the VIP itself is allowed");
    assert_eq!(destination(&a, "192.168.49.11", 30200).allowed_sources, None, "NodePorts are not filtered");
    assert_eq!(destination(&a, "10.96.10.2", 80).allowed_sources, None);
}

#[test]
fn rule_24_proxy_mode_ingress_is_not_intercepted() {
    let a = semantics("node-a");
    assert!(v4(&a).destinations.iter().all(|d| d.ip != ip("203.0.113.70")));
}

#[test]
fn rule_26_affinity_applies_to_every_destination_of_the_port() {
    let a = semantics("node-a");
    for (addr, port) in [("10.96.10.1", 80), ("192.168.49.11", 30100)] {
        let Action::Balance { affinity, .. } = destination(&a, addr, port).action else { panic!() };
        assert_eq!(affinity, Some(60));
    }
    let off = SEMANTICS.replace("sessionAffinity: ClientIP", "sessionAffinity: None");
    let Action::Balance { affinity, .. } = destination(&model_of(&off, &config("node-a")), "10.96.10.1", 80).action
    else {
        panic!()
    };
    assert_eq!(affinity, None);
    let default = SEMANTICS.replace("  sessionAffinityConfig: {clientIP: {timeoutSeconds: 60}}\n", "");
    let Action::Balance { affinity, .. } = destination(&model_of(&default, &config("node-a")), "10.96.10.1", 80).action
    else {
        panic!()
    };
    assert_eq!(affinity, Some(10800));
}

#[test]
fn rule_29_and_30_zone_hints_narrow_the_cluster_set_only_when_they_cover_this_zone() {
    assert_eq!(backends(&destination(&semantics("node-a"), "10.96.10.4", 80).action), ["10.244.1.40:8080"]);
    assert_eq!(
        backends(&destination(&semantics("node-b"), "10.96.10.4", 80).action),
        ["10.244.2.40:8080", "10.244.2.41:8080"]
    );
    // A node in a zone no endpoint is hinted for gets every endpoint, never none.
    let elsewhere = SEMANTICS.replace("topology.kubernetes.io/zone: zone-a}", "topology.kubernetes.io/zone: zone-c}");
    assert_eq!(backends(&destination(&model_of(&elsewhere, &config("node-a")), "10.96.10.4", 80).action).len(), 3);
    // One ready endpoint without hints disables them all.
    let partial = SEMANTICS.replace(
        ", hints: {forZones: [{name: zone-b}]}}\n- {addresses: [10.244.2.41]",
        "}\n- {addresses: [10.244.2.41]",
    );
    assert_eq!(backends(&destination(&model_of(&partial, &config("node-a")), "10.96.10.4", 80).action).len(), 3);
}

#[test]
fn rule_29_node_hints_come_before_zone_hints() {
    let yaml = r#"
apiVersion: v1
kind: Node
metadata: {name: node-a, labels: {topology.kubernetes.io/zone: zone-a}}
---
apiVersion: v1
kind: Service
metadata: {name: s, namespace: n}
spec: {clusterIP: 10.96.0.1, trafficDistribution: PreferSameNode, ports: [{port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: s-1, namespace: n, labels: {kubernetes.io/service-name: s}}
addressType: IPv4
endpoints:
- {addresses: [10.244.1.1], nodeName: node-a, hints: {forNodes: [{name: node-a}], forZones: [{name: zone-a}]}}
- {addresses: [10.244.1.2], nodeName: node-x, hints: {forNodes: [{name: node-x}], forZones: [{name: zone-a}]}}
ports: [{port: 80, name: ""}]
"#;
    assert_eq!(backends(&destination(&model_of(yaml, &config("node-a")), "10.96.0.1", 80).action), ["10.244.1.1:80"]);
}

#[test]
fn rule_17_internal_policy_applies_to_the_cluster_ip_only() {
    let b = semantics("node-b");
    let Action::Balance { masquerade, .. } = destination(&b, "10.96.10.3", 53).action else { panic!() };
    assert_eq!(masquerade, Masquerade::OutsidePodNetwork, "iTP never changes masquerading");
    assert_eq!(destination(&b, "10.96.10.3", 53).protocol, Protocol::Udp);
}

#[test]
fn rule_13_service_cidrs_are_carried_per_family() {
    let config = NodeConfig {
        service_cidrs: vec!["10.96.0.0/16".parse().unwrap(), "fd00:10:96::/112".parse().unwrap()],
        ..config("node-a")
    };
    let model = model_of(SEMANTICS, &config);
    assert_eq!(v4(&model).service_cidrs, vec!["10.96.0.0/16".parse().unwrap()]);
    assert!(v4(&model).cluster_ips.contains(&ip("10.96.10.1")));
}

#[test]
fn rule_06_slices_are_merged_and_unusable_ports_and_endpoints_skipped() {
    let yaml = r#"
apiVersion: v1
kind: Service
metadata: {name: s, namespace: n}
spec: {clusterIP: 10.96.0.1, ports: [{name: http, port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: s-1, namespace: n, labels: {kubernetes.io/service-name: s}}
addressType: IPv4
endpoints:
- {addresses: [10.244.1.1, 10.244.1.99]}
- {addresses: []}
ports: [{name: http, port: 8080}, {name: http, port: 0}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: s-2, namespace: n, labels: {kubernetes.io/service-name: s}}
addressType: IPv4
endpoints: [{addresses: [10.244.2.1]}]
ports: [{name: http, port: 8080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: unrelated, namespace: n, labels: {kubernetes.io/service-name: other}}
addressType: IPv4
endpoints: [{addresses: [10.244.3.1]}]
ports: [{name: http, port: 8080}]
"#;
    let (snapshot, _) = Snapshot::from_text("inline", yaml);
    let model = compute(&snapshot, &config("node-a"));
    // Both slices merged; only the first address; the empty endpoint and port 0 skipped; the slice
    // of another Service ignored.
    assert_eq!(backends(&destination(&model, "10.96.0.1", 80).action), ["10.244.1.1:8080", "10.244.2.1:8080"]);
    assert!(model.diagnostics.iter().any(|d| d.object.name == "s-1" && d.message.contains("port 0")));
}

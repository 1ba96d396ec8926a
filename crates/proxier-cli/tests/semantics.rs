//! Every packet-level Service semantics rule (docs/semantics.md), proven with real traffic on
//! the test bed through rules applied by the real `proxier` binary. Tests are named `rule_NN_…` after
//! the rule they prove; docs/semantics.md maps every rule to its tests.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use proxier_testkit::scenario::{Endpoint, Scenario, at, ready, service, slice};
use proxier_testkit::{
    Outcome, Proto, assert_dropped, assert_reaches, assert_refused, assert_source_seen, assert_sticky, netns_available,
    probe,
};

/// The binary under test.
const PROXIER: &str = env!("CARGO_BIN_EXE_proxier");

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn vip(text: &str, port: u16) -> SocketAddr {
    at(ip(text), port)
}

/// Service `demo/web` on 10.96.0.20 (TCP 80, NodePort 30080) with `spec` lines, over `endpoints`.
fn web(scenario: &Scenario, spec: &[&str], endpoints: &[Endpoint<'_>], status: &str) -> String {
    let _ = scenario;
    let mut objects = service("demo", "web", "10.96.0.20", &[("http", "TCP", 80, Some(30080))], spec);
    if !status.is_empty() {
        objects = objects.replacen("---\n", &format!("{status}\n---\n"), 1);
    }
    objects + &slice("demo", "web", "IPv4", endpoints, &[("http", "TCP", 8080)])
}

const LB_STATUS: &str = "status:\n  loadBalancer:\n    ingress:\n    - ip: 203.0.113.50\n      ipMode: VIP";

fn is_local_error(outcome: &Outcome) -> bool {
    matches!(outcome, Outcome::Error(e) if e.contains("Operation not permitted"))
}

#[test]
fn rule_13_unknown_ports_are_refused_and_unallocated_service_addresses_dropped() {
    if !netns_available("rule_13") {
        return;
    }
    let (mut scenario, _servers) = Scenario::web_pods(PROXIER);
    let objects = web(&scenario, &[], &[ready(scenario.pod("web-a"))], "");
    scenario.flags(&["--cluster-cidr", "10.244.0.0/16", "--service-cidr", "10.96.0.0/16"]);
    scenario.program(&objects);
    assert_refused(scenario.pod("client-b"), Proto::Tcp, vip("10.96.0.20", 81));
    assert_refused(scenario.pod("client-b"), Proto::Udp, vip("10.96.0.20", 81));
    assert_dropped(scenario.pod("client-b"), Proto::Tcp, vip("10.96.99.99", 80));
    // From the node itself the drop is visible at once: the output hook refuses to send the
    // datagram (EPERM); without --service-cidr it leaves and is never answered.
    let from_node = |scenario: &Scenario| {
        probe(scenario.bed.node(1), Proto::Udp, vip("10.96.99.99", 53), Duration::from_millis(400))
    };
    assert!(is_local_error(&from_node(&scenario)));
    scenario.flags(&["--cluster-cidr", "10.244.0.0/16"]);
    scenario.program(&objects);
    assert_eq!(from_node(&scenario), Outcome::Timeout);
}

#[test]
fn rule_17_internal_traffic_policy_local_uses_local_endpoints_only() {
    if !netns_available("rule_17") {
        return;
    }
    let (scenario, _servers) = Scenario::web_pods(PROXIER);
    scenario.program(&web(
        &scenario,
        &["  type: NodePort", "  internalTrafficPolicy: Local"],
        &[ready(scenario.pod("web-b"))],
        "",
    ));
    let cluster_ip = vip("10.96.0.20", 80);
    assert_reaches(scenario.pod("client-b"), Proto::Tcp, cluster_ip, 10, &["web-b"]);
    // node-a has no local endpoint: dropped, not rejected (rule 12) — also for outside clients.
    assert_dropped(scenario.pod("client-a"), Proto::Tcp, cluster_ip);
    assert_dropped(scenario.bed.client(), Proto::Tcp, cluster_ip);
    // iTP does not apply to NodePorts.
    assert_reaches(scenario.bed.client(), Proto::Tcp, at(scenario.bed.node(1).ipv4(), 30080), 5, &["web-b"]);
}

#[test]
fn rule_18_and_19_external_traffic_policy_local() {
    if !netns_available("rule_18_and_19") {
        return;
    }
    let (scenario, _servers) = Scenario::web_pods(PROXIER);
    let spec = ["  type: LoadBalancer", "  externalTrafficPolicy: Local", "  healthCheckNodePort: 32000"];
    scenario.program(&web(&scenario, &spec, &[ready(scenario.pod("web-a"))], LB_STATUS));
    let client = scenario.bed.client();
    let client_ip: IpAddr = proxier_testkit::CLIENT_IPV4.into();
    // Node with a local endpoint: served locally, the client's address preserved.
    assert_source_seen(client, Proto::Tcp, at(scenario.bed.node(1).ipv4(), 30080), client_ip);
    assert_source_seen(client, Proto::Tcp, vip("203.0.113.50", 80), client_ip);
    // Node without one: external clients are dropped (rule 12).
    assert_dropped(client, Proto::Tcp, at(scenario.bed.node(2).ipv4(), 30080));
    // Short-circuits (rule 19): pods reach every endpoint unmasqueraded, even through a node
    // without a local endpoint; the node itself is masqueraded.
    let client_b = scenario.pod("client-b");
    assert_source_seen(client_b, Proto::Tcp, vip("203.0.113.50", 80), client_b.ipv4().into());
    assert_source_seen(client_b, Proto::Tcp, at(scenario.bed.node(2).ipv4(), 30080), client_b.ipv4().into());
    assert_source_seen(
        scenario.bed.node(2),
        Proto::Tcp,
        at(scenario.bed.node(2).ipv4(), 30080),
        scenario.bed.node(2).ipv4().into(),
    );
    // The ClusterIP keeps the Cluster policy.
    assert_reaches(scenario.pod("client-b"), Proto::Tcp, vip("10.96.0.20", 80), 5, &["web-a"]);
}

#[test]
fn rule_18_external_traffic_policy_cluster_masquerades_external_ips() {
    if !netns_available("rule_18_cluster") {
        return;
    }
    let (scenario, _servers) = Scenario::web_pods(PROXIER);
    // rule 25: externalIPs behave like LoadBalancer IPs.
    let spec = ["  externalIPs: [198.51.100.20]"];
    scenario.program(&web(&scenario, &spec, &[ready(scenario.pod("web-b"))], ""));
    assert_source_seen(scenario.bed.client(), Proto::Tcp, vip("198.51.100.20", 80), scenario.bed.node(1).ipv4().into());
    // Even a pod's connection to an external destination is masqueraded under the Cluster policy.
    assert_source_seen(
        scenario.pod("client-a"),
        Proto::Tcp,
        vip("198.51.100.20", 80),
        scenario.bed.node(1).ipv4().into(),
    );
}

#[test]
fn rule_08_terminating_endpoints_serve_when_none_is_ready() {
    if !netns_available("rule_08") {
        return;
    }
    let (scenario, _servers) = Scenario::web_pods(PROXIER);
    let terminating = |pod, serving: bool| Endpoint {
        pod,
        conditions: if serving {
            "{ready: false, serving: true, terminating: true}"
        } else {
            "{ready: false, serving: false, terminating: true}"
        },
        extra: "",
    };
    scenario.program(&web(
        &scenario,
        &[],
        &[terminating(scenario.pod("web-a"), true), terminating(scenario.pod("web-b"), false)],
        "",
    ));
    assert_reaches(scenario.pod("client-b"), Proto::Tcp, vip("10.96.0.20", 80), 10, &["web-a"]);
    // A ready endpoint takes over from the terminating one.
    scenario.program(&web(
        &scenario,
        &[],
        &[terminating(scenario.pod("web-a"), true), ready(scenario.pod("web-b"))],
        "",
    ));
    assert_reaches(scenario.pod("client-b"), Proto::Tcp, vip("10.96.0.20", 80), 10, &["web-b"]);
    // None serving: refused.
    scenario.program(&web(&scenario, &[], &[terminating(scenario.pod("web-a"), false)], ""));
    assert_refused(scenario.pod("client-b"), Proto::Tcp, vip("10.96.0.20", 80));
}

#[test]
fn rule_29_and_30_zone_hints_keep_traffic_in_the_zone_when_they_cover_it() {
    if !netns_available("rule_29") {
        return;
    }
    let (scenario, _servers) = Scenario::web_pods(PROXIER);
    let hinted = |pod, zone| Endpoint {
        pod,
        conditions: "{ready: true}",
        extra: if zone == "zone-a" {
            "hints: {forZones: [{name: zone-a}]}"
        } else {
            "hints: {forZones: [{name: zone-b}]}"
        },
    };
    let spec = ["  trafficDistribution: PreferClose"];
    scenario.program(&web(
        &scenario,
        &spec,
        &[hinted(scenario.pod("web-a"), "zone-a"), hinted(scenario.pod("web-b"), "zone-b")],
        "",
    ));
    assert_reaches(scenario.pod("client-a"), Proto::Tcp, vip("10.96.0.20", 80), 15, &["web-a"]);
    assert_reaches(scenario.pod("client-b"), Proto::Tcp, vip("10.96.0.20", 80), 15, &["web-b"]);
    // Hints for zone-b only: node-a's zone has none, so node-a ignores hints rather than drop.
    scenario.program(&web(
        &scenario,
        &spec,
        &[hinted(scenario.pod("web-a"), "zone-b"), hinted(scenario.pod("web-b"), "zone-b")],
        "",
    ));
    assert_reaches(scenario.pod("client-a"), Proto::Tcp, vip("10.96.0.20", 80), 30, &["web-a", "web-b"]);
}

#[test]
fn rule_23_source_ranges_filter_load_balancer_ips_only() {
    if !netns_available("rule_23") {
        return;
    }
    let (scenario, _servers) = Scenario::web_pods(PROXIER);
    let lb = vip("203.0.113.50", 80);
    let with_ranges = |ranges: &str| {
        let range_line = format!("  loadBalancerSourceRanges: [{ranges}]");
        web(&scenario, &["  type: LoadBalancer", &range_line], &[ready(scenario.pod("web-a"))], LB_STATUS)
    };
    scenario.program(&with_ranges("192.168.49.100/32"));
    assert_reaches(scenario.bed.client(), Proto::Tcp, lb, 5, &["web-a"]);
    scenario.program(&with_ranges("198.51.100.0/24"));
    assert_dropped(scenario.bed.client(), Proto::Tcp, lb);
    // Pods and the node are filtered too; NodePorts and the ClusterIP are not.
    assert_dropped(scenario.pod("client-a"), Proto::Tcp, lb);
    let node_a = scenario.bed.node(1);
    assert_dropped(node_a, Proto::Tcp, lb);
    assert_reaches(scenario.bed.client(), Proto::Tcp, at(node_a.ipv4(), 30080), 5, &["web-a"]);
    assert_reaches(scenario.pod("client-a"), Proto::Tcp, vip("10.96.0.20", 80), 5, &["web-a"]);
    // A range holding the node's address lets the node in.
    scenario.program(&with_ranges("192.168.49.0/24"));
    assert_reaches(node_a, Proto::Tcp, lb, 5, &["web-a"]);
}

#[test]
fn rule_24_proxy_mode_load_balancer_ips_are_not_intercepted() {
    if !netns_available("rule_24") {
        return;
    }
    let (scenario, _servers) = Scenario::web_pods(PROXIER);
    let status = LB_STATUS.replace("ipMode: VIP", "ipMode: Proxy");
    scenario.program(&web(&scenario, &["  type: LoadBalancer"], &[ready(scenario.pod("web-a"))], &status));
    assert_dropped(scenario.bed.client(), Proto::Tcp, vip("203.0.113.50", 80));
    scenario.program(&web(&scenario, &["  type: LoadBalancer"], &[ready(scenario.pod("web-a"))], LB_STATUS));
    assert_reaches(scenario.bed.client(), Proto::Tcp, vip("203.0.113.50", 80), 5, &["web-a"]);
}

#[test]
fn rule_21_node_ports_only_on_nodeport_addresses() {
    if !netns_available("rule_21") {
        return;
    }
    let (mut scenario, _servers) = Scenario::web_pods(PROXIER);
    let objects = web(&scenario, &["  type: NodePort"], &[ready(scenario.pod("web-a"))], "");
    scenario.flags(&["--cluster-cidr", "10.244.0.0/16", "--nodeport-addresses", "fd00:49::/64"]);
    scenario.program(&objects);
    let node_ip = scenario.bed.node(1).ipv4();
    // Not intercepted on IPv4: nothing listens there, so the node itself resets the connection.
    assert_refused(scenario.bed.client(), Proto::Tcp, at(node_ip, 30080));
    scenario.flags(&["--cluster-cidr", "10.244.0.0/16", "--nodeport-addresses", "192.168.49.0/24"]);
    scenario.program(&objects);
    assert_reaches(scenario.bed.client(), Proto::Tcp, at(node_ip, 30080), 5, &["web-a"]);
    scenario.flags(&["--cluster-cidr", "10.244.0.0/16", "--nodeport-addresses", "primary"]);
    scenario.program(&objects);
    assert_reaches(scenario.bed.client(), Proto::Tcp, at(node_ip, 30080), 5, &["web-a"]);
    // Never on loopback.
    assert_refused(scenario.bed.node(1), Proto::Tcp, vip("127.0.0.1", 30080));
}

#[test]
fn rule_15_masquerade_all_and_every_local_traffic_detector() {
    if !netns_available("rule_15") {
        return;
    }
    let (mut scenario, _servers) = Scenario::web_pods(PROXIER);
    let objects = web(&scenario, &[], &[ready(scenario.pod("web-b"))], "");
    let client_a = scenario.pod("client-a").ipv4();
    let node_a = scenario.bed.node(1).ipv4();
    let cases: [(&[&str], IpAddr); 5] = [
        (&["--cluster-cidr", "10.244.0.0/16"], client_a.into()),
        (&["--cluster-cidr", "10.244.0.0/16", "--masquerade-all"], node_a.into()),
        (&["--detect-local-mode", "NodeCIDR"], client_a.into()),
        (&["--detect-local-mode", "InterfaceNamePrefix", "--pod-interface-name-prefix", "veth"], client_a.into()),
        (&["--detect-local-mode", "BridgeInterface", "--pod-bridge-interface", "veth3"], client_a.into()),
    ];
    for (flags, pod_source) in cases {
        scenario.flags(flags);
        scenario.program(&objects);
        assert_source_seen(scenario.pod("client-a"), Proto::Tcp, vip("10.96.0.20", 80), pod_source);
        // The outside client is not a pod for any detector: masqueraded by node-a.
        assert_source_seen(scenario.bed.client(), Proto::Tcp, vip("10.96.0.20", 80), node_a.into());
    }
}

/// The elements of proxier's affinity sets on `node`.
fn affinity_entries(scenario: &Scenario, node: usize) -> String {
    let listing = scenario.bed.node(node).netns().exec("nft", ["list", "table", "ip", "proxier"]).unwrap();
    String::from_utf8(listing.stdout).unwrap().lines().filter(|l| l.contains("expires")).collect::<Vec<_>>().join("\n")
}

#[test]
fn rule_26_session_affinity_sticks_expires_and_switches() {
    if !netns_available("rule_26") {
        return;
    }
    let (scenario, _servers) = Scenario::web_pods(PROXIER);
    let endpoints = [ready(scenario.pod("web-a")), ready(scenario.pod("web-b"))];
    let sticky =
        ["  type: NodePort", "  sessionAffinity: ClientIP", "  sessionAffinityConfig: {clientIP: {timeoutSeconds: 2}}"];
    scenario.program(&web(&scenario, &sticky, &endpoints, ""));
    let node_port = at(scenario.bed.node(1).ipv4(), 30080);
    assert_sticky(scenario.bed.client(), Proto::Tcp, node_port, 15);
    assert_sticky(scenario.pod("client-b"), Proto::Tcp, vip("10.96.0.20", 80), 15);
    assert!(affinity_entries(&scenario, 1).contains("192.168.49.100"), "{}", affinity_entries(&scenario, 1));
    // After the timeout with no new connection, the client is forgotten.
    std::thread::sleep(Duration::from_millis(2500));
    assert!(!affinity_entries(&scenario, 1).contains("192.168.49.100"));

    // Off: balanced again; on again: sticky again.
    scenario.program(&web(&scenario, &["  type: NodePort"], &endpoints, ""));
    assert_reaches(scenario.bed.client(), Proto::Tcp, node_port, 30, &["web-a", "web-b"]);
    scenario.program(&web(&scenario, &sticky, &endpoints, ""));
    assert_sticky(scenario.bed.client(), Proto::Tcp, node_port, 15);
}

#[test]
fn rule_03_tcp_and_udp_on_one_port_are_independent_and_target_ports_come_from_the_slice() {
    if !netns_available("rule_03") {
        return;
    }
    let (scenario, _servers) = Scenario::web_pods(PROXIER);
    // One port number, two protocols, each with its own endpoints; the Service's targetPort is
    // deliberately wrong: the slice's port of the same name decides.
    let mut objects =
        service("demo", "dns", "10.96.0.53", &[("dns-tcp", "TCP", 53, None), ("dns", "UDP", 53, None)], &[]);
    objects = objects.replace("    port: 53\n", "    port: 53\n    targetPort: 9999\n");
    objects += &slice("demo", "dns", "IPv4", &[ready(scenario.pod("web-a"))], &[("dns-tcp", "TCP", 8080)]);
    objects += &slice("demo", "dns", "IPv4", &[ready(scenario.pod("web-b"))], &[("dns", "UDP", 5353)])
        .replace("name: dns-ipv4", "name: dns-udp");
    scenario.program(&objects);
    assert_reaches(scenario.pod("client-a"), Proto::Tcp, vip("10.96.0.53", 53), 10, &["web-a"]);
    assert_reaches(scenario.pod("client-a"), Proto::Udp, vip("10.96.0.53", 53), 10, &["web-b"]);
}

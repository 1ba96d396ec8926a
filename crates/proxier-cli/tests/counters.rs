//! The kernel's per-Service counters, proven exact with real traffic on the test bed: `proxier stats`
//! after a known number of connections of every kind, and counts that survive a re-apply and a
//! changed snapshot; the counters proxier reads over netlink are what `nft -j list` shows.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::Duration;

use proxier_testkit::scenario::{Scenario, at, ready, service, slice};
use proxier_testkit::{Proto, assert_dropped, assert_reaches, assert_refused, counters, netns_available, reached};
use serde_json::{Value, json};

/// The binary under test.
const PROXIER: &str = env!("CARGO_BIN_EXE_proxier");

fn vip(text: &str, port: u16) -> SocketAddr {
    at(text.parse::<IpAddr>().unwrap(), port)
}

const LOCAL_LB: &str = "203.0.113.50";
const FIREWALLED_LB: &str = "203.0.113.51";

fn lb_status(ip: &str) -> String {
    format!("status:\n  loadBalancer:\n    ingress:\n    - ip: {ip}\n      ipMode: VIP\n---\n")
}

/// Every kind of destination the counters tell apart.
fn objects(scenario: &Scenario, web_pods: &[&str]) -> String {
    let web: Vec<_> = web_pods.iter().map(|p| ready(scenario.pod(p))).collect();
    let web_a = [ready(scenario.pod("web-a"))];
    let web_b = [ready(scenario.pod("web-b"))];
    let http = [("http", "TCP", 8080)];
    // shop/web: TCP and UDP, ClusterIP and NodePort.
    service("shop", "web", "10.96.0.10", &[("http", "TCP", 80, Some(30080)), ("dns", "UDP", 53, Some(30053))], &[
        "  type: NodePort",
    ]) + &slice("shop", "web", "IPv4", &web, &[("http", "TCP", 8080), ("dns", "UDP", 5353)])
        // shop/empty: no endpoints, rejected.
        + &service("shop", "empty", "10.96.0.11", &[("http", "TCP", 80, None), ("", "UDP", 53, None)], &[])
        // demo/itp: internalTrafficPolicy Local with its only endpoint on node-b: dropped on node-a.
        + &service("demo", "itp", "10.96.0.12", &[("http", "TCP", 80, None)], &["  internalTrafficPolicy: Local"])
        + &slice("demo", "itp", "IPv4", &web_b, &http)
        // demo/local: externalTrafficPolicy Local with its only endpoint on node-a.
        + &service("demo", "local", "10.96.0.13", &[("http", "TCP", 80, Some(30090))], &[
            "  type: LoadBalancer",
            "  externalTrafficPolicy: Local",
            "  healthCheckNodePort: 32000",
        ])
        .replacen("---\n", &lb_status(LOCAL_LB), 1)
        + &slice("demo", "local", "IPv4", &web_a, &http)
        // demo/fw: loadBalancerSourceRanges that exclude the outside client.
        + &service("demo", "fw", "10.96.0.14", &[("http", "TCP", 80, Some(30091))], &[
            "  type: LoadBalancer",
            "  loadBalancerSourceRanges: [198.51.100.0/24]",
        ])
        .replacen("---\n", &lb_status(FIREWALLED_LB), 1)
        + &slice("demo", "fw", "IPv4", &web_a, &http)
}

fn scenario() -> (Scenario, Vec<proxier_testkit::Server>) {
    let (mut scenario, servers) = Scenario::web_pods(PROXIER);
    scenario.flags(&["--cluster-cidr", "10.244.0.0/16", "--service-cidr", "10.96.0.0/16"]);
    (scenario, servers)
}

/// `proxier stats -o json` on node `node`.
fn stats(scenario: &Scenario, node: usize) -> Value {
    let output = scenario.proxier(node, &["stats".into(), "-o".into(), "json".into()]);
    assert!(output.status.success(), "proxier stats: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("stats JSON")
}

/// The counts of one Service destination: `[connections, rejected, dropped]`, or `None` without it.
fn counts(stats: &Value, name: &str, port: &str, protocol: &str, via: &str) -> Option<[u64; 3]> {
    let services = stats["services"].as_array().expect("a services list");
    let found = services
        .iter()
        .find(|s| s["name"] == name && s["port"] == port && s["protocol"] == protocol && s["via"] == via)?;
    Some(["connections", "rejected", "dropped"].map(|k| found[k].as_u64().expect("a count")))
}

/// Sends `datagrams` datagrams over one UDP socket (one flow) from `pod`, each answered.
fn one_udp_flow(scenario: &Scenario, pod: &str, target: SocketAddr, datagrams: usize) {
    scenario.pod(pod).netns().run(move || {
        let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
        socket.connect(target).unwrap();
        socket.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut buf = [0u8; 512];
        for _ in 0..datagrams {
            socket.send(b"probe\n").unwrap();
            socket.recv(&mut buf).expect("an answer");
        }
    });
}

#[test]
fn every_counter_is_exact_with_real_traffic() {
    if !netns_available("every_counter_is_exact_with_real_traffic") {
        return;
    }
    let (scenario, _servers) = scenario();
    scenario.program(&objects(&scenario, &["web-a", "web-b"]));
    let (client, client_a) = (scenario.bed.client(), scenario.pod("client-a"));
    let (node_a, node_b) = (scenario.bed.node(1).ipv4(), scenario.bed.node(2).ipv4());

    // Nothing counted yet: every destination is listed, at zero.
    let before = stats(&scenario, 1);
    assert_eq!(counts(&before, "web", "http", "tcp", "cluster_ip"), Some([0, 0, 0]));
    assert_eq!(counts(&before, "local", "http", "tcp", "load_balancer"), Some([0, 0, 0]));

    // Connections sent to an endpoint, through node-a: every probe is a new connection (or flow).
    reached(client_a, Proto::Tcp, vip("10.96.0.10", 80), 3);
    reached(client_a, Proto::Udp, vip("10.96.0.10", 53), 2);
    // One UDP flow of three datagrams is one connection.
    one_udp_flow(&scenario, "client-a", vip("10.96.0.10", 53), 3);
    reached(client, Proto::Tcp, at(node_a, 30080), 4);
    reached(client, Proto::Udp, at(node_a, 30053), 1);
    // externalTrafficPolicy Local, served by node-a's local endpoint: sent, through both ways in.
    assert_reaches(client, Proto::Tcp, at(node_a, 30090), 2, &["web-a"]);
    assert_reaches(client, Proto::Tcp, vip(LOCAL_LB, 80), 1, &["web-a"]);
    // ... and dropped by node-b, which has no local endpoint.
    assert_dropped(client, Proto::Tcp, at(node_b, 30090));
    // Rejected: no endpoints at all.
    assert_refused(client_a, Proto::Tcp, vip("10.96.0.11", 80));
    assert_refused(client_a, Proto::Tcp, vip("10.96.0.11", 80));
    assert_refused(client_a, Proto::Udp, vip("10.96.0.11", 53));
    // Dropped: internalTrafficPolicy Local without a local endpoint, and loadBalancerSourceRanges.
    assert_dropped(client_a, Proto::Tcp, vip("10.96.0.12", 80));
    assert_dropped(client, Proto::Tcp, vip(FIREWALLED_LB, 80));
    assert_dropped(client, Proto::Tcp, vip(FIREWALLED_LB, 80));
    // A port no Service defines, and an address no Service holds.
    assert_refused(client_a, Proto::Tcp, vip("10.96.0.10", 81));
    assert_dropped(client_a, Proto::Tcp, vip("10.96.99.99", 80));

    let node_a_stats = stats(&scenario, 1);
    let expected = [
        ("web", "http", "tcp", "cluster_ip", [3, 0, 0]),
        ("web", "dns", "udp", "cluster_ip", [3, 0, 0]),
        ("web", "http", "tcp", "node_port", [4, 0, 0]),
        ("web", "dns", "udp", "node_port", [1, 0, 0]),
        ("empty", "http", "tcp", "cluster_ip", [0, 2, 0]),
        ("empty", "", "udp", "cluster_ip", [0, 1, 0]),
        ("itp", "http", "tcp", "cluster_ip", [0, 0, 1]),
        ("local", "http", "tcp", "node_port", [2, 0, 0]),
        ("local", "http", "tcp", "load_balancer", [1, 0, 0]),
        ("local", "http", "tcp", "cluster_ip", [0, 0, 0]),
        ("fw", "http", "tcp", "load_balancer", [0, 0, 2]),
        ("fw", "http", "tcp", "node_port", [0, 0, 0]),
        ("fw", "http", "tcp", "cluster_ip", [0, 0, 0]),
    ];
    for (name, port, protocol, via, want) in expected {
        assert_eq!(counts(&node_a_stats, name, port, protocol, via), Some(want), "{name}:{port}/{protocol} via {via}");
    }
    let services = node_a_stats["services"].as_array().unwrap();
    assert_eq!(services.len(), expected.len(), "one entry per Service destination: {services:#?}");
    // Every allocated ClusterIP is listed; only web's saw a port no Service defines.
    for entry in node_a_stats["unknown_ports"].as_array().unwrap() {
        let want = if entry["address"] == "10.96.0.10" { 1 } else { 0 };
        assert_eq!(entry["rejected"], want, "{entry}");
    }
    assert_eq!(node_a_stats["unknown_ports"].as_array().unwrap().len(), 5);
    assert_eq!(node_a_stats["unallocated"], json!([{"cidr": "10.96.0.0/16", "dropped": 1}]));
    // What `stats` read over netlink is what `nft -j list` shows, element by element, counts included.
    let node = scenario.bed.node(1).netns();
    let read = node.run(|| proxier_nft::counters::read("proxier")).expect("read the counters");
    assert!(read.iter().filter(|e| e.packets > 0).count() >= 10, "{read:#?}");
    assert_eq!(counters::by_key(&read), counters::listed(node, "proxier"));

    // node-b saw only the drop of its own NodePort.
    let node_b_stats = stats(&scenario, 2);
    assert_eq!(counts(&node_b_stats, "local", "http", "tcp", "node_port"), Some([0, 0, 1]));
    assert_eq!(counts(&node_b_stats, "web", "http", "tcp", "cluster_ip"), Some([0, 0, 0]));

    // The readable form: busiest first.
    let output = scenario.proxier(1, &["stats".into()]);
    assert!(output.status.success());
    let text = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("NAMESPACE"), "{text}");
    assert!(
        lines[1].contains("web") && lines[1].contains("node_port") && lines[1].ends_with("4         0        0"),
        "{text}"
    );
}

#[test]
fn counts_survive_a_reapply_and_a_changed_snapshot_and_go_with_their_service() {
    if !netns_available("counts_survive_a_reapply_and_a_changed_snapshot_and_go_with_their_service") {
        return;
    }
    let (scenario, _servers) = scenario();
    let client_a = scenario.pod("client-a");
    let web_http = |scenario: &Scenario| counts(&stats(scenario, 1), "web", "http", "tcp", "cluster_ip");
    scenario.program(&objects(&scenario, &["web-a"]));
    reached(client_a, Proto::Tcp, vip("10.96.0.10", 80), 3);
    assert_refused(client_a, Proto::Tcp, vip("10.96.0.11", 80));
    assert_eq!(web_http(&scenario), Some([3, 0, 0]));
    // The same snapshot again: the table is replaced, the counts carried over.
    scenario.program(&objects(&scenario, &["web-a"]));
    assert_eq!(web_http(&scenario), Some([3, 0, 0]));
    assert_eq!(counts(&stats(&scenario, 1), "empty", "http", "tcp", "cluster_ip"), Some([0, 1, 0]));
    // A changed snapshot: a second endpoint changes the destination's map element; its count stays.
    scenario.program(&objects(&scenario, &["web-a", "web-b"]));
    assert_eq!(web_http(&scenario), Some([3, 0, 0]));
    reached(client_a, Proto::Tcp, vip("10.96.0.10", 80), 2);
    assert_eq!(web_http(&scenario), Some([5, 0, 0]));
    // A Service that is gone takes its counts with it.
    let without_empty: String = objects(&scenario, &["web-a", "web-b"])
        .split("---\n")
        .filter(|object| !object.contains("name: empty"))
        .map(|object| format!("{object}---\n"))
        .collect();
    scenario.program(&without_empty);
    let after = stats(&scenario, 1);
    assert_eq!(counts(&after, "empty", "http", "tcp", "cluster_ip"), None);
    assert_eq!(counts(&after, "web", "http", "tcp", "cluster_ip"), Some([5, 0, 0]));
    // Without counters there is nothing to report.
    let mut scenario = scenario;
    scenario.flags(&["--cluster-cidr", "10.244.0.0/16", "--no-counters"]);
    scenario.program(&without_empty);
    reached(scenario.pod("client-a"), Proto::Tcp, vip("10.96.0.10", 80), 1);
    assert_eq!(stats(&scenario, 1)["services"], json!([]));
}

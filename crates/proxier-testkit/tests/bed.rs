//! The test bed proves itself: with no proxy rules at all, traffic behaves as the addressing
//! plan says, and every assertion fails when the behaviour it checks is absent.

#![allow(clippy::disallowed_methods)] // Tests run the binary and ip/nft (clippy.toml).

use std::collections::BTreeSet;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use proxier_testkit::*;

fn sa(ip: impl Into<IpAddr>, port: u16) -> SocketAddr {
    SocketAddr::new(ip.into(), port)
}

/// node-a with pods a1, a2; node-b with pod b1.
fn small_bed() -> TestBed {
    let mut bed = TestBed::new(2).expect("test bed");
    for (node, pod) in [(1, "a1"), (1, "a2"), (2, "b1")] {
        bed.add_pod(node, pod).expect("pod");
    }
    bed
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

const DROP_8080: &str = "table inet pxt_test {
    chain input {
        type filter hook input priority 0;
        tcp dport 8080 drop
        udp dport 8080 drop
    }
}";

#[test]
fn pods_reach_pods_on_both_nodes_keeping_their_source() {
    if !netns_available("pods_reach_pods_on_both_nodes_keeping_their_source") {
        return;
    }
    let bed = small_bed();
    let mut servers = Vec::new();
    for pod in ["a2", "b1"] {
        for proto in [Proto::Tcp, Proto::Udp] {
            servers.push(bed.pod(pod).serve(proto, 8080).unwrap());
        }
    }
    let a1 = bed.pod("a1");
    for target in ["a2", "b1"] {
        for (to, from) in bed.pod(target).ips().into_iter().zip(a1.ips()) {
            for proto in [Proto::Tcp, Proto::Udp] {
                let server = assert_source_seen(a1, proto, sa(to, 8080), from);
                assert_eq!(server, target);
            }
        }
    }
    // And the other way round, node-b to node-a.
    for (to, from) in a1.ips().into_iter().zip(bed.pod("b1").ips()) {
        let _server = a1.serve(Proto::Tcp, 9090).unwrap();
        assert_eq!(
            probe(bed.pod("b1"), Proto::Tcp, sa(to, 9090), ANSWER_TIMEOUT),
            Outcome::Answered { server: "a1".into(), seen_source: from }
        );
    }
    assert!(servers.iter().all(|s| s.answered() >= 2));
}

#[test]
fn closed_ports_are_refused_at_once() {
    if !netns_available("closed_ports_are_refused_at_once") {
        return;
    }
    let bed = small_bed();
    let a1 = bed.pod("a1");
    for ip in bed.pod("b1").ips() {
        // TCP: RST. UDP: ICMP port unreachable on the connected socket.
        for proto in [Proto::Tcp, Proto::Udp] {
            assert_eq!(assert_refused(a1, proto, sa(ip, 9)), io::ErrorKind::ConnectionRefused);
            let err = check_dropped(a1, proto, sa(ip, 9)).expect_err("refused is not dropped");
            assert!(err.contains("expected no answer"), "{err}");
            assert!(err.contains("refused"), "{err}");
            let err = check_source_seen(a1, proto, sa(ip, 9), a1.ipv4().into()).unwrap_err();
            assert!(err.contains("refused"), "{err}");
            let err = check_reached(a1, proto, sa(ip, 9), 2).unwrap_err();
            assert!(err.contains("try 2: refused (connection refused)"), "{err}");
        }
    }
}

#[test]
fn nft_drop_gives_timeout_and_the_assertions_tell_drop_from_answer_and_refusal() {
    if !netns_available("nft_drop_gives_timeout_and_the_assertions_tell_drop_from_answer_and_refusal") {
        return;
    }
    let bed = small_bed();
    let (a1, b1) = (bed.pod("a1"), bed.pod("b1"));
    let _servers = [b1.serve(Proto::Tcp, 8080).unwrap(), b1.serve(Proto::Udp, 8080).unwrap()];
    for ip in b1.ips() {
        for proto in [Proto::Tcp, Proto::Udp] {
            let err = check_dropped(a1, proto, sa(ip, 8080)).expect_err("an answer is not a drop");
            assert!(err.contains("answered by b1"), "{err}");
            let err = check_refused(a1, proto, sa(ip, 8080)).expect_err("an answer is not refused");
            assert!(err.contains("answered by b1"), "{err}");
        }
    }

    b1.netns().nft(DROP_8080).unwrap();
    // In parallel: each check waits for its timeout.
    std::thread::scope(|s| {
        for ip in b1.ips() {
            for proto in [Proto::Tcp, Proto::Udp] {
                s.spawn(move || assert_dropped(a1, proto, sa(ip, 8080)));
                s.spawn(move || assert_eq!(probe(a1, proto, sa(ip, 8080), DROP_TIMEOUT), Outcome::Timeout));
                s.spawn(move || {
                    let err = check_refused(a1, proto, sa(ip, 8080)).expect_err("a drop is not refused");
                    assert!(err.contains("no answer (timeout)"), "{err}");
                });
            }
        }
    });

    // The rule, not something else, caused it.
    b1.netns().nft("delete table inet pxt_test").unwrap();
    assert_eq!(reached(a1, Proto::Udp, sa(b1.ipv6(), 8080), 2), set(&["b1"]));
}

#[test]
fn reached_and_sticky_see_exactly_which_pods_answered() {
    if !netns_available("reached_and_sticky_see_exactly_which_pods_answered") {
        return;
    }
    let bed = small_bed();
    let (a1, a2, b1) = (bed.pod("a1"), bed.pod("a2"), bed.pod("b1"));
    let _servers = [a2.serve(Proto::Tcp, 8080).unwrap(), b1.serve(Proto::Tcp, 8080).unwrap()];
    let direct = sa(b1.ipv4(), 8080);
    assert_eq!(reached(a1, Proto::Tcp, direct, 5), set(&["b1"]));
    assert_reaches(a1, Proto::Tcp, direct, 5, &["b1"]);
    let err = check_reaches(a1, Proto::Tcp, direct, 5, &["a2", "b1"]).unwrap_err();
    assert!(err.contains("reached {\"b1\"}"), "{err}");
    assert_eq!(assert_sticky(a1, Proto::Tcp, direct, 5), "b1");

    // A namespace-local round robin (in a1 only) spreads one address over two pods.
    a1.netns()
        .nft(&format!(
            "table ip pxt_test {{
                chain out {{
                    type nat hook output priority -100;
                    ip daddr 10.96.0.1 tcp dport 80 dnat to numgen inc mod 2 map {{ 0 : {}, 1 : {} }} : 8080
                }}
            }}",
            a2.ipv4(),
            b1.ipv4()
        ))
        .unwrap();
    let vip = "10.96.0.1:80".parse().unwrap();
    assert_eq!(reached(a1, Proto::Tcp, vip, 6), set(&["a2", "b1"]));
    assert_reaches(a1, Proto::Tcp, vip, 6, &["a2", "b1"]);
    let err = check_reaches(a1, Proto::Tcp, vip, 6, &["b1"]).unwrap_err();
    assert!(err.contains("reached {\"a2\", \"b1\"}"), "{err}");
    let err = check_sticky(a1, Proto::Tcp, vip, 6).unwrap_err();
    assert!(err.contains("to hit one server"), "{err}");

    // A panicking assertion carries the same message.
    let panic = std::panic::catch_unwind(|| assert_sticky(a1, Proto::Tcp, vip, 4)).unwrap_err();
    let msg = panic.downcast_ref::<String>().unwrap();
    assert!(msg.contains("to hit one server"), "{msg}");
}

#[test]
fn udp_servers_answer_from_the_address_the_client_used() {
    if !netns_available("udp_servers_answer_from_the_address_the_client_used") {
        return;
    }
    let bed = small_bed();
    let (node_a, a1) = (bed.node(1), bed.pod("a1"));
    let _server = node_a.serve(Proto::Udp, 7000).unwrap();
    // node-a's route back to a1 prefers the node IP as source; the answer must still come
    // from the pod gateway address a1 asked, or a1's connected socket would not take it.
    for (gw, src) in ["10.244.1.1", "fd00:10:244:1::1"].into_iter().zip(a1.ips()) {
        let gw: IpAddr = gw.parse().unwrap();
        assert_eq!(assert_source_seen(a1, Proto::Udp, sa(gw, 7000), src), "node-a");
    }
    for (ip, src) in node_a.ips().into_iter().zip(a1.ips()) {
        assert_source_seen(a1, Proto::Udp, sa(ip, 7000), src);
    }
}

#[test]
fn outside_client_reaches_node_ips_but_not_pods() {
    if !netns_available("outside_client_reaches_node_ips_but_not_pods") {
        return;
    }
    let bed = small_bed();
    let client = bed.client();
    let node_b = bed.node(2);
    let _servers = [node_b.serve(Proto::Tcp, 30080).unwrap(), node_b.serve(Proto::Udp, 30080).unwrap()];
    for (ip, src) in node_b.ips().into_iter().zip([IpAddr::from(CLIENT_IPV4), CLIENT_IPV6.into()]) {
        for proto in [Proto::Tcp, Proto::Udp] {
            assert_eq!(assert_source_seen(client, proto, sa(ip, 30080), src), "node-b");
        }
    }
    for ip in bed.pod("b1").ips() {
        assert_eq!(
            probe(client, Proto::Tcp, sa(ip, 8080), ANSWER_TIMEOUT),
            Outcome::Refused { kind: io::ErrorKind::NetworkUnreachable }
        );
    }
}

#[test]
fn uncaptured_service_and_external_traffic_is_dropped_silently() {
    if !netns_available("uncaptured_service_and_external_traffic_is_dropped_silently") {
        return;
    }
    let bed = small_bed();
    let targets: Vec<SocketAddr> = ["10.96.0.1:80", "[fd00:10:96::1]:80", "203.0.113.10:80", "[2001:db8::10]:80"]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    let from: [&Netns; 3] = [bed.client(), bed.node(2).netns(), bed.pod("b1").netns()];
    // In parallel: each check waits DROP_TIMEOUT.
    std::thread::scope(|s| {
        for ns in from {
            for &target in &targets {
                for proto in [Proto::Tcp, Proto::Udp] {
                    s.spawn(move || assert_dropped(ns, proto, target));
                }
            }
        }
    });
}

#[test]
fn namespaces_are_isolated_and_exec_runs_inside() {
    if !netns_available("namespaces_are_isolated_and_exec_runs_inside") {
        return;
    }
    let (one, two) = (Netns::new("one").unwrap(), Netns::new("two").unwrap());
    let out = one.exec("ip", ["-o", "link", "show"]).unwrap();
    assert!(out.status.success());
    let links = String::from_utf8(out.stdout).unwrap();
    assert_eq!(links.lines().count(), 1, "only lo: {links}");
    assert!(links.contains("lo:") && links.contains("UP"), "{links}");

    let server = serve(&one, "one", Proto::Tcp, 0).unwrap();
    let target = sa([127, 0, 0, 1], server.port());
    assert_eq!(
        probe(&one, Proto::Tcp, target, ANSWER_TIMEOUT),
        Outcome::Answered { server: "one".into(), seen_source: target.ip() }
    );
    assert_eq!(assert_refused(&two, Proto::Tcp, target), io::ErrorKind::ConnectionRefused);
    assert_eq!(one.run(|| 6 * 7), 42);
}

#[test]
fn a_panicking_test_still_removes_its_namespaces() {
    if !netns_available("a_panicking_test_still_removes_its_namespaces") {
        return;
    }
    let names = Arc::new(Mutex::new(Vec::new()));
    let seen = names.clone();
    let result = std::panic::catch_unwind(move || {
        let mut bed = TestBed::new(2).unwrap();
        bed.add_pod(2, "doomed").unwrap();
        let _server = bed.pod("doomed").serve(Proto::Udp, 53).unwrap();
        *seen.lock().unwrap() = bed.netns_names();
        panic!("test failure inside the bed");
    });
    assert!(result.is_err());
    let names = names.lock().unwrap().clone();
    assert_eq!(names.len(), 5, "{names:?}");
    let listed =
        String::from_utf8(std::process::Command::new("ip").args(["netns", "list"]).output().unwrap().stdout).unwrap();
    let listed: BTreeSet<&str> = listed.lines().filter_map(|l| l.split_whitespace().next()).collect();
    for name in &names {
        assert!(!listed.contains(name.as_str()), "{name} survived the panic");
    }
}

#[test]
fn sweep_stale_removes_namespaces_of_dead_processes_only() {
    if !netns_available("sweep_stale_removes_namespaces_of_dead_processes_only") {
        return;
    }
    // A pid that just exited.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let stale = format!("{NAME_PREFIX}{dead}-0-stale");
    let status = std::process::Command::new("ip").args(["netns", "add", &stale]).status().unwrap();
    assert!(status.success());
    let mine = Netns::new("alive").unwrap();

    let swept = sweep_stale();
    assert!(swept.contains(&stale), "{swept:?}");
    assert!(!swept.iter().any(|n| n == mine.name()));
    assert!(!std::path::Path::new("/run/netns").join(&stale).exists());
    assert!(mine.path().exists());
}

#[test]
fn sctp_answers_and_refuses_or_is_reported_unsupported() {
    if !netns_available("sctp_answers_and_refuses_or_is_reported_unsupported") {
        return;
    }
    let bed = small_bed();
    let (a1, b1) = (bed.pod("a1"), bed.pod("b1"));
    if !sctp_available("sctp_answers_and_refuses_or_is_reported_unsupported") {
        // The distinct error callers use to skip, from both the server and the probe.
        let err = b1.serve(Proto::Sctp, 8080).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::Unsupported, "{err}");
        match probe(a1, Proto::Sctp, sa(b1.ipv4(), 8080), ANSWER_TIMEOUT) {
            Outcome::Error(e) => assert!(e.contains("SCTP is not supported"), "{e}"),
            other => panic!("expected an SCTP error, got {other}"),
        }
        return;
    }
    let _server = b1.serve(Proto::Sctp, 8080).unwrap();
    for (to, from) in b1.ips().into_iter().zip(a1.ips()) {
        assert_eq!(assert_source_seen(a1, Proto::Sctp, sa(to, 8080), from), "b1");
        assert_refused(a1, Proto::Sctp, sa(to, 9));
    }
}

#[test]
fn nodes_yaml_describes_the_topology() {
    if !netns_available("nodes_yaml_describes_the_topology") {
        return;
    }
    let bed = TestBed::builder().node("zone-1").node("zone-1").node("zone-2").build().unwrap();
    let yaml = bed.nodes_yaml();
    let nodes: Vec<k8s_openapi::api::core::v1::Node> = serde_yaml_ng::Deserializer::from_str(&yaml)
        .map(|doc| serde::Deserialize::deserialize(doc).expect("a Node"))
        .collect();
    assert_eq!(nodes.len(), 3);
    let c = &nodes[2];
    assert_eq!(c.metadata.name.as_deref(), Some("node-c"));
    let labels = c.metadata.labels.as_ref().unwrap();
    assert_eq!(labels["topology.kubernetes.io/zone"], "zone-2");
    assert_eq!(labels["kubernetes.io/hostname"], "node-c");
    let spec = c.spec.as_ref().unwrap();
    assert_eq!(spec.pod_cidrs.as_deref(), Some(&["10.244.3.0/24".to_string(), "fd00:10:244:3::/64".to_string()][..]));
    let addresses: Vec<(String, String)> = c
        .status
        .as_ref()
        .unwrap()
        .addresses
        .as_ref()
        .unwrap()
        .iter()
        .map(|a| (a.type_.clone(), a.address.clone()))
        .collect();
    assert_eq!(
        addresses,
        [
            ("InternalIP".to_string(), "192.168.49.13".to_string()),
            ("InternalIP".to_string(), "fd00:49::13".to_string()),
            ("Hostname".to_string(), "node-c".to_string()),
        ]
    );
    assert_eq!(bed.node(3).ipv6(), "fd00:49::13".parse::<std::net::Ipv6Addr>().unwrap());
    assert_eq!(bed.node(1).zone(), bed.node(2).zone());
}

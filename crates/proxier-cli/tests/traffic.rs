//! Real traffic through rules applied by the real `proxier` binary, on a test bed of nodes, pods and
//! an outside client in network namespaces (crates/proxier-testkit): what the Foundation and the
//! multi-node test bed promise.

use proxier_testkit::scenario::{Scenario, at, ready, service, slice};
use proxier_testkit::{
    Proto, assert_dropped, assert_reaches, assert_refused, assert_source_seen, netns_available, sctp_available,
};

/// The binary under test.
const PROXIER: &str = env!("CARGO_BIN_EXE_proxier");

const WEB_IP: &str = "10.96.0.10";

fn web_objects(scenario: &Scenario, pods: &[&str]) -> String {
    let endpoints: Vec<_> = pods.iter().map(|p| ready(scenario.pod(p))).collect();
    service(
        "shop",
        "web",
        WEB_IP,
        &[("http", "TCP", 80, Some(30080)), ("dns", "UDP", 53, Some(30053))],
        &["  type: NodePort"],
    ) + &slice("shop", "web", "IPv4", &endpoints, &[("http", "TCP", 8080), ("dns", "UDP", 5353)])
        + &service(
            "shop",
            "empty",
            "10.96.0.11",
            &[("http", "TCP", 80, Some(30081)), ("dns", "UDP", 53, None)],
            &["  type: NodePort"],
        )
}

#[test]
fn cluster_ip_reaches_every_pod_from_pods_and_nodes_keeping_pod_sources() {
    if !netns_available("cluster_ip_reaches_every_pod_from_pods_and_nodes_keeping_pod_sources") {
        return;
    }
    let (scenario, _servers) = Scenario::web_pods(PROXIER);
    scenario.program(&web_objects(&scenario, &["web-a", "web-b"]));
    let (tcp, udp) =
        (at(WEB_IP.parse::<std::net::IpAddr>().unwrap(), 80), at(WEB_IP.parse::<std::net::IpAddr>().unwrap(), 53));
    for from in ["client-a", "client-b"] {
        let pod = scenario.pod(from);
        assert_reaches(pod, Proto::Tcp, tcp, 30, &["web-a", "web-b"]);
        assert_reaches(pod, Proto::Udp, udp, 30, &["web-a", "web-b"]);
        // Pod to ClusterIP is not masqueraded, on the same node and across nodes.
        let seen = proxier_testkit::reached(pod, Proto::Tcp, tcp, 1);
        assert_eq!(seen.len(), 1);
    }
    for node in [1, 2] {
        assert_reaches(scenario.bed.node(node), Proto::Tcp, tcp, 30, &["web-a", "web-b"]);
        assert_reaches(scenario.bed.node(node), Proto::Udp, udp, 30, &["web-a", "web-b"]);
    }
}

#[test]
fn pod_sources_are_kept_across_nodes_and_other_sources_are_masqueraded() {
    if !netns_available("pod_sources_are_kept_across_nodes_and_other_sources_are_masqueraded") {
        return;
    }
    let (scenario, _servers) = Scenario::web_pods(PROXIER);
    // One endpoint on node-b: every probe lands there.
    scenario.program(&web_objects(&scenario, &["web-b"]));
    let tcp = at(WEB_IP.parse::<std::net::IpAddr>().unwrap(), 80);
    let client_a = scenario.pod("client-a");
    assert_source_seen(client_a, Proto::Tcp, tcp, client_a.ipv4().into());
    assert_source_seen(
        client_a,
        Proto::Udp,
        at(WEB_IP.parse::<std::net::IpAddr>().unwrap(), 53),
        client_a.ipv4().into(),
    );
    // The outside client reaches the ClusterIP through node-a, which masquerades it.
    assert_source_seen(scenario.bed.client(), Proto::Tcp, tcp, scenario.bed.node(1).ipv4().into());
}

#[test]
fn node_to_cluster_ip_is_masqueraded() {
    if !netns_available("node_to_cluster_ip_is_masqueraded") {
        return;
    }
    let (mut scenario, _servers) = Scenario::web_pods(PROXIER);
    // web-a is on node-a: from node-a, unmasqueraded traffic would show the node IP, masqueraded traffic
    // shows the address of the interface it leaves through, the pod gateway 10.244.1.1.
    scenario.program(&web_objects(&scenario, &["web-a"]));
    let tcp = at(WEB_IP.parse::<std::net::IpAddr>().unwrap(), 80);
    assert_source_seen(scenario.bed.node(1), Proto::Tcp, tcp, "10.244.1.1".parse().unwrap());
    // Without a local-traffic detector nothing is masqueraded by source.
    scenario.flags(&[]);
    scenario.program(&web_objects(&scenario, &["web-a"]));
    assert_source_seen(scenario.bed.node(1), Proto::Tcp, tcp, scenario.bed.node(1).ipv4().into());
}

#[test]
fn node_port_answers_on_every_node_even_without_a_local_endpoint() {
    if !netns_available("node_port_answers_on_every_node_even_without_a_local_endpoint") {
        return;
    }
    let (scenario, _servers) = Scenario::web_pods(PROXIER);
    scenario.program(&web_objects(&scenario, &["web-a"]));
    for node in [1, 2] {
        let ip = scenario.bed.node(node).ipv4();
        assert_reaches(scenario.bed.client(), Proto::Tcp, at(ip, 30080), 10, &["web-a"]);
        assert_reaches(scenario.bed.client(), Proto::Udp, at(ip, 30053), 10, &["web-a"]);
    }
    // External traffic with the Cluster policy is masqueraded by the node it entered: web-a sees the
    // address node-a reaches it from (its pod gateway), or node-b's address when it came through node-b.
    let client = scenario.bed.client();
    assert_source_seen(client, Proto::Tcp, at(scenario.bed.node(1).ipv4(), 30080), "10.244.1.1".parse().unwrap());
    let node_b = scenario.bed.node(2).ipv4();
    assert_source_seen(client, Proto::Tcp, at(node_b, 30080), node_b.into());
    scenario.program(&web_objects(&scenario, &["web-a", "web-b"]));
    for node in [1, 2] {
        let ip = scenario.bed.node(node).ipv4();
        assert_reaches(scenario.bed.client(), Proto::Tcp, at(ip, 30080), 30, &["web-a", "web-b"]);
    }
}

#[test]
fn a_service_without_endpoints_is_refused_at_once() {
    if !netns_available("a_service_without_endpoints_is_refused_at_once") {
        return;
    }
    let (scenario, _servers) = Scenario::web_pods(PROXIER);
    scenario.program(&web_objects(&scenario, &["web-a"]));
    let empty: std::net::IpAddr = "10.96.0.11".parse().unwrap();
    for from in [scenario.pod("client-a").netns(), scenario.pod("client-b").netns(), scenario.bed.node(1).netns()] {
        assert_refused(from, Proto::Tcp, at(empty, 80));
    }
    for from in [scenario.pod("client-a").netns(), scenario.pod("client-b").netns()] {
        assert_refused(from, Proto::Udp, at(empty, 53));
    }
    // The node's own UDP datagram is rejected in the output hook: the sender gets EPERM at once.
    let outcome =
        proxier_testkit::probe(scenario.bed.node(1), Proto::Udp, at(empty, 53), std::time::Duration::from_millis(500));
    assert!(
        matches!(&outcome, proxier_testkit::Outcome::Error(e) if e.contains("Operation not permitted"))
            || outcome.is_refused(),
        "{outcome:?}"
    );
    assert_refused(scenario.bed.client(), Proto::Tcp, at(empty, 80));
    assert_refused(scenario.bed.client(), Proto::Tcp, at(scenario.bed.node(2).ipv4(), 30081));
}

#[test]
fn a_pod_reaching_its_own_service_is_hairpinned() {
    if !netns_available("a_pod_reaching_its_own_service_is_hairpinned") {
        return;
    }
    let (scenario, _servers) = Scenario::web_pods(PROXIER);
    scenario.program(&web_objects(&scenario, &["web-a"]));
    let tcp = at(WEB_IP.parse::<std::net::IpAddr>().unwrap(), 80);
    // web-a reaches itself; masqueraded to its node's address so the reply comes back through the node.
    assert_reaches(scenario.pod("web-a"), Proto::Tcp, tcp, 5, &["web-a"]);
    assert_source_seen(scenario.pod("web-a"), Proto::Tcp, tcp, "10.244.1.1".parse().unwrap());
    assert_source_seen(
        scenario.pod("web-a"),
        Proto::Udp,
        at(WEB_IP.parse::<std::net::IpAddr>().unwrap(), 53),
        "10.244.1.1".parse().unwrap(),
    );
}

#[test]
fn a_changed_snapshot_moves_traffic_to_the_new_endpoints() {
    if !netns_available("a_changed_snapshot_moves_traffic_to_the_new_endpoints") {
        return;
    }
    let (scenario, _servers) = Scenario::web_pods(PROXIER);
    let tcp = at(WEB_IP.parse::<std::net::IpAddr>().unwrap(), 80);
    scenario.program(&web_objects(&scenario, &["web-a", "web-b"]));
    assert_reaches(scenario.pod("client-a"), Proto::Tcp, tcp, 30, &["web-a", "web-b"]);
    scenario.program(&web_objects(&scenario, &["web-b"]));
    assert_reaches(scenario.pod("client-a"), Proto::Tcp, tcp, 20, &["web-b"]);
    scenario.program(&web_objects(&scenario, &[]));
    assert_refused(scenario.pod("client-a"), Proto::Tcp, tcp);
}

#[test]
fn ipv6_cluster_ip_and_node_port_work() {
    if !netns_available("ipv6_cluster_ip_and_node_port_work") {
        return;
    }
    let (scenario, _servers) = Scenario::web_pods(PROXIER);
    let endpoints = [ready(scenario.pod("web-a")), ready(scenario.pod("web-b"))];
    let objects = service(
        "shop",
        "web6",
        "fd00:10:96::10",
        &[("http", "TCP", 80, Some(30080)), ("dns", "UDP", 53, None)],
        &["  type: NodePort", "  ipFamilies: [IPv6]"],
    ) + &slice("shop", "web6", "IPv6", &endpoints, &[("http", "TCP", 8080), ("dns", "UDP", 5353)]);
    scenario.program(&objects);
    let vip: std::net::IpAddr = "fd00:10:96::10".parse().unwrap();
    let client = scenario.pod("client-b");
    assert_reaches(client, Proto::Tcp, at(vip, 80), 30, &["web-a", "web-b"]);
    assert_reaches(client, Proto::Udp, at(vip, 53), 30, &["web-a", "web-b"]);
    assert_source_seen(scenario.pod("client-a"), Proto::Tcp, at(vip, 80), client_ip(&scenario, "client-a"));
    assert_reaches(scenario.bed.client(), Proto::Tcp, at(scenario.bed.node(2).ipv6(), 30080), 30, &["web-a", "web-b"]);
    // The IPv4 family has no service here: its table holds no destination for the port.
    assert_dropped(scenario.pod("client-a"), Proto::Tcp, at(WEB_IP.parse::<std::net::IpAddr>().unwrap(), 80));
}

fn client_ip(scenario: &Scenario, pod: &str) -> std::net::IpAddr {
    scenario.pod(pod).ipv6().into()
}

#[test]
fn sctp_services_are_balanced() {
    if !netns_available("sctp_services_are_balanced") || !sctp_available("sctp_services_are_balanced") {
        return;
    }
    let mut scenario = Scenario::new(PROXIER, 2);
    scenario.bed.add_pod(1, "sig-a").unwrap();
    scenario.bed.add_pod(2, "sig-b").unwrap();
    scenario.bed.add_pod(1, "client").unwrap();
    let _servers = [
        scenario.pod("sig-a").serve(Proto::Sctp, 2905).unwrap(),
        scenario.pod("sig-b").serve(Proto::Sctp, 2905).unwrap(),
    ];
    let endpoints = [ready(scenario.pod("sig-a")), ready(scenario.pod("sig-b"))];
    scenario.program(
        &(service("telecom", "sigtran", "10.96.77.5", &[("m3ua", "SCTP", 2905, None)], &[])
            + &slice("telecom", "sigtran", "IPv4", &endpoints, &[("m3ua", "SCTP", 2905)])),
    );
    assert_reaches(
        scenario.pod("client"),
        Proto::Sctp,
        at("10.96.77.5".parse::<std::net::IpAddr>().unwrap(), 2905),
        30,
        &["sig-a", "sig-b"],
    );
}

/// A kernel that lacks a feature one Service needs (here: an `nft` that refuses any rule matching
/// SCTP, as a kernel built without SCTP support does) costs that Service only: the others are
/// programmed and answer, the refused one is named, and its ClusterIP rejects rather than hangs.
#[test]
fn a_service_the_kernel_refuses_is_left_out_and_the_rest_answers() {
    if !netns_available("a_service_the_kernel_refuses_is_left_out_and_the_rest_answers") {
        return;
    }
    let (mut scenario, _servers) = Scenario::web_pods(PROXIER);
    let nft = scenario.write_program(
        "nft-without-sctp",
        "#!/bin/sh\n# A kernel without SCTP: every ruleset that matches SCTP is refused, the rest goes to nft.\n\
         input=$(cat)\ncase \"$input\" in *'\"sctp\"'*) echo 'Error: Could not process rule: Protocol not supported' >&2; exit 1;; esac\n\
         printf '%s' \"$input\" | exec nft \"$@\"\n",
    );
    let mut flags = scenario.flags.clone();
    // This kernel has SCTP: the stand-in is reached only when `apply` loads through nft.
    flags.extend(["--netlink".to_owned(), "false".to_owned(), "--nft".to_owned(), nft.display().to_string()]);
    scenario.flags = flags;
    let endpoints = [ready(scenario.pod("web-a")), ready(scenario.pod("web-b"))];
    let objects = web_objects(&scenario, &["web-a", "web-b"])
        + &service("telecom", "sigtran", "10.96.77.5", &[("m3ua", "SCTP", 2905, None)], &[])
        + &slice("telecom", "sigtran", "IPv4", &endpoints, &[("m3ua", "SCTP", 2905)]);

    let output = scenario.apply_on(1, &objects);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(4), "{stderr}");
    assert!(
        stderr.contains(
            "proxier: error: Service telecom/sigtran: the kernel refused this Service's rules, so they are not \
             programmed: Error: Could not process rule: Protocol not supported"
        ),
        "{stderr}"
    );
    assert!(stderr.contains("applied, except 1 Service(s) whose rules the kernel refused"), "{stderr}");
    assert!(!stderr.contains("shop/web"), "{stderr}");

    let client = scenario.pod("client-a");
    let web: std::net::IpAddr = WEB_IP.parse().unwrap();
    assert_reaches(client, Proto::Tcp, at(web, 80), 20, &["web-a", "web-b"]);
    assert_reaches(client, Proto::Udp, at(web, 53), 20, &["web-a", "web-b"]);
    assert_refused(client, Proto::Tcp, at("10.96.77.5".parse::<std::net::IpAddr>().unwrap(), 2905));
}

#[test]
fn delete_removes_proxier_tables_and_traffic_is_no_longer_intercepted() {
    if !netns_available("delete_removes_proxier_tables_and_traffic_is_no_longer_intercepted") {
        return;
    }
    let (scenario, _servers) = Scenario::web_pods(PROXIER);
    scenario.program(&web_objects(&scenario, &["web-a"]));
    let node = scenario.bed.node(1).netns();
    node.nft("table inet other {\n chain c {\n type filter hook input priority 10;\n }\n}\n").unwrap();
    for n in [1, 2] {
        let output = scenario.proxier(n, &["delete".to_owned()]);
        assert!(output.status.success());
    }
    let ruleset = String::from_utf8(node.exec("nft", ["list", "ruleset"]).unwrap().stdout).unwrap();
    assert!(!ruleset.contains("proxier"), "{ruleset}");
    assert!(ruleset.contains("table inet other"), "{ruleset}");
    // With the rules gone, the ClusterIP is just an address nobody answers.
    assert_dropped(scenario.pod("client-a"), Proto::Tcp, at(WEB_IP.parse::<std::net::IpAddr>().unwrap(), 80));
}

#[test]
fn the_assertions_catch_a_removed_rule() {
    if !netns_available("the_assertions_catch_a_removed_rule") {
        return;
    }
    let (scenario, _servers) = Scenario::web_pods(PROXIER);
    scenario.program(&web_objects(&scenario, &["web-a", "web-b"]));
    let tcp = at(WEB_IP.parse::<std::net::IpAddr>().unwrap(), 80);
    let node_a = scenario.bed.node(1).netns();
    let break_rules = |script: &str| node_a.nft(script).expect("change the rules");

    // Without the hairpin rule a pod reaching itself through the service is not masqueraded.
    scenario.program(&web_objects(&scenario, &["web-a"]));
    proxier_testkit::check_source_seen(scenario.pod("web-a"), Proto::Tcp, tcp, "10.244.1.1".parse().unwrap()).unwrap();
    break_rules("flush chain ip proxier masquerading\n");
    let err = proxier_testkit::check_source_seen(scenario.pod("web-a"), Proto::Tcp, tcp, "10.244.1.1".parse().unwrap());
    assert!(err.is_err(), "hairpin still masqueraded without its rule");

    // Without the service's map element, the ClusterIP reaches nothing: the port looks unknown.
    scenario.program(&web_objects(&scenario, &["web-a", "web-b"]));
    proxier_testkit::check_reaches(scenario.pod("client-a"), Proto::Tcp, tcp, 20, &["web-a", "web-b"]).unwrap();
    break_rules("delete element ip proxier service-ips { 10.96.0.10 . tcp . 80 }\n");
    assert!(proxier_testkit::check_reaches(scenario.pod("client-a"), Proto::Tcp, tcp, 5, &["web-a", "web-b"]).is_err());
    proxier_testkit::check_refused(scenario.pod("client-a"), Proto::Tcp, tcp).unwrap();

    // Without the reject chain, a service without endpoints is dropped instead of refused.
    let empty = at("10.96.0.11".parse::<std::net::IpAddr>().unwrap(), 80);
    proxier_testkit::check_refused(scenario.pod("client-a"), Proto::Tcp, empty).unwrap();
    break_rules("flush chain ip proxier reject-chain\n");
    assert!(proxier_testkit::check_refused(scenario.pod("client-a"), Proto::Tcp, empty).is_err());
}

#[test]
fn the_bundled_single_stack_cluster_behaves_as_its_snapshot_says() {
    if !netns_available("the_bundled_single_stack_cluster_behaves_as_its_snapshot_says") {
        return;
    }
    let (mut scenario, _servers, path) = Scenario::from_testdata(PROXIER, "single-stack.yaml");
    scenario.bed.add_pod(1, "client").unwrap();
    scenario.program_file(&path);
    let client = scenario.pod("client");
    let ip = |text: &str| text.parse::<std::net::IpAddr>().unwrap();
    let coredns = ["coredns-674b8bbfcf-8kq2m", "coredns-674b8bbfcf-x7vwd"];
    assert_reaches(client, Proto::Udp, at(ip("10.96.0.10"), 53), 30, &coredns);
    assert_reaches(client, Proto::Tcp, at(ip("10.96.0.10"), 53), 30, &coredns);
    assert_reaches(client, Proto::Tcp, at(ip("10.96.0.1"), 443), 5, &["node-a"]);
    assert_refused(client, Proto::Tcp, at(ip("10.96.50.50"), 80));
    // shop/web: two ready pods, one unready that is never used; the NodePort on both nodes.
    let web: Vec<String> =
        proxier_testkit::reached(scenario.bed.client(), Proto::Tcp, at(scenario.bed.node(2).ipv4(), 30080), 30)
            .into_iter()
            .collect();
    assert_eq!(web.len(), 2, "{web:?}");
    assert_reaches(
        scenario.bed.client(),
        Proto::Tcp,
        at(scenario.bed.node(1).ipv4(), 30080),
        30,
        &web.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    // The ingress controller behind its LoadBalancer IP, and legacy-db behind its externalIP.
    assert_eq!(proxier_testkit::reached(scenario.bed.client(), Proto::Tcp, at(ip("203.0.113.10"), 80), 30).len(), 2);
    assert_eq!(proxier_testkit::reached(scenario.bed.client(), Proto::Tcp, at(ip("198.51.100.20"), 5432), 5).len(), 1);
}

/// `proxier apply` again and again while new connections keep arriving, from the node and from a
/// pod: none of them may miss the Service. The load is made in place of the live table (see
/// `Transaction::in_place_of`); removing and re-creating the table refused about one connection in
/// 5,000 here (a packet that straddles the commit finds no rule or no map element in either
/// generation).
#[test]
fn a_full_reload_under_traffic_refuses_no_new_connection() {
    if !netns_available("a_full_reload_under_traffic_refuses_no_new_connection") {
        return;
    }
    let (scenario, _servers) = Scenario::web_pods(PROXIER);
    let objects = web_objects(&scenario, &["web-a", "web-b"]);
    scenario.program(&objects);
    let tcp = at(WEB_IP.parse::<std::net::IpAddr>().unwrap(), 80);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (answered, failures) = std::thread::scope(|s| {
        let prober = s.spawn(|| {
            let (mut answered, mut failures) = (0usize, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for from in
                    [scenario.bed.node(1).as_ref(), scenario.pod("client-a").as_ref()] as [&proxier_testkit::Netns; 2]
                {
                    match proxier_testkit::probe(from, Proto::Tcp, tcp, std::time::Duration::from_secs(5)) {
                        outcome if outcome.is_answered() => answered += 1,
                        outcome => failures.push(outcome.to_string()),
                    }
                }
            }
            (answered, failures)
        });
        for _ in 0..150 {
            if std::env::var_os("NORELOAD").is_some() {
                std::thread::sleep(std::time::Duration::from_millis(35));
                continue;
            }
            let output = scenario.apply_on(1, &objects);
            assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        prober.join().unwrap()
    });
    assert!(answered > 100, "too few probes ran: {answered}");
    assert!(
        failures.is_empty(),
        "{} of {} new connections failed during reloads: {:?}",
        failures.len(),
        answered + failures.len(),
        &failures[..failures.len().min(5)]
    );
}

//! `proxier run` end to end: the real binary in a node's network namespace, watching a fake API server
//! (tests/run_support/apiserver.rs) that runs inside the same namespace, with traffic checked by probes.

#![allow(clippy::disallowed_methods)] // Tests run the binary and ip/nft (clippy.toml).

mod run_support;

use std::time::Duration;

use run_support::apiserver::{ApiServer, Kind};
use run_support::node::{self, NODE_IP, Node, eventually, udp_ask};
use serde_json::{Value, json};
use std::time::Instant;

const WAIT: Duration = Duration::from_secs(15);

fn service(name: &str, ip: &str, protocol: &str) -> Value {
    json!({"kind": "Service", "apiVersion": "v1",
           "metadata": {"namespace": "default", "name": name},
           "spec": {"type": "ClusterIP", "clusterIP": ip, "clusterIPs": [ip],
                    "ports": [{"name": "p", "port": 80, "protocol": protocol}]}})
}

fn slice(service: &str, endpoints: &[&str], protocol: &str) -> Value {
    let endpoints: Vec<Value> = endpoints
        .iter()
        .map(|ip| json!({"addresses": [ip], "conditions": {"ready": true}, "nodeName": "node-a"}))
        .collect();
    json!({"kind": "EndpointSlice", "apiVersion": "discovery.k8s.io/v1",
           "metadata": {"namespace": "default", "name": format!("{service}-x"),
                        "labels": {"kubernetes.io/service-name": service},
                        "annotations": {"endpoints.kubernetes.io/last-change-trigger-time": "2026-01-01T00:00:00Z"}},
           "addressType": "IPv4", "endpoints": endpoints,
           "ports": [{"name": "p", "port": 8080, "protocol": protocol}]})
}

fn node_object() -> Value {
    json!({"kind": "Node", "apiVersion": "v1", "metadata": {"name": "node-a"},
           "status": {"addresses": [{"type": "InternalIP", "address": NODE_IP}]}})
}

/// A node namespace with pods 10.244.1.{5,6,7}, echo servers a, b, c on them, and a fake API server
/// on 127.0.0.1:6443 inside it.
struct Setup {
    api: ApiServer,
    kubeconfig: std::path::PathBuf,
    _servers: Vec<node::Servers>,
    // Dropped last: the namespace.
    node: Node,
}

fn setup() -> Option<Setup> {
    if !node::netns_available("proxier run") {
        return None;
    }
    let node = Node::new(&["10.244.1.5", "10.244.1.6", "10.244.1.7"]);
    let servers = vec![
        node.serve("a", "10.244.1.5", 8080),
        node.serve("b", "10.244.1.6", 8080),
        node.serve("c", "10.244.1.7", 8080),
    ];
    let listener = node.run(|| std::net::TcpListener::bind("127.0.0.1:6443").expect("bind fake API server"));
    let api = ApiServer::start(listener);
    let kubeconfig = std::env::temp_dir().join(format!("{}.kubeconfig", node.name));
    api.write_kubeconfig(&kubeconfig);
    api.apply(node_object());
    Some(Setup { api, kubeconfig, _servers: servers, node })
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.kubeconfig);
        let _ = std::fs::remove_file(self.kubeconfig.with_extension("config.yaml"));
    }
}

const WEB: &str = "10.96.0.20:80";

#[test]
fn traffic_follows_services_and_endpoints() {
    let Some(s) = setup() else { return };
    s.api.apply(service("web", "10.96.0.20", "TCP"));
    s.api.apply(slice("web", &["10.244.1.5"], "TCP"));
    // A KubeProxyConfiguration file: supported fields are used, others warned about.
    let config = s.kubeconfig.with_extension("config.yaml");
    std::fs::write(
        &config,
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nmode: nftables\n\
         nftables: {minSyncPeriod: 100ms, syncPeriod: 5s}\nwinkernel: {enableDSR: true}\n",
    )
    .unwrap();
    let proxier = s.node.proxier_run(&s.kubeconfig, &["--config", config.to_str().unwrap()]);

    eventually("web answers from a", WAIT, || s.node.tcp_probe(WEB).as_deref() == Ok("a"));
    // Endpoint change: traffic follows.
    s.api.apply(slice("web", &["10.244.1.6"], "TCP"));
    eventually("web answers from b", WAIT, || s.node.tcp_probe(WEB).as_deref() == Ok("b"));
    // No endpoints: rejected at once.
    s.api.delete(Kind::EndpointSlice, "default", "web-x");
    eventually("web is refused", WAIT, || s.node.tcp_probe(WEB).is_err_and(|e| e.contains("refused")));
    // A second Service appears; deleting the first removes its rules.
    s.api.apply(service("api", "10.96.0.30", "TCP"));
    s.api.apply(slice("api", &["10.244.1.7"], "TCP"));
    eventually("api answers from c", WAIT, || s.node.tcp_probe("10.96.0.30:80").as_deref() == Ok("c"));
    s.api.delete(Kind::Service, "default", "web");
    eventually("web's rules are gone", WAIT, || s.node.table().is_some_and(|t| !t.contains("10.96.0.20")));

    // Health and metrics.
    let (status, body) = s.node.http_get("127.0.0.1:10256", "/healthz").expect("healthz answers");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("nodeEligible"), "{body}");
    assert_eq!(s.node.http_get("127.0.0.1:10256", "/livez").map(|r| r.0), Some(200));
    let (status, metrics) = s.node.http_get("127.0.0.1:10249", "/metrics").expect("metrics answer");
    assert_eq!(status, 200);
    for name in [
        "kubeproxy_sync_proxy_rules_duration_seconds_bucket",
        "kubeproxy_sync_full_proxy_rules_duration_seconds_count 1",
        "kubeproxy_sync_partial_proxy_rules_duration_seconds_count",
        "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
        "kubeproxy_network_programming_duration_seconds_count",
        "kubeproxy_sync_proxy_rules_no_local_endpoints_total{traffic_policy=\"internal\"} 0",
        "kubeproxy_sync_proxy_rules_nftables_sync_failures_total 0",
        "kubeproxy_proxy_healthz_total{code=\"200\"}",
        "proxier_refused_services 0",
    ] {
        assert!(metrics.contains(name), "missing {name} in\n{metrics}");
    }
    assert!(proxier.log().contains("unknown or unsupported configuration field ignored"), "{}", proxier.log());
    assert!(proxier.log().contains("winkernel"), "{}", proxier.log());
    drop(proxier);
}

#[test]
fn health_check_node_port_for_local_services() {
    let Some(s) = setup() else { return };
    let mut local = service("local", "10.96.0.40", "TCP");
    local["spec"]["type"] = json!("NodePort");
    local["spec"]["externalTrafficPolicy"] = json!("Local");
    local["spec"]["healthCheckNodePort"] = json!(30999);
    local["spec"]["ports"][0]["nodePort"] = json!(30080);
    s.api.apply(local);
    s.api.apply(slice("local", &["10.244.1.5"], "TCP"));
    let _proxier = s.node.proxier_run(&s.kubeconfig, &[]);
    // Served where NodePorts are (the node's primary address), not on every address.
    let check = || s.node.http_get(&format!("{NODE_IP}:30999"), "/");
    eventually("health check answers 200", WAIT, || check().is_some_and(|(status, _)| status == 200));
    assert!(s.node.http_get("127.0.0.1:30999", "/").is_none(), "health check served on loopback");
    let (_, body) = check().unwrap();
    let body: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(body["localEndpoints"], 1);
    assert_eq!(body["service"], json!({"namespace": "default", "name": "local"}));
    // The NodePort itself is served with the local endpoint.
    eventually("the NodePort answers", WAIT, || s.node.tcp_probe(&format!("{NODE_IP}:30080")).as_deref() == Ok("a"));

    // The endpoint moves to another node: 503 with no local endpoint.
    let mut remote = slice("local", &["10.244.1.6"], "TCP");
    remote["endpoints"][0]["nodeName"] = json!("node-b");
    s.api.apply(remote);
    eventually("health check answers 503", WAIT, || {
        check().is_some_and(|(status, b)| status == 503 && b.contains("\"localEndpoints\":0"))
    });
    // Policy back to Cluster: the listener closes.
    let mut cluster = service("local", "10.96.0.40", "TCP");
    cluster["spec"]["type"] = json!("NodePort");
    cluster["spec"]["ports"][0]["nodePort"] = json!(30080);
    s.api.apply(cluster);
    eventually("health check listener closed", WAIT, || check().is_none());
}

#[test]
fn watches_survive_drops_outages_and_410_gone() {
    let Some(s) = setup() else { return };
    s.api.apply(service("web", "10.96.0.20", "TCP"));
    s.api.apply(slice("web", &["10.244.1.5"], "TCP"));
    s.api.apply(service("old", "10.96.0.50", "TCP"));
    s.api.apply(slice("old", &["10.244.1.7"], "TCP"));
    s.api.apply(service("third", "10.96.0.60", "TCP"));
    // Lists are paged (the fake server returns at most 2 items per page); the first continue expires.
    s.api.expire_next_continue();
    let proxier = s.node.proxier_run(&s.kubeconfig, &[]);
    eventually("web answers", WAIT, || s.node.tcp_probe(WEB).as_deref() == Ok("a"));
    assert!(s.node.tcp_probe("10.96.0.50:80").as_deref() == Ok("c"));
    let requests = s.api.requests();
    assert!(requests.iter().any(|r| r.contains("continue=")), "paged lists: {requests:#?}");
    assert!(
        requests.iter().any(|r| r.contains("watch=true") && r.contains("allowWatchBookmarks=true")),
        "{requests:#?}"
    );

    // Dropped watch connections: resumed from the last resourceVersion, changes still arrive.
    s.api.drop_watches();
    s.api.apply(slice("web", &["10.244.1.6"], "TCP"));
    eventually("web moves to b after dropped watches", WAIT, || s.node.tcp_probe(WEB).as_deref() == Ok("b"));

    // The API server goes away: rules stay and keep working.
    s.api.set_down(true);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(s.node.tcp_probe(WEB).as_deref(), Ok("b"), "rules must stay while the API server is down");
    // While it is down, things change and its history is compacted: resuming watches get 410 Gone
    // and must relist; the relist shows `old` deleted and web's endpoints changed.
    s.api.delete(Kind::Service, "default", "old");
    s.api.delete(Kind::EndpointSlice, "default", "old-x");
    s.api.apply(slice("web", &["10.244.1.7"], "TCP"));
    s.api.compact();
    let lists_before = s.api.requests().iter().filter(|r| !r.contains("watch=true")).count();
    s.api.set_down(false);
    let converged = (0..200).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        s.node.tcp_probe(WEB).as_deref() == Ok("c")
    });
    assert!(converged, "web did not move to c after the relist; requests: {:#?}", s.api.requests());
    eventually("old's rules are gone", WAIT, || s.node.table().is_some_and(|t| !t.contains("10.96.0.50")));
    let lists_after = s.api.requests().iter().filter(|r| !r.contains("watch=true")).count();
    assert!(lists_after > lists_before, "410 Gone must lead to a new list");
    let (status, _) = s.node.http_get("127.0.0.1:10256", "/healthz").unwrap();
    assert_eq!(status, 200);
    drop(proxier);
}

#[test]
fn sigterm_leaves_rules_and_a_restart_keeps_connections() {
    let Some(s) = setup() else { return };
    s.api.apply(service("web", "10.96.0.20", "TCP"));
    s.api.apply(slice("web", &["10.244.1.5"], "TCP"));
    let first = s.node.proxier_run(&s.kubeconfig, &[]);
    eventually("web answers", WAIT, || s.node.tcp_probe(WEB).as_deref() == Ok("a"));
    let mut long_lived = s.node.tcp_connect(WEB);
    assert_eq!(long_lived.server, "a");

    let status = first.terminate();
    assert!(status.success(), "SIGTERM is a clean stop: {status}");
    assert!(s.node.table().is_some_and(|t| t.contains("10.96.0.20")), "rules stay after SIGTERM");
    assert_eq!(s.node.tcp_probe(WEB).as_deref(), Ok("a"));
    assert_eq!(long_lived.say("one").unwrap(), "a one");

    // Restart while the endpoint set changes: the new run takes the table over in one transaction.
    s.api.apply(slice("web", &["10.244.1.5", "10.244.1.6"], "TCP"));
    let second = s.node.proxier_run(&s.kubeconfig, &[]);
    // Probe continuously across the takeover: every new connection is answered.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut seen_b = false;
    while Instant::now() < deadline && !seen_b {
        let answer = s.node.tcp_probe(WEB);
        assert!(matches!(answer.as_deref(), Ok("a") | Ok("b")), "a new connection failed during takeover: {answer:?}");
        seen_b |= answer.as_deref() == Ok("b");
    }
    assert!(seen_b, "the restarted proxier programmed the new endpoint");
    assert_eq!(long_lived.say("two").unwrap(), "a two", "the established connection survived the restart");
    assert!(second.log().contains("kind=Full") || second.log().contains("Full"), "{}", second.log());
}

#[test]
fn udp_flows_move_after_conntrack_cleanup() {
    let Some(s) = setup() else { return };
    if s.node.exec("conntrack", &["-V"]).status.code().is_none_or(|c| c != 0) {
        assert!(std::env::var_os("PROXIER_REQUIRE_NETNS").is_none(), "conntrack is not installed");
        eprintln!("SKIP: conntrack is not installed");
        return;
    }
    s.api.apply(service("dns", "10.96.0.10", "UDP"));
    let _proxier = s.node.proxier_run(&s.kubeconfig, &[]);
    eventually("dns is programmed", WAIT, || s.node.table().is_some_and(|t| t.contains("10.96.0.10")));
    // No endpoint: the datagram is rejected, leaving a conntrack entry for this 5-tuple.
    let client = s.node.udp_client("10.96.0.10:80");
    assert!(udp_ask(&client).is_err());
    // An endpoint appears: without cleanup the old entry would keep this flow from being DNATed.
    s.api.apply(slice("dns", &["10.244.1.5"], "UDP"));
    eventually("the same UDP flow reaches a", WAIT, || udp_ask(&client).as_deref() == Ok("a"));
    // The endpoint is replaced: the flow's entry (DNATed to a) is deleted and it moves to b.
    s.api.apply(slice("dns", &["10.244.1.6"], "UDP"));
    eventually("the same UDP flow moves to b", WAIT, || udp_ask(&client).as_deref() == Ok("b"));
}

#[test]
fn nft_failures_keep_the_rules_and_drift_is_repaired() {
    let Some(s) = setup() else { return };
    // An nft that fails while the flag file exists.
    let flag = std::env::temp_dir().join(format!("{}.nft-fails", s.node.name));
    let wrapper = std::env::temp_dir().join(format!("{}.nft", s.node.name));
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nif [ -e {} ]; then echo 'injected failure' >&2; exit 1; fi\nexec nft \"$@\"\n",
            flag.display()
        ),
    )
    .unwrap();
    std::process::Command::new("chmod").arg("+x").arg(&wrapper).status().unwrap();
    struct Cleanup(Vec<std::path::PathBuf>);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            self.0.iter().for_each(|p| drop(std::fs::remove_file(p)));
        }
    }
    let _cleanup = Cleanup(vec![flag.clone(), wrapper.clone()]);

    s.api.apply(service("web", "10.96.0.20", "TCP"));
    s.api.apply(slice("web", &["10.244.1.5"], "TCP"));
    let proxier = s.node.proxier_run(&s.kubeconfig, &["--nft", wrapper.to_str().unwrap()]);
    eventually("web answers", WAIT, || s.node.tcp_probe(WEB).as_deref() == Ok("a"));

    std::fs::write(&flag, "").unwrap();
    s.api.apply(slice("web", &["10.244.1.6"], "TCP"));
    eventually("the failure is logged", WAIT, || proxier.log().contains("injected failure"));
    assert_eq!(s.node.tcp_probe(WEB).as_deref(), Ok("a"), "the previous rules are intact");
    let (_, metrics) = s.node.http_get("127.0.0.1:10249", "/metrics").unwrap();
    assert!(!metrics.contains("kubeproxy_sync_proxy_rules_nftables_sync_failures_total 0\n"), "{metrics}");
    std::fs::remove_file(&flag).unwrap();
    eventually("the retried full sync programs b", WAIT, || s.node.tcp_probe(WEB).as_deref() == Ok("b"));

    // Someone empties proxier's service map behind its back: the periodic resync (3s) repairs it.
    s.node.exec_ok("nft", &["flush", "map", "ip", "proxier", "service-ips"]);
    assert!(s.node.tcp_probe(WEB).is_err());
    eventually("the resync repairs the table", WAIT, || s.node.tcp_probe(WEB).as_deref() == Ok("b"));
    assert!(proxier.log().contains("changed behind its back"), "{}", proxier.log());
}

/// A kernel refusing one Service's rules (simulated: an nft wrapper refusing SCTP, as a kernel without
/// it would): the other Services are programmed and follow changes, the refused one is logged and
/// counted, and once it changes to TCP it is programmed.
#[test]
fn a_refused_service_is_left_out_and_the_rest_programmed() {
    let Some(s) = setup() else { return };
    let wrapper = std::env::temp_dir().join(format!("{}.nft-no-sctp", s.node.name));
    std::fs::write(
        &wrapper,
        "#!/bin/sh\ninput=$(cat)\ncase \"$input\" in *'\"sctp\"'*) echo 'Error: Could not process rule: Protocol not supported' >&2; exit 1;; esac\nprintf '%s' \"$input\" | exec nft \"$@\"\n",
    )
    .unwrap();
    std::process::Command::new("chmod").arg("+x").arg(&wrapper).status().unwrap();
    struct Cleanup(std::path::PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let _cleanup = Cleanup(wrapper.clone());

    s.api.apply(service("web", "10.96.0.20", "TCP"));
    s.api.apply(slice("web", &["10.244.1.5"], "TCP"));
    s.api.apply(service("sig", "10.96.0.30", "SCTP"));
    s.api.apply(slice("sig", &["10.244.1.6"], "SCTP"));
    let proxier = s.node.proxier_run(&s.kubeconfig, &["--nft", wrapper.to_str().unwrap()]);
    eventually("web answers", WAIT, || s.node.tcp_probe(WEB).as_deref() == Ok("a"));
    eventually("sig is counted as refused", WAIT, || {
        s.node.http_get("127.0.0.1:10249", "/metrics").is_some_and(|(_, m)| m.contains("proxier_refused_services 1"))
    });
    assert!(proxier.log().contains("refuses this Service's rules"), "{}", proxier.log());

    // Other Services follow their changes as usual.
    s.api.apply(slice("web", &["10.244.1.7"], "TCP"));
    eventually("web moves to c", WAIT, || s.node.tcp_probe(WEB).as_deref() == Ok("c"));

    // Fixed: sig becomes TCP and is programmed.
    s.api.apply(service("sig", "10.96.0.30", "TCP"));
    s.api.apply(slice("sig", &["10.244.1.6"], "TCP"));
    eventually("sig answers", WAIT, || s.node.tcp_probe("10.96.0.30:80").as_deref() == Ok("b"));
    eventually("nothing is refused", WAIT, || {
        s.node.http_get("127.0.0.1:10249", "/metrics").is_some_and(|(_, m)| m.contains("proxier_refused_services 0"))
    });
}

/// `proxier run` on node-a of a two-node test bed: pods on both nodes, the outside client reaching
/// the ClusterIP and the NodePort through node-a, a long-lived connection from the client kept
/// across a restart, and endpoint changes followed.
#[test]
fn run_on_a_test_bed_node() {
    use proxier_testkit::TestBed;
    use run_support::node::{serve_in, tcp_connect_in, tcp_probe_in};
    if !node::netns_available("run_on_a_test_bed_node") {
        return;
    }
    let mut bed = TestBed::new(2).expect("test bed");
    bed.add_pod(1, "web-a").expect("pod");
    bed.add_pod(2, "web-b").expect("pod");
    let (a, b) = (bed.pod("web-a"), bed.pod("web-b"));
    let _servers = [serve_in(a.netns(), "web-a", "0.0.0.0", 8080), serve_in(b.netns(), "web-b", "0.0.0.0", 8080)];
    let node_a = bed.node(1);
    let listener = node_a.netns().run(|| std::net::TcpListener::bind("127.0.0.1:6443").expect("bind API server"));
    let api = ApiServer::start(listener);
    let kubeconfig = std::env::temp_dir().join(format!("{}.kubeconfig", node_a.netns().name()));
    api.write_kubeconfig(&kubeconfig);
    struct Remove(std::path::PathBuf);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let _remove = Remove(kubeconfig.clone());
    for node in bed.nodes() {
        api.apply(json!({"kind": "Node", "apiVersion": "v1", "metadata": {"name": node.name()},
                         "status": {"addresses": [{"type": "InternalIP", "address": node.ipv4().to_string()}]}}));
    }
    let mut web = service("web", "10.96.0.20", "TCP");
    web["spec"]["type"] = json!("NodePort");
    web["spec"]["ports"][0]["nodePort"] = json!(30080);
    api.apply(web);
    let endpoint = |pod: &proxier_testkit::Pod| json!({"addresses": [pod.ipv4().to_string()], "conditions": {"ready": true}, "nodeName": pod.node_name()});
    let mut both = slice("web", &[], "TCP");
    both["endpoints"] = json!([endpoint(a), endpoint(b)]);
    api.apply(both);

    let start = |extra: &[&str]| {
        let mut command = std::process::Command::new("ip");
        command
            .args(["netns", "exec", node_a.netns().name(), env!("CARGO_BIN_EXE_proxier"), "run", "--node", "node-a"])
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["--cluster-cidr", "10.244.0.0/16", "--min-sync-period", "100ms"])
            .args(["--healthz-bind-address", "127.0.0.1:10256", "--metrics-bind-address", ""])
            .args(extra)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        KillOnDrop(command.spawn().expect("proxier run"))
    };
    struct KillOnDrop(std::process::Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let client = bed.client();
    let node_port = format!("{}:30080", node_a.ipv4());
    let mut first = start(&[]);
    let reaches_both = |target: &str| {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..40 {
            if let Ok(name) = tcp_probe_in(client, target) {
                seen.insert(name);
            }
            if seen.len() == 2 {
                break;
            }
        }
        seen.len() == 2
    };
    eventually("the client reaches both pods through the ClusterIP", WAIT, || reaches_both(WEB));
    assert!(reaches_both(&node_port), "the client reaches both pods through the NodePort");

    // A long-lived connection through the NodePort, across a SIGTERM and a restart.
    let mut long_lived = tcp_connect_in(client, &node_port);
    let server = long_lived.server.clone();
    // SAFETY: kill(2) on the pid of our own child.
    unsafe { libc::kill(first.0.id() as i32, libc::SIGTERM) };
    assert!(first.0.wait().expect("wait").success(), "a clean stop on SIGTERM");
    assert_eq!(long_lived.say("during").unwrap(), format!("{server} during"));
    let _second = start(&[]);
    eventually("the restarted proxier is healthy", WAIT, || {
        node_a.netns().run(|| std::net::TcpStream::connect("127.0.0.1:10256").is_ok())
    });
    assert_eq!(long_lived.say("after").unwrap(), format!("{server} after"), "survived the restart");

    // web-b goes away: every new connection lands on web-a, from the client and from a pod.
    let mut only_a = slice("web", &[], "TCP");
    only_a["endpoints"] = json!([endpoint(a)]);
    api.apply(only_a);
    eventually("only web-a answers", WAIT, || (0..10).all(|_| tcp_probe_in(client, WEB).as_deref() == Ok("web-a")));
    assert_eq!(tcp_probe_in(a.netns(), WEB).as_deref(), Ok("web-a"), "a pod on node-a reaches web-a (hairpin)");
}

/// `proxier stats -o json` in the node: connections sent to `default/web:p` through its ClusterIP.
fn web_connections(node: &Node) -> Option<u64> {
    let stats = node.exec_ok(env!("CARGO_BIN_EXE_proxier"), &["stats", "-o", "json"]);
    let stats: Value = serde_json::from_str(&stats).expect("stats JSON");
    let services = stats["services"].as_array()?;
    let web = services.iter().find(|s| s["name"] == "web" && s["via"] == "cluster_ip")?;
    web["connections"].as_u64()
}

#[test]
fn service_counters_are_exported_and_survive_incremental_syncs_and_a_restart() {
    let Some(s) = setup() else { return };
    s.api.apply(service("web", "10.96.0.20", "TCP"));
    s.api.apply(slice("web", &["10.244.1.5"], "TCP"));
    let first = s.node.proxier_run(&s.kubeconfig, &[]);
    eventually("web answers", WAIT, || s.node.tcp_probe(WEB).as_deref() == Ok("a"));
    let before = web_connections(&s.node).expect("web is counted");
    assert!(before >= 1);
    for _ in 0..3 {
        assert_eq!(s.node.tcp_probe(WEB).as_deref(), Ok("a"));
    }
    assert_eq!(web_connections(&s.node), Some(before + 3));
    let labels = r#"{namespace="default",service="web",port="p",protocol="tcp",via="cluster_ip"}"#;
    let (_, metrics) = s.node.http_get("127.0.0.1:10249", "/metrics").expect("metrics answer");
    assert!(metrics.contains(&format!("proxier_service_connections_total{labels} {}\n", before + 3)), "{metrics}");
    assert!(metrics.contains(&format!("proxier_service_rejected_connections_total{labels} 0\n")), "{metrics}");
    assert!(metrics.contains(&format!("proxier_service_dropped_connections_total{labels} 0\n")), "{metrics}");

    // An incremental sync that re-creates web's map element (one endpoint becomes two) keeps the count.
    s.api.apply(slice("web", &["10.244.1.5", "10.244.1.6"], "TCP"));
    eventually("the second endpoint is programmed", WAIT, || {
        s.node.table().is_some_and(|t| t.contains("10.244.1.6") && t.contains("goto balance-2"))
    });
    assert_eq!(web_connections(&s.node), Some(before + 3));
    assert!(first.log().contains("Partial") || first.log().contains("partial"), "{}", first.log());
    // A restart replaces the tables whole, and carries the counts over.
    assert!(first.terminate().success());
    let second = s.node.proxier_run(&s.kubeconfig, &[]);
    eventually("the restarted proxier synced", WAIT, || second.log().contains("Full"));
    assert_eq!(web_connections(&s.node), Some(before + 3));
    assert!(s.node.tcp_probe(WEB).is_ok());
    assert_eq!(web_connections(&s.node), Some(before + 4));
    // A deleted Service's series disappears.
    s.api.delete(Kind::Service, "default", "web");
    eventually("web's counters are gone", WAIT, || web_connections(&s.node).is_none());
    eventually("web's series is gone", Duration::from_secs(20), || {
        s.node.http_get("127.0.0.1:10249", "/metrics").is_some_and(|(_, m)| !m.contains(r#"service="web""#))
    });
    drop(second);
}

//! `proxier run` end to end: the real binary in a node's network namespace, watching a fake API server
//! (proxier-testkit's stand-in `apiserver`) that runs inside the same namespace, with traffic checked by probes.

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
    api.write_kubeconfig(&kubeconfig).expect("write kubeconfig");
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

/// An `nft` stand-in for injecting faults: a script run in place of `nft` (`--nft`). Dropping it removes
/// the script and the files named, and kills the process whose pid the script left in `pid_file` (a
/// stand-in that hangs is this test's own process).
struct NftStandIn {
    script: std::path::PathBuf,
    files: Vec<std::path::PathBuf>,
    pid_file: Option<std::path::PathBuf>,
}

impl NftStandIn {
    fn new(
        node: &str,
        name: &str,
        text: String,
        files: Vec<std::path::PathBuf>,
        pid_file: Option<std::path::PathBuf>,
    ) -> NftStandIn {
        let script = std::env::temp_dir().join(format!("{node}.{name}"));
        std::fs::write(&script, text).unwrap();
        std::process::Command::new("chmod").arg("+x").arg(&script).status().unwrap();
        NftStandIn { script, files, pid_file }
    }

    fn path(&self) -> &str {
        self.script.to_str().unwrap()
    }
}

impl Drop for NftStandIn {
    fn drop(&mut self) {
        let pid = self.pid_file.as_ref().and_then(|f| std::fs::read_to_string(f).ok());
        if let Some(pid) = pid.and_then(|p| p.trim().parse::<i32>().ok()) {
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        self.files.iter().chain(&self.pid_file).chain([&self.script]).for_each(|p| drop(std::fs::remove_file(p)));
    }
}

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
    assert!(proxier.log().contains("configuration field ignored"), "{}", proxier.log());
    assert!(proxier.log().contains("winkernel"), "{}", proxier.log());
    drop(proxier);
}

/// Endpoints going and coming back while `proxier run` keeps each backend's position (a removed one's
/// position taken by the last, a new one appended): every endpoint of the current set gets new
/// connections, and none that was removed does.
#[test]
fn balance_reaches_every_endpoint_as_endpoints_come_and_go() {
    let Some(s) = setup() else { return };
    s.api.apply(service("web", "10.96.0.20", "TCP"));
    s.api.apply(slice("web", &["10.244.1.5", "10.244.1.6", "10.244.1.7"], "TCP"));
    let _proxier = s.node.proxier_run(&s.kubeconfig, &[]);
    // 30 new connections over three endpoints miss one with probability (2/3)^30, about 5e-6.
    let answers =
        || -> std::collections::BTreeSet<String> { (0..30).filter_map(|_| s.node.tcp_probe(WEB).ok()).collect() };
    let all = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<std::collections::BTreeSet<_>>();
    eventually("a, b and c answer", WAIT, || answers() == all(&["a", "b", "c"]));
    // The first goes: the last takes its position.
    s.api.apply(slice("web", &["10.244.1.6", "10.244.1.7"], "TCP"));
    eventually("only b and c answer", WAIT, || answers() == all(&["b", "c"]));
    // It comes back: appended.
    s.api.apply(slice("web", &["10.244.1.5", "10.244.1.6", "10.244.1.7"], "TCP"));
    eventually("a, b and c answer again", WAIT, || answers() == all(&["a", "b", "c"]));
    // The one in the middle goes.
    s.api.apply(slice("web", &["10.244.1.5", "10.244.1.7"], "TCP"));
    eventually("only a and c answer", WAIT, || answers() == all(&["a", "c"]));
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

/// SIGTERM in the middle of a sync (here an `nft` that hangs) ends the process within a second: the
/// sync is not waited for, and the rules of the last completed sync stay.
#[test]
fn sigterm_mid_sync_exits_at_once() {
    let Some(s) = setup() else { return };
    let flag = std::env::temp_dir().join(format!("{}.nft-hangs", s.node.name));
    let hanging = std::env::temp_dir().join(format!("{}.nft-hanging", s.node.name));
    let wrapper = NftStandIn::new(
        &s.node.name,
        "nft-slow",
        format!(
            "#!/bin/sh\nif [ -e {} ]; then echo $$ > {}; exec sleep 60; fi\nexec nft \"$@\"\n",
            flag.display(),
            hanging.display()
        ),
        vec![flag.clone()],
        Some(hanging.clone()),
    );

    s.api.apply(service("web", "10.96.0.20", "TCP"));
    s.api.apply(slice("web", &["10.244.1.5"], "TCP"));
    // The hang is injected into `nft`: every change goes through it.
    let proxier = s.node.proxier_run(&s.kubeconfig, &["--nft", wrapper.path(), "--netlink", "false"]);
    eventually("web answers", WAIT, || s.node.tcp_probe(WEB).as_deref() == Ok("a"));
    std::fs::write(&flag, "").unwrap();
    s.api.apply(slice("web", &["10.244.1.6"], "TCP"));
    eventually("a sync is under way", WAIT, || hanging.exists());
    let started = Instant::now();
    let status = proxier.terminate();
    let took = started.elapsed();
    assert!(status.success(), "SIGTERM is a clean stop: {status}");
    // The target is one second; the margin is for a loaded machine (the sync would take a minute).
    assert!(took < Duration::from_secs(5), "SIGTERM took {took:?} mid-sync");
    assert_eq!(s.node.tcp_probe(WEB).as_deref(), Ok("a"), "the last completed sync's rules stay");
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
    // The cleanup runs were timed.
    let (_, metrics) = s.node.http_get("127.0.0.1:10249", "/metrics").expect("metrics answer");
    let runs = metrics
        .lines()
        .find_map(|l| l.strip_prefix("kubeproxy_conntrack_reconciler_sync_duration_seconds_count "))
        .and_then(|n| n.trim().parse::<u64>().ok());
    assert!(runs.is_some_and(|n| n >= 1), "{metrics}");
}

#[test]
fn nft_failures_keep_the_rules_and_drift_is_repaired() {
    let Some(s) = setup() else { return };
    // An nft that fails while the flag file exists.
    let flag = std::env::temp_dir().join(format!("{}.nft-fails", s.node.name));
    let wrapper = NftStandIn::new(
        &s.node.name,
        "nft",
        format!(
            "#!/bin/sh\nif [ -e {} ]; then echo 'injected failure' >&2; exit 1; fi\nexec nft \"$@\"\n",
            flag.display()
        ),
        vec![flag.clone()],
        None,
    );

    s.api.apply(service("web", "10.96.0.20", "TCP"));
    s.api.apply(slice("web", &["10.244.1.5"], "TCP"));
    // Failures are injected into `nft`: every change goes through it.
    let proxier = s.node.proxier_run(&s.kubeconfig, &["--nft", wrapper.path(), "--netlink", "false"]);
    eventually("web answers", WAIT, || s.node.tcp_probe(WEB).as_deref() == Ok("a"));

    std::fs::write(&flag, "").unwrap();
    s.api.apply(slice("web", &["10.244.1.6"], "TCP"));
    eventually("the failure is logged", WAIT, || proxier.log().contains("injected failure"));
    assert_eq!(s.node.tcp_probe(WEB).as_deref(), Ok("a"), "the previous rules are intact");
    let (_, metrics) = s.node.http_get("127.0.0.1:10249", "/metrics").unwrap();
    assert!(!metrics.contains("kubeproxy_sync_proxy_rules_nftables_sync_failures_total 0\n"), "{metrics}");
    std::fs::remove_file(&flag).unwrap();
    eventually("the retried full sync programs b", WAIT, || s.node.tcp_probe(WEB).as_deref() == Ok("b"));

    // Someone empties proxier's service set behind its back: the periodic resync (3s) repairs it.
    s.node.exec_ok("nft", &["flush", "set", "ip", "proxier", "service-ips"]);
    assert!(s.node.tcp_probe(WEB).is_err());
    eventually("the resync repairs the table", WAIT, || s.node.tcp_probe(WEB).as_deref() == Ok("b"));
    assert!(proxier.log().contains("changed behind its back"), "{}", proxier.log());
}

/// With the netlink backend (the default): endpoint changes go over the socket, and a hand edit of
/// proxier's table is seen in nf_tables' events and repaired by the periodic check (3s here) without
/// listing the tables; an edit of another table is left alone.
#[test]
fn netlink_changes_and_event_driven_drift_repair() {
    let Some(s) = setup() else { return };
    s.api.apply(service("web", "10.96.0.20", "TCP"));
    s.api.apply(slice("web", &["10.244.1.5"], "TCP"));
    let proxier = s.node.proxier_run(&s.kubeconfig, &[]);
    eventually("web answers", WAIT, || s.node.tcp_probe(WEB).as_deref() == Ok("a"));
    s.api.apply(slice("web", &["10.244.1.6"], "TCP"));
    eventually("web moves to b", WAIT, || s.node.tcp_probe(WEB).as_deref() == Ok("b"));
    assert!(
        proxier.log().contains("by_netlink=true"),
        "the endpoint change did not go over netlink:\n{}",
        proxier.log()
    );

    // Another table changing is not drift.
    s.node.exec_ok("nft", &["add", "table", "ip", "someone-else"]);
    s.node.exec_ok("nft", &["add", "chain", "ip", "someone-else", "c"]);
    // Someone empties proxier's service set behind its back: the next periodic check repairs it.
    s.node.exec_ok("nft", &["flush", "set", "ip", "proxier", "service-ips"]);
    assert!(s.node.tcp_probe(WEB).is_err());
    eventually("the check repairs the table", WAIT, || s.node.tcp_probe(WEB).as_deref() == Ok("b"));
    // The repair is logged once its commit is in: the traffic can answer a moment before the line is written.
    eventually("the repair is logged", WAIT, || proxier.log().contains("behind its back: replaced them"));
    let log = proxier.log();
    assert!(log.contains("changed behind its back"), "{log}");
    assert_eq!(log.matches("behind its back: replaced them").count(), 1, "one repair, for the one edit:\n{log}");
    assert!(!log.contains("cannot tell"), "{log}");
    assert!(s.node.exec_ok("nft", &["list", "tables"]).contains("someone-else"), "the other table is left alone");
}

/// A kernel refusing one Service's rules (simulated: an nft wrapper refusing SCTP, as a kernel without
/// it would): the other Services are programmed and follow changes, the refused one is logged and
/// counted, and once it changes to TCP it is programmed.
#[test]
fn a_refused_service_is_left_out_and_the_rest_programmed() {
    let Some(s) = setup() else { return };
    let wrapper = NftStandIn::new(
        &s.node.name,
        "nft-no-sctp",
        "#!/bin/sh\ninput=$(cat)\ncase \"$input\" in *'\"sctp\"'*) echo 'Error: Could not process rule: Protocol not supported' >&2; exit 1;; esac\nprintf '%s' \"$input\" | exec nft \"$@\"\n".to_owned(),
        Vec::new(),
        None,
    );

    s.api.apply(service("web", "10.96.0.20", "TCP"));
    s.api.apply(slice("web", &["10.244.1.5"], "TCP"));
    s.api.apply(service("sig", "10.96.0.30", "SCTP"));
    s.api.apply(slice("sig", &["10.244.1.6"], "SCTP"));
    // The stand-in refuses as a kernel without SCTP would; this kernel has it, so the loads go
    // through the stand-in (`--netlink false`) rather than the socket.
    let proxier = s.node.proxier_run(&s.kubeconfig, &["--netlink", "false", "--nft", wrapper.path()]);
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
    api.write_kubeconfig(&kubeconfig).expect("write kubeconfig");
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

    // An incremental sync that moves web to another endpoint count (one endpoint becomes two) keeps the
    // count: its counted element stays where it is.
    s.api.apply(slice("web", &["10.244.1.5", "10.244.1.6"], "TCP"));
    eventually("the second endpoint is programmed", WAIT, || {
        s.node.table().is_some_and(|t| {
            t.contains("10.244.1.6")
                && t.split("set balance-2-ips {")
                    .nth(1)
                    .is_some_and(|set| set.split('}').next().is_some_and(|elements| elements.contains("10.96.0.20")))
        })
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

/// kubeadm's kube-proxy configuration as kubeadm's own test of what it writes holds it (testdata/
/// kube-proxy/kubeadm-v1.13-defaulted.conf, from kubernetes/kubernetes), unchanged.
#[test]
fn kubeadm_configuration_runs_unchanged() {
    runs_unchanged("kubeadm-v1.13-defaulted.conf", "10.148.0.0/16");
}

/// The kube-proxy ConfigMap of a current kubeadm (testdata/kube-proxy/kubeadm-config.conf): every field
/// but three at its zero value.
#[test]
fn kubeadm_v1_31_configmap_runs_unchanged() {
    runs_unchanged("kubeadm-config.conf", "10.244.0.0/16");
}

/// A kubeadm kube-proxy configuration (testdata/kube-proxy), unchanged, as a swapped DaemonSet would run
/// it: `--config` plus `--hostname-override`, and the kubeconfig (kubeadm's names a path inside the
/// kube-proxy pod). Health on 0.0.0.0:10256, metrics and /proxyMode on 127.0.0.1:10249 (inside the
/// test's namespace), conntrack timeouts set in that namespace and not on the host, kube-proxy's
/// leftovers warned about and left alone, info logs by default, no warning for any of its fields.
fn runs_unchanged(file: &str, cluster_cidr: &str) {
    let Some(s) = setup() else { return };
    s.api.apply(service("web", "10.96.0.20", "TCP"));
    s.api.apply(slice("web", &["10.244.1.5"], "TCP"));
    // kube-proxy's leftovers: its nftables table, and an iptables-nft chain.
    s.node.exec_ok("nft", &["add table ip kube-proxy; add chain ip kube-proxy services"]);
    s.node.exec_ok("nft", &["add table ip nat; add chain ip nat KUBE-SERVICES"]);
    let netfilter = "/proc/sys/net/netfilter";
    let host = |name: &str| std::fs::read_to_string(format!("{netfilter}/{name}")).ok();
    let host_before: Vec<Option<String>> =
        ["nf_conntrack_max", "nf_conntrack_tcp_timeout_established"].iter().map(|n| host(n)).collect();
    let config = format!("{}/../../testdata/kube-proxy/{file}", env!("CARGO_MANIFEST_DIR"));
    let kubeconfig = s.kubeconfig.to_str().unwrap();
    let args = ["run", "--config", &config, "--hostname-override", "node-a", "--kubeconfig", kubeconfig];
    let proxier = s.node.proxier(&args, None);

    eventually("web answers from a", WAIT, || s.node.tcp_probe(WEB).as_deref() == Ok("a"));
    eventually("healthz answers on 10256", WAIT, || {
        s.node.http_get(&format!("{NODE_IP}:10256"), "/healthz").is_some_and(|(status, _)| status == 200)
    });
    let (_, body) = s.node.http_get("127.0.0.1:10256", "/healthz").unwrap();
    let body: Value = serde_json::from_str(&body).expect("healthz JSON");
    assert!(body["lastUpdated"].as_str().is_some_and(|t| !t.is_empty()), "{body}");
    assert!(body["currentTime"].is_string() && body["nodeEligible"] == true, "{body}");
    assert_eq!(s.node.http_get("127.0.0.1:10249", "/proxyMode"), Some((200, "nftables".into())));
    assert_eq!(s.node.http_get("127.0.0.1:10249", "/healthz"), Some((200, "ok".into())));
    let (status, configz) = s.node.http_get("127.0.0.1:10249", "/configz").unwrap();
    assert_eq!(status, 200);
    let configz: Value = serde_json::from_str(&configz).unwrap();
    assert_eq!(configz["kubeproxy.config.k8s.io"]["clusterCIDR"], cluster_cidr);
    assert_eq!(configz["kubeproxy.config.k8s.io"]["nftables"]["syncPeriod"], "30s");
    let (_, metrics) = s.node.http_get("127.0.0.1:10249", "/metrics").unwrap();
    for name in [
        "kubeproxy_sync_proxy_rules_service_changes_pending 0",
        "kubeproxy_sync_proxy_rules_endpoint_changes_pending 0",
        "kubeproxy_conntrack_reconciler_sync_duration_seconds_count",
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "proxier_build_info{",
    ] {
        assert!(metrics.contains(name), "missing {name} in\n{metrics}");
    }
    // Metrics stay on loopback, as kube-proxy's default.
    assert!(s.node.http_get(&format!("{NODE_IP}:10249"), "/metrics").is_none());

    // Conntrack: kube-proxy's timeouts in the test's namespace; the host's values untouched.
    let netns = |name: &str| s.node.exec_ok("cat", &[&format!("{netfilter}/{name}")]).trim().to_owned();
    eventually("conntrack timeouts are set", WAIT, || {
        netns("nf_conntrack_tcp_timeout_established") == "86400"
            && netns("nf_conntrack_tcp_timeout_close_wait") == "3600"
    });
    let host_after: Vec<Option<String>> =
        ["nf_conntrack_max", "nf_conntrack_tcp_timeout_established"].iter().map(|n| host(n)).collect();
    assert_eq!(host_before, host_after, "the host's conntrack settings are not proxier's to change");

    // Logs: info by default, a start line, one line per sync, leftovers named, no warning for kubeadm's
    // fields.
    let log = proxier.log();
    assert!(log.contains("proxier starting") && log.contains(cluster_cidr), "{log}");
    assert!(log.contains("synced"), "{log}");
    assert!(log.contains("kube-proxy's rules are still on this node"), "{log}");
    assert!(log.contains("table ip kube-proxy") && log.contains("ip nat KUBE-SERVICES"), "{log}");
    assert!(log.contains("nft delete table ip kube-proxy"), "{log}");
    assert!(!log.contains("configuration field ignored"), "{log}");
    assert!(log.contains("left nf_conntrack_max"), "the global maximum is left to the host: {log}");
    // The leftovers are still there.
    assert!(s.node.exec("nft", &["list", "table", "ip", "kube-proxy"]).status.success());
    assert!(s.node.exec("nft", &["list", "chain", "ip", "nat", "KUBE-SERVICES"]).status.success());
    drop(proxier);
}

/// `--init-only` sets the conntrack values and exits; a read-only /proc/sys gives one warning, not a
/// failure; `--cleanup` removes proxier's tables and nothing else.
#[test]
fn init_only_and_cleanup() {
    if !node::netns_available("proxier run --init-only") {
        return;
    }
    let node = Node::new(&[]);
    let netfilter = "/proc/sys/net/netfilter";
    // nf_conntrack's files exist in a namespace once the module is loaded; a conntrack rule loads it.
    node.exec_ok("nft", &["add table ip probe; add chain ip probe c; add rule ip probe c ct state new accept"]);
    node.exec_ok("nft", &["delete table ip probe"]);
    let read = |name: &str| node.exec_ok("cat", &[&format!("{netfilter}/{name}")]).trim().to_owned();
    let flags = [
        "run",
        "--init-only",
        "--node",
        "n",
        "--conntrack-tcp-timeout-established",
        "2h",
        "--conntrack-tcp-timeout-close-wait",
        "7m",
        "--conntrack-tcp-be-liberal",
        "--conntrack-udp-timeout",
        "45s",
        "--conntrack-udp-timeout-stream",
        "3m",
        "--conntrack-max-per-core",
        "65536",
        "--conntrack-min",
        "1",
    ];
    let host_max = std::fs::read_to_string(format!("{netfilter}/nf_conntrack_max")).ok();
    let status = node.proxier(&flags, None).wait(WAIT);
    assert!(status.success());
    assert_eq!(read("nf_conntrack_tcp_timeout_established"), "7200");
    assert_eq!(read("nf_conntrack_tcp_timeout_close_wait"), "420");
    assert_eq!(read("nf_conntrack_tcp_be_liberal"), "1");
    assert_eq!(read("nf_conntrack_udp_timeout"), "45");
    assert_eq!(read("nf_conntrack_udp_timeout_stream"), "180");
    assert_eq!(std::fs::read_to_string(format!("{netfilter}/nf_conntrack_max")).ok(), host_max);

    // A read-only /proc/sys (a private mount namespace; the host's mounts are untouched).
    let script = format!(
        "mount --bind /proc/sys /proc/sys && mount -o remount,bind,ro /proc/sys && exec {} \"$@\"",
        env!("CARGO_BIN_EXE_proxier")
    );
    let mut args = vec!["-m", "sh", "-c", script.as_str(), "proxier"];
    args.extend(["run", "--init-only", "--node", "n", "--conntrack-tcp-timeout-established", "3h"]);
    let out = node.exec("unshare", &args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stderr.matches("read-only").count(), 1, "one warning: {stderr}");
    assert_eq!(read("nf_conntrack_tcp_timeout_established"), "7200", "unchanged");

    // --cleanup: proxier's tables go, another table stays.
    node.exec_ok("nft", &["add table ip proxier; add table ip6 proxier; add table ip kube-proxy"]);
    let status = node.proxier(&["run", "--cleanup", "--node", "n"], None).wait(WAIT);
    assert!(status.success());
    assert!(!node.exec("nft", &["list", "table", "ip", "proxier"]).status.success());
    assert!(!node.exec("nft", &["list", "table", "ip6", "proxier"]).status.success());
    assert!(node.exec("nft", &["list", "table", "ip", "kube-proxy"]).status.success());
    // On a terminal the text log is coloured, unless NO_COLOR is set (script(1) gives it a terminal).
    let on_terminal = |no_color: &str| {
        let command = format!("{no_color} {} run --cleanup --node n", env!("CARGO_BIN_EXE_proxier"));
        let out = node.exec("script", &["-qec", &command, "/dev/null"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(on_terminal("env -u NO_COLOR").contains("\u{1b}["), "coloured on a terminal");
    let plain = on_terminal("env NO_COLOR=1");
    assert!(plain.contains("cleanup: no table proxier") && !plain.contains("\u{1b}["), "{plain:?}");
    // Another mode is refused with exit 2.
    let out = node.exec(env!("CARGO_BIN_EXE_proxier"), &["run", "--node", "n", "--proxy-mode", "ipvs"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("proxier is an nftables proxy"));
}

/// With the API server down: JSON log lines, each naming the server and the cause, one per backoff step
/// (not one per watch).
#[test]
fn api_errors_are_logged_once_per_backoff_step_as_json() {
    let Some(s) = setup() else { return };
    s.api.set_down(true);
    let proxier = s.node.proxier_run(&s.kubeconfig, &["--logging-format", "json"]);
    std::thread::sleep(Duration::from_secs(4));
    let log = proxier.log();
    let lines: Vec<Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect();
    let errors: Vec<&Value> = lines
        .iter()
        .filter(|l| l["message"] == "API server request failed; the rules stay as they are, retrying with backoff")
        .collect();
    assert!(!errors.is_empty(), "{log}");
    for error in &errors {
        assert!(error["server"].as_str().is_some_and(|s| s.contains("127.0.0.1:6443")), "{error}");
        assert!(error["cause"].as_str().is_some_and(|c| !c.is_empty()), "{error}");
    }
    // Three watches fail at each step: fewer lines than three per step means they were merged.
    let times: Vec<String> = errors.iter().map(|e| e["timestamp"].as_str().unwrap().to_owned()).collect();
    let mut seconds: Vec<f64> = times
        .iter()
        .map(|t| {
            let time = t.split('T').nth(1).unwrap().trim_end_matches('Z');
            let parts: Vec<f64> = time.split(':').map(|p| p.parse().unwrap()).collect();
            parts[0] * 3600.0 + parts[1] * 60.0 + parts[2]
        })
        .collect();
    seconds.sort_by(f64::total_cmp);
    for pair in seconds.windows(2) {
        assert!(pair[1] - pair[0] > 0.3, "two error lines in one backoff step: {times:?}\n{log}");
    }
    assert!(lines.iter().any(|l| l["message"] == "proxier starting"), "{log}");
}

/// `--nodeport-addresses` CIDRs: NodePorts on every local address inside them, following addresses as
/// they come and go; `primary` beside a CIDR adds the Node's primary address.
#[test]
fn nodeports_follow_local_addresses_inside_the_cidrs() {
    let Some(s) = setup() else { return };
    let mut web = service("web", "10.96.0.20", "TCP");
    web["spec"]["type"] = json!("NodePort");
    web["spec"]["ports"][0]["nodePort"] = json!(30080);
    s.api.apply(web);
    s.api.apply(slice("web", &["10.244.1.5"], "TCP"));
    let proxier = s.node.proxier_run(&s.kubeconfig, &["--nodeport-addresses", "10.77.0.0/16"]);
    eventually("web answers", WAIT, || s.node.tcp_probe(WEB).as_deref() == Ok("a"));
    // A secondary address inside the CIDR appears: NodePorts are served on it.
    s.node.exec_ok("ip", &["addr", "add", "10.77.0.5/32", "dev", "dummy0"]);
    eventually("the NodePort answers on the new address", WAIT, || {
        s.node.tcp_probe("10.77.0.5:30080").as_deref() == Ok("a")
    });
    // The Node's own address is outside the CIDR: not served there.
    assert!(s.node.tcp_probe(&format!("{NODE_IP}:30080")).is_err());
    // The address goes away: so does the NodePort on it.
    s.node.exec_ok("ip", &["addr", "del", "10.77.0.5/32", "dev", "dummy0"]);
    eventually("10.77.0.5 leaves the NodePort addresses", WAIT, || {
        s.node.table().is_some_and(|t| !t.contains("10.77.0.5"))
    });
    drop(proxier);

    let _proxier = s.node.proxier_run(&s.kubeconfig, &["--nodeport-addresses", "primary,10.78.0.0/16"]);
    s.node.exec_ok("ip", &["addr", "add", "10.78.0.9/32", "dev", "dummy0"]);
    eventually("served on the primary address", WAIT, || {
        s.node.tcp_probe(&format!("{NODE_IP}:30080")).as_deref() == Ok("a")
    });
    eventually("and on the address inside the CIDR", WAIT, || {
        s.node.tcp_probe("10.78.0.9:30080").as_deref() == Ok("a")
    });
}

/// docs/troubleshooting.md's metrics and logs are real output of `proxier run`, and stay so: run as the
/// page shows (kube-proxy's default servers, the default log level), with one Service answering and one
/// without endpoints, every metric line the page shows is served (same name and labels; values vary)
/// and every log line the page shows is printed (same level, target, message and fields; values vary).
#[test]
fn troubleshooting_shows_what_run_prints() {
    let Some(s) = setup() else { return };
    s.api.apply(service("web", "10.96.0.20", "TCP"));
    s.api.apply(slice("web", &["10.244.1.5"], "TCP"));
    s.api.apply(service("empty", "10.96.0.30", "TCP"));
    let kubeconfig = s.kubeconfig.to_str().unwrap();
    let args = ["run", "--node", "node-a", "--kubeconfig", kubeconfig, "--cluster-cidr", "10.244.0.0/16"];
    let proxier = s.node.proxier(&args, None);
    eventually("web answers", WAIT, || s.node.tcp_probe(WEB).as_deref() == Ok("a"));
    assert_eq!(s.node.tcp_probe(WEB).as_deref(), Ok("a"));
    assert!(s.node.tcp_probe("10.96.0.30:80").is_err_and(|e| e.contains("refused")));
    let metrics = s.node.http_get("127.0.0.1:10249", "/metrics").expect("metrics answer").1;
    // An endpoint change (a partial sync), then the API server going away (a retry naming it).
    s.api.apply(slice("web", &["10.244.1.6"], "TCP"));
    eventually("web answers from b", WAIT, || s.node.tcp_probe(WEB).as_deref() == Ok("b"));
    s.api.set_down(true);
    s.api.drop_watches();
    eventually("the lost API server is logged", WAIT, || proxier.log().contains("127.0.0.1:6443"));
    eventually("the lost API server is retried", WAIT, || proxier.log().matches("WARN").count() >= 2);
    let log = proxier.log();
    drop(proxier);

    let page = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/troubleshooting.md")).unwrap();
    let shown = |heading: &str| -> Vec<String> {
        let section = page.split("\n## ").find(|s| s.starts_with(heading)).unwrap_or_else(|| panic!("{heading}"));
        let blocks = section.split("```text\n").skip(1).map(|b| b.split("```").next().unwrap_or_default());
        let lines = blocks.flat_map(str::lines).filter(|l| !l.starts_with("# ") && !l.starts_with("$ "));
        lines.map(str::to_owned).collect()
    };
    let (metric_lines, log_lines) = (shown("4. Metrics"), shown("5. Logs"));
    assert!(
        metric_lines.len() >= 5 && log_lines.len() >= 3,
        "the metrics and logs steps show real lines; /metrics:\n{metrics}\nthe log:\n{log}"
    );
    let served: Vec<&str> = metrics.lines().filter(|l| !l.starts_with('#')).map(metric_series).collect();
    for line in &metric_lines {
        assert!(served.contains(&metric_series(line)), "{line:?} is not served; /metrics:\n{metrics}");
    }
    let printed: Vec<LogShape> = log.lines().map(log_shape).collect();
    for line in &log_lines {
        let shape = log_shape(line);
        assert!(printed.iter().any(|p| p.covers(&shape)), "{line:?} ({shape:?}) is not printed; the log:\n{log}");
    }
}

/// A metric line without its value: `name{labels}`.
fn metric_series(line: &str) -> &str {
    line.rsplit_once(' ').map_or(line, |(series, _)| series)
}

/// What a text log line says, without the values that change from run to run: level, target, message
/// and the names of its fields.
#[derive(Debug, PartialEq)]
struct LogShape {
    level: String,
    message: String,
    fields: Vec<String>,
}

impl LogShape {
    /// The same line, perhaps cut short on the page (fewer fields shown).
    fn covers(&self, shown: &LogShape) -> bool {
        self.level == shown.level && self.message == shown.message && self.fields.starts_with(&shown.fields)
    }
}

/// `TIMESTAMP  LEVEL target: message key=value key="quoted value"…` as tracing's text format prints it.
fn log_shape(line: &str) -> LogShape {
    let mut words = line.split_whitespace();
    let _timestamp = words.next();
    let level = words.next().unwrap_or_default().to_owned();
    let rest = line.split_once(&format!("{level} ")).map_or("", |(_, rest)| rest.trim_start());
    // Field names: a word followed by `=`, at the start or after a space, outside quotes.
    let (mut fields, mut message_end, mut quoted) = (Vec::new(), rest.len(), false);
    let bytes = rest.as_bytes();
    for (at, &byte) in bytes.iter().enumerate() {
        if byte == b'"' && (at == 0 || bytes[at - 1] != b'\\') {
            quoted = !quoted;
        }
        if quoted || !(at == 0 || bytes[at - 1] == b' ') {
            continue;
        }
        let name_len =
            bytes[at..].iter().take_while(|b| b.is_ascii_alphanumeric() || **b == b'_' || **b == b'.').count();
        if name_len > 0 && bytes.get(at + name_len) == Some(&b'=') {
            message_end = message_end.min(at);
            fields.push(rest[at..at + name_len].to_owned());
        }
    }
    LogShape { level, message: rest[..message_end].trim_end().to_owned(), fields }
}

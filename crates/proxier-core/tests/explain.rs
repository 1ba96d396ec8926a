//! `explain`: addresses, DNS names, Ingress routes and warnings, on the bundled clusters and small inline
//! objects. The text of every bundled cluster is pinned in proxier-cli/tests/tools.rs.

use proxier_core::explain::{ExplainOptions, Explanation, ServiceExplanation, explain};
use proxier_core::{LoadReport, Snapshot};

const SEMANTICS: &str = include_str!("../../../testdata/clusters/semantics.yaml");
const SINGLE_STACK: &str = include_str!("../../../testdata/clusters/single-stack.yaml");
const DUAL_STACK: &str = include_str!("../../../testdata/clusters/dual-stack.json");
const MALFORMED: &str = include_str!("../../../testdata/clusters/malformed.yaml");

fn explained(texts: &[&str]) -> Explanation {
    let mut snapshot = Snapshot::default();
    let mut report = LoadReport::default();
    for (i, text) in texts.iter().enumerate() {
        snapshot.add_text(&format!("text-{i}"), text, &mut report).unwrap();
    }
    explain(&snapshot, &ExplainOptions::default())
}

fn service<'a>(explanation: &'a Explanation, namespace: &str, name: &str) -> &'a ServiceExplanation {
    explanation
        .services
        .iter()
        .find(|s| s.service.namespace == namespace && s.service.name == name)
        .unwrap_or_else(|| panic!("no {namespace}/{name}"))
}

fn dns(service: &ServiceExplanation) -> Vec<String> {
    service.dns.iter().map(|r| format!("{} {} {}", r.name, r.record, r.value)).collect()
}

#[test]
fn cluster_ip_services_have_their_addresses_and_dns_names() {
    let all = explained(&[SINGLE_STACK]);
    let dns_service = service(&all, "kube-system", "kube-dns");
    assert!(dns(dns_service).contains(&"kube-dns.kube-system.svc.cluster.local A 10.96.0.10".to_owned()));
    assert!(
        dns(dns_service).contains(
            &"_dns._udp.kube-dns.kube-system.svc.cluster.local SRV 0 100 53 kube-dns.kube-system.svc.cluster.local"
                .to_owned()
        )
    );
    let udp = &dns_service.ports[0];
    assert_eq!(udp.from_pods[0].address, "10.96.0.10:53");
    assert_eq!(udp.from_nodes[0].address, "10.96.0.10:53");
    assert!(udp.from_outside.is_empty());
    assert_eq!(udp.endpoints.len(), 2);
}

#[test]
fn node_ports_are_listed_on_every_node_and_load_balancer_and_external_ips_from_outside() {
    let all = explained(&[SINGLE_STACK]);
    let web = service(&all, "shop", "web");
    let outside: Vec<&str> = web.ports[0].from_outside.iter().map(|a| a.address.as_str()).collect();
    assert_eq!(outside, ["192.168.49.11:30080", "192.168.49.12:30080"]);
    assert_eq!(web.ports[0].counts.not_serving, 1);

    let ingress = service(&all, "ingress-nginx", "ingress-nginx-controller");
    let outside: Vec<&str> = ingress.ports[0].from_outside.iter().map(|a| a.address.as_str()).collect();
    assert_eq!(outside, ["192.168.49.11:31080", "192.168.49.12:31080", "203.0.113.10:80"]);

    let legacy = service(&all, "shop", "legacy-db");
    assert_eq!(legacy.ports[0].from_outside[0].address, "198.51.100.20:5432");
    assert_eq!(legacy.ports[0].from_outside[0].via, "externalIP");

    // --nodeport-addresses narrows the node addresses.
    let (snapshot, _) = Snapshot::from_text("single", SINGLE_STACK);
    let options =
        ExplainOptions { nodeport_addresses: vec!["192.168.49.12/32".parse().unwrap()], ..Default::default() };
    let narrowed = explain(&snapshot, &options);
    let outside: Vec<&str> =
        service(&narrowed, "shop", "web").ports[0].from_outside.iter().map(|a| a.address.as_str()).collect();
    assert_eq!(outside, ["192.168.49.12:30080"]);
}

#[test]
fn headless_services_list_pod_records_and_external_names_their_cname() {
    let all = explained(&[SINGLE_STACK]);
    let postgres = service(&all, "data", "postgres");
    assert_eq!(postgres.type_, "headless");
    let records = dns(postgres);
    for expected in [
        "postgres.data.svc.cluster.local A 10.244.1.14",
        "postgres.data.svc.cluster.local A 10.244.2.17",
        "postgres-0.postgres.data.svc.cluster.local A 10.244.1.14",
        "postgres-1.postgres.data.svc.cluster.local A 10.244.2.17",
    ] {
        assert!(records.contains(&expected.to_owned()), "{expected} not in {records:?}");
    }
    assert_eq!(postgres.ports[0].from_pods[0].via, "pod data/postgres-0");

    let payments = service(&all, "shop", "payments-api");
    assert_eq!(dns(payments), ["payments-api.shop.svc.cluster.local CNAME payments.example.com"]);
    assert!(payments.ports.is_empty());
}

#[test]
fn dual_stack_services_have_both_families() {
    let all = explained(&[DUAL_STACK]);
    let frontend = service(&all, "apps", "frontend");
    let records = dns(frontend);
    assert!(records.iter().any(|r| r.contains(" A 10.96.61.7")), "{records:?}");
    assert!(records.iter().any(|r| r.contains(" AAAA fd00:10:96::5c1e")), "{records:?}");
    let outside: Vec<&str> = frontend.ports[0].from_outside.iter().map(|a| a.address.as_str()).collect();
    assert_eq!(outside, ["192.168.49.21:30081", "[fd00:49::21]:30081", "192.168.49.22:30081", "[fd00:49::22]:30081"]);
}

#[test]
fn warnings_name_missing_endpoints_local_policies_and_blocking_source_ranges() {
    let all = explained(&[SINGLE_STACK]);
    assert!(service(&all, "shop", "empty").warnings[0].contains("no usable endpoint: new connections are rejected"));

    let all = explained(&[DUAL_STACK]);
    let edge = service(&all, "apps", "edge");
    assert!(edge.warnings.iter().any(|w| w.contains("externalTrafficPolicy Local and no local endpoint on node-b")));

    let all = explained(&[SEMANTICS]);
    let internal = service(&all, "demo", "internal-local");
    assert!(internal.warnings[0].contains("internalTrafficPolicy Local and no local endpoint on node-a"));
    assert!(service(&all, "demo", "other-proxy").warnings[0].contains("programs nothing"));
    let proxied = service(&all, "demo", "proxied-lb");
    assert!(
        proxied.ports[0].from_outside.iter().any(|a| a.note.as_deref().is_some_and(|n| n.contains("ipMode Proxy")))
    );

    let blocked = SEMANTICS.replace(
        r#"loadBalancerSourceRanges: [" 198.51.100.0/24 ", 192.168.49.0/24]"#,
        "loadBalancerSourceRanges: [bogus]",
    );
    assert_ne!(blocked, SEMANTICS);
    let all = explained(&[&blocked]);
    let lb = service(&all, "demo", "local-lb");
    assert!(lb.warnings.iter().any(|w| w.contains("allow no IPv4 source")), "{:?}", lb.warnings);
    assert!(lb.warnings.iter().any(|w| w.contains("is not a CIDR")), "{:?}", lb.warnings);
}

#[test]
fn ingresses_route_to_services_through_their_controller() {
    // malformed.yaml's Ingress (class nginx) routes to good/web; single-stack.yaml has the controller.
    let all = explained(&[MALFORMED, SINGLE_STACK]);
    let web = service(&all, "good", "web");
    assert_eq!(web.ingresses.len(), 1);
    let route = &web.ingresses[0];
    assert_eq!(route.ingress.name, "web");
    assert_eq!(route.class.as_deref(), Some("nginx"));
    assert_eq!(route.routes, ["web.example.com/"]);
    assert_eq!(route.port, "http");
    assert_eq!(route.addresses, ["203.0.113.10"]);
    assert_eq!(route.controllers[0].name, "ingress-nginx-controller");
    assert!(route.controller_addresses.contains(&"203.0.113.10:80".to_owned()));
    assert!(route.controller_addresses.contains(&"192.168.49.12:31443".to_owned()));

    // Without the controller in the snapshot, the route is still shown.
    let all = explained(&[MALFORMED]);
    let route = &service(&all, "good", "web").ingresses[0];
    assert!(route.controllers.is_empty());
    assert!(all.to_text().contains("controller Service: none found in the snapshot"));
}

#[test]
fn the_ingress_is_kept_and_still_counted_as_skipped() {
    let (snapshot, report) = Snapshot::from_text("malformed.yaml", MALFORMED);
    assert_eq!(snapshot.ingresses.len(), 1);
    assert_eq!(report.skipped_note().as_deref(), Some("skipped 1 object of other kinds: Ingress (1)"));
}

#[test]
fn one_service_can_be_asked_for() {
    let (snapshot, _) = Snapshot::from_text("single", SINGLE_STACK);
    let options = ExplainOptions { only: Some(("shop".into(), "web".into())), ..Default::default() };
    let one = explain(&snapshot, &options);
    assert_eq!(one.services.len(), 1);
    let options = ExplainOptions { cluster_domain: "corp.example".into(), ..options };
    assert!(explain(&snapshot, &options).to_text().contains("web.shop.svc.corp.example"));
}

#[test]
fn every_bundled_cluster_explains_every_service() {
    for text in [SEMANTICS, SINGLE_STACK, DUAL_STACK, MALFORMED] {
        let (snapshot, _) = Snapshot::from_text("cluster", text);
        let all = explain(&snapshot, &ExplainOptions::default());
        assert_eq!(all.services.len(), snapshot.services.len());
        serde_json::to_string(&all).unwrap();
        assert!(!all.to_text().is_empty());
    }
}

// Real-data cases: each of these was wrong before (see docs/robustness.md).

const LOCAL_LB_WITHOUT_NODES: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  type: LoadBalancer
  clusterIP: 10.96.0.20
  externalTrafficPolicy: Local
  ports: [{name: http, port: 80, nodePort: 30080, protocol: TCP}]
status:
  loadBalancer:
    ingress:
    - {ip: 203.0.113.7}
    - {hostname: a1b2c3.elb.us-east-1.amazonaws.com}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, namespace: shop, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
endpoints: [{addresses: [10.244.1.5], nodeName: node-a, conditions: {ready: true}}]
ports: [{name: http, port: 8080, protocol: TCP}]
"#;

#[test]
fn without_nodes_a_local_load_balancer_is_not_called_dropped_and_node_ports_say_why_they_have_no_address() {
    let all = explained(&[LOCAL_LB_WITHOUT_NODES]);
    let web = service(&all, "shop", "web");
    let lb = web.ports[0].from_outside.iter().find(|a| a.address == "203.0.113.7:80").unwrap();
    assert_eq!(
        lb.note.as_deref(),
        Some(
            "externalTrafficPolicy Local: the snapshot has no Nodes, so which nodes have a local endpoint is not \
             known; each node serves it from its own endpoints and drops it where it has none"
        )
    );
    assert!(!format!("{all:?}").contains("dropped everywhere"));
    assert!(web.warnings.contains(
        &"port http (80/tcp): nodePort 30080: the snapshot has no Nodes, so the addresses it is served on are not known \
          (add the Node objects to the snapshot: `kubectl get nodes -o yaml`)"
            .to_owned()
    ));
}

#[test]
fn a_hostname_only_load_balancer_ingress_is_shown_as_not_programmed() {
    let all = explained(&[LOCAL_LB_WITHOUT_NODES]);
    let web = service(&all, "shop", "web");
    let hostname =
        web.ports[0].from_outside.iter().find(|a| a.address == "a1b2c3.elb.us-east-1.amazonaws.com:80").unwrap();
    assert_eq!(hostname.via, "LoadBalancer hostname");
    assert_eq!(
        hostname.note.as_deref(),
        Some(
            "not programmed: a hostname has no address to match; the load balancer must forward to the nodes' port 30080"
        )
    );
}

const HEADLESS_AND_NODE_BACKED: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: kubelet, namespace: kube-system}
spec: {clusterIP: None, ports: [{name: https-metrics, port: 10250, protocol: TCP}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: kubelet-1, namespace: kube-system, labels: {kubernetes.io/service-name: kubelet}}
addressType: IPv4
endpoints:
- {addresses: [192.168.49.11], conditions: {ready: true}, targetRef: {kind: Node, name: node-a}}
- {addresses: [192.168.49.12], conditions: {ready: true}, hostname: second, targetRef: {kind: Node, name: node-b}}
ports: [{name: https-metrics, port: 10250, protocol: TCP}]
---
apiVersion: v1
kind: Service
metadata: {name: nowhere, namespace: shop}
spec: {type: ExternalName}
"#;

#[test]
fn headless_services_have_one_srv_record_per_endpoint_and_node_backed_endpoints_are_nodes() {
    let all = explained(&[HEADLESS_AND_NODE_BACKED]);
    let kubelet = service(&all, "kube-system", "kubelet");
    let srv: Vec<String> = dns(kubelet).into_iter().filter(|r| r.contains(" SRV ")).collect();
    assert_eq!(
        srv,
        [
            "_https-metrics._tcp.kubelet.kube-system.svc.cluster.local SRV 0 100 10250 \
             192-168-49-11.kubelet.kube-system.svc.cluster.local",
            "_https-metrics._tcp.kubelet.kube-system.svc.cluster.local SRV 0 100 10250 \
             second.kubelet.kube-system.svc.cluster.local",
        ]
    );
    let port = &kubelet.ports[0];
    let vias: Vec<&str> = port.from_nodes.iter().map(|a| a.via.as_str()).collect();
    assert_eq!(vias, ["node node-a", "node node-b"]);
    assert_eq!(
        port.endpoints.iter().map(ToString::to_string).collect::<Vec<_>>(),
        ["192.168.49.11:10250", "192.168.49.12:10250"]
    );
    assert_eq!(port.counts.ready, 2);
}

#[test]
fn an_external_name_service_without_a_target_is_invalid() {
    let all = explained(&[HEADLESS_AND_NODE_BACKED]);
    let nowhere = service(&all, "shop", "nowhere");
    assert_eq!(nowhere.treatment, "invalid: not programmed");
    assert!(nowhere.dns.is_empty(), "{:?}", nowhere.dns);
    assert_eq!(
        nowhere.warnings,
        ["spec.externalName: missing: an ExternalName Service needs a target; not programmed"]
    );
}

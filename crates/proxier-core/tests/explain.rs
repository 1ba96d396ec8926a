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

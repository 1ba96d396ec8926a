//! The core's behaviour, one Service shape at a time, from YAML as kubectl prints it.

use std::net::IpAddr;

use proxier_core::{
    Action, Backend, DestinationKind, FamilyRules, IpFamily, LocalTraffic, Masquerade, NodeConfig, Protocol, RuleModel,
    Severity, Snapshot, Treatment, compute,
};

const NODES: &str = r#"
apiVersion: v1
kind: Node
metadata: {name: node-a}
status:
  addresses:
  - {type: InternalIP, address: 192.168.49.11}
  - {type: InternalIP, address: "fd00:49::11"}
  - {type: Hostname, address: node-a}
---
apiVersion: v1
kind: Node
metadata: {name: node-b}
status:
  addresses: [{type: InternalIP, address: 192.168.49.12}]
"#;

fn config() -> NodeConfig {
    NodeConfig {
        node_name: "node-a".into(),
        cluster_cidrs: vec!["10.244.0.0/16".parse().unwrap()],
        ..Default::default()
    }
}

fn model(yaml: &str, config: &NodeConfig) -> RuleModel {
    let (snapshot, report) = Snapshot::from_text("test.yaml", &format!("{NODES}\n---\n{yaml}"));
    assert!(report.diagnostics.is_empty(), "{:?}", report.diagnostics);
    compute(&snapshot, config)
}

fn v4(model: &RuleModel) -> &FamilyRules {
    model.family(IpFamily::V4).expect("an IPv4 family")
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn action<'a>(rules: &'a FamilyRules, addr: &str, protocol: Protocol, port: u16) -> &'a Action {
    &rules
        .destinations
        .iter()
        .find(|d| d.ip == ip(addr) && d.protocol == protocol && d.port == port)
        .unwrap_or_else(|| panic!("no destination {addr}:{port}/{protocol}"))
        .action
}

fn backends(action: &Action) -> Vec<String> {
    match action {
        Action::Balance { backends, .. } => backends.iter().map(Backend::to_string).collect(),
        other => panic!("expected Balance, got {other:?}"),
    }
}

const DNS: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: kube-dns, namespace: kube-system}
spec:
  clusterIP: 10.96.0.10
  clusterIPs: [10.96.0.10]
  ports:
  - {name: dns, port: 53, protocol: UDP, targetPort: 53}
  - {name: dns-tcp, port: 53, protocol: TCP, targetPort: 53}
  - {name: sigtran, port: 53, protocol: SCTP, targetPort: 2905}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: kube-dns-abc
  namespace: kube-system
  labels: {kubernetes.io/service-name: kube-dns}
addressType: IPv4
endpoints:
- addresses: [10.244.1.2]
  conditions: {ready: true}
  nodeName: node-a
- addresses: [10.244.2.2]
  conditions: {ready: true}
  nodeName: node-b
- addresses: [10.244.2.3]
  conditions: {ready: false}
  nodeName: node-b
ports:
- {name: dns, port: 5353, protocol: UDP}
- {name: dns-tcp, port: 53, protocol: TCP}
- {name: sigtran, port: 2905, protocol: SCTP}
"#;

#[test]
fn cluster_ip_ports_are_independent_per_protocol_and_use_the_slice_port() {
    let model = model(DNS, &config());
    let rules = v4(&model);
    // The target port comes from the EndpointSlice port of the same name, not from targetPort.
    assert_eq!(backends(action(rules, "10.96.0.10", Protocol::Udp, 53)), ["10.244.1.2:5353", "10.244.2.2:5353"]);
    assert_eq!(backends(action(rules, "10.96.0.10", Protocol::Tcp, 53)), ["10.244.1.2:53", "10.244.2.2:53"]);
    assert_eq!(backends(action(rules, "10.96.0.10", Protocol::Sctp, 53)), ["10.244.1.2:2905", "10.244.2.2:2905"]);
    assert_eq!(rules.cluster_ips, vec![ip("10.96.0.10")]);
}

#[test]
fn cluster_ip_masquerades_only_non_pod_sources_when_a_cluster_cidr_is_known() {
    let with_detector = model(DNS, &config());
    let Action::Balance { masquerade, .. } = action(v4(&with_detector), "10.96.0.10", Protocol::Udp, 53) else {
        panic!()
    };
    assert_eq!(*masquerade, Masquerade::OutsidePodNetwork);
    assert_eq!(v4(&with_detector).local_traffic, LocalTraffic::Cidrs(vec!["10.244.0.0/16".parse().unwrap()]));

    let without = model(DNS, &NodeConfig { cluster_cidrs: vec![], ..config() });
    let Action::Balance { masquerade, .. } = action(v4(&without), "10.96.0.10", Protocol::Udp, 53) else { panic!() };
    assert_eq!(*masquerade, Masquerade::Never);

    let all = model(DNS, &NodeConfig { masquerade_all: true, ..config() });
    let Action::Balance { masquerade, .. } = action(v4(&all), "10.96.0.10", Protocol::Udp, 53) else { panic!() };
    assert_eq!(*masquerade, Masquerade::Always);
}

const WEB: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  type: LoadBalancer
  clusterIP: 10.96.0.20
  externalIPs: [198.51.100.20]
  ports: [{name: http, port: 80, protocol: TCP, targetPort: http, nodePort: 30080}]
status:
  loadBalancer:
    ingress: [{ip: 203.0.113.10, ipMode: VIP}, {ip: 203.0.113.11, ipMode: Proxy}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-1
  namespace: shop
  labels: {kubernetes.io/service-name: web}
addressType: IPv4
endpoints:
- addresses: [10.244.2.7]
  nodeName: node-b
ports: [{name: http, port: 8080, protocol: TCP}]
"#;

#[test]
fn external_destinations_balance_to_every_endpoint_and_always_masquerade() {
    let model = model(WEB, &config());
    let rules = v4(&model);
    let kinds: Vec<(String, DestinationKind)> =
        rules.destinations.iter().map(|d| (format!("{}:{}", d.ip, d.port), d.kind)).collect();
    assert_eq!(
        kinds,
        [
            ("10.96.0.20:80".to_owned(), DestinationKind::ClusterIp),
            ("192.168.49.11:30080".to_owned(), DestinationKind::NodePort),
            ("198.51.100.20:80".to_owned(), DestinationKind::ExternalIp),
            ("203.0.113.10:80".to_owned(), DestinationKind::LoadBalancerIp),
        ],
        "ipMode Proxy ingress is not intercepted; the NodePort is on the primary node IP"
    );
    for destination in rules.destinations.iter().filter(|d| d.kind.is_external()) {
        assert_eq!(
            destination.action,
            Action::Balance {
                backends: vec![Backend { ip: ip("10.244.2.7"), port: 8080 }],
                masquerade: Masquerade::Always,
                affinity: None,
            }
        );
    }
    assert_eq!(rules.node_port_ips, vec![ip("192.168.49.11")]);
}

#[test]
fn nodeport_addresses_select_node_ips() {
    let config = NodeConfig {
        node_ips: vec![ip("192.168.49.11"), ip("10.0.0.5")],
        nodeport_addresses: vec!["10.0.0.0/8".parse().unwrap()],
        ..config()
    };
    let model = model(WEB, &config);
    assert_eq!(v4(&model).node_port_ips, vec![ip("10.0.0.5")]);
    assert!(matches!(action(v4(&model), "10.0.0.5", Protocol::Tcp, 30080), Action::Balance { .. }));
}

#[test]
fn a_service_without_endpoints_is_rejected_everywhere() {
    let yaml = r#"
apiVersion: v1
kind: Service
metadata: {name: empty, namespace: shop}
spec:
  type: NodePort
  clusterIP: 10.96.0.30
  ports: [{port: 80, protocol: TCP, nodePort: 30030}]
"#;
    let model = model(yaml, &config());
    let rules = v4(&model);
    assert_eq!(*action(rules, "10.96.0.30", Protocol::Tcp, 80), Action::Reject);
    assert_eq!(*action(rules, "192.168.49.11", Protocol::Tcp, 30030), Action::Reject);
}

#[test]
fn headless_and_external_name_are_reported_without_rules() {
    let yaml = r#"
apiVersion: v1
kind: Service
metadata: {name: postgres, namespace: data}
spec: {clusterIP: None, clusterIPs: [None], ports: [{name: pg, port: 5432}]}
---
apiVersion: v1
kind: Service
metadata: {name: payments, namespace: shop}
spec: {type: ExternalName, externalName: payments.example.com}
"#;
    let model = model(yaml, &config());
    let treatments: Vec<(String, Treatment)> =
        model.services.iter().map(|s| (s.service.to_string(), s.treatment.clone())).collect();
    assert_eq!(
        treatments,
        [
            ("Service data/postgres".to_owned(), Treatment::Headless),
            ("Service shop/payments".to_owned(), Treatment::ExternalName { target: "payments.example.com".into() }),
        ]
    );
    assert!(model.diagnostics.is_empty(), "{:?}", model.diagnostics);
    assert!(v4(&model).destinations.is_empty());
}

#[test]
fn dual_stack_services_are_programmed_in_each_family() {
    let yaml = r#"
apiVersion: v1
kind: Service
metadata: {name: dns, namespace: kube-system}
spec:
  ipFamilies: [IPv6, IPv4]
  clusterIP: "fd00:10:96::a"
  clusterIPs: ["fd00:10:96::a", 10.96.0.10]
  ports: [{name: dns, port: 53, protocol: UDP}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: dns-v4, namespace: kube-system, labels: {kubernetes.io/service-name: dns}}
addressType: IPv4
endpoints: [{addresses: [10.244.1.2], nodeName: node-a}]
ports: [{name: dns, port: 53, protocol: UDP}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: dns-v6, namespace: kube-system, labels: {kubernetes.io/service-name: dns}}
addressType: IPv6
endpoints: [{addresses: ["fd00:10:244:1::2"], nodeName: node-a}]
ports: [{name: dns, port: 53, protocol: UDP}]
"#;
    let model = model(yaml, &config());
    assert_eq!(model.families.iter().map(|f| f.family).collect::<Vec<_>>(), [IpFamily::V4, IpFamily::V6]);
    assert_eq!(backends(action(v4(&model), "10.96.0.10", Protocol::Udp, 53)), ["10.244.1.2:53"]);
    let v6 = model.family(IpFamily::V6).unwrap();
    assert_eq!(backends(action(v6, "fd00:10:96::a", Protocol::Udp, 53)), ["[fd00:10:244:1::2]:53"]);
    // No IPv6 cluster CIDR was given: no detector in that family.
    let Action::Balance { masquerade, .. } = action(v6, "fd00:10:96::a", Protocol::Udp, 53) else { panic!() };
    assert_eq!(*masquerade, Masquerade::Never);
}

#[test]
fn terminating_endpoints_are_used_only_when_none_is_ready() {
    let yaml = r#"
apiVersion: v1
kind: Service
metadata: {name: api, namespace: shop}
spec: {clusterIP: 10.96.0.40, ports: [{port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: api-1, namespace: shop, labels: {kubernetes.io/service-name: api}}
addressType: IPv4
endpoints:
- addresses: [10.244.1.5]
  conditions: {ready: false, serving: true, terminating: true}
- addresses: [10.244.1.6]
  conditions: {ready: false, serving: false, terminating: true}
ports: [{port: 8080, protocol: TCP, name: ""}]
"#;
    let model = model(yaml, &config());
    assert_eq!(backends(action(v4(&model), "10.96.0.40", Protocol::Tcp, 80)), ["10.244.1.5:8080"]);
}

#[test]
fn bad_input_is_named_and_the_rest_is_programmed() {
    let yaml = r#"
apiVersion: v1
kind: Service
metadata: {name: mixed, namespace: shop}
spec:
  clusterIP: 10.96.0.50
  externalIPs: [not-an-ip]
  ports:
  - {name: ping, port: 7, protocol: ICMP}
  - {name: zero, port: 0, protocol: TCP}
  - {name: http, port: 80, protocol: TCP}
  - {name: http, port: 81, protocol: TCP}
---
apiVersion: v1
kind: Service
metadata: {name: broken, namespace: shop}
spec: {clusterIP: 10.96.0.300, ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: sloppy, namespace: shop}
spec: {clusterIP: 010.096.000.060, ports: [{port: 80}]}
"#;
    let model = model(yaml, &config());
    let messages: Vec<String> = model.diagnostics.iter().map(ToString::to_string).collect();
    let expect = [
        "error: test.yaml: Service shop/broken: spec.clusterIP: \"10.96.0.300\" is not an IP address; ignored",
        "error: test.yaml: Service shop/mixed: spec.externalIPs[0]: \"not-an-ip\" is not an IP address; ignored",
        "error: test.yaml: Service shop/mixed: spec.ports[0].protocol: unknown protocol \"ICMP\" (expected TCP, UDP or SCTP); port skipped",
        "error: test.yaml: Service shop/mixed: spec.ports[1].port: port 0 is outside 1-65535; port skipped",
        "error: test.yaml: Service shop/mixed: spec.ports[3].name: duplicate port name \"http\" for tcp; this port skipped",
        "warning: test.yaml: Service shop/sloppy: spec.clusterIP: \"010.096.000.060\" has leading zeros; read as 10.96.0.60",
    ];
    for message in expect {
        assert!(messages.iter().any(|m| m == message), "missing {message:?} in {messages:#?}");
    }
    let rules = v4(&model);
    assert_eq!(*action(rules, "10.96.0.50", Protocol::Tcp, 80), Action::Reject);
    assert_eq!(*action(rules, "10.96.0.60", Protocol::Tcp, 80), Action::Reject);
    assert_eq!(rules.destinations.len(), 2);
    assert!(model.diagnostics.iter().any(|d| d.severity == Severity::Error));
}

#[test]
fn the_model_does_not_depend_on_object_order() {
    let forward = model(&format!("{DNS}\n---\n{WEB}"), &config());
    let backward = model(&format!("{WEB}\n---\n{DNS}"), &config());
    assert_eq!(forward, backward);
}

/// The messages of a snapshot's model, as the binary prints them.
fn messages(text: &str, node: &str) -> Vec<String> {
    let (snapshot, _) = Snapshot::from_text("dump.yaml", text);
    let config = NodeConfig { node_name: node.into(), ..Default::default() };
    compute(&snapshot, &config).diagnostics.iter().map(ToString::to_string).collect()
}

#[test]
fn services_without_any_endpoint_object_get_one_warning() {
    let services = "apiVersion: v1\nkind: Service\nmetadata: {name: a, namespace: x}\nspec: {clusterIP: 10.96.0.1, \
                    ports: [{port: 80}]}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: b, namespace: x}\n\
                    spec: {clusterIP: 10.96.0.2, ports: [{port: 80}]}\n";
    let with_node = format!("{NODES}\n---\n{services}");
    assert_eq!(
        messages(&with_node, "node-a"),
        ["warning: snapshot: 2 proxied Service(s) but no EndpointSlices or Endpoints at all: none has an endpoint, \
          and every one rejects connections (was `endpointslices` left out of `kubectl get`?)"]
    );
    // One slice anywhere (even of another Service) means endpoints were asked for: no warning.
    let slice = "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: a-1, namespace: x, labels: \
                 {kubernetes.io/service-name: a}}\naddressType: IPv4\nendpoints: [{addresses: [10.244.1.5]}]\nports: \
                 [{port: 8080}]\n";
    assert_eq!(messages(&format!("{with_node}\n---\n{slice}"), "node-a"), Vec::<String>::new());
}

#[test]
fn a_node_without_usable_addresses_is_named_with_what_is_not_programmed() {
    // As an OpenShift Insights archive has it: addresses anonymised.
    let node = "apiVersion: v1\nkind: Node\nmetadata: {name: worker}\nstatus:\n  addresses:\n  - {type: InternalIP, \
                address: xx.x.xx.x}\n  - {type: Hostname, address: xx-xx}\n";
    let bad_address = "error: dump.yaml: Node worker: status.addresses[0].address: \"xx.x.xx.x\" is not an IP \
                       address; ignored";
    // No Service asks for a nodePort: the missing addresses do not matter.
    let cluster_ip = "apiVersion: v1\nkind: Service\nmetadata: {name: a, namespace: x}\nspec: {clusterIP: 10.96.0.1, \
                      ports: [{port: 80}]}\n";
    let warnings = messages(&format!("{node}---\n{cluster_ip}"), "worker");
    assert!(warnings.contains(&bad_address.to_owned()), "{warnings:?}");
    assert!(!warnings.iter().any(|m| m.contains("NodePorts")), "{warnings:?}");
    let node_port = "apiVersion: v1\nkind: Service\nmetadata: {name: b, namespace: x}\nspec: {type: NodePort, \
                     clusterIP: 10.96.0.2, ports: [{port: 80, nodePort: 30080}]}\n";
    let warnings = messages(&format!("{node}---\n{cluster_ip}---\n{node_port}"), "worker");
    assert!(warnings.contains(&bad_address.to_owned()), "{warnings:?}");
    assert!(
        warnings.contains(
            &"warning: dump.yaml: Node worker: status.addresses: no usable InternalIP or ExternalIP address and no \
              node IP configured: NodePorts are not programmed on this node"
                .to_owned()
        ),
        "{warnings:?}"
    );
}

#[test]
fn a_node_missing_from_the_snapshot_is_named_only_when_a_service_has_a_node_port() {
    let cluster_ip = "apiVersion: v1\nkind: Service\nmetadata: {name: a, namespace: x}\nspec: {clusterIP: 10.96.0.1, \
                      ports: [{port: 80}]}\n";
    let missing =
        "warning: Node elsewhere: not in the snapshot and no node IP configured: NodePorts are not programmed";
    assert!(!messages(cluster_ip, "elsewhere").iter().any(|m| m.contains("Node elsewhere")));
    // A LoadBalancer's health-check nodePort is one too.
    let local_lb = "apiVersion: v1\nkind: Service\nmetadata: {name: lb, namespace: x}\nspec: {type: LoadBalancer, \
                    clusterIP: 10.96.0.3, externalTrafficPolicy: Local, healthCheckNodePort: 31000, ports: [{port: 80}]}\n";
    assert!(messages(&format!("{cluster_ip}---\n{local_lb}"), "elsewhere").contains(&missing.to_owned()));
}

#[test]
fn messages_about_legacy_endpoints_name_the_endpoints_object_and_its_file() {
    let text = "apiVersion: v1\nkind: Endpoints\nmetadata: {name: gone, namespace: x}\nsubsets:\n- addresses: \
                [{ip: 10.244.1.5}, {ip: not-an-ip}]\n  ports: [{port: 8080}]\n";
    assert_eq!(
        messages(&format!("{NODES}\n---\n{text}"), "node-a"),
        [
            "warning: dump.yaml: Endpoints x/gone: its Service x/gone is not in the snapshot; ignored",
            "error: dump.yaml: Endpoints x/gone: \"not-an-ip\" is not an IP address; endpoint skipped",
        ]
    );
}

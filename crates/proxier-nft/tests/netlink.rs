//! The netlink backend in the kernel: transactions sent on a persistent nf_tables socket must leave
//! the kernel listing exactly as `nft -j -f` of the full render of the same state; a refusal names
//! the element and Service it concerns; the event watch tells outside edits of proxier's tables from
//! proxier's own commits and from edits of other tables.

#[path = "support/cluster.rs"]
mod cluster;

use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::TestRunner;
use proxier_core::{ClusterState, DetectLocal, IpFamily, NodeConfig, Protocol};
use proxier_nft::Change;
use proxier_nft::netlink::{Batch, Drift, NetlinkError, NftSocket, TableWatch, Unsupported};
use proxier_nft::ruleset::{DataType, Element, Rule, Set, Statement, Value, Verdict};
use proxier_nft::{Nft, Proxier, Transaction};
use smallvec::smallvec;

use cluster::{POOL, coherent, kernel_sequence};
use proxier_testkit::objects::config;
use proxier_testkit::{Netns, counters};

/// Sequences of coherent cluster states fed to a `Proxier` (whose own `nft` does nothing): each
/// transaction it writes is applied in one namespace by netlink when netlink carries it (by `nft`
/// otherwise), and after each step that namespace lists exactly as another into which the state's
/// full transaction was loaded (apart from emptied objects awaiting deletion). `PROXIER_KERNEL_SAMPLES`
/// (default 300) / 10 sequences.
#[test]
fn netlink_transactions_list_as_full_applies() {
    let Some(incremental) = Netns::for_test("netlink_transactions_list_as_full_applies") else { return };
    let Some(whole) = Netns::for_test("netlink_transactions_list_as_full_applies") else { return };
    let mut socket = incremental.run(|| NftSocket::open().expect("open the socket"));
    let samples = std::env::var("PROXIER_KERNEL_SAMPLES").ok().and_then(|v| v.parse().ok()).unwrap_or(300) / 10;
    let mut runner = TestRunner::default();
    let strategy = (
        coherent(POOL),
        proptest::collection::vec(proptest::collection::vec(proptest::arbitrary::any::<bool>(), POOL), 2..6),
        config(),
    );
    let (mut by_netlink, mut by_nft) = (0, 0);
    for sample in 0..samples {
        let (pool, states, config) = strategy.new_tree(&mut runner).expect("generate").current();
        incremental.nft_args(&["flush", "ruleset"], None).unwrap();
        let mut proxier = Proxier::new(ClusterState::new(config.clone()), "proxier", Nft::new("true"));
        let apply = |transaction: &Transaction, context: &str| match socket.apply(transaction) {
            Ok(Ok(())) => by_netlink += 1,
            Ok(Err(_)) => {
                incremental.nft_args(&["-j", "-f", "-"], Some(&transaction.to_json())).unwrap();
                by_nft += 1;
            }
            Err(e) => panic!("{context}: {e}\n{}", transaction.to_text()),
        };
        kernel_sequence(&mut proxier, &pool, &states, &config, &incremental, &whole, sample, apply);
    }
    eprintln!("{by_netlink} transactions by netlink, {by_nft} by nft, all listed as their full transactions");
    if samples >= 10 {
        assert!(
            by_netlink > by_nft,
            "netlink carried only {by_netlink} of {} partial transactions",
            by_netlink + by_nft
        );
    }
}

fn destination(ip: &str, port: u16) -> smallvec::SmallVec<[Value; 4]> {
    smallvec![Value::Addr(ip.parse().unwrap()), Value::Proto(Protocol::Tcp), Value::Port(port)]
}

fn set(name: &str, key: Vec<DataType>, data: Option<DataType>, timeout: Option<u32>) -> Set {
    Set { name: name.into(), key, data, interval: false, timeout, counter: false, elements: Vec::new() }
}

/// `set` with a counter on every element, as the layout declares its decision maps.
fn counted(set: Set) -> Set {
    Set { counter: true, ..set }
}

/// Every set shape the layout uses (the decision maps with counters), created and filled by netlink in one namespace and by `nft` in
/// another: both list alike, as text and as JSON (nft reads back the set userdata written here).
#[test]
fn every_set_shape_lists_as_nft_writes_it() {
    let Some(by_netlink) = Netns::for_test("every_set_shape_lists_as_nft_writes_it") else { return };
    let Some(by_nft) = Netns::for_test("every_set_shape_lists_as_nft_writes_it") else { return };
    let base = "add table ip proxier\nadd chain ip proxier balance-2\nadd table ip6 proxier\nadd chain ip6 proxier balance-2\n";
    by_netlink.nft_args(&["-f", "-"], Some(base)).unwrap();
    by_nft.nft_args(&["-f", "-"], Some(base)).unwrap();
    let v4 = vec![DataType::Addr(IpFamily::V4), DataType::Proto, DataType::Service];
    let v6 = vec![DataType::Addr(IpFamily::V6), DataType::Proto, DataType::Service];
    let comment = Some("ns/web:http/tcp (ClusterIP)".to_owned());
    let mut changes = vec![
        Change::AddChain {
            family: IpFamily::V4,
            name: "nat-prerouting".into(),
            hook: Some(proxier_nft::ruleset::Hook {
                chain_type: proxier_nft::ruleset::ChainType::Nat,
                point: proxier_nft::ruleset::HookPoint::Prerouting,
                priority: -100,
            }),
        },
        Change::AddChain { family: IpFamily::V4, name: "plain".into(), hook: None },
    ];
    let shapes = [
        (IpFamily::V4, counted(set("service-ips", v4.clone(), Some(DataType::Verdict), None))),
        (IpFamily::V4, set("backend-0-addr", v4.clone(), Some(DataType::Addr(IpFamily::V4)), None)),
        (IpFamily::V4, set("backend-0-port", v4.clone(), Some(DataType::Service), None)),
        (IpFamily::V4, counted(set("firewall-ips", v4.clone(), None, None))),
        (IpFamily::V4, set("hairpin", vec![DataType::Addr(IpFamily::V4); 2], None, None)),
        (IpFamily::V4, counted(set("cluster-ips", vec![DataType::Addr(IpFamily::V4)], None, None))),
        (IpFamily::V4, set("aff-x", vec![DataType::Addr(IpFamily::V4)], None, Some(10800))),
        (IpFamily::V6, counted(set("service-ips", v6.clone(), Some(DataType::Verdict), None))),
        (IpFamily::V6, set("backend-0-addr", v6.clone(), Some(DataType::Addr(IpFamily::V6)), None)),
        (IpFamily::V6, set("cluster-ips", vec![DataType::Addr(IpFamily::V6)], None, None)),
    ];
    for (family, set) in &shapes {
        changes.push(Change::AddSet { family: *family, set: set.clone() });
    }
    let element = |key, data, comment: &Option<String>| Element { key, data, comment: comment.clone() };
    let goto = |chain: &str| Some(Value::Verdict(Verdict::Goto(chain.into())));
    let mut add = |family, set: &str, elements| changes.push(Change::AddElements { family, set: set.into(), elements });
    add(
        IpFamily::V4,
        "service-ips",
        vec![
            element(destination("10.96.0.1", 80), goto("balance-2"), &comment),
            element(destination("10.96.0.2", 53), Some(Value::Verdict(Verdict::Drop)), &None),
            element(destination("10.96.0.3", 443), Some(Value::Verdict(Verdict::Jump("plain".into()))), &comment),
        ],
    );
    add(
        IpFamily::V4,
        "backend-0-addr",
        vec![element(destination("10.96.0.1", 80), Some(Value::Addr("10.244.1.5".parse().unwrap())), &None)],
    );
    add(IpFamily::V4, "backend-0-port", vec![element(destination("10.96.0.1", 80), Some(Value::Port(8080)), &None)]);
    add(IpFamily::V4, "firewall-ips", vec![element(destination("192.168.60.1", 80), None, &comment)]);
    add(
        IpFamily::V4,
        "hairpin",
        vec![element(
            smallvec![Value::Addr("10.244.1.5".parse().unwrap()), Value::Addr("10.244.1.5".parse().unwrap())],
            None,
            &None,
        )],
    );
    add(IpFamily::V4, "cluster-ips", vec![element(smallvec![Value::Addr("10.96.0.1".parse().unwrap())], None, &None)]);
    let v6_destination: smallvec::SmallVec<[Value; 4]> =
        smallvec![Value::Addr("fd00:96::1".parse().unwrap()), Value::Proto(Protocol::Udp), Value::Port(53)];
    add(IpFamily::V6, "service-ips", vec![element(v6_destination.clone(), goto("balance-2"), &comment)]);
    add(
        IpFamily::V6,
        "backend-0-addr",
        vec![element(v6_destination, Some(Value::Addr("fd00:244::5".parse().unwrap())), &None)],
    );
    add(IpFamily::V6, "cluster-ips", vec![element(smallvec![Value::Addr("fd00:96::1".parse().unwrap())], None, &None)]);
    let transaction = Transaction::from_changes(changes, "proxier");

    let mut socket = by_netlink.run(|| NftSocket::open().expect("open the socket"));
    socket.apply(&transaction).expect("the kernel takes it").expect("netlink carries it");
    by_nft.nft_args(&["-j", "-f", "-"], Some(&transaction.to_json())).unwrap();
    assert_eq!(
        by_netlink.nft_args(&["list", "ruleset"], None).unwrap(),
        by_nft.nft_args(&["list", "ruleset"], None).unwrap()
    );
    assert_eq!(by_netlink.ruleset().unwrap(), by_nft.ruleset().unwrap());

    // Deleting elements, flushing and deleting chains, deleting sets and removing a table.
    let mut changes = vec![
        Change::DeleteElements {
            family: IpFamily::V4,
            set: "service-ips".into(),
            elements: vec![element(destination("10.96.0.2", 53), None, &None)],
        },
        Change::FlushChain { family: IpFamily::V4, chain: "nat-prerouting".into() },
        Change::DeleteSet { family: IpFamily::V4, set: "aff-x".into(), map: false },
        Change::RemoveTable(IpFamily::V6),
    ];
    changes.push(Change::DeleteElements {
        family: IpFamily::V4,
        set: "service-ips".into(),
        elements: vec![element(destination("10.96.0.3", 443), None, &None)],
    });
    changes.push(Change::DeleteChain { family: IpFamily::V4, chain: "plain".into() });
    let transaction = Transaction::from_changes(changes, "proxier");
    socket.apply(&transaction).expect("the kernel takes it").expect("netlink carries it");
    by_nft.nft_args(&["-j", "-f", "-"], Some(&transaction.to_json())).unwrap();
    assert_eq!(
        by_netlink.nft_args(&["list", "ruleset"], None).unwrap(),
        by_nft.nft_args(&["list", "ruleset"], None).unwrap()
    );
}

/// A refused batch changes nothing and names what the kernel refused: the element, and the Service
/// its comment names.
#[test]
fn a_refusal_names_the_element_and_its_service() {
    let Some(ns) = Netns::for_test("a_refusal_names_the_element_and_its_service") else { return };
    ns.nft(
        "table ip proxier {\n chain balance-1 { }\n map service-ips { type ipv4_addr . inet_proto . inet_service : verdict; }\n map backend-0-port { type ipv4_addr . inet_proto . inet_service : inet_service; }\n}\n",
    )
    .unwrap();
    let before = ns.ruleset().unwrap();
    let mut socket = ns.run(|| NftSocket::open().expect("open the socket"));
    let good = Element {
        key: destination("10.96.0.1", 80),
        data: Some(Value::Verdict(Verdict::Goto("balance-1".into()))),
        comment: Some("ns/good:http/tcp (ClusterIP)".into()),
    };
    let bad = Element {
        key: destination("10.96.0.9", 80),
        data: Some(Value::Verdict(Verdict::Goto("balance-7".into()))),
        comment: Some("ns/broken:http/tcp (ClusterIP)".into()),
    };
    let transaction = Transaction::from_changes(
        vec![
            Change::AddElements {
                family: IpFamily::V4,
                set: "backend-0-port".into(),
                elements: vec![Element {
                    key: destination("10.96.0.1", 80),
                    data: Some(Value::Port(8080)),
                    comment: None,
                }],
            },
            Change::AddElements {
                family: IpFamily::V4,
                set: "service-ips".into(),
                elements: vec![good.clone(), bad, good],
            },
        ],
        "proxier",
    );
    let error = socket.apply(&transaction).expect_err("the kernel refuses a goto to a missing chain");
    let text = error.to_string();
    match &error {
        NetlinkError::Refused { element, service, errno, .. } => {
            assert_eq!(*errno, libc::ENOENT, "{text}");
            assert_eq!(
                element.as_deref(),
                Some("10.96.0.9 . tcp . 80 comment \"ns/broken:http/tcp (ClusterIP)\" : goto balance-7"),
                "{text}"
            );
            assert_eq!(service.as_deref(), Some("ns/broken:http/tcp"), "{text}");
        }
        other => panic!("not a refusal: {other}"),
    }
    assert!(text.contains("map ip proxier service-ips") || text.contains("set ip proxier service-ips"), "{text}");
    assert_eq!(ns.ruleset().unwrap(), before, "a refused batch changed the kernel");

    // The socket stays usable: a good batch after a refused one applies.
    let ok = Transaction::from_changes(
        vec![Change::DeleteElements {
            family: IpFamily::V4,
            set: "backend-0-port".into(),
            elements: vec![Element { key: destination("10.96.0.1", 80), data: None, comment: None }],
        }],
        "proxier",
    );
    let error = socket.apply(&ok).expect_err("deleting a missing element is refused");
    assert!(error.to_string().contains("10.96.0.1 . tcp . 80"), "{error}");
    let add = Transaction::from_changes(
        vec![Change::AddElements {
            family: IpFamily::V4,
            set: "backend-0-port".into(),
            elements: vec![Element { key: destination("10.96.0.1", 80), data: Some(Value::Port(8080)), comment: None }],
        }],
        "proxier",
    );
    socket.apply(&add).unwrap().unwrap();
    assert!(
        ns.nft_args(&["list", "map", "ip", "proxier", "backend-0-port"], None)
            .unwrap()
            .contains("10.96.0.1 . tcp . 80 : 8080")
    );
}

/// What netlink does not carry is said so, and nothing is sent: adding ranges to an interval set of
/// one key part that the transaction does not create (nft merges them with the kernel's).
#[test]
fn ranges_into_an_existing_interval_set_are_left_to_nft() {
    let interval = Transaction::from_changes(
        vec![Change::AddElements {
            family: IpFamily::V4,
            set: "pod-cidrs".into(),
            elements: vec![Element {
                key: smallvec![Value::Prefix("10.244.0.0/16".parse().unwrap())],
                data: None,
                comment: None,
            }],
        }],
        "proxier",
    );
    assert_eq!(Batch::encode(&interval).unwrap_err(), Unsupported::Interval);
}

/// A Service with 20 endpoints (more than the 16 balancing chains) on mixed target ports, one with
/// UDP and SCTP ports, and a dual-stack one with affinity: the shapes the test clusters lack.
const WIDE_CLUSTER: &str = r#"
apiVersion: v1
kind: Node
metadata: {name: node-a}
spec: {podCIDRs: [10.244.1.0/24, "fd00:10:244:1::/64"]}
status: {addresses: [{type: InternalIP, address: 192.168.49.11}, {type: InternalIP, address: "fd00::11"}]}
---
apiVersion: v1
kind: Service
metadata: {name: wide, namespace: demo}
spec:
  type: NodePort
  clusterIP: 10.96.20.1
  clusterIPs: [10.96.20.1]
  ipFamilies: [IPv4]
  ports: [{name: http, port: 80, protocol: TCP, targetPort: http, nodePort: 30300}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: wide-a, namespace: demo, labels: {kubernetes.io/service-name: wide}}
addressType: IPv4
endpoints:
- {addresses: [10.244.1.1], nodeName: node-a}
- {addresses: [10.244.1.2], nodeName: node-a}
- {addresses: [10.244.1.3], nodeName: node-a}
- {addresses: [10.244.1.4], nodeName: node-a}
- {addresses: [10.244.1.5], nodeName: node-a}
- {addresses: [10.244.1.6], nodeName: node-a}
- {addresses: [10.244.1.7], nodeName: node-a}
- {addresses: [10.244.1.8], nodeName: node-a}
- {addresses: [10.244.1.9], nodeName: node-a}
- {addresses: [10.244.1.10], nodeName: node-a}
ports: [{name: http, port: 8080, protocol: TCP}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: wide-b, namespace: demo, labels: {kubernetes.io/service-name: wide}}
addressType: IPv4
endpoints:
- {addresses: [10.244.2.1], nodeName: node-b}
- {addresses: [10.244.2.2], nodeName: node-b}
- {addresses: [10.244.2.3], nodeName: node-b}
- {addresses: [10.244.2.4], nodeName: node-b}
- {addresses: [10.244.2.5], nodeName: node-b}
- {addresses: [10.244.2.6], nodeName: node-b}
- {addresses: [10.244.2.7], nodeName: node-b}
- {addresses: [10.244.2.8], nodeName: node-b}
- {addresses: [10.244.2.9], nodeName: node-b}
- {addresses: [10.244.2.10], nodeName: node-b}
ports: [{name: http, port: 9090, protocol: TCP}]
---
apiVersion: v1
kind: Service
metadata: {name: protocols, namespace: demo}
spec:
  clusterIP: 10.96.20.2
  clusterIPs: [10.96.20.2]
  ipFamilies: [IPv4]
  ports: [{name: dns, port: 53, protocol: UDP}, {name: sig, port: 3868, protocol: SCTP}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: protocols-a, namespace: demo, labels: {kubernetes.io/service-name: protocols}}
addressType: IPv4
endpoints:
- {addresses: [10.244.1.20], nodeName: node-a}
ports: [{name: dns, port: 5353, protocol: UDP}, {name: sig, port: 3868, protocol: SCTP}]
---
apiVersion: v1
kind: Service
metadata: {name: sticky6, namespace: demo}
spec:
  type: LoadBalancer
  clusterIP: 10.96.20.3
  clusterIPs: [10.96.20.3, "fd00:96::3"]
  ipFamilies: [IPv4, IPv6]
  ipFamilyPolicy: RequireDualStack
  sessionAffinity: ClientIP
  externalTrafficPolicy: Local
  healthCheckNodePort: 32100
  loadBalancerSourceRanges: [198.51.100.0/24, "2001:db8::/64"]
  ports: [{name: https, port: 443, protocol: TCP, targetPort: 8443, nodePort: 30400}]
status: {loadBalancer: {ingress: [{ip: 203.0.113.60}, {ip: "2001:db8:1::60"}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: sticky6-a, namespace: demo, labels: {kubernetes.io/service-name: sticky6}}
addressType: IPv4
endpoints:
- {addresses: [10.244.1.30], nodeName: node-a}
- {addresses: [10.244.1.31], nodeName: node-a}
ports: [{name: https, port: 8443, protocol: TCP}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: sticky6-b, namespace: demo, labels: {kubernetes.io/service-name: sticky6}}
addressType: IPv6
endpoints:
- {addresses: ["fd00:10:244:1::30"], nodeName: node-a}
- {addresses: ["fd00:10:244:1::31"], nodeName: node-b}
ports: [{name: https, port: 8443, protocol: TCP}]
"#;

/// Full loads by netlink list exactly as the same transactions loaded by `nft -j -f` (or by `nft -f`
/// as text, when they carry counts): every statement the layout writes (affinity, Local policies,
/// source ranges, rejects and drops, more than 16 endpoints, mixed ports, both families, interval
/// sets, every detection of local traffic), with and without counters, with carried counter values.
/// Each load replaces the previous one's tables, as a full sync does.
#[test]
fn full_loads_by_netlink_list_as_by_nft() {
    let Some(by_netlink) = Netns::for_test("full_loads_by_netlink_list_as_by_nft") else { return };
    let Some(by_nft) = Netns::for_test("full_loads_by_netlink_list_as_by_nft") else { return };
    let mut socket = by_netlink.run(|| NftSocket::open().expect("open the socket"));
    let testdata = |name: &str| {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/clusters").join(name);
        std::fs::read_to_string(path).unwrap()
    };
    let clusters = [
        ("semantics.yaml", testdata("semantics.yaml")),
        ("dual-stack.json", testdata("dual-stack.json")),
        ("wide.yaml", WIDE_CLUSTER.to_owned()),
    ];
    let cidrs = |list: &str| list.split(',').map(|c| c.parse().unwrap()).collect::<Vec<_>>();
    let detections = [
        DetectLocal::ClusterCidr,
        DetectLocal::NodeCidr,
        DetectLocal::BridgeInterface("cbr0".into()),
        DetectLocal::InterfaceNamePrefix("veth".into()),
    ];
    let mut loads = 0;
    for (name, text) in &clusters {
        let (snapshot, _) = proxier_core::Snapshot::from_text(name, text);
        for (i, detect_local) in detections.iter().enumerate() {
            let config = NodeConfig {
                node_name: "node-a".into(),
                cluster_cidrs: cidrs("10.244.0.0/16,fd00:10:244::/56"),
                detect_local: detect_local.clone(),
                service_cidrs: if i % 2 == 0 { cidrs("10.96.0.0/12,fd00:96::/108") } else { Vec::new() },
                masquerade_all: i == 3,
                ..NodeConfig::default()
            };
            let model = proxier_core::compute(&snapshot, &config);
            for counters in [true, false] {
                let full = Transaction::full_with(&model, "proxier", counters);
                let context = format!("{name}, {detect_local:?}, counters {counters}");
                socket.apply(&full).unwrap_or_else(|e| panic!("{context}: {e}")).expect("netlink carries it");
                by_nft.nft_args(&["-j", "-f", "-"], Some(&full.to_json())).unwrap();
                assert_eq!(by_netlink.ruleset().unwrap(), by_nft.ruleset().unwrap(), "{context}");
                loads += 1;
                if !counters {
                    continue;
                }
                // Carried counts: every counted element starts from its own values.
                let counted = by_netlink.run(|| proxier_nft::counters::read("proxier")).unwrap();
                assert!(!counted.is_empty(), "{context}: nothing counted");
                let carried = counted
                    .iter()
                    .enumerate()
                    .map(|(i, e)| ((e.family, e.set.clone(), e.key.clone()), (i as u64 + 1, 100 * (i as u64 + 1))))
                    .collect();
                let full = full.with_carried_counts(carried);
                socket.apply(&full).unwrap_or_else(|e| panic!("{context}, carried: {e}")).expect("netlink carries it");
                by_nft.nft_args(&["-f", "-"], Some(&full.to_text())).unwrap();
                let listing = by_netlink.ruleset().unwrap();
                assert_eq!(listing, by_nft.ruleset().unwrap(), "{context}, carried");
                let text = listing.to_string();
                assert!(
                    text.contains(r#""bytes":200,"packets":2"#) || text.contains(r#""packets":2,"bytes":200"#),
                    "{context}: counts not carried"
                );
                loads += 1;
            }
        }
    }
    eprintln!("{loads} full loads by netlink listed as by nft");
}

/// A full load made in place of a live table ([`Transaction::in_place_of`]) lists exactly as a load
/// into an empty namespace, by netlink, by `nft -j` and by `nft -f` alike; its base chains are the same
/// kernel objects as before (same handles: they never left their hooks); what the old table held
/// beyond the new layout (a stray chain, set, map and a base chain at another priority) is gone; and
/// loading the same state again in place of what netlink wrote touches elements only.
#[test]
fn a_full_load_in_place_keeps_base_chains_and_lists_as_a_fresh_one() {
    let test = "a_full_load_in_place_keeps_base_chains_and_lists_as_a_fresh_one";
    let Some(fresh) = Netns::for_test(test) else { return };
    let (Some(by_netlink), Some(by_json), Some(by_text)) =
        (Netns::for_test(test), Netns::for_test(test), Netns::for_test(test))
    else {
        return;
    };
    let testdata = |name: &str| {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/clusters").join(name);
        std::fs::read_to_string(path).unwrap()
    };
    let config = |node: &str| NodeConfig {
        node_name: node.into(),
        cluster_cidrs: vec!["10.244.0.0/16".parse().unwrap(), "fd00:10:244::/56".parse().unwrap()],
        ..NodeConfig::default()
    };
    let steps = [("semantics.yaml", "node-a"), ("dual-stack.json", "node-a"), ("semantics.yaml", "node-b")];
    let base_chains = |ns: &Netns| -> Vec<(String, u64)> {
        let listing: serde_json::Value =
            serde_json::from_str(&ns.nft_args(&["-j", "list", "chains"], None).unwrap()).unwrap();
        let mut chains: Vec<(String, u64)> = listing["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|o| o.get("chain"))
            .filter(|c| c.get("hook").is_some())
            .map(|c| (format!("{} {}", c["family"], c["name"]), c["handle"].as_u64().unwrap()))
            .collect();
        chains.sort();
        chains
    };
    let strays = "add chain ip proxier stray\nadd set ip proxier stray-set { type ipv4_addr; elements = { 10.1.2.3 } }\n\
                  add map ip proxier stray-map { type ipv4_addr : verdict; elements = { 10.1.2.3 : goto stray } }\n\
                  add chain ip proxier stray-base { type filter hook output priority 5; }\n\
                  add rule ip proxier stray-base ip daddr @stray-set counter\n";
    for (i, (name, node)) in steps.iter().enumerate() {
        let (snapshot, _) = proxier_core::Snapshot::from_text(name, &testdata(name));
        let full = Transaction::full(&proxier_core::compute(&snapshot, &config(node)), "proxier");
        fresh.nft_args(&["flush", "ruleset"], None).unwrap();
        fresh.nft_args(&["-j", "-f", "-"], Some(&full.to_json())).unwrap();
        let expected = fresh.ruleset().unwrap();
        for (ns, how) in [(&by_netlink, "netlink"), (&by_json, "nft -j"), (&by_text, "nft -f")] {
            let context = format!("step {i} ({name}, {node}) by {how}");
            let held = ns.run(|| NftSocket::open().and_then(|mut socket| socket.outline("proxier"))).unwrap();
            assert_eq!(held.is_empty(), i == 0, "{context}: {held:?}");
            let before = base_chains(ns);
            let in_place = full.clone().in_place_of(&held);
            assert_eq!(in_place.changes().contains(&Change::RemoveTable(IpFamily::V4)), i == 0, "{context}");
            match how {
                "netlink" => {
                    let mut socket = ns.run(|| NftSocket::open().unwrap());
                    socket.apply(&in_place).unwrap_or_else(|e| panic!("{context}: {e}")).expect("netlink carries it")
                }
                "nft -j" => drop(ns.nft_args(&["-j", "-f", "-"], Some(&in_place.to_json())).unwrap()),
                _ => drop(ns.nft_args(&["-f", "-"], Some(&in_place.to_text())).unwrap()),
            }
            assert_eq!(ns.ruleset().unwrap(), expected, "{context}");
            if how == "netlink" {
                // Loaded again in place of itself: only elements are written; no rule, chain or set.
                let held = ns.run(|| NftSocket::open().and_then(|mut socket| socket.outline("proxier"))).unwrap();
                let again = full.clone().in_place_of(&held);
                let other: Vec<_> = again
                    .changes()
                    .iter()
                    .filter(|c| !matches!(c, Change::FlushSet { .. } | Change::AddElements { .. }))
                    .collect();
                assert!(other.is_empty(), "{context}: reloading the same state writes {other:?}");
            }
            let after = base_chains(ns);
            // Every base chain that was there before and still is, is the same object.
            let stayed: Vec<_> = after.iter().filter(|(name, _)| before.iter().any(|(was, _)| was == name)).collect();
            assert!(stayed.iter().all(|chain| before.contains(chain)), "{context}: re-created: {before:?} → {after:?}");
            assert!(i == 0 || !stayed.is_empty(), "{context}: no base chain stayed");
            assert!(!after.iter().any(|(name, _)| name.contains("stray")), "{context}: a stray base chain stayed");
            ns.nft_args(&["-f", "-"], Some(strays)).unwrap();
        }
    }
}

/// A full load over netlink is one batch: when the kernel refuses its last message (a rule jumping to
/// a chain that does not exist, appended to the full replacement of a live table), nothing of it
/// applies — the old table is intact — and the refusal names the message.
#[test]
fn a_refused_full_load_leaves_the_old_table() {
    let Some(ns) = Netns::for_test("a_refused_full_load_leaves_the_old_table") else { return };
    let mut socket = ns.run(|| NftSocket::open().expect("open the socket"));
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/clusters/semantics.yaml");
    let (snapshot, _) = proxier_core::Snapshot::from_text("semantics.yaml", &std::fs::read_to_string(path).unwrap());
    let config = |node: &str| NodeConfig {
        node_name: node.into(),
        cluster_cidrs: vec!["10.244.0.0/16".parse().unwrap()],
        ..NodeConfig::default()
    };
    let old = Transaction::full(&proxier_core::compute(&snapshot, &config("node-a")), "proxier");
    socket.apply(&old).unwrap().unwrap();
    let before = ns.ruleset().unwrap();

    let new = Transaction::full(&proxier_core::compute(&snapshot, &config("node-b")), "proxier");
    let mut changes = new.changes().to_vec();
    changes.push(Change::AddRules {
        family: IpFamily::V4,
        chain: "services".into(),
        rules: vec![Rule::new(vec![Statement::Verdict(Verdict::Jump("no-such-chain".into()))])],
    });
    let broken = Transaction::from_changes(changes, "proxier");
    let batch = Batch::encode(&broken).unwrap();
    assert!(batch.messages() > 100, "a full load: {} messages", batch.messages());
    match socket.apply(&broken) {
        Err(NetlinkError::Refused { action, errno, .. }) => {
            assert_eq!(action, "adding a rule to chain ip proxier services");
            assert_eq!(errno, libc::ENOENT);
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(ns.ruleset().unwrap(), before, "the old table changed");
    // The same load without the broken rule applies.
    socket.apply(&new).unwrap().unwrap();
    assert_ne!(ns.ruleset().unwrap(), before);
}

/// The watch: an outside edit of proxier's table is drift; an edit of another table is not;
/// proxier's own commits (netlink, and `nft` full loads) are not; another commit while proxier's own
/// runs unwatched makes the answer unknown.
#[test]
fn the_watch_tells_outside_edits_from_own_commits() {
    let Some(ns) = Netns::for_test("the_watch_tells_outside_edits_from_own_commits") else { return };
    let (mut socket, mut watch) =
        ns.run(|| (NftSocket::open().expect("open the socket"), TableWatch::open("proxier").expect("watch")));
    assert_eq!(watch.take(), Drift::Unchanged);

    // proxier's own full load by nft, and an incremental commit by netlink.
    let load = "table ip proxier {\n chain balance-1 { }\n map service-ips { type ipv4_addr . inet_proto . inet_service : verdict; }\n}\n";
    watch.own_commit(&mut socket, |_| (ns.nft_args(&["-f", "-"], Some(load)).unwrap(), 1));
    let change = Transaction::from_changes(
        vec![Change::AddElements {
            family: IpFamily::V4,
            set: "service-ips".into(),
            elements: vec![Element {
                key: destination("10.96.0.1", 80),
                data: Some(Value::Verdict(Verdict::Goto("balance-1".into()))),
                comment: None,
            }],
        }],
        "proxier",
    );
    watch.own_commit(&mut socket, |socket| (socket.apply(&change).unwrap().unwrap(), 1));
    assert_eq!(watch.take(), Drift::Unchanged, "proxier's own commits are not drift");

    // A commit by netlink outside own_commit from a trusted socket is not drift either.
    let mut trusted = ns.run(|| NftSocket::open().expect("open"));
    watch.trust(&trusted);
    let delete = Transaction::from_changes(
        vec![Change::DeleteElements {
            family: IpFamily::V4,
            set: "service-ips".into(),
            elements: vec![Element { key: destination("10.96.0.1", 80), data: None, comment: None }],
        }],
        "proxier",
    );
    trusted.apply(&delete).unwrap().unwrap();
    assert_eq!(watch.take(), Drift::Unchanged, "commits of a trusted socket are proxier's");

    // Someone else's table.
    ns.nft_args(&["-f", "-"], Some("add table ip other\nadd chain ip other c\nadd rule ip other c accept\n")).unwrap();
    ns.nft("add table ip6 other\nadd set ip6 other s { type ipv6_addr; }\nadd element ip6 other s { ::1 }\n").unwrap();
    ns.nft_args(&["-f", "-"], Some("add table inet proxier\nadd chain inet proxier c\n")).unwrap();
    assert_eq!(watch.take(), Drift::Unchanged, "other tables are not proxier's");

    // A hand edit of proxier's table.
    ns.nft_args(&["add", "element", "ip", "proxier", "service-ips", "{ 10.96.0.2 . tcp . 80 : goto balance-1 }"], None)
        .unwrap();
    match watch.take() {
        Drift::Changed(what) => assert_eq!(what, ["ip proxier: new element"]),
        other => panic!("a hand edit was not seen: {other:?}"),
    }
    assert_eq!(watch.take(), Drift::Unchanged, "taken once");
    ns.nft_args(&["flush", "chain", "ip", "proxier", "balance-1"], None).unwrap();
    ns.nft_args(&["delete", "table", "ip", "proxier"], None).unwrap();
    match watch.take() {
        Drift::Changed(what) => assert!(what.contains(&"ip proxier: table deleted".to_owned()), "{what:?}"),
        other => panic!("a deleted table was not seen: {other:?}"),
    }

    // Another commit while proxier's own runs unwatched: unknown, so compared in full.
    watch.own_commit(&mut socket, |_| {
        ns.nft_args(&["-f", "-"], Some(load)).unwrap();
        ns.nft_args(
            &["add", "element", "ip", "proxier", "service-ips", "{ 10.96.0.3 . tcp . 80 : goto balance-1 }"],
            None,
        )
        .unwrap();
        ((), 1)
    });
    assert!(matches!(watch.take(), Drift::Unknown(_)), "a commit during the pause went unnoticed");
    assert_eq!(watch.take(), Drift::Unchanged);
}

/// A batch larger than the socket's default send buffer (thousands of elements with comments, split
/// over many messages) still goes in one atomic send, and lists as `nft` writes the same.
#[test]
fn a_large_batch_goes_in_one_send() {
    let Some(by_netlink) = Netns::for_test("a_large_batch_goes_in_one_send") else { return };
    let Some(by_nft) = Netns::for_test("a_large_batch_goes_in_one_send") else { return };
    let base = "add table ip proxier\nadd chain ip proxier balance-1\n";
    by_netlink.nft_args(&["-f", "-"], Some(base)).unwrap();
    by_nft.nft_args(&["-f", "-"], Some(base)).unwrap();
    let v4 = vec![DataType::Addr(IpFamily::V4), DataType::Proto, DataType::Service];
    let elements: Vec<Element> = (0..5_000u32)
        .map(|i| Element {
            key: destination(&format!("10.96.{}.{}", i / 250, i % 250), 80),
            data: Some(Value::Verdict(Verdict::Goto("balance-1".into()))),
            comment: Some(format!("ns/service-{i}:http/tcp (ClusterIP)")),
        })
        .collect();
    let transaction = Transaction::from_changes(
        vec![
            Change::AddSet { family: IpFamily::V4, set: set("service-ips", v4, Some(DataType::Verdict), None) },
            Change::AddElements { family: IpFamily::V4, set: "service-ips".into(), elements },
        ],
        "proxier",
    );
    let batch = Batch::encode(&transaction).unwrap();
    assert!(batch.len() > 400 * 1024 && batch.messages() > 5, "{} bytes, {} messages", batch.len(), batch.messages());
    let mut socket = by_netlink.run(|| NftSocket::open().expect("open the socket"));
    socket.apply(&transaction).expect("the kernel takes it").expect("netlink carries it");
    by_nft.nft_args(&["-j", "-f", "-"], Some(&transaction.to_json())).unwrap();
    assert_eq!(by_netlink.ruleset().unwrap(), by_nft.ruleset().unwrap());
}

/// Removes a file when dropped.
struct Remove(std::path::PathBuf);

impl Drop for Remove {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A `Proxier` for node-a in `ns` with the netlink backend (its `nft` a wrapper running nft in `ns`,
/// removed when the returned guard is dropped), holding Service ns/web (10.96.0.20:80/tcp).
fn netlink_proxier(ns: &Netns) -> (Proxier, Remove) {
    let program = std::env::temp_dir().join(format!("{}-nft", ns.name()));
    std::fs::write(&program, format!("#!/bin/sh\nexec ip netns exec {} nft \"$@\"\n", ns.name())).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let remove = Remove(program.clone());
    let (socket, watch) = ns.run(|| (NftSocket::open().unwrap(), TableWatch::open("proxier").unwrap()));
    let config = proxier_core::NodeConfig { node_name: "node-a".into(), ..Default::default() };
    let mut proxier =
        Proxier::new(ClusterState::new(config), "proxier", Nft::new(&program)).with_netlink(socket, watch);
    let service = serde_json::json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"namespace": "ns", "name": "web"},
        "spec": {"clusterIP": "10.96.0.20", "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}});
    proxier.state_mut().apply_service(serde_json::from_value(service).unwrap());
    (proxier, remove)
}

/// ns/web's EndpointSlice with these ready endpoints.
fn slice(ips: &[&str]) -> serde_json::Value {
    serde_json::json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"namespace": "ns", "name": "web-1", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "endpoints": ips.iter().map(|ip| serde_json::json!({"addresses": [ip], "conditions": {"ready": true}})).collect::<Vec<_>>(),
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]})
}

/// A `Proxier` with the netlink backend: full and partial syncs go over the socket, its own commits
/// are not drift, and a hand edit is seen by the next `resync` and
/// repaired, without listing the tables.
#[test]
fn proxier_with_netlink_repairs_a_hand_edit() {
    let Some(ns) = Netns::for_test("proxier_with_netlink_repairs_a_hand_edit") else { return };
    let (mut proxier, _program) = netlink_proxier(&ns);
    proxier.state_mut().apply_endpoint_slice(serde_json::from_value(slice(&["10.244.1.5", "10.244.1.6"])).unwrap());
    let first = proxier.sync().unwrap();
    assert!(first.by_netlink, "a full sync goes over netlink too");
    proxier.state_mut().apply_endpoint_slice(serde_json::from_value(slice(&["10.244.1.5", "10.244.1.7"])).unwrap());
    let change = proxier.sync().unwrap();
    assert!(change.by_netlink && change.changes > 0, "{change:?}");
    let listing = ns.nft_args(&["list", "table", "ip", "proxier"], None).unwrap();
    assert!(listing.contains("10.244.1.7") && !listing.contains("10.244.1.6"), "{listing}");
    let outcome = proxier.resync().unwrap();
    assert!(!outcome.drifted && outcome.changes == 0, "proxier's own commits are not drift: {outcome:?}");

    ns.nft_args(&["flush", "set", "ip", "proxier", "service-ips"], None).unwrap();
    let repair = proxier.resync().unwrap();
    assert!(repair.drifted, "{repair:?}");
    assert!(
        ns.nft_args(&["list", "set", "ip", "proxier", "service-ips"], None).unwrap().contains("10.96.0.20"),
        "repaired"
    );
    let again = proxier.resync().unwrap();
    assert!(!again.drifted && again.changes == 0, "the repair itself is not drift: {again:?}");
}

/// With the netlink backend and counters: a Service's counted element is a plain set element, so an
/// endpoint change, even one that changes the endpoint count (and so the balancer), leaves it alone:
/// its count survives and the change goes over netlink (which writes no counter values).
#[test]
fn counts_survive_an_incremental_sync_with_netlink() {
    let Some(ns) = Netns::for_test("counts_survive_an_incremental_sync_with_netlink") else { return };
    let (mut proxier, _program) = netlink_proxier(&ns);
    proxier.state_mut().apply_endpoint_slice(serde_json::from_value(slice(&["10.244.1.5"])).unwrap());
    assert!(proxier.sync().unwrap().by_netlink, "a full sync goes over netlink too");
    // Counts as traffic would leave them: the element re-written by hand with a count.
    let listing = ns.nft_args(&["list", "set", "ip", "proxier", "service-ips"], None).unwrap();
    let element = listing
        .split(['{', ','])
        .map(str::trim)
        .find(|e| e.starts_with("10.96.0.20 . tcp . 80 "))
        .and_then(|e| e.split('}').next())
        .unwrap_or_else(|| panic!("web's element in {listing}"))
        .trim();
    assert!(element.contains("counter packets 0 bytes 0"), "{element}");
    let counted = element.replace("counter packets 0 bytes 0", "counter packets 5 bytes 300");
    let edit = format!(
        "delete element ip proxier service-ips {{ 10.96.0.20 . tcp . 80 }}\nadd element ip proxier service-ips {{ {counted} }}\n"
    );
    ns.nft_args(&["-f", "-"], Some(&edit)).unwrap();
    let counts = |ns: &Netns| {
        let listing = ns.nft_args(&["list", "set", "ip", "proxier", "service-ips"], None).unwrap();
        listing.contains("10.96.0.20 . tcp . 80 counter packets 5 bytes 300")
    };
    assert!(counts(&ns), "the hand-written count is listed");

    proxier.state_mut().apply_endpoint_slice(serde_json::from_value(slice(&["10.244.1.5", "10.244.1.6"])).unwrap());
    let recounted = proxier.sync().unwrap();
    assert!(recounted.by_netlink && recounted.changes > 0, "one endpoint to two: {recounted:?}");
    let listing = ns.nft_args(&["list", "table", "ip", "proxier"], None).unwrap();
    assert!(listing.contains("10.244.1.6") && counts(&ns), "the count survives a new endpoint count:\n{listing}");

    proxier.state_mut().apply_endpoint_slice(serde_json::from_value(slice(&["10.244.1.5", "10.244.1.7"])).unwrap());
    let moved = proxier.sync().unwrap();
    assert!(moved.by_netlink && moved.changes > 0, "{moved:?}");
    let listing = ns.nft_args(&["list", "table", "ip", "proxier"], None).unwrap();
    assert!(listing.contains("10.244.1.7") && counts(&ns), "netlink left the count alone:\n{listing}");
}

/// Events lost to a full receive buffer (here: another table's commit of 300,000 elements while
/// nobody reads) are not taken for "nothing changed": the answer is `Unknown`, so the tables are
/// replaced.
#[test]
fn lost_events_make_the_answer_unknown() {
    let Some(ns) = Netns::for_test("lost_events_make_the_answer_unknown") else { return };
    let mut watch = ns.run(|| TableWatch::open("proxier").expect("watch"));
    let mut script = String::from("add table ip other\nadd set ip other s { type ipv4_addr; }\n");
    for chunk in (0..300_000u32).collect::<Vec<_>>().chunks(10_000) {
        let addresses: Vec<String> =
            chunk.iter().map(|i| std::net::Ipv4Addr::from(0x0a00_0000 + i).to_string()).collect();
        script.push_str(&format!("add element ip other s {{ {} }}\n", addresses.join(", ")));
    }
    ns.nft(&script).unwrap();
    assert!(matches!(watch.take(), Drift::Unknown(_)), "lost events went unnoticed");
    assert_eq!(watch.take(), Drift::Unchanged, "reported once");
}

/// The counters read over netlink are exactly what `nft -j list` shows for the same sets: every
/// counted set of both families (maps with goto, jump and drop verdicts, plain sets, interval sets of
/// prefixes, single addresses and ranges; IPv4 and IPv6 keys), their comments and their non-zero
/// counts; sets the layout does not count, and a table laid out without counters, are not read.
#[test]
fn counters_read_over_netlink_are_what_nft_lists() {
    let Some(ns) = Netns::for_test("counters_read_over_netlink_are_what_nft_lists") else { return };
    let mut socket = ns.run(|| NftSocket::open().expect("open the socket"));
    assert!(proxier_nft::counters::read_with(&mut socket, "proxier").unwrap().is_empty(), "no table yet");
    ns.nft(concat!(
        "table ip proxier {\n chain balance-2 { }\n chain reject-chain { }\n",
        " map service-ips { type ipv4_addr . inet_proto . inet_service : verdict; counter; elements = {",
        " 10.96.0.1 . tcp . 80 counter packets 3 bytes 180 comment \"a/web:http/tcp (ClusterIP)\" : goto balance-2,",
        " 10.96.0.2 . udp . 53 counter packets 0 bytes 0 : jump balance-2,",
        " 192.168.1.1 . sctp . 30000 counter packets 1099511627776 bytes 1 comment \"a/b:/sctp (NodePort)\" : goto balance-2 } }\n",
        " map no-endpoint-services { type ipv4_addr . inet_proto . inet_service : verdict; counter; elements = {",
        " 10.96.0.3 . tcp . 80 counter packets 7 bytes 420 comment \"a/none:/tcp (ClusterIP)\" : goto reject-chain,",
        " 10.96.0.4 . tcp . 80 counter packets 2 bytes 120 comment \"a/itp:/tcp (ClusterIP)\" : drop } }\n",
        " set cluster-ips { type ipv4_addr; counter; elements = { 10.96.0.1 counter packets 5 bytes 300, 10.96.0.2 } }\n",
        " set service-cidrs { type ipv4_addr; flags interval; counter; elements = {",
        " 10.96.0.0/16 counter packets 9 bytes 540, 10.100.0.1 counter packets 1 bytes 60,",
        " 10.101.0.3-10.101.0.7 counter packets 2 bytes 120, 192.0.0.0/2 } }\n",
        " set hairpin { type ipv4_addr . ipv4_addr; counter; elements = { 10.0.0.1 . 10.0.0.1 counter packets 4 bytes 4 } }\n",
        "}\n",
        "table ip6 proxier {\n chain balance-1 { }\n",
        " map service-ips { type ipv6_addr . inet_proto . inet_service : verdict; counter; elements = {",
        " fd00:96::1 . tcp . 443 counter packets 11 bytes 880 comment \"b/web:https/tcp (LoadBalancer IP)\" : goto balance-1 } }\n",
        " set firewall-ips { type ipv6_addr . inet_proto . inet_service; counter; elements = {",
        " 2001:db8::7 . tcp . 80 counter packets 6 bytes 360 comment \"b/fw:/tcp (LoadBalancer IP)\" } }\n",
        " set cluster-ips { type ipv6_addr; counter; elements = { fd00:96::1 counter packets 1 bytes 80 } }\n",
        " set service-cidrs { type ipv6_addr; flags interval; counter; elements = { fd00:96::/112 counter packets 2 bytes 160, ff00::/8 } }\n",
        "}\n",
        // Another table of the same family is not read.
        "table ip other {\n set cluster-ips { type ipv4_addr; counter; elements = { 10.1.1.1 counter packets 1 bytes 1 } }\n}\n",
    ))
    .unwrap();
    let read = proxier_nft::counters::read_with(&mut socket, "proxier").unwrap();
    let by_netlink = counters::by_key(&read);
    let by_nft = counters::listed(&ns, "proxier");
    assert_eq!(by_netlink, by_nft);
    // What was loaded is there (the comparison is not of two empty reads), hairpin is not read.
    assert_eq!(by_netlink.len(), 16, "{by_netlink:#?}");
    assert_eq!(
        by_netlink[&(IpFamily::V4, "service-cidrs".into(), "10.101.0.3-10.101.0.7".into())],
        (2, 120, None, None)
    );
    assert!(by_netlink.keys().all(|(_, set, _)| set != "hairpin"));
    let stats = proxier_nft::counters::Stats::from_elements(&read);
    assert_eq!(stats.unallocated["10.96.0.0/16"], 9);
    assert_eq!(stats.unknown_ports["10.96.0.1"], 5);

    // An element re-created over netlink with a carried count starts from it (the element's own
    // counter expression), as `nft` text makes it.
    let key = destination("10.96.0.1", 80);
    let goto = Some(Value::Verdict(Verdict::Goto("balance-2".into())));
    let element = Element { key: key.clone(), data: goto, comment: Some("a/web:http/tcp (ClusterIP)".into()) };
    let carried = [((IpFamily::V4, "service-ips".to_owned(), "10.96.0.1 . tcp . 80".to_owned()), (40, 2400))];
    let recreate = Transaction::from_changes(
        vec![
            Change::DeleteElements { family: IpFamily::V4, set: "service-ips".into(), elements: vec![element.clone()] },
            Change::AddElements { family: IpFamily::V4, set: "service-ips".into(), elements: vec![element] },
        ],
        "proxier",
    )
    .with_carried_counts(carried.into_iter().collect());
    socket.apply(&recreate).expect("the kernel takes it").expect("netlink carries it");
    let listed = counters::listed(&ns, "proxier");
    let entry = &listed[&(IpFamily::V4, "service-ips".into(), "10.96.0.1 . tcp . 80".into())];
    assert_eq!((entry.0, entry.1), (40, 2400));
    assert_eq!(counters::by_key(&proxier_nft::counters::read_with(&mut socket, "proxier").unwrap()), listed);

    // Laid out without counters: nothing to read.
    ns.nft("delete table ip proxier\ndelete table ip6 proxier\ntable ip proxier {\n set cluster-ips { type ipv4_addr; elements = { 10.96.0.1 } }\n}\n")
        .unwrap();
    assert!(proxier_nft::counters::read_with(&mut socket, "proxier").unwrap().is_empty());
}

/// An incremental sync that deletes and adds again a counted element (its verdict changed) carries its
/// count: read over netlink for the re-created keys only (more than one request's worth here), then
/// given to the new element.
#[test]
fn counts_of_recreated_elements_are_read_by_key_and_carried() {
    let Some(ns) = Netns::for_test("counts_of_recreated_elements_are_read_by_key_and_carried") else { return };
    let mut socket = ns.run(|| NftSocket::open().expect("open the socket"));
    let ip = |i: usize| format!("10.96.{}.{}", 1 + i / 200, 1 + i % 200);
    let many = 150;
    let mut text = String::from(
        "table ip proxier {\n chain balance-2 { }\n chain balance-3 { }\n chain reject-chain { }\n \
         map service-ips { type ipv4_addr . inet_proto . inet_service : verdict; counter; elements = {",
    );
    let elements: Vec<String> = (0..many)
        .map(|i| format!(" {} . tcp . 80 counter packets {} bytes {} : goto balance-2", ip(i), i + 1, (i + 1) * 60))
        .collect();
    text.push_str(&elements.join(","));
    text.push_str(concat!(
        " } }\n map no-endpoint-services { type ipv4_addr . inet_proto . inet_service : verdict; counter; elements = {",
        " 10.96.0.3 . tcp . 80 counter packets 7 bytes 420 comment \"a/none:/tcp (ClusterIP)\" : goto reject-chain } }\n",
        " set service-cidrs { type ipv4_addr; flags interval; counter; elements = {",
        " 10.96.0.0/16 counter packets 9 bytes 540, 10.100.0.0/16 } }\n}\n",
    ));
    ns.nft(&text).unwrap();

    // Read by key: present keys, one the set does not hold (the kernel stops a request at it), and an
    // interval set's prefix.
    let sets = socket.sets(IpFamily::V4, "proxier").unwrap();
    let info = |name: &str| sets.iter().find(|s| s.name == name).unwrap().clone();
    let (first, absent, last) = (destination(&ip(0), 80), destination("10.99.0.1", 80), destination(&ip(many - 1), 80));
    let read =
        socket.elements_with_keys(IpFamily::V4, "proxier", &info("service-ips"), &[&first, &absent, &last]).unwrap();
    let read: Vec<(String, Option<(u64, u64)>)> = read.into_iter().map(|e| (e.key, e.counter)).collect();
    assert_eq!(
        read,
        [(format!("{} . tcp . 80", ip(0)), Some((1, 60))), (format!("{} . tcp . 80", ip(many - 1)), Some((150, 9000)))]
    );
    let cidr = [Value::Prefix("10.96.0.0/16".parse().unwrap())];
    let read = socket.elements_with_keys(IpFamily::V4, "proxier", &info("service-cidrs"), &[&cidr]).unwrap();
    assert_eq!((read[0].key.as_str(), read[0].counter), ("10.96.0.0/16", Some((9, 540))));

    // Every service-ips element and the no-endpoint one re-created with another verdict, and a new one.
    let element = |key: smallvec::SmallVec<[Value; 4]>, chain: &str| Element {
        key,
        data: Some(Value::Verdict(Verdict::Goto(chain.into()))),
        comment: None,
    };
    let old: Vec<Element> = (0..many).map(|i| element(destination(&ip(i), 80), "balance-2")).collect();
    let mut new: Vec<Element> = (0..many).map(|i| element(destination(&ip(i), 80), "balance-3")).collect();
    new.push(element(destination("10.96.0.200", 80), "balance-3"));
    let none = Element {
        comment: Some("a/none:/tcp (ClusterIP)".into()),
        ..element(destination("10.96.0.3", 80), "reject-chain")
    };
    let dropped = Element { data: Some(Value::Verdict(Verdict::Drop)), ..none.clone() };
    let v4 = IpFamily::V4;
    let recreate = Transaction::from_changes(
        vec![
            Change::DeleteElements { family: v4, set: "service-ips".into(), elements: old },
            Change::DeleteElements { family: v4, set: "no-endpoint-services".into(), elements: vec![none] },
            Change::AddElements { family: v4, set: "service-ips".into(), elements: new },
            Change::AddElements { family: v4, set: "no-endpoint-services".into(), elements: vec![dropped] },
        ],
        "proxier",
    );
    let recreate = proxier_nft::counters::carry_into(Some(&mut socket), recreate, false);
    socket.apply(&recreate).expect("the kernel takes it").expect("netlink carries it");
    let listed = counters::listed(&ns, "proxier");
    for i in 0..many {
        let entry = &listed[&(v4, "service-ips".into(), format!("{} . tcp . 80", ip(i)))];
        assert_eq!((entry.0, entry.1, entry.3.as_deref()), (i as u64 + 1, (i as u64 + 1) * 60, Some("goto balance-3")));
    }
    let fresh = &listed[&(v4, "service-ips".into(), "10.96.0.200 . tcp . 80".into())];
    assert_eq!((fresh.0, fresh.1), (0, 0), "a new element starts from zero");
    let none = &listed[&(v4, "no-endpoint-services".into(), "10.96.0.3 . tcp . 80".into())];
    assert_eq!((none.0, none.1, none.3.as_deref()), (7, 420, Some("drop")));

    // The set gone: nothing read, no error.
    let gone = info("service-ips");
    ns.nft("delete table ip proxier\n").unwrap();
    assert!(socket.elements_with_keys(IpFamily::V4, "proxier", &gone, &[&first]).unwrap().is_empty());
}

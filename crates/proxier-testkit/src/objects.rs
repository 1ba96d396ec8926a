//! proptest strategies for Kubernetes objects as kubectl prints them (JSON values): Services,
//! EndpointSlices and Nodes with plausible, hostile and random field values, and node configurations.
//! Used by the property tests of proxier-core and proxier-nft.

use std::collections::BTreeSet;

use proptest::prelude::*;
use proptest::sample::select;
use proxier_core::{DetectLocal, NodeConfig};
use serde_json::{Value, json};

/// Strings that would break nft's syntax, a shell, or a log line, if they ever reached one.
pub const HOSTILE: &[&str] = &[
    "\"; flush ruleset; #",
    "a\"b",
    "}{",
    "drop",
    "accept",
    "table ip filter { chain input { } }",
    "line\nbreak",
    "cr\rlf",
    "back\\slash",
    "$(reboot)",
    "`id`",
    "quote'single",
    "nul\u{0}byte",
    "ünïcödé ☃",
    "comment \"x\" counter",
    "@service-ips",
    "goto reject-chain",
    "; delete table ip proxier",
    "",
    " ",
];

/// IPv4 addresses from the clusters of testdata/ (Service, pod, node and outside addresses), shared with
/// the fuzz input builder.
pub const V4: &[&str] =
    &["10.96.0.1", "10.96.0.10", "10.96.5.5", "10.244.1.5", "10.244.2.7", "192.168.49.11", "203.0.113.7"];
/// IPv6 addresses of the same kinds.
pub const V6: &[&str] = &["fd00:10:96::1", "fd00:10:96::a", "fd00:10:244:1::5", "fd00:49::11", "2001:db8::7"];
/// Address fields a careless or hostile writer could put in an object: leading zeros, out of range,
/// prefixes, zones, mapped, unspecified, broadcast, padded.
pub const BAD_IPS: &[&str] = &[
    "010.096.000.001",
    "10.96.0.256",
    "::g",
    "None",
    "",
    "10.0.0.1/24",
    " 10.0.0.1",
    "1.2.3",
    "fe80::1%eth0",
    "::ffff:10.0.0.1",
    "0.0.0.0",
    "255.255.255.255",
    "::",
    "10.96.0.1\n",
];
const NAMES: &[&str] = &["web", "api", "dns", "db"];
const NAMESPACES: &[&str] = &["default", "kube-system", "shop"];
const NODES: &[&str] = &["node-a", "node-b"];

/// A name: mostly from a small pool (so that slices meet their Services), sometimes hostile, random or
/// 10,000 characters long.
pub fn name(pool: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop_oneof![
        12 => select(pool).prop_map(str::to_owned),
        2 => select(HOSTILE).prop_map(str::to_owned),
        1 => any::<String>(),
        1 => "[a-z][a-z0-9.-]{0,20}",
        1 => (9_000usize..11_000).prop_map(|n| "n".repeat(n)),
    ]
}

/// An address as text: valid IPv4 or IPv6 from a pool or random, sloppy or broken.
pub fn ip_text() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => select(V4).prop_map(str::to_owned),
        3 => select(V6).prop_map(str::to_owned),
        1 => any::<std::net::Ipv4Addr>().prop_map(|ip| ip.to_string()),
        1 => any::<std::net::Ipv6Addr>().prop_map(|ip| ip.to_string()),
        2 => select(BAD_IPS).prop_map(str::to_owned),
        1 => "[0-9a-f.:]{0,16}",
    ]
}

pub fn port() -> impl Strategy<Value = Value> {
    prop_oneof![
        6 => select(&[80i64, 443, 53, 8080, 9090, 30080, 31000][..]).prop_map(Value::from),
        3 => (1i64..=65535).prop_map(Value::from),
        1 => select(vec![0i64, 65536, -1, 70000, i64::from(i32::MAX), i64::from(i32::MIN)]).prop_map(Value::from),
        1 => Just(Value::Null),
    ]
}

pub fn protocol() -> impl Strategy<Value = Value> {
    prop_oneof![
        6 => Just(json!("TCP")),
        3 => Just(json!("UDP")),
        2 => Just(json!("SCTP")),
        1 => Just(Value::Null),
        1 => select(&["ICMP", "tcp", "", "TCP\n"][..]).prop_map(Value::from),
    ]
}

fn maybe<T: std::fmt::Debug + Clone>(s: impl Strategy<Value = T>) -> impl Strategy<Value = Option<T>> {
    prop::option::weighted(0.7, s)
}

fn service_port() -> impl Strategy<Value = Value> {
    (
        prop_oneof![4 => select(&["http", "https", "dns", "metrics", ""][..]).prop_map(str::to_owned), 1 => name(NAMES)],
        port(),
        protocol(),
        maybe(port()),
    )
        .prop_map(|(name, port, protocol, node_port)| {
            json!({"name": name, "port": port, "protocol": protocol, "nodePort": node_port, "targetPort": 8080})
        })
}

/// Hundreds of distinct ports, each with a NodePort: big sets and maps.
fn many_ports() -> impl Strategy<Value = Vec<Value>> {
    (50usize..400).prop_map(|n| {
        (0..n)
            .map(|i| {
                let protocol = ["TCP", "UDP", "SCTP"][i % 3];
                json!({"name": format!("p{i}"), "port": 1000 + i, "protocol": protocol, "nodePort": 30000 + i})
            })
            .collect()
    })
}

pub fn service() -> impl Strategy<Value = Value> {
    let meta = (name(NAMES), name(NAMESPACES), maybe(name(&["note"])), any::<bool>(), any::<bool>());
    let spec = (
        select(&["ClusterIP", "NodePort", "LoadBalancer", "ExternalName", "Weird"][..]),
        ip_text(),
        maybe(prop::collection::vec(ip_text(), 0..3)),
        select(vec![Value::Null, json!(["IPv4"]), json!(["IPv6"]), json!(["IPv4", "IPv6"]), json!(["IPv6", "IPv4"])]),
        prop_oneof![8 => prop::collection::vec(service_port(), 0..5), 1 => many_ports()],
        prop::collection::vec(ip_text(), 0..3),
        (select(&["Cluster", "Local"][..]), select(&["Cluster", "Local"][..]), select(&["None", "ClientIP"][..])),
        maybe(select(vec![json!(10), json!(0), json!(-1), json!(100_000)])),
        maybe(prop::collection::vec(
            prop_oneof![
                select(&["10.0.0.0/8", "192.168.49.0/24", "fd00::/8", "0.0.0.0/0"][..]).prop_map(str::to_owned),
                any::<String>()
            ],
            0..3,
        )),
        maybe(port()),
        prop::collection::vec((ip_text(), select(vec![Value::Null, json!("VIP"), json!("Proxy")])), 0..3),
    );
    (meta, spec).prop_map(
        |(
            (name, namespace, annotation, headless, other_proxy),
            (kind, cluster_ip, cluster_ips, families, ports, external, (etp, itp, affinity), timeout, ranges, hc, lb),
        )| {
            let mut labels = serde_json::Map::new();
            if headless {
                labels.insert("service.kubernetes.io/headless".into(), json!(""));
            }
            if other_proxy {
                labels.insert("service.kubernetes.io/service-proxy-name".into(), json!("other"));
            }
            let ingress: Vec<Value> = lb.into_iter().map(|(ip, mode)| json!({"ip": ip, "ipMode": mode})).collect();
            json!({
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {
                    "name": name,
                    "namespace": namespace,
                    "labels": labels,
                    "annotations": {"note": annotation, "service.beta.kubernetes.io/load-balancer-source-ranges": "10.0.0.0/8,bad"},
                },
                "spec": {
                    "type": kind,
                    "clusterIP": cluster_ip,
                    "clusterIPs": cluster_ips,
                    "ipFamilies": families,
                    "ports": ports,
                    "externalIPs": external,
                    "externalTrafficPolicy": etp,
                    "internalTrafficPolicy": itp,
                    "sessionAffinity": affinity,
                    "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": timeout}},
                    "loadBalancerSourceRanges": ranges,
                    "healthCheckNodePort": hc,
                },
                "status": {"loadBalancer": {"ingress": ingress}},
            })
        },
    )
}

fn endpoint() -> impl Strategy<Value = Value> {
    (
        ip_text(),
        (maybe(any::<bool>()), maybe(any::<bool>()), maybe(any::<bool>())),
        maybe(name(NODES)),
        maybe(select(&["zone-a", "zone-b"][..])),
        maybe(select(&["zone-a", "zone-b"][..])),
        maybe(select(NODES)),
    )
        .prop_map(|(ip, (ready, serving, terminating), node, zone, zone_hint, node_hint)| {
            let mut hints = serde_json::Map::new();
            if let Some(zone) = zone_hint {
                hints.insert("forZones".into(), json!([{"name": zone}]));
            }
            if let Some(node) = node_hint {
                hints.insert("forNodes".into(), json!([{"name": node}]));
            }
            json!({
                "addresses": [ip],
                "conditions": {"ready": ready, "serving": serving, "terminating": terminating},
                "nodeName": node,
                "zone": zone,
                "hints": if hints.is_empty() { Value::Null } else { Value::Object(hints) },
            })
        })
}

pub fn endpoint_slice() -> impl Strategy<Value = Value> {
    (
        name(NAMES),
        "[a-z0-9]{1,5}",
        name(NAMESPACES),
        prop_oneof![6 => Just("IPv4"), 3 => Just("IPv6"), 1 => Just("FQDN"), 1 => Just("IPv5")],
        prop::collection::vec(endpoint(), 0..5),
        maybe(prop::collection::vec(
            (
                prop_oneof![select(&["http", "https", "dns", "metrics", ""][..]).prop_map(str::to_owned), name(NAMES)],
                port(),
                protocol(),
            ),
            0..4,
        )),
    )
        .prop_map(|(service, suffix, namespace, family, endpoints, ports)| {
            let ports = ports.map(|ports| {
                ports
                    .into_iter()
                    .map(|(name, port, protocol)| json!({"name": name, "port": port, "protocol": protocol}))
                    .collect::<Vec<_>>()
            });
            json!({
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": format!("{service}-{suffix}"),
                    "namespace": namespace,
                    "labels": {"kubernetes.io/service-name": service},
                },
                "addressType": family,
                "endpoints": endpoints,
                "ports": ports,
            })
        })
}

pub fn node() -> impl Strategy<Value = Value> {
    (
        name(NODES),
        prop::collection::vec((select(&["InternalIP", "ExternalIP", "Hostname"][..]), ip_text()), 0..4),
        maybe(select(&["10.244.1.0/24", "fd00:10:244:1::/64", "nope"][..])),
    )
        .prop_map(|(name, addresses, pod_cidr)| {
            let addresses: Vec<Value> =
                addresses.into_iter().map(|(kind, ip)| json!({"type": kind, "address": ip})).collect();
            json!({
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {"name": name, "labels": {"topology.kubernetes.io/zone": "zone-a"}},
                "spec": {"podCIDRs": pod_cidr.map(|c| vec![c])},
                "status": {"addresses": addresses},
            })
        })
}

/// A cluster: Services, slices and Nodes, each (kind, namespace, name) once, so that the order of the
/// objects cannot matter (a duplicate lets the later one win).
pub fn objects(max: usize) -> impl Strategy<Value = Vec<Value>> {
    prop::collection::vec(prop_oneof![4 => service(), 4 => endpoint_slice(), 1 => node()], 0..max).prop_map(|objects| {
        let mut seen = BTreeSet::new();
        objects
            .into_iter()
            .filter(|o| {
                // A namespaced object without a namespace is in `default`.
                let namespace = o["metadata"]["namespace"].as_str().filter(|n| !n.is_empty()).unwrap_or("default");
                let key = (o["kind"].to_string(), namespace.to_owned(), o["metadata"]["name"].to_string());
                seen.insert(key)
            })
            .collect()
    })
}

/// The objects and a shuffled copy.
pub fn objects_and_shuffled(max: usize) -> impl Strategy<Value = (Vec<Value>, Vec<Value>)> {
    objects(max).prop_flat_map(|objects| {
        let shuffled = Just(objects.clone()).prop_shuffle();
        (Just(objects), shuffled)
    })
}

/// A node configuration: which node, its addresses, pod and Service ranges, detector, masquerading.
pub fn config() -> impl Strategy<Value = NodeConfig> {
    let nets = || {
        prop::collection::vec(
            select(&["10.244.0.0/16", "fd00:10:244::/56", "192.168.49.0/24", "10.96.0.0/16", "fd00:10:96::/112"][..]),
            0..3,
        )
        .prop_map(|nets| nets.into_iter().map(|n| n.parse().unwrap()).collect::<Vec<ipnet::IpNet>>())
    };
    (
        select(&["node-a", "node-b", "node-c"][..]),
        prop::collection::vec(select(&["192.168.49.11", "fd00:49::11", "192.168.49.12"][..]), 0..3),
        nets(),
        0..4u8,
        nets(),
        nets(),
        any::<bool>(),
    )
        .prop_map(|(node, ips, cluster_cidrs, detect, nodeport_addresses, service_cidrs, masquerade_all)| {
            NodeConfig {
                node_name: node.to_owned(),
                node_ips: ips.into_iter().map(|ip| ip.parse().unwrap()).collect(),
                cluster_cidrs,
                detect_local: match detect {
                    0 => DetectLocal::ClusterCidr,
                    1 => DetectLocal::NodeCidr,
                    2 => DetectLocal::BridgeInterface("cni0".into()),
                    _ => DetectLocal::InterfaceNamePrefix("veth".into()),
                },
                nodeport_addresses,
                service_cidrs,
                masquerade_all,
            }
        })
}

/// The objects as one kubectl `-o json` List.
pub fn as_json(objects: &[Value]) -> String {
    json!({"apiVersion": "v1", "kind": "List", "items": objects}).to_string()
}

/// proptest's case count: `PROPTEST_CASES` when set, else `default` (kept small for CI).
pub fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

//! Fuzz input bytes as choices: a structured snapshot (Services, EndpointSlices, Nodes as JSON) and a node
//! configuration, so that the fuzzer explores the core and the renderer rather than YAML syntax.

use serde_json::{Value, json};

use crate::objects::{BAD_IPS, V4, V6};

/// Reads choices off the input; once it runs out, every choice is 0.
pub struct Bytes<'a> {
    data: &'a [u8],
    /// Service ports still to be generated for this input. A few bytes can ask for a thousand ports, so
    /// without a budget one input could hold 24 such Services and take a hundred times longer than the
    /// rest while exercising the same loops; large Services are the property and bad-input tests' job.
    ports_left: usize,
}

impl<'a> Bytes<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Bytes { data, ports_left: PORT_BUDGET }
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((first, rest)) => {
                self.data = rest;
                *first
            }
            None => 0,
        }
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }

    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { usize::from(self.byte()) % n }
    }

    pub fn flag(&mut self) -> bool {
        self.byte() & 1 == 1
    }

    pub fn pick<T: Clone>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())].clone()
    }

    /// Raw bytes as a (lossy) string, length-prefixed.
    pub fn raw(&mut self) -> String {
        let n = usize::from(self.byte() % 32).min(self.data.len());
        let (text, rest) = self.data.split_at(n);
        self.data = rest;
        String::from_utf8_lossy(text).into_owned()
    }

    /// Mostly a plausible value from `pool`, sometimes raw bytes.
    pub fn text(&mut self, pool: &[&str]) -> String {
        match self.below(8) {
            0 => self.raw(),
            _ => self.pick(pool).to_owned(),
        }
    }
}

/// At most this many Service ports in one structured snapshot.
pub const PORT_BUDGET: usize = 256;

pub const NAMES: &[&str] = &[
    "web",
    "api",
    "dns",
    "",
    "a\"b",
    "x; flush ruleset",
    "}{",
    "drop",
    "table ip filter { }",
    "line\nbreak",
    "back\\slash",
    "quote'single",
    "\u{0}nul",
    "ünïcödé",
    "comment \"x\" counter",
];
pub const NAMESPACES: &[&str] = &["default", "kube-system", "shop", "", "ns;evil", "ns\"q"];
pub const PROTOCOLS: &[&str] = &["TCP", "UDP", "SCTP", "ICMP", "tcp", ""];
pub const TYPES: &[&str] = &["ClusterIP", "NodePort", "LoadBalancer", "ExternalName", "Weird"];
pub const PORTS: &[i64] = &[80, 443, 53, 8080, 0, 65535, 65536, -1, 30080, 32767, 2147483647, 1];

impl Bytes<'_> {
    fn ip(&mut self) -> String {
        match self.below(8) {
            0..=3 => self.pick(V4).to_owned(),
            4..=5 => self.pick(V6).to_owned(),
            6 => self.pick(BAD_IPS).to_owned(),
            _ => self.raw(),
        }
    }

    fn port_number(&mut self) -> Value {
        match self.below(8) {
            0 => json!(self.u16()),
            1 => json!(self.raw()),
            _ => json!(self.pick(PORTS)),
        }
    }

    fn maybe(&mut self, value: impl FnOnce(&mut Self) -> Value) -> Option<Value> {
        if self.below(4) == 0 { None } else { Some(value(self)) }
    }

    fn service(&mut self) -> Value {
        let mut ports = Vec::new();
        // Now and then many ports, to exercise large sets and maps.
        let wanted = if self.below(16) == 0 { usize::from(self.byte()) } else { self.below(4) };
        let count = wanted.min(self.ports_left);
        self.ports_left -= count;
        for i in 0..count {
            let port = if count > 8 {
                json!({"name": format!("p{i}"), "port": 1 + i, "protocol": "TCP", "nodePort": 30000 + i})
            } else {
                json!({
                    "name": self.text(&["http", "dns", "", "https", "metrics"]),
                    "port": self.port_number(),
                    "protocol": self.text(PROTOCOLS),
                    "nodePort": self.port_number(),
                })
            };
            ports.push(port);
        }
        let cluster_ips: Vec<Value> = (0..self.below(3)).map(|_| json!(self.ip())).collect();
        let families = self.pick(&[json!(null), json!(["IPv4"]), json!(["IPv6"]), json!(["IPv4", "IPv6"])]);
        let external: Vec<Value> = (0..self.below(3)).map(|_| json!(self.ip())).collect();
        let ingress: Vec<Value> = (0..self.below(3))
            .map(|_| json!({"ip": self.ip(), "ipMode": self.pick(&[json!(null), json!("VIP"), json!("Proxy")])}))
            .collect();
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "name": self.text(NAMES),
                "namespace": self.text(NAMESPACES),
                "annotations": {"note": self.raw(), "service.beta.kubernetes.io/load-balancer-source-ranges": self.raw()},
            },
            "spec": {
                "type": self.text(TYPES),
                "clusterIP": self.ip(),
                "clusterIPs": self.maybe(|_| json!(cluster_ips)),
                "ipFamilies": families,
                "ports": ports,
                "externalIPs": external,
                "externalTrafficPolicy": self.pick(&["Cluster", "Local"]),
                "internalTrafficPolicy": self.pick(&["Cluster", "Local"]),
                "sessionAffinity": self.pick(&["None", "ClientIP"]),
                "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": self.pick(&[json!(null), json!(10), json!(0), json!(-3), json!(100000)])}},
                "loadBalancerSourceRanges": self.maybe(|b| json!([b.pick(&["10.0.0.0/8", "192.168.49.0/24", "fd00::/8", "nope", "1.2.3.4/40"])])),
                "healthCheckNodePort": self.port_number(),
            },
            "status": {"loadBalancer": {"ingress": ingress}},
        })
    }

    fn endpoint_slice(&mut self) -> Value {
        let endpoints: Vec<Value> = (0..self.below(5))
            .map(|_| {
                json!({
                    "addresses": [self.ip()],
                    "conditions": {
                        "ready": self.pick(&[json!(null), json!(true), json!(false)]),
                        "serving": self.pick(&[json!(null), json!(true), json!(false)]),
                        "terminating": self.pick(&[json!(null), json!(true), json!(false)]),
                    },
                    "nodeName": self.text(&["node-a", "node-b"]),
                    "zone": self.pick(&["zone-a", "zone-b"]),
                    "hints": self.maybe(|b| json!({"forZones": [{"name": b.pick(&["zone-a", "zone-b"])}]})),
                })
            })
            .collect();
        let ports: Vec<Value> = (0..self.below(3))
            .map(|_| {
                json!({
                    "name": self.text(&["http", "dns", "", "https"]),
                    "port": self.port_number(),
                    "protocol": self.text(PROTOCOLS),
                })
            })
            .collect();
        json!({
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": format!("{}-{}", self.text(NAMES), self.byte()),
                "namespace": self.text(NAMESPACES),
                "labels": {"kubernetes.io/service-name": self.text(NAMES)},
            },
            "addressType": self.pick(&["IPv4", "IPv6", "FQDN", "IPv5"]),
            "endpoints": endpoints,
            "ports": self.maybe(|_| json!(ports)),
        })
    }

    fn node(&mut self) -> Value {
        let addresses: Vec<Value> = (0..self.below(4))
            .map(|_| json!({"type": self.pick(&["InternalIP", "ExternalIP", "Hostname"]), "address": self.ip()}))
            .collect();
        json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": self.text(&["node-a", "node-b"]), "labels": {"topology.kubernetes.io/zone": "zone-a"}},
            "spec": {"podCIDRs": [self.pick(&["10.244.1.0/24", "fd00:10:244:1::/64", "bad"])]},
            "status": {"addresses": addresses},
        })
    }

    /// A kubectl-style List of objects chosen by the input.
    pub fn snapshot(&mut self) -> Value {
        let mut items = Vec::new();
        while !self.is_empty() && items.len() < 24 {
            items.push(match self.below(8) {
                0..=3 => self.service(),
                4..=6 => self.endpoint_slice(),
                _ => self.node(),
            });
        }
        json!({"apiVersion": "v1", "kind": "List", "items": items})
    }

    /// A node configuration chosen by the input.
    pub fn config(&mut self) -> proxier_core::NodeConfig {
        use proxier_core::DetectLocal;
        let nets = |b: &mut Self| -> Vec<ipnet::IpNet> {
            let all = ["10.244.0.0/16", "fd00:10:244::/56", "192.168.49.0/24", "0.0.0.0/0", "::/0"];
            (0..b.below(3)).map(|_| b.pick(&all).parse().unwrap()).collect()
        };
        proxier_core::NodeConfig {
            node_name: self.pick(&["node-a", "node-b", "node-c"]).to_owned(),
            node_ips: (0..self.below(3)).filter_map(|_| self.ip().parse().ok()).collect(),
            cluster_cidrs: nets(self),
            detect_local: match self.below(4) {
                0 => DetectLocal::ClusterCidr,
                1 => DetectLocal::NodeCidr,
                2 => DetectLocal::BridgeInterface("cni0".into()),
                _ => DetectLocal::InterfaceNamePrefix("veth".into()),
            },
            nodeport_addresses: nets(self),
            service_cidrs: nets(self),
            masquerade_all: self.flag(),
        }
    }
}

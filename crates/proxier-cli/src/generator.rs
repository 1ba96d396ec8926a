//! `proxier gen`: a synthetic cluster snapshot, as `kubectl get svc,endpointslices,nodes -A -o json` (or
//! `-o yaml`) would print it, for benchmarks and scale tests.
//!
//! The same options and seed always give the same bytes. What is generated:
//!
//! - `services` Services spread over namespaces of about 25 Services each, named like real workloads
//!   (`checkout-prod/cart-api`), their types dealt out exactly in the proportions of `mix`. Each has `ports`
//!   ports (TCP, or UDP for `udp` percent of the Services), a ClusterIP from 10.96.0.0/12, and as its type
//!   asks NodePorts (from `node_port_range`), a LoadBalancer ingress IP (198.18.0.0/16) or an externalIP
//!   (198.19.0.0/16). `local` percent of the externally reachable Services have
//!   `externalTrafficPolicy: Local` (LoadBalancers then get a `healthCheckNodePort`), and `affinity`
//!   percent of all Services `sessionAffinity: ClientIP`.
//! - `endpoints` ready endpoints per Service (headless ones too), each a pod of its own on one of the
//!   nodes, in EndpointSlices of at most 100 endpoints as the EndpointSlice controller cuts them.
//! - `nodes` Nodes `node-1`…, InternalIPs from 172.18.0.0/16, spread over three zones, each with a
//!   podCIDR from the cluster CIDR 10.128.0.0/9 ([`CLUSTER_CIDR`]) large enough for its pods.
//!
//! It is the `proxier_cli` library's one module, so that the benchmarks (`benches/pipeline.rs`), the churn
//! driver (`examples/churn`) and the tests use the very generator `proxier gen` runs.

use std::collections::HashSet;
use std::fmt;
use std::io::Write;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde_json::{Value, json};

/// The pod network every generated podCIDR and endpoint lies in.
pub const CLUSTER_CIDR: &str = "10.128.0.0/9";
/// The Service network every generated ClusterIP lies in. Its first 16 addresses are never generated,
/// so that tests may add a Service of their own there (10.96.0.10 is the usual DNS address).
pub const SERVICE_CIDR: &str = "10.96.0.0/12";
/// The most endpoints the EndpointSlice controller puts in one slice (its `--max-endpoints-per-slice`).
pub const MAX_ENDPOINTS_PER_SLICE: usize = 100;

const CLUSTER_BASE: u32 = u32::from_be_bytes([10, 128, 0, 0]);
const CLUSTER_SIZE: u32 = 1 << 23;
const SERVICE_BASE: u32 = u32::from_be_bytes([10, 96, 0, 0]);
const SERVICE_SIZE: u32 = 1 << 20;
const SERVICE_RESERVED: u32 = 16;
const NODE_BASE: u32 = u32::from_be_bytes([172, 18, 0, 0]);
const LOAD_BALANCER_BASE: u32 = u32::from_be_bytes([198, 18, 0, 0]);
const EXTERNAL_BASE: u32 = u32::from_be_bytes([198, 19, 0, 0]);
const SERVICES_PER_NAMESPACE: usize = 25;
const ZONES: [&str; 3] = ["zone-a", "zone-b", "zone-c"];

/// What to generate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub services: usize,
    /// Endpoints per Service.
    pub endpoints: usize,
    pub seed: u64,
    /// Number of Nodes; `None`: one per 100 pods (at least 3, at most 5,000).
    pub nodes: Option<usize>,
    pub mix: Mix,
    /// Ports per Service (1-8).
    pub ports: usize,
    /// Percent of Services whose ports are UDP.
    pub udp: u8,
    /// Percent of the externally reachable Services with `externalTrafficPolicy: Local`.
    pub local: u8,
    /// Percent of Services with `sessionAffinity: ClientIP`.
    pub affinity: u8,
    /// The NodePort range (kube-apiserver's `--service-node-port-range`).
    pub node_port_range: (u16, u16),
}

impl Default for Options {
    fn default() -> Self {
        Options {
            services: 100,
            endpoints: 3,
            seed: 1,
            nodes: None,
            mix: Mix::default(),
            ports: 1,
            udp: 0,
            local: 0,
            affinity: 0,
            node_port_range: (30000, 32767),
        }
    }
}

/// Service types, by relative weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mix {
    pub cluster_ip: u32,
    pub node_port: u32,
    pub load_balancer: u32,
    pub external_ip: u32,
    pub headless: u32,
}

impl Default for Mix {
    /// Mostly ClusterIPs, as in most clusters.
    fn default() -> Self {
        Mix { cluster_ip: 85, node_port: 5, load_balancer: 3, external_ip: 2, headless: 5 }
    }
}

impl FromStr for Mix {
    type Err = String;

    /// `clusterip=85,nodeport=5,loadbalancer=3,externalip=2,headless=5`; types not named get weight 0.
    fn from_str(text: &str) -> Result<Mix, String> {
        let mut mix = Mix { cluster_ip: 0, node_port: 0, load_balancer: 0, external_ip: 0, headless: 0 };
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, weight) = part.split_once('=').ok_or_else(|| format!("{part:?} is not TYPE=WEIGHT"))?;
            let weight: u32 = weight.trim().parse().map_err(|e| format!("weight {weight:?} of {name}: {e}"))?;
            let slot = match name.trim().to_ascii_lowercase().as_str() {
                "clusterip" => &mut mix.cluster_ip,
                "nodeport" => &mut mix.node_port,
                "loadbalancer" => &mut mix.load_balancer,
                "externalip" => &mut mix.external_ip,
                "headless" => &mut mix.headless,
                other => {
                    return Err(format!(
                        "unknown type {other:?} (expected clusterip, nodeport, loadbalancer, externalip, headless)"
                    ));
                }
            };
            *slot = weight;
        }
        if mix.weights().iter().all(|&w| w == 0) {
            return Err("every weight is 0".into());
        }
        Ok(mix)
    }
}

impl fmt::Display for Mix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "clusterip={},nodeport={},loadbalancer={},externalip={},headless={}",
            self.cluster_ip, self.node_port, self.load_balancer, self.external_ip, self.headless
        )
    }
}

impl Mix {
    fn weights(&self) -> [u32; 5] {
        [self.cluster_ip, self.node_port, self.load_balancer, self.external_ip, self.headless]
    }
}

/// A Service's type as generated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    ClusterIp,
    NodePort,
    LoadBalancer,
    ExternalIp,
    Headless,
}

const KINDS: [Kind; 5] = [Kind::ClusterIp, Kind::NodePort, Kind::LoadBalancer, Kind::ExternalIp, Kind::Headless];

impl Kind {
    fn is_external(self) -> bool {
        matches!(self, Kind::NodePort | Kind::LoadBalancer | Kind::ExternalIp)
    }
}

/// Counts of what was generated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub services: usize,
    /// Services of each kind, in [`Kind`] order.
    pub by_kind: [usize; 5],
    pub ports: usize,
    pub udp_services: usize,
    pub local_services: usize,
    pub affinity_services: usize,
    pub endpoints: usize,
    pub endpoint_slices: usize,
    pub namespaces: usize,
    pub nodes: usize,
    pub node_ports: usize,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [cluster_ip, node_port, load_balancer, external_ip, headless] = self.by_kind;
        write!(
            f,
            "{} Services in {} namespaces ({cluster_ip} ClusterIP, {node_port} NodePort, {load_balancer} LoadBalancer, \
             {external_ip} with externalIPs, {headless} headless; {} UDP, {} externalTrafficPolicy Local, {} with \
             session affinity), {} ports, {} NodePorts, {} endpoints in {} EndpointSlices, {} Nodes; cluster CIDR \
             {CLUSTER_CIDR}, service CIDR {SERVICE_CIDR}",
            self.services,
            self.namespaces,
            self.udp_services,
            self.local_services,
            self.affinity_services,
            self.ports,
            self.node_ports,
            self.endpoints,
            self.endpoint_slices,
            self.nodes,
        )
    }
}

/// Why nothing was generated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GenError {
    #[error("{0}")]
    Invalid(String),
}

/// The output syntax.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Syntax {
    Json,
    Yaml,
}

/// The snapshot, as one `List` object, and what is in it.
pub fn generate(options: &Options) -> Result<(Value, Summary), GenError> {
    Generator::new(options)?.run()
}

/// Writes the List as kubectl prints it: JSON indented by four spaces, or YAML.
pub fn write(list: &Value, syntax: Syntax, out: &mut dyn Write) -> std::io::Result<()> {
    match syntax {
        Syntax::Json => {
            let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
            let mut serializer = serde_json::Serializer::with_formatter(&mut *out, formatter);
            // Keep an I/O error's kind (a closed pipe must stay recognisable as one).
            serde::Serialize::serialize(list, &mut serializer).map_err(|e| match e.io_error_kind() {
                Some(kind) => std::io::Error::new(kind, e),
                None => std::io::Error::other(e),
            })?;
            out.write_all(b"\n")
        }
        Syntax::Yaml => serde_yaml_ng::to_writer(out, list).map_err(std::io::Error::other),
    }
}

/// [`generate`] then [`write()`] to a string.
pub fn generate_text(options: &Options, syntax: Syntax) -> Result<(String, Summary), GenError> {
    let (list, summary) = generate(options)?;
    let mut out = Vec::new();
    write(&list, syntax, &mut out).map_err(|e| GenError::Invalid(e.to_string()))?;
    Ok((String::from_utf8(out).unwrap_or_default(), summary))
}

/// SplitMix64: small, fast, and the same everywhere. The generator's, and the one the benchmarks and the
/// churn driver draw their events from, so that a seed names one sequence everywhere.
///
/// ```
/// use proxier_cli::generator::Rng;
/// let (mut a, mut b) = (Rng(7), Rng(7));
/// assert_eq!(a.next_u64(), b.next_u64());
/// assert!(a.below(10) < 10);
/// ```
pub struct Rng(pub u64);

impl Rng {
    /// The next number of the sequence.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0); the bias for the small n used here is negligible.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }

    /// Lower-case letters and digits, as Kubernetes' generated name suffixes.
    fn suffix(&mut self, len: usize) -> String {
        const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
        (0..len).map(|_| char::from(ALPHABET[self.below(ALPHABET.len())])).collect()
    }

    fn uid(&mut self) -> String {
        let (a, b) = (self.next_u64(), self.next_u64());
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            0x8000 | (b >> 48) & 0x3fff,
            b & 0xffff_ffff_ffff
        )
    }

    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i + 1));
        }
    }
}

/// `count` items dealt out over `weights` by largest remainder, so the counts are exact and stable.
fn apportion(count: usize, weights: &[u32]) -> Vec<usize> {
    let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
    if total == 0 {
        return vec![0; weights.len()];
    }
    let exact: Vec<(usize, u64)> = weights
        .iter()
        .map(|&w| ((count as u64 * u64::from(w) / total) as usize, count as u64 * u64::from(w) % total))
        .collect();
    let mut counts: Vec<usize> = exact.iter().map(|(n, _)| *n).collect();
    let mut left = count - counts.iter().sum::<usize>();
    let mut order: Vec<usize> = (0..weights.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(exact[i].1));
    for i in order {
        if left == 0 {
            break;
        }
        counts[i] += 1;
        left -= 1;
    }
    counts
}

/// `count` of `total` items chosen at random, as flags.
fn choose(rng: &mut Rng, total: usize, count: usize) -> Vec<bool> {
    let mut flags: Vec<bool> = (0..total).map(|i| i < count).collect();
    rng.shuffle(&mut flags);
    flags
}

fn percent_of(total: usize, percent: u8) -> usize {
    (total * usize::from(percent.min(100)) + 50) / 100
}

const TEAMS: &[&str] = &[
    "checkout",
    "payments",
    "catalog",
    "search",
    "identity",
    "billing",
    "shipping",
    "inventory",
    "analytics",
    "platform",
    "messaging",
    "media",
    "ads",
    "fraud",
    "ledger",
    "notifications",
    "recommendations",
    "reviews",
    "pricing",
    "loyalty",
    "support",
    "storefront",
    "logistics",
    "observability",
    "data",
];
const ENVIRONMENTS: &[&str] = &["prod", "staging", "dev", "canary"];
const APPS: &[&str] = &[
    "cart",
    "order",
    "user",
    "session",
    "image",
    "video",
    "profile",
    "invoice",
    "quote",
    "stock",
    "price",
    "coupon",
    "review",
    "feed",
    "event",
    "report",
    "ledger",
    "wallet",
    "token",
    "audit",
    "email",
    "sms",
    "push",
    "geo",
    "rating",
    "tax",
    "refund",
    "label",
    "route",
    "warehouse",
];
const COMPONENTS: &[&str] =
    &["api", "worker", "gateway", "web", "grpc", "cache", "db", "consumer", "scheduler", "admin", "proxy", "sync"];

/// A port template: name, Service port, container port.
type PortTemplate = (&'static str, u16, u16);
const TCP_PORTS: &[PortTemplate] = &[
    ("http", 80, 8080),
    ("https", 443, 8443),
    ("grpc", 9090, 9090),
    ("metrics", 9100, 9100),
    ("admin", 8081, 8081),
    ("http-alt", 8080, 8080),
    ("debug", 6060, 6060),
    ("health", 8086, 8086),
];
const UDP_PORTS: &[PortTemplate] = &[
    ("dns", 53, 5353),
    ("statsd", 8125, 8125),
    ("syslog", 514, 5514),
    ("quic", 443, 8443),
    ("ntp", 123, 1123),
    ("tftp", 69, 1069),
    ("snmp", 161, 1161),
    ("gelf", 12201, 12201),
];

struct Generator<'a> {
    options: &'a Options,
    rng: Rng,
    nodes: usize,
    /// Addresses per node's podCIDR (a power of two).
    pod_block: u32,
    next_pod: Vec<u32>,
    next_node_port: u32,
    summary: Summary,
}

struct ServicePlan {
    namespace: String,
    name: String,
    kind: Kind,
    udp: bool,
    local: bool,
    affinity: bool,
    cluster_ip: Ipv4Addr,
    index: usize,
}

impl<'a> Generator<'a> {
    fn new(options: &'a Options) -> Result<Generator<'a>, GenError> {
        let invalid = |message: String| Err(GenError::Invalid(message));
        if !(1..=8).contains(&options.ports) {
            return invalid(format!("--ports {} is outside 1-8", options.ports));
        }
        if options.services > (SERVICE_SIZE - SERVICE_RESERVED - 1) as usize {
            return invalid(format!("{} Services do not fit in {SERVICE_CIDR}", options.services));
        }
        let pods = options.services.checked_mul(options.endpoints).filter(|&p| p < CLUSTER_SIZE as usize);
        let Some(pods) = pods else {
            return invalid(format!("{} × {} pods do not fit in {CLUSTER_CIDR}", options.services, options.endpoints));
        };
        let nodes = options.nodes.unwrap_or_else(|| pods.div_ceil(100).clamp(3, 5000));
        if nodes == 0 || nodes > 60_000 {
            return invalid(format!("--nodes {nodes} is outside 1-60000"));
        }
        let per_node = pods.div_ceil(nodes) as u32;
        let pod_block = (per_node + 2).next_power_of_two().max(256);
        if u64::from(pod_block) * nodes as u64 > u64::from(CLUSTER_SIZE) {
            return invalid(format!("{nodes} nodes of {per_node} pods do not fit in {CLUSTER_CIDR}"));
        }
        let (low, high) = options.node_port_range;
        if low == 0 || low > high {
            return invalid(format!("node port range {low}-{high} is empty"));
        }
        Ok(Generator {
            options,
            rng: Rng(options.seed),
            nodes,
            pod_block,
            next_pod: vec![1; nodes],
            next_node_port: u32::from(low),
            summary: Summary { nodes, ..Summary::default() },
        })
    }

    fn run(mut self) -> Result<(Value, Summary), GenError> {
        let plans = self.plan();
        let mut services = Vec::with_capacity(plans.len());
        let mut slices = Vec::new();
        for plan in &plans {
            let ports = self.ports(plan);
            let uid = self.rng.uid();
            services.push(self.service(plan, &ports, &uid)?);
            self.endpoint_slices(plan, &ports, &uid, &mut slices);
        }
        let nodes: Vec<Value> = (0..self.nodes).map(|i| self.node(i)).collect();
        let mut items = services;
        items.append(&mut slices);
        items.extend(nodes);
        let list = json!({"apiVersion": "v1", "items": items, "kind": "List", "metadata": {"resourceVersion": ""}});
        Ok((list, self.summary))
    }

    /// Names, namespaces, kinds and policies of every Service.
    fn plan(&mut self) -> Vec<ServicePlan> {
        let options = self.options;
        let total = options.services;
        let namespaces = total.div_ceil(SERVICES_PER_NAMESPACE).max(1);
        self.summary.namespaces = namespaces.min(total);
        let namespace_names: Vec<String> = (0..namespaces)
            .map(|i| {
                let team = TEAMS[i % TEAMS.len()];
                let environment = ENVIRONMENTS[(i / TEAMS.len()) % ENVIRONMENTS.len()];
                match i / (TEAMS.len() * ENVIRONMENTS.len()) {
                    0 => format!("{team}-{environment}"),
                    n => format!("{team}-{environment}-{}", n + 1),
                }
            })
            .collect();

        let counts = apportion(total, &options.mix.weights());
        let mut kinds: Vec<Kind> = KINDS.iter().zip(&counts).flat_map(|(&k, &n)| std::iter::repeat_n(k, n)).collect();
        self.rng.shuffle(&mut kinds);
        self.summary.services = total;
        for (i, &n) in counts.iter().enumerate() {
            self.summary.by_kind[i] = n;
        }
        let udp = choose(&mut self.rng, total, percent_of(total, options.udp));
        let external = kinds.iter().filter(|k| k.is_external()).count();
        let mut local = choose(&mut self.rng, external, percent_of(external, options.local)).into_iter();
        let affinity_candidates = total - self.summary.by_kind[4];
        let mut affinity =
            choose(&mut self.rng, affinity_candidates, percent_of(affinity_candidates, options.affinity)).into_iter();

        let mut taken_ips = HashSet::with_capacity(total);
        let mut taken_names = HashSet::with_capacity(total);
        let mut plans = Vec::with_capacity(total);
        for (index, &kind) in kinds.iter().enumerate() {
            let namespace = namespace_names[index % namespaces].clone();
            let base = format!("{}-{}", self.rng.pick(APPS), self.rng.pick(COMPONENTS));
            let mut name = base.clone();
            let mut n = 2;
            while !taken_names.insert((namespace.clone(), name.clone())) {
                name = format!("{base}-{n}");
                n += 1;
            }
            let cluster_ip = loop {
                let offset =
                    SERVICE_RESERVED + (self.rng.next_u64() % u64::from(SERVICE_SIZE - SERVICE_RESERVED - 1)) as u32;
                if taken_ips.insert(offset) {
                    break Ipv4Addr::from(SERVICE_BASE + offset);
                }
            };
            let is_local = kind.is_external() && local.next().unwrap_or(false);
            let has_affinity = kind != Kind::Headless && affinity.next().unwrap_or(false);
            self.summary.udp_services += usize::from(udp[index]);
            self.summary.local_services += usize::from(is_local);
            self.summary.affinity_services += usize::from(has_affinity);
            plans.push(ServicePlan {
                namespace,
                name,
                kind,
                udp: udp[index],
                local: is_local,
                affinity: has_affinity,
                cluster_ip,
                index,
            });
        }
        // kubectl lists by namespace, then name.
        plans.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        plans
    }

    fn ports(&mut self, plan: &ServicePlan) -> Vec<PortTemplate> {
        let templates = if plan.udp { UDP_PORTS } else { TCP_PORTS };
        let start = self.rng.below(templates.len());
        (0..self.options.ports).map(|i| templates[(start + i) % templates.len()]).collect()
    }

    fn node_port(&mut self) -> Result<u16, GenError> {
        let (low, high) = self.options.node_port_range;
        let port = self.next_node_port;
        if port > u32::from(high) {
            return Err(GenError::Invalid(format!(
                "more NodePorts are needed than the range {low}-{high} holds; widen it with --node-port-range"
            )));
        }
        self.next_node_port += 1;
        self.summary.node_ports += 1;
        Ok(port as u16)
    }

    fn service(&mut self, plan: &ServicePlan, ports: &[PortTemplate], uid: &str) -> Result<Value, GenError> {
        let protocol = if plan.udp { "UDP" } else { "TCP" };
        let exposes_node_ports = matches!(plan.kind, Kind::NodePort | Kind::LoadBalancer);
        let mut port_objects = Vec::new();
        for &(name, port, target) in ports {
            let mut object = json!({"name": name, "port": port, "protocol": protocol, "targetPort": target});
            if exposes_node_ports {
                object["nodePort"] = json!(self.node_port()?);
            }
            port_objects.push(object);
        }
        self.summary.ports += ports.len();
        let cluster_ip = if plan.kind == Kind::Headless { "None".to_owned() } else { plan.cluster_ip.to_string() };
        let type_ = match plan.kind {
            Kind::NodePort => "NodePort",
            Kind::LoadBalancer => "LoadBalancer",
            _ => "ClusterIP",
        };
        let app = &plan.name;
        let mut spec = json!({
            "clusterIP": cluster_ip,
            "clusterIPs": [cluster_ip],
            "internalTrafficPolicy": "Cluster",
            "ipFamilies": ["IPv4"],
            "ipFamilyPolicy": "SingleStack",
            "ports": port_objects,
            "selector": {"app.kubernetes.io/name": app},
            "sessionAffinity": if plan.affinity { "ClientIP" } else { "None" },
            "type": type_,
        });
        if plan.affinity {
            spec["sessionAffinityConfig"] = json!({"clientIP": {"timeoutSeconds": 10800}});
        }
        if plan.kind.is_external() {
            spec["externalTrafficPolicy"] = json!(if plan.local { "Local" } else { "Cluster" });
        }
        if plan.kind == Kind::LoadBalancer {
            spec["allocateLoadBalancerNodePorts"] = json!(true);
            if plan.local {
                spec["healthCheckNodePort"] = json!(self.node_port()?);
            }
        }
        if plan.kind == Kind::ExternalIp {
            spec["externalIPs"] = json!([Ipv4Addr::from(EXTERNAL_BASE + plan.index as u32 % 65_534 + 1).to_string()]);
        }
        let mut status = json!({"loadBalancer": {}});
        if plan.kind == Kind::LoadBalancer {
            let ip = Ipv4Addr::from(LOAD_BALANCER_BASE + plan.index as u32 % 65_534 + 1);
            status = json!({"loadBalancer": {"ingress": [{"ip": ip.to_string(), "ipMode": "VIP"}]}});
        }
        let mut labels = json!({"app.kubernetes.io/name": app, "app.kubernetes.io/part-of": plan.namespace});
        if plan.kind == Kind::Headless {
            labels["app.kubernetes.io/component"] = json!("statefulset");
        }
        Ok(json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "creationTimestamp": timestamp(plan.index),
                "labels": labels,
                "name": plan.name,
                "namespace": plan.namespace,
                "resourceVersion": (1000 + 2 * plan.index).to_string(),
                "uid": uid,
            },
            "spec": spec,
            "status": status,
        }))
    }

    /// The Service's endpoints, cut into slices of at most [`MAX_ENDPOINTS_PER_SLICE`].
    fn endpoint_slices(&mut self, plan: &ServicePlan, ports: &[PortTemplate], uid: &str, out: &mut Vec<Value>) {
        let protocol = if plan.udp { "UDP" } else { "TCP" };
        let slice_ports: Vec<Value> = ports
            .iter()
            .map(|&(name, _, target)| json!({"name": name, "port": target, "protocol": protocol}))
            .collect();
        let replica_set = self.rng.suffix(10);
        let first_node = plan.index % self.nodes;
        let mut endpoints: Vec<Value> = (0..self.options.endpoints)
            .map(|e| {
                let node = (first_node + e) % self.nodes;
                let ip = Ipv4Addr::from(CLUSTER_BASE + node as u32 * self.pod_block + self.next_pod[node]);
                self.next_pod[node] += 1;
                let pod = format!("{}-{replica_set}-{}", plan.name, self.rng.suffix(5));
                json!({
                    "addresses": [ip.to_string()],
                    "conditions": {"ready": true, "serving": true, "terminating": false},
                    "nodeName": node_name(node),
                    "targetRef": {"kind": "Pod", "name": pod, "namespace": plan.namespace, "uid": self.rng.uid()},
                    "zone": ZONES[node % ZONES.len()],
                })
            })
            .collect();
        self.summary.endpoints += endpoints.len();
        let mut chunk = 0;
        // A Service without endpoints still has one (empty) slice.
        loop {
            let rest = endpoints.split_off(endpoints.len().min(MAX_ENDPOINTS_PER_SLICE));
            let mut labels = json!({
                "app.kubernetes.io/name": plan.name,
                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
                "kubernetes.io/service-name": plan.name,
            });
            if plan.kind == Kind::Headless {
                labels["service.kubernetes.io/headless"] = json!("");
            }
            out.push(json!({
                "addressType": "IPv4",
                "apiVersion": "discovery.k8s.io/v1",
                "endpoints": endpoints,
                "kind": "EndpointSlice",
                "metadata": {
                    "creationTimestamp": timestamp(plan.index),
                    "generateName": format!("{}-", plan.name),
                    "generation": 1,
                    "labels": labels,
                    "name": format!("{}-{}", plan.name, self.rng.suffix(5)),
                    "namespace": plan.namespace,
                    "ownerReferences": [{
                        "apiVersion": "v1",
                        "blockOwnerDeletion": true,
                        "controller": true,
                        "kind": "Service",
                        "name": plan.name,
                        "uid": uid,
                    }],
                    "resourceVersion": (1001 + 2 * plan.index + chunk).to_string(),
                    "uid": self.rng.uid(),
                },
                "ports": slice_ports,
            }));
            self.summary.endpoint_slices += 1;
            chunk += 1;
            endpoints = rest;
            if endpoints.is_empty() {
                break;
            }
        }
    }

    fn node(&mut self, i: usize) -> Value {
        let name = node_name(i);
        let ip = node_ip(i);
        let prefix = 32 - self.pod_block.trailing_zeros();
        let pod_cidr = format!("{}/{prefix}", Ipv4Addr::from(CLUSTER_BASE + i as u32 * self.pod_block));
        json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "labels": {
                    "kubernetes.io/arch": "amd64",
                    "kubernetes.io/hostname": name,
                    "kubernetes.io/os": "linux",
                    "topology.kubernetes.io/zone": ZONES[i % ZONES.len()],
                },
                "name": name,
                "resourceVersion": (10 + i).to_string(),
                "uid": self.rng.uid(),
            },
            "spec": {"podCIDR": pod_cidr, "podCIDRs": [pod_cidr]},
            "status": {
                "addresses": [{"address": ip.to_string(), "type": "InternalIP"}, {"address": name, "type": "Hostname"}],
            },
        })
    }
}

/// `node-1`, `node-2`, …: the same name whatever the number of nodes.
pub fn node_name(i: usize) -> String {
    format!("node-{}", i + 1)
}

/// The InternalIP of node `i`: 172.18.0.2, 172.18.0.3, …
pub fn node_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(NODE_BASE + 2 + i as u32)
}

fn timestamp(index: usize) -> String {
    let seconds = index % 86_400;
    format!("2026-01-05T{:02}:{:02}:{:02}Z", seconds / 3600, seconds / 60 % 60, seconds % 60)
}

#[cfg(test)]
mod tests {
    use proxier_core::{DestinationKind, NodeConfig, Snapshot, Treatment, compute};

    use super::*;

    fn options(services: usize, endpoints: usize) -> Options {
        Options {
            services,
            endpoints,
            nodes: Some(4),
            mix: "clusterip=6,nodeport=1,loadbalancer=1,externalip=1,headless=1".parse().unwrap(),
            ports: 2,
            udp: 20,
            local: 50,
            affinity: 10,
            ..Options::default()
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_bytes_and_another_seed_does_not() {
        let first = generate_text(&options(40, 3), Syntax::Json).unwrap();
        let again = generate_text(&options(40, 3), Syntax::Json).unwrap();
        assert_eq!(first, again);
        let other = generate_text(&Options { seed: 2, ..options(40, 3) }, Syntax::Json).unwrap();
        assert_ne!(first.0, other.0);
        assert_eq!(first.1.by_kind, other.1.by_kind, "counts do not depend on the seed");
    }

    #[test]
    fn counts_follow_the_options_exactly() {
        let (list, summary) = generate(&options(50, 230)).unwrap();
        let items = list["items"].as_array().unwrap();
        let count = |kind: &str| items.iter().filter(|i| i["kind"] == kind).count();
        assert_eq!(count("Service"), 50);
        assert_eq!(count("Node"), 4);
        // 230 endpoints: slices of 100, 100 and 30, as the EndpointSlice controller cuts them.
        assert_eq!(count("EndpointSlice"), 150);
        assert_eq!(summary.by_kind, [30, 5, 5, 5, 5]);
        assert_eq!(summary.udp_services, 10);
        assert_eq!(summary.local_services, 8, "half of 15 external Services, rounded");
        assert_eq!(summary.affinity_services, 5, "10% of 45 non-headless Services, rounded");
        assert_eq!(summary.endpoints, 50 * 230);
        assert_eq!(summary.ports, 100);
        // Two NodePorts per NodePort and LoadBalancer Service, plus a health check port per Local LoadBalancer.
        let local_lbs = items
            .iter()
            .filter(|i| i["spec"]["type"] == "LoadBalancer" && i["spec"]["externalTrafficPolicy"] == "Local")
            .count();
        assert_eq!(summary.node_ports, 2 * 10 + local_lbs);
        let mut sizes: Vec<usize> = items
            .iter()
            .filter(|i| i["kind"] == "EndpointSlice")
            .map(|s| s["endpoints"].as_array().unwrap().len())
            .collect();
        sizes.sort_unstable();
        sizes.dedup();
        assert_eq!(sizes, [30, 100]);
        let types: HashSet<&str> = items.iter().filter_map(|i| i["spec"]["type"].as_str()).collect();
        assert_eq!(types, HashSet::from(["ClusterIP", "NodePort", "LoadBalancer"]));
    }

    #[test]
    fn every_address_and_name_is_unique() {
        let (list, _) = generate(&Options { services: 3000, endpoints: 2, ..Options::default() }).unwrap();
        let items = list["items"].as_array().unwrap();
        let services: Vec<&Value> = items.iter().filter(|i| i["kind"] == "Service").collect();
        let names: HashSet<(&str, &str)> = services
            .iter()
            .map(|s| (s["metadata"]["namespace"].as_str().unwrap(), s["metadata"]["name"].as_str().unwrap()))
            .collect();
        assert_eq!(names.len(), 3000);
        let cluster_ips: HashSet<&str> = services.iter().filter_map(|s| s["spec"]["clusterIP"].as_str()).collect();
        let headless = services.iter().filter(|s| s["spec"]["clusterIP"] == "None").count();
        assert_eq!(cluster_ips.len(), 3000 - headless + usize::from(headless > 0));
        let pods: HashSet<&str> = items
            .iter()
            .filter(|i| i["kind"] == "EndpointSlice")
            .flat_map(|s| s["endpoints"].as_array().unwrap())
            .map(|e| e["addresses"][0].as_str().unwrap())
            .collect();
        assert_eq!(pods.len(), 6000);
    }

    fn loads_cleanly(syntax: Syntax) {
        let opts = options(60, 120);
        let (text, summary) = generate_text(&opts, syntax).unwrap();
        let (snapshot, report) = Snapshot::from_text("generated", &text);
        assert!(report.diagnostics.is_empty(), "{:?}", report.diagnostics);
        assert_eq!(report.skipped_note(), None);
        assert_eq!(snapshot.services.len(), 60);
        assert_eq!(snapshot.endpoint_slices.len(), summary.endpoint_slices);
        assert_eq!(snapshot.nodes.len(), 4);

        let config = NodeConfig {
            node_name: node_name(0),
            cluster_cidrs: vec![CLUSTER_CIDR.parse().unwrap()],
            ..NodeConfig::default()
        };
        let model = compute(&snapshot, &config);
        assert!(model.diagnostics.is_empty(), "{:?}", model.diagnostics);
        let headless = model.services.iter().filter(|s| s.treatment == Treatment::Headless).count();
        assert_eq!(headless, summary.by_kind[4]);
        let [v4] = model.families.as_slice() else { panic!("one family expected") };
        let kind_count = |kind: DestinationKind| v4.destinations.iter().filter(|d| d.kind == kind).count();
        let ports = opts.ports;
        assert_eq!(kind_count(DestinationKind::ClusterIp), (60 - summary.by_kind[4]) * ports);
        assert_eq!(kind_count(DestinationKind::LoadBalancerIp), summary.by_kind[2] * ports);
        assert_eq!(kind_count(DestinationKind::ExternalIp), summary.by_kind[3] * ports);
        assert_eq!(kind_count(DestinationKind::NodePort), (summary.by_kind[1] + summary.by_kind[2]) * ports);
    }

    #[test]
    fn json_loads_through_snapshot_and_compute_without_diagnostics() {
        loads_cleanly(Syntax::Json);
    }

    #[test]
    fn yaml_loads_through_snapshot_and_compute_without_diagnostics() {
        loads_cleanly(Syntax::Yaml);
    }

    #[test]
    fn bad_options_are_refused() {
        let too_many_node_ports = Options {
            services: 10,
            mix: "nodeport=1".parse().unwrap(),
            node_port_range: (30000, 30004),
            ..Options::default()
        };
        assert!(generate(&too_many_node_ports).unwrap_err().to_string().contains("--node-port-range"));
        assert!(generate(&Options { ports: 0, ..Options::default() }).is_err());
        assert!("clusterip=1,sctp=2".parse::<Mix>().is_err());
        assert!("clusterip=0".parse::<Mix>().is_err());
        assert_eq!(
            "nodeport=1".parse::<Mix>().unwrap().to_string(),
            "clusterip=0,nodeport=1,loadbalancer=0,externalip=0,headless=0"
        );
    }

    #[test]
    fn apportion_is_exact() {
        assert_eq!(apportion(10, &[1, 1, 1]), [4, 3, 3]);
        assert_eq!(apportion(100, &[85, 5, 3, 2, 5]), [85, 5, 3, 2, 5]);
        assert_eq!(apportion(7, &[0, 1]), [0, 7]);
    }
}

//! Scenarios for the traffic tests: a test bed whose nodes are programmed with the real `proxier`
//! binary (the test passes its path, `env!("CARGO_BIN_EXE_proxier")`), and builders that write the
//! Service and EndpointSlice objects a scenario needs as kubectl would print them.

use std::fmt::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Output;

use crate::bed::{CLUSTER_CIDR_V4, CLUSTER_CIDR_V6, Pod, TestBed};
use crate::server::Server;
use crate::sock::Proto;

/// Where scenario snapshots go; removed when the test bed is dropped.
pub struct Scenario {
    /// The nodes, pods and client.
    pub bed: TestBed,
    /// The `proxier` binary under test.
    proxier: PathBuf,
    dir: PathBuf,
    /// Flags every `proxier apply` gets, after `--snapshot` and `--node`.
    pub flags: Vec<String>,
}

impl Scenario {
    /// A test bed of `nodes` nodes, programmed by the binary `proxier` with `--cluster-cidr` for its
    /// pod network.
    pub fn new(proxier: impl AsRef<Path>, nodes: usize) -> Scenario {
        Scenario::with_bed(proxier, TestBed::new(nodes).expect("test bed"))
    }

    /// A scenario on a test bed built by the caller.
    pub fn with_bed(proxier: impl AsRef<Path>, bed: TestBed) -> Scenario {
        let dir = std::env::temp_dir().join(format!("proxier-scenario-{}", bed.node(1).netns().name()));
        std::fs::create_dir_all(&dir).expect("scenario dir");
        let flags = vec!["--cluster-cidr".into(), format!("{CLUSTER_CIDR_V4},{CLUSTER_CIDR_V6}")];
        Scenario { bed, proxier: proxier.as_ref().to_owned(), dir, flags }
    }

    /// Two nodes in zones zone-a and zone-b; pods web-a (node-a) and web-b (node-b) serving TCP 8080
    /// and UDP 5353, and client pods client-a and client-b. The servers stop when dropped.
    pub fn web_pods(proxier: impl AsRef<Path>) -> (Scenario, Vec<Server>) {
        let mut scenario = Scenario::new(proxier, 2);
        for (node, pod) in [(1, "web-a"), (2, "web-b"), (1, "client-a"), (2, "client-b")] {
            scenario.bed.add_pod(node, pod).expect("pod");
        }
        let mut servers = Vec::new();
        for pod in ["web-a", "web-b"] {
            servers.push(scenario.pod(pod).serve(Proto::Tcp, 8080).expect("tcp server"));
            servers.push(scenario.pod(pod).serve(Proto::Udp, 5353).expect("udp server"));
        }
        (scenario, servers)
    }

    /// Replaces the flags after `--snapshot` and `--node`.
    pub fn flags(&mut self, flags: &[&str]) -> &mut Self {
        self.flags = flags.iter().map(|f| f.to_string()).collect();
        self
    }

    /// Applies `objects` (plus the bed's Node objects) on every node with `proxier apply`.
    pub fn program(&self, objects: &str) {
        for node in 1..=self.bed.nodes().len() {
            let output = self.apply_on(node, objects);
            assert!(
                output.status.success(),
                "proxier apply on node {node}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }

    /// Runs `proxier apply` in node `node`'s namespace and returns its output.
    pub fn apply_on(&self, node: usize, objects: &str) -> Output {
        let path = self.write(objects);
        let name = self.bed.node(node).name().to_owned();
        let mut args = vec!["apply".to_owned(), "--snapshot".into(), path.display().to_string(), "--node".into(), name];
        args.extend(self.flags.iter().cloned());
        self.proxier(node, &args)
    }

    /// Runs the `proxier` binary with `args` in node `node`'s namespace.
    pub fn proxier(&self, node: usize, args: &[String]) -> Output {
        self.bed.node(node).netns().exec(&self.proxier, args).expect("run proxier")
    }

    /// Writes a snapshot file of the bed's Nodes and `objects`, and returns its path.
    pub fn write(&self, objects: &str) -> PathBuf {
        let path = self.dir.join("cluster.yaml");
        std::fs::write(&path, format!("{}---\n{objects}", self.bed.nodes_yaml())).expect("write snapshot");
        path
    }

    /// Writes an executable `name` (e.g. a wrapper around `nft`) into the scenario's directory.
    pub fn write_program(&self, name: &str, script: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = self.dir.join(name);
        std::fs::write(&path, script).expect("write program");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("make it executable");
        path
    }

    /// The pod called `name`; panics if there is none.
    pub fn pod(&self, name: &str) -> &Pod {
        self.bed.pod(name)
    }

    /// A bed for a cluster snapshot from testdata/: a node for each Node, a pod at each endpoint's
    /// address (named after its targetRef), and a server for each TCP and UDP slice port. Endpoints on
    /// a node's own address (the API server's) are served by that node. Nodes and pods must use the
    /// bed's addressing plan (node i at 192.168.49.(10+i), its pods in 10.244.i.0/24), as
    /// testdata/clusters/single-stack.yaml does. Programming uses the snapshot file as it is.
    pub fn from_testdata(proxier: impl AsRef<Path>, file: &str) -> (Scenario, Vec<Server>, PathBuf) {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/clusters").join(file);
        let text = std::fs::read_to_string(&path).expect("read testdata");
        let (snapshot, _) = proxier_core::Snapshot::from_text(file, &text);
        let mut scenario = Scenario::new(proxier, snapshot.nodes.len());
        let mut servers = Vec::new();
        let mut served = std::collections::BTreeSet::new();
        for slice in &snapshot.endpoint_slices {
            let ports: Vec<(Proto, u16)> = slice
                .ports
                .iter()
                .flatten()
                .filter_map(|p| {
                    let proto = match p.protocol.as_deref().unwrap_or("TCP") {
                        "TCP" => Proto::Tcp,
                        "UDP" => Proto::Udp,
                        _ => return None,
                    };
                    Some((proto, u16::try_from(p.port?).ok()?))
                })
                .collect();
            for endpoint in slice.endpoints.iter().flatten() {
                let Some(Ok(IpAddr::V4(address))) = endpoint.addresses.first().map(|a| a.parse::<IpAddr>()) else {
                    continue;
                };
                let [_, _, node, host] = address.octets();
                let on_node = (1..=scenario.bed.nodes().len()).find(|&i| scenario.bed.node(i).ipv4() == address);
                let name = match on_node {
                    Some(i) => scenario.bed.node(i).name().to_owned(),
                    None => endpoint
                        .target_ref
                        .as_ref()
                        .and_then(|r| r.name.clone())
                        .unwrap_or_else(|| format!("pod-{host}")),
                };
                if on_node.is_none() && !scenario.bed.pods().iter().any(|p| p.name() == name) {
                    scenario.bed.add_pod_at(usize::from(node), &name, host).expect("pod at its snapshot address");
                }
                for &(proto, port) in &ports {
                    if served.insert((name.clone(), proto, port)) {
                        let server = match on_node {
                            Some(i) => scenario.bed.node(i).serve(proto, port),
                            None => scenario.pod(&name).serve(proto, port),
                        };
                        servers.push(server.expect("server"));
                    }
                }
            }
        }
        (scenario, servers, path)
    }

    /// Applies a snapshot file as it is on every node.
    pub fn program_file(&self, path: &Path) {
        for node in 1..=self.bed.nodes().len() {
            let name = self.bed.node(node).name().to_owned();
            let mut args =
                vec!["apply".to_owned(), "--snapshot".into(), path.display().to_string(), "--node".into(), name];
            args.extend(self.flags.iter().cloned());
            let output = self.proxier(node, &args);
            assert!(
                output.status.success(),
                "proxier apply on node {node}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }
}

impl Drop for Scenario {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `addr:port` for either family.
pub fn at(ip: impl Into<IpAddr>, port: u16) -> SocketAddr {
    SocketAddr::new(ip.into(), port)
}

/// A Service, written as kubectl prints one. `extra_spec` lines are added under `spec:` (indented two
/// spaces, e.g. `"  type: NodePort"`); `ports` are `(name, protocol, port, nodePort)`.
pub fn service(
    namespace: &str,
    name: &str,
    cluster_ip: &str,
    ports: &[(&str, &str, u16, Option<u16>)],
    extra_spec: &[&str],
) -> String {
    let mut out = format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: {namespace}\nspec:\n  clusterIP: {cluster_ip}\n  clusterIPs: [\"{cluster_ip}\"]\n"
    );
    for line in extra_spec {
        out.push_str(line);
        out.push('\n');
    }
    out.push_str("  ports:\n");
    for (port_name, protocol, port, node_port) in ports {
        let _ = write!(out, "  - name: {port_name}\n    protocol: {protocol}\n    port: {port}\n");
        if let Some(node_port) = node_port {
            let _ = writeln!(out, "    nodePort: {node_port}");
        }
    }
    out.push_str("---\n");
    out
}

/// An endpoint of a slice: a pod, with its conditions and extra YAML (e.g. hints).
pub struct Endpoint<'a> {
    /// The pod whose address the endpoint has.
    pub pod: &'a Pod,
    /// The `conditions` value, as YAML flow mapping.
    pub conditions: &'a str,
    /// More YAML lines for the endpoint (e.g. `hints: …`), or empty.
    pub extra: &'a str,
}

/// A ready endpoint on `pod`.
pub fn ready(pod: &Pod) -> Endpoint<'_> {
    Endpoint { pod, conditions: "{ready: true, serving: true, terminating: false}", extra: "" }
}

/// An EndpointSlice of `family` ("IPv4" or "IPv6"); `ports` are `(name, protocol, port)`.
pub fn slice(
    namespace: &str,
    service: &str,
    family: &str,
    endpoints: &[Endpoint<'_>],
    ports: &[(&str, &str, u16)],
) -> String {
    let suffix = family.to_lowercase();
    let mut out = format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {service}-{suffix}\n  namespace: {namespace}\n  labels:\n    kubernetes.io/service-name: {service}\naddressType: {family}\nendpoints:\n"
    );
    for endpoint in endpoints {
        let address = if family == "IPv6" { endpoint.pod.ipv6().to_string() } else { endpoint.pod.ipv4().to_string() };
        let _ = write!(
            out,
            "- addresses: [\"{address}\"]\n  conditions: {}\n  nodeName: {}\n  targetRef: {{kind: Pod, name: {}, namespace: {namespace}}}\n",
            endpoint.conditions,
            endpoint.pod.node_name(),
            endpoint.pod.name()
        );
        if !endpoint.extra.is_empty() {
            let _ = writeln!(out, "  {}", endpoint.extra);
        }
    }
    if endpoints.is_empty() {
        out = out.replace("endpoints:\n", "endpoints: []\n");
    }
    out.push_str("ports:\n");
    for (name, protocol, port) in ports {
        let _ = write!(out, "- name: {name}\n  protocol: {protocol}\n  port: {port}\n");
    }
    out.push_str("---\n");
    out
}

//! `proxier trace` agrees with the kernel. A two-node test bed (proxier-testkit) is programmed with
//! `proxier apply` in each node's namespace; then, for every behaviour scenario (ClusterIP from pods,
//! hairpin, node and outside clients, NodePort, LoadBalancer IP, externalIP, externalTrafficPolicy Local
//! from outside, from a pod and from the node, internalTrafficPolicy Local, no endpoints, unknown port,
//! service CIDR, source ranges, and traffic proxier does not handle), real connections are made and
//! what happened — the pods reached, refused, dropped, and whether the pod saw the client's address —
//! is compared with what `proxier trace --output json` predicted for the node the traffic enters.

#![allow(clippy::disallowed_methods)] // Tests run the binary and ip/nft (clippy.toml).

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;

use proxier_testkit::{
    ANSWER_TIMEOUT, CLIENT_IPV4, Outcome, Proto, TestBed, check_dropped, check_refused, netns_available, probe,
};
use serde_json::Value;

const FLAGS: &[&str] = &["--cluster-cidr", "10.244.0.0/16,fd00:10:244::/48", "--service-cidr", "10.96.0.0/16"];

/// Where a scenario's traffic comes from.
#[derive(Clone, Copy, Debug)]
enum From {
    Pod(&'static str),
    Client,
    Node(usize),
}

/// (from, node index whose rules handle it, destination, protocol)
const SCENARIOS: &[(From, usize, &str, Proto)] = &[
    (From::Pod("client-a"), 1, "10.96.0.10:80", Proto::Tcp),
    (From::Pod("web-a"), 1, "10.96.0.10:80", Proto::Tcp),
    (From::Pod("client-b"), 2, "10.96.0.10:53", Proto::Udp),
    (From::Node(1), 1, "10.96.0.10:80", Proto::Tcp),
    (From::Client, 1, "10.96.0.10:80", Proto::Tcp),
    (From::Client, 2, "192.168.49.12:30080", Proto::Tcp),
    (From::Client, 1, "192.168.49.11:30053", Proto::Udp),
    (From::Client, 1, "203.0.113.10:80", Proto::Tcp),
    (From::Client, 1, "198.51.100.20:80", Proto::Tcp),
    (From::Client, 1, "192.168.49.11:30090", Proto::Tcp),
    (From::Client, 2, "192.168.49.12:30090", Proto::Tcp),
    (From::Pod("client-b"), 2, "192.168.49.12:30090", Proto::Tcp),
    (From::Node(2), 2, "192.168.49.12:30090", Proto::Tcp),
    (From::Pod("client-a"), 1, "10.96.0.30:80", Proto::Tcp),
    (From::Pod("client-a"), 1, "10.96.0.30:80", Proto::Udp),
    (From::Pod("client-a"), 1, "10.96.0.10:81", Proto::Tcp),
    (From::Pod("client-a"), 1, "10.96.0.99:80", Proto::Tcp),
    (From::Pod("client-a"), 1, "10.96.0.40:80", Proto::Tcp),
    (From::Pod("client-b"), 2, "10.96.0.40:80", Proto::Tcp),
    (From::Client, 1, "203.0.113.50:80", Proto::Tcp),
    (From::Client, 1, "203.0.113.51:80", Proto::Tcp),
    (From::Client, 1, "192.168.49.11:30050", Proto::Tcp),
    (From::Pod("client-a"), 1, "10.244.2.2:8080", Proto::Tcp),
];

fn services(bed: &TestBed) -> String {
    let endpoint = |pod: &str| {
        let p = bed.pod(pod);
        format!(
            "- {{addresses: [{}], conditions: {{ready: true, serving: true, terminating: false}}, nodeName: {}, \
             targetRef: {{kind: Pod, namespace: default, name: {pod}}}}}\n",
            p.ipv4(),
            p.node_name()
        )
    };
    let slice = |service: &str, pods: &[&str], ports: &str| {
        let endpoints: String = pods.iter().map(|p| endpoint(p)).collect();
        format!(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {service}-1, namespace: default, \
             labels: {{kubernetes.io/service-name: {service}}}}}\naddressType: IPv4\nendpoints:\n{endpoints}ports: {ports}\n"
        )
    };
    let http = "[{name: http, port: 8080, protocol: TCP}]";
    format!(
        "apiVersion: v1
kind: Service
metadata: {{name: web, namespace: default}}
spec:
  type: LoadBalancer
  clusterIP: 10.96.0.10
  externalIPs: [198.51.100.20]
  externalTrafficPolicy: Cluster
  ports:
  - {{name: http, port: 80, protocol: TCP, nodePort: 30080}}
  - {{name: dns, port: 53, protocol: UDP, nodePort: 30053}}
status: {{loadBalancer: {{ingress: [{{ip: 203.0.113.10, ipMode: VIP}}]}}}}
---
{web}---
apiVersion: v1
kind: Service
metadata: {{name: local, namespace: default}}
spec:
  type: NodePort
  clusterIP: 10.96.0.20
  externalTrafficPolicy: Local
  healthCheckNodePort: 32090
  ports: [{{name: http, port: 80, protocol: TCP, nodePort: 30090}}]
---
{local}---
apiVersion: v1
kind: Service
metadata: {{name: empty, namespace: default}}
spec:
  clusterIP: 10.96.0.30
  ports: [{{name: http, port: 80, protocol: TCP}}, {{name: dns, port: 80, protocol: UDP}}]
---
apiVersion: v1
kind: Service
metadata: {{name: itp, namespace: default}}
spec:
  clusterIP: 10.96.0.40
  internalTrafficPolicy: Local
  ports: [{{name: http, port: 80, protocol: TCP}}]
---
{itp}---
apiVersion: v1
kind: Service
metadata: {{name: fw, namespace: default}}
spec:
  type: LoadBalancer
  clusterIP: 10.96.0.50
  loadBalancerSourceRanges: [198.51.100.0/24]
  ports: [{{name: http, port: 80, protocol: TCP, nodePort: 30050}}]
status: {{loadBalancer: {{ingress: [{{ip: 203.0.113.50}}]}}}}
---
{fw}---
apiVersion: v1
kind: Service
metadata: {{name: fw-open, namespace: default}}
spec:
  type: LoadBalancer
  clusterIP: 10.96.0.51
  loadBalancerSourceRanges: [192.168.49.0/24]
  ports: [{{name: http, port: 80, protocol: TCP, nodePort: 30051}}]
status: {{loadBalancer: {{ingress: [{{ip: 203.0.113.51}}]}}}}
---
{fw_open}---
{nodes}",
        web = slice(
            "web",
            &["web-a", "web-b"],
            "[{name: http, port: 8080, protocol: TCP}, {name: dns, port: 5353, protocol: UDP}]"
        ),
        local = slice("local", &["web-a"], http),
        itp = slice("itp", &["web-b"], http),
        fw = slice("fw", &["web-a", "web-b"], http),
        fw_open = slice("fw-open", &["web-a", "web-b"], http),
        nodes = bed.nodes_yaml(),
    )
}

/// A file removed on drop.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn proxier(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_proxier")).args(args).output().expect("run proxier")
}

fn trace(snapshot: &Path, node: &str, from: &str, to: &str, proto: Proto) -> Value {
    let target = format!("{to}/{}", proto.k8s_name().to_ascii_lowercase());
    let snapshot = snapshot.to_str().unwrap();
    let mut args = vec!["trace", "--snapshot", snapshot, "--node", node, "--from", from, "--to", &target];
    args.extend_from_slice(FLAGS);
    args.extend_from_slice(&["--output", "json"]);
    let output = proxier(&args);
    assert!(output.status.success(), "trace {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("trace JSON")
}

fn endpoint_ip(value: &Value) -> IpAddr {
    value["ip"].as_str().unwrap().parse().unwrap()
}

/// Compares one scenario; returns a description of the disagreement, if any.
fn compare(bed: &TestBed, snapshot: &Path, scenario: &(From, usize, &str, Proto)) -> Result<String, String> {
    let &(from, node, to, proto) = scenario;
    let target: SocketAddr = to.parse().unwrap();
    let node_name = bed.node(node).name().to_owned();
    let (source_ip, source_arg, netns) = match from {
        From::Pod(name) => {
            let pod = bed.pod(name);
            (IpAddr::V4(pod.ipv4()), pod.ipv4().to_string(), pod.netns())
        }
        From::Client => (IpAddr::V4(CLIENT_IPV4), CLIENT_IPV4.to_string(), bed.client()),
        From::Node(i) => (IpAddr::V4(bed.node(i).ipv4()), "node".to_owned(), bed.node(i).netns()),
    };
    let predicted = trace(snapshot, &node_name, &source_arg, to, proto);
    let kind = predicted["verdict"]["kind"].as_str().unwrap().to_owned();
    let what = format!("{from:?} → {to}/{proto:?} on {node_name}: trace says {kind}");
    let pod_of = |ip: IpAddr| bed.pods().iter().find(|p| IpAddr::V4(p.ipv4()) == ip).map(|p| p.name().to_owned());
    match kind.as_str() {
        "dnat" => {
            let endpoints: Vec<IpAddr> =
                predicted["verdict"]["endpoints"].as_array().unwrap().iter().map(endpoint_ip).collect();
            let expected: BTreeSet<String> =
                endpoints.iter().map(|ip| pod_of(*ip).expect("an endpoint is a bed pod")).collect();
            let masquerade = &predicted["masquerade"];
            let masqueraded = masquerade["masqueraded"].as_bool().unwrap();
            let hairpin = masquerade["hairpin"].as_object().map(|_| endpoint_ip(&masquerade["hairpin"]));
            let tries = if endpoints.len() > 1 { 16 } else { 4 };
            let mut reached = BTreeSet::new();
            for _ in 0..tries {
                match probe(netns, proto, target, ANSWER_TIMEOUT) {
                    Outcome::Answered { server, seen_source } => {
                        // A node's own address survives masquerade: only pods and outside clients tell.
                        if !matches!(from, From::Node(_)) {
                            let endpoint = bed.pods().iter().find(|p| p.name() == server).map(|p| IpAddr::V4(p.ipv4()));
                            let expect = masqueraded || (hairpin.is_some() && hairpin == endpoint);
                            let seen = seen_source != source_ip;
                            if seen != expect {
                                return Err(format!(
                                    "{what}: {server} saw source {seen_source}, so masqueraded = {seen}; trace says {expect}"
                                ));
                            }
                        }
                        reached.insert(server);
                    }
                    other => return Err(format!("{what} to {expected:?}, the kernel: {other}")),
                }
            }
            if reached != expected {
                return Err(format!("{what} to {expected:?}; {tries} connections reached {reached:?}"));
            }
            Ok(format!("{what} → reached {reached:?}"))
        }
        "reject" => check_refused(netns, proto, target)
            .map(|k| format!("{what} → refused ({k:?})"))
            .map_err(|e| format!("{what}: {e}")),
        "drop" => check_dropped(netns, proto, target)
            .map(|()| format!("{what} → dropped"))
            .map_err(|e| format!("{what}: {e}")),
        "not-handled" => {
            // Untouched: it reaches the address itself, with the source address kept.
            let owner = pod_of(target.ip()).expect("not-handled scenarios target a pod");
            match probe(netns, proto, target, ANSWER_TIMEOUT) {
                Outcome::Answered { server, seen_source } if server == owner && seen_source == source_ip => {
                    Ok(format!("{what} → reached {server} directly"))
                }
                other => Err(format!("{what}, so {owner} directly; the kernel: {other}")),
            }
        }
        other => Err(format!("{what}: unknown verdict {other}")),
    }
}

#[test]
fn trace_agrees_with_real_traffic_for_every_scenario() {
    if !netns_available("trace_agrees_with_real_traffic_for_every_scenario") {
        return;
    }
    let mut bed = TestBed::new(2).expect("test bed");
    for (node, pod) in [(2, "web-b"), (1, "web-a"), (1, "client-a"), (2, "client-b")] {
        bed.add_pod(node, pod).expect("pod");
    }
    assert_eq!(bed.pod("web-b").ipv4().to_string(), "10.244.2.2", "the not-handled scenario targets web-b");
    let mut servers = Vec::new();
    for pod in ["web-a", "web-b", "client-a", "client-b"] {
        servers.push(bed.pod(pod).serve(Proto::Tcp, 8080).expect("serve"));
        servers.push(bed.pod(pod).serve(Proto::Udp, 5353).expect("serve"));
    }
    let snapshot = TempFile(std::env::temp_dir().join(format!("proxier-trace-agreement-{}.yaml", std::process::id())));
    std::fs::write(&snapshot.0, services(&bed)).unwrap();
    for node in bed.nodes() {
        let path = snapshot.0.to_str().unwrap();
        let mut args = vec!["apply", "--snapshot", path, "--node", node.name()];
        args.extend_from_slice(FLAGS);
        let output = node.netns().exec(env!("CARGO_BIN_EXE_proxier"), &args).expect("run proxier apply");
        assert!(output.status.success(), "apply on {}: {}", node.name(), String::from_utf8_lossy(&output.stderr));
    }

    let mut failures = Vec::new();
    let mut kinds = BTreeSet::new();
    for scenario in SCENARIOS {
        match compare(&bed, &snapshot.0, scenario) {
            Ok(line) => {
                eprintln!("agree: {line}");
                kinds.insert(line.split("trace says ").nth(1).unwrap().split(' ').next().unwrap().to_owned());
            }
            Err(line) => failures.push(line),
        }
    }
    assert!(failures.is_empty(), "trace and the kernel disagree:\n{}", failures.join("\n"));
    let all: BTreeSet<String> = ["dnat", "reject", "drop", "not-handled"].map(String::from).into();
    assert_eq!(kinds, all, "every verdict kind is covered");
    drop(servers);
}

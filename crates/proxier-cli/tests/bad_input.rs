//! Bad input through the real binary: each bad object is reported on stderr with the exact message of
//! docs/robustness.md (naming the object and the field), the rest is still programmed, and what is
//! rendered — with hostile names, 10,000-character names and a 5,000-port Service — loads into the kernel
//! (in a network namespace) as JSON and as text, and carries no API string except sanitised comments.

#![allow(clippy::disallowed_methods)] // Tests run the binary and ip/nft (clippy.toml).

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use proxier_testkit::{Netns, docs, invariants};

/// A hostile name: quotes, braces, semicolons, a newline and nft keywords.
const HOSTILE: &str = "x\"; flush ruleset; {drop} accept\ncomment";

fn snapshot() -> String {
    let long = "n".repeat(10_000);
    let hostile = serde_json::to_string(HOSTILE).unwrap();
    let hostile_port = serde_json::to_string("h\"}; drop").unwrap();
    let many_ports: String =
        (0..5000).map(|i| format!("  - {{name: p{i}, port: {}, protocol: TCP}}\n", 1000 + i)).collect();
    format!(
        r#"apiVersion: v1
kind: Node
metadata: {{name: node-a}}
status:
  addresses: [{{type: InternalIP, address: 192.168.49.11}}, {{type: InternalIP, address: "fd00:49::11"}}]
---
apiVersion: v1
kind: Service
metadata: {{name: good, namespace: shop}}
spec: {{clusterIP: 10.96.0.20, ports: [{{name: http, port: 80}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: wrong-family
  namespace: shop
  labels: {{kubernetes.io/service-name: good}}
addressType: IPv4
endpoints: [{{addresses: ["fd00:10:244::5"]}}, {{addresses: [not-an-ip]}}, {{addresses: [10.244.1.5]}}]
ports: [{{name: http, port: 8080}}]
---
apiVersion: v1
kind: Service
metadata: {{name: bad-ip, namespace: bad}}
spec: {{clusterIP: 10.96.0.300, ports: [{{port: 80}}]}}
---
apiVersion: v1
kind: Service
metadata: {{name: mixed-family, namespace: bad}}
spec: {{clusterIPs: [10.96.0.21, 10.96.0.22], ipFamilies: [IPv4], ports: [{{port: 80}}]}}
---
apiVersion: v1
kind: Service
metadata: {{name: undeclared-family, namespace: bad}}
spec: {{clusterIPs: [10.96.0.23, "fd00:10:96::23"], ipFamilies: [IPv4], ports: [{{port: 80}}]}}
---
apiVersion: v1
kind: Service
metadata: {{name: leading-zeros, namespace: bad}}
spec: {{clusterIP: 010.096.000.024, ports: [{{port: 80}}]}}
---
apiVersion: v1
kind: Service
metadata: {{name: port-zero, namespace: bad}}
spec: {{clusterIP: 10.96.0.25, ports: [{{name: zero, port: 0}}, {{name: big, port: 65536}}, {{name: ok, port: 81}}]}}
---
apiVersion: v1
kind: Service
metadata: {{name: node-ports, namespace: bad}}
spec:
  type: NodePort
  clusterIP: 10.96.0.26
  ports: [{{name: low, port: 80, nodePort: 8080}}, {{name: huge, port: 81, nodePort: 70000}}]
---
apiVersion: v1
kind: Service
metadata: {{name: dup-names, namespace: bad}}
spec: {{clusterIP: 10.96.0.27, ports: [{{name: http, port: 80}}, {{name: http, port: 8080}}]}}
---
apiVersion: v1
kind: Service
metadata: {{name: icmp, namespace: bad}}
spec: {{clusterIP: 10.96.0.28, ports: [{{name: ping, port: 1, protocol: ICMP}}, {{name: dns, port: 53, protocol: UDP}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: ghost-abc
  namespace: bad
  labels: {{kubernetes.io/service-name: ghost}}
addressType: IPv4
endpoints: [{{addresses: [10.244.1.9]}}]
ports: [{{port: 80}}]
---
apiVersion: v1
kind: Service
metadata: {{name: portless, namespace: bad}}
spec: {{clusterIP: 10.96.0.29, ports: [{{port: 80}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: portless-abc
  namespace: bad
  labels: {{kubernetes.io/service-name: portless}}
addressType: IPv4
endpoints: [{{addresses: [10.244.1.10]}}]
---
apiVersion: v1
kind: Service
metadata: {{name: {long}, namespace: bad}}
spec: {{clusterIP: 10.96.0.30, ports: [{{port: 80}}]}}
---
apiVersion: v1
kind: Service
metadata:
  name: {hostile}
  namespace: "evil; delete table ip proxier"
  annotations: {{note: {hostile}}}
spec: {{clusterIP: 10.96.0.31, ports: [{{name: {hostile_port}, port: 80}}]}}
---
apiVersion: v1
kind: Service
metadata: {{name: many-ports, namespace: big}}
spec:
  clusterIP: 10.96.0.32
  ports:
{many_ports}"#
    )
}

/// Every message, exactly as the binary prints it (docs/robustness.md has the same table).
const EXPECTED: &[&str] = &[
    "warning: {file}: EndpointSlice bad/ghost-abc: its Service bad/ghost is not in the snapshot; ignored",
    "warning: {file}: EndpointSlice bad/portless-abc: ports: no ports: its 1 endpoint(s) serve no Service port",
    "warning: {file}: Service bad/leading-zeros: spec.clusterIP: \"010.096.000.024\" has leading zeros; read as 10.96.0.24",
    "warning: {file}: Service bad/node-ports: spec.ports[0].nodePort: nodePort 8080 is outside the default range 30000-32767; programmed anyway",
    "error: {file}: EndpointSlice shop/wrong-family: endpoints[0].addresses[0]: fd00:10:244::5 is not IPv4 as addressType says; endpoint skipped",
    "error: {file}: EndpointSlice shop/wrong-family: endpoints[1].addresses[0]: \"not-an-ip\" is not an IP address; endpoint skipped",
    "error: {file}: Service bad/bad-ip: spec.clusterIP: \"10.96.0.300\" is not an IP address; ignored",
    "error: {file}: Service bad/dup-names: spec.ports[1].name: duplicate port name \"http\" for tcp; this port skipped",
    "error: {file}: Service bad/icmp: spec.ports[0].protocol: unknown protocol \"ICMP\" (expected TCP, UDP or SCTP); port skipped",
    "error: {file}: Service bad/mixed-family: spec.clusterIPs[1]: a second IPv4 ClusterIP 10.96.0.22; ignored",
    "error: {file}: Service bad/node-ports: spec.ports[1].nodePort: nodePort 70000 is outside 1-65535; NodePort not programmed",
    "error: {file}: Service bad/port-zero: spec.ports[0].port: port 0 is outside 1-65535; port skipped",
    "error: {file}: Service bad/port-zero: spec.ports[1].port: port 65536 is outside 1-65535; port skipped",
    "error: {file}: Service bad/undeclared-family: spec.clusterIPs[1]: fd00:10:96::23 is IPv6, but spec.ipFamilies does not list IPv6; ignored",
];

struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, contents: &str) -> TempFile {
        let path = std::env::temp_dir().join(format!("proxier-bad-input-{}-{name}", std::process::id()));
        std::fs::write(&path, contents).unwrap();
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn proxier(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_proxier")).args(args).output().expect("run proxier")
}

fn render(file: &TempFile, format: &str) -> Output {
    let path = file.0.to_str().unwrap();
    proxier(&["render", "--snapshot", path, "--node", "node-a", "--cluster-cidr", "10.244.0.0/16", "--format", format])
}

#[test]
fn every_bad_input_is_named_and_the_rest_is_programmed() {
    let file = TempFile::new("snapshot.yaml", &snapshot());
    let output = render(&file, "json");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stderr = String::from_utf8(output.stderr).unwrap();
    let lines: Vec<&str> = stderr.lines().map(|l| l.strip_prefix("proxier: ").unwrap_or(l)).collect();
    let expected: Vec<String> = EXPECTED.iter().map(|e| e.replace("{file}", &file.0.display().to_string())).collect();
    assert_eq!(lines, expected);

    // The rest is programmed: the good Service with its one valid endpoint, the repaired and partial ones,
    // the hostile, long and many-port Services.
    let json = String::from_utf8(output.stdout).unwrap();
    let document: serde_json::Value = serde_json::from_str(&json).unwrap();
    for present in ["10.96.0.20", "10.244.1.5", "10.96.0.21", "10.96.0.23", "10.96.0.24", "10.96.0.25", "10.96.0.26"] {
        assert!(json.contains(&format!("\"{present}\"")), "{present} not programmed");
    }
    for present in ["10.96.0.27", "10.96.0.28", "10.96.0.29", "10.96.0.30", "10.96.0.31", "10.96.0.32"] {
        assert!(json.contains(&format!("\"{present}\"")), "{present} not programmed");
    }
    for absent in ["10.96.0.22", "fd00:10:96::23", "10.244.1.9", "10.244.1.10", "not-an-ip"] {
        assert!(!json.contains(absent), "{absent} programmed");
    }
    assert_eq!(json.matches("\"many-ports\"").count(), 0);
    invariants::check_json_strings(&document).unwrap();
    invariants::check_text(&String::from_utf8(render(&file, "nft").stdout).unwrap()).unwrap();
}

/// docs/robustness.md's bad-input table quotes exactly these messages, no more and no fewer (`F` there
/// stands for the file).
#[test]
fn the_documented_bad_input_messages_are_the_printed_ones() {
    let mut documented: Vec<String> = docs::quoted_cells("docs/robustness.md", "Bad input: input → message", 0, 1)
        .into_iter()
        .map(|message| message.replacen(": F: ", ": {file}: ", 1))
        .collect();
    documented.sort();
    let mut printed: Vec<String> = EXPECTED.iter().map(|e| e.to_string()).collect();
    printed.sort();
    assert_eq!(documented, printed);
}

#[test]
fn hostile_names_never_reach_nft_except_as_sanitised_comments() {
    let file = TempFile::new("hostile.yaml", &snapshot());
    let json = String::from_utf8(render(&file, "json").stdout).unwrap();
    let document: serde_json::Value = serde_json::from_str(&json).unwrap();
    invariants::check_json_strings(&document).unwrap();
    // The hostile Service's element comment: every unsafe character replaced, bounded.
    let comments: Vec<&str> =
        json.lines().filter(|l| l.contains("\"comment\"") && l.contains("evil")).map(str::trim).collect();
    assert_eq!(
        comments,
        [
            r#""comment": "evil? delete table ip proxier/x?? flush ruleset? ?drop? accept?ncomment:h??? drop/tcp (ClusterIP)","#
        ]
    );
    for fragment in ["flush ruleset;", "{drop}", "\\n", "\\\""] {
        assert!(
            !json.lines().any(|l| l.contains(fragment) && !l.contains("\"comment\"")),
            "{fragment:?} outside a comment"
        );
    }
    let text = String::from_utf8(render(&file, "nft").stdout).unwrap();
    assert!(text.contains(
        "comment \"evil? delete table ip proxier/x?? flush ruleset? ?drop? accept?ncomment:h??? drop/tcp (ClusterIP)\""
    ));
    // 10,000-character names are cut in comments to nft's 128-byte limit.
    assert!(text.contains(&format!("comment \"bad/{}...\"", "n".repeat(121))), "long name comment");
}

#[test]
fn hostile_long_and_huge_renders_load_into_the_kernel() {
    let Some(ns) = Netns::for_test("hostile_long_and_huge_renders_load_into_the_kernel") else { return };
    let file = TempFile::new("kernel.yaml", &snapshot());
    let json = String::from_utf8(render(&file, "json").stdout).unwrap();
    let started = Instant::now();
    ns.nft_args(&["-j", "-f", "-"], Some(&json)).unwrap();
    let json_load = started.elapsed();
    let listed = ns.nft_args(&["list", "table", "ip", "proxier"], None).unwrap();
    assert!(listed.contains("10.96.0.32 . tcp . 5999"), "the 5000th port is programmed");
    assert!(listed.contains("comment \"evil? delete table ip proxier/x??"), "hostile comment listed");

    let text = String::from_utf8(render(&file, "nft").stdout).unwrap();
    let started = Instant::now();
    ns.nft_args(&["-f", "-"], Some(&text)).unwrap();
    let text_load = started.elapsed();
    assert_eq!(listed, ns.nft_args(&["list", "table", "ip", "proxier"], None).unwrap(), "JSON and text load the same");
    // "Reasonable time" for 5,000 ports on one Service (plus the rest): well under ten seconds.
    assert!(json_load < Duration::from_secs(10) && text_load < Duration::from_secs(10), "{json_load:?} {text_load:?}");
    eprintln!("5000-port snapshot loaded: JSON {json_load:?}, text {text_load:?}");
}

//! `proxier explain` on every bundled snapshot and `proxier trace` for one case of every verdict kind,
//! pinned with insta (testdata/snapshots/explain-*.snap, trace-*.snap). The verdicts are checked against
//! the kernel in trace_agreement.rs.

#![allow(clippy::disallowed_methods)] // Tests run the binary and ip/nft (clippy.toml).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const CLUSTERS: &[&str] = &["single-stack.yaml", "dual-stack.json", "malformed.yaml", "semantics.yaml"];

/// One pinned trace: (snapshot name, cluster, node, --from, --to, extra flags).
type TraceCase = (&'static str, &'static str, &'static str, &'static str, &'static str, &'static [&'static str]);

const TRACES: &[TraceCase] = &[
    (
        "clusterip-from-pod-hairpin",
        "single-stack.yaml",
        "node-a",
        "pod:shop/web-6d8f7c9b54-2vqlm",
        "10.96.120.33:80/tcp",
        &[],
    ),
    ("clusterip-from-node", "single-stack.yaml", "node-a", "node", "10.96.0.10:53/udp", &[]),
    ("nodeport-from-outside", "single-stack.yaml", "node-b", "203.0.113.99", "192.168.49.12:30080/tcp", &[]),
    ("no-endpoints-reject", "single-stack.yaml", "node-a", "10.244.1.5", "10.96.50.50:80/tcp", &[]),
    ("clusterip-other-port-reject", "single-stack.yaml", "node-a", "10.244.1.5", "10.96.0.10:54/udp", &[]),
    (
        "service-cidr-drop",
        "single-stack.yaml",
        "node-a",
        "10.244.1.5",
        "10.96.99.99:80/tcp",
        &["--service-cidr", "10.96.0.0/16"],
    ),
    ("not-handled", "single-stack.yaml", "node-a", "10.244.1.5", "1.1.1.1:443/tcp", &[]),
    ("etp-local-outside-drop", "semantics.yaml", "node-b", "198.51.100.7", "192.168.49.12:30200/tcp", &[]),
    ("etp-local-outside-local", "semantics.yaml", "node-a", "198.51.100.7", "203.0.113.50:80/tcp", &[]),
    ("etp-local-from-pod", "semantics.yaml", "node-b", "10.244.2.99", "192.168.49.12:30200/tcp", &[]),
    ("etp-local-from-node", "semantics.yaml", "node-b", "node", "192.168.49.12:30200/tcp", &[]),
    ("source-range-drop", "semantics.yaml", "node-a", "203.0.113.99", "203.0.113.50:80/tcp", &[]),
    ("itp-local-drop", "semantics.yaml", "node-a", "10.244.1.7", "10.96.10.3:53/udp", &[]),
    ("zone-hints", "semantics.yaml", "node-a", "10.244.1.7", "10.96.10.4:80/tcp", &[]),
    ("terminating-fallback", "semantics.yaml", "node-b", "10.244.2.7", "10.96.10.5:80/tcp", &[]),
    ("affinity", "semantics.yaml", "node-a", "10.244.1.7", "10.96.10.1:80/tcp", &[]),
    ("ipv6-from-pod", "dual-stack.json", "node-b", "fd00:10:244:2::99", "[fd00:10:96::5c1e]:80/tcp", &[]),
];

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata")
}

fn proxier(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_proxier")).args(args).current_dir(testdata()).output().expect("run proxier")
}

fn settings() -> insta::Settings {
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path(testdata().join("snapshots"));
    settings.set_prepend_module_to_snapshot(false);
    settings
}

fn stdout(output: Output, what: &str) -> String {
    assert!(output.status.success(), "{what}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn explain_is_pinned_for_every_bundled_cluster() {
    let settings = settings();
    for cluster in CLUSTERS {
        let stem = cluster.split('.').next().unwrap();
        let path = format!("clusters/{cluster}");
        let text = stdout(proxier(&["explain", "--snapshot", &path]), cluster);
        settings.bind(|| insta::assert_snapshot!(format!("explain-{stem}"), text));
        let json = stdout(proxier(&["explain", "--snapshot", &path, "--output", "json"]), cluster);
        let value: serde_json::Value = serde_json::from_str(&json).expect("explain --output json is JSON");
        assert!(value["services"].as_array().is_some_and(|s| !s.is_empty()), "{cluster}");
    }
    let json = stdout(proxier(&["explain", "--snapshot", "clusters/semantics.yaml", "--output", "json"]), "json");
    settings.bind(|| insta::assert_snapshot!("explain-semantics-json", json));
}

#[test]
fn explain_takes_one_service_before_or_after_the_snapshot() {
    let after = stdout(proxier(&["explain", "--snapshot", "clusters/single-stack.yaml", "shop/web"]), "after");
    let before = stdout(proxier(&["explain", "shop/web", "--snapshot", "clusters/single-stack.yaml"]), "before");
    assert_eq!(after, before);
    assert!(after.starts_with("Service shop/web (NodePort)"), "{after}");
    assert_eq!(after.matches("Service ").count(), 1, "{after}");

    let missing = proxier(&["explain", "--snapshot", "clusters/single-stack.yaml", "shop/nope"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no Service shop/nope"));
}

#[test]
fn trace_is_pinned_for_every_verdict_kind() {
    let settings = settings();
    for (name, cluster, node, from, to, flags) in TRACES {
        let path = format!("clusters/{cluster}");
        let mut args = vec!["trace", "--snapshot", &path, "--node", node, "--from", from, "--to", to];
        args.extend_from_slice(&["--cluster-cidr", "10.244.0.0/16,fd00:10:244::/56"]);
        args.extend_from_slice(flags);
        let text = stdout(proxier(&args), name);
        settings.bind(|| insta::assert_snapshot!(format!("trace-{name}"), text));
        args.extend_from_slice(&["--output", "json"]);
        let json = stdout(proxier(&args), name);
        let value: serde_json::Value = serde_json::from_str(&json).expect("trace --output json is JSON");
        assert_eq!(value["node"], *node);
    }
    let args = [
        "trace",
        "--snapshot",
        "clusters/semantics.yaml",
        "--node",
        "node-b",
        "--cluster-cidr",
        "10.244.0.0/16",
        "--from",
        "node",
        "--to",
        "192.168.49.12:30200/tcp",
        "--output",
        "json",
    ];
    let json = stdout(proxier(&args), "json");
    settings.bind(|| insta::assert_snapshot!("trace-etp-local-from-node-json", json));
}

#[test]
fn trace_rejects_bad_sources_and_targets_with_exit_2() {
    let base = ["trace", "--snapshot", "clusters/single-stack.yaml", "--node", "node-a"];
    for (from, to, message) in [
        ("pod:shop/nope", "10.96.0.10:53/udp", "pod shop/nope is not an endpoint"),
        ("somewhere", "10.96.0.10:53/udp", "neither pod:NAMESPACE/NAME"),
        ("node", "10.96.0.10/udp", "expected IP:PORT/PROTO"),
        ("node", "[fd00::1]:53/udp", "node node-a has no IPv6 address"),
    ] {
        let mut args = base.to_vec();
        args.extend_from_slice(&["--from", from, "--to", to]);
        let output = proxier(&args);
        assert_eq!(output.status.code(), Some(2), "{from} {to}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(message), "{from} {to}: {stderr}");
    }
}

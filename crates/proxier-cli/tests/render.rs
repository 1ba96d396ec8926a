//! `proxier render` on every bundled snapshot, for every node, in both formats: pinned with insta.
//! (That these renders load into the kernel and mean what they say is proven in kernel.rs and traffic.rs.)

#![allow(clippy::disallowed_methods)] // Tests run the binary and ip/nft (clippy.toml).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The bundled clusters, with the flags a node of each would run with.
const CLUSTERS: &[(&str, &[&str])] = &[
    ("single-stack.yaml", &["--cluster-cidr", "10.244.0.0/16"]),
    ("dual-stack.json", &["--cluster-cidr", "10.244.0.0/16,fd00:10:244::/56"]),
    ("malformed.yaml", &["--cluster-cidr", "10.244.0.0/16"]),
    ("semantics.yaml", &["--cluster-cidr", "10.244.0.0/16", "--service-cidr", "10.96.0.0/16"]),
];
const NODES: &[&str] = &["node-a", "node-b"];

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata")
}

fn proxier(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_proxier")).args(args).current_dir(testdata()).output().expect("run proxier")
}

fn render(cluster: &str, node: &str, format: &str, flags: &[&str]) -> Output {
    let path = format!("clusters/{cluster}");
    let mut args = vec!["render", "--snapshot", &path, "--node", node, "--format", format];
    args.extend_from_slice(flags);
    proxier(&args)
}

fn snapshot_settings() -> insta::Settings {
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path(testdata().join("snapshots"));
    settings.set_prepend_module_to_snapshot(false);
    settings
}

#[test]
fn renders_are_pinned() {
    let settings = snapshot_settings();
    for (cluster, flags) in CLUSTERS {
        let stem = cluster.split('.').next().unwrap();
        for node in NODES {
            for format in ["json", "nft"] {
                let output = render(cluster, node, format, flags);
                assert!(
                    output.status.success(),
                    "{cluster} {node} {format}: {}",
                    String::from_utf8_lossy(&output.stderr)
                );
                let stdout = String::from_utf8(output.stdout).unwrap();
                settings.bind(|| insta::assert_snapshot!(format!("render-{stem}-{node}-{format}"), stdout));
                if format == "json" {
                    serde_json::from_str::<serde_json::Value>(&stdout).expect("render --format json is JSON");
                }
            }
            let report = String::from_utf8(render(cluster, node, "nft", flags).stderr).unwrap();
            settings.bind(|| insta::assert_snapshot!(format!("render-{stem}-{node}-report"), report));
        }
    }
}

#[test]
fn renders_are_byte_identical_across_runs_and_file_order() {
    let once = render("single-stack.yaml", "node-a", "json", &[]);
    let again = render("single-stack.yaml", "node-a", "json", &[]);
    assert_eq!(once.stdout, again.stdout);

    // The same objects split over two files in the other order render the same.
    let dir = std::env::temp_dir().join(format!("proxier-render-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let text = std::fs::read_to_string(testdata().join("clusters/malformed.yaml")).unwrap();
    let documents: Vec<&str> = text.split("\n---\n").collect();
    let (first, second) = documents.split_at(documents.len() / 2);
    std::fs::write(dir.join("b.yaml"), first.join("\n---\n")).unwrap();
    std::fs::write(dir.join("a.yaml"), second.join("\n---\n")).unwrap();
    let whole = render("malformed.yaml", "node-a", "json", &[]);
    let split = proxier(&["render", "--snapshot", dir.to_str().unwrap(), "--node", "node-a"]);
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(split.status.success(), "{}", String::from_utf8_lossy(&split.stderr));
    assert_eq!(String::from_utf8(whole.stdout).unwrap(), String::from_utf8(split.stdout).unwrap());
}

#[test]
fn bad_arguments_and_missing_files_exit_2_with_one_line() {
    let missing = proxier(&["render", "--snapshot", "clusters/no-such-file.yaml", "--node", "node-a"]);
    assert_eq!(missing.status.code(), Some(2));
    let stderr = String::from_utf8(missing.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("no-such-file.yaml"), "{stderr}");

    let bad_cidr = proxier(&["render", "--snapshot", "clusters", "--node", "n", "--cluster-cidr", "10.0.0.0/33"]);
    assert_eq!(bad_cidr.status.code(), Some(2));
    let bad_table = proxier(&["render", "--snapshot", "clusters", "--node", "n", "--table", "x;flush ruleset"]);
    assert_eq!(bad_table.status.code(), Some(2));
}

#[test]
fn help_documents_the_exit_codes() {
    let help = String::from_utf8(proxier(&["--help"]).stdout).unwrap();
    for line in ["0  success", "1  diff: apply would change", "2  bad arguments", "3  nft failed"] {
        assert!(help.contains(line), "{line:?} missing from --help:\n{help}");
    }
}

fn single_stack_text() -> String {
    String::from_utf8(render("single-stack.yaml", "node-a", "nft", &["--cluster-cidr", "10.244.0.0/16"]).stdout)
        .unwrap()
}

#[test]
fn rule_28_no_conntrack_invalid_drop_is_installed() {
    let text = single_stack_text();
    assert!(!text.contains("ct state invalid"), "{text}");
}

#[test]
fn rule_32_sctp_services_use_no_sctp_specific_expression() {
    // `meta l4proto` and `th dport` match SCTP without loading the sctp module; `sctp dport` would load it.
    let text = single_stack_text();
    assert!(text.contains(". sctp . 2905"), "the SCTP service is programmed");
    for line in text.lines().filter(|l| l.contains("sctp")) {
        assert!(!line.contains("sctp dport") && !line.contains("sctp sport") && !line.contains("sctp chunk"), "{line}");
    }
}

/// `--nodeport-addresses primary,CIDR`: the Node's primary address and its addresses inside the CIDR.
#[test]
fn primary_beside_a_cidr_keeps_the_primary_address() {
    let node_port = "192.168.49.11 . tcp . 30080";
    let text = |flags: &[&str]| {
        let out = render("single-stack.yaml", "node-a", "nft", flags);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    assert!(text(&["--cluster-cidr", "10.244.0.0/16"]).contains(node_port), "primary by default");
    assert!(!text(&["--nodeport-addresses", "10.0.0.0/8"]).contains(node_port), "outside the CIDR");
    assert!(text(&["--nodeport-addresses", "primary,10.0.0.0/8"]).contains(node_port), "primary beside it");
    assert!(text(&["--nodeport-addresses", "192.168.0.0/16"]).contains(node_port), "inside the CIDR");
}

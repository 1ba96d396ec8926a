//! The real `proxier` binary against the real kernel, each test in network namespaces of its own.

#![allow(clippy::disallowed_methods)] // Tests run the binary and ip/nft (clippy.toml).

use std::path::{Path, PathBuf};
use std::process::Output;

use proxier_testkit::{Netns, netns_available};

const CLUSTERS: &[(&str, &str)] = &[
    ("single-stack.yaml", "10.244.0.0/16"),
    ("dual-stack.json", "10.244.0.0/16,fd00:10:244::/56"),
    ("malformed.yaml", "10.244.0.0/16"),
    ("semantics.yaml", "10.244.0.0/16"),
];

fn testdata(path: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata").join(path).display().to_string()
}

fn proxier() -> &'static str {
    env!("CARGO_BIN_EXE_proxier")
}

/// Runs `program args` inside `ns`, with `stdin` piped in when given.
fn run_in(ns: &Netns, program: &str, args: &[&str], stdin: Option<&str>) -> Output {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns.name(), program])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ip netns exec");
    let mut pipe = child.stdin.take().unwrap();
    if let Some(input) = stdin {
        pipe.write_all(input.as_bytes()).unwrap();
    }
    drop(pipe);
    child.wait_with_output().unwrap()
}

fn ok(output: Output) -> String {
    assert!(
        output.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn ruleset(ns: &Netns) -> String {
    ok(run_in(ns, "nft", &["list", "ruleset"], None))
}

fn render_args<'a>(cluster: &'a str, node: &'a str, cidr: &'a str) -> Vec<String> {
    ["--snapshot", &testdata(&format!("clusters/{cluster}")), "--node", node, "--cluster-cidr", cidr]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

fn proxier_in(ns: &Netns, command: &str, args: &[String]) -> Output {
    let mut all = vec![command];
    all.extend(args.iter().map(String::as_str));
    run_in(ns, proxier(), &all, None)
}

#[test]
fn every_testdata_render_loads_and_its_json_and_text_forms_are_the_same_ruleset() {
    if !netns_available("every_testdata_render_loads") {
        return;
    }
    for (cluster, cidr) in CLUSTERS {
        for node in ["node-a", "node-b"] {
            let args = render_args(cluster, node, cidr);
            let json_ns = Netns::new("json").unwrap();
            ok(proxier_in(&json_ns, "apply", &args));
            let from_json = ruleset(&json_ns);
            assert!(from_json.contains("table ip proxier"), "{cluster} {node}: {from_json}");

            let mut text_args = args.clone();
            text_args.extend(["--format".to_owned(), "nft".to_owned()]);
            let text = ok(proxier_in(&json_ns, "render", &text_args));
            let text_ns = Netns::new("text").unwrap();
            ok(run_in(&text_ns, "nft", &["-f", "-"], Some(&text)));
            assert_eq!(from_json, ruleset(&text_ns), "{cluster} {node}: JSON and text forms differ in the kernel");

            // `apply --check` (nft -c) accepts it without changing anything, and the applied
            // ruleset has nothing left to change.
            let before = ruleset(&text_ns);
            ok(proxier_in(
                &text_ns,
                "apply",
                &[args.clone(), vec!["--check".into(), "--table".into(), "checked".into()]].concat(),
            ));
            assert_eq!(before, ruleset(&text_ns), "apply --check changed the kernel");
            let diff = proxier_in(&json_ns, "diff", &args);
            assert_eq!(diff.status.code(), Some(0), "{cluster} {node}: {}", String::from_utf8_lossy(&diff.stdout));
        }
    }
}

#[test]
fn diff_shows_what_apply_would_change_and_apply_makes_it_so() {
    if !netns_available("diff_shows_what_apply_would_change") {
        return;
    }
    let ns = Netns::new("diff").unwrap();
    let node_a = render_args("single-stack.yaml", "node-a", "10.244.0.0/16");
    let node_b = render_args("single-stack.yaml", "node-b", "10.244.0.0/16");

    let before = proxier_in(&ns, "diff", &node_a);
    assert_eq!(before.status.code(), Some(1), "an empty kernel differs");
    assert!(String::from_utf8_lossy(&before.stdout).contains("+table ip proxier {"));

    ok(proxier_in(&ns, "apply", &node_a));
    let same = proxier_in(&ns, "diff", &node_a);
    assert_eq!(same.status.code(), Some(0));
    assert!(same.stdout.is_empty());

    // node-b serves the NodePort on its own address: exactly those elements change.
    let other = proxier_in(&ns, "diff", &node_b);
    assert_eq!(other.status.code(), Some(1));
    let text = String::from_utf8(other.stdout).unwrap();
    assert!(text.contains("-\t\t\t192.168.49.11 . tcp . 30080"), "{text}");
    assert!(text.contains("+\t\t\t192.168.49.12 . tcp . 30080"), "{text}");
    ok(proxier_in(&ns, "apply", &node_b));
    assert_eq!(proxier_in(&ns, "diff", &node_b).status.code(), Some(0));
}

/// A wrapper around the real nft that breaks one of the last rules, one every ruleset has (postrouting's
/// jump to masquerading), so the kernel rejects the transaction after the table was already deleted and
/// re-created within it. (A rule only some Services need would cost just those Services: see
/// `a_service_the_kernel_refuses_is_left_out_and_the_rest_answers` in traffic.rs.)
fn failing_nft(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    // The last command of the transaction (the document is one line; the greedy match reaches it)
    // names a table that does not exist: nft parses it and refuses the whole transaction.
    let path = dir.join("nft-breaks-last-command");
    let script = "#!/bin/sh\nsed 's/\\(.*\\)\"table\":\"proxier\"/\\1\"table\":\"no-such-table\"/' | exec nft \"$@\"\n";
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[test]
fn a_failed_apply_reports_nfts_message_and_keeps_the_previous_ruleset() {
    if !netns_available("a_failed_apply_keeps_the_previous_ruleset") {
        return;
    }
    let ns = Netns::new("fail").unwrap();
    let args = render_args("single-stack.yaml", "node-a", "10.244.0.0/16");
    ok(proxier_in(&ns, "apply", &args));
    let before = ruleset(&ns);

    let dir = std::env::temp_dir().join(format!("proxier-kernel-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut failing = render_args("single-stack.yaml", "node-b", "10.244.0.0/16");
    // The nft path: `apply` loads over netlink unless told otherwise.
    failing.extend([
        "--netlink".to_owned(),
        "false".to_owned(),
        "--nft".to_owned(),
        failing_nft(&dir).display().to_string(),
    ]);
    let output = proxier_in(&ns, "apply", &failing);
    std::fs::remove_dir_all(&dir).unwrap();

    assert_eq!(output.status.code(), Some(3));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("previous ruleset is unchanged"), "{stderr}");
    assert!(stderr.contains("Error:"), "nft's own message is shown: {stderr}");
    assert_eq!(before, ruleset(&ns));

    let nft_path = vec!["--netlink".into(), "false".into(), "--nft".into(), "/nonexistent/nft".into()];
    let missing = proxier_in(&ns, "apply", &[args.clone(), nft_path].concat());
    assert_eq!(missing.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("cannot run /nonexistent/nft"));
    assert_eq!(before, ruleset(&ns));
}

const FOREIGN: &str = "\
table inet filter {
	set blocked {
		type ipv4_addr
		elements = { 192.0.2.1 }
	}
	chain input {
		type filter hook input priority 0; policy accept;
		ip saddr @blocked drop
	}
}
table ip kube-proxy {
	chain services {
		ip daddr 10.96.0.1 counter
	}
}
";

#[test]
fn apply_diff_and_delete_touch_only_proxiers_tables() {
    if !netns_available("apply_diff_and_delete_touch_only_proxiers_tables") {
        return;
    }
    let ns = Netns::new("owner").unwrap();
    ok(run_in(&ns, "nft", &["-f", "-"], Some(FOREIGN)));
    let foreign = ruleset(&ns);

    let args = render_args("dual-stack.json", "node-a", "10.244.0.0/16,fd00:10:244::/56");
    ok(proxier_in(&ns, "apply", &args));
    let with_ours = ruleset(&ns);
    assert!(with_ours.contains("table ip proxier") && with_ours.contains("table ip6 proxier"));
    assert!(with_ours.starts_with(&foreign), "foreign tables changed:\n{with_ours}");
    proxier_in(&ns, "diff", &args);

    let deleted = run_in(&ns, proxier(), &["delete"], None);
    assert!(deleted.status.success());
    let stderr = String::from_utf8(deleted.stderr).unwrap();
    assert!(stderr.contains("deleted table ip proxier") && stderr.contains("deleted table ip6 proxier"), "{stderr}");
    assert_eq!(ruleset(&ns), foreign);

    // Deleting again is not an error; a custom table name is honoured.
    assert!(run_in(&ns, proxier(), &["delete"], None).status.success());
    let custom = [args, vec!["--table".into(), "edge_proxy".into()]].concat();
    ok(proxier_in(&ns, "apply", &custom));
    assert!(ruleset(&ns).contains("table ip edge_proxy"));
    ok(run_in(&ns, proxier(), &["delete", "--table", "edge_proxy"], None));
    assert_eq!(ruleset(&ns), foreign);
}

#[test]
fn a_render_of_a_single_stack_cluster_removes_a_stale_ip6_table() {
    if !netns_available("a_render_of_a_single_stack_cluster_removes_a_stale_ip6_table") {
        return;
    }
    let ns = Netns::new("stale").unwrap();
    ok(proxier_in(&ns, "apply", &render_args("dual-stack.json", "node-a", "10.244.0.0/16,fd00:10:244::/56")));
    assert!(ruleset(&ns).contains("table ip6 proxier"));
    ok(proxier_in(&ns, "apply", &render_args("single-stack.yaml", "node-a", "10.244.0.0/16")));
    let after = ruleset(&ns);
    assert!(after.contains("table ip proxier") && !after.contains("table ip6 proxier"), "{after}");
}

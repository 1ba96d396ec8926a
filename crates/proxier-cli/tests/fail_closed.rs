//! Fail closed: input that cannot be read as a whole never reaches the kernel. Each case runs the real
//! binary in a network namespace of its own that already holds a programmed table; `apply` must exit 2
//! with the file and position, and leave the whole ruleset byte-identical. `render`, `diff`, `trace` and
//! `explain` refuse the same input the same way. The messages are those of docs/robustness.md.

#![allow(clippy::disallowed_methods)] // Tests run the binary and ip/nft (clippy.toml).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use proxier_testkit::{Netns, docs, netns_available};

fn testdata(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata").join(path)
}

/// A fresh directory under the system temp dir, removed on drop (also when the test fails).
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("proxier-fail-closed-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn write(&self, relative: &str, contents: &[u8]) -> PathBuf {
        let path = self.0.join(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, contents).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Copies a directory tree (files only).
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn in_ns(ns: &Netns, args: &[&str]) -> Output {
    ns.exec(env!("CARGO_BIN_EXE_proxier"), args).expect("run proxier")
}

fn ruleset(ns: &Netns) -> String {
    let output = ns.exec("nft", ["list", "ruleset"]).unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

/// 4 KiB of seeded pseudo-random bytes (a xorshift generator: no dependency, same bytes every run).
fn random_bytes() -> Vec<u8> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..4096)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

/// Every unreadable input, with the one line the binary prints for it (`{dir}` is the temp dir).
fn bad_inputs(dir: &TempDir) -> Vec<(&'static str, PathBuf, String)> {
    let yaml = std::fs::read(testdata("clusters/single-stack.yaml")).unwrap();
    let json = std::fs::read(testdata("clusters/dual-stack.json")).unwrap();
    let at_line_end = yaml.iter().take(6000).rposition(|&b| b == b'\n').unwrap() + 1;
    let bundle = dir.0.join("bundle");
    copy_tree(&testdata("real/k3s-support-bundle"), &bundle);
    let mut services = std::fs::read(bundle.join("cluster-resources/services/kube-system.json")).unwrap();
    services.truncate(4000);
    std::fs::write(bundle.join("cluster-resources/services/kube-system.json"), services).unwrap();
    let d = dir.0.display().to_string();
    vec![
        (
            "a kubectl YAML dump cut by `head -c 20000`",
            dir.write("truncated.yaml", &yaml[..20000]),
            format!(
                "unreadable snapshot {d}/truncated.yaml: document 1: could not find expected ':' at line 782 \
                 column 1, while scanning a simple key at line 781 column 9"
            ),
        ),
        (
            "a kubectl YAML dump cut at the end of a line (valid YAML)",
            dir.write("cut.yaml", &yaml[..at_line_end]),
            format!(
                "unreadable snapshot {d}/cut.yaml: document 1: a List (`apiVersion` and `items`) without `kind`; \
                 kubectl prints `kind` after the items, so the text was probably cut short"
            ),
        ),
        (
            "a kubectl JSON dump cut by `head -c 5000`",
            dir.write("truncated.json", &json[..5000]),
            format!(
                "unreadable snapshot {d}/truncated.json: document 1: EOF while parsing a string at line 153 column 17"
            ),
        ),
        (
            "a YAML syntax error",
            dir.write("syntax.yaml", b"apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: [shop\n"),
            format!(
                "unreadable snapshot {d}/syntax.yaml: document 1: did not find expected ',' or ']' at line 6 column \
                 1, while parsing a flow sequence at line 5 column 14"
            ),
        ),
        (
            "an empty file",
            dir.write("empty.yaml", b""),
            format!("unreadable snapshot {d}/empty.yaml: the file is empty"),
        ),
        (
            "random bytes",
            dir.write("random.yaml", &random_bytes()),
            format!("{d}/random.yaml is not UTF-8 text (invalid byte at offset 2)"),
        ),
        (
            "a named file that holds no Kubernetes objects",
            dir.write("version.json", b"{\"major\": \"1\", \"minor\": \"33\"}\n"),
            format!(
                "unreadable snapshot {d}/version.json: no Kubernetes objects in it (no document has `kind` or \
                 `apiVersion`)"
            ),
        ),
        (
            "a support bundle with one file cut short",
            bundle.clone(),
            format!(
                "unreadable snapshot {d}/bundle/cluster-resources/services/kube-system.json: document 1: EOF while \
                 parsing an object at line 103 column 8"
            ),
        ),
    ]
}

/// The one line for a directory none of whose snapshot files holds a Kubernetes object.
fn no_objects_under(dir: &str) -> String {
    format!("no Kubernetes objects found under {dir} (no document of its snapshot files has `kind` or `apiVersion`)")
}

fn stderr_line(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).trim_end().to_owned()
}

#[test]
fn unreadable_input_exits_2_names_the_file_and_position_and_apply_changes_nothing() {
    if !netns_available("unreadable_input_exits_2_names_the_file_and_position_and_apply_changes_nothing") {
        return;
    }
    let dir = TempDir::new("kernel");
    let ns = Netns::new("failclosed").unwrap();
    let good = testdata("clusters/single-stack.yaml").display().to_string();
    let applied = in_ns(&ns, &["apply", "--snapshot", &good, "--node", "node-a", "--cluster-cidr", "10.244.0.0/16"]);
    assert!(applied.status.success(), "{}", stderr_line(&applied));
    let before = ruleset(&ns);
    assert!(before.contains("10.96.0.10 . udp . 53"), "the good table is programmed: {before}");

    for (what, path, message) in bad_inputs(&dir) {
        let path = path.display().to_string();
        let node = ["--node", "node-a", "--cluster-cidr", "10.244.0.0/16"];
        let runs: [(&str, Vec<&str>); 5] = [
            ("apply", [&["apply", "--snapshot", &path][..], &node].concat()),
            ("render", [&["render", "--snapshot", &path][..], &node].concat()),
            ("diff", [&["diff", "--snapshot", &path][..], &node].concat()),
            (
                "trace",
                [&["trace", "--snapshot", &path, "--from", "10.244.1.5", "--to", "10.96.0.10:53/udp"][..], &node]
                    .concat(),
            ),
            ("explain", vec!["explain", "--snapshot", &path]),
        ];
        for (command, args) in runs {
            let output = in_ns(&ns, &args);
            assert_eq!(output.status.code(), Some(2), "{what}: {command}: {}", stderr_line(&output));
            assert_eq!(stderr_line(&output), format!("proxier: {message}"), "{what}: {command}");
            assert!(output.stdout.is_empty(), "{what}: {command} printed output");
            assert_eq!(ruleset(&ns), before, "{what}: {command} changed the kernel");
        }
    }
}

/// docs/robustness.md's fail-closed table quotes exactly the messages printed for these inputs (`D` there
/// is the directory), and the one for a directory without Kubernetes objects.
#[test]
fn the_documented_fail_closed_messages_are_the_printed_ones() {
    let dir = TempDir::new("documented");
    let d = dir.0.display().to_string();
    let mut printed: Vec<String> =
        bad_inputs(&dir).into_iter().map(|(_, _, message)| message.replace(&d, "D")).collect();
    printed.push(no_objects_under("D"));
    printed.sort();
    let mut documented = docs::quoted_cells("docs/robustness.md", "Unreadable input: fail closed", 0, 1);
    documented.sort();
    assert_eq!(documented, printed);
}

#[test]
fn apply_refuses_to_empty_a_table_that_programs_services_unless_allowed() {
    if !netns_available("apply_refuses_to_empty_a_table_that_programs_services_unless_allowed") {
        return;
    }
    let dir = TempDir::new("empty-model");
    let ns = Netns::new("emptymodel").unwrap();
    let good = testdata("clusters/single-stack.yaml").display().to_string();
    let flags = ["--node", "node-a", "--cluster-cidr", "10.244.0.0/16"];
    // A snapshot of only the Nodes: valid, but no Service at all (a `kubectl get nodes` saved by mistake).
    let nodes = dir.write("nodes.yaml", b"apiVersion: v1\nkind: Node\nmetadata: {name: node-a}\nstatus:\n  addresses: [{type: InternalIP, address: 192.168.49.11}]\n");
    let nodes = nodes.display().to_string();

    // With nothing programmed yet there is nothing to lose: applied.
    let first = in_ns(&ns, &[&["apply", "--snapshot", &nodes][..], &flags].concat());
    assert!(first.status.success(), "{}", stderr_line(&first));

    assert!(in_ns(&ns, &[&["apply", "--snapshot", &good][..], &flags].concat()).status.success());
    let before = ruleset(&ns);
    let refused = in_ns(&ns, &[&["apply", "--snapshot", &nodes][..], &flags].concat());
    assert_eq!(refused.status.code(), Some(2), "{}", stderr_line(&refused));
    assert_eq!(
        stderr_line(&refused),
        "proxier: refusing to apply: the snapshot gives this node no Services, but the live table proxier programs \
         Services (22 entries in service-ips and cluster-ips); nothing changed (pass --allow-empty to remove them all)"
    );
    assert_eq!(ruleset(&ns), before, "a refused apply changed the kernel");

    let allowed = in_ns(&ns, &[&["apply", "--allow-empty", "--snapshot", &nodes][..], &flags].concat());
    assert!(allowed.status.success(), "{}", stderr_line(&allowed));
    let after = ruleset(&ns);
    assert!(!after.contains("10.96.0.10"), "--allow-empty removed the Services: {after}");
}

/// `render … | head -c 1`: the reader goes away; proxier stops quietly (no panic, no message), as other
/// Unix tools do, with the status it would have had.
#[test]
fn a_closed_pipe_ends_output_quietly() {
    let snapshot = testdata("clusters/single-stack.yaml").display().to_string();
    let cases: [&[&str]; 4] = [
        &["render", "--snapshot", &snapshot, "--node", "node-a"],
        &["gen", "--services", "50", "--endpoints", "2"],
        &["explain", "--snapshot", &snapshot],
        &["trace", "--snapshot", &snapshot, "--node", "node-a", "--from", "10.244.1.5", "--to", "10.96.0.10:53/udp"],
    ];
    for args in cases {
        let mut command = Command::new(env!("CARGO_BIN_EXE_proxier"));
        let output = to_a_closed_pipe(command.args(args));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!stderr.contains("panicked") && !stderr.contains("Broken pipe"), "{args:?}: {stderr}");
        assert_eq!(output.status.code(), Some(0), "{args:?}: {stderr}");
    }
}

/// `proxier diff … | head -1`: `diff` reads the live tables and loads the desired ones into a scratch
/// namespace first, so it needs a network namespace of its own; its reader goes away before the first
/// line. It ends quietly with its documented status: 1, the kernel (empty here) would change.
#[test]
fn diff_to_a_closed_pipe_ends_quietly_with_its_status() {
    if !netns_available("diff_to_a_closed_pipe_ends_quietly_with_its_status") {
        return;
    }
    let ns = Netns::new("diffpipe").unwrap();
    let snapshot = testdata("clusters/single-stack.yaml").display().to_string();
    let args = ["diff", "--snapshot", &snapshot, "--node", "node-a", "--cluster-cidr", "10.244.0.0/16"];
    // With the pipe open, the same diff prints the whole difference: what the closed pipe cuts off.
    let open = in_ns(&ns, &args);
    assert_eq!(open.status.code(), Some(1), "{}", stderr_line(&open));
    assert!(String::from_utf8_lossy(&open.stdout).lines().count() > 100, "diff prints the new table");

    let mut command = Command::new("ip");
    command.args(["netns", "exec", ns.name(), env!("CARGO_BIN_EXE_proxier")]).args(args).stdin(Stdio::null());
    let output = to_a_closed_pipe(&mut command);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked") && !stderr.contains("Broken pipe"), "{stderr}");
    assert_eq!(stderr, String::from_utf8_lossy(&open.stderr), "the messages are those of the open-pipe run");
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(ruleset(&ns).trim().is_empty(), "diff changed the kernel");
}

#[test]
fn a_directory_skips_files_that_hold_no_kubernetes_objects_with_a_note() {
    let dir = TempDir::new("bundle-note");
    let bundle = dir.0.join("bundle");
    copy_tree(&testdata("real/k3s-support-bundle"), &bundle);
    let output = Command::new(env!("CARGO_BIN_EXE_proxier"))
        .args(["render", "--snapshot", &bundle.display().to_string(), "--node", "c9b7eea91"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr_line(&output));
    let b = bundle.display();
    assert_eq!(
        stderr_line(&output),
        format!(
            "proxier: note: skipped 3 files that hold no Kubernetes objects: {b}/cluster-info/cluster_version.json, \
             {b}/cluster-resources/auth-cani-list/default.json, {b}/cluster-resources/pod-disruption-budgets-errors.json\n\
             proxier: note: skipped 4 objects of other kinds: Namespace (4)"
        )
    );
    // A directory of such files only is an error.
    let only = TempDir::new("only-foreign");
    only.write("version.json", b"{\"major\": \"1\"}");
    let output = Command::new(env!("CARGO_BIN_EXE_proxier"))
        .args(["render", "--snapshot", &only.0.display().to_string(), "--node", "n"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(stderr_line(&output), format!("proxier: {}", no_objects_under(&only.0.display().to_string())));
    // A real Sonobuoy result tree: JSON arrays of Services, Endpoints and Nodes whose items carry no `kind`.
    // Nothing says what they are, so nothing is programmed from them: refused, not read as an empty cluster.
    let sonobuoy = testdata("real/sonobuoy-2017");
    let output = Command::new(env!("CARGO_BIN_EXE_proxier"))
        .args(["render", "--snapshot", &sonobuoy.display().to_string(), "--node", "n"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(output.stdout.is_empty());
    assert_eq!(stderr_line(&output), format!("proxier: {}", no_objects_under(&sonobuoy.display().to_string())));
}

/// Runs `command` with its stdout a pipe whose read end is closed before it writes, so its first
/// write fails with EPIPE (as `proxier … | head -1` does once `head` has its line).
fn to_a_closed_pipe(command: &mut Command) -> std::process::Output {
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    drop(child.stdout.take());
    child.wait_with_output().unwrap()
}

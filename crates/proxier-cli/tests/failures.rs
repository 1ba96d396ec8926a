//! Failures and ownership, with the real binary in network namespaces:
//!
//! - `nft` missing or failing (`--nft` pointing at a program that fails): a clear error, exit 3, and the
//!   previous ruleset exactly as it was;
//! - two `proxier apply` at once, 50 times: the table is always exactly one of the two renders;
//! - `proxier` or `nft` SIGKILLed in the middle of a large apply: the table is the old or the new one;
//! - foreign tables (`ip kube-proxy`, `inet filter` with rules and sets): `apply`, `diff`, `delete` never
//!   change them.

#![allow(clippy::disallowed_methods)] // Tests run the binary and ip/nft (clippy.toml).

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use proxier_testkit::{Netns, canonical_listing};

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("proxier-failures-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn write(&self, name: &str, contents: &str) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, contents).unwrap();
        path.display().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `services` Services with one endpoint each, ClusterIPs counting from `base`.
fn cluster(services: usize, base: u32) -> String {
    let mut out = String::from(
        "apiVersion: v1\nkind: Node\nmetadata: {name: node-a}\nstatus: {addresses: [{type: InternalIP, address: 192.168.49.11}]}\n",
    );
    for i in 0..services {
        let ip = std::net::Ipv4Addr::from(0x0a60_0000 + base + i as u32);
        let endpoint = std::net::Ipv4Addr::from(0x0af4_0000 + base + i as u32);
        out.push_str(&format!(
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: s{i}, namespace: n}}\nspec: {{type: NodePort, clusterIP: {ip}, ports: [{{name: http, port: 80, nodePort: {}}}]}}\n\
             ---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: s{i}-a, namespace: n, labels: {{kubernetes.io/service-name: s{i}}}}}\n\
             addressType: IPv4\nendpoints: [{{addresses: [{endpoint}]}}]\nports: [{{name: http, port: 8080}}]\n",
            30000 + (i % 2000)
        ));
    }
    out
}

fn proxier_in(ns: &Netns, args: &[&str]) -> Output {
    ns.exec(env!("CARGO_BIN_EXE_proxier"), args).unwrap()
}

fn apply_args<'a>(snapshot: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["apply", "--snapshot", snapshot, "--node", "node-a", "--cluster-cidr", "10.244.0.0/16"];
    args.extend_from_slice(extra);
    args
}

/// proxier's table, canonical, or `Null` when it does not exist.
fn table(ns: &Netns) -> serde_json::Value {
    let output = ns.exec("nft", ["-j", "list", "table", "ip", "proxier"]).unwrap();
    if !output.status.success() {
        return serde_json::Value::Null;
    }
    canonical_listing(&String::from_utf8(output.stdout).unwrap())
}

/// The whole ruleset without proxier's tables.
fn foreign(ns: &Netns) -> serde_json::Value {
    let mut ruleset = ns.ruleset().unwrap();
    let objects = ruleset["nftables"].as_array_mut().unwrap();
    objects.retain(|o| {
        let body = o.as_object().and_then(|m| m.values().next()).unwrap();
        let table = body.get("table").or_else(|| o.get("table").and(body.get("name")));
        table.and_then(|t| t.as_str()) != Some("proxier")
    });
    ruleset
}

/// With `--netlink false`, `apply` loads through `nft`, whose failures are reported as such.
#[test]
fn a_missing_or_failing_nft_exits_3_and_leaves_the_ruleset() {
    let Some(ns) = Netns::for_test("a_missing_or_failing_nft_exits_3_and_leaves_the_ruleset") else { return };
    let dir = TempDir::new("nft-fails");
    let old = dir.write("old.yaml", &cluster(3, 0));
    let new = dir.write("new.yaml", &cluster(5, 100));
    assert!(proxier_in(&ns, &apply_args(&old, &[])).status.success());
    let before = ns.ruleset().unwrap();

    let missing = dir.0.join("no-such-nft").display().to_string();
    let output = proxier_in(&ns, &apply_args(&new, &["--netlink", "false", "--nft", &missing]));
    assert_eq!(output.status.code(), Some(3));
    assert_eq!(
        String::from_utf8_lossy(&output.stderr).lines().last().unwrap(),
        format!(
            "proxier: rules not applied; the previous ruleset is unchanged: cannot run {missing}: No such file or \
             directory (os error 2)"
        )
    );
    assert_eq!(ns.ruleset().unwrap(), before);

    let failing = dir
        .write("failing-nft", "#!/bin/sh\necho 'Error: Could not process rule: Operation not supported' >&2\nexit 1\n");
    std::fs::set_permissions(&failing, std::fs::Permissions::from_mode(0o755)).unwrap();
    let output = proxier_in(&ns, &apply_args(&new, &["--netlink", "false", "--nft", &failing]));
    assert_eq!(output.status.code(), Some(3));
    assert_eq!(
        String::from_utf8_lossy(&output.stderr).lines().last().unwrap(),
        format!(
            "proxier: rules not applied; the previous ruleset is unchanged: {failing} apply failed: Error: Could not \
             process rule: Operation not supported"
        )
    );
    assert_eq!(ns.ruleset().unwrap(), before);

    // The real nft refusing the transaction at its end: a wrapper corrupts the last command (the
    // document is one line; the greedy match reaches its last `"add"`).
    let truncating = dir.write("corrupting-nft", "#!/bin/sh\nsed 's/\\(.*\\)\"add\"/\\1\"addx\"/' | nft \"$@\"\n");
    std::fs::set_permissions(&truncating, std::fs::Permissions::from_mode(0o755)).unwrap();
    let output = proxier_in(&ns, &apply_args(&new, &["--netlink", "false", "--nft", &truncating]));
    assert_eq!(output.status.code(), Some(3), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(ns.ruleset().unwrap(), before);
}

#[test]
fn concurrent_applies_leave_one_of_the_two_tables() {
    let Some(ns) = Netns::for_test("concurrent_applies_leave_one_of_the_two_tables") else { return };
    let dir = TempDir::new("concurrent");
    let a = dir.write("a.yaml", &cluster(200, 0));
    let b = dir.write("b.yaml", &cluster(300, 1000));
    assert!(proxier_in(&ns, &apply_args(&a, &[])).status.success());
    let table_a = table(&ns);
    assert!(proxier_in(&ns, &apply_args(&b, &[])).status.success());
    let table_b = table(&ns);
    assert_ne!(table_a, table_b);
    let (mut saw_a, mut saw_b) = (0, 0);
    for round in 0..50 {
        let spawn = |snapshot: &str| {
            let mut command = Command::new("ip");
            command.args(["netns", "exec", ns.name(), env!("CARGO_BIN_EXE_proxier")]);
            command.args(apply_args(snapshot, &[])).stdout(Stdio::null()).stderr(Stdio::piped());
            command.spawn().unwrap()
        };
        let (first, second) = if round % 2 == 0 { (spawn(&a), spawn(&b)) } else { (spawn(&b), spawn(&a)) };
        for child in [first, second] {
            let output = child.wait_with_output().unwrap();
            assert!(output.status.success(), "round {round}: {}", String::from_utf8_lossy(&output.stderr));
        }
        let now = table(&ns);
        if now == table_a {
            saw_a += 1;
        } else if now == table_b {
            saw_b += 1;
        } else {
            panic!("round {round}: the table is neither render");
        }
    }
    eprintln!("50 concurrent rounds: {saw_a} ended with A, {saw_b} with B");
}

#[test]
fn sigkill_mid_apply_leaves_the_old_or_the_new_table() {
    let Some(ns) = Netns::for_test("sigkill_mid_apply_leaves_the_old_or_the_new_table") else { return };
    let dir = TempDir::new("sigkill");
    let old = dir.write("old.yaml", &cluster(50, 0));
    let new = dir.write("new.yaml", &cluster(3000, 5000));
    assert!(proxier_in(&ns, &apply_args(&new, &[])).status.success());
    let table_new = table(&ns);
    let (mut kept_old, mut got_new) = (0, 0);
    for round in 0..20u64 {
        assert!(proxier_in(&ns, &apply_args(&old, &[])).status.success());
        let table_old = table(&ns);
        let mut command = Command::new("ip");
        command.args(["netns", "exec", ns.name(), env!("CARGO_BIN_EXE_proxier")]);
        let mut child =
            command.args(apply_args(&new, &[])).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(20 + round * 25));
        if round % 2 == 1 {
            // Kill nft (a child of proxier) if it is running, else proxier.
            let children =
                std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", child.id())).unwrap_or_default();
            let nft = children.split_whitespace().next().and_then(|pid| pid.parse::<i32>().ok());
            let victim = nft.map(|p| p.to_string()).unwrap_or_else(|| child.id().to_string());
            let _ = Command::new("kill").args(["-KILL", &victim]).status();
        }
        let _ = child.kill();
        let _ = child.wait();
        // An orphaned nft may still be finishing its (complete) transaction.
        std::thread::sleep(Duration::from_millis(300));
        let now = table(&ns);
        if now == table_old {
            kept_old += 1;
        } else if now == table_new {
            got_new += 1;
        } else {
            panic!("round {round}: the table is neither the old nor the new one");
        }
    }
    eprintln!("20 killed applies: {kept_old} kept the old table, {got_new} had committed the new one");
}

#[test]
fn foreign_tables_are_never_changed() {
    let Some(ns) = Netns::for_test("foreign_tables_are_never_changed") else { return };
    ns.nft(
        "table ip kube-proxy {\n chain services { type nat hook prerouting priority -100; ip daddr 10.96.0.1 tcp dport 443 dnat to 192.168.49.11:6443; }\n}\n\
             table inet filter {\n set blocked { type ipv4_addr; elements = { 203.0.113.1, 203.0.113.2 } }\n\
              map ports { type inet_service : verdict; elements = { 22 : accept } }\n\
              chain input { type filter hook input priority 0; policy accept; ip saddr @blocked drop; tcp dport vmap @ports; }\n}\n\
             table ip6 proxier-not { chain c { }; }\n",
    )
    .unwrap();
    let dir = TempDir::new("foreign");
    let snapshot = dir.write("c.yaml", &cluster(20, 0));
    let before = foreign(&ns);
    let check = |what: &str, output: Output, codes: &[i32]| {
        assert!(
            codes.contains(&output.status.code().unwrap_or(-1)),
            "{what}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(foreign(&ns), before, "{what} changed a foreign table");
    };
    check("apply", proxier_in(&ns, &apply_args(&snapshot, &[])), &[0]);
    let diff_args = ["diff", "--snapshot", snapshot.as_str(), "--node", "node-a"];
    check("diff", proxier_in(&ns, &diff_args), &[0, 1]);
    check("apply again", proxier_in(&ns, &apply_args(&snapshot, &[])), &[0]);
    check("delete", proxier_in(&ns, &["delete"]), &[0]);
    assert_eq!(table(&ns), serde_json::Value::Null, "proxier's table deleted");
    check("delete when absent", proxier_in(&ns, &["delete"]), &[0]);
}

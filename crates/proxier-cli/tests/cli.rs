//! The command line as users meet it, through the binary: one output flag, kubectl-like input, the same
//! address forms everywhere, completions, the man page, `version`, examples in every `--help`, notes
//! summarised, `apply --check` and `diff` (colour, valid nft on both sides, the message without root).

#![allow(clippy::disallowed_methods)] // Tests run the binary, shells, man and setpriv (clippy.toml).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use proxier_testkit::Netns;

const SINGLE: &str = "clusters/single-stack.yaml";
const NODE_A: [&str; 4] = ["--node", "node-a", "--cluster-cidr", "10.244.0.0/16"];

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata")
}

fn proxier(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_proxier")).args(args).current_dir(testdata()).output().expect("run proxier")
}

fn proxier_stdin(args: &[&str], input: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_proxier"))
        .args(args)
        .current_dir(testdata())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run proxier");
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

fn ok(output: Output) -> String {
    assert!(output.status.success(), "exit {:?}: {}", output.status.code(), String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn with<'a>(head: &[&'a str], tail: &[&'a str]) -> Vec<&'a str> {
    head.iter().chain(tail).copied().collect()
}

#[test]
fn one_output_flag_with_the_old_spellings_as_aliases() {
    let render = ["render", "-f", SINGLE, "--node", "node-a"];
    assert_eq!(ok(proxier(&with(&render, &["-o", "nft"]))), ok(proxier(&with(&render, &["--format", "nft"]))));
    assert_eq!(ok(proxier(&with(&render, &["--output", "json"]))), ok(proxier(&render)));
    // A format that does not fit the command is a usage error listing those that do.
    let yaml = proxier(&with(&render, &["-o", "yaml"]));
    assert_eq!(yaml.status.code(), Some(2));
    assert!(stderr(&yaml).contains("[possible values: json, nft]"), "{}", stderr(&yaml));

    let trace = ["trace", "-f", SINGLE, "--node", "node-a", "--from", "node", "--to", "10.96.0.10:53/udp"];
    let json: serde_json::Value = serde_json::from_str(&ok(proxier(&with(&trace, &["-o", "json"])))).unwrap();
    assert_eq!((json["apiVersion"].as_str(), json["kind"].as_str()), (Some("proxier.dev/v1"), Some("Trace")));
    let yaml: serde_json::Value = serde_yaml_ng::from_str(&ok(proxier(&with(&trace, &["-o", "yaml"])))).unwrap();
    assert_eq!(yaml, json, "-o yaml is -o json's document");

    let explain = ["explain", "-f", SINGLE, "shop/web"];
    let json: serde_json::Value = serde_json::from_str(&ok(proxier(&with(&explain, &["--output", "json"])))).unwrap();
    assert_eq!((json["apiVersion"].as_str(), json["kind"].as_str()), (Some("proxier.dev/v1"), Some("Explanation")));
    let yaml: serde_json::Value = serde_yaml_ng::from_str(&ok(proxier(&with(&explain, &["-o", "yaml"])))).unwrap();
    assert_eq!(yaml, json);

    let generated = ok(proxier(&["gen", "--services", "3", "--endpoints", "1", "-o", "yaml"]));
    assert!(generated.starts_with("apiVersion: v1\n"), "{generated}");
    assert_eq!(generated, ok(proxier(&["gen", "--services", "3", "--endpoints", "1", "--format", "yaml"])));
}

#[test]
fn snapshots_come_from_stdin_and_services_are_named_as_in_kubectl() {
    let text = std::fs::read(testdata().join(SINGLE)).unwrap();
    let from_file = ok(proxier(&["explain", "--snapshot", SINGLE]));
    assert_eq!(ok(proxier_stdin(&["explain", "--snapshot", "-"], &text)), from_file);
    assert_eq!(ok(proxier_stdin(&["explain", "-f", "-", "-A"], &text)), from_file);
    let twice = proxier_stdin(&["explain", "-f", "-", "-f", "-"], &text);
    assert_eq!(twice.status.code(), Some(2));
    assert!(stderr(&twice).contains("stdin (-) can be read only once"), "{}", stderr(&twice));

    let one = ok(proxier(&["explain", "-f", SINGLE, "shop/web"]));
    assert!(one.starts_with("Service shop/web (NodePort)") && one.matches("Service ").count() == 1, "{one}");
    assert_eq!(ok(proxier(&["explain", "-f", SINGLE, "-n", "shop", "web"])), one);
    assert_eq!(ok(proxier(&["explain", "-n", "shop", "web", "-f", SINGLE])), one, "the Service before -f");
    assert_eq!(
        ok(proxier(&["explain", "-f", SINGLE, "kubernetes"])),
        ok(proxier(&["explain", "-f", SINGLE, "default/kubernetes"]))
    );
    let shop = ok(proxier(&["explain", "-f", SINGLE, "-n", "shop"]));
    let headers: Vec<&str> = shop.lines().filter(|l| l.starts_with("Service ")).collect();
    assert!(headers.len() >= 2 && headers.iter().all(|l| l.starts_with("Service shop/")), "{shop}");
    let across = proxier(&["explain", "-f", SINGLE, "-A", "web"]);
    assert_eq!(across.status.code(), Some(2));
    assert!(stderr(&across).contains("across all namespaces"), "{}", stderr(&across));
}

#[test]
fn address_flags_take_the_same_forms_everywhere_and_errors_name_the_bad_part() {
    let explain = ok(proxier(&["explain", "-f", SINGLE, "shop/web", "--nodeport-addresses", "primary"]));
    assert_eq!(explain, ok(proxier(&["explain", "-f", SINGLE, "shop/web"])));
    ok(proxier(&with(&["render", "-f", SINGLE], &with(&NODE_A, &["--nodeport-addresses", "primary"]))));

    let cases: &[(&[&str], &str)] = &[
        (&["--cluster-cidr", "10.244.0.0/33"], "prefix length \"33\" is not a number from 0 to 32 (IPv4)"),
        (&["--cluster-cidr", "fd00::/129"], "prefix length \"129\" is not a number from 0 to 128 (IPv6)"),
        (&["--cluster-cidr", "10.244.0.300/16"], "\"10.244.0.300\" is not an IPv4 or IPv6 address"),
        (&["--cluster-cidr", "10.244.0.0"], "expected ADDRESS/PREFIX-LENGTH"),
        (&["--service-cidr", "10.96.0.0/x"], "prefix length \"x\""),
        (&["--nodeport-addresses", "192.168.0.0/40"], "prefix length \"40\""),
        (&["--node-ip", "192.168.1"], "\"192.168.1\" is not an IPv4 or IPv6 address"),
    ];
    for (flags, expected) in cases {
        for command in ["render", "trace"] {
            let mut args = vec![command, "-f", SINGLE, "--node", "node-a"];
            if command == "trace" {
                args.extend(["--from", "node", "--to", "10.96.0.10:53/udp"]);
            }
            args.extend(*flags);
            let output = proxier(&args);
            assert_eq!(output.status.code(), Some(2), "{args:?}");
            assert!(stderr(&output).contains(expected), "{args:?}: {}", stderr(&output));
        }
    }
    let targets = [
        ("10.96.0.300:53/udp", "\"10.96.0.300\" is not an IPv4 or IPv6 address"),
        ("10.96.0.10:99999/udp", "port \"99999\" is not a number from 1 to 65535"),
        ("10.96.0.10:53/icmp", "\"icmp\": the protocol is tcp, udp or sctp"),
    ];
    for (target, expected) in targets {
        let output = proxier(&["trace", "-f", SINGLE, "--node", "node-a", "--from", "node", "--to", target]);
        assert_eq!(output.status.code(), Some(2), "{target}");
        assert!(stderr(&output).contains(expected), "{target}: {}", stderr(&output));
    }
    let explain = proxier(&["explain", "-f", SINGLE, "--nodeport-addresses", "10.0.0.0/99"]);
    assert!(stderr(&explain).contains("prefix length \"99\""), "{}", stderr(&explain));
}

/// `--nodeport-addresses` takes every form a configuration file's `nodePortAddresses` takes (`primary`,
/// CIDRs, `all`, `localhost`, `0.0.0.0/0`, `::/0`), on every command that has it, with one meaning:
/// `all` is `0.0.0.0/0,::/0`; a zero CIDR is every node address; `primary` beside a CIDR keeps the
/// primary address (`trace` and `explain` as `render`); `localhost` serves nothing and says so.
#[test]
fn nodeport_addresses_take_the_configuration_files_forms_on_every_command() {
    let render = |forms: &str| {
        let output = proxier(&with(&["render", "-f", SINGLE, "-o", "nft", "--nodeport-addresses", forms], &NODE_A));
        (ok_ref(&output), stderr(&output))
    };
    let node_port = "192.168.49.11 . tcp . 30080";
    let (default, _) = render("primary");
    let (all, _) = render("all");
    assert_eq!(all, render("0.0.0.0/0,::/0").0, "all is both zero CIDRs");
    assert_eq!(all, render("::/0,0.0.0.0/0,all").0);
    assert!(all.contains(node_port) && render("0.0.0.0/0").0.contains(node_port), "every node address");
    assert!(!render("::/0").0.contains(node_port), "::/0 is every IPv6 address only");
    let (localhost, warning) = render("localhost");
    assert_eq!(localhost, default, "localhost serves nothing: the default stays");
    assert!(warning.contains("--nodeport-addresses localhost: NodePorts are not served on loopback"), "{warning}");
    assert_eq!(render("localhost,all").0, all);

    let explain = |forms: &str| ok(proxier(&["explain", "-f", SINGLE, "shop/web", "--nodeport-addresses", forms]));
    assert_eq!(explain("all"), explain("0.0.0.0/0,::/0"));
    assert_eq!(explain("localhost"), explain("primary"));
    assert!(!explain("10.0.0.0/8").contains("192.168.49.11:30080"), "{}", explain("10.0.0.0/8"));
    assert!(explain("primary,10.0.0.0/8").contains("192.168.49.11:30080"), "primary beside a CIDR, as render");
    assert!(explain("all").contains("192.168.49.11:30080"));

    let trace = |forms: &str| {
        let to = ["--from", "203.0.113.7", "--to", "192.168.49.11:30080/tcp", "--nodeport-addresses", forms];
        ok(proxier(&with(&with(&["trace", "-f", SINGLE], &NODE_A), &to)))
    };
    assert_eq!(trace("all"), trace("0.0.0.0/0,::/0"));
    assert_eq!(trace("primary,10.0.0.0/8"), trace("primary"), "primary beside a CIDR, as render");
    assert_ne!(trace("10.0.0.0/8"), trace("primary"));
    assert_eq!(trace("localhost"), trace("primary"));

    // The bad part is named, with the forms there are, by every command and by the file.
    for command in [&["render"][..], &["trace", "--from", "node", "--to", "10.96.0.10:53/udp"], &["explain"]] {
        for (bad, expected) in [
            ("everywhere", "\"everywhere\" is not a CIDR"),
            ("all,10.0.0.0/99", "prefix length \"99\" is not a number from 0 to 32"),
            ("primary,10.0.0.x/8", "\"10.0.0.x\" is not an IPv4 or IPv6 address"),
        ] {
            let mut args = vec![command[0], "-f", SINGLE];
            if command[0] != "explain" {
                args.extend(["--node", "node-a"]);
            }
            args.extend(&command[1..]);
            args.extend(["--nodeport-addresses", bad]);
            let output = proxier(&args);
            assert_eq!(output.status.code(), Some(2), "{args:?}");
            assert!(stderr(&output).contains(expected), "{args:?}: {}", stderr(&output));
            assert!(stderr(&output).contains("`primary`, `all` or `localhost`") || !expected.contains("not a CIDR"));
        }
    }
    let file = std::env::temp_dir().join(format!("proxier-nodeport-{}.yaml", std::process::id()));
    std::fs::write(&file, "nodePortAddresses: [primary, everywhere]\n").unwrap();
    let output = proxier(&["run", "--node", "n", "--config", file.to_str().unwrap()]);
    std::fs::remove_file(&file).unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("nodePortAddresses: \"everywhere\" is not a CIDR"), "{}", stderr(&output));
    assert!(stderr(&output).contains("or `primary`, `all` or `localhost`"), "{}", stderr(&output));
    let output = proxier(&["run", "--node", "n", "--nodeport-addresses", "all,::/129"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("prefix length \"129\""), "{}", stderr(&output));

    // apply, diff and run take them too (in a scratch namespace: they program or read nftables).
    let Some(netns) = Netns::for_test("nodeport_addresses_take_the_configuration_files_forms_on_every_command") else {
        return;
    };
    let snapshot = testdata().join(SINGLE).display().to_string();
    let in_netns = |args: &[&str]| netns.exec(env!("CARGO_BIN_EXE_proxier"), args).unwrap();
    for forms in ["all", "0.0.0.0/0,::/0", "localhost,primary", "primary,192.168.0.0/16"] {
        let check = in_netns(&with(&["apply", "--check", "-f", &snapshot, "--nodeport-addresses", forms], &NODE_A));
        assert!(ok(check).starts_with("check passed"), "{forms}");
    }
    let diff = |forms: &str| {
        let output =
            in_netns(&with(&["diff", "-f", &snapshot, "--color=never", "--nodeport-addresses", forms], &NODE_A));
        assert_eq!(output.status.code(), Some(1), "{forms}: {}", stderr(&output));
        String::from_utf8(output.stdout).unwrap()
    };
    assert_eq!(diff("all"), diff("0.0.0.0/0,::/0"));
    assert!(diff("all").contains(node_port));
    let run = in_netns(&["run", "--init-only", "--node", "n", "--nodeport-addresses", "all,localhost"]);
    assert!(run.status.success(), "{}", stderr(&run));
    assert!(stderr(&run).contains("localhost ignored"), "{}", stderr(&run));
}

fn ok_ref(output: &Output) -> String {
    assert!(output.status.success(), "exit {:?}: {}", output.status.code(), stderr(output));
    String::from_utf8(output.stdout.clone()).unwrap()
}

#[test]
fn completions_are_generated_for_bash_zsh_and_fish() {
    for shell in ["bash", "zsh", "fish"] {
        let script = ok(proxier(&["completion", shell]));
        for word in ["render", "explain", "trace", "completion", "snapshot", "cluster-cidr"] {
            assert!(script.contains(word), "{shell} completion lacks {word}");
        }
    }
    // bash parses what it is given (zsh and fish are not installed on every machine; bash is).
    let script = ok(proxier(&["completion", "bash"]));
    let mut check = Command::new("bash").args(["-n"]).stdin(Stdio::piped()).spawn().expect("bash");
    check.stdin.take().unwrap().write_all(script.as_bytes()).unwrap();
    assert!(check.wait().unwrap().success(), "bash -n rejects the completion script");
    // And completes subcommands with it.
    let probe = format!(
        "{script}\nCOMP_WORDS=(proxier exp); COMP_CWORD=1; COMP_LINE='proxier exp'; COMP_POINT=11; _proxier proxier exp proxier; echo \"${{COMPREPLY[@]}}\""
    );
    let completed = Command::new("bash").args(["-c", &probe]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&completed.stdout).trim(), "explain");
    assert_eq!(proxier(&["completion", "powershell-not"]).status.code(), Some(2));
}

#[test]
fn the_man_page_is_generated_and_renders() {
    let page = ok(proxier(&["man"]));
    assert!(
        page.starts_with(".ie \\n(.g .ds Aq") || page.contains(".TH proxier 1"),
        "{}",
        &page[..200.min(page.len())]
    );
    assert!(page.contains(".TH proxier 1"), "a section-1 page named proxier");
    for command in ["render", "apply", "diff", "delete", "run", "gen", "trace", "explain", "completion", "version"] {
        assert!(page.contains(&format!("proxier\\-{command}")) || page.contains(command), "{command}");
        let sub = ok(proxier(&["man", command]));
        assert!(sub.contains(&format!(".TH proxier-{command} 1")), "{command}: {}", &sub[..200.min(sub.len())]);
    }
    assert!(page.contains("Exit status"), "the exit statuses are in the page");
    let unknown = proxier(&["man", "nope"]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(stderr(&unknown).contains("no command \"nope\""));
    // groff formats it without a warning.
    let mut groff = Command::new("groff")
        .args(["-man", "-Tutf8", "-ww", "-z"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("groff");
    groff.stdin.take().unwrap().write_all(page.as_bytes()).unwrap();
    let formatted = groff.wait_with_output().unwrap();
    assert!(
        formatted.status.success() && formatted.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&formatted.stderr)
    );
}

#[test]
fn every_help_has_examples_and_the_top_one_says_what_proxier_is() {
    let top = ok(proxier(&["--help"]));
    assert!(top.contains("Examples:") && top.contains("Exit status:"), "{top}");
    let words = top.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(words.contains("render, diff, apply, trace and explain"), "{top}");
    assert_eq!(top.matches("A Kubernetes service proxy on nftables").count(), 1, "{top}");
    let commands =
        ["render", "apply", "diff", "delete", "run", "gen", "trace", "explain", "completion", "man", "version"];
    for command in commands {
        let help = ok(proxier(&[command, "--help"]));
        let examples = help.split("Examples:").nth(1).unwrap_or_else(|| panic!("{command} --help has no examples"));
        assert!(examples.contains(&format!("proxier {command}")), "{command}: {examples}");
    }
}

#[test]
fn version_names_the_commit_build_date_compiler_and_nft() {
    let text = ok(proxier(&["version"]));
    assert!(text.starts_with(&format!("proxier {}\n", env!("CARGO_PKG_VERSION"))), "{text}");
    let json: serde_json::Value = serde_json::from_str(&ok(proxier(&["version", "-o", "json"]))).unwrap();
    assert_eq!(json["kind"], "Version");
    assert_eq!(json["version"], env!("CARGO_PKG_VERSION"));
    let commit = json["commit"].as_str().unwrap();
    assert!(
        commit == "unknown" || commit.trim_end_matches("-dirty").chars().all(|c| c.is_ascii_hexdigit()),
        "{commit}"
    );
    let date = json["buildDate"].as_str().unwrap();
    assert!(date.len() == 10 && date.as_bytes()[4] == b'-' && date.starts_with("20"), "{date}");
    assert!(json["rustc"].as_str().unwrap().starts_with("rustc "), "{json}");
    let nft = Command::new("nft").arg("--version").output();
    match nft {
        Ok(nft) if nft.status.success() => {
            assert_eq!(json["nft"].as_str(), Some(String::from_utf8_lossy(&nft.stdout).trim()));
        }
        _ => assert!(json["nft"].is_null()),
    }
    let missing: serde_json::Value =
        serde_json::from_str(&ok(proxier(&["version", "-o", "json", "--nft", "/nonexistent/nft"]))).unwrap();
    assert!(missing["nft"].is_null());
    assert!(ok(proxier(&["version", "--nft", "/nonexistent/nft"])).contains("nft:    not found"));
    let long = ok(proxier(&["--version"]));
    assert!(long.contains("commit: ") && long.contains("rustc:  rustc "), "{long}");
}

#[test]
fn repeated_notes_are_summarised_and_all_printed_with_verbose() {
    let snapshot = ok(proxier(&["gen", "--services", "40", "--endpoints", "1", "--mix", "headless=1"]));
    let quiet = proxier_stdin(&["render", "-f", "-", "--node", "node-1"], snapshot.as_bytes());
    let quiet_err = stderr(&quiet);
    assert!(quiet.status.success(), "{quiet_err}");
    let lines: Vec<&str> = quiet_err.lines().collect();
    assert_eq!(lines.len(), 4, "{quiet_err}");
    assert!(lines[..3].iter().all(|l| l.contains("is headless")), "{quiet_err}");
    assert_eq!(lines[3], "proxier: note: … and 37 more headless Services (-v prints every one)");
    let loud = proxier_stdin(&["render", "-f", "-", "--node", "node-1", "-v"], snapshot.as_bytes());
    assert_eq!(stderr(&loud).lines().filter(|l| l.contains("is headless")).count(), 40);
    assert_eq!(loud.stdout, quiet.stdout);
}

#[test]
fn apply_check_says_what_it_checked() {
    let Some(netns) = Netns::for_test("apply_check_says_what_it_checked") else { return };
    let output = netns
        .exec(
            env!("CARGO_BIN_EXE_proxier"),
            with(&["apply", "--check", "-f", &testdata().join(SINGLE).display().to_string()], &NODE_A),
        )
        .unwrap();
    let text = ok(output);
    assert!(text.starts_with("check passed: the kernel accepts the rules for node node-a ("), "{text}");
    assert!(text.contains("table ip proxier: ") && text.trim_end().ends_with("nothing was changed"), "{text}");
    assert_eq!(netns.nft_args(&["list", "tables"], None).unwrap().trim(), "", "--check changed nothing");
}

/// The desired side of a diff against an empty kernel: the `+` lines without their `+`.
fn desired_side(diff: &str) -> String {
    diff.lines()
        .filter(|l| !l.starts_with("+++") && !l.starts_with("---") && !l.starts_with("@@"))
        .map(|l| format!("{}\n", l.strip_prefix('+').unwrap_or(l)))
        .collect()
}

#[test]
fn diff_prints_valid_nft_in_address_order_coloured_on_request() {
    let Some(netns) = Netns::for_test("diff_prints_valid_nft_in_address_order_coloured_on_request") else { return };
    let snapshot = testdata().join(SINGLE).display().to_string();
    let diff = |extra: &[&str], env: &[(&str, &str)]| {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", netns.name(), env!("CARGO_BIN_EXE_proxier"), "diff", "-f", &snapshot]);
        command.args(NODE_A).args(extra);
        for (key, value) in env {
            command.env(key, value);
        }
        command.output().unwrap()
    };
    let plain = diff(&[], &[]);
    assert_eq!(plain.status.code(), Some(1), "{}", stderr(&plain));
    let plain = String::from_utf8(plain.stdout).unwrap();
    assert!(!plain.contains('\x1b'), "no colour off a terminal");
    let table = desired_side(&plain);
    assert!(table.starts_with("table ip proxier {\n") && table.ends_with("}\n"), "{table}");
    // The desired side is nft text that nft reads back (checked in the test's namespace, loading nothing).
    netns.nft_args(&["-c", "-f", "-"], Some(&table)).unwrap_or_else(|e| panic!("{e}\n{table}"));
    // Elements in address order, not string order.
    let small = table.find("10.96.77.5 . sctp").expect("sigtran's ClusterIP");
    let large = table.find("10.96.201.14 . tcp").expect("legacy-db's ClusterIP");
    assert!(small < large, "10.96.77.5 sorts before 10.96.201.14");

    let always = String::from_utf8(diff(&["--color=always"], &[]).stdout).unwrap();
    assert!(always.contains("\x1b[32m+table ip proxier {\x1b[m"), "{always}");
    let stripped = always
        .replace("\x1b[1m", "")
        .replace("\x1b[36m", "")
        .replace("\x1b[32m", "")
        .replace("\x1b[31m", "")
        .replace("\x1b[m", "");
    assert_eq!(stripped, plain);
    assert_eq!(String::from_utf8(diff(&["--color=never"], &[]).stdout).unwrap(), plain);
    assert_eq!(String::from_utf8(diff(&["--color=auto"], &[("NO_COLOR", "1")]).stdout).unwrap(), plain);
    assert_eq!(String::from_utf8(diff(&["--color"], &[]).stdout).unwrap(), always, "--color alone is always");
}

#[test]
fn diff_without_root_says_what_it_needs() {
    if !proxier_testkit::netns_available("diff_without_root_says_what_it_needs") {
        return;
    }
    // As nobody, with no capabilities: the scratch namespace cannot be made.
    let output = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "--"])
        .arg(env!("CARGO_BIN_EXE_proxier"))
        .args(with(&["diff", "-f", &testdata().join(SINGLE).display().to_string()], &NODE_A))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(3));
    let message = stderr(&output);
    assert!(message.contains("diff needs root (CAP_SYS_ADMIN for a scratch network namespace"), "{message}");
    assert!(message.contains("proxier render -o nft"), "{message}");
    assert_eq!(message.lines().filter(|l| !l.contains(": note: ")).count(), 1, "one line: {message}");
}

/// A node whose addresses are unknown (not in the snapshot, no `--node-ip`) cannot serve NodePorts: said
/// when a Service has a nodePort, and not at all when none has, where it would only be noise.
#[test]
fn a_node_missing_from_the_snapshot_is_warned_about_only_when_nodeports_need_it() {
    let cluster_ip = "apiVersion: v1\nkind: Service\nmetadata: {name: api, namespace: shop}\nspec: {clusterIP: \
                      10.96.0.20, ports: [{port: 80}]}\n";
    let node_port = "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\nspec: {type: NodePort, \
                     clusterIP: 10.96.0.21, ports: [{port: 80, nodePort: 30080}]}\n";
    let render = |text: &str| {
        let output = proxier_stdin(&["render", "-f", "-", "--node", "elsewhere", "-o", "nft"], text.as_bytes());
        assert!(output.status.success(), "{}", stderr(&output));
        stderr(&output)
    };
    let warning = "Node elsewhere: not in the snapshot and no node IP configured: NodePorts are not programmed";
    let quiet = render(cluster_ip);
    assert!(!quiet.contains("NodePorts"), "{quiet}");
    let loud = render(&format!("{cluster_ip}---\n{node_port}"));
    assert!(loud.contains(warning), "{loud}");
}

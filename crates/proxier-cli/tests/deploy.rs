//! deploy/: every manifest parses and says what proxier needs, and no more: the RBAC verbs, the
//! container's privileges, probes on the ports `proxier run` serves, and arguments `proxier run --help`
//! knows. The capability set is also proven in the kernel: `proxier apply` succeeds with exactly the
//! DaemonSet's capabilities and fails without them.

#![allow(clippy::disallowed_methods)] // Tests run the binary and ip/nft (clippy.toml).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize as _;
use serde_json::Value;

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

/// Every document of every deploy/*.yaml, by kind.
fn manifests() -> BTreeMap<String, Vec<Value>> {
    let mut by_kind: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(deploy())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for document in serde_yaml_ng::Deserializer::from_str(&text) {
            let value = Value::deserialize(document).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            let kind = value["kind"].as_str().unwrap_or_else(|| panic!("{}: no kind", file.display())).to_owned();
            assert!(value["apiVersion"].is_string(), "{}: {kind} has no apiVersion", file.display());
            by_kind.entry(kind).or_default().push(value);
        }
    }
    by_kind
}

fn one<'a>(manifests: &'a BTreeMap<String, Vec<Value>>, kind: &str) -> &'a Value {
    let items = manifests.get(kind).unwrap_or_else(|| panic!("no {kind}"));
    assert_eq!(items.len(), 1, "one {kind}");
    &items[0]
}

fn strings(value: &Value) -> Vec<String> {
    value.as_array().into_iter().flatten().map(|v| v.as_str().unwrap().to_owned()).collect()
}

fn container(manifests: &BTreeMap<String, Vec<Value>>) -> &Value {
    let containers = &one(manifests, "DaemonSet")["spec"]["template"]["spec"]["containers"];
    assert_eq!(containers.as_array().unwrap().len(), 1);
    &containers[0]
}

#[test]
fn the_manifests_are_the_expected_kinds_and_kustomize_lists_them_all() {
    let manifests = manifests();
    let kinds: BTreeSet<&str> = manifests.keys().map(String::as_str).collect();
    assert_eq!(
        kinds,
        BTreeSet::from([
            "ClusterRole",
            "ClusterRoleBinding",
            "ConfigMap",
            "DaemonSet",
            "Kustomization",
            "ServiceAccount"
        ])
    );
    let listed: BTreeSet<String> = strings(&one(&manifests, "Kustomization")["resources"]).into_iter().collect();
    // kube-proxy's ConfigMap is applied by hand where kubeadm did not create one: `apply -k` must never
    // replace the cluster's own.
    let files: BTreeSet<String> = std::fs::read_dir(deploy())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml") && n != "kustomization.yaml" && n != "kube-proxy-configmap.yaml")
        .collect();
    assert_eq!(listed, files);
    assert!(deploy().join("kube-proxy-configmap.yaml").exists());
    // The image's build context is the repository root: its ignore file and the licence live there.
    let root = deploy().join("..");
    assert!(std::fs::read_to_string(root.join(".containerignore")).unwrap().lines().any(|l| l == "target/"));
    assert!(std::fs::read_to_string(root.join("LICENSE")).unwrap().contains("Apache License"));
    let cargo = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    assert!(cargo.contains("license = \"Apache-2.0\""), "the declared licence is the LICENSE file's");
}

#[test]
fn rbac_grants_exactly_what_the_watchers_use() {
    let manifests = manifests();
    let role = one(&manifests, "ClusterRole");
    let mut rules: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for rule in role["rules"].as_array().unwrap() {
        for group in strings(&rule["apiGroups"]) {
            for resource in strings(&rule["resources"]) {
                rules.entry((group.clone(), resource)).or_default().extend(strings(&rule["verbs"]));
            }
        }
    }
    let expected: BTreeMap<(String, String), BTreeSet<String>> = [
        (("", "services"), &["list", "watch"][..]),
        (("discovery.k8s.io", "endpointslices"), &["list", "watch"][..]),
        (("", "nodes"), &["get", "list", "watch"][..]),
    ]
    .into_iter()
    .map(|((g, r), verbs)| ((g.to_owned(), r.to_owned()), verbs.iter().map(|v| v.to_string()).collect()))
    .collect();
    assert_eq!(rules, expected);

    let account = one(&manifests, "ServiceAccount");
    let binding = one(&manifests, "ClusterRoleBinding");
    assert_eq!(binding["roleRef"]["kind"], "ClusterRole");
    assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
    assert_eq!(binding["subjects"][0]["kind"], "ServiceAccount");
    assert_eq!(binding["subjects"][0]["name"], account["metadata"]["name"]);
    assert_eq!(binding["subjects"][0]["namespace"], account["metadata"]["namespace"]);
    let pod = &one(&manifests, "DaemonSet")["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], account["metadata"]["name"]);
}

#[test]
fn the_daemon_set_runs_on_every_node_with_only_net_admin() {
    let manifests = manifests();
    let daemon_set = one(&manifests, "DaemonSet");
    let pod = &daemon_set["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(pod["priorityClassName"], "system-node-critical");
    let tolerations = pod["tolerations"].as_array().unwrap();
    assert!(tolerations.iter().any(|t| t["operator"] == "Exists" && t.get("key").is_none()), "tolerates every taint");
    assert_eq!(
        daemon_set["spec"]["selector"]["matchLabels"], daemon_set["spec"]["template"]["metadata"]["labels"],
        "the selector matches the pods"
    );

    let container = container(&manifests);
    let security = &container["securityContext"];
    assert_eq!(security["privileged"], false);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(strings(&security["capabilities"]["drop"]), ["ALL"]);
    assert_eq!(strings(&security["capabilities"]["add"]), ["NET_ADMIN", "SYS_ADMIN"]);

    // nftables needs no xtables lock; nothing from the host's filesystem is mounted.
    for volume in pod["volumes"].as_array().unwrap() {
        assert!(volume.get("hostPath").is_none(), "host path volume {volume}");
    }
    for mount in container["volumeMounts"].as_array().unwrap() {
        assert!(!mount["mountPath"].as_str().unwrap().contains("xtables"), "{mount}");
    }

    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/livez");
    assert_eq!(container["livenessProbe"]["httpGet"]["port"], 10256);
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["port"], 10256);
}

#[test]
fn the_arguments_and_the_config_file_are_ones_proxier_run_accepts() {
    let manifests = manifests();
    let container = container(&manifests);
    let args = strings(&container["args"]);
    assert_eq!(args[0], "run");
    let help = Command::new(env!("CARGO_BIN_EXE_proxier")).args(["run", "--help"]).output().unwrap();
    assert!(help.status.success());
    let help = String::from_utf8(help.stdout).unwrap();
    for arg in &args[1..] {
        let flag = arg.split('=').next().unwrap();
        assert!(flag.starts_with("--"), "{arg}");
        assert!(help.contains(&format!("{flag} ")), "{flag} is not a flag of `proxier run`:\n{help}");
    }
    // kube-proxy's DaemonSet spelling: the Node name through --hostname-override.
    assert!(args.iter().any(|a| a == "--hostname-override=$(NODE_NAME)"), "{args:?}");
    let env: Vec<String> =
        container["env"].as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap().to_owned()).collect();
    assert!(env.contains(&"NODE_NAME".to_owned()));
    // The header says what the container asks for: NET_ADMIN and SYS_ADMIN, not privileged.
    let header = std::fs::read_to_string(deploy().join("daemonset.yaml")).unwrap();
    let header: String = header.lines().take_while(|l| l.starts_with('#')).collect::<Vec<_>>().join("\n");
    assert!(header.contains("NET_ADMIN") && header.contains("SYS_ADMIN"), "{header}");
    assert!(!header.contains("no SYS_ADMIN"), "{header}");

    // The initContainer tunes conntrack with the same file and exits.
    let pod = &one(&manifests, "DaemonSet")["spec"]["template"]["spec"];
    let init = &pod["initContainers"][0];
    let init_args = strings(&init["args"]);
    assert_eq!(init_args[..2], ["run", "--init-only"]);
    assert!(init_args.iter().any(|a| a.starts_with("--config=")));
    for arg in &init_args[1..] {
        let flag = arg.split('=').next().unwrap();
        // A flag without a value ends its help line.
        let known = help.contains(&format!("{flag} ")) || help.contains(&format!("{flag}\n"));
        assert!(known, "{flag} is not a flag of `proxier run`");
    }
    assert_eq!(init["image"], container["image"]);

    // The ConfigMap holds the file --config names, with only fields `proxier run` reads.
    let config_arg = args.iter().find_map(|a| a.strip_prefix("--config=")).unwrap();
    let mount = container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| config_arg.starts_with(m["mountPath"].as_str().unwrap()))
        .unwrap();
    let file = Path::new(config_arg).strip_prefix(mount["mountPath"].as_str().unwrap()).unwrap();
    let pod = &one(&manifests, "DaemonSet")["spec"]["template"]["spec"];
    let volume = pod["volumes"].as_array().unwrap().iter().find(|v| v["name"] == mount["name"]).unwrap();
    assert_eq!(volume["configMap"]["name"], "kube-proxy", "kube-proxy's own ConfigMap");
    let text = std::fs::read_to_string(deploy().join("kube-proxy-configmap.yaml")).unwrap();
    let config_map: Value = serde_yaml_ng::from_str(&text).unwrap();
    assert_eq!(config_map["metadata"]["name"], "kube-proxy");
    let text = config_map["data"][file.to_str().unwrap()].as_str().expect("the ConfigMap holds the --config file");
    let config: Value = serde_yaml_ng::from_str(text).unwrap();
    assert_eq!(config["kind"], "KubeProxyConfiguration");
    assert_eq!(config["mode"], "nftables");
    let supported = [
        "apiVersion",
        "kind",
        "mode",
        "clusterCIDR",
        "nodePortAddresses",
        "healthzBindAddress",
        "metricsBindAddress",
        "nftables",
        "conntrack",
        "clientConnection",
    ];
    for key in config.as_object().unwrap().keys() {
        assert!(supported.contains(&key.as_str()), "{key} is not read by `proxier run --config`");
    }
    let port = config["healthzBindAddress"].as_str().unwrap().rsplit(':').next().unwrap();
    assert_eq!(port, "10256", "the probes' port");
    // The kubeconfig the file names is the ConfigMap's other key, mounted beside it.
    let kubeconfig = config["clientConnection"]["kubeconfig"].as_str().unwrap();
    let key = Path::new(kubeconfig).strip_prefix(mount["mountPath"].as_str().unwrap()).unwrap();
    assert!(config_map["data"][key.to_str().unwrap()].as_str().is_some_and(|k| k.contains("tokenFile")));
}

#[test]
fn the_containerfile_builds_proxier_and_ships_nft_and_conntrack() {
    let text = std::fs::read_to_string(deploy().join("Containerfile")).unwrap();
    let stages: Vec<&str> = text.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert_eq!(stages.len(), 2, "a build stage and a small runtime stage");
    assert!(stages[0].ends_with(" AS build"));
    assert!(stages[1].contains("-slim"));
    assert!(text.contains("cargo build --release --locked -p proxier-cli"));
    let runtime = text.split(stages[1]).nth(1).unwrap();
    assert!(runtime.contains("nftables") && runtime.contains("conntrack"));
    assert!(runtime.contains("COPY --from=build /proxier /usr/local/bin/proxier"));
    let manifests = manifests();
    assert_eq!(strings(&container(&manifests)["command"]), ["/usr/local/bin/proxier"]);
}

/// Runs `proxier COMMAND` in a fresh network namespace with only `capabilities` (setpriv's bounding set).
fn proxier_with(command: &str, capabilities: &[String]) -> std::process::Output {
    let bounding = std::iter::once("-all".to_owned())
        .chain(capabilities.iter().map(|c| format!("+{}", c.to_ascii_lowercase())))
        .collect::<Vec<_>>()
        .join(",");
    let snapshot = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/clusters/single-stack.yaml");
    Command::new("unshare")
        .args(["--net", "setpriv", &format!("--bounding-set={bounding}"), "--inh-caps=-all", "--"])
        .arg(env!("CARGO_BIN_EXE_proxier"))
        .args([command, "--node", "node-a", "--cluster-cidr", "10.244.0.0/16", "--snapshot"])
        .arg(snapshot)
        .output()
        .expect("run unshare")
}

#[test]
fn the_daemon_sets_capabilities_are_enough_and_needed() {
    if !proxier_testkit::netns_available("the_daemon_sets_capabilities_are_enough_and_needed") {
        return;
    }
    let manifests = manifests();
    let added = strings(&container(&manifests)["securityContext"]["capabilities"]["add"]);
    let with = proxier_with("apply", &added);
    assert!(with.status.success(), "with {added:?}: {}", String::from_utf8_lossy(&with.stderr));
    let without = proxier_with("apply", &[]);
    assert_eq!(without.status.code(), Some(3), "{}", String::from_utf8_lossy(&without.stderr));
    assert!(String::from_utf8_lossy(&without.stderr).contains("Operation not permitted"));
    // The drift check (as `diff`) compares in a scratch network namespace: SYS_ADMIN is needed for it.
    let compared = proxier_with("diff", &added);
    assert_eq!(compared.status.code(), Some(1), "with {added:?}: {}", String::from_utf8_lossy(&compared.stderr));
    let net_admin_only = proxier_with("diff", &["NET_ADMIN".to_owned()]);
    assert_eq!(net_admin_only.status.code(), Some(3), "{}", String::from_utf8_lossy(&net_admin_only.stderr));
}

//! Real cluster dumps from public repositories (testdata/real/README.md says where each comes from):
//! rendered by the real binary, pinned with insta (rules and messages), loaded into the kernel in a
//! network namespace of their own, and checked against the objects themselves: every ClusterIP port of
//! every Service is programmed, and every ready endpoint address of such a Service is a DNAT target
//! (a backend map's value).
//! The check reads the dumps with serde alone, not with proxier's reader.

#![allow(clippy::disallowed_methods)] // Tests run the binary and ip/nft (clippy.toml).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use proxier_testkit::{Netns, netns_available};
use serde_json::Value;

/// Each case: a name, the paths under testdata/real, the node, and its pod ranges.
const CASES: &[(&str, &[&str], &str, &str)] = &[
    ("k3s-support-bundle", &["k3s-support-bundle"], "c9b7eea91", "10.42.0.0/16"),
    ("apiserver-lists-2020", &["apiserver-lists-2020"], "m01", "10.244.0.0/16"),
    ("gke-service-minikube-node", &["gke-service.json", "minikube-node.json"], "minikube", "10.244.0.0/16"),
    (
        "openshift-node-website-service",
        &["openshift-node-anonymized.json", "website-service-2019.yaml"],
        "ci-ln-3z9y7mt-f76d1-69jcr-worker-b-q6vs9",
        "10.128.0.0/14",
    ),
];

fn real() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/real")
}

/// Runs proxier with testdata/real as the working directory, so that file names in messages are stable.
fn render(paths: &[&str], node: &str, cidr: &str, format: &str) -> Output {
    let mut args = vec!["render"];
    for path in paths {
        args.extend(["--snapshot", path]);
    }
    args.extend(["--node", node, "--cluster-cidr", cidr, "--format", format]);
    Command::new(env!("CARGO_BIN_EXE_proxier")).args(&args).current_dir(real()).output().expect("run proxier")
}

/// Every file of a case (directories read recursively, `*.json`, `*.yaml`), sorted.
fn files(path: &Path) -> Vec<PathBuf> {
    if path.is_file() {
        return vec![path.to_owned()];
    }
    let mut out: Vec<PathBuf> = std::fs::read_dir(path).unwrap().flat_map(|e| files(&e.unwrap().path())).collect();
    out.sort();
    out
}

/// Every object of a file, Lists flattened; items of typed Lists (`ServiceList`) get the List's kind and
/// apiVersion.
fn objects(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    let document: Value = if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(&text).unwrap()
    } else {
        serde_yaml_ng::from_str(&text).unwrap()
    };
    let kind = document["kind"].as_str().unwrap_or_default().to_owned();
    match document.get("items") {
        Some(items) if kind.ends_with("List") => items
            .as_array()
            .into_iter()
            .flatten()
            .map(|item| {
                let mut item = item.clone();
                if item.get("kind").is_none() {
                    item["kind"] = Value::String(kind.trim_end_matches("List").to_owned());
                    item["apiVersion"] = document["apiVersion"].clone();
                }
                item
            })
            .collect(),
        _ => vec![document],
    }
}

/// What the objects say must be programmed: `ip . proto . port` per ClusterIP port, and the ready endpoint
/// addresses of those Services.
fn expected(paths: &[&str]) -> (Vec<String>, Vec<String>) {
    let all: Vec<Value> = paths.iter().flat_map(|p| files(&real().join(p))).flat_map(|f| objects(&f)).collect();
    let mut destinations = Vec::new();
    let mut proxied = Vec::new();
    for service in all.iter().filter(|o| o["kind"] == "Service" && o["apiVersion"] == "v1") {
        let spec = &service["spec"];
        let ip = spec["clusterIP"].as_str().unwrap_or("None");
        if ip == "None" || ip.is_empty() || spec["type"] == "ExternalName" {
            continue;
        }
        let namespace = service["metadata"]["namespace"].as_str().unwrap_or("default");
        proxied.push((namespace.to_owned(), service["metadata"]["name"].as_str().unwrap().to_owned()));
        for port in spec["ports"].as_array().into_iter().flatten() {
            let protocol = port["protocol"].as_str().unwrap_or("TCP").to_lowercase();
            destinations.push(format!("{ip} . {protocol} . {}", port["port"]));
        }
    }
    let mut backends = Vec::new();
    for slice in all.iter().filter(|o| o["kind"] == "EndpointSlice") {
        let namespace = slice["metadata"]["namespace"].as_str().unwrap_or("default").to_owned();
        let service = slice["metadata"]["labels"]["kubernetes.io/service-name"].as_str().unwrap_or_default();
        if !proxied.contains(&(namespace, service.to_owned())) || slice["ports"].as_array().is_none_or(Vec::is_empty) {
            continue;
        }
        for endpoint in slice["endpoints"].as_array().into_iter().flatten() {
            if endpoint["conditions"]["ready"] != Value::Bool(false) {
                backends
                    .extend(endpoint["addresses"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_owned()));
            }
        }
    }
    (destinations, backends)
}

fn settings() -> insta::Settings {
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path(real().join("../snapshots"));
    settings.set_prepend_module_to_snapshot(false);
    settings
}

/// The rules (nft text), the messages, and `explain`'s answer for each dump.
#[test]
fn real_dumps_render_as_pinned() {
    let settings = settings();
    for (name, paths, node, cidr) in CASES {
        let text = render(paths, node, cidr, "nft");
        assert!(text.status.success(), "{name}: {}", String::from_utf8_lossy(&text.stderr));
        let rules = String::from_utf8(text.stdout).unwrap();
        let report = String::from_utf8(text.stderr).unwrap();
        settings.bind(|| insta::assert_snapshot!(format!("real-{name}-nft"), rules));
        settings.bind(|| insta::assert_snapshot!(format!("real-{name}-report"), report));

        let mut args = vec!["explain"];
        for path in *paths {
            args.extend(["--snapshot", path]);
        }
        let explain = Command::new(env!("CARGO_BIN_EXE_proxier")).args(&args).current_dir(real()).output().unwrap();
        assert!(explain.status.success(), "{name}: {}", String::from_utf8_lossy(&explain.stderr));
        let explanation = String::from_utf8(explain.stdout).unwrap();
        settings.bind(|| insta::assert_snapshot!(format!("real-{name}-explain"), explanation));
    }
}

#[test]
fn real_dumps_load_into_the_kernel_and_program_what_the_objects_say() {
    if !netns_available("real_dumps_load_into_the_kernel_and_program_what_the_objects_say") {
        return;
    }
    for (name, paths, node, cidr) in CASES {
        let json = render(paths, node, cidr, "json");
        assert!(json.status.success(), "{name}: {}", String::from_utf8_lossy(&json.stderr));
        let ns = Netns::new("real").unwrap();
        let path = std::env::temp_dir().join(format!("proxier-real-{}-{name}.json", std::process::id()));
        std::fs::write(&path, &json.stdout).unwrap();
        let loaded = ns.exec("nft", ["-j", "-f", &path.display().to_string()]).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(loaded.status.success(), "{name}: {}", String::from_utf8_lossy(&loaded.stderr));
        let listing = ns.exec("nft", ["list", "ruleset"]).unwrap();
        let listing = String::from_utf8(listing.stdout).unwrap();

        let (destinations, backends) = expected(paths);
        assert!(!destinations.is_empty(), "{name}: the dump has Services");
        for destination in &destinations {
            assert!(listing.contains(destination), "{name}: {destination} not programmed:\n{listing}");
        }
        for backend in &backends {
            // A DNAT target is either written in a rule or the value of a backend map element.
            let target = listing.contains(&format!("dnat to {backend}")) || listing.contains(&format!(" : {backend}"));
            assert!(target, "{name}: endpoint {backend} not a DNAT target:\n{listing}");
        }
        eprintln!("{name}: {} destinations, {} endpoints checked in the kernel", destinations.len(), backends.len());
    }
}

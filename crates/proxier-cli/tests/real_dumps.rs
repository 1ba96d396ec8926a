//! Real cluster dumps from public repositories (testdata/real/README.md says where each comes from):
//! rendered by the real binary, pinned with insta (rules and messages), loaded into the kernel in a
//! network namespace of their own, and checked against the objects themselves: every ClusterIP port of
//! every Service is programmed (and every nodePort, on the node's addresses, when the dump has the
//! Node), and every ready endpoint address of such a Service is a DNAT target (a backend map's value);
//! without a ready endpoint, every serving one that is terminating is. Endpoints come from the Service's
//! `discovery.k8s.io/v1` EndpointSlices or, for a Service without one, from its legacy `v1` Endpoints,
//! as proxier documents.
//! The check reads the dumps with serde alone, not with proxier's reader.

#![allow(clippy::disallowed_methods)] // Tests run the binary and ip/nft (clippy.toml).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use proxier_testkit::{Netns, netns_available};
use serde_json::Value;

/// One dump and the node it is rendered for.
struct Case {
    /// The name of its snapshots.
    name: &'static str,
    /// Its files and directories under testdata/real.
    paths: &'static [&'static str],
    /// The node, and its pod ranges.
    node: &'static str,
    cidr: &'static str,
    /// The node's address (`--node-ip`) when the dump has no Node objects but shows it elsewhere (a
    /// Pod's `hostIP`).
    node_ip: Option<&'static str>,
    /// How many Services with a ClusterIP the objects hold (counted by reading the files): guards the
    /// check against a reader that finds nothing. Dumps of only headless Services, Pods or Endpoints
    /// hold none.
    proxied: usize,
}

const CASES: &[Case] = &[
    Case {
        name: "k3s-support-bundle",
        paths: &["k3s-support-bundle"],
        node: "c9b7eea91",
        cidr: "10.42.0.0/16",
        node_ip: None,
        proxied: 7,
    },
    Case {
        name: "apiserver-lists-2020",
        paths: &["apiserver-lists-2020"],
        node: "m01",
        cidr: "10.244.0.0/16",
        node_ip: None,
        proxied: 1,
    },
    Case {
        name: "gke-service-minikube-node",
        paths: &["gke-service.json", "minikube-node.json"],
        node: "minikube",
        cidr: "10.244.0.0/16",
        node_ip: None,
        proxied: 1,
    },
    Case {
        name: "openshift-node-website-service",
        paths: &["openshift-node-anonymized.json", "website-service-2019.yaml"],
        node: "ci-ln-3z9y7mt-f76d1-69jcr-worker-b-q6vs9",
        cidr: "10.128.0.0/14",
        node_ip: None,
        proxied: 1,
    },
    Case {
        name: "cilium-kind-dual-stack-1.27",
        paths: &["cilium-kind-dual-stack-1.27"],
        node: "dual-stack-worker",
        cidr: "10.244.0.0/16,fd00:10:244::/56",
        node_ip: None,
        proxied: 2,
    },
    Case {
        name: "cilium-kind-dual-stack-1.20",
        paths: &["cilium-kind-dual-stack-1.20.yaml"],
        node: "dual-stack-worker",
        cidr: "10.244.0.0/16,fd00:10:244::/56",
        node_ip: None,
        proxied: 2,
    },
    Case {
        name: "cilium-kind-graceful-termination",
        paths: &["cilium-kind-graceful-termination.yaml"],
        node: "graceful-term-control-plane",
        cidr: "10.244.0.0/16",
        node_ip: None,
        proxied: 1,
    },
    Case {
        name: "cilium-kind-nodeport-1.26",
        paths: &["cilium-kind-nodeport-1.26.yaml"],
        node: "nodeport-worker",
        cidr: "10.244.0.0/16",
        node_ip: Some("172.18.0.3"),
        proxied: 2,
    },
    Case {
        name: "openshift-3-oc-get",
        paths: &["openshift-3-oc-get"],
        node: "node1.ose.com",
        cidr: "10.1.0.0/16",
        node_ip: None,
        proxied: 2,
    },
    Case {
        name: "openshift-3.5-endpoints",
        paths: &["openshift-3.5-endpoints.yaml"],
        node: "node1.ose35.com",
        cidr: "10.128.0.0/14",
        node_ip: None,
        proxied: 0,
    },
    Case {
        name: "openshift-4.8-must-gather",
        paths: &["openshift-4.8-must-gather"],
        node: "ip-10-0-187-218.ec2.internal",
        cidr: "10.128.0.0/14",
        node_ip: None,
        proxied: 0,
    },
    Case {
        name: "kubectl-neat",
        paths: &["kubectl-neat"],
        node: "116-control-plane",
        cidr: "10.244.0.0/16",
        node_ip: None,
        proxied: 0,
    },
];

fn real() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/real")
}

/// Runs proxier with testdata/real as the working directory, so that file names in messages are stable.
fn render(case: &Case, format: &str) -> Output {
    let mut args = vec!["render"];
    for path in case.paths {
        args.extend(["--snapshot", path]);
    }
    args.extend(["--node", case.node, "--cluster-cidr", case.cidr, "--format", format]);
    if let Some(ip) = case.node_ip {
        args.extend(["--node-ip", ip]);
    }
    Command::new(env!("CARGO_BIN_EXE_proxier")).args(&args).current_dir(real()).output().expect("run proxier")
}

/// Every snapshot file of a case (directories read recursively, `*.json`, `*.yaml`; a must-gather's
/// logs are not snapshot files), sorted.
fn files(path: &Path) -> Vec<PathBuf> {
    if path.is_file() {
        let snapshot = path.extension().is_some_and(|e| e == "json" || e == "yaml");
        return if snapshot { vec![path.to_owned()] } else { Vec::new() };
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

/// What the objects say must be programmed: `ip . proto . port` per ClusterIP (every family) and port, and
/// per InternalIP of the case's node (or its `--node-ip` when the dump has no Node) and nodePort; the
/// ready endpoint addresses of
/// those Services (the serving, terminating ones for a Service without a ready one); and how many such
/// Services there are.
fn expected(case: &Case) -> (Vec<String>, Vec<String>, usize) {
    let Case { paths, node, .. } = case;
    let mut all: Vec<Value> = Vec::new();
    // An object seen twice (a dump taken before and one after a change) is one object: the later wins.
    for object in paths.iter().flat_map(|p| files(&real().join(p))).flat_map(|f| objects(&f)) {
        let key = |o: &Value| (o["kind"].clone(), o["metadata"]["namespace"].clone(), o["metadata"]["name"].clone());
        match all.iter_mut().find(|seen| key(seen) == key(&object)) {
            Some(seen) => *seen = object,
            None => all.push(object),
        }
    }
    let node_ips: Vec<std::net::IpAddr> = all
        .iter()
        .filter(|o| o["kind"] == "Node" && o["metadata"]["name"] == *node)
        .flat_map(|o| o["status"]["addresses"].as_array().cloned().unwrap_or_default())
        .filter(|a| a["type"] == "InternalIP")
        .filter_map(|a| a["address"].as_str()?.parse().ok())
        .chain(case.node_ip.map(|ip| ip.parse().unwrap()))
        .collect();
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
        // `clusterIPs` (one per family) where the API has it, else the one `clusterIP`.
        let ips: Vec<&str> = match spec["clusterIPs"].as_array() {
            Some(ips) => ips.iter().map(|ip| ip.as_str().unwrap()).collect(),
            None => vec![ip],
        };
        for port in spec["ports"].as_array().into_iter().flatten() {
            let protocol = port["protocol"].as_str().unwrap_or("TCP").to_lowercase();
            for ip in &ips {
                destinations.push(format!("{ip} . {protocol} . {}", port["port"]));
            }
            // A nodePort is served on the node's addresses of the families the Service has.
            let families =
                spec["ipFamilies"].as_array().map(|f| f.iter().filter_map(Value::as_str).collect::<Vec<_>>());
            let served = |ip: &std::net::IpAddr| {
                let family = if ip.is_ipv4() { "IPv4" } else { "IPv6" };
                families.as_ref().map_or(ip.is_ipv4(), |f| f.contains(&family))
            };
            if let Some(node_port) = port["nodePort"].as_u64() {
                destinations.extend(
                    node_ips.iter().filter(|ip| served(ip)).map(|ip| format!("{ip} . {protocol} . {node_port}")),
                );
            }
        }
    }
    let owner =
        |o: &Value, name: &str| (o["metadata"]["namespace"].as_str().unwrap_or("default").to_owned(), name.to_owned());
    let slices: Vec<&Value> =
        all.iter().filter(|o| o["kind"] == "EndpointSlice" && o["apiVersion"] == "discovery.k8s.io/v1").collect();
    let slice_service = |slice: &Value| {
        owner(slice, slice["metadata"]["labels"]["kubernetes.io/service-name"].as_str().unwrap_or_default())
    };
    let mut backends = Vec::new();
    for service in &proxied {
        let endpoints: Vec<&Value> = slices
            .iter()
            .filter(|slice| {
                slice_service(slice) == *service && slice["ports"].as_array().is_some_and(|p| !p.is_empty())
            })
            .flat_map(|slice| slice["endpoints"].as_array().into_iter().flatten())
            .collect();
        let ready = |e: &&Value| e["conditions"]["ready"] != Value::Bool(false);
        // Without a ready endpoint, the serving ones that are terminating take the traffic (as in kube-proxy).
        let serving = |e: &&Value| e["conditions"]["serving"] == Value::Bool(true);
        let chosen: Vec<&Value> = if endpoints.iter().any(ready) {
            endpoints.into_iter().filter(ready).collect()
        } else {
            endpoints.into_iter().filter(serving).collect()
        };
        for endpoint in chosen {
            backends.extend(endpoint["addresses"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_owned()));
        }
    }
    // Legacy Endpoints count only for a Service that has no EndpointSlice; `addresses` are the ready ones.
    for endpoints in all.iter().filter(|o| o["kind"] == "Endpoints" && o["apiVersion"] == "v1") {
        let service = owner(endpoints, endpoints["metadata"]["name"].as_str().unwrap());
        if !proxied.contains(&service) || slices.iter().any(|slice| slice_service(slice) == service) {
            continue;
        }
        for subset in endpoints["subsets"].as_array().into_iter().flatten() {
            if subset["ports"].as_array().is_none_or(Vec::is_empty) {
                continue;
            }
            let addresses = subset["addresses"].as_array().into_iter().flatten();
            backends.extend(addresses.map(|a| a["ip"].as_str().unwrap().to_owned()));
        }
    }
    (destinations, backends, proxied.len())
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
    for case in CASES {
        let Case { name, paths, .. } = case;
        let text = render(case, "nft");
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
    for case in CASES {
        let Case { name, proxied, .. } = case;
        let json = render(case, "json");
        assert!(json.status.success(), "{name}: {}", String::from_utf8_lossy(&json.stderr));
        let ns = Netns::new("real").unwrap();
        let path = std::env::temp_dir().join(format!("proxier-real-{}-{name}.json", std::process::id()));
        std::fs::write(&path, &json.stdout).unwrap();
        let loaded = ns.exec("nft", ["-j", "-f", &path.display().to_string()]).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(loaded.status.success(), "{name}: {}", String::from_utf8_lossy(&loaded.stderr));
        let listing = ns.exec("nft", ["list", "ruleset"]).unwrap();
        let listing = String::from_utf8(listing.stdout).unwrap();

        let (destinations, backends, services) = expected(case);
        assert_eq!(services, *proxied, "{name}: the Services with a ClusterIP the dump holds");
        assert_eq!(destinations.is_empty(), *proxied == 0, "{name}: {destinations:?}");
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

//! An agent embedding proxier: it feeds the watch events its own informers see into the
//! `ClusterState` a `Proxier` owns, calls `sync()` after each batch, and `resync()` now and then.
//!
//! ```sh
//! # as root, in a network namespace of your own so the host's rules stay untouched:
//! ip netns add demo && ip netns exec demo cargo run -p proxier-nft --example embed; ip netns del demo
//! ```
//! `cargo run -p proxier-nft --example embed -- --dry-run` runs it without a kernel (nft is `true`).

use proxier_core::{ClusterState, NodeConfig, Snapshot, WatchEvent};
use proxier_nft::{Conntrack, Nft, Proxier, SyncOutcome};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dry_run = std::env::args().any(|a| a == "--dry-run");
    let nft = if dry_run { Nft::new("true") } else { Nft::default() };
    let config = NodeConfig {
        node_name: "node-a".into(),
        node_ips: vec!["192.168.50.1".parse()?],
        cluster_cidrs: vec!["10.244.0.0/16".parse()?],
        ..Default::default()
    };
    let mut proxier = Proxier::new(ClusterState::new(config), "proxier-demo", nft);
    if !dry_run {
        proxier = proxier.with_conntrack(Conntrack::default());
    }

    // What the informers' first lists hand over: every Service, EndpointSlice and Node (folded as
    // `WatchEvent::ListStart`, one `ListItem` each, `ListDone` per kind).
    proxier.state_mut().relist(&objects(&[SERVICE, &slice(&["10.244.1.5"])])?);
    report("first sync (takes over any earlier table)", &proxier.sync()?);

    // An endpoint is added: only its elements are written.
    for slice in objects(&[&slice(&["10.244.1.5", "10.244.2.7"])])?.endpoint_slices {
        proxier.state_mut().fold(WatchEvent::Apply(slice));
    }
    report("endpoint added", &proxier.sync()?);
    report("nothing changed", &proxier.sync()?);
    if !dry_run {
        report("periodic resync", &proxier.resync()?);
    }

    proxier.state_mut().delete_endpoint_slice("shop", "web-x1");
    proxier.state_mut().delete_service("shop", "web");
    report("service deleted", &proxier.sync()?);
    if !dry_run {
        Nft::default().delete_tables("proxier-demo")?;
    }
    Ok(())
}

const SERVICE: &str = r#"{"kind": "Service", "apiVersion": "v1", "metadata": {"namespace": "shop", "name": "web"},
    "spec": {"clusterIP": "10.96.0.20", "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}}"#;

/// The web Service's EndpointSlice with ready endpoints at `addresses`, on node-b.
fn slice(addresses: &[&str]) -> String {
    let endpoints: Vec<String> = addresses
        .iter()
        .map(|a| format!(r#"{{"addresses": ["{a}"], "conditions": {{"ready": true}}, "nodeName": "node-b"}}"#))
        .collect();
    format!(
        r#"{{"kind": "EndpointSlice", "apiVersion": "discovery.k8s.io/v1",
            "metadata": {{"namespace": "shop", "name": "web-x1", "labels": {{"kubernetes.io/service-name": "web"}}}},
            "addressType": "IPv4", "endpoints": [{}],
            "ports": [{{"name": "http", "port": 8080, "protocol": "TCP"}}]}}"#,
        endpoints.join(", ")
    )
}

/// Objects as an informer would deliver them, read from their JSON.
fn objects(documents: &[&str]) -> Result<Snapshot, String> {
    let list = format!(r#"{{"kind": "List", "apiVersion": "v1", "items": [{}]}}"#, documents.join(", "));
    let (snapshot, report) = Snapshot::from_text("informer", &list);
    match report.diagnostics.first() {
        Some(problem) => Err(problem.to_string()),
        None => Ok(snapshot),
    }
}

fn report(what: &str, outcome: &SyncOutcome) {
    println!(
        "{what}: {:?} sync, {} changes ({} elements), {:?}",
        outcome.kind, outcome.changes, outcome.elements, outcome.duration
    );
}

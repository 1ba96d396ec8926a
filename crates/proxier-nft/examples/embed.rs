//! An agent embedding proxier: it feeds the objects its own informers see into a `Proxier` and calls
//! `sync()` after each batch, and `resync()` now and then.
//!
//! ```sh
//! # as root, in a network namespace of your own so the host's rules stay untouched:
//! ip netns add demo && ip netns exec demo cargo run -p proxier-nft --example embed; ip netns del demo
//! ```
//! `cargo run -p proxier-nft --example embed -- --dry-run` runs it without a kernel (nft is `true`).

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use proxier_core::NodeConfig;
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
    let mut proxier = Proxier::new(config, "proxier-demo", nft);
    if !dry_run {
        proxier = proxier.with_conntrack(Conntrack::default());
    }

    // What an informer's add handler would hand over.
    let service: Service = serde_json::from_value(serde_json::json!({
        "metadata": {"namespace": "shop", "name": "web"},
        "spec": {"clusterIP": "10.96.0.20", "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}
    }))?;
    let slice: EndpointSlice = serde_json::from_value(serde_json::json!({
        "metadata": {"namespace": "shop", "name": "web-x1", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.244.1.5"], "conditions": {"ready": true}, "nodeName": "node-b"}],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]
    }))?;
    proxier.apply_service(service);
    proxier.apply_endpoint_slice(slice.clone());
    report("first sync (takes over any earlier table)", &proxier.sync()?);

    // An endpoint is added: only its elements are written.
    let mut scaled = slice;
    if let Some(endpoints) = scaled.endpoints.as_mut() {
        let mut second = endpoints[0].clone();
        second.addresses = vec!["10.244.2.7".into()];
        endpoints.push(second);
    }
    proxier.apply_endpoint_slice(scaled);
    report("endpoint added", &proxier.sync()?);
    report("nothing changed", &proxier.sync()?);
    if !dry_run {
        report("periodic resync", &proxier.resync()?);
    }

    proxier.delete_endpoint_slice("shop", "web-x1");
    proxier.delete_service("shop", "web");
    report("service deleted", &proxier.sync()?);
    if !dry_run {
        Nft::default().delete_tables("proxier-demo")?;
    }
    Ok(())
}

fn report(what: &str, outcome: &SyncOutcome) {
    println!(
        "{what}: {:?} sync, {} changes ({} elements), {:?}",
        outcome.kind, outcome.changes, outcome.elements, outcome.duration
    );
}

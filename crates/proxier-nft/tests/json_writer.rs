//! `Transaction::to_json` (the direct writer) against the reference path it replaced,
//! `serde_json::to_string_pretty(&to_json_value())`: byte for byte, on every bundled cluster rendered
//! for every node with the flags `proxier render`'s snapshot tests use (crates/proxier-cli/tests/render.rs),
//! and on the incremental transactions between all of them; `to_json_compact` against
//! `serde_json::to_string` of the same value. Generated models are compared in
//! properties.rs, hand-built hostile ones in the writer's unit tests.

use std::path::Path;

use proxier_core::{DetectLocal, NodeConfig, Snapshot, compute};
use proxier_nft::Transaction;
use proxier_nft::ruleset::Table;

/// The bundled clusters, with the flags a node of each runs with in render.rs.
const CLUSTERS: &[(&str, &[&str], &[&str])] = &[
    ("single-stack.yaml", &["10.244.0.0/16"], &[]),
    ("dual-stack.json", &["10.244.0.0/16", "fd00:10:244::/56"], &[]),
    ("malformed.yaml", &["10.244.0.0/16"], &[]),
    ("semantics.yaml", &["10.244.0.0/16"], &["10.96.0.0/16"]),
];
const NODES: &[&str] = &["node-a", "node-b"];

fn reference(transaction: &Transaction) -> String {
    let mut out = serde_json::to_string_pretty(&transaction.to_json_value()).expect("a Value prints");
    out.push('\n');
    out
}

fn assert_same(what: &str, transaction: &Transaction) {
    let mut compact = serde_json::to_string(&transaction.to_json_value()).expect("a Value prints");
    compact.push('\n');
    assert!(transaction.to_json_compact() == compact, "{what}: the compact render differs from serde_json's");
    let (fast, slow) = (transaction.to_json(), reference(transaction));
    if fast != slow {
        let line = fast.lines().zip(slow.lines()).take_while(|(a, b)| a == b).count();
        panic!(
            "{what}: renders differ at line {}:\nwriter:    {:?}\nreference: {:?}",
            line + 1,
            fast.lines().nth(line),
            slow.lines().nth(line)
        );
    }
}

/// Every bundled cluster laid out for every node: (label, tables).
fn bundled() -> Vec<(String, Vec<Table>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/clusters");
    let mut all = Vec::new();
    for (cluster, cluster_cidrs, service_cidrs) in CLUSTERS {
        let text = std::fs::read_to_string(dir.join(cluster)).expect("bundled cluster");
        let (snapshot, _) = Snapshot::from_text(cluster, &text);
        for node in NODES {
            let config = NodeConfig {
                node_name: (*node).into(),
                cluster_cidrs: cluster_cidrs.iter().map(|c| c.parse().unwrap()).collect(),
                service_cidrs: service_cidrs.iter().map(|c| c.parse().unwrap()).collect(),
                detect_local: DetectLocal::ClusterCidr,
                ..NodeConfig::default()
            };
            all.push((format!("{cluster} {node}"), Transaction::tables(&compute(&snapshot, &config))));
        }
    }
    all
}

#[test]
fn bundled_clusters_render_as_the_reference_path_does() {
    for (label, tables) in bundled() {
        assert_same(&label, &Transaction::replacing(tables, "proxier"));
    }
}

#[test]
fn incremental_transactions_render_as_the_reference_path_does() {
    let mut states = bundled();
    states.push(("nothing".into(), Vec::new()));
    for (from_label, from) in &states {
        for (to_label, to) in &states {
            let (first, after) = Transaction::between(from, to, "proxier");
            assert_same(&format!("{from_label} → {to_label}"), &first);
            // From what the first step leaves, the objects it only emptied are deleted.
            let (second, _) = Transaction::between(&after, to, "proxier");
            assert_same(&format!("{from_label} → {to_label}, then again"), &second);
        }
    }
}

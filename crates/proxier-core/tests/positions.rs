//! Stable backend positions: the pure function on random edit sequences, and a `ClusterState` handing
//! out shares whose backends keep their positions through endpoint adds, removals and readiness flips.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use proptest::prelude::*;
use proxier_core::positions::stable_order;
use proxier_core::state::EndpointSlice;
use proxier_core::{Action, Backend, ClusterState, NodeConfig, Snapshot, compute};

fn backend(i: u8) -> Backend {
    // Two ports: an endpoint changing its port is a different backend.
    Backend { ip: [10, 244, 0, i / 2].into(), port: 8080 + u16::from(i % 2) }
}

/// The invariants of one step from `before` to `after` for the new set `set`.
fn check_step(before: &[Backend], set: &BTreeSet<Backend>, after: &[Backend]) -> Result<(), TestCaseError> {
    // Every backend of the set exactly once, nothing else: positions 0..N-1, dense.
    let mut sorted = after.to_vec();
    sorted.sort();
    prop_assert_eq!(sorted, set.iter().copied().collect::<Vec<_>>(), "not the set, each once: {:?}", after);
    // A backend that stays keeps its position, unless that position is past the new end; then it
    // moves into the position of one that went.
    for (position, b) in before.iter().enumerate() {
        if !set.contains(b) {
            continue;
        }
        if position < after.len() {
            prop_assert_eq!(after[position], *b, "{:?} moved from {} : {:?} -> {:?}", b, position, before, after);
        } else {
            let now = after.iter().position(|a| a == b).unwrap();
            prop_assert!(!set.contains(&before[now]), "{:?} moved into a kept position {}", b, now);
        }
    }
    // Positions rewritten: at most max(removed, added).
    let removed = before.iter().filter(|b| !set.contains(b)).count();
    let added = set.iter().filter(|b| !before.contains(b)).count();
    let rewritten = after.iter().zip(before).filter(|(a, b)| a != b).count() + after.len().saturating_sub(before.len());
    prop_assert!(
        rewritten <= removed.max(added),
        "{} rewritten for -{} +{}: {:?} -> {:?}",
        rewritten,
        removed,
        added,
        before,
        after
    );
    // Deterministic.
    prop_assert_eq!(stable_order(before, &set.iter().copied().collect::<Vec<_>>()), after.to_vec());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    /// Random edit sequences: each step removes and adds random backends (from a pool of 24).
    #[test]
    fn edits_keep_positions(
        start in prop::collection::btree_set(0u8..24, 0..12),
        edits in prop::collection::vec((prop::collection::btree_set(0u8..24, 0..4), prop::collection::btree_set(0u8..24, 0..4)), 1..20),
    ) {
        let mut order: Vec<Backend> = start.iter().map(|&i| backend(i)).collect();
        order.sort();
        for (remove, add) in edits {
            let mut set: BTreeSet<Backend> = order.iter().copied().collect();
            for i in remove {
                set.remove(&backend(i));
            }
            set.extend(add.into_iter().map(backend));
            // The new set is given in any order (compute gives address order; reversed here).
            let given: Vec<Backend> = set.iter().rev().copied().collect();
            let next = stable_order(&order, &given);
            check_step(&order, &set, &next)?;
            order = next;
        }
    }
}

fn slice(endpoints: &[(u8, bool)]) -> EndpointSlice {
    let endpoints: Vec<_> = endpoints
        .iter()
        .map(|(i, ready)| {
            serde_json::json!({"addresses": [format!("10.244.1.{i}")], "nodeName": "node-b",
                               "conditions": {"ready": ready, "serving": ready, "terminating": false}})
        })
        .collect();
    serde_json::from_value(serde_json::json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"namespace": "ns", "name": "web-abc", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4", "endpoints": endpoints,
        "ports": [{"name": "p", "port": 8080, "protocol": "TCP"}]
    }))
    .unwrap()
}

/// Each balanced destination's backends, by address and port.
fn balanced(state: &ClusterState) -> BTreeMap<(IpAddr, u16), Vec<Backend>> {
    state
        .shares()
        .flat_map(|f| f.destinations)
        .filter_map(|d| match d.action {
            Action::Balance { backends, .. } => Some(((d.ip, d.port), backends)),
            _ => None,
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, failure_persistence: None, ..ProptestConfig::default() })]

    /// A Service (ClusterIP and NodePort) whose slice goes through random endpoint adds, removals and
    /// readiness flips: each destination's backends in the shares keep their positions step to step,
    /// and the state's model is `compute`'s up to that order.
    #[test]
    fn a_cluster_state_keeps_positions(
        steps in prop::collection::vec(prop::collection::btree_map(0u8..16, any::<bool>(), 1..10), 1..12),
    ) {
        let config = NodeConfig {
            node_name: "node-a".into(),
            node_ips: vec!["192.168.50.1".parse().unwrap()],
            ..Default::default()
        };
        let service: proxier_core::state::Service = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"namespace": "ns", "name": "web"},
            "spec": {"clusterIP": "10.96.0.20", "type": "NodePort",
                     "ports": [{"name": "p", "port": 80, "protocol": "TCP", "nodePort": 30080}]}
        }))
        .unwrap();
        let mut state = ClusterState::new(config.clone());
        state.apply_service(service.clone());
        let mut previous: BTreeMap<(IpAddr, u16), Vec<Backend>> = BTreeMap::new();
        for endpoints in steps {
            let endpoints: Vec<(u8, bool)> = endpoints.into_iter().collect();
            state.apply_endpoint_slice(slice(&endpoints));
            state.changes();
            let now = balanced(&state);
            prop_assert_eq!(now.len(), if endpoints.iter().any(|e| e.1) { 2 } else { 0 });
            for (destination, after) in &now {
                if let Some(before) = previous.get(destination) {
                    check_step(before, &after.iter().copied().collect(), after)?;
                }
            }
            let mut model = state.model();
            model.sort_backends();
            let snapshot = Snapshot { services: vec![service.clone()], endpoint_slices: vec![slice(&endpoints)], ..Snapshot::default() };
            prop_assert_eq!(model.families, compute(&snapshot, &config).families);
            previous = now;
        }
    }
}

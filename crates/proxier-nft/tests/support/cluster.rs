//! Generated clusters for the kernel tests of incremental syncs: a pool of coherent objects (Services
//! and the slices that serve them, drawn from small pools of names, addresses and ports), the watch
//! events that take a `Proxier` from one state to the next, and the kernel check of a sequence of
//! syncs. Shared by path by proxier-nft's kernel tests.

#![allow(dead_code)]

use proptest::prelude::*;
use proxier_core::{NodeConfig, Snapshot, compute};
use proxier_nft::{Proxier, Transaction};
use proxier_testkit::objects::as_json;
use proxier_testkit::{Netns, invariants};
use serde_json::Value;

/// How many objects a pool holds.
pub const POOL: usize = 24;

/// Feeds `proxier` the next cluster state as watches would: one relist of each kind, which removes
/// what `next` no longer holds (the core's list fold).
pub fn feed(proxier: &mut Proxier, next: &Snapshot) {
    proxier.state_mut().relist(next);
}

/// A coherent cluster: Services and the slices that serve them, drawn from small pools of names,
/// addresses and ports, so that endpoints match, destinations are contested and policies bite.
pub fn coherent(max: usize) -> impl Strategy<Value = Vec<Value>> {
    let names = || prop::sample::select(&["a", "b", "c", "d"][..]);
    let service = (
        names(),
        prop::sample::select(&["10.96.0.1", "10.96.0.2", "10.96.0.3", "fd00:96::1"][..]),
        prop::sample::select(&["ClusterIP", "NodePort", "LoadBalancer"][..]),
        prop::collection::vec(prop::sample::select(&["192.168.50.100", "192.168.50.101"][..]), 0..2),
        prop::sample::select(&["Cluster", "Local"][..]),
        prop::sample::select(&["None", "ClientIP"][..]),
        prop::sample::select(&[80u16, 53][..]),
        prop::sample::select(&["TCP", "UDP"][..]),
        (prop::sample::select(&[30080u16, 30081][..]), prop::option::of(prop::sample::select(&[60, 120][..]))),
    )
        .prop_map(|(name, ip, kind, external, policy, affinity, port, protocol, (node_port, timeout))| {
            serde_json::json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"namespace": "ns", "name": name},
                "spec": {"clusterIP": ip, "type": kind, "externalIPs": external,
                         "externalTrafficPolicy": policy, "sessionAffinity": affinity,
                         "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": timeout}},
                         "healthCheckNodePort": if policy == "Local" && kind == "LoadBalancer" { Some(32000) } else { None },
                         "ports": [{"name": "p", "port": port, "protocol": protocol,
                                    "nodePort": if kind == "ClusterIP" { None } else { Some(node_port) }}]},
                "status": {"loadBalancer": {"ingress": if kind == "LoadBalancer" { vec![serde_json::json!({"ip": "192.168.60.1"})] } else { vec![] }}}
            })
        });
    let endpoint = (
        prop::sample::select(&["10.244.1.1", "10.244.1.2", "10.244.2.1", "10.244.2.2"][..]),
        prop::sample::select(&["node-a", "node-b"][..]),
        any::<bool>(),
        prop::bool::weighted(0.2),
    )
        .prop_map(|(ip, node, ready, terminating)| {
            serde_json::json!({"addresses": [ip], "nodeName": node,
                               "conditions": {"ready": ready, "serving": ready || terminating, "terminating": terminating}})
        });
    let slice = (names(), 0..3u8, prop::collection::vec(endpoint, 0..4), prop::sample::select(&["TCP", "UDP"][..]))
        .prop_map(|(service, n, endpoints, protocol)| {
            serde_json::json!({
                "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"namespace": "ns", "name": format!("{service}-{n}"),
                             "labels": {"kubernetes.io/service-name": service}},
                "addressType": "IPv4", "endpoints": endpoints,
                "ports": [{"name": "p", "port": 8080, "protocol": protocol}]
            })
        });
    let node = prop::sample::select(&["10.244.1.0/24", "10.244.3.0/24"][..]).prop_map(|cidr| {
        serde_json::json!({"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": "node-a", "labels": {"topology.kubernetes.io/zone": "z"}},
            "spec": {"podCIDRs": [cidr]},
            "status": {"addresses": [{"type": "InternalIP", "address": "192.168.50.1"}]}})
    });
    prop::collection::vec(prop_oneof![3 => service, 4 => slice, 1 => node], 0..max)
}

/// One generated sequence in the kernel: `proxier` is fed each state of `pool` in turn (`states` say
/// which objects are present) and synced; `apply` puts each sync's transaction into `incremental`
/// (nothing to do when proxier's own `nft` writes there). After each step `incremental` must list
/// exactly as `whole` after `nft -j -f` of the state's full transaction, apart from emptied objects
/// awaiting deletion; after the grace period's cleanup syncs, exactly. The full transaction is that of
/// the state's own model (backends in their stable positions), which must equal `compute` of the
/// objects up to the order of each destination's backends.
#[allow(clippy::too_many_arguments)]
pub fn kernel_sequence(
    proxier: &mut Proxier,
    pool: &[Value],
    states: &[Vec<bool>],
    config: &NodeConfig,
    incremental: &Netns,
    whole: &Netns,
    sample: usize,
    mut apply: impl FnMut(&Transaction, &str),
) {
    for (step, present) in states.iter().enumerate() {
        let objects: Vec<Value> =
            pool.iter().zip(present).filter(|(_, present)| **present).map(|(o, _)| o.clone()).collect();
        let (snapshot, _) = Snapshot::from_text("prop.json", &as_json(&objects));
        feed(proxier, &snapshot);
        let context = format!("sample {sample} step {step}");
        let outcome = proxier.sync().unwrap_or_else(|e| panic!("{context}: {e}\nobjects: {}", as_json(&objects)));
        apply(&outcome.transaction, &context);
        // The full render of the live state: its backends in their stable positions, which differ
        // from `compute`'s address order once endpoints came and went.
        let model = proxier.state().model();
        let mut sorted = model.clone();
        sorted.sort_backends();
        assert_eq!(sorted.families, compute(&snapshot, config).families, "{context}: the state is not `compute`'s");
        let full = Transaction::full(&model, "proxier");
        whole.nft_args(&["-j", "-f", "-"], Some(&full.to_json())).unwrap();
        let desired = Transaction::tables(&model);
        assert_eq!(
            invariants::without_stale_listing(incremental.ruleset().unwrap(), &desired),
            whole.ruleset().unwrap(),
            "{context}: differs from the full transaction after\n{}",
            outcome.transaction.to_text()
        );
    }
    // Objects emptied at different steps fall due at different times.
    while let Some(due) = proxier.next_cleanup() {
        std::thread::sleep(due.saturating_duration_since(std::time::Instant::now()));
        let context = format!("sample {sample}: cleanup");
        let outcome = proxier.sync().unwrap_or_else(|e| panic!("{context}: {e}"));
        apply(&outcome.transaction, &context);
    }
    assert_eq!(
        incremental.ruleset().unwrap(),
        whole.ruleset().unwrap(),
        "sample {sample}: emptied objects left after the grace"
    );
}

//! `Proxier`'s incremental syncs against the definition of what the kernel must hold: for generated
//! sequences of cluster states (objects appearing, changing and going; Services contesting one
//! destination; the node's settings changing), every transaction a sync writes is simulated on the
//! kernel's tables, and after each sync they must equal `Transaction::tables(compute(state))` — the
//! rules `proxier render` prints for that state — apart from emptied objects awaiting deletion.
//! `nft` is replaced by `true`: this is about which transactions are written, not about the kernel
//! (the kernel and traffic tests run the same code against a real one).

use std::collections::BTreeMap;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use proxier_core::state::Service;
use proxier_core::{ClusterState, Snapshot, compute};
use proxier_nft::ruleset::Table;
use proxier_nft::{Nft, Proxier, SyncKind, Transaction};
use proxier_testkit::{Netns, invariants};
use serde_json::Value;

use proxier_testkit::objects::{as_json, cases, config, objects};

const POOL: usize = 24;

/// Each Service's affinity timeout.
fn affinity_timeouts(snapshot: &Snapshot) -> BTreeMap<(String, String), Option<i32>> {
    let timeout = |s: &Service| s.spec.as_ref()?.session_affinity_config.as_ref()?.client_ip.as_ref()?.timeout_seconds;
    snapshot
        .services
        .iter()
        .map(|s| {
            (
                (s.metadata.namespace.clone().unwrap_or_default(), s.metadata.name.clone().unwrap_or_default()),
                timeout(s),
            )
        })
        .collect()
}

/// Feeds `proxier` the next cluster state as watches would: one relist of each kind, which removes
/// what `next` no longer holds (the core's list fold).
fn feed(proxier: &mut Proxier, next: &Snapshot) {
    proxier.state_mut().relist(next);
}

/// A coherent cluster: Services and the slices that serve them, drawn from small pools of names,
/// addresses and ports, so that endpoints match, destinations are contested and policies bite.
fn coherent(max: usize) -> impl Strategy<Value = Vec<Value>> {
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

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(64), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn every_sync_reaches_what_compute_renders(
        pool in prop_oneof![objects(POOL), coherent(POOL)],
        states in prop::collection::vec(prop::collection::vec(any::<bool>(), POOL), 2..7),
        configs in (config(), config()),
        switches in prop::collection::vec(prop::bool::weighted(0.2), 7),
    ) {
        let mut proxier = Proxier::new(ClusterState::new(configs.0.clone()), "proxier", Nft::new("true"));
        let mut kernel: Vec<Table> = Vec::new();
        let mut held = Snapshot::default();
        // The last affinity timeout each Service had: its affinity sets may still exist, emptied.
        let mut timeouts = BTreeMap::new();
        for (step, present) in states.iter().enumerate() {
            let config = if switches[step] { &configs.1 } else { &configs.0 };
            proxier.state_mut().set_config(config.clone());
            let objects: Vec<Value> =
                pool.iter().zip(present).filter(|(_, present)| **present).map(|(o, _)| o.clone()).collect();
            let (snapshot, _) = Snapshot::from_text("prop.json", &as_json(&objects));
            feed(&mut proxier, &snapshot);

            let outcome = proxier.sync().map_err(|e| TestCaseError::fail(e.to_string()))?;
            if step == 0 {
                prop_assert_eq!(outcome.kind, SyncKind::Full);
            } else if switches[step] == switches[step - 1]
                && held.node(&config.node_name) == snapshot.node(&config.node_name)
            {
                // Neither the settings nor this node changed: only the changes are written, unless an
                // affinity timeout changed (a set cannot change its timeout in place).
                let retimed =
                    affinity_timeouts(&snapshot).iter().any(|(k, t)| timeouts.get(k).is_some_and(|old| old != t));
                prop_assert!(outcome.kind == SyncKind::Partial || retimed, "{:?}", outcome.kind);
            }
            kernel = invariants::simulate(&kernel, &outcome.transaction).map_err(TestCaseError::fail)?;
            let expected = compute(&snapshot, config);
            let desired = Transaction::tables(&expected);
            invariants::same_tables(&invariants::without_stale(&kernel, &desired), &desired)
                .map_err(|e| TestCaseError::fail(format!("step {step}: {e}")))?;
            let committed = proxier.committed().expect("synced");
            invariants::same_tables(&kernel, &committed).map_err(TestCaseError::fail)?;

            let model = proxier.state().model();
            prop_assert_eq!(&model.families, &expected.families);
            prop_assert_eq!(&model.services, &expected.services);
            let checks: Vec<_> = proxier.state().health_checks().cloned().collect();
            let mut expected_checks: Vec<_> = expected.families.iter().flat_map(|f| f.health_checks.clone()).collect();
            expected_checks.sort_by(|a, b| a.service.cmp(&b.service));
            prop_assert_eq!(checks, expected_checks);
            timeouts.extend(affinity_timeouts(&snapshot));
            held = snapshot;
        }
    }
}

/// Two Services claiming one externalIP: the first in namespace/name order owns it; when it goes, the
/// other takes it over in the same partial sync.
#[test]
fn a_contested_destination_passes_to_the_next_claimant() {
    let service = |name: &str, cluster_ip: &str| -> Service {
        serde_json::from_value(serde_json::json!({
            "metadata": {"namespace": "ns", "name": name},
            "spec": {"clusterIP": cluster_ip, "externalIPs": ["192.168.50.100"],
                     "ports": [{"name": "p", "port": 80, "protocol": "TCP"}]}
        }))
        .unwrap()
    };
    let config = proxier_core::NodeConfig {
        node_name: "node-a".into(),
        node_ips: vec!["192.168.50.1".parse().unwrap()],
        ..Default::default()
    };
    let mut proxier = Proxier::new(ClusterState::new(config), "proxier", Nft::new("true"));
    proxier.state_mut().apply_service(service("b", "10.96.0.2"));
    proxier.state_mut().apply_service(service("a", "10.96.0.1"));
    let mut kernel = invariants::simulate(&[], &proxier.sync().unwrap().transaction).unwrap();
    let owner = |kernel: &[Table]| -> Vec<String> {
        kernel[0]
            .sets
            .iter()
            .flat_map(|s| &s.elements)
            .filter_map(|e| e.comment.clone())
            .filter(|c| c.contains("ExternalIP") || c.contains("external"))
            .collect()
    };
    assert_eq!(owner(&kernel), ["ns/a:p/tcp (externalIP)"], "{kernel:#?}");
    assert!(proxier.state().model().diagnostics.iter().any(|d| d.message.contains("already used by ns/a:p/tcp")));

    proxier.state_mut().delete_service("ns", "a");
    let outcome = proxier.sync().unwrap();
    assert_eq!(outcome.kind, SyncKind::Partial);
    kernel = invariants::simulate(&kernel, &outcome.transaction).unwrap();
    assert_eq!(owner(&kernel), ["ns/b:p/tcp (externalIP)"], "{kernel:#?}");
}

/// In the kernel: sequences of coherent cluster states fed to a `Proxier` whose `nft` runs in a
/// network namespace; after each sync that namespace lists exactly as another into which the state's
/// full transaction was loaded (apart from emptied objects awaiting deletion), and after the grace
/// period a sync deletes those too. `PROXIER_KERNEL_SAMPLES` (default 300) / 10 sequences.
#[test]
fn kernel_syncs_list_as_full_applies() {
    let Some(incremental) = Netns::for_test("kernel_syncs_list_as_full_applies") else { return };
    let Some(whole) = Netns::for_test("kernel_syncs_list_as_full_applies") else { return };
    let program = std::env::temp_dir().join(format!("{}-nft", incremental.name()));
    std::fs::write(&program, format!("#!/bin/sh\nexec ip netns exec {} nft \"$@\"\n", incremental.name())).unwrap();
    let _remove = Remove(program.clone());
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let samples = std::env::var("PROXIER_KERNEL_SAMPLES").ok().and_then(|v| v.parse().ok()).unwrap_or(300) / 10;
    let mut runner = TestRunner::default();
    let strategy = (coherent(POOL), prop::collection::vec(prop::collection::vec(any::<bool>(), POOL), 2..6), config());
    for sample in 0..samples {
        let (pool, states, config) = strategy.new_tree(&mut runner).expect("generate").current();
        incremental.nft_args(&["flush", "ruleset"], None).unwrap();
        let mut proxier = Proxier::new(ClusterState::new(config.clone()), "proxier", Nft::new(&program));
        for (step, present) in states.iter().enumerate() {
            let objects: Vec<Value> =
                pool.iter().zip(present).filter(|(_, present)| **present).map(|(o, _)| o.clone()).collect();
            let (snapshot, _) = Snapshot::from_text("prop.json", &as_json(&objects));
            feed(&mut proxier, &snapshot);
            let outcome = proxier
                .sync()
                .unwrap_or_else(|e| panic!("sample {sample} step {step}: {e}\nobjects: {}", as_json(&objects)));
            let full = Transaction::full(&compute(&snapshot, &config), "proxier");
            whole.nft_args(&["-j", "-f", "-"], Some(&full.to_json())).unwrap();
            let desired = Transaction::tables(&compute(&snapshot, &config));
            assert_eq!(
                invariants::without_stale_listing(incremental.ruleset().unwrap(), &desired),
                whole.ruleset().unwrap(),
                "sample {sample} step {step}: differs from the full transaction after\n{}",
                outcome.transaction.to_text()
            );
        }
        // Objects emptied at different steps fall due at different times.
        while let Some(due) = proxier.next_cleanup() {
            std::thread::sleep(due.saturating_duration_since(std::time::Instant::now()));
            proxier.sync().unwrap_or_else(|e| panic!("sample {sample}: cleanup: {e}"));
        }
        assert_eq!(
            incremental.ruleset().unwrap(),
            whole.ruleset().unwrap(),
            "sample {sample}: emptied objects left after the grace"
        );
    }
    eprintln!("{samples} sequences of syncs listed as their full transactions in the kernel");
}

/// Removes a file on drop.
struct Remove(std::path::PathBuf);

impl Drop for Remove {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

//! `Proxier`'s incremental syncs against the definition of what the kernel must hold: for generated
//! sequences of cluster states (objects appearing, changing and going; Services contesting one
//! destination; the node's settings changing), every transaction a sync writes is simulated on the
//! kernel's tables, and after each sync they must equal the full render of the live state
//! (`Transaction::tables` of its model, each destination's backends in their stable positions) apart
//! from emptied objects awaiting deletion; that model must be `compute(state)` — the rules `proxier
//! render` prints — up to the order of each destination's backends.
//! `nft` is replaced by `true`: this is about which transactions are written, not about the kernel
//! (the kernel and traffic tests run the same code against a real one).

#[path = "support/cluster.rs"]
mod cluster;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use proxier_core::state::Service;
use proxier_core::{ClusterState, IpFamily, Snapshot, compute};
use proxier_nft::ruleset::{Set, Table};
use proxier_nft::{Nft, Proxier, SyncKind, Transaction};
use proxier_testkit::{Netns, invariants};
use serde_json::Value;

use cluster::{POOL, coherent, feed, kernel_sequence};
use proxier_testkit::objects::{as_json, cases, config, objects};

/// Whether `desired` declares a set the kernel holds under its name with another type, flags or
/// timeout: the kernel cannot change a declaration in place, so the tables are replaced whole.
fn redeclared(kernel: &[Table], desired: &[Table]) -> bool {
    let declaration = |set: &Set| Set { elements: Vec::new(), ..set.clone() };
    desired.iter().any(|table| {
        let held = kernel.iter().filter(|held| held.family == table.family).flat_map(|held| &held.sets);
        held.into_iter().any(|h| table.sets.iter().any(|s| s.name == h.name && declaration(s) != declaration(h)))
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(64), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn every_sync_reaches_the_full_render_of_its_state(
        pool in prop_oneof![objects(POOL), coherent(POOL)],
        states in prop::collection::vec(prop::collection::vec(any::<bool>(), POOL), 2..7),
        configs in (config(), config()),
        switches in prop::collection::vec(prop::bool::weighted(0.2), 7),
    ) {
        let mut proxier = Proxier::new(ClusterState::new(configs.0.clone()), "proxier", Nft::new("true"));
        let mut kernel: Vec<Table> = Vec::new();
        let mut held = Snapshot::default();
        for (step, present) in states.iter().enumerate() {
            let config = if switches[step] { &configs.1 } else { &configs.0 };
            proxier.state_mut().set_config(config.clone());
            let objects: Vec<Value> =
                pool.iter().zip(present).filter(|(_, present)| **present).map(|(o, _)| o.clone()).collect();
            let (snapshot, _) = Snapshot::from_text("prop.json", &as_json(&objects));
            feed(&mut proxier, &snapshot);

            let outcome = proxier.sync().map_err(|e| TestCaseError::fail(e.to_string()))?;
            // What the kernel must hold: the full render of the live state, whose backends keep their
            // positions; that state must be `compute`'s up to the order of each destination's backends.
            let expected = compute(&snapshot, config);
            let model = proxier.state().model();
            let desired = Transaction::tables(&model);
            if step == 0 {
                prop_assert_eq!(outcome.kind, SyncKind::Full);
            } else if switches[step] == switches[step - 1]
                && held.node(&config.node_name) == snapshot.node(&config.node_name)
            {
                // Neither the settings nor this node changed: only the changes are written, unless a
                // set the kernel holds, perhaps emptied, must be declared anew (an affinity timeout).
                prop_assert!(
                    outcome.kind == SyncKind::Partial || redeclared(&kernel, &desired),
                    "{:?}",
                    outcome.kind
                );
            }
            kernel = invariants::simulate(&kernel, &outcome.transaction).map_err(TestCaseError::fail)?;
            invariants::same_tables(&invariants::without_stale(&kernel, &desired), &desired)
                .map_err(|e| TestCaseError::fail(format!("step {step}: {e}")))?;
            let committed = proxier.committed().expect("synced");
            invariants::same_tables(&kernel, &committed).map_err(TestCaseError::fail)?;

            let mut sorted = model.clone();
            sorted.sort_backends();
            prop_assert_eq!(&sorted.families, &expected.families);
            prop_assert_eq!(&model.services, &expected.services);
            let checks: Vec<_> = proxier.state().health_checks().cloned().collect();
            let mut expected_checks: Vec<_> = expected.families.iter().flat_map(|f| f.health_checks.clone()).collect();
            expected_checks.sort_by(|a, b| a.service.cmp(&b.service));
            prop_assert_eq!(checks, expected_checks);
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

/// A Service's affinity set, emptied when the Service moved to the other family, is needed again with
/// another timeout: the kernel cannot change a set's timeout in place, so that sync replaces the
/// tables, and they then hold the new timeout.
#[test]
fn an_emptied_set_needed_again_with_another_timeout_is_declared_anew() {
    let objects = |cluster_ip: &str, timeout: i32| {
        let family = if cluster_ip.contains(':') { "IPv6" } else { "IPv4" };
        let endpoint = if cluster_ip.contains(':') { "fd00::5" } else { "10.0.0.5" };
        let (snapshot, report) = Snapshot::from_text(
            "affinity.json",
            &as_json(&[
                serde_json::json!({"apiVersion": "v1", "kind": "Service", "metadata": {"namespace": "ns", "name": "a"},
                    "spec": {"clusterIP": cluster_ip, "sessionAffinity": "ClientIP",
                             "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": timeout}},
                             "ports": [{"name": "p", "port": 80, "protocol": "TCP"}]}}),
                serde_json::json!({"kind": "EndpointSlice", "apiVersion": "discovery.k8s.io/v1",
                    "metadata": {"namespace": "ns", "name": "a-1", "labels": {"kubernetes.io/service-name": "a"}},
                    "addressType": family, "endpoints": [{"addresses": [endpoint]}],
                    "ports": [{"name": "p", "port": 8080, "protocol": "TCP"}]}),
            ]),
        );
        assert!(report.diagnostics.is_empty() && report.skipped_kinds.is_empty(), "{report:?}");
        snapshot
    };
    let config = proxier_core::NodeConfig {
        node_name: "node-a".into(),
        node_ips: vec!["192.168.50.1".parse().unwrap(), "fd00:50::1".parse().unwrap()],
        ..Default::default()
    };
    let mut proxier = Proxier::new(ClusterState::new(config), "proxier", Nft::new("true"));
    let mut kernel = Vec::new();
    let timeouts = |kernel: &[Table]| -> Vec<(IpFamily, u32)> {
        kernel.iter().flat_map(|t| t.sets.iter().filter_map(|s| Some((t.family, s.timeout?)))).collect()
    };
    for (cluster_ip, timeout, kind) in
        [("fd00:96::1", 60, SyncKind::Full), ("10.96.0.1", 120, SyncKind::Partial), ("fd00:96::1", 120, SyncKind::Full)]
    {
        feed(&mut proxier, &objects(cluster_ip, timeout));
        let outcome = proxier.sync().unwrap();
        assert_eq!(outcome.kind, kind, "{cluster_ip}");
        kernel = invariants::simulate(&kernel, &outcome.transaction).unwrap();
    }
    // The replacement also dropped the IPv4 set, emptied when the Service left that family.
    assert_eq!(timeouts(&kernel), [(IpFamily::V6, 120)], "{kernel:#?}");
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
        // proxier's own `nft` writes into `incremental`.
        kernel_sequence(&mut proxier, &pool, &states, &config, &incremental, &whole, sample, |_, _| {});
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

//! `Proxier` without a kernel: `nft` is replaced by `true` (accepts everything) or `false` (refuses
//! everything), so these tests see exactly which transactions a sequence of object changes produces.

use proxier_core::state::{EndpointSlice, Service};
use proxier_core::{ClusterState, NodeConfig};
use proxier_nft::change::Change;
use proxier_nft::{Nft, Proxier, SyncKind};

fn service(name: &str, ip: &str, protocol: &str) -> Service {
    serde_json::from_value(serde_json::json!({
        "metadata": {"namespace": "ns", "name": name},
        "spec": {"clusterIP": ip, "clusterIPs": [ip], "ports": [{"name": "p", "port": 80, "protocol": protocol}]}
    }))
    .unwrap()
}

fn slice(service: &str, addresses: &[&str], protocol: &str) -> EndpointSlice {
    let endpoints: Vec<_> = addresses
        .iter()
        .map(|a| serde_json::json!({"addresses": [a], "conditions": {"ready": true}, "nodeName": "node-b"}))
        .collect();
    serde_json::from_value(serde_json::json!({
        "metadata": {"namespace": "ns", "name": format!("{service}-abc"),
                     "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": "p", "port": 8080, "protocol": protocol}]
    }))
    .unwrap()
}

fn config() -> NodeConfig {
    NodeConfig {
        node_name: "node-a".into(),
        node_ips: vec!["192.168.50.1".parse().unwrap()],
        cluster_cidrs: vec!["10.244.0.0/16".parse().unwrap()],
        ..Default::default()
    }
}

/// A proxier holding `n` unrelated Services with two endpoints each, already synced.
fn proxier_with(n: u32) -> Proxier {
    let mut proxier = Proxier::new(ClusterState::new(config()), "proxier", Nft::new("true"));
    for i in 0..n {
        let name = format!("unrelated-{i}");
        let ip = format!("10.96.{}.{}", 100 + i / 250, 1 + i % 250);
        let a = format!("10.244.{}.{}", 100 + i / 250, 1 + i % 250);
        let b = format!("10.245.{}.{}", 100 + i / 250, 1 + i % 250);
        proxier.state_mut().apply_service(service(&name, &ip, "TCP"));
        proxier.state_mut().apply_endpoint_slice(slice(&name, &[&a, &b], "TCP"));
    }
    let first = proxier.sync().unwrap();
    assert_eq!(first.kind, SyncKind::Full);
    proxier
}

/// The changes of one sequence of edits on a proxier with `n` unrelated Services.
fn edits_on(n: u32) -> Vec<Vec<Change>> {
    let mut proxier = proxier_with(n);
    let mut transactions = Vec::new();
    let mut step = |proxier: &mut Proxier| {
        let outcome = proxier.sync().unwrap();
        assert_eq!(outcome.kind, SyncKind::Partial);
        transactions.push(outcome.transaction.changes().to_vec());
    };
    proxier.state_mut().apply_service(service("web", "10.96.0.20", "TCP"));
    step(&mut proxier);
    proxier.state_mut().apply_endpoint_slice(slice("web", &["10.244.1.1"], "TCP"));
    step(&mut proxier);
    proxier.state_mut().apply_endpoint_slice(slice("web", &["10.244.1.1", "10.244.2.2", "10.244.3.3"], "TCP"));
    step(&mut proxier);
    proxier.state_mut().delete_endpoint_slice("ns", "web-abc");
    step(&mut proxier);
    proxier.state_mut().delete_service("ns", "web");
    step(&mut proxier);
    transactions
}

#[test]
fn an_incremental_transaction_does_not_grow_with_unrelated_services() {
    let small = edits_on(10);
    let large = edits_on(1000);
    assert_eq!(small, large, "the same edits must give the same transactions whatever else the cluster holds");
    assert!(small.iter().all(|changes| !changes.is_empty()), "{small:#?}");
    let elements: usize = small
        .iter()
        .flatten()
        .map(|c| match c {
            Change::AddElements { elements, .. } | Change::DeleteElements { elements, .. } => elements.len(),
            _ => 0,
        })
        .sum();
    assert!(elements < 40, "{elements} elements changed for one Service's edits: {small:#?}");
}

/// Backends keep their positions: a replaced endpoint (a pod replaced by one with a lower address,
/// which in address order would shift every position before it) rewrites its own position only; a
/// removed one is replaced by the last; an added one is appended.
#[test]
fn one_endpoint_change_rewrites_its_own_position() {
    let mut proxier = proxier_with(3);
    let mut addresses: Vec<String> = (1..=10).map(|i| format!("10.244.1.{}", 10 * i)).collect();
    let edit = |proxier: &mut Proxier, addresses: &[String]| {
        let addresses: Vec<&str> = addresses.iter().map(String::as_str).collect();
        proxier.state_mut().apply_endpoint_slice(slice("web", &addresses, "TCP"));
        let outcome = proxier.sync().unwrap();
        assert_eq!(outcome.kind, SyncKind::Partial);
        let touched: std::collections::BTreeSet<String> = outcome
            .transaction
            .changes()
            .iter()
            .filter_map(|c| match c {
                Change::AddElements { set, .. } | Change::DeleteElements { set, .. } if set.starts_with("backend-") => {
                    Some(set.clone())
                }
                _ => None,
            })
            .collect();
        (touched.into_iter().collect::<Vec<_>>(), outcome.changes)
    };
    proxier.state_mut().apply_service(service("web", "10.96.0.20", "TCP"));
    edit(&mut proxier, &addresses);

    // 10.244.1.50 (position 4) replaced by 10.244.1.5: its address is rewritten, nothing else moves.
    addresses[4] = "10.244.1.5".into();
    let (touched, changes) = edit(&mut proxier, &addresses);
    assert_eq!(touched, ["backend-4-addr"]);
    // Delete and add of that address and of the hairpin entry, at most.
    assert!(changes <= 4, "{changes} changes");

    // 10.244.1.30 (position 2) goes: the last (10.244.1.100, position 9) moves into its place. The
    // endpoints share one port, held once in `backend-port`, which does not change.
    addresses.remove(2);
    let (touched, _) = edit(&mut proxier, &addresses);
    assert_eq!(touched, ["backend-2-addr", "backend-9-addr"]);

    // A new endpoint is appended at position 9.
    addresses.push("10.244.1.1".into());
    let (touched, _) = edit(&mut proxier, &addresses);
    assert_eq!(touched, ["backend-9-addr"]);

    // The state's order is what the kernel holds: the last moved into position 2, the new one last.
    let model = proxier.state().model();
    let web = model.families[0].destinations.iter().find(|d| d.ip.to_string() == "10.96.0.20").unwrap();
    let proxier_core::Action::Balance { backends, .. } = &web.action else { panic!("{web:?}") };
    let order: Vec<String> = backends.iter().map(|b| b.ip.to_string()).collect();
    assert_eq!(
        order,
        [
            "10.244.1.10",
            "10.244.1.20",
            "10.244.1.100",
            "10.244.1.40",
            "10.244.1.5",
            "10.244.1.60",
            "10.244.1.70",
            "10.244.1.80",
            "10.244.1.90",
            "10.244.1.1"
        ]
    );
}

#[test]
fn nothing_changed_runs_no_nft() {
    // `false` refuses every transaction: a sync that ran nft would fail.
    let mut proxier = proxier_with(3);
    let mut refusing = Proxier::new(ClusterState::new(config()), "proxier", Nft::new("false"));
    std::mem::swap(&mut proxier, &mut refusing);
    // Re-feed the same objects into a proxier that has committed state.
    let mut proxier = proxier_with(3);
    let outcome = proxier.sync().unwrap();
    assert_eq!((outcome.kind, outcome.changes), (SyncKind::Partial, 0));
    // Re-applying an identical object is no change either.
    proxier.state_mut().apply_service(service("unrelated-0", "10.96.100.1", "TCP"));
    assert!(!proxier.has_pending_changes());
    assert_eq!(proxier.sync().unwrap().changes, 0);
}

#[test]
fn a_failed_sync_keeps_committed_state_and_the_next_is_full() {
    let mut proxier = Proxier::new(ClusterState::new(config()), "proxier", Nft::new("false"));
    proxier.state_mut().apply_service(service("web", "10.96.0.20", "TCP"));
    let error = proxier.sync().unwrap_err();
    assert!(error.to_string().contains("Full sync failed"), "{error}");
    assert!(!proxier.is_committed());
    assert!(proxier.committed().is_none());
    assert!(proxier.has_pending_changes(), "the change is still to be programmed");
}

#[test]
fn emptied_chains_are_deleted_by_a_later_sync_after_the_grace_period() {
    let mut proxier = proxier_with(0);
    // Session affinity gives the Service chains and sets of its own in the layout.
    let mut web = service("web", "10.96.0.20", "UDP");
    web.spec.as_mut().unwrap().session_affinity = Some("ClientIP".into());
    proxier.state_mut().apply_service(web);
    proxier.state_mut().apply_endpoint_slice(slice("web", &["10.244.1.1", "10.244.2.2"], "UDP"));
    proxier.sync().unwrap();
    proxier.state_mut().delete_service("ns", "web");
    proxier.state_mut().delete_endpoint_slice("ns", "web-abc");
    let removal = proxier.sync().unwrap();
    // Chains are only flushed by the transaction that stops using them (affinity sets, which no map
    // element points at, may go at once, as in kube-proxy).
    let deletes = |changes: &[Change]| changes.iter().filter(|c| matches!(c, Change::DeleteChain { .. })).count();
    assert_eq!(deletes(removal.transaction.changes()), 0, "{:#?}", removal.transaction.changes());
    let Some(due) = proxier.next_cleanup() else {
        // The layout gave the Service no objects of its own: nothing to clean up.
        return;
    };
    let early = proxier.sync().unwrap();
    assert_eq!(early.changes, 0, "too early: {:?}", early.transaction);
    std::thread::sleep(due.saturating_duration_since(std::time::Instant::now()));
    let cleanup = proxier.sync().unwrap();
    assert!(deletes(cleanup.transaction.changes()) > 0, "{:?}", cleanup.transaction);
    assert_eq!(proxier.next_cleanup(), None);
    assert_eq!(proxier.sync().unwrap().changes, 0);
}

#[test]
fn udp_endpoint_changes_select_stale_conntrack_entries() {
    use proxier_nft::proxier::conntrack_filters;
    let mut proxier = proxier_with(0);
    proxier.state_mut().apply_service(service("dns", "10.96.0.10", "UDP"));
    proxier.sync().unwrap();
    let no_endpoints = proxier.state().model();
    proxier.state_mut().apply_endpoint_slice(slice("dns", &["10.244.1.1", "10.244.2.2"], "UDP"));
    proxier.sync().unwrap();
    let two = proxier.state().model();
    proxier.state_mut().apply_endpoint_slice(slice("dns", &["10.244.2.2"], "UDP"));
    proxier.sync().unwrap();
    let one = proxier.state().model();

    let args =
        |filters: Vec<proxier_nft::ConntrackFilter>| filters.iter().map(|f| f.args().join(" ")).collect::<Vec<_>>();
    assert_eq!(
        args(conntrack_filters(&no_endpoints, &two)),
        ["-D -f ipv4 -p udp --orig-dst 10.96.0.10 --orig-port-dst 80"]
    );
    assert_eq!(
        args(conntrack_filters(&two, &one)),
        ["-D -f ipv4 -p udp --orig-dst 10.96.0.10 --orig-port-dst 80 --reply-src 10.244.1.1 --reply-port-src 8080"]
    );
    assert!(conntrack_filters(&one, &one).is_empty());
    // TCP is never touched.
    let mut tcp = proxier_with(0);
    tcp.state_mut().apply_service(service("web", "10.96.0.20", "TCP"));
    tcp.sync().unwrap();
    let before = tcp.state().model();
    tcp.state_mut().apply_endpoint_slice(slice("web", &["10.244.1.1"], "TCP"));
    tcp.sync().unwrap();
    assert!(conntrack_filters(&before, &tcp.state().model()).is_empty());
}

#[test]
fn network_programming_latency_comes_from_the_trigger_annotation() {
    let mut proxier = proxier_with(0);
    let mut web = slice("web", &["10.244.1.1"], "TCP");
    let trigger = "2020-01-01T00:00:00Z";
    web.metadata.annotations =
        Some([("endpoints.kubernetes.io/last-change-trigger-time".to_owned(), trigger.to_owned())].into());
    proxier.state_mut().apply_endpoint_slice(web.clone());
    let outcome = proxier.sync().unwrap();
    assert_eq!(outcome.network_programming.len(), 1);
    assert!(outcome.network_programming[0].as_secs() > 365 * 24 * 3600);
    // The same trigger again (a resync of the same object) is not observed twice.
    web.metadata.labels.as_mut().unwrap().insert("x".into(), "y".into());
    proxier.state_mut().apply_endpoint_slice(web);
    assert!(proxier.sync().unwrap().network_programming.is_empty());
}

/// A directory of this test's own, removed on drop (also when the test fails).
struct ScratchDir(std::path::PathBuf);

impl ScratchDir {
    fn new(name: &str) -> ScratchDir {
        let path = std::env::temp_dir().join(format!("proxier-test-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&path).unwrap();
        ScratchDir(path)
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An `nft` that refuses any transaction holding SCTP, as a kernel without SCTP support does, and
/// accepts everything else (checks included).
fn nft_without_sctp(dir: &ScratchDir) -> Nft {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.0.join("nft");
    std::fs::write(
        &path,
        "#!/bin/sh\ncase \"$(cat)\" in *'\"sctp\"'*) echo 'Error: Could not process rule: No such file or directory' >&2; exit 1;; esac\n",
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    Nft::new(path)
}

#[test]
fn a_service_the_kernel_refuses_is_left_out_until_it_changes() {
    let dir = ScratchDir::new("refused");
    let mut proxier = Proxier::new(ClusterState::new(config()), "proxier", nft_without_sctp(&dir));
    proxier.state_mut().apply_service(service("web", "10.96.0.20", "TCP"));
    proxier.state_mut().apply_service(service("sig", "10.96.0.30", "SCTP"));
    proxier.state_mut().apply_endpoint_slice(slice("sig", &["10.244.1.1"], "SCTP"));

    let first = proxier.sync().unwrap();
    assert_eq!(first.kind, SyncKind::Full);
    let refused: Vec<String> = first.refused.keys().map(ToString::to_string).collect();
    assert_eq!(refused, ["Service ns/sig"]);
    assert!(first.refused.values().all(|why| why.contains("Could not process rule")), "{:?}", first.refused);
    let json = first.transaction.to_json();
    assert!(json.contains("10.96.0.20") && !json.contains("\"sctp\""), "web is programmed, sig is not");
    assert!(json.contains("10.96.0.30"), "sig's ClusterIP stays in cluster-ips, rejecting");
    assert!(proxier.state().model().diagnostics.iter().any(|d| d.to_string().contains("ns/sig: the kernel refused")));
    assert_eq!(proxier.refused().len(), 1);

    // Other changes are written as usual; the refused Service stays out.
    proxier.state_mut().apply_endpoint_slice(slice("web", &["10.244.1.2"], "TCP"));
    let partial = proxier.sync().unwrap();
    assert_eq!((partial.kind, partial.refused.len()), (SyncKind::Partial, 0));
    assert_eq!(proxier.refused().len(), 1);

    // A change to it is tried: refused again, found again, the rest kept.
    proxier.state_mut().apply_endpoint_slice(slice("sig", &["10.244.1.1", "10.244.2.2"], "SCTP"));
    assert!(proxier.sync().is_err(), "the partial sync carrying SCTP fails");
    let again = proxier.sync().unwrap();
    assert_eq!((again.kind, again.refused.len()), (SyncKind::Full, 1));
    assert!(again.transaction.to_json().contains("10.244.1.2"), "web's change survives");

    // Fixed: programmed incrementally, no longer refused.
    proxier.state_mut().apply_service(service("sig", "10.96.0.30", "TCP"));
    proxier.state_mut().apply_endpoint_slice(slice("sig", &["10.244.1.1"], "TCP"));
    let fixed = proxier.sync().unwrap();
    assert_eq!(fixed.kind, SyncKind::Partial);
    assert!(fixed.transaction.to_json().contains("10.96.0.30"));
    assert!(proxier.refused().is_empty());
}

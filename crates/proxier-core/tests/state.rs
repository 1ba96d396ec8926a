//! `ClusterState` on its own, without nft: the list fold, claims on contested destinations, trigger
//! times, which Node fields matter, leaving a Service out, and that the shares it hands out add up to
//! `compute` of the same objects.

use std::path::Path;

use proxier_core::state::{EndpointSlice, Kind, Node, Service};
use proxier_core::{ClusterState, FamilyRules, NodeConfig, ObjectRef, Snapshot, WatchEvent, compute};

fn config() -> NodeConfig {
    NodeConfig {
        node_name: "node-a".into(),
        node_ips: vec!["192.168.50.1".parse().unwrap()],
        cluster_cidrs: vec!["10.244.0.0/16".parse().unwrap()],
        ..Default::default()
    }
}

fn service(name: &str, ip: &str) -> Service {
    serde_json::from_value(serde_json::json!({
        "metadata": {"namespace": "ns", "name": name},
        "spec": {"clusterIP": ip, "externalIPs": ["192.168.50.100"],
                 "ports": [{"name": "p", "port": 80, "protocol": "TCP"}]}
    }))
    .unwrap()
}

fn slice(service: &str, addresses: &[&str]) -> EndpointSlice {
    let endpoints: Vec<_> = addresses
        .iter()
        .map(|a| serde_json::json!({"addresses": [a], "conditions": {"ready": true}, "nodeName": "node-b"}))
        .collect();
    serde_json::from_value(serde_json::json!({
        "metadata": {"namespace": "ns", "name": format!("{service}-abc"),
                     "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": "p", "port": 8080, "protocol": "TCP"}]
    }))
    .unwrap()
}

fn node(address: &str, heartbeat: &str) -> Node {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": "node-a", "labels": {"topology.kubernetes.io/zone": "z1"}},
        "status": {"addresses": [{"type": "InternalIP", "address": address}],
                   "conditions": [{"type": "Ready", "status": "True", "lastHeartbeatTime": heartbeat}]}
    }))
    .unwrap()
}

/// The destinations of a share, as `ip:port` text.
fn destinations(share: &[FamilyRules]) -> Vec<String> {
    share.iter().flat_map(|f| &f.destinations).map(|d| format!("{}:{}", d.ip, d.port)).collect()
}

fn changed(state: &mut ClusterState) -> Vec<String> {
    state.changes().services.iter().map(|c| c.service.to_string()).collect()
}

#[test]
fn a_relist_removes_what_vanished_while_the_watch_was_down() {
    let mut state = ClusterState::new(config());
    assert!(!state.is_complete());
    assert_eq!(state.fold(WatchEvent::<Service>::ListStart), 0);
    assert_eq!(state.fold(WatchEvent::ListItem(service("a", "10.96.0.1"))), 1);
    assert_eq!(state.fold(WatchEvent::ListItem(service("b", "10.96.0.2"))), 1);
    assert_eq!(state.fold(WatchEvent::<Service>::ListDone), 0);
    state.fold(WatchEvent::<EndpointSlice>::ListStart);
    state.fold(WatchEvent::ListItem(slice("a", &["10.244.1.1"])));
    state.fold(WatchEvent::<EndpointSlice>::ListDone);
    assert!(state.is_listed(Kind::Service) && state.is_listed(Kind::EndpointSlice) && !state.is_complete());
    state.fold(WatchEvent::<Node>::ListStart);
    state.fold(WatchEvent::ListItem(node("192.168.50.1", "2020-01-01T00:00:00Z")));
    state.fold(WatchEvent::<Node>::ListDone);
    assert!(state.is_complete());
    assert_eq!(changed(&mut state), ["Service ns/a", "Service ns/b"]);

    // The watches reconnect and relist: b and a's slice were deleted meanwhile, a is unchanged.
    state.fold(WatchEvent::<Service>::ListStart);
    assert_eq!(state.fold(WatchEvent::ListItem(service("a", "10.96.0.1"))), 0, "unchanged");
    assert_eq!(state.fold(WatchEvent::<Service>::ListDone), 1, "b went");
    state.fold(WatchEvent::<EndpointSlice>::ListStart);
    assert_eq!(state.fold(WatchEvent::<EndpointSlice>::ListDone), 1, "a's slice went");
    assert_eq!(state.services().count(), 1);
    assert_eq!(state.endpoint_slices().count(), 0);
    let changes = state.changes();
    let names: Vec<String> = changes.services.iter().map(|c| c.service.to_string()).collect();
    assert_eq!(names, ["Service ns/a", "Service ns/b"]);
    assert!(changes.services[1].new.is_empty(), "b's share is gone");
    assert!(!changes.node);

    // A delete event of an object never seen changes nothing.
    assert_eq!(state.fold(WatchEvent::Delete(service("c", "10.96.0.3"))), 0);
    assert!(!state.has_changes());
}

#[test]
fn a_contested_destination_belongs_to_the_first_claimant_then_the_next() {
    let mut state = ClusterState::new(config());
    state.apply_service(service("b", "10.96.0.2"));
    state.apply_service(service("a", "10.96.0.1"));
    let changes = state.changes();
    let shares: Vec<Vec<String>> = changes.services.iter().map(|c| destinations(&c.new)).collect();
    assert_eq!(shares, [vec!["10.96.0.1:80", "192.168.50.100:80"], vec!["10.96.0.2:80"]]);
    assert!(
        state
            .model()
            .diagnostics
            .iter()
            .any(|d| d.object.name == "b" && d.message.contains("already used by ns/a:p/tcp"))
    );

    // a goes: b takes the externalIP over, in the same changes.
    state.delete_service("ns", "a");
    let changes = state.changes();
    assert_eq!(changes.services.len(), 2);
    assert!(changes.services[0].new.is_empty());
    assert_eq!(destinations(&changes.services[1].old), ["10.96.0.2:80"]);
    assert_eq!(destinations(&changes.services[1].new), ["10.96.0.2:80", "192.168.50.100:80"]);
}

#[test]
fn trigger_times_are_handed_out_once_with_their_change() {
    let mut state = ClusterState::new(config());
    state.apply_service(service("web", "10.96.0.20"));
    let mut web = slice("web", &["10.244.1.1"]);
    web.metadata.annotations = Some(
        [("endpoints.kubernetes.io/last-change-trigger-time".to_owned(), "2020-01-01T00:00:00Z".to_owned())].into(),
    );
    state.apply_endpoint_slice(web.clone());
    let changes = state.changes();
    assert_eq!(changes.triggers.len(), 1);
    let since_epoch = changes.triggers[0].duration_since(std::time::UNIX_EPOCH).unwrap();
    assert_eq!(since_epoch.as_secs(), 1_577_836_800);
    // The same object with another label: no rule changes, no trigger.
    web.metadata.labels.as_mut().unwrap().insert("x".into(), "y".into());
    assert!(!state.apply_endpoint_slice(web));
    assert!(state.changes().triggers.is_empty());
}

#[test]
fn only_the_nodes_addresses_zone_and_pod_ranges_matter() {
    let mut state = ClusterState::new(NodeConfig { node_ips: Vec::new(), ..config() });
    state.apply_service(service("web", "10.96.0.20"));
    assert!(state.apply_node(node("192.168.50.1", "2020-01-01T00:00:00Z")));
    let first = state.changes();
    assert!(first.node, "the first changes are the node's");
    // A heartbeat is no change at all.
    assert!(!state.apply_node(node("192.168.50.1", "2020-01-01T00:00:10Z")));
    assert!(!state.has_changes());
    assert!(state.nodes().all(|n| n.status.as_ref().unwrap().conditions.is_none()), "only what matters is kept");
    // A new address changes every Service's rules.
    assert!(state.apply_node(node("192.168.50.2", "2020-01-01T00:00:20Z")));
    let changes = state.changes();
    assert!(changes.node);
    assert_eq!(state.node().ips(), ["192.168.50.2".parse::<std::net::IpAddr>().unwrap()]);
    assert_eq!(state.node().zone(), Some("z1"));
    // Another node's object is held, but changes nothing here.
    let mut other = node("192.168.50.9", "2020-01-01T00:00:00Z");
    other.metadata.name = Some("node-z".into());
    assert!(!state.apply_node(other));
    assert!(!state.changes().node);
}

#[test]
fn a_service_left_out_keeps_its_cluster_ip_and_hands_over_its_destinations() {
    let mut state = ClusterState::new(config());
    state.apply_service(service("a", "10.96.0.1"));
    state.apply_service(service("b", "10.96.0.2"));
    state.changes();
    let a = ObjectRef::new("Service", "ns", "a");
    assert!(state.leave_out(&a, "the kernel refused its rules"));
    let shares: Vec<_> = state.shares().collect();
    assert!(shares.iter().any(|f| f.cluster_ips == ["10.96.0.1".parse::<std::net::IpAddr>().unwrap()]));
    assert!(!destinations(&shares).contains(&"10.96.0.1:80".to_owned()), "{shares:?}");
    // b now owns the externalIP.
    let changes = state.changes();
    assert_eq!(destinations(&changes.services[0].new), ["10.96.0.2:80", "192.168.50.100:80"]);
    assert!(
        state.model().diagnostics.iter().any(|d| d.to_string() == "error: Service ns/a: the kernel refused its rules")
    );
    assert_eq!(state.left_out().len(), 1);
    // A change to a tries it again.
    state.apply_endpoint_slice(slice("a", &["10.244.1.1"]));
    state.changes();
    assert!(state.left_out().is_empty());
}

/// Every bundled cluster, fed as a relist: the state's model is `compute`'s (for clusters without
/// legacy Endpoints, which a live state does not watch).
#[test]
fn the_shares_add_up_to_compute() {
    let clusters = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/clusters");
    let mut checked = 0;
    for entry in std::fs::read_dir(clusters).unwrap() {
        let path = entry.unwrap().path();
        let (snapshot, _) = Snapshot::from_text("cluster", &std::fs::read_to_string(&path).unwrap());
        if !snapshot.legacy_endpoint_slices().is_empty() {
            continue;
        }
        for node in ["node-a", "node-b"] {
            let config = NodeConfig { node_name: node.into(), ..config() };
            let mut state = ClusterState::new(config.clone());
            state.relist(&snapshot);
            state.changes();
            let expected = compute(&snapshot, &config);
            let model = state.model();
            assert_eq!(model.families, expected.families, "{}", path.display());
            assert_eq!(model.services, expected.services, "{}", path.display());
            let shares: Vec<FamilyRules> = state.shares().collect();
            let destinations: usize = shares.iter().map(|f| f.destinations.len()).sum();
            assert_eq!(destinations, expected.families.iter().map(|f| f.destinations.len()).sum::<usize>());
            checked += 1;
        }
    }
    assert!(checked >= 4, "{checked}");
}

//! `Proxier` against a real kernel, in a scratch network namespace: takeover of an earlier table,
//! drift detection and repair by `resync`, and no-op resyncs.

use proxier_core::state::{EndpointSlice, Service};
use proxier_core::{ClusterState, IpFamily, NodeConfig};
use proxier_nft::{Nft, NftError, Proxier, SyncKind};

fn service(name: &str, ip: &str) -> Service {
    serde_json::from_value(serde_json::json!({
        "metadata": {"namespace": "ns", "name": name},
        "spec": {"clusterIP": ip, "ports": [{"name": "p", "port": 80, "protocol": "TCP"}]}
    }))
    .unwrap()
}

fn slice(service: &str, address: &str) -> EndpointSlice {
    serde_json::from_value(serde_json::json!({
        "metadata": {"namespace": "ns", "name": format!("{service}-1"), "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [address], "conditions": {"ready": true}}],
        "ports": [{"name": "p", "port": 8080, "protocol": "TCP"}]
    }))
    .unwrap()
}

/// Runs `work` in a scratch network namespace, or skips when kernel tests cannot run here (the test
/// bed's check: SKIP, or a failure under PROXIER_REQUIRE_NETNS=1).
fn in_namespace(work: impl FnOnce(&Nft) -> Result<(), NftError> + Send) {
    if !proxier_testkit::netns_available("proxier_kernel") {
        return;
    }
    Nft::default().in_scratch_namespace(work).unwrap();
}

#[test]
fn takeover_drift_repair_and_quiet_resyncs() {
    in_namespace(|nft| {
        // A table of an earlier run, with something this run would not program.
        nft.apply_text("table ip proxier {\n chain leftover {\n }\n}\n")?;
        let config = NodeConfig {
            node_name: "node-a".into(),
            node_ips: vec!["192.168.50.1".parse().unwrap()],
            ..Default::default()
        };
        let mut proxier = Proxier::new(ClusterState::new(config), "proxier", nft.clone());
        proxier.state_mut().apply_service(service("web", "10.96.0.20"));
        proxier.state_mut().apply_endpoint_slice(slice("web", "10.244.1.5"));
        let first = proxier.sync().unwrap();
        assert_eq!(first.kind, SyncKind::Full);
        let listing = nft.list_table(IpFamily::V4, "proxier")?.unwrap();
        assert!(!listing.contains("leftover") && listing.contains("10.96.0.20"), "{listing}");

        // Nothing drifted: no transaction.
        let quiet = proxier.resync().unwrap();
        assert_eq!((quiet.drifted, quiet.changes), (false, 0));

        // Someone deletes an element behind proxier's back: one full replacement repairs it.
        nft.apply_text("flush set ip proxier service-ips\n")?;
        let repair = proxier.resync().unwrap();
        assert!(repair.drifted);
        assert_eq!(repair.kind, SyncKind::Full);
        assert!(nft.list_table(IpFamily::V4, "proxier")?.unwrap().contains("10.96.0.20"));
        assert!(!proxier.resync().unwrap().drifted);

        // Incremental changes keep the kernel equal to the committed state.
        proxier.state_mut().apply_service(service("api", "10.96.0.30"));
        proxier.state_mut().apply_endpoint_slice(slice("api", "10.244.2.5"));
        assert_eq!(proxier.sync().unwrap().kind, SyncKind::Partial);
        proxier.state_mut().delete_service("ns", "web");
        proxier.sync().unwrap();
        let after = proxier.resync().unwrap();
        assert!(!after.drifted, "incremental syncs must leave exactly the committed state");

        // A table deleted behind proxier's back is re-created.
        nft.delete_tables("proxier")?;
        assert!(proxier.resync().unwrap().drifted);
        assert!(nft.list_table(IpFamily::V4, "proxier")?.unwrap().contains("10.96.0.30"));
        Ok(())
    });
}

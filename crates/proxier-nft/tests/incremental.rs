//! `Transaction::between` against the kernel: after a full apply of one state, the incremental
//! transactions to each next state leave exactly what a full apply of that state leaves — chains and
//! sets no longer used are emptied, then deleted one transaction later — and their size follows the
//! change, not the cluster.

use proxier_core::{NodeConfig, Snapshot, compute};
use proxier_nft::{Nft, Transaction};
use proxier_testkit::{Netns, netns_available};

const SEMANTICS: &str = include_str!("../../../testdata/clusters/semantics.yaml");

fn tables(text: &str) -> Vec<proxier_nft::ruleset::Table> {
    let (snapshot, _) = Snapshot::from_text("semantics.yaml", text);
    let config = NodeConfig {
        node_name: "node-a".into(),
        cluster_cidrs: vec!["10.244.0.0/16".parse().unwrap()],
        service_cidrs: vec!["10.96.0.0/16".parse().unwrap()],
        ..Default::default()
    };
    Transaction::tables(&compute(&snapshot, &config))
}

/// The states a cluster goes through: endpoints added and removed, services removed and re-added,
/// policies switched, affinity on and off.
fn states() -> Vec<String> {
    vec![
        SEMANTICS.to_owned(),
        // An endpoint more for sticky: new affinity set and endpoint chain.
        SEMANTICS.replace(
            "- {addresses: [10.244.2.10], conditions: {ready: true, serving: true, terminating: false}, nodeName: node-b, zone: zone-b}",
            "- {addresses: [10.244.2.10], conditions: {ready: true, serving: true, terminating: false}, nodeName: node-b, zone: zone-b}\n- {addresses: [10.244.2.11], conditions: {ready: true}, nodeName: node-b}",
        ),
        // Affinity off, Local policy off: every dedicated chain goes stale.
        SEMANTICS.replace("sessionAffinity: ClientIP", "sessionAffinity: None").replace("externalTrafficPolicy: Local", "externalTrafficPolicy: Cluster"),
        // Back again: stale chains come back to life.
        SEMANTICS.to_owned(),
        // Most services gone.
        SEMANTICS.split("---\n").take(6).collect::<Vec<_>>().join("---\n"),
        SEMANTICS.to_owned(),
    ]
}

/// The table as a sorted list of its objects, each with sorted elements: the kernel lists chains in
/// creation order and elements in hash order, neither of which matters.
fn listing(nft: &Nft) -> Vec<String> {
    let table = nft.list_table(proxier_core::IpFamily::V4, "proxier").unwrap().unwrap_or_default();
    let mut objects = Vec::new();
    let mut current: Vec<String> = Vec::new();
    for line in table.lines().skip(1) {
        let line = line.trim();
        if line.is_empty() || line == "}" && current.is_empty() {
            continue;
        }
        current.push(line.to_owned());
        if line == "}" {
            let text = current.join("\n");
            current.clear();
            // Emptied chains and sets wait one transaction for deletion; they are not state.
            let empty_chain = text.starts_with("chain ") && text.lines().count() == 2;
            let empty_backend_map = text.starts_with("map backend-") && !text.contains("elements");
            if !(empty_chain || empty_backend_map) {
                objects.push(sort_elements(&text));
            }
        }
    }
    objects.sort();
    objects
}

fn sort_elements(object: &str) -> String {
    let Some((head, rest)) = object.split_once("elements = { ") else { return object.to_owned() };
    let (elements, tail) = rest.split_once(" }").unwrap_or((rest, ""));
    let mut elements: Vec<&str> = elements.split(',').map(str::trim).collect();
    elements.sort_unstable();
    format!("{head}elements = {{ {} }}{tail}", elements.join(", "))
}

#[test]
fn incremental_transactions_converge_to_the_full_state() {
    if !netns_available("incremental_transactions_converge_to_the_full_state") {
        return;
    }
    let incremental = Netns::new("incr").unwrap();
    let full = Netns::new("full").unwrap();
    let in_ns = |ns: &Netns, work: &(dyn Fn(&Nft) + Sync)| {
        let nft = Nft::default();
        ns.run(|| work(&nft));
    };
    let states = states();
    let mut committed = tables(&states[0]);
    in_ns(&incremental, &|nft| {
        nft.apply_json(&Transaction::replacing(committed.clone(), "proxier").to_json()).unwrap()
    });
    for (i, state) in states.iter().enumerate().skip(1) {
        let desired = tables(state);
        let (transaction, after) = Transaction::between(&committed, &desired, "proxier");
        in_ns(&incremental, &|nft| {
            nft.apply_json(&transaction.to_json())
                .unwrap_or_else(|e| panic!("state {i}: {e}\n{}", transaction.to_text()))
        });
        committed = after;
        in_ns(&full, &|nft| nft.apply_json(&Transaction::replacing(desired.clone(), "proxier").to_json()).unwrap());
        let (mut got, mut want) = (Vec::new(), Vec::new());
        incremental.run(|| got = listing(&Nft::default()));
        full.run(|| want = listing(&Nft::default()));
        assert_eq!(got, want, "state {i} differs after the incremental transaction:\n{}", transaction.to_text());
    }
    // A transaction from a state to itself is empty.
    assert!(Transaction::between(&committed, &committed, "proxier").0.is_empty());
}

#[test]
fn an_endpoint_change_touches_only_its_elements_whatever_the_cluster_size() {
    let cluster = |extra: usize, endpoint: &str| {
        let mut text = SEMANTICS.replace("10.244.1.40", endpoint);
        for i in 0..extra {
            text.push_str(&format!(
                "---\napiVersion: v1\nkind: Service\nmetadata: {{name: filler-{i}, namespace: bulk}}\nspec: {{clusterIP: 10.96.{}.{}, ports: [{{name: p, port: 80}}]}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: filler-{i}-x, namespace: bulk, labels: {{kubernetes.io/service-name: filler-{i}}}}}\naddressType: IPv4\nendpoints: [{{addresses: [10.245.{}.{}]}}]\nports: [{{name: p, port: 8080}}]\n",
                100 + i / 250,
                i % 250 + 1,
                i / 250,
                i % 250 + 1
            ));
        }
        tables(&text)
    };
    let change = |extra| {
        let (transaction, _) =
            Transaction::between(&cluster(extra, "10.244.1.40"), &cluster(extra, "10.244.1.49"), "proxier");
        transaction.to_text()
    };
    let small = change(10);
    let large = change(1000);
    assert_eq!(small, large, "the transaction depends on unrelated services");
    assert!(small.contains("10.244.1.49") && small.lines().count() < 10, "{small}");
}

//! Property tests of the core: any text parses without panicking; any generated cluster (plausible,
//! hostile and random field values) computes without panicking, to the same model whatever the order of
//! its objects, and every message names its object on one line.
//!
//! Case counts are small by default so that CI stays fast; `PROPTEST_CASES=5000 cargo test --test
//! properties` runs a heavier round (docs/robustness.md).

use proptest::prelude::*;
use proptest::sample::select;
use proxier_core::{Snapshot, compute};

use proxier_testkit::objects::{as_json, cases, config, objects_and_shuffled};

/// YAML-ish text assembled from the tokens kubectl output is made of.
fn yamlish() -> impl Strategy<Value = String> {
    const TOKENS: &[&str] = &[
        "apiVersion: v1\n",
        "kind: Service\n",
        "kind: List\nitems:\n",
        "kind: EndpointSlice\n",
        "apiVersion: discovery.k8s.io/v1\n",
        "metadata: {name: x, namespace: y}\n",
        "spec:\n  clusterIP: 10.96.0.1\n  ports:\n",
        "  - {port: 80, protocol: TCP}\n",
        "- ",
        "---\n",
        "...",
        "{",
        "}",
        "[",
        "&a ",
        "*a",
        "!!str ",
        "%YAML 1.2\n",
        "\t",
        "\"\\u0000\"",
        "\u{feff}",
    ];
    let token = prop_oneof![4 => select(TOKENS).prop_map(str::to_owned), 1 => ".{0,3}"];
    prop::collection::vec(token, 0..40).prop_map(|tokens| tokens.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(64), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn any_text_parses_without_panicking(text in prop_oneof![any::<String>(), yamlish()]) {
        let (snapshot, report) = Snapshot::from_text("prop.yaml", &text);
        for diagnostic in &report.diagnostics {
            prop_assert!(!diagnostic.to_string().contains('\n'), "{diagnostic}");
        }
        let _ = snapshot.legacy_endpoint_slices();
    }

    #[test]
    fn any_cluster_computes_the_same_model_in_any_order((objects, shuffled) in objects_and_shuffled(24), config in config()) {
        let (snapshot, report) = Snapshot::from_text("prop.json", &as_json(&objects));
        let model = compute(&snapshot, &config);
        let (reordered, _) = Snapshot::from_text("prop.json", &as_json(&shuffled));
        prop_assert_eq!(&model, &compute(&reordered, &config));

        for diagnostic in report.diagnostics.iter().chain(&model.diagnostics) {
            let line = diagnostic.to_string();
            prop_assert!(!line.contains('\n') && !line.contains('\r'), "{}", line);
            prop_assert!(!diagnostic.object.kind.is_empty(), "{}", line);
            // A name is quoted whole up to 253 characters, never 10,000.
            prop_assert!(line.chars().count() < 2_000, "{}", line);
        }
        for family in &model.families {
            let mut keys: Vec<_> = family.destinations.iter().map(|d| (d.ip, d.protocol, d.port)).collect();
            let count = keys.len();
            keys.dedup();
            prop_assert_eq!(keys.len(), count, "destinations are unique and sorted");
            prop_assert!(family.destinations.iter().all(|d| proxier_core::IpFamily::of(&d.ip) == family.family));
        }
    }
}

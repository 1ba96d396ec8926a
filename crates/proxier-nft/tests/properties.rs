//! Property tests of the renderer and of incremental transactions, on generated clusters (plausible,
//! hostile and random field values; objects in any order):
//!
//! - `Transaction::full` never panics, renders the same bytes for the same cluster in any object order,
//!   and its JSON holds API data only as addresses, numbers and sanitised comments;
//! - the direct JSON writer behind `to_json` gives exactly the bytes of the reference path
//!   (`to_json_value`, pretty-printed), for full transactions and for a chain of incremental ones;
//! - `Transaction::between(a, b)`, applied to `a`'s tables, gives exactly `b`'s (modulo the emptied chains
//!   and sets it keeps for deletion by the next transaction), also over a chain a → b → c;
//! - sampled in a network namespace: the kernel accepts every rendered transaction (`nft -c`, JSON and
//!   text), and an incremental transaction applied on top of `a` lists exactly as `b` applied whole.
//!
//! Case counts are small by default (CI); `PROPTEST_CASES=2000 PROXIER_KERNEL_SAMPLES=2000 cargo test -p
//! proxier-nft --test properties` is the heavier round of docs/robustness.md.

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use proxier_core::{NodeConfig, RuleModel, Snapshot, compute};
use proxier_nft::Transaction;
use proxier_testkit::{Netns, invariants};
use serde_json::Value;

use proxier_testkit::objects::{as_json, cases, config, objects, objects_and_shuffled};

fn model(objects: &[Value], config: &NodeConfig) -> RuleModel {
    let (snapshot, _) = Snapshot::from_text("prop.json", &as_json(objects));
    compute(&snapshot, config)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(48), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn renders_are_deterministic_and_carry_no_api_strings(
        (objects, shuffled) in objects_and_shuffled(24),
        config in config(),
    ) {
        let transaction = Transaction::full(&model(&objects, &config), "proxier");
        let json = transaction.to_json();
        let text = transaction.to_text();
        let again = Transaction::full(&model(&shuffled, &config), "proxier");
        prop_assert_eq!(&json, &again.to_json());
        prop_assert_eq!(&text, &again.to_text());
        let document: Value = serde_json::from_str(&json).expect("render is JSON");
        if let Err(problem) = invariants::check_json_strings(&document) {
            prop_assert!(false, "{}", problem);
        }
        if let Err(problem) = invariants::check_text(&text) {
            prop_assert!(false, "{}", problem);
        }
    }

    #[test]
    fn the_json_writer_renders_as_the_reference_path_does(
        steps in prop::collection::vec((objects(24), config()), 1..4),
    ) {
        let mut committed: Vec<proxier_nft::ruleset::Table> = Vec::new();
        for (objects, config) in &steps {
            let desired = Transaction::tables(&model(objects, config));
            let full = Transaction::replacing(desired.clone(), "proxier");
            prop_assert_eq!(full.to_json(), reference_json(&full));
            prop_assert_eq!(full.to_json_compact(), compact_reference_json(&full));
            let (step, after) = Transaction::between(&committed, &desired, "proxier");
            prop_assert_eq!(step.to_json(), reference_json(&step));
            prop_assert_eq!(step.to_json_compact(), compact_reference_json(&step));
            committed = after;
        }
    }

    #[test]
    fn incremental_transactions_reach_the_desired_tables(
        steps in prop::collection::vec((objects(16), config()), 2..4),
    ) {
        let mut committed: Vec<proxier_nft::ruleset::Table> = Vec::new();
        let mut kernel = committed.clone();
        for (objects, config) in &steps {
            let desired = Transaction::tables(&model(objects, config));
            let (step, after) = Transaction::between(&committed, &desired, "proxier");
            kernel = invariants::simulate(&kernel, &step).map_err(TestCaseError::fail)?;
            invariants::same_tables(&kernel, &after).map_err(TestCaseError::fail)?;
            invariants::same_tables(&invariants::without_stale(&kernel, &desired), &desired)
                .map_err(TestCaseError::fail)?;
            committed = after;
        }
    }
}

/// What `Transaction::to_json` writes directly, through the `nftables` crate's types and `serde_json`.
fn reference_json(transaction: &Transaction) -> String {
    let mut out = serde_json::to_string_pretty(&transaction.to_json_value()).expect("a Value prints");
    out.push('\n');
    out
}

/// What `Transaction::to_json_compact` writes directly: the same value, compact.
fn compact_reference_json(transaction: &Transaction) -> String {
    let mut out = serde_json::to_string(&transaction.to_json_value()).expect("a Value prints");
    out.push('\n');
    out
}

fn samples(default: usize) -> usize {
    std::env::var("PROXIER_KERNEL_SAMPLES").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The kernel accepts what proxier renders: a few hundred generated clusters, each checked with
/// `nft -c` as JSON (every one) and as text (every fourth), in a fresh network namespace.
#[test]
fn kernel_accepts_generated_transactions() {
    let Some(ns) = Netns::for_test("kernel_accepts_generated_transactions") else { return };
    let mut runner = TestRunner::default();
    let strategy = (objects(24), config());
    let count = samples(300);
    for i in 0..count {
        let (objects, config) = strategy.new_tree(&mut runner).expect("generate").current();
        let transaction = Transaction::full(&model(&objects, &config), "proxier");
        let json = transaction.to_json();
        if let Err(message) = ns.nft_args(&["-c", "-j", "-f", "-"], Some(&json)) {
            panic!("sample {i}: nft -c -j refused:\n{message}\nobjects: {}\nconfig: {config:?}", as_json(&objects));
        }
        if i % 4 == 0 {
            let output = ns.exec_input("nft", ["-c", "-f", "-"], &transaction.to_text()).unwrap();
            assert!(
                output.status.success(),
                "sample {i}: nft -c -f (text) refused:\n{}\nobjects: {}",
                String::from_utf8_lossy(&output.stderr),
                as_json(&objects)
            );
        }
    }
    eprintln!("kernel accepted {count} generated transactions");
}

/// In the kernel, `between(a, b)` applied on top of `full(a)` lists exactly as `full(b)` applied alone.
#[test]
fn kernel_incremental_equals_full() {
    let Some(incremental) = Netns::for_test("kernel_incremental_equals_full") else { return };
    let Some(whole) = Netns::for_test("kernel_incremental_equals_full") else { return };
    let mut runner = TestRunner::default();
    let strategy = ((objects(16), config()), (objects(16), config()));
    let count = samples(300) / 10;
    for i in 0..count {
        let ((a, config_a), (b, config_b)) = strategy.new_tree(&mut runner).expect("generate").current();
        let (model_a, model_b) = (model(&a, &config_a), model(&b, &config_b));
        incremental.nft_args(&["-j", "-f", "-"], Some(&Transaction::full(&model_a, "proxier").to_json())).unwrap();
        let desired = Transaction::tables(&model_b);
        let (step, _) = Transaction::between(&Transaction::tables(&model_a), &desired, "proxier");
        let output = incremental.exec_input("nft", ["-j", "-f", "-"], &step.to_json()).unwrap();
        assert!(
            output.status.success(),
            "sample {i}: incremental refused: {}\n{}",
            String::from_utf8_lossy(&output.stderr),
            step.to_text()
        );
        whole.nft_args(&["-j", "-f", "-"], Some(&Transaction::full(&model_b, "proxier").to_json())).unwrap();
        let reached = invariants::without_stale_listing(incremental.ruleset().unwrap(), &desired);
        assert_eq!(reached, whole.ruleset().unwrap(), "sample {i}: incremental differs from full:\n{}", step.to_text());
    }
    eprintln!("{count} incremental transactions matched their full ones in the kernel");
}

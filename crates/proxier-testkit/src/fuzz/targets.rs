//! What each fuzz target does with one input. Every check failure panics, which the fuzzer reports.

use proxier_core::{NodeConfig, Snapshot, compute};
use proxier_nft::Transaction;

use crate::fuzz::input::Bytes;
use crate::invariants;

/// Snapshot parsing: any bytes, as text, load without panicking; the result is sorted and every
/// message renders.
pub fn snapshot_parse(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (snapshot, report) = Snapshot::from_text("fuzz.yaml", &text);
    for diagnostic in &report.diagnostics {
        let _ = diagnostic.to_string();
    }
    let _ = report.skipped_note();
    let _ = snapshot.legacy_endpoint_slices();
    let names: Vec<(Option<&str>, Option<&str>)> =
        snapshot.services.iter().map(|s| (s.metadata.namespace.as_deref(), s.metadata.name.as_deref())).collect();
    assert!(names.windows(2).all(|w| w[0] <= w[1]), "services not sorted: {names:?}");
}

/// Compute and render: a snapshot (raw text for the first half of the first byte's range, else a
/// structured one built from the bytes) and a node configuration from the bytes go through `compute`,
/// `Transaction::full` and both renderers; the JSON is valid and injection-free, the text is clean, and
/// (for odd first bytes) the incremental transaction from another node's model to this one reaches
/// exactly this one.
pub fn compute_render(data: &[u8]) {
    let mut bytes = Bytes::new(data);
    let mode = bytes.byte();
    let structured = mode >= 0x80;
    let config = bytes.config();
    let text = if structured {
        bytes.snapshot().to_string()
    } else {
        String::from_utf8_lossy(&data[data.len().min(16)..]).into_owned()
    };
    let (snapshot, _) = Snapshot::from_text("fuzz.json", &text);
    check_model(&snapshot, &config, mode & 1 == 1);
}

/// The checks of [`compute_render`] for one snapshot and configuration.
pub fn check_model(snapshot: &Snapshot, config: &NodeConfig, incremental: bool) {
    let model = compute(snapshot, config);
    for diagnostic in &model.diagnostics {
        let _ = diagnostic.to_string();
    }
    let transaction = Transaction::full(&model, "proxier");
    // `to_json` is this value pretty-printed; the value is checked directly (re-parsing would double the cost).
    let document = transaction.to_json_value();
    if let Err(problem) = invariants::check_json_strings(&document) {
        panic!("{problem}");
    }
    let text = transaction.to_text();
    if let Err(problem) = invariants::check_text(&text) {
        panic!("{problem}");
    }
    if incremental {
        // From another node's view of the same cluster to this one, incrementally.
        let other = NodeConfig { node_name: format!("{}-other", config.node_name), ..config.clone() };
        let before = Transaction::tables(&compute(snapshot, &other));
        let desired = Transaction::tables(&model);
        let (step, committed) = Transaction::between(&before, &desired, "proxier");
        let reached = invariants::simulate(&before, &step).unwrap_or_else(|e| panic!("between: {e}"));
        invariants::same_tables(&reached, &committed).unwrap_or_else(|e| panic!("committed: {e}"));
        invariants::same_tables(&invariants::without_stale(&reached, &desired), &desired)
            .unwrap_or_else(|e| panic!("reached: {e}"));
    }
}

/// The compat mender: any JSON document (bytes that parse as JSON, else a document built from the
/// bytes with nft's keys) is mended without panicking, and mending is idempotent.
pub fn compat_mend(data: &[u8]) {
    let mut document = match serde_json::from_slice::<serde_json::Value>(data) {
        Ok(value) => value,
        Err(_) => {
            let mut bytes = Bytes::new(data);
            serde_json::json!({"nftables": (0..bytes.below(6)).map(|_| value(&mut bytes, 0)).collect::<Vec<_>>()})
        }
    };
    proxier_nft::compat::mend(&mut document);
    let once = document.clone();
    proxier_nft::compat::mend(&mut document);
    assert_eq!(once, document, "mend is idempotent");
}

const KEYS: &[&str] = &[
    "add",
    "delete",
    "map",
    "set",
    "element",
    "rule",
    "elem",
    "flags",
    "expr",
    "map",
    "mark",
    "val",
    "comment",
    "timeout",
    "nftables",
    "masquerade",
    "verdict",
    "drop",
];
const STRINGS: &[&str] = &["mark", "drop", "accept", "return", "continue", "interval", "timeout", "verdict", "x"];

fn value(bytes: &mut Bytes<'_>, depth: usize) -> serde_json::Value {
    use serde_json::Value;
    match if depth > 6 { bytes.below(4) } else { bytes.below(7) } {
        0 => Value::Null,
        1 => Value::from(bytes.byte()),
        2 => Value::from(bytes.pick(STRINGS)),
        3 => Value::from(bytes.raw()),
        4 | 5 => {
            Value::Object((0..bytes.below(4)).map(|_| (bytes.pick(KEYS).to_owned(), value(bytes, depth + 1))).collect())
        }
        _ => Value::Array((0..bytes.below(4)).map(|_| value(bytes, depth + 1)).collect()),
    }
}

//! The fuzz targets' logic (`crates/proxier-testkit/src/fuzz/targets.rs`) on a small corpus, so that CI runs the same checks the
//! fuzzer does: the bundled cluster snapshots and a few hundred pseudo-random inputs per target.
//! (Fuzzing itself does not run in CI: docs/robustness.md.)

use proxier_testkit::fuzz::targets;

/// Deterministic pseudo-random inputs (xorshift), of mixed lengths.
fn inputs(count: usize, seed: u64) -> Vec<Vec<u8>> {
    let mut state = seed;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    (0..count).map(|_| (0..next() % 300).map(|_| next() as u8).collect()).collect()
}

fn clusters() -> Vec<Vec<u8>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/clusters");
    let mut files: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files.into_iter().map(|path| std::fs::read(path).unwrap()).collect()
}

#[test]
fn snapshot_parse_smoke() {
    for input in clusters().iter().chain(&inputs(500, 1)) {
        targets::snapshot_parse(input);
    }
}

#[test]
fn compute_render_smoke() {
    for cluster in clusters() {
        // Text mode: a first byte below 0x80, then 15 configuration bytes, then the text.
        let mut input = vec![0u8, 1, 1, 1, 0, 1, 0, 1, 1, 0, 0, 0, 0, 0, 0, 1];
        input.extend(cluster);
        targets::compute_render(&input);
    }
    for mut input in inputs(300, 2) {
        if let Some(first) = input.first_mut() {
            *first |= 0x80; // structured mode
        }
        targets::compute_render(&input);
    }
}

#[test]
fn compat_mend_smoke() {
    let renders = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/snapshots");
    let mut count = 0;
    for entry in std::fs::read_dir(renders).unwrap() {
        let path = entry.unwrap().path();
        if path.to_string_lossy().ends_with("-json.snap") {
            let text = std::fs::read_to_string(&path).unwrap();
            let body = text.split_once("\n---\n").map_or(text.as_str(), |(_, body)| body);
            targets::compat_mend(body.as_bytes());
            count += 1;
        }
    }
    assert!(count > 0);
    for input in inputs(1000, 3) {
        targets::compat_mend(&input);
    }
}

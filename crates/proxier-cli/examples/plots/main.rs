//! Draws the charts of docs/performance.md (docs/img/*.svg) from the benchmark results in docs/perf/*.csv.
//!
//! ```sh
//! cargo run -p proxier-cli --example plots            # rewrite docs/img/*.svg
//! cargo run -p proxier-cli --example plots -- --check # exit 1 if a committed chart is stale
//! # draw a fresh scripts/perf.sh run's CSVs somewhere else, leaving docs/ alone:
//! cargo run -p proxier-cli --example plots -- --data target/perf --out target/perf
//! ```
//!
//! `tests/plots.rs` runs the same check, so a CSV changed without its chart fails the tests.

mod charts;
mod svg;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let check = args.iter().any(|a| a == "--check");
    let value = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).map(PathBuf::from);
    let repository = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let data = value("--data").unwrap_or_else(|| repository.join("docs/perf"));
    let out = value("--out").unwrap_or_else(|| repository.join("docs/img"));
    let charts = match charts::render_all(&data) {
        Ok(charts) => charts,
        Err(error) => {
            eprintln!("plots: {error}");
            return ExitCode::from(2);
        }
    };
    let mut stale = 0;
    for (name, svg) in charts {
        let path = out.join(name);
        if check {
            if std::fs::read_to_string(&path).ok().as_deref() != Some(svg.as_str()) {
                eprintln!("plots: {} is stale: run `cargo run -p proxier-cli --example plots`", path.display());
                stale += 1;
            }
        } else if let Err(error) = std::fs::write(&path, svg) {
            eprintln!("plots: cannot write {}: {error}", path.display());
            return ExitCode::from(2);
        } else {
            eprintln!("plots: wrote {}", path.display());
        }
    }
    if stale > 0 { ExitCode::from(1) } else { ExitCode::SUCCESS }
}

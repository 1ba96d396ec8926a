//! Draws the charts of docs/performance.md (docs/img/*.svg) from the benchmark results in docs/perf/*.csv.
//!
//! ```sh
//! cargo run -p proxier-cli --example plots            # rewrite docs/img/*.svg
//! cargo run -p proxier-cli --example plots -- --check # exit 1 if a committed chart is stale
//! ```
//!
//! `tests/plots.rs` runs the same check, so a CSV changed without its chart fails the tests.

mod charts;
mod svg;

use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let check = std::env::args().skip(1).any(|a| a == "--check");
    let repository = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let charts = match charts::render_all(&repository.join("docs/perf")) {
        Ok(charts) => charts,
        Err(error) => {
            eprintln!("plots: {error}");
            return ExitCode::from(2);
        }
    };
    let mut stale = 0;
    for (name, svg) in charts {
        let path = repository.join("docs/img").join(name);
        if check {
            if std::fs::read_to_string(&path).ok().as_deref() != Some(svg.as_str()) {
                eprintln!("plots: docs/img/{name} is stale: run `cargo run -p proxier-cli --example plots`");
                stale += 1;
            }
        } else if let Err(error) = std::fs::write(&path, svg) {
            eprintln!("plots: cannot write {}: {error}", path.display());
            return ExitCode::from(2);
        } else {
            eprintln!("plots: wrote docs/img/{name}");
        }
    }
    if stale > 0 { ExitCode::from(1) } else { ExitCode::SUCCESS }
}

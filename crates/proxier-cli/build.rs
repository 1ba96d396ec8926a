//! Records what `proxier version` reports about the build: the commit, the build date and the Rust
//! compiler. Each falls back to `unknown` (a build outside a git checkout, say) rather than failing.

// Build scripts may start processes: this one asks git and rustc (clippy.toml forbids it elsewhere).
#![allow(clippy::disallowed_methods)]

use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

fn main() {
    let commit = output("git", &["rev-parse", "--short=12", "HEAD"]).map(|commit| {
        // A checkout with uncommitted changes is marked, as `git describe --dirty` does.
        let dirty = output("git", &["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
        if dirty { format!("{commit}-dirty") } else { commit }
    });
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let rustc = output(&rustc, &["--version"]);
    // SOURCE_DATE_EPOCH makes the date reproducible (reproducible-builds.org); otherwise now.
    let epoch = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or_else(|| SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()));
    println!("cargo:rustc-env=PROXIER_COMMIT={}", commit.as_deref().unwrap_or("unknown"));
    println!("cargo:rustc-env=PROXIER_RUSTC={}", rustc.as_deref().unwrap_or("unknown"));
    println!("cargo:rustc-env=PROXIER_BUILD_DATE={}", date(epoch));
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    // A new commit or checkout changes the commit: rebuild then (and only then, so builds stay quick).
    if let Some(git_dir) = output("git", &["rev-parse", "--absolute-git-dir"]) {
        println!("cargo:rerun-if-changed={git_dir}/HEAD");
        println!("cargo:rerun-if-changed={git_dir}/logs/HEAD");
    }
    println!("cargo:rerun-if-changed=build.rs");
}

/// The trimmed stdout of a successful run, if any.
fn output(program: &str, args: &[&str]) -> Option<String> {
    let output = Command::new(program).args(args).output().ok()?;
    let text = String::from_utf8(output.stdout).ok()?.trim().to_owned();
    (output.status.success() && !text.is_empty()).then_some(text)
}

/// `YYYY-MM-DD` (UTC) of a Unix time: the days-to-civil algorithm (Howard Hinnant's, public domain).
fn date(epoch: u64) -> String {
    let days = (epoch / 86_400) as i64 + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

//! `proxier version` and `proxier --version`: what was built, from what, and the nft it would run.

use std::path::Path;

use serde::Serialize;

use crate::exit::{Exit, Failure};
use crate::flags::{Output, document};

/// `proxier --version`: all that is known without running anything (`proxier version` adds nft's).
pub const LONG: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    "\ncommit: ",
    env!("PROXIER_COMMIT"),
    "\nbuilt:  ",
    env!("PROXIER_BUILD_DATE"),
    "\nrustc:  ",
    env!("PROXIER_RUSTC")
);

/// What `proxier version -o json|yaml` prints (with `apiVersion` and `kind: Version`).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Version {
    pub version: &'static str,
    /// The git commit built from (`-dirty` with uncommitted changes), or `unknown`.
    pub commit: &'static str,
    /// The build date (UTC; SOURCE_DATE_EPOCH when set).
    pub build_date: &'static str,
    pub rustc: &'static str,
    /// `nft --version` of the nft program proxier would run, or `None` when it cannot be run.
    pub nft: Option<String>,
}

/// Runs `proxier version`.
pub fn run(output: Output, nft: &Path) -> Result<Exit, Failure> {
    let nft = proxier_nft::Nft::new(nft).version().ok();
    let version = Version {
        version: env!("CARGO_PKG_VERSION"),
        commit: env!("PROXIER_COMMIT"),
        build_date: env!("PROXIER_BUILD_DATE"),
        rustc: env!("PROXIER_RUSTC"),
        nft,
    };
    let text = match document(output, "Version", &version) {
        Some(text) => text.map_err(|e| Failure::Input(anyhow::anyhow!(e)))?,
        None => format!(
            "proxier {}\ncommit: {}\nbuilt:  {}\nrustc:  {}\nnft:    {}\n",
            version.version,
            version.commit,
            version.build_date,
            version.rustc,
            version.nft.as_deref().unwrap_or("not found")
        ),
    };
    print!("{text}");
    Ok(Exit::Success)
}

//! The churn driver: `proxier run` (the real binary) in a network namespace against the stand-in API
//! server holding a generated cluster, under a stream of random endpoint and Service changes; measures
//! event → kernel latency, RSS, `/healthz` and syncs, and checks the kernel against the cluster at the
//! end (see driver.rs). Needs root, `ip` and `nft`. docs/performance.md has the runs and their commands.
//!
//! ```text
//! churn run [--services N] [--endpoints N] [--rate WRITES/S] [--seconds S] [--seed N] [--no-check] [--endpoints-only]
//!           [--proxier PATH] [--csv PATH --series LABEL] [-- PROXIER RUN FLAGS…]
//! churn sigterm [--services N] [--endpoints N] [--proxier PATH] [-- PROXIER RUN FLAGS…]
//! churn server [--services N] [--seconds S] [--watchers N]
//! ```
//!
//! `--proxier` defaults to the `proxier` built next to this example (`target/<profile>/proxier`).

#![allow(clippy::disallowed_methods)] // Runs proxier, ip and nft (clippy.toml).

mod driver;
mod events;

use std::path::PathBuf;
use std::time::Duration;

fn main() {
    if let Err(error) = run() {
        eprintln!("churn: {error}");
        std::process::exit(2);
    }
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (ours, theirs) = match args.iter().position(|a| a == "--") {
        Some(i) => (&args[..i], args[i + 1..].to_vec()),
        None => (&args[..], Vec::new()),
    };
    let mode = ours.first().map(String::as_str).unwrap_or("run");
    let value = |name: &str| ours.iter().position(|a| a == name).and_then(|i| ours.get(i + 1)).cloned();
    let number = |name: &str, default: u64| -> Result<u64, String> {
        value(name).map_or(Ok(default), |v| v.parse().map_err(|e| format!("{name} {v}: {e}")))
    };
    let proxier = match value("--proxier") {
        Some(path) => PathBuf::from(path),
        None => std::env::current_exe()
            .ok()
            .and_then(|e| Some(e.parent()?.parent()?.join("proxier")))
            .ok_or("cannot find the proxier binary; pass --proxier")?,
    };
    let config = driver::Config {
        proxier,
        services: number("--services", 10_000)? as usize,
        endpoints: number("--endpoints", 10)? as usize,
        seed: number("--seed", 1)?,
        rate: number("--rate", 1000)? as u32,
        duration: Duration::from_secs(number("--seconds", 60)?),
        proxier_args: theirs,
        quiet_timeout: Duration::from_secs(number("--quiet-timeout", 120)?),
        check: !ours.iter().any(|a| a == "--no-check"),
        verbose: true,
        keep_log: true,
        mix: if ours.iter().any(|a| a == "--endpoints-only") { driver::ENDPOINTS_ONLY } else { driver::MIX },
    };
    match mode {
        "run" => {
            let report = driver::run(&config)?;
            print!("{}", report.summary());
            if let Some(path) = value("--csv") {
                let series =
                    value("--series").unwrap_or_else(|| format!("{} Services × {}", config.services, config.endpoints));
                std::fs::write(&path, report.csv(&series)).map_err(|e| format!("{path}: {e}"))?;
            }
            Ok(())
        }
        "sigterm" => {
            match driver::sigterm_during_full_sync(&config)? {
                Some((took, phase)) => println!(
                    "SIGTERM during the first full sync ({} Services × {}; {phase}): exited after {:.1} ms",
                    config.services,
                    config.endpoints,
                    took.as_secs_f64() * 1000.0
                ),
                None => println!("no full sync was caught under way"),
            }
            Ok(())
        }
        "server" => {
            let watchers = number("--watchers", 1)? as usize;
            let (writes, seconds, lag) = driver::server_alone(config.services, config.duration, watchers)?;
            println!(
                "stand-in API server, {} Services × 10 stored, {watchers} EndpointSlice watchers: {writes} writes in {seconds:.1} s = {:.0} writes/s; every watcher had the last event {:.1} ms after it",
                config.services,
                writes as f64 / seconds,
                lag * 1000.0
            );
            Ok(())
        }
        other => Err(format!("unknown mode {other:?} (run, sigterm, server)")),
    }
}

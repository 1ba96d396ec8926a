//! The churn driver's quick mode (examples/churn/): a small generated cluster in the stand-in API
//! server, the real `proxier run` in a network namespace, a few seconds of random endpoint and Service
//! changes; every sampled change must reach the kernel, `/healthz` must stay 200, and at the end the
//! kernel must match the cluster Service by Service. No timing is asserted (speed lives in
//! docs/performance.md).

#![allow(clippy::disallowed_methods)] // The driver runs proxier, ip and nft (clippy.toml).

#[allow(dead_code, reason = "the test uses the driver's run, not its other modes")]
#[path = "../examples/churn/driver.rs"]
mod driver;
#[path = "../examples/churn/events.rs"]
mod events;

use std::time::Duration;

#[test]
fn churn_quick_mode_keeps_the_kernel_equal_to_the_cluster() {
    if !proxier_testkit::netns_available("churn quick mode") {
        return;
    }
    let config = driver::Config {
        proxier: env!("CARGO_BIN_EXE_proxier").into(),
        // Small and slow enough for an unoptimised proxier on a loaded 2-core machine: the point here
        // is correctness under every kind of change, not speed.
        services: 200,
        endpoints: 10,
        seed: 3,
        rate: 30,
        duration: Duration::from_secs(6),
        proxier_args: vec!["--min-sync-period".into(), "200ms".into()],
        quiet_timeout: Duration::from_secs(90),
        check: true,
        verbose: true,
        // Kept when an assertion fails (its path is in the summary); removed when the test passes.
        keep_log: true,
        mix: driver::MIX,
    };
    let report = driver::run(&config).expect("churn run");
    eprint!("{}", report.summary());
    assert!(report.writes >= 60, "too few writes: {}", report.writes);
    assert!(report.by_op.iter().all(|n| *n > 0), "every kind of change was made: {:?}", report.by_op);
    assert!(report.samples > 30, "sampled changes: {}", report.samples);
    assert_eq!(report.unresolved, 0, "sampled changes that never reached the kernel");
    assert_eq!(report.latencies.len() as u64, report.samples);
    assert!(report.checked && report.diff_lines == 0, "kernel differs from the cluster: {:?}", report.mismatches);
    assert_eq!(report.unhealthy(), 0, "/healthz answered other than 200: {:?}", report.timeline);
    assert_eq!(report.sync_failures, 0);
    assert!(report.syncs.2 > 0, "partial syncs: {:?}", report.syncs);
    assert!(report.timeline.iter().all(|t| t.1 > 0), "RSS sampled: {:?}", report.timeline);
    let csv = report.csv("quick");
    assert_eq!(csv.lines().filter(|l| l.starts_with("quick,")).count(), report.latencies.len());
    let _ = std::fs::remove_file(&report.log);
}

//! Prometheus metrics under kube-proxy's names, so existing dashboards and alerts work unchanged.
//!
//! Exposed in the OpenMetrics text format (which Prometheus scrapes natively); counters carry the
//! `_total` suffix there. Unlike newer kube-proxy, the sync metrics have no `ip_family` label: proxier
//! programs both families in one transaction. kube-proxy's
//! `kubeproxy_sync_proxy_rules_nftables_cleanup_failures_total` is not exported: proxier deletes stale
//! chains inside the sync transaction, so such a failure is a sync failure and counted as one. The
//! process metrics are Prometheus' standard `process_*` set, read from /proc at each scrape.

use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use proxier_core::ClusterState;
use proxier_nft::{SyncKind, SyncOutcome};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyLabel {
    pub traffic_policy: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabel {
    pub code: String,
}

pub struct Metrics {
    registry: Registry,
    sync_duration: Histogram,
    full_duration: Histogram,
    partial_duration: Histogram,
    last_sync: Gauge<f64, AtomicU64>,
    last_queued: Gauge<f64, AtomicU64>,
    network_programming: Histogram,
    no_local_endpoints: Family<PolicyLabel, Gauge>,
    sync_failures: Counter,
    service_changes: Counter,
    endpoint_changes: Counter,
    service_changes_pending: Gauge,
    endpoint_changes_pending: Gauge,
    conntrack_duration: Histogram,
    process: Process,
    conntrack_deleted: Counter,
    conntrack_failures: Counter,
    resync_repairs: Counter,
    refused_services: Gauge,
    pub healthz: Family<CodeLabel, Counter>,
    pub livez: Family<CodeLabel, Counter>,
}

fn sync_buckets() -> Histogram {
    // kube-proxy: ExponentialBuckets(0.001, 2, 15).
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

fn programming_buckets() -> Histogram {
    // kube-proxy: 0.25 s steps to 0.5 s, then 1 s to 59 s, 5 s to 115 s, 30 s to 300 s.
    let mut buckets = vec![0.25, 0.5];
    buckets.extend((1..=59).map(f64::from));
    buckets.extend((0..12).map(|i| 60.0 + 5.0 * f64::from(i)));
    buckets.extend((0..7).map(|i| 120.0 + 30.0 * f64::from(i)));
    Histogram::new(buckets)
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let m = Metrics {
            sync_duration: sync_buckets(),
            full_duration: sync_buckets(),
            partial_duration: sync_buckets(),
            last_sync: Gauge::default(),
            last_queued: Gauge::default(),
            network_programming: programming_buckets(),
            no_local_endpoints: Family::default(),
            sync_failures: Counter::default(),
            service_changes: Counter::default(),
            endpoint_changes: Counter::default(),
            service_changes_pending: Gauge::default(),
            endpoint_changes_pending: Gauge::default(),
            conntrack_duration: sync_buckets(),
            process: Process::default(),
            conntrack_deleted: Counter::default(),
            conntrack_failures: Counter::default(),
            resync_repairs: Counter::default(),
            refused_services: Gauge::default(),
            healthz: Family::default(),
            livez: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "kubeproxy_sync_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds",
            m.sync_duration.clone(),
        );
        registry.register(
            "kubeproxy_sync_full_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds for full resyncs",
            m.full_duration.clone(),
        );
        registry.register(
            "kubeproxy_sync_partial_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds for partial resyncs",
            m.partial_duration.clone(),
        );
        registry.register(
            "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
            "The last time proxy rules were successfully synced",
            m.last_sync.clone(),
        );
        registry.register(
            "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds",
            "The last time a sync of proxy rules was queued",
            m.last_queued.clone(),
        );
        registry.register(
            "kubeproxy_network_programming_duration_seconds",
            "In Cluster Network Programming Latency in seconds",
            m.network_programming.clone(),
        );
        registry.register(
            "kubeproxy_sync_proxy_rules_no_local_endpoints_total",
            "Number of services with a Local traffic policy and no endpoints",
            m.no_local_endpoints.clone(),
        );
        registry.register(
            "kubeproxy_sync_proxy_rules_nftables_sync_failures",
            "Number of failures of nftables syncs",
            m.sync_failures.clone(),
        );
        registry.register(
            "kubeproxy_sync_proxy_rules_service_changes_pending",
            "Pending proxy rules Service changes",
            m.service_changes_pending.clone(),
        );
        registry.register(
            "kubeproxy_sync_proxy_rules_endpoint_changes_pending",
            "Pending proxy rules Endpoint changes",
            m.endpoint_changes_pending.clone(),
        );
        registry.register(
            "kubeproxy_conntrack_reconciler_sync_duration_seconds",
            "ReconcileConntrackFlowsLatency latency in seconds",
            m.conntrack_duration.clone(),
        );
        m.process.register(&mut registry);
        registry.register(
            "kubeproxy_sync_proxy_rules_service_changes",
            "Cumulative proxy rules Service changes",
            m.service_changes.clone(),
        );
        registry.register(
            "kubeproxy_sync_proxy_rules_endpoint_changes",
            "Cumulative proxy rules Endpoint changes",
            m.endpoint_changes.clone(),
        );
        registry.register(
            "kubeproxy_conntrack_reconciler_deleted_entries",
            "Cumulative conntrack flows deleted by the conntrack cleanup",
            m.conntrack_deleted.clone(),
        );
        registry.register(
            "proxier_conntrack_cleanup_failures",
            "Failed conntrack cleanup runs",
            m.conntrack_failures.clone(),
        );
        registry.register(
            "proxier_sync_proxy_rules_drift_repairs",
            "Periodic resyncs that found proxier's tables changed behind its back and replaced them",
            m.resync_repairs.clone(),
        );
        registry.register(
            "proxier_refused_services",
            "Services left out because the kernel refused their rules (retried when they change)",
            m.refused_services.clone(),
        );
        registry.register("kubeproxy_proxy_healthz", "Cumulative proxy healthz HTTP status", m.healthz.clone());
        registry.register("kubeproxy_proxy_livez", "Cumulative proxy livez HTTP status", m.livez.clone());
        Metrics { registry, ..m }
    }

    /// The exposition text.
    pub fn encode(&self) -> String {
        self.process.update();
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    pub fn queued(&self) {
        self.last_queued.set(unix_now());
    }

    pub fn service_changed(&self) {
        self.service_changes.inc();
    }

    pub fn endpoints_changed(&self) {
        self.endpoint_changes.inc();
    }

    /// Service and EndpointSlice changes taken in and not yet synced.
    pub fn pending(&self, (services, endpoints): (usize, usize)) {
        self.service_changes_pending.set(i64::try_from(services).unwrap_or(i64::MAX));
        self.endpoint_changes_pending.set(i64::try_from(endpoints).unwrap_or(i64::MAX));
    }

    pub fn sync_failed(&self) {
        self.sync_failures.inc();
    }

    /// Records a successful sync. `state` is the cluster state after it.
    pub fn synced(&self, outcome: &SyncOutcome, state: &ClusterState) {
        let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.refused_services.set(gauge(state.left_out().len()));
        let seconds = outcome.duration.as_secs_f64();
        self.sync_duration.observe(seconds);
        match outcome.kind {
            SyncKind::Full => self.full_duration.observe(seconds),
            SyncKind::Partial => self.partial_duration.observe(seconds),
        }
        self.last_sync.set(unix_now());
        for latency in &outcome.network_programming {
            self.network_programming.observe(latency.as_secs_f64());
        }
        self.conntrack_deleted.inc_by(outcome.conntrack.deleted);
        if outcome.conntrack.filters > 0 {
            self.conntrack_duration.observe(outcome.conntrack.duration.as_secs_f64());
        }
        self.conntrack_failures.inc_by(outcome.conntrack.errors.len() as u64);
        if outcome.drifted {
            self.resync_repairs.inc();
        }
        let (internal, external) = state.no_local_endpoints();
        self.no_local_endpoints.get_or_create(&PolicyLabel { traffic_policy: "internal".into() }).set(gauge(internal));
        self.no_local_endpoints.get_or_create(&PolicyLabel { traffic_policy: "external".into() }).set(gauge(external));
    }
}

fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_secs_f64()
}

/// Prometheus' standard process metrics (as client_golang's process collector exports them) and
/// proxier's build info.
#[derive(Default)]
struct Process {
    cpu_seconds: Counter<f64, AtomicU64>,
    resident_bytes: Gauge,
    virtual_bytes: Gauge,
    start_time: Gauge<f64, AtomicU64>,
    open_fds: Gauge,
    max_fds: Gauge,
    build_info: Family<BuildLabels, Gauge>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
    platform: String,
}

impl Process {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            self.cpu_seconds.clone(),
        );
        registry.register(
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            self.resident_bytes.clone(),
        );
        registry.register("process_virtual_memory_bytes", "Virtual memory size in bytes", self.virtual_bytes.clone());
        registry.register(
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds",
            self.start_time.clone(),
        );
        registry.register("process_open_fds", "Number of open file descriptors", self.open_fds.clone());
        registry.register("process_max_fds", "Maximum number of open file descriptors", self.max_fds.clone());
        registry.register(
            "proxier_build_info",
            "proxier's version and platform; the value is always 1",
            self.build_info.clone(),
        );
        let platform = format!("{}/{}", std::env::consts::OS, std::env::consts::ARCH);
        self.build_info.get_or_create(&BuildLabels { version: env!("CARGO_PKG_VERSION").into(), platform }).set(1);
        self.start_time.set(process_start_time().unwrap_or(0.0));
    }

    /// Reads /proc/self; a value that cannot be read keeps its last one.
    fn update(&self) {
        let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        if let Some(stat) = self_stat() {
            let ticks = clock_ticks();
            // A counter only moves forward: add what /proc says was spent since the last scrape.
            let total = (stat.utime + stat.stime) as f64 / ticks;
            let delta = total - self.cpu_seconds.get();
            if delta > 0.0 {
                self.cpu_seconds.inc_by(delta);
            }
            self.virtual_bytes.set(gauge(stat.vsize));
            self.resident_bytes.set(gauge(stat.rss.saturating_mul(page_size())));
        }
        if let Ok(entries) = std::fs::read_dir("/proc/self/fd") {
            self.open_fds.set(gauge(entries.count() as u64));
        }
        if let Some(limit) = max_fds() {
            self.max_fds.set(gauge(limit));
        }
    }
}

/// The fields of /proc/self/stat the process metrics use.
struct Stat {
    utime: u64,
    stime: u64,
    starttime: u64,
    vsize: u64,
    rss: u64,
}

fn self_stat() -> Option<Stat> {
    parse_stat(&std::fs::read_to_string("/proc/self/stat").ok()?)
}

/// Parses /proc/PID/stat: the command name (field 2) may hold spaces and parentheses, so fields are
/// counted after its last `)`.
fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): field N is fields[N - 3].
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(Stat { utime: field(14)?, stime: field(15)?, starttime: field(22)?, vsize: field(23)?, rss: field(24)? })
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf takes no pointers.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

fn page_size() -> u64 {
    // SAFETY: sysconf takes no pointers.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).ok().filter(|&s| s > 0).unwrap_or(4096)
}

/// The soft limit on open files.
fn max_fds() -> Option<u64> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we own.
    (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0).then_some(limit.rlim_cur)
}

/// The process's start as seconds since the epoch: boot time (/proc/stat `btime`) plus its start in
/// clock ticks after boot.
fn process_start_time() -> Option<f64> {
    let boot: f64 = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|line| line.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    Some(boot + self_stat()?.starttime as f64 / clock_ticks())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let text = "4242 (odd) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 12345 \
                    104857600 2560 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n";
        let stat = parse_stat(text).unwrap();
        assert_eq!((stat.utime, stat.stime, stat.starttime, stat.vsize, stat.rss), (250, 50, 12345, 104_857_600, 2560));
        assert!(parse_stat("garbage").is_none());
    }

    #[test]
    fn process_and_build_metrics_are_exported() {
        let metrics = Metrics::new();
        metrics.pending((2, 3));
        let text = metrics.encode();
        for name in [
            "process_cpu_seconds_total ",
            "process_resident_memory_bytes ",
            "process_start_time_seconds ",
            "process_open_fds ",
            "process_max_fds ",
            "proxier_build_info{version=\"",
            "kubeproxy_sync_proxy_rules_service_changes_pending 2",
            "kubeproxy_sync_proxy_rules_endpoint_changes_pending 3",
            "kubeproxy_conntrack_reconciler_sync_duration_seconds_count 0",
        ] {
            assert!(text.contains(name), "missing {name} in\n{text}");
        }
        assert!(!text.contains("nftables_cleanup_failures"), "not exported: a cleanup failure is a sync failure");
        let resident = text.lines().find_map(|l| l.strip_prefix("process_resident_memory_bytes ")).unwrap();
        assert!(resident.parse::<u64>().unwrap() > 0);
    }
}

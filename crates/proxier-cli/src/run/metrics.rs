//! Prometheus metrics under kube-proxy's names, so existing dashboards and alerts work unchanged.
//!
//! Exposed in the OpenMetrics text format (which Prometheus scrapes natively); counters carry the
//! `_total` suffix there. Unlike newer kube-proxy, the sync metrics have no `ip_family` label: proxier
//! programs both families in one transaction.

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
    cleanup_failures: Counter,
    service_changes: Counter,
    endpoint_changes: Counter,
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
            cleanup_failures: Counter::default(),
            service_changes: Counter::default(),
            endpoint_changes: Counter::default(),
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
            "kubeproxy_sync_proxy_rules_nftables_cleanup_failures",
            "Number of failures of nftables cleanup (stale objects are deleted inside the sync transaction)",
            m.cleanup_failures.clone(),
        );
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

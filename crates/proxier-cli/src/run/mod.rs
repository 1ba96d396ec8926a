//! `proxier run`: keeps this node's rules in step with the cluster.
//!
//! Watches feed the [`proxier_core::ClusterState`] a [`Proxier`] owns (the state folds each watch's
//! lists, so a relist drops what was deleted while the watch was down); a sync loop programs the kernel: at most once per `--min-sync-period`
//! (bursts of changes become one transaction), a full check against the kernel every `--sync-period`,
//! retries with backoff after an `nft` failure. The first sync waits until every watch has listed,
//! so a restart never programs a partial cluster; until then an earlier run's rules stay in force.
//! SIGTERM or SIGINT stops it and leaves the rules in place, as kube-proxy does (`proxier delete`
//! removes them).
//!
//! At start, as kube-proxy: the conntrack and OOM tuning ([`tuning`]), a warning for each of
//! kube-proxy's leftovers ([`leftovers`]), and a start line with the effective configuration.
//! `--cleanup` and `--init-only` do one of those steps and exit.

pub mod addresses;
pub mod config;
mod http;
mod leftovers;
pub mod logging;
mod metrics;
mod service_counters;
mod tuning;
mod watch;

use std::sync::Arc;
use std::time::Duration;

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::watcher::Event;
use proxier_core::state::Watched;
use proxier_core::{ClusterState, WatchEvent};
use proxier_nft::netlink::{NftSocket, TableWatch};
use proxier_nft::{Conntrack, Nft, Proxier, SyncKind, SyncOutcome};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::exit::Exit;
pub use config::RunArgs;
use config::Settings;
use http::{Health, HealthChecks};
use metrics::Metrics;
use watch::Update;

/// The taint the cluster autoscaler puts on a Node it is about to delete.
const TAINT_TO_BE_DELETED: &str = "ToBeDeletedByClusterAutoscaler";

/// Whether `/healthz` should tell load balancers to stop sending new connections here, as kube-proxy
/// does: the Node is being deleted, or the cluster autoscaler is about to delete it.
fn node_is_leaving(node: &k8s_openapi::api::core::v1::Node) -> bool {
    let tainted = node.spec.iter().flat_map(|s| s.taints.iter().flatten()).any(|t| t.key == TAINT_TO_BE_DELETED);
    node.metadata.deletion_timestamp.is_some() || tainted
}

/// Runs until SIGTERM or SIGINT: [`Exit::Success`] on a signal (or when `--cleanup` / `--init-only`
/// is done), [`Exit::BadInput`] for bad settings, [`Exit::Changed`] (status 1) when it cannot start
/// (`--init-only`: could not set a value) or stops on an error, [`Exit::NftFailed`] when `--cleanup`'s
/// nft fails.
pub fn main(args: &RunArgs) -> Exit {
    // The file is read before logging starts: it may choose the log format and level.
    let file = match args.file() {
        Ok(file) => file,
        Err(error) => {
            eprintln!("proxier: {error}");
            return Exit::BadInput;
        }
    };
    let (format, verbosity) = args.logging(&file);
    logging::init(format, &logging::filter(verbosity));
    let path = args.config.as_deref().map(|p| p.display().to_string()).unwrap_or_default();
    for (field, why) in &file.ignored {
        tracing::warn!(file = %path, field, why, "configuration field ignored");
    }
    if args.node.nodeport().localhost {
        tracing::warn!(flag = "--nodeport-addresses", why = crate::flags::LOCALHOST_NODEPORTS, "localhost ignored");
    }
    let settings = match args.settings(&file) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("proxier: {error}");
            return Exit::BadInput;
        }
    };
    let nft = Nft::new(&settings.nft);
    if settings.cleanup {
        return match nft.delete_tables(&settings.table) {
            Ok(removed) => {
                for family in &removed {
                    let family = if *family == proxier_core::IpFamily::V4 { "ip" } else { "ip6" };
                    tracing::info!("cleanup: deleted table {family} {}", settings.table);
                }
                if removed.is_empty() {
                    tracing::info!("cleanup: no table {} to delete", settings.table);
                }
                Exit::Success
            }
            Err(error) => {
                eprintln!("proxier: cleanup failed: {error}");
                Exit::NftFailed
            }
        };
    }
    let kernel = tuning::Kernel::default();
    // The OOM score is the process's own, and lowering it needs CAP_SYS_RESOURCE, which a container
    // rarely has (the kubelet sets one by QoS class): as kube-proxy, a failure is only noted.
    let oom = kernel.apply_oom_score_adj(settings.oom_score_adj);
    match oom.failed.first() {
        Some(failure) => tracing::info!("oom_score_adj left as it is: {failure}"),
        None => oom.log(),
    }
    let report = kernel.apply_conntrack(&settings.conntrack_settings, tuning::cores());
    report.log();
    if settings.init_only {
        if !report.missing.is_empty() {
            tracing::warn!(
                not_set = %report.missing.join(" "),
                "nf_conntrack is not loaded yet: these values are set when proxier runs"
            );
        }
        return if report.failed.is_empty() { Exit::Success } else { Exit::Changed };
    }
    leftovers::warn(&nft);
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        node = %settings.node.node_name,
        node_from = settings.node_name_source,
        config = %settings.as_kube_proxy_configuration(),
        "proxier starting"
    );
    // Before any thread starts: arenas are handed out to threads as they first allocate.
    tune_allocator();
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("proxier: cannot start: {error}");
            return Exit::Changed;
        }
    };
    match runtime.block_on(run(settings, !report.missing.is_empty())) {
        Ok(()) => Exit::Success,
        Err(error) => {
            eprintln!("proxier: {error:#}");
            Exit::Changed
        }
    }
}

/// The Kubernetes client, and the API server's address for log lines.
async fn client(settings: &Settings) -> anyhow::Result<(kube::Client, String)> {
    let config = match &settings.kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path)?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?
        }
        None => kube::Config::infer().await?,
    };
    let server = config.cluster_url.to_string();
    Ok((kube::Client::try_from(config)?, server))
}

async fn run(settings: Settings, retune: bool) -> anyhow::Result<()> {
    use anyhow::Context;
    let (client, server) = client(&settings).await.context("cannot configure the Kubernetes client")?;
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::new(settings.sync_period));
    if let Some(address) = settings.healthz {
        let listener = TcpListener::bind(address).await.with_context(|| format!("healthz on {address}"))?;
        http::serve(listener, health.handler(metrics.clone()));
    }
    if let Some(address) = settings.metrics {
        let listener = TcpListener::bind(address).await.with_context(|| format!("metrics on {address}"))?;
        let configz = serde_json::json!({"kubeproxy.config.k8s.io": settings.as_kube_proxy_configuration()});
        let counters = settings.counters.then(|| Arc::new(service_counters::ServiceCounters::new(&settings.table)));
        http::serve(listener, http::metrics_handler(metrics.clone(), health.clone(), configz.to_string(), counters));
    }

    let state = ClusterState::new(settings.node.clone());
    let mut proxier =
        Proxier::new(state, settings.table.clone(), Nft::new(&settings.nft)).with_counters(settings.counters);
    if let Some(program) = &settings.conntrack {
        proxier = proxier.with_conntrack(Conntrack::new(program));
    }
    if settings.netlink {
        // In this process's network namespace, which is the one `nft` programs.
        match NftSocket::open().and_then(|socket| Ok((socket, TableWatch::open(&settings.table)?))) {
            Ok((socket, watch)) => proxier = proxier.with_netlink(socket, watch),
            Err(error) => {
                tracing::warn!(%error, "no nf_tables netlink socket: every change goes through nft, and the periodic check lists the tables")
            }
        }
    }
    let (sender, mut updates) = mpsc::channel(1024);
    watch::start(client, &settings.node.node_name, &server, sender);
    tracing::info!(node = %settings.node.node_name, table = %settings.table, %server, "watching the cluster");

    // A sync can take seconds at scale and cannot be interrupted where it runs (in `nft`, or in the
    // kernel processing a batch), so the signal is not left to the loop: SIGTERM ends the process at
    // once, mid-sync too. That is safe because the kernel applies a transaction whole or not at all,
    // and the rules stay either way; a DaemonSet's grace period is not spent waiting.
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::spawn(async move {
        let signal = tokio::select! {
            _ = sigterm.recv() => "SIGTERM",
            _ = tokio::signal::ctrl_c() => "SIGINT",
        };
        tracing::info!("{signal}: stopping; proxier's rules stay in place (`proxier delete` removes them)");
        std::process::exit(0);
    });
    // Local addresses matter only with --nodeport-addresses CIDRs; then they are polled (getifaddrs is
    // cheap) so a new secondary address or VIP serves NodePorts within a second.
    let follow_addresses = !settings.nodeport_cidrs.is_empty();
    let mut address_tick = tokio::time::interval(Duration::from_secs(1));
    address_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut state = Loop::new(settings, metrics, health.clone());
    state.retune = retune;
    loop {
        let deadline = state.deadline(&proxier);
        let far = Instant::now() + Duration::from_secs(3600);
        tokio::select! {
            update = updates.recv() => match update {
                Some(update) => state.handle(&mut proxier, update),
                None => break,
            },
            () = tokio::time::sleep_until(deadline.unwrap_or(far)), if deadline.is_some() => state.sync(&mut proxier).await,
            _ = address_tick.tick(), if follow_addresses => state.follow_addresses(&mut proxier),
        }
    }
    Ok(())
}

struct Loop {
    settings: Settings,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    checks: HealthChecks,
    /// When the oldest change not yet programmed arrived (kube-proxy's "queued update").
    queued: Option<std::time::Instant>,
    last_attempt: Option<Instant>,
    last_check: Instant,
    failures: u32,
    retry_at: Option<Instant>,
    /// Service and EndpointSlice changes taken in since the last successful sync.
    pending: (usize, usize),
    /// Whether conntrack values whose files were missing at start (nf_conntrack not loaded) are to be
    /// set after the first successful sync, which loads it.
    retune: bool,
    /// The local addresses last seen (with --nodeport-addresses CIDRs).
    local: Vec<std::net::IpAddr>,
}

impl Loop {
    fn new(settings: Settings, metrics: Arc<Metrics>, health: Arc<Health>) -> Loop {
        Loop {
            settings,
            metrics,
            checks: HealthChecks::new(health.clone()),
            health,
            queued: None,
            last_attempt: None,
            last_check: Instant::now(),
            failures: 0,
            retry_at: None,
            pending: (0, 0),
            retune: false,
            local: Vec::new(),
        }
    }

    /// When the next sync is due; `None` until every watch has listed once.
    fn deadline(&self, proxier: &Proxier) -> Option<Instant> {
        if !proxier.state().is_complete() {
            return None;
        }
        let now = Instant::now();
        let earliest = self.last_attempt.map_or(now, |t| t + self.settings.min_sync_period);
        if let Some(retry) = self.retry_at {
            return Some(retry.max(earliest));
        }
        let mut due = self.last_check + self.settings.sync_period;
        if proxier.has_pending_changes() {
            due = due.min(earliest);
        }
        if let Some(cleanup) = proxier.next_cleanup() {
            due = due.min(Instant::from_std(cleanup).max(earliest));
        }
        Some(due)
    }

    fn handle(&mut self, proxier: &mut Proxier, update: Update) {
        let mut node_event = false;
        let state = proxier.state_mut();
        let changed = match update {
            Update::Service(event) => {
                let n = state.fold(watch_event(*event));
                (0..n).for_each(|_| self.metrics.service_changed());
                self.pending.0 += n;
                n
            }
            Update::Slice(event) => {
                let n = state.fold(watch_event(*event));
                (0..n).for_each(|_| self.metrics.endpoints_changed());
                self.pending.1 += n;
                n
            }
            Update::Node(event) => {
                match &*event {
                    Event::Apply(node) | Event::InitApply(node) => {
                        self.health.set_node_deleting(node_is_leaving(node));
                    }
                    Event::Delete(_) => self.health.set_node_deleting(true),
                    Event::Init | Event::InitDone => {}
                }
                node_event = true;
                state.fold(watch_event(*event))
            }
        };
        if changed > 0 {
            self.metrics.queued();
            self.queued.get_or_insert_with(std::time::Instant::now);
        }
        self.metrics.pending(self.pending);
        self.health.set_queued(self.queued);
        if node_event {
            // The Node's addresses feed the NodePort addresses when CIDRs are configured.
            self.reresolve(proxier);
        }
    }

    async fn sync(&mut self, proxier: &mut Proxier) {
        let now = Instant::now();
        self.last_attempt = Some(now);
        let periodic = now >= self.last_check + self.settings.sync_period && self.retry_at.is_none();
        if !proxier.is_committed() {
            // At scale a full sync takes seconds: say it started, so a long silence is not a hang.
            tracing::info!(services = proxier.state().services().count(), "full sync: programming the whole cluster");
        }
        let result = tokio::task::block_in_place(|| if periodic { proxier.resync() } else { proxier.sync() });
        if periodic {
            self.last_check = now;
        }
        match result {
            Ok(outcome) => {
                self.queued = None;
                self.failures = 0;
                self.retry_at = None;
                self.pending = (0, 0);
                self.metrics.pending(self.pending);
                self.report(&outcome);
                if std::mem::take(&mut self.retune) {
                    let kernel = tuning::Kernel::default();
                    kernel.apply_conntrack(&self.settings.conntrack_settings, tuning::cores()).log();
                }
                if outcome.kind == SyncKind::Full {
                    release_free_memory();
                }
                self.metrics.synced(&outcome, proxier.state());
                self.health.updated();
                let state = proxier.state();
                self.checks.reconcile(&state.node_port_ips(), state.health_checks()).await;
            }
            Err(error) => {
                self.failures = self.failures.saturating_add(1);
                let backoff = Duration::from_secs(1u64 << self.failures.clamp(1, 6).saturating_sub(1))
                    .min(self.settings.sync_period);
                self.retry_at = Some(Instant::now() + backoff);
                self.metrics.sync_failed();
                self.health.set_queued(self.queued);
                tracing::error!(%error, retry_in = ?backoff, "sync failed; the previous rules are intact, a full sync follows");
            }
        }
    }

    fn report(&self, outcome: &SyncOutcome) {
        if outcome.drifted {
            tracing::warn!("proxier's tables were changed behind its back: replaced them");
        }
        for error in &outcome.conntrack.errors {
            tracing::warn!(%error, "conntrack cleanup failed");
        }
        tracing::info!(
            kind = ?outcome.kind,
            changes = outcome.changes,
            elements = outcome.elements,
            duration = ?outcome.duration,
            conntrack_deleted = outcome.conntrack.deleted,
            by_netlink = outcome.by_netlink,
            "synced"
        );
    }

    /// Polls the local addresses; on a change, recomputes the NodePort addresses.
    fn follow_addresses(&mut self, proxier: &mut Proxier) {
        match addresses::local_addresses() {
            Ok(local) if local != self.local => {
                tracing::info!(addresses = ?local, "local addresses changed");
                self.local = local;
                self.reresolve(proxier);
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "cannot read the local addresses"),
        }
    }

    /// Hands proxier the node configuration for the current Node object and local addresses (a no-op
    /// when nothing changed, and always without --nodeport-addresses CIDRs).
    fn reresolve(&mut self, proxier: &mut Proxier) {
        if self.settings.nodeport_cidrs.is_empty() {
            return;
        }
        let name = &self.settings.node.node_name;
        let state = proxier.state();
        let node = state.nodes().find(|n| n.metadata.name.as_deref() == Some(name.as_str()));
        let config = addresses::resolve(
            &self.settings.node,
            self.settings.nodeport_primary,
            &self.settings.nodeport_cidrs,
            node,
            &self.local,
        );
        if &config != state.config() && proxier.state_mut().set_config(config) {
            self.metrics.queued();
            self.queued.get_or_insert_with(std::time::Instant::now);
            self.health.set_queued(self.queued);
        }
    }
}

/// Keeps glibc's heap from holding on to the peaks of bursty work (measured under churn, see
/// docs/performance.md, "Live mode under churn"; RSS at 10k Services 231 → 143 MiB, flat over time):
/// - one arena: each thread that allocates (tokio's workers, the threads `block_in_place` hands a
///   worker to, the blocking pool) otherwise gets an arena of its own, up to 8 per core, each keeping
///   the freed peak of whatever that thread last did; proxier's threads seldom allocate at once, so the
///   arena lock is not contended;
/// - fixed trim and mmap thresholds: by default glibc raises both whenever a large block is freed (up to
///   32 and 64 MiB), after which the freed top of the heap is kept and large buffers land in the heap,
///   where they fragment it. Fixed, freed memory above 1 MiB at the top goes back to the kernel, and
///   buffers of 256 KiB or more (a sync's element lists, a watch's read buffers) are mapped and
///   unmapped on their own.
fn tune_allocator() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt takes no pointers; it runs before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 20);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 10);
    }
}

/// A full sync's transient memory (every Service's share, the whole transaction) is freed by the time
/// it returns; hand the free heap back to the kernel rather than keep the peak resident.
fn release_free_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim takes no pointers and only releases free memory.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// A kube-runtime watch event in the core's terms (kube's `Init`/`InitApply`/`InitDone` are a list).
fn watch_event<K: Watched>(event: Event<K>) -> WatchEvent<K> {
    match event {
        Event::Apply(object) => WatchEvent::Apply(object),
        Event::Delete(object) => WatchEvent::Delete(object),
        Event::Init => WatchEvent::ListStart,
        Event::InitApply(object) => WatchEvent::ListItem(object),
        Event::InitDone => WatchEvent::ListDone,
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{Node, NodeSpec, Taint};

    use super::node_is_leaving;

    #[test]
    fn a_node_is_leaving_when_deleted_or_tainted_by_the_autoscaler() {
        let mut node = Node::default();
        assert!(!node_is_leaving(&node));
        node.spec = Some(NodeSpec {
            taints: Some(vec![Taint {
                key: "ToBeDeletedByClusterAutoscaler".into(),
                effect: "NoSchedule".into(),
                ..Default::default()
            }]),
            ..Default::default()
        });
        assert!(node_is_leaving(&node));
        let mut deleted = Node::default();
        deleted.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Default::default()));
        assert!(node_is_leaving(&deleted));
    }
}

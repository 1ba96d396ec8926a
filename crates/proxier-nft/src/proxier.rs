//! [`Proxier`]: the long-lived object a node agent embeds. It holds what it was fed of the cluster,
//! reduced to what the rules depend on, and keeps the kernel in step with one atomic transaction per
//! [`Proxier::sync`] whose cost follows the size of the change, not of the cluster.
//!
//! - Each Service's rules are computed on their own ([`proxier_core::service_rules`]) when it or one
//!   of its EndpointSlices changes, and laid out as a small table of its own; proxier's tables are the
//!   union of these (see the `ledger` module). A sync replaces the changed Services' shares and writes
//!   exactly the objects that appear or disappear: the kernel is not read, nothing else is touched.
//!   Nothing changed ⇒ `nft` is not run at all.
//! - A destination two Services claim belongs to the first in namespace/name order, as in
//!   [`proxier_core::compute()`]; when it goes, the next one takes it over.
//! - The first sync, the first after a failure, one after [`Proxier::force_full_sync`], and one after
//!   a change of the node's settings or of its own Node object (its addresses, zone, podCIDRs: every
//!   Service depends on them) replace proxier's tables whole ([`Transaction::replacing`]): an
//!   existing table of an earlier run is taken over in that one transaction, so Services never stop
//!   answering.
//! - A failed `nft` run leaves the kernel as it was; the next sync is full.
//! - Chains and sets no longer used are emptied at once and deleted by a later sync at least
//!   [`STALE_GRACE`] later: kernels before 6.2 release a chain late after the last map element
//!   pointing at it goes ([`Proxier::next_cleanup`] says when).
//! - [`Proxier::resync`] is the periodic check: it lists proxier's own tables from the kernel, compares
//!   them with the committed state and, only if someone changed them, replaces them whole.
//! - After a sync, stale UDP conntrack entries are deleted ([`crate::conntrack`]) when a UDP
//!   destination lost endpoints or went from none to some.
//!
//! ```no_run
//! use k8s_openapi::api::core::v1::Service;
//! use proxier_core::NodeConfig;
//! use proxier_nft::{Nft, Proxier};
//!
//! let config = NodeConfig { node_name: "node-a".into(), ..Default::default() };
//! let mut proxier = Proxier::new(config, "proxier", Nft::default());
//! let service: Service = serde_json::from_str(r#"{"metadata":{"namespace":"shop","name":"web"},
//!     "spec":{"clusterIP":"10.96.0.20","ports":[{"port":80,"protocol":"TCP"}]}}"#)?;
//! proxier.apply_service(service);
//! let outcome = proxier.sync()?; // full: takes over any table of an earlier run
//! println!("{:?} sync, {} changes in {:?}", outcome.kind, outcome.changes, outcome.duration);
//! proxier.delete_service("shop", "web");
//! proxier.sync()?; // partial: only the web elements go
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::{Node, NodeSpec, NodeStatus, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use proxier_core::compute::orphan_slice;
use proxier_core::endpoints::{EndpointIndex, EndpointInfo, LABEL_SERVICE_NAME, PortKey};
use proxier_core::{
    Action, Destination, DestinationKind, Diagnostic, FamilyRules, HealthCheck, IpFamily, NodeConfig, NodeContext,
    ObjectRef, ParsedService, Protocol, RuleModel, ServiceRules, assemble, service_rules,
};

use crate::conntrack::{Conntrack, ConntrackFilter, ConntrackOutcome};
use crate::diff::canonical;
use crate::layout::family_table_with;
use crate::ledger::{Journal, Ledger};
use crate::refusal::{Refused, refused_services};
use crate::ruleset::Table;
use crate::runner::{Nft, NftError};
use crate::transaction::{Change, Transaction};

pub use crate::ledger::STALE_GRACE;

/// The EndpointSlice annotation the EndpointSlice controller sets to the time of the change (a pod
/// or Service update) that caused the slice's last update.
pub const LAST_CHANGE_TRIGGER_TIME: &str = "endpoints.kubernetes.io/last-change-trigger-time";

/// Whether a sync replaced the tables whole or changed them in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncKind {
    /// The tables were replaced whole.
    Full,
    /// Only the changes since the committed state were written.
    Partial,
}

/// What one [`Proxier::sync`] or [`Proxier::resync`] did.
#[derive(Debug, Clone)]
pub struct SyncOutcome {
    /// Full or partial.
    pub kind: SyncKind,
    /// Steps in the transaction; 0 means `nft` was not run.
    pub changes: usize,
    /// Set and map elements added or deleted (all of them for a full sync).
    pub elements: usize,
    /// Computing, rendering and applying, including conntrack cleanup.
    pub duration: Duration,
    /// For [`Proxier::resync`]: the kernel's tables differed from the committed state.
    pub drifted: bool,
    /// The transaction that was applied (empty when nothing changed).
    pub transaction: Transaction,
    /// For each EndpointSlice change now programmed that carried a
    /// [`LAST_CHANGE_TRIGGER_TIME`]: the time from that trigger until now.
    pub network_programming: Vec<Duration>,
    /// Stale UDP conntrack entries deleted after the sync.
    pub conntrack: ConntrackOutcome,
    /// Services newly left out because the kernel refused their rules (a full sync that failed
    /// found them with `nft -c`, see [`crate::refusal`], and applied the rest), each with nft's
    /// message. They stay out until they or their endpoints change; [`Proxier::refused`] lists them.
    pub refused: Refused,
}

/// A failed sync. The kernel and the committed state are as before it; the next sync is full.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// `nft` refused or failed the transaction.
    #[error("{kind:?} sync failed: {source}")]
    Apply {
        /// The kind of sync that failed.
        kind: SyncKind,
        /// nft's error.
        #[source]
        source: NftError,
    },
    /// [`Proxier::resync`] could not list the kernel's tables or load the committed ones for comparison.
    #[error("cannot read proxier's tables from the kernel: {0}")]
    Read(#[source] NftError),
}

type Key = (String, String);

/// A destination's identity: two Services cannot both own one.
type DestinationKey = (IpAddr, Protocol, u16);

/// A node's service proxy: cluster objects in, kernel rules out. See the module documentation.
#[derive(Debug)]
pub struct Proxier {
    config: NodeConfig,
    table: String,
    nft: Nft,
    conntrack: Option<Conntrack>,
    /// Whether the tables count new connections per destination.
    counters: bool,
    /// Node objects, reduced to what the rules depend on: only this node's own matters, but the
    /// settings may name another node.
    nodes: BTreeMap<String, Node>,
    context: NodeContext,
    services: BTreeMap<Key, ServiceEntry>,
    slices: BTreeMap<Key, SliceEntry>,
    /// Each Service's slices, by the slices' service-name label.
    slices_of: BTreeMap<Key, Keys>,
    /// The Services whose laid-out rules hold each destination; the first in namespace/name order owns it.
    claims: BTreeMap<DestinationKey, Keys>,
    /// Services whose objects changed since their rules were last computed.
    dirty: BTreeSet<Key>,
    /// When the oldest change not yet programmed arrived.
    queued_at: Option<Instant>,
    force_full: bool,
    /// What every laid-out Service and the node contribute to the tables.
    ledger: Ledger,
    /// Whether the kernel holds what the ledger says: false before the first successful sync and
    /// after a failure.
    committed: bool,
    /// Whether rules were ever computed (conntrack entries predating proxier are not touched).
    computed: bool,
    /// Conntrack cleanups of changes whose sync failed: run after the next successful one.
    pending_filters: BTreeSet<ConntrackFilter>,
    /// Service ports with a Local policy and no local endpoint, per Service: (internal, external).
    no_local: BTreeMap<Key, (usize, usize)>,
    /// Health-check nodePorts, per Service.
    health_checks: BTreeMap<Key, Vec<HealthCheck>>,
    /// Services left out because the kernel refused their rules, until they change.
    refused: Refused,
    /// Trigger times of EndpointSlice changes not yet programmed.
    triggers: Vec<SystemTime>,
    /// The kernel's canonical listing of the committed tables, by `generation`.
    listing: Option<(u64, Vec<Option<String>>)>,
    generation: u64,
}

#[derive(Debug, Default)]
struct ServiceEntry {
    /// The Service as last fed; `None` once deleted, until a sync takes its rules away.
    parsed: Option<ParsedService>,
    /// The rules in the ledger.
    laid_out: Option<LaidOut>,
}

/// A Service's rules as programmed: all it computed, less the destinations an earlier Service owns.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LaidOut {
    rules: ServiceRules,
    claimed_by_others: BTreeSet<DestinationKey>,
}

#[derive(Debug, PartialEq, Eq)]
struct SliceEntry {
    service: Option<Key>,
    endpoints: Vec<(PortKey, Vec<EndpointInfo>)>,
    diagnostics: Vec<Diagnostic>,
    trigger: Option<SystemTime>,
}

/// A small sorted set of names: most Services have one slice and most destinations one claimant,
/// and a `BTreeSet` allocates room for eleven.
#[derive(Debug, Default)]
struct Keys(Vec<Key>);

impl Keys {
    fn insert(&mut self, key: Key) {
        if let Err(i) = self.0.binary_search(&key) {
            self.0.insert(i, key);
        }
    }

    fn remove(&mut self, key: &Key) {
        if let Ok(i) = self.0.binary_search(key) {
            self.0.remove(i);
        }
    }

    fn first(&self) -> Option<&Key> {
        self.0.first()
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn iter(&self) -> std::slice::Iter<'_, Key> {
        self.0.iter()
    }
}

impl<'a> IntoIterator for &'a Keys {
    type Item = &'a Key;
    type IntoIter = std::slice::Iter<'a, Key>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// A Service whose laid-out rules a sync replaces.
struct Replaced {
    old: Option<LaidOut>,
    new: Option<LaidOut>,
}

impl Proxier {
    /// A proxier for the node `config` describes, owning table `table` in the ip and ip6 families.
    /// Conntrack cleanup is off until [`Proxier::with_conntrack`].
    pub fn new(config: NodeConfig, table: impl Into<String>, nft: Nft) -> Proxier {
        let table = table.into();
        Proxier {
            context: NodeContext::new(None, &config),
            config,
            ledger: Ledger::new(&table),
            table,
            nft,
            conntrack: None,
            counters: true,
            nodes: BTreeMap::new(),
            services: BTreeMap::new(),
            slices: BTreeMap::new(),
            slices_of: BTreeMap::new(),
            claims: BTreeMap::new(),
            dirty: BTreeSet::new(),
            queued_at: None,
            force_full: false,
            committed: false,
            computed: false,
            pending_filters: BTreeSet::new(),
            no_local: BTreeMap::new(),
            health_checks: BTreeMap::new(),
            refused: Refused::new(),
            triggers: Vec::new(),
            listing: None,
            generation: 0,
        }
    }

    /// Lays the tables out with per-destination counters (the default) or without; see
    /// [`crate::layout::family_table_with`]. Counts carry over every sync that would reset them.
    pub fn with_counters(mut self, counters: bool) -> Proxier {
        self.counters = counters;
        self
    }

    /// Deletes stale UDP conntrack entries with this runner after each sync.
    pub fn with_conntrack(mut self, conntrack: Conntrack) -> Proxier {
        self.conntrack = Some(conntrack);
        self
    }

    /// The node settings.
    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// The name of proxier's table in each family.
    pub fn table_name(&self) -> &str {
        &self.table
    }

    /// Replaces the node settings; the next sync recomputes every Service and replaces the tables.
    pub fn set_config(&mut self, config: NodeConfig) {
        if config != self.config {
            self.config = config;
            self.node_changed();
        }
    }

    /// Adds or replaces a Service. Returns whether anything that matters to its rules changed.
    pub fn apply_service(&mut self, service: Service) -> bool {
        let key = key_of(&service.metadata);
        let parsed = ParsedService::read(&service);
        let entry = self.services.entry(key.clone()).or_default();
        if entry.parsed.as_ref() == Some(&parsed) {
            return false;
        }
        entry.parsed = Some(parsed);
        self.mark_dirty(key);
        true
    }

    /// Removes a Service. Returns whether it was there.
    pub fn delete_service(&mut self, namespace: &str, name: &str) -> bool {
        let key = (namespace.to_owned(), name.to_owned());
        let removed = self.services.get_mut(&key).and_then(|entry| entry.parsed.take()).is_some();
        if removed {
            self.mark_dirty(key);
        }
        removed
    }

    /// Adds or replaces an EndpointSlice. Returns whether anything that matters to the rules changed.
    pub fn apply_endpoint_slice(&mut self, slice: EndpointSlice) -> bool {
        let key = key_of(&slice.metadata);
        let mut diagnostics = Vec::new();
        let endpoints = EndpointIndex::build([&slice], &mut diagnostics).into_ports();
        let service = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|labels| labels.get(LABEL_SERVICE_NAME))
            .map(|name| (key.0.clone(), name.clone()));
        let trigger = trigger_time(&slice);
        let entry = SliceEntry { service, endpoints, diagnostics, trigger };
        let previous = self.slices.get(&key);
        if previous.is_some_and(|p| p.service == entry.service && p.endpoints == entry.endpoints) {
            return false;
        }
        if entry.trigger.is_some() && entry.trigger != previous.and_then(|p| p.trigger) {
            self.triggers.extend(entry.trigger);
        }
        self.remove_slice(&key);
        if let Some(service) = &entry.service {
            self.slices_of.entry(service.clone()).or_default().insert(key.clone());
            self.mark_dirty(service.clone());
        }
        self.slices.insert(key, entry);
        true
    }

    /// Removes an EndpointSlice. Returns whether it was there.
    pub fn delete_endpoint_slice(&mut self, namespace: &str, name: &str) -> bool {
        self.remove_slice(&(namespace.to_owned(), name.to_owned()))
    }

    /// Adds or replaces a Node. Only this node's own Node object matters (its addresses, zone and
    /// podCIDRs), and only those fields of it are kept. Returns whether the rules may change.
    pub fn apply_node(&mut self, node: Node) -> bool {
        let node = reduced_node(node);
        let name = node.metadata.name.clone().unwrap_or_default();
        if self.nodes.get(&name) == Some(&node) {
            return false;
        }
        self.nodes.insert(name, node);
        self.node_changed()
    }

    /// Removes a Node. Returns whether it was held.
    pub fn delete_node(&mut self, name: &str) -> bool {
        let removed = self.nodes.remove(name).is_some();
        if removed {
            self.node_changed();
        }
        removed
    }

    /// The Services held, by namespace and name.
    pub fn services(&self) -> impl Iterator<Item = &ParsedService> {
        self.services.values().filter_map(|entry| entry.parsed.as_ref())
    }

    /// The namespace and name of every EndpointSlice held.
    pub fn endpoint_slices(&self) -> impl Iterator<Item = &(String, String)> {
        self.slices.keys()
    }

    /// The Nodes held, by name, reduced to what the rules depend on.
    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.nodes.values()
    }

    /// Whether objects changed since the last successful sync (or none succeeded yet).
    pub fn has_pending_changes(&self) -> bool {
        !self.dirty.is_empty() || !self.committed || self.force_full
    }

    /// When the oldest change not yet programmed arrived (kube-proxy's "queued update").
    pub fn queued_since(&self) -> Option<Instant> {
        self.queued_at
    }

    /// Makes the next sync a full replacement.
    pub fn force_full_sync(&mut self) {
        self.force_full = true;
    }

    /// When a sync is due to delete emptied chains and sets, if any are waiting.
    pub fn next_cleanup(&self) -> Option<Instant> {
        self.ledger.next_cleanup()
    }

    /// Whether the kernel holds the rules of the last sync (false before the first successful sync
    /// and after a failed one).
    pub fn is_committed(&self) -> bool {
        self.committed
    }

    /// The model of the rules the last sync computed, assembled on demand: costs a pass over the
    /// whole cluster, so meant for reports and tests, not for every sync. `None` before a sync.
    pub fn model(&self) -> Option<RuleModel> {
        if !self.computed {
            return None;
        }
        let mut model = assemble(
            &self.context,
            self.services.values().filter_map(|entry| entry.laid_out.as_ref()).map(|laid| &laid.rules),
        );
        model.diagnostics.extend(self.slices.values().flat_map(|slice| slice.diagnostics.iter().cloned()));
        for ((namespace, name), slice) in &self.slices {
            let Some(service @ (service_namespace, service_name)) = &slice.service else { continue };
            if self.services.get(service).is_none_or(|entry| entry.parsed.is_none()) {
                let object = ObjectRef::new("EndpointSlice", namespace, name);
                model.diagnostics.push(orphan_slice(&object, service_namespace, service_name));
            }
        }
        model.diagnostics.extend(self.refused.iter().map(|(service, why)| Diagnostic {
            severity: proxier_core::Severity::Error,
            source: None,
            object: service.clone(),
            field: None,
            message: why.clone(),
        }));
        model.diagnostics.sort();
        model.diagnostics.dedup();
        Some(model)
    }

    /// Health-check nodePorts of the externalTrafficPolicy `Local` Services as of the last sync.
    pub fn health_checks(&self) -> impl Iterator<Item = &HealthCheck> {
        self.health_checks.values().flatten()
    }

    /// The node addresses NodePorts (and health-check nodePorts) are served on.
    pub fn node_port_ips(&self) -> Vec<IpAddr> {
        IpFamily::ALL.into_iter().flat_map(|family| self.context.empty_rules(family).node_port_ips).collect()
    }

    /// Service ports whose Local policy leaves this node without an endpoint, as of the last sync:
    /// (internalTrafficPolicy, externalTrafficPolicy). Their traffic is dropped.
    pub fn no_local_endpoints(&self) -> (usize, usize) {
        self.no_local.values().fold((0, 0), |(i, e), (di, de)| (i + di, e + de))
    }

    /// Services left out of the kernel because it refused their rules, each with nft's message. A
    /// Service is tried again when it or one of its EndpointSlices changes.
    pub fn refused(&self) -> &Refused {
        &self.refused
    }

    /// The tables the kernel holds after the last successful sync, built on demand (a pass over
    /// the whole cluster). `None` when no sync succeeded since the last failure.
    pub fn committed(&self) -> Option<Vec<Table>> {
        if !self.committed {
            return None;
        }
        let mut everything = Ledger::new(&self.table);
        let mut journal = Journal::default();
        for table in self.contributions() {
            everything.add(table, &mut journal);
        }
        Some(self.ledger.tables(journal))
    }

    /// Brings the kernel in step with the objects held: a full replacement the first time (and after a
    /// failure or [`Proxier::force_full_sync`]), otherwise only the changes. See the module docs.
    pub fn sync(&mut self) -> Result<SyncOutcome, SyncError> {
        let start = Instant::now();
        let full = !self.committed || self.force_full;
        let cleanup_due = self.next_cleanup().is_some_and(|at| at <= start);
        if !full && self.dirty.is_empty() && !cleanup_due {
            return Ok(self.outcome(SyncKind::Partial, Transaction::from_changes(Vec::new(), &self.table), start));
        }

        let replaced = self.recompute();
        let first = !self.computed;
        self.computed = true;
        if !first {
            let old = replaced.iter().filter_map(|r| r.old.as_ref()).flat_map(effective_destinations);
            let new = replaced.iter().filter_map(|r| r.new.as_ref()).flat_map(effective_destinations);
            self.pending_filters.extend(conntrack_filters_between(old, new));
        }

        let mut partial = None;
        if !full {
            let mut journal = Journal::default();
            let (context, table) = ((&self.context, self.counters), &self.table);
            for replaced in &replaced {
                for old in replaced.old.iter().flat_map(|laid| service_tables(context, table, laid)) {
                    self.ledger.remove(&old, &mut journal);
                }
            }
            for replaced in &replaced {
                for new in replaced.new.iter().flat_map(|laid| service_tables(context, table, laid)) {
                    self.ledger.add(new, &mut journal);
                }
            }
            // A set whose type or timeout changed (an affinity timeout) is replaced with the tables.
            if !journal.redefined {
                partial = Some(Transaction::from_changes(self.ledger.finish(journal, start), &self.table));
            }
        }
        let kind = if partial.is_some() { SyncKind::Partial } else { SyncKind::Full };
        let transaction = partial.unwrap_or_else(|| self.full_transaction());
        // Counts the transaction would reset (a replaced table, a re-created element) carry over.
        let transaction = if self.counters && !transaction.is_empty() {
            crate::counters::carry_into(&self.nft, transaction, kind == SyncKind::Full)
        } else {
            transaction
        };

        if !transaction.is_empty()
            && let Err(source) = transaction.apply(&self.nft)
        {
            // The kernel refused the whole transaction: it holds what it held. If some Services'
            // rules are to blame, leave them out and apply the rest; else start over next time.
            self.listing = None;
            match self.without_refused(kind, &source) {
                Some((transaction, refused)) if self.nft.apply_json(&transaction.to_json_compact()).is_ok() => {
                    return Ok(self.committed_now(SyncKind::Full, transaction, refused, start));
                }
                _ => {
                    self.committed = false;
                    self.ledger = Ledger::new(&self.table);
                    return Err(SyncError::Apply { kind, source });
                }
            }
        }
        Ok(self.committed_now(kind, transaction, Refused::new(), start))
    }

    /// The transaction that replaces the tables whole, with the ledger rebuilt to match.
    fn full_transaction(&mut self) -> Transaction {
        let mut ledger = Ledger::new(&self.table);
        let mut journal = Journal::default();
        for table in self.contributions() {
            ledger.add(table, &mut journal);
        }
        let tables = ledger.tables(journal);
        self.ledger = ledger;
        Transaction::replacing(tables, &self.table)
    }

    /// After a full sync failed with `error`: the Services whose rules the kernel refuses, found
    /// with `nft -c`, and the full transaction without their rules (only their ClusterIPs stay, rejecting). `None` when
    /// the fault is not any one Service's, or a partial sync failed (the next, full, sync searches).
    fn without_refused(&mut self, kind: SyncKind, error: &NftError) -> Option<(Transaction, Refused)> {
        if kind != SyncKind::Full || matches!(error, NftError::Spawn { .. }) {
            return None;
        }
        let refused = refused_services(&self.nft, &self.model()?, &self.table).ok().filter(|r| !r.is_empty())?;
        for (service, why) in &refused {
            let key = (service.namespace.clone(), service.name.clone());
            tracing::error!(service = %format!("{}/{}", key.0, key.1), %why, "the kernel refuses this Service's rules; left out");
            // Its ClusterIPs stay, so that new connections to them are rejected, not left to time out.
            let Some(laid) = self.services.get_mut(&key).and_then(|entry| entry.laid_out.as_mut()) else { continue };
            let destinations = destination_keys(&laid.rules);
            for family in &mut laid.rules.families {
                family.destinations.clear();
                family.health_check = None;
            }
            laid.claimed_by_others.clear();
            let stripped = laid.clone();
            for destination in destinations {
                if let Some(claimants) = self.claims.get_mut(&destination) {
                    claimants.remove(&key);
                    // Another Service claiming it may own it now.
                    self.dirty.extend(claimants.iter().cloned());
                    if claimants.is_empty() {
                        self.claims.remove(&destination);
                    }
                }
            }
            self.record(&key, Some(&stripped));
            self.refused.insert(service.clone(), why.clone());
        }
        self.recompute();
        Some((self.full_transaction(), refused))
    }

    /// Records a successful sync of `transaction`.
    fn committed_now(
        &mut self,
        kind: SyncKind,
        transaction: Transaction,
        refused: Refused,
        start: Instant,
    ) -> SyncOutcome {
        if !transaction.is_empty() {
            self.generation = self.generation.wrapping_add(1);
        }
        self.committed = true;
        self.force_full = false;
        self.queued_at = None;
        let mut outcome = self.outcome(kind, transaction, start);
        outcome.refused = refused;
        let filters: Vec<ConntrackFilter> = std::mem::take(&mut self.pending_filters).into_iter().collect();
        if let Some(conntrack) = &self.conntrack
            && !filters.is_empty()
        {
            outcome.conntrack = conntrack.delete(&filters);
        }
        let now = SystemTime::now();
        outcome.network_programming =
            self.triggers.drain(..).map(|t| now.duration_since(t).unwrap_or(Duration::ZERO)).collect();
        outcome.duration = start.elapsed();
        outcome
    }

    /// The periodic full check: reads proxier's tables (and only them) from the kernel and compares
    /// them with the committed state. No drift ⇒ an ordinary [`Proxier::sync`] (nothing at all when
    /// nothing is pending); drift ⇒ one atomic full replacement, `drifted` set.
    ///
    /// The committed side is loaded into a scratch network namespace and listed back, so both sides
    /// are in the kernel's canonical form (needs CAP_SYS_ADMIN). Elements the data plane adds itself
    /// (session-affinity sets) are not compared.
    pub fn resync(&mut self) -> Result<SyncOutcome, SyncError> {
        let start = Instant::now();
        let drifted = self.committed && self.drifted().map_err(SyncError::Read)?;
        if drifted {
            self.force_full = true;
        }
        let mut outcome = self.sync()?;
        outcome.drifted = drifted;
        outcome.duration = start.elapsed();
        Ok(outcome)
    }

    /// Whether the kernel's tables differ from the committed state.
    fn drifted(&mut self) -> Result<bool, NftError> {
        let expected = match &self.listing {
            Some((generation, listing)) if *generation == self.generation => listing.clone(),
            _ => {
                let Some(committed) = self.committed() else { return Ok(true) };
                let transaction = Transaction::replacing(committed, &self.table);
                let table = self.table.clone();
                let listing: Vec<Option<String>> = self.nft.in_scratch_namespace(|scratch| {
                    scratch.apply_json(&transaction.to_json_compact())?;
                    IpFamily::ALL
                        .into_iter()
                        .map(|family| Ok(scratch.list_table(family, &table)?.map(|t| canonical(&t))))
                        .collect()
                })?;
                self.listing = Some((self.generation, listing.clone()));
                listing
            }
        };
        for (family, expected) in IpFamily::ALL.into_iter().zip(expected) {
            let live = self.nft.list_table(family, &self.table)?.map(|t| canonical(&t));
            if live != expected {
                tracing::warn!(%family, table = %self.table, "proxier's table was changed behind its back");
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn mark_dirty(&mut self, service: Key) {
        self.dirty.insert(service);
        self.queued_at.get_or_insert_with(Instant::now);
    }

    /// The node's object or settings changed: if that changes its context, every Service is
    /// recomputed and the tables replaced. Returns whether it did.
    fn node_changed(&mut self) -> bool {
        let context = NodeContext::new(self.nodes.get(&self.config.node_name), &self.config);
        if context == self.context {
            return false;
        }
        self.context = context;
        self.force_full = true;
        let keys: Vec<Key> = self.services.keys().cloned().collect();
        self.dirty.extend(keys);
        self.queued_at.get_or_insert_with(Instant::now);
        true
    }

    fn remove_slice(&mut self, key: &Key) -> bool {
        let Some(previous) = self.slices.remove(key) else { return false };
        if let Some(service) = previous.service {
            if let Some(slices) = self.slices_of.get_mut(&service) {
                slices.remove(key);
                if slices.is_empty() {
                    self.slices_of.remove(&service);
                }
            }
            self.mark_dirty(service);
        }
        true
    }

    /// Recomputes the dirty Services and the Services sharing a destination with them; lays out the
    /// new rules (claims, health checks, counts) and returns those whose laid-out rules changed.
    fn recompute(&mut self) -> Vec<Replaced> {
        let dirty = std::mem::take(&mut self.dirty);
        let mut computed: BTreeMap<Key, Option<ServiceRules>> = BTreeMap::new();
        let mut contested = BTreeSet::new();
        for key in dirty {
            let rules = self.services.get(&key).and_then(|entry| entry.parsed.as_ref()).map(|parsed| {
                let slices = self.slices_of.get(&key).into_iter().flatten();
                let endpoints = EndpointIndex::from_ports(
                    slices.filter_map(|s| self.slices.get(s)).map(|s| s.endpoints.as_slice()),
                );
                service_rules(parsed, &endpoints, &self.context)
            });
            let old = self.laid_out(&key).map(|laid| destination_keys(&laid.rules)).unwrap_or_default();
            let new = rules.as_ref().map(destination_keys).unwrap_or_default();
            for gone in old.difference(&new) {
                if let Some(claimants) = self.claims.get_mut(gone) {
                    claimants.remove(&key);
                    if claimants.is_empty() {
                        self.claims.remove(gone);
                    }
                }
            }
            for added in new.difference(&old) {
                self.claims.entry(*added).or_default().insert(key.clone());
            }
            contested.extend(old.symmetric_difference(&new).copied());
            self.refused.remove(&ObjectRef::new("Service", &key.0, &key.1));
            computed.insert(key, rules);
        }
        // A Service gaining or losing a destination another also claims may change what the other owns.
        let mut affected: BTreeSet<Key> = computed.keys().cloned().collect();
        for destination in &contested {
            affected.extend(self.claims.get(destination).into_iter().flatten().cloned());
        }

        let mut replaced = Vec::new();
        for key in affected {
            let rules = match computed.remove(&key) {
                Some(rules) => rules,
                None => self.laid_out(&key).map(|laid| laid.rules.clone()),
            };
            let new = rules.map(|rules| {
                let claimed_by_others = destination_keys(&rules)
                    .into_iter()
                    .filter(|d| self.claims.get(d).and_then(|c| c.first()).is_some_and(|owner| *owner < key))
                    .collect();
                LaidOut { rules, claimed_by_others }
            });
            let entry = self.services.entry(key.clone()).or_default();
            if entry.laid_out == new {
                if entry.parsed.is_none() && entry.laid_out.is_none() {
                    self.services.remove(&key);
                }
                continue;
            }
            let old = std::mem::replace(&mut entry.laid_out, new.clone());
            if entry.parsed.is_none() && entry.laid_out.is_none() {
                self.services.remove(&key);
            }
            self.record(&key, new.as_ref());
            replaced.push(Replaced { old, new });
        }
        replaced
    }

    fn laid_out(&self, key: &Key) -> Option<&LaidOut> {
        self.services.get(key).and_then(|entry| entry.laid_out.as_ref())
    }

    /// Keeps the per-Service summaries (health checks, Local-policy counts) in step.
    fn record(&mut self, key: &Key, laid: Option<&LaidOut>) {
        let checks: Vec<HealthCheck> =
            laid.into_iter().flat_map(|l| l.rules.families.iter().filter_map(|f| f.health_check.clone())).collect();
        if checks.is_empty() {
            self.health_checks.remove(key);
        } else {
            self.health_checks.insert(key.clone(), checks);
        }
        let counts = laid.map(|l| no_local_endpoints(effective_destinations(l))).unwrap_or_default();
        if counts == (0, 0) {
            self.no_local.remove(key);
        } else {
            self.no_local.insert(key.clone(), counts);
        }
    }

    /// The tables every laid-out Service and the node itself contribute.
    fn contributions(&self) -> impl Iterator<Item = Table> + '_ {
        let node = self
            .context
            .node_families()
            .iter()
            .map(|&family| family_table_with(&self.context.empty_rules(family), &self.table, self.counters));
        let services = self
            .services
            .values()
            .filter_map(|entry| entry.laid_out.as_ref())
            .flat_map(|laid| service_tables((&self.context, self.counters), &self.table, laid));
        node.chain(services)
    }

    fn outcome(&self, kind: SyncKind, transaction: Transaction, start: Instant) -> SyncOutcome {
        let elements = transaction
            .changes()
            .iter()
            .map(|change| match change {
                Change::AddElements { elements, .. } | Change::DeleteElements { elements, .. } => elements.len(),
                Change::CreateTable(table) => table.sets.iter().map(|s| s.elements.len()).sum(),
                _ => 0,
            })
            .sum();
        SyncOutcome {
            kind,
            changes: transaction.changes().len(),
            elements,
            duration: start.elapsed(),
            drifted: false,
            transaction,
            network_programming: Vec::new(),
            conntrack: ConntrackOutcome::default(),
            refused: Refused::new(),
        }
    }
}

/// One Service's share of the tables: each of its families laid out alone.
fn service_tables((context, counters): (&NodeContext, bool), table: &str, laid: &LaidOut) -> Vec<Table> {
    laid.rules
        .families
        .iter()
        .map(|own| {
            let rules = FamilyRules {
                cluster_ips: vec![own.cluster_ip],
                destinations: own
                    .destinations
                    .iter()
                    .filter(|d| !laid.claimed_by_others.contains(&(d.ip, d.protocol, d.port)))
                    .cloned()
                    .collect(),
                ..context.empty_rules(own.family)
            };
            family_table_with(&rules, table, counters)
        })
        .collect()
}

fn destination_keys(rules: &ServiceRules) -> BTreeSet<DestinationKey> {
    rules.families.iter().flat_map(|f| &f.destinations).map(|d| (d.ip, d.protocol, d.port)).collect()
}

/// The destinations a laid-out Service programs.
fn effective_destinations(laid: &LaidOut) -> impl Iterator<Item = &Destination> {
    laid.rules
        .families
        .iter()
        .flat_map(|f| &f.destinations)
        .filter(|d| !laid.claimed_by_others.contains(&(d.ip, d.protocol, d.port)))
}

/// Service ports whose Local policy leaves this node without an endpoint to use, for ClusterIP
/// traffic (internal) and external traffic: the destinations that are dropped.
fn no_local_endpoints<'a>(destinations: impl Iterator<Item = &'a Destination>) -> (usize, usize) {
    let mut internal = BTreeSet::new();
    let mut external = BTreeSet::new();
    for destination in destinations {
        let dropped = match &destination.action {
            Action::Drop => true,
            Action::BySource { others, .. } => matches!(**others, Action::Drop),
            _ => false,
        };
        if dropped {
            let set = if destination.kind.is_external() { &mut external } else { &mut internal };
            set.insert(&destination.service_port);
        }
    }
    (internal.len(), external.len())
}

/// The Node object reduced to what a node's rules depend on: its name and labels, podCIDRs and addresses.
fn reduced_node(node: Node) -> Node {
    Node {
        metadata: ObjectMeta { name: node.metadata.name, labels: node.metadata.labels, ..ObjectMeta::default() },
        spec: node.spec.map(|spec| NodeSpec {
            pod_cidr: spec.pod_cidr,
            pod_cidrs: spec.pod_cidrs,
            ..NodeSpec::default()
        }),
        status: node.status.map(|status| NodeStatus { addresses: status.addresses, ..NodeStatus::default() }),
    }
}

fn key_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Key {
    (meta.namespace.clone().unwrap_or_default(), meta.name.clone().unwrap_or_default())
}

fn trigger_time(slice: &EndpointSlice) -> Option<SystemTime> {
    let text = slice.metadata.annotations.as_ref()?.get(LAST_CHANGE_TRIGGER_TIME)?;
    let timestamp: k8s_openapi::jiff::Timestamp = text.parse().ok()?;
    let nanos = u64::try_from(timestamp.as_nanosecond()).ok()?;
    UNIX_EPOCH.checked_add(Duration::from_nanos(nanos))
}

/// The conntrack entries made stale by going from `old` to `new` (UDP only, as kube-proxy):
/// - a destination that had no endpoint and now has some: every entry to it (the rejected flows'
///   entries would otherwise keep new packets from being DNATed);
/// - a destination that lost endpoints: the entries DNATed to each lost endpoint;
/// - a destination that is gone: every entry to it.
pub fn conntrack_filters(old: &RuleModel, new: &RuleModel) -> Vec<ConntrackFilter> {
    fn destinations(model: &RuleModel) -> impl Iterator<Item = &Destination> {
        model.families.iter().flat_map(|f| &f.destinations)
    }
    conntrack_filters_between(destinations(old), destinations(new)).into_iter().collect()
}

/// [`conntrack_filters`] of destinations: those of the Services a sync replaced, before and after.
fn conntrack_filters_between<'a>(
    old: impl Iterator<Item = &'a Destination>,
    new: impl Iterator<Item = &'a Destination>,
) -> BTreeSet<ConntrackFilter> {
    type DestKey = (IpAddr, u16, DestinationKind);
    let udp =
        |destinations: &mut dyn Iterator<Item = &'a Destination>| -> BTreeMap<DestKey, Vec<proxier_core::Backend>> {
            destinations
                .filter(|d| d.protocol == Protocol::Udp)
                .map(|d| ((d.ip, d.port, d.kind), d.action.backends()))
                .collect()
        };
    let (mut old, mut new) = (old, new);
    let (before, after) = (udp(&mut old), udp(&mut new));
    let mut filters = BTreeSet::new();
    let all =
        |ip: IpAddr, port: u16| ConntrackFilter { protocol: Protocol::Udp, destination: ip, port, endpoint: None };
    for (key @ (ip, port, _), backends) in &after {
        match before.get(key) {
            Some(previous) if !previous.is_empty() => {
                for gone in previous.iter().filter(|b| !backends.contains(b)) {
                    filters.insert(ConntrackFilter { endpoint: Some(*gone), ..all(*ip, *port) });
                }
            }
            _ if !backends.is_empty() => {
                filters.insert(all(*ip, *port));
            }
            _ => {}
        }
    }
    for key @ (ip, port, _) in before.keys() {
        if !after.contains_key(key) {
            filters.insert(all(*ip, *port));
        }
    }
    filters
}

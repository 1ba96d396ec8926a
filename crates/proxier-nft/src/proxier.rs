//! [`Proxier`]: the long-lived object a node agent embeds. It holds the cluster objects it was fed, the
//! node's settings and the tables it last committed to the kernel, and keeps the kernel in step with
//! one atomic transaction per [`Proxier::sync`].
//!
//! - The first sync, the first after a failure, and one after [`Proxier::force_full_sync`] replace
//!   proxier's tables whole ([`Transaction::replacing`]): an existing table of an earlier run is taken
//!   over in that one transaction, so Services never stop answering.
//! - Every other sync writes only what changed since the committed state ([`Transaction::between`]);
//!   the kernel is not read. Nothing changed ⇒ `nft` is not run at all.
//! - A failed `nft` run leaves the kernel and the committed state as they were; the next sync is full.
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

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use proxier_core::{DestinationKind, IpFamily, NodeConfig, Protocol, RuleModel, Snapshot, compute};

use crate::conntrack::{Conntrack, ConntrackFilter, ConntrackOutcome};
use crate::diff::canonical;
use crate::ruleset::Table;
use crate::runner::{Nft, NftError};
use crate::transaction::{Change, Committed, Transaction};

/// How long an emptied chain or set is kept before it is deleted (kube-proxy waits 1 s too).
pub const STALE_GRACE: Duration = Duration::from_secs(1);

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

/// A node's service proxy: cluster objects in, kernel rules out. See the module documentation.
#[derive(Debug)]
pub struct Proxier {
    config: NodeConfig,
    table: String,
    nft: Nft,
    conntrack: Option<Conntrack>,
    services: BTreeMap<Key, Service>,
    slices: BTreeMap<Key, EndpointSlice>,
    nodes: BTreeMap<String, Node>,
    /// The objects changed since the last successful sync.
    dirty: bool,
    /// When the oldest change not yet programmed arrived.
    queued_at: Option<Instant>,
    force_full: bool,
    /// What the kernel holds; `None` before the first successful sync and after a failure.
    committed: Option<Committed>,
    /// Emptied objects not yet deleted, with when they were emptied.
    stale: BTreeMap<(IpFamily, ObjectName), Instant>,
    /// The model of the last successful sync.
    model: Option<RuleModel>,
    /// Trigger times of EndpointSlice changes not yet programmed.
    triggers: Vec<SystemTime>,
    /// The kernel's canonical listing of the committed tables, by `generation`.
    listing: Option<(u64, Vec<Option<String>>)>,
    generation: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum ObjectName {
    Chain(String),
    Set(String),
}

impl Proxier {
    /// A proxier for the node `config` describes, owning table `table` in the ip and ip6 families.
    /// Conntrack cleanup is off until [`Proxier::with_conntrack`].
    pub fn new(config: NodeConfig, table: impl Into<String>, nft: Nft) -> Proxier {
        Proxier {
            config,
            table: table.into(),
            nft,
            conntrack: None,
            services: BTreeMap::new(),
            slices: BTreeMap::new(),
            nodes: BTreeMap::new(),
            dirty: true,
            queued_at: None,
            force_full: false,
            committed: None,
            stale: BTreeMap::new(),
            model: None,
            triggers: Vec::new(),
            listing: None,
            generation: 0,
        }
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

    /// Replaces the node settings; the next sync programs them.
    pub fn set_config(&mut self, config: NodeConfig) {
        if config != self.config {
            self.config = config;
            self.mark_dirty();
        }
    }

    /// Adds or replaces a Service. Returns whether anything changed.
    pub fn apply_service(&mut self, service: Service) -> bool {
        let key = key_of(&service.metadata);
        if self.services.get(&key) == Some(&service) {
            return false;
        }
        self.services.insert(key, service);
        self.mark_dirty();
        true
    }

    /// Removes a Service. Returns whether it was there.
    pub fn delete_service(&mut self, namespace: &str, name: &str) -> bool {
        let removed = self.services.remove(&(namespace.to_owned(), name.to_owned())).is_some();
        if removed {
            self.mark_dirty();
        }
        removed
    }

    /// Adds or replaces an EndpointSlice. Returns whether anything changed.
    pub fn apply_endpoint_slice(&mut self, slice: EndpointSlice) -> bool {
        let key = key_of(&slice.metadata);
        let previous = self.slices.get(&key);
        if previous == Some(&slice) {
            return false;
        }
        let trigger = trigger_time(&slice);
        if trigger.is_some() && trigger != previous.and_then(trigger_time) {
            self.triggers.extend(trigger);
        }
        self.slices.insert(key, slice);
        self.mark_dirty();
        true
    }

    /// Removes an EndpointSlice. Returns whether it was there.
    pub fn delete_endpoint_slice(&mut self, namespace: &str, name: &str) -> bool {
        let removed = self.slices.remove(&(namespace.to_owned(), name.to_owned())).is_some();
        if removed {
            self.mark_dirty();
        }
        removed
    }

    /// Adds or replaces a Node. Only this node's own Node object matters (its addresses, podCIDRs).
    pub fn apply_node(&mut self, node: Node) -> bool {
        let name = node.metadata.name.clone().unwrap_or_default();
        if self.nodes.get(&name) == Some(&node) {
            return false;
        }
        self.nodes.insert(name, node);
        self.mark_dirty();
        true
    }

    /// Removes a Node. Returns whether it was there.
    pub fn delete_node(&mut self, name: &str) -> bool {
        let removed = self.nodes.remove(name).is_some();
        if removed {
            self.mark_dirty();
        }
        removed
    }

    /// The Services held, by namespace and name.
    pub fn services(&self) -> impl Iterator<Item = &Service> {
        self.services.values()
    }

    /// The EndpointSlices held, by namespace and name.
    pub fn endpoint_slices(&self) -> impl Iterator<Item = &EndpointSlice> {
        self.slices.values()
    }

    /// The Nodes held, by name.
    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.nodes.values()
    }

    /// Whether objects changed since the last successful sync (or none succeeded yet).
    pub fn has_pending_changes(&self) -> bool {
        self.dirty || self.committed.is_none()
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
        self.stale.values().min().map(|since| *since + STALE_GRACE)
    }

    /// The model of the last successful sync.
    pub fn model(&self) -> Option<&RuleModel> {
        self.model.as_ref()
    }

    /// The tables the kernel holds after the last successful sync.
    pub fn committed(&self) -> Option<&[Table]> {
        self.committed.as_deref()
    }

    /// The objects held, as a [`Snapshot`] for [`compute()`].
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            services: self.services.values().cloned().collect(),
            endpoint_slices: self.slices.values().cloned().collect(),
            endpoints: Vec::new(),
            nodes: self.nodes.values().cloned().collect(),
            ingresses: Vec::new(),
            sources: BTreeMap::new(),
        }
    }

    /// Brings the kernel in step with the objects held: a full replacement the first time (and after a
    /// failure or [`Proxier::force_full_sync`]), otherwise only the changes. See the module docs.
    pub fn sync(&mut self) -> Result<SyncOutcome, SyncError> {
        let start = Instant::now();
        let full = self.committed.is_none() || self.force_full;
        let kind = if full { SyncKind::Full } else { SyncKind::Partial };
        let cleanup_due = self.next_cleanup().is_some_and(|at| at <= start);
        if !full && !self.dirty && !cleanup_due {
            return Ok(self.outcome(kind, Transaction::between(&[], &[], &self.table).0, start));
        }

        let model = if self.dirty || self.model.is_none() {
            compute(&self.snapshot(), &self.config)
        } else {
            // Only a cleanup is due: the model cannot have changed.
            self.model.clone().unwrap_or_else(|| compute(&self.snapshot(), &self.config))
        };
        let desired = Transaction::tables(&model, &self.table);
        let (transaction, after) = match (&self.committed, full) {
            (Some(committed), false) => {
                let kept = self.keep_young_stale(committed, desired.clone(), start);
                Transaction::between(committed, &kept, &self.table)
            }
            _ => (Transaction::replacing(desired.clone(), &self.table), desired.clone()),
        };

        if !transaction.is_empty()
            && let Err(source) = self.nft.apply_json(&transaction.to_json())
        {
            // The kernel refused the whole transaction: it holds what it held. Start over next time.
            self.committed = None;
            self.stale.clear();
            self.listing = None;
            return Err(SyncError::Apply { kind, source });
        }

        // Track emptied objects: in `after` but not wanted.
        let wanted = object_names(&desired);
        let present = object_names(&after);
        self.stale.retain(|name, _| present.contains(name) && !wanted.contains(name));
        for name in present.difference(&wanted) {
            self.stale.entry(name.clone()).or_insert(start);
        }
        if !transaction.is_empty() {
            self.generation = self.generation.wrapping_add(1);
        }
        self.committed = Some(after);
        self.force_full = false;
        self.dirty = false;
        self.queued_at = None;

        let filters = match &self.model {
            Some(old) => conntrack_filters(old, &model),
            None => Vec::new(),
        };
        self.model = Some(model);
        let mut outcome = self.outcome(kind, transaction, start);
        if let Some(conntrack) = &self.conntrack
            && !filters.is_empty()
        {
            outcome.conntrack = conntrack.delete(&filters);
        }
        let now = SystemTime::now();
        outcome.network_programming =
            self.triggers.drain(..).map(|t| now.duration_since(t).unwrap_or(Duration::ZERO)).collect();
        outcome.duration = start.elapsed();
        Ok(outcome)
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
        let drifted = match &self.committed {
            None => false,
            Some(_) => self.drifted().map_err(SyncError::Read)?,
        };
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
        let Some(committed) = &self.committed else { return Ok(true) };
        let expected = match &self.listing {
            Some((generation, listing)) if *generation == self.generation => listing.clone(),
            _ => {
                let transaction = Transaction::replacing(committed.clone(), &self.table);
                let table = self.table.clone();
                let listing: Vec<Option<String>> = self.nft.in_scratch_namespace(|scratch| {
                    scratch.apply_json(&transaction.to_json())?;
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

    fn mark_dirty(&mut self) {
        self.dirty = true;
        self.queued_at.get_or_insert_with(Instant::now);
    }

    /// `desired` plus the emptied objects of `committed` that are too young to delete.
    fn keep_young_stale(&self, committed: &[Table], mut desired: Vec<Table>, now: Instant) -> Vec<Table> {
        for table in &mut desired {
            let Some(old) = committed.iter().find(|t| t.family == table.family) else { continue };
            let young = |name: ObjectName| {
                self.stale.get(&(table.family, name)).is_some_and(|since| now.duration_since(*since) < STALE_GRACE)
            };
            let chains: BTreeSet<String> = table.chains.iter().map(|c| c.name.clone()).collect();
            let sets: BTreeSet<String> = table.sets.iter().map(|s| s.name.clone()).collect();
            for chain in &old.chains {
                if !chains.contains(&chain.name)
                    && chain.rules.is_empty()
                    && young(ObjectName::Chain(chain.name.clone()))
                {
                    table.chains.push(chain.clone());
                }
            }
            for set in &old.sets {
                if !sets.contains(&set.name) && set.elements.is_empty() && young(ObjectName::Set(set.name.clone())) {
                    table.sets.push(set.clone());
                }
            }
        }
        desired
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
        }
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

fn object_names(tables: &[Table]) -> BTreeSet<(IpFamily, ObjectName)> {
    let mut names = BTreeSet::new();
    for table in tables {
        names.extend(table.chains.iter().map(|c| (table.family, ObjectName::Chain(c.name.clone()))));
        names.extend(table.sets.iter().map(|s| (table.family, ObjectName::Set(s.name.clone()))));
    }
    names
}

/// The conntrack entries made stale by going from `old` to `new` (UDP only, as kube-proxy):
/// - a destination that had no endpoint and now has some: every entry to it (the rejected flows'
///   entries would otherwise keep new packets from being DNATed);
/// - a destination that lost endpoints: the entries DNATed to each lost endpoint;
/// - a destination that is gone: every entry to it.
pub fn conntrack_filters(old: &RuleModel, new: &RuleModel) -> Vec<ConntrackFilter> {
    type DestKey = (IpAddr, u16, DestinationKind);
    let udp = |model: &RuleModel| -> BTreeMap<DestKey, Vec<proxier_core::Backend>> {
        model
            .families
            .iter()
            .flat_map(|f| f.destinations.iter())
            .filter(|d| d.protocol == Protocol::Udp)
            .map(|d| ((d.ip, d.port, d.kind), d.action.backends()))
            .collect()
    };
    let (before, after) = (udp(old), udp(new));
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
    filters.into_iter().collect()
}

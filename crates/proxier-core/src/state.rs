//! The live cluster state of one node: watch events in, per-Service rule changes out.
//!
//! A [`ClusterState`] is what a node agent holds of the cluster between syncs. It takes Service,
//! EndpointSlice and Node events — one at a time ([`ClusterState::apply_service`] and friends) or as
//! watch events with list boundaries ([`ClusterState::fold`]), so that a relist removes what was
//! deleted while a watch was down — and keeps only what the rules depend on: each Service read once,
//! each slice's endpoints, the node's own facts ([`NodeContext`]).
//!
//! [`ClusterState::changes`] recomputes the Services whose objects changed since the last call and
//! hands out their old and new share of the node's rules ([`ShareChange`]), each laid out as
//! [`FamilyRules`] of that Service alone; the union of all shares and [`ClusterState::node_share`] is
//! the model [`crate::compute()`] computes for the same objects, apart from the order of each
//! destination's backends. [`ClusterState::model`] assembles that model on demand.
//!
//! The semantics that make the shares add up live here, not in a syncer:
//!
//! - A destination two Services claim belongs to the first in namespace/name order, as in
//!   [`crate::compute()`]; when it goes, the next claimant takes it over (its share changes too).
//! - A change of the node's settings or of its own Node object (addresses, zone, podCIDRs, labels — the
//!   only fields kept) changes every Service's share: [`Changes::node`] says so.
//! - A Service can be left out ([`ClusterState::leave_out`]: the kernel refused its rules); only its
//!   ClusterIPs stay, rejecting. It is tried again when it or one of its slices changes.
//! - An EndpointSlice's [`LAST_CHANGE_TRIGGER_TIME`] is handed out with the change it caused, for
//!   network-programming latency.
//! - A destination's backends keep their positions across changes ([`crate::positions`]): a backend
//!   that stays is not moved, so a change of one endpoint rewrites one position of the data plane.
//!   `compute` has no history and gives them in address order; a fresh state starts from that order.
//!
//! Nothing here reads a clock, a file or the kernel.
//!
//! ```
//! use proxier_core::NodeConfig;
//! use proxier_core::state::{ClusterState, Service, WatchEvent};
//!
//! let config = NodeConfig { node_name: "node-a".into(), node_ips: vec!["192.168.50.1".parse()?], ..Default::default() };
//! let mut state = ClusterState::new(config);
//! let service: Service = serde_json::from_str(r#"{"metadata":{"namespace":"shop","name":"web"},
//!     "spec":{"clusterIP":"10.96.0.20","ports":[{"port":80,"protocol":"TCP"}]}}"#)?;
//! state.fold(WatchEvent::ListStart::<Service>);
//! state.fold(WatchEvent::ListItem(service));
//! state.fold(WatchEvent::<Service>::ListDone);
//! let changes = state.changes();
//! assert_eq!(changes.services.len(), 1);
//! assert!(changes.services[0].old.is_empty());
//! assert_eq!(changes.services[0].new[0].destinations.len(), 1); // 10.96.0.20:80, rejected: no endpoints
//!
//! // A relist without it: it was deleted while the watch was down.
//! state.fold(WatchEvent::<Service>::ListStart);
//! state.fold(WatchEvent::<Service>::ListDone);
//! assert!(state.changes().services[0].new.is_empty());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::compute::{ParsedService, ServiceRules, assemble, orphan_slice, service_rules};
use crate::config::NodeConfig;
use crate::diagnostic::{Diagnostic, ObjectRef};
use crate::endpoints::{EndpointIndex, EndpointInfo, PortKey};
use crate::model::{Action, Destination, FamilyRules, HealthCheck, IpFamily, Protocol, RuleModel};
use crate::node::{NodeContext, reduced_node};
use crate::positions::keep_positions;
use crate::snapshot::{SERVICE_NAME_LABEL, Snapshot};

/// The object types a [`ClusterState`] takes, re-exported so that an embedder names exactly the
/// Kubernetes API types (and k8s-openapi version) the core was built with.
pub use k8s_openapi::api::core::v1::{Node, Service};
/// See [`Service`].
pub use k8s_openapi::api::discovery::v1::EndpointSlice;

/// The EndpointSlice annotation the EndpointSlice controller sets to the time of the change (a pod
/// or Service update) that caused the slice's last update.
pub const LAST_CHANGE_TRIGGER_TIME: &str = "endpoints.kubernetes.io/last-change-trigger-time";

/// An object's namespace and name (an empty namespace for Nodes).
pub type Key = (String, String);

/// A destination's identity: two Services cannot both own one.
type DestinationKey = (IpAddr, Protocol, u16);

/// One event of a watch of one kind of object, as a list-then-watch client sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum WatchEvent<K> {
    /// The object was added or modified.
    Apply(K),
    /// The object was deleted.
    Delete(K),
    /// A (re)list begins: the objects that follow are the whole current set of this kind.
    ListStart,
    /// One object of the list in progress.
    ListItem(K),
    /// The list is complete: held objects of this kind it did not name are deleted.
    ListDone,
}

/// The kinds of object a [`ClusterState`] holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// Services.
    Service,
    /// EndpointSlices.
    EndpointSlice,
    /// Nodes.
    Node,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 3] = [Kind::Service, Kind::EndpointSlice, Kind::Node];

    fn index(self) -> usize {
        match self {
            Kind::Service => 0,
            Kind::EndpointSlice => 1,
            Kind::Node => 2,
        }
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for k8s_openapi::api::core::v1::Service {}
    impl Sealed for k8s_openapi::api::discovery::v1::EndpointSlice {}
    impl Sealed for k8s_openapi::api::core::v1::Node {}
}

/// An object kind a [`ClusterState`] folds watch events of: [`Service`], [`EndpointSlice`], [`Node`].
pub trait Watched: sealed::Sealed + Sized {
    /// The kind.
    const KIND: Kind;

    /// The object's namespace and name.
    fn key(&self) -> Key;

    /// Adds or replaces the object in `state`; returns whether anything its rules depend on changed.
    fn apply_to(self, state: &mut ClusterState) -> bool;
}

impl Watched for Service {
    const KIND: Kind = Kind::Service;

    fn key(&self) -> Key {
        key_of(&self.metadata)
    }

    fn apply_to(self, state: &mut ClusterState) -> bool {
        state.apply_service(self)
    }
}

impl Watched for EndpointSlice {
    const KIND: Kind = Kind::EndpointSlice;

    fn key(&self) -> Key {
        key_of(&self.metadata)
    }

    fn apply_to(self, state: &mut ClusterState) -> bool {
        state.apply_endpoint_slice(self)
    }
}

impl Watched for Node {
    const KIND: Kind = Kind::Node;

    fn key(&self) -> Key {
        (String::new(), self.metadata.name.clone().unwrap_or_default())
    }

    fn apply_to(self, state: &mut ClusterState) -> bool {
        state.apply_node(self)
    }
}

/// What [`ClusterState::changes`] hands out: the Services whose share of the rules changed since the
/// last call.
#[derive(Debug, Clone, Default)]
pub struct Changes {
    /// The node's settings or its own Node object changed in a way that changes every Service's rules
    /// (`services` then lists every Service whose share changed): replace the rules whole.
    pub node: bool,
    /// Each Service whose share changed, in namespace/name order.
    pub services: Vec<ShareChange>,
    /// The trigger times ([`LAST_CHANGE_TRIGGER_TIME`]) of the EndpointSlice changes handed out.
    pub triggers: Vec<SystemTime>,
}

impl Changes {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        !self.node && self.services.is_empty()
    }
}

/// One Service's share of the node's rules, before and after a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareChange {
    /// The Service.
    pub service: ObjectRef,
    /// Its share before: one [`FamilyRules`] per family it has a ClusterIP in, holding the node's side,
    /// its ClusterIP and the destinations it owns. Empty when it had none (new, or not proxied).
    pub old: Vec<FamilyRules>,
    /// Its share now; empty when it has none (deleted, or not proxied).
    pub new: Vec<FamilyRules>,
}

/// The cluster as one node's rules see it. See the module documentation.
#[derive(Debug)]
pub struct ClusterState {
    config: NodeConfig,
    /// Node objects, reduced to what the rules depend on: only this node's own matters, but the
    /// settings may name another node.
    nodes: BTreeMap<String, Node>,
    context: NodeContext,
    services: BTreeMap<Key, ServiceEntry>,
    slices: BTreeMap<Key, SliceEntry>,
    /// Each Service's slices, by the slices' service-name label.
    slices_of: BTreeMap<Key, Keys>,
    /// The Services whose shares hold each destination; the first in namespace/name order owns it.
    claims: BTreeMap<DestinationKey, Keys>,
    /// Services whose objects changed since their rules were last computed.
    dirty: BTreeSet<Key>,
    /// The node's context changed since the last [`ClusterState::changes`].
    node_changed: bool,
    /// Service ports with a Local policy and no local endpoint, per Service: (internal, external).
    no_local: BTreeMap<Key, (usize, usize)>,
    /// Health-check nodePorts, per Service.
    health_checks: BTreeMap<Key, Vec<HealthCheck>>,
    /// Services left out (their rules refused), with why, until they change.
    left_out: BTreeMap<ObjectRef, String>,
    /// Trigger times of EndpointSlice changes not yet handed out.
    triggers: Vec<SystemTime>,
    /// The list in progress and whether one completed, per [`Kind`].
    lists: [List; 3],
}

/// One kind's list bookkeeping. Objects of a (re)list are applied as they arrive — each is the current
/// truth, and holding a whole list of API objects would cost more memory than the state itself — and
/// only their names are kept until the list completes.
#[derive(Debug, Default)]
struct List {
    seen: Option<BTreeSet<Key>>,
    done: bool,
}

#[derive(Debug, Default)]
struct ServiceEntry {
    /// The Service as last fed; `None` once deleted, until [`ClusterState::changes`] takes its share away.
    parsed: Option<ParsedService>,
    /// Its share as last handed out.
    laid_out: Option<LaidOut>,
}

/// A Service's rules as handed out: all it computed, less the destinations an earlier Service owns.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LaidOut {
    rules: ServiceRules,
    claimed_by_others: BTreeSet<DestinationKey>,
}

impl LaidOut {
    /// The destinations this Service owns.
    fn owned(&self) -> impl Iterator<Item = &Destination> {
        self.rules
            .families
            .iter()
            .flat_map(|f| &f.destinations)
            .filter(|d| !self.claimed_by_others.contains(&(d.ip, d.protocol, d.port)))
    }

    /// The share: each family laid out alone on the node's side.
    fn share(&self, context: &NodeContext) -> Vec<FamilyRules> {
        self.rules
            .families
            .iter()
            .map(|own| FamilyRules {
                cluster_ips: vec![own.cluster_ip],
                destinations: own
                    .destinations
                    .iter()
                    .filter(|d| !self.claimed_by_others.contains(&(d.ip, d.protocol, d.port)))
                    .cloned()
                    .collect(),
                hairpin_ips: own.hairpin_ips.clone(),
                ..context.empty_rules(own.family)
            })
            .collect()
    }

    /// [`LaidOut::share`] of a share no longer kept: the destinations are moved, not copied.
    fn into_share(self, context: &NodeContext) -> Vec<FamilyRules> {
        let claimed = self.claimed_by_others;
        self.rules
            .families
            .into_iter()
            .map(|own| {
                let mut destinations = own.destinations;
                destinations.retain(|d| !claimed.contains(&(d.ip, d.protocol, d.port)));
                FamilyRules {
                    cluster_ips: vec![own.cluster_ip],
                    destinations,
                    hairpin_ips: own.hairpin_ips,
                    ..context.empty_rules(own.family)
                }
            })
            .collect()
    }
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
}

impl<'a> IntoIterator for &'a Keys {
    type Item = &'a Key;
    type IntoIter = std::slice::Iter<'a, Key>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl ClusterState {
    /// An empty state for the node `config` describes.
    pub fn new(config: NodeConfig) -> ClusterState {
        ClusterState {
            context: NodeContext::new(None, &config),
            config,
            nodes: BTreeMap::new(),
            services: BTreeMap::new(),
            slices: BTreeMap::new(),
            slices_of: BTreeMap::new(),
            claims: BTreeMap::new(),
            dirty: BTreeSet::new(),
            // The first changes are the whole node's.
            node_changed: true,
            no_local: BTreeMap::new(),
            health_checks: BTreeMap::new(),
            left_out: BTreeMap::new(),
            triggers: Vec::new(),
            lists: Default::default(),
        }
    }

    /// The node settings.
    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// The node's facts as the rules see them.
    pub fn node(&self) -> &NodeContext {
        &self.context
    }

    /// Replaces the node settings; returns whether that changes the rules (then every Service's share
    /// is recomputed and [`Changes::node`] is set).
    pub fn set_config(&mut self, config: NodeConfig) -> bool {
        if config == self.config {
            return false;
        }
        self.config = config;
        self.update_node()
    }

    /// Folds one watch event of `K`'s kind; returns how many objects changed in a way that matters to
    /// the rules. [`WatchEvent::ListDone`] deletes the held objects of that kind the list did not name.
    pub fn fold<K: Watched>(&mut self, event: WatchEvent<K>) -> usize {
        let list = K::KIND.index();
        match event {
            WatchEvent::Apply(object) => usize::from(object.apply_to(self)),
            WatchEvent::Delete(object) => usize::from(self.delete(K::KIND, &object.key())),
            WatchEvent::ListStart => {
                self.lists[list].seen = Some(BTreeSet::new());
                0
            }
            WatchEvent::ListItem(object) => {
                self.lists[list].seen.get_or_insert_with(BTreeSet::new).insert(object.key());
                usize::from(object.apply_to(self))
            }
            WatchEvent::ListDone => {
                let seen = self.lists[list].seen.take().unwrap_or_default();
                self.lists[list].done = true;
                let vanished: Vec<Key> = self.held(K::KIND).filter(|key| !seen.contains(key)).collect();
                vanished.iter().map(|key| usize::from(self.delete(K::KIND, key))).sum()
            }
        }
    }

    /// Whether a list of `kind` completed at least once.
    pub fn is_listed(&self, kind: Kind) -> bool {
        self.lists[kind.index()].done
    }

    /// Whether every kind was listed: only then is the state the whole cluster.
    pub fn is_complete(&self) -> bool {
        Kind::ALL.into_iter().all(|kind| self.is_listed(kind))
    }

    /// Folds `snapshot` as one relist of each kind: afterwards the state holds exactly its Services,
    /// EndpointSlices and Nodes (legacy Endpoints are not part of a live state). Returns how many
    /// objects changed.
    pub fn relist(&mut self, snapshot: &Snapshot) -> usize {
        fn list<K: Watched + Clone>(state: &mut ClusterState, objects: &[K]) -> usize {
            state.fold(WatchEvent::<K>::ListStart)
                + objects.iter().map(|o| state.fold(WatchEvent::ListItem(o.clone()))).sum::<usize>()
                + state.fold(WatchEvent::<K>::ListDone)
        }
        list(self, &snapshot.services) + list(self, &snapshot.endpoint_slices) + list(self, &snapshot.nodes)
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
        self.dirty.insert(key);
        true
    }

    /// Removes a Service. Returns whether it was there.
    pub fn delete_service(&mut self, namespace: &str, name: &str) -> bool {
        let key = (namespace.to_owned(), name.to_owned());
        let removed = self.services.get_mut(&key).and_then(|entry| entry.parsed.take()).is_some();
        if removed {
            self.dirty.insert(key);
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
            .and_then(|labels| labels.get(SERVICE_NAME_LABEL))
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
            self.dirty.insert(service.clone());
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
        self.update_node()
    }

    /// Removes a Node. Returns whether it was held.
    pub fn delete_node(&mut self, name: &str) -> bool {
        let removed = self.nodes.remove(name).is_some();
        if removed {
            self.update_node();
        }
        removed
    }

    /// The Services held.
    pub fn services(&self) -> impl Iterator<Item = &ParsedService> {
        self.services.values().filter_map(|entry| entry.parsed.as_ref())
    }

    /// The namespace and name of every EndpointSlice held.
    pub fn endpoint_slices(&self) -> impl Iterator<Item = &Key> {
        self.slices.keys()
    }

    /// The Nodes held, by name, reduced to what the rules depend on.
    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.nodes.values()
    }

    /// Whether objects changed since the last [`ClusterState::changes`].
    pub fn has_changes(&self) -> bool {
        self.node_changed || !self.dirty.is_empty()
    }

    /// Recomputes the Services whose objects changed since the last call (every Service after a change
    /// of the node), and the Services sharing a destination with them; returns the shares that changed.
    pub fn changes(&mut self) -> Changes {
        let node = std::mem::take(&mut self.node_changed);
        let dirty = std::mem::take(&mut self.dirty);
        let mut computed: BTreeMap<Key, Option<ServiceRules>> = BTreeMap::new();
        let mut contested = BTreeSet::new();
        for key in dirty {
            let mut rules = self.services.get(&key).and_then(|entry| entry.parsed.as_ref()).map(|parsed| {
                let slices = self.slices_of.get(&key).into_iter().flatten();
                let endpoints = EndpointIndex::from_ports(
                    slices.filter_map(|s| self.slices.get(s)).map(|s| s.endpoints.as_slice()),
                );
                service_rules(parsed, &endpoints, &self.context)
            });
            // Backends that stay keep their positions: the order last handed out is the history.
            if let (Some(rules), Some(laid)) = (rules.as_mut(), self.laid_out(&key)) {
                for family in &mut rules.families {
                    if let Some(before) = laid.rules.families.iter().find(|f| f.family == family.family) {
                        keep_positions(&before.destinations, &mut family.destinations);
                    }
                }
            }
            let old = self.laid_out(&key).map(|laid| destination_keys(&laid.rules)).unwrap_or_default();
            let new = rules.as_ref().map(destination_keys).unwrap_or_default();
            for gone in old.difference(&new) {
                self.unclaim(gone, &key);
            }
            for added in new.difference(&old) {
                self.claims.entry(*added).or_default().insert(key.clone());
            }
            contested.extend(old.symmetric_difference(&new).copied());
            self.left_out.remove(&ObjectRef::new("Service", &key.0, &key.1));
            computed.insert(key, rules);
        }
        // A Service gaining or losing a destination another also claims may change what the other owns.
        let mut affected: BTreeSet<Key> = computed.keys().cloned().collect();
        for destination in &contested {
            affected.extend(self.claims.get(destination).into_iter().flatten().cloned());
        }

        let mut services = Vec::new();
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
            let new_share = new.as_ref().map(|laid| laid.share(&self.context)).unwrap_or_default();
            let old = std::mem::replace(&mut entry.laid_out, new);
            if entry.parsed.is_none() && entry.laid_out.is_none() {
                self.services.remove(&key);
            }
            self.record(&key);
            services.push(ShareChange {
                service: ObjectRef::new("Service", &key.0, &key.1),
                old: old.map(|laid| laid.into_share(&self.context)).unwrap_or_default(),
                new: new_share,
            });
        }
        Changes { node, services, triggers: std::mem::take(&mut self.triggers) }
    }

    /// Leaves a Service's rules out until it or one of its EndpointSlices changes: only its ClusterIPs
    /// stay, so that new connections to them are rejected rather than left to time out. `why` is named
    /// in the model's diagnostics. A Service that claimed a destination another also claims hands it
    /// over: the other's share changes at the next [`ClusterState::changes`]. Returns whether the
    /// Service has a share to leave out.
    pub fn leave_out(&mut self, service: &ObjectRef, why: impl Into<String>) -> bool {
        let key = (service.namespace.clone(), service.name.clone());
        let Some(laid) = self.services.get_mut(&key).and_then(|entry| entry.laid_out.as_mut()) else { return false };
        let destinations = destination_keys(&laid.rules);
        for family in &mut laid.rules.families {
            family.destinations.clear();
            family.health_check = None;
        }
        laid.claimed_by_others.clear();
        for destination in destinations {
            if let Some(claimants) = self.claims.get(&destination) {
                // Another Service claiming it may own it now.
                self.dirty.extend(claimants.into_iter().filter(|k| **k != key).cloned());
            }
            self.unclaim(&destination, &key);
        }
        self.record(&key);
        self.left_out.insert(service.clone(), why.into());
        true
    }

    /// Services whose rules are left out ([`ClusterState::leave_out`]), each with why.
    pub fn left_out(&self) -> &BTreeMap<ObjectRef, String> {
        &self.left_out
    }

    /// The node's own share of the rules: one [`FamilyRules`] without Services for each family its
    /// addresses and pod ranges are in.
    pub fn node_share(&self) -> Vec<FamilyRules> {
        self.node_families().iter().map(|&family| self.family_base(family)).collect()
    }

    /// The families programmed whatever the Services: those of the node's addresses and pod ranges.
    pub fn node_families(&self) -> &[IpFamily] {
        self.context.node_families()
    }

    /// One family's rules with no Service in them: the node's side of that family's table. The node's
    /// share holds it for the families the node programs; a family only some Services have (an IPv6
    /// Service on an IPv4 node) is programmed while they have it.
    pub fn family_base(&self, family: IpFamily) -> FamilyRules {
        self.context.empty_rules(family)
    }

    /// Every share as last handed out: the node's, then each Service's in namespace/name order. Together
    /// they are the rules of [`ClusterState::model`].
    pub fn shares(&self) -> impl Iterator<Item = FamilyRules> + '_ {
        self.node_share().into_iter().chain(self.service_shares())
    }

    /// Each Service's share as last handed out, in namespace/name order: [`ClusterState::shares`]
    /// without the node's.
    pub fn service_shares(&self) -> impl Iterator<Item = FamilyRules> + '_ {
        self.services.values().filter_map(|entry| entry.laid_out.as_ref()).flat_map(|laid| laid.share(&self.context))
    }

    /// The model of the rules as last handed out by [`ClusterState::changes`], assembled on demand: a
    /// pass over the whole cluster, so meant for reports and tests, not for every sync. It equals
    /// [`crate::compute()`] of the same objects, with the left-out Services named in its diagnostics,
    /// except that each destination's backends are in their stable positions rather than in address
    /// order ([`RuleModel::sort_backends`] gives `compute`'s order).
    pub fn model(&self) -> RuleModel {
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
        model.diagnostics.extend(self.left_out.iter().map(|(service, why)| Diagnostic::error(service.clone(), why)));
        model.diagnostics.sort();
        model.diagnostics.dedup();
        model
    }

    /// Health-check nodePorts of the externalTrafficPolicy `Local` Services, as last handed out.
    pub fn health_checks(&self) -> impl Iterator<Item = &HealthCheck> {
        self.health_checks.values().flatten()
    }

    /// The node addresses NodePorts (and health-check nodePorts) are served on.
    pub fn node_port_ips(&self) -> Vec<IpAddr> {
        self.context.node_port_ips()
    }

    /// Service ports whose Local policy leaves this node without an endpoint, as last handed out:
    /// (internalTrafficPolicy, externalTrafficPolicy). Their traffic is dropped.
    pub fn no_local_endpoints(&self) -> (usize, usize) {
        self.no_local.values().fold((0, 0), |(i, e), (di, de)| (i + di, e + de))
    }

    fn held(&self, kind: Kind) -> Box<dyn Iterator<Item = Key> + '_> {
        match kind {
            Kind::Service => Box::new(self.services().map(|s| (s.object.namespace.clone(), s.object.name.clone()))),
            Kind::EndpointSlice => Box::new(self.slices.keys().cloned()),
            Kind::Node => Box::new(self.nodes.keys().map(|name| (String::new(), name.clone()))),
        }
    }

    fn delete(&mut self, kind: Kind, (namespace, name): &Key) -> bool {
        match kind {
            Kind::Service => self.delete_service(namespace, name),
            Kind::EndpointSlice => self.delete_endpoint_slice(namespace, name),
            Kind::Node => self.delete_node(name),
        }
    }

    /// The node's object or settings changed: if that changes its context, every Service is
    /// recomputed. Returns whether it did.
    fn update_node(&mut self) -> bool {
        let context = NodeContext::new(self.nodes.get(&self.config.node_name), &self.config);
        if context == self.context {
            return false;
        }
        self.context = context;
        self.node_changed = true;
        let keys: Vec<Key> = self.services.keys().cloned().collect();
        self.dirty.extend(keys);
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
            self.dirty.insert(service);
        }
        true
    }

    fn unclaim(&mut self, destination: &DestinationKey, key: &Key) {
        if let Some(claimants) = self.claims.get_mut(destination) {
            claimants.remove(key);
            if claimants.is_empty() {
                self.claims.remove(destination);
            }
        }
    }

    fn laid_out(&self, key: &Key) -> Option<&LaidOut> {
        self.services.get(key).and_then(|entry| entry.laid_out.as_ref())
    }

    /// Keeps the per-Service summaries (health checks, Local-policy counts) in step with its share.
    fn record(&mut self, key: &Key) {
        let laid = self.services.get(key).and_then(|entry| entry.laid_out.as_ref());
        let checks: Vec<HealthCheck> =
            laid.into_iter().flat_map(|l| l.rules.families.iter().filter_map(|f| f.health_check.clone())).collect();
        let counts = laid.map(|l| no_local_endpoints(l.owned())).unwrap_or_default();
        if checks.is_empty() {
            self.health_checks.remove(key);
        } else {
            self.health_checks.insert(key.clone(), checks);
        }
        if counts == (0, 0) {
            self.no_local.remove(key);
        } else {
            self.no_local.insert(key.clone(), counts);
        }
    }
}

fn destination_keys(rules: &ServiceRules) -> BTreeSet<DestinationKey> {
    rules.families.iter().flat_map(|f| &f.destinations).map(|d| (d.ip, d.protocol, d.port)).collect()
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

fn key_of(meta: &ObjectMeta) -> Key {
    (meta.namespace.clone().unwrap_or_default(), meta.name.clone().unwrap_or_default())
}

fn trigger_time(slice: &EndpointSlice) -> Option<SystemTime> {
    let text = slice.metadata.annotations.as_ref()?.get(LAST_CHANGE_TRIGGER_TIME)?;
    let timestamp: k8s_openapi::jiff::Timestamp = text.parse().ok()?;
    let nanos = u64::try_from(timestamp.as_nanosecond()).ok()?;
    UNIX_EPOCH.checked_add(Duration::from_nanos(nanos))
}

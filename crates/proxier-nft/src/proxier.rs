//! [`Proxier`]: the syncer a node agent embeds. It owns a [`ClusterState`] (the core's view of the
//! cluster, fed with watch events through [`Proxier::state_mut`]) and keeps the kernel in step with it,
//! one atomic transaction per [`Proxier::sync`] whose cost follows the size of the change, not of the
//! cluster.
//!
//! - The state hands out each changed Service's old and new share of the rules
//!   ([`ClusterState::changes`]); each share is laid out as a small table of its own, and proxier's
//!   tables are the union of these (see the `ledger` module). A sync replaces the changed shares and
//!   writes exactly the objects that appear or disappear: the kernel is not read, nothing else is
//!   touched. Nothing changed ⇒ `nft` is not run at all.
//! - The first sync, the first after a failure, one after [`Proxier::force_full_sync`], and one after
//!   a change of the node's settings or of its own Node object ([`proxier_core::state::Changes::node`])
//!   replace proxier's tables whole ([`Transaction::replacing`]): an existing table of an earlier run is
//!   taken over in that one transaction, so Services never stop answering.
//! - A failed `nft` run leaves the kernel as it was; the next sync is full.
//! - Chains and sets no longer used are emptied at once and deleted by a later sync at least
//!   [`STALE_GRACE`] later: kernels before 6.2 release a chain late after the last map element
//!   pointing at it goes ([`Proxier::next_cleanup`] says when).
//! - [`Proxier::resync`] is the periodic check: it lists proxier's own tables from the kernel, compares
//!   them with the committed state and, only if someone changed them, replaces them whole. With
//!   [`Proxier::with_netlink`] it reads nf_tables' change events instead ([`crate::netlink::TableWatch`]):
//!   nothing is listed, and the tables are replaced only when someone else changed them.
//! - With [`Proxier::with_netlink`], every sync goes over a persistent netlink socket: full loads,
//!   rules, sets, elements and carried counts (only ranges added to an existing interval set stay with
//!   `nft`). A full sync the kernel refuses there is given to `nft`, whose refusal finds the Services
//!   to leave out.
//! - When the kernel refuses a full sync, the Services whose rules it refuses are found
//!   ([`crate::refusal`]) and left out ([`ClusterState::leave_out`]); the rest is applied.
//! - After a sync, stale UDP conntrack entries are deleted ([`crate::conntrack`]) when a UDP
//!   destination lost endpoints or went from none to some.
//!
//! Every transaction reaches the kernel through one method (`Proxier::apply`): over the netlink
//! socket when [`Proxier::with_netlink`] gave one and it carries the transaction, else with [`Nft`].
//!
//! ```no_run
//! use proxier_core::{ClusterState, NodeConfig, WatchEvent};
//! use proxier_nft::{Nft, Proxier};
//!
//! let config = NodeConfig { node_name: "node-a".into(), ..Default::default() };
//! let mut proxier = Proxier::new(ClusterState::new(config), "proxier", Nft::default());
//! let (snapshot, _) = proxier_core::Snapshot::from_text("inline.json", r#"{"kind":"Service","apiVersion":"v1",
//!     "metadata":{"namespace":"shop","name":"web"},
//!     "spec":{"clusterIP":"10.96.0.20","ports":[{"port":80,"protocol":"TCP"}]}}"#);
//! for service in snapshot.services {
//!     proxier.state_mut().fold(WatchEvent::Apply(service));
//! }
//! let outcome = proxier.sync()?; // full: takes over any table of an earlier run
//! println!("{:?} sync, {} changes in {:?}", outcome.kind, outcome.changes, outcome.duration);
//! proxier.state_mut().delete_service("shop", "web");
//! proxier.sync()?; // partial: only the web elements go
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime};

use proxier_core::{ClusterState, Destination, DestinationKind, IpFamily, Protocol, RuleModel};

use crate::change::Change;
use crate::conntrack::{Conntrack, ConntrackFilter, ConntrackOutcome};
use crate::diff::canonical;
use crate::layout::{family_table_with, share_table};
use crate::ledger::{Journal, Ledger};
use crate::netlink::{Batch, Drift, NetlinkError, NftSocket, TableWatch};
use crate::refusal::{Refused, refused_services};
use crate::ruleset::Table;
use crate::runner::{Nft, NftError};
use crate::transaction::Transaction;

pub use crate::ledger::STALE_GRACE;

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
    /// [`proxier_core::state::LAST_CHANGE_TRIGGER_TIME`]: the time from that trigger until now.
    pub network_programming: Vec<Duration>,
    /// Stale UDP conntrack entries deleted after the sync.
    pub conntrack: ConntrackOutcome,
    /// The transaction went over the netlink socket rather than through `nft`.
    pub by_netlink: bool,
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
    /// The kernel refused the transaction sent over netlink, or its answer was incomplete.
    #[error("{kind:?} sync failed: {source}")]
    Netlink {
        /// The kind of sync that failed.
        kind: SyncKind,
        /// What the kernel said, naming the object it refused.
        #[source]
        source: NetlinkError,
    },
    /// [`Proxier::resync`] could not list the kernel's tables or load the committed ones for comparison.
    #[error("cannot read proxier's tables from the kernel: {0}")]
    Read(#[source] NftError),
}

/// A node's service proxy: a cluster state in, kernel rules out. See the module documentation.
#[derive(Debug)]
pub struct Proxier {
    state: ClusterState,
    table: String,
    nft: Nft,
    conntrack: Option<Conntrack>,
    /// Whether the tables count new connections per destination.
    counters: bool,
    force_full: bool,
    /// What every share handed out contributes to the tables.
    ledger: Ledger,
    /// Whether the kernel holds what the ledger says: false before the first successful sync and
    /// after a failure.
    committed: bool,
    /// Whether rules were ever computed (conntrack entries predating proxier are not touched).
    computed: bool,
    /// Conntrack cleanups of changes whose sync failed: run after the next successful one.
    pending_filters: BTreeSet<ConntrackFilter>,
    /// Trigger times of EndpointSlice changes not yet programmed.
    triggers: Vec<SystemTime>,
    /// The kernel's canonical listing of the committed tables, by `generation`.
    listing: Option<(u64, Vec<Option<String>>)>,
    generation: u64,
    /// The netlink socket and event watch, when enabled.
    live: Option<Live>,
}

/// [`Proxier::with_netlink`]'s socket and watch, both in the node's network namespace.
#[derive(Debug)]
struct Live {
    socket: NftSocket,
    watch: TableWatch,
}

/// Why applying a transaction failed.
enum ApplyFailure {
    Nft(NftError),
    Netlink(NetlinkError),
}

impl Proxier {
    /// A proxier keeping the kernel in step with `state`, owning table `table` in the ip and ip6
    /// families. Conntrack cleanup is off until [`Proxier::with_conntrack`].
    pub fn new(state: ClusterState, table: impl Into<String>, nft: Nft) -> Proxier {
        let table = table.into();
        Proxier {
            state,
            ledger: Ledger::default(),
            table,
            nft,
            conntrack: None,
            counters: true,
            force_full: false,
            committed: false,
            computed: false,
            pending_filters: BTreeSet::new(),
            triggers: Vec::new(),
            listing: None,
            generation: 0,
            live: None,
        }
    }

    /// Lays the tables out with per-destination counters (the default) or without; see
    /// [`crate::layout::family_table_with`]. Counts carry over every sync that would reset them.
    pub fn with_counters(mut self, counters: bool) -> Proxier {
        self.counters = counters;
        self
    }

    /// Sends partial syncs over `socket` when netlink carries them, and lets `watch` replace
    /// [`Proxier::resync`]'s listing of the kernel's tables. Both must have been opened in the
    /// network namespace `nft` programs; `watch` must watch this Proxier's table name.
    pub fn with_netlink(mut self, socket: NftSocket, mut watch: TableWatch) -> Proxier {
        watch.trust(&socket);
        self.live = Some(Live { socket, watch });
        self
    }

    /// Deletes stale UDP conntrack entries with this runner after each sync.
    pub fn with_conntrack(mut self, conntrack: Conntrack) -> Proxier {
        self.conntrack = Some(conntrack);
        self
    }

    /// The cluster state the kernel is kept in step with.
    pub fn state(&self) -> &ClusterState {
        &self.state
    }

    /// The cluster state, to feed: watch events, objects, node settings. The next sync programs
    /// what changed.
    pub fn state_mut(&mut self) -> &mut ClusterState {
        &mut self.state
    }

    /// The name of proxier's table in each family.
    pub fn table_name(&self) -> &str {
        &self.table
    }

    /// Whether a sync has something to do: objects changed since the last successful sync, or none
    /// succeeded yet, or a full sync was asked for.
    pub fn has_pending_changes(&self) -> bool {
        self.state.has_changes() || !self.committed || self.force_full
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

    /// Services left out of the kernel because it refused their rules, each with nft's message. A
    /// Service is tried again when it or one of its EndpointSlices changes.
    pub fn refused(&self) -> &Refused {
        self.state.left_out()
    }

    /// The tables the kernel holds after the last successful sync, built on demand (a pass over
    /// the whole cluster). `None` when no sync succeeded since the last failure.
    pub fn committed(&self) -> Option<Vec<Table>> {
        if !self.committed {
            return None;
        }
        let mut everything = Ledger::default();
        let mut journal = Journal::default();
        for table in self.contributions() {
            everything.add(table, &mut journal);
        }
        Some(self.ledger.tables(journal))
    }

    /// Brings the kernel in step with the state: a full replacement the first time (and after a
    /// failure, a change of the node, or [`Proxier::force_full_sync`]), otherwise only the changes.
    /// See the module docs.
    pub fn sync(&mut self) -> Result<SyncOutcome, SyncError> {
        let start = Instant::now();
        let cleanup_due = self.next_cleanup().is_some_and(|at| at <= start);
        if self.committed && !self.force_full && !self.state.has_changes() && !cleanup_due {
            return Ok(self.outcome(SyncKind::Partial, Transaction::from_changes(Vec::new(), &self.table), start));
        }

        let mut changes = self.state.changes();
        self.triggers.append(&mut changes.triggers);
        // A change of the node changes every share: replace the tables whole (until that succeeds).
        self.force_full |= changes.node;
        let full = !self.committed || self.force_full;
        let first = !self.computed;
        self.computed = true;
        if !first {
            let old = changes.services.iter().flat_map(|c| &c.old).flat_map(|f| &f.destinations);
            let new = changes.services.iter().flat_map(|c| &c.new).flat_map(|f| &f.destinations);
            self.pending_filters.extend(conntrack_filters_between(old, new));
        }

        let mut partial = None;
        if !full {
            let mut journal = Journal::default();
            for old in changes.services.iter().flat_map(|c| &c.old) {
                self.ledger.remove(&share_table(old, self.counters), &mut journal);
            }
            // A family no contribution holds gets its base first (the objects every table has): a
            // family the node does not program, which a Service brings.
            for new in changes.services.iter().flat_map(|c| &c.new) {
                if self.ledger.contributions(new.family) == 0 {
                    self.ledger
                        .add(family_table_with(&self.state.family_base(new.family), self.counters), &mut journal);
                }
                self.ledger.add(share_table(new, self.counters), &mut journal);
            }
            // A family only its base holds any more, and which the node does not program, goes.
            for old in changes.services.iter().flat_map(|c| &c.old) {
                if self.ledger.contributions(old.family) == 1 && !self.state.node_families().contains(&old.family) {
                    let base = family_table_with(&self.state.family_base(old.family), self.counters);
                    self.ledger.remove(&base, &mut journal);
                }
            }
            // A set whose type or timeout changed (an affinity timeout) is replaced with the tables.
            if !journal.redefined {
                partial = Some(Transaction::from_changes(self.ledger.finish(journal, start), &self.table));
            }
        }
        drop(changes);
        let kind = if partial.is_some() { SyncKind::Partial } else { SyncKind::Full };
        let transaction = partial.unwrap_or_else(|| self.full_transaction());
        // Counts the transaction would reset (a replaced table, a re-created element) carry over.
        let transaction = if self.counters && !transaction.is_empty() {
            let socket = self.live.as_mut().map(|live| &mut live.socket);
            crate::counters::carry_into(socket, transaction, kind == SyncKind::Full)
        } else {
            transaction
        };
        let transaction = if kind == SyncKind::Full { self.in_place(transaction) } else { transaction };

        let mut by_netlink = false;
        if !transaction.is_empty() {
            let mut result = self.apply(&transaction, true);
            if kind == SyncKind::Full && matches!(result, Err(ApplyFailure::Netlink(NetlinkError::Refused { .. }))) {
                // Nothing of it applied. `nft` gets it again: its refusal is what finds the Services
                // to blame and leave out ([`crate::refusal`]).
                result = self.apply(&transaction, false);
            }
            match result {
                Ok(netlink) => by_netlink = netlink,
                Err(failure) => {
                    // The kernel refused the whole transaction: it holds what it held. If some
                    // Services' rules are to blame, leave them out and apply the rest; else start
                    // over next time.
                    self.listing = None;
                    if let ApplyFailure::Nft(source) = &failure
                        && let Some((transaction, refused)) = self.without_refused(kind, source)
                        && self.apply(&transaction, true).is_ok()
                    {
                        return Ok(self.committed_now(SyncKind::Full, transaction, refused, start));
                    }
                    self.committed = false;
                    self.ledger = Ledger::default();
                    return Err(match failure {
                        ApplyFailure::Nft(source) => SyncError::Apply { kind, source },
                        ApplyFailure::Netlink(source) => SyncError::Netlink { kind, source },
                    });
                }
            }
        }
        let mut outcome = self.committed_now(kind, transaction, Refused::new(), start);
        outcome.by_netlink = by_netlink;
        Ok(outcome)
    }

    /// Applies `transaction`: over netlink when enabled, `netlink` and it carries it (`Ok(true)`), else by `nft`
    /// (as text when it carries counts, see [`Transaction::apply`]). Carried counts go over netlink too:
    /// the encoder gives a re-created element a counter that starts from them. With the watch, the
    /// commit is made unwatched (it is proxier's own).
    fn apply(&mut self, transaction: &Transaction, netlink: bool) -> Result<bool, ApplyFailure> {
        let Some(Live { socket, watch }) = &mut self.live else {
            return transaction.apply(&self.nft).map(|()| false).map_err(ApplyFailure::Nft);
        };
        let nft = &self.nft;
        let by_nft = |_: &mut NftSocket| {
            let result = transaction.apply(nft).map(|()| false).map_err(ApplyFailure::Nft);
            let commits = u32::from(result.is_ok());
            (result, commits)
        };
        let Some(Ok(mut batch)) = netlink.then(|| Batch::encode(transaction)) else {
            return watch.own_commit(socket, by_nft);
        };
        let sent = watch.own_commit(socket, |socket| {
            let result = socket.commit(&mut batch);
            // An incomplete answer may hide a commit: counted as one, so that only others count.
            let commits = u32::from(!matches!(result, Err(NetlinkError::Refused { .. } | NetlinkError::TooLarge(_))));
            (result, commits)
        });
        match sent {
            Ok(()) => Ok(true),
            // Nothing was sent: `nft` takes it.
            Err(NetlinkError::TooLarge(_)) => watch.own_commit(socket, by_nft),
            Err(error) => Err(ApplyFailure::Netlink(error)),
        }
    }

    /// The periodic full check: reads proxier's tables (and only them) from the kernel and compares
    /// them with the committed state. No drift ⇒ an ordinary [`Proxier::sync`] (nothing at all when
    /// nothing is pending); drift ⇒ one atomic full replacement, `drifted` set.
    ///
    /// The committed side is loaded into a scratch network namespace and listed back, so both sides
    /// are in the kernel's canonical form (needs CAP_SYS_ADMIN). Elements the data plane adds itself
    /// (session-affinity sets) are not compared.
    ///
    /// With [`Proxier::with_netlink`] nothing is listed: the watch says whether anyone else changed the
    /// tables since the last check (then they are replaced whole, `drifted` set), or that it cannot
    /// tell (events lost, or another commit raced one of proxier's: then they are replaced too). When
    /// nobody touched them the check costs reading an empty socket.
    pub fn resync(&mut self) -> Result<SyncOutcome, SyncError> {
        let start = Instant::now();
        let drifted = match &mut self.live {
            // Events tell, without reading the tables.
            Some(live) => match live.watch.take() {
                Drift::Unchanged => false,
                Drift::Changed(what) => {
                    tracing::warn!(table = %self.table, changes = ?what, "proxier's table was changed behind its back");
                    self.committed
                }
                Drift::Unknown(reason) => {
                    // Replacing the tables costs less than listing them to compare.
                    tracing::warn!(%reason, "cannot tell whether proxier's tables were changed: replacing them");
                    self.force_full = true;
                    false
                }
            },
            None => self.committed && self.drifted().map_err(SyncError::Read)?,
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

    /// The tables every share contributes: each Service's share ([`share_table`]), and the base of
    /// every family (the objects every table has): the node's families, and any a Service has.
    fn contributions(&self) -> Vec<Table> {
        let mut tables: Vec<Table> =
            self.state.service_shares().map(|rules| share_table(&rules, self.counters)).collect();
        let mut families: BTreeSet<IpFamily> = self.state.node_families().iter().copied().collect();
        families.extend(tables.iter().map(|table| table.family));
        tables.extend(
            families.into_iter().map(|family| family_table_with(&self.state.family_base(family), self.counters)),
        );
        tables
    }

    /// The transaction that replaces the tables whole, with the ledger rebuilt to match.
    fn full_transaction(&mut self) -> Transaction {
        let mut ledger = Ledger::default();
        let mut journal = Journal::default();
        for table in self.contributions() {
            ledger.add(table, &mut journal);
        }
        let tables = ledger.tables(journal);
        self.ledger = ledger;
        Transaction::replacing(tables, &self.table)
    }

    /// A full `transaction` made in place of the tables the kernel holds now
    /// ([`Transaction::in_place_of`]), read over [`Proxier::with_netlink`]'s socket (in the node's
    /// namespace). Without it, or when they cannot be read, the tables are removed and re-created:
    /// atomic all the same, but new connections may miss a Service during the commit.
    fn in_place(&mut self, transaction: Transaction) -> Transaction {
        let table = transaction.table_name().to_owned();
        let Some(live) = self.live.as_mut() else { return transaction };
        match live.socket.outline(&table) {
            Ok(held) => transaction.in_place_of(&held),
            Err(error) => {
                tracing::warn!(%error, "proxier's tables not read: the full sync removes and re-creates them");
                transaction
            }
        }
    }

    /// After a full sync failed with `error`: the Services whose rules the kernel refuses, found
    /// with `nft -c`, left out of the state, and the full transaction without their rules (only their
    /// ClusterIPs stay, rejecting). `None` when the fault is not any one Service's, or a partial sync
    /// failed (the next, full, sync searches).
    fn without_refused(&mut self, kind: SyncKind, error: &NftError) -> Option<(Transaction, Refused)> {
        if kind != SyncKind::Full || matches!(error, NftError::Spawn { .. }) {
            return None;
        }
        let refused = refused_services(&self.nft, &self.state.model(), &self.table).ok().filter(|r| !r.is_empty())?;
        for (service, why) in &refused {
            tracing::error!(service = %format!("{}/{}", service.namespace, service.name), %why, "the kernel refuses this Service's rules; left out");
            self.state.leave_out(service, why.clone());
        }
        // Services that shared a destination with those left out may own it now.
        let changes = self.state.changes();
        self.triggers.extend(changes.triggers);
        let transaction = self.full_transaction();
        Some((self.in_place(transaction), refused))
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
            by_netlink: false,
        }
    }
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

//! Atomic nft transactions: one document, applied all or nothing by one `nft` run. A transaction is
//! either the full replacement of proxier's tables or the element and chain changes between two states.

use std::collections::{BTreeMap, BTreeSet};

use proxier_core::{IpFamily, RuleModel};

use crate::change::Change;
use crate::counters::Carried;
use crate::layout::family_table_with;
use crate::ruleset::{Chain, Element, ElementKey, Hook, Set, Table};
use crate::runner::{Nft, NftError};
use crate::{compat, json, json_writer, text};

/// An atomic change to proxier's tables.
///
/// ```
/// use proxier_core::{NodeConfig, Snapshot, compute};
/// use proxier_nft::Transaction;
/// let model = compute(&Snapshot::default(), &NodeConfig { node_name: "n".into(), ..Default::default() });
/// let transaction = Transaction::full(&model, "proxier");
/// assert!(transaction.to_text().contains("delete table ip proxier"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transaction {
    table_name: String,
    changes: Vec<Change>,
    /// Counts the elements it adds start from (see [`Transaction::with_carried_counts`]).
    carried: Carried,
}

/// What one of proxier's tables holds in the kernel, by name and digest: what
/// [`Transaction::in_place_of`] needs to turn it into another table without removing it. Read with
/// [`crate::netlink::NftSocket::outline`]; elements are not part of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outline {
    /// The table's family.
    pub family: IpFamily,
    /// Its chains.
    pub chains: Vec<HeldChain>,
    /// Its sets and maps.
    pub sets: Vec<HeldSet>,
}

/// A chain of an [`Outline`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldChain {
    /// Its name.
    pub name: String,
    /// Whether it is a base chain (attached to a hook).
    pub base: bool,
    /// Where a base chain is attached, when it is a type and hook proxier's layout uses.
    pub hook: Option<Hook>,
    /// Its rules' digests, in order: a 64-bit FNV-1a of each rule's nft text, which proxier's netlink
    /// encoder stores in the rule's userdata (`None` for a rule it did not write).
    pub rules: Vec<Option<u64>>,
}

/// A set or map of an [`Outline`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldSet {
    /// Its name.
    pub name: String,
    /// Whether it is a map.
    pub map: bool,
    /// The digest of its definition (name, type, flags, timeout, counter; not its elements), when
    /// proxier's netlink encoder wrote it into the set's userdata.
    pub digest: Option<u64>,
}

/// The tables as the kernel holds them after a transaction: what the next incremental transaction
/// starts from. Includes chains and sets that were emptied but not yet deleted.
pub type Committed = Vec<Table>;

impl Transaction {
    /// The tables a model lays out as, one per programmed family, with counters.
    pub fn tables(model: &RuleModel) -> Vec<Table> {
        Transaction::tables_with(model, true)
    }

    /// The tables a model lays out as; `counters` as [`crate::layout::family_table_with`] takes it.
    pub fn tables_with(model: &RuleModel, counters: bool) -> Vec<Table> {
        model.families.iter().map(|rules| family_table_with(rules, counters)).collect()
    }

    /// [`Transaction::full`], with or without counters.
    pub fn full_with(model: &RuleModel, table_name: &str, counters: bool) -> Transaction {
        Transaction::replacing(Transaction::tables_with(model, counters), table_name)
    }

    /// Elements this transaction adds whose family, set and key are in `carried` start counting from
    /// the carried packets and bytes instead of zero: how counts survive a table's replacement or an
    /// element's re-creation. nft 1.0.6 reads counter values only in its text syntax (its JSON parser
    /// ignores them), so such a transaction is applied as text ([`Transaction::apply`]).
    pub fn with_carried_counts(mut self, carried: Carried) -> Transaction {
        self.carried = carried;
        self
    }

    /// The counts elements it adds start from (see [`Transaction::with_carried_counts`]).
    pub(crate) fn carried(&self) -> &Carried {
        &self.carried
    }

    /// Whether elements it adds start from carried counts (then `nft` must be given it as text).
    pub fn carries_counts(&self) -> bool {
        !self.carried.is_empty()
    }

    /// Applies the transaction atomically: as compact JSON, or as text when it carries counts.
    pub fn apply(&self, nft: &Nft) -> Result<(), NftError> {
        if self.carried.is_empty() { nft.apply_json(&self.to_json_compact()) } else { nft.apply_text(&self.to_text()) }
    }

    /// The full replacement of table `table_name`, in both families, by `model`: each family's table
    /// is removed and re-created, and a family the model does not program has its table removed.
    pub fn full(model: &RuleModel, table_name: &str) -> Transaction {
        Transaction::replacing(Transaction::tables(model), table_name)
    }

    /// The full replacement of proxier's tables by `tables`.
    pub fn replacing(tables: Vec<Table>, table_name: &str) -> Transaction {
        let mut tables = tables;
        let mut changes = Vec::new();
        for family in IpFamily::ALL {
            changes.push(Change::RemoveTable(family));
            if let Some(i) = tables.iter().position(|t| t.family == family) {
                changes.push(Change::CreateTable(tables.swap_remove(i)));
            }
        }
        Transaction { table_name: table_name.to_owned(), changes, carried: Carried::new() }
    }

    /// This full replacement (from [`Transaction::replacing`]) made in place of the tables `held`
    /// outlines: a table that exists is changed into the new one in the same transaction instead of
    /// removed and re-created. Chains stay (a base chain when its hook is the same) and keep their
    /// rules when they are unchanged (same digests), else are flushed and refilled; sets and maps stay
    /// when their definition is unchanged and are flushed and refilled; everything else is deleted or
    /// added. The session-affinity sets the data plane fills keep their entries.
    ///
    /// Why: nf_tables makes a transaction atomic per chain walk, not per packet. A packet that walks a
    /// chain in the old generation may look up a set, or walk on into another chain, after the
    /// commit. Removing the table detaches its base chains while the new ones are attached beside
    /// them (a packet may walk the new, still empty, chain before the commit and the old, emptied, one
    /// after it) and deactivates every element of its maps (an old rule's lookup after the commit
    /// finds nothing): either way a new connection misses its Service's DNAT and is refused. Kept
    /// chains and maps are the same kernel objects: an old rule's lookup after the commit finds the
    /// new elements under the same keys, and unchanged rules (such as the anonymous maps of the
    /// balancing chains) are never deactivated.
    ///
    /// A family whose table `held` does not outline (no table, or no chains) is removed and created.
    ///
    /// ```
    /// use proxier_core::IpFamily;
    /// use proxier_nft::ruleset::{Chain, ChainType, Hook, HookPoint, Rule, Statement, Table, Verdict};
    /// use proxier_nft::transaction::{HeldChain, HeldSet, Outline};
    /// use proxier_nft::{Change, Transaction};
    /// let hook = Some(Hook { chain_type: ChainType::Nat, point: HookPoint::Output, priority: -100 });
    /// let rules = vec![Rule::new(vec![Statement::Verdict(Verdict::Jump("services".into()))])];
    /// let output = Chain { name: "nat-output".into(), hook, rules };
    /// let services = Chain { name: "services".into(), hook: None, rules: vec![] };
    /// let table = Table { family: IpFamily::V4, chains: vec![output, services], sets: vec![] };
    /// let full = Transaction::replacing(vec![table], "proxier");
    /// let held = Outline {
    ///     family: IpFamily::V4,
    ///     chains: vec![
    ///         // Written by `nft`: its one rule has no digest.
    ///         HeldChain { name: "nat-output".into(), base: true, hook, rules: vec![None] },
    ///         HeldChain { name: "gone".into(), base: false, hook: None, rules: vec![] },
    ///     ],
    ///     sets: vec![HeldSet { name: "old-map".into(), map: true, digest: None }],
    /// };
    /// let in_place = full.in_place_of(&[held]);
    /// // The base chain is flushed and refilled, not removed; what the new table lacks goes.
    /// assert_eq!(in_place.changes()[..4], [
    ///     Change::FlushChain { family: IpFamily::V4, chain: "nat-output".into() },
    ///     Change::DeleteSet { family: IpFamily::V4, set: "old-map".into(), map: true },
    ///     Change::DeleteChain { family: IpFamily::V4, chain: "gone".into() },
    ///     Change::AddChain { family: IpFamily::V4, name: "services".into(), hook: None },
    /// ]);
    /// assert!(!in_place.changes().contains(&Change::RemoveTable(IpFamily::V4)));
    /// ```
    pub fn in_place_of(mut self, held: &[Outline]) -> Transaction {
        let mut changes = Vec::with_capacity(self.changes.len());
        let mut steps = std::mem::take(&mut self.changes).into_iter().peekable();
        while let Some(change) = steps.next() {
            let Change::RemoveTable(family) = change else {
                changes.push(change);
                continue;
            };
            let outline = held.iter().find(|o| o.family == family && !o.chains.is_empty());
            let created = steps.next_if(|next| matches!(next, Change::CreateTable(t) if t.family == family));
            match (outline, created) {
                (Some(outline), Some(Change::CreateTable(table))) => refill(outline, table, &mut changes),
                (_, created) => changes.extend(std::iter::once(change).chain(created)),
            }
        }
        self.changes = changes;
        self
    }

    /// The changes that turn `committed` into `desired`, and what is committed afterwards: the
    /// specification of an incremental transaction, which tests, benchmarks and the fuzzer hold the
    /// live path to. A running proxier does not use it: [`crate::Proxier`] writes the difference of
    /// the changed Services' shares through its ledger, which also keeps emptied objects for
    /// [`crate::proxier::STALE_GRACE`] before deleting them; here they are deleted by the next call.
    ///
    /// Only elements and the rules of changed chains are written, so the size of the transaction
    /// follows the size of the change, not of the cluster. Chains and sets no longer used are emptied
    /// now and deleted by the next transaction: on kernels before 6.2 a chain is released late after
    /// the last map element pointing at it goes, and deleting it at once would fail with EBUSY.
    pub fn between(committed: &[Table], desired: &[Table], table_name: &str) -> (Transaction, Committed) {
        let mut changes = Vec::new();
        let mut after = Vec::new();
        for family in IpFamily::ALL {
            let old = committed.iter().find(|t| t.family == family);
            let new = desired.iter().find(|t| t.family == family);
            match (old, new) {
                (None, None) => {}
                (Some(_), None) => changes.push(Change::RemoveTable(family)),
                (None, Some(new)) => {
                    changes.push(Change::RemoveTable(family));
                    changes.push(Change::CreateTable(new.clone()));
                    after.push(new.clone());
                }
                (Some(old), Some(new)) => after.push(table_changes(old, new, &mut changes)),
            }
        }
        (Transaction { table_name: table_name.to_owned(), changes, carried: Carried::new() }, after)
    }

    /// A transaction of the given steps, in order, on tables named `table_name`.
    pub fn from_changes(changes: Vec<Change>, table_name: &str) -> Transaction {
        Transaction { table_name: table_name.to_owned(), changes, carried: Carried::new() }
    }

    /// The table name used in both families.
    pub fn table_name(&self) -> &str {
        &self.table_name
    }

    /// The steps, in order.
    pub fn changes(&self) -> &[Change] {
        &self.changes
    }

    /// Whether applying it would change nothing.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// The tables this transaction creates whole.
    pub fn created_tables(&self) -> impl Iterator<Item = &Table> {
        self.changes.iter().filter_map(|c| match c {
            Change::CreateTable(table) => Some(table),
            _ => None,
        })
    }

    /// The transaction as the JSON document `nft -j -f -` reads.
    pub fn to_json_value(&self) -> serde_json::Value {
        let objects: Vec<_> = self.changes.iter().flat_map(|c| json::change_commands(c, &self.table_name)).collect();
        let document = nftables::schema::Nftables { objects: objects.into() };
        // Serialising plain data types cannot fail.
        let mut value = serde_json::to_value(&document).unwrap_or_default();
        compat::mend(&mut value);
        compat::add_set_counters(&mut value, &self.counted_sets());
        value
    }

    /// `(family, name)` of every set or map this transaction adds with per-element counters.
    fn counted_sets(&self) -> Vec<(IpFamily, &str)> {
        let mut counted = Vec::new();
        for change in &self.changes {
            match change {
                Change::CreateTable(table) => {
                    counted.extend(table.sets.iter().filter(|s| s.counter).map(|s| (table.family, s.name.as_str())));
                }
                Change::AddSet { family, set } if set.counter => counted.push((*family, set.name.as_str())),
                _ => {}
            }
        }
        counted
    }

    /// [`Self::to_json_value`], pretty-printed and ending in a newline: byte-identical for identical
    /// input. Written directly by [`json_writer`], without building the value (tests hold the two
    /// byte-identical).
    pub fn to_json(&self) -> String {
        json_writer::transaction_json(&self.changes, &self.table_name, true)
    }

    /// [`Self::to_json`] without whitespace (`serde_json::to_string` of the same value): what proxier
    /// hands `nft`, which parses it faster (at 10,000 Services the kernel load takes 1.71 s instead
    /// of 2.08 s) and reads a fifth fewer bytes.
    pub fn to_json_compact(&self) -> String {
        json_writer::transaction_json(&self.changes, &self.table_name, false)
    }

    /// The same transaction in nft's text syntax, loadable with `nft -f -`.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for change in &self.changes {
            text::change(&mut out, change, &self.table_name, &self.carried);
        }
        out
    }
}

fn elements_by_key(elements: &[Element]) -> BTreeMap<&ElementKey, &Element> {
    elements.iter().map(|e| (&e.key, e)).collect()
}

/// The changes that turn the table `held` outlines into `table` in place ([`Transaction::in_place_of`]):
/// flushes first (rules, then elements), then deletions, then additions (chains, sets, elements,
/// rules: each may name the ones before).
fn refill(held: &Outline, mut table: Table, changes: &mut Vec<Change>) {
    let family = table.family;
    let kept_set =
        |held: &HeldSet| table.sets.iter().any(|s| s.name == held.name && held.digest == Some(text::set_digest(s)));
    // A set redefined under its name is deleted and added, so every rule that may name it is written
    // again (rare: a change of the layout itself).
    let redefined = held.sets.iter().any(|h| !kept_set(h) && table.sets.iter().any(|s| s.name == h.name));
    let kept_sets: BTreeSet<&str> = held.sets.iter().filter(|h| kept_set(h)).map(|h| h.name.as_str()).collect();
    let mut kept_chains = BTreeSet::new();
    let mut refilled = BTreeSet::new();
    let mut gone = Vec::new();
    for chain in &held.chains {
        let new = table.chains.iter().find(|c| c.name == chain.name);
        let kept = new.filter(|new| (chain.hook.is_some() || !chain.base) && new.hook == chain.hook);
        let unchanged = kept.is_some_and(|new| {
            !redefined && chain.rules.iter().copied().eq(new.rules.iter().map(|r| Some(text::rule_digest(r, family))))
        });
        if !unchanged && !chain.rules.is_empty() {
            changes.push(Change::FlushChain { family, chain: chain.name.clone() });
        }
        match kept {
            Some(new) => {
                kept_chains.insert(new.name.clone());
                if !unchanged {
                    refilled.insert(new.name.clone());
                }
            }
            None => gone.push(chain.name.clone()),
        }
    }
    for set in &held.sets {
        if !kept_sets.contains(set.name.as_str()) {
            changes.push(Change::DeleteSet { family, set: set.name.clone(), map: set.map });
            continue;
        }
        // What the data plane adds to a session-affinity set (none of the layout's) stays.
        let dynamic = table.sets.iter().any(|s| s.name == set.name && s.timeout.is_some() && s.elements.is_empty());
        if !dynamic {
            changes.push(Change::FlushSet { family, set: set.name.clone(), map: set.map });
        }
    }
    changes.extend(gone.into_iter().map(|chain| Change::DeleteChain { family, chain }));
    for chain in table.chains.iter().filter(|c| !kept_chains.contains(&c.name)) {
        changes.push(Change::AddChain { family, name: chain.name.clone(), hook: chain.hook });
    }
    for mut set in std::mem::take(&mut table.sets) {
        let elements = std::mem::take(&mut set.elements);
        let name = set.name.clone();
        if !kept_sets.contains(name.as_str()) {
            changes.push(Change::AddSet { family, set });
        }
        if !elements.is_empty() {
            changes.push(Change::AddElements { family, set: name, elements });
        }
    }
    for chain in table.chains {
        let written = refilled.contains(&chain.name) || !kept_chains.contains(&chain.name);
        if written && !chain.rules.is_empty() {
            changes.push(Change::AddRules { family, chain: chain.name, rules: chain.rules });
        }
    }
}

fn table_changes(old: &Table, new: &Table, changes: &mut Vec<Change>) -> Table {
    let family = new.family;
    let old_chains: BTreeMap<&str, &Chain> = old.chains.iter().map(|c| (c.name.as_str(), c)).collect();
    let old_sets: BTreeMap<&str, &Set> = old.sets.iter().map(|s| (s.name.as_str(), s)).collect();
    let new_chains: BTreeSet<&str> = new.chains.iter().map(|c| c.name.as_str()).collect();
    let new_sets: BTreeSet<&str> = new.sets.iter().map(|s| s.name.as_str()).collect();
    let mut after = new.clone();

    for chain in new.chains.iter().filter(|c| !old_chains.contains_key(c.name.as_str())) {
        changes.push(Change::AddChain { family, name: chain.name.clone(), hook: chain.hook });
    }
    for set in new.sets.iter().filter(|s| !old_sets.contains_key(s.name.as_str())) {
        changes.push(Change::AddSet { family, set: Set { elements: Vec::new(), ..set.clone() } });
    }
    let mut additions = Vec::new();
    for set in &new.sets {
        let before = old_sets.get(set.name.as_str()).map(|s| elements_by_key(&s.elements)).unwrap_or_default();
        let wanted = elements_by_key(&set.elements);
        let removed: Vec<Element> = before
            .iter()
            .filter(|(key, element)| wanted.get(*key) != Some(*element))
            .map(|(_, element)| (*element).clone())
            .collect();
        let added: Vec<Element> = wanted
            .iter()
            .filter(|(key, element)| before.get(*key) != Some(*element))
            .map(|(_, element)| (*element).clone())
            .collect();
        if !removed.is_empty() {
            changes.push(Change::DeleteElements { family, set: set.name.clone(), elements: removed });
        }
        if !added.is_empty() {
            additions.push(Change::AddElements { family, set: set.name.clone(), elements: added });
        }
    }
    changes.extend(additions);
    for chain in &new.chains {
        let before = old_chains.get(chain.name.as_str());
        if before.is_some_and(|c| c.rules == chain.rules && c.hook == chain.hook) {
            continue;
        }
        if before.is_some() {
            changes.push(Change::FlushChain { family, chain: chain.name.clone() });
        }
        changes.push(Change::AddRules { family, chain: chain.name.clone(), rules: chain.rules.clone() });
    }

    // Objects no longer wanted: emptied now, deleted next time (chains before the sets they use).
    let mut deletions = Vec::new();
    for chain in old.chains.iter().filter(|c| !new_chains.contains(c.name.as_str())) {
        if chain.rules.is_empty() {
            deletions.push(Change::DeleteChain { family, chain: chain.name.clone() });
        } else {
            changes.push(Change::FlushChain { family, chain: chain.name.clone() });
            after.chains.push(Chain { rules: Vec::new(), ..(*chain).clone() });
        }
    }
    for set in old.sets.iter().filter(|s| !new_sets.contains(s.name.as_str())) {
        if set.elements.is_empty() {
            deletions.push(Change::DeleteSet { family, set: set.name.clone(), map: set.data.is_some() });
        } else {
            changes.push(Change::DeleteElements { family, set: set.name.clone(), elements: set.elements.clone() });
            after.sets.push(Set { elements: Vec::new(), ..(*set).clone() });
        }
    }
    changes.extend(deletions);
    after
}

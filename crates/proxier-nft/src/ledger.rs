//! Proxier's tables as a sum of contributions, so that a change costs the size of the change.
//!
//! Each Service lays out as a small table of its own: its elements and the chains and sets only it needs
//! (`layout::share_table`). Proxier's table in a family is the union of these and of the node's own table, which
//! holds the objects every table has. The [`Ledger`] counts, for every chain, set and element, how many
//! contributions hold it; replacing a Service's old table by its new one touches only the objects whose count goes
//! to or from zero, and those are the transaction. Elements are counted by a 128-bit fingerprint of their set and
//! key, so the ledger costs a few bytes per element, not a copy of the tables.
//!
//! Objects no contribution holds any more are emptied at once and deleted at least [`STALE_GRACE`]
//! later: kernels before 6.2 release a chain late after the last map element pointing at it goes.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

use proxier_core::IpFamily;

use crate::change::Change;
use crate::ruleset::{Chain, Element, ElementKey, Rule, Set, Table, Value};

/// How long an emptied chain or set is kept before it is deleted (kube-proxy waits 1 s too).
pub const STALE_GRACE: Duration = Duration::from_secs(1);

/// How many contributions hold each object of proxier's tables, and what the kernel holds.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    families: BTreeMap<IpFamily, FamilyLedger>,
    /// Chains and sets no contribution holds, emptied in the kernel, with when they were emptied.
    stale: BTreeMap<(IpFamily, ObjectName), Instant>,
}

#[derive(Debug, Default)]
struct FamilyLedger {
    contributions: u32,
    /// Sets and maps, without their elements.
    sets: BTreeMap<String, Held<Set>>,
    chains: BTreeMap<String, Held<Chain>>,
    elements: HashMap<u128, u32>,
}

#[derive(Debug)]
struct Held<T> {
    object: T,
    holders: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum ObjectName {
    Chain(String),
    Set(String),
}

/// A chain or set of one family's table, by name.
type ObjectKey = (IpFamily, String);

/// What a batch of [`Ledger::add`] and [`Ledger::remove`] changed, until [`Ledger::finish`] writes it.
/// Removals must come before additions, so that an element a Service keeps is seen going 1 → 0 → 1.
#[derive(Debug, Default)]
pub(crate) struct Journal {
    /// Whether each touched family had a table before the batch.
    families_before: BTreeMap<IpFamily, bool>,
    /// The rules each touched chain had in the kernel before the batch; `None` if it did not exist.
    chains_before: BTreeMap<ObjectKey, Option<Vec<Rule>>>,
    /// Whether each touched set existed before the batch.
    sets_before: BTreeMap<ObjectKey, bool>,
    /// Elements whose count went to zero.
    deleted: BTreeMap<ObjectKey, BTreeMap<ElementKey, Element>>,
    /// Elements whose count went from zero.
    added: BTreeMap<ObjectKey, BTreeMap<ElementKey, Element>>,
    /// A set kept its name but changed its type or timeout: it cannot be changed in place.
    pub(crate) redefined: bool,
}

impl Ledger {
    /// How many contributions hold a table of `family`.
    pub(crate) fn contributions(&self, family: IpFamily) -> u32 {
        self.families.get(&family).map_or(0, |ledger| ledger.contributions)
    }

    /// Takes a contribution's table away.
    pub(crate) fn remove(&mut self, table: &Table, journal: &mut Journal) {
        let family = table.family;
        let Some(ledger) = self.families.get_mut(&family) else { return };
        journal.families_before.entry(family).or_insert(ledger.contributions > 0);
        ledger.contributions = ledger.contributions.saturating_sub(1);
        for set in &table.sets {
            let Some(held) = ledger.sets.get_mut(&set.name) else { continue };
            journal.sets_before.entry((family, set.name.clone())).or_insert(true);
            held.holders = held.holders.saturating_sub(1);
            for element in &set.elements {
                let print = fingerprint(&set.name, &element.key);
                let Some(count) = ledger.elements.get_mut(&print) else { continue };
                *count -= 1;
                if *count == 0 {
                    ledger.elements.remove(&print);
                    journal
                        .deleted
                        .entry((family, set.name.clone()))
                        .or_default()
                        .insert(element.key.clone(), element.clone());
                }
            }
        }
        for chain in &table.chains {
            let Some(held) = ledger.chains.get_mut(&chain.name) else { continue };
            journal
                .chains_before
                .entry((family, chain.name.clone()))
                .or_insert_with(|| Some(if held.holders > 0 { held.object.rules.clone() } else { Vec::new() }));
            held.holders = held.holders.saturating_sub(1);
        }
    }

    /// Adds a contribution's table.
    pub(crate) fn add(&mut self, table: Table, journal: &mut Journal) {
        let family = table.family;
        let ledger = self.families.entry(family).or_default();
        journal.families_before.entry(family).or_insert(ledger.contributions > 0);
        ledger.contributions += 1;
        for mut set in table.sets {
            let elements = std::mem::take(&mut set.elements);
            let name = set.name.clone();
            let existed = ledger.sets.contains_key(&name);
            journal.sets_before.entry((family, name.clone())).or_insert(existed);
            match ledger.sets.get_mut(&name) {
                Some(held) => {
                    journal.redefined |= held.object != set;
                    held.object = set;
                    held.holders += 1;
                }
                None => {
                    ledger.sets.insert(name.clone(), Held { object: set, holders: 1 });
                }
            }
            for element in elements {
                let count = ledger.elements.entry(fingerprint(&name, &element.key)).or_insert(0);
                *count += 1;
                if *count == 1 {
                    journal.added.entry((family, name.clone())).or_default().insert(element.key.clone(), element);
                }
            }
        }
        for chain in table.chains {
            // A chain several contributions hold (the firewall's, a shared balancer) has its rules
            // copied once per batch, not per contribution.
            journal.chains_before.entry((family, chain.name.clone())).or_insert_with(|| {
                ledger
                    .chains
                    .get(&chain.name)
                    .map(|held| if held.holders > 0 { held.object.rules.clone() } else { Vec::new() })
            });
            // The latest content wins: a Service's chain may keep its name and change its rules.
            let held = ledger.chains.entry(chain.name.clone()).or_insert(Held { object: chain.clone(), holders: 0 });
            held.object = chain;
            held.holders += 1;
        }
    }

    /// The steps that write a batch, plus the deletion of objects emptied at least [`STALE_GRACE`]
    /// before `now`. A family that gained its first contribution is created whole.
    pub(crate) fn finish(&mut self, journal: Journal, now: Instant) -> Vec<Change> {
        let Journal { families_before, chains_before, sets_before, mut deleted, mut added, .. } = journal;
        let mut changes = Vec::new();
        let mut updated = BTreeSet::new();
        for (&family, &before) in &families_before {
            let now_held = self.families.get(&family).is_some_and(|l| l.contributions > 0);
            match (before, now_held) {
                (_, false) => {
                    changes.push(Change::RemoveTable(family));
                    self.families.remove(&family);
                    self.stale.retain(|(f, _), _| *f != family);
                }
                (false, true) => {
                    changes.push(Change::RemoveTable(family));
                    if let Some(table) = self.table(family, &mut added) {
                        changes.push(Change::CreateTable(table));
                    }
                }
                (true, true) => {
                    updated.insert(family);
                }
            }
        }

        let mut additions = Vec::new();
        let mut rules = Vec::new();
        for ((family, name), before) in chains_before {
            if !updated.contains(&family) {
                continue;
            }
            let Some(held) = self.families.get(&family).and_then(|l| l.chains.get(&name)) else { continue };
            let after: &[Rule] = if held.holders > 0 { &held.object.rules } else { &[] };
            match &before {
                None => changes.push(Change::AddChain { family, name: name.clone(), hook: held.object.hook }),
                Some(before) if before.as_slice() == after => {}
                Some(before) if !before.is_empty() => rules.push(Change::FlushChain { family, chain: name.clone() }),
                Some(_) => {}
            }
            if before.as_deref() != Some(after) && !after.is_empty() {
                rules.push(Change::AddRules { family, chain: name.clone(), rules: after.to_vec() });
            }
            let holders = held.holders;
            self.mark(family, ObjectName::Chain(name), holders, now);
        }
        for ((family, name), existed) in sets_before {
            if !updated.contains(&family) {
                continue;
            }
            let Some(held) = self.families.get(&family).and_then(|l| l.sets.get(&name)) else { continue };
            if !existed {
                changes.push(Change::AddSet { family, set: held.object.clone() });
            }
            let holders = held.holders;
            self.mark(family, ObjectName::Set(name), holders, now);
        }
        let keys: BTreeSet<ObjectKey> = deleted.keys().chain(added.keys()).cloned().collect();
        for key in keys {
            if !updated.contains(&key.0) {
                continue;
            }
            let mut gone = deleted.remove(&key).unwrap_or_default();
            let mut new = added.remove(&key).unwrap_or_default();
            // An element removed and added back unchanged (a Service keeping it) is no change.
            gone.retain(|k, element| match new.get(k) {
                Some(same) if same == element => {
                    new.remove(k);
                    false
                }
                _ => true,
            });
            let (family, set) = key;
            if !gone.is_empty() {
                changes.push(Change::DeleteElements {
                    family,
                    set: set.clone(),
                    elements: gone.into_values().collect(),
                });
            }
            if !new.is_empty() {
                additions.push(Change::AddElements { family, set, elements: new.into_values().collect() });
            }
        }
        changes.extend(additions);
        changes.extend(rules);
        changes.extend(self.expire(now));
        changes
    }

    /// When objects emptied earlier are due to be deleted, if any are waiting.
    pub(crate) fn next_cleanup(&self) -> Option<Instant> {
        self.stale.values().min().map(|since| *since + STALE_GRACE)
    }

    /// Every table, with `elements` (gathered by a journal of adding every contribution to a fresh
    /// ledger) and this ledger's chains and sets, including those emptied and not yet deleted.
    pub(crate) fn tables(&self, journal: Journal) -> Vec<Table> {
        let mut added = journal.added;
        self.families.keys().filter_map(|&family| self.table(family, &mut added)).collect()
    }

    /// The whole table of one family, its elements taken from `added`.
    fn table(&self, family: IpFamily, added: &mut BTreeMap<ObjectKey, BTreeMap<ElementKey, Element>>) -> Option<Table> {
        let ledger = self.families.get(&family)?;
        let sets = ledger
            .sets
            .iter()
            .map(|(name, held)| Set {
                elements: added.remove(&(family, name.clone())).unwrap_or_default().into_values().collect(),
                ..held.object.clone()
            })
            .collect();
        let chains = ledger
            .chains
            .values()
            .map(|held| Chain {
                rules: if held.holders > 0 { held.object.rules.clone() } else { Vec::new() },
                ..held.object.clone()
            })
            .collect();
        Some(Table { family, sets, chains })
    }

    fn mark(&mut self, family: IpFamily, name: ObjectName, holders: u32, now: Instant) {
        if holders > 0 {
            self.stale.remove(&(family, name));
        } else {
            self.stale.entry((family, name)).or_insert(now);
        }
    }

    /// Deletes objects emptied at least [`STALE_GRACE`] ago: chains first, as they may use sets.
    fn expire(&mut self, now: Instant) -> Vec<Change> {
        let due: Vec<(IpFamily, ObjectName)> = self
            .stale
            .iter()
            .filter(|(_, since)| now.duration_since(**since) >= STALE_GRACE)
            .map(|(key, _)| key.clone())
            .collect();
        let mut chains = Vec::new();
        let mut sets = Vec::new();
        for (family, name) in due {
            self.stale.remove(&(family, name.clone()));
            let Some(ledger) = self.families.get_mut(&family) else { continue };
            match name {
                ObjectName::Chain(chain) => {
                    if ledger.chains.remove(&chain).is_some() {
                        chains.push(Change::DeleteChain { family, chain });
                    }
                }
                ObjectName::Set(set) => {
                    if let Some(held) = ledger.sets.remove(&set) {
                        sets.push(Change::DeleteSet { family, set, map: held.object.data.is_some() });
                    }
                }
            }
        }
        chains.extend(sets);
        chains
    }
}

/// A set's element, by its set and key, as 128 bits: two independent 64-bit SipHashes.
fn fingerprint(set: &str, key: &[Value]) -> u128 {
    let half = |seed: u8| {
        let mut hasher = DefaultHasher::new();
        seed.hash(&mut hasher);
        set.hash(&mut hasher);
        key.hash(&mut hasher);
        hasher.finish()
    };
    (u128::from(half(0)) << 64) | u128::from(half(1))
}

//! When the kernel refuses some Services' rules — a kernel built without a feature one of them needs —
//! the other Services must still be programmed.
//!
//! nft refuses a transaction whole, and its message does not say which Service is at fault. So the
//! culprits are found by checking (`nft -c`, which changes nothing) transactions that leave groups of
//! Services out, halving the groups that fail: about 2·k·log₂(n) checks for k refused Services out
//! of n, paid only when an apply has already failed.

use std::collections::{BTreeMap, BTreeSet};

use proxier_core::{ObjectRef, RuleModel};

use crate::runner::{Nft, NftError};
use crate::transaction::Transaction;

/// Services left out of the kernel, each with why (nft's message).
pub type Refused = BTreeMap<ObjectRef, String>;

/// Replaces proxier's tables with `model`'s. If nft refuses that, the Services whose rules the kernel
/// refuses are found ([`refused_services`]) and the rest is applied; the Services left out are returned
/// (empty when everything was applied). Fails, with the first apply's error and the kernel unchanged,
/// when the fault is not any one Service's: nft cannot run, or the rules fail even without Services.
pub fn apply_full(nft: &Nft, model: &RuleModel, table: &str) -> Result<Refused, NftError> {
    apply_full_with(nft, model, |model| Transaction::full(model, table))
}

/// [`apply_full`] with the full transaction of a model made by `full` (with or without counters,
/// counts carried, made in place of the tables the kernel holds).
pub fn apply_full_with(
    nft: &Nft,
    model: &RuleModel,
    full: impl Fn(&RuleModel) -> Transaction,
) -> Result<Refused, NftError> {
    let transaction = full(model);
    let error = match transaction.apply(nft) {
        Ok(()) => return Ok(Refused::new()),
        Err(error @ NftError::Spawn { .. }) => return Err(error),
        Err(error) => error,
    };
    let refused = match refused_services(nft, model, transaction.table_name()) {
        Ok(refused) if !refused.is_empty() => refused,
        // Nothing to blame on a Service (or the search itself failed): the first error says most.
        _ => return Err(error),
    };
    full(&model.without_services(&refused)).apply(nft)?;
    Ok(refused)
}

/// The Services whose rules the kernel refuses, each with nft's message, found with `nft -c` as the
/// module documentation describes. Fails when the model is refused even without any Service.
pub fn refused_services(nft: &Nft, model: &RuleModel, table: &str) -> Result<Refused, NftError> {
    let all = model.programmed_services();
    let check = |kept: &BTreeSet<&ObjectRef>| {
        let left_out: Refused = all.iter().filter(|s| !kept.contains(s)).map(|s| (s.clone(), String::new())).collect();
        nft.check_json(&Transaction::full(&model.without_services(&left_out), table).to_json_compact())
    };
    let mut search = Search { check, accepted: BTreeSet::new(), refused: Refused::new() };
    (search.check)(&search.accepted)?;
    search.split(&all)?;
    Ok(search.refused)
}

/// The state of the halving search: Services known to be accepted together, and those refused alone.
struct Search<'a, F> {
    check: F,
    accepted: BTreeSet<&'a ObjectRef>,
    refused: Refused,
}

impl<'a, F: Fn(&BTreeSet<&'a ObjectRef>) -> Result<(), NftError>> Search<'a, F> {
    fn split(&mut self, group: &'a [ObjectRef]) -> Result<(), NftError> {
        if group.is_empty() {
            return Ok(());
        }
        let mut trial = self.accepted.clone();
        trial.extend(group);
        match (self.check)(&trial) {
            Ok(()) => {
                self.accepted = trial;
                Ok(())
            }
            Err(error @ NftError::Spawn { .. }) => Err(error),
            Err(NftError::Failed { message, .. }) if group.len() == 1 => {
                let message: Vec<&str> = message.lines().map(str::trim).filter(|line| !line.is_empty()).collect();
                let why = format!(
                    "the kernel refused this Service's rules, so they are not programmed: {}",
                    message.join("; ")
                );
                self.refused.insert(group[0].clone(), why);
                Ok(())
            }
            Err(_) => {
                let (first, second) = group.split_at(group.len() / 2);
                self.split(first)?;
                self.split(second)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    fn services(n: usize) -> Vec<ObjectRef> {
        (0..n).map(|i| ObjectRef::new("Service", "ns", &format!("s{i:03}"))).collect()
    }

    /// Runs the search over `all` against a kernel that refuses any set holding one of `bad`.
    fn search(all: &[ObjectRef], bad: &[usize]) -> (Vec<String>, usize) {
        let checks = Cell::new(0);
        let check = |kept: &BTreeSet<&ObjectRef>| {
            checks.set(checks.get() + 1);
            match bad.iter().find(|&&i| kept.contains(&all[i])) {
                Some(i) => Err(NftError::Failed {
                    program: "nft".into(),
                    action: "check",
                    message: format!("Error: Could not process rule: s{i:03}\n\n"),
                }),
                None => Ok(()),
            }
        };
        let mut search = Search { check, accepted: BTreeSet::new(), refused: Refused::new() };
        search.split(all).unwrap();
        assert_eq!(search.accepted.len() + search.refused.len(), all.len());
        let refused = search.refused.into_iter().map(|(s, why)| format!("{}: {why}", s.name)).collect();
        (refused, checks.get())
    }

    #[test]
    fn finds_exactly_the_refused_services_in_few_checks() {
        let all = services(1000);
        let (refused, checks) = search(&all, &[7, 500, 999]);
        let why = "the kernel refused this Service's rules, so they are not programmed: Error: Could not process rule";
        assert_eq!(refused, [format!("s007: {why}: s007"), format!("s500: {why}: s500"), format!("s999: {why}: s999")]);
        assert!(checks <= 2 * 3 * 10 + 1, "{checks} checks");
    }

    #[test]
    fn everything_accepted_costs_one_check() {
        assert_eq!(search(&services(50), &[]), (vec![], 1));
    }

    #[test]
    fn every_service_refused_is_found() {
        let (refused, _) = search(&services(5), &[0, 1, 2, 3, 4]);
        assert_eq!(refused.len(), 5);
    }
}

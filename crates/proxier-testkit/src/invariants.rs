//! Checks shared by the property tests, the bad-input tests and the fuzz targets: what a rendered
//! transaction may contain, and what an incremental transaction does.
//!
//! - [`check_json_strings`]: every string in a rendered JSON document is a fixed identifier, an address or
//!   prefix, or a sanitised comment — API data can reach nft only as typed values.
//! - [`check_text`]: the text form is printable ASCII with balanced quotes on every line.
//! - [`simulate`]: applies a [`Transaction`]'s changes to tables the way the kernel would, failing where the
//!   kernel would fail (adding what exists, deleting what does not, deleting a non-empty chain or set).
//! - [`same_tables`] and [`without_stale`]: table comparison modulo order and deferred deletions;
//!   [`without_stale_listing`] does the same for a kernel listing.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use proxier_nft::Transaction;
use proxier_nft::change::Change;
use proxier_nft::ruleset::{Element, Table};
use serde_json::Value;

/// The characters a sanitised element comment may hold (`layout::element_comment`).
pub const COMMENT_CHARS: &str = " -_.:/()?";
/// nft's limit on comment length.
pub const MAX_COMMENT: usize = 128;

/// Fixed nft keywords and operators containing characters an identifier cannot.
const FIXED_PHRASES: [&str; 7] = ["tcp reset", "==", "!=", "in", "&", "|", "^"];

fn is_identifier(text: &str) -> bool {
    let body = text.strip_prefix('@').unwrap_or(text);
    !body.is_empty()
        && body.len() <= 256
        && body.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && body.chars().all(|c| c.is_ascii_alphanumeric() || "-_.*@".contains(c))
}

fn is_address(text: &str) -> bool {
    text.parse::<IpAddr>().is_ok()
}

/// Whether a comment is one proxier could have written.
pub fn is_sanitised_comment(text: &str) -> bool {
    text.len() <= MAX_COMMENT && text.chars().all(|c| c.is_ascii_alphanumeric() || COMMENT_CHARS.contains(c))
}

/// Every string value in `document` is an identifier, an address, a fixed phrase, or (under a `comment`
/// key) a sanitised comment. Object keys are checked as identifiers too.
pub fn check_json_strings(document: &Value) -> Result<(), String> {
    fn walk(value: &Value, key: Option<&str>, path: &str) -> Result<(), String> {
        match value {
            Value::String(text) => {
                let ok = if key == Some("comment") {
                    is_sanitised_comment(text)
                } else {
                    is_identifier(text) || is_address(text) || FIXED_PHRASES.contains(&text.as_str())
                };
                if ok { Ok(()) } else { Err(format!("{path}: unexpected string {text:?}")) }
            }
            Value::Array(items) => {
                items.iter().enumerate().try_for_each(|(i, item)| walk(item, key, &format!("{path}[{i}]")))
            }
            Value::Object(map) => map.iter().try_for_each(|(k, v)| {
                if !is_identifier(k) && !FIXED_PHRASES.contains(&k.as_str()) {
                    return Err(format!("{path}: unexpected key {k:?}"));
                }
                walk(v, Some(k), &format!("{path}.{k}"))
            }),
            Value::Null | Value::Bool(_) | Value::Number(_) => Ok(()),
        }
    }
    walk(document, None, "$")
}

/// The text form holds only printable ASCII, tabs and newlines, and every line has balanced quotes
/// (so no string can end early or run on into the next line).
pub fn check_text(text: &str) -> Result<(), String> {
    for (n, line) in text.lines().enumerate() {
        if let Some(c) = line.chars().find(|c| !(c.is_ascii_graphic() || *c == ' ' || *c == '\t')) {
            return Err(format!("line {}: unexpected character {c:?} in {line:?}", n + 1));
        }
        if line.matches('"').count() % 2 != 0 {
            return Err(format!("line {}: unbalanced quotes in {line:?}", n + 1));
        }
        if line.contains('\\') {
            return Err(format!("line {}: backslash in {line:?}", n + 1));
        }
    }
    Ok(())
}

/// `start` after `transaction`, as the kernel would hold it; `Err` where the kernel would refuse a step.
pub fn simulate(start: &[Table], transaction: &Transaction) -> Result<Vec<Table>, String> {
    let mut tables: Vec<Table> = start.to_vec();
    for change in transaction.changes() {
        let table_of = |tables: &mut Vec<Table>, family| -> Result<usize, String> {
            tables.iter().position(|t| t.family == family).ok_or_else(|| format!("{change:?}: no {family:?} table"))
        };
        match change {
            Change::RemoveTable(family) => tables.retain(|t| t.family != *family),
            Change::CreateTable(table) => {
                if tables.iter().any(|t| t.family == table.family) {
                    return Err(format!("CreateTable {:?}: exists", table.family));
                }
                tables.push(table.clone());
            }
            Change::AddChain { family, name, hook } => {
                let t = table_of(&mut tables, *family)?;
                if tables[t].chains.iter().any(|c| &c.name == name) {
                    return Err(format!("AddChain {name}: exists"));
                }
                tables[t].chains.push(proxier_nft::ruleset::Chain { name: name.clone(), hook: *hook, rules: vec![] });
            }
            Change::AddSet { family, set } => {
                let t = table_of(&mut tables, *family)?;
                if tables[t].sets.iter().any(|s| s.name == set.name) {
                    return Err(format!("AddSet {}: exists", set.name));
                }
                tables[t].sets.push(set.clone());
            }
            Change::AddElements { family, set, elements } => {
                let t = table_of(&mut tables, *family)?;
                let s = tables[t].sets.iter_mut().find(|s| &s.name == set).ok_or(format!("AddElements {set}: none"))?;
                for element in elements {
                    if s.elements.iter().any(|e| e.key == element.key) {
                        return Err(format!("AddElements {set}: {:?} exists", element.key));
                    }
                    s.elements.push(element.clone());
                }
            }
            Change::DeleteElements { family, set, elements } => {
                let t = table_of(&mut tables, *family)?;
                let s = tables[t].sets.iter_mut().find(|s| &s.name == set).ok_or(format!("DeleteElements {set}"))?;
                for element in elements {
                    let Some(i) = s.elements.iter().position(|e| e.key == element.key) else {
                        return Err(format!("DeleteElements {set}: {:?} absent", element.key));
                    };
                    s.elements.remove(i);
                }
            }
            Change::FlushSet { family, set, .. } => {
                let t = table_of(&mut tables, *family)?;
                let s = tables[t].sets.iter_mut().find(|s| &s.name == set).ok_or(format!("FlushSet {set}"))?;
                s.elements.clear();
            }
            Change::FlushChain { family, chain } => {
                let t = table_of(&mut tables, *family)?;
                let c = tables[t].chains.iter_mut().find(|c| &c.name == chain).ok_or(format!("Flush {chain}"))?;
                c.rules.clear();
            }
            Change::AddRules { family, chain, rules } => {
                let t = table_of(&mut tables, *family)?;
                let c = tables[t].chains.iter_mut().find(|c| &c.name == chain).ok_or(format!("AddRules {chain}"))?;
                c.rules.extend(rules.iter().cloned());
            }
            Change::DeleteChain { family, chain } => {
                let t = table_of(&mut tables, *family)?;
                let i = tables[t].chains.iter().position(|c| &c.name == chain).ok_or(format!("DelChain {chain}"))?;
                if !tables[t].chains[i].rules.is_empty() {
                    return Err(format!("DeleteChain {chain}: not empty"));
                }
                tables[t].chains.remove(i);
            }
            Change::DeleteSet { family, set, map } => {
                let t = table_of(&mut tables, *family)?;
                let i = tables[t].sets.iter().position(|s| &s.name == set).ok_or(format!("DeleteSet {set}"))?;
                // The kernel deletes a set with its elements (a full load made in place does).
                if tables[t].sets[i].data.is_some() != *map {
                    return Err(format!("DeleteSet {set}: not a {}", if *map { "map" } else { "set" }));
                }
                tables[t].sets.remove(i);
            }
        }
    }
    Ok(tables)
}

/// Tables in a canonical form: by family, sets and chains by name, elements sorted.
type Canonical = BTreeMap<String, (BTreeMap<String, String>, BTreeMap<String, String>)>;

fn canonical(tables: &[Table]) -> Canonical {
    tables
        .iter()
        .map(|t| {
            let sets = t
                .sets
                .iter()
                .map(|s| {
                    let elements: BTreeSet<&Element> = s.elements.iter().collect();
                    let shape = (&s.key, &s.data, s.interval, s.timeout);
                    (s.name.clone(), format!("{shape:?} {elements:?} {}", s.elements.len()))
                })
                .collect();
            let chains = t.chains.iter().map(|c| (c.name.clone(), format!("{:?} {:?}", c.hook, c.rules))).collect();
            (format!("{:?}", t.family), (sets, chains))
        })
        .collect()
}

/// Equal as the kernel would list them: whatever the order of sets, chains and elements.
pub fn same_tables(left: &[Table], right: &[Table]) -> Result<(), String> {
    let (left, right) = (canonical(left), canonical(right));
    if left == right {
        return Ok(());
    }
    for (name, (sets, chains)) in &left {
        let Some((other_sets, other_chains)) = right.get(name) else { return Err(format!("only left has {name}")) };
        for (kind, mine, theirs) in [("set", sets, other_sets), ("chain", chains, other_chains)] {
            for (object, body) in mine {
                match theirs.get(object) {
                    None => return Err(format!("{name}: only left has {kind} {object}")),
                    Some(other) if other != body => {
                        return Err(format!("{name}: {kind} {object} differs:\n  {body}\n  {other}"));
                    }
                    _ => {}
                }
            }
            if let Some(object) = theirs.keys().find(|o| !mine.contains_key(*o)) {
                return Err(format!("{name}: only right has {kind} {object}"));
            }
        }
    }
    Err(format!("only right has {:?}", right.keys().find(|k| !left.contains_key(*k))))
}

/// `tables` without the emptied chains and sets that `desired` no longer has (kept by
/// [`Transaction::between`] for deletion by the next transaction).
pub fn without_stale(tables: &[Table], desired: &[Table]) -> Vec<Table> {
    tables
        .iter()
        .map(|t| {
            let wanted = desired.iter().find(|d| d.family == t.family);
            let has_chain = |name: &str| wanted.is_some_and(|d| d.chains.iter().any(|c| c.name == name));
            let has_set = |name: &str| wanted.is_some_and(|d| d.sets.iter().any(|s| s.name == name));
            let mut t = t.clone();
            t.chains.retain(|c| has_chain(&c.name) || !c.rules.is_empty());
            t.sets.retain(|s| has_set(&s.name) || !s.elements.is_empty());
            t
        })
        .collect()
}

/// A kernel listing (as [`canonical_listing`](crate::canonical_listing) returns it) without the
/// emptied chains and sets that `desired` does not have: what [`without_stale`] is to tables.
pub fn without_stale_listing(mut listing: Value, desired: &[Table]) -> Value {
    let wanted = |family: &str, kind: &str, name: &str| {
        desired.iter().any(|t| {
            proxier_nft::ruleset::family_name(t.family) == family
                && match kind {
                    "chain" => t.chains.iter().any(|c| c.name == name),
                    _ => t.sets.iter().any(|s| s.name == name),
                }
        })
    };
    let objects = listing["nftables"].as_array().cloned().unwrap_or_default();
    let has_rules = |family: &str, chain: &str| {
        objects.iter().any(|o| o["rule"]["family"] == family && o["rule"]["chain"] == chain)
    };
    let kept: Vec<Value> = objects
        .iter()
        .filter(|o| {
            let Some((kind, body)) = o.as_object().and_then(|m| m.iter().next()) else { return true };
            let (family, name) = (body["family"].as_str().unwrap_or(""), body["name"].as_str().unwrap_or(""));
            match kind.as_str() {
                "chain" => wanted(family, kind, name) || has_rules(family, name),
                "set" | "map" => wanted(family, kind, name) || body.get("elem").is_some(),
                _ => true,
            }
        })
        .cloned()
        .collect();
    listing["nftables"] = Value::Array(kept);
    listing
}

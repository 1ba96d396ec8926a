//! Ruleset → nft's own text syntax, for humans (`render --format nft`, `diff`). Loads with `nft -f`
//! into exactly what the JSON form loads (tested against the kernel).

use std::collections::HashMap;
use std::fmt::Write;

use proxier_core::IpFamily;

use crate::change::Change;
use crate::counters::Carried;
use crate::ruleset::{DataType, Element, Hook, Rule, Set, Statement, Table, Value, Verdict, family_name};

/// One change to table `table`, as nft script lines; elements with counts in `carried` start from them.
pub(crate) fn change(out: &mut String, change: &Change, table: &str, carried: &Carried) {
    match change {
        Change::RemoveTable(family) => {
            let family = family_name(*family);
            let _ = writeln!(out, "add table {family} {table}\ndelete table {family} {table}");
        }
        Change::CreateTable(created) => table_block(out, created, table, carried),
        Change::AddChain { family, name, hook } => {
            let _ = write!(out, "add chain {} {table} {name}", family_name(*family));
            if let Some(hook) = hook {
                let _ = write!(out, " {{ {} }}", hook_text(*hook));
            }
            out.push('\n');
        }
        Change::AddSet { family, set } => {
            let kind = if set.data.is_some() { "map" } else { "set" };
            let _ = write!(out, "add {kind} {} {table} {} ", family_name(*family), set.name);
            set_definition(out, set);
            out.push('\n');
        }
        Change::AddElements { family, set, elements } => {
            let seeds = Seeds::new(*family, set, carried);
            let items: Vec<String> = elements.iter().map(|e| seeded_element_text(e, &seeds)).collect();
            let _ = writeln!(out, "add element {} {table} {set} {{ {} }}", family_name(*family), items.join(", "));
        }
        Change::DeleteElements { family, set, elements } => {
            let items: Vec<String> = elements.iter().map(|e| key_text(&e.key)).collect();
            let _ = writeln!(out, "delete element {} {table} {set} {{ {} }}", family_name(*family), items.join(", "));
        }
        Change::FlushSet { family, set, map } => {
            let kind = if *map { "map" } else { "set" };
            let _ = writeln!(out, "flush {kind} {} {table} {set}", family_name(*family));
        }
        Change::FlushChain { family, chain } => {
            let _ = writeln!(out, "flush chain {} {table} {chain}", family_name(*family));
        }
        Change::AddRules { family, chain, rules } => {
            for rule in rules {
                let _ = writeln!(out, "add rule {} {table} {chain} {}", family_name(*family), rule_text(rule, *family));
            }
        }
        Change::DeleteChain { family, chain } => {
            let _ = writeln!(out, "delete chain {} {table} {chain}", family_name(*family));
        }
        Change::DeleteSet { family, set, map } => {
            let kind = if *map { "map" } else { "set" };
            let _ = writeln!(out, "delete {kind} {} {table} {set}", family_name(*family));
        }
    }
}

/// The table as one `table { … }` block.
fn table_block(out: &mut String, table: &Table, name: &str, carried: &Carried) {
    let _ = writeln!(out, "table {} {name} {{", family_name(table.family));
    let mut first = true;
    for set in &table.sets {
        if !std::mem::take(&mut first) {
            out.push('\n');
        }
        set_block(out, set, &Seeds::new(table.family, &set.name, carried));
    }
    for chain in &table.chains {
        if !std::mem::take(&mut first) {
            out.push('\n');
        }
        let _ = writeln!(out, "\tchain {} {{", chain.name);
        if let Some(hook) = chain.hook {
            let _ = writeln!(out, "\t\t{}", hook_text(hook));
        }
        for rule in &chain.rules {
            let _ = writeln!(out, "\t\t{}", rule_text(rule, table.family));
        }
        out.push_str("\t}\n");
    }
    out.push_str("}\n");
}

fn hook_text(hook: Hook) -> String {
    format!("type {} hook {} priority {}; policy accept;", hook.chain_type.name(), hook.point.name(), hook.priority)
}

/// `{ type …; flags …; timeout …; counter; }`: a set's definition without its elements.
fn set_definition(out: &mut String, set: &Set) {
    let _ = write!(out, "{{ {};", set_type_text(set));
    if set.interval {
        out.push_str(" flags interval;");
    }
    if let Some(timeout) = set.timeout {
        let _ = write!(out, " flags timeout; timeout {timeout}s;");
    }
    if set.counter {
        out.push_str(" counter;");
    }
    out.push_str(" }");
}

/// A digest of a rule as nft writes it. The netlink encoder stores it in the rule's userdata, where
/// a full load made in place reads it back to leave unchanged rules alone
/// ([`crate::Transaction::in_place_of`]).
pub(crate) fn rule_digest(rule: &Rule, family: IpFamily) -> u64 {
    fnv1a(rule_text(rule, family).as_bytes())
}

/// A digest of a set's or map's definition (name, type, flags, timeout, counter; not its elements):
/// as [`rule_digest`], for sets.
pub(crate) fn set_digest(set: &Set) -> u64 {
    let mut text = format!("{} ", set.name);
    set_definition(&mut text, set);
    fnv1a(text.as_bytes())
}

/// FNV-1a, 64 bits: stable across builds and platforms, unlike std's hasher.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

fn set_type_text(set: &Set) -> String {
    let key: Vec<&str> = set.key.iter().map(|&t| type_name(t)).collect();
    let mut text = format!("type {}", key.join(" . "));
    if let Some(data) = set.data {
        let _ = write!(text, " : {}", type_name(data));
    }
    text
}

fn set_block(out: &mut String, set: &Set, seeds: &Seeds<'_>) {
    let kind = if set.data.is_some() { "map" } else { "set" };
    let _ = writeln!(out, "\t{kind} {} {{", set.name);
    let _ = writeln!(out, "\t\t{}", set_type_text(set));
    if set.interval {
        out.push_str("\t\tflags interval\n");
    }
    if let Some(timeout) = set.timeout {
        let _ = writeln!(out, "\t\tflags timeout\n\t\ttimeout {timeout}s");
    }
    if set.counter {
        out.push_str("\t\tcounter\n");
    }
    if !set.elements.is_empty() {
        out.push_str("\t\telements = {");
        for (i, element) in set.elements.iter().enumerate() {
            out.push_str(if i == 0 { " " } else { ",\n\t\t\t     " });
            out.push_str(&seeded_element_text(element, seeds));
        }
        out.push_str(" }\n");
    }
    out.push_str("\t}\n");
}

fn type_name(data: DataType) -> &'static str {
    data.name()
}

pub(crate) fn key_text(key: &[Value]) -> String {
    key.iter().map(value_text).collect::<Vec<_>>().join(" . ")
}

/// The counts carried for the elements of one set, by key text: looked up without building a
/// `Carried` key per element (a full load writes hundreds of thousands).
pub(crate) struct Seeds<'a> {
    counts: HashMap<&'a str, (u64, u64)>,
}

impl<'a> Seeds<'a> {
    pub(crate) fn new(family: IpFamily, set: &str, carried: &'a Carried) -> Seeds<'a> {
        let counts = carried
            .range((family, set.to_owned(), String::new())..)
            .take_while(|((f, s, _), _)| *f == family && s == set)
            .map(|((_, _, key), counts)| (key.as_str(), *counts))
            .collect();
        Seeds { counts }
    }

    /// The packets and bytes carried for the element whose key nft writes as `key`.
    pub(crate) fn get(&self, key: &str) -> Option<(u64, u64)> {
        self.counts.get(key).copied()
    }

    /// Whether no element of the set carries a count.
    pub(crate) fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }
}

/// An element as nft writes it, without a counter value.
pub(crate) fn element_text(element: &Element) -> String {
    element_rest(element, key_text(&element.key))
}

/// An element as nft writes it, its counter starting from the count carried for it, if any.
fn seeded_element_text(element: &Element, seeds: &Seeds<'_>) -> String {
    let mut text = key_text(&element.key);
    if let Some((packets, bytes)) = seeds.get(&text) {
        let _ = write!(text, " counter packets {packets} bytes {bytes}");
    }
    element_rest(element, text)
}

/// `text` (an element's key, perhaps with its counter) followed by the element's comment and data.
fn element_rest(element: &Element, mut text: String) -> String {
    if let Some(comment) = &element.comment {
        let _ = write!(text, " comment {}", quoted(comment));
    }
    if let Some(data) = &element.data {
        let _ = write!(text, " : {}", value_text(data));
    }
    text
}

fn value_text(value: &Value) -> String {
    match value {
        Value::Addr(ip) => ip.to_string(),
        Value::Prefix(net) => format!("{}/{}", net.network(), net.prefix_len()),
        Value::Proto(protocol) => protocol.name().to_owned(),
        Value::Port(port) => port.to_string(),
        Value::Verdict(verdict) => verdict_text(verdict),
    }
}

fn verdict_text(verdict: &Verdict) -> String {
    match verdict {
        Verdict::Drop => "drop".into(),
        Verdict::Return => "return".into(),
        Verdict::Jump(target) => format!("jump {target}"),
        Verdict::Goto(target) => format!("goto {target}"),
    }
}

/// Comments are sanitised where they are made (`layout`); quoting here keeps the syntax safe for any
/// string by dropping the characters nft's lexer cannot carry inside quotes.
fn quoted(text: &str) -> String {
    let clean: String = text.chars().filter(|c| *c != '"' && *c != '\\' && !c.is_control()).collect();
    format!("\"{clean}\"")
}

fn rule_text(rule: &Rule, family: IpFamily) -> String {
    let ip = family_name(family);
    let tuple = format!("{ip} daddr . meta l4proto . th dport");
    let mut parts: Vec<String> = rule
        .statements
        .iter()
        .map(|statement| match statement {
            Statement::CtStateNew => "ct state new".to_owned(),
            Statement::CtStatusDnat => "ct status dnat".to_owned(),
            Statement::DaddrIn(set) => format!("{ip} daddr @{set}"),
            Statement::SaddrIn(set) => format!("{ip} saddr @{set}"),
            Statement::SaddrNotIn(set) => format!("{ip} saddr != @{set}"),
            Statement::Iifname { name, negate } => {
                format!("iifname {}{}", if *negate { "!= " } else { "" }, quoted(name))
            }
            Statement::FibSaddrLocal => "fib saddr type local".to_owned(),
            Statement::DestinationIn(set) => format!("{tuple} @{set}"),
            Statement::DestinationSourceNotIn(set) => format!("{tuple} . {ip} saddr != @{set}"),
            Statement::UpdateSaddr(set) => format!("update @{set} {{ {ip} saddr }}"),
            Statement::DnatTo(backend) => format!("dnat {ip} to {backend}"),
            Statement::SaddrDaddrIn(set) => format!("{ip} saddr . {ip} daddr @{set}"),
            Statement::L4Proto(protocol) => format!("meta l4proto {}", protocol.name()),
            Statement::MarkClear(bits) => format!("meta mark & {bits:#010x} == 0"),
            Statement::MarkSet(bits) => format!("meta mark set meta mark | {bits:#010x}"),
            Statement::MarkToggle(bits) => format!("meta mark set meta mark ^ {bits:#010x}"),
            Statement::DispatchVmap(map) => format!("{tuple} vmap @{map}"),
            Statement::RandomGoto(targets) => {
                let items: Vec<String> =
                    targets.iter().enumerate().map(|(i, target)| format!("{i} : goto {target}")).collect();
                format!("numgen random mod {} vmap {{ {} }}", targets.len(), items.join(", "))
            }
            Statement::DnatFromMaps { addr_map, port_map } => {
                format!("dnat {ip} to {tuple} map @{addr_map} : {tuple} map @{port_map}")
            }
            Statement::Masquerade => "masquerade fully-random".to_owned(),
            Statement::RejectTcpReset => "reject with tcp reset".to_owned(),
            Statement::Reject => "reject".to_owned(),
            Statement::Verdict(verdict) => verdict_text(verdict),
        })
        .collect();
    if let Some(comment) = &rule.comment {
        parts.push(format!("comment {}", quoted(comment)));
    }
    parts.join(" ")
}

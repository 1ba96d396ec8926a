//! What `apply` would change: the live tables against the desired ones, both as the kernel prints them.

use similar::TextDiff;

use proxier_core::IpFamily;

use crate::ruleset::family_name;
use crate::runner::{Nft, NftError};
use crate::transaction::Transaction;

/// The difference between the live tables and a transaction's, as a unified diff of nft text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableDiff {
    /// Empty when nothing would change.
    pub unified: String,
}

impl TableDiff {
    /// Whether `apply` would change nothing.
    pub fn is_empty(&self) -> bool {
        self.unified.is_empty()
    }
}

/// Compares the live kernel with `transaction`. The desired side is loaded into a scratch network
/// namespace and listed back, so both sides are in nft's canonical form and only real differences show.
pub fn diff(nft: &Nft, transaction: &Transaction) -> Result<TableDiff, NftError> {
    let name = transaction.table_name();
    let desired = nft.in_scratch_namespace(|scratch| {
        scratch.apply_text(&transaction.to_text())?;
        IpFamily::ALL.into_iter().map(|family| scratch.list_table(family, name)).collect::<Result<Vec<_>, _>>()
    })?;

    let mut unified = String::new();
    for (family, wanted) in IpFamily::ALL.into_iter().zip(desired) {
        let live = nft.list_table(family, name)?.map(|t| canonical(&t)).unwrap_or_default();
        let header = format!("table {} {}", family_name(family), name);
        let wanted = wanted.as_deref().map(canonical).unwrap_or_default();
        if live == wanted {
            continue;
        }
        let text = TextDiff::from_lines(&live, &wanted)
            .unified_diff()
            .context_radius(3)
            .header(&format!("live {header}"), &format!("desired {header}"))
            .to_string();
        unified.push_str(&text);
    }
    Ok(TableDiff { unified })
}

/// An nft table listing in comparable form: sets, maps and chains sorted (the kernel lists them in
/// creation order, which incremental syncs change), set elements one per line and sorted (the kernel
/// lists them in hash order), and the elements of timeout sets dropped (the data plane fills those).
pub fn canonical(listing: &str) -> String {
    let flat = canonical_elements(listing);
    let (mut head, mut tail) = (String::new(), String::new());
    let mut blocks: Vec<String> = Vec::new();
    let mut current: Option<String> = None;
    for line in flat.lines() {
        let top_level = line.starts_with('\t') && !line.starts_with("\t\t");
        match current.as_mut() {
            Some(block) => {
                block.push_str(line);
                block.push('\n');
                if line == "\t}" {
                    blocks.extend(current.take());
                }
            }
            None if top_level && line.ends_with('{') => current = Some(format!("{line}\n")),
            None if line.trim().is_empty() => {}
            // The table's closing brace stays after its sets, maps and chains.
            None if line == "}" => tail.push_str("}\n"),
            None => {
                head.push_str(line);
                head.push('\n');
            }
        }
    }
    blocks.extend(current);
    blocks.sort();
    head + &blocks.join("") + &tail
}

/// An element without its counter (`counter packets 3 bytes 180`): the set declares it for every
/// element, and its values count traffic, they are not configuration.
fn without_counter_values(element: &str) -> String {
    let mut words = element.split(' ').peekable();
    let mut kept = Vec::new();
    while let Some(word) = words.next() {
        if word == "counter" {
            while words.next_if(|w| *w == "packets" || *w == "bytes").is_some() {
                words.next();
            }
            continue;
        }
        kept.push(word);
    }
    kept.join(" ")
}

fn canonical_elements(listing: &str) -> String {
    let mut out = String::new();
    let mut timeout_set = false;
    let mut lines = listing.lines();
    while let Some(line) = lines.next() {
        let trimmed = line.trim();
        if (trimmed.starts_with("set ") || trimmed.starts_with("map ")) && trimmed.ends_with('{') {
            timeout_set = false;
        }
        if (trimmed.starts_with("flags ") && trimmed.contains("timeout")) || trimmed.starts_with("timeout ") {
            timeout_set = true;
        }
        let Some((indent, first)) = line.split_once("elements = { ") else {
            out.push_str(line);
            out.push('\n');
            continue;
        };
        let mut body = first.to_owned();
        while !body.trim_end().ends_with('}') {
            match lines.next() {
                Some(next) => body.push_str(next.trim()),
                None => break,
            }
        }
        if timeout_set {
            continue;
        }
        let body = body.trim_end().trim_end_matches('}');
        let mut elements: Vec<String> =
            body.split(',').map(str::trim).filter(|e| !e.is_empty()).map(without_counter_values).collect();
        elements.sort_unstable();
        out.push_str(indent);
        out.push_str("elements = {\n");
        for element in elements {
            out.push_str(indent);
            out.push('\t');
            out.push_str(&element);
            out.push_str(",\n");
        }
        out.push_str(indent);
        out.push_str("}\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_values_are_not_compared() {
        let live = "table ip t {\n\tmap m {\n\t\ttype ipv4_addr : verdict\n\t\tcounter\n\t\telements = { 10.0.0.1 counter packets 3 bytes 180 comment \"a\" : drop }\n\t}\n}\n";
        let desired = "table ip t {\n\tmap m {\n\t\ttype ipv4_addr : verdict\n\t\tcounter\n\t\telements = { 10.0.0.1 counter comment \"a\" : drop }\n\t}\n}\n";
        assert_eq!(canonical(live), canonical(desired));
        assert!(canonical(live).contains("\t10.0.0.1 comment \"a\" : drop,\n"), "{}", canonical(live));
    }

    #[test]
    fn timeout_set_elements_are_not_compared() {
        let a = "table ip t {\n\tset aff {\n\t\ttype ipv4_addr\n\t\tflags timeout\n\t\ttimeout 3h\n\t\telements = { 10.0.0.1 timeout 3h expires 2h }\n\t}\n\tset s {\n\t\ttype ipv4_addr\n\t\telements = { 10.0.0.2, 10.0.0.1 }\n\t}\n}\n";
        let b = "table ip t {\n\tset aff {\n\t\ttype ipv4_addr\n\t\tflags timeout\n\t\ttimeout 3h\n\t}\n\tset s {\n\t\ttype ipv4_addr\n\t\telements = { 10.0.0.1,\n\t\t\t10.0.0.2 }\n\t}\n}\n";
        assert_eq!(canonical(a), canonical(b));
        assert!(canonical(a).contains("\t\t\t10.0.0.1,\n\t\t\t10.0.0.2,\n"));
        let c = "table ip t {\n\tset s {\n\t\ttype ipv4_addr\n\t}\n\n\tchain x {\n\t\tdrop\n\t}\n}\n";
        let d = "table ip t {\n\tchain x {\n\t\tdrop\n\t}\n\n\tset s {\n\t\ttype ipv4_addr\n\t}\n}\n";
        assert_eq!(canonical(c), canonical(d));
        assert_ne!(canonical(c), canonical(&d.replace("drop", "accept")));
        let sorted = "table ip t {\n\tchain x {\n\t\tdrop\n\t}\n\tset s {\n\t\ttype ipv4_addr\n\t}\n}\n";
        assert_eq!(canonical(c), sorted, "blocks sorted, the table's brace closing it");
    }
}

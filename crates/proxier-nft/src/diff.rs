//! What `apply` would change: the live tables against the desired ones, both as the kernel prints them.

use similar::TextDiff;

use proxier_core::IpFamily;

use crate::layout::family_name;
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
        let live = nft.list_table(family, name)?.map(|t| normalize(&t)).unwrap_or_default();
        let header = format!("table {} {}", family_name(family), name);
        let wanted = wanted.as_deref().map(normalize).unwrap_or_default();
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

/// One set element per line, sorted: the kernel lists elements in hash order.
fn normalize(table: &str) -> String {
    let mut out = String::new();
    let mut lines = table.lines();
    while let Some(line) = lines.next() {
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
        let body = body.trim_end().trim_end_matches('}');
        let mut elements: Vec<&str> = body.split(',').map(str::trim).filter(|e| !e.is_empty()).collect();
        elements.sort_unstable();
        out.push_str(indent);
        out.push_str("elements = {\n");
        for element in elements {
            out.push_str(indent);
            out.push('\t');
            out.push_str(element);
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
    fn elements_are_one_per_line_and_sorted() {
        let listing = "table ip t {\n\tset s {\n\t\ttype ipv4_addr\n\t\telements = { 10.0.0.2, 10.0.0.1,\n\t\t\t     10.0.0.3 }\n\t}\n}\n";
        assert_eq!(
            normalize(listing),
            "table ip t {\n\tset s {\n\t\ttype ipv4_addr\n\t\telements = {\n\t\t\t10.0.0.1,\n\t\t\t10.0.0.2,\n\t\t\t10.0.0.3,\n\t\t}\n\t}\n}\n"
        );
    }
}

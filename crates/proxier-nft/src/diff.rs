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
        elements.sort_by_cached_key(|element| element_order(element));
        out.push_str(indent);
        out.push_str("elements = {\n");
        for (i, element) in elements.iter().enumerate() {
            out.push_str(indent);
            out.push('\t');
            out.push_str(element);
            // No comma after the last element, as nft lists them: the text stays what `nft -f` reads.
            out.push_str(if i + 1 < elements.len() { ",\n" } else { "\n" });
        }
        out.push_str(indent);
        out.push_str("}\n");
    }
    out
}

/// One part of an element's key as it sorts: addresses by value (`10.96.77.5` before `10.96.201.14`),
/// prefixes and ranges by their first address, numbers (ports) by value, anything else as text.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum KeyPart {
    Address(std::net::IpAddr, u8),
    Number(u64),
    Text(String),
}

/// The order of set elements in a listing: their key parts (`a . b . c`) compared part by part.
fn element_order(element: &str) -> Vec<KeyPart> {
    // The key ends where a comment, a timeout or the map's value begins.
    let key = [" comment ", " timeout ", " expires ", " : "]
        .iter()
        .filter_map(|marker| element.find(marker))
        .min()
        .map_or(element, |end| &element[..end]);
    let part = |text: &str| {
        let first = text.split('-').next().unwrap_or(text);
        let (address, prefix) = first.split_once('/').unwrap_or((first, ""));
        if let Ok(address) = address.parse::<std::net::IpAddr>() {
            return KeyPart::Address(address, prefix.parse().unwrap_or(u8::MAX));
        }
        match text.parse::<u64>() {
            Ok(number) => KeyPart::Number(number),
            Err(_) => KeyPart::Text(text.to_owned()),
        }
    };
    let mut order: Vec<KeyPart> = key.split(" . ").map(|p| part(p.trim())).collect();
    // Equal keys (which a set cannot hold twice) still sort the same way every time.
    order.push(KeyPart::Text(element.to_owned()));
    order
}

/// A unified diff with ANSI colours, as `git diff` colours it: file headers bold, hunk headers cyan,
/// removed lines red, added lines green.
pub fn colorize(unified: &str) -> String {
    let mut out = String::with_capacity(unified.len() + unified.len() / 8);
    for line in unified.split_inclusive('\n') {
        let (body, newline) = line.strip_suffix('\n').map_or((line, ""), |b| (b, "\n"));
        let color = if body.starts_with("+++ ") || body.starts_with("--- ") {
            "\x1b[1m"
        } else if body.starts_with("@@") {
            "\x1b[36m"
        } else if body.starts_with('+') {
            "\x1b[32m"
        } else if body.starts_with('-') {
            "\x1b[31m"
        } else {
            out.push_str(line);
            continue;
        };
        out.push_str(color);
        out.push_str(body);
        out.push_str("\x1b[m");
        out.push_str(newline);
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
        assert!(canonical(live).contains("\t10.0.0.1 comment \"a\" : drop\n"), "{}", canonical(live));
    }

    #[test]
    fn timeout_set_elements_are_not_compared() {
        let a = "table ip t {\n\tset aff {\n\t\ttype ipv4_addr\n\t\tflags timeout\n\t\ttimeout 3h\n\t\telements = { 10.0.0.1 timeout 3h expires 2h }\n\t}\n\tset s {\n\t\ttype ipv4_addr\n\t\telements = { 10.0.0.2, 10.0.0.1 }\n\t}\n}\n";
        let b = "table ip t {\n\tset aff {\n\t\ttype ipv4_addr\n\t\tflags timeout\n\t\ttimeout 3h\n\t}\n\tset s {\n\t\ttype ipv4_addr\n\t\telements = { 10.0.0.1,\n\t\t\t10.0.0.2 }\n\t}\n}\n";
        assert_eq!(canonical(a), canonical(b));
        assert!(canonical(a).contains("\t\t\t10.0.0.1,\n\t\t\t10.0.0.2\n"));
        let c = "table ip t {\n\tset s {\n\t\ttype ipv4_addr\n\t}\n\n\tchain x {\n\t\tdrop\n\t}\n}\n";
        let d = "table ip t {\n\tchain x {\n\t\tdrop\n\t}\n\n\tset s {\n\t\ttype ipv4_addr\n\t}\n}\n";
        assert_eq!(canonical(c), canonical(d));
        assert_ne!(canonical(c), canonical(&d.replace("drop", "accept")));
        let sorted = "table ip t {\n\tchain x {\n\t\tdrop\n\t}\n\tset s {\n\t\ttype ipv4_addr\n\t}\n}\n";
        assert_eq!(canonical(c), sorted, "blocks sorted, the table's brace closing it");
    }

    #[test]
    fn elements_are_in_address_order() {
        let listing = "table ip t {\n\tmap m {\n\t\ttype ipv4_addr . inet_proto . inet_service : verdict\n\t\telements = { 10.96.201.14 . tcp . 80 comment \"b\" : goto x, 10.96.77.5 . tcp . 443 : goto x,\n\t\t\t10.96.77.5 . tcp . 80 : goto y, 9.0.0.0/8 . udp . 53 : drop }\n\t}\n}\n";
        let canonical = canonical(listing);
        let keys: Vec<&str> = canonical.lines().filter(|l| l.starts_with("\t\t\t")).map(str::trim).collect();
        assert_eq!(
            keys,
            [
                "9.0.0.0/8 . udp . 53 : drop,",
                "10.96.77.5 . tcp . 80 : goto y,",
                "10.96.77.5 . tcp . 443 : goto x,",
                "10.96.201.14 . tcp . 80 comment \"b\" : goto x"
            ]
        );
    }

    #[test]
    fn colours_follow_git() {
        let colored = colorize("--- a\n+++ b\n@@ -1 +1 @@\n-x\n+y\n z\n");
        assert_eq!(
            colored,
            "\x1b[1m--- a\x1b[m\n\x1b[1m+++ b\x1b[m\n\x1b[36m@@ -1 +1 @@\x1b[m\n\x1b[31m-x\x1b[m\n\x1b[32m+y\x1b[m\n z\n"
        );
    }
}

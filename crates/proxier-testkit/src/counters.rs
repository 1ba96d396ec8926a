//! The per-Service counters of a table as `nft -j list` shows them, to hold proxier's own reading
//! ([`proxier_nft::counters::read`]) to: both as one map, element by element.

use std::collections::BTreeMap;

use proxier_core::IpFamily;
use proxier_nft::counters::CountedElement;
use serde_json::Value;

use crate::Netns;

/// (family, set, key as nft's text syntax writes it) → (packets, bytes, comment, verdict).
pub type Counted = BTreeMap<(IpFamily, String, String), (u64, u64, Option<String>, Option<String>)>;

/// Elements read by proxier, keyed as [`listed`] keys them. Panics if one is read twice.
pub fn by_key(elements: &[CountedElement]) -> Counted {
    let mut counted = Counted::new();
    for e in elements {
        let details = (e.packets, e.bytes, e.comment.clone(), e.verdict.clone());
        let previous = counted.insert((e.family, e.set.clone(), e.key.clone()), details);
        assert!(previous.is_none(), "{} {} read twice", e.set, e.key);
    }
    counted
}

/// Every element of the counted sets ([`proxier_nft::layout::counted`]) of table `table` in `ns`, in
/// both families, as `nft -j list table` shows it. Panics on a listing it cannot read.
pub fn listed(ns: &Netns, table: &str) -> Counted {
    let mut counted = Counted::new();
    for family in IpFamily::ALL {
        let name = if family == IpFamily::V4 { "ip" } else { "ip6" };
        // No such table in this family.
        let Ok(text) = ns.nft_args(&["-j", "list", "table", name, table], None) else { continue };
        let listing: Value = serde_json::from_str(&text).expect("nft's JSON");
        for object in listing["nftables"].as_array().expect("an nftables list") {
            let Some(set) = object.get("set").or_else(|| object.get("map")) else { continue };
            let set_name = set["name"].as_str().expect("a set name");
            if proxier_nft::layout::counted(set_name).is_none() {
                continue;
            }
            for element in set.get("elem").and_then(Value::as_array).into_iter().flatten() {
                let (key, data) = match element {
                    Value::Array(pair) => (&pair[0], Some(&pair[1])),
                    other => (other, None),
                };
                let details = &key["elem"];
                let counter = &details["counter"];
                let number =
                    |name: &str| counter[name].as_u64().unwrap_or_else(|| panic!("no counter {name} in {element}"));
                let verdict = data.map(|data| {
                    let (verdict, target) = data.as_object().expect("a verdict").iter().next().expect("a verdict");
                    match target.get("target").and_then(Value::as_str) {
                        Some(target) => format!("{verdict} {target}"),
                        None => verdict.clone(),
                    }
                });
                counted.insert(
                    (family, set_name.to_owned(), key_text(&details["val"])),
                    (
                        number("packets"),
                        number("bytes"),
                        details.get("comment").and_then(Value::as_str).map(str::to_owned),
                        verdict,
                    ),
                );
            }
        }
    }
    counted
}

/// A key of `nft -j list`'s output in nft's text syntax (`10.96.0.1 . tcp . 80`, `10.96.0.0/16`).
fn key_text(val: &Value) -> String {
    match val {
        Value::String(text) => text.clone(),
        Value::Number(number) => number.to_string(),
        Value::Object(object) if object.contains_key("concat") => {
            object["concat"].as_array().expect("parts").iter().map(key_text).collect::<Vec<_>>().join(" . ")
        }
        Value::Object(object) if object.contains_key("prefix") => {
            format!("{}/{}", object["prefix"]["addr"].as_str().expect("an address"), object["prefix"]["len"])
        }
        Value::Object(object) if object.contains_key("range") => {
            let range = object["range"].as_array().expect("a range");
            format!("{}-{}", key_text(&range[0]), key_text(&range[1]))
        }
        other => panic!("an unexpected key {other}"),
    }
}

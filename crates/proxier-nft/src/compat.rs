//! The one place where the `nftables` crate's JSON is mended for nft 1.0.6, which reads it
//! differently in these cases:
//!
//! - the crate has no `verdict` map type: maps are built with the placeholder `mark`, renamed here
//!   (proxier never uses a mark-valued map, so the placeholder is unambiguous);
//! - it serialises `drop`, `accept`, `return` and `continue` map values as bare strings, which nft
//!   rejects: they become `{"drop": null}`;
//! - its flag sets are `HashSet`s, serialised in random order: they are sorted, so output is
//!   byte-identical for identical input;
//! - `elem` objects carry `null` fields (`timeout`, `expires`, `counter`), dropped for readability;
//! - its sets and maps have no `stmt` list, so per-element counters are added by [`add_set_counters`].

use serde_json::{Map, Value};

const VERDICT_KEYWORDS: [&str; 4] = ["accept", "drop", "continue", "return"];

/// Mends a serialised `{"nftables": [...]}` document in place.
pub fn mend(document: &mut Value) {
    let Some(commands) = document.get_mut("nftables").and_then(Value::as_array_mut) else { return };
    for command in commands {
        let Some(command) = command.as_object_mut() else { continue };
        for object in command.values_mut() {
            let Some(object) = object.as_object_mut() else { continue };
            for (kind, body) in object.iter_mut() {
                mend_object(kind, body);
            }
        }
    }
}

/// Declares `counter` (`"stmt": [{"counter": null}]`) on the sets and maps named in `counted`, as
/// `(family, name)`, wherever the document adds them.
pub fn add_set_counters(document: &mut Value, counted: &[(proxier_core::IpFamily, &str)]) {
    if counted.is_empty() {
        return;
    }
    let Some(commands) = document.get_mut("nftables").and_then(Value::as_array_mut) else { return };
    for command in commands {
        let Some(Value::Object(object)) = command.get_mut("add") else { continue };
        for (kind, body) in object.iter_mut() {
            let Some(body) = body.as_object_mut().filter(|_| kind == "set" || kind == "map") else { continue };
            let family = body.get("family").and_then(Value::as_str);
            let name = body.get("name").and_then(Value::as_str);
            let wanted =
                counted.iter().any(|(f, n)| Some(crate::ruleset::family_name(*f)) == family && Some(*n) == name);
            if wanted {
                let counter = Value::Object(Map::from_iter([("counter".to_owned(), Value::Null)]));
                body.insert("stmt".into(), Value::Array(vec![counter]));
            }
        }
    }
}

fn mend_object(kind: &str, body: &mut Value) {
    let Some(body) = body.as_object_mut() else { return };
    if kind == "map" && body.get("map").and_then(Value::as_str) == Some("mark") {
        body.insert("map".into(), Value::String("verdict".into()));
    }
    if let Some(Value::Array(flags)) = body.get_mut("flags") {
        flags.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
    }
    if matches!(kind, "map" | "set" | "element")
        && let Some(Value::Array(elements)) = body.get_mut("elem")
    {
        elements.iter_mut().for_each(mend_element);
    }
    if kind == "rule"
        && let Some(Value::Array(statements)) = body.get_mut("expr")
    {
        statements.iter_mut().for_each(sort_nested_flags);
    }
}

fn mend_element(element: &mut Value) {
    if let Value::Array(pair) = element {
        if let [key, data] = pair.as_mut_slice() {
            strip_elem_nulls(key);
            if let Some(keyword) = data.as_str().filter(|s| VERDICT_KEYWORDS.contains(s)) {
                *data = Value::Object(Map::from_iter([(keyword.to_owned(), Value::Null)]));
            }
        }
    } else {
        strip_elem_nulls(element);
    }
}

fn strip_elem_nulls(key: &mut Value) {
    if let Some(Value::Object(elem)) = key.get_mut("elem") {
        elem.retain(|_, v| !v.is_null());
    }
}

fn sort_nested_flags(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map.iter_mut() {
                if key == "flags" {
                    if let Value::Array(flags) = inner {
                        flags.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
                    }
                } else {
                    sort_nested_flags(inner);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(sort_nested_flags),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn verdict_maps_get_their_type_and_object_verdicts() {
        let mut document = json!({"nftables": [{"add": {"map": {
            "family": "ip", "table": "t", "name": "m", "type": "ipv4_addr", "map": "mark",
            "elem": [["10.0.0.1", "drop"], [{"elem": {"val": "10.0.0.2", "timeout": null, "comment": "c"}},
                     {"goto": {"target": "x"}}]]
        }}}]});
        mend(&mut document);
        assert_eq!(
            document,
            json!({"nftables": [{"add": {"map": {
                "family": "ip", "table": "t", "name": "m", "type": "ipv4_addr", "map": "verdict",
                "elem": [["10.0.0.1", {"drop": null}], [{"elem": {"val": "10.0.0.2", "comment": "c"}},
                         {"goto": {"target": "x"}}]]
            }}}]})
        );
    }

    #[test]
    fn element_commands_get_object_verdicts() {
        let mut document = json!({"nftables": [{"delete": {"element": {
            "family": "ip6", "table": "t", "name": "m", "elem": [["::1", "return"]]
        }}}]});
        mend(&mut document);
        assert_eq!(document["nftables"][0]["delete"]["element"]["elem"][0][1], json!({"return": null}));
    }

    #[test]
    fn flags_are_sorted_everywhere() {
        let mut document = json!({"nftables": [
            {"add": {"set": {"name": "s", "flags": ["timeout", "interval"]}}},
            {"add": {"rule": {"expr": [{"masquerade": {"flags": ["random", "fully-random"]}}]}}}
        ]});
        mend(&mut document);
        assert_eq!(document["nftables"][0]["add"]["set"]["flags"], json!(["interval", "timeout"]));
        assert_eq!(
            document["nftables"][1]["add"]["rule"]["expr"][0]["masquerade"]["flags"],
            json!(["fully-random", "random"])
        );
    }

    #[test]
    fn other_maps_and_strings_are_left_alone() {
        let original = json!({"nftables": [{"add": {"map": {
            "name": "m", "type": "ipv4_addr", "map": "ipv4_addr", "elem": [["10.0.0.1", "10.0.0.2"]]
        }}}, {"add": {"rule": {"comment": "drop"}}}]});
        let mut document = original.clone();
        mend(&mut document);
        assert_eq!(document, original);
    }
}

//! The kernel's per-destination counters (see [`crate::layout`]'s "Counters"): read from proxier's live
//! tables, attributed to Service destinations, and carried over when a table is replaced.
//!
//! Reading lists only the counted sets, each with one `nft -j list` run; nothing is written, so a
//! read never waits for or delays a sync beyond the kernel's own locking of one set dump.

use std::collections::BTreeMap;

use proxier_core::IpFamily;
use serde_json::Value;

use crate::change::Change;
use crate::layout::{CLUSTER_IPS, NO_ENDPOINT_SERVICES, POLICY_CONNECTIONS, SERVICE_CIDRS, SERVICE_IPS};
use crate::ruleset::family_name;
use crate::runner::{Nft, NftError};
use crate::transaction::Transaction;

/// The counted sets, in the order they are read (the layout names them, in one place).
pub use crate::layout::COUNTED_SETS;

/// A counter could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CountersError {
    /// `nft` failed.
    #[error(transparent)]
    Nft(#[from] NftError),
    /// `nft` printed something that is not the listing expected.
    #[error("cannot read the counters of {set} in table {family} {table}: {reason}")]
    Listing {
        /// `ip` or `ip6`.
        family: &'static str,
        /// The table.
        table: String,
        /// The set or map.
        set: String,
        /// What was wrong.
        reason: String,
    },
}

/// One counted element as the kernel holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CountedElement {
    /// The table's family.
    pub family: IpFamily,
    /// The set or map it is in (one of [`COUNTED_SETS`]).
    pub set: String,
    /// The key as nft's text syntax writes it (`10.96.0.10 . tcp . 53`, `10.96.0.0/12`).
    pub key: String,
    /// The element's comment (`namespace/name:port/protocol (kind)` for destinations).
    pub comment: Option<String>,
    /// A map element's verdict, as nft's text syntax writes it (`drop`, `goto reject-chain`).
    pub verdict: Option<String>,
    /// Packets counted: new connections (or attempts, for rejects and drops).
    pub packets: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// Reads every counted element of proxier's table `table` in both families. A family without the
/// table, or a table laid out without counters, contributes nothing.
pub fn read(nft: &Nft, table: &str) -> Result<Vec<CountedElement>, CountersError> {
    let mut all = Vec::new();
    for family in IpFamily::ALL {
        if !nft.table_exists(family, table)? {
            continue;
        }
        let family_text = family_name(family);
        let listing_error = |set: &str, reason: String| CountersError::Listing {
            family: family_text,
            table: table.to_owned(),
            set: set.to_owned(),
            reason,
        };
        // Each counted set is listed on its own: a listing of the whole table, even a terse one, makes
        // nft 1.0.6 fetch every element of every set (seconds at 10k Services). A set the table does not
        // have (no firewalled Service, no --service-cidr) is skipped.
        for set in COUNTED_SETS {
            // Every counted set is a plain set (see the layout's COUNTED_SETS).
            let kind = "set";
            let listing = match nft.list(&["-j", "list", kind, family_text, table, set]) {
                Ok(listing) => listing,
                Err(NftError::Failed { message, .. }) if message.contains("No such file or directory") => continue,
                Err(error) => return Err(error.into()),
            };
            let listing: Value = serde_json::from_str(&listing).map_err(|e| listing_error(set, e.to_string()))?;
            let body = objects(&listing)
                .find(|(k, _)| *k == kind)
                .map(|(_, body)| body)
                .ok_or_else(|| listing_error(set, format!("no {kind} in nft's output")))?;
            // Laid out without counters (--no-counters): nothing to read.
            if !body.get("stmt").is_some_and(|s| s.to_string().contains("counter")) {
                continue;
            }
            for element in body.get("elem").and_then(Value::as_array).into_iter().flatten() {
                all.push(counted_element(family, set, element).map_err(|reason| listing_error(set, reason))?);
            }
        }
    }
    Ok(all)
}

/// `(kind, body)` of each object of an `nft -j` listing.
fn objects(listing: &Value) -> impl Iterator<Item = (&str, &Value)> {
    listing
        .get("nftables")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
        .flat_map(|object| object.iter().map(|(kind, body)| (kind.as_str(), body)))
}

/// One element of a listing: a bare key, `{"elem": {...}}`, or a `[key, value]` pair of a map.
fn counted_element(family: IpFamily, set: &str, element: &Value) -> Result<CountedElement, String> {
    let (key, data) = match element {
        Value::Array(pair) if pair.len() == 2 => (&pair[0], Some(&pair[1])),
        other => (other, None),
    };
    let (val, details) = match key.get("elem") {
        Some(details) => (details.get("val").ok_or("an element without a value")?, Some(details)),
        None => (key, None),
    };
    let counter = details.and_then(|d| d.get("counter")).ok_or("an element without a counter")?;
    let number = |name: &str| counter.get(name).and_then(Value::as_u64).ok_or(format!("a counter without {name}"));
    Ok(CountedElement {
        family,
        set: set.to_owned(),
        key: key_text(val)?,
        comment: details.and_then(|d| d.get("comment")).and_then(Value::as_str).map(str::to_owned),
        verdict: data.map(verdict_text).transpose()?,
        packets: number("packets")?,
        bytes: number("bytes")?,
    })
}

/// A key value in nft's text syntax, as [`crate::text`] writes keys.
fn key_text(val: &Value) -> Result<String, String> {
    match val {
        Value::String(text) => Ok(text.clone()),
        Value::Number(number) => Ok(number.to_string()),
        Value::Object(object) => {
            if let Some(parts) = object.get("concat").and_then(Value::as_array) {
                let parts = parts.iter().map(key_text).collect::<Result<Vec<_>, _>>()?;
                return Ok(parts.join(" . "));
            }
            if let Some(prefix) = object.get("prefix") {
                let addr = prefix.get("addr").and_then(Value::as_str);
                let len = prefix.get("len").and_then(Value::as_u64);
                if let (Some(addr), Some(len)) = (addr, len) {
                    return Ok(format!("{addr}/{len}"));
                }
            }
            if let Some(range) = object.get("range").and_then(Value::as_array)
                && let [low, high] = range.as_slice()
            {
                return Ok(format!("{}-{}", key_text(low)?, key_text(high)?));
            }
            Err(format!("an unexpected key {val}"))
        }
        other => Err(format!("an unexpected key {other}")),
    }
}

fn verdict_text(data: &Value) -> Result<String, String> {
    let object = data.as_object().ok_or_else(|| format!("an unexpected verdict {data}"))?;
    let (verdict, target) = object.iter().next().ok_or("an empty verdict")?;
    Ok(match target.get("target").and_then(Value::as_str) {
        Some(target) => format!("{verdict} {target}"),
        None => verdict.clone(),
    })
}

/// Counts to carry into a replacement table: by family, set and key text, the packets and bytes the
/// kernel held. [`crate::Transaction::with_carried_counts`] seeds the new elements with them.
pub type Carried = BTreeMap<(IpFamily, String, String), (u64, u64)>;

/// The counts worth carrying: every counted element that has counted something.
pub fn carried(elements: &[CountedElement]) -> Carried {
    elements
        .iter()
        .filter(|e| e.packets > 0 || e.bytes > 0)
        .map(|e| ((e.family, e.set.clone(), e.key.clone()), (e.packets, e.bytes)))
        .collect()
}

/// How a Service destination was reached, as the counters' `via` label names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Via {
    /// The ClusterIP.
    ClusterIp,
    /// A node address and the nodePort.
    NodePort,
    /// A LoadBalancer ingress IP.
    LoadBalancer,
    /// One of `spec.externalIPs`.
    ExternalIp,
}

impl Via {
    /// The label value: `cluster_ip`, `node_port`, `load_balancer`, `external_ip`.
    pub fn name(self) -> &'static str {
        match self {
            Via::ClusterIp => "cluster_ip",
            Via::NodePort => "node_port",
            Via::LoadBalancer => "load_balancer",
            Via::ExternalIp => "external_ip",
        }
    }

    /// From a destination kind as element comments name it.
    fn from_comment(kind: &str) -> Option<Via> {
        Some(match kind {
            "ClusterIP" => Via::ClusterIp,
            "NodePort" => Via::NodePort,
            "LoadBalancer IP" => Via::LoadBalancer,
            "externalIP" => Via::ExternalIp,
            _ => return None,
        })
    }
}

/// The identity of one Service destination's counters: a Service port, reached one way. The
/// destinations of one identity (a nodePort on several node addresses) are added up.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceDestination {
    /// The Service's namespace.
    pub namespace: String,
    /// The Service's name.
    pub name: String,
    /// The Service port's name (`""` when unnamed).
    pub port: String,
    /// `tcp`, `udp` or `sctp`.
    pub protocol: String,
    /// How it was reached.
    pub via: Via,
}

impl ServiceDestination {
    /// Reads `namespace/name:port/protocol (kind)`, the comment proxier gives destination elements.
    /// `None` for any other text (a comment shortened to fit the kernel's limit, for one).
    pub fn from_comment(comment: &str) -> Option<ServiceDestination> {
        let (service_port, kind) = comment.strip_suffix(')')?.rsplit_once(" (")?;
        let (namespace, rest) = service_port.split_once('/')?;
        let (rest, protocol) = rest.rsplit_once('/')?;
        let (name, port) = rest.split_once(':')?;
        if !["tcp", "udp", "sctp"].contains(&protocol) || namespace.is_empty() || name.is_empty() {
            return None;
        }
        Some(ServiceDestination {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            port: port.to_owned(),
            protocol: protocol.to_owned(),
            via: Via::from_comment(kind)?,
        })
    }
}

/// What happened to new connections to one Service destination.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServiceCounts {
    /// New connections sent to an endpoint.
    pub connections: u64,
    /// New connections rejected: the destination had no usable endpoint.
    pub rejected: u64,
    /// New connections dropped by policy: a `Local` traffic policy without a local endpoint, or
    /// `loadBalancerSourceRanges`.
    pub dropped: u64,
}

/// Every counter of proxier's tables, attributed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Per Service destination, including those that counted nothing yet.
    pub services: BTreeMap<ServiceDestination, ServiceCounts>,
    /// Per allocated ClusterIP: new connections rejected because no Service defines the port.
    pub unknown_ports: BTreeMap<String, u64>,
    /// Per service CIDR: new connections dropped because no Service holds the address.
    pub unallocated: BTreeMap<String, u64>,
    /// Counted packets of destinations whose comment names no Service port (shortened comments).
    pub unattributed: u64,
}

impl Stats {
    /// Attributes counted elements to what they count.
    pub fn from_elements(elements: &[CountedElement]) -> Stats {
        let mut stats = Stats::default();
        for element in elements {
            match element.set.as_str() {
                CLUSTER_IPS => *stats.unknown_ports.entry(element.key.clone()).or_default() += element.packets,
                SERVICE_CIDRS => *stats.unallocated.entry(element.key.clone()).or_default() += element.packets,
                set => {
                    let Some(destination) = element.comment.as_deref().and_then(ServiceDestination::from_comment)
                    else {
                        stats.unattributed += element.packets;
                        continue;
                    };
                    let counts = stats.services.entry(destination).or_default();
                    match set {
                        SERVICE_IPS | POLICY_CONNECTIONS => counts.connections += element.packets,
                        NO_ENDPOINT_SERVICES => counts.rejected += element.packets,
                        _ => counts.dropped += element.packets,
                    }
                }
            }
        }
        stats
    }
}

/// `transaction` with the counts it would otherwise lose carried over (see
/// [`crate::Transaction::with_carried_counts`]): for a replacement of the tables (`full`), every count;
/// otherwise those of the counted elements it deletes and adds again (a destination whose verdict
/// changed), read with one `nft get element` per set. A failed read costs the counts, never the sync.
pub fn carry_into(nft: &Nft, transaction: Transaction, full: bool) -> Transaction {
    let carried = if full {
        read(nft, transaction.table_name()).map(|elements| carried(&elements))
    } else {
        recreated(nft, &transaction)
    };
    match carried {
        Ok(carried) if !carried.is_empty() => transaction.with_carried_counts(carried),
        Ok(_) => transaction,
        Err(error) => {
            tracing::warn!(%error, "counters not carried over; the affected ones start again from zero");
            transaction
        }
    }
}

/// The counts of the counted elements `transaction` deletes and adds again.
fn recreated(nft: &Nft, transaction: &Transaction) -> Result<Carried, CountersError> {
    let mut deleted: BTreeMap<(IpFamily, &str), Vec<String>> = BTreeMap::new();
    for change in transaction.changes() {
        if let Change::DeleteElements { family, set, elements } = change
            && COUNTED_SETS.contains(&set.as_str())
        {
            deleted.entry((*family, set)).or_default().extend(elements.iter().map(|e| crate::text::key_text(&e.key)));
        }
    }
    let mut wanted: BTreeMap<(IpFamily, &str), Vec<String>> = BTreeMap::new();
    for change in transaction.changes() {
        if let Change::AddElements { family, set, elements } = change
            && let Some(gone) = deleted.get(&(*family, set.as_str()))
        {
            let keys = elements.iter().map(|e| crate::text::key_text(&e.key)).filter(|k| gone.contains(k));
            wanted.entry((*family, set)).or_default().extend(keys);
        }
    }
    let mut carried = Carried::new();
    for ((family, set), keys) in wanted.into_iter().filter(|(_, keys)| !keys.is_empty()) {
        let listing = nft.list(&[
            "get",
            "element",
            family_name(family),
            transaction.table_name(),
            set,
            &format!("{{ {} }}", keys.join(", ")),
        ])?;
        for (key, counts) in listed_counts(&listing) {
            if counts != (0, 0) {
                carried.insert((family, set.to_owned(), key), counts);
            }
        }
    }
    Ok(carried)
}

/// `(key, (packets, bytes))` of each element of an nft text listing with counters (`nft get element`
/// prints text even with `-j` in nft 1.0.6). proxier's comments hold no commas, so commas part elements.
fn listed_counts(listing: &str) -> Vec<(String, (u64, u64))> {
    let Some((_, body)) = listing.split_once("elements = {") else { return Vec::new() };
    let body = body.split('}').next().unwrap_or("");
    body.split(',')
        .filter_map(|element| {
            let (key, rest) = element.trim().split_once(" counter packets ")?;
            let mut words = rest.split(' ');
            let packets = words.next()?.parse().ok()?;
            let bytes = words.nth(1)?.parse().ok()?;
            Some((key.to_owned(), (packets, bytes)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{FIREWALL_IPS, NO_ENDPOINT_DROPS, POLICY_DROPS};
    use serde_json::json;

    #[test]
    fn elements_of_maps_sets_and_intervals() {
        let pair = json!([{"elem": {"val": {"concat": ["10.96.0.10", "tcp", 53]}, "comment": "kube-system/dns:dns-tcp/tcp (ClusterIP)",
            "counter": {"packets": 3, "bytes": 180}}}, {"goto": {"target": "reject-chain"}}]);
        let element = counted_element(IpFamily::V4, NO_ENDPOINT_SERVICES, &pair).unwrap();
        assert_eq!(element.key, "10.96.0.10 . tcp . 53");
        assert_eq!(element.verdict.as_deref(), Some("goto reject-chain"));
        assert_eq!(element.comment.as_deref(), Some("kube-system/dns:dns-tcp/tcp (ClusterIP)"));
        assert_eq!((element.packets, element.bytes), (3, 180));
        let drop = json!([{"elem": {"val": {"concat": ["10.96.0.11", "udp", 53]}, "counter": {"packets": 0, "bytes": 0}}}, {"drop": null}]);
        assert_eq!(
            counted_element(IpFamily::V4, NO_ENDPOINT_SERVICES, &drop).unwrap().verdict.as_deref(),
            Some("drop")
        );
        let prefix = json!({"elem": {"val": {"prefix": {"addr": "10.96.0.0", "len": 12}}, "counter": {"packets": 1, "bytes": 60}}});
        assert_eq!(counted_element(IpFamily::V4, SERVICE_CIDRS, &prefix).unwrap().key, "10.96.0.0/12");
        let bare = json!({"elem": {"val": "fd00::1", "counter": {"packets": 1, "bytes": 80}}});
        assert_eq!(counted_element(IpFamily::V6, CLUSTER_IPS, &bare).unwrap().key, "fd00::1");
    }

    #[test]
    fn an_element_without_a_counter_is_an_error() {
        assert!(counted_element(IpFamily::V4, CLUSTER_IPS, &json!("10.0.0.1")).is_err());
        assert!(counted_element(IpFamily::V4, CLUSTER_IPS, &json!({"elem": {"val": [1]}})).is_err());
    }

    #[test]
    fn service_destinations_from_comments() {
        let dns = ServiceDestination::from_comment("kube-system/kube-dns:dns-tcp/tcp (ClusterIP)").unwrap();
        assert_eq!(
            (dns.namespace.as_str(), dns.name.as_str(), dns.port.as_str()),
            ("kube-system", "kube-dns", "dns-tcp")
        );
        assert_eq!((dns.protocol.as_str(), dns.via), ("tcp", Via::ClusterIp));
        let unnamed = ServiceDestination::from_comment("a/web:/udp (LoadBalancer IP)").unwrap();
        assert_eq!((unnamed.port.as_str(), unnamed.via), ("", Via::LoadBalancer));
        assert_eq!(ServiceDestination::from_comment("a/b:c/tcp (NodePort)").unwrap().via, Via::NodePort);
        assert_eq!(ServiceDestination::from_comment("a/b:c/sctp (externalIP)").unwrap().via, Via::ExternalIp);
        for bad in [
            "a/b:c/tcp (ClusterIP",
            "a/b:c/icmp (ClusterIP)",
            "a/b/tcp (ClusterIP)",
            "ab:c/tcp (NodePort)",
            "a/b:c/tc...",
        ] {
            assert_eq!(ServiceDestination::from_comment(bad), None, "{bad}");
        }
    }

    #[test]
    fn elements_are_attributed_to_their_outcome() {
        let element = |set: &str, key: &str, comment: Option<&str>, verdict: Option<&str>, packets| CountedElement {
            family: IpFamily::V4,
            set: set.into(),
            key: key.into(),
            comment: comment.map(str::to_owned),
            verdict: verdict.map(str::to_owned),
            packets,
            bytes: 0,
        };
        let web = "a/web:http/tcp (NodePort)";
        let stats = Stats::from_elements(&[
            element(SERVICE_IPS, "10.0.0.1 . tcp . 30080", Some(web), None, 2),
            element(SERVICE_IPS, "10.0.0.2 . tcp . 30080", Some(web), None, 3),
            element(POLICY_CONNECTIONS, "k", Some("a/local:/tcp (NodePort)"), None, 4),
            element(POLICY_DROPS, "k", Some("a/local:/tcp (NodePort)"), None, 5),
            element(NO_ENDPOINT_SERVICES, "k", Some("a/none:/udp (ClusterIP)"), None, 6),
            element(NO_ENDPOINT_DROPS, "k", Some("a/itp:/udp (ClusterIP)"), None, 7),
            element(FIREWALL_IPS, "k", Some("a/lb:/tcp (LoadBalancer IP)"), None, 8),
            element(CLUSTER_IPS, "10.96.0.1", None, None, 9),
            element(SERVICE_CIDRS, "10.96.0.0/12", None, None, 10),
            element(SERVICE_IPS, "k", Some("a/very-long-name..."), None, 11),
        ]);
        let counts = |comment: &str| stats.services[&ServiceDestination::from_comment(comment).unwrap()];
        assert_eq!(counts(web), ServiceCounts { connections: 5, rejected: 0, dropped: 0 });
        assert_eq!(counts("a/local:/tcp (NodePort)"), ServiceCounts { connections: 4, rejected: 0, dropped: 5 });
        assert_eq!(counts("a/none:/udp (ClusterIP)"), ServiceCounts { connections: 0, rejected: 6, dropped: 0 });
        assert_eq!(counts("a/itp:/udp (ClusterIP)"), ServiceCounts { connections: 0, rejected: 0, dropped: 7 });
        assert_eq!(counts("a/lb:/tcp (LoadBalancer IP)"), ServiceCounts { connections: 0, rejected: 0, dropped: 8 });
        assert_eq!(stats.unknown_ports["10.96.0.1"], 9);
        assert_eq!(stats.unallocated["10.96.0.0/12"], 10);
        assert_eq!(stats.unattributed, 11);
    }

    #[test]
    fn counts_from_a_text_listing() {
        let listing = "table ip proxier {\n\tmap service-ips {\n\t\ttype ipv4_addr . inet_proto . inet_service : verdict\n\t\telements = { 10.96.0.10 . tcp . 80 counter packets 3 bytes 180 comment \"a/b:c/tcp (ClusterIP)\" : goto balance-2,\n\t\t\t     10.96.0.11 . udp . 53 counter packets 0 bytes 0 : goto balance-1 }\n\t}\n}\n";
        assert_eq!(
            listed_counts(listing),
            vec![("10.96.0.10 . tcp . 80".to_owned(), (3, 180)), ("10.96.0.11 . udp . 53".to_owned(), (0, 0))]
        );
        assert!(listed_counts("table ip proxier {\n}\n").is_empty());
    }

    #[test]
    fn only_counted_elements_are_carried() {
        let element = |key: &str, packets| CountedElement {
            family: IpFamily::V4,
            set: SERVICE_IPS.into(),
            key: key.into(),
            comment: None,
            verdict: None,
            packets,
            bytes: packets * 60,
        };
        let carried = carried(&[element("a", 0), element("b", 2)]);
        assert_eq!(carried.len(), 1);
        assert_eq!(carried[&(IpFamily::V4, SERVICE_IPS.to_owned(), "b".to_owned())], (2, 120));
    }
}

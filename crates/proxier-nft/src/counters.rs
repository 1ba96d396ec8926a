//! The kernel's per-destination counters (see [`crate::layout`]'s "Counters"): read from proxier's live
//! tables, attributed to Service destinations, and carried over when a table is replaced.
//!
//! Reading dumps the counted sets ([`crate::layout::COUNTED`]) over netlink
//! ([`NftSocket::elements`]), decoding keys, comments, verdicts and counters itself: no `nft` process, no
//! JSON. Nothing is written and a dump takes no lock a commit waits for, so a read never delays a sync.

use std::collections::{BTreeMap, BTreeSet};

use proxier_core::IpFamily;

use crate::change::Change;
use crate::layout::{Counts, counted};
use crate::netlink::{NetlinkError, NftSocket, SetInfo};
use crate::ruleset::{Value, family_name};
use crate::transaction::Transaction;

/// A counter could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CountersError {
    /// Reading over netlink failed.
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    /// The kernel holds something that is not what proxier laid out.
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
    /// The set or map it is in (one the layout counts in, [`crate::layout::COUNTED`]).
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

/// Reads every counted element of proxier's table `table` in both families, in the calling thread's
/// network namespace, on a netlink socket of its own. A family without the table, or a table laid
/// out without counters, contributes nothing.
pub fn read(table: &str) -> Result<Vec<CountedElement>, CountersError> {
    read_with(&mut NftSocket::open()?, table)
}

/// [`read`] on `socket` (and so in its network namespace).
pub fn read_with(socket: &mut NftSocket, table: &str) -> Result<Vec<CountedElement>, CountersError> {
    let mut all = Vec::new();
    for family in IpFamily::ALL {
        let mut sets = socket.sets(family, table)?;
        // Laid out without counters (--no-counters), a counted set has none: nothing to read.
        sets.retain(|set| set.counter && counted(&set.name).is_some());
        sets.sort_by(|a, b| a.name.cmp(&b.name));
        for set in sets {
            // Gone since the sets were listed (a sync replaced the table): nothing to count there.
            let Some(elements) = socket.elements(family, table, &set)? else { continue };
            all.reserve(elements.len());
            for element in elements {
                let (packets, bytes) = element.counter.ok_or_else(|| CountersError::Listing {
                    family: family_name(family),
                    table: table.to_owned(),
                    set: set.name.clone(),
                    reason: format!("element {} has no counter", element.key),
                })?;
                all.push(CountedElement {
                    family,
                    set: set.name.clone(),
                    key: element.key,
                    comment: element.comment,
                    verdict: element.verdict,
                    packets,
                    bytes,
                });
            }
        }
    }
    Ok(all)
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
            let Some(counts) = counted(&element.set) else { continue };
            match counts {
                Counts::UnknownPorts => *stats.unknown_ports.entry(element.key.clone()).or_default() += element.packets,
                Counts::Unallocated => *stats.unallocated.entry(element.key.clone()).or_default() += element.packets,
                Counts::Connections | Counts::Rejected | Counts::Dropped => {
                    let Some(destination) = element.comment.as_deref().and_then(ServiceDestination::from_comment)
                    else {
                        stats.unattributed += element.packets;
                        continue;
                    };
                    let service = stats.services.entry(destination).or_default();
                    match counts {
                        Counts::Connections => service.connections += element.packets,
                        Counts::Rejected => service.rejected += element.packets,
                        _ => service.dropped += element.packets,
                    }
                }
            }
        }
        stats
    }
}

/// `transaction` with the counts it would otherwise lose carried over (see
/// [`crate::Transaction::with_carried_counts`]), read over netlink on `socket` when given, else on one
/// of the calling thread's network namespace: for a replacement of the tables (`full`), every count;
/// otherwise only those of the counted elements it deletes and adds again (a destination whose
/// verdict or comment changed), asked for by key. A failed read costs the counts, never the sync.
pub fn carry_into(socket: Option<&mut NftSocket>, transaction: Transaction, full: bool) -> Transaction {
    let wanted = if full { BTreeMap::new() } else { recreated(&transaction) };
    if !full && wanted.is_empty() {
        // Nothing counted is re-created: nothing to read (most incremental syncs).
        return transaction;
    }
    let read = |socket: &mut NftSocket| {
        if full {
            read_with(socket, transaction.table_name()).map(|elements| carried(&elements))
        } else {
            counts_of(socket, transaction.table_name(), wanted)
        }
    };
    let carried = match socket {
        Some(socket) => read(socket),
        None => NftSocket::open().map_err(CountersError::from).and_then(|mut socket| read(&mut socket)),
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

/// Keys of counted elements, by family and set.
type Keys<'a> = BTreeMap<(IpFamily, &'a str), BTreeSet<&'a [Value]>>;

/// The keys of the counted elements `transaction` deletes and adds again.
fn recreated(transaction: &Transaction) -> Keys<'_> {
    let mut deleted = Keys::new();
    for change in transaction.changes() {
        if let Change::DeleteElements { family, set, elements } = change
            && counted(set).is_some()
        {
            deleted.entry((*family, set)).or_default().extend(elements.iter().map(|e| e.key.as_slice()));
        }
    }
    let mut wanted = Keys::new();
    for change in transaction.changes() {
        if let Change::AddElements { family, set, elements } = change
            && let Some(gone) = deleted.get(&(*family, set.as_str()))
        {
            let keys = elements.iter().map(|e| e.key.as_slice()).filter(|k| gone.contains(k));
            wanted.entry((*family, set)).or_default().extend(keys);
        }
    }
    wanted.retain(|_, keys| !keys.is_empty());
    wanted
}

/// The counts the kernel holds for the elements of `keys` in table `table`, read for those keys only
/// ([`NftSocket::elements_with_keys`]): the cost follows the elements re-created, not the sets' sizes.
fn counts_of(socket: &mut NftSocket, table: &str, keys: Keys<'_>) -> Result<Carried, CountersError> {
    let mut carried = Carried::new();
    let mut sets: BTreeMap<IpFamily, Vec<SetInfo>> = BTreeMap::new();
    for ((family, set), keys) in keys {
        let listed = match sets.entry(family) {
            std::collections::btree_map::Entry::Occupied(listed) => listed.into_mut(),
            std::collections::btree_map::Entry::Vacant(entry) => entry.insert(socket.sets(family, table)?),
        };
        // Not in the kernel, or laid out without counters: nothing counted.
        let Some(info) = listed.iter().find(|info| info.name == set && info.counter) else { continue };
        let keys: Vec<&[Value]> = keys.into_iter().collect();
        for element in socket.elements_with_keys(family, table, info, &keys)? {
            if let Some(counts) = element.counter.filter(|&counts| counts != (0, 0)) {
                carried.insert((family, set.to_owned(), element.key), counts);
            }
        }
    }
    Ok(carried)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{
        CLUSTER_IPS, FIREWALL_IPS, NO_ENDPOINT_DROPS, NO_ENDPOINT_SERVICES, POLICY_CONNECTIONS, POLICY_DROPS,
        SERVICE_CIDRS, SERVICE_IPS,
    };

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

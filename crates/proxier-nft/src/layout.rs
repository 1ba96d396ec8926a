//! How the rule model is laid out in nftables: the one place that decides chain and map names.
//!
//! The layout has no per-service objects. Every destination is an element of a few sets; the chosen
//! backends are elements of per-position maps. So a cluster of any size uses the same handful of
//! chains, loading is linear in the number of elements, and an endpoint change is an element change.
//!
//! ```text
//! nat prerouting/output ─► services: ip daddr . meta l4proto . th dport @service-ips goto balancing
//!   balancing: destination @masquerade-ips                  → jump mark-for-masquerade
//!              (not from a pod) destination @masquerade-nonpod-ips → jump mark-for-masquerade
//!              destination @balance-1-ips  → goto balance-1
//!              …                                             (one fixed rule per count 1..=16)
//!              destination @balance-16-ips → goto balance-16
//!              destination vmap @service-chains  (more endpoints, mixed ports, affinity: own chains)
//!   balance-N: numgen random mod N vmap { i : goto backend-i }
//!   backend-i: dnat to (daddr . proto . dport → @backend-i-addr) : (… → @backend-port)
//!   balance-N-ports / backend-i-ports: the same, with the port from @backend-i-port
//! filter input/forward/output (new connections):
//!   destination @no-endpoint-services → goto reject-chain;  destination @no-endpoint-drops → drop
//!   ip daddr @cluster-ips → reject                             (known ClusterIP, unknown port)
//! nat postrouting ─► masquerading: hairpin (ip saddr . ip daddr @hairpin) and marked connections
//! ```
//!
//! # Adding a Service does not re-validate the table
//!
//! When a transaction adds a `jump` or `goto` element to a verdict map, the kernel re-validates the
//! table at commit: it walks every element of every verdict map reachable from the base chains (8–20 ms
//! at 44k Services when all destinations were elements of one verdict map). So the destinations of
//! ordinary Services (up to [`FLAT_COUNTS`] endpoints sharing one port) are elements of plain sets only
//! — `service-ips`, `balance-N-ips`, the masquerade sets — picked by fixed rules, one set lookup per
//! endpoint count until the count matches (fewest endpoints first). What remains in verdict maps
//! (`service-chains`, `policy-ips`) are the Services that need chains of their own, few in number, so
//! that even their re-validation walks few elements.
//!
//! # Counters
//!
//! Unless laid out without them ([`family_table_with`]), the maps and sets where a new connection's
//! fate is decided are declared with `counter`: the kernel gives every element its own packet and byte
//! counter, and a lookup that finds the element counts the packet. Each decision is counted once, at
//! the point where it is taken, keyed by the destination the client used ([`COUNTED`] lists them):
//!
//! - `service-ips`: connections sent to an endpoint. nat chains see only a connection's first packet
//!   (later packets follow the conntrack entry), so packets here are new connections, UDP flows too.
//! - `no-endpoint-services`: new connections rejected (no usable endpoint); `no-endpoint-drops`:
//!   dropped (a `Local` policy with no local endpoint).
//! - `policy-ips` holds the destinations whose fate depends on the source (externalTrafficPolicy
//!   `Local`); their chains count each outcome in `policy-connections` or `policy-drops`, so that a
//!   dropped connection is never counted as sent.
//! - `firewall-ips`: looked up only after the source failed `firewall-allow`, so it counts the new
//!   connections `loadBalancerSourceRanges` dropped.
//! - `cluster-ips` and `service-cidrs`: rejects to undefined ports of a ClusterIP, drops to unallocated
//!   service addresses.
//!
//! A rejected or dropped connection is never confirmed by conntrack, so each new attempt (a TCP SYN
//! retransmission, every UDP datagram) counts again.
//!
//! Why this shape: kube-proxy's chain-per-service-and-endpoint layout takes minutes to load at 10k
//! services, while element-only layouts load in about a second (docs/performance.md). nft 1.0.6's JSON
//! parser cannot express a map whose value is a concatenation (address . port) or whose key holds a
//! `numgen` result, so the backend choice is a small `numgen` verdict map per endpoint count and the
//! address and port come from maps per backend position (one port map when a destination's backends
//! share their port, as nearly all do).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use proxier_core::{Action, Backend, Destination, FamilyRules, LocalTraffic, Masquerade, Protocol, ServicePortName};

use smallvec::smallvec;

use crate::ruleset::{
    Chain, ChainType, DataType, Element, ElementKey, Hook, HookPoint, Rule, Set, Statement, Table, Value, Verdict,
};

/// The packet-mark bit that asks postrouting to masquerade (kube-proxy's default, bit 14).
pub const MASQUERADE_MARK: u32 = 0x4000;

/// The destinations the `services` chain balances (counting connections sent to an endpoint).
pub const SERVICE_IPS: &str = "service-ips";
/// The verdict map of destinations balanced in a chain of their own: more endpoints than
/// [`FLAT_COUNTS`], endpoints on different ports, session affinity, or (without counters) a source-dependent
/// policy. Its elements are the only `goto` elements that come and go with Services.
pub const SERVICE_CHAINS: &str = "service-chains";
/// Destinations whose connections are masqueraded whatever their source.
pub const MASQUERADE_IPS: &str = "masquerade-ips";
/// Destinations whose connections are masqueraded unless they come from a pod.
pub const MASQUERADE_NONPOD_IPS: &str = "masquerade-nonpod-ips";
/// The port of every backend of a destination whose backends share one port.
pub const BACKEND_PORT: &str = "backend-port";
/// Endpoint counts 1..=`FLAT_COUNTS` each have a fixed set (`balance-N-ips`) and rule in the
/// `balancing` chain; destinations with more endpoints are balanced through [`SERVICE_CHAINS`].
pub const FLAT_COUNTS: usize = 16;
/// Destinations whose fate depends on the source (externalTrafficPolicy `Local`), with counters on.
pub const POLICY_IPS: &str = "policy-ips";
/// Counts, per source-dependent destination, the new connections sent to an endpoint.
pub const POLICY_CONNECTIONS: &str = "policy-connections";
/// Counts, per source-dependent destination, the new connections its `Local` policy dropped.
pub const POLICY_DROPS: &str = "policy-drops";
/// Destinations without a usable endpoint whose new connections are rejected.
pub const NO_ENDPOINT_SERVICES: &str = "no-endpoint-services";
/// Destinations without a usable endpoint whose new connections are dropped (a `Local` policy).
pub const NO_ENDPOINT_DROPS: &str = "no-endpoint-drops";
/// Allocated ClusterIPs (counting rejects to ports no Service defines).
pub const CLUSTER_IPS: &str = "cluster-ips";
/// The service CIDRs (counting drops to addresses no Service holds).
pub const SERVICE_CIDRS: &str = "service-cidrs";
const POD_CIDRS: &str = "pod-cidrs";
const HAIRPIN: &str = "hairpin";
/// Destinations with `loadBalancerSourceRanges` (counting the connections the ranges drop).
pub const FIREWALL_IPS: &str = "firewall-ips";
const FIREWALL_ALLOW: &str = "firewall-allow";

/// Whether the layout declares the set named `name` with `flags interval` (the netlink encoder must
/// know it for sets a transaction does not create itself).
pub(crate) fn is_interval_set(name: &str) -> bool {
    matches!(name, POD_CIDRS | SERVICE_CIDRS | FIREWALL_ALLOW)
}
const REJECT_CHAIN: &str = "reject-chain";
const MARK_FOR_MASQUERADE: &str = "mark-for-masquerade";
const SERVICES_CHAIN: &str = "services";
const BALANCING_CHAIN: &str = "balancing";
const MASQUERADING_CHAIN: &str = "masquerading";

/// What the elements of a counted set count (see "Counters" above).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Counts {
    /// New connections sent to an endpoint, per destination.
    Connections,
    /// New connections rejected: the destination has no usable endpoint.
    Rejected,
    /// New connections to a destination dropped by policy (`Local` without a local endpoint,
    /// `loadBalancerSourceRanges`).
    Dropped,
    /// New connections rejected at an allocated ClusterIP on a port no Service defines, per address.
    UnknownPorts,
    /// New connections dropped at a service-CIDR address no Service holds, per CIDR.
    Unallocated,
}

/// Every set laid out with per-element counters (when counters are on, [`family_table_with`]) and what
/// its elements count: the one list that the layout declares counters from and every reader of
/// counters ([`crate::counters`]) takes the counted sets from. All are plain sets (no map data).
pub const COUNTED: [(&str, Counts); 8] = [
    (SERVICE_IPS, Counts::Connections),
    (POLICY_CONNECTIONS, Counts::Connections),
    (POLICY_DROPS, Counts::Dropped),
    (NO_ENDPOINT_SERVICES, Counts::Rejected),
    (NO_ENDPOINT_DROPS, Counts::Dropped),
    (FIREWALL_IPS, Counts::Dropped),
    (CLUSTER_IPS, Counts::UnknownPorts),
    (SERVICE_CIDRS, Counts::Unallocated),
];

/// What the elements of the set `name` count, if it is one laid out with counters.
pub fn counted(name: &str) -> Option<Counts> {
    COUNTED.iter().find(|(set, _)| *set == name).map(|(_, counts)| *counts)
}

/// The base chains, each named for its type and hook.
const NAT_PREROUTING: &str = "nat-prerouting";
const NAT_OUTPUT: &str = "nat-output";
const NAT_POSTROUTING: &str = "nat-postrouting";
const FILTER_INPUT: &str = "filter-input";
const FILTER_FORWARD: &str = "filter-forward";
const FILTER_OUTPUT: &str = "filter-output";
const FILTER_PREROUTING: &str = "filter-prerouting";
const FILTER_OUTPUT_PRE_DNAT: &str = "filter-output-pre-dnat";

// Kernel hook priorities, by their nft names.
const PRIORITY_DSTNAT: i32 = -100;
const PRIORITY_FILTER: i32 = 0;
const PRIORITY_SRCNAT: i32 = 100;

/// Lays out one family's rules as a table, with counters.
pub fn family_table(rules: &FamilyRules) -> Table {
    family_table_with(rules, true)
}

/// Lays out one family's rules as a table; `counters` says whether the decisions on new connections
/// are counted per destination (see the module's documentation).
pub fn family_table_with(rules: &FamilyRules, counters: bool) -> Table {
    lay_out(rules, counters, true)
}

/// One Service's share of a family's table, for the ledger: its elements and the chains and sets only
/// its destinations need (balancing chains of their own, affinity sets, the firewall), without the
/// objects every table has and the node's own elements (the pod and service CIDRs). Those come once
/// per family, from the node's side of the table laid out whole ([`family_table_with`] of rules
/// without Services); that and every Service's share together are the whole table. Laying out and
/// comparing them for every changed Service cost more than the rest of a sync at 1,000 changes a second.
pub(crate) fn share_table(rules: &FamilyRules, counters: bool) -> Table {
    lay_out(rules, counters, false)
}

/// [`family_table_with`] (`whole`) or [`share_table`].
fn lay_out(rules: &FamilyRules, counters: bool, whole: bool) -> Table {
    // The element lists are sized up front: they reach tens of thousands of elements each, and growing
    // them by doubling copies them and fragments the heap (measured: about a fifth of the layout).
    let mut per_position: Vec<usize> = Vec::new();
    let mut per_count = vec![0; FLAT_COUNTS];
    for destination in &rules.destinations {
        if let Action::Balance { backends, affinity: None, .. } = &destination.action {
            if per_position.len() < backends.len() {
                per_position.resize(backends.len(), 0);
            }
            per_position[..backends.len()].iter_mut().for_each(|count| *count += 1);
            if let Some(count) = per_count.get_mut(backends.len().wrapping_sub(1)) {
                *count += 1;
            }
        }
    }
    let flat = per_count.iter().sum();
    let mut layout = Layout {
        rules,
        counters,
        service_ips: Vec::with_capacity(rules.destinations.len()),
        service_chains: Vec::new(),
        counts: per_count.into_iter().map(Vec::with_capacity).collect(),
        masquerade: Vec::new(),
        masquerade_nonpod: Vec::new(),
        backend_port: Vec::with_capacity(flat),
        policy_ips: Vec::new(),
        policy_connections: Vec::new(),
        policy_drops: Vec::new(),
        no_endpoint: Vec::new(),
        no_endpoint_drops: Vec::new(),
        firewall_ips: Vec::new(),
        firewall_allow: Vec::new(),
        positions: per_position.into_iter().map(|n| (Vec::with_capacity(n), Vec::new())).collect(),
        balancers: BTreeSet::new(),
        dedicated: BTreeMap::new(),
        affinity_sets: BTreeMap::new(),
    };
    for destination in &rules.destinations {
        layout.destination(destination);
    }
    layout.into_table(whole)
}

/// The objects of one table, gathered destination by destination.
struct Layout<'a> {
    rules: &'a FamilyRules,
    counters: bool,
    /// Every destination the `services` chain balances (a plain, counted set).
    service_ips: Vec<Element>,
    /// Destinations balanced in a chain of their own, and that chain.
    service_chains: Vec<Element>,
    /// Endpoint count N (1..=FLAT_COUNTS) → elements of `balance-N-ips`.
    counts: Vec<Vec<Element>>,
    masquerade: Vec<Element>,
    masquerade_nonpod: Vec<Element>,
    /// The shared port of destinations whose backends all listen on one port.
    backend_port: Vec<Element>,
    /// With counters: destinations whose fate depends on the source, and what each can count.
    policy_ips: Vec<Element>,
    policy_connections: Vec<Element>,
    policy_drops: Vec<Element>,
    no_endpoint: Vec<Element>,
    no_endpoint_drops: Vec<Element>,
    firewall_ips: Vec<Element>,
    firewall_allow: Vec<Element>,
    /// Backend position i → elements of backend-i-addr and backend-i-port (the latter only for
    /// destinations whose backends listen on different ports).
    positions: Vec<(Vec<Element>, Vec<Element>)>,
    /// Balancers reached through `service-chains`: (endpoint count, whether the port is shared).
    balancers: BTreeSet<(usize, bool)>,
    /// Chains of service ports that need their own (session affinity, externalTrafficPolicy Local).
    dedicated: BTreeMap<String, Chain>,
    affinity_sets: BTreeMap<String, Set>,
}

impl Layout<'_> {
    fn destination(&mut self, destination: &Destination) {
        let key: ElementKey =
            smallvec![Value::Addr(destination.ip), Value::Proto(destination.protocol), Value::Port(destination.port)];
        let comment = Some(element_comment(destination));
        if let Some(allowed) = &destination.allowed_sources {
            self.firewall_ips.push(Element { key: key.clone(), data: None, comment: comment.clone() });
            // Overlapping or repeated ranges would fail the whole transaction (EEXIST): merged first.
            for net in ipnet::IpNet::aggregate(allowed) {
                let mut allow = key.clone();
                allow.push(Value::Prefix(net));
                self.firewall_allow.push(Element { key: allow, data: None, comment: None });
            }
        }
        let verdict = match &destination.action {
            Action::Reject => {
                self.no_endpoint.push(Element { key, data: None, comment });
                return;
            }
            Action::Drop => {
                self.no_endpoint_drops.push(Element { key, data: None, comment });
                return;
            }
            Action::Balance { backends, masquerade, affinity: None } => {
                match self.effective(*masquerade) {
                    Masquerade::Never => {}
                    Masquerade::Always => self.masquerade.push(element(key.clone())),
                    Masquerade::OutsidePodNetwork => self.masquerade_nonpod.push(element(key.clone())),
                }
                if self.positions.len() < backends.len() {
                    self.positions.resize_with(backends.len(), Default::default);
                }
                let shared = backends.iter().all(|backend| backend.port == backends[0].port);
                for (backend, (addrs, ports)) in backends.iter().zip(&mut self.positions) {
                    addrs.push(Element { key: key.clone(), data: Some(Value::Addr(backend.ip)), comment: None });
                    if !shared {
                        ports.push(Element { key: key.clone(), data: Some(Value::Port(backend.port)), comment: None });
                    }
                }
                if shared {
                    let port = Some(Value::Port(backends[0].port));
                    self.backend_port.push(Element { key: key.clone(), data: port, comment: None });
                    if let Some(count) = self.counts.get_mut(backends.len() - 1) {
                        count.push(element(key.clone()));
                        self.service_ips.push(Element { key, data: None, comment });
                        return;
                    }
                }
                self.balancers.insert((backends.len(), shared));
                Verdict::Goto(balance_chain(backends.len(), shared))
            }
            Action::BySource { pods, node, others } if self.counters => {
                let outcomes = [pods, node, others];
                let counted = |list: &mut Vec<Element>| {
                    list.push(Element { key: key.clone(), data: None, comment: comment.clone() })
                };
                if outcomes.iter().any(|a| ***a != Action::Drop) {
                    counted(&mut self.policy_connections);
                }
                if outcomes.iter().any(|a| ***a == Action::Drop) {
                    counted(&mut self.policy_drops);
                }
                let verdict = self.verdict(&destination.service_port, &destination.action);
                self.policy_ips.push(Element { key, data: Some(Value::Verdict(verdict)), comment });
                return;
            }
            action => self.verdict(&destination.service_port, action),
        };
        self.service_chains.push(Element { key: key.clone(), data: Some(Value::Verdict(verdict)), comment: None });
        self.service_ips.push(Element { key, data: None, comment });
    }

    /// Without a detector, "masquerade non-pod sources" cannot be expressed.
    fn effective(&self, masquerade: Masquerade) -> Masquerade {
        match masquerade {
            Masquerade::OutsidePodNetwork if self.rules.local_traffic == LocalTraffic::None => Masquerade::Never,
            other => other,
        }
    }

    /// Where an action sends a packet, creating the service port's own chains as needed. Chain names
    /// are hashes of what they do, so identical actions share chains and names stay stable.
    fn verdict(&mut self, service_port: &ServicePortName, action: &Action) -> Verdict {
        let port = fingerprint(format_args!("{service_port}"));
        match action {
            Action::Reject => Verdict::Goto(REJECT_CHAIN.into()),
            Action::Drop => Verdict::Drop,
            Action::Balance { backends, masquerade, affinity } => {
                let balance = format!("svc-{port}-{}", fingerprint(format_args!("{backends:?}{affinity:?}")));
                if !self.dedicated.contains_key(&balance) {
                    let mut rules = Vec::new();
                    let mut endpoints = Vec::new();
                    for backend in backends {
                        let endpoint = format!("ep-{port}-{}", backend_name(backend));
                        let mut statements = Vec::new();
                        if let Some(timeout) = affinity {
                            let set = format!("aff-{port}-{}", backend_name(backend));
                            self.affinity_sets.entry(set.clone()).or_insert_with(|| Set {
                                name: set.clone(),
                                key: vec![DataType::Addr(self.rules.family)],
                                data: None,
                                interval: false,
                                timeout: Some(*timeout),
                                counter: false,
                                elements: Vec::new(),
                            });
                            rules.push(Rule::new(vec![
                                Statement::SaddrIn(set.clone()),
                                Statement::Verdict(Verdict::Goto(endpoint.clone())),
                            ]));
                            statements.push(Statement::UpdateSaddr(set));
                        }
                        statements.push(Statement::L4Proto(service_port.protocol));
                        statements.push(Statement::DnatTo(*backend));
                        self.dedicated.insert(endpoint.clone(), chain(&endpoint, vec![Rule::new(statements)]));
                        endpoints.push(endpoint);
                    }
                    rules.push(Rule::new(vec![pick(endpoints)]));
                    self.dedicated.insert(balance.clone(), chain(&balance, rules));
                }
                let masquerade = self.effective(*masquerade);
                self.masquerading(balance, masquerade)
            }
            Action::BySource { pods, node, others } => {
                let name = format!("src-{port}-{}", fingerprint(format_args!("{action:?}")));
                if !self.dedicated.contains_key(&name) {
                    let mut rules = Vec::new();
                    if pods != others {
                        let mut statements = pod_match(&self.rules.local_traffic, false);
                        statements.extend(self.outcome(service_port, pods));
                        rules.push(Rule::new(statements).with_comment("Short-circuit pod traffic"));
                    }
                    let mut statements = vec![Statement::FibSaddrLocal];
                    statements.extend(self.outcome(service_port, node));
                    rules.push(Rule::new(statements).with_comment("Short-circuit traffic from this node"));
                    let statements = self.outcome(service_port, others);
                    rules.push(Rule::new(statements).with_comment("External traffic: local endpoints"));
                    self.dedicated.insert(name.clone(), chain(&name, rules));
                }
                Verdict::Goto(name)
            }
        }
    }

    /// The end of a source-dependent rule: the verdict for `action`, after counting it (with counters)
    /// in the set of its outcome. Every destination of the chain is in that set by construction, so the
    /// lookup always matches: it only counts.
    fn outcome(&mut self, service_port: &ServicePortName, action: &Action) -> Vec<Statement> {
        let verdict = Statement::Verdict(self.verdict(service_port, action));
        if !self.counters {
            return vec![verdict];
        }
        let counted = if *action == Action::Drop { POLICY_DROPS } else { POLICY_CONNECTIONS };
        vec![Statement::DestinationIn(counted.into()), verdict]
    }

    /// A chain that marks for masquerade as asked, then continues to `target`.
    fn masquerading(&mut self, target: String, masquerade: Masquerade) -> Verdict {
        let (suffix, mut statements) = match masquerade {
            Masquerade::Never => return Verdict::Goto(target),
            Masquerade::Always => ("masq", Vec::new()),
            Masquerade::OutsidePodNetwork => ("masq-nonpod", pod_match(&self.rules.local_traffic, true)),
        };
        let name = format!("{target}-{suffix}");
        statements.push(Statement::Verdict(Verdict::Jump(MARK_FOR_MASQUERADE.into())));
        let rules = vec![Rule::new(statements), Rule::new(vec![Statement::Verdict(Verdict::Goto(target))])];
        self.dedicated.entry(name.clone()).or_insert_with(|| chain(&name, rules));
        Verdict::Goto(name)
    }

    /// The table; without `whole`, only what this share adds to the node's table (see [`share_table`]).
    fn into_table(self, whole: bool) -> Table {
        let rules = self.rules;
        let family = rules.family;
        let destination_type = vec![DataType::Addr(family), DataType::Proto, DataType::Service];
        let counters = self.counters;
        let set = |name: &str, key: Vec<DataType>, data: Option<DataType>, interval: bool, elements: Vec<Element>| {
            let counter = counters && counted(name).is_some();
            Set { name: name.into(), key, data, interval, timeout: None, counter, elements }
        };
        let destinations =
            |name: &str, elements: Vec<Element>| set(name, destination_type.clone(), None, false, elements);
        let addresses = |ips: &[std::net::IpAddr]| ips.iter().map(|&ip| element(smallvec![Value::Addr(ip)])).collect();
        // An interval set refuses overlapping or repeated prefixes (EEXIST): they are merged first.
        let prefixes = |nets: &[ipnet::IpNet]| {
            ipnet::IpNet::aggregate(&nets.to_vec())
                .into_iter()
                .map(|net| element(smallvec![Value::Prefix(net)]))
                .collect()
        };
        let detector = rules.local_traffic != LocalTraffic::None;
        let mut sets = vec![
            // Allocated ClusterIPs: other ports on them are rejected.
            set(CLUSTER_IPS, vec![DataType::Addr(family)], None, false, addresses(&rules.cluster_ips)),
            // Every destination with endpoints: ClusterIPs, externalIPs, LoadBalancer IPs, NodePorts.
            destinations(SERVICE_IPS, self.service_ips),
            // Destinations without usable endpoints: rejected, or dropped under a Local policy.
            destinations(NO_ENDPOINT_SERVICES, self.no_endpoint),
            destinations(NO_ENDPOINT_DROPS, self.no_endpoint_drops),
            // Destinations with their own balancing chain.
            set(SERVICE_CHAINS, destination_type.clone(), Some(DataType::Verdict), false, self.service_chains),
            destinations(MASQUERADE_IPS, self.masquerade),
            // An endpoint reaching itself through a service: masqueraded so that replies return.
            set(
                HAIRPIN,
                vec![DataType::Addr(family), DataType::Addr(family)],
                None,
                false,
                rules.hairpin_ips.iter().map(|&ip| element(smallvec![Value::Addr(ip), Value::Addr(ip)])).collect(),
            ),
        ];
        if detector {
            sets.push(destinations(MASQUERADE_NONPOD_IPS, self.masquerade_nonpod));
        }
        // Destinations by endpoint count: which `balance-N` chain picks their backend.
        for (i, elements) in self.counts.into_iter().enumerate() {
            sets.push(destinations(&count_set(i + 1), elements));
        }
        if counters {
            sets.push(set(POLICY_IPS, destination_type.clone(), Some(DataType::Verdict), false, self.policy_ips));
            sets.push(destinations(POLICY_CONNECTIONS, self.policy_connections));
            sets.push(destinations(POLICY_DROPS, self.policy_drops));
        }
        // The node's own elements: in its share only.
        if let LocalTraffic::Cidrs(cidrs) = &rules.local_traffic
            && whole
        {
            // The local-traffic detector: sources in the pod network.
            sets.push(set(POD_CIDRS, vec![DataType::Addr(family)], None, true, prefixes(cidrs)));
        }
        if !rules.service_cidrs.is_empty() && whole {
            sets.push(set(SERVICE_CIDRS, vec![DataType::Addr(family)], None, true, prefixes(&rules.service_cidrs)));
        }
        // Every table has the sets so far; a share leaves them out unless it adds elements to them.
        if !whole {
            sets.retain(|set| !set.elements.is_empty());
        }
        let firewalled = !self.firewall_ips.is_empty();
        if firewalled {
            // LoadBalancer IPs with loadBalancerSourceRanges, and the sources each allows.
            sets.push(destinations(FIREWALL_IPS, self.firewall_ips));
            let mut allow_type = destination_type.clone();
            allow_type.push(DataType::Addr(family));
            sets.push(set(FIREWALL_ALLOW, allow_type, None, true, self.firewall_allow));
        }
        // The port of every backend of a destination whose backends share it (nearly all).
        if whole || !self.backend_port.is_empty() {
            sets.push(set(BACKEND_PORT, destination_type.clone(), Some(DataType::Service), false, self.backend_port));
        }
        let mut positions = self.positions;
        positions.resize_with(positions.len().max(FLAT_COUNTS), Default::default);
        let mut port_maps = Vec::new();
        for (i, (addrs, ports)) in positions.into_iter().enumerate() {
            // The address of backend i of each destination balanced by count (every table has the
            // first FLAT_COUNTS).
            if whole || i >= FLAT_COUNTS || !addrs.is_empty() {
                sets.push(set(
                    &backend_map(i, "addr"),
                    destination_type.clone(),
                    Some(DataType::Addr(family)),
                    false,
                    addrs,
                ));
            }
            if !ports.is_empty() {
                // Its port, for destinations whose backends listen on different ports.
                port_maps.push(set(
                    &backend_map(i, "port"),
                    destination_type.clone(),
                    Some(DataType::Service),
                    false,
                    ports,
                ));
            }
        }
        sets.extend(port_maps);
        sets.extend(self.affinity_sets.into_values());

        let mut chains = Vec::new();
        if whole {
            chains.extend(base_chains(!rules.service_cidrs.is_empty()));
        }
        if firewalled {
            chains.extend(firewall_chains(counters));
        }
        if whole {
            chains.extend(fixed_chains(counters, &rules.local_traffic));
        }
        // The balancers of the counts with a fixed rule (every table has them), and those reached
        // through service-chains.
        let fixed = (1..=FLAT_COUNTS).map(|n| (n, true));
        let balancers: BTreeSet<_> =
            if whole { fixed.chain(self.balancers).collect() } else { &self.balancers - &fixed.collect() };
        let fixed_backends: BTreeSet<_> = (0..FLAT_COUNTS).map(|i| (i, true)).collect();
        let mut backends = BTreeSet::new();
        for (n, shared) in balancers {
            let target = (0..n).map(|i| backend_chain(i, shared)).collect();
            chains.push(chain(&balance_chain(n, shared), vec![Rule::new(vec![pick(target)])]));
            backends.extend((0..n).map(|i| (i, shared)).filter(|b| whole || !fixed_backends.contains(b)));
        }
        for (i, shared) in backends {
            let port_map = if shared { BACKEND_PORT.to_owned() } else { backend_map(i, "port") };
            let dnat = Statement::DnatFromMaps { addr_map: backend_map(i, "addr"), port_map };
            chains.push(chain(&backend_chain(i, shared), vec![Rule::new(vec![dnat])]));
        }
        chains.extend(self.dedicated.into_values());

        Table { family, sets, chains }
    }
}

/// Matches packets from pods (`negate`: from anything else), as the detector recognises them.
fn pod_match(local_traffic: &LocalTraffic, negate: bool) -> Vec<Statement> {
    match local_traffic {
        LocalTraffic::None => Vec::new(),
        LocalTraffic::Cidrs(_) if negate => vec![Statement::SaddrNotIn(POD_CIDRS.into())],
        LocalTraffic::Cidrs(_) => vec![Statement::SaddrIn(POD_CIDRS.into())],
        LocalTraffic::Interface(name) => vec![Statement::Iifname { name: name.clone(), negate }],
        LocalTraffic::InterfacePrefix(prefix) => vec![Statement::Iifname { name: format!("{prefix}*"), negate }],
    }
}

/// Goes to one of `targets` at random (directly when there is one).
fn pick(targets: Vec<String>) -> Statement {
    match <[String; 1]>::try_from(targets) {
        Ok([only]) => Statement::Verdict(Verdict::Goto(only)),
        Err(targets) => Statement::RandomGoto(targets),
    }
}

fn chain(name: &str, rules: Vec<Rule>) -> Chain {
    Chain { name: name.into(), hook: None, rules }
}

fn element(key: ElementKey) -> Element {
    Element { key, data: None, comment: None }
}

/// `10.244.1.5-8080`, `fd00.10.244.1..5-8080`: an endpoint as a chain-name part.
fn backend_name(backend: &Backend) -> String {
    format!("{}-{}", backend.ip.to_string().replace(':', "."), backend.port)
}

/// A short, stable name part for `text` (FNV-1a, 64 bits, as 13 base-32 digits).
fn fingerprint(text: fmt::Arguments<'_>) -> String {
    // FNV-1a fed as the text is formatted: no string is built (this runs for every service port).
    struct Fnv(u64);
    impl fmt::Write for Fnv {
        fn write_str(&mut self, text: &str) -> fmt::Result {
            for byte in text.bytes() {
                self.0 ^= u64::from(byte);
                self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
            }
            Ok(())
        }
    }
    let mut hash = Fnv(0xcbf2_9ce4_8422_2325);
    // `Fnv` never fails, and neither do the `Display`/`Debug` impls formatted here.
    let _ = fmt::write(&mut hash, text);
    const DIGITS: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    (0..13).map(|i| char::from(DIGITS[((hash.0 >> (i * 5)) & 31) as usize])).collect()
}

fn base_chain(name: &str, chain_type: ChainType, point: HookPoint, priority: i32, rules: Vec<Rule>) -> Chain {
    Chain { name: name.into(), hook: Some(Hook { chain_type, point, priority }), rules }
}

fn base_chains(service_cidrs: bool) -> Vec<Chain> {
    let jump = |chain: &str| Rule::new(vec![Statement::Verdict(Verdict::Jump(chain.into()))]);
    let no_endpoints = vec![
        Rule::new(vec![
            Statement::CtStateNew,
            Statement::DestinationIn(NO_ENDPOINT_SERVICES.into()),
            Statement::Verdict(Verdict::Goto(REJECT_CHAIN.into())),
        ])
        .with_comment("Reject destinations without usable endpoints"),
        Rule::new(vec![
            Statement::CtStateNew,
            Statement::DestinationIn(NO_ENDPOINT_DROPS.into()),
            Statement::Verdict(Verdict::Drop),
        ])
        .with_comment("Drop destinations whose Local policy has no endpoint for the source"),
    ];
    let mut after_dnat = no_endpoints.clone();
    after_dnat.extend([Rule::new(vec![
        Statement::CtStateNew,
        Statement::DaddrIn(CLUSTER_IPS.into()),
        Statement::Verdict(Verdict::Goto(REJECT_CHAIN.into())),
    ])
    .with_comment("A ClusterIP on a port no Service defines")]);
    if service_cidrs {
        after_dnat.push(
            Rule::new(vec![
                Statement::CtStateNew,
                Statement::DaddrIn(SERVICE_CIDRS.into()),
                Statement::Verdict(Verdict::Drop),
            ])
            .with_comment("An address in the service CIDR that no Service holds"),
        );
    }
    vec![
        base_chain(NAT_PREROUTING, ChainType::Nat, HookPoint::Prerouting, PRIORITY_DSTNAT, vec![jump(SERVICES_CHAIN)]),
        base_chain(NAT_OUTPUT, ChainType::Nat, HookPoint::Output, PRIORITY_DSTNAT, vec![jump(SERVICES_CHAIN)]),
        base_chain(
            NAT_POSTROUTING,
            ChainType::Nat,
            HookPoint::Postrouting,
            PRIORITY_SRCNAT,
            vec![jump(MASQUERADING_CHAIN)],
        ),
        // Rejects live in filter chains: `reject` is not allowed in prerouting before kernel 5.9.
        base_chain(FILTER_INPUT, ChainType::Filter, HookPoint::Input, PRIORITY_FILTER, no_endpoints),
        base_chain(FILTER_FORWARD, ChainType::Filter, HookPoint::Forward, PRIORITY_FILTER, after_dnat.clone()),
        base_chain(FILTER_OUTPUT, ChainType::Filter, HookPoint::Output, PRIORITY_FILTER, after_dnat),
    ]
}

/// The chains of a table with LoadBalancer source ranges.
fn firewall_chains(counters: bool) -> [Chain; 2] {
    // Source ranges are checked before DNAT, while the destination is still the LoadBalancer IP.
    // With counters, the (counting) firewall-ips lookup comes last, so it counts only drops.
    let (first, second) =
        (Statement::DestinationIn(FIREWALL_IPS.into()), Statement::DestinationSourceNotIn(FIREWALL_ALLOW.into()));
    let (first, second) = if counters { (second, first) } else { (first, second) };
    let firewall = Rule::new(vec![Statement::CtStateNew, first, second, Statement::Verdict(Verdict::Drop)])
        .with_comment("loadBalancerSourceRanges");
    let pre_dnat = PRIORITY_DSTNAT - 10;
    [
        base_chain(FILTER_PREROUTING, ChainType::Filter, HookPoint::Prerouting, pre_dnat, vec![firewall.clone()]),
        base_chain(FILTER_OUTPUT_PRE_DNAT, ChainType::Filter, HookPoint::Output, pre_dnat, vec![firewall]),
    ]
}

fn fixed_chains(counters: bool, local_traffic: &LocalTraffic) -> Vec<Chain> {
    let chain = |name: &str, rules: Vec<Rule>| Chain { name: name.into(), hook: None, rules };
    let goto = |set: &str, target: &str| {
        Rule::new(vec![Statement::DestinationIn(set.into()), Statement::Verdict(Verdict::Goto(target.into()))])
    };
    let mut services = vec![goto(SERVICE_IPS, BALANCING_CHAIN)];
    if counters {
        services.push(Rule::new(vec![Statement::DispatchVmap(POLICY_IPS.into())]));
    }
    // Sets and fixed rules only: a Service coming or going changes set elements that carry no jump
    // or goto, so the kernel does not re-validate the table (it walks every verdict-map element
    // reachable from the base chains whenever a jump or goto element is added).
    let mark = Statement::Verdict(Verdict::Jump(MARK_FOR_MASQUERADE.into()));
    let mut balancing =
        vec![Rule::new(vec![Statement::DestinationIn(MASQUERADE_IPS.into()), mark.clone()]).with_comment("Masquerade")];
    if *local_traffic != LocalTraffic::None {
        let mut statements = pod_match(local_traffic, true);
        statements.extend([Statement::DestinationIn(MASQUERADE_NONPOD_IPS.into()), mark]);
        balancing.push(Rule::new(statements).with_comment("Masquerade unless from a pod"));
    }
    // Fewest endpoints first: the most common counts are found with the fewest lookups.
    balancing.extend((1..=FLAT_COUNTS).map(|n| goto(&count_set(n), &balance_chain(n, true))));
    balancing.push(Rule::new(vec![Statement::DispatchVmap(SERVICE_CHAINS.into())]));
    vec![
        chain(SERVICES_CHAIN, services),
        chain(BALANCING_CHAIN, balancing),
        chain(
            MASQUERADING_CHAIN,
            vec![
                Rule::new(vec![
                    Statement::CtStatusDnat,
                    Statement::SaddrDaddrIn(HAIRPIN.into()),
                    Statement::Verdict(Verdict::Jump(MARK_FOR_MASQUERADE.into())),
                ])
                .with_comment("Hairpin"),
                Rule::new(vec![Statement::MarkClear(MASQUERADE_MARK), Statement::Verdict(Verdict::Return)]),
                Rule::new(vec![Statement::MarkToggle(MASQUERADE_MARK)]),
                Rule::new(vec![Statement::Masquerade]),
            ],
        ),
        chain(MARK_FOR_MASQUERADE, vec![Rule::new(vec![Statement::MarkSet(MASQUERADE_MARK)])]),
        chain(
            REJECT_CHAIN,
            vec![
                Rule::new(vec![Statement::L4Proto(Protocol::Tcp), Statement::RejectTcpReset]),
                Rule::new(vec![Statement::Reject]),
            ],
        ),
    ]
}

/// `balance-N` picks one of N backends whose port is in `backend-port`; `balance-N-ports` one of N
/// backends with a port of their own (in `backend-i-port`).
fn balance_chain(n: usize, shared_port: bool) -> String {
    if shared_port { format!("balance-{n}") } else { format!("balance-{n}-ports") }
}

fn backend_chain(i: usize, shared_port: bool) -> String {
    if shared_port { format!("backend-{i}") } else { format!("backend-{i}-ports") }
}

/// The destinations with `n` endpoints that share a port.
fn count_set(n: usize) -> String {
    format!("balance-{n}-ips")
}

fn backend_map(i: usize, part: &str) -> String {
    format!("backend-{i}-{part}")
}

/// The longest element comment nft stores; longer ones fail the whole transaction.
const MAX_COMMENT: usize = 128;

/// `namespace/name:port/proto (kind)`, restricted to characters that need no escaping anywhere, so a
/// hostile name can neither break the nft text syntax nor exceed the kernel's comment limit.
fn element_comment(destination: &Destination) -> String {
    let text = format!("{} ({})", destination.service_port, destination.kind);
    let allowed = |c: char| c.is_ascii_alphanumeric() || " -_.:/()".contains(c);
    // Usually nothing needs replacing: then the text is the comment, without a second copy.
    let mut clean =
        if text.chars().all(allowed) { text } else { text.chars().map(|c| if allowed(c) { c } else { '?' }).collect() };
    if clean.len() > MAX_COMMENT {
        clean.truncate(MAX_COMMENT - 3);
        clean.push_str("...");
    }
    clean
}

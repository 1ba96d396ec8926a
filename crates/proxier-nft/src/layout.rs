//! How the rule model is laid out in nftables: the one place that decides chain and map names.
//!
//! The layout has no per-service objects. Every destination is an element of one verdict map; the
//! chosen backends are elements of per-position maps. So a cluster of any size uses the same handful
//! of chains, loading is linear in the number of elements, and an endpoint change is an element change.
//!
//! ```text
//! nat prerouting/output ─► services: ip daddr . meta l4proto . th dport vmap @service-ips
//!   @service-ips element ─► balance-N            (no masquerade)
//!                        ─► balance-N-masq       (mark, then balance-N)
//!                        ─► balance-N-masq-nonpod (mark unless the source is a pod, then balance-N)
//!   balance-N: numgen random mod N vmap { i : goto backend-i }
//!   backend-i: dnat to (daddr . proto . dport → @backend-i-addr) : (… → @backend-i-port)
//! filter input/forward/output (new connections):
//!   ip daddr . meta l4proto . th dport vmap @no-endpoint-services  (goto reject-chain, or drop)
//!   ip daddr @cluster-ips → reject                                  (known ClusterIP, unknown port)
//! nat postrouting ─► masquerading: hairpin (ip saddr . ip daddr @hairpin) and marked connections
//! ```
//!
//! # Counters
//!
//! Unless laid out without them ([`family_table_with`]), the maps and sets where a new connection's
//! fate is decided are declared with `counter`: the kernel gives every element its own packet and byte
//! counter, and a lookup that finds the element counts the packet. Each decision is counted once, at
//! the point where it is taken, keyed by the destination the client used:
//!
//! - `service-ips`: connections sent to an endpoint. nat chains see only a connection's first packet
//!   (later packets follow the conntrack entry), so packets here are new connections, UDP flows too.
//! - `no-endpoint-services`: new connections rejected (no usable endpoint) or dropped (a `Local`
//!   policy with no local endpoint); the element's verdict says which.
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
//! address and port come from two maps per backend position.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use proxier_core::{Action, Backend, Destination, FamilyRules, LocalTraffic, Masquerade, Protocol, ServicePortName};

use smallvec::smallvec;

use crate::ruleset::{
    Chain, ChainType, DataType, Element, ElementKey, Hook, HookPoint, Rule, Set, Statement, Table, Value, Verdict,
};

/// The packet-mark bit that asks postrouting to masquerade (kube-proxy's default, bit 14).
pub const MASQUERADE_MARK: u32 = 0x4000;

/// The verdict map of destinations with endpoints (counting connections sent to an endpoint).
pub const SERVICE_IPS: &str = "service-ips";
/// Destinations whose fate depends on the source (externalTrafficPolicy `Local`), with counters on.
pub const POLICY_IPS: &str = "policy-ips";
/// Counts, per source-dependent destination, the new connections sent to an endpoint.
pub const POLICY_CONNECTIONS: &str = "policy-connections";
/// Counts, per source-dependent destination, the new connections its `Local` policy dropped.
pub const POLICY_DROPS: &str = "policy-drops";
/// The verdict map of destinations without a usable endpoint (rejected, or dropped by a `Local` policy).
pub const NO_ENDPOINT_SERVICES: &str = "no-endpoint-services";
/// Allocated ClusterIPs (counting rejects to ports no Service defines).
pub const CLUSTER_IPS: &str = "cluster-ips";
/// The service CIDRs (counting drops to addresses no Service holds).
pub const SERVICE_CIDRS: &str = "service-cidrs";
const POD_CIDRS: &str = "pod-cidrs";
const HAIRPIN: &str = "hairpin";
/// Destinations with `loadBalancerSourceRanges` (counting the connections the ranges drop).
pub const FIREWALL_IPS: &str = "firewall-ips";
const FIREWALL_ALLOW: &str = "firewall-allow";
const REJECT_CHAIN: &str = "reject-chain";
const MARK_FOR_MASQUERADE: &str = "mark-for-masquerade";
const SERVICES_CHAIN: &str = "services";
const MASQUERADING_CHAIN: &str = "masquerading";

/// What the elements of a counted set or map count (see "Counters" above).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Counts {
    /// New connections sent to an endpoint, per destination.
    Connections,
    /// New connections to a destination without a usable endpoint: dropped when the element's verdict
    /// is `drop` (a `Local` policy), else rejected.
    NoEndpoint,
    /// New connections to a destination dropped by policy (`Local` without a local endpoint,
    /// `loadBalancerSourceRanges`).
    Dropped,
    /// New connections rejected at an allocated ClusterIP on a port no Service defines, per address.
    UnknownPorts,
    /// New connections dropped at a service-CIDR address no Service holds, per CIDR.
    Unallocated,
}

/// The sets and maps laid out with counters (unless without, [`family_table_with`]) and what their
/// elements count: the one list that the layout declares counters from and every reader of counters
/// ([`crate::counters`]) takes the counted sets from.
pub const COUNTED: [(&str, Counts); 7] = [
    (SERVICE_IPS, Counts::Connections),
    (POLICY_CONNECTIONS, Counts::Connections),
    (POLICY_DROPS, Counts::Dropped),
    (NO_ENDPOINT_SERVICES, Counts::NoEndpoint),
    (FIREWALL_IPS, Counts::Dropped),
    (CLUSTER_IPS, Counts::UnknownPorts),
    (SERVICE_CIDRS, Counts::Unallocated),
];

/// What the elements of the set or map `name` count, if it is one laid out with counters.
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
    // The element lists are sized up front: they reach tens of thousands of elements each, and growing
    // them by doubling copies them and fragments the heap (measured: about a fifth of the layout).
    let mut per_position: Vec<usize> = Vec::new();
    for destination in &rules.destinations {
        if let Action::Balance { backends, affinity: None, .. } = &destination.action {
            if per_position.len() < backends.len() {
                per_position.resize(backends.len(), 0);
            }
            per_position[..backends.len()].iter_mut().for_each(|count| *count += 1);
        }
    }
    let mut layout = Layout {
        rules,
        counters,
        service_ips: Vec::with_capacity(rules.destinations.len()),
        policy_ips: Vec::new(),
        policy_connections: Vec::new(),
        policy_drops: Vec::new(),
        no_endpoint: Vec::new(),
        firewall_ips: Vec::new(),
        firewall_allow: Vec::new(),
        positions: per_position.into_iter().map(|n| (Vec::with_capacity(n), Vec::with_capacity(n))).collect(),
        balancers: BTreeSet::new(),
        dedicated: BTreeMap::new(),
        affinity_sets: BTreeMap::new(),
    };
    for destination in &rules.destinations {
        layout.destination(destination);
    }
    layout.into_table()
}

/// The objects of one table, gathered destination by destination.
struct Layout<'a> {
    rules: &'a FamilyRules,
    counters: bool,
    service_ips: Vec<Element>,
    /// With counters: destinations whose fate depends on the source, and what each can count.
    policy_ips: Vec<Element>,
    policy_connections: Vec<Element>,
    policy_drops: Vec<Element>,
    no_endpoint: Vec<Element>,
    firewall_ips: Vec<Element>,
    firewall_allow: Vec<Element>,
    /// Backend position i → elements of backend-i-addr and backend-i-port.
    positions: Vec<(Vec<Element>, Vec<Element>)>,
    /// Flat balancers in use: (endpoint count, masquerade).
    balancers: BTreeSet<(usize, Masquerade)>,
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
            Action::Reject | Action::Drop => {
                let verdict = self.verdict(&destination.service_port, &destination.action);
                self.no_endpoint.push(Element { key, data: Some(Value::Verdict(verdict)), comment });
                return;
            }
            Action::Balance { backends, masquerade, affinity: None } => {
                let masquerade = self.effective(*masquerade);
                self.balancers.insert((backends.len(), masquerade));
                if self.positions.len() < backends.len() {
                    self.positions.resize_with(backends.len(), Default::default);
                }
                for (backend, (addrs, ports)) in backends.iter().zip(&mut self.positions) {
                    addrs.push(Element { key: key.clone(), data: Some(Value::Addr(backend.ip)), comment: None });
                    ports.push(Element { key: key.clone(), data: Some(Value::Port(backend.port)), comment: None });
                }
                Verdict::Goto(balance_chain(backends.len(), masquerade))
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
        self.service_ips.push(Element { key, data: Some(Value::Verdict(verdict)), comment });
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

    fn into_table(self) -> Table {
        let rules = self.rules;
        let family = rules.family;
        let destination_type = vec![DataType::Addr(family), DataType::Proto, DataType::Service];
        let counters = self.counters;
        let set = |name: &str, key: Vec<DataType>, data: Option<DataType>, interval: bool, elements: Vec<Element>| {
            let counter = counters && counted(name).is_some();
            Set { name: name.into(), key, data, interval, timeout: None, counter, elements }
        };
        let addresses = |ips: &[std::net::IpAddr]| ips.iter().map(|&ip| element(smallvec![Value::Addr(ip)])).collect();
        // An interval set refuses overlapping or repeated prefixes (EEXIST): they are merged first.
        let prefixes = |nets: &[ipnet::IpNet]| {
            ipnet::IpNet::aggregate(&nets.to_vec())
                .into_iter()
                .map(|net| element(smallvec![Value::Prefix(net)]))
                .collect()
        };
        let mut sets = vec![
            // Allocated ClusterIPs: other ports on them are rejected.
            set(CLUSTER_IPS, vec![DataType::Addr(family)], None, false, addresses(&rules.cluster_ips)),
            // Every destination with endpoints: ClusterIPs, externalIPs, LoadBalancer IPs, NodePorts.
            set(SERVICE_IPS, destination_type.clone(), Some(DataType::Verdict), false, self.service_ips),
            // Destinations without usable endpoints: rejected, or dropped under a Local policy.
            set(NO_ENDPOINT_SERVICES, destination_type.clone(), Some(DataType::Verdict), false, self.no_endpoint),
            // An endpoint reaching itself through a service: masqueraded so that replies return.
            set(
                HAIRPIN,
                vec![DataType::Addr(family), DataType::Addr(family)],
                None,
                false,
                rules
                    .backend_ips()
                    .into_iter()
                    .map(|ip| element(smallvec![Value::Addr(ip), Value::Addr(ip)]))
                    .collect(),
            ),
        ];
        if counters {
            sets.push(set(POLICY_IPS, destination_type.clone(), Some(DataType::Verdict), false, self.policy_ips));
            sets.push(set(POLICY_CONNECTIONS, destination_type.clone(), None, false, self.policy_connections));
            sets.push(set(POLICY_DROPS, destination_type.clone(), None, false, self.policy_drops));
        }
        if let LocalTraffic::Cidrs(cidrs) = &rules.local_traffic {
            // The local-traffic detector: sources in the pod network.
            sets.push(set(POD_CIDRS, vec![DataType::Addr(family)], None, true, prefixes(cidrs)));
        }
        if !rules.service_cidrs.is_empty() {
            sets.push(set(SERVICE_CIDRS, vec![DataType::Addr(family)], None, true, prefixes(&rules.service_cidrs)));
        }
        let firewalled = !self.firewall_ips.is_empty();
        if firewalled {
            // LoadBalancer IPs with loadBalancerSourceRanges, and the sources each allows.
            sets.push(set(FIREWALL_IPS, destination_type.clone(), None, false, self.firewall_ips));
            let mut allow_type = destination_type.clone();
            allow_type.push(DataType::Addr(family));
            sets.push(set(FIREWALL_ALLOW, allow_type, None, true, self.firewall_allow));
        }
        for (i, (addrs, ports)) in self.positions.into_iter().enumerate() {
            // The address and port of backend i of each flat destination.
            sets.push(set(
                &backend_map(i, "addr"),
                destination_type.clone(),
                Some(DataType::Addr(family)),
                false,
                addrs,
            ));
            sets.push(set(&backend_map(i, "port"), destination_type.clone(), Some(DataType::Service), false, ports));
        }
        sets.extend(self.affinity_sets.into_values());

        let mut chains = base_chains(firewalled, !rules.service_cidrs.is_empty(), counters);
        chains.extend(fixed_chains(counters));
        let counts: BTreeSet<usize> = self.balancers.iter().map(|(n, _)| *n).collect();
        for &n in &counts {
            let target = (0..n).map(backend_chain).collect();
            chains.push(chain(&balance_chain(n, Masquerade::Never), vec![Rule::new(vec![pick(target)])]));
        }
        for &(n, masquerade) in &self.balancers {
            let mark = match masquerade {
                Masquerade::Never => continue,
                Masquerade::Always => Vec::new(),
                Masquerade::OutsidePodNetwork => pod_match(&rules.local_traffic, true),
            };
            let mut mark = mark;
            mark.push(Statement::Verdict(Verdict::Jump(MARK_FOR_MASQUERADE.into())));
            let next = Statement::Verdict(Verdict::Goto(balance_chain(n, Masquerade::Never)));
            chains.push(chain(&balance_chain(n, masquerade), vec![Rule::new(mark), Rule::new(vec![next])]));
        }
        for i in 0..counts.last().copied().unwrap_or(0) {
            let dnat = Statement::DnatFromMaps { addr_map: backend_map(i, "addr"), port_map: backend_map(i, "port") };
            chains.push(chain(&backend_chain(i), vec![Rule::new(vec![dnat])]));
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

fn base_chains(firewalled: bool, service_cidrs: bool, counters: bool) -> Vec<Chain> {
    let jump = |chain: &str| Rule::new(vec![Statement::Verdict(Verdict::Jump(chain.into()))]);
    let no_endpoints = Rule::new(vec![Statement::CtStateNew, Statement::DispatchVmap(NO_ENDPOINT_SERVICES.into())])
        .with_comment("Reject or drop destinations without usable endpoints");
    let mut after_dnat = vec![
        no_endpoints.clone(),
        Rule::new(vec![
            Statement::CtStateNew,
            Statement::DaddrIn(CLUSTER_IPS.into()),
            Statement::Verdict(Verdict::Goto(REJECT_CHAIN.into())),
        ])
        .with_comment("A ClusterIP on a port no Service defines"),
    ];
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
    let mut chains = vec![
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
        base_chain(FILTER_INPUT, ChainType::Filter, HookPoint::Input, PRIORITY_FILTER, vec![no_endpoints]),
        base_chain(FILTER_FORWARD, ChainType::Filter, HookPoint::Forward, PRIORITY_FILTER, after_dnat.clone()),
        base_chain(FILTER_OUTPUT, ChainType::Filter, HookPoint::Output, PRIORITY_FILTER, after_dnat),
    ];
    if firewalled {
        // Source ranges are checked before DNAT, while the destination is still the LoadBalancer IP.
        // With counters, the (counting) firewall-ips lookup comes last, so it counts only drops.
        let (first, second) =
            (Statement::DestinationIn(FIREWALL_IPS.into()), Statement::DestinationSourceNotIn(FIREWALL_ALLOW.into()));
        let (first, second) = if counters { (second, first) } else { (first, second) };
        let firewall = Rule::new(vec![Statement::CtStateNew, first, second, Statement::Verdict(Verdict::Drop)])
            .with_comment("loadBalancerSourceRanges");
        let pre_dnat = PRIORITY_DSTNAT - 10;
        chains.push(base_chain(
            FILTER_PREROUTING,
            ChainType::Filter,
            HookPoint::Prerouting,
            pre_dnat,
            vec![firewall.clone()],
        ));
        chains.push(base_chain(FILTER_OUTPUT_PRE_DNAT, ChainType::Filter, HookPoint::Output, pre_dnat, vec![firewall]));
    }
    chains
}

fn fixed_chains(counters: bool) -> Vec<Chain> {
    let chain = |name: &str, rules: Vec<Rule>| Chain { name: name.into(), hook: None, rules };
    let mut services = vec![Rule::new(vec![Statement::DispatchVmap(SERVICE_IPS.into())])];
    if counters {
        services.push(Rule::new(vec![Statement::DispatchVmap(POLICY_IPS.into())]));
    }
    vec![
        chain(SERVICES_CHAIN, services),
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

fn balance_chain(n: usize, masquerade: Masquerade) -> String {
    match masquerade {
        Masquerade::Never => format!("balance-{n}"),
        Masquerade::Always => format!("balance-{n}-masq"),
        Masquerade::OutsidePodNetwork => format!("balance-{n}-masq-nonpod"),
    }
}

fn backend_chain(i: usize) -> String {
    format!("backend-{i}")
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

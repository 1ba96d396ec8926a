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
//! Why this shape: kube-proxy's chain-per-service-and-endpoint layout takes minutes to load at 10k
//! services, while element-only layouts load in about a second (docs/layout.md). nft 1.0.6's JSON
//! parser cannot express a map whose value is a concatenation (address . port) or whose key holds a
//! `numgen` result, so the backend choice is a small `numgen` verdict map per endpoint count and the
//! address and port come from two maps per backend position.

use std::collections::BTreeSet;

use proxier_core::{Action, Destination, FamilyRules, IpFamily, Masquerade, Protocol};

use crate::ruleset::{
    Chain, ChainType, DataType, Element, Hook, HookPoint, Rule, Set, Statement, Table, Value, Verdict,
};

/// The packet-mark bit that asks postrouting to masquerade (kube-proxy's default, bit 14).
pub const MASQUERADE_MARK: u32 = 0x4000;

const SERVICE_IPS: &str = "service-ips";
const NO_ENDPOINT_SERVICES: &str = "no-endpoint-services";
const CLUSTER_IPS: &str = "cluster-ips";
const POD_CIDRS: &str = "pod-cidrs";
const HAIRPIN: &str = "hairpin";
const REJECT_CHAIN: &str = "reject-chain";
const MARK_FOR_MASQUERADE: &str = "mark-for-masquerade";

// Kernel hook priorities, by their nft names.
const PRIORITY_DSTNAT: i32 = -100;
const PRIORITY_FILTER: i32 = 0;
const PRIORITY_SRCNAT: i32 = 100;

/// Lays out one family's rules as a table named `table`.
pub fn family_table(rules: &FamilyRules, table: &str) -> Table {
    let family = rules.family;
    let mut service_ips = Vec::new();
    let mut no_endpoint = Vec::new();
    // Backend position i → elements of backend-i-addr and backend-i-port.
    let mut positions: Vec<(Vec<Element>, Vec<Element>)> = Vec::new();
    let mut balancers: BTreeSet<(usize, Masquerade)> = BTreeSet::new();

    for destination in &rules.destinations {
        let key = destination_key(destination);
        let comment = Some(element_comment(destination));
        match &destination.action {
            Action::Balance { backends, masquerade } => {
                let masquerade = effective_masquerade(*masquerade, rules);
                balancers.insert((backends.len(), masquerade));
                service_ips.push(Element {
                    key: key.clone(),
                    data: Some(Value::Verdict(Verdict::Goto(balance_chain(backends.len(), masquerade)))),
                    comment,
                });
                if positions.len() < backends.len() {
                    positions.resize_with(backends.len(), Default::default);
                }
                for (backend, (addrs, ports)) in backends.iter().zip(&mut positions) {
                    addrs.push(Element { key: key.clone(), data: Some(Value::Addr(backend.ip)), comment: None });
                    ports.push(Element { key: key.clone(), data: Some(Value::Port(backend.port)), comment: None });
                }
            }
            Action::Reject => no_endpoint.push(Element {
                key,
                data: Some(Value::Verdict(Verdict::Goto(REJECT_CHAIN.into()))),
                comment,
            }),
            Action::Drop => no_endpoint.push(Element { key, data: Some(Value::Verdict(Verdict::Drop)), comment }),
        }
    }

    let destination_type = vec![DataType::Addr(family), DataType::Proto, DataType::Service];
    let mut sets = vec![
        Set {
            name: CLUSTER_IPS.into(),
            key: vec![DataType::Addr(family)],
            data: None,
            interval: false,
            // Allocated ClusterIPs: other ports on them are rejected
            elements: rules.cluster_ips.iter().map(|&ip| element(vec![Value::Addr(ip)], None)).collect(),
        },
        Set {
            name: SERVICE_IPS.into(),
            key: destination_type.clone(),
            data: Some(DataType::Verdict),
            interval: false,
            // ClusterIP, externalIP, LoadBalancer IP and NodePort destinations with endpoints
            elements: service_ips,
        },
        Set {
            name: NO_ENDPOINT_SERVICES.into(),
            key: destination_type.clone(),
            data: Some(DataType::Verdict),
            interval: false,
            // Destinations without usable endpoints
            elements: no_endpoint,
        },
        Set {
            name: HAIRPIN.into(),
            key: vec![DataType::Addr(family), DataType::Addr(family)],
            data: None,
            interval: false,
            // Endpoint to itself through a service: masqueraded so replies return
            elements: rules
                .backend_ips()
                .into_iter()
                .map(|ip| element(vec![Value::Addr(ip), Value::Addr(ip)], None))
                .collect(),
        },
    ];
    if !rules.pod_cidrs.is_empty() {
        sets.push(Set {
            name: POD_CIDRS.into(),
            key: vec![DataType::Addr(family)],
            data: None,
            interval: true,
            // The pod network (--cluster-cidr): local-traffic detector
            elements: rules.pod_cidrs.iter().map(|&net| element(vec![Value::Prefix(net)], None)).collect(),
        });
    }
    for (i, (addrs, ports)) in positions.into_iter().enumerate() {
        sets.push(Set {
            name: backend_map(i, "addr"),
            key: destination_type.clone(),
            data: Some(DataType::Addr(family)),
            interval: false,
            // Address of backend {i} of each destination
            elements: addrs,
        });
        sets.push(Set {
            name: backend_map(i, "port"),
            key: destination_type.clone(),
            data: Some(DataType::Service),
            interval: false,
            // Port of backend {i} of each destination
            elements: ports,
        });
    }

    let mut chains = base_chains();
    chains.extend(fixed_chains());
    let positions_used = balancers.iter().map(|(n, _)| *n).max().unwrap_or(0);
    let counts: BTreeSet<usize> = balancers.iter().map(|(n, _)| *n).collect();
    for &n in &counts {
        chains.push(Chain {
            name: balance_chain(n, Masquerade::Never),
            hook: None,
            rules: vec![Rule::new(vec![if n == 1 {
                Statement::Verdict(Verdict::Goto(backend_chain(0)))
            } else {
                Statement::RandomGoto((0..n).map(backend_chain).collect())
            }])],
        });
    }
    for &(n, masquerade) in &balancers {
        let mark = match masquerade {
            Masquerade::Never => continue,
            Masquerade::Always => vec![Statement::Verdict(Verdict::Jump(MARK_FOR_MASQUERADE.into()))],
            Masquerade::OutsidePodNetwork => vec![
                Statement::SaddrNotIn(POD_CIDRS.into()),
                Statement::Verdict(Verdict::Jump(MARK_FOR_MASQUERADE.into())),
            ],
        };
        chains.push(Chain {
            name: balance_chain(n, masquerade),
            hook: None,
            rules: vec![
                Rule::new(mark),
                Rule::new(vec![Statement::Verdict(Verdict::Goto(balance_chain(n, Masquerade::Never)))]),
            ],
        });
    }
    for i in 0..positions_used {
        chains.push(Chain {
            name: backend_chain(i),
            hook: None,
            rules: vec![Rule::new(vec![Statement::DnatFromMaps {
                addr_map: backend_map(i, "addr"),
                port_map: backend_map(i, "port"),
            }])],
        });
    }

    Table { family, name: table.to_owned(), sets, chains }
}

fn base_chain(name: &str, chain_type: ChainType, point: HookPoint, priority: i32, rules: Vec<Rule>) -> Chain {
    Chain { name: name.into(), hook: Some(Hook { chain_type, point, priority }), rules }
}

fn base_chains() -> Vec<Chain> {
    let jump = |chain: &str| Rule::new(vec![Statement::Verdict(Verdict::Jump(chain.into()))]);
    let no_endpoints = Rule::new(vec![Statement::CtStateNew, Statement::DispatchVmap(NO_ENDPOINT_SERVICES.into())])
        .with_comment("Reject or drop destinations without usable endpoints");
    let unknown_port = Rule::new(vec![
        Statement::CtStateNew,
        Statement::DaddrIn(CLUSTER_IPS.into()),
        Statement::Verdict(Verdict::Goto(REJECT_CHAIN.into())),
    ])
    .with_comment("A ClusterIP on a port no Service defines");
    vec![
        base_chain("nat-prerouting", ChainType::Nat, HookPoint::Prerouting, PRIORITY_DSTNAT, vec![jump("services")]),
        base_chain("nat-output", ChainType::Nat, HookPoint::Output, PRIORITY_DSTNAT, vec![jump("services")]),
        base_chain(
            "nat-postrouting",
            ChainType::Nat,
            HookPoint::Postrouting,
            PRIORITY_SRCNAT,
            vec![jump("masquerading")],
        ),
        // Rejects live in filter chains: `reject` is not allowed in prerouting before kernel 5.9.
        base_chain("filter-input", ChainType::Filter, HookPoint::Input, PRIORITY_FILTER, vec![no_endpoints.clone()]),
        base_chain(
            "filter-forward",
            ChainType::Filter,
            HookPoint::Forward,
            PRIORITY_FILTER,
            vec![no_endpoints.clone(), unknown_port.clone()],
        ),
        base_chain(
            "filter-output",
            ChainType::Filter,
            HookPoint::Output,
            PRIORITY_FILTER,
            vec![no_endpoints, unknown_port],
        ),
    ]
}

fn fixed_chains() -> Vec<Chain> {
    let chain = |name: &str, rules: Vec<Rule>| Chain { name: name.into(), hook: None, rules };
    vec![
        chain("services", vec![Rule::new(vec![Statement::DispatchVmap(SERVICE_IPS.into())])]),
        chain(
            "masquerading",
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

/// Without a pod network to tell pods apart, "masquerade non-pod sources" cannot be expressed.
fn effective_masquerade(masquerade: Masquerade, rules: &FamilyRules) -> Masquerade {
    match masquerade {
        Masquerade::OutsidePodNetwork if rules.pod_cidrs.is_empty() => Masquerade::Never,
        other => other,
    }
}

fn destination_key(destination: &Destination) -> Vec<Value> {
    vec![Value::Addr(destination.ip), Value::Proto(destination.protocol), Value::Port(destination.port)]
}

fn element(key: Vec<Value>, comment: Option<String>) -> Element {
    Element { key, data: None, comment }
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
    let mut clean: String =
        text.chars().map(|c| if c.is_ascii_alphanumeric() || " -_.:/()".contains(c) { c } else { '?' }).collect();
    if clean.len() > MAX_COMMENT {
        clean.truncate(MAX_COMMENT - 3);
        clean.push_str("...");
    }
    clean
}

/// The family's nft name.
pub fn family_name(family: IpFamily) -> &'static str {
    match family {
        IpFamily::V4 => "ip",
        IpFamily::V6 => "ip6",
    }
}

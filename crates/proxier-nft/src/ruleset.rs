//! The nftables objects proxier creates, as plain data. [`crate::json`] and [`crate::text`] render the
//! same values, so the JSON a machine applies and the text a human reads cannot drift apart.
//!
//! Only the shapes proxier emits exist here; every name comes from proxier itself, never from the API,
//! and API data enters only as typed values (addresses, ports) and bounded, sanitised comments.

use std::net::IpAddr;

use ipnet::IpNet;
use proxier_core::{Backend, IpFamily, Protocol};

/// One table of one family, with everything in it. Its name is not here: a [`crate::Transaction`]
/// names proxier's table once, for both families.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    /// `ip` or `ip6`.
    pub family: IpFamily,
    /// Sets and maps, in render order.
    pub sets: Vec<Set>,
    /// Chains, in render order.
    pub chains: Vec<Chain>,
}

/// The type of a set key part or map value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataType {
    /// `ipv4_addr` / `ipv6_addr`.
    Addr(IpFamily),
    /// `inet_proto`.
    Proto,
    /// `inet_service` (a port).
    Service,
    /// `verdict` (map values only).
    Verdict,
}

impl DataType {
    /// nft's name for the type, as both the text and the JSON syntax spell it.
    pub fn name(self) -> &'static str {
        match self {
            DataType::Addr(IpFamily::V4) => "ipv4_addr",
            DataType::Addr(IpFamily::V6) => "ipv6_addr",
            DataType::Proto => "inet_proto",
            DataType::Service => "inet_service",
            DataType::Verdict => "verdict",
        }
    }
}

/// nft's name for a table family.
pub fn family_name(family: IpFamily) -> &'static str {
    match family {
        IpFamily::V4 => "ip",
        IpFamily::V6 => "ip6",
    }
}

/// A named set (no `data`) or map (`data` set). Sets carry no comment: nft 1.0.6's JSON parser drops
/// set comments, and the JSON and text forms must load into the same kernel state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Set {
    /// The set's name.
    pub name: String,
    /// More than one part makes a concatenation.
    pub key: Vec<DataType>,
    /// The value type, for a map.
    pub data: Option<DataType>,
    /// Elements may be prefixes.
    pub interval: bool,
    /// Elements expire after this many seconds unless refreshed (filled by the data plane itself).
    pub timeout: Option<u32>,
    /// Every element carries its own packet and byte counter (`counter` in the set's declaration:
    /// the kernel clones it onto each element, and a lookup that finds the element counts the packet).
    pub counter: bool,
    /// The elements, in render order.
    pub elements: Vec<Element>,
}

/// A set or map element.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Element {
    /// The key, one value per key part.
    pub key: ElementKey,
    /// The value, in a map.
    pub data: Option<Value>,
    /// A comment stored with the element (maps of destinations name the service port).
    pub comment: Option<String>,
}

/// An element's key: one value per key part, kept inline (proxier's keys have at most four parts).
pub type ElementKey = smallvec::SmallVec<[Value; 4]>;

/// A value in an element.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Value {
    /// An address.
    Addr(IpAddr),
    /// A range, in interval sets.
    Prefix(IpNet),
    /// A transport protocol.
    Proto(Protocol),
    /// A port.
    Port(u16),
    /// A verdict, in verdict maps.
    Verdict(Verdict),
}

/// Where a rule or map element sends a packet.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Verdict {
    /// `drop`.
    Drop,
    /// `return`.
    Return,
    /// `jump CHAIN`: continue there, then come back.
    Jump(String),
    /// `goto CHAIN`: continue there, never come back.
    Goto(String),
}

/// A chain; a base chain when `hook` is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    /// The chain's name.
    pub name: String,
    /// Where a base chain is attached; `None` for a regular chain.
    pub hook: Option<Hook>,
    /// The rules, in order.
    pub rules: Vec<Rule>,
}

/// Where a base chain is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hook {
    /// `nat` or `filter`.
    pub chain_type: ChainType,
    /// The netfilter hook.
    pub point: HookPoint,
    /// The priority (`dstnat` is -100, `filter` 0, `srcnat` 100).
    pub priority: i32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
/// A base chain's type.
pub enum ChainType {
    /// `type nat`: may DNAT, SNAT and masquerade.
    Nat,
    /// `type filter`: may accept, drop and reject.
    Filter,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
/// A netfilter hook.
pub enum HookPoint {
    /// `prerouting`: packets arriving, before routing.
    Prerouting,
    /// `input`: packets for this host.
    Input,
    /// `forward`: packets routed through this host.
    Forward,
    /// `output`: packets this host sends.
    Output,
    /// `postrouting`: packets leaving, after routing.
    Postrouting,
}

impl ChainType {
    /// nft's name for the chain type.
    pub fn name(self) -> &'static str {
        match self {
            ChainType::Nat => "nat",
            ChainType::Filter => "filter",
        }
    }
}

impl HookPoint {
    /// nft's name for the hook.
    pub fn name(self) -> &'static str {
        match self {
            HookPoint::Prerouting => "prerouting",
            HookPoint::Input => "input",
            HookPoint::Forward => "forward",
            HookPoint::Output => "output",
            HookPoint::Postrouting => "postrouting",
        }
    }
}

/// A rule: statements evaluated left to right.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The statements, evaluated left to right.
    pub statements: Vec<Statement>,
    /// A comment stored with the rule.
    pub comment: Option<String>,
}

impl Rule {
    /// A rule without a comment.
    pub fn new(statements: Vec<Statement>) -> Rule {
        Rule { statements, comment: None }
    }

    /// The same rule with a comment.
    pub fn with_comment(mut self, comment: &str) -> Rule {
        self.comment = Some(comment.to_owned());
        self
    }
}

/// The rule fragments proxier uses. The family of `ip`/`ip6` fields comes from the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Statement {
    /// `ct state new`
    CtStateNew,
    /// `ct status dnat`
    CtStatusDnat,
    /// `ip daddr @SET`
    DaddrIn(String),
    /// `ip saddr @SET`
    SaddrIn(String),
    /// `ip saddr != @SET`
    SaddrNotIn(String),
    /// `iifname NAME` / `iifname != NAME`; a trailing `*` matches a prefix.
    Iifname {
        /// The interface name (or prefix with a trailing `*`).
        name: String,
        /// Match every other interface instead.
        negate: bool,
    },
    /// `fib saddr type local`: the packet comes from this node.
    FibSaddrLocal,
    /// `ip daddr . meta l4proto . th dport @SET`
    DestinationIn(String),
    /// `ip daddr . meta l4proto . th dport . ip saddr != @SET`
    DestinationSourceNotIn(String),
    /// `update @SET { ip saddr }`
    UpdateSaddr(String),
    /// `dnat ip to ADDR:PORT`
    DnatTo(Backend),
    /// `ip saddr . ip daddr @SET`
    SaddrDaddrIn(String),
    /// `meta l4proto PROTO`
    L4Proto(Protocol),
    /// `meta mark & BITS == 0`
    MarkClear(u32),
    /// `meta mark set meta mark | BITS`
    MarkSet(u32),
    /// `meta mark set meta mark ^ BITS`
    MarkToggle(u32),
    /// `ip daddr . meta l4proto . th dport vmap @MAP`
    DispatchVmap(String),
    /// `numgen random mod N vmap { 0 : goto CHAIN0, … }`
    RandomGoto(Vec<String>),
    /// `dnat ip to ip daddr . meta l4proto . th dport map @ADDR : ip daddr . meta l4proto . th dport map @PORT`
    DnatFromMaps {
        /// The map from destination to backend address.
        addr_map: String,
        /// The map from destination to backend port.
        port_map: String,
    },
    /// `masquerade fully-random`
    Masquerade,
    /// `reject with tcp reset`; needs a preceding `L4Proto(Tcp)`.
    RejectTcpReset,
    /// `reject` (ICMP port unreachable)
    Reject,
    /// A verdict ends the rule.
    Verdict(Verdict),
}

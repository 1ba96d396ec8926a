//! The nftables objects proxier creates, as plain data. [`crate::json`] and [`crate::text`] render the
//! same values, so the JSON a machine applies and the text a human reads cannot drift apart.
//!
//! Only the shapes proxier emits exist here; every name comes from proxier itself, never from the API,
//! and API data enters only as typed values (addresses, ports) and bounded, sanitised comments.

use std::net::IpAddr;

use ipnet::IpNet;
use proxier_core::{Backend, IpFamily, Protocol};

/// One table of one family, with everything in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub family: IpFamily,
    pub name: String,
    /// Sets and maps, in render order.
    pub sets: Vec<Set>,
    /// Chains, in render order.
    pub chains: Vec<Chain>,
}

/// The type of a set key part or map value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataType {
    Addr(IpFamily),
    Proto,
    Service,
    Verdict,
}

/// A named set (no `data`) or map (`data` set). Sets carry no comment: nft 1.0.6's JSON parser drops
/// set comments, and the JSON and text forms must load into the same kernel state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Set {
    pub name: String,
    /// More than one part makes a concatenation.
    pub key: Vec<DataType>,
    pub data: Option<DataType>,
    /// Elements may be prefixes.
    pub interval: bool,
    /// Elements expire after this many seconds unless refreshed (filled by the data plane itself).
    pub timeout: Option<u32>,
    pub elements: Vec<Element>,
}

/// A set or map element.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Element {
    pub key: Vec<Value>,
    pub data: Option<Value>,
    pub comment: Option<String>,
}

/// A value in an element.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Value {
    Addr(IpAddr),
    Prefix(IpNet),
    Proto(Protocol),
    Port(u16),
    Verdict(Verdict),
}

/// Where a rule or map element sends a packet.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    Drop,
    Return,
    Jump(String),
    Goto(String),
}

/// A chain; a base chain when `hook` is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub name: String,
    pub hook: Option<Hook>,
    pub rules: Vec<Rule>,
}

/// Where a base chain is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hook {
    pub chain_type: ChainType,
    pub point: HookPoint,
    pub priority: i32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainType {
    Nat,
    Filter,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookPoint {
    Prerouting,
    Input,
    Forward,
    Output,
    Postrouting,
}

/// A rule: statements evaluated left to right.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub statements: Vec<Statement>,
    pub comment: Option<String>,
}

impl Rule {
    pub fn new(statements: Vec<Statement>) -> Rule {
        Rule { statements, comment: None }
    }

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
        name: String,
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
        addr_map: String,
        port_map: String,
    },
    /// `masquerade fully-random`
    Masquerade,
    /// `reject with tcp reset`; needs a preceding `L4Proto(Tcp)`.
    RejectTcpReset,
    /// `reject` (ICMP port unreachable)
    Reject,
    Verdict(Verdict),
}

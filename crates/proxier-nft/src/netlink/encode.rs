//! A [`Transaction`] as one nf_tables netlink batch (begin … end), message by message as `nft` itself
//! would send it: the same attributes, expressions and set userdata (the byte order and type hints
//! `nft list` reads back), so that a table written here lists exactly as one written by `nft -j -f`.
//!
//! Covered: every change a transaction holds: whole tables (a full load), chains (base chains too),
//! sets and maps (with timeouts, dynamic ones updated from the packet path, interval sets of one key
//! part and concatenated ones, a counter on every element), elements (keys, ranges, data including
//! verdicts, comments, carried counter values), rules with every [`crate::ruleset::Statement`]
//! (see [`super::expr`]; a `numgen … vmap { … }` creates its anonymous map in the same batch),
//! flushing and deleting chains, deleting sets. Not covered, and so left to `nft` ([`Unsupported`]):
//! adding to or deleting from an interval set of one key part that the transaction does not create
//! (nft merges those with the ranges the kernel already holds), and set keys proxier never uses.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use proxier_core::{IpFamily, Protocol};

use super::expr;
use super::wire::{NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_REQUEST, Writer};
use crate::change::Change;
use crate::counters::Carried;
use crate::layout::is_interval_set;
use crate::ruleset::family_name;
use crate::ruleset::{DataType, Element, Hook, HookPoint, Rule, Set, Statement, Table, Value, Verdict};
use crate::text::{Seeds, element_text, key_text};
use crate::transaction::Transaction;

pub(crate) const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 16;
const NFNL_MSG_BATCH_END: u16 = 17;

// nf_tables message types (linux/netfilter/nf_tables.h).
pub(crate) const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_DELTABLE: u16 = 2;
pub(crate) const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_DELCHAIN: u16 = 5;
pub(crate) const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_DELRULE: u16 = 8;
pub(crate) const NFT_MSG_NEWSET: u16 = 9;
const NFT_MSG_DELSET: u16 = 11;
pub(crate) const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_DELSETELEM: u16 = 14;
pub(crate) const NFT_MSG_NEWGEN: u16 = 15;
pub(crate) const NFT_MSG_GETGEN: u16 = 16;

// Attributes: every object's first attribute names its table.
const NFTA_TABLE_NAME: u16 = 1;
const NFTA_TABLE_FLAGS: u16 = 2;
pub(crate) const NFTA_CHAIN_TABLE: u16 = 1;
pub(crate) const NFTA_CHAIN_NAME: u16 = 3;
pub(crate) const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_POLICY: u16 = 5;
pub(crate) const NFTA_CHAIN_TYPE: u16 = 7;
pub(crate) const NFTA_HOOK_HOOKNUM: u16 = 1;
pub(crate) const NFTA_HOOK_PRIORITY: u16 = 2;
pub(crate) const NFTA_RULE_TABLE: u16 = 1;
pub(crate) const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
pub(crate) const NFTA_RULE_USERDATA: u16 = 7;
pub(crate) const NFTA_SET_TABLE: u16 = 1;
pub(crate) const NFTA_SET_NAME: u16 = 2;
pub(crate) const NFTA_SET_FLAGS: u16 = 3;
pub(crate) const NFTA_SET_KEY_TYPE: u16 = 4;
pub(crate) const NFTA_SET_KEY_LEN: u16 = 5;
const NFTA_SET_DATA_TYPE: u16 = 6;
const NFTA_SET_DATA_LEN: u16 = 7;
const NFTA_SET_DESC: u16 = 9;
const NFTA_SET_ID: u16 = 10;
const NFTA_SET_TIMEOUT: u16 = 11;
pub(crate) const NFTA_SET_USERDATA: u16 = 13;
pub(crate) const NFTA_SET_EXPR: u16 = 17;
const NFTA_SET_DESC_SIZE: u16 = 1;
const NFTA_SET_DESC_CONCAT: u16 = 2;
const NFTA_SET_FIELD_LEN: u16 = 1;
// An expression (linux/netfilter/nf_tables.h): the set-wide `counter` every element gets a copy of.
pub(crate) const NFTA_EXPR_NAME: u16 = 1;
pub(crate) const NFTA_EXPR_DATA: u16 = 2;
pub(crate) const NFTA_COUNTER_BYTES: u16 = 1;
pub(crate) const NFTA_COUNTER_PACKETS: u16 = 2;
pub(crate) const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
pub(crate) const NFTA_SET_ELEM_LIST_SET: u16 = 2;
pub(crate) const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_SET_ELEM_LIST_SET_ID: u16 = 4;
pub(crate) const NFTA_LIST_ELEM: u16 = 1;
pub(crate) const NFTA_SET_ELEM_KEY: u16 = 1;
pub(crate) const NFTA_SET_ELEM_DATA: u16 = 2;
const NFTA_SET_ELEM_FLAGS: u16 = 3;
const NFTA_SET_ELEM_KEY_END: u16 = 10;
pub(crate) const NFTA_SET_ELEM_USERDATA: u16 = 6;
pub(crate) const NFTA_SET_ELEM_EXPR: u16 = 7;
pub(crate) const NFTA_DATA_VALUE: u16 = 1;
pub(crate) const NFTA_DATA_VERDICT: u16 = 2;
pub(crate) const NFTA_VERDICT_CODE: u16 = 1;
pub(crate) const NFTA_VERDICT_CHAIN: u16 = 2;

const NFT_SET_ANONYMOUS: u32 = 0x1;
const NFT_SET_CONSTANT: u32 = 0x2;
const NFT_SET_INTERVAL: u32 = 0x4;
pub(crate) const NFT_SET_MAP: u32 = 0x8;
const NFT_SET_TIMEOUT: u32 = 0x10;
const NFT_SET_EVAL: u32 = 0x20;
const NFT_SET_CONCAT: u32 = 0x80;
const NFT_SET_ELEM_INTERVAL_END: u32 = 0x1;
/// The size nft gives a set that rules update from the packet path (`update @set …`) when its
/// declaration has none.
const DYNAMIC_SET_SIZE: u32 = 65535;
/// The name nft gives the kernel for an anonymous map; the kernel numbers it.
const ANONYMOUS_MAP: &str = "__map%d";
const NFT_DATA_VERDICT: u32 = 0xffff_ff00;
pub(crate) const NF_DROP: u32 = 0;
pub(crate) const NFT_JUMP: i32 = -3;
pub(crate) const NFT_GOTO: i32 = -4;
pub(crate) const NFT_RETURN: i32 = -5;
pub(crate) const NF_ACCEPT: u32 = 1;

// nft's datatype numbers, and how it combines them for a concatenation (6 bits per part).
const TYPE_INTEGER: u32 = 4;
pub(crate) const TYPE_IPADDR: u32 = 7;
pub(crate) const TYPE_IP6ADDR: u32 = 8;
pub(crate) const TYPE_INET_PROTOCOL: u32 = 12;
pub(crate) const TYPE_INET_SERVICE: u32 = 13;
pub(crate) const TYPE_BITS: u32 = 6;

// Set userdata as nft 1.0.6 writes it (libnftnl's TLVs: one byte type, one byte length).
const UDATA_SET_KEYBYTEORDER: u8 = 0;
const UDATA_SET_DATABYTEORDER: u8 = 1;
const UDATA_SET_DATA_INTERVAL: u8 = 6;
const UDATA_SET_DATA_TYPEOF: u8 = 4;
const BYTEORDER_INVALID: u32 = 0;
const BYTEORDER_HOST_ENDIAN: u32 = 1;
const BYTEORDER_BIG_ENDIAN: u32 = 2;
/// What nft 1.0.6 writes for every concatenated key (type 3, with the same bytes for each).
const UDATA_SET_CONCAT: [u8; 10] = [3, 8, 0, 4, 13, 0, 0, 0, 1, 0];
pub(crate) const UDATA_ELEM_COMMENT: u8 = 0;
/// The type of proxier's digest TLV in rule and set userdata: far above libnftnl's own types (a
/// handful each), which nft reads; nft ignores types it does not know.
pub(crate) const UDATA_DIGEST: u8 = 0xd1;
/// A rule's comment TLV (libnftnl's NFTNL_UDATA_RULE_COMMENT).
const UDATA_RULE_COMMENT: u8 = 0;

/// Element nests are closed well before netlink's 64 KiB attribute limit; the rest goes into another
/// message of the same batch.
const ELEMENTS_PER_MESSAGE_BYTES: usize = 48 * 1024;

/// Why a transaction is not sent over netlink (it is then applied by `nft`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unsupported {
    /// It adds to or deletes from an interval set of one key part that it does not create: nft
    /// merges such ranges with those the kernel holds, which this encoder does not read.
    #[error("it changes the ranges of an existing interval set")]
    Interval,
    /// A set key of one part that is not an address.
    #[error("a set key of type {0}")]
    Key(&'static str),
}

/// What one message of a batch does, for naming it when the kernel refuses it.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    /// Where the message starts in the batch.
    pub(crate) start: usize,
    /// `adding elements to map ip proxier service-ips`, …
    pub(crate) action: String,
    /// Elements: offset of each element's nest from the message start, and its description.
    pub(crate) elements: Vec<(u32, Element)>,
}

/// A transaction encoded as one netlink batch. Sequence numbers are set when it is sent.
#[derive(Debug, Clone)]
pub struct Batch {
    pub(crate) bytes: Vec<u8>,
    /// Offsets of the begin and end messages, whose sequence numbers are set too.
    pub(crate) begin: usize,
    pub(crate) end: usize,
    pub(crate) requests: Vec<Request>,
}

impl Batch {
    /// Encodes `transaction`, or says why netlink does not carry it.
    pub fn encode(transaction: &Transaction) -> Result<Batch, Unsupported> {
        let carried = transaction.carried();
        let mut encoder = Encoder {
            writer: Writer::default(),
            requests: Vec::new(),
            set_id: 0,
            carried,
            dynamic: HashSet::new(),
            intervals: HashMap::new(),
        };
        encoder.survey(transaction.changes());
        let begin = encoder.writer.begin_message(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, 0, 0, NFNL_SUBSYS_NFTABLES);
        encoder.writer.end_message(begin);
        for change in transaction.changes() {
            encoder.change(change, transaction.table_name())?;
        }
        // The kernel answers every refused message, but acknowledges only those that ask: one
        // acknowledgement per message would overflow the socket's receive buffer on a full load
        // (each takes a buffer of its own). The last one's says the kernel read the whole batch.
        if let Some(last) = encoder.requests.last() {
            let flags = &mut encoder.writer.buf[last.start + 6..last.start + 8];
            let value = u16::from_ne_bytes([flags[0], flags[1]]) | NLM_F_ACK;
            flags.copy_from_slice(&value.to_ne_bytes());
        }
        let end = encoder.writer.begin_message(NFNL_MSG_BATCH_END, NLM_F_REQUEST, 0, 0, NFNL_SUBSYS_NFTABLES);
        encoder.writer.end_message(end);
        Ok(Batch { bytes: encoder.writer.buf, begin, end, requests: encoder.requests })
    }

    /// The encoded size in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether the batch changes nothing (only begin and end).
    pub fn is_empty(&self) -> bool {
        self.requests.is_empty()
    }

    /// The number of nf_tables messages (begin and end not counted).
    pub fn messages(&self) -> usize {
        self.requests.len()
    }

    /// Gives the messages consecutive sequence numbers from `first` (begin is `first`); returns the
    /// number after the last.
    pub(crate) fn number(&mut self, first: u32) -> u32 {
        let mut seq = first;
        let starts: Vec<usize> =
            std::iter::once(self.begin).chain(self.requests.iter().map(|r| r.start)).chain([self.end]).collect();
        for start in starts {
            self.bytes[start + 8..start + 12].copy_from_slice(&seq.to_ne_bytes());
            seq = seq.wrapping_add(1);
        }
        seq
    }
}

pub(crate) fn nfproto(family: IpFamily) -> u8 {
    match family {
        IpFamily::V4 => 2,
        IpFamily::V6 => 10,
    }
}

struct Encoder<'a> {
    writer: Writer,
    requests: Vec<Request>,
    set_id: u32,
    /// Counts that added elements start from (see [`Transaction::with_carried_counts`]).
    carried: &'a Carried,
    /// Sets that rules of this transaction update from the packet path (`update @set { … }`): nft
    /// declares them dynamic.
    dynamic: HashSet<(IpFamily, String)>,
    /// Interval sets this transaction creates or flushes, and whether their ranges were written yet.
    intervals: HashMap<(IpFamily, String), bool>,
}

impl Encoder<'_> {
    /// What nft learns from the whole transaction before it sends any of it: which sets rules update
    /// and which sets are interval sets.
    fn survey(&mut self, changes: &[Change]) {
        let rules = |family: IpFamily, rules: &[Rule], dynamic: &mut HashSet<(IpFamily, String)>| {
            for statement in rules.iter().flat_map(|r| &r.statements) {
                if let Statement::UpdateSaddr(set) = statement {
                    dynamic.insert((family, set.clone()));
                }
            }
        };
        for change in changes {
            match change {
                Change::CreateTable(table) => {
                    for chain in &table.chains {
                        rules(table.family, &chain.rules, &mut self.dynamic);
                    }
                    for set in table.sets.iter().filter(|s| s.interval) {
                        self.intervals.insert((table.family, set.name.clone()), false);
                    }
                }
                Change::AddRules { family, rules: added, .. } => rules(*family, added, &mut self.dynamic),
                Change::AddSet { family, set } if set.interval => {
                    self.intervals.insert((*family, set.name.clone()), false);
                }
                // Emptied in this transaction: its ranges are written all at once, as into a new set.
                Change::FlushSet { family, set, .. } if is_interval_set(set) => {
                    self.intervals.insert((*family, set.clone()), false);
                }
                _ => {}
            }
        }
    }

    fn is_interval(&self, family: IpFamily, set: &str) -> bool {
        self.intervals.contains_key(&(family, set.to_owned())) || is_interval_set(set)
    }

    fn message(&mut self, kind: u16, create: bool, family: IpFamily, action: String) -> usize {
        let flags = NLM_F_REQUEST | if create { NLM_F_CREATE } else { 0 };
        let start = self.writer.begin_message((NFNL_SUBSYS_NFTABLES << 8) | kind, flags, 0, nfproto(family), 0);
        self.requests.push(Request { start, action, elements: Vec::new() });
        start
    }

    fn change(&mut self, change: &Change, table: &str) -> Result<(), Unsupported> {
        let object =
            |family: IpFamily, kind: &str, name: &str| format!("{kind} {} {table} {name}", family_name(family));
        match change {
            Change::RemoveTable(family) => {
                // Added first, so that removing it cannot fail when it is absent (as `nft` does it).
                let start =
                    self.message(NFT_MSG_NEWTABLE, true, *family, format!("adding table {}", family_name(*family)));
                self.writer.attr_str(NFTA_TABLE_NAME, table);
                self.writer.end_message(start);
                let start = self.message(
                    NFT_MSG_DELTABLE,
                    false,
                    *family,
                    format!("removing table {} {table}", family_name(*family)),
                );
                self.writer.attr_str(NFTA_TABLE_NAME, table);
                self.writer.end_message(start);
            }
            Change::FlushSet { family, set, map } => {
                // An element deletion that names no element removes them all.
                let what = object(*family, if *map { "map" } else { "set" }, set);
                let start = self.message(NFT_MSG_DELSETELEM, false, *family, format!("flushing {what}"));
                self.writer.attr_str(NFTA_SET_ELEM_LIST_TABLE, table);
                self.writer.attr_str(NFTA_SET_ELEM_LIST_SET, set);
                self.writer.end_message(start);
            }
            Change::CreateTable(created) => self.create_table(created, table)?,
            Change::AddRules { family, chain, rules } => {
                for rule in rules {
                    self.rule(*family, table, chain, rule);
                }
            }
            Change::AddChain { family, name, hook } => self.add_chain(*family, table, name, hook.as_ref()),
            Change::AddSet { family, set } => {
                self.add_set(*family, table, set, object(*family, kind(set), &set.name))?
            }
            Change::AddElements { family, set, elements } => {
                self.elements(*family, table, set, elements, true, object(*family, "set", set))?;
            }
            Change::DeleteElements { family, set, elements } => {
                self.elements(*family, table, set, elements, false, object(*family, "set", set))?;
            }
            Change::FlushChain { family, chain } => {
                let start = self.message(
                    NFT_MSG_DELRULE,
                    false,
                    *family,
                    format!("flushing {}", object(*family, "chain", chain)),
                );
                self.writer.attr_str(NFTA_RULE_TABLE, table);
                self.writer.attr_str(NFTA_RULE_CHAIN, chain);
                self.writer.end_message(start);
            }
            Change::DeleteChain { family, chain } => {
                let start = self.message(
                    NFT_MSG_DELCHAIN,
                    false,
                    *family,
                    format!("deleting {}", object(*family, "chain", chain)),
                );
                self.writer.attr_str(NFTA_CHAIN_TABLE, table);
                self.writer.attr_str(NFTA_CHAIN_NAME, chain);
                self.writer.end_message(start);
            }
            Change::DeleteSet { family, set, map } => {
                let what = object(*family, if *map { "map" } else { "set" }, set);
                let start = self.message(NFT_MSG_DELSET, false, *family, format!("deleting {what}"));
                self.writer.attr_str(NFTA_SET_TABLE, table);
                self.writer.attr_str(NFTA_SET_NAME, set);
                self.writer.end_message(start);
            }
        }
        Ok(())
    }

    /// A whole table, in the order nft's JSON load sends it: the table, its chains, its sets with their
    /// elements (which may name chains), then the rules (which may name chains and sets).
    fn create_table(&mut self, created: &Table, table: &str) -> Result<(), Unsupported> {
        let family = created.family;
        let start =
            self.message(NFT_MSG_NEWTABLE, true, family, format!("creating table {} {table}", family_name(family)));
        self.writer.attr_str(NFTA_TABLE_NAME, table);
        self.writer.attr_u32(NFTA_TABLE_FLAGS, 0);
        self.writer.end_message(start);
        for chain in &created.chains {
            self.add_chain(family, table, &chain.name, chain.hook.as_ref());
        }
        for set in &created.sets {
            let what = format!("{} {} {table} {}", kind(set), family_name(family), set.name);
            self.add_set(family, table, set, what)?;
        }
        for chain in &created.chains {
            for rule in &chain.rules {
                self.rule(family, table, &chain.name, rule);
            }
        }
        Ok(())
    }

    fn add_chain(&mut self, family: IpFamily, table: &str, name: &str, hook: Option<&Hook>) {
        let what = format!("adding chain {} {table} {name}", family_name(family));
        let start = self.message(NFT_MSG_NEWCHAIN, true, family, what);
        self.writer.attr_str(NFTA_CHAIN_TABLE, table);
        self.writer.attr_str(NFTA_CHAIN_NAME, name);
        if let Some(hook) = hook {
            self.hook(hook);
        }
        self.writer.end_message(start);
    }

    /// One rule, appended to its chain; first the anonymous maps its `numgen … vmap { … }`s use,
    /// created and filled in the same batch as nft does it (the rule names them by set id).
    fn rule(&mut self, family: IpFamily, table: &str, chain: &str, rule: &Rule) {
        let mut anonymous = Vec::new();
        for targets in expr::random_targets(&rule.statements) {
            self.set_id += 1;
            let id = self.set_id;
            self.anonymous_map(family, table, chain, id, targets);
            anonymous.push((ANONYMOUS_MAP.to_owned(), id));
        }
        let mut action = format!("adding a rule to chain {} {table} {chain}", family_name(family));
        if let Some(comment) = &rule.comment {
            action.push_str(&format!(" ({comment})"));
        }
        let flags = NLM_F_REQUEST | NLM_F_CREATE | NLM_F_APPEND;
        let start =
            self.writer.begin_message((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWRULE, flags, 0, nfproto(family), 0);
        self.requests.push(Request { start, action, elements: Vec::new() });
        self.writer.attr_str(NFTA_RULE_TABLE, table);
        self.writer.attr_str(NFTA_RULE_CHAIN, chain);
        let list = self.writer.begin_nest(NFTA_RULE_EXPRESSIONS);
        let interval = |set: &str| self.intervals.contains_key(&(family, set.to_owned())) || is_interval_set(set);
        let context = expr::Context { family, interval: &interval, anonymous: &anonymous };
        let mut writer = std::mem::take(&mut self.writer);
        expr::statements(&mut writer, &context, &rule.statements);
        self.writer = writer;
        self.writer.end_nest(list);
        let mut userdata = rule.comment.as_ref().map(|c| comment_tlv(UDATA_RULE_COMMENT, c)).unwrap_or_default();
        digest_tlv(&mut userdata, crate::text::rule_digest(rule, family));
        self.writer.attr(NFTA_RULE_USERDATA, &userdata);
        self.writer.end_message(start);
    }

    /// `numgen random mod N vmap { 0 : goto T0, … }`'s map: anonymous, constant, keyed by the
    /// host-order integer numgen yields, sized to its elements, with nft's userdata.
    fn anonymous_map(&mut self, family: IpFamily, table: &str, chain: &str, id: u32, targets: &[String]) {
        let what = format!("the anonymous map of a rule of chain {} {table} {chain}", family_name(family));
        let start = self.message(NFT_MSG_NEWSET, true, family, format!("adding {what}"));
        self.writer.attr_str(NFTA_SET_TABLE, table);
        self.writer.attr_str(NFTA_SET_NAME, ANONYMOUS_MAP);
        self.writer.attr_u32(NFTA_SET_FLAGS, NFT_SET_ANONYMOUS | NFT_SET_CONSTANT | NFT_SET_MAP);
        self.writer.attr_u32(NFTA_SET_KEY_TYPE, TYPE_INTEGER);
        self.writer.attr_u32(NFTA_SET_KEY_LEN, 4);
        self.writer.attr_u32(NFTA_SET_DATA_TYPE, NFT_DATA_VERDICT);
        self.writer.attr_u32(NFTA_SET_DATA_LEN, 0);
        self.writer.attr_u32(NFTA_SET_ID, id);
        let desc = self.writer.begin_nest(NFTA_SET_DESC);
        self.writer.attr_u32(NFTA_SET_DESC_SIZE, targets.len() as u32);
        self.writer.end_nest(desc);
        let mut userdata = Vec::new();
        udata_u32(&mut userdata, UDATA_SET_KEYBYTEORDER, BYTEORDER_HOST_ENDIAN);
        udata_u32(&mut userdata, UDATA_SET_DATABYTEORDER, BYTEORDER_INVALID);
        // The data's `typeof`, as nft 1.0.6 records it for a verdict map it builds itself.
        userdata.extend_from_slice(&[UDATA_SET_DATA_TYPEOF, 8, 0, 4]);
        userdata.extend_from_slice(&1u32.to_ne_bytes());
        userdata.extend_from_slice(&[1, 0]);
        udata_u32(&mut userdata, UDATA_SET_DATA_INTERVAL, 0);
        self.writer.attr(NFTA_SET_USERDATA, &userdata);
        self.writer.end_message(start);

        let start = self.message(NFT_MSG_NEWSETELEM, true, family, format!("adding to {what}"));
        self.writer.attr_str(NFTA_SET_ELEM_LIST_TABLE, table);
        self.writer.attr_str(NFTA_SET_ELEM_LIST_SET, ANONYMOUS_MAP);
        self.writer.attr_u32(NFTA_SET_ELEM_LIST_SET_ID, id);
        let list = self.writer.begin_nest(NFTA_SET_ELEM_LIST_ELEMENTS);
        for (i, target) in targets.iter().enumerate() {
            let nest = self.writer.begin_nest(NFTA_LIST_ELEM);
            let key = self.writer.begin_nest(NFTA_SET_ELEM_KEY);
            self.writer.attr(NFTA_DATA_VALUE, &(i as u32).to_ne_bytes());
            self.writer.end_nest(key);
            let data = self.writer.begin_nest(NFTA_SET_ELEM_DATA);
            expr::verdict_data(&mut self.writer, &Verdict::Goto(target.clone()));
            self.writer.end_nest(data);
            self.writer.end_nest(nest);
        }
        self.writer.end_nest(list);
        self.writer.end_message(start);
    }

    fn hook(&mut self, hook: &Hook) {
        self.writer.attr_str(NFTA_CHAIN_TYPE, hook.chain_type.name());
        self.writer.attr_u32(NFTA_CHAIN_POLICY, NF_ACCEPT);
        let nest = self.writer.begin_nest(NFTA_CHAIN_HOOK);
        self.writer.attr_u32(NFTA_HOOK_HOOKNUM, hook_number(hook.point));
        self.writer.attr_u32(NFTA_HOOK_PRIORITY, hook.priority as u32);
        self.writer.end_nest(nest);
    }

    fn add_set(&mut self, family: IpFamily, table: &str, set: &Set, what: String) -> Result<(), Unsupported> {
        let concat = set.key.len() > 1;
        if let [single] = set.key[..]
            && !matches!(single, DataType::Addr(_))
        {
            return Err(Unsupported::Key(single.name()));
        }
        let mut key_type = 0u32;
        let mut key_len = 0u32;
        for part in &set.key {
            key_type = (key_type << TYPE_BITS) | type_number(*part);
            let len = type_len(*part);
            key_len += if concat { len.next_multiple_of(4) } else { len };
        }
        let dynamic = self.dynamic.contains(&(family, set.name.clone()));
        let mut flags = 0;
        if set.interval {
            flags |= NFT_SET_INTERVAL;
            if concat {
                flags |= NFT_SET_CONCAT;
            }
        }
        if set.data.is_some() {
            flags |= NFT_SET_MAP;
        }
        if set.timeout.is_some() {
            flags |= NFT_SET_TIMEOUT;
        }
        if dynamic {
            flags |= NFT_SET_EVAL;
        }
        self.set_id += 1;
        let start = self.message(NFT_MSG_NEWSET, true, family, format!("adding {what}"));
        self.writer.attr_str(NFTA_SET_TABLE, table);
        self.writer.attr_str(NFTA_SET_NAME, &set.name);
        self.writer.attr_u32(NFTA_SET_FLAGS, flags);
        self.writer.attr_u32(NFTA_SET_KEY_TYPE, key_type);
        self.writer.attr_u32(NFTA_SET_KEY_LEN, key_len);
        if let Some(data) = set.data {
            let (data_type, data_len) = match data {
                DataType::Verdict => (NFT_DATA_VERDICT, 0),
                other => (type_number(other), type_len(other)),
            };
            self.writer.attr_u32(NFTA_SET_DATA_TYPE, data_type);
            self.writer.attr_u32(NFTA_SET_DATA_LEN, data_len);
        }
        self.writer.attr_u32(NFTA_SET_ID, self.set_id);
        if let Some(timeout) = set.timeout {
            self.writer.attr_u64(NFTA_SET_TIMEOUT, u64::from(timeout) * 1000);
        }
        if dynamic || (set.interval && concat) {
            // A dynamic set gets nft's default size; a concatenation of ranges the length of each
            // part, by which the kernel splits keys into fields.
            let desc = self.writer.begin_nest(NFTA_SET_DESC);
            if dynamic {
                self.writer.attr_u32(NFTA_SET_DESC_SIZE, DYNAMIC_SET_SIZE);
            }
            if set.interval && concat {
                let fields = self.writer.begin_nest(NFTA_SET_DESC_CONCAT);
                for part in &set.key {
                    let field = self.writer.begin_nest(NFTA_LIST_ELEM);
                    self.writer.attr_u32(NFTA_SET_FIELD_LEN, type_len(*part));
                    self.writer.end_nest(field);
                }
                self.writer.end_nest(fields);
            }
            self.writer.end_nest(desc);
        }
        if set.counter {
            // As nft sends a set's `counter` statement: one expression, bytes and packets from zero.
            // The kernel gives each element added without expressions of its own a copy.
            let expr = self.writer.begin_nest(NFTA_SET_EXPR);
            self.counter(0, 0);
            self.writer.end_nest(expr);
        }
        let mut userdata = Vec::new();
        let byte_order = if concat { BYTEORDER_INVALID } else { BYTEORDER_BIG_ENDIAN };
        udata_u32(&mut userdata, UDATA_SET_KEYBYTEORDER, byte_order);
        if let Some(data) = set.data {
            let order = if data == DataType::Verdict { BYTEORDER_INVALID } else { BYTEORDER_BIG_ENDIAN };
            udata_u32(&mut userdata, UDATA_SET_DATABYTEORDER, order);
        }
        if concat {
            userdata.extend_from_slice(&UDATA_SET_CONCAT);
        }
        if set.data.is_some() {
            udata_u32(&mut userdata, UDATA_SET_DATA_INTERVAL, 0);
        }
        digest_tlv(&mut userdata, crate::text::set_digest(set));
        self.writer.attr(NFTA_SET_USERDATA, &userdata);
        self.writer.end_message(start);
        if !set.elements.is_empty() {
            self.elements(family, table, &set.name, &set.elements, true, what)?;
        }
        Ok(())
    }

    fn elements(
        &mut self,
        family: IpFamily,
        table: &str,
        set: &str,
        elements: &[Element],
        add: bool,
        what: String,
    ) -> Result<(), Unsupported> {
        let pieces = if !self.is_interval(family, set) {
            if elements.iter().any(|e| e.key.iter().any(|v| matches!(v, Value::Prefix(_)))) {
                return Err(Unsupported::Interval);
            }
            elements.iter().map(|e| Piece { element: e, key: key_bytes(e, false), key_end: None, end: false }).collect()
        } else if elements.iter().any(|e| e.key.len() > 1) {
            // A concatenation of ranges: each element is its first and last key.
            elements
                .iter()
                .map(|e| Piece { element: e, key: key_bytes(e, false), key_end: Some(key_bytes(e, true)), end: false })
                .collect()
        } else {
            // Ranges of one key part: only into a set this transaction creates, all at once (below).
            match self.intervals.get_mut(&(family, set.to_owned())) {
                Some(filled) if add && !*filled => *filled = true,
                _ => return Err(Unsupported::Interval),
            }
            ranges(elements)
        };
        let (kind, action) = if add {
            (NFT_MSG_NEWSETELEM, format!("adding to {what}"))
        } else {
            (NFT_MSG_DELSETELEM, format!("deleting from {what}"))
        };
        let seeds = Seeds::new(family, set, self.carried);
        let mut rest = &pieces[..];
        while !rest.is_empty() {
            let start = self.message(kind, add, family, action.clone());
            self.writer.attr_str(NFTA_SET_ELEM_LIST_TABLE, table);
            self.writer.attr_str(NFTA_SET_ELEM_LIST_SET, set);
            let list = self.writer.begin_nest(NFTA_SET_ELEM_LIST_ELEMENTS);
            let mut written = Vec::new();
            for piece in rest {
                if self.writer.buf.len() - list > ELEMENTS_PER_MESSAGE_BYTES {
                    break;
                }
                written.push(((self.writer.buf.len() - start) as u32, piece.element.clone()));
                let counts = if add && !piece.end && !seeds.is_empty() {
                    seeds.get(&key_text(&piece.element.key))
                } else {
                    None
                };
                self.element(piece, add, counts);
            }
            self.writer.end_nest(list);
            self.writer.end_message(start);
            rest = &rest[written.len()..];
            if let Some(request) = self.requests.last_mut() {
                request.elements = written;
            }
        }
        Ok(())
    }

    /// One element; `counts` (packets, bytes) for an added element whose count is carried over: its
    /// counter starts from them, as nft's `counter packets P bytes B` makes it.
    fn element(&mut self, piece: &Piece<'_>, add: bool, counts: Option<(u64, u64)>) {
        let element = piece.element;
        let nest = self.writer.begin_nest(NFTA_LIST_ELEM);
        if piece.end {
            self.writer.attr_u32(NFTA_SET_ELEM_FLAGS, NFT_SET_ELEM_INTERVAL_END);
        }
        let key = self.writer.begin_nest(NFTA_SET_ELEM_KEY);
        self.writer.attr(NFTA_DATA_VALUE, &piece.key);
        self.writer.end_nest(key);
        if let Some(end) = &piece.key_end {
            let key = self.writer.begin_nest(NFTA_SET_ELEM_KEY_END);
            self.writer.attr(NFTA_DATA_VALUE, end);
            self.writer.end_nest(key);
        }
        if add && !piece.end {
            if let Some(data) = &element.data {
                let nest = self.writer.begin_nest(NFTA_SET_ELEM_DATA);
                match data {
                    Value::Verdict(verdict) => expr::verdict_data(&mut self.writer, verdict),
                    value => {
                        let mut bytes = Vec::with_capacity(16);
                        value_bytes(&mut bytes, value, false);
                        self.writer.attr(NFTA_DATA_VALUE, &bytes);
                    }
                }
                self.writer.end_nest(nest);
            }
            if let Some(comment) = &element.comment {
                self.writer.attr(NFTA_SET_ELEM_USERDATA, &comment_tlv(UDATA_ELEM_COMMENT, comment));
            }
            if let Some((packets, bytes)) = counts {
                // Given its own expression, the element gets no copy of the set's `counter`.
                let expr = self.writer.begin_nest(NFTA_SET_ELEM_EXPR);
                self.counter(bytes, packets);
                self.writer.end_nest(expr);
            }
        }
        self.writer.end_nest(nest);
    }
}

/// One element as sent: a key (of a plain element, or the start of a range), a concatenation's
/// range (key and key end), or the end of a range of one key part (its key is the first address
/// after the range).
struct Piece<'e> {
    /// The element it comes from, for data, comment and counts, and for naming it in errors.
    element: &'e Element,
    key: Vec<u8>,
    key_end: Option<Vec<u8>>,
    /// NFT_SET_ELEM_INTERVAL_END: the key is where a range ends.
    end: bool,
}

/// An element's key, each part padded to 4 bytes in a concatenation; with `last`, the last address
/// of every range in it instead of the first.
fn key_bytes(element: &Element, last: bool) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(40);
    let concat = element.key.len() > 1;
    for part in &element.key {
        value_bytes(&mut bytes, part, last);
        if concat {
            bytes.resize(bytes.len().next_multiple_of(4), 0);
        }
    }
    bytes
}

/// Ranges of one key part as nft 1.0.6 sends them into a new interval set: in ascending order, each
/// as its start and, unless it reaches the last address, an end element at the address after it;
/// before the first, an end element at address zero unless the first range starts there.
fn ranges(elements: &[Element]) -> Vec<Piece<'_>> {
    let mut starts: Vec<Piece<'_>> =
        elements.iter().map(|e| Piece { element: e, key: key_bytes(e, false), key_end: None, end: false }).collect();
    starts.sort_by(|a, b| a.key.cmp(&b.key));
    let mut pieces = Vec::with_capacity(starts.len() * 2 + 1);
    if let Some(first) = starts.first()
        && first.key.iter().any(|&b| b != 0)
    {
        pieces.push(Piece { element: first.element, key: vec![0; first.key.len()], key_end: None, end: true });
    }
    for start in starts {
        let element = start.element;
        let after = successor(key_bytes(element, true));
        pieces.push(start);
        if let Some(after) = after {
            pieces.push(Piece { element, key: after, key_end: None, end: true });
        }
    }
    pieces
}

/// The big-endian number after `bytes`, or `None` past the last.
fn successor(mut bytes: Vec<u8>) -> Option<Vec<u8>> {
    for byte in bytes.iter_mut().rev() {
        let (next, carry) = byte.overflowing_add(1);
        *byte = next;
        if !carry {
            return Some(bytes);
        }
    }
    None
}

/// proxier's digest of a rule or set definition ([`crate::text::rule_digest`]), appended to its
/// userdata as a TLV of a type libnftnl does not define (nft skips it when it lists).
fn digest_tlv(userdata: &mut Vec<u8>, digest: u64) {
    userdata.extend_from_slice(&[UDATA_DIGEST, 8]);
    userdata.extend_from_slice(&digest.to_be_bytes());
}

/// libnftnl's comment TLV: the text with its NUL, at most 255 bytes (the layout keeps comments to
/// 128).
fn comment_tlv(kind: u8, comment: &str) -> Vec<u8> {
    let text = &comment.as_bytes()[..comment.len().min(254)];
    let mut userdata = Vec::with_capacity(text.len() + 3);
    userdata.extend_from_slice(&[kind, (text.len() + 1) as u8]);
    userdata.extend_from_slice(text);
    userdata.push(0);
    userdata
}

impl Encoder<'_> {
    /// A `counter` expression's name and data, inside an expression nest.
    fn counter(&mut self, bytes: u64, packets: u64) {
        self.writer.attr_str(NFTA_EXPR_NAME, "counter");
        let data = self.writer.begin_nest(NFTA_EXPR_DATA);
        self.writer.attr_u64(NFTA_COUNTER_BYTES, bytes);
        self.writer.attr_u64(NFTA_COUNTER_PACKETS, packets);
        self.writer.end_nest(data);
    }
}

fn kind(set: &Set) -> &'static str {
    if set.data.is_some() { "map" } else { "set" }
}

fn udata_u32(out: &mut Vec<u8>, kind: u8, value: u32) {
    out.push(kind);
    out.push(4);
    out.extend_from_slice(&value.to_ne_bytes());
}

fn type_number(data: DataType) -> u32 {
    match data {
        DataType::Addr(IpFamily::V4) => TYPE_IPADDR,
        DataType::Addr(IpFamily::V6) => TYPE_IP6ADDR,
        DataType::Proto => TYPE_INET_PROTOCOL,
        DataType::Service => TYPE_INET_SERVICE,
        DataType::Verdict => NFT_DATA_VERDICT,
    }
}

fn type_len(data: DataType) -> u32 {
    match data {
        DataType::Addr(IpFamily::V4) => 4,
        DataType::Addr(IpFamily::V6) => 16,
        DataType::Proto => 1,
        DataType::Service => 2,
        DataType::Verdict => 0,
    }
}

/// The netfilter hook's number (`NF_INET_PRE_ROUTING` … `NF_INET_POST_ROUTING`).
pub(super) fn hook_number(point: HookPoint) -> u32 {
    match point {
        HookPoint::Prerouting => 0,
        HookPoint::Input => 1,
        HookPoint::Forward => 2,
        HookPoint::Output => 3,
        HookPoint::Postrouting => 4,
    }
}

/// A value's bytes; a prefix as its first address, or with `last` its last.
pub(super) fn value_bytes(out: &mut Vec<u8>, value: &Value, last: bool) {
    match value {
        Value::Addr(IpAddr::V4(ip)) => out.extend_from_slice(&ip.octets()),
        Value::Addr(IpAddr::V6(ip)) => out.extend_from_slice(&ip.octets()),
        Value::Prefix(net) => match (net.network(), net.broadcast(), last) {
            (IpAddr::V4(first), _, false) | (_, IpAddr::V4(first), true) => out.extend_from_slice(&first.octets()),
            (IpAddr::V6(first), _, false) | (_, IpAddr::V6(first), true) => out.extend_from_slice(&first.octets()),
        },
        Value::Proto(protocol) => out.push(match protocol {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Sctp => 132,
        }),
        Value::Port(port) => out.extend_from_slice(&port.to_be_bytes()),
        // Encoded as verdict data by the caller.
        Value::Verdict(_) => {}
    }
}

/// How an element is named in an error: as nft prints it.
pub(crate) fn describe(element: &Element) -> String {
    element_text(element)
}

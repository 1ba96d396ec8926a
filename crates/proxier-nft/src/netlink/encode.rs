//! A [`Transaction`] as one nf_tables netlink batch (begin … end), message by message as `nft` itself
//! would send it: the same attributes and the same set userdata (the byte order and type hints `nft
//! list` reads back), so that a table written here lists exactly as one written by `nft -j -f`.
//!
//! Covered: removing a table, adding chains (base chains too) and sets or maps (with timeouts, with
//! a counter on every element),
//! adding and deleting elements (keys, concatenations, data including verdicts, comments), flushing
//! and deleting chains, deleting sets. Not covered, and so left to `nft` ([`Unsupported`]): rules,
//! whole tables, and interval sets (whose elements `nft` splits into ranges).

use std::net::IpAddr;

use proxier_core::{IpFamily, Protocol};

use super::wire::{NLM_F_ACK, NLM_F_CREATE, NLM_F_REQUEST, Writer};
use crate::change::Change;
use crate::counters::Carried;
use crate::ruleset::family_name;
use crate::ruleset::{DataType, Element, Hook, HookPoint, Set, Value, Verdict};
use crate::text::{Seeds, element_text, key_text};
use crate::transaction::Transaction;

pub(crate) const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 16;
const NFNL_MSG_BATCH_END: u16 = 17;

// nf_tables message types (linux/netfilter/nf_tables.h).
pub(crate) const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_DELTABLE: u16 = 2;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_DELCHAIN: u16 = 5;
const NFT_MSG_DELRULE: u16 = 8;
pub(crate) const NFT_MSG_NEWSET: u16 = 9;
const NFT_MSG_DELSET: u16 = 11;
pub(crate) const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_DELSETELEM: u16 = 14;
pub(crate) const NFT_MSG_NEWGEN: u16 = 15;
pub(crate) const NFT_MSG_GETGEN: u16 = 16;

// Attributes: every object's first attribute names its table.
const NFTA_TABLE_NAME: u16 = 1;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_POLICY: u16 = 5;
const NFTA_CHAIN_TYPE: u16 = 7;
const NFTA_HOOK_HOOKNUM: u16 = 1;
const NFTA_HOOK_PRIORITY: u16 = 2;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
pub(crate) const NFTA_SET_TABLE: u16 = 1;
pub(crate) const NFTA_SET_NAME: u16 = 2;
pub(crate) const NFTA_SET_FLAGS: u16 = 3;
pub(crate) const NFTA_SET_KEY_TYPE: u16 = 4;
pub(crate) const NFTA_SET_KEY_LEN: u16 = 5;
const NFTA_SET_DATA_TYPE: u16 = 6;
const NFTA_SET_DATA_LEN: u16 = 7;
const NFTA_SET_ID: u16 = 10;
const NFTA_SET_TIMEOUT: u16 = 11;
const NFTA_SET_USERDATA: u16 = 13;
pub(crate) const NFTA_SET_EXPR: u16 = 17;
// An expression (linux/netfilter/nf_tables.h): the set-wide `counter` every element gets a copy of.
pub(crate) const NFTA_EXPR_NAME: u16 = 1;
pub(crate) const NFTA_EXPR_DATA: u16 = 2;
pub(crate) const NFTA_COUNTER_BYTES: u16 = 1;
pub(crate) const NFTA_COUNTER_PACKETS: u16 = 2;
pub(crate) const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
pub(crate) const NFTA_SET_ELEM_LIST_SET: u16 = 2;
pub(crate) const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
pub(crate) const NFTA_LIST_ELEM: u16 = 1;
pub(crate) const NFTA_SET_ELEM_KEY: u16 = 1;
pub(crate) const NFTA_SET_ELEM_DATA: u16 = 2;
pub(crate) const NFTA_SET_ELEM_USERDATA: u16 = 6;
pub(crate) const NFTA_SET_ELEM_EXPR: u16 = 7;
pub(crate) const NFTA_DATA_VALUE: u16 = 1;
pub(crate) const NFTA_DATA_VERDICT: u16 = 2;
pub(crate) const NFTA_VERDICT_CODE: u16 = 1;
pub(crate) const NFTA_VERDICT_CHAIN: u16 = 2;

pub(crate) const NFT_SET_MAP: u32 = 0x8;
const NFT_SET_TIMEOUT: u32 = 0x10;
const NFT_DATA_VERDICT: u32 = 0xffff_ff00;
pub(crate) const NF_DROP: u32 = 0;
pub(crate) const NFT_JUMP: i32 = -3;
pub(crate) const NFT_GOTO: i32 = -4;
pub(crate) const NFT_RETURN: i32 = -5;
pub(crate) const NF_ACCEPT: u32 = 1;

// nft's datatype numbers, and how it combines them for a concatenation (6 bits per part).
pub(crate) const TYPE_IPADDR: u32 = 7;
pub(crate) const TYPE_IP6ADDR: u32 = 8;
pub(crate) const TYPE_INET_PROTOCOL: u32 = 12;
pub(crate) const TYPE_INET_SERVICE: u32 = 13;
pub(crate) const TYPE_BITS: u32 = 6;

// Set userdata as nft 1.0.6 writes it (libnftnl's TLVs: one byte type, one byte length).
const UDATA_SET_KEYBYTEORDER: u8 = 0;
const UDATA_SET_DATABYTEORDER: u8 = 1;
const UDATA_SET_DATA_INTERVAL: u8 = 6;
const BYTEORDER_INVALID: u32 = 0;
const BYTEORDER_BIG_ENDIAN: u32 = 2;
/// What nft 1.0.6 writes for every concatenated key (type 3, with the same bytes for each).
const UDATA_SET_CONCAT: [u8; 10] = [3, 8, 0, 4, 13, 0, 0, 0, 1, 0];
pub(crate) const UDATA_ELEM_COMMENT: u8 = 0;

/// Element nests are closed well before netlink's 64 KiB attribute limit; the rest goes into another
/// message of the same batch.
const ELEMENTS_PER_MESSAGE_BYTES: usize = 48 * 1024;

/// Why a transaction is not sent over netlink (it is then applied by `nft`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unsupported {
    /// It adds rules; their expressions are encoded by `nft` only.
    #[error("it adds rules")]
    Rules,
    /// It creates a table whole (a full load).
    #[error("it creates a table")]
    CreateTable,
    /// It adds or deletes elements of an interval set, or adds one.
    #[error("it changes an interval set")]
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
        let mut encoder = Encoder { writer: Writer::default(), requests: Vec::new(), set_id: 0, carried };
        let begin = encoder.writer.begin_message(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, 0, 0, NFNL_SUBSYS_NFTABLES);
        encoder.writer.end_message(begin);
        for change in transaction.changes() {
            encoder.change(change, transaction.table_name())?;
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
}

impl Encoder<'_> {
    fn message(&mut self, kind: u16, create: bool, family: IpFamily, action: String) -> usize {
        let flags = NLM_F_REQUEST | NLM_F_ACK | if create { NLM_F_CREATE } else { 0 };
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
            Change::CreateTable(_) => return Err(Unsupported::CreateTable),
            Change::AddRules { .. } => return Err(Unsupported::Rules),
            Change::AddChain { family, name, hook } => {
                let start =
                    self.message(NFT_MSG_NEWCHAIN, true, *family, format!("adding {}", object(*family, "chain", name)));
                self.writer.attr_str(NFTA_CHAIN_TABLE, table);
                self.writer.attr_str(NFTA_CHAIN_NAME, name);
                if let Some(hook) = hook {
                    self.hook(hook);
                }
                self.writer.end_message(start);
            }
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

    fn hook(&mut self, hook: &Hook) {
        let chain_type = match hook.chain_type {
            crate::ruleset::ChainType::Nat => "nat",
            crate::ruleset::ChainType::Filter => "filter",
        };
        self.writer.attr_str(NFTA_CHAIN_TYPE, chain_type);
        self.writer.attr_u32(NFTA_CHAIN_POLICY, NF_ACCEPT);
        let nest = self.writer.begin_nest(NFTA_CHAIN_HOOK);
        let number = match hook.point {
            HookPoint::Prerouting => 0,
            HookPoint::Input => 1,
            HookPoint::Forward => 2,
            HookPoint::Output => 3,
            HookPoint::Postrouting => 4,
        };
        self.writer.attr_u32(NFTA_HOOK_HOOKNUM, number);
        self.writer.attr_u32(NFTA_HOOK_PRIORITY, hook.priority as u32);
        self.writer.end_nest(nest);
    }

    fn add_set(&mut self, family: IpFamily, table: &str, set: &Set, what: String) -> Result<(), Unsupported> {
        if set.interval {
            return Err(Unsupported::Interval);
        }
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
        let mut flags = 0;
        if set.data.is_some() {
            flags |= NFT_SET_MAP;
        }
        if set.timeout.is_some() {
            flags |= NFT_SET_TIMEOUT;
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
        if elements.iter().any(|e| e.key.iter().any(|v| matches!(v, Value::Prefix(_)))) {
            return Err(Unsupported::Interval);
        }
        let (kind, action) = if add {
            (NFT_MSG_NEWSETELEM, format!("adding to {what}"))
        } else {
            (NFT_MSG_DELSETELEM, format!("deleting from {what}"))
        };
        let seeds = Seeds::new(family, set, self.carried);
        let mut rest = elements;
        while !rest.is_empty() {
            let start = self.message(kind, add, family, action.clone());
            self.writer.attr_str(NFTA_SET_ELEM_LIST_TABLE, table);
            self.writer.attr_str(NFTA_SET_ELEM_LIST_SET, set);
            let list = self.writer.begin_nest(NFTA_SET_ELEM_LIST_ELEMENTS);
            let mut written = Vec::new();
            for element in rest {
                if self.writer.buf.len() - list > ELEMENTS_PER_MESSAGE_BYTES {
                    break;
                }
                written.push(((self.writer.buf.len() - start) as u32, element.clone()));
                let counts = if add && !seeds.is_empty() { seeds.get(&key_text(&element.key)) } else { None };
                self.element(element, add, counts);
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
    fn element(&mut self, element: &Element, add: bool, counts: Option<(u64, u64)>) {
        let nest = self.writer.begin_nest(NFTA_LIST_ELEM);
        let key = self.writer.begin_nest(NFTA_SET_ELEM_KEY);
        let mut bytes = Vec::with_capacity(40);
        let concat = element.key.len() > 1;
        for part in &element.key {
            value_bytes(&mut bytes, part);
            if concat {
                bytes.resize(bytes.len().next_multiple_of(4), 0);
            }
        }
        self.writer.attr(NFTA_DATA_VALUE, &bytes);
        self.writer.end_nest(key);
        if add {
            if let Some(data) = &element.data {
                let nest = self.writer.begin_nest(NFTA_SET_ELEM_DATA);
                match data {
                    Value::Verdict(verdict) => {
                        let inner = self.writer.begin_nest(NFTA_DATA_VERDICT);
                        let (code, chain) = match verdict {
                            Verdict::Drop => (NF_DROP, None),
                            Verdict::Return => (NFT_RETURN as u32, None),
                            Verdict::Jump(chain) => (NFT_JUMP as u32, Some(chain)),
                            Verdict::Goto(chain) => (NFT_GOTO as u32, Some(chain)),
                        };
                        self.writer.attr_u32(NFTA_VERDICT_CODE, code);
                        if let Some(chain) = chain {
                            self.writer.attr_str(NFTA_VERDICT_CHAIN, chain);
                        }
                        self.writer.end_nest(inner);
                    }
                    value => {
                        let mut bytes = Vec::with_capacity(16);
                        value_bytes(&mut bytes, value);
                        self.writer.attr(NFTA_DATA_VALUE, &bytes);
                    }
                }
                self.writer.end_nest(nest);
            }
            if let Some(comment) = &element.comment {
                // libnftnl's comment TLV: the text with its NUL, at most 255 bytes (layout keeps
                // comments to 128).
                let text = &comment.as_bytes()[..comment.len().min(254)];
                let mut userdata = vec![UDATA_ELEM_COMMENT, (text.len() + 1) as u8];
                userdata.extend_from_slice(text);
                userdata.push(0);
                self.writer.attr(NFTA_SET_ELEM_USERDATA, &userdata);
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

fn value_bytes(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Addr(IpAddr::V4(ip)) => out.extend_from_slice(&ip.octets()),
        Value::Addr(IpAddr::V6(ip)) => out.extend_from_slice(&ip.octets()),
        Value::Proto(protocol) => out.push(match protocol {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Sctp => 132,
        }),
        Value::Port(port) => out.extend_from_slice(&port.to_be_bytes()),
        // Refused before encoding (intervals) or encoded as verdict data by the caller.
        Value::Prefix(_) | Value::Verdict(_) => {}
    }
}

/// How an element is named in an error: as nft prints it.
pub(crate) fn describe(element: &Element) -> String {
    element_text(element)
}

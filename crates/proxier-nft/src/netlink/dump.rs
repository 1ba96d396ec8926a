//! Reading sets and their elements back from the kernel with netlink dumps, as `nft list` does but
//! without an `nft` process and without its cache: a table's sets ([`NftSocket::sets`]), then the
//! elements of one set ([`NftSocket::elements`]) with their keys, verdicts, comments and counters, or
//! only the elements of given keys ([`NftSocket::elements_with_keys`]).
//!
//! Why: `nft -j list set` spends seconds at 10k Services parsing and printing what the kernel hands
//! over in a fraction of that; the per-Service counters are read this way on every scrape and before
//! every full sync that carries them. A dump takes no lock a commit waits for (the kernel walks the set
//! under RCU), so reading never delays a sync.

use std::collections::BTreeSet;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};

use proxier_core::IpFamily;

use super::encode::{
    NF_ACCEPT, NF_DROP, NFNL_SUBSYS_NFTABLES, NFT_GOTO, NFT_JUMP, NFT_MSG_NEWCHAIN, NFT_MSG_NEWRULE, NFT_MSG_NEWSET,
    NFT_MSG_NEWSETELEM, NFT_RETURN, NFT_SET_MAP, NFTA_CHAIN_HOOK, NFTA_CHAIN_NAME, NFTA_CHAIN_TABLE, NFTA_CHAIN_TYPE,
    NFTA_COUNTER_BYTES, NFTA_COUNTER_PACKETS, NFTA_DATA_VALUE, NFTA_DATA_VERDICT, NFTA_EXPR_DATA, NFTA_EXPR_NAME,
    NFTA_HOOK_HOOKNUM, NFTA_HOOK_PRIORITY, NFTA_LIST_ELEM, NFTA_RULE_CHAIN, NFTA_RULE_TABLE, NFTA_RULE_USERDATA,
    NFTA_SET_ELEM_DATA, NFTA_SET_ELEM_EXPR, NFTA_SET_ELEM_KEY, NFTA_SET_ELEM_LIST_ELEMENTS, NFTA_SET_ELEM_LIST_SET,
    NFTA_SET_ELEM_LIST_TABLE, NFTA_SET_ELEM_USERDATA, NFTA_SET_EXPR, NFTA_SET_FLAGS, NFTA_SET_KEY_LEN,
    NFTA_SET_KEY_TYPE, NFTA_SET_NAME, NFTA_SET_TABLE, NFTA_SET_USERDATA, NFTA_VERDICT_CHAIN, NFTA_VERDICT_CODE,
    TYPE_BITS, TYPE_INET_PROTOCOL, TYPE_INET_SERVICE, TYPE_IP6ADDR, TYPE_IPADDR, UDATA_DIGEST, UDATA_ELEM_COMMENT,
    nfproto,
};
use super::wire::{self, NLM_F_ACK, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR, Writer};
use super::{NetlinkError, NftSocket, io_error};
use crate::ruleset::{ChainType, Hook, HookPoint, Value};
use crate::transaction::{HeldChain, HeldSet, Outline};

const NFT_MSG_GETCHAIN: u16 = 4;
const NFT_MSG_GETRULE: u16 = 7;
const NFTA_HOOK_DEV: u16 = 3;
const NFT_MSG_GETSET: u16 = 10;
const NFT_MSG_GETSETELEM: u16 = 13;
const NFTA_SET_EXPRESSIONS: u16 = 18;
const NFTA_SET_ELEM_FLAGS: u16 = 3;
const NFTA_SET_ELEM_KEY_END: u16 = 9;
const NFTA_SET_ELEM_EXPRESSIONS: u16 = 10;
const NFT_SET_ANONYMOUS: u32 = 0x1;
const NFT_SET_INTERVAL: u32 = 0x4;
const NFT_SET_ELEM_INTERVAL_END: u32 = 0x1;
const NFT_CONTINUE: i32 = -1;
const NFT_BREAK: i32 = -2;

/// A dump the kernel interrupted (the set changed while it was read) is started again this often.
const DUMP_ATTEMPTS: usize = 5;
/// How long a dump may wait for the kernel's next part before it is given up.
const DUMP_WAIT_MS: i32 = 30_000;
/// At most this many keys in one `GETSETELEM` request for given keys. The kernel answers each key
/// with a message of its own, all queued on the socket before `send` returns, and fails the rest of
/// the request (EAGAIN) once the receive buffer (about 208 KiB) is full: 64 answers of under 1 KiB
/// each (with the kernel's overhead per message) stay well inside it.
const KEYS_PER_REQUEST: usize = 64;

/// A set or map of a table, as the kernel describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetInfo {
    /// Its name.
    pub name: String,
    /// Whether it is a map (its elements have data).
    pub map: bool,
    /// Whether it holds intervals (prefixes and ranges).
    pub interval: bool,
    /// Whether it is declared with `counter`: each element counts what matches it.
    pub counter: bool,
    /// The digest of its definition, when proxier's encoder wrote it (see [`HeldSet`]).
    pub digest: Option<u64>,
    key_type: u32,
    key_len: u32,
}

/// One element of a set, as the kernel holds it and nft's text syntax writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetElement {
    /// The key: `10.96.0.10 . tcp . 53`, `10.96.0.0/12`, `fd00::1`.
    pub key: String,
    /// A map element's verdict: `drop`, `goto reject-chain`.
    pub verdict: Option<String>,
    /// Its comment.
    pub comment: Option<String>,
    /// Its counter's packets and bytes, if it has one.
    pub counter: Option<(u64, u64)>,
}

impl NftSocket {
    /// The names of what table `table` holds in each family where it exists (see [`Outline`]): its
    /// chains with their hooks and their rules' digests, its sets and maps with theirs. Three small
    /// dumps per family (chains, sets, rules); elements are not read, and the layout's chains and rules
    /// are a fixed few, so the cost hardly grows with the number of Services.
    pub fn outline(&mut self, table: &str) -> Result<Vec<Outline>, NetlinkError> {
        let mut outlines = Vec::new();
        for family in IpFamily::ALL {
            let mut chains = self.chains(family, table)?;
            let sets: Vec<HeldSet> = self
                .sets(family, table)?
                .into_iter()
                .map(|set| HeldSet { name: set.name, map: set.map, digest: set.digest })
                .collect();
            if chains.is_empty() && sets.is_empty() {
                continue;
            }
            let request = |writer: &mut Writer| writer.attr_str(NFTA_RULE_TABLE, table);
            let rules = self.dump(NFT_MSG_GETRULE, NFT_MSG_NEWRULE, family, request, held_rule)?.unwrap_or_default();
            for (chain, digest) in rules {
                if let Some(held) = chains.iter_mut().find(|held| held.name == chain) {
                    held.rules.push(digest);
                }
            }
            outlines.push(Outline { family, chains, sets });
        }
        Ok(outlines)
    }

    /// The chains of table `table` in `family`. The kernel dumps every table's chains: the others
    /// are skipped here.
    fn chains(&mut self, family: IpFamily, table: &str) -> Result<Vec<HeldChain>, NetlinkError> {
        let request = |writer: &mut Writer| writer.attr_str(NFTA_CHAIN_TABLE, table);
        let decode = |payload: &[u8], chains: &mut Vec<HeldChain>| {
            if let Some(chain) = held_chain(payload, table)? {
                chains.push(chain);
            }
            Ok(())
        };
        Ok(self.dump(NFT_MSG_GETCHAIN, NFT_MSG_NEWCHAIN, family, request, decode)?.unwrap_or_default())
    }

    /// The sets and maps of table `table` in `family`; none when there is no such table.
    pub fn sets(&mut self, family: IpFamily, table: &str) -> Result<Vec<SetInfo>, NetlinkError> {
        let request = |writer: &mut Writer| writer.attr_str(NFTA_SET_TABLE, table);
        let sets = self.dump(NFT_MSG_GETSET, NFT_MSG_NEWSET, family, request, |payload, sets: &mut Vec<SetInfo>| {
            // Anonymous sets (`__map0`, a rule's `vmap { … }`) are parts of their rules, not the table's.
            sets.extend(set_info(payload)?);
            Ok(())
        })?;
        // No such table: the kernel answers a filtered dump with nothing, or with ENOENT.
        Ok(sets.unwrap_or_default())
    }

    /// Every element of `set` (as [`NftSocket::sets`] described it) of table `table` in `family`, in the
    /// kernel's order; `None` when the set is gone. Interval sets give one element per interval,
    /// written as a prefix when it is one.
    pub fn elements(
        &mut self,
        family: IpFamily,
        table: &str,
        set: &SetInfo,
    ) -> Result<Option<Vec<SetElement>>, NetlinkError> {
        let request = |writer: &mut Writer| {
            writer.attr_str(NFTA_SET_ELEM_LIST_TABLE, table);
            writer.attr_str(NFTA_SET_ELEM_LIST_SET, &set.name);
        };
        let parts = key_parts(set.key_type, set.key_len).ok_or_else(|| unreadable(set))?;
        let bad = |reason: String| NetlinkError::Protocol(format!("an element of set {}: {reason}", set.name));
        let raw = self.dump(NFT_MSG_GETSETELEM, NFT_MSG_NEWSETELEM, family, request, push_elements)?;
        let Some(raw) = raw else { return Ok(None) };
        if !set.interval {
            return raw
                .into_iter()
                .map(|element| {
                    let key = key_text(&element.key, &parts).ok_or_else(|| bad("a key of the wrong length".into()))?;
                    Ok(element.into_element(key))
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some);
        }
        intervals(raw, &parts).map(Some).map_err(bad)
    }

    /// The elements of `set` (as [`NftSocket::sets`] described it) of table `table` in `family` whose
    /// keys are among `keys`, read with `GETSETELEM` requests for those keys only (what `nft get
    /// element` sends), so the cost follows the number of keys, not the size of the set. A key the
    /// set does not hold (or a set that is gone) is left out. An interval set is dumped whole and
    /// filtered: the kernel looks its elements up by address, not by the interval they were added as.
    pub fn elements_with_keys(
        &mut self,
        family: IpFamily,
        table: &str,
        set: &SetInfo,
        keys: &[&[Value]],
    ) -> Result<Vec<SetElement>, NetlinkError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        if set.interval {
            let wanted: BTreeSet<String> = keys.iter().map(|key| crate::text::key_text(key)).collect();
            let mut elements = self.elements(family, table, set)?.unwrap_or_default();
            elements.retain(|element| wanted.contains(&element.key));
            return Ok(elements);
        }
        let parts = key_parts(set.key_type, set.key_len).ok_or_else(|| unreadable(set))?;
        let keys: Vec<Vec<u8>> = keys
            .iter()
            .map(|key| {
                key_bytes(key).ok_or_else(|| {
                    NetlinkError::Protocol(format!(
                        "set {}: the key {} is not one a plain set holds",
                        set.name,
                        crate::text::key_text(key)
                    ))
                })
            })
            .collect::<Result<_, _>>()?;
        let mut raw = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(KEYS_PER_REQUEST) {
            let before = raw.len();
            if self.get_elements(family, table, &set.name, chunk, &mut raw)? {
                continue;
            }
            raw.truncate(before);
            // The kernel stops at the first key it does not hold (ENOENT) and answers nothing for the
            // rest: ask for each key of this request alone. Rare: the keys asked for are those of
            // elements about to be deleted, which the kernel holds unless someone else removed them.
            for key in chunk {
                self.get_elements(family, table, &set.name, std::slice::from_ref(key), &mut raw)?;
            }
        }
        raw.into_iter()
            .map(|element| {
                let key = key_text(&element.key, &parts).ok_or_else(|| {
                    NetlinkError::Protocol(format!("an element of set {}: a key of the wrong length", set.name))
                })?;
                Ok(element.into_element(key))
            })
            .collect()
    }

    /// One `GETSETELEM` request for the elements of `keys` (key bytes as the kernel holds them),
    /// their answers appended to `out`; `false` when the kernel answered ENOENT (a key or the set is
    /// missing; the answers before it are kept).
    fn get_elements(
        &mut self,
        family: IpFamily,
        table: &str,
        set: &str,
        keys: &[Vec<u8>],
        out: &mut Vec<RawElement>,
    ) -> Result<bool, NetlinkError> {
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(1);
        let mut writer = Writer::default();
        let request_type = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETSETELEM;
        let start = writer.begin_message(request_type, NLM_F_REQUEST | NLM_F_ACK, seq, nfproto(family), 0);
        writer.attr_str(NFTA_SET_ELEM_LIST_TABLE, table);
        writer.attr_str(NFTA_SET_ELEM_LIST_SET, set);
        let list = writer.begin_nest(NFTA_SET_ELEM_LIST_ELEMENTS);
        for key in keys {
            let element = writer.begin_nest(NFTA_LIST_ELEM);
            let nest = writer.begin_nest(NFTA_SET_ELEM_KEY);
            writer.attr(NFTA_DATA_VALUE, key);
            writer.end_nest(nest);
            writer.end_nest(element);
        }
        writer.end_nest(list);
        writer.end_message(start);
        // Left over from an interrupted read: never taken for this request's answers (seq differs).
        while super::receive(&self.socket, &mut self.buf).map_err(io_error("read stale replies"))? {}
        self.socket.send(&writer.buf, 0).map_err(io_error("ask for elements"))?;
        let reply_type = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWSETELEM;
        loop {
            self.wait_for_part()?;
            if !super::receive(&self.socket, &mut self.buf).map_err(io_error("read elements"))? {
                continue;
            }
            for message in wire::messages(&self.buf) {
                if message.seq != seq {
                    continue;
                }
                match message.kind {
                    // The acknowledgement ends the answer: every element came before it.
                    NLMSG_ERROR => match wire::reply(&message) {
                        Some(reply) if reply.errno == 0 => return Ok(true),
                        Some(reply) if reply.errno == libc::ENOENT => return Ok(false),
                        Some(reply) => return Err(dump_error(reply.errno)),
                        None => return Err(NetlinkError::Protocol("an unreadable answer to a request".into())),
                    },
                    kind if kind == reply_type => {
                        push_elements(message.payload.get(4..).unwrap_or_default(), out)
                            .map_err(|reason| NetlinkError::Protocol(format!("an element of set {set}: {reason}")))?;
                    }
                    _ => {}
                }
            }
        }
    }

    /// Runs one dump: sends `request_kind` with `NLM_F_DUMP`, reads every part, and hands the payload
    /// (after the nfgenmsg header) of each `reply_kind` message to `decode`. Started again when the
    /// kernel says the dump was interrupted by a change; `None` when the kernel answers ENOENT.
    fn dump<T>(
        &mut self,
        request_kind: u16,
        reply_kind: u16,
        family: IpFamily,
        request: impl Fn(&mut Writer),
        mut decode: impl FnMut(&[u8], &mut Vec<T>) -> Result<(), String>,
    ) -> Result<Option<Vec<T>>, NetlinkError> {
        let request_type = (NFNL_SUBSYS_NFTABLES << 8) | request_kind;
        let reply_type = (NFNL_SUBSYS_NFTABLES << 8) | reply_kind;
        for _ in 0..DUMP_ATTEMPTS {
            let seq = self.seq;
            self.seq = self.seq.wrapping_add(1);
            let mut writer = Writer::default();
            let start = writer.begin_message(request_type, NLM_F_REQUEST | NLM_F_DUMP, seq, nfproto(family), 0);
            request(&mut writer);
            writer.end_message(start);
            // Left over from an interrupted read: never taken for this dump's parts (seq differs).
            while super::receive(&self.socket, &mut self.buf).map_err(io_error("read stale replies"))? {}
            self.socket.send(&writer.buf, 0).map_err(io_error("ask for a dump"))?;
            let mut out = Vec::new();
            let mut interrupted = false;
            'parts: loop {
                self.wait_for_part()?;
                if !super::receive(&self.socket, &mut self.buf).map_err(io_error("read a dump"))? {
                    continue;
                }
                for message in wire::messages(&self.buf) {
                    if message.seq != seq {
                        continue;
                    }
                    interrupted |= message.flags & NLM_F_DUMP_INTR != 0;
                    match message.kind {
                        NLMSG_DONE => {
                            let error =
                                message.payload.get(..4).map_or(0, |e| i32::from_ne_bytes([e[0], e[1], e[2], e[3]]));
                            if error == -libc::ENOENT {
                                return Ok(None);
                            }
                            if error != 0 {
                                return Err(dump_error(-error));
                            }
                            break 'parts;
                        }
                        NLMSG_ERROR => match wire::reply(&message) {
                            Some(reply) if reply.errno == libc::ENOENT => return Ok(None),
                            Some(reply) if reply.errno != 0 => return Err(dump_error(reply.errno)),
                            _ => {}
                        },
                        kind if kind == reply_type => {
                            let payload = message.payload.get(4..).unwrap_or_default();
                            decode(payload, &mut out).map_err(NetlinkError::Protocol)?;
                        }
                        _ => {}
                    }
                }
            }
            if !interrupted {
                return Ok(Some(out));
            }
        }
        Err(NetlinkError::Protocol(format!(
            "the dump was interrupted by changes {DUMP_ATTEMPTS} times in a row; try again"
        )))
    }

    /// Waits until the kernel has queued the next part of a dump (it fills one when the last was read).
    fn wait_for_part(&self) -> Result<(), NetlinkError> {
        use std::os::fd::AsRawFd;
        let mut poll = libc::pollfd { fd: self.socket.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        loop {
            // SAFETY: one pollfd, a live local, for a descriptor the socket owns during the call.
            let rc = unsafe { libc::poll(&raw mut poll, 1, DUMP_WAIT_MS) };
            match rc {
                0 => return Err(NetlinkError::Protocol("the kernel stopped answering a dump".into())),
                rc if rc > 0 => return Ok(()),
                _ => {
                    let error = io::Error::last_os_error();
                    if error.kind() != io::ErrorKind::Interrupted {
                        return Err(NetlinkError::Io { action: "wait for a dump", error });
                    }
                }
            }
        }
    }
}

/// The elements of a `NEWSETELEM` message's payload (after the nfgenmsg header), appended to `out`.
fn push_elements(payload: &[u8], out: &mut Vec<RawElement>) -> Result<(), String> {
    for (kind, list) in wire::attributes(payload) {
        if kind == NFTA_SET_ELEM_LIST_ELEMENTS {
            for (kind, element) in wire::attributes(list) {
                if kind == NFTA_LIST_ELEM {
                    out.push(raw_element(element)?);
                }
            }
        }
    }
    Ok(())
}

fn unreadable(set: &SetInfo) -> NetlinkError {
    NetlinkError::Protocol(format!(
        "set {} has a key of a type proxier does not read (type {:#x}, {} bytes)",
        set.name, set.key_type, set.key_len
    ))
}

/// A plain set's key as the kernel holds it: the parts' bytes in network order, each part of a
/// concatenation padded to 4 bytes. `None` for a key no plain set holds (a prefix, a verdict).
fn key_bytes(key: &[Value]) -> Option<Vec<u8>> {
    let mut bytes = Vec::with_capacity(40);
    for part in key {
        if matches!(part, Value::Prefix(_) | Value::Verdict(_)) {
            return None;
        }
        super::encode::value_bytes(&mut bytes, part, false);
        if key.len() > 1 {
            bytes.resize(bytes.len().next_multiple_of(4), 0);
        }
    }
    Some(bytes)
}

fn dump_error(errno: i32) -> NetlinkError {
    NetlinkError::Io { action: "dump", error: io::Error::from_raw_os_error(errno) }
}

fn be32(data: &[u8]) -> Option<u32> {
    data.try_into().ok().map(u32::from_be_bytes)
}

fn be64(data: &[u8]) -> Option<u64> {
    data.try_into().ok().map(u64::from_be_bytes)
}

/// A `NEWSET` message's attributes.
/// A `NEWCHAIN` message's chain when it is one of table `table`'s.
fn held_chain(payload: &[u8], table: &str) -> Result<Option<HeldChain>, String> {
    let (mut name, mut of_table, mut hook, mut chain_type) = (None, false, None, None);
    for (kind, data) in wire::attributes(payload) {
        match kind {
            NFTA_CHAIN_TABLE => of_table = wire::attr_string(data) == table,
            NFTA_CHAIN_NAME => name = Some(wire::attr_string(data)),
            NFTA_CHAIN_TYPE => chain_type = Some(wire::attr_string(data)),
            NFTA_CHAIN_HOOK => {
                let (mut number, mut priority, mut device) = (None, None, false);
                for (kind, data) in wire::attributes(data) {
                    match kind {
                        NFTA_HOOK_HOOKNUM => number = be32(data),
                        NFTA_HOOK_PRIORITY => priority = be32(data).map(|p| p as i32),
                        NFTA_HOOK_DEV => device = true,
                        _ => {}
                    }
                }
                hook = Some((number.ok_or("a chain's hook without a number")?, priority.unwrap_or(0), device));
            }
            _ => {}
        }
    }
    if !of_table {
        return Ok(None);
    }
    let name = name.ok_or("a chain without a name")?;
    let Some((number, priority, device)) = hook else {
        return Ok(Some(HeldChain { name, base: false, hook: None, rules: Vec::new() }));
    };
    const POINTS: [HookPoint; 5] =
        [HookPoint::Prerouting, HookPoint::Input, HookPoint::Forward, HookPoint::Output, HookPoint::Postrouting];
    let point = POINTS.into_iter().find(|&point| super::encode::hook_number(point) == number);
    let chain_type = [ChainType::Nat, ChainType::Filter].into_iter().find(|t| chain_type.as_deref() == Some(t.name()));
    let hook = match (point, chain_type, device) {
        (Some(point), Some(chain_type), false) => Some(Hook { chain_type, point, priority }),
        _ => None,
    };
    Ok(Some(HeldChain { name, base: true, hook, rules: Vec::new() }))
}

/// A `NEWRULE` message's chain and digest ([`crate::text::rule_digest`], `None` when the rule has
/// none: it was not written by proxier's encoder).
fn held_rule(payload: &[u8], rules: &mut Vec<(String, Option<u64>)>) -> Result<(), String> {
    let (mut chain, mut digest) = (None, None);
    for (kind, data) in wire::attributes(payload) {
        match kind {
            NFTA_RULE_CHAIN => chain = Some(wire::attr_string(data)),
            NFTA_RULE_USERDATA => digest = userdata_digest(data),
            _ => {}
        }
    }
    rules.push((chain.ok_or("a rule without a chain")?, digest));
    Ok(())
}

/// The digest TLV of rule or set userdata, if there is one.
fn userdata_digest(mut userdata: &[u8]) -> Option<u64> {
    while let [kind, len, rest @ ..] = userdata {
        let value = rest.get(..usize::from(*len))?;
        if *kind == UDATA_DIGEST {
            return Some(u64::from_be_bytes(value.try_into().ok()?));
        }
        userdata = &rest[value.len()..];
    }
    None
}

/// A `NEWSET` message's set; `None` for an anonymous one.
fn set_info(payload: &[u8]) -> Result<Option<SetInfo>, String> {
    let (mut name, mut flags, mut key_type, mut key_len, mut counter, mut digest) = (None, 0, 0, 0, false, None);
    for (kind, data) in wire::attributes(payload) {
        match kind {
            NFTA_SET_NAME => name = Some(wire::attr_string(data)),
            NFTA_SET_FLAGS => flags = be32(data).ok_or("a set's flags of the wrong length")?,
            NFTA_SET_KEY_TYPE => key_type = be32(data).ok_or("a set's key type of the wrong length")?,
            NFTA_SET_KEY_LEN => key_len = be32(data).ok_or("a set's key length of the wrong length")?,
            NFTA_SET_USERDATA => digest = userdata_digest(data),
            NFTA_SET_EXPR => counter |= expression(data).is_some(),
            NFTA_SET_EXPRESSIONS => {
                counter |= wire::attributes(data).any(|(k, e)| k == NFTA_LIST_ELEM && expression(e).is_some())
            }
            _ => {}
        }
    }
    if flags & NFT_SET_ANONYMOUS != 0 {
        return Ok(None);
    }
    Ok(Some(SetInfo {
        name: name.ok_or("a set without a name")?,
        map: flags & NFT_SET_MAP != 0,
        interval: flags & NFT_SET_INTERVAL != 0,
        counter,
        digest,
        key_type,
        key_len,
    }))
}

/// A `counter` expression's packets and bytes; `None` for any other expression.
fn expression(data: &[u8]) -> Option<(u64, u64)> {
    let mut name = None;
    let mut values = None;
    for (kind, data) in wire::attributes(data) {
        match kind {
            NFTA_EXPR_NAME => name = Some(wire::attr_string(data)),
            NFTA_EXPR_DATA => {
                let (mut packets, mut bytes) = (0, 0);
                for (kind, data) in wire::attributes(data) {
                    match kind {
                        NFTA_COUNTER_PACKETS => packets = be64(data)?,
                        NFTA_COUNTER_BYTES => bytes = be64(data)?,
                        _ => {}
                    }
                }
                values = Some((packets, bytes));
            }
            _ => {}
        }
    }
    (name.as_deref() == Some("counter")).then(|| values.unwrap_or((0, 0)))
}

/// An element before its key is read: the key's bytes and what else it carries.
#[derive(Debug)]
struct RawElement {
    key: Vec<u8>,
    end: bool,
    verdict: Option<String>,
    comment: Option<String>,
    counter: Option<(u64, u64)>,
}

impl RawElement {
    fn into_element(self, key: String) -> SetElement {
        SetElement { key, verdict: self.verdict, comment: self.comment, counter: self.counter }
    }
}

fn raw_element(data: &[u8]) -> Result<RawElement, String> {
    let mut element = RawElement { key: Vec::new(), end: false, verdict: None, comment: None, counter: None };
    for (kind, data) in wire::attributes(data) {
        match kind {
            NFTA_SET_ELEM_KEY => {
                element.key = wire::attributes(data)
                    .find(|(k, _)| *k == NFTA_DATA_VALUE)
                    .map(|(_, value)| value.to_vec())
                    .ok_or("a key without a value")?
            }
            NFTA_SET_ELEM_KEY_END => return Err("a range of concatenations, which proxier does not read".into()),
            NFTA_SET_ELEM_FLAGS => {
                element.end = be32(data).ok_or("flags of the wrong length")? & NFT_SET_ELEM_INTERVAL_END != 0
            }
            NFTA_SET_ELEM_DATA => {
                element.verdict = wire::attributes(data)
                    .find(|(k, _)| *k == NFTA_DATA_VERDICT)
                    .map(|(_, verdict)| verdict_text(verdict))
                    .transpose()?
            }
            NFTA_SET_ELEM_USERDATA => element.comment = comment(data),
            NFTA_SET_ELEM_EXPR => element.counter = element.counter.or(expression(data)),
            NFTA_SET_ELEM_EXPRESSIONS => {
                let counter =
                    wire::attributes(data).filter(|(k, _)| *k == NFTA_LIST_ELEM).find_map(|(_, e)| expression(e));
                element.counter = element.counter.or(counter);
            }
            _ => {}
        }
    }
    Ok(element)
}

/// A verdict as nft's text syntax writes it.
fn verdict_text(data: &[u8]) -> Result<String, String> {
    let mut code = None;
    let mut chain = None;
    for (kind, data) in wire::attributes(data) {
        match kind {
            NFTA_VERDICT_CODE => code = be32(data).map(|c| c as i32),
            NFTA_VERDICT_CHAIN => chain = Some(wire::attr_string(data)),
            _ => {}
        }
    }
    let code = code.ok_or("a verdict without a code")?;
    Ok(match (code, chain) {
        (c, Some(chain)) if c == NFT_JUMP => format!("jump {chain}"),
        (c, Some(chain)) if c == NFT_GOTO => format!("goto {chain}"),
        (c, _) if c == NF_DROP as i32 => "drop".into(),
        (c, _) if c == NF_ACCEPT as i32 => "accept".into(),
        (c, _) if c == NFT_RETURN => "return".into(),
        (NFT_CONTINUE, _) => "continue".into(),
        (NFT_BREAK, _) => "break".into(),
        (c, _) => return Err(format!("an unknown verdict {c}")),
    })
}

/// The comment in an element's userdata (libnftnl's TLVs: type, length, value with its NUL).
fn comment(mut userdata: &[u8]) -> Option<String> {
    while let [kind, len, rest @ ..] = userdata {
        let len = usize::from(*len);
        let value = rest.get(..len)?;
        if *kind == UDATA_ELEM_COMMENT {
            return Some(wire::attr_string(value));
        }
        userdata = &rest[len..];
    }
    None
}

/// The datatypes of a key's parts, from the set's key type (nft packs a concatenation's types 6 bits
/// each, the first part highest) and length; `None` for a type proxier does not write.
fn key_parts(key_type: u32, key_len: u32) -> Option<Vec<u32>> {
    if known(key_type) && type_len(key_type) == Some(key_len) {
        return Some(vec![key_type]);
    }
    let mut parts = Vec::new();
    let mut rest = key_type;
    while rest != 0 {
        parts.push(rest & ((1 << TYPE_BITS) - 1));
        rest >>= TYPE_BITS;
    }
    parts.reverse();
    let padded: u32 = parts.iter().map(|&t| type_len(t).map(|len| len.next_multiple_of(4))).sum::<Option<u32>>()?;
    (parts.len() > 1 && padded == key_len).then_some(parts)
}

fn known(data_type: u32) -> bool {
    type_len(data_type).is_some()
}

fn type_len(data_type: u32) -> Option<u32> {
    match data_type {
        TYPE_IPADDR => Some(4),
        TYPE_IP6ADDR => Some(16),
        TYPE_INET_PROTOCOL => Some(1),
        TYPE_INET_SERVICE => Some(2),
        _ => None,
    }
}

/// A key's bytes as nft's text syntax writes them (parts joined by ` . `); `None` when they do not
/// fit the parts.
fn key_text(bytes: &[u8], parts: &[u32]) -> Option<String> {
    let concat = parts.len() > 1;
    let mut text = String::new();
    let mut rest = bytes;
    for (i, &part) in parts.iter().enumerate() {
        let len = type_len(part)? as usize;
        let value = rest.get(..len)?;
        if i > 0 {
            text.push_str(" . ");
        }
        match part {
            TYPE_IPADDR => text.push_str(&Ipv4Addr::from(<[u8; 4]>::try_from(value).ok()?).to_string()),
            TYPE_IP6ADDR => text.push_str(&Ipv6Addr::from(<[u8; 16]>::try_from(value).ok()?).to_string()),
            TYPE_INET_PROTOCOL => text.push_str(&protocol_text(value[0])),
            TYPE_INET_SERVICE => text.push_str(&u16::from_be_bytes([value[0], value[1]]).to_string()),
            _ => return None,
        }
        rest = rest.get(if concat { len.next_multiple_of(4) } else { len }..)?;
    }
    rest.is_empty().then_some(text)
}

fn protocol_text(number: u8) -> String {
    match number {
        6 => "tcp".into(),
        17 => "udp".into(),
        132 => "sctp".into(),
        other => other.to_string(),
    }
}

/// The intervals of an interval set: the kernel holds each as a start element (with the counter and
/// comment) and an end element one past its last address (absent when it reaches the top of the
/// address space). Written as nft writes them: `10.96.0.0/12`, a single address, or `first-last`.
fn intervals(raw: Vec<RawElement>, parts: &[u32]) -> Result<Vec<SetElement>, String> {
    let [part] = parts else { return Err("an interval set with a concatenated key".into()) };
    let bits = type_len(*part).ok_or("an interval of an unknown type")? * 8;
    let number = |bytes: &[u8]| -> Result<u128, String> {
        if bytes.len() * 8 != bits as usize {
            return Err("a key of the wrong length".into());
        }
        Ok(bytes.iter().fold(0u128, |n, &b| (n << 8) | u128::from(b)))
    };
    let mut ends = Vec::new();
    let mut starts = Vec::new();
    for element in raw {
        let at = number(&element.key)?;
        if element.end { ends.push(at) } else { starts.push((at, element)) }
    }
    ends.sort_unstable();
    starts.sort_by_key(|(at, _)| *at);
    let top = if bits == 128 { u128::MAX } else { (1u128 << bits) - 1 };
    let address = |n: u128| -> String {
        if bits == 32 { Ipv4Addr::from(n as u32).to_string() } else { Ipv6Addr::from(n).to_string() }
    };
    let mut out = Vec::with_capacity(starts.len());
    for (first, element) in starts {
        // Intervals never overlap: this one ends at the first end after its start.
        let last = match ends.get(ends.partition_point(|&end| end <= first)) {
            Some(&end) => end - 1,
            None => top,
        };
        let size = last - first; // one less than the number of addresses, so that the top fits
        let key = if size == 0 {
            address(first)
        } else if (size.wrapping_add(1).is_power_of_two() && first & size == 0) || (size == top && first == 0) {
            let len = bits - (u128::BITS - size.leading_zeros());
            format!("{}/{len}", address(first))
        } else {
            format!("{}-{}", address(first), address(last))
        };
        out.push(element.into_element(key));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_of_every_shape_proxier_lays_out() {
        let destination = key_parts((TYPE_IPADDR << 12) | (TYPE_INET_PROTOCOL << 6) | TYPE_INET_SERVICE, 12).unwrap();
        assert_eq!(key_text(&[10, 96, 0, 10, 6, 0, 0, 0, 0, 53, 0, 0], &destination).unwrap(), "10.96.0.10 . tcp . 53");
        assert_eq!(key_text(&[10, 96, 0, 10, 6, 0, 0, 0, 0, 53], &destination), None, "too short");
        let v6 = key_parts(TYPE_IP6ADDR, 16).unwrap();
        let mut bytes = [0u8; 16];
        bytes[0] = 0xfd;
        bytes[15] = 1;
        assert_eq!(key_text(&bytes, &v6).unwrap(), "fd00::1");
        assert_eq!(key_parts(TYPE_IPADDR, 16), None, "a length that does not fit the type");
        assert_eq!(key_parts(99, 4), None);
        let udp = key_parts((TYPE_IP6ADDR << 12) | (TYPE_INET_PROTOCOL << 6) | TYPE_INET_SERVICE, 24).unwrap();
        let mut bytes = vec![0u8; 24];
        bytes[15] = 1;
        bytes[16] = 17;
        bytes[20..22].copy_from_slice(&8080u16.to_be_bytes());
        assert_eq!(key_text(&bytes, &udp).unwrap(), "::1 . udp . 8080");
    }

    fn raw(key: [u8; 4], end: bool) -> RawElement {
        RawElement { key: key.to_vec(), end, verdict: None, comment: None, counter: Some((1, 2)) }
    }

    #[test]
    fn intervals_are_prefixes_addresses_or_ranges() {
        let ipv4 = [TYPE_IPADDR];
        // In the kernel's (descending) order: end elements one past the last address.
        let elements = vec![
            raw([10, 112, 0, 0], true),
            raw([10, 96, 0, 0], false),
            raw([10, 0, 0, 8], true),
            raw([10, 0, 0, 3], false),
            raw([10, 0, 0, 2], true),
            raw([10, 0, 0, 1], false),
            raw([192, 0, 0, 0], false),
        ];
        let keys: Vec<String> = intervals(elements, &ipv4).unwrap().into_iter().map(|e| e.key).collect();
        assert_eq!(keys, ["10.0.0.1", "10.0.0.3-10.0.0.7", "10.96.0.0/12", "192.0.0.0/2"]);
        let everything = intervals(vec![raw([0, 0, 0, 0], false)], &ipv4).unwrap();
        assert_eq!(everything[0].key, "0.0.0.0/0");
        assert_eq!(everything[0].counter, Some((1, 2)));
    }

    #[test]
    fn verdicts_comments_and_counters() {
        let mut writer = Writer::default();
        writer.attr_u32(NFTA_VERDICT_CODE, NFT_GOTO as u32);
        writer.attr_str(NFTA_VERDICT_CHAIN, "balance-2");
        assert_eq!(verdict_text(&writer.buf).unwrap(), "goto balance-2");
        let mut writer = Writer::default();
        writer.attr_u32(NFTA_VERDICT_CODE, NF_DROP);
        assert_eq!(verdict_text(&writer.buf).unwrap(), "drop");
        assert!(verdict_text(&[]).is_err());
        assert_eq!(comment(&[0, 4, b'a', b'/', b'b', 0]).as_deref(), Some("a/b"));
        assert_eq!(comment(&[1, 1, 7, 0, 2, b'x', 0]).as_deref(), Some("x"), "other TLVs are skipped");
        assert_eq!(comment(&[0, 9, b'a']), None, "a truncated TLV");
        let mut writer = Writer::default();
        writer.attr_str(NFTA_EXPR_NAME, "counter");
        let data = writer.begin_nest(NFTA_EXPR_DATA);
        writer.attr_u64(NFTA_COUNTER_BYTES, 180);
        writer.attr_u64(NFTA_COUNTER_PACKETS, 3);
        writer.end_nest(data);
        assert_eq!(expression(&writer.buf), Some((3, 180)));
        let mut writer = Writer::default();
        writer.attr_str(NFTA_EXPR_NAME, "limit");
        assert_eq!(expression(&writer.buf), None);
    }
}

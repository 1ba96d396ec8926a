//! A rule's statements as nf_tables expressions, exactly as nft 1.0.6 emits them for the same text
//! (`nft --debug=netlink`): the same expressions, registers, lengths and byte orders, so that a rule
//! added here lists exactly as one added by `nft -j -f`.
//!
//! Registers follow nft's allocation: a concatenation fills 32-bit registers from the start of a
//! 128-bit one, each part taking as many as its length needs; a register is named by its 128-bit
//! number when it starts one (`reg 1`, `reg 2`) and by its 32-bit number otherwise (`reg 9` is the
//! second 32-bit register).

use std::net::IpAddr;

use proxier_core::{IpFamily, Protocol};

use super::encode::{
    NF_DROP, NFT_GOTO, NFT_JUMP, NFT_RETURN, NFTA_DATA_VALUE, NFTA_DATA_VERDICT, NFTA_EXPR_DATA, NFTA_EXPR_NAME,
    NFTA_LIST_ELEM, NFTA_VERDICT_CHAIN, NFTA_VERDICT_CODE, nfproto,
};
use super::wire::Writer;
use crate::ruleset::{Statement, Verdict};

// Expression attributes (linux/netfilter/nf_tables.h).
const NFTA_PAYLOAD_DREG: u16 = 1;
const NFTA_PAYLOAD_BASE: u16 = 2;
const NFTA_PAYLOAD_OFFSET: u16 = 3;
const NFTA_PAYLOAD_LEN: u16 = 4;
const NFTA_META_DREG: u16 = 1;
const NFTA_META_KEY: u16 = 2;
const NFTA_META_SREG: u16 = 3;
const NFTA_CMP_SREG: u16 = 1;
const NFTA_CMP_OP: u16 = 2;
const NFTA_CMP_DATA: u16 = 3;
const NFTA_LOOKUP_SET: u16 = 1;
const NFTA_LOOKUP_SREG: u16 = 2;
const NFTA_LOOKUP_DREG: u16 = 3;
const NFTA_LOOKUP_SET_ID: u16 = 4;
const NFTA_LOOKUP_FLAGS: u16 = 5;
const NFTA_BITWISE_SREG: u16 = 1;
const NFTA_BITWISE_DREG: u16 = 2;
const NFTA_BITWISE_LEN: u16 = 3;
const NFTA_BITWISE_MASK: u16 = 4;
const NFTA_BITWISE_XOR: u16 = 5;
const NFTA_CT_DREG: u16 = 1;
const NFTA_CT_KEY: u16 = 2;
const NFTA_IMMEDIATE_DREG: u16 = 1;
const NFTA_IMMEDIATE_DATA: u16 = 2;
const NFTA_NG_DREG: u16 = 1;
const NFTA_NG_MODULUS: u16 = 2;
const NFTA_NG_TYPE: u16 = 3;
const NFTA_NG_OFFSET: u16 = 4;
const NFTA_DYNSET_SET_NAME: u16 = 1;
const NFTA_DYNSET_OP: u16 = 3;
const NFTA_DYNSET_SREG_KEY: u16 = 4;
const NFTA_NAT_TYPE: u16 = 1;
const NFTA_NAT_FAMILY: u16 = 2;
const NFTA_NAT_REG_ADDR_MIN: u16 = 3;
const NFTA_NAT_REG_PROTO_MIN: u16 = 5;
const NFTA_NAT_FLAGS: u16 = 7;
const NFTA_MASQ_FLAGS: u16 = 1;
const NFTA_REJECT_TYPE: u16 = 1;
const NFTA_REJECT_ICMP_CODE: u16 = 2;
const NFTA_FIB_DREG: u16 = 1;
const NFTA_FIB_RESULT: u16 = 2;
const NFTA_FIB_FLAGS: u16 = 3;
const NFTA_BYTEORDER_SREG: u16 = 1;
const NFTA_BYTEORDER_DREG: u16 = 2;
const NFTA_BYTEORDER_OP: u16 = 3;
const NFTA_BYTEORDER_LEN: u16 = 4;
const NFTA_BYTEORDER_SIZE: u16 = 5;

// Values.
const NFT_PAYLOAD_NETWORK_HEADER: u32 = 1;
const NFT_PAYLOAD_TRANSPORT_HEADER: u32 = 2;
const NFT_META_MARK: u32 = 3;
const NFT_META_IIFNAME: u32 = 6;
const NFT_META_L4PROTO: u32 = 16;
const NFT_CMP_EQ: u32 = 0;
const NFT_CMP_NEQ: u32 = 1;
const NFT_LOOKUP_F_INV: u32 = 1;
const NFT_CT_STATE: u32 = 0;
const NFT_CT_STATUS: u32 = 2;
/// `ct state new`: the conntrack state bit of IP_CT_NEW.
const CT_STATE_NEW: u32 = 1 << 3;
/// `ct status dnat`: IPS_DST_NAT.
const CT_STATUS_DNAT: u32 = 1 << 5;
const NFT_NG_RANDOM: u32 = 1;
const NFT_DYNSET_OP_UPDATE: u32 = 1;
const NFT_NAT_DNAT: u32 = 1;
const NF_NAT_RANGE_PROTO_SPECIFIED: u32 = 0x2;
const NF_NAT_RANGE_PROTO_RANDOM_FULLY: u32 = 0x10;
const NFT_REJECT_ICMP_UNREACH: u32 = 0;
const NFT_REJECT_TCP_RST: u32 = 1;
const ICMP_PORT_UNREACH: u8 = 3;
const ICMPV6_PORT_UNREACH: u8 = 4;
const NFT_FIB_RESULT_ADDRTYPE: u32 = 3;
const NFTA_FIB_F_SADDR: u32 = 1;
const RTN_LOCAL: u32 = 2;
const NFT_BYTEORDER_HTON: u32 = 1;
const NFT_REG_VERDICT: u32 = 0;
const IFNAMSIZ: usize = 16;

/// The 32-bit register units a value of `len` bytes takes.
fn units(len: u32) -> u32 {
    len.div_ceil(4)
}

/// nft's name for the register at 32-bit unit `unit` (see the module documentation).
fn reg(unit: u32) -> u32 {
    if unit.is_multiple_of(4) { 1 + unit / 4 } else { 8 + unit }
}

/// A part of a concatenated key, as loaded from the packet.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Field {
    Saddr,
    Daddr,
    L4Proto,
    Dport,
}

/// What the encoder knows beyond the rule itself.
pub(super) struct Context<'a> {
    pub(super) family: IpFamily,
    /// Whether the named set is an interval set (nft converts host-order key parts for those).
    pub(super) interval: &'a dyn Fn(&str) -> bool,
    /// `(name, id)` of the anonymous verdict maps this rule's `RandomGoto`s use, in order.
    pub(super) anonymous: &'a [(String, u32)],
}

/// Writes the expressions of one rule (the contents of NFTA_RULE_EXPRESSIONS).
pub(super) fn statements(w: &mut Writer, context: &Context<'_>, statements: &[Statement]) {
    let mut anonymous = context.anonymous.iter();
    let mut previous: Option<&Statement> = None;
    for statement in statements {
        let family = context.family;
        match statement {
            Statement::CtStateNew => ct_bit(w, NFT_CT_STATE, CT_STATE_NEW),
            Statement::CtStatusDnat => ct_bit(w, NFT_CT_STATUS, CT_STATUS_DNAT),
            Statement::DaddrIn(set) => {
                concat(w, family, &[Field::Daddr], 0, false);
                lookup(w, set, None, reg(0), None, false);
            }
            Statement::SaddrIn(set) | Statement::SaddrNotIn(set) => {
                concat(w, family, &[Field::Saddr], 0, false);
                lookup(w, set, None, reg(0), None, matches!(statement, Statement::SaddrNotIn(_)));
            }
            Statement::Iifname { name, negate } => {
                meta_load(w, NFT_META_IIFNAME, reg(0));
                // A trailing `*` matches the prefix: only its bytes are compared. A whole name is
                // compared with its NUL padding to IFNAMSIZ.
                let bytes = match name.strip_suffix('*') {
                    Some(prefix) => prefix.as_bytes().to_vec(),
                    None => {
                        let mut padded = name.as_bytes().to_vec();
                        padded.resize(IFNAMSIZ.max(padded.len() + 1), 0);
                        padded
                    }
                };
                cmp(w, if *negate { NFT_CMP_NEQ } else { NFT_CMP_EQ }, &bytes);
            }
            Statement::FibSaddrLocal => {
                expr(w, "fib", |w| {
                    w.attr_u32(NFTA_FIB_DREG, reg(0));
                    w.attr_u32(NFTA_FIB_RESULT, NFT_FIB_RESULT_ADDRTYPE);
                    w.attr_u32(NFTA_FIB_FLAGS, NFTA_FIB_F_SADDR);
                });
                cmp(w, NFT_CMP_EQ, &RTN_LOCAL.to_ne_bytes());
            }
            Statement::DestinationIn(set) => {
                concat(w, family, &DESTINATION, 0, (context.interval)(set));
                lookup(w, set, None, reg(0), None, false);
            }
            Statement::DestinationSourceNotIn(set) => {
                let fields = [Field::Daddr, Field::L4Proto, Field::Dport, Field::Saddr];
                concat(w, family, &fields, 0, (context.interval)(set));
                lookup(w, set, None, reg(0), None, true);
            }
            Statement::UpdateSaddr(set) => {
                concat(w, family, &[Field::Saddr], 0, false);
                expr(w, "dynset", |w| {
                    w.attr_u32(NFTA_DYNSET_SREG_KEY, reg(0));
                    w.attr_u32(NFTA_DYNSET_OP, NFT_DYNSET_OP_UPDATE);
                    w.attr_str(NFTA_DYNSET_SET_NAME, set);
                });
            }
            Statement::DnatTo(backend) => {
                let address = match backend.ip {
                    IpAddr::V4(ip) => ip.octets().to_vec(),
                    IpAddr::V6(ip) => ip.octets().to_vec(),
                };
                immediate_value(w, reg(0), &address);
                immediate_value(w, reg(4), &backend.port.to_be_bytes());
                dnat(w, family, reg(0), reg(4));
            }
            Statement::SaddrDaddrIn(set) => {
                concat(w, family, &[Field::Saddr, Field::Daddr], 0, (context.interval)(set));
                lookup(w, set, None, reg(0), None, false);
            }
            Statement::L4Proto(protocol) => l4proto(w, *protocol),
            Statement::MarkClear(bits) => {
                meta_load(w, NFT_META_MARK, reg(0));
                bitwise(w, *bits, 0);
                cmp(w, NFT_CMP_EQ, &0u32.to_ne_bytes());
            }
            Statement::MarkSet(bits) => {
                meta_load(w, NFT_META_MARK, reg(0));
                bitwise(w, !bits, *bits);
                meta_set(w, NFT_META_MARK, reg(0));
            }
            Statement::MarkToggle(bits) => {
                meta_load(w, NFT_META_MARK, reg(0));
                bitwise(w, !0, *bits);
                meta_set(w, NFT_META_MARK, reg(0));
            }
            Statement::DispatchVmap(map) => {
                concat(w, family, &DESTINATION, 0, (context.interval)(map));
                lookup(w, map, None, reg(0), Some(NFT_REG_VERDICT), false);
            }
            Statement::RandomGoto(targets) => {
                expr(w, "numgen", |w| {
                    w.attr_u32(NFTA_NG_DREG, reg(0));
                    w.attr_u32(NFTA_NG_MODULUS, targets.len() as u32);
                    w.attr_u32(NFTA_NG_TYPE, NFT_NG_RANDOM);
                    w.attr_u32(NFTA_NG_OFFSET, 0);
                });
                // The encoder created one anonymous map per `RandomGoto`, in order, before the rule.
                if let Some((name, id)) = anonymous.next() {
                    lookup(w, name, Some(*id), reg(0), Some(NFT_REG_VERDICT), false);
                }
            }
            Statement::DnatFromMaps { addr_map, port_map } => {
                // The address lands in the first 128-bit register, so the port's key starts in the
                // second.
                concat(w, family, &DESTINATION, 0, (context.interval)(addr_map));
                lookup(w, addr_map, None, reg(0), Some(reg(0)), false);
                concat(w, family, &DESTINATION, 4, (context.interval)(port_map));
                lookup(w, port_map, None, reg(4), Some(reg(4)), false);
                dnat(w, family, reg(0), reg(4));
            }
            Statement::Masquerade => {
                expr(w, "masq", |w| w.attr_u32(NFTA_MASQ_FLAGS, NF_NAT_RANGE_PROTO_RANDOM_FULLY));
            }
            Statement::RejectTcpReset => {
                // nft adds the `meta l4proto tcp` a TCP reset depends on unless the rule has it.
                if previous != Some(&Statement::L4Proto(Protocol::Tcp)) {
                    l4proto(w, Protocol::Tcp);
                }
                reject(w, NFT_REJECT_TCP_RST, 0);
            }
            Statement::Reject => {
                let code = match family {
                    IpFamily::V4 => ICMP_PORT_UNREACH,
                    IpFamily::V6 => ICMPV6_PORT_UNREACH,
                };
                reject(w, NFT_REJECT_ICMP_UNREACH, code);
            }
            Statement::Verdict(verdict) => {
                expr(w, "immediate", |w| {
                    w.attr_u32(NFTA_IMMEDIATE_DREG, NFT_REG_VERDICT);
                    let data = w.begin_nest(NFTA_IMMEDIATE_DATA);
                    verdict_data(w, verdict);
                    w.end_nest(data);
                });
            }
        }
        previous = Some(statement);
    }
}

/// `ip daddr . meta l4proto . th dport`.
const DESTINATION: [Field; 3] = [Field::Daddr, Field::L4Proto, Field::Dport];

/// The number of anonymous maps a rule's statements need (one per `RandomGoto`).
pub(super) fn random_targets(statements: &[Statement]) -> impl Iterator<Item = &[String]> {
    statements.iter().filter_map(|s| match s {
        Statement::RandomGoto(targets) => Some(targets.as_slice()),
        _ => None,
    })
}

/// A verdict as NFTA_DATA_VERDICT (inside a data nest), as rules and map elements carry it.
pub(super) fn verdict_data(w: &mut Writer, verdict: &Verdict) {
    let inner = w.begin_nest(NFTA_DATA_VERDICT);
    let (code, chain) = match verdict {
        Verdict::Drop => (NF_DROP, None),
        Verdict::Return => (NFT_RETURN as u32, None),
        Verdict::Jump(chain) => (NFT_JUMP as u32, Some(chain)),
        Verdict::Goto(chain) => (NFT_GOTO as u32, Some(chain)),
    };
    w.attr_u32(NFTA_VERDICT_CODE, code);
    if let Some(chain) = chain {
        w.attr_str(NFTA_VERDICT_CHAIN, chain);
    }
    w.end_nest(inner);
}

/// Loads `fields` into consecutive registers from 32-bit unit `base`. Into an interval set, nft
/// converts the host-order protocol number to network order (a no-op on its one byte, but an
/// expression of the rule).
fn concat(w: &mut Writer, family: IpFamily, fields: &[Field], base: u32, interval: bool) {
    let (addr_len, saddr, daddr) = match family {
        IpFamily::V4 => (4, 12, 16),
        IpFamily::V6 => (16, 8, 24),
    };
    let mut unit = base;
    for field in fields {
        let dreg = reg(unit);
        let len = match field {
            Field::Saddr => payload(w, NFT_PAYLOAD_NETWORK_HEADER, saddr, addr_len, dreg),
            Field::Daddr => payload(w, NFT_PAYLOAD_NETWORK_HEADER, daddr, addr_len, dreg),
            Field::Dport => payload(w, NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2, dreg),
            Field::L4Proto => {
                meta_load(w, NFT_META_L4PROTO, dreg);
                if interval && fields.len() > 1 {
                    expr(w, "byteorder", |w| {
                        w.attr_u32(NFTA_BYTEORDER_SREG, dreg);
                        w.attr_u32(NFTA_BYTEORDER_DREG, dreg);
                        w.attr_u32(NFTA_BYTEORDER_OP, NFT_BYTEORDER_HTON);
                        w.attr_u32(NFTA_BYTEORDER_LEN, 1);
                        w.attr_u32(NFTA_BYTEORDER_SIZE, 2);
                    });
                }
                1
            }
        };
        unit += units(len);
    }
}

/// One expression: its name and its data.
fn expr(w: &mut Writer, name: &str, data: impl FnOnce(&mut Writer)) {
    let element = w.begin_nest(NFTA_LIST_ELEM);
    w.attr_str(NFTA_EXPR_NAME, name);
    let nest = w.begin_nest(NFTA_EXPR_DATA);
    data(w);
    w.end_nest(nest);
    w.end_nest(element);
}

fn value(w: &mut Writer, kind: u16, bytes: &[u8]) {
    let nest = w.begin_nest(kind);
    w.attr(NFTA_DATA_VALUE, bytes);
    w.end_nest(nest);
}

fn payload(w: &mut Writer, base: u32, offset: u32, len: u32, dreg: u32) -> u32 {
    expr(w, "payload", |w| {
        w.attr_u32(NFTA_PAYLOAD_DREG, dreg);
        w.attr_u32(NFTA_PAYLOAD_BASE, base);
        w.attr_u32(NFTA_PAYLOAD_OFFSET, offset);
        w.attr_u32(NFTA_PAYLOAD_LEN, len);
    });
    len
}

fn meta_load(w: &mut Writer, key: u32, dreg: u32) {
    expr(w, "meta", |w| {
        w.attr_u32(NFTA_META_KEY, key);
        w.attr_u32(NFTA_META_DREG, dreg);
    });
}

fn meta_set(w: &mut Writer, key: u32, sreg: u32) {
    expr(w, "meta", |w| {
        w.attr_u32(NFTA_META_KEY, key);
        w.attr_u32(NFTA_META_SREG, sreg);
    });
}

fn cmp(w: &mut Writer, op: u32, bytes: &[u8]) {
    expr(w, "cmp", |w| {
        w.attr_u32(NFTA_CMP_SREG, reg(0));
        w.attr_u32(NFTA_CMP_OP, op);
        value(w, NFTA_CMP_DATA, bytes);
    });
}

/// `reg 1 = (reg 1 & mask) ^ xor` on a 32-bit host-order value.
fn bitwise(w: &mut Writer, mask: u32, xor: u32) {
    expr(w, "bitwise", |w| {
        w.attr_u32(NFTA_BITWISE_SREG, reg(0));
        w.attr_u32(NFTA_BITWISE_DREG, reg(0));
        w.attr_u32(NFTA_BITWISE_LEN, 4);
        value(w, NFTA_BITWISE_MASK, &mask.to_ne_bytes());
        value(w, NFTA_BITWISE_XOR, &xor.to_ne_bytes());
    });
}

/// `ct KEY BIT`: the bit set in a conntrack bitmask.
fn ct_bit(w: &mut Writer, key: u32, bit: u32) {
    expr(w, "ct", |w| {
        w.attr_u32(NFTA_CT_DREG, reg(0));
        w.attr_u32(NFTA_CT_KEY, key);
    });
    bitwise(w, bit, 0);
    cmp(w, NFT_CMP_NEQ, &0u32.to_ne_bytes());
}

fn l4proto(w: &mut Writer, protocol: Protocol) {
    meta_load(w, NFT_META_L4PROTO, reg(0));
    let number: u8 = match protocol {
        Protocol::Tcp => 6,
        Protocol::Udp => 17,
        Protocol::Sctp => 132,
    };
    cmp(w, NFT_CMP_EQ, &[number]);
}

fn lookup(w: &mut Writer, set: &str, id: Option<u32>, sreg: u32, dreg: Option<u32>, invert: bool) {
    expr(w, "lookup", |w| {
        w.attr_u32(NFTA_LOOKUP_SREG, sreg);
        if let Some(dreg) = dreg {
            w.attr_u32(NFTA_LOOKUP_DREG, dreg);
        }
        w.attr_str(NFTA_LOOKUP_SET, set);
        if let Some(id) = id {
            w.attr_u32(NFTA_LOOKUP_SET_ID, id);
        }
        if invert {
            w.attr_u32(NFTA_LOOKUP_FLAGS, NFT_LOOKUP_F_INV);
        }
    });
}

fn immediate_value(w: &mut Writer, dreg: u32, bytes: &[u8]) {
    expr(w, "immediate", |w| {
        w.attr_u32(NFTA_IMMEDIATE_DREG, dreg);
        value(w, NFTA_IMMEDIATE_DATA, bytes);
    });
}

fn dnat(w: &mut Writer, family: IpFamily, addr: u32, proto: u32) {
    expr(w, "nat", |w| {
        w.attr_u32(NFTA_NAT_TYPE, NFT_NAT_DNAT);
        w.attr_u32(NFTA_NAT_FAMILY, u32::from(nfproto(family)));
        w.attr_u32(NFTA_NAT_REG_ADDR_MIN, addr);
        w.attr_u32(NFTA_NAT_REG_PROTO_MIN, proto);
        w.attr_u32(NFTA_NAT_FLAGS, NF_NAT_RANGE_PROTO_SPECIFIED);
    });
}

fn reject(w: &mut Writer, kind: u32, code: u8) {
    expr(w, "reject", |w| {
        w.attr_u32(NFTA_REJECT_TYPE, kind);
        w.attr(NFTA_REJECT_ICMP_CODE, &[code]);
    });
}

#[cfg(test)]
mod tests {
    use super::reg;

    #[test]
    fn registers_are_named_as_nft_names_them() {
        // ip daddr . meta l4proto . th dport: reg 1, 9, 10; ip6: reg 1, 2, 13; a second key at unit 4.
        assert_eq!([reg(0), reg(1), reg(2), reg(3)], [1, 9, 10, 11]);
        assert_eq!([reg(4), reg(5), reg(8), reg(9)], [2, 13, 3, 17]);
    }
}

//! Ruleset → nft JSON, through the `nftables` crate's types. Its gaps are mended in [`crate::compat`].

use std::borrow::Cow;
use std::collections::HashSet;

use nftables::expr::{self, Expression, Meta, MetaKey, NamedExpression, Payload, PayloadField, SetItem};
use nftables::schema::{self, NfCmd, NfListObject, NfObject, SetType, SetTypeValue};
use nftables::stmt::{self, JumpTarget, Match, Operator, Statement as NfStatement};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};
use proxier_core::IpFamily;

use crate::ruleset::{ChainType, DataType, Element, HookPoint, Set, Statement, Table, Value, Verdict};

pub(crate) fn nf_family(family: IpFamily) -> NfFamily {
    match family {
        IpFamily::V4 => NfFamily::IP,
        IpFamily::V6 => NfFamily::IP6,
    }
}

/// `add table` then `delete table`: removes the table whether or not it exists, inside a transaction.
pub(crate) fn remove_table_commands(family: IpFamily, name: &str) -> [NfObject<'static>; 2] {
    let table =
        || NfListObject::Table(schema::Table { family: nf_family(family), name: name.to_owned().into(), handle: None });
    [NfObject::CmdObject(NfCmd::Add(table())), NfObject::CmdObject(NfCmd::Delete(table()))]
}

/// The commands that create `table` with all its contents: table, then empty chains, then sets and
/// maps with their elements (which may name chains), then rules (which may name chains and sets).
/// nft's JSON parser, unlike its text one, resolves references in command order.
pub(crate) fn create_table_commands(table: &Table) -> Vec<NfObject<'static>> {
    let family = nf_family(table.family);
    let name: Cow<'static, str> = table.name.clone().into();
    let mut commands = vec![NfListObject::Table(schema::Table { family, name: name.clone(), handle: None })];
    for chain in &table.chains {
        let hook = chain.hook;
        commands.push(NfListObject::Chain(schema::Chain {
            family,
            table: name.clone(),
            name: chain.name.clone().into(),
            _type: hook.map(|h| match h.chain_type {
                ChainType::Nat => NfChainType::NAT,
                ChainType::Filter => NfChainType::Filter,
            }),
            hook: hook.map(|h| match h.point {
                HookPoint::Prerouting => NfHook::Prerouting,
                HookPoint::Input => NfHook::Input,
                HookPoint::Forward => NfHook::Forward,
                HookPoint::Output => NfHook::Output,
                HookPoint::Postrouting => NfHook::Postrouting,
            }),
            prio: hook.map(|h| h.priority),
            policy: hook.map(|_| NfChainPolicy::Accept),
            ..Default::default()
        }));
    }
    for set in &table.sets {
        commands.push(set_object(table, set));
    }
    for chain in &table.chains {
        for rule in &chain.rules {
            commands.push(NfListObject::Rule(schema::Rule {
                family,
                table: name.clone(),
                chain: chain.name.clone().into(),
                expr: rule.statements.iter().map(|s| statement(s, table.family)).collect::<Vec<_>>().into(),
                comment: rule.comment.clone().map(Into::into),
                ..Default::default()
            }));
        }
    }
    commands.into_iter().map(|object| NfObject::CmdObject(NfCmd::Add(object))).collect()
}

fn set_object(table: &Table, set: &Set) -> NfListObject<'static> {
    let family = nf_family(table.family);
    let key = set_type(&set.key);
    let flags = set.interval.then(|| HashSet::from([schema::SetFlag::Interval]));
    let elem =
        (!set.elements.is_empty()).then(|| set.elements.iter().map(element_expression).collect::<Vec<_>>().into());
    match set.data {
        None => NfListObject::Set(Box::new(schema::Set {
            family,
            table: table.name.clone().into(),
            name: set.name.clone().into(),
            set_type: key,
            flags,
            elem,
            ..Default::default()
        })),
        Some(data) => NfListObject::Map(Box::new(schema::Map {
            family,
            table: table.name.clone().into(),
            name: set.name.clone().into(),
            set_type: key,
            map: SetTypeValue::Single(data_type(data)),
            flags,
            elem,
            ..Default::default()
        })),
    }
}

fn set_type(parts: &[DataType]) -> SetTypeValue<'static> {
    match parts {
        [single] => SetTypeValue::Single(data_type(*single)),
        parts => SetTypeValue::Concatenated(parts.iter().map(|&p| data_type(p)).collect::<Vec<_>>().into()),
    }
}

fn data_type(data: DataType) -> SetType {
    match data {
        DataType::Addr(IpFamily::V4) => SetType::Ipv4Addr,
        DataType::Addr(IpFamily::V6) => SetType::Ipv6Addr,
        DataType::Proto => SetType::InetProto,
        DataType::Service => SetType::InetService,
        // The crate has no `verdict` type; compat::mend rewrites this placeholder.
        DataType::Verdict => SetType::Mark,
    }
}

fn element_expression(element: &Element) -> Expression<'static> {
    let mut key = match element.key.as_slice() {
        [single] => value(single),
        parts => Expression::Named(NamedExpression::Concat(parts.iter().map(value).collect())),
    };
    if let Some(comment) = &element.comment {
        key = Expression::Named(NamedExpression::Elem(expr::Elem {
            val: Box::new(key),
            timeout: None,
            expires: None,
            comment: Some(comment.clone().into()),
            counter: None,
        }));
    }
    match &element.data {
        None => key,
        Some(data) => Expression::List(vec![key, value(data)]),
    }
}

fn value(value: &Value) -> Expression<'static> {
    match value {
        Value::Addr(ip) => Expression::String(ip.to_string().into()),
        Value::Prefix(net) => Expression::Named(NamedExpression::Prefix(expr::Prefix {
            addr: Box::new(Expression::String(net.network().to_string().into())),
            len: u32::from(net.prefix_len()),
        })),
        Value::Proto(protocol) => Expression::String(protocol.name().into()),
        Value::Port(port) => Expression::Number(u32::from(*port)),
        Value::Verdict(verdict) => Expression::Verdict(verdict_expression(verdict)),
    }
}

fn verdict_expression(verdict: &Verdict) -> expr::Verdict<'static> {
    match verdict {
        // Serialised as a bare string, which nft 1.0.6 rejects; compat::mend fixes it.
        Verdict::Drop => expr::Verdict::Drop,
        Verdict::Return => expr::Verdict::Return,
        Verdict::Jump(target) => expr::Verdict::Jump(JumpTarget { target: target.clone().into() }),
        Verdict::Goto(target) => expr::Verdict::Goto(JumpTarget { target: target.clone().into() }),
    }
}

fn payload(protocol: &'static str, field: &'static str) -> Expression<'static> {
    Expression::Named(NamedExpression::Payload(Payload::PayloadField(PayloadField {
        protocol: protocol.into(),
        field: field.into(),
    })))
}

fn meta(key: MetaKey) -> Expression<'static> {
    Expression::Named(NamedExpression::Meta(Meta { key }))
}

fn matches(left: Expression<'static>, op: Operator, right: Expression<'static>) -> NfStatement<'static> {
    NfStatement::Match(Match { left, right, op })
}

fn ct(key: &'static str) -> Expression<'static> {
    Expression::Named(NamedExpression::CT(expr::CT { key: key.into(), family: None, dir: None }))
}

fn set_ref(name: &str) -> Expression<'static> {
    Expression::String(format!("@{name}").into())
}

fn destination_tuple(ip: &'static str) -> Expression<'static> {
    Expression::Named(NamedExpression::Concat(vec![
        payload(ip, "daddr"),
        meta(MetaKey::L4proto),
        payload("th", "dport"),
    ]))
}

fn statement(statement: &Statement, family: IpFamily) -> NfStatement<'static> {
    let ip = crate::layout::family_name(family);
    let mark = || meta(MetaKey::Mark);
    match statement {
        Statement::CtStateNew => matches(ct("state"), Operator::IN, Expression::String("new".into())),
        Statement::CtStatusDnat => matches(ct("status"), Operator::IN, Expression::String("dnat".into())),
        Statement::DaddrIn(set) => matches(payload(ip, "daddr"), Operator::EQ, set_ref(set)),
        Statement::SaddrNotIn(set) => matches(payload(ip, "saddr"), Operator::NEQ, set_ref(set)),
        Statement::SaddrDaddrIn(set) => matches(
            Expression::Named(NamedExpression::Concat(vec![payload(ip, "saddr"), payload(ip, "daddr")])),
            Operator::EQ,
            set_ref(set),
        ),
        Statement::L4Proto(protocol) => {
            matches(meta(MetaKey::L4proto), Operator::EQ, Expression::String(protocol.name().into()))
        }
        Statement::MarkClear(bits) => matches(
            Expression::BinaryOperation(Box::new(expr::BinaryOperation::AND(mark(), Expression::Number(*bits)))),
            Operator::EQ,
            Expression::Number(0),
        ),
        Statement::MarkSet(bits) => NfStatement::Mangle(stmt::Mangle {
            key: mark(),
            value: Expression::BinaryOperation(Box::new(expr::BinaryOperation::OR(vec![
                mark(),
                Expression::Number(*bits),
            ]))),
        }),
        Statement::MarkToggle(bits) => NfStatement::Mangle(stmt::Mangle {
            key: mark(),
            value: Expression::BinaryOperation(Box::new(expr::BinaryOperation::XOR(mark(), Expression::Number(*bits)))),
        }),
        Statement::DispatchVmap(map) => {
            NfStatement::VerdictMap(stmt::VerdictMap { key: destination_tuple(ip), data: set_ref(map) })
        }
        Statement::RandomGoto(targets) => NfStatement::VerdictMap(stmt::VerdictMap {
            key: Expression::Named(NamedExpression::Numgen(expr::Numgen {
                mode: expr::NgMode::Random,
                ng_mod: u32::try_from(targets.len()).unwrap_or(u32::MAX),
                offset: None,
            })),
            data: Expression::Named(NamedExpression::Set(
                targets
                    .iter()
                    .enumerate()
                    .map(|(i, target)| {
                        SetItem::Mapping(
                            Expression::Number(u32::try_from(i).unwrap_or(u32::MAX)),
                            Expression::Verdict(expr::Verdict::Goto(JumpTarget { target: target.clone().into() })),
                        )
                    })
                    .collect(),
            )),
        }),
        Statement::DnatFromMaps { addr_map, port_map } => {
            let lookup = |map: &str| {
                Expression::Named(NamedExpression::Map(Box::new(expr::Map {
                    key: destination_tuple(ip),
                    data: set_ref(map),
                })))
            };
            NfStatement::DNAT(Some(stmt::NAT {
                addr: Some(lookup(addr_map)),
                family: None,
                port: Some(lookup(port_map)),
                flags: None,
            }))
        }
        Statement::Masquerade => NfStatement::Masquerade(Some(stmt::NAT {
            addr: None,
            family: None,
            port: None,
            flags: Some(HashSet::from([stmt::NATFlag::FullyRandom])),
        })),
        Statement::RejectTcpReset => {
            NfStatement::Reject(Some(stmt::Reject { _type: Some(stmt::RejectType::TCPReset), expr: None }))
        }
        Statement::Reject => NfStatement::Reject(None),
        Statement::Verdict(verdict) => match verdict {
            Verdict::Drop => NfStatement::Drop(None),
            Verdict::Return => NfStatement::Return(None),
            Verdict::Jump(target) => NfStatement::Jump(JumpTarget { target: target.clone().into() }),
            Verdict::Goto(target) => NfStatement::Goto(JumpTarget { target: target.clone().into() }),
        },
    }
}

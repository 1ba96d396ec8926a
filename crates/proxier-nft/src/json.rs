//! Ruleset → nft JSON, through the `nftables` crate's types. Its gaps are mended in [`crate::compat`].

use std::collections::HashSet;

use nftables::expr::{self, Expression, Meta, MetaKey, NamedExpression, Payload, PayloadField, SetItem};
use nftables::schema::{self, NfCmd, NfListObject, NfObject, SetType, SetTypeValue};
use nftables::stmt::{self, JumpTarget, Match, Operator, Statement as NfStatement};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};
use proxier_core::IpFamily;

use crate::change::Change;
use crate::ruleset::{ChainType, DataType, Element, Hook, HookPoint, Rule, Set, Statement, Value, Verdict};

pub(crate) fn nf_family(family: IpFamily) -> NfFamily {
    match family {
        IpFamily::V4 => NfFamily::IP,
        IpFamily::V6 => NfFamily::IP6,
    }
}

fn cmd(command: fn(NfListObject<'static>) -> NfCmd<'static>, object: NfListObject<'static>) -> NfObject<'static> {
    NfObject::CmdObject(command(object))
}

/// A set or map to name in a `delete` command: nft wants a type there, and any will do.
pub(crate) fn deletion_placeholder(name: &str, map: bool) -> Set {
    Set {
        name: name.to_owned(),
        key: vec![DataType::Proto],
        data: map.then_some(DataType::Verdict),
        interval: false,
        timeout: None,
        counter: false,
        elements: Vec::new(),
    }
}

/// The nft JSON commands for one change to table `table`.
pub(crate) fn change_commands(change: &Change, table: &str) -> Vec<NfObject<'static>> {
    let table_object = |family| {
        NfListObject::Table(schema::Table { family: nf_family(family), name: table.to_owned().into(), handle: None })
    };
    match change {
        // `add` then `delete`: removes the table whether or not it exists.
        Change::RemoveTable(family) => {
            vec![cmd(NfCmd::Add, table_object(*family)), cmd(NfCmd::Delete, table_object(*family))]
        }
        Change::CreateTable(created) => {
            // Chains first, then sets and maps with their elements (which may name chains), then rules
            // (which may name chains and sets): nft's JSON parser, unlike its text one, resolves
            // references in command order.
            let mut objects = vec![table_object(created.family)];
            objects.extend(created.chains.iter().map(|c| chain_object(created.family, table, &c.name, c.hook)));
            objects.extend(created.sets.iter().map(|s| set_object(created.family, table, s)));
            for chain in &created.chains {
                objects.extend(chain.rules.iter().map(|r| rule_object(created.family, table, &chain.name, r)));
            }
            objects.into_iter().map(|o| cmd(NfCmd::Add, o)).collect()
        }
        Change::AddChain { family, name, hook } => vec![cmd(NfCmd::Add, chain_object(*family, table, name, *hook))],
        Change::AddSet { family, set } => vec![cmd(NfCmd::Add, set_object(*family, table, set))],
        Change::AddElements { family, set, elements } => {
            vec![cmd(NfCmd::Add, element_object(*family, table, set, elements.iter().map(element_expression)))]
        }
        Change::DeleteElements { family, set, elements } => {
            vec![cmd(
                NfCmd::Delete,
                element_object(*family, table, set, elements.iter().map(|e| key_expression(&e.key))),
            )]
        }
        Change::FlushSet { family, set, map } => {
            let (family, table, name) = (nf_family(*family), table.to_owned().into(), set.clone().into());
            let flushed = if *map {
                schema::FlushObject::Map(Box::new(schema::Map { family, table, name, ..Default::default() }))
            } else {
                schema::FlushObject::Set(Box::new(schema::Set { family, table, name, ..Default::default() }))
            };
            vec![NfObject::CmdObject(NfCmd::Flush(flushed))]
        }
        Change::FlushChain { family, chain } => vec![NfObject::CmdObject(NfCmd::Flush(schema::FlushObject::Chain(
            chain_object_plain(*family, table, chain),
        )))],
        Change::AddRules { family, chain, rules } => {
            rules.iter().map(|r| cmd(NfCmd::Add, rule_object(*family, table, chain, r))).collect()
        }
        Change::DeleteChain { family, chain } => {
            vec![cmd(NfCmd::Delete, NfListObject::Chain(chain_object_plain(*family, table, chain)))]
        }
        Change::DeleteSet { family, set, map } => {
            vec![cmd(NfCmd::Delete, set_object(*family, table, &deletion_placeholder(set, *map)))]
        }
    }
}

fn chain_object_plain(family: IpFamily, table: &str, name: &str) -> schema::Chain<'static> {
    schema::Chain {
        family: nf_family(family),
        table: table.to_owned().into(),
        name: name.to_owned().into(),
        ..Default::default()
    }
}

fn chain_object(family: IpFamily, table: &str, name: &str, hook: Option<Hook>) -> NfListObject<'static> {
    NfListObject::Chain(schema::Chain {
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
        ..chain_object_plain(family, table, name)
    })
}

fn rule_object(family: IpFamily, table: &str, chain: &str, rule: &Rule) -> NfListObject<'static> {
    NfListObject::Rule(schema::Rule {
        family: nf_family(family),
        table: table.to_owned().into(),
        chain: chain.to_owned().into(),
        expr: rule.statements.iter().map(|s| statement(s, family)).collect::<Vec<_>>().into(),
        comment: rule.comment.clone().map(Into::into),
        ..Default::default()
    })
}

fn element_object(
    family: IpFamily,
    table: &str,
    set: &str,
    elements: impl Iterator<Item = Expression<'static>>,
) -> NfListObject<'static> {
    NfListObject::Element(schema::Element {
        family: nf_family(family),
        table: table.to_owned().into(),
        name: set.to_owned().into(),
        elem: elements.collect::<Vec<_>>().into(),
    })
}

fn set_object(family: IpFamily, table: &str, set: &Set) -> NfListObject<'static> {
    let family = nf_family(family);
    let key = set_type(&set.key);
    let mut flags = HashSet::new();
    if set.interval {
        flags.insert(schema::SetFlag::Interval);
    }
    if set.timeout.is_some() {
        flags.insert(schema::SetFlag::Timeout);
    }
    let flags = (!flags.is_empty()).then_some(flags);
    let elem =
        (!set.elements.is_empty()).then(|| set.elements.iter().map(element_expression).collect::<Vec<_>>().into());
    match set.data {
        None => NfListObject::Set(Box::new(schema::Set {
            family,
            table: table.to_owned().into(),
            name: set.name.clone().into(),
            set_type: key,
            flags,
            elem,
            timeout: set.timeout,
            ..Default::default()
        })),
        Some(data) => NfListObject::Map(Box::new(schema::Map {
            family,
            table: table.to_owned().into(),
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

fn key_expression(key: &[Value]) -> Expression<'static> {
    match key {
        [single] => value(single),
        parts => Expression::Named(NamedExpression::Concat(parts.iter().map(value).collect())),
    }
}

fn element_expression(element: &Element) -> Expression<'static> {
    let mut key = key_expression(&element.key);
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
    let ip = crate::ruleset::family_name(family);
    let mark = || meta(MetaKey::Mark);
    match statement {
        Statement::CtStateNew => matches(ct("state"), Operator::IN, Expression::String("new".into())),
        Statement::CtStatusDnat => matches(ct("status"), Operator::IN, Expression::String("dnat".into())),
        Statement::DaddrIn(set) => matches(payload(ip, "daddr"), Operator::EQ, set_ref(set)),
        Statement::SaddrIn(set) => matches(payload(ip, "saddr"), Operator::EQ, set_ref(set)),
        Statement::SaddrNotIn(set) => matches(payload(ip, "saddr"), Operator::NEQ, set_ref(set)),
        Statement::Iifname { name, negate } => matches(
            meta(MetaKey::Iifname),
            if *negate { Operator::NEQ } else { Operator::EQ },
            Expression::String(name.clone().into()),
        ),
        Statement::FibSaddrLocal => matches(
            Expression::Named(NamedExpression::Fib(expr::Fib {
                result: expr::FibResult::Type,
                flags: HashSet::from([expr::FibFlag::Saddr]),
            })),
            Operator::EQ,
            Expression::String("local".into()),
        ),
        Statement::DestinationIn(set) => matches(destination_tuple(ip), Operator::EQ, set_ref(set)),
        Statement::DestinationSourceNotIn(set) => matches(
            Expression::Named(NamedExpression::Concat(vec![
                payload(ip, "daddr"),
                meta(MetaKey::L4proto),
                payload("th", "dport"),
                payload(ip, "saddr"),
            ])),
            Operator::NEQ,
            set_ref(set),
        ),
        Statement::UpdateSaddr(set) => NfStatement::Set(stmt::Set {
            op: stmt::SetOp::Update,
            elem: payload(ip, "saddr"),
            set: format!("@{set}").into(),
        }),
        Statement::DnatTo(backend) => NfStatement::DNAT(Some(stmt::NAT {
            addr: Some(Expression::String(backend.ip.to_string().into())),
            family: None,
            port: Some(Expression::Number(u32::from(backend.port))),
            flags: None,
        })),
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

//! `proxier stats`: the kernel's per-Service counters of the live tables in this network namespace,
//! as a table (busiest first) or as JSON. Needs no API server and no snapshot: what a destination is
//! comes from the element comments proxier writes. Read over netlink, without `nft`.

use std::fmt::Write;

use clap::Args;
use proxier_nft::counters::{self, ServiceCounts, ServiceDestination, Stats};
use serde_json::{Value, json};

use crate::exit::{Exit, Failure};
use crate::flags::{Output, document, output_parser, table_name};

/// `proxier stats`.
#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Name of proxier's table in the ip and ip6 families.
    #[arg(long, default_value = "proxier", value_name = "NAME", value_parser = table_name)]
    pub table: String,
    /// `text`: a table, busiest Service first; `json`: the machine-readable form (with `apiVersion`
    /// and `kind: Stats`).
    #[arg(short = 'o', long = "output", value_name = "FORMAT", default_value = "text",
          value_parser = output_parser(&[Output::Text, Output::Json]))]
    pub output: Output,
}

/// Reads the counters and prints them.
pub fn run(args: &StatsArgs) -> Result<Exit, Failure> {
    let elements = counters::read(&args.table)
        .map_err(|e| Failure::Nft(anyhow::Error::new(e).context("cannot read the counters")))?;
    if elements.is_empty() {
        eprintln!("proxier: no counters in table {} here (no such table, or laid out with --no-counters)", args.table);
    }
    let stats = Stats::from_elements(&elements);
    let printed = match document(args.output, "Stats", &to_value(&stats)) {
        Some(document) => document.map_err(|e| Failure::Input(anyhow::anyhow!(e)))?,
        None => to_text(&stats),
    };
    crate::emit(&printed)?;
    Ok(Exit::Success)
}

/// The JSON document's own fields (`apiVersion` and `kind` are added when printed): Services in
/// (namespace, name, port, protocol, via) order.
pub fn to_value(stats: &Stats) -> Value {
    let services: Vec<_> = stats
        .services
        .iter()
        .map(|(d, c)| {
            json!({
                "namespace": d.namespace, "name": d.name, "port": d.port, "protocol": d.protocol,
                "via": d.via.name(), "connections": c.connections, "rejected": c.rejected, "dropped": c.dropped,
            })
        })
        .collect();
    let unknown: Vec<_> =
        stats.unknown_ports.iter().map(|(address, n)| json!({"address": address, "rejected": n})).collect();
    let unallocated: Vec<_> = stats.unallocated.iter().map(|(cidr, n)| json!({"cidr": cidr, "dropped": n})).collect();
    json!({
        "services": services,
        "unknown_ports": unknown,
        "unallocated": unallocated,
        "unattributed": stats.unattributed,
    })
}

/// The table form: busiest first (connections, rejects and drops together), then by name.
pub fn to_text(stats: &Stats) -> String {
    let mut rows: Vec<(&ServiceDestination, &ServiceCounts)> = stats.services.iter().collect();
    rows.sort_by_key(|(d, c)| (std::cmp::Reverse(c.connections + c.rejected + c.dropped), *d));
    let mut table = vec![
        ["NAMESPACE", "SERVICE", "PORT", "PROTOCOL", "VIA", "CONNECTIONS", "REJECTED", "DROPPED"].map(str::to_owned),
    ];
    for (d, c) in rows {
        table.push([
            d.namespace.clone(),
            d.name.clone(),
            if d.port.is_empty() { "-".into() } else { d.port.clone() },
            d.protocol.clone(),
            d.via.name().into(),
            c.connections.to_string(),
            c.rejected.to_string(),
            c.dropped.to_string(),
        ]);
    }
    let mut out = aligned(&table);
    let nonzero = |map: &std::collections::BTreeMap<String, u64>| map.values().any(|&n| n > 0);
    if nonzero(&stats.unknown_ports) {
        out.push_str("\nRejected at a ClusterIP, on a port no Service defines:\n");
        for (address, n) in stats.unknown_ports.iter().filter(|(_, n)| **n > 0) {
            let _ = writeln!(out, "  {address}  {n}");
        }
    }
    if nonzero(&stats.unallocated) {
        out.push_str("\nDropped at a service-CIDR address no Service holds:\n");
        for (cidr, n) in stats.unallocated.iter().filter(|(_, n)| **n > 0) {
            let _ = writeln!(out, "  {cidr}  {n}");
        }
    }
    if stats.unattributed > 0 {
        let _ = writeln!(out, "\nCounted at destinations whose comment names no Service port: {}", stats.unattributed);
    }
    out
}

/// Columns padded to their widest cell; numbers right-aligned.
fn aligned(rows: &[[String; 8]]) -> String {
    let widths: Vec<usize> = (0..8).map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(
                |(i, cell)| {
                    if i >= 5 { format!("{cell:>w$}", w = widths[i]) } else { format!("{cell:<w$}", w = widths[i]) }
                },
            )
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proxier_nft::counters::Via;

    fn destination(name: &str, via: Via) -> ServiceDestination {
        ServiceDestination {
            namespace: "a".into(),
            name: name.into(),
            port: String::new(),
            protocol: "tcp".into(),
            via,
        }
    }

    #[test]
    fn text_is_busiest_first_and_json_follows_the_contract() {
        let mut stats = Stats::default();
        stats.services.insert(destination("quiet", Via::ClusterIp), ServiceCounts::default());
        stats
            .services
            .insert(destination("busy", Via::NodePort), ServiceCounts { connections: 7, rejected: 0, dropped: 2 });
        stats.unknown_ports.insert("10.96.0.1".into(), 3);
        let text = to_text(&stats);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("NAMESPACE  SERVICE  PORT  PROTOCOL  VIA"), "{text}");
        assert!(lines[1].starts_with("a          busy     -     tcp       node_port"), "{text}");
        assert!(lines[1].ends_with("7         0        2"), "{text}");
        assert!(lines[2].contains("quiet"), "{text}");
        assert!(text.contains("  10.96.0.1  3\n"), "{text}");
        let printed = document(Output::Json, "Stats", &to_value(&stats)).unwrap().unwrap();
        let json: Value = serde_json::from_str(&printed).unwrap();
        assert_eq!(json["apiVersion"], crate::flags::API_VERSION);
        assert_eq!(json["kind"], "Stats");
        assert_eq!(
            json["services"][0],
            json!({"namespace": "a", "name": "busy", "port": "", "protocol": "tcp", "via": "node_port",
                   "connections": 7, "rejected": 0, "dropped": 2})
        );
        assert_eq!(json["services"][1]["via"], "cluster_ip");
        assert_eq!(json["unknown_ports"], json!([{"address": "10.96.0.1", "rejected": 3}]));
    }
}

//! Deleting stale UDP conntrack entries, with the `conntrack` program (Debian's `conntrack` package).
//!
//! Why the program rather than netlink from Rust: the Rust netlink crates that speak ctnetlink
//! (`netlink-packet-netfilter` and friends) cover conntrack dumps only partly and are young, while
//! `conntrack -D` with original-direction and reply filters is exactly what kube-proxy ran for years,
//! is packaged everywhere nft is, and keeps this crate free of raw netlink code. Cleanups are rare
//! (only when UDP endpoints change), so one process per filter costs nothing that matters.

#![allow(clippy::disallowed_methods)] // This module is the one that runs `conntrack` (clippy.toml).

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use proxier_core::{Backend, Protocol};

/// Conntrack entries to delete: those whose original destination is `destination:port` over
/// `protocol`, and, when `endpoint` is set, whose reply comes from that endpoint (they were DNATed
/// to it).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ConntrackFilter {
    /// The transport protocol (only UDP is cleaned up today).
    pub protocol: Protocol,
    /// The original destination address: a ClusterIP, external IP, LoadBalancer IP or node IP.
    pub destination: IpAddr,
    /// The original destination port: the Service port or NodePort.
    pub port: u16,
    /// When set, only entries DNATed to this endpoint.
    pub endpoint: Option<Backend>,
}

impl ConntrackFilter {
    /// The `conntrack -D` arguments that select these entries.
    pub fn args(&self) -> Vec<String> {
        let family = if self.destination.is_ipv4() { "ipv4" } else { "ipv6" };
        let mut args: Vec<String> = vec![
            "-D".into(),
            "-f".into(),
            family.into(),
            "-p".into(),
            self.protocol.name().into(),
            "--orig-dst".into(),
            self.destination.to_string(),
            "--orig-port-dst".into(),
            self.port.to_string(),
        ];
        if let Some(endpoint) = self.endpoint {
            args.extend([
                "--reply-src".into(),
                endpoint.ip.to_string(),
                "--reply-port-src".into(),
                endpoint.port.to_string(),
            ]);
        }
        args
    }
}

/// What a cleanup did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConntrackOutcome {
    /// Filters run.
    pub filters: usize,
    /// Entries deleted, as conntrack counted them.
    pub deleted: u64,
    /// Runs that failed, with conntrack's message.
    pub errors: Vec<String>,
    /// Time spent running the filters (zero when there were none).
    pub duration: std::time::Duration,
}

/// The `conntrack` program, by path (default: `conntrack` from `PATH`).
#[derive(Debug, Clone)]
pub struct Conntrack {
    program: PathBuf,
}

impl Default for Conntrack {
    fn default() -> Self {
        Conntrack { program: PathBuf::from("conntrack") }
    }
}

impl Conntrack {
    /// The conntrack program at `program`.
    pub fn new(program: impl Into<PathBuf>) -> Conntrack {
        Conntrack { program: program.into() }
    }

    /// Deletes the entries each filter selects. Failures are collected, not fatal: a stale entry
    /// only delays a flow's move to a new endpoint until it times out.
    pub fn delete(&self, filters: &[ConntrackFilter]) -> ConntrackOutcome {
        let mut outcome = ConntrackOutcome { filters: filters.len(), ..Default::default() };
        let start = std::time::Instant::now();
        for filter in filters {
            let output = Command::new(&self.program)
                .args(filter.args())
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .output();
            match output {
                Err(error) => outcome.errors.push(format!("cannot run {}: {error}", self.program.display())),
                Ok(output) => {
                    let text = format!(
                        "{}{}",
                        String::from_utf8_lossy(&output.stderr),
                        String::from_utf8_lossy(&output.stdout)
                    );
                    match deleted_count(&text) {
                        Some(n) => outcome.deleted = outcome.deleted.saturating_add(n),
                        None if output.status.success() => {}
                        None => outcome.errors.push(format!(
                            "{} {}: {}",
                            self.program.display(),
                            filter.args().join(" "),
                            text.trim()
                        )),
                    }
                }
            }
        }
        if !filters.is_empty() {
            outcome.duration = start.elapsed();
        }
        outcome
    }
}

/// The count in conntrack's "N flow entries have been deleted." (printed, with a failure status, also
/// when nothing matched).
fn deleted_count(text: &str) -> Option<u64> {
    let (before, _) = text.split_once(" flow entries have been deleted")?;
    before.rsplit(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_read_from_conntracks_message() {
        assert_eq!(deleted_count("conntrack v1.4.7 (conntrack-tools): 3 flow entries have been deleted.\n"), Some(3));
        assert_eq!(deleted_count("conntrack v1.4.7 (conntrack-tools): 0 flow entries have been deleted.\n"), Some(0));
        assert_eq!(deleted_count("conntrack: Operation not permitted"), None);
    }

    #[test]
    fn filters_name_destination_and_endpoint() {
        let filter = ConntrackFilter {
            protocol: Protocol::Udp,
            destination: "10.96.0.10".parse().unwrap(),
            port: 53,
            endpoint: Some(Backend { ip: "10.244.1.5".parse().unwrap(), port: 5353 }),
        };
        assert_eq!(
            filter.args().join(" "),
            "-D -f ipv4 -p udp --orig-dst 10.96.0.10 --orig-port-dst 53 --reply-src 10.244.1.5 --reply-port-src 5353"
        );
    }
}

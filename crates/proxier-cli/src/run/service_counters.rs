//! The kernel's per-Service counters (`proxier stats`) as Prometheus counters:
//! `proxier_service_connections_total`, `proxier_service_rejected_connections_total` and
//! `proxier_service_dropped_connections_total`, labelled `namespace`, `service`, `port`, `protocol`
//! and `via`.
//!
//! They are read on a scrape, not by the sync loop: the read is a netlink dump of only the counted sets
//! on a socket of its own (no `nft` run, no lock a commit waits for), at most once per [`FRESH`] (and per
//! ten times as long as the last read took) however often Prometheus scrapes (concurrent scrapes wait for
//! one read), and a Service that is gone from the tables is gone from the next read.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use proxier_nft::counters::{self, Stats};

/// How long one read of the counters answers scrapes, at least.
pub const FRESH: Duration = Duration::from_secs(5);

/// One read answers scrapes for at least this many times as long as it took: reading takes at most a
/// tenth of a core however large the tables. At 44k Services a read takes about two seconds of
/// allocation-heavy work, which (with the one heap proxier keeps, see `run::tune_allocator`) slowed
/// the syncs running beside it from 2 ms to 20-57 ms; every 5 s, that was the p99 of a change at 100
/// changes a second.
const READ_SHARE: u32 = 10;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabels {
    namespace: String,
    service: String,
    port: String,
    protocol: String,
    via: String,
}

/// The counters of one table, read on demand and cached.
pub struct ServiceCounters {
    table: String,
    /// Until when the exposition text answers scrapes, and the text.
    cache: Mutex<Option<(Instant, String)>>,
}

impl ServiceCounters {
    pub fn new(table: &str) -> ServiceCounters {
        ServiceCounters { table: table.to_owned(), cache: Mutex::new(None) }
    }

    /// The three counter families in the OpenMetrics text format (without `# EOF`). A failed read
    /// answers with the previous one (a counter must not go back to zero for a passing error).
    pub fn encode(&self) -> String {
        let mut cache = self.cache.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((until, text)) = cache.as_ref()
            && Instant::now() < *until
        {
            return text.clone();
        }
        let started = Instant::now();
        let text = match counters::read(&self.table) {
            Ok(elements) => exposition(&Stats::from_elements(&elements)),
            Err(error) => {
                tracing::warn!(%error, "cannot read the per-Service counters");
                cache.as_ref().map(|(_, text)| text.clone()).unwrap_or_default()
            }
        };
        let now = Instant::now();
        *cache = Some((now + FRESH.max(now.duration_since(started) * READ_SHARE), text.clone()));
        text
    }
}

/// The exposition of `stats`.
fn exposition(stats: &Stats) -> String {
    let connections = Family::<ServiceLabels, Counter>::default();
    let rejected = Family::<ServiceLabels, Counter>::default();
    let dropped = Family::<ServiceLabels, Counter>::default();
    for (destination, counts) in &stats.services {
        let labels = ServiceLabels {
            namespace: destination.namespace.clone(),
            service: destination.name.clone(),
            port: destination.port.clone(),
            protocol: destination.protocol.clone(),
            via: destination.via.name().to_owned(),
        };
        connections.get_or_create(&labels).inc_by(counts.connections);
        rejected.get_or_create(&labels).inc_by(counts.rejected);
        dropped.get_or_create(&labels).inc_by(counts.dropped);
    }
    let mut registry = Registry::default();
    registry.register(
        "proxier_service_connections",
        "New connections to a Service destination sent to an endpoint (kernel counters)",
        connections,
    );
    registry.register(
        "proxier_service_rejected_connections",
        "New connections to a Service destination rejected: no usable endpoint (kernel counters)",
        rejected,
    );
    registry.register(
        "proxier_service_dropped_connections",
        "New connections to a Service destination dropped by a Local traffic policy or loadBalancerSourceRanges (kernel counters)",
        dropped,
    );
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
    match out.rfind("# EOF") {
        Some(end) => out[..end].to_owned(),
        None => out,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proxier_nft::counters::{ServiceCounts, ServiceDestination, Via};

    #[test]
    fn each_service_destination_is_one_series_of_each_counter() {
        let mut stats = Stats::default();
        let web = ServiceDestination {
            namespace: "shop".into(),
            name: "web".into(),
            port: "http".into(),
            protocol: "tcp".into(),
            via: Via::NodePort,
        };
        stats.services.insert(web, ServiceCounts { connections: 4, rejected: 0, dropped: 1 });
        let text = exposition(&stats);
        let labels = r#"{namespace="shop",service="web",port="http",protocol="tcp",via="node_port"}"#;
        assert!(text.contains(&format!("proxier_service_connections_total{labels} 4\n")), "{text}");
        assert!(text.contains(&format!("proxier_service_rejected_connections_total{labels} 0\n")), "{text}");
        assert!(text.contains(&format!("proxier_service_dropped_connections_total{labels} 1\n")), "{text}");
        assert!(text.contains("# TYPE proxier_service_connections counter"), "{text}");
        assert!(!text.contains("# EOF"));
    }
}

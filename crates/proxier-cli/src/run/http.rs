//! The small HTTP servers of `proxier run`: /healthz and /livez, /metrics, and one health-check
//! nodePort listener per externalTrafficPolicy-Local Service. hyper's HTTP/1 server, one task per
//! connection.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use proxier_core::HealthCheck;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::metrics::{CodeLabel, Metrics};
use super::service_counters::ServiceCounters;

/// A reply: status, content type, body.
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

type Handler = Arc<dyn Fn(&str) -> Reply + Send + Sync>;

/// Serves `handler` (given the request path) on `listener` until the task is aborted.
pub fn serve(listener: TcpListener, handler: Handler) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let handler = handler.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    let reply = handler(request.uri().path());
                    async move {
                        let mut response = Response::new(Full::new(Bytes::from(reply.body)));
                        *response.status_mut() = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::OK);
                        if let Ok(value) = reply.content_type.parse() {
                            response.headers_mut().insert(hyper::header::CONTENT_TYPE, value);
                        }
                        if let Ok(value) = "nosniff".parse() {
                            response.headers_mut().insert("X-Content-Type-Options", value);
                        }
                        Ok::<_, Infallible>(response)
                    }
                });
                let _ =
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    })
}

/// What /healthz and /livez report on, updated by the sync loop.
#[derive(Debug)]
pub struct Health {
    /// kube-proxy's healthTimeout: twice the sync period.
    pub timeout: Duration,
    state: Mutex<HealthState>,
}

#[derive(Debug, Default)]
struct HealthState {
    /// The oldest change not yet programmed.
    queued_since: Option<Instant>,
    last_updated: Option<SystemTime>,
    node_deleting: bool,
}

impl Health {
    pub fn new(sync_period: Duration) -> Health {
        Health { timeout: sync_period.saturating_mul(2), state: Mutex::new(HealthState::default()) }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, HealthState> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn set_queued(&self, since: Option<Instant>) {
        self.state().queued_since = since;
    }

    pub fn updated(&self) {
        let mut state = self.state();
        state.last_updated = Some(SystemTime::now());
        state.queued_since = None;
    }

    pub fn set_node_deleting(&self, deleting: bool) {
        self.state().node_deleting = deleting;
    }

    /// kube-proxy's rule: healthy unless an update was queued and not applied within the timeout.
    pub fn healthy(&self) -> bool {
        self.state().queued_since.is_none_or(|since| since.elapsed() < self.timeout)
    }

    fn reply(&self, healthy: bool, node_eligible: Option<bool>) -> Reply {
        let state = self.state();
        let last = state.last_updated.map(rfc3339).unwrap_or_default();
        let mut body = format!(r#"{{"lastUpdated": "{last}","currentTime": "{}""#, rfc3339(SystemTime::now()));
        if let Some(eligible) = node_eligible {
            body.push_str(&format!(r#", "nodeEligible": {eligible}"#));
        }
        body.push('}');
        Reply { status: if healthy { 200 } else { 503 }, content_type: "application/json", body }
    }

    /// /healthz: also unhealthy while the Node is being deleted. /livez: staleness only.
    pub fn handler(self: &Arc<Self>, metrics: Arc<Metrics>) -> Handler {
        let health = self.clone();
        Arc::new(move |path| {
            let healthy = health.healthy();
            match path {
                "/healthz" => {
                    let eligible = !health.state().node_deleting;
                    let reply = health.reply(healthy && eligible, Some(eligible));
                    metrics.healthz.get_or_create(&CodeLabel { code: reply.status.to_string() }).inc();
                    reply
                }
                "/livez" => {
                    let reply = health.reply(healthy, None);
                    metrics.livez.get_or_create(&CodeLabel { code: reply.status.to_string() }).inc();
                    reply
                }
                _ => Reply { status: 404, content_type: "text/plain", body: "404 page not found\n".into() },
            }
        })
    }
}

/// The metrics port, as kube-proxy's: /metrics (with the kernel's per-Service counters when `counters`
/// reads them); /healthz (the process answers: `ok`), /livez (the same staleness check as on the health
/// port); /proxyMode (`nftables`); /configz (the effective configuration, `configz` as JSON).
pub fn metrics_handler(
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    configz: String,
    counters: Option<Arc<ServiceCounters>>,
) -> Handler {
    Arc::new(move |path| match path {
        "/metrics" => Reply {
            status: 200,
            content_type: "application/openmetrics-text; version=1.0.0; charset=utf-8",
            body: {
                let mut body = metrics.encode();
                if let Some(counters) = &counters {
                    // The read runs nft; this worker thread waits for it, the sync loop does not.
                    let families = tokio::task::block_in_place(|| counters.encode());
                    let end = body.rfind("# EOF").unwrap_or(body.len());
                    body.insert_str(end, &families);
                }
                body
            },
        },
        "/healthz" => Reply { status: 200, content_type: "text/plain; charset=utf-8", body: "ok".into() },
        "/livez" => {
            let healthy = health.healthy();
            Reply {
                status: if healthy { 200 } else { 503 },
                content_type: "text/plain; charset=utf-8",
                body: if healthy {
                    "ok".into()
                } else {
                    "stale: a change waits longer than twice the sync period".into()
                },
            }
        }
        "/proxyMode" => Reply { status: 200, content_type: "text/plain; charset=utf-8", body: "nftables".into() },
        "/configz" => Reply { status: 200, content_type: "application/json", body: configz.clone() },
        _ => Reply { status: 404, content_type: "text/plain", body: "404 page not found\n".into() },
    })
}

fn rfc3339(time: SystemTime) -> String {
    k8s_openapi::jiff::Timestamp::try_from(time).map(|t| t.to_string()).unwrap_or_default()
}

/// One Service's health-check answer.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CheckState {
    namespace: String,
    name: String,
    local_endpoints: usize,
}

/// The health-check nodePort listeners, reconciled with the model after each sync. Like kube-proxy, they
/// listen on the addresses NodePorts are served on (`--nodeport-addresses`, by default the node's
/// primary addresses), or on every address when the node's addresses are unknown.
pub struct HealthChecks {
    health: Arc<Health>,
    listeners: BTreeMap<SocketAddr, (Arc<Mutex<CheckState>>, JoinHandle<()>)>,
}

impl HealthChecks {
    pub fn new(health: Arc<Health>) -> HealthChecks {
        HealthChecks { health, listeners: BTreeMap::new() }
    }

    /// Opens listeners for new health-check nodePorts, updates counts, closes those no longer wanted.
    pub async fn reconcile<'a>(&mut self, node_port_ips: &[IpAddr], checks: impl Iterator<Item = &'a HealthCheck>) {
        let mut addresses = node_port_ips.to_vec();
        if addresses.is_empty() {
            addresses.push(IpAddr::from([0, 0, 0, 0]));
        }
        let mut wanted: BTreeMap<SocketAddr, CheckState> = BTreeMap::new();
        for check in checks {
            for &ip in &addresses {
                let entry = wanted.entry(SocketAddr::new(ip, check.node_port)).or_insert_with(|| CheckState {
                    namespace: check.service.namespace.clone(),
                    name: check.service.name.clone(),
                    local_endpoints: 0,
                });
                entry.local_endpoints = entry.local_endpoints.max(check.local_endpoints);
            }
        }
        self.listeners.retain(|address, (_, task)| {
            let keep = wanted.contains_key(address);
            if !keep {
                task.abort();
            }
            keep
        });
        for (address, state) in wanted {
            if let Some((current, _)) = self.listeners.get(&address) {
                *current.lock().unwrap_or_else(|p| p.into_inner()) = state;
                continue;
            }
            let listener = match TcpListener::bind(address).await {
                Ok(listener) => listener,
                Err(error) => {
                    tracing::warn!(%address, service = %format!("{}/{}", state.namespace, state.name), %error, "cannot open health-check nodePort");
                    continue;
                }
            };
            let shared = Arc::new(Mutex::new(state));
            let (check, health) = (shared.clone(), self.health.clone());
            let task = serve(
                listener,
                Arc::new(move |_path| {
                    let state = check.lock().unwrap_or_else(|p| p.into_inner()).clone();
                    let healthy = health.healthy();
                    Reply {
                        status: if state.local_endpoints > 0 && healthy { 200 } else { 503 },
                        content_type: "application/json",
                        body: serde_json::json!({
                            "service": {"namespace": state.namespace, "name": state.name},
                            "localEndpoints": state.local_endpoints,
                            "serviceProxyHealthy": healthy,
                        })
                        .to_string(),
                    }
                }),
            );
            self.listeners.insert(address, (shared, task));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_when_a_queued_change_waits_longer_than_twice_the_sync_period() {
        let health = Arc::new(Health::new(Duration::from_millis(20)));
        assert!(health.healthy(), "nothing queued");
        health.set_queued(Some(Instant::now()));
        assert!(health.healthy(), "queued, not yet late");
        std::thread::sleep(Duration::from_millis(60));
        assert!(!health.healthy(), "queued for more than 2x the sync period");
        let handler = health.handler(Arc::new(Metrics::new()));
        assert_eq!(handler("/livez").status, 503);
        health.updated();
        assert_eq!(handler("/livez").status, 200);
        assert_eq!(handler("/healthz").status, 200);
        health.set_node_deleting(true);
        let reply = handler("/healthz");
        assert_eq!(reply.status, 503);
        assert!(reply.body.contains(r#""nodeEligible": false"#), "{}", reply.body);
        assert_eq!(handler("/livez").status, 200, "livez ignores the Node's deletion");
        assert_eq!(handler("/other").status, 404);
    }

    #[test]
    fn the_metrics_port_serves_kube_proxys_paths() {
        let health = Arc::new(Health::new(Duration::from_secs(30)));
        let handler =
            metrics_handler(Arc::new(Metrics::new()), health, r#"{"kubeproxy.config.k8s.io":{}}"#.into(), None);
        assert_eq!(handler("/proxyMode").body, "nftables");
        assert_eq!((handler("/healthz").status, handler("/healthz").body.as_str()), (200, "ok"));
        assert_eq!(handler("/livez").status, 200);
        let configz = handler("/configz");
        assert_eq!((configz.status, configz.content_type), (200, "application/json"));
        assert!(configz.body.contains("kubeproxy.config.k8s.io"));
        assert!(handler("/metrics").body.contains("kubeproxy_sync_proxy_rules_duration_seconds"));
        assert_eq!(handler("/nothing").status, 404);
    }
}

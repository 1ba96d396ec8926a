//! The churn driver: a generated cluster in proxier-testkit's stand-in API server, the real `proxier run`
//! in a network namespace of its own watching it, and a stream of random writes at a set rate —
//! endpoint readiness flips, endpoint adds and removes, Service creates and deletes. While it runs it
//! times sampled changes from the write to the kernel ([`crate::events`]), and samples the proxier
//! process's RSS, `/healthz` and the sync metrics every second. At the end it waits for quiet and
//! compares every Service's kernel entries with the desired state (`proxier diff` of the API server's
//! final objects: the desired rules computed, rendered and loaded into a scratch namespace, against a
//! listing of the live table), reporting differences by Service.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use proxier_testkit::Netns;
use proxier_testkit::apiserver::{ApiServer, Kind, Options};
use serde_json::{Value, json};

use crate::events::{self, Expect, Pending, Sample};
use proxier_cli::generator;

const NODE: &str = "node-1";
const TABLE: &str = "proxier";
const HEALTHZ: &str = "127.0.0.1:10256";
const METRICS: &str = "127.0.0.1:10249";
/// New endpoints' addresses: above every generated pod (the generator's pods start at 10.128.0.0).
const NEW_POD_BASE: u32 = u32::from_be_bytes([10, 250, 0, 0]);
/// The most endpoints churn grows a Service to.
const MAX_ENDPOINTS: usize = 20;

/// What to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// The `proxier` binary.
    pub proxier: PathBuf,
    pub services: usize,
    pub endpoints: usize,
    pub seed: u64,
    /// API server writes per second.
    pub rate: u32,
    pub duration: Duration,
    /// Flags added to `proxier run` (e.g. `--min-sync-period 1s`).
    pub proxier_args: Vec<String>,
    /// The longest wait for proxier to catch up after the churn.
    pub quiet_timeout: Duration,
    /// Whether to compare the kernel with the desired state at the end.
    pub check: bool,
    /// Print progress lines.
    pub verbose: bool,
    /// Keep proxier's log file after the run.
    pub keep_log: bool,
    /// Each operation's share, in percent ([`MIX`], [`ENDPOINTS_ONLY`]).
    pub mix: [u32; 5],
}

/// The default share of each operation, in percent: (flip, add, remove, create, delete).
pub const MIX: [u32; 5] = [70, 10, 10, 5, 5];
/// Endpoint changes only (endpoint events, as the live-mode targets count them): no Service creates or deletes.
pub const ENDPOINTS_ONLY: [u32; 5] = [80, 10, 10, 0, 0];

/// What the run measured.
#[derive(Debug, Default)]
pub struct Report {
    pub config_line: String,
    /// From `proxier run` starting to its first full sync done.
    pub cold_sync: Duration,
    /// The first full sync's own duration (proxier's metric).
    pub cold_sync_metric: f64,
    pub writes: u64,
    /// Writes by operation: flip, add, remove, create, delete.
    pub by_op: [u64; 5],
    pub churn_time: Duration,
    /// (sample number, latency) of each sampled change, in sample order.
    pub latencies: Vec<(u64, Duration)>,
    pub samples: u64,
    pub unresolved: usize,
    /// The sampled changes never seen in the kernel, described.
    pub never_seen: Vec<String>,
    pub overflows: u64,
    /// Commits to proxier's table seen while sampling.
    pub commits: u64,
    /// Samples of (seconds since the churn started, RSS KiB, /healthz status, syncs so far).
    pub timeline: Vec<(f64, u64, u16, u64)>,
    /// After the churn: until every sample reached the kernel and syncs stopped.
    pub quiet_after: Duration,
    /// Service → differing lines; empty when the kernel matches the cluster.
    pub mismatches: BTreeMap<String, usize>,
    pub diff_lines: usize,
    /// The first differing lines with no Service's address on them (chains, rules).
    pub unattributed: Vec<String>,
    pub checked: bool,
    pub syncs: (u64, u64, u64),
    pub sync_failures: u64,
    pub drift_repairs: u64,
    pub log: PathBuf,
}

impl Report {
    /// The latency percentile `p` (0–100) of the sampled changes.
    pub fn latency(&self, p: f64) -> Option<Duration> {
        let mut sorted: Vec<Duration> = self.latencies.iter().map(|(_, d)| *d).collect();
        if sorted.is_empty() {
            return None;
        }
        sorted.sort_unstable();
        let index = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
        Some(sorted[index.min(sorted.len() - 1)])
    }

    /// Every /healthz answer that was not 200.
    pub fn unhealthy(&self) -> usize {
        self.timeline.iter().filter(|t| t.2 != 200).count()
    }

    /// RSS (MiB) at the start of the churn, at its midpoint and at its end, each the median of the
    /// samples around it.
    pub fn rss(&self) -> Option<(f64, f64, f64)> {
        let rss: Vec<u64> = self.timeline.iter().map(|t| t.1).collect();
        if rss.len() < 3 {
            return None;
        }
        let around = |i: usize| {
            let from = i.saturating_sub(2);
            let mut window: Vec<u64> = rss[from..(i + 3).min(rss.len())].to_vec();
            window.sort_unstable();
            window[window.len() / 2] as f64 / 1024.0
        };
        Some((around(0), around(rss.len() / 2), around(rss.len() - 1)))
    }

    /// The summary, as printed.
    pub fn summary(&self) -> String {
        let ms = |d: Option<Duration>| d.map_or("-".into(), |d| format!("{:.1} ms", d.as_secs_f64() * 1000.0));
        let mut out = String::new();
        out.push_str(&format!("churn: {}\n", self.config_line));
        out.push_str(&format!(
            "cold full sync: {:.2} s from start to first sync done ({:.2} s the sync itself)\n",
            self.cold_sync.as_secs_f64(),
            self.cold_sync_metric
        ));
        let seconds = self.churn_time.as_secs_f64().max(1e-9);
        out.push_str(&format!(
            "writes: {} in {:.1} s = {:.0}/s (flip {}, add {}, remove {}, create {}, delete {})\n",
            self.writes,
            seconds,
            self.writes as f64 / seconds,
            self.by_op[0],
            self.by_op[1],
            self.by_op[2],
            self.by_op[3],
            self.by_op[4]
        ));
        out.push_str(&format!(
            "event → kernel: {} sampled, {} seen in {} commits: p50 {}, p90 {}, p99 {}, max {}; {} never seen; event buffer overflows {}\n",
            self.samples,
            self.latencies.len(),
            self.commits,
            ms(self.latency(50.0)),
            ms(self.latency(90.0)),
            ms(self.latency(99.0)),
            ms(self.latency(100.0)),
            self.unresolved,
            self.overflows
        ));
        if !self.never_seen.is_empty() {
            let shown: Vec<&str> = self.never_seen.iter().take(10).map(String::as_str).collect();
            out.push_str(&format!("  never seen: {}\n", shown.join(", ")));
        }
        if let Some((start, middle, end)) = self.rss() {
            let max = self.timeline.iter().map(|t| t.1).max().unwrap_or(0) as f64 / 1024.0;
            out.push_str(&format!(
                "RSS: {start:.1} MiB at the start, {middle:.1} at the midpoint, {end:.1} at the end (max {max:.1}); growth over the last half {:+.1} %\n",
                (end - middle) / middle * 100.0
            ));
        }
        out.push_str(&format!("/healthz: {} of {} answers not 200\n", self.unhealthy(), self.timeline.len()));
        out.push_str(&format!(
            "syncs: {} ({} full, {} partial), {} failed, {} drift repairs; quiet {:.1} s after the churn\n",
            self.syncs.0,
            self.syncs.1,
            self.syncs.2,
            self.sync_failures,
            self.drift_repairs,
            self.quiet_after.as_secs_f64()
        ));
        if !self.checked {
            out.push_str("kernel = cluster: not checked\n");
        } else if self.diff_lines == 0 {
            out.push_str("kernel = cluster: yes, every Service (0 mismatches)\n");
        } else {
            out.push_str(&format!(
                "kernel = cluster: NO, {} differing lines in {} Services:\n",
                self.diff_lines,
                self.mismatches.len()
            ));
            for (service, lines) in self.mismatches.iter().take(20) {
                out.push_str(&format!("  {service}: {lines} lines\n"));
            }
            for line in &self.unattributed {
                out.push_str(&format!("    {line}\n"));
            }
        }
        out.push_str(&format!("proxier's log: {}\n", self.log.display()));
        out
    }

    /// The sampled latencies as docs/perf/churn.csv rows (`series,change,milliseconds`).
    pub fn csv(&self, series: &str) -> String {
        let mut out = format!("# {}\nseries,change,milliseconds\n", self.config_line);
        let mut rows = self.latencies.clone();
        rows.sort_unstable_by_key(|r| r.0);
        for (i, (_, latency)) in rows.iter().enumerate() {
            out.push_str(&format!("{series},{},{:.2}\n", i + 1, latency.as_secs_f64() * 1000.0));
        }
        out
    }
}

/// A Service as the driver keeps it.
struct Svc {
    namespace: String,
    name: String,
    /// ClusterIP; None for headless Services (not programmed, not churned).
    vip: Option<Ipv4Addr>,
    /// Its first EndpointSlice (the one churn changes).
    slice: Value,
}

impl Svc {
    fn endpoint_ips(&self) -> Vec<Ipv4Addr> {
        self.slice["endpoints"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["addresses"][0].as_str()?.parse().ok())
            .collect()
    }
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// The running pieces: namespace, API server, proxier.
pub struct Bed {
    // Dropped in this order: the API server, then the namespace it serves in.
    pub api: ApiServer,
    pub netns: Netns,
    kubeconfig: PathBuf,
    pub log: PathBuf,
    /// Whether proxier's log stays after the run (otherwise it is deleted with the bed).
    pub keep_log: bool,
    proxier: Option<Child>,
}

impl Drop for Bed {
    fn drop(&mut self) {
        if let Some(mut child) = self.proxier.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(&self.kubeconfig);
        if !self.keep_log {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}

impl Bed {
    /// A namespace with loopback up and the stand-in API server inside it, loaded with `objects` (moved
    /// in, not copied: at 44k Services the generated cluster is gigabytes of JSON values).
    pub fn new(objects: Vec<Value>) -> Result<Bed, String> {
        let netns = Netns::new("churn").map_err(|e| format!("cannot create a network namespace: {e}"))?;
        netns.ip(&["link", "set", "lo", "up"]).map_err(|e| e.to_string())?;
        let listener = netns.run(|| std::net::TcpListener::bind("127.0.0.1:6443")).map_err(|e| e.to_string())?;
        // Pages of 500 as kube's watcher asks; history for minutes of churn at 1,000 writes/s.
        let options = Options { page_size: 500, bookmark_every: Duration::from_secs(10), history: 200_000 };
        let api = ApiServer::start_with(listener, options);
        for object in objects {
            api.apply(object);
        }
        let kubeconfig = std::env::temp_dir().join(format!("{}.kubeconfig", netns.name()));
        api.write_kubeconfig(&kubeconfig).map_err(|e| e.to_string())?;
        let log = std::env::temp_dir().join(format!("{}.proxier.log", netns.name()));
        Ok(Bed { api, netns, kubeconfig, log, keep_log: true, proxier: None })
    }

    /// Starts `proxier run` in the namespace; its stderr goes to [`Bed::log`].
    pub fn start_proxier(&mut self, binary: &Path, extra: &[String]) -> Result<u32, String> {
        let log = std::fs::File::create(&self.log).map_err(|e| e.to_string())?;
        let mut command = Command::new("ip");
        command.args(["netns", "exec", self.netns.name()]).arg(binary);
        command.args(["run", "--node", NODE, "--kubeconfig"]).arg(&self.kubeconfig);
        command.args(["--cluster-cidr", generator::CLUSTER_CIDR, "--healthz-bind-address", HEALTHZ]);
        command.args(["--metrics-bind-address", METRICS]).args(extra);
        command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(log);
        // `ip netns exec` execs the program in place: the child is proxier itself.
        let child = command.spawn().map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        let pid = child.id();
        self.proxier = Some(child);
        Ok(pid)
    }

    /// Whether proxier is still running.
    fn proxier_alive(&mut self) -> bool {
        self.proxier.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// An HTTP GET from inside the namespace: (status, body).
    pub fn http_get(&self, address: &str, path: &str) -> Option<(u16, String)> {
        self.netns.http_get(address.parse().ok()?, path)
    }

    /// The metrics proxier exports, by name (with labels), as numbers.
    pub fn metrics(&self) -> HashMap<String, f64> {
        let Some((200, text)) = self.http_get(METRICS, "/metrics") else {
            return HashMap::new();
        };
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (name, value) = l.rsplit_once(' ')?;
                Some((name.to_owned(), value.parse().ok()?))
            })
            .collect()
    }

    /// Waits for proxier's first full sync; returns how long that took since `started` and the sync's
    /// own duration.
    pub fn wait_first_sync(&mut self, started: Instant, timeout: Duration) -> Result<(Duration, f64), String> {
        loop {
            let metrics = self.metrics();
            if metrics.get("kubeproxy_sync_full_proxy_rules_duration_seconds_count").is_some_and(|n| *n >= 1.0) {
                let took = started.elapsed();
                let own = metrics.get("kubeproxy_sync_full_proxy_rules_duration_seconds_sum").copied().unwrap_or(0.0);
                return Ok((took, own));
            }
            if !self.proxier_alive() {
                return Err(format!("proxier exited before its first sync; see {}", self.log.display()));
            }
            if started.elapsed() > timeout {
                return Err(format!("no full sync within {timeout:?}; see {}", self.log.display()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// The generated cluster's objects.
pub fn generate(services: usize, endpoints: usize, seed: u64) -> Result<Vec<Value>, String> {
    let options = generator::Options {
        services,
        endpoints,
        seed,
        node_port_range: (30000, 65535),
        ..generator::Options::default()
    };
    let (mut list, _) = generator::generate(&options).map_err(|e| e.to_string())?;
    // Taken, not cloned: a copy of the items would double the driver's peak.
    match list.get_mut("items").map(Value::take) {
        Some(Value::Array(items)) => Ok(items),
        _ => Ok(Vec::new()),
    }
}

/// The churn's state: the Services it may change and the addresses it has handed out.
struct Model {
    services: Vec<Svc>,
    used: HashSet<u32>,
    next_pod: u32,
    next_vip: u32,
    created: u64,
    node_names: Vec<String>,
}

impl Model {
    fn new(objects: &[Value]) -> Model {
        let mut slices: HashMap<(String, String), Value> = HashMap::new();
        let mut used = HashSet::new();
        let mut node_names = Vec::new();
        for object in objects {
            match object["kind"].as_str() {
                Some("EndpointSlice") => {
                    for ip in object["endpoints"].as_array().into_iter().flatten() {
                        if let Some(ip) = ip["addresses"][0].as_str().and_then(|a| a.parse::<Ipv4Addr>().ok()) {
                            used.insert(u32::from(ip));
                        }
                    }
                    let key = (
                        object["metadata"]["namespace"].as_str().unwrap_or("").to_owned(),
                        object["metadata"]["labels"]["kubernetes.io/service-name"].as_str().unwrap_or("").to_owned(),
                    );
                    slices.entry(key).or_insert_with(|| object.clone());
                }
                Some("Node") => node_names.push(object["metadata"]["name"].as_str().unwrap_or("").to_owned()),
                _ => {}
            }
        }
        let mut services = Vec::new();
        for object in objects.iter().filter(|o| o["kind"] == "Service") {
            let namespace = object["metadata"]["namespace"].as_str().unwrap_or("").to_owned();
            let name = object["metadata"]["name"].as_str().unwrap_or("").to_owned();
            let vip = object["spec"]["clusterIP"].as_str().and_then(|ip| ip.parse::<Ipv4Addr>().ok());
            if let Some(vip) = vip {
                used.insert(u32::from(vip));
            }
            let Some(slice) = slices.remove(&(namespace.clone(), name.clone())) else { continue };
            services.push(Svc { namespace, name, vip, slice });
        }
        Model {
            services,
            used,
            next_pod: NEW_POD_BASE,
            next_vip: u32::from_be_bytes([10, 96, 0, 16]),
            created: 0,
            node_names,
        }
    }

    fn new_pod_ip(&mut self) -> Ipv4Addr {
        while self.used.contains(&self.next_pod) {
            self.next_pod += 1;
        }
        self.used.insert(self.next_pod);
        Ipv4Addr::from(self.next_pod)
    }

    fn new_vip(&mut self) -> Ipv4Addr {
        while self.used.contains(&self.next_vip) {
            self.next_vip += 1;
        }
        self.used.insert(self.next_vip);
        Ipv4Addr::from(self.next_vip)
    }
}

fn endpoint(ip: Ipv4Addr, ready: bool, node: &str) -> Value {
    json!({"addresses": [ip.to_string()], "conditions": {"ready": ready, "serving": ready, "terminating": false},
           "nodeName": node})
}

/// One write (or pair) against the API server, with the sample it makes if any.
struct Churner<'a> {
    api: &'a ApiServer,
    model: Model,
    rng: Rng,
    pending: &'a Pending,
    mix: [u32; 5],
    samples: u64,
    writes: u64,
    by_op: [u64; 5],
}

impl Churner<'_> {
    /// A Service with a ClusterIP, chosen at random.
    fn pick(&mut self) -> Option<usize> {
        (0..8).map(|_| self.rng.below(self.model.services.len())).find(|&i| self.model.services[i].vip.is_some())
    }

    fn sample(&mut self, op: &'static str, ip: Ipv4Addr, expect: Expect, sent: Instant) {
        let sample = Sample { number: self.samples, expect, sent, op };
        if self.pending.add(ip, sample) {
            self.samples += 1;
        }
    }

    fn write_slice(&mut self, index: usize, op: usize) {
        let slice = self.model.services[index].slice.clone();
        self.api.apply(slice);
        self.writes += 1;
        self.by_op[op] += 1;
    }

    /// Does one operation; returns the writes it made.
    fn step(&mut self) -> u64 {
        let before = self.writes;
        let roll = self.rng.below(100) as u32;
        let mut bound = 0;
        let op = self.mix.iter().position(|share| {
            bound += share;
            roll < bound
        });
        match op.unwrap_or(0) {
            0 => self.flip(),
            1 => self.add(),
            2 => self.remove(),
            3 => self.create(),
            _ => self.delete(),
        }
        if self.writes == before {
            // Nothing eligible (e.g. every candidate in flight): flip instead, so the rate holds.
            self.flip();
        }
        self.writes - before
    }

    /// A random endpoint of a random Service, one with no sampled change still in flight:
    /// (Service index, endpoint index, address).
    fn pick_endpoint(&mut self) -> Option<(usize, usize, Ipv4Addr)> {
        let index = self.pick()?;
        let ips = self.model.services[index].endpoint_ips();
        if ips.is_empty() {
            return None;
        }
        let e = self.rng.below(ips.len());
        (!self.pending.busy(ips[e])).then_some((index, e, ips[e]))
    }

    fn flip(&mut self) {
        let Some((index, e, ip)) = self.pick_endpoint() else { return };
        let endpoint = &mut self.model.services[index].slice["endpoints"][e];
        let ready = !endpoint["conditions"]["ready"].as_bool().unwrap_or(true);
        endpoint["conditions"] = json!({"ready": ready, "serving": ready, "terminating": false});
        let sent = Instant::now();
        self.sample("flip", ip, if ready { Expect::Appears } else { Expect::Goes }, sent);
        self.write_slice(index, 0);
    }

    fn add(&mut self) {
        let Some(index) = self.pick() else { return };
        if self.model.services[index].endpoint_ips().len() >= MAX_ENDPOINTS {
            return;
        }
        let ip = self.model.new_pod_ip();
        let node = self.model.node_names[self.rng.below(self.model.node_names.len())].clone();
        let slice = &mut self.model.services[index].slice;
        if let Some(endpoints) = slice["endpoints"].as_array_mut() {
            endpoints.push(endpoint(ip, true, &node));
        } else {
            slice["endpoints"] = json!([endpoint(ip, true, &node)]);
        }
        self.sample("add", ip, Expect::Appears, Instant::now());
        self.write_slice(index, 1);
    }

    fn remove(&mut self) {
        let Some((index, e, ip)) = self.pick_endpoint() else { return };
        let Some(endpoints) = self.model.services[index].slice["endpoints"].as_array_mut() else { return };
        let removed = endpoints.remove(e);
        if removed["conditions"]["ready"].as_bool().unwrap_or(true) {
            // Only a ready endpoint is in the kernel to go.
            self.sample("remove", ip, Expect::Goes, Instant::now());
        }
        self.write_slice(index, 2);
    }

    fn create(&mut self) {
        self.model.created += 1;
        let name = format!("churn-{}", self.model.created);
        let vip = self.model.new_vip();
        let ips = [self.model.new_pod_ip(), self.model.new_pod_ip()];
        let node = self.model.node_names[self.rng.below(self.model.node_names.len())].clone();
        let service = json!({"kind": "Service", "apiVersion": "v1",
            "metadata": {"namespace": "churn", "name": name},
            "spec": {"type": "ClusterIP", "clusterIP": vip.to_string(), "clusterIPs": [vip.to_string()],
                     "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]}});
        let slice = json!({"kind": "EndpointSlice", "apiVersion": "discovery.k8s.io/v1",
            "metadata": {"namespace": "churn", "name": format!("{name}-x"),
                         "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4", "endpoints": ips.iter().map(|ip| endpoint(*ip, true, &node)).collect::<Vec<_>>(),
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]});
        // The endpoints are sampled too: until they reach the kernel no other change may touch them (a
        // flip before the first sync would leave nothing to see).
        let sent = Instant::now();
        for ip in [vip, ips[0], ips[1]] {
            self.sample("create", ip, Expect::Appears, sent);
        }
        self.api.apply(service);
        self.api.apply(slice.clone());
        self.writes += 2;
        self.by_op[3] += 2;
        self.model.services.push(Svc { namespace: "churn".into(), name, vip: Some(vip), slice });
    }

    fn delete(&mut self) {
        let Some(index) = self.pick() else { return };
        let service = &self.model.services[index];
        let Some(vip) = service.vip else { return };
        // A Service whose address or endpoints have a sample in flight stays: its samples would never be seen.
        if self.pending.busy(vip) || service.endpoint_ips().iter().any(|ip| self.pending.busy(*ip)) {
            return;
        }
        let service = self.model.services.swap_remove(index);
        self.sample("delete", vip, Expect::Goes, Instant::now());
        self.api.delete(Kind::Service, &service.namespace, &service.name);
        let slice_name = service.slice["metadata"]["name"].as_str().unwrap_or("");
        self.api.delete(Kind::EndpointSlice, &service.namespace, slice_name);
        self.writes += 2;
        self.by_op[4] += 2;
    }
}

/// Runs the whole churn and returns what it measured.
pub fn run(config: &Config) -> Result<Report, String> {
    let say = |text: &str| {
        if config.verbose {
            eprintln!("churn: {text}");
        }
    };
    let objects = generate(config.services, config.endpoints, config.seed)?;
    say(&format!("generated {} objects", objects.len()));
    // What the churn needs of the objects is taken before the API server takes the objects themselves.
    let model = Model::new(&objects);
    let mut bed = Bed::new(objects)?;
    bed.keep_log = config.keep_log;
    let mut report = Report {
        config_line: format!(
            "{} Services × {} endpoints, {} writes/s{} for {} s, proxier run {}",
            config.services,
            config.endpoints,
            config.rate,
            if config.mix == ENDPOINTS_ONLY { " (endpoint changes only)" } else { "" },
            config.duration.as_secs(),
            config.proxier_args.join(" ")
        ),
        log: bed.log.clone(),
        ..Report::default()
    };
    let started = Instant::now();
    let pid = bed.start_proxier(&config.proxier, &config.proxier_args)?;
    let (cold, own) = bed.wait_first_sync(started, Duration::from_secs(600))?;
    report.cold_sync = cold;
    report.cold_sync_metric = own;
    say(&format!("first full sync after {:.2} s", cold.as_secs_f64()));

    let pending = Arc::new(Pending::default());
    let socket = bed.netns.run(events::open_socket).map_err(|e| format!("nf_tables event socket: {e}"))?;
    let watcher = events::Watcher::start(socket, TABLE, pending.clone());

    // The monitor: RSS, /healthz and sync count once a second, on its own thread.
    let stop = std::sync::atomic::AtomicBool::new(false);
    let churn_start = Instant::now();
    let (timeline, churned) = std::thread::scope(|scope| {
        let monitor = scope.spawn(|| {
            let mut timeline = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let at = churn_start.elapsed().as_secs_f64();
                let health = bed.http_get(HEALTHZ, "/healthz").map_or(0, |r| r.0);
                let syncs =
                    bed.metrics().get("kubeproxy_sync_proxy_rules_duration_seconds_count").map_or(0, |n| *n as u64);
                timeline.push((at, rss_kib(pid), health, syncs));
                let next = Duration::from_secs_f64(timeline.len() as f64);
                while churn_start.elapsed() < next && !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            timeline
        });
        let mut churner = Churner {
            api: &bed.api,
            model,
            rng: Rng(config.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1),
            pending: &pending,
            mix: config.mix,
            samples: 0,
            writes: 0,
            by_op: [0; 5],
        };
        let interval = Duration::from_secs_f64(1.0 / f64::from(config.rate.max(1)));
        let mut due = Instant::now();
        let end = churn_start + config.duration;
        let mut last_say = Instant::now();
        while Instant::now() < end {
            let writes = churner.step();
            due += interval * writes as u32;
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            if last_say.elapsed() > Duration::from_secs(10) {
                last_say = Instant::now();
                say(&format!(
                    "{:.0} s: {} writes, {} samples in flight",
                    churn_start.elapsed().as_secs_f64(),
                    churner.writes,
                    pending.in_flight()
                ));
            }
        }
        let churned = (churner.writes, churner.by_op, churner.samples, churn_start.elapsed());
        // Quiet: every sample seen (or the timeout), then no sync for two seconds.
        let quiet_start = Instant::now();
        let mut last_syncs = (0.0, Instant::now());
        loop {
            let syncs = bed.metrics().get("kubeproxy_sync_proxy_rules_duration_seconds_count").copied().unwrap_or(0.0);
            if syncs != last_syncs.0 {
                last_syncs = (syncs, Instant::now());
            }
            let settled = pending.in_flight() == 0 && last_syncs.1.elapsed() > Duration::from_secs(2);
            if settled || quiet_start.elapsed() > config.quiet_timeout {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let quiet_after = quiet_start.elapsed();
        stop.store(true, Ordering::Relaxed);
        let timeline = monitor.join().unwrap_or_default();
        (timeline, (churned, quiet_after))
    });
    drop(watcher);
    let ((writes, by_op, samples, churn_time), quiet_after) = churned;
    report.writes = writes;
    report.by_op = by_op;
    report.samples = samples;
    report.churn_time = churn_time;
    report.quiet_after = quiet_after;
    report.timeline = timeline;
    report.unresolved = pending.in_flight();
    report.never_seen = pending.describe();
    report.overflows = pending.overflows.load(Ordering::Relaxed);
    let seen = std::mem::take(&mut *pending.seen.lock().unwrap_or_else(|p| p.into_inner()));
    report.latencies = seen.resolved;
    report.commits = seen.commits;
    let metrics = bed.metrics();
    let metric = |name: &str| metrics.get(name).copied().unwrap_or(0.0) as u64;
    report.syncs = (
        metric("kubeproxy_sync_proxy_rules_duration_seconds_count"),
        metric("kubeproxy_sync_full_proxy_rules_duration_seconds_count"),
        metric("kubeproxy_sync_partial_proxy_rules_duration_seconds_count"),
    );
    report.sync_failures = metric("kubeproxy_sync_proxy_rules_nftables_sync_failures_total");
    report.drift_repairs = metric("proxier_sync_proxy_rules_drift_repairs_total");
    if config.check {
        say("comparing the kernel with the cluster");
        check(&bed, config, &mut report)?;
        report.checked = true;
    }
    Ok(report)
}

/// `proxier diff` of the API server's objects against the live table, attributed to Services by the
/// addresses on each differing line.
fn check(bed: &Bed, config: &Config, report: &mut Report) -> Result<(), String> {
    let snapshot = bed.api.snapshot();
    let path = std::env::temp_dir().join(format!("{}.desired.json", bed.netns.name()));
    std::fs::write(&path, snapshot.to_string()).map_err(|e| e.to_string())?;
    let output = Command::new("ip")
        .args(["netns", "exec", bed.netns.name()])
        .arg(&config.proxier)
        .args(["diff", "-f"])
        .arg(&path)
        .args(["--node", NODE, "--cluster-cidr", generator::CLUSTER_CIDR, "--color=never"])
        // The one `proxier run` flag the churn runs use that changes the rules themselves.
        .args(config.proxier_args.iter().filter(|a| *a == "--no-counters"))
        .output()
        .map_err(|e| e.to_string());
    let _ = std::fs::remove_file(&path);
    let output = output?;
    let text = String::from_utf8_lossy(&output.stdout);
    match output.status.code() {
        Some(0) | Some(1) => {}
        _ => return Err(format!("proxier diff failed: {}", String::from_utf8_lossy(&output.stderr))),
    }
    // Which Service each address belongs to.
    let mut owner: HashMap<Ipv4Addr, String> = HashMap::new();
    for item in snapshot["items"].as_array().into_iter().flatten() {
        let namespace = item["metadata"]["namespace"].as_str().unwrap_or("");
        match item["kind"].as_str() {
            Some("Service") => {
                let name = format!("{namespace}/{}", item["metadata"]["name"].as_str().unwrap_or(""));
                let spec = &item["spec"];
                let addresses = spec["clusterIPs"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .chain(spec["externalIPs"].as_array().into_iter().flatten())
                    .chain(
                        item["status"]["loadBalancer"]["ingress"].as_array().into_iter().flatten().map(|i| &i["ip"]),
                    );
                for ip in addresses.filter_map(|a| a.as_str()?.parse().ok()) {
                    owner.insert(ip, name.clone());
                }
            }
            Some("EndpointSlice") => {
                let service = item["metadata"]["labels"]["kubernetes.io/service-name"].as_str().unwrap_or("");
                let name = format!("{namespace}/{service}");
                for endpoint in item["endpoints"].as_array().into_iter().flatten() {
                    if let Some(ip) = endpoint["addresses"][0].as_str().and_then(|a| a.parse().ok()) {
                        owner.insert(ip, name.clone());
                    }
                }
            }
            _ => {}
        }
    }
    // Backends keep their positions across changes in a live table, while the desired side is laid out
    // afresh: the same element may sit in another position's map. A line the live side lacks and the
    // desired side has, or the reverse, counts; the same line on both sides (moved) does not.
    let mut moved: HashMap<String, i64> = HashMap::new();
    for line in text.lines() {
        let sign = match line.as_bytes().first() {
            Some(b'+') if !line.starts_with("+++") => 1,
            Some(b'-') if !line.starts_with("---") => -1,
            _ => continue,
        };
        *moved.entry(line[1..].trim().trim_end_matches(',').to_owned()).or_default() += sign;
    }
    let mut differing: Vec<(&String, i64)> = moved.iter().filter(|(_, n)| **n != 0).map(|(l, n)| (l, *n)).collect();
    differing.sort();
    for (line, count) in differing {
        let count = count.unsigned_abs() as usize;
        report.diff_lines += count;
        let services: HashSet<&String> = line
            .split(|c: char| !(c.is_ascii_digit() || c == '.'))
            .filter_map(|t| t.parse::<Ipv4Addr>().ok())
            .filter_map(|ip| owner.get(&ip))
            .collect();
        if services.is_empty() {
            if report.unattributed.len() < 10 {
                report.unattributed.push(line.clone());
            }
            *report.mismatches.entry("(no Service address on the line)".into()).or_default() += count;
        }
        for service in services {
            *report.mismatches.entry(service.clone()).or_default() += count;
        }
    }
    Ok(())
}

/// Starts proxier on the generated cluster and sends SIGTERM while its first full sync runs: once an
/// `nft -j -f` child loads the table, or one second after proxier logged the sync's start (the sync
/// computes and loads in-process when the transaction goes over netlink; at 44k it takes seconds, so one
/// second in is mid-sync). Returns how long proxier took to exit and where the sync was, or None if no
/// full sync was caught under way.
pub fn sigterm_during_full_sync(config: &Config) -> Result<Option<(Duration, &'static str)>, String> {
    let objects = generate(config.services, config.endpoints, config.seed)?;
    let mut bed = Bed::new(objects)?;
    let pid = bed.start_proxier(&config.proxier, &config.proxier_args)?;
    let started = Instant::now();
    let mut sync_started: Option<Instant> = None;
    while started.elapsed() < Duration::from_secs(600) {
        if !bed.proxier_alive() {
            return Err(format!("proxier exited; see {}", bed.log.display()));
        }
        let log = std::fs::read_to_string(&bed.log).unwrap_or_default();
        if let Some((_, after)) = log.split_once("full sync: programming the whole cluster") {
            sync_started.get_or_insert_with(Instant::now);
            if after.contains("synced") {
                // Finished before the signal could be sent.
                return Ok(None);
            }
        }
        // `nft -j -f -` is a load; the `nft` proxier runs at start (to look for kube-proxy's leftovers)
        // lists and must not count.
        let phase = if child_loading(pid) {
            Some("nft loading the transaction")
        } else if sync_started.is_some_and(|t| t.elapsed() >= Duration::from_secs(1)) {
            Some("one second into the sync")
        } else {
            None
        };
        if let Some(phase) = phase {
            // SAFETY: a signal to the process this driver started.
            unsafe { libc::kill(pid as i32, libc::SIGTERM) };
            let sent = Instant::now();
            let Some(child) = bed.proxier.as_mut() else { return Ok(None) };
            loop {
                if let Ok(Some(_)) = child.try_wait() {
                    return Ok(Some((sent.elapsed(), phase)));
                }
                if sent.elapsed() > Duration::from_secs(120) {
                    return Err("proxier did not exit within 120 s of SIGTERM".into());
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(None)
}

/// Whether `pid` has an `nft -j -f` child (loading a transaction).
fn child_loading(pid: u32) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else { return false };
    entries.filter_map(Result::ok).any(|entry| {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { return false };
        // pid (comm) state ppid …
        let Some((head, tail)) = stat.rsplit_once(')') else { return false };
        let comm = head.split_once('(').map_or("", |(_, c)| c);
        let ppid = tail.split_whitespace().nth(1).and_then(|p| p.parse::<u32>().ok());
        if comm != "nft" || ppid != Some(pid) {
            return false;
        }
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        cmdline.split(|b| *b == 0).any(|arg| arg == b"-f")
    })
}

/// The stand-in API server alone: writes slice updates as fast as it takes them for `duration` while
/// `watchers` clients watch EndpointSlices (as proxier does), and returns (writes, seconds, the time
/// the slowest watcher took after the last write to have every event).
pub fn server_alone(services: usize, duration: Duration, watchers: usize) -> Result<(u64, f64, f64), String> {
    let objects = generate(services, 10, 1)?;
    let mut model = Model::new(&objects);
    let bed = Bed::new(objects)?;
    let address = bed.api.address();
    let last_rv = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let received: Arc<Vec<std::sync::atomic::AtomicU64>> =
        Arc::new((0..watchers).map(|_| std::sync::atomic::AtomicU64::new(0)).collect());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let from = bed.api.resource_version();
    std::thread::scope(|scope| -> Result<(u64, f64, f64), String> {
        for w in 0..watchers {
            let received = received.clone();
            let stop = stop.clone();
            let netns = &bed.netns;
            scope.spawn(move || {
                netns.run(|| watch_slices(address, from, &received[w], &stop));
            });
        }
        // Let the watches start.
        std::thread::sleep(Duration::from_millis(500));
        let mut rng = Rng(7);
        let start = Instant::now();
        let mut writes = 0u64;
        while start.elapsed() < duration {
            let index = rng.below(model.services.len());
            let slice = &mut model.services[index].slice;
            if let Some(endpoint) = slice["endpoints"].as_array_mut().and_then(|e| e.first_mut()) {
                let ready = !endpoint["conditions"]["ready"].as_bool().unwrap_or(true);
                endpoint["conditions"]["ready"] = json!(ready);
            }
            let rv = bed.api.apply(slice.clone());
            last_rv.store(rv, Ordering::Relaxed);
            writes += 1;
        }
        let seconds = start.elapsed().as_secs_f64();
        let target = last_rv.load(Ordering::Relaxed);
        let done = Instant::now();
        while received.iter().any(|r| r.load(Ordering::Relaxed) < target) && done.elapsed() < Duration::from_secs(120) {
            std::thread::sleep(Duration::from_millis(5));
        }
        let lag = done.elapsed().as_secs_f64();
        stop.store(true, Ordering::Relaxed);
        bed.api.drop_watches();
        Ok((writes, seconds, lag))
    })
}

/// A plain watch client: reads newline-delimited events and records the last resourceVersion seen.
fn watch_slices(
    address: SocketAddr,
    rv: u64,
    received: &std::sync::atomic::AtomicU64,
    stop: &std::sync::atomic::AtomicBool,
) {
    let Ok(mut stream) = TcpStream::connect(address) else { return };
    let request = format!(
        "GET /apis/discovery.k8s.io/v1/endpointslices?watch=true&resourceVersion={rv}&labelSelector=kubernetes.io%2Fservice-name&allowWatchBookmarks=true HTTP/1.1\r\nHost: x\r\n\r\n"
    );
    if stream.write_all(request.as_bytes()).is_err() {
        return;
    }
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let mut buf = vec![0u8; 1 << 20];
    let mut carry: Vec<u8> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let n = match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(_) => continue,
        };
        carry.extend_from_slice(&buf[..n]);
        // The last complete event's resourceVersion is enough (events arrive in order); chunk framing
        // lines are skipped as they do not parse.
        if let Some(end) = carry.iter().rposition(|b| *b == b'\n') {
            let text = String::from_utf8_lossy(&carry[..end]);
            let last = text.lines().rev().find_map(|line| {
                let event: Value = serde_json::from_str(line.trim()).ok()?;
                event["object"]["metadata"]["resourceVersion"].as_str()?.parse::<u64>().ok()
            });
            if let Some(last) = last {
                received.store(last, Ordering::Relaxed);
            }
            carry.drain(..=end);
        }
    }
}

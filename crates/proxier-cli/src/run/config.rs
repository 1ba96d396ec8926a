//! `proxier run`'s settings: command-line flags (spelled as kube-proxy spells them), a
//! KubeProxyConfiguration file (`--config`: v1alpha1 as kubeadm writes it, or v1alpha2) and kube-proxy's
//! defaults. A flag given on the command line wins over the file. In the file, an empty, zero or null
//! value means kube-proxy's default, as it does for kube-proxy, so kubeadm's ConfigMap works unchanged.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, ValueEnum};
use ipnet::IpNet;
use proxier_core::NodeConfig;
use serde::Deserialize;
use serde_json::Value;

use crate::flags::{
    DetectLocalMode, LOCALHOST_NODEPORTS, NodeArgs, NodePortAddress, NodePortAddresses, cidr, interface_name,
    ip_address, nodeport_address,
};

pub const DEFAULT_SYNC_PERIOD: Duration = Duration::from_secs(30);
pub const DEFAULT_MIN_SYNC_PERIOD: Duration = Duration::from_secs(1);
pub const DEFAULT_HEALTHZ: &str = "0.0.0.0:10256";
pub const DEFAULT_METRICS: &str = "127.0.0.1:10249";
const DEFAULT_HEALTHZ_PORT: u16 = 10256;
const DEFAULT_METRICS_PORT: u16 = 10249;
/// kube-proxy's conntrack defaults: 32,768 entries per core, at least 131,072; established TCP 24 h,
/// close-wait 1 h.
pub const DEFAULT_CONNTRACK_MAX_PER_CORE: u32 = 32_768;
pub const DEFAULT_CONNTRACK_MIN: u32 = 131_072;
pub const DEFAULT_TCP_ESTABLISHED: Duration = Duration::from_secs(24 * 3600);
pub const DEFAULT_TCP_CLOSE_WAIT: Duration = Duration::from_secs(3600);
/// kube-proxy's default oomScoreAdj: the OOM killer picks almost anything else first.
pub const DEFAULT_OOM_SCORE_ADJ: i32 = -999;

const V1ALPHA1: &str = "kubeproxy.config.k8s.io/v1alpha1";
const V1ALPHA2: &str = "kubeproxy.config.k8s.io/v1alpha2";

/// `--logging-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One line of `key=value` text per event.
    Text,
    /// One JSON object per event.
    Json,
}

/// `proxier run` flags.
#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub node: NodeArgs,
    /// Kubeconfig file; without it, the usual inference (KUBECONFIG, ~/.kube/config, then the in-cluster
    /// service account when running in a pod).
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// A KubeProxyConfiguration file (v1alpha1 or v1alpha2), e.g. kube-proxy's ConfigMap; flags win over it.
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// The Node name, as kube-proxy spells it (`--node` wins; without either, the host name).
    #[arg(long, value_name = "NAME")]
    pub hostname_override: Option<String>,
    /// kube-proxy's mode flag: only `nftables` (or empty) is accepted; proxier is an nftables proxy.
    #[arg(long, value_name = "MODE")]
    pub proxy_mode: Option<String>,
    /// Log verbosity as kube-proxy's klog levels: 0-2 info, 3-4 debug, 5 and more trace (RUST_LOG, when
    /// set, wins) [default: 0].
    #[arg(short = 'v', long = "v", value_name = "LEVEL")]
    pub verbosity: Option<u8>,
    /// Log format [default: text].
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub logging_format: Option<LogFormat>,
    /// The node's address, as kube-proxy's --bind-address sets it (`0.0.0.0` or `::`: from the Node object).
    #[arg(long, value_name = "IP")]
    pub bind_address: Option<IpAddr>,
    /// Remove proxier's tables (and nothing else), then exit.
    #[arg(long, conflicts_with = "init_only")]
    pub cleanup: bool,
    /// Apply the conntrack and OOM settings, then exit (for an initContainer).
    #[arg(long)]
    pub init_only: bool,
    /// How often the kernel's tables are checked against the committed state and repaired (default 30s).
    #[arg(long, value_name = "DURATION", value_parser = go_duration)]
    pub sync_period: Option<Duration>,
    /// The least time between two syncs: bursts of changes are coalesced into one (default 1s).
    #[arg(long, value_name = "DURATION", value_parser = go_duration)]
    pub min_sync_period: Option<Duration>,
    /// Where /healthz and /livez are served (default 0.0.0.0:10256; a bare IP takes port 10256; empty
    /// disables).
    #[arg(long, value_name = "IP:PORT")]
    pub healthz_bind_address: Option<String>,
    /// Where /metrics, /healthz, /proxyMode and /configz are served (default 127.0.0.1:10249; a bare IP
    /// takes port 10249; empty disables).
    #[arg(long, value_name = "IP:PORT")]
    pub metrics_bind_address: Option<String>,
    /// The conntrack program, for deleting stale UDP entries; `none` disables the cleanup.
    #[arg(long, default_value = "conntrack", value_name = "PATH")]
    pub conntrack: PathBuf,
    /// Write incremental changes over a persistent nf_tables netlink socket and detect outside changes
    /// of proxier's tables from nf_tables events (`false`: every change through `nft`, and the periodic
    /// check lists the tables).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub netlink: bool,
    /// Conntrack entries allowed per CPU core (0 leaves nf_conntrack_max as it is) [default: 32768].
    #[arg(long, value_name = "N")]
    pub conntrack_max_per_core: Option<u32>,
    /// The least nf_conntrack_max, whatever the core count [default: 131072].
    #[arg(long, value_name = "N")]
    pub conntrack_min: Option<u32>,
    /// Idle timeout of established TCP connections (0 leaves it as it is) [default: 24h0m0s].
    #[arg(long, value_name = "DURATION", value_parser = go_duration)]
    pub conntrack_tcp_timeout_established: Option<Duration>,
    /// Timeout of TCP connections in CLOSE_WAIT (0 leaves it as it is) [default: 1h0m0s].
    #[arg(long, value_name = "DURATION", value_parser = go_duration)]
    pub conntrack_tcp_timeout_close_wait: Option<Duration>,
    /// Let conntrack accept out-of-window TCP packets (nf_conntrack_tcp_be_liberal).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub conntrack_tcp_be_liberal: Option<bool>,
    /// Timeout of unreplied UDP flows (0 leaves it as it is) [default: 0].
    #[arg(long, value_name = "DURATION", value_parser = go_duration)]
    pub conntrack_udp_timeout: Option<Duration>,
    /// Timeout of UDP flows that saw replies (0 leaves it as it is) [default: 0].
    #[arg(long, value_name = "DURATION", value_parser = go_duration)]
    pub conntrack_udp_timeout_stream: Option<Duration>,
    /// The OOM score adjustment of the proxier process, -1000..1000 [default: -999].
    #[arg(long, value_name = "N", allow_negative_numbers = true,
          value_parser = clap::value_parser!(i32).range(-1000..=1000))]
    pub oom_score_adj: Option<i32>,
}

/// The conntrack settings kube-proxy applies at start. `None` leaves the kernel's value as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConntrackSettings {
    /// `maxPerCore` × cores, at least `min`; global to the host, so set only where the kernel allows.
    pub max_per_core: u32,
    pub min: u32,
    #[serde(serialize_with = "go_duration_opt")]
    pub tcp_established_timeout: Option<Duration>,
    #[serde(serialize_with = "go_duration_opt")]
    pub tcp_close_wait_timeout: Option<Duration>,
    pub tcp_be_liberal: bool,
    #[serde(serialize_with = "go_duration_opt")]
    pub udp_timeout: Option<Duration>,
    #[serde(serialize_with = "go_duration_opt")]
    pub udp_stream_timeout: Option<Duration>,
}

impl ConntrackSettings {
    /// nf_conntrack_max for `cores` cores, or `None` to leave it (`maxPerCore` 0), as kube-proxy computes it.
    pub fn max(&self, cores: usize) -> Option<u64> {
        if self.max_per_core == 0 {
            return None;
        }
        let scaled = u64::from(self.max_per_core).saturating_mul(cores as u64);
        Some(scaled.max(u64::from(self.min)))
    }
}

/// Everything `proxier run` needs, flags and file merged.
#[derive(Debug, Clone)]
pub struct Settings {
    pub node: NodeConfig,
    /// `--nodeport-addresses` / `nodePortAddresses`: whether `primary` was named, and the CIDRs. NodePorts
    /// are served on the node's primary addresses (with `primary`, or when nothing is given) and on every
    /// local address inside the CIDRs.
    pub nodeport_primary: bool,
    pub nodeport_cidrs: Vec<IpNet>,
    pub table: String,
    pub nft: PathBuf,
    pub conntrack: Option<PathBuf>,
    pub netlink: bool,
    pub kubeconfig: Option<PathBuf>,
    pub sync_period: Duration,
    pub min_sync_period: Duration,
    pub healthz: Option<SocketAddr>,
    pub metrics: Option<SocketAddr>,
    pub conntrack_settings: ConntrackSettings,
    pub oom_score_adj: i32,
    pub log_format: LogFormat,
    pub verbosity: u8,
    pub cleanup: bool,
    pub init_only: bool,
    /// Where the Node name came from, for the start line.
    pub node_name_source: &'static str,
    /// Per-destination counters in the tables, exported as metrics (off with --no-counters).
    pub counters: bool,
}

/// The parts of a KubeProxyConfiguration file `proxier run` uses, defaults not yet applied (`None`:
/// the file leaves it to the default).
#[derive(Debug, Default, PartialEq)]
pub struct FileConfig {
    pub hostname_override: Option<String>,
    /// The node's addresses: v1alpha1's `bindAddress` (unless unspecified) or v1alpha2's `nodeIPOverride`.
    pub node_ips: Vec<IpAddr>,
    pub cluster_cidrs: Vec<IpNet>,
    pub nodeport_addresses: Vec<NodePortAddress>,
    pub masquerade_all: bool,
    pub sync_period: Option<Duration>,
    pub min_sync_period: Option<Duration>,
    pub healthz: Option<String>,
    pub metrics: Option<String>,
    pub kubeconfig: Option<PathBuf>,
    pub detect_local_mode: Option<DetectLocalMode>,
    /// `detectLocal.bridgeInterface`.
    pub bridge_interface: Option<String>,
    /// `detectLocal.interfaceNamePrefix`.
    pub interface_name_prefix: Option<String>,
    pub conntrack_max_per_core: Option<u32>,
    pub conntrack_min: Option<u32>,
    pub tcp_established: Option<Duration>,
    pub tcp_close_wait: Option<Duration>,
    pub tcp_be_liberal: bool,
    pub udp_timeout: Option<Duration>,
    pub udp_stream_timeout: Option<Duration>,
    pub oom_score_adj: Option<i32>,
    pub log_format: Option<LogFormat>,
    pub verbosity: Option<u8>,
    /// Set fields proxier does not use, each with why (dotted path, reason). Fields left at their zero
    /// value are not listed: kubeadm writes every field.
    pub ignored: Vec<(String, &'static str)>,
}

// The file as kube-proxy's types declare it (k8s.io/kube-proxy/config/v1alpha1 and v1alpha2), both
// versions in one struct: [`by_version`] then sets aside the fields of the version the file is not.
// v1alpha2 moved the sync periods to the top; the conntrack settings, masqueradeAll and oomScoreAdj
// under `linux`; the cluster CIDRs under `detectLocal`; the node address to `nodeIPOverride`; the
// server addresses to lists of CIDRs and a port. Every section is optional and every value may be null.

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct KubeProxyConfiguration {
    api_version: Option<String>,
    kind: Option<String>,
    feature_gates: Option<Value>,
    client_connection: Option<ClientConnection>,
    logging: Option<Logging>,
    hostname_override: Option<String>,
    bind_address: Option<String>,
    healthz_bind_address: Option<String>,
    metrics_bind_address: Option<String>,
    #[serde(rename = "nodeIPOverride")]
    node_ip_override: Option<Vec<String>>,
    healthz_bind_addresses: Option<Vec<String>>,
    healthz_bind_port: Option<i64>,
    metrics_bind_addresses: Option<Vec<String>>,
    metrics_bind_port: Option<i64>,
    config_hard_fail: Option<bool>,
    bind_address_hard_fail: Option<bool>,
    enable_profiling: Option<bool>,
    show_hidden_metrics_for_version: Option<String>,
    mode: Option<String>,
    iptables: Option<Value>,
    ipvs: Option<Value>,
    winkernel: Option<Value>,
    windows: Option<Value>,
    windows_run_as_service: Option<Value>,
    nftables: Option<NftablesSection>,
    detect_local_mode: Option<String>,
    detect_local: Option<DetectLocalSection>,
    #[serde(rename = "clusterCIDR")]
    cluster_cidr: Option<String>,
    node_port_addresses: Option<Vec<String>>,
    conntrack: Option<ConntrackSection>,
    linux: Option<LinuxSection>,
    oom_score_adj: Option<i32>,
    port_range: Option<String>,
    udp_idle_timeout: Option<String>,
    config_sync_period: Option<String>,
    sync_period: Option<String>,
    min_sync_period: Option<String>,
    #[serde(flatten)]
    unknown: BTreeMap<String, Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct ClientConnection {
    kubeconfig: Option<String>,
    accept_content_types: Option<String>,
    content_type: Option<String>,
    qps: Option<Value>,
    burst: Option<Value>,
    #[serde(flatten)]
    unknown: BTreeMap<String, Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct Logging {
    format: Option<String>,
    verbosity: Option<u8>,
    flush_frequency: Option<Value>,
    vmodule: Option<Value>,
    options: Option<Value>,
    #[serde(flatten)]
    unknown: BTreeMap<String, Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct NftablesSection {
    sync_period: Option<String>,
    min_sync_period: Option<String>,
    masquerade_all: Option<bool>,
    masquerade_bit: Option<Value>,
    #[serde(flatten)]
    unknown: BTreeMap<String, Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct DetectLocalSection {
    bridge_interface: Option<String>,
    interface_name_prefix: Option<String>,
    #[serde(rename = "clusterCIDRs")]
    cluster_cidrs: Option<Vec<String>>,
    #[serde(flatten)]
    unknown: BTreeMap<String, Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct ConntrackSection {
    max_per_core: Option<u32>,
    min: Option<u32>,
    tcp_established_timeout: Option<String>,
    tcp_close_wait_timeout: Option<String>,
    tcp_be_liberal: Option<bool>,
    udp_timeout: Option<String>,
    udp_stream_timeout: Option<String>,
    #[serde(flatten)]
    unknown: BTreeMap<String, Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct LinuxSection {
    conntrack: Option<ConntrackSection>,
    masquerade_all: Option<bool>,
    oom_score_adj: Option<i32>,
    #[serde(flatten)]
    unknown: BTreeMap<String, Value>,
}

/// Whether a value is the zero value Go writes for an unset field: null, false, 0, "", "0", "0s", an
/// empty list, or an object of zero values.
fn is_zero(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty() || s == "0" || s == "0s",
        Value::Array(items) => items.is_empty(),
        Value::Object(fields) => fields.values().all(is_zero),
    }
}

/// kube-proxy's defaults (k8s.io/kubernetes pkg/proxy/apis/config/v1alpha1 and v1alpha2 defaults.go) of
/// the fields proxier does not use: a file that spells them out (kube-proxy's own `/configz`, an older
/// kubeadm's ConfigMap) asks for nothing proxier does not do.
const KUBE_PROXY_DEFAULTS: &[(&str, &str)] = &[
    ("clientConnection.contentType", "application/vnd.kubernetes.protobuf"),
    ("clientConnection.qps", "5"),
    ("clientConnection.burst", "10"),
    ("configSyncPeriod", "15m"),
    ("logging.flushFrequency", "5s"),
    ("nftables.masqueradeBit", "14"),
    ("iptables.masqueradeBit", "14"),
    ("iptables.syncPeriod", "30s"),
    ("iptables.minSyncPeriod", "1s"),
    ("iptables.localhostNodePorts", "true"),
    ("ipvs.masqueradeBit", "14"),
    ("ipvs.syncPeriod", "30s"),
    ("udpIdleTimeout", "250ms"),
];

/// Whether `value` is kube-proxy's default for the field `name` (durations compared as durations; a
/// number for a duration is nanoseconds, as older versions wrote `flushFrequency`).
fn is_kube_proxy_default(name: &str, value: &Value) -> bool {
    let Some((_, default)) = KUBE_PROXY_DEFAULTS.iter().find(|(field, _)| *field == name) else {
        return false;
    };
    let duration_of = |value: &Value| match value {
        Value::String(s) => go_duration(s).ok(),
        Value::Number(n) => n.as_u64().map(Duration::from_nanos),
        _ => None,
    };
    match (go_duration(default), value) {
        (Ok(default), value) if default > Duration::ZERO => duration_of(value) == Some(default),
        (_, Value::String(s)) => s == default,
        (_, Value::Number(n)) => n.to_string() == *default,
        (_, Value::Bool(b)) => b.to_string() == *default,
        _ => false,
    }
}

/// A string field: empty means unset.
fn text(value: Option<String>) -> Option<String> {
    value.filter(|s| !s.is_empty())
}

/// A duration field: empty or zero means the default.
fn duration(value: Option<String>, name: &str) -> Result<Option<Duration>, String> {
    match text(value) {
        None => Ok(None),
        Some(t) => go_duration(&t).map(|d| Some(d).filter(|d| !d.is_zero())).map_err(|e| format!("{name}: {e}")),
    }
}

/// A conntrack timeout: null means the default, zero means "leave the kernel's value" (kube-proxy).
fn timeout(value: Option<String>, name: &str) -> Result<Option<Duration>, String> {
    match value {
        None => Ok(None),
        Some(t) if t.is_empty() => Ok(None),
        Some(t) => go_duration(&t).map(Some).map_err(|e| format!("{name}: {e}")),
    }
}

/// Comma-separated or listed CIDRs.
fn cidrs<'a>(items: impl IntoIterator<Item = &'a str>, name: &str) -> Result<Vec<IpNet>, String> {
    items
        .into_iter()
        .flat_map(|s| s.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().map_err(|e| format!("{name}: {s:?}: {e}")))
        .collect()
}

impl FileConfig {
    fn ignore_unknown(&mut self, prefix: &str, unknown: BTreeMap<String, Value>) {
        for key in unknown.into_keys() {
            self.ignored.push((format!("{prefix}{key}"), "not a KubeProxyConfiguration field"));
        }
    }

    /// Lists `value` as ignored when it is set to something other than its zero value or kube-proxy's
    /// default (what kube-proxy itself writes for the field, e.g. in an older kubeadm's ConfigMap).
    fn ignore_if_set(&mut self, name: &str, value: &Option<Value>, why: &'static str) {
        if value.as_ref().is_some_and(|v| !is_zero(v) && !is_kube_proxy_default(name, v)) {
            self.ignored.push((name.to_owned(), why));
        }
    }

    fn conntrack(&mut self, section: ConntrackSection, prefix: &str) -> Result<(), String> {
        let name = |field: &str| format!("{prefix}{field}");
        self.conntrack_max_per_core = section.max_per_core.or(self.conntrack_max_per_core);
        self.conntrack_min = section.min.or(self.conntrack_min);
        self.tcp_established =
            timeout(section.tcp_established_timeout, &name("tcpEstablishedTimeout"))?.or(self.tcp_established);
        self.tcp_close_wait =
            timeout(section.tcp_close_wait_timeout, &name("tcpCloseWaitTimeout"))?.or(self.tcp_close_wait);
        self.tcp_be_liberal |= section.tcp_be_liberal.unwrap_or(false);
        self.udp_timeout = duration(section.udp_timeout, &name("udpTimeout"))?.or(self.udp_timeout);
        self.udp_stream_timeout =
            duration(section.udp_stream_timeout, &name("udpStreamTimeout"))?.or(self.udp_stream_timeout);
        self.ignore_unknown(prefix, section.unknown);
        Ok(())
    }
}

/// Fields only one version has: (name, where the other version has it).
const V1ALPHA1_ONLY: &[(&str, &str)] = &[
    ("bindAddress", "nodeIPOverride"),
    ("healthzBindAddress", "healthzBindAddresses and healthzBindPort"),
    ("metricsBindAddress", "metricsBindAddresses and metricsBindPort"),
    ("clusterCIDR", "detectLocal.clusterCIDRs"),
    ("conntrack", "linux.conntrack"),
    ("oomScoreAdj", "linux.oomScoreAdj"),
    ("portRange", "nothing: it was removed"),
    ("udpIdleTimeout", "nothing: it was removed"),
    ("windowsRunAsService", "windows.runAsService"),
    ("nftables.syncPeriod", "syncPeriod"),
    ("nftables.minSyncPeriod", "minSyncPeriod"),
    ("nftables.masqueradeAll", "linux.masqueradeAll"),
    ("iptables.syncPeriod", "syncPeriod"),
    ("iptables.minSyncPeriod", "minSyncPeriod"),
    ("iptables.masqueradeAll", "linux.masqueradeAll"),
    ("ipvs.syncPeriod", "syncPeriod"),
    ("ipvs.minSyncPeriod", "minSyncPeriod"),
];
const V1ALPHA2_ONLY: &str = "a v1alpha2 field, and this file is v1alpha1 (kube-proxy ignores it too)";

/// Sets aside the fields of the version `file` is not, as kube-proxy reads it: a v1alpha1 file (or one
/// without apiVersion) with v1alpha2's fields has them ignored, named in [`FileConfig::ignored`]
/// (kube-proxy's lenient decoding drops them with a warning); a v1alpha2 file with v1alpha1's fields is
/// refused, naming the field and where v1alpha2 has it (kube-proxy refuses it too).
fn by_version(file: &mut KubeProxyConfiguration, config: &mut FileConfig) -> Result<(), String> {
    if file.api_version.as_deref() == Some(V1ALPHA2) {
        let section_has = |section: &Option<Value>, key: &str| {
            section.as_ref().and_then(Value::as_object).is_some_and(|fields| fields.contains_key(key))
        };
        let nftables = file.nftables.as_ref();
        let present = |name: &str| match name {
            "bindAddress" => file.bind_address.is_some(),
            "healthzBindAddress" => file.healthz_bind_address.is_some(),
            "metricsBindAddress" => file.metrics_bind_address.is_some(),
            "clusterCIDR" => file.cluster_cidr.is_some(),
            "conntrack" => file.conntrack.is_some(),
            "oomScoreAdj" => file.oom_score_adj.is_some(),
            "portRange" => file.port_range.is_some(),
            "udpIdleTimeout" => file.udp_idle_timeout.is_some(),
            "windowsRunAsService" => file.windows_run_as_service.is_some(),
            "nftables.syncPeriod" => nftables.is_some_and(|n| n.sync_period.is_some()),
            "nftables.minSyncPeriod" => nftables.is_some_and(|n| n.min_sync_period.is_some()),
            "nftables.masqueradeAll" => nftables.is_some_and(|n| n.masquerade_all.is_some()),
            other => match other.split_once('.') {
                Some(("iptables", key)) => section_has(&file.iptables, key),
                Some(("ipvs", key)) => section_has(&file.ipvs, key),
                _ => false,
            },
        };
        let misplaced: Vec<String> = V1ALPHA1_ONLY
            .iter()
            .filter(|(name, _)| present(name))
            .map(|(name, instead)| format!("{name} (v1alpha2 has {instead})"))
            .collect();
        if !misplaced.is_empty() {
            return Err(format!("v1alpha1 fields in a {V1ALPHA2} file: {}", misplaced.join(", ")));
        }
        return Ok(());
    }
    let mut set_aside = |name: &str, present: bool| {
        if present {
            config.ignored.push((name.to_owned(), V1ALPHA2_ONLY));
        }
    };
    set_aside("syncPeriod", file.sync_period.take().is_some());
    set_aside("minSyncPeriod", file.min_sync_period.take().is_some());
    set_aside("linux", file.linux.take().is_some());
    set_aside("windows", file.windows.take().is_some());
    set_aside("nodeIPOverride", file.node_ip_override.take().is_some());
    set_aside("healthzBindAddresses", file.healthz_bind_addresses.take().is_some());
    set_aside("healthzBindPort", file.healthz_bind_port.take().is_some());
    set_aside("metricsBindAddresses", file.metrics_bind_addresses.take().is_some());
    set_aside("metricsBindPort", file.metrics_bind_port.take().is_some());
    set_aside("configHardFail", file.config_hard_fail.take().is_some());
    let cluster_cidrs = file.detect_local.as_mut().and_then(|d| d.cluster_cidrs.take());
    set_aside("detectLocal.clusterCIDRs", cluster_cidrs.is_some());
    Ok(())
}

/// v1alpha2's `healthzBindAddresses`/`metricsBindAddresses` and port, as the one `IP:PORT` proxier
/// serves on (`None`: neither given, the default): a zero CIDR is every address (`0.0.0.0`, or `[::]`
/// without an IPv4 one), a loopback range its first address, a single address itself; IPv4 first.
/// Other ranges would need a node address inside them chosen at run time: refused, saying so.
fn server_address(
    server: &str,
    addresses: Vec<String>,
    port: Option<i64>,
    default: &str,
) -> Result<Option<String>, String> {
    let addresses_field = format!("{server}BindAddresses");
    let port = match port.filter(|p| *p != 0) {
        None => None,
        Some(p) => Some(u16::try_from(p).map_err(|_| format!("{server}BindPort: {p} is not a port from 1 to 65535"))?),
    };
    let nets = addresses
        .iter()
        .filter(|a| !a.is_empty())
        .map(|a| cidr(a).map_err(|e| format!("{addresses_field}: {e}")))
        .collect::<Result<Vec<IpNet>, String>>()?;
    if nets.is_empty() && port.is_none() {
        return Ok(None);
    }
    let default: SocketAddr = default.parse().map_err(|e| format!("{default}: {e}"))?;
    let mut candidates = Vec::new();
    for net in &nets {
        let loopback =
            if net.addr().is_ipv4() { IpAddr::from([127, 0, 0, 1]) } else { IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]) };
        // A zero CIDR's address is the unspecified one (every address); a single address is itself.
        let ip = if net.prefix_len() == 0 || net.prefix_len() == net.max_prefix_len() {
            net.addr()
        } else if net.contains(&loopback) {
            loopback
        } else {
            return Err(format!(
                "{addresses_field}: {net}: proxier serves {server} on one address: give 0.0.0.0/0 or ::/0 (every \
                 address), a loopback range, or one address (/32, /128)"
            ));
        };
        candidates.push(ip);
    }
    let ip = candidates.iter().find(|ip| ip.is_ipv4()).or(candidates.first()).copied().unwrap_or(default.ip());
    Ok(Some(SocketAddr::new(ip, port.unwrap_or(default.port())).to_string()))
}

/// Reads a KubeProxyConfiguration file.
pub fn read_config(path: &Path) -> Result<FileConfig, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse_config(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Parses a KubeProxyConfiguration (kubeproxy.config.k8s.io/v1alpha1 or v1alpha2).
pub fn parse_config(source: &str) -> Result<FileConfig, String> {
    let file: KubeProxyConfiguration = serde_yaml_ng::from_str(source).map_err(|e| e.to_string())?;
    match file.api_version.as_deref() {
        None | Some(V1ALPHA1 | V1ALPHA2) => {}
        Some(other) => return Err(format!("apiVersion {other:?}: proxier reads {V1ALPHA1} and {V1ALPHA2}")),
    }
    if let Some(kind) = file.kind.as_deref().filter(|k| *k != "KubeProxyConfiguration") {
        return Err(format!("kind {kind:?}: expected KubeProxyConfiguration"));
    }
    check_mode(file.mode.as_deref().unwrap_or(""), "mode")?;
    let mut config = FileConfig::default();
    let mut file = file;
    by_version(&mut file, &mut config)?;
    const NOT_USED: &str = "not used by proxier";
    const OTHER_MODE: &str = "applies to another kube-proxy mode; proxier is an nftables proxy";

    config.hostname_override = text(file.hostname_override);
    if let Some(t) = text(file.bind_address) {
        let ip: IpAddr = t.parse().map_err(|e| format!("bindAddress: {t:?}: {e}"))?;
        config.node_ips.extend(Some(ip).filter(|ip| !ip.is_unspecified()));
    }
    for t in file.node_ip_override.iter().flatten().filter(|t| !t.is_empty()) {
        config.node_ips.push(ip_address(t).map_err(|e| format!("nodeIPOverride: {e}"))?);
    }
    config.healthz = text(file.healthz_bind_address);
    config.metrics = text(file.metrics_bind_address);
    let servers = [
        ("healthz", file.healthz_bind_addresses, file.healthz_bind_port, DEFAULT_HEALTHZ),
        ("metrics", file.metrics_bind_addresses, file.metrics_bind_port, DEFAULT_METRICS),
    ];
    for (server, addresses, port, default) in servers {
        if let Some(address) = server_address(server, addresses.unwrap_or_default(), port, default)? {
            *(if server == "healthz" { &mut config.healthz } else { &mut config.metrics }) = Some(address);
        }
    }
    if file.config_hard_fail == Some(false) {
        config.ignored.push(("configHardFail".into(), "proxier always refuses a configuration it cannot use"));
    }
    config.cluster_cidrs = cidrs(file.cluster_cidr.as_deref(), "clusterCIDR")?;
    // kube-proxy's forms, read as `--nodeport-addresses` reads them: CIDRs, `primary`, `all`, `localhost`.
    for address in file.node_port_addresses.iter().flatten() {
        let address = nodeport_address(address).map_err(|e| format!("nodePortAddresses: {e}"))?;
        if address == NodePortAddress::Localhost {
            config.ignored.push(("nodePortAddresses: localhost".into(), LOCALHOST_NODEPORTS));
        }
        config.nodeport_addresses.push(address);
    }
    if let Some(mode) = text(file.detect_local_mode) {
        let mode = DetectLocalMode::from_str(&mode, false).map_err(|_| {
            format!("detectLocalMode: {mode:?} is not ClusterCIDR, NodeCIDR, BridgeInterface or InterfaceNamePrefix")
        })?;
        config.detect_local_mode = Some(mode);
    }
    if let Some(section) = file.detect_local {
        let interface = |value: Option<String>, name: &str| {
            text(value).map(|s| interface_name(&s).map_err(|e| format!("detectLocal.{name}: {e}"))).transpose()
        };
        config.bridge_interface = interface(section.bridge_interface, "bridgeInterface")?;
        config.interface_name_prefix = interface(section.interface_name_prefix, "interfaceNamePrefix")?;
        let listed = cidrs(section.cluster_cidrs.iter().flatten().map(String::as_str), "detectLocal.clusterCIDRs")?;
        if !listed.is_empty() {
            config.cluster_cidrs = listed;
        }
        config.ignore_unknown("detectLocal.", section.unknown);
    }
    if let Some(section) = file.nftables {
        config.sync_period = duration(section.sync_period, "nftables.syncPeriod")?;
        config.min_sync_period = duration(section.min_sync_period, "nftables.minSyncPeriod")?;
        config.masquerade_all |= section.masquerade_all.unwrap_or(false);
        config.ignore_if_set(
            "nftables.masqueradeBit",
            &section.masquerade_bit,
            "proxier marks packets for masquerade with its own bit",
        );
        config.ignore_unknown("nftables.", section.unknown);
    }
    // v1alpha2's top-level periods win over the nftables section (they replace it there).
    if let Some(period) = duration(file.sync_period, "syncPeriod")? {
        config.sync_period = Some(period);
    }
    if let Some(period) = duration(file.min_sync_period, "minSyncPeriod")? {
        config.min_sync_period = Some(period);
    }
    if let Some(section) = file.conntrack {
        config.conntrack(section, "conntrack.")?;
    }
    config.oom_score_adj = file.oom_score_adj;
    if let Some(section) = file.linux {
        if let Some(conntrack) = section.conntrack {
            config.conntrack(conntrack, "linux.conntrack.")?;
        }
        config.masquerade_all |= section.masquerade_all.unwrap_or(false);
        config.oom_score_adj = section.oom_score_adj.or(config.oom_score_adj);
        config.ignore_unknown("linux.", section.unknown);
    }
    if let Some(adj) = config.oom_score_adj.filter(|a| !(-1000..=1000).contains(a)) {
        return Err(format!("oomScoreAdj: {adj} is outside -1000..1000"));
    }
    if let Some(section) = file.client_connection {
        config.kubeconfig = text(section.kubeconfig).map(PathBuf::from);
        let strings = [("acceptContentTypes", section.accept_content_types), ("contentType", section.content_type)];
        for (name, value) in strings {
            config.ignore_if_set(
                &format!("clientConnection.{name}"),
                &value.map(Value::String),
                "proxier's client speaks JSON",
            );
        }
        config.ignore_if_set("clientConnection.qps", &section.qps, "proxier's client is not rate-limited");
        config.ignore_if_set("clientConnection.burst", &section.burst, "proxier's client is not rate-limited");
        config.ignore_unknown("clientConnection.", section.unknown);
    }
    if let Some(section) = file.logging {
        config.log_format = match text(section.format).as_deref() {
            None => None,
            Some("text") => Some(LogFormat::Text),
            Some("json") => Some(LogFormat::Json),
            Some(other) => return Err(format!("logging.format: {other:?} is not text or json")),
        };
        config.verbosity = section.verbosity.filter(|v| *v > 0);
        config.ignore_if_set("logging.flushFrequency", &section.flush_frequency, "proxier does not buffer logs");
        config.ignore_if_set("logging.vmodule", &section.vmodule, NOT_USED);
        config.ignore_if_set("logging.options", &section.options, NOT_USED);
        config.ignore_unknown("logging.", section.unknown);
    }
    let others: [(&str, Option<Value>, &'static str); 11] = [
        ("featureGates", file.feature_gates, "proxier has no feature gates"),
        (
            "bindAddressHardFail",
            file.bind_address_hard_fail.map(Value::Bool),
            "proxier always exits when it cannot bind",
        ),
        ("enableProfiling", file.enable_profiling.map(Value::Bool), NOT_USED),
        ("showHiddenMetricsForVersion", file.show_hidden_metrics_for_version.map(Value::String), NOT_USED),
        ("portRange", file.port_range.map(Value::String), OTHER_MODE),
        ("udpIdleTimeout", file.udp_idle_timeout.map(Value::String), OTHER_MODE),
        ("configSyncPeriod", file.config_sync_period.map(Value::String), "proxier's watches need no periodic relist"),
        ("iptables", file.iptables, OTHER_MODE),
        ("ipvs", file.ipvs, OTHER_MODE),
        ("winkernel", file.winkernel, OTHER_MODE),
        ("windows", file.windows.or(file.windows_run_as_service), OTHER_MODE),
    ];
    for (name, value, why) in others {
        // Sections of other modes are named by the fields set in them, so the warning says what is lost.
        match value {
            Some(Value::Object(fields)) => {
                for (field, value) in fields {
                    config.ignore_if_set(&format!("{name}.{field}"), &Some(value), why);
                }
            }
            value => config.ignore_if_set(name, &value, why),
        }
    }
    config.ignore_unknown("", file.unknown);
    Ok(config)
}

/// `mode` / `--proxy-mode`: only nftables, which an empty value means here.
fn check_mode(mode: &str, name: &str) -> Result<(), String> {
    if mode.is_empty() || mode == "nftables" {
        return Ok(());
    }
    Err(format!(
        "{name} {mode:?}: proxier is an nftables proxy and has no {mode} mode; use `nftables` (or leave it empty)"
    ))
}

/// The host name, lowercased, as kube-proxy uses it when no Node name is given.
fn host_name() -> Result<String, String> {
    let mut buffer = [0u8; 256];
    // SAFETY: gethostname writes at most `len` bytes into the buffer we own.
    let result = unsafe { libc::gethostname(buffer.as_mut_ptr().cast(), buffer.len()) };
    if result != 0 {
        return Err(format!("cannot read the host name: {}", std::io::Error::last_os_error()));
    }
    let end = buffer.iter().position(|&b| b == 0).unwrap_or(buffer.len());
    let name = String::from_utf8_lossy(&buffer[..end]).trim().to_lowercase();
    if name.is_empty() {
        return Err("the host name is empty: give --node or --hostname-override".into());
    }
    Ok(name)
}

impl RunArgs {
    /// The file's settings (empty without `--config`).
    pub fn file(&self) -> Result<FileConfig, String> {
        match &self.config {
            Some(path) => read_config(path),
            None => Ok(FileConfig::default()),
        }
    }

    /// Log format and verbosity: flags, then the file, then text at level 0.
    pub fn logging(&self, file: &FileConfig) -> (LogFormat, u8) {
        (
            self.logging_format.or(file.log_format).unwrap_or(LogFormat::Text),
            self.verbosity.or(file.verbosity).unwrap_or(0),
        )
    }

    /// Merges the flags with the file and the defaults.
    pub fn settings(&self, file: &FileConfig) -> Result<Settings, String> {
        if let Some(mode) = &self.proxy_mode {
            check_mode(mode, "--proxy-mode")?;
        }
        let (name, node_name_source) = match (&self.node.node, &self.hostname_override, &file.hostname_override) {
            (Some(name), _, _) => (name.clone(), "--node"),
            (None, Some(name), _) => (name.clone(), "--hostname-override"),
            (None, None, Some(name)) => (name.clone(), "hostnameOverride"),
            (None, None, None) => (host_name()?, "the host name"),
        };
        let mut node = self.node.config_named(name)?;
        if node.node_ips.is_empty() {
            node.node_ips = match self.bind_address.filter(|ip| !ip.is_unspecified()) {
                Some(ip) => vec![ip],
                None => file.node_ips.clone(),
            };
        }
        if node.cluster_cidrs.is_empty() {
            node.cluster_cidrs = file.cluster_cidrs.clone();
        }
        let nodeport = NodePortAddresses::new(if self.node.nodeport_addresses.is_empty() {
            &file.nodeport_addresses
        } else {
            &self.node.nodeport_addresses
        });
        let (nodeport_primary, nodeport_cidrs) = (nodeport.primary, nodeport.cidrs);
        node.nodeport_addresses = nodeport_cidrs.clone();
        node.masquerade_all |= file.masquerade_all;
        if self.node.detect_local_mode.is_none()
            && let Some(mode) = file.detect_local_mode
        {
            let bridge = self.node.pod_bridge_interface.clone().or(file.bridge_interface.clone());
            let prefix = self.node.pod_interface_name_prefix.clone().or(file.interface_name_prefix.clone());
            node.detect_local = mode.detector(bridge, prefix)?;
        }
        let address = |flag: &Option<String>, file: &Option<String>, default: &str, port: u16| {
            // An empty flag disables the server; an empty field in the file means the default.
            let text = flag.clone().or(file.clone()).unwrap_or_else(|| default.to_owned());
            bind_address(&text, port)
        };
        // Zero from a flag is refused; zero in the file means the default (dropped when read).
        if self.sync_period.is_some_and(|p| p.is_zero()) {
            return Err("--sync-period must be greater than 0".into());
        }
        let sync_period = self.sync_period.or(file.sync_period).unwrap_or(DEFAULT_SYNC_PERIOD);
        let min_sync_period = self.min_sync_period.or(file.min_sync_period).unwrap_or(DEFAULT_MIN_SYNC_PERIOD);
        let zero_leaves = |d: Option<Duration>| d.filter(|d| !d.is_zero());
        let conntrack_settings = ConntrackSettings {
            max_per_core: self
                .conntrack_max_per_core
                .or(file.conntrack_max_per_core)
                .unwrap_or(DEFAULT_CONNTRACK_MAX_PER_CORE),
            min: self.conntrack_min.or(file.conntrack_min).unwrap_or(DEFAULT_CONNTRACK_MIN),
            tcp_established_timeout: zero_leaves(Some(
                self.conntrack_tcp_timeout_established.or(file.tcp_established).unwrap_or(DEFAULT_TCP_ESTABLISHED),
            )),
            tcp_close_wait_timeout: zero_leaves(Some(
                self.conntrack_tcp_timeout_close_wait.or(file.tcp_close_wait).unwrap_or(DEFAULT_TCP_CLOSE_WAIT),
            )),
            tcp_be_liberal: self.conntrack_tcp_be_liberal.unwrap_or(file.tcp_be_liberal),
            udp_timeout: zero_leaves(self.conntrack_udp_timeout.or(file.udp_timeout)),
            udp_stream_timeout: zero_leaves(self.conntrack_udp_timeout_stream.or(file.udp_stream_timeout)),
        };
        let (log_format, verbosity) = self.logging(file);
        Ok(Settings {
            node,
            nodeport_primary,
            nodeport_cidrs,
            counters: !self.node.no_counters,
            table: self.node.nft.table.clone(),
            nft: self.node.nft.nft.clone(),
            conntrack: (self.conntrack != Path::new("none")).then(|| self.conntrack.clone()),
            netlink: self.netlink,
            kubeconfig: self.kubeconfig.clone().or(file.kubeconfig.clone()),
            sync_period,
            min_sync_period,
            healthz: address(&self.healthz_bind_address, &file.healthz, DEFAULT_HEALTHZ, DEFAULT_HEALTHZ_PORT)?,
            metrics: address(&self.metrics_bind_address, &file.metrics, DEFAULT_METRICS, DEFAULT_METRICS_PORT)?,
            conntrack_settings,
            oom_score_adj: self.oom_score_adj.or(file.oom_score_adj).unwrap_or(DEFAULT_OOM_SCORE_ADJ),
            log_format,
            verbosity,
            cleanup: self.cleanup,
            init_only: self.init_only,
            node_name_source,
        })
    }
}

/// `IP:PORT`, or a bare IP with kube-proxy's default `port`; empty disables.
fn bind_address(text: &str, port: u16) -> Result<Option<SocketAddr>, String> {
    if text.is_empty() {
        return Ok(None);
    }
    if let Ok(ip) = text.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
        return Ok(Some(SocketAddr::new(ip, port)));
    }
    text.parse().map(Some).map_err(|e| format!("{text:?} is not IP:PORT or IP: {e}"))
}

/// A Go duration as kube-proxy's flags and files take it: `30s`, `1m0s`, `500ms`, `1h30m`, `0`.
pub fn go_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?} is not a duration like 30s, 1m0s or 500ms");
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(bad)?;
        let (number, tail) = rest.split_at(digits);
        let number: f64 = number.parse().map_err(|_| bad())?;
        let unit_len = tail.find(|c: char| c.is_ascii_digit()).unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let scale = match unit {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += Duration::try_from_secs_f64(number * scale).map_err(|_| bad())?;
        rest = tail;
    }
    Ok(total)
}

/// A duration written as Go writes one (`24h0m0s`, `1.5s`, `500ms`).
pub fn format_go_duration(duration: Duration) -> String {
    let total = duration.as_secs();
    if total == 0 {
        let millis = duration.as_millis();
        return if millis > 0 { format!("{millis}ms") } else { "0s".into() };
    }
    let (hours, minutes) = (total / 3600, total / 60 % 60);
    let seconds = (total % 60) as f64 + f64::from(duration.subsec_nanos()) / 1e9;
    match (hours, minutes) {
        (0, 0) => format!("{seconds}s"),
        (0, _) => format!("{minutes}m{seconds}s"),
        _ => format!("{hours}h{minutes}m{seconds}s"),
    }
}

fn go_duration_opt<S: serde::Serializer>(value: &Option<Duration>, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&value.map_or_else(|| "0s".to_owned(), format_go_duration))
}

impl Settings {
    /// The effective configuration as a KubeProxyConfiguration (v1alpha1), as `/configz` serves it and
    /// the start line logs it.
    pub fn as_kube_proxy_configuration(&self) -> Value {
        let address = |a: &Option<SocketAddr>| a.map(|a| a.to_string()).unwrap_or_default();
        let nodeport: Vec<String> = self
            .nodeport_primary
            .then(|| "primary".to_owned())
            .into_iter()
            .chain(self.nodeport_cidrs.iter().map(ToString::to_string))
            .collect();
        let (mode, bridge, prefix) = match &self.node.detect_local {
            proxier_core::DetectLocal::ClusterCidr => ("ClusterCIDR", "", ""),
            proxier_core::DetectLocal::NodeCidr => ("NodeCIDR", "", ""),
            proxier_core::DetectLocal::BridgeInterface(b) => ("BridgeInterface", b.as_str(), ""),
            proxier_core::DetectLocal::InterfaceNamePrefix(p) => ("InterfaceNamePrefix", "", p.as_str()),
        };
        let cluster_cidr: Vec<String> = self.node.cluster_cidrs.iter().map(ToString::to_string).collect();
        serde_json::json!({
            "apiVersion": V1ALPHA1,
            "kind": "KubeProxyConfiguration",
            "mode": "nftables",
            "hostnameOverride": self.node.node_name,
            "bindAddress": self.node.node_ips.first().map(ToString::to_string).unwrap_or_else(|| "0.0.0.0".into()),
            "clusterCIDR": cluster_cidr.join(","),
            "clientConnection": {"kubeconfig": self.kubeconfig.as_ref().map(|p| p.display().to_string()).unwrap_or_default()},
            "healthzBindAddress": address(&self.healthz),
            "metricsBindAddress": address(&self.metrics),
            "nodePortAddresses": nodeport,
            "detectLocalMode": mode,
            "detectLocal": {"bridgeInterface": bridge, "interfaceNamePrefix": prefix},
            "nftables": {
                "syncPeriod": format_go_duration(self.sync_period),
                "minSyncPeriod": format_go_duration(self.min_sync_period),
                "masqueradeAll": self.node.masquerade_all,
            },
            "conntrack": self.conntrack_settings,
            "oomScoreAdj": self.oom_score_adj,
            "logging": {"format": self.log_format, "verbosity": self.verbosity},
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use proxier_core::DetectLocal;

    use super::*;

    #[derive(Parser)]
    struct Run {
        #[command(flatten)]
        args: RunArgs,
    }

    fn args(flags: &[&str]) -> RunArgs {
        Run::try_parse_from(std::iter::once("run").chain(flags.iter().copied())).unwrap().args
    }

    fn settings(flags: &[&str], file: &str) -> Result<Settings, String> {
        args(flags).settings(&parse_config(file)?)
    }

    #[test]
    fn go_durations() {
        assert_eq!(go_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(go_duration("1m0s"), Ok(Duration::from_secs(60)));
        assert_eq!(go_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(go_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(go_duration("0"), Ok(Duration::ZERO));
        assert!(go_duration("5").is_err());
        assert!(go_duration("s").is_err());
        assert!(go_duration("").is_err());
        assert_eq!(format_go_duration(Duration::from_secs(86400)), "24h0m0s");
        assert_eq!(format_go_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(format_go_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(format_go_duration(Duration::from_millis(100)), "100ms");
        for d in ["24h0m0s", "1h0m0s", "1m30s", "30s", "1.5s", "100ms", "0s"] {
            assert_eq!(format_go_duration(go_duration(d).unwrap()), d);
        }
    }

    #[test]
    fn kube_proxy_configuration_files() {
        let config = parse_config(
            "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nmode: nftables\n\
             clusterCIDR: 10.244.0.0/16,fd00::/56\nhostnameOverride: node-x\nhealthzBindAddress: 0.0.0.0:10256\n\
             metricsBindAddress: 127.0.0.1:10249\nnodePortAddresses: [primary, 192.168.0.0/16]\n\
             nftables: {syncPeriod: 1m0s, minSyncPeriod: 2s, masqueradeAll: true, masqueradeBit: 15}\n\
             clientConnection: {kubeconfig: /etc/kube.conf, qps: 50}\nconntrack: {maxPerCore: 0}\nbogus: 1\n",
        )
        .unwrap();
        assert_eq!(config.hostname_override.as_deref(), Some("node-x"));
        assert_eq!(config.cluster_cidrs.len(), 2);
        assert_eq!(
            config.nodeport_addresses,
            vec![NodePortAddress::Primary, NodePortAddress::Cidr("192.168.0.0/16".parse().unwrap())]
        );
        assert_eq!(config.sync_period, Some(Duration::from_secs(60)));
        assert_eq!(config.min_sync_period, Some(Duration::from_secs(2)));
        assert!(config.masquerade_all);
        assert_eq!(config.conntrack_max_per_core, Some(0));
        assert_eq!(config.kubeconfig, Some(PathBuf::from("/etc/kube.conf")));
        let ignored: Vec<&str> = config.ignored.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(ignored, ["nftables.masqueradeBit", "clientConnection.qps", "bogus"]);
        assert!(parse_config("nftables: {syncPeriod: soon}\n").unwrap_err().starts_with("nftables.syncPeriod: "));
        assert!(parse_config("conntrack: {maxPerCore: lots}\n").unwrap_err().contains("conntrack.maxPerCore"));
        assert!(parse_config("apiVersion: kubeproxy.config.k8s.io/v1beta9\n").unwrap_err().contains("v1alpha2"));
        assert!(parse_config("kind: KubeletConfiguration\n").is_err());
        assert!(parse_config("oomScoreAdj: -2000\n").is_err());
        assert!(parse_config("logging: {format: xml}\n").is_err());
        assert!(parse_config("- a list\n").is_err());
    }

    #[test]
    fn modes_other_than_nftables_are_refused() {
        for mode in ["", "nftables"] {
            assert!(parse_config(&format!("mode: {mode:?}\n")).is_ok());
            assert!(settings(&["--proxy-mode", mode], "").is_ok());
        }
        for mode in ["iptables", "ipvs", "kernelspace"] {
            let error = parse_config(&format!("mode: {mode}\n")).unwrap_err();
            assert!(error.contains("proxier is an nftables proxy"), "{error}");
            let error = settings(&["--proxy-mode", mode], "").unwrap_err();
            assert!(error.starts_with("--proxy-mode"), "{error}");
        }
    }

    #[test]
    fn empty_zero_and_null_mean_the_default() {
        let file = "healthzBindAddress: \"\"\nmetricsBindAddress: \"\"\nhostnameOverride: \"\"\nbindAddress: 0.0.0.0\n\
                    detectLocalMode: \"\"\ndetectLocal: {bridgeInterface: \"\", interfaceNamePrefix: \"\"}\n\
                    nftables: {syncPeriod: 0s, minSyncPeriod: 0s, masqueradeAll: false, masqueradeBit: null}\n\
                    conntrack: {maxPerCore: null, min: null, tcpEstablishedTimeout: null, tcpCloseWaitTimeout: null,\n  \
                    tcpBeLiberal: false, udpTimeout: 0s, udpStreamTimeout: 0s}\nnodePortAddresses: null\n\
                    oomScoreAdj: null\nclusterCIDR: \"\"\nlogging: {format: \"\", verbosity: 0, flushFrequency: 0}\n\
                    iptables: {masqueradeAll: false, syncPeriod: 0s}\nipvs: {scheduler: \"\", excludeCIDRs: null}\n";
        let config = parse_config(file).unwrap();
        assert!(config.ignored.is_empty(), "{:?}", config.ignored);
        let s = settings(&["--node", "n"], file).unwrap();
        assert_eq!(s.healthz, Some("0.0.0.0:10256".parse().unwrap()));
        assert_eq!(s.metrics, Some("127.0.0.1:10249".parse().unwrap()));
        assert_eq!((s.sync_period, s.min_sync_period), (DEFAULT_SYNC_PERIOD, DEFAULT_MIN_SYNC_PERIOD));
        assert_eq!(s.node.detect_local, DetectLocal::ClusterCidr);
        assert!(s.node.node_ips.is_empty());
        assert!(s.nodeport_primary && s.nodeport_cidrs.is_empty());
        assert_eq!(s.oom_score_adj, -999);
        assert_eq!((s.log_format, s.verbosity), (LogFormat::Text, 0));
        let c = &s.conntrack_settings;
        assert_eq!((c.max_per_core, c.min), (32_768, 131_072));
        assert_eq!(c.tcp_established_timeout, Some(Duration::from_secs(86_400)));
        assert_eq!(c.tcp_close_wait_timeout, Some(Duration::from_secs(3600)));
        assert_eq!((c.tcp_be_liberal, c.udp_timeout, c.udp_stream_timeout), (false, None, None));
        assert_eq!(c.max(2), Some(131_072));
        assert_eq!(c.max(8), Some(262_144));
        // An empty flag still disables a server; a zero flag period is refused.
        let s = settings(&["--node", "n", "--healthz-bind-address", "", "--metrics-bind-address", "10.0.0.1"], file);
        let s = s.unwrap();
        assert_eq!((s.healthz, s.metrics), (None, Some("10.0.0.1:10249".parse().unwrap())));
        assert!(settings(&["--node", "n", "--sync-period", "0s"], file).is_err());
    }

    #[test]
    fn other_modes_sections_are_quiet_unless_set() {
        let config = parse_config(
            "iptables: {masqueradeAll: true, syncPeriod: 10s}\nipvs: {scheduler: rr}\nwinkernel: {enableDSR: true}\n\
             enableProfiling: true\nfeatureGates: {}\nportRange: \"\"\n",
        )
        .unwrap();
        let ignored: Vec<&str> = config.ignored.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            ignored,
            [
                "enableProfiling",
                "iptables.masqueradeAll",
                "iptables.syncPeriod",
                "ipvs.scheduler",
                "winkernel.enableDSR"
            ]
        );
        assert!(!config.masquerade_all, "iptables.masqueradeAll is the iptables mode's");
    }

    #[test]
    fn v1alpha2_fields() {
        let file = "apiVersion: kubeproxy.config.k8s.io/v1alpha2\nkind: KubeProxyConfiguration\nmode: nftables\n\
                    syncPeriod: 45s\nminSyncPeriod: 3s\ndetectLocal: {clusterCIDRs: [10.244.0.0/16, fd00::/56]}\n\
                    linux: {masqueradeAll: true, oomScoreAdj: -500,\n  \
                    conntrack: {maxPerCore: 1000, min: 5000, tcpEstablishedTimeout: 2h, tcpCloseWaitTimeout: 0s,\n    \
                    tcpBeLiberal: true, udpTimeout: 30s, udpStreamTimeout: 2m}}\n";
        let s = settings(&["--node", "n"], file).unwrap();
        assert_eq!((s.sync_period, s.min_sync_period), (Duration::from_secs(45), Duration::from_secs(3)));
        assert_eq!(s.node.cluster_cidrs.len(), 2);
        assert!(s.node.masquerade_all);
        assert_eq!(s.oom_score_adj, -500);
        assert_eq!(
            s.conntrack_settings,
            ConntrackSettings {
                max_per_core: 1000,
                min: 5000,
                tcp_established_timeout: Some(Duration::from_secs(7200)),
                tcp_close_wait_timeout: None,
                tcp_be_liberal: true,
                udp_timeout: Some(Duration::from_secs(30)),
                udp_stream_timeout: Some(Duration::from_secs(120)),
            }
        );
        assert!(parse_config(file).unwrap().ignored.is_empty());
    }

    #[test]
    fn conntrack_flags_win_over_the_file() {
        let file = "conntrack: {maxPerCore: 1000, min: 5000, tcpEstablishedTimeout: 2h, tcpCloseWaitTimeout: 30m,\n  \
                    tcpBeLiberal: true, udpTimeout: 30s, udpStreamTimeout: 2m}\n";
        let flags = [
            "--node",
            "n",
            "--conntrack-max-per-core",
            "0",
            "--conntrack-min",
            "7",
            "--conntrack-tcp-timeout-established",
            "0",
            "--conntrack-tcp-timeout-close-wait",
            "5m",
            "--conntrack-tcp-be-liberal=false",
            "--conntrack-udp-timeout",
            "10s",
            "--conntrack-udp-timeout-stream",
            "0s",
        ];
        let c = settings(&flags, file).unwrap().conntrack_settings;
        assert_eq!(c.max(4), None, "max-per-core 0 leaves nf_conntrack_max alone");
        assert_eq!(c.min, 7);
        assert_eq!(c.tcp_established_timeout, None, "0 leaves the timeout alone");
        assert_eq!(c.tcp_close_wait_timeout, Some(Duration::from_secs(300)));
        assert!(!c.tcp_be_liberal);
        assert_eq!(c.udp_timeout, Some(Duration::from_secs(10)));
        assert_eq!(c.udp_stream_timeout, None);
        assert!(
            settings(&["--node", "n", "--conntrack-tcp-be-liberal"], "").unwrap().conntrack_settings.tcp_be_liberal
        );
        let s = settings(&["--node", "n"], file).unwrap();
        assert_eq!(s.conntrack_settings.max(4), Some(5000));
        assert_eq!(s.conntrack_settings.tcp_close_wait_timeout, Some(Duration::from_secs(1800)));
    }

    #[test]
    fn node_name_address_and_logging_flags() {
        let s = settings(&["--hostname-override", "node-b"], "hostnameOverride: node-c\n").unwrap();
        assert_eq!((s.node.node_name.as_str(), s.node_name_source), ("node-b", "--hostname-override"));
        let s = settings(&["--node", "node-a", "--hostname-override", "node-b"], "").unwrap();
        assert_eq!(s.node.node_name, "node-a");
        let s = settings(&[], "hostnameOverride: node-c\n").unwrap();
        assert_eq!(s.node.node_name, "node-c");
        let s = settings(&[], "").unwrap();
        assert_eq!(s.node.node_name, host_name().unwrap());
        assert_eq!(s.node_name_source, "the host name");

        let s = settings(&["--bind-address", "192.168.1.9"], "bindAddress: 10.0.0.1\n").unwrap();
        assert_eq!(s.node.node_ips, vec!["192.168.1.9".parse::<IpAddr>().unwrap()]);
        let s = settings(&["--bind-address", "0.0.0.0"], "bindAddress: 10.0.0.1\n").unwrap();
        assert_eq!(s.node.node_ips, vec!["10.0.0.1".parse::<IpAddr>().unwrap()]);

        let s = settings(&["-v", "4", "--logging-format", "json"], "logging: {format: text, verbosity: 2}\n").unwrap();
        assert_eq!((s.log_format, s.verbosity), (LogFormat::Json, 4));
        let s = settings(&["--v=3"], "logging: {format: json}\n").unwrap();
        assert_eq!((s.log_format, s.verbosity), (LogFormat::Json, 3));
        let s = settings(&["--oom-score-adj", "-10", "--cleanup"], "oomScoreAdj: 5\n").unwrap();
        assert_eq!((s.oom_score_adj, s.cleanup, s.init_only), (-10, true, false));
        assert!(settings(&["--init-only"], "").unwrap().init_only);
        assert!(Run::try_parse_from(["run", "--cleanup", "--init-only"]).is_err());
        assert!(Run::try_parse_from(["run", "--oom-score-adj", "-1001"]).is_err());
    }

    #[test]
    fn nodeport_addresses_primary_beside_cidrs() {
        let s = settings(&[], "nodePortAddresses: [primary, 192.168.0.0/16]\n").unwrap();
        assert!(s.nodeport_primary);
        assert_eq!(s.nodeport_cidrs, vec!["192.168.0.0/16".parse::<IpNet>().unwrap()]);
        let s = settings(&["--nodeport-addresses", "10.0.0.0/8"], "nodePortAddresses: [primary]\n").unwrap();
        assert!(!s.nodeport_primary);
        assert_eq!(s.nodeport_cidrs, vec!["10.0.0.0/8".parse::<IpNet>().unwrap()]);
        assert!(settings(&[], "nodePortAddresses: [nowhere]\n").is_err());
        // kube-proxy's keywords: `all` is every address of both families; `localhost` is not served.
        let file = parse_config("nodePortAddresses: [all, localhost]\n").unwrap();
        assert_eq!(file.nodeport_addresses, [NodePortAddress::All, NodePortAddress::Localhost]);
        assert_eq!(file.ignored.len(), 1);
        let s = args(&[]).settings(&file).unwrap();
        assert_eq!(s.nodeport_cidrs, ["0.0.0.0/0", "::/0"].map(|n| n.parse::<IpNet>().unwrap()));
        let s = settings(&[], "nodePortAddresses: [all]\n").unwrap();
        assert!(!s.nodeport_primary && s.nodeport_cidrs.len() == 2);
    }

    #[test]
    fn detect_local_mode_from_the_file_unless_a_flag_says_otherwise() {
        let file =
            "detectLocalMode: BridgeInterface\ndetectLocal: {bridgeInterface: cbr0, interfaceNamePrefix: veth}\n";
        let config = parse_config(file).unwrap();
        assert_eq!(config.detect_local_mode, Some(DetectLocalMode::BridgeInterface));
        assert_eq!(config.bridge_interface.as_deref(), Some("cbr0"));
        assert_eq!(config.interface_name_prefix.as_deref(), Some("veth"));
        assert!(config.ignored.is_empty());
        let err = parse_config("detectLocalMode: Pods\n").unwrap_err();
        assert_eq!(
            err,
            "detectLocalMode: \"Pods\" is not ClusterCIDR, NodeCIDR, BridgeInterface or InterfaceNamePrefix"
        );
        assert!(
            parse_config("detectLocal: {bridgeInterface: \"br0; drop\"}\n")
                .unwrap_err()
                .starts_with("detectLocal.bridgeInterface: ")
        );
        let detector = |flags: &[&str], file: &str| {
            let mut all = vec!["--node", "n"];
            all.extend_from_slice(flags);
            settings(&all, file).map(|s| s.node.detect_local)
        };
        assert_eq!(detector(&[], file), Ok(DetectLocal::BridgeInterface("cbr0".into())));
        assert_eq!(detector(&["--pod-bridge-interface", "br1"], file), Ok(DetectLocal::BridgeInterface("br1".into())));
        assert_eq!(detector(&["--detect-local-mode", "NodeCIDR"], file), Ok(DetectLocal::NodeCidr));
        assert!(
            detector(&[], "detectLocalMode: InterfaceNamePrefix\n")
                .unwrap_err()
                .contains("needs an interface name prefix")
        );
    }

    #[test]
    fn kubeadms_configuration_is_read_without_a_warning() {
        for (name, cluster_cidr) in
            [("kubeadm-config.conf", "10.244.0.0/16"), ("kubeadm-v1.13-defaulted.conf", "10.148.0.0/16")]
        {
            let file = testdata(name);
            assert!(file.ignored.is_empty(), "{:?}", file.ignored);
            let s = args(&["--hostname-override", "node-a"]).settings(&file).unwrap();
            assert_eq!(s.node.node_name, "node-a");
            assert_eq!(s.node.cluster_cidrs, vec![cluster_cidr.parse::<IpNet>().unwrap()]);
            assert_eq!(s.kubeconfig, Some(PathBuf::from("/var/lib/kube-proxy/kubeconfig.conf")));
            assert_eq!(s.healthz, Some("0.0.0.0:10256".parse().unwrap()));
            assert_eq!(s.metrics, Some("127.0.0.1:10249".parse().unwrap()));
            assert_eq!((s.sync_period, s.min_sync_period), (DEFAULT_SYNC_PERIOD, DEFAULT_MIN_SYNC_PERIOD));
            assert!(s.node.node_ips.is_empty() && s.nodeport_primary && !s.node.masquerade_all);
            assert_eq!(s.conntrack_settings.tcp_established_timeout, Some(DEFAULT_TCP_ESTABLISHED));
        }
    }

    fn testdata(name: &str) -> FileConfig {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/kube-proxy").join(name);
        read_config(&path).unwrap()
    }

    #[test]
    fn kube_proxys_own_defaults_are_read_without_a_warning() {
        for name in ["kube-proxy-v1alpha1-defaults.yaml", "kube-proxy-v1alpha2-defaults.yaml"] {
            let file = testdata(name);
            assert!(file.ignored.is_empty(), "{name}: {:?}", file.ignored);
            let s = args(&["--node", "n"]).settings(&file).unwrap();
            assert_eq!(s.healthz, Some("0.0.0.0:10256".parse().unwrap()), "{name}");
            assert_eq!(s.metrics, Some("127.0.0.1:10249".parse().unwrap()), "{name}");
            assert_eq!((s.sync_period, s.min_sync_period), (DEFAULT_SYNC_PERIOD, DEFAULT_MIN_SYNC_PERIOD));
            assert_eq!(s.oom_score_adj, DEFAULT_OOM_SCORE_ADJ, "{name}");
            assert_eq!(s.conntrack_settings.max(8), Some(262_144), "{name}");
        }
        // A value other than kube-proxy's default is still named.
        let file = parse_config("clientConnection: {qps: 50, burst: 10}\nconfigSyncPeriod: 15m0s\n").unwrap();
        assert_eq!(file.ignored, [("clientConnection.qps".to_owned(), "proxier's client is not rate-limited")]);
        let file = parse_config("logging: {flushFrequency: 5000000000}\niptables: {syncPeriod: 1m}\n").unwrap();
        let ignored: Vec<&str> = file.ignored.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(ignored, ["iptables.syncPeriod"]);
    }

    /// Upstream's v1alpha2 serves health and metrics on lists of CIDRs and a port, not `IP:PORT`.
    #[test]
    fn v1alpha2_server_addresses_are_cidr_lists_and_a_port() {
        let v2 = |body: &str| format!("apiVersion: {V1ALPHA2}\nkind: KubeProxyConfiguration\n{body}");
        let servers = |body: &str| {
            let s = settings(&["--node", "n"], &v2(body))?;
            Ok::<_, String>((s.healthz.map(|a| a.to_string()), s.metrics.map(|a| a.to_string())))
        };
        let some = |a: &str, b: &str| Ok((Some(a.to_owned()), Some(b.to_owned())));
        assert_eq!(servers(""), some("0.0.0.0:10256", "127.0.0.1:10249"));
        assert_eq!(
            servers("healthzBindAddresses: [\"::/0\"]\nhealthzBindPort: 20256\nmetricsBindAddresses: [0.0.0.0/0]\n"),
            some("[::]:20256", "0.0.0.0:10249")
        );
        assert_eq!(
            servers(
                "healthzBindAddresses: [192.168.1.9/32]\nmetricsBindAddresses: [\"::1/128\"]\nmetricsBindPort: 9999\n"
            ),
            some("192.168.1.9:10256", "[::1]:9999")
        );
        assert_eq!(servers("metricsBindPort: 19249\n"), some("0.0.0.0:10256", "127.0.0.1:19249"));
        let error = servers("healthzBindAddresses: [10.0.0.0/8]\n").unwrap_err();
        assert!(
            error.starts_with("healthzBindAddresses: 10.0.0.0/8: proxier serves healthz on one address"),
            "{error}"
        );
        let error = servers("metricsBindAddresses: [10.0.0.0/33]\n").unwrap_err();
        assert!(error.contains("metricsBindAddresses") && error.contains("prefix length \"33\""), "{error}");
        assert!(servers("healthzBindPort: 70000\n").unwrap_err().starts_with("healthzBindPort: 70000"));
        // A flag still wins over the file.
        let s = settings(&["--node", "n", "--healthz-bind-address", "127.0.0.1:1"], &v2("healthzBindPort: 2\n"));
        assert_eq!(s.unwrap().healthz, Some("127.0.0.1:1".parse().unwrap()));
    }

    /// v1alpha2 names the node's addresses `nodeIPOverride` (v1alpha1: `bindAddress`).
    #[test]
    fn v1alpha2_node_ip_override_is_the_nodes_addresses() {
        let file = format!("apiVersion: {V1ALPHA2}\nnodeIPOverride: [192.168.1.9, \"fd00::9\"]\n");
        let s = settings(&["--node", "n"], &file).unwrap();
        assert_eq!(s.node.node_ips, ["192.168.1.9", "fd00::9"].map(|ip| ip.parse::<IpAddr>().unwrap()));
        let s = settings(&["--node", "n", "--bind-address", "10.0.0.1"], &file).unwrap();
        assert_eq!(s.node.node_ips, ["10.0.0.1".parse::<IpAddr>().unwrap()]);
        let error = parse_config(&format!("apiVersion: {V1ALPHA2}\nnodeIPOverride: [node-a]\n")).unwrap_err();
        assert_eq!(error, "nodeIPOverride: \"node-a\" is not an IPv4 or IPv6 address");
    }

    /// v1alpha2's `configHardFail: false` asks for what proxier never does; true is its default.
    #[test]
    fn v1alpha2_config_hard_fail() {
        let config = parse_config(&format!("apiVersion: {V1ALPHA2}\nconfigHardFail: true\n")).unwrap();
        assert!(config.ignored.is_empty(), "{:?}", config.ignored);
        let config = parse_config(&format!("apiVersion: {V1ALPHA2}\nconfigHardFail: false\n")).unwrap();
        let ignored: Vec<&str> = config.ignored.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(ignored, ["configHardFail"]);
    }

    /// Each version's fields only in files of that version: v1alpha1's in a v1alpha2 file are refused
    /// (kube-proxy refuses them too), saying where v1alpha2 has them.
    #[test]
    fn v1alpha1_fields_in_a_v1alpha2_file_are_refused() {
        let cases = [
            ("clusterCIDR: 10.244.0.0/16", "clusterCIDR (v1alpha2 has detectLocal.clusterCIDRs)"),
            ("bindAddress: 10.0.0.1", "bindAddress (v1alpha2 has nodeIPOverride)"),
            ("healthzBindAddress: 0.0.0.0:10256", "healthzBindAddress (v1alpha2 has healthzBindAddresses"),
            ("metricsBindAddress: \"\"", "metricsBindAddress (v1alpha2 has metricsBindAddresses"),
            ("conntrack: {maxPerCore: 0}", "conntrack (v1alpha2 has linux.conntrack)"),
            ("oomScoreAdj: -999", "oomScoreAdj (v1alpha2 has linux.oomScoreAdj)"),
            ("nftables: {syncPeriod: 30s}", "nftables.syncPeriod (v1alpha2 has syncPeriod)"),
            ("nftables: {masqueradeAll: true}", "nftables.masqueradeAll (v1alpha2 has linux.masqueradeAll)"),
            ("iptables: {minSyncPeriod: 1s}", "iptables.minSyncPeriod (v1alpha2 has minSyncPeriod)"),
            ("portRange: \"\"", "portRange (v1alpha2 has nothing: it was removed)"),
        ];
        for (field, expected) in cases {
            let error = parse_config(&format!("apiVersion: {V1ALPHA2}\n{field}\n")).unwrap_err();
            assert!(error.starts_with("v1alpha1 fields in a kubeproxy.config.k8s.io/v1alpha2 file: "), "{error}");
            assert!(error.contains(expected), "{field}: {error}");
            // The same field in a v1alpha1 file is read.
            assert!(parse_config(&format!("apiVersion: {V1ALPHA1}\n{field}\n")).is_ok(), "{field}");
        }
        // v1alpha2's own sections are fine, masqueradeBit included.
        let file = format!("apiVersion: {V1ALPHA2}\nnftables: {{masqueradeBit: 14}}\nipvs: {{masqueradeBit: 14}}\n");
        assert!(parse_config(&file).unwrap().ignored.is_empty());
    }

    /// v1alpha2's fields in a v1alpha1 file (or one without apiVersion) are named and not used, as
    /// kube-proxy's lenient decoding of v1alpha1 drops them.
    #[test]
    fn v1alpha2_fields_in_a_v1alpha1_file_are_set_aside() {
        let file = "syncPeriod: 45s\nminSyncPeriod: 3s\nlinux: {masqueradeAll: true, oomScoreAdj: -5}\n\
                    detectLocal: {clusterCIDRs: [10.244.0.0/16]}\nnodeIPOverride: [10.0.0.9]\n\
                    healthzBindPort: 1\nmetricsBindAddresses: [0.0.0.0/0]\nconfigHardFail: false\n";
        for file in [file.to_owned(), format!("apiVersion: {V1ALPHA1}\n{file}")] {
            let config = parse_config(&file).unwrap();
            let ignored: Vec<&str> = config.ignored.iter().map(|(f, _)| f.as_str()).collect();
            assert_eq!(
                ignored,
                [
                    "syncPeriod",
                    "minSyncPeriod",
                    "linux",
                    "nodeIPOverride",
                    "healthzBindPort",
                    "metricsBindAddresses",
                    "configHardFail",
                    "detectLocal.clusterCIDRs"
                ]
            );
            assert!(config.ignored.iter().all(|(_, why)| why.starts_with("a v1alpha2 field")));
            let s = args(&["--node", "n"]).settings(&config).unwrap();
            assert_eq!((s.sync_period, s.min_sync_period), (DEFAULT_SYNC_PERIOD, DEFAULT_MIN_SYNC_PERIOD));
            assert!(!s.node.masquerade_all && s.node.cluster_cidrs.is_empty() && s.node.node_ips.is_empty());
            assert_eq!((s.oom_score_adj, s.healthz), (DEFAULT_OOM_SCORE_ADJ, Some(DEFAULT_HEALTHZ.parse().unwrap())));
        }
    }

    #[test]
    fn configz_is_the_effective_configuration() {
        let s = settings(&["--node", "n", "--cluster-cidr", "10.244.0.0/16"], "nftables: {syncPeriod: 10s}\n").unwrap();
        let c = s.as_kube_proxy_configuration();
        assert_eq!(c["mode"], "nftables");
        assert_eq!(c["hostnameOverride"], "n");
        assert_eq!(c["clusterCIDR"], "10.244.0.0/16");
        assert_eq!(c["nftables"]["syncPeriod"], "10s");
        assert_eq!(c["conntrack"]["tcpEstablishedTimeout"], "24h0m0s");
        assert_eq!(c["conntrack"]["maxPerCore"], 32768);
        assert_eq!(c["nodePortAddresses"], serde_json::json!(["primary"]));
        assert_eq!(c["healthzBindAddress"], "0.0.0.0:10256");
    }
}
